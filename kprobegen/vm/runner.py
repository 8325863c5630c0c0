"""Run modules and a workload in a disposable qemu VM and bring back what happened.

One run: write an initramfs (busybox, /init rendered from templates/vm-init.sh.j2, the modules,
the ``add`` files), boot the kernel under qemu, and follow the output protocol on the data
channel (ttyS1) until the guest says DONE, qemu exits, or the hard timeout kills it.

The output protocol: every line the guest's /init writes to ttyS1 is ``KPG <nonce> <TAG> ...``
with a fresh random nonce per run; a line without it is ignored. Tags:

    BOOT t                       /init started (t = guest uptime, seconds)
    STAGE name t                 loading | running | unloading | collecting
    INSMOD name rc               one per module tried, in order
    RMMOD name rc                one per loaded module, in reverse order
    EXIT rc                      the workload's exit code
    ORACLE event hits missed     one per oracle, from tracefs kprobe_profile
    ORACLE_ERR event             the oracle could not be created
    BLOB name size md5           a file follows as lines "D name <base64 of gzip>" ...
    END name                     ... up to here; size and md5 are of the decoded bytes
    DONE t                       the guest is about to power off

The console (ttyS0) is only read for its tail and for "Kernel panic" / "Oops" when the guest
dies; the kernel log of a run is read inside the guest from /dev/kmsg after the modules are
gone: records "PRI,SEQ,TS,FLAGS;text", whose PRI shows the syslog facility, so that the report
parser takes protocol lines from the kernel only (never what the workload wrote to /dev/kmsg).
"""

from __future__ import annotations

import io
import re
import secrets
import shlex
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from kprobegen.errors import LoadError, VMError
from kprobegen.progress import Notice
from kprobegen.cache import cache_dir
from kprobegen.kernels import Kernel
from kprobegen.kernels.modules import modinfo
from kprobegen.vm import qemu as _qemu
from kprobegen.vm.image import boot_image
from kprobegen.vm.initramfs import Initramfs
from kprobegen.vm.protocol import DataChannel

__all__ = [
    "Oracle", "ModuleLoad", "Run", "run", "capture_profile", "render_init",
]

_SYMBOL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_MODNAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Kernel log lines that make a run that otherwise finished an "oops".
_OOPS_RE = re.compile(r"(\bOops\b|\bBUG: |\bWARNING: |Kernel panic - not syncing|general protection fault)")
_PANIC_RE = re.compile(r"Kernel panic - not syncing")
_ANSI_RE = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1bc")


# -- public records ----------------------------------------------------------------------

@dataclass(frozen=True)
class Oracle:
    """The kernel's own dynamic kprobe on a symbol, counted independently of our modules."""

    probe: str   # "kprobe" or "kretprobe"
    symbol: str

    def __post_init__(self) -> None:
        if self.probe not in ("kprobe", "kretprobe"):
            raise VMError(f"oracle probe must be kprobe or kretprobe, not {self.probe!r}")
        if not _SYMBOL_RE.match(self.symbol):
            raise VMError(f"oracle symbol {self.symbol!r} is not a kernel symbol name")

    @property
    def key(self) -> str:
        return f"{self.probe}:{self.symbol}"


@dataclass
class ModuleLoad:
    name: str
    path: Path
    insmod_rc: int                 # -1: not tried (an earlier module failed to load)
    error: str | None              # the kernel's reason (insmod stderr + new dmesg lines)
    rmmod_rc: int | None = None    # None: never loaded, so never unloaded

    @property
    def reason(self) -> str:
        """``error`` on one line (log timestamps dropped), with a hint for known causes."""
        if self.error is None:
            return ""
        lines = [re.sub(r"^\[\s*\d+\.\d+\]\s*", "", ln).strip() for ln in self.error.splitlines()]
        text = "; ".join(ln for ln in lines if ln)
        if re.search(r"Lockdown:|Key was rejected|Required key not available|sig_enforce", self.error):
            text += ("; hint: this kernel refuses unsigned modules (lockdown or module.sig_enforce): "
                     "boot it without enforcement or use another kernel")
        elif "Unknown symbol" in self.error:
            text += "; hint: the module uses a symbol this kernel does not export: rebuild it for this kernel"
        return text


