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

**Saved boots.** A boot of the full guest under TCG takes 10 s or more (the kernel, Debian's
initramfs, then the service and the agent starting in Python), and a test session pays it
every time. So the first session saves its booted machine once the service answers: qemu
stops, writes its memory and device state to a file (a QMP ``migrate`` to ``exec:cat``), the
root disk's overlay is copied beside it, and the machine goes on. Later sessions start a qemu
from that state (``-incoming``) with a copy of the overlay, in about a second: the same
kernel, the same service, the same agent, waiting on the same port. A saved boot lives beside
the image it was booted from (``<image>/sessions/<key>``), keyed by everything that makes it
valid: the image's inputs, qemu's version, the accelerator, the memory size and the boot
command; the guest's clock is set to this machine's on resume. One that does not resume is
thrown away and the session boots afresh. ``Session(..., resume=False)`` always boots.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kprobegen.cache import atomic_write, lock
from kprobegen.errors import VMError
from kprobegen.progress import Notice
from kprobegen.vm import guest
from kprobegen.vm import qemu as _qemu
from kprobegen.vm.agent import PORT_NAME

#: The command of a session's boot: the service in the background, the agent in front.
BOOT_COMMAND = ("sh", "-c", "kprobegen serve >/tmp/kprobegen-serve.log 2>&1 & "
                            "exec /opt/kprobegen/bin/python -m kprobegen.vm.agent")
#: The longest a session may live (the guest's own timeout); close() ends it sooner.
MAX_SESSION_S = 24 * 3600.0
#: Changes whenever what a saved boot holds changes, so that older ones are not resumed.
SAVED_FORMAT = 1
#: Seconds a saved boot gets to resume and answer (about 1.5 s under TCG here).
RESUME_TIMEOUT_S = 60.0
#: Seconds qemu gets to write a saved boot.
SAVE_TIMEOUT_S = 300.0


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


class _ChannelClosed(VMError):
    """The agent's channel closed: the guest stopped, or its qemu did."""


