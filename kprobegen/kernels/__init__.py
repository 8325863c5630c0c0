"""Kernels: a boot image plus the Kbuild tree that builds modules for it.

Two origins:

* ``installed``: ``/boot/vmlinuz-<release>`` with ``/lib/modules/<release>/build`` (Debian's
  ``linux-image-*`` + ``linux-headers-*`` packages installed with apt);
* ``fetched:<suite>``: Debian's cloud kernel of another suite, downloaded with apt's own tools
  (a private sources list, lists and cache: nothing is installed system-wide) and extracted
  with ``dpkg-deb -x`` into ``cache_dir()/kernels/<release>/``, laid out like ``/``
  (``boot/``, ``lib/modules/``, ``usr/src/linux-headers-*``, ``usr/lib/linux-kbuild-*``).

The mirror is read from the system's apt configuration; no network address is written here.
Finding kernels lives here; ``toolchain`` says whether and how Kbuild can build for one,
``debian`` fetches them, ``symbols`` profiles them, ``modules`` reads .ko files and this
machine's ability to load them. See docs/kernels.md.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kprobegen.cache import cache_dir
from kprobegen.errors import KernelError

SUITES = ("bookworm", "bookworm-backports", "bullseye", "trixie")

# Metadata written last into a fetched kernel's directory: its presence marks a complete fetch.
META_NAME = "kprobegen-kernel.json"

# Debian's release codenames, for recognising "the main archive" in sources entries.
DEBIAN_CODENAMES = (
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid", "unstable",
    "testing", "stable", "oldstable",
)



# --------------------------------------------------------------------------------------------
# Kernel


@dataclass(frozen=True)
class Kernel:
    release: str  # "6.1.0-56-cloud-amd64"
    image: Path  # vmlinuz to boot
    build_dir: Path | None  # Kbuild tree (headers), None if headers missing
    origin: str  # "installed" or "fetched:<suite>"
    config: Path | None  # the packaged config-<release>, if any

    @property
    def suite(self) -> str | None:
        """The Debian suite a fetched kernel came from (None for installed kernels)."""
        return self.origin.split(":", 1)[1] if self.origin.startswith("fetched:") else None


# --------------------------------------------------------------------------------------------
# Where things live


def kernels_dir() -> Path:
    return cache_dir() / "kernels"


def _version_key(release: str) -> list:
    """Natural sort key: 5.10.0-32 < 6.1.0-9 < 6.1.0-56 < 6.12.95."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", release) if p]


# --------------------------------------------------------------------------------------------
# Listing and finding


def _installed_kernels(boot: Path = Path("/boot"), modules: Path = Path("/lib/modules")) -> list[Kernel]:
    out = []
    for image in boot.glob("vmlinuz-*"):
        release = image.name[len("vmlinuz-"):]
        if not image.is_file():
            continue
        build = modules / release / "build"
        config = boot / f"config-{release}"
        out.append(Kernel(
            release=release,
            image=image,
            build_dir=build if (build / "Makefile").exists() else None,
            origin="installed",
            config=config if config.is_file() else None,
        ))
    return out


def fetched_kernel(root: Path) -> Kernel | None:
    try:
        meta = json.loads((root / META_NAME).read_text())
    except (OSError, ValueError):
        return None
    release = meta.get("release", root.name)
    image = root / "boot" / f"vmlinuz-{release}"
    if not image.is_file():
        return None
    merged_usr_lib(root)
    build = root / "usr" / "src" / f"linux-headers-{release}"
    if (build / "Makefile").is_file():
        fix_top_makefile(root, build)  # cheap; repairs the one absolute include if the cache moved
    else:
        build = None
    config = root / "boot" / f"config-{release}"
    return Kernel(
        release=release,
        image=image,
        build_dir=build,
        origin=f"fetched:{meta.get('suite', '?')}",
        config=config if config.is_file() else None,
    )


def _fetched_kernels() -> list[Kernel]:
    kdir = kernels_dir()
    if not kdir.is_dir():
        return []
    out = []
    for root in kdir.iterdir():
        if root.name.startswith(".") or not root.is_dir():
            continue
        k = fetched_kernel(root)
        if k is not None:
            out.append(k)
    return out


