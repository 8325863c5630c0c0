"""A module's records → its instances (loads): runs of rising SEQ, joined or kept apart,
duplicate lines dropped.

A module numbers every line it prints from SEQ 0 at its load, so the records of one load
rise; a log may hold several loads of one module, the same lines twice (two captures
joined), or lines out of order. ``find_instances`` cuts a module's records into runs and
decides for each run which load it belongs to; the loads are then cut into frames
(``kprobegen.report.frames``).
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


class _Ordered(list):
    """An instance's records in SEQ order, no SEQ twice (one rising run of lines): the
    ``Instance.records`` dict is built from it only when someone reads it."""

    __slots__ = ()


def _instance_records(self) -> dict[int, Record]:
    recs = self.__dict__["_records"]
    if type(recs) is _Ordered:
        recs = self.__dict__["_records"] = dict(zip(map(SEQ, recs), recs))
    return recs


def _set_instance_records(self, recs) -> None:
    self.__dict__["_records"] = recs


# after @dataclass: its __init__, __eq__ and asdict() go through the property
Instance.records = property(_instance_records, _set_instance_records,
                            doc="SEQ → record (duplicates dropped)")


def ordered_records(inst: Instance) -> tuple[list[Record], list[int]]:
    """The records of an instance in SEQ order, and their SEQs (without building the
    ``records`` dict of an instance seen as one run)."""
    recmap = inst.__dict__["_records"]
    if type(recmap) is _Ordered:
        return recmap, list(map(SEQ, recmap))
    seqs = sorted(recmap)
    return list(map(recmap.__getitem__, seqs)), seqs


def line_span(recs) -> tuple[int, int]:
    """The first and the last log line of some records."""
    lines = list(map(LINE, recs))
    return min(lines), max(lines)


def instance_span(inst: Instance) -> tuple[int, int]:
    """The first and the last log line of an instance's records."""
    recs = inst.__dict__["_records"]
    if type(recs) is _Ordered:
        return recs[0][3], recs[-1][3]
    if len(recs) == 1:
        line = next(iter(recs.values()))[3]
        return line, line
    return line_span(recs.values())


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


def find_instances(module: str, recs) -> tuple[list[Instance], int]:
    """Group a module's records into instances (loads) and drop duplicate lines: (the
    instances in order of first appearance, how many duplicates were dropped).

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
    ``LOOKBACK`` ones; newest first, at most ``2 * LOOKBACK`` in all: linear in the log
    whatever it holds.
    """
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
            found.update(range(max(n - LOOKBACK, 0), n))
        return sorted(found, reverse=True)[:2 * LOOKBACK]

    def hold(idx: int, run) -> None:
        for r in run:
            held[(r[0], r[1], r[2].rstrip())] = idx

    runs = _split_runs(recs)
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
            if not insts and len(runs) == 1:     # the usual case: one load, seen once
                insts.append(_Ordered(run))
                first_lines.append(run[0][3])
                break
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
    for idx, recmap in enumerate(insts):
        inst = Instance(module, idx, recmap, first_lines[idx])
        _read_load(inst, recmap)
        out.append(inst)
    return out, dups


def _read_load(inst: Instance, recmap) -> None:
    """The kernel and the number of hooks from the instance's load record (at SEQ 0), when
    it is there; fields that cannot be read stay None (the frames say what is wrong)."""
    if type(recmap) is _Ordered:
        load = recmap[0] if recmap[0][0] == 0 else None
    else:
        load = recmap.get(0)
    if load is None or load[1] != "load":
        return
    m = LOAD_RE.fullmatch(load[2])
    if m is not None:       # as the C template prints it
        inst.kernel = kernel_release(m.group(1))
        inst.hooks = int(m.group(2))
        return
    try:
        d = split_fields(load[2])
        inst.kernel = kernel_release(d["kernel"]) if "kernel" in d else None
        inst.hooks = uint(d["hooks"]) if "hooks" in d else None
    except ValueError:
        pass
