"""White-box: the fast paths in C (kprobegen/report/_logscan.c) agree with their references in
Python: the line scan with ``kprobegen.report.scan.scan_py``, and the grouping of a module's
records into loads and frames (``_logscan.layout``) with ``kprobegen.report.frames.layout_py``.

The C scanner is what makes the parser reach 1 M report lines/s (bench/parse_bench.py); the
Python one is the readable statement of the rules. These tests hold them to the same output
on random and hand-picked logs, the fixtures of real runs, and whole parses; they reach into
``kprobegen.report.scan`` and ``frames`` for that, and for nothing else."""

from __future__ import annotations

import gc
import json
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import require
from kprobegen.report import R_USER, frames, parse_log, scan
from kprobegen.report.instances import LOOKBACK

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "logs"


@pytest.fixture(scope="module")
def logscan():
    require(scan.logscan is not None,
            "the C scanner is not built: pip install -e . (needs gcc and python3-dev)")
    return scan.logscan


def c_scan(logscan, text: str):
    return scan.scan_c(text.replace("\r", ""))


def py_scan(text: str):
    return scan.scan_py(text.replace("\r", ""))


# Pieces of lines that hit every branch of the scanner: prefixes of each log form, kmsg
# headers with and without escapes, continuation lines, other protocol versions, bad module
# names and SEQs (including digits str.isdigit() takes but int() refuses), huge SEQs,
# Latin-1 bytes, missing fields, CRs, doubled spaces and the prefix twice in a line.
PIECES = [
    " chk=00000000", " chk=", "kprobegen/2 m 0 load chk=1c291ca3", "<12>", "<6>", "12,5,6,-;",
    "user  :notice: ", "kern  :info  : ", "vm kern.info kernel: ", "vm user.notice kernel: ",
    "host mallory[12]: ", "audit: ", "18446744073709551615 ", "18446744073709551616 ",
    "kprobegen/1 ", "kprobegen/", "kprobegen/2 ", "kprobegen/12 ", "kprobegen/1", "kprobegen/²",
    "mod ", "mod_b ", "m0d ", "0bad ", "bad-name ", "Ä ", " ", "  ", "\t",
    "0 ", "1 ", "2 ", "17 ", "007 ", "²", "99999999999999999999999 ", "-1 ", "x ",
    "load ", "begin ", "hook ", "key ", "hist ", "bucket ", "end ", "event ", "error ", "other ",
    "kernel=6.1.0 hooks=1 protocol=1", "report=0 reason=unload ts_ns=5 lines=1",
    "name=h probe=kprobe symbol=s hits=3 missed=0 dropped=0 disarmed=0 by=- keys=0 hist=0",
    "key=a\\x20b count=2", "comm=\\x5cx41", "\\x41", "\\", "=", ";",
    "6,12,3456,-;", "6,12,3456,-,caller=T1;", "4,1,2,c;", "x,1,2,-;",
    "[    1.234567] ", "[Thu Nov 26 09:00:00 2026] ", "<6>[    0.5] ",
    "Nov 26 09:00:00 host kernel: ", "kernel: ", "SUBSYSTEM=module",
    "\n", "\n", "\n", "\r", "\r\n", "é", "\xff", "\x00",
]

LOGS = st.lists(st.sampled_from(PIECES), max_size=60).map("".join)
SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(LOGS)
@example("")
@example("\n\n")
@example("kprobegen/1 mod 0 load")
@example("kprobegen/1 mod 0 load\n")
@example("kprobegen/1 mod 0 load kernel=6.1 hooks=1 protocol=1 \nkprobegen/1 mod 1 end")
@example("kprobegen/2 x kprobegen/1 mod 0 load kernel=x")
@example("6,1,2,-;kprobegen/1 mod 0 event comm=a\\x5cx20b\n 6,1,2,-;kprobegen/1 mod 1 x\n")
@example("4,1,2,c;kprobegen/1 mod 0 key hook=h key=\\xe9 count=1\n")
@example("kprobegen/1 a 1 x\nkprobegen/1 b 1 x\nkprobegen/1 c 1 x\nkprobegen/1 d 1 x\n"
         "kprobegen/1 e 1 x\nkprobegen/1 f 1 x\nkprobegen/1 g 1 x\nkprobegen/1 h 1 x\n"
         "kprobegen/1 i 1 x\nkprobegen/1 a 2 x\nkprobegen/1 0bad 2 x\nkprobegen/1 0bad 3 x\n")