@dataclass
class Run:
    status: str                    # ok | panic | oops | timeout | lost
    accel: str                     # kvm | tcg: the one actually used
    exit_code: int | None
    stdout: str                    # the workload's output, decoded (undecodable bytes replaced)
    stderr: str
    kernel_log: str                #: /dev/kmsg records, read in the guest after the unload
    loads: list[ModuleLoad]
    oracle: dict[str, tuple[int, int]]
    console_tail: str
    timings: dict[str, float]
    #: /proc/modules and /sys/kernel/debug/kprobes/list in the guest after the unload
    leftover_modules: list[str] = field(default_factory=list)
    leftover_kprobes: list[str] = field(default_factory=list)
    #: the kernel log in other forms: "dmesg" (busybox dmesg, always), "dmesg_r" (dmesg -r, with
    #: log_forms=True)
    log_forms: dict[str, str] = field(default_factory=dict)
    #: oracles the kernel refused (kprobe_events write failed: unknown or blacklisted symbol)
    oracle_errors: list[str] = field(default_factory=list)
    #: why the status is not ok, in one line (empty when ok)
    reason: str = ""
    argv: list[str] = field(default_factory=list)
    #: the workload's output exactly as it wrote it (binary output passes through untouched)
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""

    @property
    def loaded_ok(self) -> bool:
        return all(m.insmod_rc == 0 for m in self.loads)

    def raise_for_status(self) -> "Run":
        """Raise VMError unless the VM run finished cleanly (status "ok")."""
        if self.status != "ok":
            line = self.reason or meaningful_line(self.console_tail) or "no console output"
            raise VMError(f"VM run {self.status} ({self.accel}): {line}")
        return self


# -- modules -----------------------------------------------------------------------------

def _module_name(path: Path, info: dict[str, str]) -> str:
    name = info.get("name") or Path(path).name.removesuffix(".ko").replace("-", "_")
    if not _MODNAME_RE.match(name):
        raise LoadError(f"{path}: module name {name!r} is not a C identifier")
    return name


# -- the init script ---------------------------------------------------------------------

def render_init(**ctx) -> str:
    """The guest's /init (templates/vm-init.sh.j2), through codegen's one Jinja environment.
    Imported here, not at the top: codegen (jinja2) would add its import time to every command
    that imports the VM, and only a boot needs it."""
    from kprobegen.codegen.jinja import environment

    return environment().get_template("vm-init.sh.j2").render(**ctx)


@dataclass(frozen=True)
class _OracleDef:
    key: str
    event: str
    event_def: str


def _oracle_defs(oracles) -> list[_OracleDef]:
    defs, seen = [], set()
    for o in oracles:
        if not isinstance(o, Oracle):
            o = Oracle(*o)
        if o.key in seen:
            continue
        seen.add(o.key)
        event = f"kpg_o{len(defs)}"
        kind = "p" if o.probe == "kprobe" else "r"
        defs.append(_OracleDef(o.key, event, f"{kind}:kpg_oracle/{event} {o.symbol}"))
    return defs


@dataclass
class _Session:
    status: str = "lost"
    accel: str = "tcg"
    reason: str = ""
    console: bytes = b""
    tags: list[tuple[str, list[str], float]] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    blob_errors: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    kvm_probe: float | None = None


_PROGRESS = {"loading": "loading", "running": "running", "unloading": "collecting"}


