"""A newc cpio writer for the guest's initramfs.

The kernel unpacks a newc ("070701") cpio archive into its rootfs before it runs /init.
Everything the guest needs goes in one archive: a static busybox and its applet links, /init
(rendered from templates/vm-init.sh.j2), the modules and the ``--add`` files. No 9p and no
virtio are needed (the cloud kernel has them only as modules).

Format (see the kernel's Documentation/driver-api/early-userspace/buffer-format.rst): every
entry is a 110-byte ASCII header (magic ``070701`` then 13 eight-digit hex fields), the NUL
terminated name padded to a multiple of 4, then the data padded to a multiple of 4. The archive
ends with an entry named ``TRAILER!!!``. Directories must come before their contents.
"""

from __future__ import annotations

import gzip
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from kprobegen.errors import VMError

__all__ = ["Initramfs", "find_busybox", "BUSYBOX_CANDIDATES"]

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


def find_busybox() -> Path:
    """The host's static busybox (Debian's ``busybox-static``)."""
    for cand in BUSYBOX_CANDIDATES:
        p = Path(cand)
        if p.is_file():
            with p.open("rb") as f:
                head = f.read(4096)
            # A dynamically linked busybox has a PT_INTERP ("/lib64/ld-linux...") near the top.
            if b"ld-linux" in head:
                continue
            return p
    raise VMError(
        "no static busybox found (looked at " + ", ".join(BUSYBOX_CANDIDATES)
        + "): install Debian's busybox-static (apt-get install busybox-static)"
    )


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


@dataclass
class _Entry:
    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


@dataclass
class Initramfs:
    """An in-memory list of entries, written out as one newc cpio archive.

    Paths are absolute guest paths ("/bin/busybox"); missing parent directories are created
    (mode 0755) in the order they are first needed.
    """

    entries: list[_Entry] = field(default_factory=list)
    _names: set[str] = field(default_factory=set)

    # -- building ------------------------------------------------------------------------
    def _norm(self, path: str) -> str:
        p = PurePosixPath(path)
        if not p.is_absolute() or ".." in p.parts:
            raise VMError(f"initramfs path {path!r} must be absolute and contain no '..'")
        return str(p).lstrip("/")

    def _add(self, name: str, mode: int, data: bytes = b"", rdev=(0, 0)) -> None:
        if name in self._names:
            raise VMError(f"initramfs: /{name} added twice (two --add files with one guest path?)")
        parent = str(PurePosixPath(name).parent)
        if parent not in (".", "") and parent not in self._names:
            self.mkdir("/" + parent)
        self._names.add(name)
        self.entries.append(_Entry(name, mode, data, rdev))

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        name = self._norm(path)
        if name in self._names:
            return
        self._add(name, stat.S_IFDIR | mode)

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._add(self._norm(path), stat.S_IFREG | mode, data)

    def copy(self, host: Path, path: str, mode: int | None = None) -> None:
        host = Path(host)
        try:
            data = host.read_bytes()
            if mode is None:
                mode = stat.S_IMODE(host.stat().st_mode)
        except OSError as e:
            raise VMError(f"cannot put {host} into the initramfs: {e.strerror}") from e
        self.file(path, data, mode)

    def symlink(self, path: str, target: str) -> None:
        self._add(self._norm(path), stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._add(self._norm(path), stat.S_IFCHR | mode, rdev=(major, minor))

    def add_busybox(self, busybox: Path | None = None, applets: list[str] | None = None) -> None:
        """/bin/busybox plus a /bin/APPLET -> busybox symlink per applet."""
        busybox = busybox or find_busybox()
        self.copy(busybox, "/bin/busybox", 0o755)
        if applets is None:
            applets = busybox_applets(busybox)
        for a in applets:
            if a != "busybox" and "/" not in a:
                self.symlink(f"/bin/{a}", "busybox")

    # -- writing -------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        out = bytearray()
        for ino, e in enumerate(self.entries, start=1):
            out += self._entry(ino, e.name, e.mode, e.data, e.rdev)
        out += self._entry(0, "TRAILER!!!", 0, b"", (0, 0))
        return bytes(out)

    @staticmethod
    def _entry(ino: int, name: str, mode: int, data: bytes, rdev: tuple[int, int]) -> bytes:
        bname = name.encode() + b"\0"
        fields = (
            ino, mode, 0, 0,                       # ino, mode, uid, gid
            2 if stat.S_ISDIR(mode) else 1,        # nlink
            0, len(data),                          # mtime (0: reproducible), filesize
            0, 0, rdev[0], rdev[1],                # devmajor, devminor, rdevmajor, rdevminor
            len(bname), 0,                         # namesize (with NUL), check
        )
        hdr = b"070701" + b"".join(b"%08x" % f for f in fields)
        return hdr + bname + _pad4(len(hdr) + len(bname)) + data + _pad4(len(data))

    def write(self, path: Path, compress: bool = False) -> Path:
        raw = self.to_bytes()
        # gzip level 1: the archive is mostly busybox; the kernel's inflate is fast either way.
        Path(path).write_bytes(gzip.compress(raw, compresslevel=1, mtime=0) if compress else raw)
        return Path(path)


def busybox_applets(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=False)
    if out.returncode != 0 or not out.stdout.strip():
        raise VMError(f"{busybox} --list failed: is it Debian's busybox-static?")
    return sorted(set(out.stdout.split()))

