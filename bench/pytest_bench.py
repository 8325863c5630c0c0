"""A test session of N tests, each loading a module and running a short workload: the pytest
plugin's session-scoped guest against one `kprobegen run` per test (a disposable VM each).
Issue #15's target: the session at least 5x faster for N = 20.

    .venv/bin/python bench/pytest_bench.py [--tests 20] [--rounds 1]

Three things, alternating round by round: the pytest session as a user runs it again (the
guest resumed from the boot the first session saved), the same session with
``--kprobegen-fresh-boot`` (the guest booted), and N x ``kprobegen run``. All count exactly
(every test asserts 2 syncs; every `kprobegen run --json` is checked for 2) and start with
the guest image, the saved boot and the module build already made (a first, untimed session
makes them). pytest runs with ``-p no:hypothesispytest``: this project's venv has hypothesis
(its own tests use it), whose pytest plugin adds ~1.3 s to every session's end, which a
user's project need not have. Wall-clock seconds.
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


def session(project: Path, *extra: str) -> float:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                           *extra, str(project)],
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
        sessions, fresh, singles = [], [], []
        for r in range(args.rounds):
            sessions.append(session(project))
            fresh.append(session(project, "--kprobegen-fresh-boot"))
            singles.append(runs(spec, args.tests))
            print(f"round {r + 1}: session {sessions[-1]:.1f} s (fresh boot {fresh[-1]:.1f} s), "
                  f"{args.tests} x kprobegen run {singles[-1]:.1f} s", flush=True)
        s, f, k = statistics.median(sessions), statistics.median(fresh), statistics.median(singles)
        print(f"\n{args.tests} tests | one `kprobegen run` per test | pytest session, guest resumed | ratio "
              f"| pytest session, guest booted | ratio")
        print(f"{'':8} | {k:.1f} s ({k / args.tests:.2f} s/test) | {s:.1f} s | {k / s:.2f}x | {f:.1f} s | {k / f:.2f}x")


if __name__ == "__main__":
    main()
