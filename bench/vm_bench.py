#!/usr/bin/env python3
"""VM benchmark (issue 4): spec → counts with kprobegen's VM path, against the bare minimum.

Side by side, alternating so that both see the same machine load:

  bare       a hand-made busybox initramfs (cpio(1) + gzip, a 6-line /init: insmod, sync × N,
             rmmod, dmesg to the second serial port, poweroff) with the same prebuilt .ko,
             booted with the same qemu flags; timed from qemu start to qemu exit.
  kprobegen  kprobegen.vm.run() with the same .ko (cached build), the same workload, the
             oracle off: initramfs writing, boot, load, workload, unload, collecting the
             results, shutdown; plus the same with an oracle on ksys_sync.
  spec→counts the whole path: pipeline.build_module() from the spec (cache hit), vm.run(),
             report.parse_log() -- what `kprobegen run` does.

Prints medians, the ratio to the bare path (target ≤ 1.3×), and where kprobegen's time goes.
virtme-ng is compared in bench/virtme_bench.py, on Debian's generic kernel: it cannot mount its
root on the cloud kernel (no 9p there, and no usable virtiofsd on this machine).
Times are printed, never asserted.

Usage: python3 bench/vm_bench.py [--rounds N] [--kernel RELEASE] [--accel tcg]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kprobegen import vm  # noqa: E402
from kprobegen.kernels import find_kernel  # noqa: E402
from kprobegen.pipeline import build_module  # noqa: E402
from kprobegen.spec import load_spec  # noqa: E402
from kprobegen.vm import qemu  # noqa: E402

SYNCS = 5
BARE_INIT = """#!/bin/sh
mount -t proc p /proc; mount -t devtmpfs d /dev
insmod /m.ko
for i in $(seq {n}); do sync; done
rmmod {name}
dmesg > /dev/ttyS1
poweroff -f
"""


def bare_initramfs(work: Path, ko: Path, name: str) -> Path:
    """The bare minimum, made with the usual tools: cpio -o -H newc | gzip."""
    root = work / "root"
    for d in ("bin", "dev", "proc"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "mount", "insmod", "rmmod", "seq", "sync", "dmesg", "poweroff"):
        os.symlink("busybox", root / "bin" / applet)
    (root / "init").write_text(BARE_INIT.format(n=SYNCS, name=name))
    (root / "init").chmod(0o755)
    shutil.copy(ko, root / "m.ko")
    subprocess.run(["mknod", "-m", "600", str(root / "dev" / "console"), "c", "5", "1"], check=True)
    files = subprocess.run(["find", "."], cwd=root, capture_output=True, text=True, check=True).stdout
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files.encode(),
                          capture_output=True, check=True).stdout
    out = work / "bare.cpio.gz"
    out.write_bytes(subprocess.run(["gzip", "-1"], input=cpio, capture_output=True, check=True).stdout)
    return out


def run_bare(kernel, initrd: Path, work: Path, accel: str) -> tuple[float, str]:
    con, data = work / "bare-console.log", work / "bare-data.log"
    argv = qemu.qemu_argv(kernel_image=Path(kernel.image), initrd=initrd, console_log=con,
                          data_log=data, accel=accel)
    t = time.monotonic()
    subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=300, check=True)
    return time.monotonic() - t, data.read_text(errors="replace")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="kprobegen VM path vs a bare busybox initramfs")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--kernel", default=None)
    ap.add_argument("--accel", default="tcg", help="tcg (default here: KVM hangs), kvm or auto")
    args = ap.parse_args(argv)
    kernel = find_kernel(args.kernel)
    spec_path = REPO / "modules" / "sync_counter.yaml"
    cmd = ["sh", "-c", f"for i in $(seq {SYNCS}); do sync; done"]
    try:
        from kprobegen.report import parse_log
    except ImportError:  # pragma: no cover - another engineer's piece
        parse_log = None

    with tempfile.TemporaryDirectory(prefix="kpg-vmbench-") as t:
        work = Path(t)
        built = build_module(load_spec(spec_path), out_dir=work / "build", kernel=kernel)
        initrd = bare_initramfs(work, built.ko, built.name)
        rows: dict[str, list[float]] = {"bare": [], "kprobegen": [], "kprobegen+oracle": [], "spec→counts": []}
        timings: list[dict[str, float]] = []
        for i in range(args.rounds):
            secs, log = run_bare(kernel, initrd, work, args.accel)
            assert f"hits={SYNCS} " in log, "the bare run did not count"
            rows["bare"].append(secs)

            t0 = time.monotonic()
            r = vm.run(kernel, [built.ko], cmd, accel=args.accel).raise_for_status()
            rows["kprobegen"].append(time.monotonic() - t0)
            assert f"hits={SYNCS} " in r.kernel_log
            timings.append(r.timings)

            t0 = time.monotonic()
            r = vm.run(kernel, [built.ko], cmd, accel=args.accel,
                       oracles=[vm.Oracle("kprobe", "ksys_sync")]).raise_for_status()
            rows["kprobegen+oracle"].append(time.monotonic() - t0)
            assert r.oracle["kprobe:ksys_sync"] == (SYNCS, 0)

            t0 = time.monotonic()
            b = build_module(load_spec(spec_path), out_dir=work / "build2", kernel=kernel)
            r = vm.run(kernel, [b.ko], cmd, accel=args.accel).raise_for_status()
            if parse_log is not None:
                parse_log(r.kernel_log)
            rows["spec→counts"].append(time.monotonic() - t0)
            print(f"round {i + 1}/{args.rounds}: " + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in rows.items()),
                  flush=True)

    bare = statistics.median(rows["bare"])
    print(f"\nkernel {kernel.release}, accel {args.accel}, {args.rounds} rounds, workload: sync × {SYNCS}")
    print(f"{'path':<18} {'median':>8} {'min':>8} {'× bare':>8}")
    for k, v in rows.items():
        print(f"{k:<18} {statistics.median(v):>7.2f}s {min(v):>7.2f}s {statistics.median(v) / bare:>7.2f}×")
    print("\nwhere kprobegen's time goes (median seconds):")
    for key in ("initramfs", "boot", "load", "workload", "unload", "collect", "shutdown", "total"):
        vals = [t[key] for t in timings if key in t]
        if vals:
            print(f"  {key:<10} {statistics.median(vals):6.3f}")
    print("\ntarget: kprobegen ≤ 1.3× bare")
    return 0


if __name__ == "__main__":
    sys.exit(main())
