"""Checking and running the SystemTap and bpftrace scripts with the real tools (for the tests).

kprobegen renders the scripts (kprobegen.codegen: render_stap, render_bpftrace); what is here
runs them: ``stap -p2`` / ``-p3`` and ``bpftrace --emit-elf`` as static checks, and building a
SystemTap module (pass 4) to run in the guest, with the one fix SystemTap 4.8's runtime needs
on Debian 12's 6.1 kernel. docs/equivalents.md says what each check covers.

Imported by the tests as ``from tools.equivalents import ...`` (tests/ is on sys.path).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from kprobegen.cache import atomic_write, cache_dir, drop_dir, publish_dir, staging_dir
from kprobegen.errors import BuildError
from kprobegen.kernels import Kernel
from kprobegen.kernels.symbols import Capture, load_profile

__all__ = ["stap_tree", "check_stap", "check_bpftrace", "stap_runtime", "build_stap", "STAP_RUNTIME"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def stap_tree(kernel: Kernel, dest: str | Path | None = None, capture: Capture | None = None) -> Path:
    """A kernel tree that ``stap -r`` can check scripts against: a folder of symlinks to every
    entry of the kernel's Kbuild tree, plus the real ``System.map``.

    SystemTap 4.8 resolves ``kprobe.function("f")`` against a symbol table: with ``-r DIR`` it
    reads ``DIR/System.map`` (then ``/boot/System.map-<version>``). Debian's System.map is a
    stub, so the table comes from the kernel profile (the guest's /proc/kallsyms, captured once
    by booting the kernel: ``capture``, by default kprobegen.pipeline.profile_capture()).
    Returns the folder (default: the kprobegen cache, ``stap-trees/<release>``).
    """
    if not isinstance(kernel, Kernel):
        raise TypeError(f"stap_tree needs a kprobegen.kernels.Kernel (find_kernel(...)), not {kernel!r}")
    if kernel.build_dir is None or not Path(kernel.build_dir).is_dir():
        raise BuildError(f"kernel {kernel.release} has no Kbuild tree: install its headers "
                         f"(apt-get install linux-headers-{kernel.release})")
    if capture is None:
        from kprobegen.pipeline import profile_capture

        capture = profile_capture()
    system_map = load_profile(kernel, capture=capture).system_map()
    tree = Path(dest) if dest is not None else cache_dir() / "stap-trees" / kernel.release
    tree.mkdir(parents=True, exist_ok=True)
    build = Path(kernel.build_dir)
    for entry in sorted(build.iterdir()):
        if entry.name == "System.map":
            continue
        link = tree / entry.name
        target = os.path.realpath(entry)
        if os.path.islink(link) and os.readlink(link) == target:
            continue
        if os.path.lexists(link):
            link.unlink()
        link.symlink_to(target)
    current = tree / "System.map"
    if not current.is_file() or current.read_text() != system_map:
        atomic_write(current, system_map)
    return tree


def check_stap(text: str, tree: str | Path, timeout: float = 300.0, last_pass: int = 2) -> str:
    """Run SystemTap's pass 2 (parse, resolve probe points against System.map, elaborate and
    type-check) on a script: ``stap -p2 -r TREE SCRIPT``. Returns stap's stdout (the resolved
    script; with ``last_pass=3`` the C it translates to); raises BuildError with stap's message
    when stap refuses it. Pass 4 (building the module) is :func:`build_stap`."""
    if last_pass not in (1, 2, 3):
        raise ValueError("last_pass must be 1, 2 or 3")
    return _run_tool(["stap", f"-p{last_pass}", "-r", str(tree)], text, ".stp", f"SystemTap (stap -p{last_pass})", timeout)


def check_bpftrace(text: str, timeout: float = 300.0) -> bytes:
    """Compile a script with bpftrace without loading it: ``bpftrace --emit-elf OUT SCRIPT``
    (parse, semantic analysis, LLVM code generation; a dry run that needs no BPF-capable
    kernel). Returns the ELF object; raises BuildError with bpftrace's message on failure.
    Symbol existence is not checked by this (bpftrace only warns "not traceable" when the
    host kernel has no kprobes); stap -p2 checks it against the kernel's System.map."""
    with tempfile.TemporaryDirectory(prefix="kprobegen-bt-") as tmp:
        out = Path(tmp) / "script.o"
        _run_tool(["bpftrace", "--emit-elf", str(out)], text, ".bt", "bpftrace (--emit-elf)", timeout)
        if not out.is_file():
            raise BuildError("bpftrace --emit-elf exited 0 but wrote no ELF object")
        return out.read_bytes()