def boot(kernel_image: Path, initrd: Path, workdir: Path, nonce: str, *, timeout: float, accel: str | None,
          progress: Callable[[str], None] | None, memory_mb: int = 512, append: str | None = None,
          disks: tuple[tuple[Path, bool], ...] = (), streams: int = 0,
          on_output: Callable[[int, bytes], None] | None = None, report: bool = True,
          channels: tuple[tuple[str, Path], ...] = (), on_start: Callable[[str], None] | None = None,
          root_overlay: Path | None = None, qmp: Path | None = None, incoming: str | None = None) -> _Session:
    """Boot once, or twice under auto: a KVM boot that does not reach the guest's /init (it
    hangs, qemu exits or aborts, KVM refuses) is killed, the verdict remembered for this boot
    of the host, and the same initramfs boots again under TCG. Follow the protocol to the end.

    ``append`` and ``disks`` go to qemu_argv (the full guest); ``streams`` more serial ports
    are followed as byte streams, each new chunk handed to ``on_output(index, bytes)``; a
    guest that sends no report blob (``report=False``) is not counted as lost for it.
    ``channels`` go to qemu_argv; ``on_start(accel)`` is called each time a qemu has started (a
    session connects to its channel's socket then). ``root_overlay``, ``qmp`` and ``incoming``
    go to qemu_argv too; a machine that starts from a saved state (``incoming``) is started
    once, under ``accel`` as given (kvm or tcg: the one it was saved under)."""
    if incoming is not None and accel not in ("kvm", "tcg"):
        raise VMError(f"a saved machine resumes under the accel it was saved under (kvm or tcg), not {accel!r}")
    plan = _qemu.accel_plan(accel)
    probing = len(plan) > 1  # auto with KVM still worth a try
    t_begin = time.monotonic()
    deadline = t_begin + timeout
    kvm_probe: float | None = None
    for acc in plan:
        s = _Session(accel=acc)
        console, data = workdir / f"console-{acc}.log", workdir / f"data-{acc}.log"
        stream_logs = tuple(workdir / f"stream{i}-{acc}.log" for i in range(streams))
        q = _qemu.QemuProcess(
            argv=_qemu.qemu_argv(kernel_image=kernel_image, initrd=initrd, console_log=console,
                                 data_log=data, accel=acc, memory_mb=memory_mb, append=append,
                                 disks=disks, stream_logs=stream_logs, channels=channels,
                                 root_overlay=root_overlay, qmp=qmp, incoming=incoming),
            console_log=console, data_log=data, stderr_log=workdir / f"qemu-{acc}.log",
            stream_logs=stream_logs,
        )
        s.argv = q.argv

        def pump(q=q) -> None:
            for i in range(streams):
                chunk = q.read_new(f"stream{i}")
                if chunk and on_output is not None:
                    on_output(i, chunk)

        def on_tag(tag, args, s=s):
            now = time.monotonic()
            s.tags.append((tag, args, now))
            if tag in ("BOOT", "DONE"):
                s.marks.setdefault(tag, now)
            elif tag == "STAGE" and args:
                s.marks.setdefault(args[0], now)
                if progress and args[0] in _PROGRESS:
                    progress(_PROGRESS[args[0]])

        proto = DataChannel(nonce, on_tag)
        if progress:
            progress(f"resuming a saved machine ({acc})" if incoming is not None else f"booting ({acc})")
        q.start()
        s.marks["start"] = q.started
        if on_start is not None:
            on_start(acc)
        probe_until = q.started + _qemu.KVM_PROBE_SECONDS if (acc == "kvm" and probing) else None
        try:
            kvm_failed = _follow(q, proto, s, probe_until=probe_until, deadline=deadline, timeout=timeout,
                                 pump=pump)
        finally:
            q.kill()  # on every way out, KeyboardInterrupt included: no qemu outlives its run
        if kvm_failed:
            kvm_probe = time.monotonic() - q.started
            _qemu.record_kvm_verdict("broken", kvm_failed)
        elif acc == "kvm" and probing and "BOOT" in s.marks:
            _qemu.record_kvm_verdict("works")
        s.marks["exit"] = time.monotonic()
        s.blobs, s.blob_errors = _untar(proto.blobs), proto.blob_errors
        if report and s.status == "ok" and "report" not in proto.blobs and not s.blob_errors:
            s.blob_errors = ["the guest said DONE but sent no report"]
        if not kvm_failed:
            break
        if progress:
            progress(Notice(f"kvm boot failed ({kvm_failed}); falling back to tcg "
                            "(remembered until the host reboots: see `kprobegen doctor`)"))
    s.kvm_probe = kvm_probe
    if s.status == "ok" and s.blob_errors:
        s.status, s.reason = "lost", "output protocol broken: " + "; ".join(s.blob_errors)
    return s


