"""The service's intent and its reconciliation with the kernel.

Intent is ``<state dir>/state.json``: the modules this service loaded (or adopted), from
which spec or .ko, when and by whom; written whole with ``kprobegen.cache.atomic_write``
after every change. The kernel is the truth for what is loaded (``host.loaded()``: a module
with the kprobegen debugfs folder is ours): on start, the service adopts our modules that
are loaded and marks recorded ones that are no longer there as gone, with their final counts
when the kernel log still holds them. A state file that
cannot be read is moved aside and reported, and the state is rebuilt from the kernel.

``<state dir>/lock`` is held (flock) for the life of the service: a second service with the
same state dir refuses to start.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from pydantic import ValidationError

from kprobegen import host
from kprobegen.cache import atomic_write
from kprobegen.errors import KprobegenError
from kprobegen.service.models import Module, _Model

DEFAULT_STATE_DIR = Path("/var/lib/kprobegen")
STATE_FORMAT = 1


class ServiceError(KprobegenError):
    """The service cannot start (its lock is held, its state dir is unusable)."""


class StateFile(_Model):
    format: int = STATE_FORMAT
    modules: dict[str, Module] = {}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def state_dir(given: str | Path | None = None) -> Path:
    """--state-dir, else $STATE_DIRECTORY (systemd's; the first of a colon list), else
    /var/lib/kprobegen."""
    if given:
        return Path(given)
    env = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(env) if env else DEFAULT_STATE_DIR


class ServiceLock:
    """An exclusive flock on ``<dir>/lock`` holding the owner's pid, kept until release()."""

    def __init__(self, directory: Path):
        self.path = directory / "lock"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise ServiceError(f"another kprobegen service (pid {holder}) holds {self.path}: "
                               "only one service may run per state dir") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def final_report(name: str):
    """The module's last final report in the kernel log, or None (not there any more, or the
    log cannot be read)."""
    try:
        return host.final_report(name)
    except (OSError, KprobegenError):
        return None


class State:
    """The recorded modules; every change is written to disk before it is answered."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.path = directory / "state.json"
        self.modules: dict[str, Module] = {}
        self.problems: list[str] = []

    def read(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            self.problems.append(f"{self.path}: cannot read: {exc.strerror}; state rebuilt from the kernel")
            return
        try:
            self.modules = StateFile.model_validate_json(raw).modules
        except (ValidationError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            aside = self.path.with_name(f"state.json.unreadable-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
            try:
                os.replace(self.path, aside)
                kept = f"kept as {aside.name}"
            except OSError as err:
                kept = f"could not be moved aside ({err.strerror})"
            self.problems.append(f"{self.path} is unreadable ({reason}; {len(raw)} bytes), {kept}; "
                                 "state rebuilt from the kernel")
            self.modules = {}

    def write(self) -> None:
        atomic_write(self.path, StateFile(modules=self.modules).model_dump_json(indent=2) + "\n")

    def reconcile(self) -> list[tuple[str, str, str]]:
        """Match the record with the kernel: adopt our loaded modules, mark the missing gone.
        Returns the events: (kind, module, detail)."""
        events = []
        kernel = {m.name: m for m in host.loaded()}
        for name, m in kernel.items():
            rec = self.modules.get(name)
            if rec is None:
                self.modules[name] = Module(module=name, status="loaded", origin="adopted", kernel=m.kernel,
                                            loaded_at=m.loaded_at, loaded_by=None, spec=m.spec, ko=m.ko)
                events.append(("adopted", name, "a kprobegen module loaded, not in the record"))
            elif rec.status != "loaded":
                self.modules[name] = rec.model_copy(update={"status": "loaded", "gone_at": None})
                events.append(("adopted", name, "recorded as gone, loaded again"))
            else:
                events.append(("adopted", name, "recorded and still loaded"))
        for name, rec in list(self.modules.items()):
            # in /sys/module but without its debugfs folder (debugfs not mounted?): still ours, by the record
            if name not in kernel and rec.status == "loaded" and not host.is_loaded(name):
                final = final_report(name)
                self.modules[name] = rec.model_copy(update={
                    "status": "gone", "gone_at": now(), "gone_reason": "missing",
                    "final": final.to_json() if final is not None else None})
                events.append(("gone", name, "recorded as loaded, no longer in the kernel; " +
                               ("its final counts were in the kernel log" if final is not None
                                else "no final report in the kernel log")))
        self.write()
        return events
