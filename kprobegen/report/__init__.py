"""The report protocol (docs/report-protocol.md, versions 1 and 2): kernel log → frames → Results.

``parse_log(text)`` finds every ``kprobegen/1`` and ``kprobegen/2`` line in any common form of
the kernel log (dmesg, dmesg -T, dmesg -r, dmesg -x, /dev/kmsg, journalctl -k, syslog), takes
only the kernel's lines where the form shows who wrote them (a facility, a syslog tag) and only
version-2 lines whose check matches, groups the records by module and module instance, drops
lines seen twice, cuts each instance into report frames and checks every frame: a frame is
complete only when nothing of it is missing and nothing conflicts with it. Incomplete frames
are kept and marked; they are never repaired. See docs/results.md and the "Integrity" section
of docs/report-protocol.md. ``read_log`` reads a log from a stream with bounds.

Speed (bench/parse_bench.py): the first stage, finding the protocol lines and splitting
each into (SEQ, type, fields, log line) grouped by module, is C (kprobegen/_logscan.c, built
by setuptools with the package): ~0.25 µs per record, where the same in Python
(``_scan_py``, kept as the reference the C scanner is tested against and as the fallback when
it is not built) costs ~1 µs. Everything that gives the records meaning (instances, frames,
Results) stays here, in one place. Field values are converted only when a frame is turned
into Results (``Frame.results()``), so the default ``results()`` converts one frame per
module. Records as the C template prints them are read with one regex each (begin, end,
hook, hist, key, bucket); anything else takes the general ``_fields`` path, which says what
is wrong. The objects of a parse are handed to the oldest GC generation without a scan
(``_no_gc``). An instance seen as one rising run of lines (the usual case) keeps its records
as that list: the ``Instance.records`` dict is built only when read.

Per record of the benchmark's 100% log (1 M lines, 94 MB, this 2-core machine): scan 0.25
µs in C, instances 0.09 µs, framing 0.2-0.25 µs: 1.6 M report lines/s for ``parse_log``;
~1.5 µs more to turn every frame into Results (``results(all=True)``). Pure-Python routes
measured before the C scanner, none faster than ``_scan_py``'s loop (~1.07 s): a
one-regex ``findall`` over the whole text plus regrouping; columns (one ``findall`` of the
text after the prefix 0.23-0.33 s, ``map(str.split, …, 3)`` 0.6-0.7 s, ``zip(*…)`` 0.3 s);
a text-level pass with ``str.find`` for begin/end, 1.38 s before building frames. For
Results, reading all key (bucket) records of a hook with one ``findall`` was measured no
faster than a regex per record (~70 µs per 36-record frame either way): the time goes to
making the ints, dicts and Bucket objects themselves.
"""

from __future__ import annotations

import gc
import re
import zlib
from bisect import bisect_right
from contextlib import contextmanager
from functools import lru_cache
from operator import itemgetter
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

from kprobegen.errors import ReportError
from kprobegen.report.results import (BYTES_KEYS, JSON_VERSION, KEY_KINDS, Bucket, Histogram, HookResult,
                      Results, bytes_to_text, format_histogram, format_results, results_from_json,
                      results_json, text_to_bytes)

try:
    from kprobegen.report import _logscan      # the line scanner in C, built by setuptools with the package
except ImportError:             # not built (a source tree used without installing): pure Python
    _logscan = None

__all__ = ["parse_log", "LogParse", "Frame", "Event", "Record", "Instance", "Results",
           "HookResult", "Histogram", "Bucket", "format_results", "format_histogram",
           "results_json", "results_from_json", "bytes_to_text", "text_to_bytes",
           "ReportError", "PROTOCOL_VERSION", "JSON_VERSION", "unescape", "read_log",
           "MAX_LOG_BYTES"]

PROTOCOL_VERSION = 2             # what generated modules print; version 1 is still read
PREFIX = "kprobegen/"
_PLEN = len(PREFIX)
PREFIX1 = f"{PREFIX}{1} "
PREFIX2 = f"{PREFIX}{2} "
_P1LEN = len(PREFIX1)
# version 2: every line ends in " chk=XXXXXXXX", the CRC-32 (zlib's) of the text before it
_CHK = " chk="
_CHK_LEN = len(_CHK) + 8
_CRC_PREFIX2 = zlib.crc32(PREFIX2.encode("ascii"))
_HEX8_RE = re.compile(r"[0-9a-f]{8}")
U64_MAX = (1 << 64) - 1
S64_MIN = -(1 << 63)
S64_MAX = (1 << 63) - 1

# Why a protocol line was not used (LogParse.rejected). The scanner in C uses the same text.
R_USER = "not written by the kernel (a user-space facility or syslog tag)"
R_PLACE = "not at the start of a kernel log record"
R_CHECK = "line check does not match (a changed or cut line)"
R_NOCHECK = "no line check (a cut line)"
R_V1CHK = "a version-1 line that carries a line check (a changed version)"

FRAME_TYPES = frozenset({"hook", "key", "hist", "bucket"})
KNOWN_TYPES = frozenset({"load", "error", "begin", "hook", "key", "hist", "bucket", "end",
                         "event"})

_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# /dev/kmsg: "PRI,SEQ,TS_USEC,FLAGS[,more];TEXT"
_KMSG_HEADER_RE = re.compile(r"\d+,\d+,\d+,[^;]*;")
_KMSG_ESCAPE_RE = re.compile(r"\\x([0-9a-fA-F]{2})")
# an escaped value: printable ASCII except '"', '=' and '\', or \xHH
_ESCAPED_RE = re.compile(r'(?:[!#-<>-\[\]-~]|\\x[0-9a-fA-F]{2})*')


