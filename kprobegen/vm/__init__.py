"""The disposable VM: boot a kernel under qemu, load modules, run a workload, get results.

    from kprobegen import vm
    from kprobegen.kernels import find_kernel
    r = vm.run(find_kernel("bookworm"), [Path("sync_counter.ko")], ["sh", "-c", "sync; sync"],
               oracles=[vm.Oracle("kprobe", "ksys_sync")])
    r.raise_for_status()
    r.kernel_log, r.oracle["kprobe:ksys_sync"], r.exit_code

See docs/vm.md.
"""

from kprobegen.vm.runner import (
    ModuleLoad,
    Oracle,
    Run,
    capture_profile,
    run,
)

__all__ = [
    "ModuleLoad", "Oracle", "Run", "capture_profile", "run",
]
