"""The whole path from a spec file to counts, as one API: spec → symbols → build → VM → report.

The one module that joins the stages (docs/architecture.md): the CLI's `check`, `render`,
`build` and `run` commands and the tests call it; a pytest plugin or a manager service can
too. Each stage keeps its own package and error type; this only strings them, and turns a
kernel named by the user into a Kernel once (``resolve_kernel``).

Lazy imports, each for a measured start-up cost: a build served from the cache by the spec
file's bytes (bench/build_bench.py's "cached" figure) must not pay for what it does not use:
spec (pydantic) and codegen (jinja2) when no spec is read, vm and report when
nothing boots, host (the sh library, which imports asyncio) outside host mode.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from kprobegen.cache import cache_dir
from kprobegen.errors import KernelError, LoadError, ReportError, SymbolError, VMError
from kprobegen.kbuild import BuiltModule, build, cached_by_spec, missing_tree_error, remember_spec, tree_release
from kprobegen.kernels import Kernel, find_kernel
from kprobegen.kernels.symbols import Capture, load_profile

if TYPE_CHECKING:  # imported when used (see above)
    from kprobegen import host, vm
    from kprobegen.report import LogParse, Results
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


def resolve_kernel(release: str | None) -> Kernel:
    """The Kernel a user named (a release, a suite such as "bullseye", or None for the
    default), with one message when there is none. The running kernel without headers gets
    the build stage's message: which package to install, and whether it could load anyway."""
    try:
        return find_kernel(release)
    except KernelError:
        if release is not None and release == os.uname().release:
            raise missing_tree_error(Path(f"/lib/modules/{release}/build"), release) from None
        raise


def profile_capture(accel: str | None = None, progress: Progress | None = None) -> Capture:
    """How a missing kernel profile is captured: one boot of the kernel in the VM, under
    ``accel`` (auto / kvm / tcg; None: $KPROBEGEN_ACCEL or auto)."""
    def capture(kernel: Kernel):
        from kprobegen import vm

        return vm.capture_profile(kernel, progress=progress, accel=accel)
    return capture


def prepare(spec: Spec | str | Path, kernel: Kernel | None = None, *, check_symbols: bool = True,
            progress: Progress | None = None, warn: Progress | None = None, accel: str | None = None) -> Spec:
    """Load the spec; expand globs and refuse unknown or blacklisted symbols against the
    ``kernel``'s profile (None: neither).

    The profile (kallsyms, kprobe blacklist) is captured once per kernel by booting it under
    ``accel`` (see profile_capture), then cached.
    Hooked names that several kernel functions share are listed to ``warn`` (default: stderr).
    """
    if isinstance(spec, (str, Path)):
        from kprobegen.spec import load_spec

        spec = load_spec(spec)
    if kernel is None or not (check_symbols or spec.has_globs):
        return spec
    profile = load_profile(kernel, capture=profile_capture(accel, progress), progress=progress)
    spec = check_symbols_against(spec, profile, check=check_symbols)
    ambiguous = _ambiguity_warning(spec, profile)
    if ambiguous:
        (warn or _stderr("warning"))(ambiguous)
    return spec


def check_symbols_against(spec: Spec, profile, *, check: bool = True) -> Spec:
    """The spec with its globs expanded against ``profile``; with ``check``, SymbolError at the
    place in the spec (file:line:col) of the first hooked symbol the kernel cannot probe.
    The written hooks are checked before expansion, while each is where the file has it; what
    a glob matches is probe-able by construction."""
    if check:
        for i, hook in enumerate(spec.hooks):
            if not hook.is_glob:
                try:
                    profile.check(hook.symbol)
                except SymbolError as exc:
                    raise SymbolError(f"{spec.at(('hooks', i, 'symbol'))}: hooks[{i}].symbol: {exc}") from None
    return spec.expand(profile.expand) if spec.has_globs else spec


def build_module(spec: Spec, out_dir: str | Path, *, kernel: Kernel | None = None,
                 kernel_dir: str | Path | None = None, use_cache: bool = True, strict: bool = False,
                 progress: Progress | None = None, note: Progress | None = None) -> BuiltModule:
    """Render a validated spec (codegen) and build its module (kbuild) for ``kernel`` or the
    tree ``kernel_dir`` (one of the two) into ``out_dir``, the rendered files beside the .ko."""
    from kprobegen.codegen import render_files

    return build(render_files(spec), out_dir, module=spec.module, source=spec.source,
                 hooks=[(h.hook_name, h.symbol) for h in spec.hooks], kernel=kernel, kernel_dir=kernel_dir,
                 use_cache=use_cache, strict=strict, progress=progress, note=note)