# the key and bucket records exactly as the C template prints them (other field orders and
# extra fields take the general path)
# (at most 19 digits here, so int() is always in range; longer values take the checked path)
_KEY_RE = re.compile(r"hook=([A-Za-z0-9_]+) key=([^ ]*) count=([0-9]{1,19})")
_BUCKET_RE = re.compile(r"hook=([A-Za-z0-9_]+) low=(-inf|-?[0-9]{1,18}) high=(inf|-?[0-9]{1,18}) "
                        r"count=([0-9]{1,19})")


_SEQ = itemgetter(0)
_LINE = itemgetter(3)
_LOAD_RE = re.compile(r"kernel=([^ =]*) hooks=([0-9]{1,19}) protocol=([0-9]{1,19})")
# hook and hist records exactly as the C template prints them (a value holds no space, no
# '=' and no tab, as _fields would read it); checked and converted like the general path
_HOOK_RE = re.compile(r"name=([^ =\t]*) probe=([^ =\t]*) symbol=([^ =\t]*) hits=([^ =\t]*) "
                      r"missed=([^ =\t]*) dropped=([^ =\t]*) disarmed=([^ =\t]*) "
                      r"by=([^ =\t]*) keys=([^ =\t]*) hist=([^ =\t]*)")
_HIST_RE = re.compile(r"hook=([^ =\t]*) of=([^ =\t]*) scale=([^ =\t]*) unit=([^ =\t]*) "
                      r"count=([^ =\t]*) sum=([^ =\t]*) min=([^ =\t]*) max=([^ =\t]*) "
                      r"buckets=([^ =\t]*)")
# begin and end records as the C template prints them, by the fields _begin_end needs (a
# value holds no space and no '=')
_BEGIN_END_RE = {
    ("report", "reason", "ts_ns", "lines"):
        re.compile(r"report=([0-9]{1,19}) reason=([^ =]*) ts_ns=([0-9]{1,19}) lines=([0-9]{1,19})"),
    ("report", "lines"): re.compile(r"report=([0-9]{1,19}) lines=([0-9]{1,19})"),
}


class Record(NamedTuple):
    """One protocol line: its SEQ, record type, the raw ``key=value`` text and its log line
    (1-based). The parser keeps records as plain tuples in this order (``Frame.records``,
    ``Frame.begin``, ``Instance.records``); ``Record._make(t)`` names the fields."""

    seq: int
    type: str
    fields: str
    line: int


@lru_cache(maxsize=1 << 16)     # the same comm values come back in every report
def unescape(value: str) -> bytes:
    """Decode an escaped protocol value (``\\xHH`` escapes) to bytes; ValueError if invalid."""
    if "\\" not in value:
        if not value.isascii() or not _ESCAPED_RE.fullmatch(value):
            raise ValueError(f"unescaped byte in {value!r}")
        return value.encode("ascii")
    if not _ESCAPED_RE.fullmatch(value):
        raise ValueError(f"bad escape or unescaped byte in {value!r}")
    parts = value.split("\\x")
    out = bytearray(parts[0].encode("ascii"))
    for part in parts[1:]:
        out.append(int(part[:2], 16))
        out += part[2:].encode("ascii")
    return bytes(out)


def _fields(text: str) -> dict[str, str]:
    """``a=1 b=2`` → {"a": "1", "b": "2"}; ValueError unless every token is KEY=VALUE."""
    if text[-1:] in (" ", "\t"):
        text = text.rstrip(" \t")
    if not text:
        return {}
    if text.count("=") != text.count(" ") + 1:
        raise ValueError("fields are not KEY=VALUE separated by single spaces")
    it = iter(text.replace("=", " ").split(" "))
    return dict(zip(it, it))


def _short(value: str) -> str:
    return repr(value) if len(value) <= 40 else f"{value[:20]!r}… ({len(value)} characters)"


def _uint(value: str) -> int:
    """A u64 in decimal (every unsigned number of the protocol is at most a u64)."""
    if value.isdigit() and value.isascii():
        if len(value) <= 20:
            v = int(value)
            if v <= U64_MAX:
                return v
        raise ValueError(f"{_short(value)} is out of range (more than a u64)")
    raise ValueError(f"{_short(value)} is not an unsigned decimal")


def _int(value: str) -> int:
    """An s64 or u64 in decimal (a log2 bucket's bound reaches 2^63, a pid key is printed as
    a u64)."""
    digits = value[1:] if value[:1] == "-" else value
    if digits.isdigit() and digits.isascii():
        if len(digits) <= 20:
            v = int(value)
            if S64_MIN <= v <= U64_MAX:
                return v
        raise ValueError(f"{_short(value)} is out of range (not an s64 or u64)")
    raise ValueError(f"{_short(value)} is not a decimal integer")


def _bound(value: str) -> int | None:
    if value == "-inf" or value == "inf":
        return None
    return _int(value)


def _flag(value: str) -> bool:
    if value == "0" or value == "1":
        return value == "1"
    raise ValueError(f"{value!r} is not 0 or 1")


def _need(d: dict[str, str], *keys: str) -> list[str]:
    try:
        return [d[k] for k in keys]
    except KeyError as e:
        raise ValueError(f"field {e.args[0]}= is missing") from None


def _kernel(value: str) -> str:
    """``kernel=`` is a utsname release; decode escapes if a writer escaped it."""
    if "\\" in value:
        try:
            return unescape(value).decode("utf-8", "surrogateescape")
        except ValueError:
            pass
    return value


# ------------------------------------------------------------------ public model

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
        recs = self.__dict__["_records"] = dict(zip(map(_SEQ, recs), recs))
    return recs


def _set_instance_records(self, recs) -> None:
    self.__dict__["_records"] = recs


