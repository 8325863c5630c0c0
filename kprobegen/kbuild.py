"""Build the files it is handed (a module's C and Makefile, rendered by kprobegen.codegen)
into a .ko with Kbuild, against a kernel's tree.

A build is keyed by everything that decides its output: the files Kbuild reads (so the spec
and the generator version), the kernel tree and its release, and the make variables. A key
that was built before is copied from the cache, which makes an unchanged rebuild near-instant.
A second index maps a spec file's bytes to its build (``cached_by_spec``), so that a build of
an unchanged spec file needs neither the spec model nor the templates.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
import json
from typing import Callable, Mapping, Sequence

from kprobegen import __version__, templates_dir
from kprobegen.cache import atomic_copy, cache_dir, copy_to_temp, drop_dir, publish_dir, staging_dir, write_files
from kprobegen.errors import BuildError, SpecError
from kprobegen.kernels import Kernel, toolchain
from kprobegen.kernels.modules import host_module_support
from kprobegen.kernels.toolchain import installed_headers_hint
from kprobegen.specfile import is_stdin, read_spec_bytes

Progress = Callable[[str], None]

# Cache entries hold a manifest.json naming each artifact with its size and sha256; an entry
# whose files do not match it is damaged, dropped and built again. Bumped when the layout
# changes (it is part of both cache keys, so older entries are simply never looked up).
CACHE_FORMAT = 2


@dataclass(frozen=True)
class BuiltModule:
    name: str
    ko: Path                      # the module, in the output folder
    out_dir: Path
    kernel_release: str
    kernel_dir: Path
    cached: bool                  # copied from the build cache, no compiler run
    warnings: tuple[str, ...] = ()  # compiler warning lines, empty for a clean build
    command: tuple[str, ...] = field(default=())
    sources: tuple[str, ...] = ()     # the rendered files written beside the .ko


def tree_release(kernel_dir: Path) -> str:
    """The release a Kbuild tree builds for, as vermagic will say it.

    include/generated/utsrelease.h, not include/config/kernel.release: Debian's header packages
    carry the upstream version there ("6.1.192"), not the package release ("6.1.0-56-cloud-amd64").
    """
    try:
        text = (kernel_dir / "include" / "generated" / "utsrelease.h").read_text()
    except OSError:
        return ""
    match = re.search(r'#define UTS_RELEASE "([^"]+)"', text)
    return match.group(1) if match else ""


def make_command(kernel_dir: Path, module_dir: Path, make_vars: dict[str, str] | None = None) -> list[str]:
    """The Kbuild invocation (shown by --show-command)."""
    extra = [f"{k}={v}" for k, v in sorted((make_vars or {}).items())]
    return ["make", "-C", str(kernel_dir), f"M={module_dir}", *extra, f"-j{os.cpu_count() or 1}", "modules"]


def missing_tree_error(kernel_dir: Path, release: str | None) -> BuildError:
    """The one message for a missing Kbuild tree: which headers package to install and, for
    the running kernel, whether this machine could load a module at all."""
    release = release or kernel_dir.parent.name
    message = f"no kernel build tree at {kernel_dir}"
    if release:
        message += f" (kernel {release}): {installed_headers_hint(release)}"
    if release == os.uname().release:
        supported, why = host_module_support()
        if not supported:
            message += (f"; besides, this machine's own kernel cannot load modules ({why}): build for a VM kernel "
                        "with --kernel RELEASE (see `kprobegen kernels list`) and load it with `kprobegen run`")
    return BuildError(message)


def resolve_tree(kernel: Kernel | None = None, kernel_dir: str | Path | None = None) -> tuple[Path, str, dict[str, str]]:
    """(tree, release, make variables) for a Kernel or an explicit tree (one of the two)."""
    if kernel_dir is not None:
        tree = Path(kernel_dir)
        if not (tree / "Makefile").is_file():
            raise missing_tree_error(tree, None)
        return tree, tree_release(tree), {}
    if kernel is None:
        raise TypeError("resolve_tree: give a Kernel or a kernel_dir")
    if kernel.build_dir is None or not (Path(kernel.build_dir) / "Makefile").is_file():
        raise missing_tree_error(Path(kernel.build_dir or f"/lib/modules/{kernel.release}/build"), kernel.release)
    problem, make_vars = toolchain.plan(kernel)
    if problem:
        raise BuildError(f"cannot build for {kernel.release}: {problem}")
    return Path(kernel.build_dir), kernel.release, dict(make_vars)


def _cache_root() -> Path:
    return cache_dir() / "builds"


class _Damaged(Exception):
    """A cache entry whose files do not match its manifest."""


def _manifest(entry: Path, str_fields: tuple[str, ...] = (), list_fields: tuple[str, ...] = ()) -> dict:
    """The manifest of a cache entry, checked for shape (not yet against the files)."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
    except FileNotFoundError:
        raise _Damaged("no manifest.json") from None
    except (OSError, ValueError) as exc:
        raise _Damaged(f"unreadable manifest.json ({exc.__class__.__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise _Damaged("manifest.json is not a kprobegen manifest")
    artifacts = manifest.get("artifacts")
    if not isinstance(artifacts, dict) or not artifacts:
        raise _Damaged("manifest.json lists no artifacts")
    for name, meta in artifacts.items():
        if (not isinstance(name, str) or name != Path(name).name or name.startswith(".")
                or not isinstance(meta, dict) or not isinstance(meta.get("size"), int)
                or not isinstance(meta.get("sha256"), str)):
            raise _Damaged(f"manifest.json has a malformed artifact entry {str(name)[:40]!r}")
    for key in str_fields:
        if not isinstance(manifest.get(key), str):
            raise _Damaged(f"manifest.json has no {key}")
    for key in list_fields:
        value = manifest.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _Damaged(f"manifest.json has no list of {key}")
    return manifest


def _write_entry(entry: Path, files: dict[str, Path], meta: dict) -> None:
    """Publish a cache entry: copies of ``files`` (name -> source path) and a manifest with
    their sizes and hashes, all at once. An entry already there (a concurrent build of the
    same key) is kept."""
    staging = staging_dir(entry)
    try:
        artifacts = {}
        for name, src in files.items():
            tmp, size, sha = copy_to_temp(src, staging / name)
            os.replace(tmp, staging / name)
            artifacts[name] = {"size": size, "sha256": sha}
        (staging / "manifest.json").write_text(json.dumps({**meta, "format": CACHE_FORMAT, "artifacts": artifacts}))
        publish_dir(staging, entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _serve_entry(entry: Path, manifest: dict, out: Path) -> None:
    """Copy every artifact of a cache entry into ``out``, each checked against the manifest's
    size and sha256 while it is copied; all land in ``out`` only once all are good."""
    staged: list[tuple[Path, Path]] = []
    try:
        for name, meta in manifest["artifacts"].items():
            try:
                tmp, size, sha = copy_to_temp(entry / name, out / name)
            except FileNotFoundError:
                raise _Damaged(f"{name} is missing") from None
            staged.append((tmp, out / name))
            if (size, sha) != (meta["size"], meta["sha256"]):
                raise _Damaged(f"{name} is {size} bytes with another hash than the {meta['size']} bytes recorded")
        for tmp, dest in staged:
            os.replace(tmp, dest)
        staged = []
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def _drop(entry: Path, why: str, note: Progress | None) -> None:
    drop_dir(entry)
    if note:
        note(f"the build cache entry {entry} was damaged ({why}): dropped it; building again")


def _tree_stamp(tree: Path) -> bytes:
    """The mtime of the tree's generated config (b"" without one): a tree reinstalled in place
    under the same release changes it."""
    autoconf = tree / "include" / "generated" / "autoconf.h"
    return str(autoconf.stat().st_mtime_ns).encode() if autoconf.exists() else b""


def _read_by_kbuild(name: str) -> bool:
    return name in ("Makefile", "Kbuild") or name.endswith((".c", ".h"))


def cache_key(files: dict[str, str], kernel_dir: Path, release: str, make_vars: dict[str, str]) -> str:
    digest = hashlib.sha256()
    digest.update(f"kprobegen {__version__}\0cache-format={CACHE_FORMAT}\0{kernel_dir.resolve()}\0{release}\0".encode())
    digest.update(_tree_stamp(kernel_dir))
    for key, value in sorted(make_vars.items()):
        digest.update(f"{key}={value}\0".encode())
    # Only what Kbuild reads: the .stp and .bt beside the module are rewritten from the fresh
    # rendering on a cache hit, so a change to their templates needs no rebuild.
    for name in sorted(n for n in files if _read_by_kbuild(n)):
        digest.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return digest.hexdigest()[:32]


_DIAGNOSTIC = re.compile(r"^(?P<file>[^:\s]+\.c):(?P<line>\d+):(?:(?P<col>\d+):)? (?P<kind>error|warning|fatal error): (?P<msg>.*)$")


_HOOK_SECTION = re.compile(r"^ \* Hook (\w+): ")


def _hooks_by_line(c_source: str) -> list[str | None]:
    """[n] is the hook whose generated code holds line n (sections start with " * Hook NAME:",
    the report section ends them); [0] is None."""
    hooks: list[str | None] = [None]
    hook = None
    for text in c_source.splitlines():
        match = _HOOK_SECTION.match(text)
        if match:
            hook = match.group(1)
        elif text.startswith("/* ---") and "report" in text:
            hook = None
        hooks.append(hook)
    return hooks


def explain_compiler_output(output: str, c_source: str, hooks: Sequence[tuple[str, str]] = ()) -> list[str]:
    """Compiler diagnostics, each tagged with the hook whose code it is in: ``hooks`` are the
    spec's (hook name, symbol) pairs, in the spec's order."""
    index = {name: i for i, (name, _) in enumerate(hooks)}
    by_line: list[str | None] | None = None  # scanned at the first diagnostic
    lines = []
    for text in output.splitlines():
        match = _DIAGNOSTIC.match(text.strip())
        if not match:
            continue
        if by_line is None:
            by_line = _hooks_by_line(c_source)
        hook = by_line[min(int(match["line"]), len(by_line) - 1)]
        where = f" [hook {hook}, spec hooks[{index[hook]}] symbol {hooks[index[hook]][1]}]" if hook in index else ""
        lines.append(f"{Path(match['file']).name}:{match['line']}: {match['kind']}: {match['msg']}{where}")
    return lines


def build(
    files: Mapping[str, str],
    out_dir: str | Path,
    *,
    module: str,
    source: str = "",
    hooks: Sequence[tuple[str, str]] = (),
    kernel: Kernel | None = None,
    kernel_dir: str | Path | None = None,
    use_cache: bool = True,
    strict: bool = False,
    progress: Progress | None = None,
    note: Progress | None = None,
) -> BuiltModule:
    """Build ``<module>.ko`` from ``files`` (name → text: ``<module>.c``, its ``Makefile``, and
    whatever else should land beside the .ko) into ``out_dir``, with the files.

    The tree is the ``kernel``'s, or the explicit Kbuild tree ``kernel_dir``. ``source`` (the
    spec's name) and ``hooks`` (its (hook name, symbol) pairs) make compiler errors point at
    the spec. ``strict`` turns compiler warnings into a BuildError. ``note`` hears about a
    damaged cache entry that was dropped.
    """
    say = progress or (lambda message: None)
    tree, release, make_vars = resolve_tree(kernel, kernel_dir)
    files = dict(files)
    c_name = f"{module}.c"
    key = cache_key(files, tree, release, make_vars)
    cached = _cache_root() / key
    out = Path(out_dir)
    ko_name = f"{module}.ko"

    if use_cache and (cached.exists() or cached.is_symlink()):
        try:
            manifest = _manifest(cached, list_fields=("warnings",))
            if list(manifest["artifacts"]) != [ko_name]:
                raise _Damaged(f"manifest.json does not list {ko_name}")
            write_files(files, out)
            _serve_entry(cached, manifest, out)
            say(f"cached build of {module} for {release}")
            return BuiltModule(module, out / ko_name, out, release, tree, True, tuple(manifest["warnings"]),
                               sources=tuple(files))
        except _Damaged as exc:
            _drop(cached, str(exc), note)

    work = Path(tempfile.mkdtemp(prefix=f"kpg-{module}-"))
    try:
        write_files(files, work)
        command = make_command(tree, work, make_vars)
        say(f"building {ko_name} for {release}")
        import sh  # here, not at the top: a cached build never runs a command

        try:
            result = sh.Command(command[0])(*command[1:], _err_to_out=True, _tty_out=False,
                                                            _env={**os.environ, "LC_ALL": "C"})
            output = str(result)
        except sh.ErrorReturnCode as exc:
            output = exc.stdout.decode(errors="replace")
            diagnostics = explain_compiler_output(output, files[c_name], hooks) or output.strip().splitlines()[-8:]
            raise BuildError(
                f"Kbuild failed for {source or module} against {tree} ({release}):\n  " + "\n  ".join(diagnostics[:12])
            ) from None
        except sh.CommandNotFound:
            raise BuildError("`make` is not installed: apt-get install make gcc") from None
        warnings = tuple(explain_compiler_output(output, files[c_name], hooks))
        if strict and warnings:
            raise BuildError(f"{source or module}: the generated C built with warnings:\n  " + "\n  ".join(warnings))
        if not (work / ko_name).is_file():
            raise BuildError(f"Kbuild reported success but wrote no {ko_name} in {work}")
        write_files(files, out)
        atomic_copy(work / ko_name, out / ko_name)
        if use_cache:
            try:
                _write_entry(cached, {ko_name: work / ko_name}, {"warnings": list(warnings)})
            except OSError:
                pass  # a cache that cannot be written costs the next build its speed, nothing else
        return BuiltModule(module, out / ko_name, out, release, tree, False, warnings, tuple(command),
                           sources=tuple(files))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _spec_key(spec_file: Path, tree: Path, release: str, symbols_checked: bool) -> str | None:
    """A key from the spec file's bytes and name (what the generated files derive from); None
    for standard input or a file that cannot be read as a spec (load_spec says why)."""
    if is_stdin(spec_file):
        return None
    try:
        data = read_spec_bytes(spec_file)
    except SpecError:
        return None
    digest = hashlib.sha256(f"kprobegen {__version__}\0cache-format={CACHE_FORMAT}\0{spec_file.name}\0{tree.resolve()}\0{release}\0".encode())
    digest.update(_tree_stamp(tree))
    # The templates too: an edited template must not be served from an old rendering.
    for template in sorted(templates_dir().glob("*.j2")):
        stat = template.stat()
        digest.update(f"{template.name}:{stat.st_size}:{stat.st_mtime_ns}\0".encode())
    digest.update(f"symbols-checked={symbols_checked}\0".encode() + data)
    return digest.hexdigest()[:32]


def remember_spec(spec_file: Path, built: BuiltModule, symbols_checked: bool) -> None:
    """Index a finished build by its spec file's bytes, for cached_by_spec()."""
    key = _spec_key(Path(spec_file), built.kernel_dir, built.kernel_release, symbols_checked)
    if key is None or not built.sources:
        return
    entry = _cache_root() / "by-spec" / key
    files = sorted(built.sources)
    try:
        _write_entry(entry, {name: built.out_dir / name for name in files + [built.ko.name]},
                     {"module": built.name, "files": files, "ko": built.ko.name, "warnings": list(built.warnings)})
    except OSError:
        pass  # as in build(): an unwritable cache only costs speed


def cached_by_spec(spec_file: Path, out_dir: str | Path, tree: Path, release: str,
                   symbols_checked: bool, note: Progress | None = None) -> BuiltModule | None:
    """The build of an unchanged spec file, straight from the cache: no YAML, no templates,
    no compiler. None when this spec file was never built for this tree, or when its entry
    is damaged (a file missing, truncated or changed): then the entry is dropped, ``note``
    says so, and the caller builds again."""
    key = _spec_key(Path(spec_file), tree, release, symbols_checked)
    if key is None:
        return None
    entry = _cache_root() / "by-spec" / key
    if not (entry.exists() or entry.is_symlink()):
        return None
    try:
        manifest = _manifest(entry, str_fields=("module", "ko"), list_fields=("files", "warnings"))
        if sorted(manifest["artifacts"]) != sorted(manifest["files"] + [manifest["ko"]]):
            raise _Damaged("manifest.json's files and artifacts disagree")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _serve_entry(entry, manifest, out)
    except _Damaged as exc:
        _drop(entry, str(exc), note)
        return None
    return BuiltModule(manifest["module"], out / manifest["ko"], out, release, tree, True,
                       tuple(manifest["warnings"]), sources=tuple(manifest["files"]))
