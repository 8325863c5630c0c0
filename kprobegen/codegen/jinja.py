"""The one Jinja environment: every template in templates/ (the module's C and Makefile, the
SystemTap and bpftrace scripts, the VM's init script) is rendered through it.

Templates compile once per process, and their compiled form is kept in the cache between
processes (compiling them is most of a CLI render's time). Undefined names are errors
(StrictUndefined), nothing is autoescaped (no template produces HTML): values reach C and the
scripts only through the filters of :mod:`kprobegen.codegen.escape`.

This module imports neither the spec model nor pydantic, so that the VM stage can render its
init script without them.
"""

from __future__ import annotations

import functools

import jinja2

from kprobegen import __version__, templates_dir
from kprobegen.cache import cache_dir
from kprobegen.codegen.escape import c_comment, c_int, c_string, c_uint, make_escape
from kprobegen.errors import RenderError

__all__ = ["environment", "render_template"]


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiled templates kept between processes, in ``cache_dir()/jinja``; none when the cache
    folder cannot be made."""
    folder = cache_dir() / "jinja"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(str(folder))


@functools.lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    """The Jinja environment over templates/ (templates compile once per process).

    Filters: ``c_string``, ``c_comment``, ``c_int``, ``c_uint``, ``make_escape``; global:
    ``version`` (kprobegen's). Blocks are trimmed (``trim_blocks``, ``lstrip_blocks``), a
    template's trailing newline is kept."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
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


def render_template(name: str, context: dict) -> str:
    """Render one template; a template error (always a kprobegen bug) becomes a RenderError."""
    try:
        return environment().get_template(name).render(context)
    except jinja2.TemplateError as exc:
        raise RenderError(f"rendering {name} failed (a kprobegen bug): {exc}") from exc