# after @dataclass: its __init__, __eq__ and asdict() go through the property
Instance.records = property(_instance_records, _set_instance_records,
                            doc="SEQ → record (duplicates dropped)")


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
    _malformed: list[str] = field(default_factory=list, repr=False)

    @property
    def complete(self) -> bool:
        return self.results().complete

    def results(self) -> Results:
        """This frame as Results (computed once). Record-level problems found here make the
        Results incomplete too."""
        if self._results is None:
            self._results = _frame_results(self)
        return self._results

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
        self.problems: list[str] = problems     # log level: lines lost outside frames, …
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
            for f in self.frames:
                f.results()
        for f in self.frames:
            for typ in f._malformed:
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
        frames = [f for f in self.frames if module is None or f.module == module]
        if all:
            if not frames:
                raise ReportError(self._nothing(module))
            with _no_gc():
                return [f.results() for f in frames]
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


# ------------------------------------------------------------------ scanning the log

def _kmsg_unescape(text: str) -> str:
    return _KMSG_ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)


def _scan(text: str):
    """Find the protocol lines: ({module: [(seq, type, fields, lineno), ...]} in log order,
    {unrecognised name: count}, lines with the prefix, lines, [(lineno, why refused)],
    lines taken from a log form that does not show who wrote them, lines taken by their
    syslog tag alone).

    The C scanner (kprobegen/_logscan.c, built with the package) does it when it is there
    and the text is stored one byte per character; ``_scan_py`` is the same in Python and
    the reference the C scanner is tested against."""
    if "\r" in text:
        text = text.replace("\r", "")
    if _logscan is not None:
        found = _logscan.scan(text, _other_version, _kmsg_rest)
        if found is not None:
            return found
    return _scan_py(text)


def _kmsg_rest(line: str, rest: str) -> str:
    """``rest`` of a line whose text before the prefix ends in ';' and that holds a '\\': a
    /dev/kmsg record writes '\\' and unprintable bytes as \\xHH, undo that one layer."""
    if _KMSG_HEADER_RE.match(line):
        return _kmsg_unescape(rest)
    return rest


# Who wrote a line, from the text before the prefix (docs/report-protocol.md, "Integrity").
_KMSG_PRI_RE = re.compile(r"([0-9]+),[0-9]+,[0-9]+,[^;]*;")     # /dev/kmsg
_RAW_PRI_RE = re.compile(r"<([0-9]+)>")                          # dmesg -r, klogctl
_DMESG_X_RE = re.compile(r"([a-z]+[0-9]?) *:([a-z]+) *: ")       # dmesg -x: "kern  :info  : "
_TS_RE = re.compile(r"(?:\[[^\]]*\] ?)?")                     # "[   1.5] ", "[Thu Nov …] "
_FAC_LEVEL_RE = re.compile(r"([a-z0-9]+)\.(?:emerg|alert|crit|err|warn|warning|notice|info|debug)")


def _pri_origin(digits: str, after: str) -> str | None:
    if len(digits) > 9 or int(digits) >= 8:
        return R_USER
    return None if _TS_RE.fullmatch(after) else R_PLACE


def _origin(head: str) -> str | None:
    """Who wrote a protocol line whose text before the prefix is ``head`` (not empty, not
    starting with a space or tab): None for the kernel or a log form that cannot tell
    (``head`` shows no facility; see ``_told``), else why the line is refused (R_USER,
    R_PLACE). Where the form shows the facility, only facility 0 (kernel) is taken, and the
    protocol text must start the kernel's record."""
    c = head[0]
    if "0" <= c <= "9":
        m = _KMSG_PRI_RE.match(head)
        if m is not None:                                   # /dev/kmsg "PRI,SEQ,TS,FLAGS;"
            return _pri_origin(m.group(1), head[m.end():])
    elif c == "<":
        m = _RAW_PRI_RE.match(head)
        if m is not None:                                   # dmesg -r "<PRI>[ts] "
            return _pri_origin(m.group(1), head[m.end():])
    elif "a" <= c <= "z":
        m = _DMESG_X_RE.match(head)
        if m is not None:                                   # dmesg -x "fac   :level : [ts] "
            if m.group(1) != "kern":
                return R_USER
            return None if _TS_RE.fullmatch(head, m.end()) else R_PLACE
    if _TS_RE.fullmatch(head):
        return None                                         # dmesg, dmesg -T: cannot tell
    i = head.find(": ")
    if i < 0:
        return None                                         # some other prefix: cannot tell
    j = head.rfind(" ", 0, i) + 1                           # syslog/journal "… TAG: [ts] "
    if head[j:i] != "kernel":
        return R_USER
    if not _TS_RE.fullmatch(head, i + 2):
        return R_PLACE
    if j >= 2:                                              # busybox syslogd "kern.info kernel:"
        m = _FAC_LEVEL_RE.fullmatch(head, head.rfind(" ", 0, j - 1) + 1, j - 1)
        if m is not None and m.group(1) != "kern":
            return R_USER
    return None


def _told(head: str) -> int:
    """How a line ``_origin`` took was told to be the kernel's: 0 its facility is shown,
    1 the form cannot tell (no facility: dmesg, dmesg -T, a console), 2 by the syslog tag
    ``kernel:`` alone (journalctl -k, a syslog file; in a syslog file anyone can log with that
    tag: ``logger -t kernel``)."""
    if not head:
        return 1
    c = head[0]
    if ("0" <= c <= "9" and _KMSG_PRI_RE.match(head)) or (c == "<" and _RAW_PRI_RE.match(head)) \
            or ("a" <= c <= "z" and _DMESG_X_RE.match(head)):
        return 0
    if _TS_RE.fullmatch(head):
        return 1
    i = head.find(": ")
    if i < 0:
        return 1
    j = head.rfind(" ", 0, i) + 1
    if j >= 2 and _FAC_LEVEL_RE.fullmatch(head, head.rfind(" ", 0, j - 1) + 1, j - 1):
        return 0                    # busybox syslogd shows the facility: "kern.info kernel:"
    return 2


