"""An instance's records → report frames, events and load failures; conflicts between frames.

A module prints each report as a frame: ``begin`` (report number, reason, timestamp, and how
many lines the frame holds), the hook/key/hist/bucket records, ``end``. ``cut_py`` walks an
instance's records in SEQ order and cuts them into frames, keeping a frame whose begin or end
is gone, and sets aside the records between frames (``event``, ``error``, ``load``);
``layout_py`` is that after ``instances.group_py``, for every instance of a module (the C
scanner module does the same in one call, ``_logscan.layout``). ``find_frames`` makes the
Frames of an instance from its cuts and reads the records between them. Each frame's framing
is checked here (begin and end agree, no SEQ missing, as many records as announced); its
records are read into Results only when asked (``Frame.results``,
``kprobegen.report.decode``). Frames are kept and marked, never repaired: lines lost outside
every frame, conflicting frames and refused lines among a frame's lines are said as problems.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field
from operator import itemgetter

from kprobegen.report.decode import FRAME_TYPES, frame_results
from kprobegen.report.fields import need, sint, split_fields, uint, unescape
from kprobegen.report.instances import LOAD_RE, LOOKBACK, Instance, Record, group_py, line_span
from kprobegen.report.results import Results

KNOWN_TYPES = frozenset({"load", "error", "begin", "hook", "key", "hist", "bucket", "end",
                         "event"})

# begin and end records as the C template prints them (a value holds no space and no '=')
_BEGIN_RE = re.compile(r"report=([0-9]{1,19}) reason=([^ =]*) ts_ns=([0-9]{1,19}) lines=([0-9]{1,19})")
_END_RE = re.compile(r"report=([0-9]{1,19}) lines=([0-9]{1,19})")


@dataclass
class Event:
    """An ``event`` record (``print:`` in the spec): one rate-limited hit."""

    module: str
    instance: int
    seq: int
    hook: str
    pid: int
    tgid: int
    cpu: int
    comm: bytes
    values: dict[str, int]      # arg0.., retval, latency_ns — whatever the hook printed
    line: int


@dataclass
class LoadFailure:
    """An ``error`` record: registering a hook failed and the module did not load."""

    module: str
    instance: int
    hook: str
    symbol: str
    err: int
    line: int

    def __str__(self) -> str:
        return (f"{self.module} failed to load: hook {self.hook} (symbol {self.symbol}) "
                f"register returned {self.err}")


@dataclass(eq=False)
class Frame:
    """The records of one report as found: complete or not."""

    module: str
    instance: Instance = field(repr=False)
    begin: Record | None
    end: Record | None
    records: list[Record]           # hook / key / hist / bucket records in SEQ order
    first_seq: int
    last_seq: int
    first_line: int
    problems: list[str]             # framing problems (lost lines, begin/end disagreeing)
    lost_lines: int
    report: int | None = None
    reason: str | None = None
    ts_ns: int | None = None
    lines: int | None = None
    _results: Results | None = field(default=None, repr=False)
    _malformed: list[str] | None = field(default=None, repr=False)     # set with _results

    @property
    def complete(self) -> bool:
        return self.results().complete

    def results(self) -> Results:
        """This frame as Results (computed once). Record-level problems found here make the
        Results incomplete too."""
        if self._results is None:
            self._results, self._malformed = frame_results(self)
        return self._results

    @property
    def malformed(self) -> list[str]:
        """The types of this frame's records that could not be read, one entry per record
        (``LogParse.unrecognised`` counts them)."""
        self.results()
        return self._malformed

    def describe(self) -> str:
        r = self.results()
        what = "report ?" if r.report is None else f"report {r.report}"
        if r.reason:
            what += f" ({r.reason})"
        if self.instance.index:
            what += f" of load #{self.instance.index + 1}"
        if r.complete:
            return what + ": complete"
        return f"{what}: {r.lost_lines} line(s) lost; " + "; ".join(r.problems)



# ------------------------------------------------------------------ cutting an instance into frames

# (begin or None, end or None, the frame's own records, records of the instance in its SEQ
# span, the begin's (report, reason, ts_ns, lines) and the end's (report, lines) when they
# read as the C template prints them, else None): a frame as cut, before it is read
Cut = tuple[Record | None, Record | None, list[Record], int, tuple | None, tuple | None]


def layout_py(recs: list[Record], lookback: int = LOOKBACK):
    """A module's records (in log order) → ([(records, first_line, last_line, missing, cuts,
    others), ...], duplicates): its instances (``instances.group_py``: records in SEQ order,
    the log line of the run that started it, its last log line) each cut into frames
    (``cut_py``: SEQ gaps, cuts, the records outside frames).

    The reference of ``_logscan.layout``, which does the same in C."""
    groups, dups = group_py(recs, lookback)
    return [(records, first, last, *cut_py(records)) for records, first, last in groups], dups


def cut_py(ordered: list[Record]) -> tuple[list[tuple[int, int]], list[Cut], list[Record]]:
    """Cut an instance's records (in SEQ order, no SEQ twice) into frames at their begin and
    end records: (the SEQ gaps [lo, hi] of the instance, in order, the start counting: SEQ 0
    is its first line; the frames as cut; the other records: events, load and error records,
    and records of unknown types, which also stay in the body of a frame they lie in). A
    frame's body record with no frame open starts a frame whose begin is gone."""
    seqs = [r[0] for r in ordered]
    missing = []
    if seqs and (seqs[0] != 0 or seqs[-1] + 1 != len(seqs)):
        prev = -1
        for s in seqs:
            if s != prev + 1:
                missing.append((prev + 1, s - 1))
            prev = s
    cuts: list[Cut] = []
    others: list[Record] = []
    in_frame = False
    begin = None
    bstart = 0
    dirty = False               # records of other types lie among the frame's
    for idx, rec in enumerate(ordered):
        typ = rec[1]
        if typ in FRAME_TYPES:
            if not in_frame:            # a frame whose begin is gone
                in_frame = True
                begin = None
                bstart = idx
                dirty = False
            continue
        if typ == "begin":
            if in_frame:
                body = _body(ordered, bstart, idx, dirty)
                cuts.append(_cut_of(begin, None, body, _present(seqs, begin, body, bstart)))
            in_frame = True
            begin = rec
            bstart = idx + 1
            dirty = False
            continue
        if typ == "end":
            if not in_frame:
                begin = None
                bstart = idx
                dirty = False
            cuts.append(_cut_of(begin, rec, _body(ordered, bstart, idx, dirty),
                                idx - bstart + 1 + (begin is not None)))
            in_frame = False
            continue
        if in_frame:
            dirty = True
        others.append(rec)
    if in_frame:
        body = _body(ordered, bstart, len(ordered), dirty)
        cuts.append(_cut_of(begin, None, body, _present(seqs, begin, body, bstart)))
    return missing, cuts, others


