#!/usr/bin/env python3
"""Build benchmark (issue 2): a 1-hook spec → .ko, side by side with a hand-written module.

Runs, in one process and alternating so both see the same machine load:
  hand-written  `make -C KDIR M=dir modules` on bench/handwritten (plain Kbuild)
  kprobegen     pipeline.build_module(spec) with an empty cache (render + Kbuild)
  cached        pipeline.build_module(spec) again, unchanged (cache hit), in-process
  cached CLI    `kprobegen build` as a command, unchanged, run a second time (served by the spec
                file's bytes: no YAML, no templates), whole process including Python's start

Prints medians and the ratios. Targets: cold ≤ 1.1× hand-written; cached ≤ 0.2 s.
Usage: python3 bench/build_bench.py [--rounds N] [--kernel RELEASE]
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

from kprobegen.pipeline import build_module  # noqa: E402
from kprobegen.kernels import find_kernel, toolchain  # noqa: E402
from kprobegen.spec import parse_spec  # noqa: E402

SPEC = "module: bench_sync\nhooks:\n  - {name: sync, symbol: ksys_sync}\n"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--kernel", default=None)
    args = ap.parse_args()
    kernel = find_kernel(args.kernel)
    spec = parse_spec(SPEC, "bench_sync.yaml")
    work = Path(tempfile.mkdtemp(prefix="kpg-bench-"))
    samples: dict[str, list[float]] = {"hand-written": [], "kprobegen": [], "cached": [], "cached CLI": []}
    spec_file = work / "bench_sync.yaml"
    spec_file.write_text(SPEC)
    try:
        for round_ in range(args.rounds):
            hand = work / f"hand{round_}"
            shutil.copytree(REPO / "bench" / "handwritten", hand)
            cmd = ["make", "-C", str(kernel.build_dir), f"M={hand}", f"-j{os.cpu_count()}", "modules",
                   *[f"{k}={v}" for k, v in toolchain.make_vars(kernel).items()]]
            samples["hand-written"].append(timed(lambda: subprocess.run(cmd, check=True, capture_output=True)))
            os.environ["KPROBEGEN_CACHE"] = str(work / f"cache{round_}")
            samples["kprobegen"].append(timed(lambda: build_module(spec, work / f"gen{round_}", kernel=kernel)))
            samples["cached"].append(timed(lambda: build_module(spec, work / f"gen{round_}b", kernel=kernel)))
            cli = [sys.executable, "-m", "kprobegen", "build", str(spec_file), "-o", str(work / f"cli{round_}"),
                   "--kernel", kernel.release, "--no-symbol-check"]
            subprocess.run(cli, check=True, capture_output=True)  # the first CLI build indexes the spec file
            samples["cached CLI"].append(timed(lambda: subprocess.run(cli, check=True, capture_output=True)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {name: statistics.median(values) for name, values in samples.items()}
    print(f"kernel {kernel.release}, {args.rounds} rounds, medians:")
    for name, value in med.items():
        print(f"  {name:13} {value:7.3f} s")
    print(f"cold ratio kprobegen / hand-written: {med['kprobegen'] / med['hand-written']:.2f}x (target <= 1.1x)")
    startup = statistics.median(timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))
                                for _ in range(5))
    print(f"cached rebuild: {med['cached']:.3f} s in-process, {med['cached CLI']:.3f} s as a command "
          f"(of which {startup:.3f} s is this Python's bare start) (target <= 0.2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
