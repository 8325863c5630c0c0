"""Host mode: load, list, snapshot and unload kprobegen modules on the running kernel.

On a machine that can load modules (a server, a Vagrant box, the full Debian guest), a module
is inserted and stays loaded while work happens (kprobegen.pipeline.load_on_host first checks
a spec against the running kernel's own symbol table, ``running_profile``, and builds it
against ``/lib/modules/$(uname -r)/build``). What is loaded is read from the kernel, never from a file of ours alone:

* a kprobegen module carries ``MODULE_INFO(kprobegen_protocol, …)`` (checked in a ``.ko`` before
  it is loaded) and, once loaded, its own debugfs folder ``/sys/kernel/debug/kprobegen/<module>/``
  whose ``report`` file prints a report frame, summed over CPUs, each time it is read: live
  counts without the kernel log. A module without that folder is not ours: never listed, never
  unloaded;
* ``/run/kprobegen/<module>.json`` (written atomically at load, removed at unload) adds what
  the kernel does not know: the spec file, the .ko, when it was loaded.

Unloading is ``rmmod``; the final report is the module's last frame in ``/dev/kmsg``, where
the facility of every record shows that the kernel wrote it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from kprobegen.cache import atomic_write
from kprobegen.errors import LoadError
from kprobegen.kernels.modules import host_module_support, modinfo

# `kprobegen load FILE.ko`, `list`, `snapshot` and `unload` are one short process each, timed
# against plain insmod in bench/host_bench.py: what only some of them use is imported where it
# is used, each import saying what it costs (under TCG in the full guest).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from kprobegen.kernels.symbols import Profile

DEBUGFS = Path("/sys/kernel/debug")
REPORTS = DEBUGFS / "kprobegen"
STATE = Path("/run/kprobegen")
#: The modinfo key every generated module carries.
MARK = "kprobegen_protocol"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,55}$")


@dataclass(frozen=True)
class LoadedModule:
    """A kprobegen module loaded in the running kernel."""

    name: str
    kernel: str                 # the running kernel's release
    loaded_at: str | None       # UTC, ISO 8601 (None when loaded by something else than kprobegen)
    spec: str | None            # the spec file it was built from, when kprobegen loaded it
    ko: str | None

    def to_json(self) -> dict:
        return {"module": self.name, "kernel": self.kernel, "loaded_at": self.loaded_at,
                "spec": self.spec, "ko": self.ko}


def release() -> str:
    return os.uname().release


def cannot_load() -> str | None:
    """Why modules cannot be loaded here (one line), or None when they can."""
    supported, why = host_module_support()
    return None if supported else why


def require_loading() -> None:
    """LoadError saying why, unless modules can be loaded here."""
    why = cannot_load()
    if why:
        raise LoadError(f"cannot load modules on this machine: {why}")


def _run(*argv: str) -> tuple[int, str]:
    """Run mount (or insmod, rmmod where their syscalls are not known here): (its exit
    status, its stderr); stdin and stdout /dev/null.

    With os.posix_spawnp: the sh library imports asyncio (0.8 s under TCG), and subprocess
    alone costs 0.05 s, for three commands that need a pipe and a wait."""
    r, w = os.pipe()
    try:
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, w, 2)])
    except OSError as exc:
        os.close(r)
        raise LoadError(f"cannot run {argv[0]}: {exc.strerror}") from None
    finally:
        os.close(w)
    with open(r, "rb") as err:
        stderr = err.read()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), stderr.decode(errors="replace")


#: finit_module(2) and delete_module(2), by machine: what insmod and rmmod call, called here
#: directly (spawning kmod's insmod costs ~30 ms under TCG, a third of a load). Elsewhere the
#: commands are run.
_SYSCALLS = {"x86_64": (313, 176), "aarch64": (273, 106)}
#: What kmod's insmod says for the errors finit_module gives most (its mod_strerror).
_INSMOD_ERRORS = {
    errno.ENOEXEC: "Invalid module format",
    errno.ENOENT: "Unknown symbol in module, or unknown parameter (see dmesg)",
    errno.ENOSYS: "Kernel does not have module support",
    errno.EEXIST: "Module already in kernel",
}


def _module_syscall(which: int, *args) -> int:
    """The syscall's errno, 0 when it worked."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ctypes.set_errno(0)
    return 0 if libc.syscall(ctypes.c_long(which), *args) == 0 else ctypes.get_errno()


