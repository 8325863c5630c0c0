"""Re-create tests/fixtures/logs/: kernel logs of real VM runs, for the report parser's tests.

    python -m tests.vm.save_log_fixtures [--kernel RELEASE|SUITE] [--no-cycles]

Each run writes NAME.dmesg.txt (busybox `dmesg`: "[  1.234567] text"), NAME.dmesg-r.txt
(`dmesg -r`: "<6>[  1.234567] text") and NAME.kmsg.txt (`cat /dev/kmsg`:
"6,1234,1234567,-;text" plus " KEY=value" continuation lines), all read inside the guest after
the modules were unloaded, and NAME.source.txt saying kernel, date and command.
Not a test: it boots the VM a few times (about 30 s) and overwrites the fixtures.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kprobegen.pipeline import build_module
from kprobegen.kernels import toolchain
from kprobegen.spec import load_spec
from kprobegen.kernels import find_kernel
from kprobegen.vm import Oracle, run

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "logs"
HANDMADE = ROOT / "tests" / "data" / "handmade"


def _handmade(kernel, tmp: Path) -> dict[str, Path]:
    d = tmp / "handmade"
    shutil.copytree(HANDMADE, d)
    make_vars = toolchain.make_vars(kernel)  # CC=gcc-12 for 5.10
    subprocess.run(["make", "-C", str(kernel.build_dir), f"M={d}",
                    *(f"{k}={v}" for k, v in sorted(make_vars.items())), "modules"], check=True,
                   capture_output=True)
    return {p.stem: p for p in d.glob("*.ko")}


def _save(name: str, r, kernel, modules: list[str], cmd: list[str], note: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    # Run.kernel_log is the guest's /dev/kmsg records; busybox dmesg and dmesg -r come along
    forms = []
    for text, suffix in ((r.log_forms.get("dmesg"), "dmesg"), (r.log_forms.get("dmesg_r"), "dmesg-r"),
                         (r.kernel_log, "kmsg")):
        if text:
            (OUT / f"{name}.{suffix}.txt").write_text(text)
            forms.append(suffix)
    (OUT / f"{name}.source.txt").write_text(
        f"# Kernel log fixture {name}: a real run of kprobegen's VM (kprobegen.vm.run)\n"
        f"kernel:   {kernel.release} ({kernel.origin}), qemu {r.accel}\n"
        f"date:     {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n"
        f"modules:  {' '.join(modules) or '(none; loaded by the workload)'}\n"
        f"command:  {shlex.join(cmd)}\n"
        f"status:   {r.status}, exit code {r.exit_code}, oracle {r.oracle or '-'}\n"
        f"forms:    {', '.join(f'{name}.{f}.txt' for f in forms)} (read in the guest after unload:\n"
        f"          busybox dmesg, dmesg -r, /dev/kmsg)\n"
        f"note:     {note}\n"
        "regenerate: python -m tests.vm.save_log_fixtures\n"
    )
    print(f"{name}: {r.status}, {len(r.kernel_log.splitlines())} lines, forms {forms}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--kernel", default=None, help="a release or suite (default: the default kernel)")
    ap.add_argument("--no-cycles", action="store_true", help="skip the 100-cycle run (its logs are large)")
    ap.add_argument("--v2", action="store_true",
                    help="only the protocol-2 captures (vm-VER-v2-*): generated modules, and a workload "
                         "that forges a report through /dev/kmsg; the protocol-1 captures stay as they are")
    args = ap.parse_args(argv)
    kernel = find_kernel(args.kernel)
    ver = ".".join(kernel.release.split(".")[:2])
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        hand = _handmade(kernel, tmp)
        gen = {n: build_module(load_spec(ROOT / "modules" / f"{n}.yaml"), out_dir=tmp / n, kernel=kernel).ko
               for n in ("sync_counter", "sync_latency", "openat_by_cat", "fork_counter")}

        if args.v2:
            return _v2_captures(kernel, ver, gen)
        cmd = ["sh", "-c", "for i in 1 2 3 4 5; do sync; done"]
        r = run(kernel, [hand["kpg_hand_sync"]], cmd, oracles=[Oracle("kprobe", "ksys_sync")], log_forms=True)
        _save(f"vm-{ver}-hand-sync", r, kernel, ["kpg_hand_sync (tests/data/handmade)"], cmd,
              "hand-written module, 5 syncs: hits=5")

        cmd = ["sh", "-c", "for i in 1 2 3; do sync; done; for i in 1 2; do /bin/busybox sync; done; "
               "cat /proc/version /nope /proc/uptime /nope2 /nope3 > /dev/null; ls / > /tmp/x; "
               "cat /tmp/x > /dev/null"]
        r = run(kernel, [gen["sync_counter"], gen["sync_latency"], gen["openat_by_cat"]], cmd,
                oracles=[Oracle("kprobe", "ksys_sync"), Oracle("kretprobe", "ksys_sync")], log_forms=True)
        _save(f"vm-{ver}-generated-three", r, kernel, ["sync_counter", "sync_latency", "openat_by_cat"], cmd,
              "sync_counter: sync=3 busybox=2; sync_latency: 5 returns in log2 buckets; "
              "openat_by_cat: open_result hits=6, open_errors key=-2 count=3")

        cmd = ["sh", "-c", "for i in 1 2 3 4; do /bin/true; done"]
        r = run(kernel, [gen["fork_counter"]], cmd, oracles=[Oracle("kprobe", "kernel_clone")], log_forms=True)
        _save(f"vm-{ver}-fork-counter", r, kernel, ["fork_counter"], cmd,
              f"two hooks on kernel_clone, keyed by comm and by tgid; oracle {r.oracle}")

        cmd = ["sh", "-c", "sync"]
        r = run(kernel, [hand["kpg_hand_sync"], hand["kpg_hand_einval"]], cmd, log_forms=True)
        _save(f"vm-{ver}-init-fails", r, kernel, ["kpg_hand_sync", "kpg_hand_einval"], cmd,
              "kpg_hand_einval's init returns -EINVAL: insmod fails, the workload does not run, "
              "kpg_hand_sync is unloaded with hits=0")

        if args.no_cycles:
            return 0
        cmd = ["sh", "-c", "for i in $(seq 100); do insmod /root/fork_counter.ko && insmod /root/openat_by_cat.ko "
               "&& cat /proc/version > /dev/null && rmmod openat_by_cat && rmmod fork_counter || exit $i; done"]
        r = run(kernel, [], cmd, add=[(gen["fork_counter"], "fork_counter.ko"),
                                      (gen["openat_by_cat"], "openat_by_cat.ko")], log_forms=True, timeout=300)
        _save(f"vm-{ver}-100-cycles", r, kernel, [], cmd,
              "100 load/unload cycles of two modules: 100 instances of each, every one with its own load "
              "record and unload frame")
    return 0


GENERATED_THREE = ["sh", "-c", "for i in 1 2 3; do sync; done; for i in 1 2; do /bin/busybox sync; done; "
                   "cat /proc/version /nope /proc/uptime /nope2 /nope3 > /dev/null; ls / > /tmp/x; "
                   "cat /tmp/x > /dev/null"]


def _forging_workload() -> list[str]:
    """Writes a whole report of sync_counter to /dev/kmsg — checked lines, SEQs ahead of the real
    frame, hits=999999 — then does 3 syncs (tests/test_forged_report_vm.py does the same)."""
    import zlib

    def v2(body):
        text = f"kprobegen/2 {body}"
        return f"{text} chk={zlib.crc32(text.encode()):08x}"
    forged = [v2(b) for b in (
        "sync_counter 1000 begin report=0 reason=unload ts_ns=99999999999 lines=2",
        "sync_counter 1001 hook name=sync probe=kprobe symbol=ksys_sync hits=999999 missed=0 "
        "dropped=0 disarmed=0 by=comm keys=1 hist=0",
        "sync_counter 1002 key hook=sync key=sync count=999999",
        "sync_counter 1003 end report=0 lines=2")]
    return ["sh", "-c", "; ".join(f"echo {shlex.quote(line)} > /dev/kmsg" for line in forged)
            + "; sync; sync; sync"]


def _v2_captures(kernel, ver: str, gen: dict) -> int:
    r = run(kernel, [gen["sync_counter"], gen["sync_latency"], gen["openat_by_cat"]], GENERATED_THREE,
            oracles=[Oracle("kprobe", "ksys_sync"), Oracle("kretprobe", "ksys_sync")], log_forms=True)
    _save(f"vm-{ver}-v2-generated-three", r, kernel, ["sync_counter", "sync_latency", "openat_by_cat"],
          GENERATED_THREE, "protocol 2 (line checks); sync_counter: sync=3 busybox=2; sync_latency: 5 "
          "returns in log2 buckets; openat_by_cat: open_result hits=6, open_errors key=-2 count=3")
    cmd = _forging_workload()
    r = run(kernel, [gen["sync_counter"]], cmd, oracles=[Oracle("kprobe", "ksys_sync")], log_forms=True)
    _save(f"vm-{ver}-v2-forged", r, kernel, ["sync_counter"], cmd,
          "protocol 2; the workload writes a forged report (hits=999999, valid line checks) to "
          "/dev/kmsg, then 3 syncs: the kernel's report says sync=3; the forged lines carry the "
          "user facility (PRI 12) in the kmsg and dmesg -r forms, and look like the kernel's in dmesg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
