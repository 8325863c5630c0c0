"""Report parser: exact cases, damaged logs, JSON shape, and golden human output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kprobegen.errors import ReportError
from kprobegen.report import format_histogram, format_results, parse_log, unescape
from kprobegen.report.format import bound_text
from kprobegen.report.results import (Bucket, Histogram, HookResult, Results, bytes_to_text,
                                      results_from_json, results_json, text_to_bytes)
from report_model import ModuleWriter, escape, render_log

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "schema" / "results.schema.json").read_text())

# docs/report-protocol.md's example, with lines=2: two records (hook, key) lie between
# begin and end, which is what `lines=` counts and what the C template prints.
EXAMPLE = """\
[    5.101000] kprobegen/1 sync_counter 0 load kernel=6.1.0-56-cloud-amd64 hooks=1 protocol=1
[    5.204000] random: crng init done
[    7.311000] kprobegen/1 sync_counter 1 begin report=0 reason=unload ts_ns=2311456789 lines=2
[    7.311001] kprobegen/1 sync_counter 2 hook name=sync probe=kprobe symbol=ksys_sync hits=3 missed=0 dropped=0 disarmed=0 by=comm keys=1 hist=0
[    7.311002] kprobegen/1 sync_counter 3 key hook=sync key=sync count=3
[    7.311003] kprobegen/1 sync_counter 4 end report=0 lines=2
"""

SYNC = Results("sync_counter", "6.1.0-56-cloud-amd64", 0, "unload", 2311456789, True, 0, [],
               {"sync": HookResult("sync", "ksys_sync", "kprobe", 3, 0, 0, False, "comm",
                                   {b"sync": 3}, None)}, 0, [])


def test_the_protocol_example():
    p = parse_log(EXAMPLE)
    assert p.results() == [SYNC]
    assert p.results("sync_counter", all=True) == [SYNC]
    assert (p.lines, p.protocol_lines, p.duplicates) == (6, 5, 0)
    assert p.unrecognised == {} and p.problems == [] and p.events == []
    assert p.instances[0].kernel == "6.1.0-56-cloud-amd64" and p.instances[0].hooks == 1


def test_no_report_at_all_says_what_was_found():
    with pytest.raises(ReportError, match=r"no kprobegen protocol lines among 2 line\(s\)"):
        parse_log("[ 1.0] hello\n[ 2.0] world\n").results()
    with pytest.raises(ReportError, match=r"module nope in the log: not one line from nope among 5 protocol line\(s\), modules found: sync_counter"):
        parse_log(EXAMPLE).results("nope")
    only_load = EXAMPLE.splitlines()[0] + "\n"
    with pytest.raises(ReportError, match=r"printed 1 line\(s\) but no report frame .*still loaded"):
        parse_log(only_load).results("sync_counter")


def test_a_failed_load_is_named():
    w = ModuleWriter("bad")
    log = render_log(w.error("open", "do_sys_open", -2), "dmesg")
    p = parse_log(log)
    assert [(f.module, f.hook, f.symbol, f.err) for f in p.load_failures] == [("bad", "open", "do_sys_open", -2)]
    with pytest.raises(ReportError, match=r"bad failed to load: hook open \(symbol do_sys_open\) register returned -2"):
        p.results()


def test_kmsg_escapes_backslashes_once_more():
    # /dev/kmsg prints '\' as \x5c, so the protocol's \x20 reaches the file as \x5cx20
    lines = [
        r"6,580,5101000,-;kprobegen/1 m 0 load kernel=6.1 hooks=1 protocol=1",
        r"6,581,7311000,-;kprobegen/1 m 1 begin report=0 reason=unload ts_ns=7 lines=3",
        r"6,582,7311000,-;kprobegen/1 m 2 hook name=h probe=kprobe symbol=s hits=5 missed=0 dropped=0 disarmed=0 by=comm keys=2 hist=0",
        r" SUBSYSTEM=kprobegen/1 m 3 key hook=h key=evil count=999",
        r"6,583,7311000,-;kprobegen/1 m 3 key hook=h key=a\x5cx20b count=3",
        r"6,584,7311000,-;kprobegen/1 m 4 key hook=h key=back\x5cx5cslash count=2",
        r"6,585,7311000,-;kprobegen/1 m 5 end report=0 lines=3",
    ]
    [r] = parse_log("\n".join(lines) + "\n").results()
    assert r.complete
    assert r.hooks["h"].by == {b"a b": 3, b"back\\slash": 2}
    # the same text read by dmesg (no kmsg escaping) means something else
    plain = "\n".join(ln.split(";", 1)[1] for ln in lines if not ln.startswith(" "))
    [r2] = parse_log(plain).results()
    assert r2.hooks["h"].by == {b"a\\x20b": 3, b"back\\x5cslash": 2}


def test_crlf_tabs_and_trailing_spaces():
    log = EXAMPLE.replace("\n", " \r\n")
    assert parse_log(log).results() == [SYNC]
    assert parse_log(log.encode()).results() == [SYNC]


def test_comm_keys_round_trip_through_the_escape():
    w = ModuleWriter("m")
    comms = {b"": 1, b" ": 2, b"=": 3, b'"': 4, b"\\": 5, b"\\x41": 6, b"\xff\xfe": 7,
             b"caf\xc3\xa9": 8, b"a b=c\"d\\e": 9, b"\x00\x01\n": 10, b"x": 11}
    hooks = {"h": HookResult("h", "s", "kprobe", sum(comms.values()), 0, 0, False, "comm", comms, None)}
    r = Results("m", "6.1", 0, "unload", 1, True, 0, [], hooks, 0, [])
    lines = w.load("6.1", 1) + w.report(r)
    assert "key hook=h key= count=1" in lines[3]
    assert parse_log("\n".join(lines)).results() == [r]
    js = r.hooks["h"].to_json()["by"]
    assert js[""] == 1 and js["\\x5c"] == 5 and js["\\x5cx41"] == 6 and js["\\xff\\xfe"] == 7
    assert js["café"] == 8 and js["\\x00\\x01\\x0a"] == 10
    assert results_from_json(results_json([r])) == [r]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=20))
def test_bytes_text_and_protocol_escape_are_exact_inverses(b):
    assert text_to_bytes(bytes_to_text(b)) == b
    assert unescape(escape(b)) == b


@pytest.mark.parametrize("value", ["a b", "a=b", 'a"b', "a\\b", "a\\x4", "a\\xzz", "é"])
def test_unescape_refuses_what_a_writer_never_prints(value):
    with pytest.raises(ValueError):
        unescape(value)


def _frame(*body: str, lines: int | None = None, module: str = "m", end: bool = True) -> str:
    n = len(body) if lines is None else lines
    out = [f"kprobegen/1 {module} 0 load kernel=6.1 hooks=1 protocol=1",
           f"kprobegen/1 {module} 1 begin report=0 reason=unload ts_ns=5 lines={n}"]
    out += [f"kprobegen/1 {module} {i + 2} {b}" for i, b in enumerate(body)]
    if end:
        out.append(f"kprobegen/1 {module} {len(body) + 2} end report=0 lines={n}")
    return "\n".join(out) + "\n"


HOOK = "hook name=h probe=kprobe symbol=s hits=4 missed=1 dropped=0 disarmed=0 by=pid keys=2 hist=0"


def test_a_clean_small_frame():
    [r] = parse_log(_frame(HOOK, "key hook=h key=10 count=3", "key hook=h key=11 count=1")).results()
    assert r.hooks["h"].by == {10: 3, 11: 1} and r.hooks["h"].missed == 1


@pytest.mark.parametrize("body,problem,unrec", [
    ((HOOK, "key hook=h key=10 count=3"), r"1 key record\(s\) missing", {}),
    ((HOOK, "key hook=h key=10 count=3", "key hook=h key=11 count=x1"),
     r"key record at SEQ 4 \(log line 5\): 'x1' is not an unsigned decimal", {"key (malformed)": 1}),
    ((HOOK, "key hook=h key=10 count=3", "key hook=g key=11 count=1"),
     r"hook=g does not follow hook h", {"key (malformed)": 1}),
    ((HOOK, "key hook=h key=10 count=3", "key hook=h key=10 count=1"),
     r"key 10 appears twice", {"key (malformed)": 1}),
    ((HOOK.replace(" hits=4", ""), "key hook=h key=10 count=3", "key hook=h key=11 count=1"),
     r"field hits= is missing", {"hook (malformed)": 1}),
    ((HOOK, "key hook=h key=10 count=3", "frobnicate x=1", "key hook=h key=11 count=1"),
     r"record type 'frobnicate' is not a record type of the protocol", {"frobnicate": 1}),
    ((HOOK, "key hook=h key=10  count=3", "key hook=h key=11 count=1"),
     r"not KEY=VALUE separated by single spaces", {"key (malformed)": 1}),
    ((HOOK.replace("by=pid", "by=pid=1"), "key hook=h key=10 count=3", "key hook=h key=11 count=1"),
     r"not KEY=VALUE", {"hook (malformed)": 1}),
    ((HOOK.replace("disarmed=0", "disarmed=2"), "key hook=h key=10 count=3", "key hook=h key=11 count=1"),
     r"'2' is not 0 or 1", {"hook (malformed)": 1}),
])
def test_a_corrupt_record_makes_its_frame_incomplete(body, problem, unrec):
    p = parse_log(_frame(*body, lines=3))
    [f] = p.frames
    assert not f.complete
    assert any(__import__("re").search(problem, x) for x in f.results().problems), f.results().problems
    assert p.unrecognised == unrec
    with pytest.raises(ReportError, match="found 1 incomplete report"):
        p.results()


def test_begin_and_end_that_disagree():
    log = _frame(HOOK, "key hook=h key=10 count=3", "key hook=h key=11 count=1")
    log = log.replace("5 end report=0 lines=3", "5 end report=0 lines=4")
    assert "lines=4" in log
    [f] = parse_log(log).frames
    assert not f.complete
    assert "begin says report=0 lines=3 but end says report=0 lines=4" in f.results().problems


def test_more_records_than_announced():
    log = _frame(HOOK, "key hook=h key=10 count=3", "key hook=h key=11 count=1", lines=2)
    r = parse_log(log).results("m", all=True)[0]
    assert not r.complete and r.lost_lines == 0
    assert "lines=2 but 3 record(s) in the frame (1 more than stated)" in r.problems


def test_lost_lines_are_counted():
    body = [HOOK, "key hook=h key=10 count=3", "key hook=h key=11 count=1"]
    lines = _frame(*body).splitlines()
    # lose the two key records: SEQ 3 and 4
    r = parse_log("\n".join(lines[:3] + lines[5:])).results("m", all=True)[0]
    assert (r.complete, r.lost_lines) == (False, 2)
    assert "2 line(s) missing between SEQ 1 and 5" in r.problems
    assert r.hooks["h"].by == {}          # nothing made up
    # lose the end: the frame is cut
    r = parse_log("\n".join(lines[:-1])).results("m", all=True)[0]
    assert (r.complete, r.lost_lines, r.report) == (False, 1, 0)
    # lose begin and the first record: the frame starts with a key (ring buffer wrapped)
    r = parse_log("\n".join(lines[:1] + lines[3:])).results("m", all=True)[0]
    assert (r.complete, r.lost_lines, r.report, r.reason, r.ts_ns) == (False, 2, 0, None, None)
    assert "no begin record (the frame's start is not in the log)" in r.problems


def test_unsupported_versions_and_bad_headers_are_counted():
    log = EXAMPLE + "\n".join([
        "[ 9.0] kprobegen/3 sync_counter 5 begin report=1",
        "[ 9.0] kprobegen/1 sync_counter",
        "[ 9.0] kprobegen/1 9bad 5 begin report=1",
        "[ 9.0] kprobegen/1 sync_counter five begin report=1",
        "[ 9.0] kprobegen/1 sync_counter ² begin report=1",
        "[ 9.0] a path /usr/share/kprobegen/templates/x, not ours",
    ]) + "\n"
    p = parse_log(log)
    assert p.unrecognised == {"kprobegen/3 (unsupported protocol version)": 1,
                              "(no module, SEQ or type)": 1, "(bad module name or SEQ)": 3}
    assert p.results() == [SYNC]


def test_events_in_and_out_of_order():
    w = ModuleWriter("ev")
    hooks = {"h": HookResult("h", "s", "kretprobe", 2, 0, 0, False, None, {}, None)}
    r = Results("ev", "6.1", 0, "unload", 9, True, 0, [], hooks, 0, [])
    lines = w.load("6.1", 1)
    ev1 = w.event("h", 10, 10, 0, b"a b", {"retval": -2, "latency_ns": 1500})
    ev2 = w.event("h", 11, 10, 1, b"\xff", {"arg0": 7})
    lines += ev2 + ev1          # CPU 1's line reached the log before CPU 0's
    lines += w.report(r)
    p = parse_log("\n".join(lines))
    assert p.results() == [r]
    assert [(e.seq, e.pid, e.comm, e.values) for e in sorted(p.events, key=lambda e: e.seq)] == [
        (1, 10, b"a b", {"retval": -2, "latency_ns": 1500}), (2, 11, b"\xff", {"arg0": 7})]
    assert p.problems == [] and len(p.instances) == 1


def test_a_lost_event_between_frames_is_reported_at_log_level():
    w = ModuleWriter("ev")
    hooks = {"h": HookResult("h", "s", "kprobe", 2, 0, 0, False, None, {}, None)}
    r = Results("ev", "6.1", 0, "unload", 9, True, 0, [], hooks, 0, [])
    lines = w.load("6.1", 1) + w.event("h", 1, 1, 0, b"x", {}) + w.report(r)
    p = parse_log("\n".join(lines[:1] + lines[2:]))
    assert p.results() == [r]
    assert p.problems == ["ev: SEQ 1 missing (1 line(s) lost)"]


def test_inconsistent_sums_are_warnings_not_losses():
    log = _frame("hook name=h probe=kprobe symbol=s hits=9 missed=0 dropped=1 disarmed=0 by=cpu keys=1 hist=1",
                 "key hook=h key=0 count=3",
                 "hist hook=h of=arg0 scale=log2 unit=- count=9 sum=5 min=0 max=3 buckets=1",
                 "bucket hook=h low=2 high=4 count=8")
    [r] = parse_log(log).results()
    assert r.complete
    assert r.warnings == ["hook h: keys sum to 3 and dropped=1, but hits=9",
                          "hook h: buckets sum to 8 but count=9"]


def test_two_captures_in_two_forms_count_once():
    text = render_log(EXAMPLE.splitlines(), "bare")
    twice = render_log(text.splitlines(), "kmsg") + render_log(text.splitlines(), "journal-short")
    p = parse_log(twice)
    assert p.results(all=True) == [SYNC] and p.duplicates == 5


def test_the_latest_complete_report_wins():
    w = ModuleWriter("per")
    hooks = lambda n: {"h": HookResult("h", "s", "kprobe", n, 0, 0, False, None, {}, None)}
    rs = [Results("per", "6.1", k, "interval", 100 + k, True, 0, [], hooks(k), 0, []) for k in range(3)]
    lines = w.load("6.1", 1) + w.report(rs[0]) + w.report(rs[1]) + w.report(rs[2])
    cut = lines[:-1]                                    # the last report lost its end
    p = parse_log("\n".join(cut))
    assert p.results() == [rs[1]]
    assert [r.complete for r in p.results(all=True)] == [True, True, False]


def test_json_schema_accepts_what_we_print():
    jsonschema = pytest.importorskip("jsonschema")
    rich = Results("demo", "6.1", 3, "unload", 5, True, 0, [], {
        "a": HookResult("a", "vfs_read", "kretprobe", 2**64 - 1, 0, 1, True, "comm",
                        {b"\xff": 2**64 - 2}, Histogram("latency", "log2", "ns", 3, 30, -1, 20,
                                                         [Bucket(None, 0, 1), Bucket(16, 32, 2)])),
        "b": HookResult("b", "x", "kprobe", 0, 0, 0, False, "arg0", {-(2**63): 0}, None)}, 0, [])
    lost = parse_log("\n".join(EXAMPLE.splitlines()[:-1])).results(all=True)
    doc = results_json([rich] + lost)
    jsonschema.validate(doc, SCHEMA)
    assert json.loads(json.dumps(doc)) == doc
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": 2, "reports": []}, SCHEMA)


# ------------------------------------------------------------------ golden human output

def _demo() -> list[Results]:
    comm = {b"bash": 40, b"my prog": 40, b"\xffx\\": 20, b"cat": 10, b"sh": 10}
    lat = Histogram("latency", "log2", "ns", 7, 7_500_000, 300, 3_000_000,
                    [Bucket(256, 512, 1), Bucket(1024, 2048, 4), Bucket(2097152, 4194304, 2)])
    ret = Histogram("retval", "linear", None, 9, -3, -5, 100,
                    [Bucket(None, -10, 1), Bucket(0, 10, 5), Bucket(20, 30, 2), Bucket(100, None, 1)])
    hooks = {
        "open": HookResult("open", "do_sys_openat2", "kprobe", 125, 2, 5, False, "comm", comm, None),
        "read": HookResult("read", "vfs_read", "kretprobe", 7, 0, 0, True, None, {}, lat),
        "ret": HookResult("ret", "ksys_read", "kretprobe", 9, 0, 0, False, "retval",
                          {-5: 4, 0: 3, 100: 2}, ret),
    }
    full = Results("demo", "6.1.0-56-cloud-amd64", 3, "unload", 2311456789, True, 0, [], hooks, 0, [])
    cut = Results("demo", None, None, None, None, False, 3,
                  ["no begin record (the frame's start is not in the log)"], {}, 1, [])
    return [full, cut]


GOLDEN_TABLE = """\
demo report 3 (unload) kernel 6.1.0-56-cloud-amd64 at 2.311456789s
  HOOK  PROBE      SYMBOL          HITS  MISSED  DROPPED  DISARMED
  open  kprobe     do_sys_openat2   125       2        5  no
  read  kretprobe  vfs_read           7       0        0  yes
  ret   kretprobe  ksys_read          9       0        0  no

  open: hits by comm (top 3 of 5 keys):
    COUNT  COMM
       40  bash
       40  my prog
       20  \\xffx\\x5c
    … 2 more key(s), 20 hit(s)
    + 5 hit(s) dropped: the key table was full

  read: latency (ns), log2; count 7, avg 1071429, min 300, max 3000000, sum 7500000
  [256, 512)             1 |@@@@@@@@@@@@@                                       |
  [512, 1K)              0 |                                                    |
  [1K, 2K)               4 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
  [2K, 4K)               0 |                                                    |
  [4K, 8K)               0 |                                                    |
  [8K, 16K)              0 |                                                    |
  [16K, 32K)             0 |                                                    |
  [32K, 64K)             0 |                                                    |
  [64K, 128K)            0 |                                                    |
  [128K, 256K)           0 |                                                    |
  [256K, 512K)           0 |                                                    |
  [512K, 1M)             0 |                                                    |
  [1M, 2M)               0 |                                                    |
  [2M, 4M)               2 |@@@@@@@@@@@@@@@@@@@@@@@@@@                          |

  ret: hits by retval:
    COUNT  RETVAL
        4  -5
        3  0
        2  100

  ret: retval, linear; count 9, avg 0, min -5, max 100, sum -3
  (..., -10)             1 |@@@@@@@@@@                                          |
  [-10, 0)               0 |                                                    |
  [0, 10)                5 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
  [10, 20)               0 |                                                    |
  [20, 30)               2 |@@@@@@@@@@@@@@@@@@@@                                |
  [30, 40)               0 |                                                    |
  [40, 50)               0 |                                                    |
  [50, 60)               0 |                                                    |
  [60, 70)               0 |                                                    |
  [70, 80)               0 |                                                    |
  [80, 90)               0 |                                                    |
  [90, 100)              0 |                                                    |
  [100, ...)             1 |@@@@@@@@@@                                          |