def _checked(version: str, rest: str) -> tuple[str | None, str | None]:
    """(the line's text without its check, None) or (None, why it is refused)."""
    if rest[-1:] in (" ", "\t"):
        rest = rest.rstrip(" \t")
    tail = rest[-_CHK_LEN:]
    has_chk = tail[:5] == _CHK and _HEX8_RE.fullmatch(tail, 5) is not None
    if version == "1":
        return (None, R_V1CHK) if has_chk else (rest, None)
    if not has_chk:
        return None, R_NOCHECK
    body = rest[:-_CHK_LEN]
    try:
        data = body.encode("latin-1")
    except UnicodeEncodeError:          # only in a str the caller passed: cannot be a match
        return None, R_CHECK
    if zlib.crc32(data, _CRC_PREFIX2) != int(tail[5:], 16):
        return None, R_CHECK
    return body, None


def _seq(seq: str) -> int | None:
    """A SEQ: ASCII digits, a u64."""
    if len(seq) <= 20 and seq.isdigit() and seq.isascii():
        v = int(seq)
        if v <= U64_MAX:
            return v
    return None


def _scan_py(text: str):
    """``_scan`` in Python, for text without CRs (``_scan`` drops them).

    C-level work does most of it (split into lines, keep those holding the prefix); then a
    handful of string operations per protocol line. Trailing whitespace stays on ``fields``
    (``_fields`` strips it).
    """
    per_module: dict[str, list[tuple[int, str, str, int]]] = {}
    unrecognised: dict[str, int] = {}
    rejected: list[tuple[int, str]] = []
    untold = [0, 0, 0]              # lines taken, by _told
    bad: dict[str, bool] = {}
    hits, nlines = _hit_lines(text)
    appenders: dict[str, object] = {}       # module → its list's append
    get = appenders.get
    for lineno, line in hits:
        i = line.find(PREFIX)
        while i >= 0 and (line[i + _PLEN:i + _PLEN + 2] not in ("1 ", "2 ")):
            i = line.find(PREFIX, i + 1)
        if i < 0:
            if PREFIX in line:
                _other_version(line, unrecognised)
            continue
        head = line[:i]
        version = line[i + _PLEN]
        rest = line[i + _P1LEN:]
        if head:
            if head[0] in " \t":
                continue            # a /dev/kmsg continuation (dictionary) line
            why = _origin(head)
            if why is not None:
                rejected.append((lineno, why))
                continue
            untold[_told(head)] += 1
            if head[-1] == ";" and "\\" in line:
                rest = _kmsg_rest(line, rest)
        else:
            untold[1] += 1
        rest, why = _checked(version, rest)
        if why is not None:
            rejected.append((lineno, why))
            continue
        parts = rest.split(" ", 3)
        try:
            module, seq, typ, fields = parts
        except ValueError:
            if len(parts) != 3:
                unrecognised["(no module, SEQ or type)"] = unrecognised.get("(no module, SEQ or type)", 0) + 1
                continue
            module, seq, typ = parts
            fields = ""
        append = get(module)
        if append is None:
            if module in bad or _MODULE_RE.fullmatch(module) is None:
                bad[module] = True
                unrecognised["(bad module name or SEQ)"] = unrecognised.get("(bad module name or SEQ)", 0) + 1
                continue
            per_module[module] = lst = []
            append = appenders[module] = lst.append
        n = _seq(seq)
        if n is not None:
            append((n, typ, fields, lineno))
            continue
        unrecognised["(bad module name or SEQ)"] = unrecognised.get("(bad module name or SEQ)", 0) + 1
    # every line with the prefix is a record, counted as unrecognised, or rejected
    nprefixed = sum(map(len, per_module.values())) + sum(unrecognised.values()) + len(rejected)
    return per_module, unrecognised, nprefixed, nlines, rejected, untold[1], untold[2]


def _hit_lines(text: str) -> tuple[Iterable[tuple[int, str]], int]:
    """(line number, line) for (at least) the lines holding the prefix, and the number of
    lines.

    Where protocol lines are sparse (a real dmesg), jump from one to the next with
    str.find and count the newlines in between; where they are dense, split the text."""
    sample = text[:1 << 20]
    if sample.count(PREFIX) * 8 > sample.count("\n"):
        lines = text.split("\n")
        nlines = len(lines) - (lines[-1] == "") if text else 0
        return enumerate(lines, 1), nlines      # the caller skips lines without the prefix
    hits = []
    find = text.find
    rfind = text.rfind
    count = text.count
    pos = 0
    lineno = 1
    counted = 0
    end = len(text)
    while True:
        i = find(PREFIX, pos)
        if i < 0:
            break
        start = rfind("\n", 0, i) + 1
        eol = find("\n", i)
        if eol < 0:
            eol = end
        lineno += count("\n", counted, start)
        counted = start
        hits.append((lineno, text[start:eol]))
        pos = eol + 1
    nlines = lineno + count("\n", counted) - (text[-1:] == "\n") if text else 0
    return hits, nlines


def _other_version(line: str, unrecognised: dict[str, int]) -> None:
    """A line with ``kprobegen/`` but not ``kprobegen/1 `` or ``kprobegen/2 ``: another
    protocol version, or some other text that merely contains the word (not counted)."""
    version = line[line.find(PREFIX) + _PLEN:].split(" ", 1)[0]
    if version.isdigit() and version not in ("1", "2"):
        key = f"{PREFIX}{version} (unsupported protocol version)"
        unrecognised[key] = unrecognised.get(key, 0) + 1


# ------------------------------------------------------------------ instances

def _split_runs(recs):
    """Runs: stretches of a module's records in log order whose SEQ rises; SEQ 0 starts one."""
    if not recs:
        return []               # a module whose every line had a bad SEQ
    seqs = list(map(_SEQ, recs))
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
# latest ones. A bound, so that a log of many loads stays linear (an adversarial log of 10,000
# different `load` lines of one module took 25 s when every run was tried against every
# earlier load).
_LOOKBACK = 16