class Session:
    def __init__(self, image: guest.GuestImage, *, accel: str | None = None, memory_mb: int = 1024,
                 boot_timeout: float = 600.0, progress=None, resume: bool = True):
        self.image = image
        self.release = image.release
        self.service = False
        #: "saved" when this session started from a saved boot, "booted" when it booted (and
        #: then "booted+saved" once it saved its boot for the next session).
        self.started_as = ""
        self._accel, self._memory_mb, self._boot_timeout = accel, memory_mb, boot_timeout
        self._resume = resume
        self._say = progress
        self._dir = Path(tempfile.mkdtemp(prefix="kpg-session-"))     # 0700: only we reach the socket
        self._socket_path = self._dir / "agent.sock"
        self._qmp_path = self._dir / "qmp.sock"
        self._overlay = self._dir / "root.qcow2"
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._sock: socket.socket | None = None
        self._fresh_attempt()

    def _fresh_attempt(self) -> None:
        """What one boot (or resume) of the session starts from."""
        self._started = threading.Event()
        self._accel_used: str | None = None
        self._buffer = b""
        self._run: guest.GuestRun | None = None
        self._error: BaseException | None = None
        self._output = bytearray()
        self._thread: threading.Thread | None = None

    # -- life ------------------------------------------------------------------------------

    def __enter__(self) -> "Session":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> "Session":
        """Resume the saved boot if there is a good one, else boot (and save the boot)."""
        saved = SavedBoot.find(self.image, self._accel, self._memory_mb) if self._resume else None
        if saved is not None:
            try:
                if self._say is not None:
                    self._say(f"resuming the guest's saved boot ({saved.accel})")
                self._launch(saved.resume_into(self._overlay, self._qmp_path))
                self._connect(time.monotonic() + RESUME_TIMEOUT_S, saved=True)
                self.started_as = "saved"
                return self._check_service()
            except VMError as exc:
                self._note(f"the saved boot in {saved.directory} did not resume ({exc}); "
                           "throwing it away and booting afresh")
                self._stop_attempt()
                saved.discard()
                self._fresh_attempt()
        resume = None
        try:
            if self._resume and SavedBoot.can_save():
                _create_overlay(self.image.rootfs.resolve(), self._overlay)   # resolved: saved boots outlive links
                resume = guest.Resume(overlay=self._overlay, qmp=self._qmp_path, nonce=secrets.token_hex(8))
            self._launch(resume)
            self._connect(time.monotonic() + self._boot_timeout, saved=False)
        except VMError:
            self.close()
            raise
        self.started_as = "booted"
        self._check_service()
        if resume is not None and self._accel_used is not None:
            try:
                SavedBoot.save(self, resume.nonce)
                self.started_as = "booted+saved"
            except VMError as exc:       # the session goes on; the next one boots again
                self._note(f"could not save the boot for later sessions: {exc}")
        return self

    def _check_service(self) -> "Session":
        if not self.service:
            log = self.exec("cat /tmp/kprobegen-serve.log").stdout.decode(errors="replace").strip()
            self.close()
            raise VMError(f"kprobegen serve did not start in the guest: {log.splitlines()[-1:] or 'no output'}")
        return self

    def _note(self, message: str) -> None:
        if self._say is not None:
            self._say(Notice(message))

    def _launch(self, resume: "guest.Resume | None") -> None:
        accel = self._accel
        if resume is not None and resume.incoming is not None:
            accel = resume.accel
        self._thread = threading.Thread(target=self._boot, args=(resume, accel), name="kprobegen-session",
                                        daemon=True)
        self._thread.start()

    def _boot(self, resume, accel) -> None:
        def started(acc: str) -> None:
            self._accel_used = acc
            self._started.set()

        try:
            self._run = guest.run(self.image, list(BOOT_COMMAND), timeout=MAX_SESSION_S, accel=accel,
                                  memory_mb=self._memory_mb, channels=[(PORT_NAME, self._socket_path)],
                                  on_start=started, stdout=self._output.extend,
                                  stderr=self._output.extend, progress=self._say, resume=resume)
        except BaseException as exc:  # reported by whoever waits for the session
            self._error = exc
        finally:
            self._started.set()

    def _dead(self) -> str | None:
        """Why the boot ended, if it has."""
        if self._thread is None or self._thread.is_alive():
            return None
        if self._error is not None:
            return f"the guest could not boot: {self._error}"
        run = self._run
        why = (run.reason or f"exit {run.exit_code}") if run is not None else "no result"
        out = self._output.decode(errors="replace").strip().splitlines()[-3:]
        return f"the guest stopped ({why})" + (f": {' | '.join(out)}" if out else "")

    def _connect(self, deadline: float, *, saved: bool) -> None:
        """Connect to the agent's socket (qemu listens on it once it runs) and hear its hello:
        the one it sends when it starts, or, resuming a saved boot, the answer to ours (sent
        once qemu has read the saved state and the machine runs again). A boot under ``auto``
        whose KVM qemu fails is booted again under TCG by the runner, on the same socket path:
        the channel closes, and this connects again."""
        timeout = deadline - time.monotonic()
        while True:
            self._sock = self._open_channel(deadline, timeout)
            try:
                hello = self._hello(deadline, timeout, saved)
                break
            except _ChannelClosed:
                self._sock.close()
                self._sock = None
                if saved or self._dead():
                    raise
        self.release = hello.get("release", self.release)
        self.service = bool(hello.get("service"))

    def _open_channel(self, deadline: float, timeout: float) -> socket.socket:
        while True:
            if self._started.wait(0.1) and self._socket_path.exists():
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(str(self._socket_path))
                    return sock
                except OSError:       # not listening yet, or a qemu that has ended
                    sock.close()
            if self._dead() or time.monotonic() > deadline:
                self._fail(self._dead() or f"the guest's agent did not come up in {timeout:.0f} s")
            time.sleep(0.1)

    def _hello(self, deadline: float, timeout: float, saved: bool) -> dict:
        if saved:
            _run_incoming(self._qmp_path, deadline)
            return self._call({"op": "hello", "time": time.time(), "seed": base64.b64encode(os.urandom(64)).decode()},
                              timeout=max(1.0, deadline - time.monotonic()))
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self._dead():
                self._fail(self._dead() or f"no word from the guest's agent in {timeout:.0f} s")
            try:
                hello = self._read(min(left, 1.0))
            except TimeoutError:
                continue
            if hello.get("op") == "hello":
                return hello

    def _fail(self, reason: str):
        self._stop_attempt()
        raise VMError(reason)

    def _stop_attempt(self) -> None:
        """End this boot's qemu at once (a failed start)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._thread is not None and self._thread.is_alive():
            self._kill_qemu()
            self._thread.join(timeout=30)
        for p in (self._socket_path, self._qmp_path, self._overlay):
            p.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop the agent (the guest powers off); kill qemu if it does not within 60 s."""
        if self._sock is not None:
            try:
                self._call({"op": "bye"}, timeout=30)
            except (VMError, OSError):
                pass
            self._sock.close()
            self._sock = None
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=60)
        if self._thread is not None and self._thread.is_alive():   # it did not power off: the hard way
            self._kill_qemu()
            self._thread.join(timeout=30)
        shutil.rmtree(self._dir, ignore_errors=True)

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
                raise _ChannelClosed(self._dead() or "the guest's agent closed the connection")
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