def _cut_of(begin: Record | None, end: Record | None, body: list[Record], present: int) -> Cut:
    """A frame as cut, with the values of its begin and end records when they read as the C
    template prints them (``_make_frame`` reads any other form field by field)."""
    bv = ev = None
    if begin is not None:
        m = _BEGIN_RE.fullmatch(begin[2])
        if m is not None:           # as the C template prints it
            report, reason, ts_ns, lines = m.groups()
            bv = (int(report), reason, int(ts_ns), int(lines))
    if end is not None:
        m = _END_RE.fullmatch(end[2])
        if m is not None:
            ev = (int(m.group(1)), int(m.group(2)))
    return begin, end, body, present, bv, ev


def _body(ordered: list[Record], a: int, b: int, dirty: bool) -> list[Record]:
    if not dirty:
        return ordered[a:b]
    # events (and stray load/error lines) may interleave with a frame: they are not its lines
    return [r for r in ordered[a:b] if r[1] in FRAME_TYPES or r[1] not in KNOWN_TYPES]


def _present(seqs: list[int], begin: Record | None, body: list[Record], bstart: int) -> int:
    """Records in the SEQ span of a frame without an end: up to its last record (events
    after that are not in its span)."""
    last = body[-1] if body else begin
    return bisect_right(seqs, last[0]) - bstart + (begin is not None)


