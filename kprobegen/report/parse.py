"""``parse_log``: the stages of the report parser joined, and ``LogParse``, what they found.

scan (the protocol lines, by module) → instances (loads, duplicates dropped) → frames
(framing checked, events, load failures, conflicts) → Results, when asked for
(``LogParse.results``, decoded frame by frame).

Where the C scanner module is built, it also groups each module's records into instances, cuts
them into frames and checks each frame's framing and the frames of each instance against each
other (``_logscan.layout``; its reference is ``frames.layout_py``): the Python here makes the
Instances and Frames from what it found. Texts that only ``LogParse.problems`` shows are made
when it is first read, and Results when they are asked for.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager

from kprobegen.errors import ReportError
from kprobegen.report import scan as scanning
# (decode_frames is decode's: the frames module's Frames read themselves with it)
from kprobegen.report.frames import (Event, Frame, Later, LoadFailure, decode_frames, find_frames,
                                     flag_conflicts, frame_of, layout_py, line_list, loads_said,
                                     name_refused_lines, said)
from kprobegen.report.instances import LOOKBACK, Instance, new_instance
from kprobegen.report.results import Results
from kprobegen.report.scan import scan


class LogParse:
    """What ``parse_log`` found. Frames are checked record by record when their Results are
    first asked for (``results()``, ``Frame.complete``); ``unrecognised`` checks them all."""

    def __init__(self, frames, unrecognised, events, instances, load_failures, problems,
                 duplicates, lines, protocol_lines, rejected=None, unattributed=0, notes=None):
        self.frames: list[Frame] = frames       # every frame, complete or not, in log order
        self._unrecognised: dict[str, int] = unrecognised
        self.events: list[Event] = events
        self.instances: list[Instance] = instances
        self.load_failures: list[LoadFailure] = load_failures
        # log level: lines lost outside frames, … (as collected: texts and texts made later)
        self._problems: list[str | Later] = problems
        self._said: list[str] | None = None
        self.duplicates: int = duplicates       # protocol lines seen more than once (dropped)
        self.lines: int = lines                 # lines in the log
        self.protocol_lines: int = protocol_lines  # lines with a kprobegen/N prefix
        # why → log line numbers of protocol lines not used: not written by the kernel, or
        # failing their line check (docs/report-protocol.md, "Integrity")
        self.rejected: dict[str, list[int]] = rejected or {}
        # protocol lines taken from a log form that does not show who wrote them
        self.unattributed: int = unattributed
        # what a reader of the results must know about the log as a whole (said once)
        self.notes: list[str] = notes or []

    @property
    def problems(self) -> list[str]:
        """What the parser found about the log as a whole: protocol lines refused, conflicts,
        lines lost outside any frame. (Some are made into text when this is first read: a
        log may hold one per line, and most callers want only Results.)"""
        if self._said is None:
            self._said = said(self._problems)
        return self._said

    @problems.setter
    def problems(self, value: list[str]) -> None:
        self._said = value

    def __repr__(self) -> str:
        return (f"<LogParse {len(self.frames)} frame(s) of {', '.join(self.modules) or 'no module'}, "
                f"{len(self.events)} event(s), {self.protocol_lines}/{self.lines} protocol lines>")

    @property
    def unrecognised(self) -> dict[str, int]:
        """Prefixed lines whose record type or shape is unknown: name → count. Names: an
        unknown record type as printed; ``TYPE (malformed)`` for a known type with missing
        or invalid fields; ``load (not at SEQ 0)``; ``(no module, SEQ or type)``,
        ``(bad module name or SEQ)``;
        ``kprobegen/N (unsupported protocol version)``."""
        out = dict(self._unrecognised)
        with _no_gc():
            decode_frames(self.frames)
        for f in self.frames:
            for typ in f._malformed:        # Frame.malformed, once its Results are made
                key = f"{typ} (malformed)"
                out[key] = out.get(key, 0) + 1
        return out

    @property
    def modules(self) -> list[str]:
        seen: dict[str, None] = {}
        for inst in self.instances:
            seen.setdefault(inst.module, None)
        return list(seen)

    def results(self, module: str | None = None, all: bool = False) -> list[Results]:
        """Default: the latest complete report of each module (or of ``module``).

        ``all=True``: every report, complete or not, in log order (a time series).
        Raises ReportError when there is nothing to return (for the default, when no
        complete report exists), with what was found instead.
        """
        frames = self.frames if module is None else [f for f in self.frames if f.module == module]
        if all:
            if not frames:
                raise ReportError(self._nothing(module))
            with _no_gc():
                decode_frames(frames)
            return [f._results for f in frames]
        latest: dict[str, Results] = {}
        for f in reversed(frames):
            if f.module not in latest and f.complete:
                latest[f.module] = f.results()
        if not latest:
            raise ReportError(self._nothing(module))
        order = {m: i for i, m in enumerate(self.modules)}
        return sorted(latest.values(), key=lambda r: order[r.module])

    def _nothing(self, module: str | None) -> str:
        who = f"module {module}" if module else "any module"
        head = f"no complete report for {who} in the log"
        failures = [str(f) for f in self.load_failures if module in (None, f.module)]
        frames = [f for f in self.frames if module in (None, f.module)]
        if frames:
            found = "; ".join(f"{f.module} {f.describe()}" for f in frames[-5:])
            more = f" (last 5 of {len(frames)})" if len(frames) > 5 else ""
            what = f"found {len(frames)} incomplete report(s){more}: {found}"
        elif failures:
            what = "; ".join(failures)
        elif module and module in self.modules:
            what = f"{module} printed {sum(len(i.records) for i in self.instances if i.module == module)} line(s) but no report frame (is it still loaded? reports come at unload)"
        elif self.protocol_lines:
            others = ", ".join(self.modules) or "none"
            what = (f"{self.protocol_lines} protocol line(s), modules found: "
                    f"{others}")
            if module:
                what = f"not one line from {module} among {what}"
        else:
            what = (f"no kprobegen protocol lines among {self.lines} line(s) — was the "
                    f"module loaded and unloaded, and is this the right log?")
        if failures and frames:
            what += "; " + "; ".join(failures)
        if self.unrecognised:
            what += "; unrecognised: " + ", ".join(f"{k} ×{v}" for k, v in self.unrecognised.items())
        return f"{head}: {what}"


@contextmanager
def _no_gc():
    """The parse allocates millions of small objects and frees none of them: the cyclic
    garbage collector would rescan the growing heap again and again (several times slower;
    bench/README.md, parse_bench.py).

    When it is switched back on, the first allocation would still scan every object made
    meanwhile (they all sit in the youngest generation), so they are handed to the oldest
    generation first (``gc.freeze()`` + ``gc.unfreeze()`` move them there without a scan),
    as long-lived data, which is what a parse is. Skipped when the program froze objects
    itself (unfreezing would undo that)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def parse_log(text: str | bytes) -> LogParse:
    """Parse a kernel log (any common form, see docs/results.md) into frames and events."""
    with _no_gc():
        return _parse_log(text)


