"""A small client of the manager service (``kprobegen serve``): HTTP/JSON over its Unix sockets.

    from kprobegen.client import Client
    with Client() as c:                      # the read-write socket, /run/kprobegen/kprobegen.sock
        c.load(spec_path="/root/sync_counter.yaml")
        c.snapshot("sync_counter")["results"]["hooks"]["sync"]["hits"]
        c.unload("sync_counter")["results"]           # the final counts

Standard library only (http.client over an AF_UNIX socket), so that a client costs no
pydantic. A refused or failed request raises ``ServiceError`` with the server's status and
its one-line reason; ``request()`` gives the status and body of any request as they came.
docs/service.md lists every request and response.
"""

from __future__ import annotations

import errno
import http.client
import json
import socket
from pathlib import Path
from urllib.parse import quote

from kprobegen.errors import KprobegenError

SOCKET_DIR = Path("/run/kprobegen")
RW_SOCKET = SOCKET_DIR / "kprobegen.sock"
RO_SOCKET = SOCKET_DIR / "kprobegen-ro.sock"


class ServiceError(KprobegenError):
    """The service answered with an error (``status`` 4xx/5xx and its reason), or no answer came
    (``status`` None, and ``errno`` says why: ENOENT no socket, ECONNREFUSED no service behind
    it, EACCES not allowed to connect, ECONNRESET connection lost, ETIMEDOUT no answer in time)."""

    def __init__(self, status: int | None, reason: str, errno: int | None = None):
        super().__init__(f"service: {reason}" if status is None else f"service: {status}: {reason}")
        self.status = status
        self.reason = reason
        self.errno = errno


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Client:
    """One connection (kept alive) to one of the service's sockets."""

    def __init__(self, socket_path: str | Path = RW_SOCKET, timeout: float = 600.0):
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self._conn: _UnixConnection | None = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: dict | None = None, *, raw: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict]:
        """(status, JSON body) of one request; ``raw`` sends bytes as they are (for tests)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = _UnixConnection(self.socket_path, self.timeout)
            conn = self._conn
            try:
                try:
                    conn.request(method, path, body=data, headers=hdrs)
                except (BrokenPipeError, ConnectionResetError):
                    pass                # the server answered before reading it all (413): read that answer
                resp = conn.getresponse()
                payload = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()            # a kept-alive connection the server closed: one retry on a new one
                if attempt == 0 and data is None:
                    continue
                raise ServiceError(None, f"{self.socket_path}: connection lost ({exc})",
                                   getattr(exc, "errno", None) or errno.ECONNRESET) from None
            except FileNotFoundError:
                self.close()
                raise ServiceError(None, f"{self.socket_path}: no service there (is `kprobegen serve` running?)",
                                   errno.ENOENT) from None
            except OSError as exc:
                self.close()
                raise ServiceError(None, f"{self.socket_path}: {exc.strerror or exc}",
                                   exc.errno or (errno.ETIMEDOUT if isinstance(exc, TimeoutError) else None)) from None
            if resp.will_close:
                self.close()
            try:
                return resp.status, json.loads(payload) if payload else {}
            except ValueError:
                return resp.status, {"error": payload[:200].decode(errors="replace")}
        raise AssertionError("unreachable")

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        status, data = self.request(method, path, body)
        if status >= 400:
            raise ServiceError(status, str(data.get("error", data)))
        return data

    # -- the API -------------------------------------------------------------------------------

    def health(self) -> dict:
        return self._call("GET", "/v1/health")

    def modules(self) -> list[dict]:
        return self._call("GET", "/v1/modules")["modules"]

    def module(self, name: str) -> dict:
        return self._call("GET", f"/v1/modules/{quote(name, safe='')}")

    def snapshot(self, name: str) -> dict:
        return self._call("GET", f"/v1/modules/{quote(name, safe='')}/snapshot")

    def snapshot_all(self) -> dict:
        return self._call("GET", "/v1/snapshot")

    def events(self, since: int = 0, wait: float = 0.0) -> dict:
        """The events after ``since``; with ``wait`` (at most 60 s), wait that long for one."""
        query = f"since={int(since)}" + (f"&wait={float(wait):g}" if wait else "")
        return self._call("GET", f"/v1/events?{query}")

    def wait_for(self, kind: str, module: str | None = None, since: int = 0, timeout: float = 60.0) -> dict:
        """The first event of ``kind`` (and ``module``) after ``since``, waiting up to ``timeout``
        seconds for it; ServiceError if it does not come."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            got = self.events(since, wait=max(0.0, min(left, 60.0)))
            for event in got["events"]:
                if event["kind"] == kind and (module is None or event["module"] == module):
                    return event
            since = got["next"]
            if time.monotonic() >= deadline:
                raise ServiceError(None, f"no {kind} event{f' of {module}' if module else ''} in {timeout:g} s",
                                   errno.ETIMEDOUT)

    def load(self, *, spec: str | None = None, spec_path: str | Path | None = None,
             ko_path: str | Path | None = None, lifetime: str | None = None,
             time_limit_s: float | None = None) -> dict:
        """Load a spec (its text, or a path the service can read) or a .ko on the service's
        machine. ``lifetime="client"``: unloaded when this process exits; ``time_limit_s``:
        unloaded after that long (its final counts stay in the record)."""
        body: dict = {k: str(v) for k, v in (("spec", spec), ("spec_path", spec_path), ("ko_path", ko_path))
                      if v is not None}
        if lifetime is not None:
            body["lifetime"] = lifetime
        if time_limit_s is not None:
            body["time_limit_s"] = time_limit_s
        return self._call("POST", "/v1/modules", body)

    def upload(self, name: str, ko: bytes | str | Path, *, lifetime: str | None = None,
               time_limit_s: float | None = None) -> dict:
        """Send a .ko (its bytes, or a file here) to the service and load it there."""
        data = ko if isinstance(ko, bytes) else Path(ko).read_bytes()
        query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in (("lifetime", lifetime),
                                                                       ("time_limit_s", time_limit_s))
                         if v is not None)
        path = f"/v1/modules/{quote(name, safe='')}" + (f"?{query}" if query else "")
        status, answer = self.request("PUT", path, raw=data, headers={"Content-Type": "application/octet-stream"})
        if status >= 400:
            raise ServiceError(status, str(answer.get("error", answer)))
        return answer

    def unload(self, name: str) -> dict:
        return self._call("DELETE", f"/v1/modules/{quote(name, safe='')}")