def list_kernels() -> list[Kernel]:
    """Installed kernels (newest first), then fetched ones (newest first)."""
    installed = sorted(_installed_kernels(), key=lambda k: _version_key(k.release), reverse=True)
    fetched = sorted(_fetched_kernels(), key=lambda k: _version_key(k.release), reverse=True)
    return installed + fetched


def fetched_for_suite(suite: str, kernels: Iterable[Kernel] | None = None) -> Kernel | None:
    cands = [k for k in (kernels if kernels is not None else _fetched_kernels())
             if k.origin == f"fetched:{suite}"]
    cands.sort(key=lambda k: _version_key(k.release), reverse=True)
    return cands[0] if cands else None


def _installed_cloud_kernel(kernels: Iterable[Kernel]) -> Kernel | None:
    """The first installed *-cloud-amd64 kernel (list_kernels() puts the newest first)."""
    return next((k for k in kernels if k.origin == "installed" and k.release.endswith("-cloud-amd64")), None)


def find_kernel(release: str | None = None) -> Kernel:
    """The kernel named by `release` (a release such as 6.1.0-56-cloud-amd64, or a suite name
    such as "bullseye" for that suite's fetched kernel; the machine's own suite falls back to
    its installed cloud kernel). None picks the default: the newest installed *-cloud-amd64
    kernel, else a fetched bookworm kernel."""
    kernels = list_kernels()
    if release is None:
        k = _installed_cloud_kernel(kernels) or fetched_for_suite("bookworm", kernels)
        if k is not None:
            return k
        raise KernelError(
            "no kernel found; install linux-image-cloud-amd64 linux-headers-cloud-amd64 "
            "or run `kprobegen kernels fetch bookworm`"
        )
    for k in kernels:
        if k.release == release:
            return k
    if release in SUITES:
        k = fetched_for_suite(release, kernels)
        if k is not None:
            return k
        if release == os_codename() and is_debian():
            # this machine's own suite: its installed cloud kernel is that suite's kernel
            k = _installed_cloud_kernel(kernels)
            if k is not None:
                return k
        raise KernelError(f"no kernel fetched for suite {release}: run `kprobegen kernels fetch {release}`")
    known = ", ".join(f"{k.release} ({k.origin})" for k in kernels) or "none"
    raise KernelError(
        f"kernel {release!r} not found; known kernels: {known}; suites for `kprobegen kernels fetch`: "
        + ", ".join(SUITES)
    )



# --------------------------------------------------------------------------------------------
# This machine's Debian release


def os_codename(os_release: Path = Path("/etc/os-release")) -> str | None:
    try:
        for line in os_release.read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.partition("=")[2].strip().strip('"') or None
    except OSError:
        pass
    return None


def is_debian(os_release: Path = Path("/etc/os-release")) -> bool:
    try:
        return any(line.strip() in ("ID=debian", 'ID="debian"') for line in os_release.read_text().splitlines())
    except OSError:
        return False



# --------------------------------------------------------------------------------------------
# The layout of a fetched kernel's tree


def merged_usr_lib(root: Path) -> None:
    """trixie's packages are merged-/usr (usr/lib/modules/...): lay such a tree out like a
    merged-/usr root, where /lib -> usr/lib, so that lib/modules/<release> works for every suite."""
    if not (root / "lib").exists() and not (root / "lib").is_symlink() and (root / "usr" / "lib").is_dir():
        try:
            os.symlink("usr/lib", root / "lib")
        except OSError:
            pass


def fix_top_makefile(root: Path, build: Path) -> None:
    """Debian's arch headers Makefile is one line, `include /usr/src/linux-headers-X-common/Makefile`:
    point it into the cache (absolute: Kbuild reads it from several directories)."""
    mk = build / "Makefile"
    try:
        text = mk.read_text()
    except OSError:
        return
    lines = text.splitlines()
    if len(lines) != 1 or not lines[0].startswith("include "):
        return
    target = lines[0][len("include "):].strip()
    m = re.search(r"/usr/src/[^/]+/Makefile$", target)
    if not m:
        return
    new = f"include {root / m.group(0).lstrip('/')}\n"
    if new != text:
        mk.write_text(new)