def _parse_log(text: str | bytes) -> LogParse:
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("latin-1")
    per_module, unrecognised, nprefixed, nlines, refused, untold, tagged = scan(text)
    frames: list[Frame] = []
    events: list[Event] = []
    instances: list[Instance] = []
    failures: list[LoadFailure] = []
    problems: list[str | Later] = []
    rejected: dict[str, list[int]] = {}
    for lineno, why in refused:
        rejected.setdefault(why, []).append(lineno)
    for why, where in rejected.items():
        problems.append(f"{len(where)} protocol line(s) not used, {why}: {line_list(where)}")
    dups = 0
    lib = scanning.logscan
    for module, recs in per_module.items():
        # the module's instances, each cut into frames: in C where it is built
        records_of, first_lines, last_lines, missing_of, rows_of, others_of, claims_of, \
            outside_of, d, interleaved = (lib.layout(recs, LOOKBACK, frame_of) if lib is not None
                                          else layout_py(recs))
        dups += d
        mine: list[Instance] = []
        theirs: list[Frame] = []            # the module's frames
        early: dict[int, list[str]] = {}    # load index → texts found reading its records
        for index, (records, first_line, missing, rows, others) in enumerate(
                zip(records_of, first_lines, missing_of, rows_of, others_of)):
            inst, load_read = new_instance(module, index, records, first_line, missing)
            mine.append(inst)
            if rows or missing or len(others) > load_read:
                theirs += find_frames(inst, rows, others, load_read, unrecognised, events,
                                      failures, early)
            # else: nothing but its load record, read: nothing more to do
        if early or any(outside_of) or any(claims_of):
            # the problems of its loads, in load order, then their frames claiming one report
            # number twice: made into text when LogParse.problems is read
            problems.append((loads_said, mine, outside_of, claims_of, early))
        if interleaved:
            flag_conflicts(module, first_lines, last_lines, mine, theirs, problems)
        instances += mine
        frames += theirs
    if refused:
        name_refused_lines(frames, sorted(refused))
    if len(per_module) > 1:
        # one module's instances (and their frames) are in the order of their first lines
        # already; several modules' are merged
        frames.sort(key=lambda f: (f.instance.first_line, f.first_seq))
        instances.sort(key=lambda i: i.first_line)
    events.sort(key=lambda e: e.line)
    return LogParse(frames, unrecognised, events, instances, failures, problems, dups,
                    nlines, nprefixed, rejected, untold, _notes(untold, tagged))


def _notes(untold: int, tagged: int) -> list[str]:
    """What a reader must know about how the log's protocol lines were told to be the
    kernel's (``untold``, ``tagged``: counts from ``scan``)."""
    notes = []
    if untold:
        notes.append(f"{untold} protocol line(s) come from a log form that does not show who wrote "
                     f"them (no syslog facility: dmesg, dmesg -T, a console): a line that user "
                     f"space wrote to /dev/kmsg looks the same there. For a log that can tell, "
                     f"read /dev/kmsg, dmesg -r or -x, or journalctl -k")
    if tagged:
        notes.append(f"{tagged} protocol line(s) are told to be the kernel's by their syslog tag "
                     f"'kernel:' alone: right for journalctl -k (the journal knows what the "
                     f"kernel wrote), but in a syslog file any local user can log with that tag "
                     f"(logger -t kernel); /dev/kmsg and dmesg -r or -x show the facility")
    return notes


