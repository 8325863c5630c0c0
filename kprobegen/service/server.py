"""The HTTP/JSON server on two Unix sockets, and the requests it answers.

Every request's peer is read from the kernel (SO_PEERCRED, and SO_PEERGROUPS for the
supplementary groups) before anything else is looked at: on the read-write socket only
root may do anything; on the read-only socket root or a member of the service's group may
read. Both sockets are mode 0666 so that a refused client gets a 403 and a reason rather
than a bare EACCES: the credential check is what grants access, not the file mode.
"""

from __future__ import annotations

import calendar
import grp
import json
import os
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, ValidationError

from kprobegen import __version__, host
from kprobegen.cache import atomic_write
from kprobegen.errors import KernelError, KprobegenError, LoadError, SpecError, SymbolError
from kprobegen.kernels.modules import modinfo
from kprobegen.service import models as m
from kprobegen.service.events import MAX_WAIT_S, EventLog
from kprobegen.service.state import ServiceLock, State, final_report, now, state_dir as _state_dir
from kprobegen.service.watch import ModuleWatcher

DEFAULT_SOCKET_DIR = Path("/run/kprobegen")
RW_SOCKET = "kprobegen.sock"
RO_SOCKET = "kprobegen-ro.sock"
#: How often lifetimes, time limits and the kernel's kprobes switch are checked.
HOUSEKEEPING_S = 0.25
#: Without udev, how often /sys/module is rescanned for modules removed outside the service.
POLL_RESCAN_S = 2.0
#: A module the service could not unload (in use) is tried again after this long.
RETRY_UNLOAD_S = 10.0
#: Gone modules kept in the record with their final counts (the oldest are forgotten).
MAX_GONE = 256
#: Disposable-VM runs at once (POST /v1/runs); more wait their turn. Each is a qemu.
MAX_RUNS = 2
#: A body larger than MAX_BODY is read (and dropped) up to this many bytes before the 413,
#: so that the client, still sending, reads the answer instead of a broken pipe.
DRAIN_LIMIT = 16 << 20
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)