demo (load #2) report ?
  INCOMPLETE: 3 line(s) lost; no begin record (the frame's start is not in the log)
  (no hook records)
"""


def test_golden_table_and_histograms():
    assert format_results(_demo(), top=3) == GOLDEN_TABLE


def test_golden_top_none_shows_every_key():
    out = format_results(_demo()[:1], top=None)
    assert "(top" not in out and "more key" not in out
    assert "       10  cat\n       10  sh\n" in out          # equal counts: key order


GOLDEN_LOG2 = """\
(..., 0)               3 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
[0]                    1 |@@@@@@@@@@@@@@@@@                                   |
[1]                    1 |@@@@@@@@@@@@@@@@@                                   |
[2, 4)                 0 |                                                    |
[4, 8)                 1 |@@@@@@@@@@@@@@@@@                                   |
...
[4E, 8E)               1 |@@@@@@@@@@@@@@@@@                                   |
"""

GOLDEN_LINEAR_GAP = """\
[0, 1)                 1 |@@@@@@@@@@@@@@@@@@@@@@@@@@                          |
...
[1000, 1001)           2 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
"""


def test_golden_histogram_edges():
    g = Histogram("retval", "log2", None, 7, 0, 0, 0, [Bucket(None, 0, 3), Bucket(0, 1, 1),
                  Bucket(1, 2, 1), Bucket(4, 8, 1), Bucket(1 << 62, 1 << 63, 1)])
    assert format_histogram(g) == GOLDEN_LOG2
    g = Histogram("arg0", "linear", None, 3, 0, 0, 0, [Bucket(0, 1, 1), Bucket(1000, 1001, 2)])
    assert format_histogram(g) == GOLDEN_LINEAR_GAP
    assert format_histogram(Histogram("arg0", "log2", None, 0, 0, 0, 0, [])) == "(no values)\n"


@pytest.mark.parametrize("value,text", [(0, "0"), (1, "1"), (1000, "1000"), (1024, "1K"),
                                        (3 << 20, "3M"), (1536, "1536"), (-2048, "-2K"),
                                        (1 << 40, "1T"), (5 << 30, "5G"), (1 << 62, "4E")])
def test_bpftrace_style_bounds(value, text):
    assert bound_text(value) == text


def test_two_lines_run_together_on_a_console():
    # two CPUs printing at once can glue lines: "…count=3kprobegen/1 m 4 key …"
    lines = _frame(HOOK, "key hook=h key=10 count=3", "key hook=h key=11 count=1").splitlines()
    glued = lines[:3] + [lines[3] + lines[4]] + lines[5:]
    p = parse_log("\n".join(glued))
    [r] = p.results("m", all=True)
    assert not r.complete and r.lost_lines == 1
    assert "1 line(s) missing between SEQ 1 and 5" in r.problems
    assert any("key record at SEQ 3" in x and "not KEY=VALUE" in x for x in r.problems)
    assert p.unrecognised == {"key (malformed)": 1}
