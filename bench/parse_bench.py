#!/usr/bin/env python3
"""Benchmark the report parser: report lines per second on one core.

Generates two 1,000,000-line raw-dmesg logs — one where 1% of the lines are report lines,
one where every line is — in protocol 2 (every line with its check; ``--protocol 1``: without),
and times:

  parse_log            scan + instances + framing + structure checks of every frame
  + results()          the default result (latest complete report per module)
  + results(all=True)  every report as Results (the time series)

Lines are found by the C scanner (kprobegen/report/_logscan.c) when it is built (``pip
install -e .`` builds it in place; ``./setup.sh`` does that in .venv). ``--python-scanner``
times the same parser with the pure-Python scanner too, taking turns in the same run. With
``--baseline REV`` (a git revision, e.g. ``HEAD~3``) the parser of that revision is timed too
(from a copy of its sources, its C scanner built for the run when it has one), alternating
with this one, so a change is measured side by side on the same (possibly shared, busy)
machine.

Then adversarial logs of the same number of lines (issue #11), each timed with
``results(all=True)`` (and ``unrecognised``, which checks every frame): many different
``load`` lines of one module, ``begin`` lines alternating SEQ 0 and 5, a lost line between
every two frames, many short reloads, and a /dev/kmsg log where half the lines are forged
(user facility). Their CPU time per protocol line should be within 2x of the normal 100%
log's, timed the same way on a log of as many lines (the first row, the reference of the
ratios printed). ``--read-problems`` also reads ``LogParse.problems`` there, as ``kprobegen
parse`` does (the parser makes some of those texts only when they are first read).

Usage: .venv/bin/python bench/parse_bench.py [--lines N] [--repeat R] [--python-scanner]
                                             [--baseline REV] [--protocol 1|2]
                                             [--adversarial-lines N] [--only-adversarial]
                                             [--read-problems]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import io
import os
import random
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kprobegen.report import parse_log, scan  # noqa: E402

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

NOISE = [
    "virtio_net virtio0 enp0s2: renamed from eth0",
    "EXT4-fs (vda1): mounted filesystem with ordered data mode. Quota mode: none.",
    "audit: type=1400 audit(1700000000.123:45): apparmor=\"STATUS\" operation=\"profile_load\"",
    "systemd[1]: Started Journal Service.",
    "IPv6: ADDRCONF(NETDEV_CHANGE): enp0s2: link becomes ready",
    "random: crng init done",
    "kprobegen_helper: loading out-of-tree module taints kernel.",
]


PROTOCOL = [2]      # set by --protocol


def proto(module: str, seq: int, text: str) -> str:
    """A protocol line as a generated module prints it (version 2: with its line check)."""
    line = f"kprobegen/{PROTOCOL[0]} {module} {seq} {text}"
    if PROTOCOL[0] >= 2:
        line += f" chk={zlib.crc32(line.encode()):08x}"
    return line


def frame_lines(module: str, seq: int, report: int, rng: random.Random) -> tuple[list[str], int]:
    """One interval report of a 3-hook module: 20 comm keys, a 12-bucket log2 histogram."""
    body = []
    keys = 20
    counts = [rng.randrange(1, 10**6) for _ in range(keys)]
    body.append(f"hook name=open probe=kprobe symbol=do_sys_openat2 hits={sum(counts)} missed=0 "
                f"dropped=0 disarmed=0 by=comm keys={keys} hist=0")
    for i, c in enumerate(counts):
        body.append(f"key hook=open key=worker\\x20{i} count={c}")
    buckets = [rng.randrange(1, 10**5) for _ in range(12)]
    body.append(f"hook name=read probe=kretprobe symbol=vfs_read hits={sum(buckets)} missed=2 "
                f"dropped=0 disarmed=0 by=- keys=0 hist=1")
    body.append(f"hist hook=read of=latency scale=log2 unit=ns count={sum(buckets)} "
                f"sum={sum(buckets) * 1500} min=300 max=900000 buckets=12")
    for i, c in enumerate(buckets):
        body.append(f"bucket hook=read low={256 << i} high={512 << i} count={c}")
    body.append("hook name=sync probe=kprobe symbol=ksys_sync hits=3 missed=0 dropped=0 "
                "disarmed=0 by=- keys=0 hist=0")
    lines = [f"begin report={report} reason=interval ts_ns={1000000000 + report * 1000} "
             f"lines={len(body)}"] + body + [f"end report={report} lines={len(body)}"]
    out = [proto(module, seq + i, text) for i, text in enumerate(lines)]
    return out, seq + len(lines)


def make_log(total: int, fraction: float, seed: int = 1) -> tuple[str, int]:
    rng = random.Random(seed)
    modules = {"bench_a": [0, 0], "bench_b": [0, 0]}     # next SEQ, next report
    pending: list[str] = []
    out = []
    nreport = 0
    t = 0
    for name, state in modules.items():
        pending.append(proto(name, 0, f"load kernel=6.1.0-56-cloud-amd64 hooks=3 protocol={PROTOCOL[0]}"))
        state[0] = 1
    acc = 0.0
    names = list(modules)
    while len(out) < total:
        t += 137
        acc += fraction
        if acc >= 1.0:
            acc -= 1.0
            if not pending:
                name = names[rng.randrange(len(names))]
                state = modules[name]
                pending, state[0] = frame_lines(name, state[0], state[1], rng)
                state[1] += 1
            text = pending.pop(0)
            nreport += 1
        else:
            text = NOISE[rng.randrange(len(NOISE))]
        out.append(f"[{t // 1000000:5d}.{t % 1000000:06d}] {text}")
    return "\n".join(out) + "\n", nreport


def adversarial_logs(total: int):
    """(name, text, protocol lines) of logs made to be slow or misleading (issue #11)."""
    def dmesg(lines):
        return "".join(f"[{i // 1000000:5d}.{i % 1000000:06d}] {t}\n" for i, t in enumerate(lines))

    yield "different load lines of one module", dmesg(
        proto("adv", 0, f"load kernel=k{i} hooks=1 protocol=2") for i in range(total)), total
    yield "begin lines alternating SEQ 0 and 5", dmesg(
        proto("adv", 5 * (i % 2), f"begin report=0 reason=unload ts_ns={i} lines=1")
        for i in range(total)), total

    def gaps():
        seq = 1
        yield proto("adv", 0, "load kernel=k hooks=1 protocol=2")
        for r in range(total // 3):
            for text in (f"begin report={r} reason=interval ts_ns={r} lines=1",
                         "hook name=h probe=kprobe symbol=s hits=3 missed=0 dropped=0 disarmed=0 "
                         "by=- keys=0 hist=0", f"end report={r} lines=1"):
                yield proto("adv", seq, text)
                seq += 1
            seq += 1                            # a line lost between every two frames
    yield "a lost line between every two frames", dmesg(gaps()), total // 3 * 3 + 1

    def reloads():
        for r in range(total // 4):
            yield proto("adv", 0, "load kernel=k hooks=1 protocol=2")
            yield proto("adv", 1, f"begin report=0 reason=unload ts_ns={r} lines=1")
            yield proto("adv", 2, "hook name=h probe=kprobe symbol=s hits=3 missed=0 dropped=0 "
                                  "disarmed=0 by=- keys=0 hist=0")
            yield proto("adv", 3, "end report=0 lines=1")
    yield "short reloads (load, begin, hook, end)", dmesg(reloads()), total // 4 * 4

    def forged():
        real = list(gaps())
        for i in range(total // 2):
            yield f"6,{2 * i},{i},-;{real[i % len(real)]}\n"
            yield f"12,{2 * i + 1},{i},-;{proto('adv', 7 + i, 'hook name=h hits=999999')}\n"
    yield "/dev/kmsg, every other line forged (user facility)", "".join(forged()), total // 2 * 2


def _with(parse, then):
    return parse, then(parse)


# an import of the package by its absolute name: "from kprobegen.x import", "import kprobegen"
_ABSOLUTE_IMPORT_RE = re.compile(r"^(\s*(?:from|import)\s+)kprobegen(?=[.\s])", re.M)


def baseline_parser(rev: str, tmp: str):
    """``parse_log`` of the kprobegen package at git revision ``rev``, imported under another
    package name from a copy in ``tmp``.

    The copy's absolute imports of the package are renamed with it, so that it imports its
    own modules, not this tree's. ``kprobegen_baseline.report`` is the parser's module in
    older revisions (kprobegen/report.py) and its package in newer ones (kprobegen/report/)."""
    archive = subprocess.run(["git", "-C", REPO, "archive", "--format=tar", rev, "kprobegen"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        # this tree's own git archive; the "data" filter where the Python has it (3.11.4+)
        tar.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    root = os.path.join(tmp, "kprobegen_baseline")
    os.rename(os.path.join(tmp, "kprobegen"), root)
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                renamed = _ABSOLUTE_IMPORT_RE.sub(r"\1kprobegen_baseline", text)
                if renamed != text:
                    with open(path, "w", encoding="utf-8") as f:
                        f.write(renamed)
    scanner = _build_scanner(tmp, root)
    sys.path.insert(0, tmp)
    parse = importlib.import_module("kprobegen_baseline.report").parse_log
    assert parse.__module__.startswith("kprobegen_baseline."), parse.__module__
    print(f"{rev}: C scanner {'built' if scanner else 'not built: the Python scanner'}")
    return parse


def _build_scanner(tmp: str, root: str) -> bool:
    """Build the copy's C scanner (``_logscan.c``, in kprobegen/ or kprobegen/report/) in place,
    with the compiler and flags setuptools uses for this tree's (setup.py's -O2), so that the
    two parsers are compared as they run. False when the revision has none or it fails."""
    sources = [os.path.join(folder, "_logscan.c") for folder, _, names in os.walk(root)
               if "_logscan.c" in names]
    if not sources:
        return False
    rel = os.path.relpath(sources[0], tmp)
    name = rel[:-len(".c")].replace(os.sep, ".")
    script = ("from setuptools import Extension, setup\n"
              f"setup(name='kprobegen_baseline', ext_modules=[Extension({name!r}, [{rel!r}], "
              "extra_compile_args=['-O2'])])\n")
    done = subprocess.run([sys.executable, "-c", script, "build_ext", "--inplace"], cwd=tmp,
                          capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
    return done.returncode == 0


def python_scanner_parse(text):
    """parse_log with the C scanner switched off (the Python reference scanner)."""
    scanner, scan.logscan = scan.logscan, None
    try:
        return parse_log(text)
    finally:
        scan.logscan = scanner


def best(fns: list, repeat: int) -> list[tuple[float, float]]:
    """Best wall time and best CPU time of this process (the machine may be shared) of each
    function; the functions take turns, so a busy spell hits them alike."""
    wall = [[] for _ in fns]
    cpu = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0, c0 = time.perf_counter(), time.process_time()
            result = fn()
            wall[i].append(time.perf_counter() - t0)
            cpu[i].append(time.process_time() - c0)
            del result              # freeing a million records is not parsing: not timed
            gc.collect()
    return [(min(w), min(c)) for w, c in zip(wall, cpu)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--python-scanner", action="store_true",
                    help="also time the parser with the pure-Python line scanner, side by side")
    ap.add_argument("--baseline", metavar="REV",
                    help="also time the parser of this git revision, side by side")
    ap.add_argument("--protocol", type=int, choices=(1, 2), default=2,
                    help="protocol version of the generated logs (default 2: lines with checks)")
    ap.add_argument("--adversarial-lines", type=int, default=None, metavar="N",
                    help="lines per adversarial log (default: --lines)")
    ap.add_argument("--only-adversarial", action="store_true")
    ap.add_argument("--read-problems", action="store_true",
                    help="adversarial logs: also read LogParse.problems (as kprobegen parse does)")
    args = ap.parse_args()
    PROTOCOL[0] = args.protocol
    print(f"python {sys.version.split()[0]}, {args.lines:,} lines per log, protocol "
          f"{args.protocol}, best of {args.repeat}")
    if scan.logscan is None:
        print("line scanner: Python (the C scanner is not built: pip install -e . builds it)")
    else:
        print(f"line scanner: C ({scan.logscan.__file__})")
    parsers = [("", parse_log)]
    if args.baseline or args.python_scanner:
        parsers = [("this tree: ", parse_log)]
    if args.python_scanner:
        if scan.logscan is None:
            sys.exit("--python-scanner: the C scanner is not built, nothing to compare with")
        parsers.append(("python scanner: ", python_scanner_parse))
    if args.baseline:
        tmp = tempfile.TemporaryDirectory(prefix="parse_bench_")
        parsers.insert(0, (f"{args.baseline}: ", baseline_parser(args.baseline, tmp.name)))
    for fraction in () if args.only_adversarial else (0.01, 1.0):
        text, nreport = make_log(args.lines, fraction)
        mb = len(text) / 1e6
        p = parse_log(text)
        nframes = len(p.frames)
        incomplete = sum(not f.complete for f in p.frames)
        assert incomplete <= len({f.module for f in p.frames}), "only the cut last frames may be incomplete"
        del p
        gc.collect()
        runs = [("parse_log", lambda parse: parse(text)),
                ("parse_log + results()", lambda parse: _with(parse(text), lambda p: p.results())),
                ("parse_log + results(all=True)",
                 lambda parse: _with(parse(text), lambda p: p.results(all=True)))]
        print(f"\n{fraction:.0%} report lines: {nreport:,} report lines, {nframes:,} frames, "
              f"{mb:.1f} MB")
        for what, run in runs:
            times = best([lambda parse=parse: run(parse) for _, parse in parsers], args.repeat)
            mine = times[[p for _, p in parsers].index(parse_log)][1]
            for (who, _), (wall, cpu) in zip(parsers, times):
                label = who + what
                ratio = f"  {cpu / mine:5.2f}x this tree's cpu" if len(parsers) > 1 else ""
                print(f"  {label:48s} wall {wall:6.3f} s  cpu {cpu:6.3f} s  "
                      f"{nreport / cpu / 1e6:5.2f} M report lines/s  "
                      f"{args.lines / cpu / 1e6:5.2f} M log lines/s{ratio}")
    n = args.adversarial_lines or args.lines
    print(f"\nadversarial logs, {n:,} lines each: parse_log + results(all=True) + unrecognised"
          f"{' + problems' if args.read_problems else ''}; "
          f"CPU per protocol line, and its ratio to the 100% log's (the first row)")

    def everything(parse, text):
        p = parse(text)
        if p.frames:
            p.results(all=True)
        p.unrecognised
        if args.read_problems:
            p.problems
        return p

    def logs():
        text, nreport = make_log(n, 1.0)
        yield "100% report lines (the reference)", text, nreport
        del text
        yield from adversarial_logs(n)

    per_line = None
    for name, text, nproto in logs():
        times = best([lambda parse=parse: everything(parse, text) for _, parse in parsers],
                     args.repeat)
        us = [cpu / nproto * 1e6 for _, cpu in times]
        if per_line is None:
            per_line = us
        for (who, _), (wall, cpu), u, ref in zip(parsers, times, us, per_line):
            label = who + name
            print(f"  {label:64s} wall {wall:6.3f} s  cpu {cpu:6.3f} s  {u:5.2f} us/line  "
                  f"{nproto / cpu / 1e6:5.2f} M/s  {u / ref:4.2f}x")
        del text
        gc.collect()


if __name__ == "__main__":
    main()
