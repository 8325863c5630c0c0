"""The guest agent: what a host process talks to in a full guest that stays up (a session).

``python -m kprobegen.vm.agent`` runs as root in the guest, beside ``kprobegen serve``. It
finds the virtio-serial port named ``PORT_NAME`` (by its name in /sys/class/virtio-ports:
the guest has no udevd to make /dev/virtio-ports/ links) and answers requests on it, one at
a time, until asked to stop. The guest has no network device: this port is the only way in,
and on the host it is a Unix socket in the session's private folder.

Wire format, both ways: one JSON object per line (``\\n``-terminated, UTF-8); bytes travel as
base64 strings. A request is ``{"id": N, "op": OP, ...}``; the answer ``{"id": N, "ok":
true, ...}`` or ``{"id": N, "ok": false, "error": "one line"}``. On start, before any
request, the agent sends ``{"id": 0, "ok": true, "op": "hello", "release": …, "service": …}``.

| op | request | answer |
| --- | --- | --- |
| ``exec`` | ``argv`` (list) or ``shell`` (str), ``timeout`` (s), ``stdin`` (b64), ``cwd`` | ``returncode``, ``stdout``, ``stderr`` (b64; each cut at ``MAX_OUTPUT``), ``timed_out`` |
| ``put`` | ``path`` (absolute), ``data`` (b64), ``mode`` | ``size`` |
| ``http`` | ``method``, ``path``, ``body`` (b64, optional), ``content_type`` | ``status``, ``body`` (the service's JSON answer) |
| ``hello`` | ``time`` (host's epoch seconds, optional), ``seed`` (b64, optional) | ``release``, ``service`` (the same as the first hello) |
| ``bye`` | | (then the agent exits, and the boot ends) |

A session resumed from a saved boot (kprobegen.vm.session) starts where the first hello was
long sent: it asks with ``hello``, which also sets the guest's clock to the host's (the saved
clock is as old as the save) and mixes fresh bytes into the guest's random pool (every resumed
guest would otherwise go on from the same pool).

Standard library only, and kprobegen.client for ``http``: the agent starts fast under TCG.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PORT_NAME = "org.kprobegen.agent"
#: The most of a command's stdout or stderr sent back (the rest is cut, and said so).
MAX_OUTPUT = 64 << 20
#: ioctl of /dev/urandom: reseed the kernel's CRNG from its input pool now (linux/random.h).
RNDRESEEDCRNG = 0x5207
#: The longest a request line may be (a put of a big file, base64): longer is refused.
MAX_LINE = 256 << 20


def find_port(name: str = PORT_NAME, wait_s: float = 30.0) -> Path:
    """/dev/vportNpM of the virtio-serial port called ``name`` (loading virtio_console first)."""
    deadline = time.monotonic() + wait_s
    loaded = False
    while True:
        for entry in sorted(Path("/sys/class/virtio-ports").glob("vport*")):
            try:
                if (entry / "name").read_text().strip() == name:
                    dev = Path("/dev") / entry.name
                    if dev.exists():
                        return dev
            except OSError:
                continue
        if not loaded:
            subprocess.run(["modprobe", "virtio_console"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            loaded = True
        if time.monotonic() > deadline:
            raise SystemExit(f"kprobegen agent: no virtio-serial port named {name}")
        time.sleep(0.1)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value, field: str) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a base64 string")
    return base64.b64decode(value, validate=True)


def _cut(data: bytes) -> bytes:
    return data if len(data) <= MAX_OUTPUT else data[:MAX_OUTPUT] + b"\n[kprobegen agent: output cut]\n"


def op_exec(req: dict) -> dict:
    argv, shell = req.get("argv"), req.get("shell")
    if (argv is None) == (shell is None):
        raise ValueError("give exactly one of argv and shell")
    if argv is not None and not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError("argv must be a non-empty list of strings")
    if shell is not None and not isinstance(shell, str):
        raise ValueError("shell must be a string")
    timeout = req.get("timeout", 600)
    if not isinstance(timeout, (int, float)) or not 0 < timeout <= 24 * 3600:
        raise ValueError("timeout must be seconds, more than 0 and at most a day")
    cwd = req.get("cwd", "/root")
    command = argv if argv is not None else ["/bin/sh", "-c", shell]
    try:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=cwd, start_new_session=True)
    except OSError as exc:
        return {"returncode": 127, "stdout": "", "stderr": _b64(f"{command[0]}: {exc.strerror}\n".encode()),
                "timed_out": False}
    timed_out = False
    try:
        out, err = proc.communicate(_unb64(req.get("stdin"), "stdin"), timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
    return {"returncode": proc.returncode, "stdout": _b64(_cut(out)), "stderr": _b64(_cut(err)),
            "timed_out": timed_out}


def op_put(req: dict) -> dict:
    path = req.get("path")
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise ValueError("path must be an absolute path")
    mode = req.get("mode", 0o644)
    if not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise ValueError("mode must be a file mode")
    data = _unb64(req.get("data"), "data")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.kpg-agent-{os.getpid()}")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, target)
    return {"size": len(data)}


def op_http(req: dict) -> dict:
    from kprobegen.client import Client, ServiceError

    method, path = req.get("method"), req.get("path")
    if method not in ("GET", "POST", "PUT", "DELETE") or not isinstance(path, str) or not path.startswith("/v1/"):
        raise ValueError("method must be GET, POST, PUT or DELETE and path start with /v1/")
    body = _unb64(req.get("body"), "body") if req.get("body") is not None else None
    headers = {"Content-Type": req.get("content_type") or "application/json"}
    timeout = req.get("timeout", 600)
    try:
        status, data = Client(timeout=float(timeout)).request(method, path, raw=body, headers=headers)
    except ServiceError as exc:
        return {"status": None, "body": {"error": exc.reason}}
    return {"status": status, "body": data}


def op_hello(req: dict) -> dict:
    stamp = req.get("time")
    if stamp is not None:
        if not isinstance(stamp, (int, float)) or not 0 < stamp < 2 ** 40:
            raise ValueError("time must be seconds since the epoch")
        time.clock_settime(time.CLOCK_REALTIME, float(stamp))
    seed = _unb64(req.get("seed"), "seed")
    if seed:
        import fcntl

        with open("/dev/urandom", "wb", buffering=0) as pool:
            pool.write(seed[:4096])            # mixed into the input pool (not credited as entropy)
            # ...which the kernel's CRNG reads only when it reseeds (every minute): reseed now
            fcntl.ioctl(pool, RNDRESEEDCRNG)
    return {"op": "hello", "release": os.uname().release, "service": service_answers(10.0)}


OPS = {"exec": op_exec, "put": op_put, "http": op_http, "hello": op_hello}


def service_answers(wait_s: float) -> bool:
    from kprobegen.client import Client, ServiceError

    deadline = time.monotonic() + wait_s
    while True:
        try:
            if Client(timeout=10).request("GET", "/v1/health")[0] == 200:
                return True
        except ServiceError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def serve(port: Path, service_wait_s: float) -> None:
    fd = os.open(port, os.O_RDWR)
    stream = open(fd, "rb", closefd=False)

    def send(obj: dict) -> None:
        data = (json.dumps(obj) + "\n").encode()
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    send({"id": 0, "ok": True, "op": "hello", "release": os.uname().release,
          "service": service_answers(service_wait_s)})
    while True:
        line = stream.readline(MAX_LINE + 1)
        if not line:                 # the host closed its end: wait for it to come back
            time.sleep(0.1)
            continue
        if not line.endswith(b"\n"):
            send({"id": None, "ok": False, "error": f"request line over {MAX_LINE} bytes"})
            while line and not line.endswith(b"\n"):
                line = stream.readline(MAX_LINE + 1)
            continue
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("a request is a JSON object")
        except ValueError as exc:
            send({"id": None, "ok": False, "error": f"not a request: {' '.join(str(exc).split())}"})
            continue
        rid, op = req.get("id"), req.get("op")
        if op == "bye":
            send({"id": rid, "ok": True})
            return
        handler = OPS.get(op)
        if handler is None:
            send({"id": rid, "ok": False, "error": f"unknown op {str(op)[:40]!r}"})
            continue
        try:
            send({"id": rid, "ok": True, **handler(req)})
        except Exception as exc:  # the agent answers and goes on
            send({"id": rid, "ok": False, "error": " ".join(str(exc).split()) or type(exc).__name__})


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    service_wait_s = float(args[0]) if args else 120.0
    serve(find_port(), service_wait_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
