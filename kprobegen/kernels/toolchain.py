"""The Kbuild toolchain plan of a kernel: can this machine build modules for it, and with
which make variables (a newer gcc for an old tree, LLVM=1 for a clang-built one)?

One function (``plan``) decides both the problem and the variables, so they never disagree;
``build_problem`` and ``make_vars`` are its two halves.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from kprobegen.kernels import Kernel


def tree_config(build_dir: Path | None) -> dict[str, str]:
    """CONFIG_* of a build tree (include/config/auto.conf, else .config); {} without one."""
    if build_dir is None:
        return {}
    for name in ("include/config/auto.conf", ".config"):
        path = build_dir / name
        if path.is_file():
            return parse_config(path.read_text(errors="replace"))
    return {}


def compiler(kernel: Kernel) -> tuple[str, int | None]:
    """(CONFIG_CC_VERSION_TEXT, gcc major version) the kernel's tree was configured with."""
    return config_compiler(tree_config(kernel.build_dir))


def config_compiler(cfg: dict[str, str]) -> tuple[str, int | None]:
    """(CONFIG_CC_VERSION_TEXT, gcc major version) a tree was configured with, from its config."""
    text = cfg.get("CONFIG_CC_VERSION_TEXT", "")
    major: int | None = None
    if cfg.get("CONFIG_CC_IS_GCC") == "y" or text.startswith("gcc"):
        ver = cfg.get("CONFIG_GCC_VERSION", "")
        if ver.isdigit() and int(ver) >= 10000:
            major = int(ver) // 10000
        else:
            m = re.match(r"gcc-(\d+)\b", text) or re.search(r"\) (\d+)\.\d", text)
            major = int(m.group(1)) if m else None
    return text, major

def plan(kernel: Kernel) -> tuple[str | None, dict[str, str]]:
    """(problem, make variables) for building modules for ``kernel`` on this machine, in one
pass over the tree's config and the PATH. The problem is None when it can build, else one
line saying why and what to do."""
    if kernel.build_dir is None:
        if kernel.origin == "installed":
            return f"no kernel headers for {kernel.release}: {installed_headers_hint(kernel.release)}", {}
        return (f"the fetched kernel {kernel.release} has no build tree: delete "
                f"{kernel.image.parent.parent} and run `kprobegen kernels fetch {kernel.suite}`"), {}
    if not (kernel.build_dir / "Makefile").is_file():
        return (f"kernel headers for {kernel.release} at {kernel.build_dir} are incomplete (no Makefile): "
                + (installed_headers_hint(kernel.release) if kernel.origin == "installed"
                   else f"delete {kernel.image.parent.parent} and fetch it again")), {}
    if shutil.which("make") is None:
        return "`make` is not installed: apt-get install make", {}
    cfg = tree_config(kernel.build_dir)
    text, major = config_compiler(cfg)
    make_vars: dict[str, str] = {}
    if cfg.get("CONFIG_CC_IS_CLANG") == "y":
        if shutil.which("clang") is None:
            return (f"kernel {kernel.release} was built with clang ({text}): install clang and lld "
                    "(apt-get install clang lld) to build modules for it"), {}
        make_vars["LLVM"] = "1"
    elif major is not None:
        have = installed_gcc_versions()
        if major not in have:
            newer = sorted(v for v in have if v > major)
            if not newer:
                best = f"gcc-{max(have)}" if have else "no gcc"
                why = ""
                if cfg.get("CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT") == "y" and have and max(have) < 14:
                    align = cfg.get("CONFIG_FUNCTION_ALIGNMENT", "16")
                    why = f", which rejects the tree's -fmin-function-alignment={align} (a gcc-14 flag)"
                return (
                    f"kernel {kernel.release} was built with gcc-{major} ({text}) and its headers need it; "
                    f"this machine has {best}{why}: build on a machine (or in a chroot) with gcc-{major}"
                    + (f", e.g. Debian {kernel.suite}" if kernel.suite else "")
                ), {}
            # Older trees (5.10 asks for gcc-10) build with a newer gcc: tried with gcc-12.
            make_vars["CC"] = f"gcc-{newer[0]}"
    if cfg.get("CONFIG_DEBUG_INFO_BTF_MODULES") == "y" and shutil.which("pahole") is None:
        return (f"kernel {kernel.release} has CONFIG_DEBUG_INFO_BTF_MODULES=y: Kbuild needs pahole "
                "to build modules for it: apt-get install dwarves"), make_vars
    return None, make_vars



def build_problem(kernel: Kernel) -> str | None:
    """None when this machine can build modules for ``kernel``; else a one-line reason and what
    to do."""
    return plan(kernel)[0]


def make_vars(kernel: Kernel) -> dict[str, str]:
    """Extra make variables for Kbuild (e.g. {"CC": "gcc-12"} for bullseye's 5.10 tree, whose
    headers ask for the absent gcc-10); {} when none are needed."""
    return plan(kernel)[1]

def installed_headers_hint(release: str) -> str:
    return f"install linux-headers-{release} (apt-get install linux-headers-{release})"


def installed_gcc_versions() -> set[int]:
    """Major versions of the gcc-N compilers on PATH (plain `gcc` counts as its own major)."""
    found: set[int] = set()
    for d in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep):
        try:
            names = os.listdir(d or ".")
        except OSError:
            continue
        for name in names:
            m = re.fullmatch(r"gcc-(\d+)", name)
            if m and os.access(os.path.join(d, name), os.X_OK):
                found.add(int(m.group(1)))
    if not found and shutil.which("gcc"):
        try:
            out = subprocess.run(["gcc", "-dumpversion"], capture_output=True, text=True, timeout=30)
            if out.stdout.strip().split(".")[0].isdigit():
                found.add(int(out.stdout.strip().split(".")[0]))
        except (OSError, subprocess.SubprocessError):
            pass
    return found


def parse_config(text: str) -> dict[str, str]:
    """Parse a Kconfig .config / auto.conf: CONFIG_X=value, string values unquoted.
    '# CONFIG_X is not set' lines are left out (absent means not set)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("CONFIG_") or "=" not in line:
            continue
        key, _, val = line.partition("=")
        if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
            val = val[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[key] = val
    return out
