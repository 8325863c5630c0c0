"""A module's records → its instances (loads): runs of rising SEQ, joined or kept apart,
duplicate lines dropped.

A module numbers every line it prints from SEQ 0 at its load, so the records of one load
rise; a log may hold several loads of one module, the same lines twice (two captures
joined), or lines out of order. ``group_py`` cuts a module's records into runs and decides
for each run which load it belongs to; the loads are then cut into frames
(``kprobegen.report.frames``). The C scanner module does both steps in one call
(``_logscan.layout``, used by ``kprobegen.report.parse``); ``group_py`` and
``frames.cut_py`` are its reference (tests/test_logscan.py) and its fallback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from operator import itemgetter
from typing import NamedTuple

from kprobegen.report.fields import kernel_release, split_fields, uint

SEQ = itemgetter(0)
LINE = itemgetter(3)
# the load record as the C template prints it
LOAD_RE = re.compile(r"kernel=([^ =]*) hooks=([0-9]{1,19}) protocol=([0-9]{1,19})")


class Record(NamedTuple):
    """One protocol line: its SEQ, record type, the raw ``key=value`` text and its log line
    (1-based). The parser keeps records as plain tuples in this order (``Frame.records``,
    ``Frame.begin``, ``Instance.records``); ``Record._make(t)`` names the fields."""

    seq: int
    type: str
    fields: str
    line: int


@dataclass
class Instance:
    """One load of a module: the records between its SEQ 0 and its unload, as seen."""

    module: str
    index: int                      # 0, 1, … in order of first appearance in the log
    records: dict[int, Record] = field(repr=False)  # SEQ → record (duplicates dropped)
    first_line: int
    kernel: str | None = None
    hooks: int | None = None
    missing: list[tuple[int, int]] = field(default_factory=list)  # SEQ gaps [lo, hi]

    @property
    def lost_lines(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.missing)


def _instance_records(self) -> dict[int, Record]:
    recs = self._records
    if type(recs) is list:          # as grouped: the records in SEQ order
        recs = self._records = dict(zip(map(SEQ, recs), recs))
    return recs


def _set_instance_records(self, recs) -> None:
    self._records = recs


# after @dataclass: its __init__, __eq__ and asdict() go through the property. The parser
# hands it the instance's records as a list in SEQ order (no SEQ twice); the dict is built
# from that list only when someone reads it.
Instance.records = property(_instance_records, _set_instance_records,
                            doc="SEQ → record (duplicates dropped), in SEQ order")


def new_instance(module: str, index: int, records: list[Record], first_line: int,
                 missing: list[tuple[int, int]]) -> tuple[Instance, bool]:
    """An instance from its records (a list in SEQ order, no SEQ twice, not empty), with the
    kernel and the number of hooks read from its load record: (the instance, whether its load
    record is at SEQ 0 and reads as the C template prints it).

    Once per load, and a log may hold as many loads as lines: the Instance is made without
    its dataclass ``__init__`` (the same attributes, in the same order)."""
    kernel = hooks = None
    read = False
    load = records[0]
    if load[0] == 0 and load[1] == "load":
        m = LOAD_RE.fullmatch(load[2])
        if m is not None:       # as the C template prints it
            kernel, hooks = m.group(1, 2)
            if "\\" in kernel:
                kernel = kernel_release(kernel)
            hooks = int(hooks)
            read = True
        else:
            try:
                d = split_fields(load[2])
                kernel = kernel_release(d["kernel"]) if "kernel" in d else None
                hooks = uint(d["hooks"]) if "hooks" in d else None
            except ValueError:
                pass
    inst = _new_object(Instance)
    inst.module = module
    inst.index = index
    inst._records = records
    inst.first_line = first_line
    inst.kernel = kernel
    inst.hooks = hooks
    inst.missing = missing
    return inst, read


_new_object = object.__new__


def line_span(recs) -> tuple[int, int]:
    """The first and the last log line of some records."""
    lines = list(map(LINE, recs))
    return min(lines), max(lines)


def _split_runs(recs):
    """Runs: stretches of a module's records in log order whose SEQ rises; SEQ 0 starts one."""
    if not recs:
        return []               # a module whose every line had a bad SEQ
    seqs = list(map(SEQ, recs))
    if seqs == list(range(seqs[0], seqs[0] + len(seqs))) or (
            seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            and seqs.count(0) <= (seqs[0] == 0)):
        return [recs]           # the usual cases, checked at C speed: one clean run
    runs = []
    cur = []
    last = -1
    for r in recs:
        s = r[0]
        if s <= last or s == 0:
            if cur:
                runs.append(cur)
            cur = []
        cur.append(r)
        last = s
    if cur:
        runs.append(cur)
    return runs


