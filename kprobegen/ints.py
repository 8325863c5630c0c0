"""The integer ranges shared by the spec (what a value may be), the generated code (how it is
spelled) and the report protocol (what a module prints): C's fixed-width types on x86-64."""

from __future__ import annotations

S32_MIN = -(1 << 31)
S32_MAX = (1 << 31) - 1
U32_MAX = (1 << 32) - 1
S64_MIN = -(1 << 63)
S64_MAX = (1 << 63) - 1
U64_MAX = (1 << 64) - 1
