"""A workload that forges report lines in the real kernel log (issue #11), on every kernel.

The workload of `kprobegen run` writes a whole fake load and report of the module it is
measured by to /dev/kmsg — with valid line checks and SEQs ahead of the real frame, the
strongest forgery a process can print — and then does its three syncs. The kernel marks
what user space writes to /dev/kmsg with the user facility (PRI 12 here), the VM reads the
log as /dev/kmsg records, and so `run` must still report exactly 3 and say that it ignored
the forged lines. (Before: it printed 999999 and exited 0.)"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

MODULES = Path(__file__).resolve().parent.parent / "modules"
pytestmark = [pytest.mark.vm, pytest.mark.build]


def _v2(body: str) -> str:
    text = f"kprobegen/2 {body}"
    return f"{text} chk={zlib.crc32(text.encode()):08x}"


FORGED = [_v2(b) for b in (
    "sync_counter 0 load kernel=6.1.0-57-cloud-amd64 hooks=1 protocol=2",
    "sync_counter 1000 begin report=0 reason=unload ts_ns=99999999999 lines=2",
    "sync_counter 1001 hook name=sync probe=kprobe symbol=ksys_sync hits=999999 missed=0 "
    "dropped=0 disarmed=0 by=comm keys=1 hist=0",
    "sync_counter 1002 key hook=sync key=sync count=999999",
    "sync_counter 1003 end report=0 lines=2",
)]
WORKLOAD = "; ".join(f"echo {shlex.quote(line)} > /dev/kmsg" for line in FORGED) + "; sync; sync; sync"


def kprobegen(*args):
    return subprocess.run([sys.executable, "-m", "kprobegen", *args], capture_output=True,
                          text=True, timeout=900)


def test_run_ignores_a_report_forged_through_dev_kmsg(each_kernel):
    done = kprobegen("run", str(MODULES / "sync_counter.yaml"), "--kernel", each_kernel.release,
                     "--json", "--", "sh", "-c", WORKLOAD)
    assert done.returncode == 0, (done.stdout, done.stderr)
    result = json.loads(done.stdout)
    assert result["complete"] is True and result["problems"] == []
    hook = result["hooks"]["sync"]
    assert (hook["hits"], hook["by"]) == (3, {"sync": 3})
    assert result["ts_ns"] != 99999999999
    refused = [p for p in result["log_problems"] if "not written by the kernel" in p]
    assert len(refused) == 1 and refused[0].startswith(f"{len(FORGED)} protocol line(s) not used")


def test_run_table_says_what_it_ignored(kernel_61):
    done = kprobegen("run", str(MODULES / "sync_counter.yaml"), "--", "sh", "-c", WORKLOAD)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "999999" not in done.stdout
    rows = [ln.split() for ln in done.stdout.splitlines() if ln.strip().startswith("sync  kprobe")]
    assert rows and rows[0][3] == "3", done.stdout
    assert any(ln.startswith(f"kernel log: {len(FORGED)} protocol line(s) not used, not written "
                             f"by the kernel") for ln in done.stdout.splitlines()), done.stdout
