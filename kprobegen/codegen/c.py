"""The kernel module: ``<module>.c`` and its Kbuild ``Makefile``, from templates/module.c.j2 and
templates/Makefile.j2.

The templates read the validated Spec (never raw YAML) and reach C only through the escaping
filters (:mod:`kprobegen.codegen.escape`) and the C helpers in their context here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import jinja2

from kprobegen.codegen.jinja import environment
from kprobegen.errors import RenderError

if TYPE_CHECKING:
    from kprobegen.spec import Hook, Spec

__all__ = ["C_CASTS", "c_cast", "render_c_files", "render_c", "tidy_c"]

# How each of the spec's value types (hooks[].types) narrows a 64-bit register in C; the
# template widens the result back to long.
C_CASTS = {"long": "", "int": "(int)", "unsigned int": "(unsigned int)"}


def c_cast(hook: Hook, name: str) -> str:
    """The C cast that narrows argN / retval of ``hook`` to its type in the spec ("" for long)."""
    return C_CASTS[hook.value_type(name)]


def _context(spec: Spec) -> dict:
    if spec.has_globs:
        globs = ", ".join(h.symbol for h in spec.hooks if h.is_glob)
        raise RenderError(
            f"{spec.source}: hooks use symbol globs ({globs}); they are expanded against a kernel's "
            "symbol table: pass --kernel RELEASE (or expand the spec with Spec.expand) before rendering"
        )
    return {"spec": spec, "source_name": Path(spec.source).name, "c_cast": c_cast}


def tidy_c(text: str) -> str:
    """Blank lines left by template conditionals: at most one in a row, none after "{" or before "}"."""
    out: list[str] = []
    for line in text.split("\n"):
        if not line.strip():
            if not out or not out[-1].strip() or out[-1].rstrip().endswith("{"):
                continue
        elif line.strip().startswith("}") and out and not out[-1].strip():
            out.pop()
        out.append(line)
    return "\n".join(out).rstrip("\n") + "\n"


def render_c_files(spec: Spec) -> dict[str, str]:
    """File name → content for the kernel module alone: ``<module>.c`` and its ``Makefile``."""
    env = environment()
    context = _context(spec)
    try:
        return {
            f"{spec.module}.c": tidy_c(env.get_template("module.c.j2").render(context)),
            "Makefile": env.get_template("Makefile.j2").render(context),
        }
    except jinja2.TemplateError as exc:
        raise RenderError(f"rendering {spec.source} failed in the templates (a kprobegen bug): {exc}") from exc


def render_c(spec: Spec) -> str:
    """Just the module's C source (``kprobegen render --emit-c``)."""
    return render_c_files(spec)[f"{spec.module}.c"]
