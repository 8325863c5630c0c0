"""Shared fixtures. Tests that need a kernel tree or qemu skip with a reason that says how to
enable them, except in CI (CI=true), where a missing prerequisite is a failure of the setup."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODULES = REPO / "modules"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def decode_octal_literal(literal: str, forbidden: str = '"\\\n') -> bytes:
    """The bytes of one of our string literals (C, SystemTap, bpftrace): plain characters and
    3-digit octal escapes only; none of ``forbidden`` unescaped (a quote, backslash or newline
    would end the literal)."""
    assert literal[0] == literal[-1] == '"'
    body, out, i = literal[1:-1], bytearray(), 0
    while i < len(body):
        if body[i] == "\\":
            assert re.fullmatch(r"[0-7]{3}", body[i + 1:i + 4]), body
            out.append(int(body[i + 1:i + 4], 8))
            i += 4
        else:
            assert body[i] not in forbidden, f"unescaped {body[i]!r} in {literal}"
            out.append(ord(body[i]))
            i += 1
    return bytes(out)


def require(condition: bool, how: str) -> None:
    """Skip (or, in CI, fail) when a prerequisite is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must provide this: {how}")
    pytest.skip(how)


@pytest.fixture(scope="session")
def kernel_61():
    """The installed Debian 12 cloud kernel (image + headers)."""
    from kprobegen.errors import KernelError
    from kprobegen.kernels import find_kernel

    try:
        kernel = find_kernel(None)
    except KernelError as exc:
        require(False, f"{exc} (setup: apt-get install linux-image-cloud-amd64 linux-headers-cloud-amd64)")
    require(kernel.build_dir is not None, "apt-get install linux-headers-cloud-amd64")
    require(shutil.which("make") is not None, "apt-get install make gcc")
    return kernel


@pytest.fixture(scope="session")
def example_specs():
    return sorted(MODULES.glob("*.yaml"))


# The kernels every example must build (and, in tests/vm, count) on: Debian 12's installed 6.1,
# bullseye's 5.10 and bookworm-backports' 6.12, fetched into the cache (once; then instant).
KERNEL_SUITES = ("bookworm", "bullseye", "bookworm-backports")


@pytest.fixture(scope="session", params=KERNEL_SUITES)
def each_kernel(request, kernel_61):
    if request.param == "bookworm":
        return kernel_61
    from kprobegen.errors import KernelError
    from kprobegen.kernels.debian import fetch_kernel

    try:
        return fetch_kernel(request.param)
    except KernelError as exc:
        require(False, f"cannot fetch the {request.param} kernel ({exc}); run `kprobegen kernels fetch {request.param}`")
