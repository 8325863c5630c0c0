"""Noticing modules that come and go outside the service.

The kernel sends a uevent (subsystem ``module``, action ``add`` or ``remove``) whenever a
module is loaded or removed, whoever did it. ``ModuleWatcher`` listens for them with pyudev
on the kernel's netlink source (no udevd needed: the guest and containers have none) and
calls ``on_change(name, action)``. A uevent is only a hint: the callback rescans
``/sys/module`` and the service's record, so a lost or duplicated uevent does no harm. If
the netlink socket fails (buffer overrun, ENOBUFS), the watcher reopens it and asks for a
full rescan, since uevents may have been lost in between. Where udev cannot be watched at
all (no libudev), ``available`` is False and the service rescans on a timer instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class ModuleWatcher:
    def __init__(self, on_change: Callable[[str | None, str], None], say: Callable[[str], None]):
        self.on_change = on_change
        self.say = say
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.available = False
        self.reason = ""
        try:
            import pyudev  # here: only the service watches modules, and it loads libudev with ctypes

            self._pyudev = pyudev
            self._monitor = self._open()
            self.available = True
        except Exception as exc:  # ImportError, or libudev missing (ImportError/OSError from ctypes)
            self.reason = " ".join(str(exc).split()) or type(exc).__name__

    def _open(self):
        context = self._pyudev.Context()
        monitor = self._pyudev.Monitor.from_netlink(context, source="kernel")
        monitor.filter_by("module")
        monitor.start()
        return monitor

    def start(self) -> None:
        if self.available:
            self._thread = threading.Thread(target=self._run, name="module-watcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                device = self._monitor.poll(timeout=0.5)
            except Exception as exc:   # the socket failed (ENOBUFS: uevents were lost): reopen, rescan
                self.say(f"module watcher: {exc!r}; reopening it and rescanning")
                try:
                    self._monitor = self._open()
                except Exception as err:
                    self.say(f"module watcher: cannot reopen ({err!r}); retrying in 1 s")
                    self._stop.wait(1.0)
                    continue
                self._notify(None, "rescan")
                continue
            if device is None or device.subsystem != "module":
                continue
            self._notify(device.sys_name, device.action or "")

    def _notify(self, name: str | None, action: str) -> None:
        try:
            self.on_change(name, action)
        except Exception as exc:   # a bug in the callback must not end the watching
            self.say(f"module watcher: handling {action} {name}: {exc!r}")