def build_spec(spec: Spec | str | Path, out_dir: str | Path, *, kernel: Kernel | None = None,
               kernel_dir: str | Path | None = None,
               check_symbols: bool = True, use_cache: bool = True, strict: bool = False,
               progress: Progress | None = None, note: Progress | None = None, use_profile: bool = True,
               accel: str | None = None):
    """Render and build the spec's module for ``kernel`` or the tree ``kernel_dir`` (one of the
    two): (the BuiltModule, the prepared Spec or None when the build came from the cache).

    A spec file built unchanged for this tree before is served by its bytes, without reading
    the YAML or the templates (``kbuild.cached_by_spec``); with ``strict``, a cached build
    that had warnings is built again so that they fail it. A damaged cache entry is dropped
    and rebuilt, and ``note`` (default: stderr) says so. With ``use_profile`` False the
    kernel's profile is not read (nor captured): no symbol check and no glob expansion.
    """
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
    built = build_module(spec, out_dir, kernel=kernel, kernel_dir=kernel_dir, use_cache=use_cache, strict=strict,
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
    built: BuiltModule
    run: vm.Run
    results: list[Results]  # this module's latest complete report; or its latest frame, incomplete
    # (complete=False, with its problems), when the log holds no complete report: report_error says why
    # what the parser found wrong in the kernel log as a whole (lines refused because user
    # space wrote them or their check failed, conflicts, lost lines): said, never dropped
    log_problems: list = field(default_factory=list)
    report_error: str | None = None

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
    kernel: Kernel,
    add: Sequence[tuple[Path, str]] = (),
    timeout: float = 120.0,
    accel: str | None = None,
    check_symbols: bool = True,
    oracles: Sequence = (),
    progress: Progress | None = None,
    out_dir: str | Path | None = None,
) -> SpecRun:
    """Build the spec's module for ``kernel``, load it in a disposable VM, run ``cmd``, unload, parse.

    Raises VMError when the guest panics, hangs or loses its output; LoadError when insmod
    fails (the kernel's reason included; nothing stays loaded: the VM is gone).

    Without ``out_dir`` the module is built in a temporary folder that is gone when this
    returns or raises (the returned ``built.ko`` no longer exists then); with it, the module
    and its sources stay there.
    """
    from kprobegen import vm
    from kprobegen.report import parse_log

    say = progress or (lambda message: None)
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
    results, report_error = module_report(log, built.name)
    return SpecRun(prepared, built, run, results, log.problems + log.notes, report_error)


def module_report(log: LogParse, module: str) -> tuple[list[Results], str | None]:
    """A module's report from a parsed log: ([its latest complete report], None); when there
    is none (conflicting or cut frames), ([its latest frame, complete=False with its
    problems], why) so that the caller can show it and still fail. ReportError when the
    module printed no frame at all."""
    try:
        return log.results(module=module), None
    except ReportError as exc:
        frames = [f for f in log.frames if f.module == module]
        if not frames:
            raise
        return [frames[-1].results()], str(exc)


def build_on_host(spec_path: str | Path, *, progress: Progress | None = None) -> BuiltModule:
    """Check the spec's symbols against the running kernel and build it against the running
    kernel's headers (host mode's build step; the manager service runs it outside its lock)."""
    from kprobegen import host
    from kprobegen.spec import load_spec

    say = progress or (lambda message: None)
    spec = load_spec(spec_path)
    host.require_loading()
    tree = Path(f"/lib/modules/{host.release()}/build")
    if not (tree / "Makefile").is_file():
        raise missing_tree_error(tree, host.release())
    if host.is_loaded(spec.module):
        why = "by kprobegen" if host.is_ours(spec.module) else "and it is not a kprobegen module"
        raise LoadError(f"module {spec.module} is already loaded {why}: unload it first "
                        f"(kprobegen unload {spec.module})")
    spec = check_symbols_against(spec, host.running_profile())
    say(f"building {spec.module} against {tree}")
    return build_module(spec, cache_dir() / "host" / spec.module, kernel_dir=tree, progress=say)


def load_on_host(spec_path: str | Path, *, progress: Progress | None = None) -> "host.LoadedModule":
    """Check the spec's symbols against the running kernel, build it against the running
    kernel's headers, and insmod it (host mode). The module stays loaded."""
    from kprobegen import host

    built = build_on_host(spec_path, progress=progress)
    if progress:
        progress(f"loading {built.ko}")
    return host.load_ko(built.ko, spec=spec_path, loading_checked=True)


__all__ = ["resolve_kernel", "profile_capture", "prepare", "build_module", "build_spec", "run_spec", "SpecRun", "module_report", "build_on_host", "load_on_host", "check_symbols_against", "VMError"]
