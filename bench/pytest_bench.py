"""A test session of N tests, each loading a module and running a short workload: the pytest
plugin's session-scoped guest (booted once) against one `kprobegen run` per test (a
disposable VM each). Issue #15's target: the session at least 5x faster for N = 20.

    .venv/bin/python bench/pytest_bench.py [--tests 20] [--rounds 1]

Both sides count exactly (every test asserts 2 syncs; every `kprobegen run --json` is
checked for 2), alternate round by round, and start with the guest image and the module
build already cached (a first, untimed session builds them). Wall-clock seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEC = """module: bench_sync
hooks:
  - name: sync
    symbol: ksys_sync
"""
TEST = '''
SPEC = {spec!r}


def test_{i:02d}(kprobes):
    with kprobes(SPEC) as probe:
        probe.run("sync; sync")
    assert probe.results.hooks["sync"].hits == 2
'''


def session(project: Path) -> float:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)],
                          cwd=project, capture_output=True, text=True, env={**os.environ, "CI": "true"})
    took = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the pytest session failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return took


def runs(spec: Path, n: int) -> float:
    t0 = time.monotonic()
    for _ in range(n):
        proc = subprocess.run([str(REPO / ".venv" / "bin" / "kprobegen"), "run", str(spec), "--json", "--",
                               "sh", "-c", "sync; sync"], capture_output=True, text=True)
        if proc.returncode != 0 or json.loads(proc.stdout)["hooks"]["sync"]["hits"] != 2:
            raise SystemExit(f"kprobegen run failed or miscounted:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tests", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kpg-pytest-bench-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        (project / "pytest.ini").write_text("[pytest]\n")
        (project / "test_bench.py").write_text("".join(TEST.format(spec=SPEC, i=i) for i in range(args.tests)))
        spec = Path(tmp) / "bench_sync.yaml"
        spec.write_text(SPEC)
        warm = Path(tmp) / "warm"
        warm.mkdir()
        (warm / "pytest.ini").write_text("[pytest]\n")
        (warm / "test_warm.py").write_text(TEST.format(spec=SPEC, i=0))
        print("warming up: the guest image, the module build, the kernel profile (untimed)", flush=True)
        session(warm)
        runs(spec, 1)
        sessions, singles = [], []
        for r in range(args.rounds):
            sessions.append(session(project))
            singles.append(runs(spec, args.tests))
            print(f"round {r + 1}: session {sessions[-1]:.1f} s, {args.tests} x kprobegen run {singles[-1]:.1f} s",
                  flush=True)
        s, k = statistics.median(sessions), statistics.median(singles)
        print(f"\n{args.tests} tests | pytest session (guest booted once) | one `kprobegen run` per test | ratio")
        print(f"{'':8} | {s:.1f} s ({s / args.tests:.2f} s/test) | {k:.1f} s ({k / args.tests:.2f} s/test) | "
              f"{k / s:.2f}x")


if __name__ == "__main__":
    main()