def _instances(module: str, recs):
    """Group a module's records into instances (loads) and drop duplicate lines.

    A run joins an earlier instance when none of its SEQs holds different text there:
    - a run that starts at SEQ 0 (a `load`, or an `error` of a failed load) is a new
      instance unless it shares a record beyond SEQ 0 with an instance (a `begin` carries
      a nanosecond timestamp), or all of it is already in one, or all of one is in it
      (the same lines captured twice);
    - any other run continues the latest instance it agrees with (lines that arrived out
      of SEQ order, or a second capture of the same lines); if it agrees with none, it is
      an instance whose first lines are gone. (When that is not the latest instance, the
      two interleave in the log: a conflict, said by ``_conflicts``.)
    Records already present (same SEQ, same text) are duplicates and are dropped.

    The instances tried for a run are those holding one of its lines (an index of every
    line: the latest instance holding it) and, for a run not from SEQ 0, the latest
    ``_LOOKBACK`` ones; newest first, at most ``2 * _LOOKBACK`` in all: linear in the log
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
            found.update(range(max(n - _LOOKBACK, 0), n))
        return sorted(found, reverse=True)[:2 * _LOOKBACK]

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
            # last one, their lines interleave in the log and _conflicts says so
            target = idx
            break
        if target is None:
            if not insts and len(runs) == 1:     # the usual case: one load, seen once
                insts.append(_Ordered(run))
                first_lines.append(run[0][3])
                break
            insts.append(dict(zip(map(_SEQ, run), run)))
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
        if type(recmap) is _Ordered:
            load = recmap[0] if recmap[0][0] == 0 else None
        else:
            load = recmap.get(0)
        if load is not None and load[1] == "load":
            m = _LOAD_RE.fullmatch(load[2])
            if m is not None:       # as the C template prints it
                inst.kernel = _kernel(m.group(1))
                inst.hooks = int(m.group(2))
                out.append(inst)
                continue
            try:
                d = _fields(load[2])
                inst.kernel = _kernel(d["kernel"]) if "kernel" in d else None
                inst.hooks = _uint(d["hooks"]) if "hooks" in d else None
            except ValueError:
                pass
        out.append(inst)
    return out, dups


# ------------------------------------------------------------------ frames

def _begin_end(rec: Record, need: tuple[str, ...]) -> dict | str:
    fast = _BEGIN_END_RE.get(need)
    if fast is not None:        # the record exactly as the C template prints it
        m = fast.fullmatch(rec[2])
        if m is not None:
            if len(need) == 2:
                report, lines = m.groups()
                return {"report": int(report), "lines": int(lines)}
            report, reason, ts_ns, lines = m.groups()
            return {"report": int(report), "reason": reason, "ts_ns": int(ts_ns),
                    "lines": int(lines)}
    try:
        d = _fields(rec[2])
        vals = _need(d, *need)
        out = {}
        for k, v in zip(need, vals):
            out[k] = v if k == "reason" else _uint(v)
        return out
    except ValueError as e:
        return f"{rec[1]} record at SEQ {rec[0]} (log line {rec[3]}) is malformed: {e}"


def _body(ordered: list[Record], a: int, b: int, dirty: bool) -> list[Record]:
    if not dirty:
        return ordered[a:b]
    # events (and stray load/error lines) may interleave with a frame: they are not its lines
    return [r for r in ordered[a:b] if r[1] in FRAME_TYPES or r[1] not in KNOWN_TYPES]


def _frames(inst: Instance, unrecognised: dict[str, int], events: list, failures: list,
            problems: list[str]) -> list[Frame]:
    recmap = inst.__dict__["_records"]
    if type(recmap) is _Ordered:
        ordered = recmap
        seqs = list(map(_SEQ, ordered))
    else:
        seqs = sorted(recmap)
        ordered = list(map(recmap.__getitem__, seqs))
    # SEQ gaps of the whole instance (the start counts: SEQ 0 is the first line)
    missing = []
    if seqs and (seqs[0] != 0 or seqs[-1] + 1 != len(seqs)):
        prev = -1
        for s in seqs:
            if s != prev + 1:
                missing.append((prev + 1, s - 1))
            prev = s
    inst.missing = missing

    def cut(begin, body, bstart) -> int:
        """Records in the SEQ span of a frame without an end: up to its last record (events
        after that are not in its span)."""
        last = body[-1] if body else begin
        return bisect_right(seqs, last[0]) - bstart + (begin is not None)

    frames: list[Frame] = []
    second_loads: list[Record] = []
    mod = inst.module
    in_frame = False
    begin = None
    bstart = 0
    dirty = False
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
                frames.append(_make_frame(inst, begin, None, body, cut(begin, body, bstart)))
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
            frames.append(_make_frame(inst, begin, rec, _body(ordered, bstart, idx, dirty),
                                      idx - bstart + 1 + (begin is not None)))
            in_frame = False
            continue
        if in_frame:
            dirty = True
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
            elif _LOAD_RE.fullmatch(rec[2]) is None:
                try:
                    _need(_fields(rec[2]), "kernel", "hooks", "protocol")
                except ValueError as e:
                    unrecognised["load (malformed)"] = unrecognised.get("load (malformed)", 0) + 1
                    problems.append(f"{mod}: load record (log line {rec[3]}) is malformed: {e}")
        elif typ == "error":
            try:
                d = _fields(rec[2])
                hook, symbol, err = _need(d, "hook", "symbol", "err")
                failures.append(LoadFailure(mod, inst.index, hook, symbol, _int(err), rec[3]))
            except ValueError as e:
                unrecognised["error (malformed)"] = unrecognised.get("error (malformed)", 0) + 1
                problems.append(f"{mod}: error record (log line {rec[3]}) is malformed: {e}")
        else:
            unrecognised[typ] = unrecognised.get(typ, 0) + 1
    if in_frame:
        body = _body(ordered, bstart, len(ordered), dirty)
        frames.append(_make_frame(inst, begin, None, body, cut(begin, body, bstart)))

    if not (second_loads or missing):
        return frames
    where = f"{mod}" + (f" (load #{inst.index + 1})" if inst.index else "")
    if second_loads:
        # one load prints one load record, at SEQ 0: another one is a conflict, not data
        at = ", ".join(f"SEQ {r[0]} (log line {r[3]})" for r in second_loads[:5])
        what = (f"{len(second_loads)} more load record(s) in one load ({at}): a module prints "
                f"one, at SEQ 0, so some of these lines were not printed by it")
        problems.append(f"{where}: {what}")
        for f in frames:
            f.problems.append(what)
    # lines lost outside every frame (between frames, before the first, after SEQ 0); the
    # frames of an instance follow each other in SEQ order without overlapping
    starts = [f.first_seq for f in frames]
    for lo, hi in missing:
        k = bisect_right(starts, lo - 1) - 1        # the last frame starting before lo
        if not (k >= 0 and frames[k].first_seq < lo and hi < frames[k].last_seq):
            what = f"SEQ {lo}" if lo == hi else f"SEQ {lo}..{hi}"
            if lo == 0:
                problems.append(f"{where}: {what} not in the log ({hi - lo + 1} line(s) from "
                                f"the module's load on are missing: log wrapped or cut)")
            else:
                problems.append(f"{where}: {what} missing ({hi - lo + 1} line(s) lost)")
    return frames


def _make_frame(inst: Instance, begin: Record | None, end: Record | None, body: list[Record],
                present: int):
    """A frame from its records; ``present``: how many records of the instance lie in its SEQ span."""
    problems: list[str] = []
    first = begin or (body[0] if body else end)
    last = end or (body[-1] if body else begin)
    first_seq, last_seq = first[0], last[0]
    f = Frame(inst.module, inst, begin, end, body, first_seq, last_seq,
              min(first[3], last[3]),
              problems, 0)
    b = e = None
    if begin is not None:
        b = _begin_end(begin, ("report", "reason", "ts_ns", "lines"))
        if isinstance(b, str):
            problems.append(b)
            b = None
        else:
            f.report, f.reason, f.ts_ns, f.lines = b["report"], b["reason"], b["ts_ns"], b["lines"]
    if end is not None:
        e = _begin_end(end, ("report", "lines"))
        if isinstance(e, str):
            problems.append(e)
            e = None
        else:
            if b is None:
                f.report, f.lines = e["report"], e["lines"]
            elif (e["report"], e["lines"]) != (b["report"], b["lines"]):
                problems.append(f"begin says report={b['report']} lines={b['lines']} but end says "
                                f"report={e['report']} lines={e['lines']}")
    # lost lines: SEQ gaps inside the frame, and whatever the stated line count misses
    gaps = last_seq - first_seq + 1 - present
    if gaps:
        problems.append(f"{gaps} line(s) missing between SEQ {first_seq} and {last_seq}")
    if begin is None:
        problems.append("no begin record (the frame's start is not in the log)")
    if end is None:
        problems.append("no end record (the frame's end is not in the log: cut, lost, or "
                        "the module was still reporting)")
    n = len(body)
    expected = f.lines
    lost = gaps
    if expected is not None:
        short = expected - n
        if short > 0:
            if not gaps:
                problems.append(f"lines={expected} but {n} record(s) in the frame")
            lost = max(lost, short)
        elif short < 0:
            problems.append(f"lines={expected} but {n} record(s) in the frame "
                            f"({-short} more than stated)")
    lost += (begin is None) + (end is None)
    f.lost_lines = lost
    return f


def _event(module: str, index: int, rec: Record) -> Event | str:
    try:
        d = _fields(rec[2])
        hook, pid, tgid, cpu, comm = _need(d, "hook", "pid", "tgid", "cpu", "comm")
        values = {k: _int(v) for k, v in d.items()
                  if k not in ("hook", "pid", "tgid", "cpu", "comm")}
        return Event(module, index, rec[0], hook, _int(pid), _int(tgid), _int(cpu),
                     unescape(comm), values, rec[3])
    except ValueError as e:
        return f"{module}: event record at SEQ {rec[0]} (log line {rec[3]}) is malformed: {e}"


def _frame_results(f: Frame) -> Results:
    """Convert a frame's records to Results, checking their structure."""
    problems = list(f.problems)
    warnings: list[str] = []
    hooks: dict[str, HookResult] = {}
    cur: HookResult | None = None
    want_keys = 0
    want_hist = False
    want_buckets = 0
    conv = None

    def finish():
        if cur is None:
            return
        if want_keys:
            problems.append(f"hook {cur.name}: {want_keys} key record(s) missing")
        if want_hist:
            problems.append(f"hook {cur.name}: its hist record is missing")
        if want_buckets:
            problems.append(f"hook {cur.name}: {want_buckets} bucket record(s) missing")

    skipping = 0        # records after a malformed hook record: theirs, not checked
    for rec in f.records:
        typ = rec[1]
        if skipping and typ in ("key", "hist", "bucket"):
            skipping += 1
            continue
        if skipping > 1:
            problems.append(f"{skipping - 1} record(s) of that hook not read")
        skipping = 0
        try:
            # fast paths: key and bucket records as the C template prints them
            if typ == "key" and want_keys:
                m = _KEY_RE.fullmatch(rec[2])
                if m is not None:
                    hook, key, count = m.groups()
                    if hook == cur.name:
                        k = conv(key)
                        by = cur.by
                        if k not in by:
                            by[k] = int(count)
                            want_keys -= 1
                            continue
            elif typ == "bucket" and want_buckets:
                m = _BUCKET_RE.fullmatch(rec[2])
                if m is not None and m.group(1) == cur.name:
                    low, high, count = m.group(2, 3, 4)
                    cur.histogram.buckets.append(Bucket(None if low == "-inf" else int(low),
                                                        None if high == "inf" else int(high),
                                                        int(count)))
                    want_buckets -= 1
                    continue
            # hook and hist records as the C template prints them: one regex
            m = _HOOK_RE.fullmatch(rec[2]) if typ == "hook" else (
                _HIST_RE.fullmatch(rec[2]) if typ == "hist" else None)
            d = _fields(rec[2]) if m is None else None
            if typ == "key" or typ == "bucket":
                hook = d.get("hook")
                if cur is None or hook != cur.name:
                    raise ValueError(f"hook={hook} does not follow hook {cur.name if cur else '(none)'}")
                if typ == "key":
                    if not want_keys:
                        raise ValueError(f"more key records than hook {cur.name} announced")
                    key, count = _need(d, "key", "count")
                    k = conv(key)
                    if k in cur.by:
                        raise ValueError(f"key {key} appears twice")
                    cur.by[k] = _uint(count)
                    want_keys -= 1
                else:
                    if not want_buckets:
                        raise ValueError(f"more bucket records than hook {cur.name}'s hist announced")
                    low, high, count = _need(d, "low", "high", "count")
                    if low == "inf" or high == "-inf":
                        raise ValueError("bucket bounds are the wrong way round")
                    cur.histogram.buckets.append(Bucket(_bound(low), _bound(high), _uint(count)))
                    want_buckets -= 1
            elif typ == "hook":
                finish()
                cur = None
                name, probe, symbol, hits, missed, dropped, disarmed, by, keys, hist = (
                    m.groups() if m is not None else _need(
                        d, "name", "probe", "symbol", "hits", "missed", "dropped", "disarmed",
                        "by", "keys", "hist"))
                if by != "-" and by not in KEY_KINDS:
                    raise ValueError(f"by={by} is not a known key kind")
                if name in hooks:
                    raise ValueError(f"hook {name} appears twice in the frame")
                cur = HookResult(name, symbol, probe, _uint(hits), _uint(missed), _uint(dropped),
                                 _flag(disarmed), None if by == "-" else by, {}, None)
                hooks[name] = cur
                want_keys = _uint(keys)
                if want_keys and by == "-":
                    raise ValueError(f"keys={want_keys} but by=-")
                want_hist = _flag(hist)
                want_buckets = 0
                conv = unescape if by in BYTES_KEYS else _int
            elif typ == "hist":
                hook = m.group(1) if m is not None else d.get("hook")
                if cur is None or hook != cur.name:
                    raise ValueError(f"hook={hook} does not follow hook {cur.name if cur else '(none)'}")
                if not want_hist:
                    raise ValueError(f"hook {cur.name} announced no histogram")
                if want_keys:
                    raise ValueError(f"{want_keys} key record(s) of hook {cur.name} are missing before it")
                of, scale, unit, count, sum_, mn, mx, buckets = (
                    m.groups()[1:] if m is not None else _need(
                        d, "of", "scale", "unit", "count", "sum", "min", "max", "buckets"))
                cur.histogram = Histogram(of, scale, None if unit == "-" else unit, _uint(count),
                                          _int(sum_), _int(mn), _int(mx), [])
                want_hist = False
                want_buckets = _uint(buckets)
            else:
                raise ValueError(f"record type {typ!r} is not a record type of the protocol")
        except ValueError as e:
            problems.append(f"{typ} record at SEQ {rec[0]} (log line {rec[3]}): {e}")
            if typ in FRAME_TYPES:
                f._malformed.append(typ)
            if typ == "hook":
                cur = None
                want_keys = want_buckets = 0
                want_hist = False
                skipping = 1
    if skipping > 1:
        problems.append(f"{skipping - 1} record(s) of that hook not read")
    finish()
    if f.end is not None and f.begin is not None and f.instance.hooks is not None \
            and len(hooks) != f.instance.hooks and not problems:
        problems.append(f"the load record announced {f.instance.hooks} hook(s), the frame has {len(hooks)}")
    for h in hooks.values():
        if h.by_kind is not None:
            keyed = sum(h.by.values())
            if keyed + h.dropped != h.hits:
                warnings.append(f"hook {h.name}: keys sum to {keyed} and dropped={h.dropped}, "
                                f"but hits={h.hits}")
        if h.histogram is not None:
            inb = sum(b.count for b in h.histogram.buckets)
            if inb != h.histogram.count:
                warnings.append(f"hook {h.name}: buckets sum to {inb} but count={h.histogram.count}")
    lost = f.lost_lines
    return Results(f.module, f.instance.kernel, f.report, f.reason, f.ts_ns, not problems,
                   lost, problems, hooks, f.instance.index, warnings)


