"""One root error and one subclass per pipeline stage.

Every message says what failed, where (file:line, key path, symbol, kernel) and what to do.
The CLI prints ``str(error)`` on one line and exits non-zero; tracebacks only with --debug.
"""


class KprobegenError(Exception):
    """Root of every error kprobegen raises on purpose."""

    exit_code = 1


class SpecError(KprobegenError):
    """The YAML spec is malformed or asks for something impossible."""

    exit_code = 2


class SymbolError(KprobegenError):
    """A hook names a kernel symbol that does not exist or cannot be probed."""

    exit_code = 2


class RenderError(KprobegenError):
    """Rendering the templates failed (a bug in kprobegen, not in the spec)."""


class BuildError(KprobegenError):
    """Kbuild could not build the module, or the kernel tree is missing."""


class KernelError(KprobegenError):
    """A kernel (image, headers, profile) cannot be found or fetched."""


class LoadError(KprobegenError):
    """insmod/rmmod failed, or this host cannot load modules at all."""


class VMError(KprobegenError):
    """The disposable VM panicked, hung, timed out or lost its output."""


class ReportError(KprobegenError):
    """The kernel log holds no complete report, or a report is malformed."""