def _run_tool(argv: list[str], text: str, suffix: str, what: str, timeout: float) -> str:
    if shutil.which(argv[0]) is None:
        raise BuildError(f"{argv[0]} is not installed: apt-get install {'systemtap' if argv[0] == 'stap' else 'bpftrace'}")
    with tempfile.TemporaryDirectory(prefix="kprobegen-check-") as tmp:
        script = Path(tmp) / f"script{suffix}"
        script.write_text(text)
        try:
            proc = subprocess.run(argv + [str(script)], capture_output=True, text=True, timeout=timeout,
                                  cwd=tmp, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BuildError(f"{what} did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if "error" in line.lower() and "RLIMIT_MEMLOCK" not in line]
        first = errors[0] if errors else (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise BuildError(f"{what} refused the script (exit {proc.returncode}): {first}\n{proc.stderr}")
    return proc.stdout


# --------------------------------------------------------------------------------------------
# Building and running the SystemTap script for real (pass 4) on kernels stap 4.8 predates.

STAP_RUNTIME = "/usr/share/systemtap/runtime"


def stap_runtime(tree: str | Path) -> str:
    """The SystemTap runtime folder to build against this kernel tree (``stap -R``).

    SystemTap 4.8's runtime calls ``task_work_cancel(task, func)``. The kernel (upstream in 2024,
    and the 6.1.y stable series by 6.1.192, which Debian 12 ships) renamed that to ``task_work_cancel_func()``
    and gave ``task_work_cancel()`` a ``struct callback_head *`` argument and a bool result, so
    pass 4 fails with "incompatible pointer type" in runtime/stp_task_work.c. For such a tree
    (told apart by ``task_work_cancel_func`` in the tree's System.map),
    this returns a copy of the runtime (cached beside the kprobegen cache) whose
    stp_task_work.c uses ``task_work_cancel_func``, the same operation under its new name;
    for other trees, the system's runtime unchanged."""
    system_map = Path(tree) / "System.map"
    try:
        text = system_map.read_text()
    except OSError:
        raise BuildError(f"{system_map} is missing: make the tree with stap_tree()") from None
    if not re.search(r"^\S+ [tT] task_work_cancel_func$", text, re.M):
        return STAP_RUNTIME
    source = Path(STAP_RUNTIME) / "stp_task_work.c"
    original = source.read_text()
    old_type = "typedef typeof(&task_work_cancel) task_work_cancel_fn;"
    old_lookup = 'kallsyms_lookup_name("task_work_cancel")'
    if old_type not in original or old_lookup not in original:
        # A SystemTap that already knows the new API (or changed this file): use it as it is.
        return STAP_RUNTIME
    patched = original.replace(old_type, "typedef typeof(&task_work_cancel_func) task_work_cancel_fn;").replace(
        old_lookup, 'kallsyms_lookup_name("task_work_cancel_func")')
    key = hashlib.sha256(original.encode()).hexdigest()[:16]
    dest = cache_dir() / "stap-runtime" / key
    if (dest / "stp_task_work.c").is_file() and (dest / "stp_task_work.c").read_text() == patched:
        return str(dest)
    drop_dir(dest)  # damaged or from another patch
    staging = staging_dir(dest)
    shutil.copytree(STAP_RUNTIME, staging, symlinks=True, dirs_exist_ok=True)
    (staging / "stp_task_work.c").write_text(patched)
    if not publish_dir(staging, dest):
        raise BuildError(f"could not publish the patched SystemTap runtime in {dest}")
    return str(dest)


def build_stap(text: str, tree: str | Path, out_dir: str | Path, name: str, timeout: float = 900.0) -> Path:
    """Build a SystemTap script into ``out_dir/<name>.ko`` (passes 1-4:
    ``stap -p4 -R RUNTIME -r TREE -m NAME SCRIPT``), to be run with ``staprun NAME.ko``.
    ``tree`` is from :func:`stap_tree`; the runtime from :func:`stap_runtime`."""
    if not _IDENT.match(name) or len(name) > 55:
        raise BuildError(f"stap module name {name!r} must be an identifier of at most 55 characters")
    if shutil.which("stap") is None:
        raise BuildError("stap is not installed: apt-get install systemtap")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    argv = ["stap", "-p4", "-R", stap_runtime(tree), "-r", str(tree), "-m", name]
    with tempfile.TemporaryDirectory(prefix="kprobegen-stap-") as tmp:
        script = Path(tmp) / f"{name}.stp"
        script.write_text(text)
        try:
            proc = subprocess.run(argv + [str(script)], capture_output=True, text=True, timeout=timeout,
                                  cwd=tmp, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BuildError(f"stap -p4 did not finish in {timeout:.0f} s") from None
        ko = Path(tmp) / f"{name}.ko"
        if proc.returncode != 0 or not ko.is_file():
            errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
            raise BuildError(f"stap -p4 could not build {name}.ko (exit {proc.returncode}): "
                             f"{errors[0] if errors else proc.stderr.strip()[-300:]}\n{proc.stderr}")
        shutil.copy2(ko, out / ko.name)
    return out / f"{name}.ko"