def _follow(q: _qemu.QemuProcess, proto: DataChannel, s: _Session, *, probe_until: float | None,
            deadline: float, timeout: float, pump: Callable[[], None] = lambda: None) -> str:
    """Poll the serial logs until DONE, qemu's exit, the KVM probe's end or the deadline; set
    s.status / s.reason; ``pump()`` forwards the byte streams on every poll. While probing KVM
    (``probe_until`` set), a boot that has not reached /init when qemu exits or the probe time
    runs out returns why, in one line (fall back to TCG); otherwise "" ."""
    while True:
        pump()
        proto.feed(q.read_new("data"))
        s.console += q.read_new("console")
        if "DONE" in s.marks:
            pump()
            q.wait(10.0)  # poweroff -f follows at once
            s.status = "ok"
            return ""
        rc = q.poll()
        if rc is not None:
            # qemu is gone: read what it wrote last, then decide what happened.
            pump()
            proto.feed(q.read_new("data") + b"\n")
            s.console += q.read_new("console")
            if "DONE" in s.marks:
                s.status = "ok"
                return ""
            err = q.stderr_text().strip()
            exited = (f"qemu exited with status {rc} before the guest finished"
                      + (f": {err.splitlines()[-1]}" if err else ""))
            if probe_until is not None and "BOOT" not in s.marks:
                return exited
            text = s.console.decode(errors="replace")
            if _PANIC_RE.search(text):
                s.status = "panic"
            elif re.search(r"\bOops\b|\bBUG: ", text):
                s.status = "oops"
            else:
                s.status, s.reason = "lost", exited
            return ""
        now = time.monotonic()
        if probe_until is not None and "BOOT" not in s.marks and now > probe_until:
            return f"the boot did not reach the guest's /init within {_qemu.KVM_PROBE_SECONDS:g} s"
        if now > deadline:
            s.status = "timeout"
            s.reason = f"no result within {timeout:g} s (stage: {_last_stage(s)}); qemu killed"
            return ""
        time.sleep(0.02)


def _untar(blobs: dict[str, bytes]) -> dict[str, bytes]:
    """The files of the guest's report tar (one blob named "report")."""
    out = {}
    if "report" in blobs:
        with tarfile.open(fileobj=io.BytesIO(blobs["report"])) as tf:
            for member in tf.getmembers():
                if member.isfile():
                    out[member.name.removeprefix("./")] = tf.extractfile(member).read()
    return out


def _last_stage(s: _Session) -> str:
    stages = [a[0] for t, a, _ in s.tags if t == "STAGE" and a]
    if stages:
        return stages[-1]
    return "running /init" if "BOOT" in s.marks else "booting the kernel"


def console_lines(console: bytes) -> list[str]:
    text = _ANSI_RE.sub(b"", console).decode(errors="replace").replace("\r", "")
    return [ln for ln in text.split("\n") if ln.strip()]


def meaningful_line(tail: str) -> str:
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    for pat in (r"Kernel panic - not syncing", r"\bBUG: ", r"\bOops\b", r"general protection", r"\bWARNING: "):
        hits = [ln for ln in lines if re.search(pat, ln)]
        if hits:
            return hits[-1].strip()
    return lines[-1].strip() if lines else ""


def new_workdir() -> Path:
    base = cache_dir() / "vm" / "runs"
    try:
        base.mkdir(parents=True, exist_ok=True)
        # runs whose Python process was killed leave their directory behind: prune old ones
        for old in base.glob("run-*"):
            try:
                if time.time() - old.stat().st_mtime > 6 * 3600:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        return Path(tempfile.mkdtemp(prefix="run-", dir=base))
    except OSError:
        return Path(tempfile.mkdtemp(prefix="kprobegen-vm-"))


def guest_path(path: str) -> str:
    p = PurePosixPath(path)
    if not p.is_absolute():
        p = PurePosixPath("/root") / p
    if ".." in p.parts:
        raise VMError(f"--add guest path {path!r} must not contain '..'")
    if p.parts[1:2] in (("proc",), ("sys",), ("dev",), ("kpg",)) or str(p) == "/init":
        raise VMError(f"--add guest path {path!r} is reserved (/init, /proc, /sys, /dev, /kpg)")
    return str(p)


def _add_tree(ir: Initramfs, host: Path, guest: str) -> None:
    if host.is_dir():
        ir.mkdir(guest)
        for child in sorted(host.iterdir()):
            _add_tree(ir, child, f"{guest}/{child.name}")
    elif host.is_file():
        ir.copy(host, guest)
    else:
        raise VMError(f"--add {host}: no such file or directory on the host")


