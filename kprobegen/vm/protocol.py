"""The guest's data channel (a serial port): lines ``KPG <nonce> <TAG> args...`` from the
guest's /init, files sent as BLOB/D/END lines (gzip + base64, checked by size and md5).

A line without this run's nonce is ignored, so nothing the workload prints can pose as the
guest's /init. The tags are listed in kprobegen.vm.runner's docstring.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from typing import Callable


class DataChannel:
    """Parses the data channel, line by line, keeping only this run's nonce."""

    def __init__(self, nonce: str, on_tag: Callable[[str, list[str]], None]):
        self.prefix = f"KPG {nonce} "
        self.buf = b""
        self.on_tag = on_tag
        self.blobs: dict[str, bytes] = {}
        self.blob_errors: list[str] = []
        self._open: dict[str, tuple[int, str, list[str]]] = {}

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        for raw in lines:
            line = raw.decode("ascii", errors="replace").rstrip("\r")
            if line.startswith(self.prefix):
                try:
                    self._line(line[len(self.prefix):].split(" "))
                except ValueError:
                    self.blob_errors.append(f"malformed protocol line {line[:80]!r}")

    def _line(self, f: list[str]) -> None:
        tag, args = f[0], f[1:]
        if tag == "D" and len(args) == 2 and args[0] in self._open:
            self._open[args[0]][2].append(args[1])
        elif tag == "BLOB" and len(args) == 3:
            self._open[args[0]] = (int(args[1]), args[2], [])
        elif tag == "END" and len(args) == 1 and args[0] in self._open:
            size, md5, parts = self._open.pop(args[0])
            try:
                data = gzip.decompress(base64.b64decode("".join(parts)))
            except Exception as e:  # noqa: BLE001 - any decoding failure means lost bytes
                self.blob_errors.append(f"{args[0]}: undecodable ({e})")
                return
            if len(data) != size or hashlib.md5(data).hexdigest() != md5:
                self.blob_errors.append(f"{args[0]}: {len(data)} bytes, expected {size} (md5 mismatch)")
                return
            self.blobs[args[0]] = data
        else:
            self.on_tag(tag, args)