def test_c_scanner_agrees_with_python_reference(logscan, text):
    assert c_scan(logscan, text) == py_scan(text)


@SETTINGS
@given(st.lists(st.one_of(st.sampled_from(PIECES), st.text(st.characters(max_codepoint=0xFF))),
                max_size=40).map("".join))
def test_c_scanner_agrees_with_python_reference_on_any_latin1_text(logscan, text):
    """Arbitrary bytes (as Latin-1) between the pieces: NULs, control characters, anything."""
    assert c_scan(logscan, text) == py_scan(text)


@SETTINGS
@given(st.lists(st.sampled_from(PIECES + ["\u20ac", "\u0100", "\U0001f600"]), max_size=40)
       .map("".join))
def test_wide_text_falls_back_to_python(logscan, text):
    """Text with a character above U+00FF is not stored one byte per character: the C scanner
    declines it and scan() gives the Python scanner's answer."""
    stripped = text.replace("\r", "")
    if max(map(ord, stripped), default=0) > 0xFF:
        assert scan.scan_c(stripped) is None
    assert scan.scan(text) == py_scan(text)


def test_c_scanner_gives_the_reference_values_and_types(logscan):
    text = ("[    1.0] kprobegen/1 mod 0 load kernel=6.1 hooks=1 protocol=1\n"
            "noise\n"
            "kprobegen/1 mod 18446744073709551615 end report=0 lines=0\n"
            "kprobegen/1 mod 18446744073709551616 end report=0 lines=0\n"
            "<12>[    1.0] kprobegen/1 mod 1 end report=0 lines=0\n")
    per_module, unrecognised, prefixed, nlines, rejected, untold, tagged = c_scan(logscan, text)
    assert per_module == {"mod": [(0, "load", "kernel=6.1 hooks=1 protocol=1", 1),
                                  (18446744073709551615, "end", "report=0 lines=0", 3)]}
    assert [type(v) for v in per_module["mod"][0]] == [int, str, str, int]
    assert unrecognised == {"(bad module name or SEQ)": 1} and prefixed == 4 and nlines == 5
    assert rejected == [(5, R_USER)] and untold == 3
    assert tagged == 0
    assert (per_module, unrecognised, prefixed, nlines, rejected, untold, tagged) == py_scan(text)


def _v2(body: str) -> str:
    """A version-2 line as a module prints it: the text and its CRC-32."""
    return f"kprobegen/2 {body} chk={zlib.crc32(f'kprobegen/2 {body}'.encode('latin-1')):08x}"


V2_BODIES = ["m 0 load kernel=6.1 hooks=1 protocol=2", "m 1 begin report=0 reason=unload ts_ns=5 lines=1",
             "m 2 hook name=h probe=kprobe symbol=s hits=3 missed=0 dropped=0 disarmed=0 by=- keys=0 hist=0",
             "m 3 end report=0 lines=1", "m 4 event hook=h pid=1 tgid=1 cpu=0 comm=a\\x20b",
             "m 5 key hook=h key=\xe9 count=1", "0bad 1 x", "m 99999999999999999999999 x"]
HEADS = ["", "[    1.5] ", "<6>[    1.5] ", "<12>[    1.5] ", "<6>", "6,1,2,-;", "12,1,2,-;",
         "6,1,2,-;6,1,2,-;", "kern  :info  : [    1.5] ", "user  :notice: [    1.5] ",
         "Nov 26 09:00:00 host kernel: ", "Nov 26 09:00:00 host mallory[7]: ",
         "Nov 26 09:00:00 vm kern.info kernel: [    1.5] ", "Nov 26 09:00:00 vm user.info kernel: ",
         "Nov 26 09:00:00 host mallory: kernel: ", "[    1.5] audit: ", "something ", " ", "\t",
         "4,9,9,c;", "<1234567890>"]


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(HEADS), st.sampled_from(V2_BODIES),
                          st.integers(-1, 200), st.characters(max_codepoint=0xFF)),
                max_size=12))
