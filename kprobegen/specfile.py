"""Reading a spec file's bytes: bounded, and only from a regular file or standard input.

Kept apart from spec.py (YAML, pydantic) because the build cache keys a spec by its bytes
without parsing it (kbuild.cached_by_spec), and that path must stay light.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from kprobegen.errors import SpecError

# A hook spec is a few KiB; a megabyte is not a spec (and bounds what is read at all).
MAX_SPEC_BYTES = 1 << 20
STDIN_NAMES = ("-",)


def is_stdin(path: str | Path) -> bool:
    return str(path) in STDIN_NAMES


def _read_bounded(read, source: str) -> bytes:
    """Read with ``read(n)`` until EOF, but never more than MAX_SPEC_BYTES + 1 bytes."""
    chunks, total = [], 0
    while True:
        chunk = read(min(1 << 16, MAX_SPEC_BYTES + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > MAX_SPEC_BYTES:
            raise SpecError(f"{source}: the spec is over {MAX_SPEC_BYTES} bytes; a spec this large is not a hook spec")


def read_spec_bytes(path: str | Path) -> bytes:
    """The bytes of a spec file, or of standard input for ``-``. Refuses what is not a regular
    file (a FIFO, a device such as /dev/zero, a folder) before reading a byte of it, and
    anything over MAX_SPEC_BYTES after reading at most one byte more."""
    if is_stdin(path):
        if sys.stdin is None:
            raise SpecError("-: standard input is closed; give the spec as a file")
        try:
            return _read_bounded(sys.stdin.buffer.read, "<stdin>")
        except OSError as exc:
            raise SpecError(f"<stdin>: cannot read the spec: {exc.strerror or exc}") from None
    source = str(path)
    try:
        # O_NONBLOCK: opening a FIFO without a writer would otherwise wait forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise SpecError(f"{source}: cannot read the spec: {exc.strerror}") from None
    except ValueError:  # a NUL in the path
        raise SpecError(f"{source!r}: cannot read the spec: a file name cannot hold a NUL byte") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
            raise SpecError(f"{source}: cannot read the spec: it is {kind}, not a regular file "
                            "(use - to read the spec from standard input)")
        try:
            return _read_bounded(lambda n: os.read(fd, n), source)
        except OSError as exc:
            raise SpecError(f"{source}: cannot read the spec: {exc.strerror}") from None
    finally:
        os.close(fd)
