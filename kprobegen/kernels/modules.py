"""Can this machine load kprobe modules at all? One answer, for host mode and for the hints
of the build stage (kbuild names it when the running kernel's headers are missing)."""

from __future__ import annotations

import os
import re
from pathlib import Path


def host_module_support() -> tuple[bool, str]:
    """(True, "") when this machine can load kprobe modules, else (False, why in one line)."""
    release = os.uname().release
    if not Path("/proc/modules").exists():
        return False, f"kernel {release} has no module support (CONFIG_MODULES is not set)"
    try:
        with open("/proc/kallsyms") as symbols:
            if not any(line.rstrip().endswith(" register_kprobe") for line in symbols):
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
