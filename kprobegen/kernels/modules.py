"""Kernel modules as files and as a capability: what a .ko says about itself (modinfo), and
whether this machine can load kprobe modules at all (one answer, for host mode and for the
hints of the build stage, which names it when the running kernel's headers are missing)."""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

from kprobegen.errors import LoadError


#: (boot id, whether that boot's kernel has kprobes): the kernel cannot gain or lose them
#: before it reboots, and the scan of /proc/kallsyms takes 40 ms under TCG, on every load
#: a long-lived process (the manager service) makes.
_kprobes_seen: tuple[str, bool] | None = None


def _has_kprobes() -> bool:
    global _kprobes_seen
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    if boot and _kprobes_seen is not None and _kprobes_seen[0] == boot:
        return _kprobes_seen[1]
    with open("/proc/kallsyms") as symbols:
        found = any(line.rstrip().endswith(" register_kprobe") for line in symbols)
    _kprobes_seen = (boot, found) if boot else None
    return found


def host_module_support() -> tuple[bool, str]:
    """(True, "") when this machine can load kprobe modules, else (False, why in one line)."""
    release = os.uname().release
    if not Path("/proc/modules").exists():
        return False, f"kernel {release} has no module support (CONFIG_MODULES is not set)"
    try:
        if not _has_kprobes():
            return False, f"kernel {release} has no kprobes (CONFIG_KPROBES is not set)"
    except OSError as exc:
        return False, f"cannot read /proc/kallsyms: {exc.strerror}"
    if os.geteuid() != 0:
        return False, "loading modules needs root (run kprobegen as root, or through the kprobegen service)"
    try:
        lockdown = Path("/sys/kernel/security/lockdown").read_text()
    except OSError:
        lockdown = ""
    mode = re.search(r"\[(\w+)\]", lockdown)
    if mode and mode.group(1) in ("integrity", "confidentiality"):
        return False, f"kernel lockdown is {mode.group(1)}: only signed modules load, and kprobegen's are not signed"
    try:
        if Path("/proc/sys/kernel/modules_disabled").read_text().strip() == "1":
            return False, "module loading is disabled until reboot (kernel.modules_disabled=1)"
    except OSError:
        pass
    return True, ""


def modinfo(path: Path) -> dict[str, str]:
    """The .modinfo section of a .ko (name=, vermagic=, ...), read from the ELF directly. A file
    that is not a well-formed 64-bit ELF (truncated, offsets out of range) is a LoadError."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4:5] != b"\x02":
        raise LoadError(f"{path} is not a 64-bit ELF kernel module")
    try:
        return _modinfo(data)
    except (struct.error, ValueError, IndexError, OverflowError):
        raise LoadError(f"{path} is not a well-formed ELF kernel module (a section lies outside the file)") from None


def _modinfo(data: bytes) -> dict[str, str]:
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def sect(i):
        name, _type, _flags, _addr, off, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, off, size

    _, stroff, _ = sect(shstrndx)
    info: dict[str, str] = {}
    for i in range(shnum):
        nameoff, off, size = sect(i)
        end = data.index(b"\0", stroff + nameoff)
        if data[stroff + nameoff:end] == b".modinfo":
            for item in data[off:off + size].split(b"\0"):
                if b"=" in item:
                    k, v = item.split(b"=", 1)
                    info.setdefault(k.decode(errors="replace"), v.decode(errors="replace"))
    return info