def _insmod(ko: Path) -> str | None:
    """Insert the module file (no parameters); None, or why not in one line."""
    calls = _SYSCALLS.get(os.uname().machine)
    if calls is None:
        status, stderr = _run("insmod", str(ko))
        return None if status == 0 else (stderr.strip().splitlines()[-1:] or ["insmod failed"])[0]
    import ctypes

    fd = os.open(ko, os.O_RDONLY | os.O_CLOEXEC)
    try:
        err = _module_syscall(calls[0], ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_int(0))
    finally:
        os.close(fd)
    return None if err == 0 else _INSMOD_ERRORS.get(err, os.strerror(err))


def _rmmod(name: str) -> str | None:
    """Remove the module at once (O_NONBLOCK, as rmmod does: one in use stays); None, or why not."""
    calls = _SYSCALLS.get(os.uname().machine)
    if calls is None:
        status, stderr = _run("rmmod", name)
        return None if status == 0 else (stderr.strip() or "no reason given")
    import ctypes

    err = _module_syscall(calls[1], ctypes.c_char_p(name.encode()), ctypes.c_uint(os.O_NONBLOCK))
    if err in (errno.EAGAIN, errno.EBUSY):
        return f"Module {name} is in use"
    if err == errno.ENOENT:
        return f"Module {name} is not currently loaded"
    return None if err == 0 else os.strerror(err)


def _mount_debugfs() -> None:
    if not (DEBUGFS / "kprobes").exists():
        status, stderr = _run("mount", "-t", "debugfs", "debugfs", str(DEBUGFS))
        if status != 0:
            raise LoadError(f"debugfs is not mounted at {DEBUGFS} and mounting it failed: {stderr.strip()}")


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise LoadError(f"{name!r} is not a module name (a C identifier of at most 56 characters)")
    return name


def is_loaded(name: str) -> bool:
    return Path("/sys/module", name).exists()


def is_ours(name: str) -> bool:
    return (REPORTS / name / "report").exists()