def test_c_scanner_agrees_with_python_reference_on_checked_lines(logscan, lines):
    """Version-2 lines with a valid check under every log header, some with one character
    changed (position -1: none): the C and the Python scanner agree on each."""
    out = []
    for head, body, pos, ch in lines:
        line = _v2(body)
        if 0 <= pos < len(line):
            line = line[:pos] + ch + line[pos + 1:]
        out.append(head + line)
    text = "\n".join(out)
    assert c_scan(logscan, text) == py_scan(text)


@pytest.mark.parametrize("path", sorted(FIXTURES.rglob("*.txt")),
                         ids=lambda p: str(p.relative_to(FIXTURES)))
def test_fixtures_scan_alike(logscan, path):
    """Every log captured from a real run scans the same in C and in Python."""
    text = path.read_bytes().decode("latin-1")
    assert c_scan(logscan, text) == py_scan(text)


@pytest.mark.parametrize("path", sorted(FIXTURES.rglob("*.txt")),
                         ids=lambda p: str(p.relative_to(FIXTURES)))
def test_fixtures_parse_alike(logscan, path, monkeypatch):
    """Whole parses give the same frames, results, problems and counts with the C scanner
    and with the Python reference."""
    text = path.read_bytes()

    def summary():
        p = parse_log(text)
        return (p.lines, p.protocol_lines, p.duplicates, p.unrecognised, p.problems,
                [json.dumps(f.results().to_json(), sort_keys=True) for f in p.frames],
                [(e.module, e.seq, e.comm, e.values) for e in p.events])

    with_c = summary()
    monkeypatch.setattr(scan, "logscan", None)
    assert summary() == with_c


def test_no_memory_kept_between_scans(logscan):
    """Every object the scanner makes belongs to its result: nothing stays behind."""
    text = "".join(f"[ {i}.0] kprobegen/1 mod{i % 3} {i} key hook=h key=k{i} count={i}\n"
                   "6,1,2,-;kprobegen/1 kmod 0 event comm=a\\x5cx41\n"
                   "kprobegen/1 0bad 1 x\nkprobegen/2 v 1 x\n<12>kprobegen/1 m 1 x\n"
                   "kprobegen/3 v 1 x\n" for i in range(2000))
    c_scan(logscan, text)       # warm up caches (interned strings, the regex)
    tracemalloc.start()
    try:
        c_scan(logscan, text)
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            c_scan(logscan, text)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # one scan's result is ~1 MB: a leak of even one object per record would show as that
    assert after - before < 64 * 1024


# -- layout: a module's records grouped into instances and cut into frames ------------------------
#
# The C ``_logscan.layout`` against its reference ``frames.layout_py`` (``instances.group_py``, then
# ``frames.cut_py`` per instance), on records as the scanners give them (in log order), built to
# hit every branch: runs of rising SEQ and SEQs that fall back or repeat, the same line twice,
# lines that differ only in trailing whitespace (Python's str.rstrip: also \x1c-\x1f, \x85,
# \xa0 and, in wider strings, \u3000), known record types as other str objects than the
# scanner's, unknown types, begin and end records in and out of the template's form, and a
# small lookback, so that the bound on candidates is reached.

def _fresh(s: str) -> str:
    """An equal str that is another object (the C scanner's known types are shared objects)."""
    return "".join(list(s))


TYPES = ["load", "hook", "key", "hist", "bucket", "event", "error", "other", "é", "Hook", ""]
BEGINS = ["report=0 reason=unload ts_ns=5 lines=1", "report=1 reason=interval ts_ns=1000000000000000000 lines=0",
          "report=0 reason=unload ts_ns=5 lines=1 ", "report=0 reason=a=b ts_ns=5 lines=1",
          "report=0 reason= ts_ns=5 lines=1", "report=0 reason=\u00e9t\u00e9 ts_ns=5 lines=1",
          "report=0 reason=unloaded ts_ns=5 lines=1", "report=0 reason=interva ts_ns=5 lines=1",
          "report=0 reason=\u20ac ts_ns=5 lines=1", "report=0 reason=unload ts_ns=9999999999999999999 lines=1",
          "report=0 reason=unload ts_ns=10000000000000000000 lines=1", "lines=1 report=0 reason=x ts_ns=5",
          "report=0 reason=unload ts_ns=5", "report=0 reason=unload\tts_ns=5 lines=1"]
