"""Can this host load kprobe modules at all?

Loading happens in the VM (templates/vm-init.sh.j2 holds the insmod/rmmod steps, and
kprobegen.vm.ModuleLoad.reason turns the kernel's refusals into reasons). Loading on the host
itself, with a manager that tracks what is loaded, is a later capability; until then this module
only answers whether the host could, so that `run --host` and `build` can say why not.
"""

from __future__ import annotations

import os
from pathlib import Path


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