def find_frames(inst: Instance, cuts: list[Cut], others: list[Record], load_read: bool,
                unrecognised: dict[str, int], events: list[Event], failures: list[LoadFailure],
                problems: list[str], conflicts: list[str]) -> list[Frame]:
    """The Frames of one instance from its cuts (``cut_py``), in SEQ order. Its events and
    load failures (among ``others``) go to ``events`` and ``failures``; what is wrong outside
    its frames to ``unrecognised`` (name → count) and ``problems``; two of its frames
    claiming the same report number to ``conflicts`` (said on the frames too; the parser
    lists these after the other problems of the module). ``load_read``: its load record was
    read as the C template prints it (``instances.new_instance``)."""
    frames = [_make_frame(inst, *cut) for cut in cuts]
    where = None
    if others:
        second_loads = _read_others(inst, others, load_read, unrecognised, events, failures,
                                    problems)
        if second_loads:
            _second_loads(inst, frames, second_loads, problems)
    if inst.missing:
        where = _lost_outside_frames(inst, frames, inst.missing, problems)
    if len(frames) >= 2:
        _same_report(inst, frames, conflicts, where)
    return frames


def _read_others(inst: Instance, others: list[Record], load_read: bool,
                 unrecognised: dict[str, int], events: list[Event], failures: list[LoadFailure],
                 problems: list[str]) -> list[Record]:
    """Read the records that ``cut_py`` left out of the frames, in SEQ order: events, load
    failures, malformed and unknown records. Returns the load records not at SEQ 0."""
    mod = inst.module
    second_loads: list[Record] = []
    for rec in others:
        typ = rec[1]
        if typ == "event":
            ev = _event(mod, inst.index, rec)
            if isinstance(ev, str):
                unrecognised["event (malformed)"] = unrecognised.get("event (malformed)", 0) + 1
                problems.append(ev)
            else:
                events.append(ev)
        elif typ == "load":
            if rec[0] != 0:
                unrecognised["load (not at SEQ 0)"] = unrecognised.get("load (not at SEQ 0)", 0) + 1
                second_loads.append(rec)
            elif not load_read and LOAD_RE.fullmatch(rec[2]) is None:
                try:
                    need(split_fields(rec[2]), "kernel", "hooks", "protocol")
                except ValueError as e:
                    unrecognised["load (malformed)"] = unrecognised.get("load (malformed)", 0) + 1
                    problems.append(f"{mod}: load record (log line {rec[3]}) is malformed: {e}")
        elif typ == "error":
            try:
                d = split_fields(rec[2])
                hook, symbol, err = need(d, "hook", "symbol", "err")
                failures.append(LoadFailure(mod, inst.index, hook, symbol, sint(err), rec[3]))
            except ValueError as e:
                unrecognised["error (malformed)"] = unrecognised.get("error (malformed)", 0) + 1
                problems.append(f"{mod}: error record (log line {rec[3]}) is malformed: {e}")
        else:
            unrecognised[typ] = unrecognised.get(typ, 0) + 1
    return second_loads


def _event(module: str, index: int, rec: Record) -> Event | str:
    try:
        d = split_fields(rec[2])
        hook, pid, tgid, cpu, comm = need(d, "hook", "pid", "tgid", "cpu", "comm")
        values = {k: sint(v) for k, v in d.items()
                  if k not in ("hook", "pid", "tgid", "cpu", "comm")}
        return Event(module, index, rec[0], hook, sint(pid), sint(tgid), sint(cpu),
                     unescape(comm), values, rec[3])
    except ValueError as e:
        return f"{module}: event record at SEQ {rec[0]} (log line {rec[3]}) is malformed: {e}"


def _where(inst: Instance) -> str:
    return f"{inst.module} (load #{inst.index + 1})" if inst.index else inst.module


def _second_loads(inst: Instance, frames: list[Frame], second_loads: list[Record],
                  problems: list[str]) -> None:
    """One load prints one load record, at SEQ 0: another one is a conflict, not data."""
    at = ", ".join(f"SEQ {r[0]} (log line {r[3]})" for r in second_loads[:5])
    what = (f"{len(second_loads)} more load record(s) in one load ({at}): a module prints "
            f"one, at SEQ 0, so some of these lines were not printed by it")
    problems.append(f"{_where(inst)}: {what}")
    for f in frames:
        f.problems.append(what)