ENDS = ["report=0 lines=1", "report=1 lines=0", "report=0 lines=1\t", "report=0000000000000000001 lines=2",
        "report=00000000000000000001 lines=2", "report=\u0663 lines=1", "lines=1 report=0",
        "report=0 lines=", "report=0 lines=1 x=2", "report=0  lines=1"]
FIELDS = ["kernel=6.1 hooks=1 protocol=2", "name=h hits=3", "name=h hits=3 ", "name=h hits=3\x1c",
          "name=h hits=3\xa0", "name=h hits=3\x85", "name=h hits=3\u3000", "name=h hits=4", "", " ",
          "hook=h key=a count=1"]
SEQS = [0, 1, 2, 3, 4, 5, 6, 9, 18446744073709551615]

RECORDS = st.lists(st.one_of(
    st.tuples(st.sampled_from(SEQS), st.just("begin"), st.sampled_from(BEGINS), st.booleans()),
    st.tuples(st.sampled_from(SEQS), st.just("end"), st.sampled_from(ENDS), st.booleans()),
    st.tuples(st.sampled_from(SEQS), st.sampled_from(TYPES), st.sampled_from(FIELDS), st.booleans())),
    max_size=40)


def _records(raw) -> list[tuple]:
    return [(seq, _fresh(typ) if fresh else typ, fields, line)
            for line, (seq, typ, fields, fresh) in enumerate(raw, 1)]


@SETTINGS
@given(RECORDS, st.sampled_from([1, 2, 3, 16]))
@example([(0, "load", FIELDS[0], False), (1, "begin", BEGINS[0], False), (2, "hook", FIELDS[1], False),
          (3, "end", ENDS[0], False)] * 2, 16)
@example([(0, "begin", BEGINS[0], False), (5, "begin", BEGINS[0], True)] * 3, 1)
@example([(s, "hook", FIELDS[1 + s % 7], False) for s in (3, 1, 2, 1, 0, 2, 5, 4)], 2)
def test_layout_agrees_with_python_reference(logscan, raw, lookback):
    recs = _records(raw)
    assert logscan.layout(recs, lookback, frames.frame_of) == frames.layout_py(recs, lookback)


@pytest.mark.parametrize("field", BEGINS + ENDS)
def test_layout_reads_begin_and_end_records_as_the_reference(logscan, field):
    """Each begin and end text, as a begin and as an end: the values of the template's form."""
    recs = [(0, "begin", field, 1), (1, "end", field, 2)]
    assert logscan.layout(recs, LOOKBACK, frames.frame_of) == frames.layout_py(recs, LOOKBACK)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 12), st.sampled_from(["load", "begin", "hook", "end"]),
                          st.integers(0, 3)),
                max_size=80),
       st.sampled_from([1, 2, 4]))
def test_layout_agrees_with_python_reference_on_many_runs(logscan, raw, lookback):
    """Many short runs of few distinct lines: runs joined to earlier loads, duplicates dropped,
    more candidate loads than the lookback allows."""
    recs = [(seq, typ, f"n={n}", line) for line, (seq, typ, n) in enumerate(raw, 1)]
    assert logscan.layout(recs, lookback, frames.frame_of) == frames.layout_py(recs, lookback)


def _lines(*runs):
    """Records of these runs (lists of (SEQ, text)), in this order, as a log would hold them."""
    recs = []
    for run in runs:
        recs += [(seq, "hook", text, len(recs) + 1) for seq, text in run]
    return recs


