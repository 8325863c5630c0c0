"""The HTTP/JSON server on two Unix sockets, and the requests it answers.

Every request's peer is read from the kernel (SO_PEERCRED, and SO_PEERGROUPS for the
supplementary groups) before anything else is looked at: on the read-write socket only
root may do anything; on the read-only socket root or a member of the service's group may
read. Both sockets are mode 0666 so that a refused client gets a 403 and a reason rather
than a bare EACCES: the credential check is what grants access, not the file mode.
"""

from __future__ import annotations

import grp
import json
import os
import signal
import socket
import socketserver
import struct
import sys
import threading
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, ValidationError

from kprobegen import __version__, host
from kprobegen.cache import atomic_write
from kprobegen.errors import KprobegenError, LoadError, SpecError, SymbolError
from kprobegen.service import models as m
from kprobegen.service.state import ServiceLock, State, now, state_dir as _state_dir

DEFAULT_SOCKET_DIR = Path("/run/kprobegen")
RW_SOCKET = "kprobegen.sock"
RO_SOCKET = "kprobegen-ro.sock"
#: Events kept in memory (the oldest are dropped; a client sees the gap in ``seq``).
MAX_EVENTS = 10_000
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
    """What the handlers share: the state, the events, the lock that orders changes."""

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
        self.changes = threading.Lock()     # load, unload and the state file: one at a time
        self.events: deque[m.Event] = deque(maxlen=MAX_EVENTS)
        self._seq = 0
        self._events_lock = threading.Lock()
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        self.lock = ServiceLock(state_dir)
        self.state = State(state_dir)
        self.state.read()
        for problem in self.state.problems:
            self.say(problem)
            self.event("state-unreadable", None, None, problem)
        for kind, name, detail in self.state.reconcile():
            self.say(f"{kind} {name}: {detail}")
            self.event(kind, name, None, detail)
        self.event("started", None, None, f"pid {os.getpid()}, kernel {host.release()}")

    def event(self, kind: str, module: str | None, uid: int | None, detail: str | None = None) -> None:
        with self._events_lock:
            self._seq += 1
            self.events.append(m.Event(seq=self._seq, time=now(), kind=kind, module=module, uid=uid, detail=detail))

    # -- reads -------------------------------------------------------------------------------

    def health(self, socket_kind: str, peer: m.Peer) -> m.Health:
        return m.Health(version=__version__, kernel=host.release(), pid=os.getpid(), started_at=self.started_at,
                        socket=socket_kind, peer=peer, state_dir=str(self.state_dir),
                        problems=list(self.state.problems))

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
            raise HTTPError(409, f"module {name} is {rec.status}: no live counts")
        try:
            return m.Snapshot(module=name, results=host.snapshot(name).to_json())
        except LoadError as exc:
            raise HTTPError(409, _one_line(exc)) from None

    def snapshots(self) -> m.Snapshots:
        out, errors = {}, {}
        for name in sorted(self.state.modules):
            if self.state.modules[name].status == "loaded":
                try:
                    out[name] = host.snapshot(name).to_json()
                except KprobegenError as exc:
                    errors[name] = _one_line(exc)
        return m.Snapshots(snapshots=out, errors=errors)

    def events_since(self, since: int) -> m.Events:
        with self._events_lock:
            events = [e for e in self.events if e.seq > since]
            return m.Events(events=events, next=self._seq)

    # -- changes -----------------------------------------------------------------------------

    def load(self, req: m.LoadRequest, uid: int) -> m.Module:
        # here: the pipeline (spec, codegen, kbuild) is only needed to load a spec
        from kprobegen import pipeline

        with self.changes:
            stored = self._store_spec(req.spec) if req.spec is not None else None
            try:
                if req.ko_path is not None:
                    loaded = host.load_ko(req.ko_path)
                else:
                    path = stored or Path(req.spec_path)
                    loaded = pipeline.load_on_host(path, progress=lambda message: self.say(message))
            except KprobegenError as exc:
                reason = _one_line(exc)
                if stored is not None:  # an inline spec that did not load is not kept; its lines are "spec:L:C"
                    reason = reason.replace(str(stored), "spec")
                    if not any(r.spec == str(stored) for r in self.state.modules.values()):
                        stored.unlink(missing_ok=True)
                status = 422 if isinstance(exc, (SpecError, SymbolError)) else 409 if isinstance(exc, LoadError) else 500
                raise HTTPError(status, reason) from None
            rec = m.Module(module=loaded.name, status="loaded", origin="service", kernel=loaded.kernel,
                           loaded_at=loaded.loaded_at, loaded_by=uid, spec=loaded.spec, ko=loaded.ko)
            self.state.modules[loaded.name] = rec
            self.state.write()
            self.event("loaded", loaded.name, uid, loaded.spec or loaded.ko)
            self.say(f"loaded {loaded.name} for uid {uid}")
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

    def unload(self, name: str, uid: int) -> m.Unloaded:
        with self.changes:
            rec = self.module(name)
            if rec.status != "loaded":
                raise HTTPError(409, f"module {name} is {rec.status}, not loaded")
            try:
                results = host.unload(name)
            except LoadError as exc:
                if not host.is_loaded(name):
                    del self.state.modules[name]
                    self.state.write()
                    self.event("unloaded", name, uid, f"final counts lost: {_one_line(exc)}")
                raise HTTPError(409, _one_line(exc)) from None
            del self.state.modules[name]
            self.state.write()
            self.event("unloaded", name, uid)
            self.say(f"unloaded {name} for uid {uid}")
            return m.Unloaded(module=name, loaded_at=rec.loaded_at, unloaded_at=now(), results=results.to_json())


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
        writes = {("POST", ("modules",)), ("DELETE", ("modules", "{name}"))}
        if route in writes and self.server.kind != "rw":
            raise HTTPError(403, "loading and unloading go through the read-write socket")
        if method in ("POST", "PUT"):
            body = self._body()
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
                return service.events_since(self._since(url.query))
            case ("POST", ("modules",)):
                return service.load(self._parse(m.LoadRequest, body), peer.uid)
            case ("DELETE", ("modules", "{name}")):
                return service.unload(parts[1], peer.uid)
        if len(parts) >= 2 and parts[0] == "modules":
            _check_name(parts[1])     # a bad name is said to be one, whatever the rest
        raise HTTPError(404 if method == "GET" or method in ("POST", "DELETE") else 405,
                        f"no such endpoint {method} {url.path[:200]!r}")

    @staticmethod
    def _since(query: str) -> int:
        values = parse_qs(query).get("since", ["0"])
        try:
            since = int(values[-1])
        except ValueError:
            raise HTTPError(400, "since must be an integer") from None
        if since < 0:
            raise HTTPError(400, "since must be 0 or more")
        return since

    def _body(self) -> bytes:
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
        if length > m.MAX_BODY:
            self.close_connection = True
            if length <= DRAIN_LIMIT:
                left = length
                while left > 0:
                    chunk = self.rfile.read(min(left, 65536))
                    if not chunk:
                        break
                    left -= len(chunk)
            raise HTTPError(413, f"request body of {length} bytes is over the limit of {m.MAX_BODY}")
        data = self.rfile.read(length)
        self._body_read = True
        if len(data) != length:
            self.close_connection = True
            raise HTTPError(400, f"request body ended after {len(data)} of {length} bytes")
        return data

    @staticmethod
    def _parse(model: type[BaseModel], body: bytes) -> BaseModel:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPError(400, f"the body is not JSON: {_one_line(exc)}") from None
        if not isinstance(data, dict):
            raise HTTPError(400, "the body must be a JSON object")
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

    def close(self) -> None:
        for s in self.servers:
            s.shutdown()
            s.server_close()
            Path(s.server_address).unlink(missing_ok=True)
        self.servers = []
        self.service.lock.release()


def serve(socket_dir: str | Path | None = None, state_dir: str | Path | None = None, group: str | None = "kprobegen",
          ) -> int:
    """Run the service in the foreground until SIGTERM or SIGINT; the modules stay loaded."""
    host.require_loading()
    running = Running(socket_dir, state_dir, group)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    service = running.service
    service.say(f"serving on {running.socket_dir / RW_SOCKET} (root) and {running.socket_dir / RO_SOCKET} "
                f"(read-only), state in {service.state_dir}")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        running.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        service.say("stopped; loaded modules stay loaded")
    return 0
