"""Finding the protocol lines in a kernel log of any common form → records grouped by module.

Each line that holds ``kprobegen/1 `` or ``kprobegen/2 `` is a protocol line. What stands
before the prefix tells the log form (dmesg, dmesg -T, dmesg -r, dmesg -x, /dev/kmsg,
journalctl -k, syslog) and, where the form shows it, who wrote the line: only the kernel's
lines are taken (docs/report-protocol.md, "Integrity"), and a version-2 line only when its
check (a CRC-32 of the line) matches. A taken line becomes a record ``(SEQ, type, fields,
log line)`` in its module's list, in log order; the meaning of the records (instances,
frames, Results) is the business of the modules after this one.

Two scanners give the same answer: the C one (``kprobegen.report._logscan``, built by
setuptools with the package; ``logscan``) does the work when it is built and the text is
stored one byte per character, and ``scan_py`` is the readable statement of the rules, the
reference the C scanner is tested against (tests/test_logscan.py) and the fallback. The C
scanner calls back into ``_other_version`` and ``_kmsg_rest`` for rare lines.
"""

from __future__ import annotations

import re
import zlib
from typing import Iterable

from kprobegen.ints import U64_MAX

try:
    # the line scanner in C, built by setuptools with the package; set to None to parse with
    # the Python reference scanner (tests and bench/parse_bench.py compare the two)
    from kprobegen.report import _logscan as logscan
except ImportError:             # not built (a source tree used without installing): pure Python
    logscan = None

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

# Why a protocol line was not used (LogParse.rejected). The scanner in C uses the same text.
R_USER = "not written by the kernel (a user-space facility or syslog tag)"
R_PLACE = "not at the start of a kernel log record"
R_CHECK = "line check does not match (a changed or cut line)"
R_NOCHECK = "no line check (a cut line)"
R_V1CHK = "a version-1 line that carries a line check (a changed version)"

_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# /dev/kmsg: "PRI,SEQ,TS_USEC,FLAGS[,more];TEXT"
_KMSG_HEADER_RE = re.compile(r"\d+,\d+,\d+,[^;]*;")
_KMSG_ESCAPE_RE = re.compile(r"\\x([0-9a-fA-F]{2})")


def scan(text: str):
    """Find the protocol lines: ({module: [(seq, type, fields, lineno), ...]} in log order,
    {unrecognised name: count}, lines with the prefix, lines, [(lineno, why refused)],
    lines taken from a log form that does not show who wrote them, lines taken by their
    syslog tag alone).

    The C scanner does it when it is there and the text is stored one byte per character;
    ``scan_py`` is the same in Python."""
    if "\r" in text:
        text = text.replace("\r", "")
    if logscan is not None:
        found = logscan.scan(text, _other_version, _kmsg_rest)
        if found is not None:
            return found
    return scan_py(text)


def scan_c(text: str):
    """The C scanner's answer for ``text`` without CRs (as ``scan_py``'s), or None where it
    declines: text not stored one byte per character. Only with the C scanner built."""
    return logscan.scan(text, _other_version, _kmsg_rest)


def _kmsg_unescape(text: str) -> str:
    return _KMSG_ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)


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


def scan_py(text: str):
    """``scan`` in Python, for text without CRs (``scan`` drops them).

    C-level work does most of it (split into lines, keep those holding the prefix); then a
    handful of string operations per protocol line. Trailing whitespace stays on ``fields``
    (``fields.split_fields`` strips it).
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