# -- saved boots -------------------------------------------------------------------------------

def _create_overlay(backing: Path, overlay: Path) -> None:
    """A qcow2 file that takes the writes to ``backing`` (raw), which stays as it is."""
    done = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(backing), "-F", "raw",
                           str(overlay)], capture_output=True, text=True)
    if done.returncode != 0:
        raise VMError(f"qemu-img create (the root disk's overlay): {' '.join(done.stderr.split()) or done.returncode}")


@contextlib.contextmanager
def _qmp_for(what: str, path: Path, deadline: float):
    """A QMP client for the qemu listening on ``path`` for the ``with`` block, doing ``what``:
    an error of the block is one VMError line that says what; the client is closed after."""
    client = _qmp(path, deadline)
    try:
        yield client
    except VMError:
        raise
    except Exception as exc:  # QMP's own errors (ExecuteError, EOFError, ...)
        raise VMError(f"{what}: {' '.join(str(exc).split()) or type(exc).__name__}") from None
    finally:
        _close_quietly(client)


def _qmp(path: Path, deadline: float):
    """A connected QMP client for the qemu listening on ``path`` (qemu.qmp, QEMU's own library)."""
    import logging

    from qemu.qmp.legacy import QEMUMonitorProtocol   # here: asyncio underneath, sessions only

    # its reader logs a qemu that went away (one that could not read a saved state) as an
    # ERROR, which Python's last-resort handler would print: the VMError says it once
    logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)

    while True:
        client = QEMUMonitorProtocol(str(path))
        try:
            client.connect()
            return client
        except Exception as exc:  # qemu not listening yet (or gone)
            _close_quietly(client)
            if time.monotonic() > deadline:
                raise VMError(f"qemu's QMP socket did not answer: {exc}") from None
            time.sleep(0.05)


def _close_quietly(client) -> None:
    """Close a QMP client whose qemu may be gone (a saved state it could not read ends it)."""
    try:
        client.close()
    except Exception:  # EOFError, ConnectionResetError from its reader: nothing left to close
        pass


def _wait_migration(client, deadline: float, what: str) -> None:
    while True:
        state = client.cmd("query-migrate")
        status = state.get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise VMError(f"{what}: qemu says {status}: {state.get('error-desc', 'no reason given')}")
        if time.monotonic() > deadline:
            raise VMError(f"{what}: not done in time (qemu says {status})")
        time.sleep(0.02)


def _run_incoming(qmp_path: Path, deadline: float) -> None:
    """Wait until qemu has read the saved state, then let the machine run (it was saved paused)."""
    with _qmp_for("resuming the saved boot", qmp_path, deadline) as client:
        _wait_migration(client, deadline, "reading the saved boot")
        client.cmd("cont")


_QEMU_VERSION: str | None = None