# ------------------------------------------------------------------ entry point

@contextmanager
def _no_gc():
    """The parse allocates millions of small objects and frees none of them: the cyclic
    garbage collector would rescan the growing heap again and again (3-5x slower).

    When it is switched back on, the first allocation would still scan every object made
    meanwhile (they all sit in the youngest generation: ~0.25 s per million records), so
    they are handed to the oldest generation first (``gc.freeze()`` + ``gc.unfreeze()``
    move them there without a scan), as long-lived data, which is what a parse is. Skipped
    when the program froze objects itself (unfreezing would undo that)."""
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
    per_module, unrecognised, nprefixed, nlines, refused, untold, tagged = _scan(text)
    frames: list[Frame] = []
    events: list[Event] = []
    instances: list[Instance] = []
    failures: list[LoadFailure] = []
    problems: list[str] = []
    rejected: dict[str, list[int]] = {}
    for lineno, why in refused:
        rejected.setdefault(why, []).append(lineno)
    for why, where in rejected.items():
        problems.append(f"{len(where)} protocol line(s) not used, {why}: {_line_list(where)}")
    dups = 0
    for module, recs in per_module.items():
        insts, d = _instances(module, recs)
        dups += d
        mine = []
        for inst in insts:
            instances.append(inst)
            fr = _frames(inst, unrecognised, events, failures, problems)
            mine.append((inst, fr))
            frames.extend(fr)
        _conflicts(module, mine, problems)
    if refused:
        _refused_in_frames(frames, sorted(refused))
    frames.sort(key=lambda f: (f.instance.first_line, f.first_seq))
    instances.sort(key=lambda i: i.first_line)
    events.sort(key=lambda e: e.line)
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
    return LogParse(frames, unrecognised, events, instances, failures, problems, dups,
                    nlines, nprefixed, rejected, untold, notes)


