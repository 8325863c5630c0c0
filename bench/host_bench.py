"""Host mode in the full Debian guest, measured side by side in one boot (issue #13's benchmarks).

    .venv/bin/python bench/host_bench.py [--rounds N] [--loops N] [--accel auto|kvm|tcg]

1. `kprobegen load FILE.ko` vs plain `insmod FILE.ko` of the same prebuilt module, alternating,
   each followed by `rmmod` (Python's start-up is part of kprobegen's side); beside them in
   each round, the interpreter's floor: `python3 -c pass`, `python3 -I -S -c pass` (no site,
   what no Python program can avoid) and kprobegen's own interpreter (its venv) doing nothing.
2. Snapshot latency: `kprobegen snapshot MODULE --json` and a bare read of the module's debugfs
   report file.
3. A snapshot's cost to a running workload: a getppid(2) loop (C, built in the guest, the
   module counting nothing on it) timed alone and while a small C reader reads the report file
   10 times a second (on the guest's one vCPU), alternating.
4. Boot to command: the full guest vs the busybox VM (`true` in both, same accelerator).

Prints the ratios. Numbers in bench/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kprobegen.pipeline import build_module  # noqa: E402
from kprobegen.kernels import find_kernel  # noqa: E402
from kprobegen.spec import load_spec  # noqa: E402
from kprobegen.vm import guest, run  # noqa: E402

READER_C = r"""
#include <fcntl.h>
#include <time.h>
#include <unistd.h>
/* Read the report file 10 times a second, like a monitor polling snapshots. */
int main(int argc, char **argv)
{
	char buf[65536];
	struct timespec tenth = {0, 100000000};
	for (;;) {
		int fd = open(argv[1], O_RDONLY);
		while (read(fd, buf, sizeof(buf)) > 0)
			;
		close(fd);
		nanosleep(&tenth, NULL);
	}
}
"""

LOOP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv)
{
	long n = atol(argv[1]);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		syscall(SYS_getppid);
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.6f\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
	return 0;
}
"""

# bash, for $EPOCHREALTIME: a clock read that starts no process (a `date` on each side of a
# command would add one process start, ~50 ms under TCG, to every time measured).
SCRIPT = r"""
set -e
cd /root
gcc -O2 -o loop loop.c
gcc -O2 -o reader reader.c
VPY=$(readlink -f /usr/local/bin/kprobegen | xargs dirname)/python3
insmod sc.ko; rmmod sync_counter; kprobegen load sc.ko >/dev/null; rmmod sync_counter  # warm the page cache
for i in $(seq {rounds}); do
	t0=$EPOCHREALTIME; insmod sc.ko; t1=$EPOCHREALTIME; rmmod sync_counter
	t2=$EPOCHREALTIME; kprobegen load sc.ko >/dev/null; t3=$EPOCHREALTIME; rmmod sync_counter
	t4=$EPOCHREALTIME; python3 -c pass; t5=$EPOCHREALTIME
	t6=$EPOCHREALTIME; python3 -I -S -c pass; t7=$EPOCHREALTIME
	t8=$EPOCHREALTIME; $VPY -c pass; t9=$EPOCHREALTIME
	echo "load $t0 $t1 $t2 $t3 $t4 $t5 $t6 $t7 $t8 $t9"
done
kprobegen load sc.ko >/dev/null
R=/sys/kernel/debug/kprobegen/sync_counter/report
for i in $(seq {rounds}); do
	t0=$EPOCHREALTIME; kprobegen snapshot sync_counter --json >/dev/null; t1=$EPOCHREALTIME
	t2=$EPOCHREALTIME; read -r _ < $R; t3=$EPOCHREALTIME
	echo "snap $t0 $t1 $t2 $t3"
done
for i in $(seq {rounds}); do
	alone=$(./loop {loops})
	./reader $R & reader=$!
	busy=$(./loop {loops})
	kill $reader; wait $reader 2>/dev/null || true
	echo "cost $alone $busy"
done
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--loops", type=int, default=2_000_000, help="getppid calls per timed loop")
    ap.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=None,
                    help="how both VMs boot (default: $KPROBEGEN_ACCEL, else auto)")
    args = ap.parse_args(argv)
    image = guest.build_image("bookworm", progress=lambda m: print(m, file=sys.stderr))
    kernel = find_kernel(image.release)
    with tempfile.TemporaryDirectory() as t:
        work = Path(t)
        ko = build_module(load_spec(REPO / "modules" / "sync_counter.yaml"), work / "sc", kernel=kernel).ko
        (work / "loop.c").write_text(LOOP_C)
        (work / "reader.c").write_text(READER_C)
        out = bytearray()
        r = guest.run(image, ["bash", "-c", SCRIPT.replace("{rounds}", str(args.rounds)).replace("{loops}", str(args.loops))],
                      add=[(ko, "/root/sc.ko"), (work / "loop.c", "/root/loop.c"),
                           (work / "reader.c", "/root/reader.c")], timeout=3600, accel=args.accel,
                      stdout=out.extend, stderr=sys.stderr.buffer.write)
        r.raise_for_status()
        lines = [ln.split() for ln in out.decode().splitlines()]
        # per round: insmod, kprobegen load, python3 -c pass, python3 -I -S -c pass, the venv's python3 -c pass
        load = [[float(t[i + 1]) - float(t[i]) for i in range(0, 10, 2)] for t in (x[1:] for x in lines if x[0] == "load")]
        snap = [(float(b) - float(a), float(d) - float(c)) for _, a, b, c, d in (x for x in lines if x[0] == "snap")]
        cost = [(float(a), float(b)) for _, a, b in (x for x in lines if x[0] == "cost")]
        med = statistics.median
        ins, kp, py, py_is, vpy = (med(row[i] for row in load) for i in range(5))
        print(f"load:     kprobegen load {kp * 1000:.0f} ms, insmod {ins * 1000:.0f} ms: {kp / ins:.2f}x "
              f"(per round: {med(row[1] / row[0] for row in load):.2f}x)")
        print(f"floor:    python3 -c pass {py * 1000:.0f} ms ({py / ins:.2f}x insmod), "
              f"python3 -I -S -c pass {py_is * 1000:.0f} ms ({py_is / ins:.2f}x), "
              f"kprobegen's venv python3 -c pass {vpy * 1000:.0f} ms ({vpy / ins:.2f}x); "
              f"kprobegen load minus its python3 doing nothing minus insmod: {(kp - vpy - ins) * 1000:.0f} ms")
        print(f"snapshot: kprobegen snapshot {med(x for x, _ in snap) * 1000:.0f} ms; "
              f"a read of the report file {med(y for _, y in snap) * 1000:.1f} ms")
        alone, busy = med(a for a, _ in cost), med(b for _, b in cost)
        print(f"cost:     getppid loop {alone:.3f} s alone, {busy:.3f} s with 10 reads/s: "
              f"{(busy / alone - 1) * 100:+.1f} %")
        t0 = time.monotonic()
        guest.run(image, ["true"], accel=args.accel).raise_for_status()
        full = time.monotonic() - t0
        t0 = time.monotonic()
        run(kernel, [], ["true"], accel=args.accel).raise_for_status()
        small = time.monotonic() - t0
        print(f"boot:     full guest {full:.1f} s, busybox VM {small:.1f} s: {full / small:.1f}x "
              f"(guest boot to /init {r.timings.get('boot', 0):.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
