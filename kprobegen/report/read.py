"""Reading a kernel log from a stream with bounds, for ``parse_log``.

A log may come from a pipe that never ends or from a file of many gigabytes: ``read_log``
stops at a byte bound with an error, keeps in memory only what may hold protocol lines (the
rest only as its newlines, so that line numbers stay right), and skips lines longer than any
protocol line can be. What it returns parses exactly as the whole log would.
"""

from __future__ import annotations

from kprobegen.errors import ReportError
from kprobegen.report.scan import PREFIX

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