def _line_list(lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:5]))
    return f"log line{'s' if len(lines) > 1 else ''} {shown}" + (
        f" and {len(lines) - 5} more" if len(lines) > 5 else "")


def _span(recs) -> tuple[int, int]:
    lines = list(map(_LINE, recs))
    return min(lines), max(lines)


def _conflicts(module: str, insts: list[tuple[Instance, list[Frame]]], problems: list[str]) -> None:
    """Lines that cannot all be the module's: say so on every frame concerned, never pick one.

    - two frames of one load claiming the same report number;
    - two loads of the module whose lines interleave in the log (a module is loaded once at a
      time: its next load prints after the last line of the one before)."""
    for inst, frs in insts:
        if len(frs) < 2:
            continue
        by_report: dict[int, list[Frame]] = {}
        for f in frs:
            if f.report is not None:
                by_report.setdefault(f.report, []).append(f)
        for rep, same in by_report.items():
            if len(same) > 1:
                spans = ", ".join(f"SEQ {f.first_seq}..{f.last_seq}" for f in same[:5])
                what = (f"{len(same)} frames of one load claim report {rep} ({spans}): a module "
                        f"prints each report once, so some of these lines were not printed by it")
                where = module + (f" (load #{inst.index + 1})" if inst.index else "")
                problems.append(f"{where}: {what}")
                for f in same:
                    f.problems.append(what)
    if len(insts) < 2:
        return
    spans = []
    for inst, frs in insts:
        recs = inst.__dict__["_records"]
        if type(recs) is _Ordered:
            spans.append((recs[0][3], recs[-1][3], inst, frs))
        elif len(recs) == 1:
            line = next(iter(recs.values()))[3]
            spans.append((line, line, inst, frs))
        else:
            spans.append((*_span(recs.values()), inst, frs))
    spans.sort(key=_SEQ)
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


