"""The cache folder, and the one implementation of what several processes sharing it (or an
output folder) need: locks, atomic writes and copies (with the copy's sha256), folders
published whole, and folders dropped without pulling them from under a reader.

Every write that another process may read goes to a temporary name unique to this process
and thread, in the destination's own folder, then moves into place with one rename; a folder
that is dropped is first renamed aside (atomically), then deleted. Readers never see half a
file or half a folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


def cache_dir() -> Path:
    """$KPROBEGEN_CACHE, else $XDG_CACHE_HOME/kprobegen, else ~/.cache/kprobegen."""
    if os.environ.get("KPROBEGEN_CACHE"):
        return Path(os.environ["KPROBEGEN_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "kprobegen"
    return Path.home() / ".cache" / "kprobegen"


@contextmanager
def lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created), held for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# mkstemp makes files 0600; what lands in place gets the mode a plain open() would give.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _temp_beside(dest: Path) -> Path:
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
    finally:
        os.close(fd)
    return Path(name)


def atomic_write(dest: Path, data: bytes | str) -> None:
    """Write ``dest`` whole or not at all (a unique temporary name, then one rename)."""
    tmp = _temp_beside(dest)
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def copy_to_temp(src: Path, dest: Path) -> tuple[Path, int, str]:
    """Copy ``src`` to a unique temporary name beside ``dest``: (that name, size, sha256).
    The caller renames it into place (``os.replace``) or deletes it."""
    tmp = _temp_beside(dest)
    digest = hashlib.sha256()
    size = 0
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while chunk := fin.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                fout.write(chunk)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, size, digest.hexdigest()


def atomic_copy(src: Path, dest: Path) -> None:
    """Copy ``src`` onto ``dest`` atomically (readers see the old file or the new one)."""
    tmp, _, _ = copy_to_temp(src, dest)
    try:
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_files(files: Mapping[str, str], out_dir: str | Path) -> list[Path]:
    """Write a set of text files into ``out_dir``: all or none (written into a temporary
    folder inside ``out_dir``, then each renamed into place). The paths written, in order."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".kprobegen-", dir=out))
    try:
        for name, text in files.items():
            (staging / name).write_text(text)
        written = []
        for name in files:
            os.replace(staging / name, out / name)
            written.append(out / name)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def staging_dir(dest: Path) -> Path:
    """A new empty folder beside ``dest``, to fill and then publish with publish_dir()."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
    os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp's 0700, like a plain mkdir
    return staging


def drop_dir(path: Path) -> None:
    """Remove a folder another process may be reading or replacing: rename it aside (atomic),
    then delete the renamed copy. A folder already gone is fine."""
    aside = path.parent / f".old-{path.name}-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)


def publish_dir(staging: Path, dest: Path) -> bool:
    """Move the filled ``staging`` folder to ``dest`` in one rename. When ``dest`` exists it is
    kept (another process published the same thing first) and ours is deleted. Returns True
    when ``dest`` holds a complete folder afterwards."""
    try:
        try:
            os.rename(staging, dest)
            return True
        except OSError:
            # dest exists (renaming a folder onto a non-empty folder fails): theirs is as good as ours.
            return dest.is_dir()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