@pytest.mark.parametrize("lookback", [1, 2, 16])
@pytest.mark.parametrize("recs", [
    # a run from SEQ 0 sharing two lines, not all of it and not all of the load: it joins
    _lines([(0, "a"), (1, "b"), (2, "c"), (3, "d")], [(0, "a"), (1, "b"), (4, "e")]),
    # ... sharing one line beyond SEQ 0: a new load; sharing only SEQ 0, with a load that lacks it
    _lines([(0, "a"), (1, "b"), (2, "c")], [(0, "a"), (1, "b"), (5, "e")], [(0, "z"), (7, "y")]),
    _lines([(3, "a"), (4, "b")], [(0, "x"), (3, "a"), (6, "q")]),
    # runs not from SEQ 0 whose lines are held by more loads than the lookback lets through
    _lines([(0, "p"), (1, "a")], [(0, "q"), (1, "a")], [(0, "r"), (1, "a")], [(0, "s"), (2, "b")],
           [(1, "a"), (3, "c")], [(1, "a"), (2, "x")]),
    _lines(*[[(0, f"l{i}"), (1 + i % 3, "x")] for i in range(9)], [(1, "x"), (2, "x"), (3, "x")],
           [(2, "x"), (5, "y")], [(1, "x"), (9, "z")]),
    # the only load it agrees with is the third candidate: beyond 2 * lookback when that is 1
    _lines([(0, "a"), (3, "w")], [(0, "b"), (1, "x"), (3, "v")], [(0, "n"), (1, "q")],
           [(1, "x"), (3, "w")]),
])
def test_layout_joins_runs_as_the_reference(logscan, recs, lookback):
    assert logscan.layout(recs, lookback, frames.frame_of) == frames.layout_py(recs, lookback)


def test_layout_of_one_run_is_the_records_themselves(logscan):
    recs = [(0, "load", FIELDS[0], 1), (1, "begin", BEGINS[0], 2), (2, "end", ENDS[0], 3)]
    records, firsts, lasts, missing, rows, others, claims, outside, dups, interleaved = \
        logscan.layout(recs, LOOKBACK, frames.frame_of)
    assert records[0] is recs and (firsts, lasts, missing, claims, outside, dups, interleaved) == \
        ([1], [3], [[]], [()], [()], 0, False)
    # the frame's row (frames.ROW_FIELDS): begin, end, records, first and last SEQ, first log
    # line, problems, lost lines, report, reason, ts_ns, lines
    assert rows == [[(recs[1], recs[2], [], 1, 2, 2, ["lines=1 but 0 record(s) in the frame"], 1,
                      0, "unload", 5, 1)]]
    assert others == [[recs[0]]]
    nothing = ([], [], [], [], [], [], [], [], 0, False)
    assert logscan.layout([], LOOKBACK, frames.frame_of) == nothing == frames.layout_py([], LOOKBACK)


@pytest.mark.parametrize("line_b, interleaved", [(3, True), (6, False)])
def test_layout_tells_loads_whose_lines_interleave(logscan, line_b, interleaved):
    """Load b's lines start at log line line_b; load a's are lines 1 and 5 (at 3, b starts
    before a's last line: their lines interleave, and frames.flag_conflicts says so)."""
    recs = sorted([(0, "load", "kernel=a hooks=1 protocol=2", 1), (1, "hook", "x", 5),
                   (0, "load", "kernel=b hooks=1 protocol=2", line_b), (1, "hook", "y", 9)],
                  key=lambda r: r[3])
    found = logscan.layout(recs, LOOKBACK, frames.frame_of)
    assert found == frames.layout_py(recs, LOOKBACK)
    assert len(found[0]) == 2 and found[-1] is interleaved


def _frames_claiming(reports, extra=()):
    """One load: a frame (begin, hook, end) per report number in reports, then extra records."""
    recs = [(0, "load", FIELDS[0], 1)]
    for rep in reports:
        begin = f"report={rep} reason=unload ts_ns=5 lines=1"
        if rep == "x":                  # a begin the C does not read: its row made by frame_of
            begin, rep = "lines=1 report=3 reason=unload ts_ns=5", 3
        for typ, text in (("begin", begin), ("hook", FIELDS[1]), ("end", f"report={rep} lines=1")):
            recs.append((len(recs), typ, text, len(recs) + 1))
    return recs + [(seq, typ, text, len(recs) + 1 + k) for k, (seq, typ, text) in enumerate(extra)]


