"""What `kprobegen serve` tells systemd: sd_notify(3) for a ``Type=notify`` unit, without libsystemd.

systemd starts a ``Type=notify`` service with ``$NOTIFY_SOCKET`` set to an ``AF_UNIX``
datagram socket (a path, or ``@name`` in the abstract namespace) and waits for ``READY=1``
on it before the unit is active, i.e. before units ordered after it start. The service sends
``READY=1`` once both of its sockets listen, ``STATUS=`` lines that ``systemctl status``
shows, and ``STOPPING=1`` when it begins to stop. The unit is contrib/systemd/kprobegen.service
(docs/service.md, "Under systemd").

The variable is taken out of the environment when read (as ``sd_notify(unset_environment=1)``
does), so the builds and insmods the service runs do not inherit it. Outside systemd
(no ``$NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, MutableMapping


def notify_address(value: str | None) -> str | None:
    """``$NOTIFY_SOCKET`` as ``socket.connect`` takes it: a path, or ``"\\0name"`` for
    ``@name`` (the abstract namespace); None when unset or not an AF_UNIX address (systemd 254's
    ``vsock:`` addresses are for virtual machines, not for this service)."""
    if not value:
        return None
    if value[0] == "@":
        return "\0" + value[1:]
    if value[0] == "/":
        return value
    return None


class Notifier:
    """The service's end of ``$NOTIFY_SOCKET``, read (and removed) from ``environ`` once."""

    def __init__(self, environ: MutableMapping[str, str] = os.environ,
                 say: Callable[[str], None] | None = None):
        self.raw = environ.pop("NOTIFY_SOCKET", None)
        self.address = notify_address(self.raw)
        self.say = say or (lambda message: print(f"kprobegen serve: {message}", file=sys.stderr, flush=True))
        if self.raw and self.address is None:
            self.say(f"NOTIFY_SOCKET={self.raw!r} is not a Unix socket address: systemd is not told anything")

    def __bool__(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments in one datagram (``"READY=1", "STATUS=…"``); True when
        sent, False outside systemd or when the send failed (said once through ``say``: a
        ``Type=notify`` start then times out, and the journal says why)."""
        if self.address is None:
            return False
        message = "\n".join(a.replace("\n", " ") for a in assignments).encode()   # one line each
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self.address)
                s.sendall(message)
        except OSError as exc:
            self.say(f"cannot notify systemd at {self.raw}: {exc.strerror or exc}")
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")


__all__ = ["Notifier", "notify_address"]
