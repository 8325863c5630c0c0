"""Real VM runs (qemu, the cloud kernel) with hand-written modules built by plain Kbuild.

Each test boots a kernel: about 3 s under TCG on the development machines.
"""

from __future__ import annotations

import re
import time

import pytest

from kprobegen.errors import VMError
from kprobegen.vm import Oracle, run

pytestmark = [pytest.mark.vm, pytest.mark.build]

from .conftest import qemu_processes_with

N = 5
REPORT_HITS = re.compile(r"kprobegen/1 kpg_hand_sync \d+ hook name=sync .*?\bhits=(\d+) missed=(\d+)")


@pytest.fixture(scope="module")
def sync_run(kernel, handmade):
    progress = []
    r = run(kernel, [handmade["kpg_hand_sync"]],
            ["sh", "-c", f"for i in $(seq {N}); do sync; done; printf 'out\\tline\\n'; echo err >&2; exit 3"],
            oracles=[Oracle("kprobe", "ksys_sync")], timeout=120, progress=progress.append)
    return r, progress


def test_sync_run_is_ok(sync_run):
    r, _ = sync_run
    r.raise_for_status()
    assert r.status == "ok"
    assert r.accel in ("kvm", "tcg")


def test_module_report_and_oracle_agree_exactly(sync_run):
    r, _ = sync_run
    hits = REPORT_HITS.findall(r.kernel_log)
    assert hits == [(str(N), "0")], r.kernel_log[-2000:]
    assert r.oracle == {"kprobe:ksys_sync": (N, 0)}


def test_workload_output_and_exit_code_round_trip(sync_run):
    r, _ = sync_run
    assert r.exit_code == 3
    assert r.stdout == "out\tline\n"
    assert r.stderr == "err\n"


def test_loads_unloads_and_leaves_nothing(sync_run, handmade):
    r, _ = sync_run
    [m] = r.loads
    assert (m.name, m.path, m.insmod_rc, m.error, m.rmmod_rc) == (
        "kpg_hand_sync", handmade["kpg_hand_sync"], 0, None, 0)
    assert r.leftover_modules == []
    assert r.leftover_kprobes == []


def test_progress_and_timings(sync_run):
    r, progress = sync_run
    assert progress[-4:] == [f"booting ({r.accel})", "loading", "running", "collecting"]
    for k in ("initramfs", "boot", "load", "workload", "unload", "collect", "total"):
        assert k in r.timings and r.timings[k] >= 0
    assert r.timings["boot"] < r.timings["total"]


def test_kernel_log_is_read_in_the_guest_after_unload(sync_run):
    r, _ = sync_run
    # pr_info lines never reach the (quiet) console; they come from dmesg in the guest
    assert "kpg_hand_sync 3 end report=0 lines=1" in r.kernel_log
    assert "kprobegen/1" not in r.console_tail
    # as /dev/kmsg records (PRI,SEQ,TS,FLAGS;text), the first one the kernel's first line
    assert re.match(r"[0-7],0,0,[^;]*;Linux version", r.kernel_log)
    assert r.log_forms["dmesg"].startswith("[    0.000000] Linux version")


def test_init_failure_reports_the_reason_and_unloads_everything(kernel, handmade):
    r = run(kernel, [handmade["kpg_hand_sync"], handmade["kpg_hand_einval"], handmade["kpg_hand_empty"]],
            ["sh", "-c", "sync"], timeout=120)
    r.raise_for_status()
    ok, bad, untried = r.loads
    assert (ok.insmod_rc, ok.rmmod_rc) == (0, 0)
    assert bad.insmod_rc == 22 and bad.rmmod_rc is None         # busybox insmod exits with EINVAL
    assert "Invalid argument" in bad.error                       # insmod's stderr
    assert "refusing to load on purpose" in bad.error            # the kernel's own line
    assert "\n" not in bad.reason and bad.reason.startswith("insmod: can't insert")
    assert bad.reason.endswith("kpg_hand_einval: refusing to load on purpose (test of a failing init)")
    assert untried.insmod_rc == -1 and "not tried" in untried.error
    assert r.exit_code is None                                   # no workload with a module missing
    assert r.leftover_modules == []
    assert r.leftover_kprobes == []
    assert not r.loaded_ok


