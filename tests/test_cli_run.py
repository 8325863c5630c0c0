"""`kprobegen run` as a user runs it: real build, real VM, exact counts, and the failure paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

MODULES = Path(__file__).resolve().parent.parent / "modules"
pytestmark = [pytest.mark.vm, pytest.mark.build]


def kprobegen(*args, check_rc=None):
    done = subprocess.run([sys.executable, "-m", "kprobegen", *args], capture_output=True, text=True, timeout=600)
    if check_rc is not None:
        assert done.returncode == check_rc, (done.returncode, done.stdout, done.stderr)
    return done


def spec_file(tmp_path, symbol, name="probe_one", extra=""):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"module: {name}\nhooks:\n  - name: h\n    symbol: {symbol}\n{extra}")
    return path


def test_run_json_counts_and_exit_code(kernel_61):
    done = kprobegen("run", str(MODULES / "sync_counter.yaml"), "--json", "--",
                     "sh", "-c", "sync; sync; sync; sync; exit 3", check_rc=3)
    result = json.loads(done.stdout)
    assert result["exit_code"] == 3
    assert result["module"] == "sync_counter" and result["kernel"] == kernel_61.release
    assert result["complete"] is True and result["lost_lines"] == 0
    hook = result["hooks"]["sync"]
    assert (hook["hits"], hook["missed"], hook["dropped"], hook["by"]) == (4, 0, 0, {"sync": 4})
    assert result["accel"] in ("kvm", "tcg")
    # No progress on stderr when it is not a terminal; only a Notice may show (the first boot
    # after the host's own boot may fall back from KVM to TCG, and says so).
    assert all("falling back to tcg" in ln for ln in done.stderr.splitlines()), done.stderr


def test_run_table_output(kernel_61):
    done = kprobegen("run", str(MODULES / "sync_latency.yaml"), "--", "sh", "-c", "sync; sync", check_rc=0)
    assert "sync_ns" in done.stdout and "ksys_sync" in done.stdout
    assert "|@" in done.stdout, "a histogram drawn with @ bars"
    assert "workload exit code 0" in done.stdout


def test_missing_symbol_refused_before_building(kernel_61, tmp_path):
    done = kprobegen("run", str(spec_file(tmp_path, "ksys_synk")), "--", "true", check_rc=2)
    assert "ksys_synk" in done.stderr and "ksys_sync" in done.stderr, "names the symbol and suggests the real one"
    assert done.stderr.count("\n") == 1


def test_blacklisted_symbol_refused_before_building(kernel_61, tmp_path):
    done = kprobegen("run", str(spec_file(tmp_path, "__die")), "--", "true", check_rc=2)
    assert "__die" in done.stderr and "blacklist" in done.stderr


def test_init_failure_is_reported_with_the_kernels_reason(kernel_61, tmp_path):
    # Skip the pre-build check so the kernel itself refuses the probe: register_kprobe() = -EINVAL.
    done = kprobegen("run", str(spec_file(tmp_path, "__die", name="doomed")), "--no-symbol-check", "--", "true",
                     check_rc=1)
    assert "insmod doomed failed" in done.stderr
    assert "hook=h symbol=__die err=-22" in done.stderr, done.stderr


def test_glob_expands_against_the_kernel(kernel_61, tmp_path):
    spec = spec_file(tmp_path, "ksys_sync*", name="globbed")
    done = kprobegen("render", str(spec), "--kernel", kernel_61.release, check_rc=0)
    assert 'symbol_name = "ksys_sync"' in done.stdout
    nomatch = spec_file(tmp_path, "zzz_no_such_*", name="nomatch")
    done = kprobegen("check", str(nomatch), "--kernel", kernel_61.release, check_rc=2)
    line = next(n for n, text in enumerate(nomatch.read_text().splitlines(), 1) if "zzz_no_such_*" in text)
    assert done.stderr.startswith(f"kprobegen: error: {nomatch}:{line}:"), done.stderr
    assert "hooks[0].symbol: No functions matched" in done.stderr
    assert done.stderr.count("\n") == 1


def test_run_has_no_host_option(tmp_path):
    """run always loads in a disposable VM; host mode is `kprobegen load` (no half-feature flag)."""
    done = kprobegen("run", str(MODULES / "sync_counter.yaml"), "--host", "--", "true")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "--host" in done.stderr


def test_bad_spec_is_one_line_and_nothing_is_built(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("module: m\nhooks:\n  - symbol: ksys_sync\n    cont_by: comm\n")
    out = tmp_path / "out"
    done = kprobegen("build", str(bad), "-o", str(out), check_rc=2)
    assert done.stderr == f"kprobegen: error: {bad}:4:5: hooks[0].cont_by: unknown key 'cont_by'; did you mean 'count_by'?\n"
    assert not out.exists()


def test_schema_command_prints_json_schema():
    schema = json.loads(kprobegen("schema", check_rc=0).stdout)
    assert schema["$schema"].endswith("2020-12/schema") and "hooks" in schema["required"]


def test_run_json_carries_the_workloads_output(kernel_61):
    done = kprobegen("run", str(MODULES / "sync_counter.yaml"), "--json", "--",
                     "sh", "-c", "echo out; echo err >&2; sync", check_rc=0)
    result = json.loads(done.stdout)
    assert (result["stdout"], result["stderr"], result["truncated"]) == ("out\n", "err\n", False)
    assert result["hooks"]["sync"]["hits"] == 1


def test_run_json_bounds_the_workloads_output(kernel_61):
    from kprobegen.pipeline import OUTPUT_JSON_LIMIT

    n = OUTPUT_JSON_LIMIT // 8 + 1000   # 8 bytes a line: more than the limit
    done = kprobegen("run", str(MODULES / "sync_counter.yaml"), "--json", "--",
                     "sh", "-c", f"seq 1000000 {1000000 + n - 1}; sync", check_rc=0)
    result = json.loads(done.stdout)
    assert result["truncated"] is True and len(result["stdout"]) == OUTPUT_JSON_LIMIT
    assert result["stdout"].startswith("1000000\n1000001\n") and result["stderr"] == ""
    assert result["hooks"]["sync"]["hits"] == 1


def test_run_passes_binary_output_through_untouched(kernel_61, tmp_path):
    blob = bytes(range(256)) * 4096 + b"\xff\xfe\x00end"   # 1 MiB of every byte value, not UTF-8
    (tmp_path / "blob").write_bytes(blob)
    done = subprocess.run([sys.executable, "-m", "kprobegen", "run", str(MODULES / "sync_counter.yaml"),
                           "--add", f"{tmp_path / 'blob'}:/blob", "--", "cat", "/blob"],
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(blob)                  # byte for byte, then the counts
    assert done.stdout[len(blob):].startswith(b"sync_counter report 0 (unload)")


def test_run_log_composes_with_parse(kernel_61, tmp_path):
    log = tmp_path / "run.log"
    done = kprobegen("run", str(MODULES / "sync_counter.yaml"), "--log", str(log), "--json", "--",
                     "sh", "-c", "sync; sync", check_rc=0)
    ran = json.loads(done.stdout)
    parsed = json.loads(kprobegen("parse", str(log), "--json", check_rc=0).stdout)
    [report] = parsed["reports"]
    assert report["hooks"]["sync"]["hits"] == ran["hooks"]["sync"]["hits"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["run.log"]    # no temporary file left beside it


def test_every_option_has_help():
    """`--help` explains every option of every command (argparse prints no text for an option
    without help)."""
    import argparse

    from kprobegen.cli import parser

    def walk(p: argparse.ArgumentParser, path: str):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and action.help != argparse.SUPPRESS:
                yield path, action

    missing = [f"{path}: {'/'.join(a.option_strings) or a.dest}" for path, a in walk(parser(), "kprobegen")
               if not a.help]
    assert missing == []


def test_readme_command_table_lists_every_option():
    """README's command table names every option each command takes (hidden ones aside)."""
    import argparse
    import re

    from kprobegen.cli import parser

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `kprobegen ([a-z]+(?: [a-z]+)?)\b([^`]*)`", readme, re.M)}
    top = parser()
    [sub] = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    missing = []
    for name, child in sub.choices.items():
        commands = {name: child}
        for a in child._actions:
            if isinstance(a, argparse._SubParsersAction):
                commands = {f"{name} {n}": c for n, c in a.choices.items()}
        for cname, cparser in commands.items():
            row = rows.get(cname)
            if row is None:
                missing.append(f"{cname}: no row")
                continue
            for a in cparser._actions:
                if a.option_strings and a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction):
                    if not any(o in row for o in a.option_strings):
                        missing.append(f"{cname}: {a.option_strings[-1]}")
    assert missing == []
