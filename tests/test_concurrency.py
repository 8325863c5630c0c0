"""Concurrent commands on one cache and one output folder (issue #11): real `kprobegen build`
processes (real Kbuild) in parallel, many times; concurrent profile saves and loads."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

MODULES = Path(__file__).resolve().parent.parent / "modules"
FIX = Path(__file__).parent / "fixtures" / "profile"
R61 = "6.1.0-56-cloud-amd64"


def start_build(spec: Path, out: Path, cache: Path, release: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kprobegen", "build", str(spec), "--kernel", release,
                             "--no-symbol-check", "--json", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "KPROBEGEN_CACHE": str(cache)})


def finish(procs) -> list[dict]:
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0 and stderr == "", stderr
        results.append(json.loads(stdout))
    return results


@pytest.mark.build
def test_parallel_builds_into_one_folder_and_one_cache(kernel_61, tmp_path):
    """Two builds into the same -o failed 6 of 30 times (a fixed temporary name vanished)."""
    spec = tmp_path / "sync_counter.yaml"
    spec.write_text((MODULES / "sync_counter.yaml").read_text())
    out = tmp_path / "out"
    expected = {"sync_counter.c", "Makefile", "sync_counter.stp", "sync_counter.bt", "sync_counter.ko"}
    def modinfo_name() -> str:
        ko = out / "sync_counter.ko"
        return subprocess.run(["modinfo", "-F", "name", str(ko)], capture_output=True, text=True).stdout.strip()

    # Cold: both compile and publish the same cache entries at once (2 rounds, fresh caches).
    for round_ in range(2):
        results = finish([start_build(spec, out, tmp_path / f"cold{round_}", kernel_61.release) for _ in range(2)])
        assert {p.name for p in out.iterdir()} == expected, "no temporary files left behind"
        assert any(not r["cached"] for r in results)
        assert modinfo_name() == "sync_counter", "a whole module"
    # Warm: served from one cache by the spec file's bytes, 3 at a time, 10 rounds (30 builds).
    cache = tmp_path / "cold0"
    (entry,) = (cache / "builds" / "by-spec").iterdir()
    for _ in range(10):
        results = finish([start_build(spec, out, cache, kernel_61.release) for _ in range(3)])
        assert all(r["cached"] for r in results)
        assert {p.name for p in out.iterdir()} == expected
        assert (out / "sync_counter.ko").read_bytes() == (entry / "sync_counter.ko").read_bytes()
    assert modinfo_name() == "sync_counter"


def _save_and_load(args) -> str:
    cache, rounds = args
    os.environ["KPROBEGEN_CACHE"] = cache
    from kprobegen.kernels import symbols

    raw = {k: (FIX / f"{R61}.{k}").read_bytes() for k in ("kallsyms", "blacklist", "config")}
    kernel = type("K", (), {"release": R61, "config": None})()
    for _ in range(rounds):
        symbols.save_raw_profile(R61, raw)
        symbols._MEMO.clear()
        assert "ksys_sync" in symbols.load_profile(kernel).functions
    return "ok"


def test_parallel_profile_saves(tmp_path):
    """Two profile saves at once failed 2 of 80 times (rmtree under the other's rename)."""
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        assert pool.map(_save_and_load, [(str(tmp_path), 25)] * 4) == ["ok"] * 4
    pdir = tmp_path / "profiles" / R61
    assert sorted(p.name for p in pdir.iterdir()) == ["blacklist.gz", "config.gz", "kallsyms.gz", "parsed.pickle"]
    assert [p.name for p in pdir.parent.iterdir() if p.name.startswith(".")] == [], "no staging folders left"