def test_blacklisted_symbol_fails_to_load(kernel, handmade):
    # kpg_hand_empty probes the symbol given as a parameter; it cannot take parameters through
    # run(), so use an insmod in the workload: the kprobe on a blacklisted symbol must fail.
    r = run(kernel, [], ["sh", "-c", "insmod /root/e.ko symbol=do_int3; echo rc=$?; grep -c . /proc/modules || true"],
            add=[(handmade["kpg_hand_empty"], "e.ko")], timeout=120)
    r.raise_for_status()
    # busybox insmod exits with the errno: a kprobe on a blacklisted symbol is -EINVAL
    assert r.stdout == "rc=22\n0\n"                            # 0 lines in /proc/modules
    assert "Invalid argument" in r.stderr


def test_panic_is_reported_well_within_the_timeout(kernel):
    t0 = time.monotonic()
    r = run(kernel, [], ["sh", "-c", "echo c > /proc/sysrq-trigger"], timeout=90)
    took = time.monotonic() - t0
    assert r.status == "panic"
    assert took < 45
    assert "Kernel panic - not syncing" in r.console_tail
    assert r.exit_code is None
    with pytest.raises(VMError, match=r"VM run panic .*Kernel panic - not syncing"):
        r.raise_for_status()


def test_hang_times_out_and_qemu_is_gone(kernel):
    t0 = time.monotonic()
    r = run(kernel, [], ["sleep", "1000"], timeout=20)
    took = time.monotonic() - t0
    assert r.status == "timeout"
    assert 20 <= took < 35
    assert r.exit_code is None
    initrd = r.argv[r.argv.index("-initrd") + 1]
    assert qemu_processes_with(initrd) == []
    with pytest.raises(VMError, match=r"VM run timeout .*no result within 20 s \(stage: running\)"):
        r.raise_for_status()


def test_add_files_and_forced_tcg(kernel, tmp_path):
    tool = tmp_path / "tool.sh"
    tool.write_text("#!/bin/sh\necho \"tool $1\"\n")
    tool.chmod(0o755)
    data = tmp_path / "d"
    data.mkdir()
    (data / "bytes.bin").write_bytes(bytes(range(256)))
    r = run(kernel, [], ["sh", "-c", "./tool.sh x; /opt/tool.sh y; md5sum /opt/d/bytes.bin"],
            add=[(tool, "tool.sh"), (tool, "/opt/tool.sh"), (data, "/opt/d")], accel="tcg", timeout=120)
    r.raise_for_status()
    assert r.accel == "tcg"
    assert r.stdout.splitlines() == ["tool x", "tool y", "e2c865db4162bed963bfaa9ef6ac18f0  /opt/d/bytes.bin"]


def test_qemu_does_not_outlive_a_killed_runner(kernel, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "KPROBEGEN_CACHE": str(tmp_path)}   # the run's files, hence qemu's argv, under tmp_path
    code = ("import sys; from kprobegen.kernels import find_kernel; from kprobegen.vm import run; "
            "run(find_kernel(sys.argv[1]), [], ['sleep', '1000'], timeout=300, accel='tcg')")
    runner = subprocess.Popen([sys.executable, "-c", code, kernel.release], env=env,
                              cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    try:
        deadline = time.monotonic() + 60
        while not qemu_processes_with(str(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert qemu_processes_with(str(tmp_path)), "qemu never started"
        runner.send_signal(signal.SIGKILL)       # no finally, no cleanup: only PR_SET_PDEATHSIG
        runner.wait(10)
        deadline = time.monotonic() + 10
        while qemu_processes_with(str(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert qemu_processes_with(str(tmp_path)) == []
    finally:
        if runner.poll() is None:
            runner.kill()
        for pid in qemu_processes_with(str(tmp_path)):  # our own orphans, when the test failed
            os.kill(pid, signal.SIGKILL)
