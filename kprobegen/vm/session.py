"""A full guest that stays up: one boot, many commands, the manager service running inside.

``guest.run`` boots, runs one command and powers off; a test session wants one boot that
every test reuses. ``Session`` boots the image with ``kprobegen serve`` in the background
and the guest agent (kprobegen.vm.agent) in the foreground, connected to this process by a
virtio-serial port whose other end is a Unix socket in a private folder here. Requests go
one at a time: run a command (``exec``), copy a file in (``put``), and talk to the service
(``request``: the HTTP/JSON API of docs/service.md, relayed by the agent to its socket).
``close()`` asks the agent to stop, and the guest powers off; qemu is killed if it does not.

    with Session(guest.build_image("bookworm")) as s:
        s.exec("sync").returncode
        s.request("POST", "/v1/modules", {"spec": text})

The root disk is copy-on-write as in ``guest.run``: nothing a session writes survives it.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kprobegen.errors import VMError
from kprobegen.vm import guest
from kprobegen.vm.agent import PORT_NAME

#: The command of a session's boot: the service in the background, the agent in front.
BOOT_COMMAND = ("sh", "-c", "kprobegen serve >/tmp/kprobegen-serve.log 2>&1 & "
                            "exec /opt/kprobegen/bin/python -m kprobegen.vm.agent")
#: The longest a session may live (the guest's own timeout); close() ends it sooner.
MAX_SESSION_S = 24 * 3600.0


@dataclass(frozen=True)
class Completed:
    """What ``Session.exec`` gives back (like subprocess.CompletedProcess, bytes)."""

    argv: list[str] | str
    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False

    def check(self) -> "Completed":
        if self.returncode != 0:
            tail = self.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise VMError(f"in the guest, {self.argv!r} exited with {self.returncode}"
                          + ("(timed out)" if self.timed_out else "") + (f": {' | '.join(tail)}" if tail else ""))
        return self


class Session:
    def __init__(self, image: guest.GuestImage, *, accel: str | None = None, memory_mb: int = 1024,
                 boot_timeout: float = 600.0, progress=None):
        self.image = image
        self.release = image.release
        self.service = False
        self._accel, self._memory_mb, self._boot_timeout = accel, memory_mb, boot_timeout
        self._say = progress
        self._dir = Path(tempfile.mkdtemp(prefix="kpg-session-"))     # 0700: only we reach the socket
        self._socket_path = self._dir / "agent.sock"
        self._started = threading.Event()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._run: guest.GuestRun | None = None
        self._error: BaseException | None = None
        self._output = bytearray()
        self._thread = threading.Thread(target=self._boot, name="kprobegen-session", daemon=True)

    # -- life ------------------------------------------------------------------------------

    def __enter__(self) -> "Session":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> "Session":
        self._thread.start()
        deadline = time.monotonic() + self._boot_timeout
        hello = self._connect(deadline)
        self.release = hello.get("release", self.release)
        self.service = bool(hello.get("service"))
        if not self.service:
            log = self.exec("cat /tmp/kprobegen-serve.log").stdout.decode(errors="replace").strip()
            self.close()
            raise VMError(f"kprobegen serve did not start in the guest: {log.splitlines()[-1:] or 'no output'}")
        return self

    def _boot(self) -> None:
        try:
            self._run = guest.run(self.image, list(BOOT_COMMAND), timeout=MAX_SESSION_S, accel=self._accel,
                                  memory_mb=self._memory_mb, channels=[(PORT_NAME, self._socket_path)],
                                  on_start=self._started.set, stdout=self._output.extend,
                                  stderr=self._output.extend, progress=self._say)
        except BaseException as exc:  # reported by whoever waits for the session
            self._error = exc
        finally:
            self._started.set()

    def _dead(self) -> str | None:
        """Why the boot ended, if it has."""
        if self._thread.is_alive():
            return None
        if self._error is not None:
            return f"the guest could not boot: {self._error}"
        run = self._run
        why = (run.reason or f"exit {run.exit_code}") if run is not None else "no result"
        out = self._output.decode(errors="replace").strip().splitlines()[-3:]
        return f"the guest stopped ({why})" + (f": {' | '.join(out)}" if out else "")

    def _connect(self, deadline: float) -> dict:
        """Connect to the agent's socket (qemu listens on it once it runs) and read its hello."""
        while True:
            if self._started.wait(0.1) and self._socket_path.exists():
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(str(self._socket_path))
                    break
                except OSError:
                    sock.close()
            if self._dead() or time.monotonic() > deadline:
                self.close()
                raise VMError(self._dead() or f"the guest's agent did not come up in {self._boot_timeout:g} s")
            time.sleep(0.1)
        self._sock = sock
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self._dead():
                reason = self._dead() or f"no word from the guest's agent in {self._boot_timeout:g} s"
                self.close()
                raise VMError(reason)
            try:
                hello = self._read(min(left, 1.0))
            except TimeoutError:
                continue
            if hello.get("op") == "hello":
                return hello

    def close(self) -> None:
        """Stop the agent (the guest powers off); kill qemu if it does not within 60 s."""
        if self._sock is not None:
            try:
                self._call({"op": "bye"}, timeout=30)
            except (VMError, OSError):
                pass
            self._sock.close()
            self._sock = None
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        if self._thread.is_alive():       # the guest did not power off: end its qemu the hard way
            self._kill_qemu()
            self._thread.join(timeout=30)
        for p in (self._socket_path,):
            p.unlink(missing_ok=True)
        try:
            self._dir.rmdir()
        except OSError:
            pass

    def _kill_qemu(self) -> None:
        """SIGKILL the qemu whose command line names this session's socket (a unique path)."""
        needle = str(self._socket_path).encode()
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if needle in (d / "cmdline").read_bytes():
                        os.kill(int(d.name), signal.SIGKILL)
                except OSError:
                    continue

    # -- the wire -------------------------------------------------------------------------------

    def _read(self, timeout: float) -> dict:
        while b"\n" not in self._buffer:
            self._sock.settimeout(timeout)
            try:
                chunk = self._sock.recv(1 << 20)
            except socket.timeout:
                raise TimeoutError from None
            if not chunk:
                raise VMError(self._dead() or "the guest's agent closed the connection")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def _call(self, req: dict, timeout: float) -> dict:
        with self._lock:
            if self._sock is None:
                raise VMError("the session is closed")
            rid = next(self._ids)
            self._sock.settimeout(timeout)
            self._sock.sendall((json.dumps({"id": rid, **req}) + "\n").encode())
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise VMError(f"the guest's agent did not answer {req['op']} in {timeout:g} s")
                try:
                    answer = self._read(min(left, 1.0))
                except TimeoutError:
                    if self._dead():
                        raise VMError(self._dead()) from None
                    continue
                if answer.get("id") == rid or answer.get("id") is None:
                    break
        if not answer.get("ok"):
            raise VMError(f"guest agent: {answer.get('error', 'failed')}")
        return answer

    # -- what a session does -------------------------------------------------------------------

    def exec(self, command: str | list[str], *, timeout: float = 600.0, stdin: bytes = b"",
             cwd: str = "/root") -> Completed:
        """Run a command as root in the guest: a string goes to ``sh -c``, a list is an argv."""
        req = {"op": "exec", "timeout": timeout, "cwd": cwd, "stdin": base64.b64encode(stdin).decode()}
        req["shell" if isinstance(command, str) else "argv"] = command
        got = self._call(req, timeout=timeout + 30)
        return Completed(command, got["returncode"], base64.b64decode(got["stdout"]), base64.b64decode(got["stderr"]),
                         got.get("timed_out", False))

    def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write ``data`` to the absolute ``path`` in the guest (folders made as needed)."""
        self._call({"op": "put", "path": path, "data": base64.b64encode(data).decode(), "mode": mode}, timeout=600)

    def add(self, host_path: str | Path, guest_path: str) -> None:
        """Copy a file, or a folder's files, from here into the guest."""
        src = Path(host_path)
        if src.is_dir():
            for f in sorted(p for p in src.rglob("*") if p.is_file()):
                self.put(f"{guest_path.rstrip('/')}/{f.relative_to(src).as_posix()}", f.read_bytes(),
                         f.stat().st_mode & 0o777)
        elif src.is_file():
            self.put(guest_path, src.read_bytes(), src.stat().st_mode & 0o777)
        else:
            raise VMError(f"{src}: no such file or folder here")

    def request(self, method: str, path: str, body: dict | bytes | None = None, *,
                content_type: str = "application/json", timeout: float = 600.0) -> tuple[int | None, dict]:
        """One request to the service in the guest: (HTTP status, JSON answer)."""
        raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
        got = self._call({"op": "http", "method": method, "path": path, "content_type": content_type,
                          "body": base64.b64encode(raw).decode() if raw is not None else None,
                          "timeout": timeout}, timeout=timeout + 30)
        return got["status"], got["body"]
