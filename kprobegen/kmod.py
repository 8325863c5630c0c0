"""Loading modules on a host: can it at all, insmod, rmmod, what is loaded.

The VM runs the same steps inside its guest (templates/vm-init.sh.j2); this module is the host
side, and the one place that turns insmod's failures into reasons a person can act on.
"""

from __future__ import annotations

import os
from pathlib import Path

import sh

from .errors import LoadError

# insmod's errno text → what it usually means for an unsigned, out-of-tree kprobe module.
_REASONS = {
    "Key was rejected by service": "the kernel enforces module signatures (CONFIG_MODULE_SIG_FORCE or "
    "module.sig_enforce=1) and this module is unsigned: sign it with the kernel's key, or use a VM kernel",
    "Operation not permitted": "not root, or the kernel is locked down (lockdown=integrity/confidentiality, "
    "often with Secure Boot): unsigned modules are refused; use a VM",
    "Invalid module format": "the module was built for another kernel (vermagic mismatch): build with --kernel for this kernel",
    "Unknown symbol in module": "the module needs symbols this kernel does not export (see dmesg): build for this kernel",
    "File exists": "a module with this name is already loaded: rmmod it first",
    "Invalid argument": "the kernel refused a probe (blacklisted or non-probe-able symbol, see the module's error record in dmesg)",
    "No such file or directory": "a probed symbol does not exist in this kernel (see the module's error record in dmesg)",
}


def host_module_support() -> tuple[bool, str]:
    """(True, "") when this host can load kprobe modules, else (False, why)."""
    if not Path("/proc/modules").exists():
        return False, f"kernel {os.uname().release} has no module support (CONFIG_MODULES is not set)"
    try:
        with open("/proc/kallsyms") as symbols:
            if not any(line.rstrip().endswith(" register_kprobe") for line in symbols):
                return False, f"kernel {os.uname().release} has no kprobes (CONFIG_KPROBES is not set)"
    except OSError as exc:
        return False, f"cannot read /proc/kallsyms: {exc.strerror}"
    if os.geteuid() != 0:
        return False, "loading modules needs root"
    return True, ""


def explain_insmod_failure(stderr: str) -> str:
    for needle, reason in _REASONS.items():
        if needle in stderr:
            return reason
    return stderr.strip() or "insmod failed"


def loaded_modules() -> set[str]:
    try:
        return {line.split()[0] for line in Path("/proc/modules").read_text().splitlines() if line.strip()}
    except OSError:
        return set()


def insmod(ko: Path) -> None:
    supported, why = host_module_support()
    if not supported:
        raise LoadError(f"cannot load {ko.name} on this host: {why}; use `kprobegen run --vm` to load it in a VM")
    try:
        sh.insmod(str(ko))
    except sh.ErrorReturnCode as exc:
        raise LoadError(f"insmod {ko}: {explain_insmod_failure(exc.stderr.decode(errors='replace'))}") from None


def rmmod(name: str) -> None:
    try:
        sh.rmmod(name)
    except sh.ErrorReturnCode as exc:
        raise LoadError(f"rmmod {name}: {exc.stderr.decode(errors='replace').strip()}") from None
