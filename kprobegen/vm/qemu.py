"""qemu-system-x86_64: the command line, the process, and the KVM-or-TCG decision.

Two serial ports, both written to files on the host:

* ttyS0 is the kernel console (``quiet``: only errors, oopses and panics reach it). Its tail is
  what a failed run shows.
* ttyS1 is the data channel of the output protocol (see runner.py): only the guest's /init
  writes there, so kernel messages can never split a protocol line.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from kprobegen.errors import VMError
from kprobegen.cache import atomic_write, cache_dir

QEMU = "qemu-system-x86_64"

#: Seconds a KVM boot gets to reach the guest's /init before we call KVM broken. On a host
#: where KVM works the kernel reaches /init in well under a second; where it hangs (these
#: machines: SeaBIOS prints "Booting from ROM..." and nothing follows) we lose this much once,
#: then the verdict is cached for the host's boot.
KVM_PROBE_SECONDS = 4.0


def find_qemu() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise VMError(
            f"{QEMU} not found on PATH: install Debian's qemu-system-x86 "
            "(apt-get install qemu-system-x86)"
        )
    return path


def kernel_cmdline(*extra: str) -> str:
    """The kernel command line of the disposable busybox VM, or, with ``extra``, the common
    part followed by ``extra`` (the full guest boots its disk instead of /init)."""
    common = [
        "console=ttyS0",      # the kernel console on the first serial port
        "quiet",              # keep pr_info off the console: the log is read with dmesg
        "panic=-1",           # reboot at once on panic; -no-reboot turns that into an exit
        "log_buf_len=4M",     # the cloud kernel's 128 KiB buffer would drop early reports
        "nokaslr",            # stable addresses between runs (easier to read oopses)
        "tsc=reliable",       # skip the TSC watchdog calibration under TCG
        "no_timer_check",     # skip the IO-APIC timer check (slow under TCG)
        "mitigations=off",    # a disposable VM: no need to pay for them
        "i8042.noaux",        # no PS/2 mouse probing
    ]
    if not extra:
        extra = (
            "rdinit=/init",       # our busybox script, straight from the initramfs
            "8250.nr_uarts=2",    # only ttyS0 and ttyS1 exist
        )
    return " ".join([*common, *extra])


def qemu_argv(
    *,
    kernel_image: Path,
    initrd: Path,
    console_log: Path,
    data_log: Path,
    accel: str,
    memory_mb: int = 512,
    append: str | None = None,
    disks: tuple[tuple[Path, bool], ...] = (),
    stream_logs: tuple[Path, ...] = (),
    channels: tuple[tuple[str, Path], ...] = (),
    root_overlay: Path | None = None,
    qmp: Path | None = None,
    incoming: str | None = None,
) -> list[str]:
    """The whole qemu command line, one commented list (drgn's vmtest style).

    ``append`` replaces the busybox VM's kernel command line; ``disks`` are (file, writable)
    raw virtio disks, /dev/vda first (a writable one is used copy-on-write: qemu's snapshot
    mode keeps every write in a temporary file, so the file itself never changes); each of
    ``stream_logs`` is one more serial port (ttyS2, ttyS3, ...) written to that file; each of
    ``channels`` (name, socket path) is a virtio-serial port called ``name`` in the guest and
    a Unix socket that qemu listens on here (a session's agent: kprobegen.vm.agent).

    A session whose boot is saved and resumed (kprobegen.vm.session) also gives
    ``root_overlay``, a qcow2 file backed by the first disk that takes its writes instead of
    qemu's temporary one (so that the disk can be saved with the memory), ``qmp``, a Unix
    socket for qemu's machine protocol (stop, migrate, cont), and ``incoming``, the migration
    stream to start from (a saved boot) instead of booting."""
    if accel not in ("kvm", "tcg"):
        raise VMError(f"accel must be 'kvm' or 'tcg' here, not {accel!r}")
    argv = [
        find_qemu(),
        # Nothing we did not ask for: no NIC, no VGA, no default serial/parallel/monitor.
        "-nodefaults",
        # A panic (panic=-1) or a reboot ends qemu instead of booting again.
        "-no-reboot",
        "-nographic",
        "-monitor", "none",
        # q35 boots a little faster than pc under TCG here.
        "-machine", "q35",
        "-accel", accel,
        # Under TCG: qemu's default CPU without CMPXCHG16B. qemu 7.2's TCG corrupts the flags of
        # SLUB's per-CPU `cmpxchg16b %gs:(...)` now and then: Debian's 6.12 kernel oopsed or
        # panicked in kmem_cache_alloc_noprof during boot in about 1 boot in 3 here ("Fatal
        # exception in interrupt", EFLAGS garbage); without cx16 SLUB takes its locked path
        # and 22 boots in a row were clean. KVM runs the host's CPU.
        "-cpu", "host" if accel == "kvm" else "qemu64,-cx16",
        # One CPU: TCG runs it on one host thread; the test workloads are tiny.
        "-smp", "1",
        "-m", str(memory_mb),
        "-kernel", str(kernel_image),
        "-initrd", str(initrd),
        "-append", append if append is not None else kernel_cmdline(),
        # ttyS0: kernel console, to a file (its tail is shown for failed runs).
        "-chardev", f"file,id=console,path={console_log}",
        "-serial", "chardev:console",
        # ttyS1: the output protocol's data channel, only /init writes to it.
        "-chardev", f"file,id=data,path={data_log}",
        "-serial", "chardev:data",
    ]
    for i, (path, writable) in enumerate(disks):
        if i == 0 and root_overlay is not None:
            # the first disk's writes go to this qcow2 file (its backing file is the disk); a
            # scratch disk like snapshot=on's, so the guest's flushes (every sync, every fsync of
            # the service's state) are not made durable on this machine (cache=unsafe)
            argv += ["-drive", f"file={str(root_overlay).replace(',', ',,')},format=qcow2,if=virtio,"
                               "cache=unsafe,id=disk0"]
            continue
        # virtio-blk, raw; snapshot=on: writes go to a temporary overlay and vanish with qemu.
        mode = "snapshot=on" if writable else "readonly=on"
        argv += ["-drive", f"file={str(path).replace(',', ',,')},format=raw,if=virtio,{mode},id=disk{i}"]
    for i, path in enumerate(stream_logs):
        # ttyS2, ttyS3, ...: raw byte streams (the guest sets the ports raw), e.g. stdout/stderr.
        argv += ["-chardev", f"file,id=stream{i},path={path}", "-serial", f"chardev:stream{i}"]
    if channels:
        # virtio-serial: a byte pipe to a program in the guest, and no network device for it.
        argv += ["-device", "virtio-serial-pci,id=vser"]
    for i, (name, path) in enumerate(channels):
        argv += ["-chardev", f"socket,id=chan{i},path={str(path).replace(',', ',,')},server=on,wait=off",
                 "-device", f"virtserialport,bus=vser.0,chardev=chan{i},name={name}"]
    if qmp is not None:
        argv += ["-qmp", f"unix:{str(qmp).replace(',', ',,')},server=on,wait=off"]
    if incoming is not None:
        # the machine's state (memory, devices) comes from this stream; it stays paused after
        # it when it was paused when saved, until a QMP `cont`
        argv += ["-incoming", incoming]
    return argv


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL qemu when the Python process that started it dies
    (qemu is in its own session, so a Ctrl-C on the terminal does not reach it)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort: the runner also kills qemu itself
        pass


@dataclass
class QemuProcess:
    """A running qemu in its own process group, with its serial logs: the console, the data
    channel, and ``stream_logs`` (ttyS2, ... : the full guest's stdout and stderr)."""

    argv: list[str]
    console_log: Path
    data_log: Path
    stderr_log: Path
    stream_logs: tuple[Path, ...] = ()
    proc: subprocess.Popen | None = None
    started: float = 0.0
    _offsets: dict[str, int] = field(default_factory=dict)

    def _logs(self) -> dict[str, Path]:
        return {"console": self.console_log, "data": self.data_log,
                **{f"stream{i}": p for i, p in enumerate(self.stream_logs)}}

    def start(self) -> None:
        for p in self._logs().values():
            p.write_bytes(b"")
        self.started = time.monotonic()
        with open(self.stderr_log, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: killed as a whole
                preexec_fn=_die_with_parent,
            )
        self._offsets = dict.fromkeys(self._logs(), 0)

    def read_new(self, which: str) -> bytes:
        """Bytes appended to a log ("console", "data", "stream0", ...) since the last call."""
        path = self._logs()[which]
        try:
            with open(path, "rb") as f:
                f.seek(self._offsets.get(which, 0))
                chunk = f.read()
        except FileNotFoundError:
            return b""
        self._offsets[which] = self._offsets.get(which, 0) + len(chunk)
        return chunk

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """Kill qemu's whole process group and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck kernel thread
            raise VMError(f"qemu (pid {self.proc.pid}) did not die after SIGKILL")

    def stderr_text(self) -> str:
        try:
            return self.stderr_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""


# -- the accelerator and the KVM verdict --------------------------------------------------

ACCELS = ("auto", "kvm", "tcg")
#: The environment variable that sets the default accelerator of every command (and the tests).
ACCEL_ENV = "KPROBEGEN_ACCEL"


def default_accel() -> str:
    """$KPROBEGEN_ACCEL, else "auto". VMError for a value that is not auto, kvm or tcg."""
    value = os.environ.get(ACCEL_ENV, "").strip() or "auto"
    if value not in ACCELS:
        raise VMError(f"{ACCEL_ENV}={value!r}: use auto, kvm or tcg")
    return value


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def verdict_file() -> Path:
    return cache_dir() / "vm" / "kvm-verdict"


@dataclass(frozen=True)
class KvmVerdict:
    """What a KVM boot did on this host since it booted: "works", or "broken" with why
    (the boot hung before the guest's /init, qemu exited or aborted, /dev/kvm refused)."""

    verdict: str   # works | broken
    reason: str    # one line; "" for works
    at: str        # when it was recorded (UTC, ISO 8601)


def cached_kvm_verdict() -> KvmVerdict | None:
    """The verdict recorded during this boot of the host, else None (a new boot asks again)."""
    try:
        boot, verdict, at, *reason = verdict_file().read_text().split("\t")
    except (OSError, ValueError):
        return None
    if boot != _boot_id() or verdict not in ("works", "broken"):
        return None
    return KvmVerdict(verdict, "\t".join(reason).strip(), at)


def record_kvm_verdict(verdict: str, reason: str = "") -> None:
    """Remember ``verdict`` ("works" / "broken") for this boot of the host."""
    line = "\t".join([_boot_id(), verdict, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       " ".join(reason.split())]) + "\n"
    try:
        f = verdict_file()
        f.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(f, line)
    except OSError:
        pass  # a cache, nothing more


def clear_kvm_verdict() -> bool:
    """Forget the recorded verdict (the next auto boot tries KVM again). True if there was one."""
    try:
        verdict_file().unlink()
        return True
    except FileNotFoundError:
        return False


def kvm_usable() -> bool:
    """/dev/kvm exists and we may open it read-write."""
    return os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)


def accel_plan(accel: str | None) -> list[str]:
    """Accelerators to try in order for ``accel`` (auto / kvm / tcg; None: default_accel()).

    auto tries KVM first only while no boot of this host found it broken, and always ends on
    TCG: whatever KVM does (hangs, aborts, refuses), the run goes on under TCG.
    """
    if accel is None:
        accel = default_accel()
    if accel == "tcg":
        return ["tcg"]
    if accel == "kvm":
        if not kvm_usable():
            raise VMError("accel=kvm but /dev/kvm is missing or not writable: use accel=auto or tcg")
        return ["kvm"]
    if accel != "auto":
        raise VMError(f"unknown accel {accel!r}: use auto, kvm or tcg")
    verdict = cached_kvm_verdict()
    if not kvm_usable() or (verdict is not None and verdict.verdict == "broken"):
        return ["tcg"]
    return ["kvm", "tcg"]