class HTTPError(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason.replace("\n", " ")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_name(name: str) -> str:
    if not m.MODULE_NAME.match(name):
        raise HTTPError(400, f"{name[:80]!r} is not a module name (a C identifier of at most 56 characters)")
    return name


def peer_credentials(sock: socket.socket) -> tuple[int, int, int, frozenset[int]]:
    """(pid, uid, gid, supplementary gids) of the process at the other end, from the kernel."""
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)   # Python allows at most 1024: 256 groups
        groups = frozenset(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    except OSError:
        groups = frozenset()
    return pid, uid, gid, groups


class Service:
    """What the handlers share: the state, the events, the lock that orders changes.

    Changes to the kernel and the record (load, unload, adopting, noticing a removal) happen
    one at a time under ``changes``; builds run outside it, so that one slow build does not
    hold up the others. Reads (list, snapshot, events) take no lock."""

    def __init__(self, state_dir: Path, group: str | None, say=None):
        self.say = say or (lambda message: print(f"kprobegen serve: {message}", file=sys.stderr, flush=True))
        self.state_dir = state_dir
        self.started_at = now()
        self.gid: int | None = None
        self.group = group
        if group:
            try:
                self.gid = grp.getgrnam(group).gr_gid
            except KeyError:
                self.say(f"group {group} does not exist: the read-only socket serves root only")
        self.changes = threading.RLock()
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        self.lock = ServiceLock(state_dir)
        self.events = EventLog(state_dir / "events.jsonl")
        self.state = State(state_dir)
        self.state.read()
        self._retry_at: dict[str, float] = {}      # module -> when to try a service unload again
        self.cannot_load = host.cannot_load()      # None where modules load; else why (only runs then)
        self._runs = threading.BoundedSemaphore(MAX_RUNS)
        self._armed: bool | None = None
        self._stop = threading.Event()
        for problem in self.events.problems + self.state.problems:
            self.say(problem)
            self.event("state-unreadable", None, None, problem)
        for kind, name, detail in self.state.reconcile():
            self.say(f"{kind} {name}: {detail}")
            self.event(kind, name, None, detail)
        self.watcher = ModuleWatcher(self._module_changed, self.say)
        if not self.watcher.available:
            self.say(f"cannot watch module uevents ({self.watcher.reason}): rescanning every {POLL_RESCAN_S:g} s")
        self.event("started", None, None, f"pid {os.getpid()}, kernel {host.release()}, "
                                          f"watching modules by {'udev' if self.watcher.available else 'polling'}")

    def start(self) -> None:
        """Start watching: udev uevents and the housekeeping loop (lifetimes, time limits)."""
        self.watcher.start()
        if self.watcher.available:   # what changed between reconcile() and the watcher's start
            self.rescan()
        threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.watcher.stop()
        self.event("stopped", None, None, "loaded modules stay loaded")
        self.events.close()

    def event(self, kind: str, module: str | None, uid: int | None, detail: str | None = None) -> None:
        self.events.add(kind, module, uid, detail)

    # -- reads -------------------------------------------------------------------------------

    def health(self, socket_kind: str, peer: m.Peer) -> m.Health:
        return m.Health(version=__version__, kernel=host.release(), pid=os.getpid(), started_at=self.started_at,
                        socket=socket_kind, peer=peer, state_dir=str(self.state_dir),
                        problems=self.events.problems + self.state.problems,
                        can_load=self.cannot_load is None, watcher="udev" if self.watcher.available else "polling")

    def modules(self) -> m.ModuleList:
        return m.ModuleList(modules=[self.state.modules[k] for k in sorted(self.state.modules)])

    def module(self, name: str) -> m.Module:
        rec = self.state.modules.get(_check_name(name))
        if rec is None:
            raise HTTPError(404, f"module {name} is not known to this service")
        return rec

    def snapshot(self, name: str) -> m.Snapshot:
        rec = self.module(name)
        if rec.status != "loaded":
            raise HTTPError(409, f"module {name} is {rec.status} ({rec.gone_reason}): no live counts; "
                                 "its final counts are in the record")
        try:
            return m.Snapshot(module=name, results=host.snapshot(name).to_json())
        except LoadError as exc:
            raise HTTPError(409, _one_line(exc)) from None

    def snapshots(self) -> m.Snapshots:
        out, errors = {}, {}
        for name, rec in sorted(self.state.modules.items()):
            if rec.status == "loaded":
                try:
                    out[name] = host.snapshot(name).to_json()
                except KprobegenError as exc:
                    errors[name] = _one_line(exc)
        return m.Snapshots(snapshots=out, errors=errors)

    def events_since(self, since: int, wait: float = 0.0) -> m.Events:
        return self.events.since(since, wait)

    # -- changes -----------------------------------------------------------------------------

    def _require_loading(self) -> None:
        if self.cannot_load is not None:
            raise HTTPError(409, f"this machine cannot load modules ({self.cannot_load}): "
                                 "POST /v1/runs runs a spec in a disposable VM instead")

    def load(self, req: m.LoadRequest, peer: m.Peer) -> m.Module:
        # here: the pipeline (spec, codegen, kbuild) is only needed to load a spec
        from kprobegen import pipeline

        self._require_loading()
        client = self._client(peer) if req.lifetime == "client" else None
        stored = self._store_spec(req.spec) if req.spec is not None else None
        spec_path = stored or (Path(req.spec_path) if req.spec_path else None)
        try:
            if req.ko_path is not None:
                ko = Path(req.ko_path)
            else:
                ko = pipeline.build_on_host(spec_path, progress=lambda message: self.say(message)).ko
            with self.changes:
                loaded = host.load_ko(ko, spec=spec_path)
                return self._record(loaded, peer.uid, req.lifetime, req.time_limit_s, client)
        except KprobegenError as exc:
            reason = _one_line(exc)
            if stored is not None:  # an inline spec that did not load is not kept; its lines are "spec:L:C"
                reason = reason.replace(str(stored), "spec")
                with self.changes:
                    if not any(r.spec == str(stored) for r in self.state.modules.values()):
                        stored.unlink(missing_ok=True)
            raise HTTPError(_status_of(exc), reason) from None

    def upload(self, name: str, data: bytes, options: m.UploadOptions, peer: m.Peer) -> m.Module:
        """A .ko sent in the request body: kept under ``<state dir>/modules/`` (by content), then
        loaded like a .ko on disk (the kprobegen mark and the vermagic are checked by host mode)."""
        import hashlib

        _check_name(name)
        self._require_loading()
        client = self._client(peer) if options.lifetime == "client" else None
        if not data.startswith(b"\x7fELF"):
            raise HTTPError(422, "the body is not a kernel module (no ELF header)")
        folder = self.state_dir / "modules"
        folder.mkdir(exist_ok=True, mode=0o700)
        ko = folder / f"{hashlib.sha256(data).hexdigest()[:16]}.ko"
        with self.changes:
            if not ko.exists():
                atomic_write(ko, data)
            try:
                info = modinfo(ko)
                if info.get("name") != name:
                    raise HTTPError(422, f"the uploaded module is named {str(info.get('name'))[:80]!r}, "
                                         f"not {name!r}")
                loaded = host.load_ko(ko)
                return self._record(loaded, peer.uid, options.lifetime, options.time_limit_s, client)
            except KprobegenError as exc:
                self._forget_upload(ko)
                raise HTTPError(_status_of(exc), _one_line(exc).replace(str(ko), f"upload of {name}")) from None
            except HTTPError:
                self._forget_upload(ko)
                raise

    @staticmethod
    def _client(peer: m.Peer) -> tuple[int, int]:
        """The requesting process for ``lifetime: client``: one this service can watch."""
        client = _client_identity(peer.pid)
        if client is None:
            raise HTTPError(422, f"lifetime: client needs a client process this service can see, and pid "
                                 f"{peer.pid} is not one (another pid namespace: a container or another host?); "
                                 "give time_limit_s instead")
        return client

    def _record(self, loaded, uid: int, lifetime: str, time_limit_s: float | None,
                client: tuple[int, int] | None) -> m.Module:
        """Record a module the service just loaded (called with ``changes`` held)."""
        if lifetime == "client" and client is None:   # the client exited before its module loaded
            host.unload(loaded.name)
            raise HTTPError(409, f"the client that asked for {loaded.name} (lifetime client) has exited; unloaded")
        expires = None
        if time_limit_s is not None:
            expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + time_limit_s))
        rec = m.Module(module=loaded.name, status="loaded", origin="service", kernel=loaded.kernel,
                       loaded_at=loaded.loaded_at, loaded_by=uid, spec=loaded.spec, ko=loaded.ko,
                       lifetime=lifetime, client_pid=client[0] if client else None,
                       client_start=client[1] if client else None, time_limit_s=time_limit_s, expires_at=expires)
        self.state.modules[loaded.name] = rec
        self.state.write()
        self.event("loaded", loaded.name, uid, loaded.spec or loaded.ko)
        self.say(f"loaded {loaded.name} for uid {uid}" + (f", until pid {client[0]} exits" if client else "")
                 + (f", for at most {time_limit_s:g} s" if time_limit_s else ""))
        return rec

    def _store_spec(self, text: str) -> Path:
        """An inline spec, kept in the state dir (by content) so that the record can name it."""
        import hashlib

        specs = self.state_dir / "specs"
        specs.mkdir(exist_ok=True, mode=0o700)
        path = specs / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
        if not path.exists():
            atomic_write(path, text)
        return path

    def _forget_upload(self, ko: Path | str | None) -> None:
        """Delete an uploaded .ko that no record names any more (``changes`` held)."""
        if ko and Path(ko).parent == self.state_dir / "modules" and \
                not any(r.ko == str(ko) for r in self.state.modules.values()):
            Path(ko).unlink(missing_ok=True)

    def unload(self, name: str, uid: int) -> m.Unloaded:
        with self.changes:
            rec = self.module(name)
            if rec.status != "loaded":       # gone: hand over what was kept, and forget it
                del self.state.modules[name]
                self.state.write()
                self._forget_upload(rec.ko)
                self.event("unloaded", name, uid, f"was {rec.gone_reason}; record removed")
                return m.Unloaded(module=name, loaded_at=rec.loaded_at, unloaded_at=rec.gone_at or now(),
                                  results=rec.final, gone_reason=rec.gone_reason)
            try:
                results = host.unload(name)
            except LoadError as exc:
                if not host.is_loaded(name):
                    del self.state.modules[name]
                    self.state.write()
                    self._forget_upload(rec.ko)
                    self.event("unloaded", name, uid, f"final counts lost: {_one_line(exc)}")
                raise HTTPError(409, _one_line(exc)) from None
            del self.state.modules[name]
            self.state.write()
            self._forget_upload(rec.ko)
            self.event("unloaded", name, uid)
            self.say(f"unloaded {name} for uid {uid}")
            return m.Unloaded(module=name, loaded_at=rec.loaded_at, unloaded_at=now(), results=results.to_json())

    def run(self, req: m.RunRequest, uid: int) -> m.RunResult:
        """A spec run in a disposable VM (pipeline.run_spec), at most MAX_RUNS at once."""
        from kprobegen import pipeline
        from kprobegen.spec import parse_spec

        try:
            spec = parse_spec(req.spec, "spec")
            kernel = pipeline.resolve_kernel(req.kernel)
            with self._runs:
                done = pipeline.run_spec(spec, ["sh", "-c", req.workload], kernel=kernel, timeout=req.timeout_s,
                                         accel=req.accel, progress=lambda message: self.say(f"run {spec.module}: {message}"))
        except KprobegenError as exc:
            raise HTTPError(_status_of(exc), _one_line(exc)) from None
        result = done.to_json()
        self.event("run", spec.module, uid, f"kernel {kernel.release}, {result['accel']}, workload exit "
                                            f"{result['exit_code']}, {'complete' if done.report_error is None else 'incomplete'}")
        return m.RunResult(run=result, report_error=done.report_error)

    # -- what happens without a request ------------------------------------------------------------

    def _gone(self, name: str, reason: str, final, detail: str) -> None:
        """Mark a recorded module gone, keeping its final counts (``changes`` held)."""
        rec = self.state.modules[name]
        self.state.modules[name] = rec.model_copy(update={
            "status": "gone", "gone_at": now(), "gone_reason": reason,
            "final": final.to_json() if final is not None else None})
        gone = sorted((r.gone_at or "", n) for n, r in self.state.modules.items() if r.status == "gone")
        for _, old in gone[:max(0, len(gone) - MAX_GONE)]:
            self._forget_upload(self.state.modules.pop(old).ko)
        self.state.write()
        self.event(reason, name, None, detail)
        self.say(f"{name} {reason}: {detail}")

    def _service_unload(self, name: str, reason: str, detail: str) -> None:
        """Unload a module for its lifetime or time limit, keeping its final counts as gone."""
        with self.changes:
            rec = self.state.modules.get(name)
            if rec is None or rec.status != "loaded":
                return
            try:
                results = host.unload(name)
            except LoadError as exc:
                if host.is_loaded(name):    # in use: try again later
                    self._retry_at[name] = time.monotonic() + RETRY_UNLOAD_S
                    self.say(f"{name}: {detail}, but it cannot be unloaded yet: {_one_line(exc)}")
                    return
                results = None
                detail += f"; final counts lost: {_one_line(exc)}"
            self._retry_at.pop(name, None)
            self._gone(name, reason, results, detail)

    def _module_changed(self, name: str | None, action: str) -> None:
        """A uevent (a hint): rescan, and look again shortly after. The kernel sends a module's
        uevent while the module is still on its way: "add" before its init has made the debugfs
        folder, "remove" before /sys/module/NAME is deleted (kobject_cleanup sends KOBJ_REMOVE,
        then deletes the folder), so a rescan at once can still see the module there."""
        self.rescan()
        if name is not None and action in ("add", "remove"):
            for delay in (0.2, 1.0, 3.0):
                timer = threading.Timer(delay, self.rescan)
                timer.daemon = True
                timer.start()

    def rescan(self) -> None:
        """Match the record with the kernel now: a recorded module that left the kernel was
        removed outside the service (its final counts are read from the kernel log); a
        kprobegen module loaded outside the service is adopted."""
        if self._stop.is_set():
            return
        with self.changes:
            for name, rec in list(self.state.modules.items()):
                if rec.status == "loaded" and not host.is_loaded(name):
                    final = final_report(name)
                    self._gone(name, "removed", final, "unloaded outside the service (rmmod?)" +
                               ("" if final is not None else "; no final report in the kernel log"))
            for loaded in host.loaded():
                rec = self.state.modules.get(loaded.name)
                if rec is not None and rec.status == "loaded" and rec.origin == "adopted" and rec.loaded_at is None \
                        and loaded.loaded_at is not None:
                    # adopted at once by its uevent, before host mode had written its record
                    self.state.modules[loaded.name] = rec.model_copy(update={
                        "loaded_at": loaded.loaded_at, "spec": loaded.spec, "ko": loaded.ko})
                    self.state.write()
                elif rec is None or rec.status != "loaded":
                    self.state.modules[loaded.name] = m.Module(
                        module=loaded.name, status="loaded", origin="adopted", kernel=loaded.kernel,
                        loaded_at=loaded.loaded_at, loaded_by=None, spec=loaded.spec, ko=loaded.ko)
                    self.state.write()
                    self.event("adopted", loaded.name, None, "a kprobegen module loaded outside the service")
                    self.say(f"adopted {loaded.name}: loaded outside the service")

    def _housekeeping(self) -> None:
        last_rescan = time.monotonic()
        while not self._stop.wait(HOUSEKEEPING_S):
            try:
                self._check_lifetimes()
                self._check_armed()
                self._check_recorded()
                if not self.watcher.available and time.monotonic() - last_rescan >= POLL_RESCAN_S:
                    last_rescan = time.monotonic()
                    self.rescan()
            except Exception as exc:  # a bug: say it, keep going
                self.say(f"housekeeping: {exc!r}")

    def _check_recorded(self) -> None:
        """A recorded module whose /sys/module folder is gone left the kernel without the
        service: rescan, whatever the uevents said (one can be lost, or arrive early)."""
        if any(rec.status == "loaded" and not host.is_loaded(name)
               for name, rec in list(self.state.modules.items())):
            self.rescan()

    def _check_lifetimes(self) -> None:
        wall, mono = time.time(), time.monotonic()
        for name, rec in list(self.state.modules.items()):
            if rec.status != "loaded" or self._retry_at.get(name, 0) > mono:
                continue
            if rec.lifetime == "client" and _client_identity(rec.client_pid) != (rec.client_pid, rec.client_start):
                self._service_unload(name, "client-exited", f"pid {rec.client_pid}, which loaded it, has exited")
            elif rec.expires_at and _epoch(rec.expires_at) <= wall:
                self._service_unload(name, "expired", f"its time limit of {rec.time_limit_s:g} s is over")

    def _check_armed(self) -> None:
        """kprobes switched off for the whole kernel (debugfs kprobes/enabled = 0): every
        module's probes are disarmed and count nothing."""
        try:
            armed = Path("/sys/kernel/debug/kprobes/enabled").read_text().strip() != "0"
        except OSError:
            return
        if self._armed is not None and armed != self._armed:
            loaded = [n for n, r in self.state.modules.items() if r.status == "loaded"]
            self.event("armed" if armed else "disarmed", None, None,
                       f"kprobes {'re-enabled' if armed else 'disabled'} in the kernel "
                       f"(debug/kprobes/enabled); affects {', '.join(sorted(loaded)) or 'no module'}")
        self._armed = armed