def _refused_in_frames(frames: list[Frame], refused: list[tuple[int, str]]) -> None:
    """A frame with lines missing says which refused lines lie among its lines in the log."""
    at = [ln for ln, _ in refused]
    for f in frames:
        if not f.lost_lines:
            continue
        recs = [r for r in (f.begin, f.end) if r is not None] + f.records[:1] + f.records[-1:]
        lo, hi = _span(recs)
        i, j = bisect_right(at, lo), bisect_right(at, hi)
        if i < j:
            whys = sorted({why for _, why in refused[i:j]})
            f.problems.append(f"{_line_list(at[i:j])} between its lines refused: {'; '.join(whys)}")


# ------------------------------------------------------------------ reading a log with bounds

#: ``read_log``'s default bound on the bytes read (``kprobegen parse --max-bytes``)
MAX_LOG_BYTES = 4 << 30
#: no protocol line is longer (printk's limit is 1 KiB of text); longer lines are skipped
MAX_LINE = 64 << 10
_CHUNK = 1 << 20


def read_log(stream, limit: int = MAX_LOG_BYTES) -> tuple[bytes, list[str]]:
    """Read a kernel log from a binary stream with bounds, for ``parse_log``: (text, problems).

    At most ``limit`` bytes are read (ReportError beyond: an endless or runaway input ends
    with a message, not with the machine's memory). The log is read in 1 MiB chunks; a chunk
    without a protocol prefix is kept only as its newlines (the line numbers stay right, the
    memory follows the protocol lines, not the log), and a line longer than ``MAX_LINE``
    (64 KiB) is skipped with a problem naming it: no protocol line is that long. The result
    parses exactly as the whole log would."""
    out: list[bytes] = []
    problems: list[str] = []
    total = 0
    carry = b""             # the unfinished last line of what was read
    long_line = 0           # > 0: inside an over-long line that started on this line number
    lineno = 1              # the line number of carry's line
    prefix = PREFIX.encode()
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise ReportError(f"the log is longer than {limit} bytes (the bound on what is read; "
                              f"--max-bytes changes it): not parsed")
        nl = chunk.find(b"\n")
        if long_line:
            if nl < 0:
                continue
            out.append(b"\n")           # the skipped line stays a line
            lineno += 1
            long_line = 0
            chunk = chunk[nl + 1:]
            nl = chunk.find(b"\n")
        if nl < 0:
            carry += chunk
            if len(carry) > MAX_LINE:
                problems.append(_too_long(lineno))
                long_line, carry = lineno, b""
            continue
        last = chunk.rfind(b"\n")
        body = carry + chunk[:last + 1]
        carry = chunk[last + 1:]
        n = body.count(b"\n")
        if prefix in body:
            if len(body) > MAX_LINE:
                lines = body.split(b"\n")
                if max(map(len, lines)) > MAX_LINE:
                    for i, ln in enumerate(lines):
                        if len(ln) > MAX_LINE:
                            problems.append(_too_long(lineno + i))
                            lines[i] = b""
                    body = b"\n".join(lines)
            out.append(body)
        else:
            out.append(b"\n" * n)
        lineno += n
    if long_line:
        out.append(b"\n")
    elif len(carry) > MAX_LINE:
        problems.append(_too_long(lineno))
    elif carry:
        out.append(carry)
    return b"".join(out), problems


def _too_long(lineno: int) -> str:
    return f"log line {lineno} is longer than {MAX_LINE} bytes: skipped (no protocol line is that long)"
