"""The CLI's spec-side commands: check, render, stap, bpftrace (no kernel needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

MODULES = Path(__file__).resolve().parent.parent / "modules"


def kprobegen(*args, env=None):
    return subprocess.run([sys.executable, "-m", "kprobegen", *args], capture_output=True, text=True, timeout=300,
                          env=env)


def test_check_json(tmp_path):
    done = kprobegen("check", str(MODULES / "fork_counter.yaml"), "--json",
                     env=dict(os.environ, KPROBEGEN_CACHE=str(tmp_path)))  # no profile cached
    assert done.returncode == 0
    assert json.loads(done.stdout) == {
        "spec": str(MODULES / "fork_counter.yaml"), "module": "fork_counter", "valid": True,
        "symbols_checked_against": None,
        "hooks": [{"name": "clone", "probe": "kprobe", "symbol": "kernel_clone"},
                  {"name": "clone_by_tgid", "probe": "kprobe", "symbol": "kernel_clone"}]}


def test_check_without_kernel_uses_the_default_kernels_cached_profile(kernel_61, tmp_path):
    """A misspelled symbol is caught by a plain `check` once the default kernel's profile is
    cached; without a profile, check says that symbols were not checked (never a bare "ok")."""
    from kprobegen.kernels.symbols import load_profile
    from kprobegen.pipeline import profile_capture

    load_profile(kernel_61, capture=profile_capture())  # cached by the first run on a machine (setup.sh's example)
    spec = tmp_path / "typo.yaml"
    spec.write_text("module: typo\nhooks:\n  - symbol: ksys_synk\n")
    done = kprobegen("check", str(spec))
    assert done.returncode == 2
    assert done.stderr.startswith(f"kprobegen: error: symbol ksys_synk does not exist in kernel {kernel_61.release}")
    done = kprobegen("check", str(MODULES / "sync_counter.yaml"))
    assert done.stdout.endswith(f"symbols checked against {kernel_61.release}\n")
    empty = dict(os.environ, KPROBEGEN_CACHE=str(tmp_path / "empty"))
    done = kprobegen("check", str(spec), env=empty)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == (f"{spec}: ok: module typo, 1 hook, symbols NOT checked (no kernel profile cached: "
                           "pass --kernel RELEASE|SUITE to capture one)\n")


def test_render_writes_all_four_files_and_warns(tmp_path):
    done = kprobegen("render", str(MODULES / "openat_by_cat.yaml"), "-o", str(tmp_path))
    assert done.returncode == 0
    names = {"openat_by_cat.c", "Makefile", "openat_by_cat.stp", "openat_by_cat.bt"}
    assert {p.name for p in tmp_path.iterdir()} == names
    for name in names:
        assert (tmp_path / name).read_text() == (MODULES / "openat_by_cat" / name).read_text()
    # lhist() needs min >= 0 in bpftrace: the shift is said, not hidden
    assert "kprobegen: warning: bpftrace: hook open_result: histogram (linear min=-4" in done.stderr


def test_emit_c_prints_the_module_source():
    done = kprobegen("render", str(MODULES / "sync_counter.yaml"), "--emit-c")
    assert done.returncode == 0 and done.stdout == (MODULES / "sync_counter" / "sync_counter.c").read_text()


def test_stap_and_bpftrace_print_the_scripts():
    for command, suffix in (("stap", ".stp"), ("bpftrace", ".bt")):
        done = kprobegen(command, str(MODULES / "sync_latency.yaml"))
        assert done.returncode == 0
        assert done.stdout == (MODULES / "sync_latency" / f"sync_latency{suffix}").read_text()
    assert "maxactive" in kprobegen("bpftrace", str(MODULES / "sync_latency.yaml")).stderr


def test_missing_file_is_one_line():
    done = kprobegen("check", "/nonexistent/spec.yaml")
    assert done.returncode == 2
    assert done.stderr == "kprobegen: error: /nonexistent/spec.yaml: cannot read the spec: No such file or directory\n"


def test_parse_warns_about_lines_it_could_not_use(tmp_path):
    log = tmp_path / "dmesg.txt"
    log.write_text(
        "[    1.0] kprobegen/1 m 0 load kernel=x hooks=1 protocol=1\n"
        "[    1.1] kprobegen/1 m 1 begin report=0 reason=unload ts_ns=1 lines=1\n"
        "[    1.2] kprobegen/1 m 2 hook name=h probe=kprobe symbol=s hits=7 missed=0 dropped=0 disarmed=0 by=- keys=0 hist=0\n"
        "[    1.3] kprobegen/1 m 3 end report=0 lines=1\n"
        "[    1.4] kprobegen/1 m 4 bogus x=1\n")
    done = kprobegen("parse", str(log), "--json")
    assert done.returncode == 0
    assert json.loads(done.stdout)["reports"][0]["hooks"]["h"]["hits"] == 7
    assert done.stderr == "kprobegen: warning: 1 protocol line not understood: bogus\n"
