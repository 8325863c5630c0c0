"""Real Kbuild builds against the installed Debian 12 headers (6.1): every example and a matrix
of feature combinations, with zero compiler warnings, the right module name and vermagic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kprobegen.errors import BuildError
from kprobegen.kbuild import explain_compiler_output, make_command
from kprobegen.pipeline import build_module
from kprobegen.codegen import render_files, write_files
from kprobegen.spec import load_spec, parse_spec

MODULES = Path(__file__).resolve().parent.parent / "modules"
pytestmark = pytest.mark.build


def modinfo(ko: Path, field: str) -> str:
    return subprocess.run(["modinfo", "-F", field, str(ko)], check=True, capture_output=True, text=True).stdout.strip()


def assert_good_module(built, kernel, name):
    assert built.ko.is_file() and built.ko.name == f"{name}.ko"
    assert built.warnings == ()
    assert modinfo(built.ko, "name") == name
    assert modinfo(built.ko, "vermagic").split()[0] == kernel.release
    assert modinfo(built.ko, "license") == "GPL"


@pytest.mark.parametrize("path", sorted(MODULES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_builds_clean(path, each_kernel, tmp_path):
    """The same spec builds warning-free on 5.10, 6.1 and 6.12 (fresh build, no cache)."""
    spec = load_spec(path)
    built = build_module(spec, tmp_path / "out", kernel=each_kernel, strict=True, use_cache=False)
    assert not built.cached
    assert_good_module(built, each_kernel, spec.module)
    assert (tmp_path / "out" / f"{spec.module}.c").read_text() == render_files(spec)[f"{spec.module}.c"]


# Every feature at least once; kprobe and kretprobe forms in separate modules.
MATRIX = {
    "kprobe_features": """
module: kprobe_features
description: every kprobe feature
hooks:
  - {name: plain, symbol: ksys_sync}
  - {name: at_offset, symbol: ksys_sync, offset: 4}
  - {name: by_comm, symbol: ksys_sync, count_by: comm, filter: {comm: sync}}
  - {name: by_pid, symbol: ksys_sync, count_by: pid, filter: {pid: 1}}
  - {name: by_tgid, symbol: ksys_sync, count_by: tgid, filter: {tgid: 1}}
  - {name: by_cpu, symbol: ksys_sync, count_by: cpu}
  - {name: by_arg2, symbol: vfs_read, count_by: arg2, filter: {arg2: [">= 1", "< 4096"], arg0: "!= 0"}}
  - {name: hist_log, symbol: vfs_read, histogram: {of: arg2}}
  - {name: hist_lin, symbol: vfs_write, histogram: {of: arg2, scale: linear, min: -100, max: 100, step: 10}}
  - {name: printed, symbol: vfs_read, print: {burst: 5, interval_ms: 500, fields: [arg0, arg2]}}
limits: {max_hits: 1000, max_keys: 64}
report: {interval_ms: 1000}
""",
    "kretprobe_features": """
module: kretprobe_features
hooks:
  - {name: plain, probe: kretprobe, symbol: ksys_sync}
  - {name: latency, probe: kretprobe, symbol: ksys_sync, histogram: {of: latency}}
  - {name: latency_lin, probe: kretprobe, symbol: vfs_read, histogram: {of: latency, scale: linear, min: 0, max: 100000, step: 1000}}
  - {name: by_retval, probe: kretprobe, symbol: vfs_read, count_by: retval, filter: {retval: [">= 0"], comm: cat}}
  - {name: by_arg, probe: kretprobe, symbol: vfs_read, count_by: arg2, histogram: {of: retval}}
  - {name: hist_arg, probe: kretprobe, symbol: vfs_write, histogram: {of: arg2}, filter: {arg2: "> 0", tgid: 1}}
  - {name: printed, probe: kretprobe, symbol: vfs_write, print: {fields: [arg1, retval, latency]}}
limits: {maxactive: 32, max_keys: 4096}
""",
    "plain_counts_only": """
module: plain_counts_only
hooks:
  - {name: entry, symbol: ksys_sync}
  - {name: exit, probe: kretprobe, symbol: ksys_sync}
limits: {max_hits: 4}
""",
    "one_kretprobe_only": """
module: one_kretprobe_only
hooks:
  - {probe: kretprobe, symbol: ksys_sync, count_by: comm, histogram: {of: latency}}
