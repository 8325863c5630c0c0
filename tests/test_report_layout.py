"""Logs made of many tiny loads and frames (the adversarial logs of issue #11, bench/parse_bench.py)
parse to the same result whether a module's records are grouped into loads and cut into frames
in C (``_logscan.layout``, the fast path) or in Python (``frames.layout_py``, the general path),
and to what the protocol says they are."""

from __future__ import annotations

import json
import types
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import require
from kprobegen.errors import ReportError
from kprobegen.report import frames, parse_log, results_json, scan


def line(module: str, seq: int, text: str) -> str:
    body = f"kprobegen/2 {module} {seq} {text}"
    return f"{body} chk={zlib.crc32(body.encode('latin-1')):08x}"


def dmesg(lines) -> str:
    return "".join(f"[{i // 1000:5d}.{i % 1000:06d}] {text}\n" for i, text in enumerate(lines))


HOOK = "hook name=h probe=kprobe symbol=s hits=3 missed=0 dropped=0 disarmed=0 by=- keys=0 hist=0"


def one_line_loads(n: int) -> str:
    return dmesg(line("adv", 0, f"load kernel=k{i} hooks=1 protocol=2") for i in range(n))


def alternating_begins(n: int) -> str:
    return dmesg(line("adv", 5 * (i % 2), f"begin report=0 reason=unload ts_ns={i} lines=1")
                 for i in range(n))


def lost_line_between_frames(frames_: int) -> str:
    out = [line("adv", 0, "load kernel=k hooks=1 protocol=2")]
    seq = 1
    for r in range(frames_):
        for text in (f"begin report={r} reason=interval ts_ns={r} lines=1", HOOK, f"end report={r} lines=1"):
            out.append(line("adv", seq, text))
            seq += 1
        seq += 1
    return dmesg(out)


def short_reloads(n: int) -> str:
    out = []
    for r in range(n):
        out += [line("adv", 0, "load kernel=k hooks=1 protocol=2"),
                line("adv", 1, f"begin report=0 reason=unload ts_ns={r} lines=1"),
                line("adv", 2, HOOK), line("adv", 3, "end report=0 lines=1")]
    return dmesg(out)


def forged_kmsg(n: int) -> str:
    real = lost_line_between_frames(n).splitlines()
    return "".join(f"6,{2 * i},{i},-;{real[i].split('] ', 1)[1]}\n"
                   f"12,{2 * i + 1},{i},-;{line('adv', 7 + i, 'hook name=h hits=999999')}\n"
                   for i in range(len(real)))


def twice_and_shuffled(n: int) -> str:
    """Short reloads captured twice, the second capture with its lines of each load reversed."""
    text = short_reloads(n).splitlines()
    again = [ln for k in range(0, len(text), 4) for ln in reversed(text[k:k + 4])]
    return "\n".join(text + again) + "\n"


SHAPES = {
    "one-line loads": one_line_loads(40),
    "alternating begins": alternating_begins(40),
    "a lost line between frames": lost_line_between_frames(12),
    "short reloads": short_reloads(10),
    "forged kmsg": forged_kmsg(10),
    "captured twice, reversed": twice_and_shuffled(6),
}


def summary(p) -> tuple:
    """What a user of the parse sees."""
    try:
        latest = json.dumps(results_json(p.results(), p.problems, p.notes), sort_keys=True)
    except ReportError as e:
        latest = str(e)
    try:
        every = json.dumps(results_json(p.results(all=True)), sort_keys=True)
    except ReportError as e:
        every = str(e)
    return (latest, every, p.problems, p.notes, p.rejected, p.unrecognised, p.duplicates, p.lines,
            p.protocol_lines, repr(p),
            [(i.module, i.index, i.first_line, i.kernel, i.hooks, i.missing, i.records)
             for i in p.instances],
            [(f.module, f.instance.index, f.begin, f.end, f.records, f.first_seq, f.last_seq,
              f.first_line, f.problems, f.lost_lines, f.report, f.reason, f.ts_ns, f.lines,
              f.malformed, f.describe()) for f in p.frames],
            [repr(e) for e in p.events], [repr(f) for f in p.load_failures])


@pytest.fixture(scope="module")
def both():
    """parse(text) → (the summary with the C layout, with the Python one)."""
    require(scan.logscan is not None,
            "the C scanner is not built: pip install -e . (needs gcc and python3-dev)")
    c = scan.logscan
    # the C scanner, and layout_py in place of the C layout (which also takes frames.frame_of,
    # for the frames it does not read itself)
    python_layout = types.SimpleNamespace(
        scan=c.scan, layout=lambda recs, lookback, frame_of: frames.layout_py(recs, lookback))

    def parse(text: str):
        try:
            fast = summary(parse_log(text))
            scan.logscan = python_layout
            general = summary(parse_log(text))
        finally:
            scan.logscan = c
        return fast, general

    return parse


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_adversarial_shapes_parse_alike_on_both_paths(both, shape):
    fast, general = both(SHAPES[shape])
    assert fast == general


SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEXTS = ["load kernel=k hooks=1 protocol=2", "load kernel=j hooks=2 protocol=2",
         "begin report=0 reason=unload ts_ns=5 lines=1", "begin report=1 reason=interval ts_ns=6 lines=1",
         "begin report=0 reason=x ts_ns=5 lines=1 extra=1", HOOK, "end report=0 lines=1",
         "end report=1 lines=1", "end lines=1 report=0", "end report=0 lines=2",
         "event hook=h pid=1 tgid=1 cpu=0 comm=a", "error hook=h symbol=s err=-2", "mystery x=1"]


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["m", "n"]), st.integers(0, 6), st.sampled_from(TEXTS)),
                max_size=50))
def test_random_tiny_loads_parse_alike_on_both_paths(both, records):
    """Any mix of short loads, stray records, repeats and SEQs out of order, of two modules."""
    text = dmesg(line(m, seq, t) for m, seq, t in records)
    fast, general = both(text)
    assert fast == general


# -- what the shapes are, read by the protocol's rules ------------------------------------------

def test_one_line_loads_are_as_many_loads_and_no_report():
    p = parse_log(one_line_loads(500))
    assert [(i.index, i.kernel, i.hooks, i.first_line) for i in p.instances] == \
        [(k, f"k{k}", 1, k + 1) for k in range(500)]
    assert p.frames == [] and p.problems == [] and p.duplicates == 0
    with pytest.raises(ReportError, match="no complete report"):
        p.results()


def test_alternating_begins_are_loads_of_two_frames_that_conflict():
    p = parse_log(alternating_begins(200))
    assert len(p.instances) == 100 and len(p.frames) == 200
    for k, f in enumerate(p.frames):
        assert (f.instance.index, f.report, f.first_seq, f.lost_lines) == (k // 2, 0, 5 * (k % 2), 2)
        assert not f.complete
        assert f.problems[0].startswith("no end record")
        assert f.problems[-1].startswith("2 frames of one load claim report 0 (SEQ 0..0, SEQ 5..5)")
    assert len(p.problems) == 200              # per load: SEQ 1..4 lost, the conflict
    assert p.problems[0] == "adv: SEQ 1..4 missing (4 line(s) lost)"
    assert p.problems[-1].startswith("adv (load #100): 2 frames of one load claim report 0")


def test_a_lost_line_between_frames_loses_no_report():
    p = parse_log(lost_line_between_frames(300))
    assert len(p.instances) == 1 and len(p.frames) == 300
    assert all(f.complete for f in p.frames)
    assert [r.report for r in p.results(all=True)] == list(range(300))
    assert len(p.problems) == 299 and p.problems[0] == "adv: SEQ 4 missing (1 line(s) lost)"


def test_short_reloads_are_loads_of_one_complete_report_each():
    p = parse_log(short_reloads(300))
    assert [i.index for i in p.instances] == list(range(300))
    assert all(f.complete for f in p.frames) and p.problems == []
    assert [(r.instance, r.hooks["h"].hits) for r in p.results(all=True)] == [(k, 3) for k in range(300)]


def test_a_second_capture_out_of_order_adds_nothing():
    once, twice = parse_log(short_reloads(6)), parse_log(twice_and_shuffled(6))
    assert twice.duplicates == 24
    assert [r.to_json() for r in twice.results(all=True)] == [r.to_json() for r in once.results(all=True)]


@pytest.mark.parametrize("records, kernel, hooks", [
    ([(0, "load", "kernel=6.1\\x2da hooks=2 protocol=2", 3), (1, "end", "report=0 lines=0", 4)], "6.1-a", 2),
    ([(0, "load", "hooks=2 kernel=6.1 protocol=2", 3)], "6.1", 2),
    ([(0, "load", "kernel=6.1 hooks=x", 3)], "6.1", None),
    ([(0, "begin", "report=0 reason=unload ts_ns=5 lines=1", 3)], None, None),
    ([(4, "load", "kernel=6.1 hooks=1 protocol=2", 3)], None, None)])
def test_a_load_made_without_its_dataclass_init_is_the_same_instance(records, kernel, hooks):
    """``instances.new_instance`` makes an Instance without the dataclass ``__init__`` (one per
    load, and some logs hold a load per line): the same object the ``__init__`` would make."""
    from kprobegen.report.instances import Instance, new_instance

    inst, _ = new_instance("m", 2, list(records), 3, [(9, 9)])
    made = Instance("m", 2, list(records), 3, kernel, hooks, [(9, 9)])
    assert list(vars(inst)) == list(vars(made)) and inst == made
