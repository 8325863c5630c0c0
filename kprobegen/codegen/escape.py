"""Escaping: every value from a spec reaches generated code through one of these.

One implementation, :class:`Syntax`, spells a string literal, a comment and a signed 64-bit
integer; each target language is one instance of it, and its fields are exactly what differs
between the languages:

- ``C``: the kernel module (``module.c.j2``; also its filters ``c_string``, ``c_comment``,
  ``c_int``, with ``c_uint`` for C's unsigned literals);
- ``SCRIPT``: SystemTap and bpftrace, which read string literals, comments and integers the same
  way (``script_string``, ``script_comment``, ``script_int``).

Strings become literals whose every byte outside a small safe set is a 3-digit octal escape
(a following digit cannot extend it), so no quote, backslash, '%', '?' (C trigraphs) or, in
the scripts, '$' or '@' ever appears raw. Comments keep printable ASCII only and lose anything
that could end them. Integers are range-checked; S64_MIN, which cannot be written as a negated
literal, is spelled ``(-9223372036854775807 - 1)``.

Makefiles get identifiers only (:func:`make_escape`).
"""

from __future__ import annotations

from dataclasses import dataclass

from kprobegen.errors import RenderError
from kprobegen.ints import S64_MAX, S64_MIN, U64_MAX

__all__ = [
    "Syntax", "C", "SCRIPT",
    "c_string", "c_comment", "c_int", "c_uint",
    "script_string", "script_comment", "script_int",
    "make_escape",
]

_ALNUM = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@dataclass(frozen=True)
class Syntax:
    """How one target language writes a string literal, a comment and a signed 64-bit integer."""

    name: str
    # Bytes written as themselves inside "..."; every other byte is a 3-digit octal escape.
    string_safe: frozenset[int]
    # May a string hold a NUL byte (as \000)? The scripts' strings are C strings in the end, and
    # a NUL would cut them short: there it is refused (the spec check refuses it first).
    string_nul: bool
    # Printable characters that still become '?' in a comment (the scripts: '\\', a line splice
    # in C-like lexers).
    comment_unsafe: str
    # What "*/" and "/*" become, so that a comment can neither end nor open another.
    comment_breaks: tuple[str, str]
    # Suffix of an integer literal (C: "LL", so that it is a long long whatever its value).
    int_suffix: str
    # Is a negative integer parenthesised? (The scripts: "x - (-5)", never "x - -5".)
    int_negative_parens: bool

    def string(self, value: str | bytes) -> str:
        """A string literal holding exactly these bytes."""
        data = value.encode() if isinstance(value, str) else bytes(value)
        if not self.string_nul and b"\0" in data:
            raise RenderError(f"a NUL byte cannot be in a {self.name} string ({data!r}); "
                              "the spec check should have refused it")
        safe = self.string_safe
        return '"' + "".join(chr(b) if b in safe else f"\\{b:03o}" for b in data) + '"'

    def comment(self, value: str) -> str:
        """Text safe inside a comment: printable ASCII on one line, no comment terminator;
        anything else becomes '?'."""
        unsafe = self.comment_unsafe
        text = "".join(ch if " " <= ch <= "~" and ch not in unsafe else "?" for ch in str(value))
        end, start = self.comment_breaks
        return text.replace("*/", end).replace("/*", start)

    def integer(self, value: int) -> str:
        """A signed 64-bit integer literal."""
        if isinstance(value, bool) or not isinstance(value, int) or not S64_MIN <= value <= S64_MAX:
            raise RenderError(f"{self.name}: {value!r} is not a signed 64-bit integer")
        suffix = self.int_suffix
        if value == S64_MIN:
            return f"({S64_MIN + 1}{suffix} - 1)"
        if value < 0 and self.int_negative_parens:
            return f"({value}{suffix})"
        return f"{value}{suffix}"


C = Syntax(
    name="C",
    string_safe=frozenset(_ALNUM + b" _.,:;-+/()[]<>=!#@"),
    string_nul=True,
    comment_unsafe="",
    comment_breaks=("* /", "/ *"),
    int_suffix="LL",
    int_negative_parens=False,
)

SCRIPT = Syntax(
    name="SystemTap/bpftrace",
    string_safe=frozenset(_ALNUM + b" _.,:;-+/()[]<>=!#"),
    string_nul=False,
    comment_unsafe="\\",
    comment_breaks=("*?", "?*"),
    int_suffix="",
    int_negative_parens=True,
)

c_string = C.string
c_comment = C.comment
c_int = C.integer

script_string = SCRIPT.string
script_comment = SCRIPT.comment
script_int = SCRIPT.integer


def c_uint(value: int) -> str:
    """An unsigned 64-bit C literal (``ULL``)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U64_MAX:
        raise RenderError(f"C: {value!r} is not an unsigned 64-bit integer")
    return f"{value}ULL"


def make_escape(value: str) -> str:
    """For Makefile variables: only identifiers reach the Makefile; refuse anything else."""
    if not str(value).replace("_", "a").isalnum():
        raise RenderError(f"refusing to put {value!r} into a Makefile")
    return str(value)
