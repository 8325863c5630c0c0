"""Globs against the real 6.1 kernel profile, `build` without --kernel, and the temporary
folder of `run` (issues #10 and #11). The profile is the kernel's real /proc/kallsyms,
captured once by booting it (cached)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MODULES = Path(__file__).resolve().parent.parent / "modules"
pytestmark = [pytest.mark.vm, pytest.mark.build]


def kprobegen(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "kprobegen", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def profile_61(kernel_61):
    from kprobegen.kernels.symbols import load_profile
    from kprobegen.pipeline import profile_capture

    return load_profile(kernel_61, capture=profile_capture())


def glob_spec(tmp_path, pattern, name="globbed"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"module: {name}\nhooks:\n  - symbol: '{pattern}'\n    count_by: comm\n")
    return path


def test_underscore_pairs_expand_to_distinct_hooks_and_build(kernel_61, profile_61, tmp_path):
    """`*kmalloc*` was refused ("duplicate hook name 'kmalloc_large_node'"): foo and __foo collided."""
    matched = profile_61.expand("*kmalloc*")
    pairs = [n for n in matched if n.lstrip("_") != n and n.lstrip("_") in matched]
    assert pairs, "the kernel has foo/__foo pairs among the kmalloc functions"
    spec = glob_spec(tmp_path, "*kmalloc*")
    done = kprobegen("check", spec, "--kernel", kernel_61.release, "--json")
    assert done.returncode == 0, done.stderr
    hooks = json.loads(done.stdout)["hooks"]
    assert [h["symbol"] for h in hooks] == matched
    assert len({h["name"] for h in hooks}) == len(matched)
    assert {h["name"] for h in hooks} >= set(pairs) | {p.lstrip("_") for p in pairs}
    # and the module with all of them builds (real Kbuild)
    done = kprobegen("build", spec, "--kernel", kernel_61.release, "-o", tmp_path / "out", "--json", "--no-cache")
    assert done.returncode == 0, done.stderr
    assert Path(json.loads(done.stdout)["ko"]).is_file()


def test_hook_limit_after_expansion(kernel_61, profile_61, tmp_path):
    """`ext4_*` expanded to 612 hooks that built and loaded: the limit now holds after expansion."""
    count = len(profile_61.expand("ext4_*"))
    assert count > 256
    spec = glob_spec(tmp_path, "ext4_*")
    out = tmp_path / "out"
    done = kprobegen("build", spec, "--kernel", kernel_61.release, "-o", out)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"{spec}:3:13: hooks[0].symbol: glob 'ext4_*' matches {count} functions" in done.stderr
    assert "at most 256" in done.stderr
    assert not out.exists()


def test_ambiguous_names_are_listed_in_a_warning(kernel_61, profile_61, tmp_path):
    """Issue #10: names several kernel functions share are said, since register_kprobe takes the first."""
    name = sorted(n for n in profile_61.ambiguous if n.isidentifier() and n not in profile_61.blacklist)[0]
    pattern = name[:-1] + "[" + name[-1] + "]"  # a glob that matches exactly this name
    assert profile_61.expand(pattern) == [name]
    done = kprobegen("check", glob_spec(tmp_path, pattern), "--kernel", kernel_61.release)
    assert done.returncode == 0, done.stderr
    assert done.stderr == (f"kprobegen: warning: 1 hooked name is ambiguous in kernel {kernel_61.release} (several "
                           f"functions share the name; register_kprobe attaches to the first): {name}\n")


def test_plain_build_never_boots_for_a_profile(kernel_61, tmp_path):
    """README: only `run` and `build --kernel` check symbols (and so may boot to capture a profile)."""
    cache = tmp_path / "cache"
    done = kprobegen("build", MODULES / "sync_counter.yaml", "-o", tmp_path / "out", env={"KPROBEGEN_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "sync_counter.ko").is_file()
    assert not (cache / "profiles").exists(), "no profile captured"
    # a glob needs a kernel's symbol table: said at once, without a boot
    done = kprobegen("build", glob_spec(tmp_path, "ksys_sync*"), "-o", tmp_path / "g", env={"KPROBEGEN_CACHE": str(cache)})
    assert done.returncode != 0 and "pass --kernel RELEASE" in done.stderr and done.stderr.count("\n") == 1
    assert not (cache / "profiles").exists()


def test_run_leaves_no_temporary_folder(kernel_61, tmp_path):
    """Every run left /tmp/kpg-run-XXXX (~316 KB) behind, also when it failed before booting."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp)}
    bad = tmp_path / "bad.yaml"
    bad.write_text("module: bad\nhooks:\n  - symbol: ksys_synk\n")
    done = kprobegen("run", bad, "--", "true", env=env)
    assert done.returncode == 2 and "ksys_synk" in done.stderr
    assert [p.name for p in tmp.iterdir() if p.name.startswith("kpg-run-")] == []
    done = kprobegen("run", MODULES / "sync_counter.yaml", "--json", "--", "sync", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["hooks"]["sync"]["hits"] == 1
    assert [p.name for p in tmp.iterdir() if p.name.startswith("kpg-run-")] == []
    keep = tmp_path / "keep"
    done = kprobegen("run", MODULES / "sync_counter.yaml", "--keep", keep, "--", "true", env=env)
    assert done.returncode == 0, done.stderr
    assert (keep / "sync_counter.ko").is_file(), "--keep keeps"