@pytest.mark.parametrize("recs", [
    _frames_claiming([0, 0]),
    _frames_claiming([0, 1]),
    _frames_claiming([3, 1, 3, 2, 1, 3]),                       # two numbers twice, in order of first claim
    _frames_claiming([7] * 8 + [2] * 6),                        # more than 5: the first 5 named
    _frames_claiming([3, "x", 3, 0]),                           # a row from frame_of among them
    _frames_claiming([0, 1], [(40 + k, "load", FIELDS[0]) for k in range(7)]),  # second loads
    _frames_claiming([5, 5, 5], [(99, "load", "kernel=k")]),
    _frames_claiming([], [(9, "load", FIELDS[0])]),             # a second load and no frame
])
def test_layout_says_what_the_frames_of_a_load_cannot_all_be(logscan, recs):
    """More load records than the one at SEQ 0, report numbers claimed by more than one frame:
    said on the frames as the reference says them (frames.load_conflicts)."""
    assert logscan.layout(recs, LOOKBACK, frames.frame_of) == frames.layout_py(recs, LOOKBACK)
    assert logscan.layout(recs, 1, frames.frame_of)[6] == frames.layout_py(recs, 1)[6]


def _frame(seq, begin, n, end, line):
    """A frame from SEQ seq: a begin (or None), n hook records, an end (or None)."""
    recs = [] if begin is None else [(seq, "begin", begin, line)]
    recs += [(seq + len(recs) + k, "hook", FIELDS[1], line) for k in range(n)]
    return recs + ([] if end is None else [(seq + len(recs), "end", end, line)])


def _frames(*frames):
    recs = [(0, "load", FIELDS[0], 1)]
    for begin, n, end in frames:
        recs += _frame(recs[-1][0] + 1, begin, n, end, len(recs) + 1)
    return [(seq, typ, text, line) for line, (seq, typ, text, _) in enumerate(recs, 1)]


B = "report={} reason=unload ts_ns=5 lines={}"
E = "report={} lines={}"


@pytest.mark.parametrize("recs", [
    # the same kind of text one frame after another, the numbers differing only in the last
    _frames((B.format(0, 3), 0, E.format(0, 3)), (B.format(1, 3), 1, E.format(1, 3)),
            (B.format(2, 3), 2, E.format(2, 3))),                           # fewer records
    _frames((B.format(0, 0), 1, E.format(0, 0)), (B.format(1, 0), 2, E.format(1, 0))),  # more
    _frames((B.format(0, 1), 1, E.format(0, 2)), (B.format(1, 1), 1, E.format(1, 3))),  # disagree
    # two loads, each with two frames claiming report 4: SEQ 1..2, 3..4, then 1..2, 3..5
    [(0, "load", "kernel=a hooks=1 protocol=2", 1), (1, "begin", B.format(4, 0), 2),
     (2, "end", E.format(4, 0), 3), (3, "begin", B.format(4, 0).replace("=5", "=6"), 4),
     (4, "end", E.format(4, 0), 5), (0, "load", "kernel=b hooks=1 protocol=2", 6),
     (1, "begin", B.format(4, 0).replace("=5", "=7"), 7), (2, "end", E.format(4, 0), 8),
     (3, "begin", B.format(4, 0).replace("=5", "=8"), 9), (5, "end", E.format(4, 0), 10)],
    # loads whose SEQ gaps share their first SEQ: (1, 3), then (1, 4), then (2, 4)
    [(0, "load", "kernel=a", 1), (4, "hook", FIELDS[1], 2), (0, "load", "kernel=b", 3),
     (5, "hook", FIELDS[1], 4), (0, "load", "kernel=c", 5), (1, "hook", FIELDS[2], 6), (5, "hook", FIELDS[1], 7)],
    # a frame whose SEQ span is (nearly) every u64: its lost lines pass 2**64
    [(0, "hook", FIELDS[1], 1), (2 ** 64 - 1, "hook", FIELDS[1], 2)],
    [(1, "hook", FIELDS[1], 1), (2 ** 64 - 1, "end", E.format(0, 2 ** 63), 2)],
    [(0, "begin", B.format(0, 10 ** 19 - 1), 1), (2 ** 62 - 1, "hook", FIELDS[1], 2)],
    [(0, "begin", B.format(0, 10 ** 19 - 1), 1), (2 ** 62, "hook", FIELDS[1], 2)],
])
def test_layout_makes_each_text_and_sum_as_the_reference(logscan, recs):
    """Texts that share all but their last number (the C reuses a text only when every number
    is the same) and lost lines past 2**64 (the C hands such frames to frame_of)."""
    assert logscan.layout(recs, LOOKBACK, frames.frame_of) == frames.layout_py(recs, LOOKBACK)


