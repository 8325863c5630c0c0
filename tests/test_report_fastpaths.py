"""The parser's fast paths (begin/end records as the C template prints them, the line scan)
give exactly what the general path gives, and hand everything else to it."""

from __future__ import annotations

from kprobegen.report import parse_log
from kprobegen.report.results import HookResult, Results

LOG = """\
[    5.101000] kprobegen/1 m 0 load kernel=6.1 hooks=1 protocol=1
[    7.311000] kprobegen/1 m 1 begin {begin}
[    7.311001] kprobegen/1 m 2 hook name=s probe=kprobe symbol=ksys_sync hits=3 missed=0 dropped=0 disarmed=0 by=comm keys=1 hist=0
[    7.311002] kprobegen/1 m 3 key hook=s key=sync count=3
[    7.311003] kprobegen/1 m 4 end {end}
"""

GOOD = Results("m", "6.1", 7, "unload", 2311456789, True, 0, [],
               {"s": HookResult("s", "ksys_sync", "kprobe", 3, 0, 0, False, "comm",
                                {b"sync": 3}, None)}, 0, [])


def parse(begin: str, end: str):
    return parse_log(LOG.format(begin=begin, end=end)).results("m", all=True)


def test_template_form_and_other_field_orders_agree():
    canonical = "report=7 reason=unload ts_ns=2311456789 lines=2"
    assert parse(canonical, "report=7 lines=2") == [GOOD]
    # another order, an extra field, leading zeros and trailing blanks: the general path
    assert parse("lines=2 ts_ns=2311456789 reason=unload report=7", "lines=2 report=7") == [GOOD]
    assert parse(canonical + " extra=1", "report=7 lines=2 extra=x") == [GOOD]
    assert parse("report=007 reason=unload ts_ns=2311456789 lines=02", "report=7 lines=2 \t") == [GOOD]


def test_begin_the_fast_path_rejects_is_still_malformed():
    (r,) = parse("report=7 reason=a=b ts_ns=2311456789 lines=2", "report=7 lines=2")
    assert (r.complete, r.report, r.reason, r.lost_lines) == (False, 7, None, 0)
    assert r.problems == ["begin record at SEQ 1 (log line 2) is malformed: fields are not "
                          "KEY=VALUE separated by single spaces"]
    (r,) = parse("report=7 reason=unload ts_ns=2311456789 lines=2", "report=7 lines=٢")
    assert (r.complete, r.report, r.lost_lines) == (False, 7, 0)
    assert r.problems == ["end record at SEQ 4 (log line 5) is malformed: '٢' is not an "
                          "unsigned decimal"]


def test_protocol_lines_count_every_prefixed_line_once():
    log = LOG.format(begin="report=7 reason=unload ts_ns=2311456789 lines=2",
                     end="report=7 lines=2") + "\n".join([
        "[ 9.0] kprobegen/3 m 5 begin report=1",            # another version
        "[ 9.0] kprobegen/1 m",                             # no SEQ or type
        "[ 9.0] kprobegen/1 9bad 5 begin report=1",         # bad module name
        " SUBSYSTEM=kprobegen/1 m 5 begin report=1",        # a kmsg continuation line
        "kprobegen/1 m 5 event hook=s pid=1 tgid=1 cpu=0 comm=a",   # at the line start
        "",
        "[ 9.0] kprobegen/x not ours",
    ]) + "\n"
    p = parse_log(log)
    assert (p.lines, p.protocol_lines) == (12, 9)
    assert p.unrecognised == {"kprobegen/3 (unsupported protocol version)": 1,
                              "(no module, SEQ or type)": 1, "(bad module name or SEQ)": 1}
    assert [(e.seq, e.hook, e.comm, e.line) for e in p.events] == [(5, "s", b"a", 10)]
    assert p.results() == [GOOD]


def test_a_module_whose_only_line_has_a_bad_seq():
    # this used to raise IndexError: the module had a (valid) name but no record
    p = parse_log("[ 1.0] kprobegen/1 m five begin report=1\n")
    assert p.unrecognised == {"(bad module name or SEQ)": 1}
    assert (p.protocol_lines, p.instances, p.frames) == (1, [], [])


HIST_LOG = """\
kprobegen/1 h 0 load kernel=6.1 hooks=1 protocol=1
kprobegen/1 h 1 begin report=0 reason=unload ts_ns=5 lines=3
kprobegen/1 h 2 hook {hook}
kprobegen/1 h 3 hist {hist}
kprobegen/1 h 4 bucket hook=r low=256 high=512 count=4
kprobegen/1 h 5 end report=0 lines=3
"""
HOOK = "name=r probe=kretprobe symbol=vfs_read hits=4 missed=1 dropped=0 disarmed=1 by=- keys=0 hist=1"
HIST = "hook=r of=latency scale=log2 unit=ns count=4 sum=1200 min=300 max=301 buckets=1"


def test_hook_and_hist_records_in_any_field_order_agree():
    def one(hook, hist):
        (r,) = parse_log(HIST_LOG.format(hook=hook, hist=hist)).results("h", all=True)
        return r
    canonical = one(HOOK, HIST)
    h = canonical.hooks["r"]
    assert canonical.complete and (h.hits, h.missed, h.disarmed, h.by_kind) == (4, 1, True, None)
    assert (h.histogram.count, h.histogram.sum, h.histogram.unit, len(h.histogram.buckets)) == (
        4, 1200, "ns", 1)
    assert one(" ".join(reversed(HOOK.split())), " ".join(reversed(HIST.split()))) == canonical
    assert one(HOOK + "\t", HIST + " \t") == canonical
    bad = one(HOOK.replace("hits=4", "hits=4=4"), HIST)
    assert not bad.complete and bad.problems == [
        "hook record at SEQ 2 (log line 3): fields are not KEY=VALUE separated by single spaces",
        "2 record(s) of that hook not read"]


def test_a_cut_frame_ending_in_an_event_counts_its_lost_end():
    # found by test_report_property: an event after the last record of a frame whose end is
    # gone was counted inside the frame's span ("-1 line(s) missing", lost_lines=0)
    log = "\n".join([
        "kprobegen/1 c 0 load kernel=6.1 hooks=1 protocol=1",
        "kprobegen/1 c 1 begin report=0 reason=unload ts_ns=2 lines=2",
        "kprobegen/1 c 2 event hook=h pid=0 tgid=0 cpu=0 comm=",
        "kprobegen/1 c 3 hook name=h probe=kprobe symbol=s hits=1 missed=0 dropped=0 "
        "disarmed=0 by=pid keys=1 hist=0",
        "kprobegen/1 c 4 key hook=h key=0 count=1",
        "kprobegen/1 c 5 event hook=h pid=0 tgid=0 cpu=0 comm=",
    ])
    (r,) = parse_log(log).results("c", all=True)
    assert (r.complete, r.lost_lines) == (False, 1)
    assert r.problems == ["no end record (the frame's end is not in the log: cut, lost, or "
                          "the module was still reporting)"]
