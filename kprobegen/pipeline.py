"""The whole path from a spec file to counts, as one API: spec → symbols → build → VM → report.

The CLI's `build` and `run` commands and the tests call these; a pytest plugin or a manager
service can too. Each stage keeps its own module and error type; this only strings them.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from kprobegen.errors import LoadError, VMError

if TYPE_CHECKING:  # spec.py (pydantic) is imported only when a spec must be read
    from kprobegen.spec import Spec

Progress = Callable[[str], None]


def _stderr(kind: str) -> Progress:
    """Warnings and notes of the API go to stderr unless the caller takes them (one line each)."""
    def say(message: str) -> None:
        if sys.stderr is not None:
            print(f"kprobegen: {kind}: {message}", file=sys.stderr)
    return say


def _ambiguity_warning(spec: Spec, profile) -> str | None:
    names = sorted({h.symbol for h in spec.hooks} & profile.ambiguous)
    if not names:
        return None
    shown = ", ".join(names[:8]) + (f", … ({len(names)} in all)" if len(names) > 8 else "")
    return (f"{len(names)} hooked name{'s are' if len(names) > 1 else ' is'} ambiguous in kernel {profile.release} "
            f"(several functions share the name; register_kprobe attaches to the first): {shown}")


def prepare(spec: Spec | str | Path, kernel=None, *, check_symbols: bool = True, progress: Progress | None = None,
            warn: Progress | None = None, accel: str | None = None) -> Spec:
    """Load the spec; expand globs and refuse unknown or blacklisted symbols against the kernel's profile.

    The profile (kallsyms, kprobe blacklist) is captured once per kernel by booting it under
    ``accel`` (auto / kvm / tcg; None: $KPROBEGEN_ACCEL or auto), then cached.
    Hooked names that several kernel functions share are listed to ``warn`` (default: stderr).
    """
    if isinstance(spec, (str, Path)):
        from kprobegen.spec import load_spec

        spec = load_spec(spec)
    if kernel is None or not (check_symbols or spec.has_globs):
        return spec
    from kprobegen.kernels.symbols import load_profile

    profile = load_profile(kernel, progress=progress, accel=accel)
    if spec.has_globs:
        spec = spec.expand(profile.expand)
    if check_symbols:
        for hook in spec.hooks:
            profile.check(hook.symbol)
    ambiguous = _ambiguity_warning(spec, profile)
    if ambiguous:
        (warn or _stderr("warning"))(ambiguous)
    return spec


def build_spec(spec: Spec | str | Path, out_dir: str | Path, *, kernel=None, kernel_dir: str | Path | None = None,
               check_symbols: bool = True, use_cache: bool = True, strict: bool = False,
               progress: Progress | None = None, note: Progress | None = None, use_profile: bool = True,
               accel: str | None = None):
    """Render and build the spec's module for ``kernel`` or the tree ``kernel_dir``: (the
    kbuild.BuiltModule, the prepared Spec or None when the build came from the cache).

    A spec file built unchanged for this tree before is served by its bytes, without reading
    the YAML or the templates (``kbuild.cached_by_spec``); with ``strict``, a cached build
    that had warnings is built again so that they fail it. A damaged cache entry is dropped
    and rebuilt, and ``note`` (default: stderr) says so. With ``use_profile`` False the
    kernel's profile is not read (nor captured): no symbol check and no glob expansion.
    """
    from kprobegen.kbuild import build, cached_by_spec, remember_spec, tree_release

    say = progress or (lambda message: None)
    note = note or _stderr("note")
    spec_file = Path(spec) if isinstance(spec, (str, Path)) else None
    if use_cache and spec_file is not None:
        tree = Path(kernel_dir) if kernel_dir else (Path(kernel.build_dir) if kernel and kernel.build_dir else None)
        if tree is not None and (tree / "Makefile").is_file():
            release = kernel.release if kernel else tree_release(tree)
            built = cached_by_spec(spec_file, out_dir, tree, release, check_symbols, note=note)
            if built is not None and not (strict and built.warnings):
                say(f"cached build of {built.name} for {release}")
                return built, None
    spec = prepare(spec, kernel if use_profile else None, check_symbols=check_symbols, progress=say, accel=accel)
    built = build(spec, out_dir, kernel=kernel, kernel_dir=kernel_dir, use_cache=use_cache, strict=strict,
                  progress=say, note=note)
    if use_cache and spec_file is not None:
        remember_spec(spec_file, built, check_symbols)
    return built, spec


#: Bytes of each of the workload's streams that ``run --json`` carries (the rest is cut).
OUTPUT_JSON_LIMIT = 1 << 20


@dataclass
class SpecRun:
    """One spec run in a VM: the build, the VM run, and the parsed results."""

    spec: Spec | None      # None when the build came from the cache by the spec file's bytes
    built: object          # kbuild.BuiltModule
    run: object            # vm.Run
    results: list          # report.Results of this module (latest complete report)
    # what the parser found wrong in the kernel log as a whole (lines refused because user
    # space wrote them or their check failed, conflicts, lost lines): said, never dropped
    log_problems: list = field(default_factory=list)

    def to_json(self) -> dict:
        """The module's report in the documented results shape (docs/results.md), plus the run:
        the workload's exit code and output (each stream up to OUTPUT_JSON_LIMIT bytes, UTF-8
        with undecodable bytes as ``\\xHH``; ``truncated`` says whether either was cut)."""
        (results,) = self.results
        out = results.to_json()
        out["exit_code"] = self.run.exit_code
        cut = False
        for name in ("stdout", "stderr"):
            data = getattr(self.run, f"{name}_bytes")
            cut = cut or len(data) > OUTPUT_JSON_LIMIT
            out[name] = data[:OUTPUT_JSON_LIMIT].decode("utf-8", "backslashreplace")
        out["truncated"] = cut
        out["accel"] = self.run.accel
        out["kernel"] = self.built.kernel_release
        out["timings"] = {k: round(v, 3) for k, v in self.run.timings.items()}
        out["log_problems"] = list(self.log_problems)
        return out


def run_spec(
    spec: Spec | str | Path,
    cmd: Sequence[str],
    *,
    kernel_release: str | None = None,
    add: Sequence[tuple[Path, str]] = (),
    timeout: float = 120.0,
    accel: str | None = None,
    check_symbols: bool = True,
    oracles: Sequence = (),
    progress: Progress | None = None,
    out_dir: str | Path | None = None,
) -> SpecRun:
    """Build the spec's module for a kernel, load it in a disposable VM, run ``cmd``, unload, parse.

    Raises VMError when the guest panics, hangs or loses its output; LoadError when insmod
    fails (the kernel's reason included; nothing stays loaded: the VM is gone).

    Without ``out_dir`` the module is built in a temporary folder that is gone when this
    returns or raises (the returned ``built.ko`` no longer exists then); with it, the module
    and its sources stay there.
    """
    from kprobegen import vm
    from kprobegen.kernels import find_kernel
    from kprobegen.report import parse_log

    say = progress or (lambda message: None)
    kernel = find_kernel(kernel_release)
    temporary = None if out_dir else Path(tempfile.mkdtemp(prefix="kpg-run-"))
    try:
        built, prepared = build_spec(spec, out_dir or temporary, kernel=kernel, check_symbols=check_symbols,
                                     progress=say, accel=accel)
        run = vm.run(kernel, [built.ko], list(cmd), add=list(add), timeout=timeout, accel=accel,
                     oracles=list(oracles), progress=say)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    run.raise_for_status()
    for load in run.loads:
        if load.insmod_rc != 0:
            raise LoadError(f"insmod {load.name} failed in the VM ({kernel.release}): {load.reason or 'no reason given'}")
    log = parse_log(run.kernel_log)     # /dev/kmsg records: only the kernel's lines count
    results = log.results(module=built.name)
    return SpecRun(prepared, built, run, results, log.problems + log.notes)


__all__ = ["prepare", "build_spec", "run_spec", "SpecRun", "VMError"]
