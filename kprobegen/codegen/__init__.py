"""Spec model → C module source and Kbuild Makefile, through Jinja templates.

Templates see the validated Spec (never raw YAML) and reach C only through the filters below,
which make injection impossible: strings become C string literals whose every byte outside a
small safe set is an octal escape; comments lose anything that could end them; integers are
range-checked and spelled with a type suffix.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import jinja2

from kprobegen import __version__, templates_dir
from kprobegen.errors import RenderError
from kprobegen.spec import S64_MAX, S64_MIN, Spec

# Source checkout: templates/ beside the package; wheel: kprobegen/templates (see pyproject.toml).
TEMPLATES = templates_dir()

_C_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _.,:;-+/()[]<>=!#@")


def c_string(value: str | bytes, safe: frozenset[int] = _C_SAFE) -> str:
    """A C string literal for any bytes: ``safe`` bytes as themselves, the rest as octal escapes.

    Octal escapes are always three digits, so a following digit cannot extend them.
    """
    data = value.encode() if isinstance(value, str) else bytes(value)
    return '"' + "".join(chr(b) if b in safe else f"\\{b:03o}" for b in data) + '"'


def c_comment(value: str) -> str:
    """Text safe inside a /* */ comment: printable ASCII only, no comment terminator."""
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in str(value))
    return text.replace("*/", "* /").replace("/*", "/ *")


def c_int(value: int) -> str:
    """A signed 64-bit C literal (``LL``); S64_MIN cannot be written as a negated literal."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RenderError(f"c_int: expected an integer, got {value!r}")
    if not S64_MIN <= value <= S64_MAX:
        raise RenderError(f"c_int: {value} does not fit in 64 bits")
    if value == S64_MIN:
        return f"({S64_MIN + 1}LL - 1)"
    return f"{value}LL"


def c_uint(value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << 64):
        raise RenderError(f"c_uint: {value!r} is not an unsigned 64-bit integer")
    return f"{value}ULL"


def make_escape(value: str) -> str:
    """For Makefile variables: only identifiers reach the Makefile; refuse anything else."""
    if not str(value).replace("_", "a").isalnum():
        raise RenderError(f"refusing to put {value!r} into a Makefile")
    return str(value)


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiled templates kept between processes: compiling them is most of a CLI render's time."""
    from kprobegen.kernels import cache_dir

    folder = cache_dir() / "jinja"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(str(folder))


@functools.lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    """The one Jinja environment (templates compile once per process)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        bytecode_cache=_bytecode_cache(),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(c_string=c_string, c_comment=c_comment, c_int=c_int, c_uint=c_uint, make_escape=make_escape)
    env.globals["version"] = __version__
    return env


def _context(spec: Spec) -> dict:
    if spec.has_globs:
        globs = ", ".join(h.symbol for h in spec.hooks if h.is_glob)
        raise RenderError(
            f"{spec.source}: hooks use symbol globs ({globs}); they are expanded against a kernel's "
            "symbol table: pass --kernel RELEASE (or expand the spec with Spec.expand) before rendering"
        )
    return {"spec": spec, "source_name": Path(spec.source).name}


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


def render_files(spec: Spec) -> dict[str, str]:
    """File name → content, for everything generated from one spec. Deterministic."""
    from kprobegen.codegen.equivalents import render_bpftrace, render_stap  # equivalents imports this module

    files = render_c_files(spec)
    files[f"{spec.module}.stp"] = render_stap(spec).text
    files[f"{spec.module}.bt"] = render_bpftrace(spec).text
    return files


def render_c(spec: Spec) -> str:
    """Just the module's C source (``kprobegen render --emit-c``)."""
    return render_c_files(spec)[f"{spec.module}.c"]


def write_files(files: dict[str, str], out_dir: str | Path) -> list[Path]:
    """Write all files or none: render into a temporary folder, then move into place."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".kprobegen-", dir=out))
    try:
        for name, text in files.items():
            (staging / name).write_text(text)
        written = []
        for name in files:
            os.replace(staging / name, out / name)
            written.append(out / name)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def render(spec: Spec, out_dir: str | Path) -> list[Path]:
    """Render a spec into ``out_dir``: ``<module>.c``, ``Makefile``, ``<module>.stp``, ``<module>.bt``."""
    return write_files(render_files(spec), out_dir)
