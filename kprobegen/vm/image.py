"""The kernel image qemu boots: the decompressed ELF where the kernel allows it.

A bzImage decompresses itself in the guest, which under TCG costs 0.5 s for an LZ4 kernel
(Debian's cloud kernels) and about 4 s for an xz one (Debian's generic kernels). A kernel built
with CONFIG_PVH=y can be booted by qemu straight from its ELF (the PVH entry note), so the
payload is decompressed once on the host and cached. Anything unusual falls back to the
bzImage: this is a speed-up, never a requirement.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from kprobegen.cache import cache_dir

# Payload magics inside a bzImage, with how to decompress each (stdlib first, then a tool).
_XZ = b"\xfd7zXZ\x00"
_GZIP = b"\x1f\x8b\x08"
_LZ4_LEGACY = b"\x02\x21\x4c\x18"
_ZSTD = b"\x28\xb5\x2f\xfd"


def _decompress(data: bytes) -> bytes | None:
    for magic, how in ((_LZ4_LEGACY, "lz4"), (_XZ, "xz"), (_ZSTD, "zstd"), (_GZIP, "gzip")):
        at = data.find(magic)
        if at < 0:
            continue
        payload = data[at:]
        try:
            if how == "xz":
                out = lzma.LZMADecompressor().decompress(payload)
            elif how == "gzip":
                out = gzip.GzipFile(fileobj=__import__("io").BytesIO(payload)).read()
            else:
                tool = shutil.which(how)
                if tool is None:
                    continue
                # The payload is followed by the rest of the bzImage: the tools decompress the
                # first frame and complain about the trailing bytes (a non-zero exit), so the
                # output is judged by its ELF header and size instead.
                out = subprocess.run([tool, "-dc"], input=payload, capture_output=True, timeout=60).stdout
        except (lzma.LZMAError, OSError, EOFError, subprocess.SubprocessError):
            continue
        if out[:4] == b"\x7fELF" and len(out) > 1 << 20:
            return out
    return None


def _pvh_enabled(kernel) -> bool:
    config = getattr(kernel, "config", None)
    try:
        return config is not None and "CONFIG_PVH=y" in Path(config).read_text(errors="replace").splitlines()
    except OSError:
        return False


def boot_image(kernel, cache: Path | None = None) -> Path:
    """The image to give qemu's -kernel: a cached ELF when possible, else the bzImage."""
    image = Path(kernel.image)
    if os.environ.get("KPROBEGEN_BOOT_BZIMAGE") or not _pvh_enabled(kernel):
        return image
    if cache is None:
        cache = cache_dir() / "vmlinux"
    try:
        stat = image.stat()
    except OSError:
        return image
    stamp = hashlib.sha256(f"{image.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    elf = cache / f"vmlinux-{kernel.release}-{stamp}"
    if elf.is_file():
        return elf
    try:
        data = image.read_bytes()
    except OSError:
        return image
    out = _decompress(data)
    if out is None:
        return image
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache, delete=False, prefix=".vmlinux-") as tmp:
            tmp.write(out)
        os.replace(tmp.name, elf)
    except OSError:
        return image
    return elf