def _status_of(exc: KprobegenError) -> int:
    """422: the request's spec or kernel; 409: the kernel's state refused it; 500: the build or
    the VM failed."""
    if isinstance(exc, (SpecError, SymbolError, KernelError)):
        return 422
    return 409 if isinstance(exc, LoadError) else 500


def _epoch(stamp: str) -> float:
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))


def _client_identity(pid: int | None) -> tuple[int, int] | None:
    """(pid, start time in clock ticks after boot) of a live process, or None: with the start
    time, a pid that was reused after the client exited is not mistaken for it."""
    if not pid or pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()   # after "(comm)": state is field 3, starttime 22
    if fields[0] in ("Z", "X"):
        return None
    return pid, int(fields[19])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"kprobegen/{__version__}"
    timeout = 60                    # a client that stops sending mid-request is dropped

    server: "UnixHTTPServer"

    def address_string(self) -> str:  # AF_UNIX: no address; the peer is in SO_PEERCRED
        return "unix"

    def log_message(self, format: str, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def _handle(self, method: str) -> None:
        self._body_read = False
        try:
            pid, uid, gid, groups = peer_credentials(self.request)
            peer = m.Peer(pid=pid, uid=uid, gid=gid)
            self._authorize(uid, gid, groups)
            body = self._route(method, peer)
            self._send(200, body)
        except HTTPError as exc:
            if not self._body_read and self.headers.get("Content-Length", "0").strip() not in ("", "0"):
                self.close_connection = True    # refused before its body was read: the stream is not at a request
            self._send(exc.status, m.Error(status=exc.status, error=exc.reason))
        except Exception as exc:  # a bug: the service answers and keeps running
            self.server.service.say(f"internal error on {method} {self.path[:200]}: {exc!r}")
            self._send(500, m.Error(status=500, error=f"internal error: {_one_line(exc)}"))

    def _authorize(self, uid: int, gid: int, groups: frozenset[int]) -> None:
        if uid == 0:
            return
        if self.server.kind == "rw":
            raise HTTPError(403, f"uid {uid} refused: the read-write socket is for root only")
        service = self.server.service
        if service.gid is None or (gid != service.gid and service.gid not in groups):
            who = f"group {service.group}" if service.gid is not None else "root (no service group)"
            raise HTTPError(403, f"uid {uid} refused: the read-only socket is for root and {who}")

    def _route(self, method: str, peer: m.Peer) -> BaseModel:
        service = self.server.service
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/")]
        if len(parts) < 3 or parts[0] != "" or parts[1] != "v1":
            raise HTTPError(404, f"no such endpoint {url.path[:200]!r}: the API is under /v1/")
        parts = parts[2:]
        route = (method, tuple("{name}" if i == 1 and parts[0] == "modules" else p for i, p in enumerate(parts)))
        writes = {("POST", ("modules",)), ("PUT", ("modules", "{name}")), ("DELETE", ("modules", "{name}")),
                  ("POST", ("runs",))}
        if route in writes and self.server.kind != "rw":
            raise HTTPError(403, "loading, unloading and runs go through the read-write socket")
        if len(parts) >= 2 and parts[0] == "modules":
            _check_name(parts[1])     # a bad name is said to be one before anything else
        if method in ("POST", "PUT"):
            body = self._body(m.MAX_UPLOAD if route == ("PUT", ("modules", "{name}")) else m.MAX_BODY)
        elif self.headers.get("Content-Length", "0") not in ("", "0"):
            raise HTTPError(400, f"{method} takes no body")
        match route:
            case ("GET", ("health",)):
                return service.health(self.server.kind, peer)
            case ("GET", ("modules",)):
                return service.modules()
            case ("GET", ("modules", "{name}")):
                return service.module(parts[1])
            case ("GET", ("modules", "{name}", "snapshot")):
                return service.snapshot(parts[1])
            case ("GET", ("snapshot",)):
                return service.snapshots()
            case ("GET", ("events",)):
                return service.events_since(*self._since(url.query))
            case ("POST", ("modules",)):
                return service.load(self._parse(m.LoadRequest, body), peer)
            case ("PUT", ("modules", "{name}")):
                return service.upload(parts[1], body, self._query(m.UploadOptions, url.query), peer)
            case ("DELETE", ("modules", "{name}")):
                return service.unload(parts[1], peer.uid)
            case ("POST", ("runs",)):
                return service.run(self._parse(m.RunRequest, body), peer.uid)
        raise HTTPError(404 if method == "GET" or method in ("POST", "DELETE") else 405,
                        f"no such endpoint {method} {url.path[:200]!r}")

    @staticmethod
    def _since(query: str) -> tuple[int, float]:
        """``since`` (the last seq the client saw) and ``wait`` (seconds to wait for a new event)."""
        q = parse_qs(query)
        unknown = sorted(set(q) - {"since", "wait"})
        if unknown:
            raise HTTPError(400, f"unknown query parameter {unknown[0][:40]!r}: give since and wait")
        try:
            since = int(q.get("since", ["0"])[-1])
        except ValueError:
            raise HTTPError(400, "since must be an integer") from None
        if since < 0:
            raise HTTPError(400, "since must be 0 or more")
        try:
            wait = float(q.get("wait", ["0"])[-1])
        except ValueError:
            raise HTTPError(400, "wait must be a number of seconds") from None
        if not 0 <= wait <= MAX_WAIT_S:      # also refuses nan
            raise HTTPError(400, f"wait must be between 0 and {MAX_WAIT_S:g} seconds")
        return since, wait

    @classmethod
    def _query(cls, model: type[BaseModel], query: str) -> BaseModel:
        """A request's query string (each key once) validated by ``model``, as a body would be."""
        q = parse_qs(query, keep_blank_values=True)
        for key, values in q.items():
            if len(values) > 1:
                raise HTTPError(400, f"query parameter {key[:40]!r} given {len(values)} times")
        return cls._validate(model, {k: v[0] for k, v in q.items()})

    def _body(self, limit: int) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            raise HTTPError(411, "send the body with a Content-Length (no chunked encoding)")
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            raise HTTPError(411, "a Content-Length is required")
        try:
            length = int(length_header)
        except ValueError:
            raise HTTPError(400, "Content-Length is not a number") from None
        if length < 0:
            raise HTTPError(400, "Content-Length is negative")
        if length > limit:
            self.close_connection = True
            if length <= DRAIN_LIMIT:
                left = length
                while left > 0:
                    chunk = self.rfile.read(min(left, 65536))
                    if not chunk:
                        break
                    left -= len(chunk)
            raise HTTPError(413, f"request body of {length} bytes is over the limit of {limit}")
        data = self.rfile.read(length)
        self._body_read = True
        if len(data) != length:
            self.close_connection = True
            raise HTTPError(400, f"request body ended after {len(data)} of {length} bytes")
        return data

    @classmethod
    def _parse(cls, model: type[BaseModel], body: bytes) -> BaseModel:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPError(400, f"the body is not JSON: {_one_line(exc)}") from None
        if not isinstance(data, dict):
            raise HTTPError(400, "the body must be a JSON object")
        return cls._validate(model, data)

    @staticmethod
    def _validate(model: type[BaseModel], data: dict) -> BaseModel:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            msg = first["msg"].removeprefix("Value error, ")
            if first["type"] == "extra_forbidden":
                msg = "unknown field"
            raise HTTPError(422, f"{where}: {msg}" + (f" (and {len(exc.errors()) - 1} more)"
                                                        if len(exc.errors()) > 1 else "")) from None

    def _send(self, status: int, body: BaseModel) -> None:
        data = (body.model_dump_json() + "\n").encode()
        try:
            self.send_response(status, HTTPStatus(status).phrase)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def send_error(self, code, message=None, explain=None):
        """The standard library's own errors (a bad request line, headers too long) as JSON too."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # an unreadable request line: answer with a status line all the same
            self.request_version = "HTTP/1.0"
        reason = message or HTTPStatus(code).phrase
        self._send(code, m.Error(status=code, error=f"{reason}"))


class UnixHTTPServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, path: Path, kind: str, service: Service):
        self.kind = kind
        self.service = service
        path.unlink(missing_ok=True)          # a stale socket: the lock says no service owns it
        super().__init__(str(path), Handler)
        os.chmod(path, 0o666)


class Running:
    """A started service: its two servers, each answering in its own threads."""

    def __init__(self, socket_dir: str | Path | None = None, state_dir: str | Path | None = None,
                 group: str | None = "kprobegen"):
        self.socket_dir = Path(socket_dir) if socket_dir else DEFAULT_SOCKET_DIR
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.socket_dir, 0o755)
        self.service = Service(_state_dir(state_dir), group)
        self.servers = []
        try:
            for name, kind in ((RW_SOCKET, "rw"), (RO_SOCKET, "ro")):
                self.servers.append(UnixHTTPServer(self.socket_dir / name, kind, self.service))
        except BaseException:
            self.close()
            raise
        for s in self.servers:
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
        self.service.start()

    def close(self) -> None:
        for s in self.servers:
            s.shutdown()
            s.server_close()
            Path(s.server_address).unlink(missing_ok=True)
        self.servers = []
        self.service.stop()
        self.service.lock.release()


def serve(socket_dir: str | Path | None = None, state_dir: str | Path | None = None, group: str | None = "kprobegen",
          ) -> int:
    """Run the service in the foreground until SIGTERM or SIGINT; the modules stay loaded.
    Under systemd (``Type=notify``) it says READY=1 once both sockets listen (service/systemd.py)."""
    from kprobegen.service.systemd import Notifier

    notifier = Notifier()       # takes $NOTIFY_SOCKET out of the environment: builds and insmod do not see it
    why = host.cannot_load()
    if why is not None:             # a container, CI: disposable-VM runs are what it can serve
        from kprobegen.vm.qemu import find_qemu

        try:
            find_qemu()
        except KprobegenError as exc:
            raise LoadError(f"{why}; and no disposable-VM runs either: {_one_line(exc)}") from None
        print(f"kprobegen serve: this machine cannot load modules ({why}): serving disposable-VM runs "
              "(POST /v1/runs) only", file=sys.stderr, flush=True)
    running = Running(socket_dir, state_dir, group)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    service = running.service
    service.say(f"serving on {running.socket_dir / RW_SOCKET} (root) and {running.socket_dir / RO_SOCKET} "
                f"(read-only), state in {service.state_dir}")
    notifier.ready(f"serving on {running.socket_dir}, state in {service.state_dir}")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        notifier.stopping("stopping; loaded modules stay loaded")
        running.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        service.say("stopped; loaded modules stay loaded")
    return 0