def _base_initramfs() -> Initramfs:
    ir = Initramfs()
    for d in ("/bin", "/dev", "/proc", "/sys", "/tmp", "/root", "/kpg", "/kpg/mod"):
        ir.mkdir(d)
    ir.chardev("/dev/console", 5, 1)
    ir.chardev("/dev/null", 1, 3, 0o666)
    ir.add_busybox()
    return ir


def _boot_init(kernel: Kernel, init: dict, *, mods=(), add=(), **options) -> tuple[_Session, float]:
    """Render /init from ``init`` (with a fresh nonce), write the initramfs (busybox, /init,
    ``mods`` as (name, path), ``add`` as (host, guest)) to a new workdir and boot it with
    ``options``; the workdir goes afterwards. The session, and when the initramfs
    was written (time.monotonic())."""
    nonce = secrets.token_hex(8)
    script = render_init(nonce=nonce, **init)
    workdir = new_workdir()
    try:
        ir = _base_initramfs()
        ir.file("/init", script.encode(), 0o755)
        for name, p in mods:
            ir.copy(p, f"/kpg/mod/{name}.ko", 0o644)
        for host, guest in add:
            _add_tree(ir, Path(host), guest_path(guest))
        initrd = ir.write(workdir / "initramfs.cpio.gz", compress=True)
        t_written = time.monotonic()
        s = boot(boot_image(kernel), initrd, workdir, nonce, **options)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return s, t_written


def _require_kernel(kernel) -> None:
    """A caller's mistake said at the entry, not as an AttributeError deep in a boot."""
    if not isinstance(kernel, Kernel):
        raise TypeError(f"expected a kprobegen.kernels.Kernel (find_kernel(release) makes one), got {kernel!r}")


# -- the public entry points -------------------------------------------------------------

def run(kernel: Kernel, modules: list[Path], cmd: list[str], *, add: list[tuple[Path, str]] = (),
        timeout: float = 120.0, accel: str | None = None, oracles: list[Oracle] = (),
        progress: Callable[[str], None] | None = None, log_forms: bool = False,
        memory_mb: int = 512) -> Run:
    """Boot ``kernel``, insmod ``modules`` in order, run ``cmd``, unload, and report.

    A run that dies (panic, oops, timeout, lost output) returns a Run with that status and the
    console tail; call ``raise_for_status()`` to turn it into a VMError. A module that fails
    to load stops the loading (later modules are not tried, the workload does not run), and
    everything already loaded is unloaded.
    """
    _require_kernel(kernel)
    t0 = time.monotonic()
    mods = []
    for p in modules:
        p = Path(p)
        if not p.is_file():
            raise LoadError(f"module {p} does not exist: build it first (kprobegen build)")
        info = modinfo(p)
        name = _module_name(p, info)
        vermagic = info.get("vermagic", "").split(" ")[0]
        if vermagic and vermagic != kernel.release:
            raise LoadError(
                f"{p} was built for kernel {vermagic}, but the VM boots {kernel.release}: "
                f"rebuild it with --kernel {kernel.release}"
            )
        if name in [m[0] for m in mods]:
            raise LoadError(f"two modules named {name} ({p}): a kernel loads a name only once")
        mods.append((name, p))
    odefs = _oracle_defs(oracles)
    cmd = list(cmd)
    init = dict(profile=False, oracles=odefs, module_names=[m[0] for m in mods],
                cmd=shlex.join(cmd) if cmd else "true", log_forms=log_forms)
    s, t_written = _boot_init(kernel, init, mods=mods, add=add,
                              timeout=timeout, accel=accel, progress=progress, memory_mb=memory_mb)
    return _assemble(s, mods, odefs, t0, t_written - t0)


