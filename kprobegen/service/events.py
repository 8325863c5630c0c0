"""The service's event log: what happened to which module, by whom, numbered for good.

Events are appended to ``<state dir>/events.jsonl`` (one JSON object per line, written with
one ``write`` on an ``O_APPEND`` descriptor) as they happen, and kept in memory for
``GET /v1/events``. Sequence numbers go on across restarts: a client that remembers the last
``seq`` it saw asks for what came after and learns (``missed``) when some of that was dropped.
The file is cut back to the newest ``keep`` events when it holds twice as many. A damaged
line (a crash mid-write, a hand edit) is skipped and reported; numbering resumes after the
highest sequence number read.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from pathlib import Path

from pydantic import ValidationError

from kprobegen.cache import atomic_write
from kprobegen.service.models import Event, Events
from kprobegen.service.state import now

#: Events kept, in memory and in the file.
KEEP = 10_000
#: The longest a client may wait for a new event (``wait=`` of GET /v1/events).
MAX_WAIT_S = 60.0


class EventLog:
    def __init__(self, path: Path, keep: int = KEEP):
        self.path = path
        self.keep = keep
        self.problems: list[str] = []
        self._events: deque[Event] = deque(maxlen=keep)
        self._seq = 0
        self._lines_in_file = 0
        self._changed = threading.Condition()
        self._read()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def _read(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            self.problems.append(f"{self.path}: cannot read: {exc.strerror}; numbering starts again")
            return
        bad = 0
        for line in raw.splitlines():
            self._lines_in_file += 1
            try:
                event = Event.model_validate_json(line)
            except (ValidationError, ValueError):
                bad += 1
                continue
            self._seq = max(self._seq, event.seq)
            self._events.append(event)
        if bad:
            self.problems.append(f"{self.path}: {bad} unreadable line(s) skipped")
        if raw and not raw.endswith(b"\n"):    # a write cut short: start the next event on a line of its own
            self._lines_in_file += 1
            with open(self.path, "ab") as f:
                f.write(b"\n")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def add(self, kind: str, module: str | None, uid: int | None, detail: str | None = None) -> Event:
        with self._changed:
            self._seq += 1
            event = Event(seq=self._seq, time=now(), kind=kind, module=module, uid=uid,
                          detail=None if detail is None else " ".join(detail.split())[:1000])
            self._events.append(event)
            if self._fd >= 0:
                os.write(self._fd, (event.model_dump_json() + "\n").encode())
                self._lines_in_file += 1
                if self._lines_in_file >= 2 * self.keep:
                    self._compact()
            self._changed.notify_all()
            return event

    def _compact(self) -> None:
        """Rewrite the file with the events kept in memory (the newest ``keep``)."""
        atomic_write(self.path, "".join(e.model_dump_json() + "\n" for e in self._events))
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._lines_in_file = len(self._events)

    def since(self, since: int, wait: float = 0.0) -> Events:
        """The events after ``since``; with ``wait``, block up to that long for one to come."""
        with self._changed:
            if wait > 0 and self._seq <= since:
                self._changed.wait_for(lambda: self._seq > since, timeout=min(wait, MAX_WAIT_S))
            events = [e for e in self._events if e.seq > since]
            oldest = self._events[0].seq if self._events else self._seq + 1
            return Events(events=events, next=self._seq, oldest=oldest, missed=since + 1 < oldest and since < self._seq)
