"""Property tests: random Results → protocol lines (tests/report_model.py, the model of the
C side) → interleaved with other modules and unrelated kernel lines → wrapped in every log
form → parse_log → the same Results. Then the same logs damaged: lines lost, cut, doubled."""

from __future__ import annotations

import random

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kprobegen.errors import ReportError
from kprobegen.report import parse_log
from kprobegen.report.results import Bucket, Histogram, HookResult, Results, results_from_json, results_json
from report_model import LOG_FORMS, ModuleWriter, render_log

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

try:
    import jsonschema
    _validator = jsonschema.Draft202012Validator(json.loads(
        (Path(__file__).resolve().parent.parent / "schema" / "results.schema.json").read_text()))
except ImportError:         # CI installs it (see the report for the package list)
    _validator = None

IDENT = st.from_regex(r"[a-z_][a-z0-9_]{0,14}", fullmatch=True)
SYMBOL = st.from_regex(r"[a-z_][a-z0-9_]{0,14}(\.isra\.0|\.constprop\.0|\.cold)?", fullmatch=True)
KERNEL = st.from_regex(r"[0-9]\.[0-9]{1,2}\.[0-9]{1,3}(-[0-9a-z+~.-]{1,20})?", fullmatch=True)
U64 = st.integers(0, 2**64 - 1)
S64 = st.integers(-(2**63), 2**63 - 1)
COUNT = st.integers(1, 2**58)           # small enough that a few of them sum below 2**64
TRICKY = [b" ", b"=", b'"', b"\\", b"x", b"\\x41", b"\\x", b"\xff", b"\xc3\xa9", b"\x00",
          b"\n", b"\r", b"\t", b"a", b"Z", b"%s", b"\x7f", b"\x80", b"kprobegen/1 ", b";"]
COMM = st.one_of(st.binary(max_size=16),
                 st.lists(st.sampled_from(TRICKY), max_size=6).map(b"".join))
NOISE = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=60),
    st.sampled_from(["usb 1-1: new high-speed USB device number 2 using xhci_hcd",
                     "kprobegen_helper: loading out-of-tree module taints kernel.",
                     "path /opt/kprobegen/templates not found", "kprobegen/ is not a record",
                     "audit: type=1400 comm=\"kprobegen/1\" name=x",
                     " leading space, like a continuation", "a line with a trailing space "]),
).filter(lambda s: "kprobegen/" not in s or "kprobegen/1" in s and "kprobegen/1 " not in s
         and s.split("kprobegen/1", 1)[1][:1] not in (" ", ""))


@st.composite
def histograms(draw) -> Histogram:
    scale = draw(st.sampled_from(["log2", "linear"]))
    of = draw(st.sampled_from(["latency", "retval", "arg0", "arg5"]))
    buckets = []
    if scale == "log2":
        for i in sorted(draw(st.lists(st.integers(0, 64), unique=True, max_size=8))):
            low, high = (None, 0) if i == 0 else (0, 1) if i == 1 else (1 << (i - 2), 1 << (i - 1))
            buckets.append(Bucket(low, high, draw(COUNT)))
    else:
        lo = draw(st.integers(-(10**12), 10**12))
        step = draw(st.integers(1, 10**6))
        n = draw(st.integers(1, 40))
        for i in sorted(draw(st.lists(st.integers(0, n + 1), unique=True, max_size=8))):
            if i == 0:
                low, high = None, lo
            elif i == n + 1:
                low, high = lo + n * step, None
            else:
                low, high = lo + (i - 1) * step, lo + i * step
            buckets.append(Bucket(low, high, draw(COUNT)))
    count = sum(b.count for b in buckets)
    mn, mx = (0, 0) if not count else sorted([draw(S64), draw(S64)])
    return Histogram(of, scale, "ns" if of == "latency" else None, count, draw(S64), mn, mx, buckets)


