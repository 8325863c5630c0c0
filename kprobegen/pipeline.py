"""The whole path from a spec file to counts, as one API: spec → symbols → build → VM → report.

The CLI's `build` and `run` commands and the tests call these; a pytest plugin or a manager
service can too. Each stage keeps its own module and error type; this only strings them.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .errors import LoadError, VMError

if TYPE_CHECKING:  # spec.py (pydantic) is imported only when a spec must be read
    from .spec import Spec

Progress = Callable[[str], None]


def prepare(spec: Spec | str | Path, kernel=None, *, check_symbols: bool = True, progress: Progress | None = None) -> Spec:
    """Load the spec; expand globs and refuse unknown or blacklisted symbols against the kernel's profile.

    The profile (kallsyms, kprobe blacklist) is captured once per kernel by booting it, then cached.
    """
    if isinstance(spec, (str, Path)):
        from .spec import load_spec

        spec = load_spec(spec)
    if kernel is None or not (check_symbols or spec.has_globs):
        return spec
    from .symbols import load_profile

    profile = load_profile(kernel, progress=progress)
    if spec.has_globs:
        spec = spec.expand(profile.expand)
    if check_symbols:
        for hook in spec.hooks:
            profile.check(hook.symbol)
    return spec


@dataclass
class SpecRun:
    """One spec run in a VM: the build, the VM run, and the parsed results."""

    spec: Spec | None      # None when the build came from the cache by the spec file's bytes
    built: object          # kbuild.BuiltModule
    run: object            # vm.Run
    results: list          # report.Results of this module (latest complete report)

    def to_json(self) -> dict:
        """The module's report in the documented results shape (docs/results.md), plus the run."""
        (results,) = self.results
        out = results.to_json()
        out["exit_code"] = self.run.exit_code
        out["accel"] = self.run.accel
        out["kernel"] = self.built.kernel_release
        out["timings"] = {k: round(v, 3) for k, v in self.run.timings.items()}
        return out


def run_spec(
    spec: Spec | str | Path,
    cmd: Sequence[str],
    *,
    kernel_release: str | None = None,
    add: Sequence[tuple[Path, str]] = (),
    timeout: float = 120.0,
    accel: str = "auto",
    check_symbols: bool = True,
    oracles: Sequence = (),
    progress: Progress | None = None,
    out_dir: str | Path | None = None,
) -> SpecRun:
    """Build the spec's module for a kernel, load it in a disposable VM, run ``cmd``, unload, parse.

    Raises VMError when the guest panics, hangs or loses its output; LoadError when insmod
    fails (the kernel's reason included; nothing stays loaded: the VM is gone).
    """
    from . import vm
    from .kbuild import build, cached_by_spec, remember_spec
    from .kernels import find_kernel
    from .report import parse_log

    say = progress or (lambda message: None)
    kernel = find_kernel(kernel_release)
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="kpg-run-"))
    built = None
    if isinstance(spec, (str, Path)) and kernel.build_dir is not None:
        # An unchanged spec file built (and its symbols checked) for this kernel before.
        built = cached_by_spec(Path(spec), out, Path(kernel.build_dir), kernel.release, check_symbols)
        if built is not None:
            say(f"cached build of {built.name} for {kernel.release}")
    if built is None:
        spec_file = Path(spec) if isinstance(spec, (str, Path)) else None
        spec = prepare(spec, kernel, check_symbols=check_symbols, progress=say)
        built = build(spec, out, kernel=kernel, progress=say)
        if spec_file is not None:
            remember_spec(spec_file, built, check_symbols)
    run = vm.run(kernel, [built.ko], list(cmd), add=list(add), timeout=timeout, accel=accel,
                 oracles=list(oracles), progress=say)
    run.raise_for_status()
    for load in run.loads:
        if load.insmod_rc != 0:
            raise LoadError(f"insmod {load.name} failed in the VM ({kernel.release}): {load.reason or 'no reason given'}")
    results = parse_log(run.kernel_log).results(module=built.name)
    return SpecRun(None if isinstance(spec, (str, Path)) else spec, built, run, results)


__all__ = ["prepare", "run_spec", "SpecRun", "VMError"]
