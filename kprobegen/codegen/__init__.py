"""Code generation: a validated Spec → the files kprobegen writes for it.

- ``<module>.c`` and its ``Makefile`` (the kernel module; :mod:`kprobegen.codegen.c`);
- ``<module>.stp`` and ``<module>.bt``, the SystemTap and bpftrace equivalents
  (:mod:`kprobegen.codegen.stap`, :mod:`kprobegen.codegen.bpftrace`, their shared parts in
  :mod:`kprobegen.codegen.scripts`).

All of them are rendered from templates/ through the one Jinja environment
(:mod:`kprobegen.codegen.jinja`), and every value from the spec reaches them through the
escapers of :mod:`kprobegen.codegen.escape` (one set per target language), which make
injection impossible.

Nothing here imports pydantic or the spec model at import time (the spec's types are for
annotations only).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kprobegen.cache import write_files
from kprobegen.codegen.bpftrace import render_bpftrace
from kprobegen.codegen.c import render_c, render_c_files, tidy_c
from kprobegen.codegen.escape import (
    c_comment,
    c_int,
    c_string,
    c_uint,
    make_escape,
    script_comment,
    script_int,
    script_string,
)
from kprobegen.codegen.jinja import environment
from kprobegen.codegen.scripts import Script
from kprobegen.codegen.stap import render_stap

if TYPE_CHECKING:
    from kprobegen.spec import Spec

__all__ = [
    "render_files", "write_files", "render", "render_c", "render_c_files", "render_stap", "render_bpftrace",
    "Script", "tidy_c", "environment",
    "c_string", "c_comment", "c_int", "c_uint", "make_escape", "script_string", "script_comment", "script_int",
]


def render_files(spec: Spec) -> dict[str, str]:
    """File name → content, for everything generated from one spec. Deterministic."""
    files = render_c_files(spec)
    files[f"{spec.module}.stp"] = render_stap(spec).text
    files[f"{spec.module}.bt"] = render_bpftrace(spec).text
    return files


def render(spec: Spec, out_dir: str | Path) -> list[Path]:
    """Render a spec into ``out_dir``: ``<module>.c``, ``Makefile``, ``<module>.stp``, ``<module>.bt``."""
    return write_files(render_files(spec), out_dir)
