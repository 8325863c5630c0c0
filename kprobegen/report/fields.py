"""The values of a protocol record: its ``KEY=VALUE`` fields, bounded numbers, escaped bytes.

Every reader of a record's fields (instances: the ``load`` record; frames: ``begin``, ``end``,
``event``, ``error``; decode: ``hook``, ``key``, ``hist``, ``bucket``) goes through these, so a
value is accepted or refused the same way wherever it appears, and the ValueError says what
is wrong with it (it ends up in a problem naming the record and its log line).
"""

from __future__ import annotations

import re
from functools import lru_cache

from kprobegen.ints import S64_MIN, U64_MAX

# an escaped value: printable ASCII except '"', '=' and '\', or \xHH
_ESCAPED_RE = re.compile(r'(?:[!#-<>-\[\]-~]|\\x[0-9a-fA-F]{2})*')


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


def split_fields(text: str) -> dict[str, str]:
    """``a=1 b=2`` → {"a": "1", "b": "2"}; ValueError unless every token is KEY=VALUE."""
    if text[-1:] in (" ", "\t"):
        text = text.rstrip(" \t")
    if not text:
        return {}
    if text.count("=") != text.count(" ") + 1:
        raise ValueError("fields are not KEY=VALUE separated by single spaces")
    it = iter(text.replace("=", " ").split(" "))
    return dict(zip(it, it))


def need(d: dict[str, str], *keys: str) -> list[str]:
    """The values of ``keys`` in ``d``; ValueError naming the first one missing."""
    try:
        return [d[k] for k in keys]
    except KeyError as e:
        raise ValueError(f"field {e.args[0]}= is missing") from None


def _short(value: str) -> str:
    return repr(value) if len(value) <= 40 else f"{value[:20]!r}… ({len(value)} characters)"


def uint(value: str) -> int:
    """A u64 in decimal (every unsigned number of the protocol is at most a u64)."""
    if value.isdigit() and value.isascii():
        if len(value) <= 20:
            v = int(value)
            if v <= U64_MAX:
                return v
        raise ValueError(f"{_short(value)} is out of range (more than a u64)")
    raise ValueError(f"{_short(value)} is not an unsigned decimal")


def sint(value: str) -> int:
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


def bound(value: str) -> int | None:
    """A bucket bound: ``sint``, or None for an open end (``-inf``, ``inf``)."""
    if value == "-inf" or value == "inf":
        return None
    return sint(value)


def flag(value: str) -> bool:
    if value == "0" or value == "1":
        return value == "1"
    raise ValueError(f"{value!r} is not 0 or 1")


def kernel_release(value: str) -> str:
    """``kernel=`` is a utsname release; decode escapes if a writer escaped it."""
    if "\\" in value:
        try:
            return unescape(value).decode("utf-8", "surrogateescape")
        except ValueError:
            pass
    return value