def test_layout_refuses_rows_frame_of_does_not_make(logscan):
    recs = _frames_claiming(["x", "x", "x"])
    with pytest.raises(TypeError):
        logscan.layout(recs, LOOKBACK, lambda *cut: None)
    with pytest.raises(TypeError):
        logscan.layout(recs, LOOKBACK, lambda *cut: (None,) * 12)


@pytest.mark.parametrize("bad", [[(0, "load", "x")], [[0, "load", "x", 1]], [(-1, "load", "x", 1)],
                                 [(2 ** 64, "load", "x", 1)], [(0, 1, "x", 1)], [(0, "load", b"x", 1)],
                                 [(0, "load", "x", "1")], [None]])
def test_layout_refuses_what_the_scanners_never_give(logscan, bad):
    with pytest.raises((TypeError, OverflowError)):
        logscan.layout(bad, LOOKBACK, frames.frame_of)
    with pytest.raises(ValueError):
        logscan.layout([], 0, frames.frame_of)
    with pytest.raises(TypeError):
        logscan.layout([], LOOKBACK, None)


def test_no_memory_kept_between_layouts(logscan):
    """Every object layout makes belongs to its result: the rows of frames it checks itself
    (in the template's form, with each kind of framing problem) and of those it hands to
    frames.frame_of (a begin with a trailing blank)."""
    recs = []
    for i in range(3000):
        recs += [(0, "load", f"kernel=k{i} hooks=1 protocol=2", len(recs) + 1),
                 (5 * (i % 2), "begin", f"report=0 reason=unload ts_ns={i} lines=1 ", len(recs) + 2),
                 (2, _fresh("hook"), "name=h hits=3", len(recs) + 3), (3, "x", "", len(recs) + 4)]
    for i in range(3000):
        # begin and end disagree, SEQ 3 missing, fewer records than stated; then a frame of a
        # hook record alone (no begin, no end)
        recs += [(0, "load", f"kernel=j{i} hooks=1 protocol=2", len(recs) + 1),
                 (1, "begin", f"report=0 reason=unload ts_ns={i} lines=3", len(recs) + 2),
                 (2, "hook", "name=h hits=3", len(recs) + 3), (4, "end", "report=1 lines=3", len(recs) + 4),
                 (5, "hook", "name=h hits=3", len(recs) + 5)]
    for i in range(3000):
        # two frames claiming report i (or three, and a second load record)
        recs.append((0, "load", f"kernel=c{i} hooks=1 protocol=2", len(recs) + 1))
        for seq in range(1, 5 if i % 2 else 7):
            text = f"report={i} reason=unload ts_ns=5 lines=0" if seq % 2 else f"report={i} lines=0"
            recs.append((seq, "begin" if seq % 2 else "end", text, len(recs) + 1))
        if i % 2 == 0:
            recs.append((7, "load", f"kernel=c{i} hooks=1 protocol=2", len(recs) + 1))
    logscan.layout(recs, LOOKBACK, frames.frame_of)
    # frame_of is Python code, which can start a collection of other tests' garbage in the
    # middle of the measurement: what the interpreter then keeps in its free lists (bounded,
    # but up to thousands of tuples) would be counted. Collected before, and off during it.
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        logscan.layout(recs, LOOKBACK, frames.frame_of)
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            logscan.layout(recs, LOOKBACK, frames.frame_of)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        gc.enable()
    assert after - before < 64 * 1024