@st.composite
def hook_results(draw, name: str) -> HookResult:
    kind = draw(st.sampled_from([None, "comm", "pid", "tgid", "cpu", "arg0", "arg3", "retval"]))
    if kind is None:
        by: dict = {}
    elif kind == "comm":
        by = draw(st.dictionaries(COMM, COUNT, max_size=6))
    elif kind in ("pid", "tgid", "cpu"):
        by = draw(st.dictionaries(st.integers(0, 2**32), COUNT, max_size=6))
    else:
        by = draw(st.dictionaries(S64, COUNT, max_size=6))
    dropped = draw(st.integers(0, 2**40)) if kind else 0
    hits = sum(by.values()) + dropped if kind else draw(U64)
    return HookResult(name, draw(SYMBOL), draw(st.sampled_from(["kprobe", "kretprobe"])), hits,
                      draw(U64), dropped, draw(st.booleans()), kind, by,
                      draw(st.none() | histograms()))


@st.composite
def module_runs(draw, module: str, rng: random.Random, instance: int = 0, ts_after: int = 0):
    """One load of a module: its lines, the Results it reports and the events it prints."""
    kernel = draw(KERNEL)
    names = draw(st.lists(IDENT, min_size=1, max_size=3, unique=True))
    w = ModuleWriter(module)
    lines = w.load(kernel, len(names))
    expected, events = [], []
    ts = ts_after + draw(st.integers(0, 2**61))   # ktime: later loads report later
    nreports = draw(st.integers(1, 3))
    for k in range(nreports):
        hooks = {n: draw(hook_results(n)) for n in names}
        ts += draw(st.integers(1, 10**12))
        reason = "unload" if k == nreports - 1 else "interval"
        r = Results(module, kernel, k, reason, ts, True, 0, [], hooks, instance, [])
        evs = [(draw(st.sampled_from(names)), draw(st.integers(0, 2**31)),
                draw(st.integers(0, 2**31)), draw(st.integers(0, 4095)), draw(COMM),
                draw(st.dictionaries(st.sampled_from(["arg0", "arg2", "retval", "latency_ns"]),
                                     S64, max_size=3)))
               for _ in range(draw(st.integers(0, 2)))]
        events += evs
        lines += w.report(r, rng, evs)
        expected.append(r)
    return lines, expected, events


def interleave(streams: list[list[str]], rng: random.Random) -> list[str]:
    """Merge the streams in a random order that keeps each stream's own order."""
    streams = [list(s) for s in streams if s]
    pos = [0] * len(streams)
    out = []
    while streams:
        i = rng.randrange(len(streams))
        out.append(streams[i][pos[i]])
        pos[i] += 1
        if pos[i] == len(streams[i]):
            del streams[i], pos[i]
    return out


@st.composite
def logs(draw):
    rng = draw(st.randoms(use_true_random=False))
    modules = draw(st.lists(IDENT, min_size=1, max_size=3, unique=True))
    streams, expected, events = [], {}, {}
    for m in modules:
        lines, exp, evs = draw(module_runs(m, rng))
        streams.append(lines)
        expected[m] = exp
        events[m] = evs
    streams.append(draw(st.lists(NOISE, max_size=15)))
    return interleave(streams, rng), expected, events, rng


def _events_of(p, module):
    return [(e.hook, e.pid, e.tgid, e.cpu, e.comm, e.values) for e in p.events if e.module == module]


@SETTINGS
@given(logs(), st.sampled_from(sorted(LOG_FORMS)), st.booleans(), st.booleans())
def test_every_form_round_trips(log, form, crlf, as_bytes):
    lines, expected, events, _ = log
    text = render_log(lines, form, crlf)
    p = parse_log(text.encode() if as_bytes else text)
    for module, exp in expected.items():
        assert p.results(module, all=True) == exp
        assert p.results(module) == [exp[-1]]
        assert _events_of(p, module) == events[module]
    assert [r.module for r in p.results()] == [m for m in p.modules]
    assert sorted(p.modules) == sorted(expected)
    assert p.unrecognised == {}
    assert p.problems == []
    assert p.duplicates == 0
    # JSON keeps every value exactly, and is what the schema says
    got = p.results(all=True)
    doc = json.loads(json.dumps(results_json(got)))
    assert results_from_json(doc) == got
    if _validator is not None:
        _validator.validate(doc)
    # the same log among many unrelated lines (the sparse scan) reads the same
    sparse = "\n".join(f"[    0.{i:06d}] unrelated line {i}" for i in range(200)) + "\n"
    p2 = parse_log(sparse + text + sparse)
    for module, exp in expected.items():
        assert p2.results(module, all=True) == exp


