"""`kprobegen parse` on hostile input (issue #11): endless or odd files, long lines, forged
and conflicting lines — one line of error or a clear finding in the output, never a hang, a
memory blow-up or a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib

import pytest

from report_model import ModuleWriter, render_log
from kprobegen.report.results import HookResult, Results


def kprobegen(*args, stdin=None, input=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "kprobegen", *args], stdin=stdin, input=input,
                          capture_output=True, timeout=timeout)


R = Results("m", "6.1", 0, "unload", 5, True, 0, [],
            {"h": HookResult("h", "s", "kprobe", 7, 0, 0, False, None, {}, None)}, 0, [])


def log_lines(version=2):
    w = ModuleWriter("m", version)
    return w.load("6.1", 1) + w.report(R)


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/urandom", "/dev/null", "/"])
def test_what_is_not_a_regular_file_is_refused_at_once(path):
    done = kprobegen("parse", path, timeout=20)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert err.count("\n") == 1 and "not a log file" in err and "Traceback" not in err


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    done = kprobegen("parse", str(fifo), timeout=20)
    assert done.returncode == 1 and b"a FIFO, not a log file" in done.stderr


def test_endless_stdin_stops_at_the_bound_with_one_line():
    with open("/dev/zero", "rb") as zero:
        done = kprobegen("parse", "--max-bytes", "5000000", "-", stdin=zero, timeout=60)
    assert done.returncode == 1
    assert done.stderr.decode() == ("kprobegen: error: the log is longer than 5000000 bytes (the "
                                    "bound on what is read; --max-bytes changes it): not parsed\n")


def test_an_over_long_line_is_skipped_and_named(tmp_path):
    lines = log_lines()
    text = "\n".join(lines[:2] + ["x" * 300_000 + " kprobegen/2 m 9 key"] + lines[2:]) + "\n"
    log = tmp_path / "long.txt"
    log.write_text(text)
    done = kprobegen("parse", str(log), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["reports"][0]["hooks"]["h"]["hits"] == 7
    assert doc["log"]["problems"][0] == ("log line 3 is longer than 65536 bytes: skipped (no "
                                         "protocol line is that long)")


def test_stdin_and_a_file_read_alike(tmp_path):
    text = ("noise\n" * 3_000_000 + render_log(log_lines(), "kmsg") + "noise\n").encode()
    log = tmp_path / "big.txt"
    log.write_bytes(text)
    a = kprobegen("parse", str(log), "--json")
    b = kprobegen("parse", "-", "--json", input=text)
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout
    assert json.loads(a.stdout)["reports"][0]["hooks"]["h"]["hits"] == 7


def test_the_output_says_what_the_log_form_cannot_tell(tmp_path):
    log = tmp_path / "dmesg.txt"
    log.write_text(render_log(log_lines(), "dmesg"))
    done = kprobegen("parse", str(log))
    out = done.stdout.decode()
    assert done.returncode == 0
    assert out.count("note: 4 protocol line(s) come from a log form that does not show who "
                     "wrote them") == 1
    doc = json.loads(kprobegen("parse", str(log), "--json").stdout)
    assert len(doc["log"]["notes"]) == 1 and doc["log"]["problems"] == []


def test_forged_lines_are_said_in_the_output(tmp_path):
    lines = log_lines()
    fake = f"kprobegen/2 m 2 hook name=h probe=kprobe symbol=s hits=999999 missed=0 dropped=0 " \
           f"disarmed=0 by=- keys=0 hist=0"
    fake += f" chk={zlib.crc32(fake.encode()):08x}"
    log = tmp_path / "kmsg.txt"
    log.write_text("".join(f"6,{i},{i},-;{t}\n" for i, t in enumerate(lines[:2]))
                   + f"12,9,9,-;{fake}\n"
                   + "".join(f"6,{i + 10},{i},-;{t}\n" for i, t in enumerate(lines[2:])))
    done = kprobegen("parse", str(log))
    out = done.stdout.decode()
    assert done.returncode == 0 and "999999" not in out.split("log:")[0]
    assert "log: 1 protocol line(s) not used, not written by the kernel" in out


def test_conflicting_frames_are_an_error_that_says_why(tmp_path):
    w = ModuleWriter("m", 2)
    lines = w.load("6.1", 1) + w.report(R)
    w.seq = 100
    lines += w.report(R)                # report 0 once more, in the same load
    log = tmp_path / "dmesg.txt"
    log.write_text(render_log(lines, "dmesg"))
    done = kprobegen("parse", str(log))
    err = done.stderr.decode()
    assert done.returncode == 1 and err.count("\n") == 1
    assert "2 frames of one load claim report 0" in err
    doc = json.loads(kprobegen("parse", str(log), "--all", "--json").stdout)
    assert [r["complete"] for r in doc["reports"]] == [False, False]
