"""Issue #11: unbounded and malformed input, bad options and bad output paths.

Every case runs the real CLI in a subprocess and asserts one line on stderr, a non-zero exit,
no traceback, and nothing written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kprobegen.errors import SpecError
from kprobegen.spec import MAX_DEPTH, load_spec, parse_spec

MODULES = Path(__file__).resolve().parent.parent / "modules"
SPEC = MODULES / "sync_counter.yaml"


def kprobegen(*args, stdin=None, timeout=60, **kw):
    return subprocess.run([sys.executable, "-m", "kprobegen", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, stdin=stdin if stdin is not None else subprocess.DEVNULL, **kw)


def one_error_line(done, code=None) -> str:
    assert done.returncode != 0 if code is None else done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("kprobegen: error: ") and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


# -- spec text --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, where, words", [
    ("module: m\f\nhooks: []\n", "x.yaml:1:10:", "U+000C"),
    ("module: m\nhooks:\n  - symbol: ksys_sync\x00\n", "x.yaml:3:22:", "U+0000"),
    ("module: m\nhooks:\n  - symbol: a\n    name: \x1b[31m\n", "x.yaml:4:11:", "U+001B"),
    ("module: m\nhooks: " + "[" * 500 + "\n", "x.yaml:2:", f"nested more than {MAX_DEPTH} deep"),
    ("module: m\nhooks: " + "{a: " * 300 + "\n", "x.yaml:2:", "nested more than"),
    ("module: m\nlimits: {max_hits: " + "9" * 5001 + "}\nhooks:\n  - symbol: a\n", "x.yaml:2:20: limits.max_hits:",
     "4300 digits"),
    ("module: m\nhooks:\n  - symbol: a\n    filter: {pid: !!bool maybe}\n", "x.yaml:4:19: hooks[0].filter.pid:",
     "cannot read this value as bool"),
    ("module: m\nhooks:\n  - symbol: a\n    filter: {pid: !!timestamp 2001-13-45}\n", "x.yaml:4:19:", "timestamp"),
    ("module: m\nhooks:\n  - symbol: a\n    filter: {arg0: \">= " + "9" * 5000 + "\"}\n", "x.yaml:4:20: hooks[0].filter.arg0:",
     "does not fit in a signed 64-bit long"),
])
def test_malformed_spec_text_is_one_line_with_file_line_col(text, where, words):
    with pytest.raises(SpecError) as info:
        parse_spec(text, "x.yaml")
    message = str(info.value)
    assert message.startswith(where) and words in message, message
    assert "\n" not in message and len(message) < 300, "one short line, whatever the input's size"


def test_binary_file_is_located(tmp_path):
    spec = tmp_path / "bin.yaml"
    spec.write_bytes(b"module: m\nhooks:\n  - symbol: \xff\xfe\x00\n")
    stderr = one_error_line(kprobegen("check", spec), 2)
    assert f"{spec}:3:13: the spec is not UTF-8" in stderr


# -- endless or special files -----------------------------------------------------------------

@pytest.mark.parametrize("path, kind", [("/dev/zero", "a device"), ("/dev/urandom", "a device"), ("/", "a folder")])
def test_special_files_are_refused_before_reading(path, kind):
    done = kprobegen("check", path, timeout=30)
    assert one_error_line(done, 2) == (f"kprobegen: error: {path}: cannot read the spec: it is {kind}, not a regular "
                                       "file (use - to read the spec from standard input)\n")


def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    done = kprobegen("build", fifo, "-o", tmp_path / "out", timeout=30)
    assert "it is a FIFO" in one_error_line(done, 2)
    assert not (tmp_path / "out").exists()


def test_oversized_file_and_stdin_are_bounded(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * (2 << 20) + b"\nmodule: m\n")
    assert "over 1048576 bytes" in one_error_line(kprobegen("check", big), 2)
    # stdin is read with the same bound: an endless stream ends in an error, not in memory exhaustion
    with open("/dev/zero", "rb") as zero:
        assert "<stdin>: the spec is over 1048576 bytes" in one_error_line(kprobegen("check", "-", stdin=zero), 2)


def test_spec_from_stdin(tmp_path):
    with open(SPEC, "rb") as f:
        done = kprobegen("check", "-", stdin=f)
    assert done.returncode == 0 and "module sync_counter" in done.stdout
    with open(SPEC, "rb") as f:
        assert "sync_counter" in kprobegen("render", "-", "--emit-c", stdin=f).stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("module: m\nhooks:\n  - symbol: a\n    cont_by: comm\n")
    with open(bad, "rb") as f:
        assert "<stdin>:4:5: hooks[0].cont_by: unknown key" in one_error_line(kprobegen("check", "-", stdin=f), 2)


# -- options ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, option", [
    (["run", SPEC, "--timeout", "nan", "--", "true"], "--timeout"),
    (["run", SPEC, "--timeout", "inf", "--", "true"], "--timeout"),
    (["run", SPEC, "--timeout", "0", "--", "true"], "--timeout"),
    (["run", SPEC, "--timeout", "-5", "--", "true"], "--timeout"),
    (["run", SPEC, "--top", "0", "--", "true"], "--top"),
    (["run", SPEC, "--top", "-1", "--", "true"], "--top"),
    (["parse", "--top", "0", "/dev/null"], "--top"),
    (["render", SPEC, "-o", ""], "-o/--output"),
    (["build", SPEC, "-o", " "], "-o/--output"),
    (["run", SPEC, "--keep", "", "--", "true"], "--keep"),
])
def test_bad_option_values_are_refused_by_name(args, option, tmp_path):
    done = kprobegen(*args, cwd=tmp_path, timeout=30)
    assert f"argument {option}:" in one_error_line(done, 2)
    assert list(tmp_path.iterdir()) == [], "nothing written (render -o '' used to write into the current folder)"


# -- output paths -----------------------------------------------------------------------------

def test_bad_output_paths_are_one_line_and_nothing_is_written(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    cases = [
        (["render", SPEC, "-o", afile], "exists and is not a folder"),
        (["build", SPEC, "-o", afile], "exists and is not a folder"),
        (["render", SPEC, "-o", afile / "sub"], "is not a folder"),
        (["build", SPEC, "-o", afile / "sub" / "deeper"], "is not a folder"),
        (["render", SPEC, "-o", "/proc/kprobegen-test/x"], "cannot create"),
        (["run", SPEC, "--keep", afile, "--", "true"], "--keep"),
    ]
    for args, words in cases:
        assert words in one_error_line(kprobegen(*args)), args
    assert afile.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_folders_made_for_a_failing_command_are_removed(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("module: m\nhooks:\n  - symbol: a\n    histogram: {of: latency}\n")
    out = tmp_path / "new" / "deeper"
    one_error_line(kprobegen("render", bad, "-o", out), 2)
    assert not (tmp_path / "new").exists()


def test_closed_or_full_stdout_is_one_line():
    done = subprocess.run(f"{sys.executable} -m kprobegen schema >&-", shell=True, capture_output=True, text=True)
    assert "standard output is closed" in one_error_line(done, 1)
    if Path("/dev/full").exists():
        with open("/dev/full", "w") as full:
            done = subprocess.run([sys.executable, "-m", "kprobegen", "schema"], stdout=full, stderr=subprocess.PIPE,
                                  text=True)
        assert "No space left on device" in one_error_line(done, 1)