limits: {max_hits: 5}
""",
}


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_feature_matrix_builds_without_warnings(name, each_kernel, tmp_path):
    spec = parse_spec(MATRIX[name], f"{name}.yaml")
    built = build_module(spec, tmp_path, kernel=each_kernel, strict=True, use_cache=False)
    assert_good_module(built, each_kernel, name)


def test_hostile_strings_build_clean(kernel_61, tmp_path, monkeypatch):
    monkeypatch.setenv("KPROBEGEN_CACHE", str(tmp_path / "cache"))
    spec = parse_spec(
        "module: hostile\ndescription: '*/ evil(); /* %s \\\\'\nhooks:\n"
        "  - {name: h, symbol: ksys_sync, count_by: comm, filter: {comm: '\";}evil();/*'}}\n",
        source='x*/"\n.yaml')
    built = build_module(spec, tmp_path, kernel=kernel_61, strict=True)
    assert modinfo(built.ko, "description") == spec.description == "*/ evil(); /* %s \\\\"


def test_unchanged_rebuild_comes_from_the_cache(kernel_61, tmp_path, monkeypatch):
    monkeypatch.setenv("KPROBEGEN_CACHE", str(tmp_path / "cache"))
    spec = load_spec(MODULES / "sync_counter.yaml")
    first = build_module(spec, tmp_path / "a", kernel=kernel_61)
    second = build_module(spec, tmp_path / "b", kernel=kernel_61)
    assert (first.cached, second.cached) == (False, True)
    assert second.ko.read_bytes() == first.ko.read_bytes()
    changed = parse_spec((MODULES / "sync_counter.yaml").read_text().replace("count_by: comm", "count_by: pid"),
                         str(MODULES / "sync_counter.yaml"))
    assert not build_module(changed, tmp_path / "c", kernel=kernel_61).cached


def test_compiler_errors_are_mapped_to_the_hook(kernel_61, tmp_path):
    """A real gcc error in a hook's generated code names that hook and its spec index."""
    spec = load_spec(MODULES / "openat_by_cat.yaml")
    files = render_files(spec)
    c_name = "openat_by_cat.c"
    # Break the second hook's return handler the way a template bug would.
    files[c_name] = files[c_name].replace("kpg_open_errors__count(&key);", "kpg_open_errors__count(&key, no_such_variable);")
    write_files(files, tmp_path)
    done = subprocess.run(make_command(kernel_61.build_dir, tmp_path), capture_output=True, text=True,
                          env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"})
    assert done.returncode != 0
    lines = explain_compiler_output(done.stdout + done.stderr, files[c_name], [(h.hook_name, h.symbol) for h in spec.hooks])
    assert any("no_such_variable" in line and "[hook open_errors, spec hooks[1] symbol do_sys_openat2]" in line
               for line in lines), lines


def test_missing_tree_names_the_package(tmp_path):
    spec = load_spec(MODULES / "sync_counter.yaml")
    with pytest.raises(BuildError, match=r"no kernel build tree at .*nonexistent"):
        build_module(spec, tmp_path / "out", kernel_dir=tmp_path / "nonexistent")
    assert not (tmp_path / "out").exists(), "nothing written on failure"


def test_cli_build_json_and_running_kernel_message(kernel_61, tmp_path):
    env_cli = [sys.executable, "-m", "kprobegen"]
    done = subprocess.run(env_cli + ["build", str(MODULES / "sync_counter.yaml"), "-o", str(tmp_path), "--json",
                                     "--kernel-dir", str(kernel_61.build_dir)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["module"] == "sync_counter" and report["kernel"] == kernel_61.release
    assert Path(report["ko"]).is_file()
    import os

    running = os.uname().release
    if not Path(f"/lib/modules/{running}/build").exists():
        done = subprocess.run(env_cli + ["build", str(MODULES / "sync_counter.yaml"), "-o", str(tmp_path / "x"),
                                         "--kernel", running], capture_output=True, text=True)
        assert done.returncode == 1
        assert f"install linux-headers-{running}" in done.stderr
        assert done.stderr.count("\n") == 1, "one line"


def test_unchanged_spec_file_rebuild_needs_no_yaml_or_templates(kernel_61, tmp_path, monkeypatch):
    """`kprobegen build` of an unchanged spec file is served from the cache by its bytes alone."""
    monkeypatch.setenv("KPROBEGEN_CACHE", str(tmp_path / "cache"))
    spec = tmp_path / "sync_counter.yaml"
    spec.write_text((MODULES / "sync_counter.yaml").read_text())
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "unrelated.txt").write_text("mine")
    args = ["build", str(spec), "--kernel", kernel_61.release, "--json", "--no-symbol-check", "-o"]
    run = lambda out: json.loads(subprocess.run([sys.executable, "-m", "kprobegen", *args, str(out)],
                                                check=True, capture_output=True, text=True).stdout)
    assert run(tmp_path / "a")["cached"] is False
    # The second process must not even import the YAML and template machinery.
    probe = subprocess.run([sys.executable, "-c",
        "import sys, runpy; sys.argv = ['kprobegen'] + sys.argv[1:];\n"
        "try: runpy.run_module('kprobegen', run_name='__main__')\n"
        "except SystemExit: pass\n"
        "print('LOADED', 'kprobegen.spec' in sys.modules, 'jinja2' in sys.modules)",
        *args, str(tmp_path / "b")], check=True, capture_output=True, text=True)
    assert '"cached": true' in probe.stdout and "LOADED False False" in probe.stdout
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(
        p.name for p in (tmp_path / "a").iterdir()) + ["unrelated.txt"]
    assert (tmp_path / "b" / "sync_counter.ko").read_bytes() == (tmp_path / "a" / "sync_counter.ko").read_bytes()
    spec.write_text(spec.read_text().replace("count_by: comm", "count_by: pid"))
    assert run(tmp_path / "c")["cached"] is False
