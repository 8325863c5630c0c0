"""Progress messages from long steps, passed down as a plain callable ``progress(message)``.

Most messages are worth showing only on a terminal (building, booting, loading). A `Notice`
is a message a user must see however stderr is connected, because without it a command is
silent for many seconds: the one-time capture of a kernel's profile, a fall back from KVM to
TCG. It is a ``str``, so every progress callable takes it unchanged.
"""

from __future__ import annotations

from typing import Callable, Optional

Progress = Optional[Callable[[str], None]]


class Notice(str):
    """A progress message shown even when stderr is not a terminal."""