def _lost_outside_frames(inst: Instance, frames: list[Frame], missing: list[tuple[int, int]],
                         problems: list[str]) -> str | None:
    """Lines lost outside every frame (between frames, before the first, after SEQ 0); the
    frames of an instance follow each other in SEQ order without overlapping, and so do the
    gaps. Returns ``_where(inst)`` when it was needed, else None."""
    where = None
    k = -1                                          # the last frame starting before lo
    nf = len(frames)
    for lo, hi in missing:
        while k + 1 < nf and frames[k + 1].first_seq < lo:
            k += 1
        if k >= 0 and hi < frames[k].last_seq:      # inside frame k
            continue
        if where is None:
            where = _where(inst)
        what = f"SEQ {lo}" if lo == hi else f"SEQ {lo}..{hi}"
        if lo == 0:
            problems.append(f"{where}: {what} not in the log ({hi - lo + 1} line(s) from "
                            f"the module's load on are missing: log wrapped or cut)")
        else:
            problems.append(f"{where}: {what} missing ({hi - lo + 1} line(s) lost)")
    return where


# ------------------------------------------------------------------ one frame

_BEGIN_FIELDS = ("report", "reason", "ts_ns", "lines")
_END_FIELDS = ("report", "lines")


def _make_frame(inst: Instance, begin: Record | None, end: Record | None, body: list[Record],
                present: int, bv: tuple | None, ev: tuple | None) -> Frame:
    """A frame from its cut (``Cut``). Reads its report number, reason, timestamp and line
    count from its begin record (else its end record); a begin and an end that disagree are a
    problem. (Once per frame, and some logs hold as many frames as lines: written for speed.)"""
    problems: list[str] = []
    report = reason = ts_ns = lines = None
    if begin is not None:
        if bv is None:              # not as the template prints it: read field by field
            bv = _begin_end(begin, _BEGIN_FIELDS)
            if type(bv) is str:
                problems.append(bv)
                bv = None
        if bv is not None:
            report, reason, ts_ns, lines = bv
        first = begin
    else:
        first = body[0] if body else end
    if end is not None:
        if ev is None:
            ev = _begin_end(end, _END_FIELDS)
        if type(ev) is str:
            problems.append(ev)
        elif bv is None:
            report, lines = ev
        elif ev[0] != report or ev[1] != lines:
            problems.append(f"begin says report={report} lines={lines} but end says "
                            f"report={ev[0]} lines={ev[1]}")
        last = end
    else:
        last = body[-1] if body else begin
    first_seq = first[0]
    last_seq = last[0]
    # lost lines: SEQ gaps inside the frame, and whatever the stated line count misses
    lost = gaps = last_seq - first_seq + 1 - present
    if gaps:
        problems.append(f"{gaps} line(s) missing between SEQ {first_seq} and {last_seq}")
    if begin is None:
        problems.append("no begin record (the frame's start is not in the log)")
        lost += 1
    if end is None:
        problems.append(_NO_END)
        lost += 1
    if lines is not None:
        n = len(body)
        if lines != n:
            if lines > n:
                if not gaps:
                    problems.append(f"lines={lines} but {n} record(s) in the frame")
                if lines - n > gaps:
                    lost += lines - n - gaps
            else:
                problems.append(f"lines={lines} but {n} record(s) in the frame "
                                f"({n - lines} more than stated)")
    first_line = first[3]
    if last[3] < first_line:
        first_line = last[3]
    return Frame(inst.module, inst, begin, end, body, first_seq, last_seq, first_line, problems,
                 lost, report, reason, ts_ns, lines, None, None)


_NO_END = ("no end record (the frame's end is not in the log: cut, lost, or the module was "
           "still reporting)")


def _begin_end(rec: Record, fields: tuple[str, ...]) -> tuple | str:
    """The ``fields`` of a begin or end record read from its fields (``reason`` as text, the
    others as numbers), or what is wrong with it."""
    try:
        vals = need(split_fields(rec[2]), *fields)
        return tuple(v if k == "reason" else uint(v) for k, v in zip(fields, vals))
    except ValueError as e:
        return f"{rec[1]} record at SEQ {rec[0]} (log line {rec[3]}) is malformed: {e}"