def _qemu_version() -> str:
    global _QEMU_VERSION
    if _QEMU_VERSION is None:
        done = subprocess.run([_qemu.find_qemu(), "--version"], capture_output=True, text=True)
        _QEMU_VERSION = done.stdout.strip().splitlines()[0] if done.stdout.strip() else f"exit {done.returncode}"
    return _QEMU_VERSION


def _cpu_flags() -> str:
    """The host CPU's flags: a KVM guest runs the host's CPU (-cpu host), so its saved state
    is only good on a CPU like it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


@dataclass(frozen=True)
class SavedBoot:
    """A booted session's machine, saved: ``state`` (qemu's migration stream), ``overlay.qcow2``
    (the root disk's writes), ``saved.json`` (the nonce and accelerator it was booted with)."""

    directory: Path
    accel: str
    nonce: str

    @staticmethod
    def key(image: guest.GuestImage, accel: str, memory_mb: int) -> str:
        inputs = [SAVED_FORMAT, image.inputs, image.release, _qemu_version(), accel, memory_mb, list(BOOT_COMMAND),
                  _cpu_flags() if accel == "kvm" else ""]
        return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:16]

    @staticmethod
    def can_save() -> bool:
        try:
            import qemu.qmp  # noqa: F401
        except ImportError:
            return False
        return shutil.which("qemu-img") is not None

    @classmethod
    def find(cls, image: guest.GuestImage, accel: str | None, memory_mb: int) -> "SavedBoot | None":
        """The saved boot to resume under ``accel`` (auto: the accelerators it would try, in order)."""
        if not cls.can_save():
            return None
        for acc in _qemu.accel_plan(accel):
            directory = image.directory / "sessions" / cls.key(image, acc, memory_mb)
            try:
                meta = json.loads((directory / "saved.json").read_text())
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and meta.get("accel") == acc and isinstance(meta.get("nonce"), str) \
                    and (directory / "state").is_file() and (directory / "overlay.qcow2").is_file():
                return cls(directory, acc, meta["nonce"])
        return None

    def resume_into(self, overlay: Path, qmp: Path) -> "guest.Resume":
        """What guest.run needs to start from this saved boot; ``overlay`` is a copy of its own."""
        shutil.copyfile(self.directory / "overlay.qcow2", overlay)
        return guest.Resume(overlay=overlay, qmp=qmp, incoming=f"exec:cat {shlex.quote(str(self.directory / 'state'))}",
                            nonce=self.nonce, accel=self.accel)

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    @classmethod
    def save(cls, session: Session, nonce: str) -> None:
        """Save the running ``session``'s machine (it goes on afterwards), unless another
        session saved the same boot meanwhile; older saved boots of the image are removed."""
        accel = session._accel_used
        sessions = session.image.directory / "sessions"
        key = cls.key(session.image, accel, session._memory_mb)
        final = sessions / key
        with lock(sessions / f".lock-{key}"):
            if (final / "saved.json").is_file():
                return
            tmp = sessions / f".tmp-{key}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            try:
                deadline = time.monotonic() + SAVE_TIMEOUT_S
                with _qmp_for("saving the boot", session._qmp_path, deadline) as client:
                    client.cmd("stop")
                    try:
                        client.cmd("migrate", uri=f"exec:cat > {shlex.quote(str(tmp / 'state'))}")
                        _wait_migration(client, deadline, "saving the boot")
                        # qemu has flushed the disk; copied while the machine is stopped
                        shutil.copyfile(session._overlay, tmp / "overlay.qcow2")
                    finally:
                        client.cmd("cont")
                atomic_write(tmp / "saved.json", json.dumps({
                    "format": SAVED_FORMAT, "accel": accel, "nonce": nonce, "memory_mb": session._memory_mb,
                    "qemu": _qemu_version(), "image_inputs": session.image.inputs, "release": session.image.release,
                    "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
                for old in sessions.iterdir():       # one saved boot per image is enough
                    if old.is_dir() and not old.name.startswith("."):
                        shutil.rmtree(old, ignore_errors=True)
                os.rename(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
