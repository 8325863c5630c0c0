"""The full Debian guest: an image built with debootstrap, booted copy-on-write under qemu.

The image is built once per test session (minutes; then reused from the cache while
kprobegen's source is unchanged). Every test boots it for real: its own Debian cloud kernel,
the real userland, no network device.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vm, pytest.mark.slow]

MODULES = Path(__file__).resolve().parents[2] / "modules"


def boot(image, *cmd, add=()):
    """Run cmd in the guest: (GuestRun, stdout bytes, stderr bytes)."""
    from kprobegen.vm import guest

    out, err = bytearray(), bytearray()
    r = guest.run(image, list(cmd), add=add, timeout=900, stdout=out.extend, stderr=err.extend)
    r.raise_for_status()
    return r, bytes(out), bytes(err)


def test_command_runs_as_root_on_the_images_own_kernel(image):
    r, out, err = boot(image, "sh", "-c", 'uname -r; id -u; python3 -c "import sys; print(sys.version_info[0])"; '
                                         'test -f "/lib/modules/$(uname -r)/build/Makefile" && echo headers; '
                                         'ls /sys/class/net | grep -v "^lo$" | wc -l; '
                                         'printf "\\377\\000bin" >&2; exit 7')
    assert r.exit_code == 7
    assert out.decode().split("\n") == [image.release, "0", "3", "headers", "0", ""]   # no network device
    assert err == b"\xff\x00bin"                     # stderr, raw bytes, apart from stdout


def test_nothing_written_survives_and_the_image_is_reused(image):
    from kprobegen.vm import guest

    before = image.rootfs.stat()
    t0 = time.monotonic()
    again = guest.build_image("bookworm")
    assert time.monotonic() - t0 < 10                # from the cache: nothing rebuilt
    assert again == image
    r, out, _ = boot(image, "sh", "-c", "echo x > /root/left-behind; echo y > /etc/left-behind; sync; "
                                        "cat /root/left-behind")
    assert (r.exit_code, out) == (0, b"x\n")
    r, out, _ = boot(image, "sh", "-c", "ls /root/left-behind /etc/left-behind 2>&1 | wc -l; "
                                        "test -e /root/left-behind || echo clean")
    assert out.decode().split() == ["2", "clean"]
    after = image.rootfs.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_a_module_built_in_the_guest_against_its_running_kernel_counts_exactly(image, tmp_path):
    """What host mode is made of, with the commands that exist: kprobegen in the guest renders
    and builds against /lib/modules/$(uname -r)/build, insmod, sync three times, rmmod, and the
    kernel log parsed in the guest says 3."""
    script = (
        "set -e\n"
        'kprobegen build sync_counter.yaml -o /tmp/out --kernel-dir "/lib/modules/$(uname -r)/build" >&2\n'
        "insmod /tmp/out/sync_counter.ko\n"
        "sync; sync; sync\n"
        "rmmod sync_counter\n"
        "grep -c '^sync_counter ' /proc/modules || true\n"
        "dmesg | kprobegen parse --json\n"
    )
    r, out, err = boot(image, "sh", "-c", script, add=[(MODULES / "sync_counter.yaml", "sync_counter.yaml")])
    assert r.exit_code == 0, err.decode(errors="replace")[-2000:]
    left, _, report = out.decode().partition("\n")
    assert left == "0"                               # nothing left loaded
    [result] = json.loads(report)["reports"]
    assert result["kernel"] == image.release and result["complete"] is True
    assert result["hooks"]["sync"]["hits"] == 3 and result["hooks"]["sync"]["by"] == {"sync": 3}


def test_vm_command_streams_output_and_exits_with_the_commands_code(image, tmp_path):
    (tmp_path / "data.txt").write_text("from the host\n")
    done = subprocess.run([sys.executable, "-m", "kprobegen", "vm", "--image", "bookworm",
                           "--add", f"{tmp_path / 'data.txt'}:/srv/data.txt", "--",
                           "sh", "-c", "cat /srv/data.txt; echo oops >&2; exit 4"],
                          capture_output=True, timeout=900)
    assert done.returncode == 4, done.stderr
    assert done.stdout == b"from the host\n"
    assert done.stderr.endswith(b"oops\n")
    bad = subprocess.run([sys.executable, "-m", "kprobegen", "vm", "--"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("kprobegen: error: no command given")