# ------------------------------------------------------------------ across frames

def line_list(lines: list[int]) -> str:
    """``log lines 3, 5, 8`` (the first five, and how many more)."""
    shown = ", ".join(map(str, lines[:5]))
    return f"log line{'s' if len(lines) > 1 else ''} {shown}" + (
        f" and {len(lines) - 5} more" if len(lines) > 5 else "")


def flag_conflicts(module: str, insts: list[tuple[int, int, Instance, list[Frame]]],
                   problems: list[str]) -> None:
    """Lines that cannot all be the module's: say so on every frame concerned, never pick one.
    ``insts``: (first log line, last log line, instance, its frames) of each instance of the
    module, in order of first appearance.

    Two loads of the module whose lines interleave in the log (a module is loaded once at a
    time: its next load prints after the last line of the one before). (Two frames of one load
    claiming the same report number: ``find_frames``.)"""
    if len(insts) >= 2:
        _interleaved(module, insts, problems)


def _same_report(inst: Instance, frs: list[Frame], problems: list[str],
                 where: str | None = None) -> None:
    """Two frames of one load claiming the same report number: a module prints each once."""
    if len(frs) == 2:               # the usual case: two different report numbers
        a, b = frs
        rep = a.report
        if rep is None or rep != b.report:
            return
        # (what the general case below says, in one step)
        what = (f"2 frames of one load claim report {rep} (SEQ {a.first_seq}..{a.last_seq}, "
                f"SEQ {b.first_seq}..{b.last_seq}): a module prints each report once, so some "
                f"of these lines were not printed by it")
        problems.append(f"{where or _where(inst)}: {what}")
        a.problems.append(what)
        b.problems.append(what)
        return
    else:
        reports = [f.report for f in frs]
        if len(set(reports)) == len(reports):
            return                  # no report number twice
        by_report: dict[int, list[Frame]] = {}
        for f in frs:
            if f.report is not None:
                by_report.setdefault(f.report, []).append(f)
    for rep, same in by_report.items():
        if len(same) > 1:
            spans = ", ".join([f"SEQ {f.first_seq}..{f.last_seq}" for f in same[:5]])
            what = (f"{len(same)} frames of one load claim report {rep} ({spans}): a module "
                    f"prints each report once, so some of these lines were not printed by it")
            if where is None:
                where = _where(inst)
            problems.append(f"{where}: {what}")
            for f in same:
                f.problems.append(what)


def _interleaved(module: str, insts: list[tuple[int, int, Instance, list[Frame]]],
                 problems: list[str]) -> None:
    spans = sorted(insts, key=itemgetter(0))
    reach = spans[0]                    # the instance reaching furthest down the log so far
    flagged: set[int] = set()
    for cur in spans[1:]:
        if cur[0] < reach[1]:
            a, b = reach[2], cur[2]
            what = (f"the lines of loads #{a.index + 1} (log lines {reach[0]}-{reach[1]}) and "
                    f"#{b.index + 1} (log lines {cur[0]}-{cur[1]}) of {module} interleave: a module "
                    f"is loaded once at a time, so some of these lines were not printed by it")
            problems.append(what)
            for sp in (reach, cur):
                if sp[2].index not in flagged:
                    flagged.add(sp[2].index)
                    for f in sp[3]:
                        f.problems.append(what)
        if cur[1] > reach[1]:
            reach = cur


def name_refused_lines(frames: list[Frame], refused: list[tuple[int, str]]) -> None:
    """A frame with lines missing says which refused lines (``refused``: (log line, why), in
    line order) lie among its lines in the log."""
    at = [ln for ln, _ in refused]
    for f in frames:
        if not f.lost_lines:
            continue
        recs = [r for r in (f.begin, f.end) if r is not None] + f.records[:1] + f.records[-1:]
        lo, hi = line_span(recs)
        i, j = bisect_right(at, lo), bisect_right(at, hi)
        if i < j:
            whys = sorted({why for _, why in refused[i:j]})
            f.problems.append(f"{line_list(at[i:j])} between its lines refused: {'; '.join(whys)}")