def _assemble(s: _Session, mods, odefs, t0: float, t_ir: float) -> Run:
    text = lambda name: s.blobs.get(name, b"").decode(errors="replace")  # noqa: E731
    loads: dict[str, ModuleLoad] = {n: ModuleLoad(n, p, -1, "not tried: an earlier module failed to load")
                                    for n, p in mods}
    exit_code = None
    oracle: dict[str, tuple[int, int]] = {}
    by_event = {o.event: o.key for o in odefs}
    oracle_errors = []
    for tag, args, _ in s.tags:
        if any(not re.fullmatch(r"-?\d+", a) for a in args[1:] if tag in ("INSMOD", "RMMOD", "ORACLE")) or (
                tag == "EXIT" and not (args and re.fullmatch(r"\d+", args[0]))):
            continue  # malformed (never written by our /init)
        if tag == "INSMOD" and len(args) == 2 and args[0] in loads:
            rc = int(args[1])
            loads[args[0]].insmod_rc = rc
            loads[args[0]].error = None if rc == 0 else (
                text(f"insmod.{args[0]}").strip() or f"insmod exited {rc}")
        elif tag == "RMMOD" and len(args) == 2 and args[0] in loads:
            loads[args[0]].rmmod_rc = int(args[1])
        elif tag == "EXIT" and args:
            exit_code = int(args[0])
        elif tag == "ORACLE" and len(args) == 3 and args[0] in by_event:
            oracle[by_event[args[0]]] = (int(args[1]), int(args[2]))
        elif tag == "ORACLE_ERR":
            oracle_errors.append(by_event.get(args[0], args[0]) if args else "?")
    kernel_log = text("kmsg")
    status, reason = s.status, s.reason
    if status == "ok":
        bad = [ln for ln in kernel_log.splitlines() if _OOPS_RE.search(ln)]
        if bad:
            status = "panic" if any(_PANIC_RE.search(ln) for ln in bad) else "oops"
            reason = bad[0].strip()
    tail_lines = console_lines(s.console)[-50:]
    console_tail = "\n".join(tail_lines)
    if status != "ok" and not reason:
        reason = meaningful_line(console_tail)
    m = s.marks
    span = lambda a, b: round(m[b] - m[a], 3) if a in m and b in m else None  # noqa: E731
    timings = {
        "initramfs": round(t_ir, 3),
        "boot": span("start", "BOOT"),
        "load": span("loading", "running"),
        "workload": span("running", "unloading"),
        "unload": span("unloading", "collecting"),
        "collect": span("collecting", "DONE"),
        "shutdown": span("DONE", "exit"),
        "total": round(time.monotonic() - t0, 3),
    }
    if s.kvm_probe is not None:
        timings["kvm_probe"] = round(s.kvm_probe, 3)
    timings = {k: v for k, v in timings.items() if v is not None}
    return Run(
        status=status, accel=s.accel, exit_code=exit_code,
        stdout=text("stdout"), stderr=text("stderr"), kernel_log=kernel_log,
        loads=list(loads.values()), oracle=oracle, console_tail=console_tail, timings=timings,
        leftover_modules=[ln.split(" ")[0] for ln in text("modules_after").splitlines() if ln.strip()],
        leftover_kprobes=[ln for ln in text("kprobes_after").splitlines() if ln.strip()],
        log_forms={k: text(k) for k in ("dmesg", "dmesg_r") if k in s.blobs},
        oracle_errors=oracle_errors, reason=reason, argv=s.argv,
        stdout_bytes=s.blobs.get("stdout", b""), stderr_bytes=s.blobs.get("stderr", b""),
    )


def capture_profile(kernel: Kernel, timeout: float = 180.0, *, accel: str | None = None,
                    progress: Callable[[str], None] | None = None) -> dict[str, bytes]:
    """Boot ``kernel`` once and return its raw profile.

    {"kallsyms": /proc/kallsyms, "blacklist": /sys/kernel/debug/kprobes/blacklist,
     "config": /proc/config.gz decompressed, or b"" when the kernel has no IKCONFIG}
    """
    _require_kernel(kernel)
    init = dict(profile=True, oracles=[], module_names=[], cmd="true", log_forms=False)
    s, _ = _boot_init(kernel, init, timeout=timeout, accel=accel, progress=progress)
    missing = [k for k in ("kallsyms", "blacklist", "config") if k not in s.blobs]
    if s.status != "ok" or missing:
        tail = console_lines(s.console)[-5:]
        why = s.reason or (f"missing {', '.join(missing)}" if missing else s.status)
        raise VMError(
            f"capturing the profile of kernel {kernel.release} failed ({s.status}, {s.accel}): {why}"
            + (f"; console: {tail[-1]}" if tail else "")
        )
    return {k: s.blobs[k] for k in ("kallsyms", "blacklist", "config")}