def _compatible(inst: dict, run) -> tuple[bool, int]:
    """(no SEQ of the run holds other text in the instance, how many SEQs they share)."""
    shared = 0
    for s, typ, fields, _ in run:
        other = inst.get(s)
        if other is not None:
            if other[1] != typ or (other[2] != fields and other[2].rstrip() != fields.rstrip()):
                return False, shared
            shared += 1
    return True, shared


# How many instances a run is tried against, besides those that share a line with it: the
# latest ones. A bound, so that a log of many loads stays linear (trying every run against
# every earlier load made an adversarial log of many different `load` lines quadratic:
# bench/README.md, parse_bench.py).
LOOKBACK = 16


def group_py(recs, lookback: int = LOOKBACK) -> tuple[list[tuple[list[Record], int, int]], int]:
    """Group a module's records (in log order) into instances (loads) and drop duplicate
    lines: ([(the instance's records in SEQ order, the log line of the run that started it,
    its last log line), ...] in order of first appearance, how many duplicates were dropped).

    A run joins an earlier instance when none of its SEQs holds different text there:
    - a run that starts at SEQ 0 (a `load`, or an `error` of a failed load) is a new
      instance unless it shares a record beyond SEQ 0 with an instance (a `begin` carries
      a nanosecond timestamp), or all of it is already in one, or all of one is in it
      (the same lines captured twice);
    - any other run continues the latest instance it agrees with (lines that arrived out
      of SEQ order, or a second capture of the same lines); if it agrees with none, it is
      an instance whose first lines are gone. (When that is not the latest instance, the
      two interleave in the log: a conflict, said by ``frames.flag_conflicts``.)
    Records already present (same SEQ, same text) are duplicates and are dropped.

    The instances tried for a run are those holding one of its lines (an index of every
    line: the latest instance holding it) and, for a run not from SEQ 0, the latest
    ``lookback`` ones; newest first, at most ``2 * lookback`` in all: linear in the log
    whatever it holds.

    The reference of ``_logscan.layout``'s grouping (which does this in C).
    """
    runs = _split_runs(recs)
    if len(runs) == 1:                  # the usual case: one load, seen once
        run = runs[0]
        return [(run, run[0][3], max(map(LINE, run)))], 0
    insts: list[dict[int, Record]] = []
    first_lines: list[int] = []
    dups = 0
    held: dict[tuple, int] = {}          # (SEQ, type, text) → the latest instance holding it

    def candidates(run) -> list[int]:
        found = {held.get((r[0], r[1], r[2].rstrip()), -1) for r in run}
        found.discard(-1)
        if run[0][0] != 0:
            # a run from SEQ 0 joins only an instance it shares a line with (see below);
            # any other run may continue one it shares nothing with
            n = len(insts)
            found.update(range(max(n - lookback, 0), n))
        return sorted(found, reverse=True)[:2 * lookback]

    def hold(idx: int, run) -> None:
        for r in run:
            held[(r[0], r[1], r[2].rstrip())] = idx

    for run in runs:
        target = None
        starts_at_zero = run[0][0] == 0
        for idx in (candidates(run) if insts else ()):
            ok, shared = _compatible(insts[idx], run)
            if not ok:
                continue
            if starts_at_zero:
                if shared == len(run) or shared == len(insts[idx]) or shared > 1 \
                        or (shared == 1 and 0 not in insts[idx]):
                    target = idx
                    break
                continue
            # the latest instance it agrees with, sharing a line or not: if that is not the
            # last one, their lines interleave in the log and frames.flag_conflicts says so
            target = idx
            break
        if target is None:
            insts.append(dict(zip(map(SEQ, run), run)))
            first_lines.append(run[0][3])
            hold(len(insts) - 1, run)
            continue
        inst = insts[target]
        for r in run:
            if r[0] in inst:
                dups += 1
            else:
                inst[r[0]] = r
        hold(target, run)
    out = []
    for recmap, first_line in zip(insts, first_lines):
        ordered = [recmap[s] for s in sorted(recmap)]
        out.append((ordered, first_line, max(map(LINE, ordered))))
    return out, dups
