"""The full guest image is provisioned by provision/debian.sh --role image, the script that
also sets up a Vagrant VM and the development machine (issue 16), and every image build runs
the host-mode commands that load nothing (check, render, build of modules/sync_counter.yaml)
in its fresh debootstrap root, against the headers the script installed, before packing it.
These tests read what that build recorded (the manifest, selftest/, provision.log) and boot
the image once to look at what the script installed. `kprobegen load`/`snapshot`/`unload` on
this image: tests/vm/test_host_guest.py."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from .test_host_guest import in_guest

pytestmark = [pytest.mark.vm, pytest.mark.build, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def manifest(image):
    from kprobegen.vm import guest

    return guest.image_manifest(image)


def test_the_image_was_provisioned_by_the_shared_script(image, manifest):
    script = ROOT / "provision" / "debian.sh"
    assert manifest["provision"] == {"script": "provision/debian.sh", "role": "image",
                                     "sha256": hashlib.sha256(script.read_bytes()).hexdigest()}
    log = (image.directory / "provision.log").read_text()
    steps = [ln for ln in log.splitlines() if ln.startswith("provision (image): ")]
    assert steps[0].startswith("provision (image): apt-get install ")
    assert "provision (image): kprobegen into /opt/kprobegen (a venv), /usr/local/bin/kprobegen" in steps
    assert steps[-1] == "provision (image): done"


def test_check_render_build_ran_in_the_root_against_its_headers(image, manifest, tmp_path):
    st = manifest["selftest"]
    assert st["spec"] == "modules/sync_counter.yaml"
    assert st["check"].endswith("ok: module sync_counter, 1 hook, symbols NOT checked (no kernel profile cached: "
                                "pass --kernel RELEASE|SUITE to capture one)")
    assert st["rendered"] == ["Makefile", "sync_counter.bt", "sync_counter.c", "sync_counter.stp"]
    # what the root's kprobegen rendered is what this one renders: the same code was installed
    subprocess.run([sys.executable, "-m", "kprobegen", "render", str(ROOT / "modules" / "sync_counter.yaml"),
                    "-o", str(tmp_path)], check=True, capture_output=True, timeout=120)
    for name in st["rendered"]:
        assert (image.directory / "selftest" / name).read_bytes() == (tmp_path / name).read_bytes(), name
    # built by Kbuild against the image's kernel headers, the default kernel in the root
    built = st["built"]
    assert (built["module"], built["kernel"], built["ko"]) == ("sync_counter", image.release, "sync_counter.ko")
    ko = image.directory / "selftest" / "sync_counter.ko"
    assert hashlib.sha256(ko.read_bytes()).hexdigest() == built["sha256"]
    info = {f: subprocess.run(["modinfo", "-F", f, str(ko)], capture_output=True, text=True, check=True).stdout.strip()
            for f in ("name", "vermagic")}
    assert info["name"] == "sync_counter"
    assert info["vermagic"].split()[0] == image.release


def test_what_the_script_installed_in_the_running_guest(image):
    unit = ROOT / "contrib" / "systemd" / "kprobegen.service"
    s = in_guest(image, "\n".join([
        "set -e",
        "echo '=== link'; readlink /usr/local/bin/kprobegen",
        "echo '=== version'; /usr/local/bin/kprobegen --version",
        "echo '=== unit'; sha256sum < /etc/systemd/system/kprobegen.service",
        "echo '=== enabled'; ls /etc/systemd/system/multi-user.target.wants/",
        "echo '=== headers'; ls -d /lib/modules/$(uname -r)/build/include",
        "echo '=== init'; ls -l /usr/local/sbin/kpg-guest-init",
    ]))
    from kprobegen import __version__

    assert s["link"].strip() == "/opt/kprobegen/bin/kprobegen"
    assert __version__ in s["version"]
    assert s["unit"].split()[0] == hashlib.sha256(unit.read_bytes()).hexdigest()
    # the image role installs the unit but leaves enabling it to the tests that do (the box enables it)
    assert "kprobegen.service" not in s["enabled"].split()
    assert s["headers"].strip() == f"/lib/modules/{image.release}/build/include"
    assert s["init"].startswith("-rwxr-xr-x")



def test_the_build_left_nothing_in_tmp(image):
    """The sources, the self-test and this machine's CA bundle (pip's, for the build) were in
    the root's /tmp: gone from the image (read with debugfs, no mount)."""
    for folder in ("/tmp", "/var/lib/apt/lists"):
        r = subprocess.run(["debugfs", "-R", f"ls -p {folder}", str(image.rootfs)], capture_output=True, text=True,
                           check=True, timeout=60)
        names = {f.split("/")[5] for f in r.stdout.split() if f.count("/") >= 6}
        assert names <= {".", "..", "partial", "lock", "auxfiles"}, (folder, names)
