"""Damaged build caches (issue #11): detected by the size and hash of each artifact in the
entry's manifest, dropped with a one-line note, and rebuilt. Real `kprobegen build` runs
(real Kbuild) against a private cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MODULES = Path(__file__).resolve().parent.parent / "modules"
pytestmark = pytest.mark.build


@pytest.fixture
def setup(kernel_61, tmp_path):
    cache = tmp_path / "cache"
    spec = tmp_path / "sync_counter.yaml"
    spec.write_text((MODULES / "sync_counter.yaml").read_text())

    def build(out):
        done = subprocess.run([sys.executable, "-m", "kprobegen", "build", str(spec), "--kernel", kernel_61.release,
                               "--no-symbol-check", "--json", "-o", str(tmp_path / out)],
                              capture_output=True, text=True, env={**os.environ, "KPROBEGEN_CACHE": str(cache)})
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        return json.loads(done.stdout), done.stderr

    first, stderr = build("first")
    assert first["cached"] is False and stderr == ""
    (by_spec,) = (cache / "builds" / "by-spec").iterdir()
    (by_key,) = [p for p in (cache / "builds").iterdir() if p.name != "by-spec"]
    return build, by_spec, by_key, Path(first["ko"]).read_bytes()


def one_note(stderr: str, entry: Path, why: str) -> None:
    assert stderr.startswith(f"kprobegen: note: the build cache entry {entry} was damaged (") and why in stderr, stderr
    assert stderr.count("\n") == 1 and stderr.endswith("dropped it; building again\n"), stderr


def test_by_spec_entry_missing_its_ko(setup):
    build, by_spec, by_key, ko = setup
    (by_spec / "sync_counter.ko").unlink()  # was: FileNotFoundError on every build of that spec
    result, stderr = build("second")
    one_note(stderr, by_spec, "sync_counter.ko is missing")
    assert Path(result["ko"]).read_bytes() == ko and result["cached"] is True  # from the intact builds/ entry
    result, stderr = build("third")  # the entry was rebuilt: served again, silently
    assert stderr == "" and result["cached"] is True and Path(result["ko"]).read_bytes() == ko


@pytest.mark.parametrize("manifest", ["[1, 2]", "{", '{"format": 2, "artifacts": {"../../x": {"size": 1, "sha256": ""}}}', ""])
def test_by_spec_manifest_damaged(setup, manifest):
    build, by_spec, by_key, ko = setup
    (by_spec / "manifest.json").write_text(manifest)  # [1,2] was a TypeError
    result, stderr = build("second")
    one_note(stderr, by_spec, "manifest.json")
    assert Path(result["ko"]).read_bytes() == ko


def test_empty_cached_ko_is_never_served(setup, tmp_path):
    build, by_spec, by_key, ko = setup
    (by_spec / "sync_counter.ko").write_bytes(b"")  # a 0-byte .ko was served as a successful build
    (by_key / "sync_counter.ko").write_bytes(b"")
    result, stderr = build("second")
    notes = stderr.splitlines()
    assert len(notes) == 2, stderr
    one_note(notes[0] + "\n", by_spec, "sync_counter.ko is 0 bytes")
    one_note(notes[1] + "\n", by_key, "sync_counter.ko is 0 bytes")
    assert result["cached"] is False, "compiled again"
    out = Path(result["ko"])
    assert out.stat().st_size > 0 and not list(out.parent.glob(".*")), "no temporary files left in the output"
    assert subprocess.run(["modinfo", "-F", "name", str(out)], capture_output=True, text=True).stdout.strip() == "sync_counter"
    result, stderr = build("third")
    assert stderr == "" and result["cached"] is True


def test_changed_cached_ko_of_the_same_size_is_detected(setup):
    build, by_spec, by_key, ko = setup
    damaged = bytearray(ko)
    damaged[len(damaged) // 2] ^= 0xFF
    (by_spec / "sync_counter.ko").write_bytes(bytes(damaged))
    result, stderr = build("second")
    one_note(stderr, by_spec, "another hash")
    assert Path(result["ko"]).read_bytes() == ko