@SETTINGS
@given(logs(), st.sampled_from(sorted(LOG_FORMS)), st.data())
def test_a_lost_line_is_found_and_never_repaired(log, form, data):
    lines, expected, _, rng = log
    proto = [i for i, ln in enumerate(lines) if ln.startswith("kprobegen/1 ")]
    victim = data.draw(st.sampled_from(proto))
    module, seq, typ = lines[victim].split(" ")[1:4]
    seq = int(seq)
    damaged = lines[:victim] + lines[victim + 1:]
    p = parse_log(render_log(damaged, form))
    got = p.results(module, all=True)
    # the frame whose SEQ span holds the lost line is incomplete, all others are untouched
    whole = parse_log(render_log(lines, form))
    spans = [(f.first_seq, f.last_seq) for f in whole.frames if f.module == module]
    assert len(got) == len(spans)
    hit = [i for i, (a, b) in enumerate(spans) if a <= seq <= b]
    kernel_lost = typ == "load"
    for i, r in enumerate(got):
        if i in hit:
            assert not r.complete
            assert r.lost_lines >= 1
            assert r.problems
        else:
            exp = expected[module][i]
            if kernel_lost:
                exp = Results(**{**exp.__dict__, "kernel": None})
            assert r == exp
    if not hit and typ not in ("begin", "end"):
        # lost outside every frame (load, or an event between frames): said at log level
        assert any(f"SEQ {seq}" in msg for msg in p.problems), p.problems
    if typ in ("begin", "end", "hook", "key", "hist", "bucket"):
        assert len(hit) == 1
    if hit and len(got) == 1:
        with pytest.raises(ReportError, match=f"no complete report for module {module}"):
            p.results(module)
    # other modules are not affected
    for other, exp in expected.items():
        if other != module:
            assert p.results(other, all=True) == exp


@SETTINGS
@given(logs(), st.sampled_from(sorted(LOG_FORMS)), st.data())
def test_a_cut_log_never_yields_a_cut_frame(log, form, data):
    lines, expected, _, _ = log
    cut = data.draw(st.integers(0, len(lines)))
    p = parse_log(render_log(lines[:cut], form))
    for module, exp in expected.items():
        frames = [f for f in p.frames if f.module == module]
        complete = [f.results() for f in frames if f.complete]
        assert complete == exp[:len(complete)]      # the complete ones are exactly right
        assert all(not f.complete for f in frames[len(complete):])
        assert len(frames) - len(complete) <= 1     # only the last one can be cut
        if complete:
            assert p.results(module) == [complete[-1]]
        else:
            with pytest.raises(ReportError):
                p.results(module)


@SETTINGS
@given(logs(), st.sampled_from(sorted(LOG_FORMS)), st.data())
def test_a_log_captured_twice_counts_once(log, form, data):
    lines, expected, _, _ = log
    # dmesg > a; …; dmesg > b; cat a b — b holds a's lines again (possibly without the
    # oldest ones: the ring buffer wrapped in between)
    first = data.draw(st.integers(0, len(lines)))
    start = data.draw(st.integers(0, first))
    p = parse_log(render_log(lines[:first] + lines[start:], form))
    for module, exp in expected.items():
        assert p.results(module, all=True) == exp
    assert p.duplicates == sum(1 for ln in lines[start:first] if ln.startswith("kprobegen/1 "))
    assert p.problems == []


@SETTINGS
@given(st.data(), st.sampled_from(sorted(LOG_FORMS)))
def test_reloads_are_kept_apart(data, form):
    rng = data.draw(st.randoms(use_true_random=False))
    first, exp0, _ = data.draw(module_runs("twice", rng, 0))
    second, exp1, _ = data.draw(module_runs("twice", rng, 1, exp0[-1].ts_ns))
    p = parse_log(render_log(first + ["random: crng init done"] + second, form))
    assert p.results("twice", all=True) == exp0 + exp1
    assert p.results("twice") == [exp1[-1]]
    assert [i.index for i in p.instances] == [0, 1]
