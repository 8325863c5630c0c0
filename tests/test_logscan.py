"""White-box: the fast path of the line scan, the C scanner (kprobegen/report/_logscan.c), agrees
with its reference, the Python scanner (``kprobegen.report.scan.scan_py``).

The C scanner is what makes the parser reach 1 M report lines/s (bench/parse_bench.py); the
Python one is the readable statement of the rules. These tests hold them to the same output
on random and hand-picked logs, the fixtures of real runs, and whole parses; they reach into
``kprobegen.report.scan`` for that, and for nothing else."""

from __future__ import annotations

import json
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import require
from kprobegen.report import R_USER, parse_log, scan

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
