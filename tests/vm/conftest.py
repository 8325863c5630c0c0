"""Fixtures for the VM tests: the kernel, qemu, and hand-written modules built with Kbuild.

These tests boot real kernels under qemu. Where qemu, busybox-static or the cloud kernel and its
headers are missing they are skipped with a message that says what to install -- except when
the CI environment variable is set: CI installs all of them (.ci/run), so there they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kprobegen.kernels import toolchain

HANDMADE = Path(__file__).resolve().parents[1] / "data" / "handmade"
ENABLE = ("install them with: apt-get install qemu-system-x86 busybox-static "
          "linux-image-cloud-amd64 linux-headers-cloud-amd64 make gcc-12")


def require(ok: bool, what: str) -> None:
    """Skip (fail under CI) unless ``ok``."""
    if ok:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} -- CI must provide it (.ci/run)")
    pytest.skip(f"{what}; to enable these tests, {ENABLE}")


def _wanted_kernels() -> list[str | None]:
    """KPROBEGEN_VM_KERNELS=bookworm,bullseye,bookworm-backports (releases or suites) runs every
    VM test on each of those kernels (fetch them first: kprobegen kernels fetch SUITE); unset,
    the default kernel only."""
    names = [n.strip() for n in os.environ.get("KPROBEGEN_VM_KERNELS", "").split(",") if n.strip()]
    return names or [None]


@pytest.fixture(scope="session", params=_wanted_kernels(), ids=lambda n: n or "default")
def kernel(request):
    from kprobegen.errors import KernelError, VMError
    from kprobegen.kernels import find_kernel
    from kprobegen.vm.initramfs import find_busybox

    require(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86_64 not found")
    try:
        find_busybox()
    except VMError as e:
        require(False, str(e))
    # "bookworm" is the installed cloud kernel (the default), as in tests/conftest.py's each_kernel
    name = None if request.param == "bookworm" else request.param
    try:
        k = find_kernel(name)
    except KernelError as e:
        require(False, f"no kernel to boot ({e})")
    require(Path(k.image).is_file(), f"kernel image {k.image} missing")
    return k


@pytest.fixture(scope="session")
def kernel_tree(kernel):
    require(kernel.build_dir is not None and Path(kernel.build_dir).is_dir(),
            f"no Kbuild tree for {kernel.release}")
    require(shutil.which("make") is not None, "make not found")
    return Path(kernel.build_dir)


@pytest.fixture(scope="session")
def handmade(kernel, kernel_tree, tmp_path_factory) -> dict[str, Path]:
    """The hand-written test modules of tests/data/handmade, built with plain Kbuild."""
    out = tmp_path_factory.mktemp("handmade")
    for f in HANDMADE.iterdir():
        if f.suffix == ".c" or f.name == "Kbuild":
            shutil.copy(f, out / f.name)
    make_vars = toolchain.make_vars(kernel)  # CC=gcc-12 for 5.10
    proc = subprocess.run(["make", "-C", str(kernel_tree), f"M={out}",
                           *(f"{k}={v}" for k, v in sorted(make_vars.items())), "modules"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"Kbuild failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return {p.stem: p for p in out.glob("*.ko")}


def qemu_processes_with(needle: str) -> list[int]:
    """PIDs whose command line contains ``needle`` (to check that a run's qemu is gone)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if needle.encode() in cmd:
                pids.append(int(d.name))
    return pids


@pytest.fixture(scope="session")
def image():
    """The full Debian guest image (bookworm), built once per session (minutes) or reused."""
    from kprobegen.vm import guest

    require(os.geteuid() == 0, "building the guest image needs root (debootstrap, chroot)")
    require(shutil.which("debootstrap") is not None, "apt-get install debootstrap")
    require(shutil.which("mkfs.ext4") is not None, "apt-get install e2fsprogs")
    require(shutil.which("qemu-system-x86_64") is not None, "apt-get install qemu-system-x86")
    return guest.build_image("bookworm")
