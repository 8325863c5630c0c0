#!/usr/bin/env python3
"""Cost per probe hit (issue 4), in one VM run.

A static loop of getppid(2) calls (compiled here with gcc -static) runs in the guest:

  none        no probe
  empty       a hand-written kprobe with an empty pre-handler (tests/data/handmade/kpg_hand_empty.c):
              the kprobe mechanism's own cost
  count       a generated hook, plain count
  keyed       a generated hook, count_by: comm
  hist        a generated hook, log2 histogram of arg0

The variants run in turn, ROUNDS times (drift in the shared machine's speed hits them all), and
each keeps its fastest ns/call. Printed: ns per call, the
nanoseconds a probe adds per hit, and that as a ratio to the empty handler (targets: count
≤ 1.1×, keyed ≤ 1.5×). Every generated hook's report must count exactly N hits per round. Times are
printed, never asserted.

Usage: python3 bench/probe_cost.py [--calls N] [--kernel RELEASE] [--accel tcg]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kprobegen import vm  # noqa: E402
from kprobegen.kernels import find_kernel  # noqa: E402
from kprobegen.pipeline import build_module  # noqa: E402
from kprobegen.spec import load_spec  # noqa: E402

SYMBOL = "__x64_sys_getppid"
ROUNDS = 7

LOOP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 100000;
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		syscall(SYS_getppid);
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
	return 0;
}
"""

SPECS = {
    "pc_count": "hooks:\n  - name: getppid\n    symbol: " + SYMBOL + "\n",
    "pc_keyed": "hooks:\n  - name: getppid\n    symbol: " + SYMBOL + "\n    count_by: comm\n",
    "pc_hist": "hooks:\n  - name: getppid\n    symbol: " + SYMBOL + "\n    histogram: {of: arg0, scale: log2}\n",
}
LABELS = {"pc_count": "count", "pc_keyed": "keyed", "pc_hist": "hist"}


def workload(calls: int, rounds: int) -> str:
    """Rounds of every variant in turn, so that drift in the machine's speed hits them all."""
    return f"""
for round in $(seq {rounds}); do
  echo none $(/root/loop {calls})
  insmod /root/kpg_hand_empty.ko symbol={SYMBOL} || exit 10
  echo empty $(/root/loop {calls})
  rmmod kpg_hand_empty
  for m in {' '.join(SPECS)}; do
    insmod /root/$m.ko || exit 11
    echo $m $(/root/loop {calls})
    rmmod $m
  done
done
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="ns per kprobe hit: empty handler vs generated hooks")
    ap.add_argument("--calls", type=int, default=300_000, help="getppid calls per loop")
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--kernel", default=None)
    ap.add_argument("--accel", default="auto")
    args = ap.parse_args(argv)
    kernel = find_kernel(args.kernel)
    with tempfile.TemporaryDirectory(prefix="kpg-probecost-") as t:
        work = Path(t)
        subprocess.run(["gcc", "-O2", "-static", "-o", str(work / "loop"), "-x", "c", "-"],
                       input=LOOP_C.encode(), check=True)
        hand = work / "hand"
        hand.mkdir()
        shutil.copy(REPO / "tests/data/handmade/kpg_hand_empty.c", hand)
        (hand / "Kbuild").write_text("obj-m += kpg_hand_empty.o\n")
        subprocess.run(["make", "-C", str(kernel.build_dir), f"M={hand}", "modules"], check=True,
                       capture_output=True)
        add = [(work / "loop", "loop"), (hand / "kpg_hand_empty.ko", "kpg_hand_empty.ko")]
        for name, body in SPECS.items():
            spec_file = work / f"{name}.yaml"
            spec_file.write_text(f"module: {name}\ndescription: probe cost benchmark\n{body}")
            b = build_module(load_spec(spec_file), out_dir=work / name, kernel=kernel)
            add.append((b.ko, f"{name}.ko"))
        r = vm.run(kernel, [], ["sh", "-c", workload(args.calls, args.rounds)], add=add, accel=args.accel, timeout=900)
        r.raise_for_status()
        if r.exit_code != 0:
            print(r.stdout, r.stderr, sep="\n")
            raise SystemExit(f"the guest workload failed with exit code {r.exit_code}")

    ns: dict[str, float] = {}
    for ln in r.stdout.splitlines():
        k, v = ln.split()
        ns[k] = min(ns.get(k, float("inf")), float(v))
    hits: dict[str, list[str]] = {}
    for mod, n in re.findall(r"kprobegen/[12] (pc_\w+) \d+ hook name=getppid .*?\bhits=(\d+)", r.kernel_log):
        hits.setdefault(mod, []).append(n)
    base = ns["none"]
    empty_added = ns["empty"] - base
    print(f"kernel {kernel.release}, accel {r.accel}, {args.calls} getppid calls, {args.rounds} rounds "
          "(fastest kept)")
    print(f"{'variant':<10} {'ns/call':>9} {'added ns/hit':>13} {'× empty':>8}")
    print(f"{'none':<10} {ns['none']:>9.1f}")
    print(f"{'empty':<10} {ns['empty']:>9.1f} {empty_added:>13.1f} {1.0:>7.2f}×")
    for name, label in LABELS.items():
        added = ns[name] - base
        ratio = added / empty_added if empty_added > 0 else float("nan")
        print(f"{label:<10} {ns[name]:>9.1f} {added:>13.1f} {ratio:>7.2f}×")
        if hits.get(name) != [str(args.calls)] * args.rounds:
            print(f"  !! {name} reported hits {hits.get(name)}, expected {args.calls} in each of {args.rounds} rounds")
    print("\ntargets: count ≤ 1.1× empty, keyed ≤ 1.5× empty")
    return 0


if __name__ == "__main__":
    sys.exit(main())