def load_ko(ko: str | Path, *, spec: str | Path | None = None, loading_checked: bool = False) -> LoadedModule:
    """insmod a kprobegen module built for the running kernel; refused unless it carries the
    kprobegen mark and its vermagic names this kernel. Loading a module that is loaded is an
    error that says so. ``loading_checked``: the caller has just called ``require_loading()``
    (its scan of /proc/kallsyms, about 40 ms under TCG in the full guest, is made once per boot)."""
    if not loading_checked:
        require_loading()  # first: whoever cannot load learns that, not some detail of the file
    ko = Path(ko).resolve()
    if not ko.is_file():
        raise LoadError(f"{ko}: no such module file")
    info = modinfo(ko)
    name = _check_name(info.get("name") or ko.name.removesuffix(".ko").replace("-", "_"))
    if MARK not in info:
        raise LoadError(f"{ko}: not a kprobegen module (no {MARK} in its modinfo): kprobegen loads only its own")
    vermagic = info.get("vermagic", "").split(" ")[0]
    if vermagic != release():
        raise LoadError(f"{ko} was built for kernel {vermagic or '(no vermagic)'}, this machine runs {release()}: "
                        f"rebuild it here (kprobegen load SPEC) or for {release()}")
    if is_loaded(name):
        why = "by kprobegen" if is_ours(name) else "and it is not a kprobegen module"
        raise LoadError(f"module {name} is already loaded {why}: unload it first (kprobegen unload {name})")
    _mount_debugfs()
    kmsg = _kmsg_at_end()  # what the kernel says from here on explains a failed insmod
    try:
        reason = _insmod(ko)
        if reason is not None:
            kernel_says = [r.text for r in _kmsg_read(kmsg) if name in r.text or "kprobe" in r.text][-3:]
            raise LoadError(f"insmod {name} failed: {reason}" + (f"; kernel: {'; '.join(kernel_says)}"
                                                                 if kernel_says else ""))
        since = [r.seq for r in _kmsg_read(kmsg)]     # the module's own lines are among these
    finally:
        os.close(kmsg)
    loaded = LoadedModule(name, release(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          str(Path(spec).resolve()) if spec else None, str(ko))
    _write_state(loaded, min(since) if since else None)
    return loaded


def _write_state(loaded: LoadedModule, kmsg_seq: int | None) -> None:
    """The state file: what the kernel does not know, and where in the kernel log the module's
    lines start (``kmsg_seq``), so that its final report is read from there, not from the
    whole log (which a long session fills with the frames of every module before it)."""
    STATE.mkdir(parents=True, exist_ok=True)
    atomic_write(STATE / f"{loaded.name}.json", json.dumps({**loaded.to_json(), "kmsg_seq": kmsg_seq}, indent=2) + "\n")


def _state(name: str) -> dict:
    try:
        data = json.loads((STATE / f"{name}.json").read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def loaded() -> list[LoadedModule]:
    """The kprobegen modules loaded now, by name (modules not made by kprobegen never appear)."""
    if not REPORTS.is_dir():
        return []
    out = []
    for d in sorted(REPORTS.iterdir()):
        if is_loaded(d.name) and (d / "report").exists():
            st = _state(d.name)
            out.append(LoadedModule(d.name, release(), st.get("loaded_at"), st.get("spec"), st.get("ko")))
    return out


def _ours(name: str) -> None:
    _check_name(name)
    if not is_loaded(name):
        raise LoadError(f"module {name} is not loaded")
    if not is_ours(name):
        raise LoadError(f"module {name} is not a kprobegen module (no {REPORTS / name}): kprobegen leaves it alone")


def snapshot_text(name: str) -> str:
    """The module's live report frame, read from its debugfs file (no kernel log involved)."""
    _ours(name)
    try:
        return (REPORTS / name / "report").read_text(errors="replace")
    except OSError as exc:
        raise LoadError(f"reading {REPORTS / name / 'report'} failed: {exc.strerror}") from None


def snapshot(name: str):
    """Live counts of a loaded module: its Results, summed over CPUs at read time."""
    from kprobegen.report import parse_log  # here: 0.15 s under TCG, and `load` and `list` parse nothing

    return _latest(parse_log(snapshot_text(name)), name, "snapshot")


def unload(name: str):
    """rmmod the module, then its final report from /dev/kmsg (Results). A module that cannot
    be removed (in use) stays loaded and the kernel's reason is raised."""
    from kprobegen.report import parse_log  # here: 0.15 s under TCG, and `load` and `list` parse nothing

    _ours(name)
    since = _state(name).get("kmsg_seq")
    reason = _rmmod(name)
    if reason is not None:
        raise LoadError(f"rmmod {name} failed: {reason}; it stays loaded")
    (STATE / f"{name}.json").unlink(missing_ok=True)
    return _latest(_final_reports(name, since), name, "unload")


def final_report(name: str):
    """The latest final report (reason ``unload``) of ``name`` in the kernel's log buffer, or
    None: for a module that someone else removed (rmmod by hand), read after the fact."""
    _check_name(name)
    finals = [r for r in _final_reports(name, _state(name).get("kmsg_seq")).results(module=name)
              if r.reason == "unload"]
    return finals[-1] if finals else None


def _final_reports(name: str, since):
    """The kernel log parsed from record ``since`` on (the module's load, when its state file
    says where), else whole; whole too when the part has no report of ``name``."""
    from kprobegen.report import parse_log  # here: 0.15 s under TCG, and `load` and `list` parse nothing

    records = _kmsg_records()
    if isinstance(since, int) and not isinstance(since, bool):
        log = parse_log("".join(r.raw for r in records if r.seq >= since))
        if log.results(module=name):
            return log
    return parse_log("".join(r.raw for r in records))


def _latest(log, name: str, what: str):
    results = log.results(module=name)
    if not results:
        raise LoadError(f"no {what} report of {name} found"
                        + (f": {'; '.join(log.problems)}" if getattr(log, "problems", None) else ""))
    return results[-1]


# -- /dev/kmsg ----------------------------------------------------------------------------

@dataclass(frozen=True)
class _KmsgRecord:
    seq: int
    text: str
    raw: str      # the record as /dev/kmsg gave it ("PRI,SEQ,TS,FLAGS;text\n")


def _kmsg_records() -> list[_KmsgRecord]:
    """Every record in the kernel's log buffer now, read from /dev/kmsg without blocking."""
    fd = _kmsg_open()
    try:
        return _kmsg_read(fd)
    finally:
        os.close(fd)


def _kmsg_open() -> int:
    try:
        return os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:   # EPERM: dmesg_restrict without CAP_SYSLOG
        raise LoadError(f"cannot read the kernel log (/dev/kmsg: {exc.strerror}): the final counts are read "
                        "from it (needs CAP_SYSLOG where kernel.dmesg_restrict is 1)") from None


def _kmsg_at_end() -> int:
    """/dev/kmsg opened after its last record: reading it gives what the kernel logs next."""
    fd = _kmsg_open()
    try:
        os.lseek(fd, 0, os.SEEK_END)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _kmsg_read(fd: int) -> list[_KmsgRecord]:
    """The records readable now from a /dev/kmsg descriptor opened with O_NONBLOCK."""
    out = []
    while True:
        try:
            data = os.read(fd, 16384)
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                break
            if exc.errno == errno.EPIPE:  # records overwritten while reading: go on
                continue
            raise
        if not data:
            break
        raw = data.decode(errors="replace")
        head, _, text = raw.partition(";")
        fields = head.split(",")
        try:
            seq = int(fields[1])
        except (IndexError, ValueError):
            continue
        out.append(_KmsgRecord(seq, text.split("\n", 1)[0], raw if raw.endswith("\n") else raw + "\n"))
    return out


# -- from a spec --------------------------------------------------------------------------

#: The last profile running_profile() made in this process, and what it was made from.
_profile_memo: tuple[tuple, "Profile"] | None = None


def _profile_key() -> tuple:
    """What the running kernel's symbols depend on: the boot, and the modules loaded that are not
    kprobegen's (their symbols and blacklisted functions are in /proc/kallsyms and the
    blacklist). Loading or unloading one of ours changes neither what a spec may probe nor
    what the checks say about the kernel's own functions."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        names = [line.split(" ", 1)[0] for line in Path("/proc/modules").read_text().splitlines()]
    except OSError:
        return (time.monotonic(),)         # cannot tell: never reuse
    return boot, tuple(sorted(n for n in names if not is_ours(n)))


def running_profile() -> Profile:
    """The running kernel's profile: /proc/kallsyms, the kprobe blacklist, its config.

    Parsing /proc/kallsyms takes 1.5 s under TCG; a long-lived process (the manager service)
    keeps the last profile while the boot and the other modules loaded stay the same."""
    global _profile_memo
    _mount_debugfs()
    key = _profile_key()
    if _profile_memo is not None and _profile_memo[0] == key:
        return _profile_memo[1]
    # here: only `load SPEC` checks symbols, and kernels.symbols costs 0.15 s under TCG
    from kprobegen.kernels.symbols import profile_from_raw

    raw = {"kallsyms": Path("/proc/kallsyms").read_bytes()}
    blacklist = DEBUGFS / "kprobes" / "blacklist"
    if blacklist.exists():
        raw["blacklist"] = blacklist.read_bytes()
    config = Path(f"/boot/config-{release()}")
    if config.is_file():
        raw["config"] = config.read_bytes()
    profile = profile_from_raw(release(), raw)
    _profile_memo = (key, profile)
    return profile
