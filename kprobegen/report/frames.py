"""An instance's records → report frames, events and load failures; conflicts between frames.

A module prints each report as a frame: ``begin`` (report number, reason, timestamp, and how
many lines the frame holds), the hook/key/hist/bucket records, ``end``. ``cut_py`` walks an
instance's records in SEQ order and cuts them into frames, keeping a frame whose begin or end
is gone, and sets aside the records between frames (``event``, ``error``, ``load``). As it
cuts, it checks each frame's framing (``frame_row``: begin and end agree, no SEQ missing, as
many records as announced), which gives the frame as a tuple, its *row*, and then the frames
of the instance against each other (``load_conflicts``: a second load record, two frames
claiming one report number). ``layout_py`` is that after ``instances.group_py``, for every
instance of a module. The C scanner module does the same in one call (``_logscan.layout``),
and hands each frame whose begin or end it does not read as the C template prints them to
``frame_of``.

``find_frames`` reads the records between the frames (events, load failures) and makes an
instance's Frames, each a light view of its row; ``flag_conflicts`` says which loads'
lines interleave. A frame's records are read into Results only when asked (``Frame.results``,
``kprobegen.report.decode``). Frames are kept and marked, never repaired: lines lost outside
every frame, conflicting frames and refused lines among a frame's lines are said as problems.

Some logs hold as many frames (and loads) as lines (bench/parse_bench.py's adversarial logs):
the work per frame is done in C where it is built, a Frame is one small object, and the texts
that only ``LogParse.problems`` shows are made when that is read (``Later``).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from operator import itemgetter

from kprobegen.report.decode import FRAME_TYPES, decode_frames
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


# A frame's row: its values in this order, as ``frame_row`` (and ``_logscan.layout``) makes
# them. The problems list is the frame's own: checks across frames append to it.
ROW_FIELDS = ("begin", "end", "records", "first_seq", "last_seq", "first_line", "problems",
              "lost_lines", "report", "reason", "ts_ns", "lines")
(F_BEGIN, F_END, F_RECORDS, F_FIRST_SEQ, F_LAST_SEQ, F_FIRST_LINE, F_PROBLEMS, F_LOST,
 F_REPORT, F_REASON, F_TS_NS, F_LINES) = range(len(ROW_FIELDS))
Row = tuple[Record | None, Record | None, list[Record], int, int, int, list[str], int,
            int | None, str | None, int | None, int | None]


def _row_field(index: int, doc: str) -> property:
    return property(lambda self: self._row[index], doc=doc)


class Frame:
    """The records of one report as found: complete or not.

    A view of the frame's row (``ROW_FIELDS``, made when the instance was cut), its module and
    its instance: a log may hold as many frames as lines, and this costs one small object per
    frame. The attributes are read-only; ``problems`` is a list that the checks across frames
    append to. Two Frames are equal only when they are the same object."""

    __slots__ = ("module", "instance", "_row", "_results", "_malformed")

    def __init__(self, module: str, instance: Instance, row: Row):
        self.module = module
        self.instance = instance
        self._row = row
        self._results: Results | None = None        # set by decode.decode_frames
        self._malformed: tuple[str, ...] | list[str] | None = None     # set with _results

    begin = _row_field(F_BEGIN, "the begin record, or None when it is not in the log")
    end = _row_field(F_END, "the end record, or None when it is not in the log")
    records = _row_field(F_RECORDS, "hook / key / hist / bucket records in SEQ order")
    first_seq = _row_field(F_FIRST_SEQ, "the SEQ of the frame's first record")
    last_seq = _row_field(F_LAST_SEQ, "the SEQ of the frame's last record")
    first_line = _row_field(F_FIRST_LINE, "the first log line of its begin and its last record")
    problems = _row_field(F_PROBLEMS, "framing problems (lost lines, begin/end disagreeing), "
                                      "conflicts with other frames")
    lost_lines = _row_field(F_LOST, "lines known to be missing from the frame (a lower bound)")
    report = _row_field(F_REPORT, "the report number (begin, else end), or None")
    reason = _row_field(F_REASON, "interval / unload (begin), or None")
    ts_ns = _row_field(F_TS_NS, "ktime at begin, or None")
    lines = _row_field(F_LINES, "the frame's record count as stated (begin, else end), or None")

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={value!r}" for name, value in zip(ROW_FIELDS, self._row))
        return f"Frame(module={self.module!r}, {values})"

    @property
    def complete(self) -> bool:
        return self.results().complete

    def results(self) -> Results:
        """This frame as Results (computed once). Record-level problems found here make the
        Results incomplete too."""
        if self._results is None:
            decode_frames((self,))
        return self._results

    @property
    def malformed(self) -> list[str]:
        """The types of this frame's records that could not be read, one entry per record
        (``LogParse.unrecognised`` counts them)."""
        self.results()
        return list(self._malformed)

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

def layout_py(recs: list[Record], lookback: int = LOOKBACK):
    """A module's records (in log order) → its instances, one list per item, one entry per
    instance in order of first appearance: (records in SEQ order, the log line of the run that
    started it, its last log line (``instances.group_py``), its SEQ gaps, its frames' rows, its
    records outside frames, the texts of its frames claiming one report number, its SEQ gaps
    outside every frame (``cut_py``)), then how many duplicates were dropped and whether the
    lines of two instances interleave in the log (``loads_interleave``).

    The reference of ``_logscan.layout``, which does the same in C."""
    groups, dups = group_py(recs, lookback)
    columns: tuple[list, ...] = ([], [], [], [], [], [], [], [])
    for records, first, last in groups:
        for column, item in zip(columns, (records, first, last, *cut_py(records))):
            column.append(item)
    return (*columns, dups, loads_interleave(columns[1], columns[2]))


def loads_interleave(first_lines: list[int], last_lines: list[int]) -> bool:
    """Whether an instance starts (its first log line) before the last log line of one that
    starts before it: what ``flag_conflicts`` looks for."""
    reach = None                # the greatest last line of the instances before
    for first, last in sorted(zip(first_lines, last_lines), key=itemgetter(0)):
        if reach is not None and first < reach:
            return True
        if reach is None or last > reach:
            reach = last
    return False


def cut_py(ordered: list[Record]) -> tuple[list[tuple[int, int]], list[Row], list[Record] | tuple,
                                           tuple[str, ...], tuple[tuple[int, int], ...]]:
    """Cut an instance's records (in SEQ order, no SEQ twice) into frames at their begin and
    end records: (the SEQ gaps [lo, hi] of the instance, in order, the start counting: SEQ 0
    is its first line; the frames' rows (``frame_row``, then ``load_conflicts``); the other
    records: events, load and error records, and records of unknown types, which also stay in
    the body of a frame they lie in, ``()`` when there are none; the texts of its frames
    claiming one report number (``load_conflicts``); its gaps outside every frame
    (``gaps_outside``)). A frame's body record with no frame open starts a frame whose begin
    is gone."""
    seqs = [r[0] for r in ordered]
    missing = []
    if seqs and (seqs[0] != 0 or seqs[-1] + 1 != len(seqs)):
        prev = -1
        for s in seqs:
            if s != prev + 1:
                missing.append((prev + 1, s - 1))
            prev = s
    rows: list[Row] = []
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
                rows.append(frame_of(begin, None, body, _present(seqs, begin, body, bstart)))
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
            rows.append(frame_of(begin, rec, _body(ordered, bstart, idx, dirty),
                                 idx - bstart + 1 + (begin is not None)))
            in_frame = False
            continue
        if in_frame:
            dirty = True
        others.append(rec)
    if in_frame:
        body = _body(ordered, bstart, len(ordered), dirty)
        rows.append(frame_of(begin, None, body, _present(seqs, begin, body, bstart)))
    return missing, rows, others or (), load_conflicts(rows, others), gaps_outside(missing, rows)


def frame_of(begin: Record | None, end: Record | None, body: list[Record], present: int) -> Row:
    """A frame as cut (``present``: the instance's records in its SEQ span) → its row, its
    begin and end records read as the C template prints them, else field by field.
    ``_logscan.layout`` calls this for the frames it does not read itself."""
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
    return frame_row(begin, end, body, present, bv, ev)


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


_BEGIN_FIELDS = ("report", "reason", "ts_ns", "lines")
_END_FIELDS = ("report", "lines")
NO_BEGIN = "no begin record (the frame's start is not in the log)"
NO_END = ("no end record (the frame's end is not in the log: cut, lost, or the module was "
          "still reporting)")


def frame_row(begin: Record | None, end: Record | None, body: list[Record], present: int,
              bv: tuple | None, ev: tuple | None) -> Row:
    """A frame's row (``ROW_FIELDS``) from its cut, its framing checked. ``bv`` and ``ev``: the
    values of its begin record (report, reason, ts_ns, lines) and of its end record (report,
    lines) when they read as the C template prints them, else None (they are read field by
    field here). Reads its report number, reason, timestamp and line count from its begin
    record (else its end record); a begin and an end that disagree are a problem.
    ``_logscan.layout`` does the same in C for frames whose begin and end read as the template
    prints them."""
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
        problems.append(NO_BEGIN)
        lost += 1
    if end is None:
        problems.append(NO_END)
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
    return (begin, end, body, first_seq, last_seq, first_line, problems, lost, report, reason,
            ts_ns, lines)


def _begin_end(rec: Record, fields: tuple[str, ...]) -> tuple | str:
    """The ``fields`` of a begin or end record read from its fields (``reason`` as text, the
    others as numbers), or what is wrong with it."""
    try:
        vals = need(split_fields(rec[2]), *fields)
        return tuple(v if k == "reason" else uint(v) for k, v in zip(fields, vals))
    except ValueError as e:
        return f"{rec[1]} record at SEQ {rec[0]} (log line {rec[3]}) is malformed: {e}"


def load_conflicts(rows: list[Row], others: list[Record]) -> tuple[str, ...]:
    """What the frames of one load (``rows``, in SEQ order) cannot all be, said on each frame
    concerned (after its framing problems): more load records than the one at SEQ 0 among the
    load's records outside frames (``others``); two frames claiming one report number (a
    module prints each report once). Returns the texts of the latter, one per report number
    claimed twice (the parser says them of the load too, after the module's other problems).
    ``_logscan.layout`` does the same in C."""
    if others and rows:
        second_loads = [r for r in others if r[1] == "load" and r[0] != 0]
        if second_loads:
            what = second_loads_text(second_loads)
            for row in rows:
                row[F_PROBLEMS].append(what)
    if len(rows) < 2:
        return ()
    reports = [row[F_REPORT] for row in rows]
    if len(set(reports)) == len(reports):
        return ()                   # no report number twice (the usual case)
    by_report: dict[int, list[Row]] = {}
    for row in rows:
        if row[F_REPORT] is not None:
            by_report.setdefault(row[F_REPORT], []).append(row)
    claims = []
    for rep, same in by_report.items():
        if len(same) > 1:
            spans = ", ".join([f"SEQ {row[F_FIRST_SEQ]}..{row[F_LAST_SEQ]}" for row in same[:5]])
            what = (f"{len(same)} frames of one load claim report {rep} ({spans}): a module "
                    f"prints each report once, so some of these lines were not printed by it")
            claims.append(what)
            for row in same:
                row[F_PROBLEMS].append(what)
    return tuple(claims)


def gaps_outside(missing: list[tuple[int, int]], rows: list[Row]) -> tuple[tuple[int, int], ...]:
    """The SEQ gaps of an instance (``missing``) outside every frame of it (``rows``): lines
    lost between frames, before the first, after SEQ 0 (a gap inside a frame is that frame's
    problem). The frames of an instance follow each other in SEQ order without overlapping,
    and so do its gaps."""
    out = []
    k = -1                                          # the last frame starting before lo
    nf = len(rows)
    for gap in missing:
        lo, hi = gap
        while k + 1 < nf and rows[k + 1][F_FIRST_SEQ] < lo:
            k += 1
        if k < 0 or hi >= rows[k][F_LAST_SEQ]:      # not inside frame k
            out.append(gap)
    return tuple(out)


def second_loads_text(second_loads: list[Record]) -> str:
    """What load records not at SEQ 0 of one load (``second_loads``, in SEQ order) mean."""
    at = ", ".join(f"SEQ {r[0]} (log line {r[3]})" for r in second_loads[:5])
    return (f"{len(second_loads)} more load record(s) in one load ({at}): a module prints "
            f"one, at SEQ 0, so some of these lines were not printed by it")


# ------------------------------------------------------------------ problems said later

# A problem of the log can be collected as (function, *arguments), the function giving its
# texts: the texts that only LogParse.problems shows, where a log may hold one per load (lines
# lost between frames, the frames of a load claiming one report), are made when that is first
# read (``said``), in their place among the others (``loads_said``). A Frame's problems are
# always texts.
Later = tuple


def said(problems: list[str | Later]) -> list[str]:
    """The texts of the problems as collected: texts, and problems said later, in order."""
    out: list[str] = []
    for p in problems:
        if type(p) is str:
            out.append(p)
        else:
            out += p[0](*p[1:])
    return out


def loads_said(insts: list[Instance], outside: list[tuple[tuple[int, int], ...]],
               claims: list[tuple[str, ...]], early: dict[int, list[str]]) -> list[str]:
    """The problems of a module's loads (``insts``; ``outside``: the SEQ gaps of each outside
    its frames, ``gaps_outside``; ``claims``: the report numbers claimed twice in each,
    ``load_conflicts``), said later (``Later``): for each load, what reading its records
    outside frames found (``early``: by load index, ``find_frames``) and the lines it lost
    outside every frame; then, after those of every load, the report numbers claimed twice."""
    out: list[str] = []
    claimed: list[str] = []
    for inst, gaps, whats in zip(insts, outside, claims):
        if early and inst.index in early:
            out += early[inst.index]
        if gaps or whats:
            where = _where(inst)
            for lo, hi in gaps:
                seqs = f"SEQ {lo}" if lo == hi else f"SEQ {lo}..{hi}"
                if lo == 0:
                    out.append(f"{where}: {seqs} not in the log ({hi - lo + 1} line(s) from the "
                               f"module's load on are missing: log wrapped or cut)")
                else:
                    out.append(f"{where}: {seqs} missing ({hi - lo + 1} line(s) lost)")
            claimed += [f"{where}: {what}" for what in whats]
    return out + claimed


# ------------------------------------------------------------------ one instance's frames

def find_frames(inst: Instance, rows: list[Row], others: list[Record], load_read: bool,
                unrecognised: dict[str, int], events: list[Event], failures: list[LoadFailure],
                early: dict[int, list[str]]) -> list[Frame]:
    """The Frames of one instance from its rows (``cut_py``), in SEQ order. Its events and
    load failures (among ``others``) go to ``events`` and ``failures``; what is wrong with
    its records outside frames to ``unrecognised`` (name → count) and to ``early`` (texts by
    load index, said later with the load's other problems: ``loads_said``). ``load_read``:
    its load record was read as the C template prints it (``instances.new_instance``)."""
    if others:
        texts: list[str] = []
        second_loads = _read_others(inst, others, load_read, unrecognised, events, failures,
                                    texts)
        if second_loads:            # (said on the frames already: load_conflicts)
            texts.append(f"{_where(inst)}: {second_loads_text(second_loads)}")
        if texts:
            early[inst.index] = texts
    module = inst.module
    return [Frame(module, inst, row) for row in rows]


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


# ------------------------------------------------------------------ across frames

def line_list(lines: list[int]) -> str:
    """``log lines 3, 5, 8`` (the first five, and how many more)."""
    shown = ", ".join(map(str, lines[:5]))
    return f"log line{'s' if len(lines) > 1 else ''} {shown}" + (
        f" and {len(lines) - 5} more" if len(lines) > 5 else "")


def flag_conflicts(module: str, first_lines: list[int], last_lines: list[int],
                   insts: list[Instance], frames: list[Frame], problems: list[str | Later]) -> None:
    """Lines that cannot all be the module's: say so on every frame concerned, never pick one.
    ``first_lines``, ``last_lines``: the first and last log line of each instance of the module,
    ``insts``: the instances, in order of first appearance; ``frames``: their frames. (Called
    when ``loads_interleave``: layout tells.)

    Two loads of the module whose lines interleave in the log (a module is loaded once at a
    time: its next load prints after the last line of the one before). (Two frames of one load
    claiming the same report number: ``find_frames``.)"""
    of: dict[int, list[Frame]] = {}
    for f in frames:
        of.setdefault(f.instance.index, []).append(f)
    _interleaved(module, [(first, last, inst, of.get(inst.index, []))
                          for first, last, inst in zip(first_lines, last_lines, insts)], problems)


def _interleaved(module: str, insts: list[tuple[int, int, Instance, list[Frame]]],
                 problems: list[str | Later]) -> None:
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
