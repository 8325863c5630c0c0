"""The newc cpio writer, checked with the real cpio(1); the protocol parser; the /init template."""

from __future__ import annotations

import base64
import gzip
import hashlib
import shutil
import subprocess

import jinja2
import pytest

from kprobegen.errors import VMError
from kprobegen.vm.initramfs import Initramfs
from kprobegen.vm.protocol import DataChannel
from kprobegen.vm.runner import guest_path, render_init



@pytest.fixture
def cpio():
    from .conftest import require

    require(shutil.which("cpio") is not None, "cpio(1) not installed (apt-get install cpio)")


def _archive(tmp_path, compress=False):
    ir = Initramfs()
    ir.mkdir("/bin")
    ir.file("/bin/tool", b"#!/bin/sh\necho hi\n", 0o755)
    ir.file("/etc/deep/conf.txt", b"a=1\n", 0o600)     # parents created on the way
    ir.file("/odd", b"x" * 5, 0o644)                   # a size that needs padding
    ir.symlink("/bin/sh", "tool")
    ir.chardev("/dev/console", 5, 1)
    return ir, ir.write(tmp_path / ("a.cpio.gz" if compress else "a.cpio"), compress=compress)


def _listing(path):
    out = subprocess.run(["cpio", "-itv", "-F", str(path)], capture_output=True, text=True, check=True)
    return {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in out.stdout.splitlines()}


def test_cpio_lists_what_was_written(tmp_path, cpio):
    _, path = _archive(tmp_path)
    names = subprocess.run(["cpio", "-it", "-F", str(path)], capture_output=True, text=True,
                           check=True).stdout.split()
    assert names == ["bin", "bin/tool", "etc", "etc/deep", "etc/deep/conf.txt", "odd",
                     "bin/sh", "dev", "dev/console"]


def test_modes_symlinks_and_devices(tmp_path, cpio):
    _, path = _archive(tmp_path)
    ls = _listing(path)
    assert ls["bin"].startswith("drwxr-xr-x")
    assert ls["bin/tool"].startswith("-rwxr-xr-x")
    assert ls["etc/deep/conf.txt"].startswith("-rw-------")
    assert ls["bin/sh"].startswith("lrwxrwxrwx") and ls["bin/sh"].endswith("bin/sh -> tool")
    assert ls["dev/console"].startswith("crw-------")
    assert "5,   1" in ls["dev/console"] or "5, 1" in ls["dev/console"]


def test_contents_extract_byte_exact(tmp_path, cpio):
    _, path = _archive(tmp_path)
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["cpio", "-id", "--no-absolute-filenames", "-F", str(path), "bin/*", "odd", "etc/*"],
                   cwd=dest, check=True, capture_output=True)
    assert (dest / "bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (dest / "odd").read_bytes() == b"xxxxx"
    assert (dest / "bin/sh").is_symlink() and (dest / "bin/sh").readlink().as_posix() == "tool"


def test_gzip_variant_is_the_same_archive(tmp_path):
    ir, path = _archive(tmp_path, compress=True)
    assert gzip.decompress(path.read_bytes()) == ir.to_bytes()


def test_newc_header_layout():
    ir = Initramfs()
    ir.file("/f", b"abc", 0o644)
    raw = ir.to_bytes()
    assert raw[:6] == b"070701"
    assert len(raw) % 4 == 0
    # the trailer: 110-byte header + "TRAILER!!!\0" (121 bytes) padded to 124
    assert raw[-124:-118] == b"070701" and raw.endswith(b"TRAILER!!!\0" + b"\0" * 3)
    # filesize field (7th) of the first entry is 3
    assert int(raw[6 + 6 * 8: 6 + 7 * 8], 16) == 3


def test_rejects_duplicates_and_escapes():
    ir = Initramfs()
    ir.file("/a", b"")
    with pytest.raises(VMError, match="added twice"):
        ir.file("/a", b"")
    with pytest.raises(VMError, match=r"'\.\.'"):
        ir.file("/x/../etc/passwd", b"")
    with pytest.raises(VMError, match="absolute"):
        ir.file("relative", b"")


def test_add_paths():
    assert guest_path("tool") == "/root/tool"
    assert guest_path("/opt/t") == "/opt/t"
    for bad in ("/init", "/proc/x", "/kpg/mod/a.ko", "../x"):
        with pytest.raises(VMError):
            guest_path(bad)


# -- the output protocol ------------------------------------------------------------------

def _blob_lines(nonce, name, data):
    enc = base64.b64encode(gzip.compress(data)).decode()
    lines = [f"KPG {nonce} BLOB {name} {len(data)} {hashlib.md5(data).hexdigest()}"]
    lines += [f"KPG {nonce} D {name} {enc[i:i + 76]}" for i in range(0, len(enc), 76)]
    lines.append(f"KPG {nonce} END {name}")
    return lines


def test_protocol_keeps_only_this_nonce_and_round_trips_bytes():
    tags = []
    p = DataChannel("abc123", lambda t, a: tags.append((t, a)))
    data = bytes(range(256)) * 40
    text = "\r\n".join(
        ["KPG other BOOT 1.0", "noise KPG abc123 BOOT 9", "KPG abc123 BOOT 1.25"]
        + _blob_lines("abc123", "report", data)
        + ["KPG abc123 EXIT 3", "KPG abc123 DONE 2.5", ""]
    ).encode()
    for i in range(0, len(text), 7):  # arrives in arbitrary chunks
        p.feed(text[i:i + 7])
    assert tags == [("BOOT", ["1.25"]), ("EXIT", ["3"]), ("DONE", ["2.5"])]
    assert p.blobs == {"report": data}
    assert p.blob_errors == []


def test_protocol_detects_a_lost_line():
    p = DataChannel("n", lambda t, a: None)
    lines = _blob_lines("n", "report", bytes(range(256)) * 40)
    del lines[3]
    p.feed(("\n".join(lines) + "\n").encode())
    assert "report" not in p.blobs
    assert len(p.blob_errors) == 1 and p.blob_errors[0].startswith("report:")


# -- the /init template ---------------------------------------------------------------------

def test_init_template_is_strict():
    with pytest.raises(jinja2.UndefinedError):
        render_init(nonce="x", profile=False)


def test_init_template_renders_the_command_quoted():
    s = render_init(nonce="n0", profile=False, oracles=[], module_names=["a", "b"],
                    cmd="sh -c 'echo $HOME; exit 3'", log_forms=False)
    assert s.startswith("#!/bin/sh\n")
    assert "N=n0" in s
    assert "for m in a b; do" in s
    assert "( sh -c 'echo $HOME; exit 3' ) < /dev/null" in s
    assert "{{" not in s and "{%" not in s
