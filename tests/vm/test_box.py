"""`kprobegen image box` (issue 16): a libvirt Vagrant box made from the full guest image. One
box for the module (minutes: the box variant of the image, the disk, qcow2, the tar), then:
its contents as vagrant-libvirt reads them, `vagrant box add` into a temporary VAGRANT_HOME,
and a boot of its box.img as it is, with qemu directly (TCG, no network device, the serial
console read): firmware, syslinux from the MBR, the kernel and its initramfs, the root by its
label, systemd up to the serial console's login prompt. systemd's status lines stop reaching
the console once its getty runs there (before or after sshd and the service: it varies), so
multi-user.target, sshd and the service are read in a second boot of the same root under
systemd (kernel and initrd given to qemu), through the guest's command channel.
`vagrant up` is never run here (its providers need a private-range network)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from .conftest import require

pytestmark = [pytest.mark.vm, pytest.mark.slow]

BOOT_TIMEOUT = 900


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    require(os.geteuid() == 0, "building the box needs root (debootstrap, chroot)")
    for tool, pkg in (("debootstrap", "debootstrap"), ("mkfs.ext4", "e2fsprogs"), ("sfdisk", "fdisk"),
                      ("mkfs.vfat", "dosfstools"), ("mcopy", "mtools"), ("syslinux", "syslinux"),
                      ("qemu-img", "qemu-utils"), ("qemu-system-x86_64", "qemu-system-x86")):
        require(shutil.which(tool) is not None, f"{tool} not found: apt-get install {pkg}")
    out = tmp_path_factory.mktemp("box")
    path = out / "kprobegen-bookworm.box"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "kprobegen", "image", "box", "bookworm", "-o", str(path), "--json"],
                       capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout)
    info["seconds"] = time.monotonic() - t0
    with tarfile.open(path) as tf:
        info["members"] = tf.getnames()
        info["metadata"] = json.load(tf.extractfile("metadata.json"))
        info["vagrantfile"] = tf.extractfile("Vagrantfile").read().decode()
        # extractfile, not extract(filter=): Debian 12's Python 3.11.2 predates tar filters
        with tf.extractfile("box.img") as src, open(out / "box.img", "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    info["img"] = out / "box.img"
    return info


def test_box_is_a_libvirt_box(box):
    assert box["box"].endswith("kprobegen-bookworm.box") and box["provider"] == "libvirt"
    assert sorted(box["members"]) == ["Vagrantfile", "box.img", "info.json", "metadata.json"]
    assert box["metadata"] == {"provider": "libvirt", "format": "qcow2", "virtual_size": box["virtual_size"]}
    assert "config.vm.provider :libvirt" in box["vagrantfile"]
    img = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(box["img"])], capture_output=True,
                                    text=True, check=True).stdout)
    assert img["format"] == "qcow2"
    assert img["virtual-size"] == box["virtual_size"] << 30 and box["virtual_size"] >= 2
    assert os.path.getsize(box["box"]) < img["virtual-size"]         # sparse: the holes are not stored


def test_vagrant_box_add_accepts_it(box, tmp_path):
    from tests.test_vagrant import _need

    vagrant = _need("vagrant")
    env = dict(os.environ, VAGRANT_HOME=str(tmp_path / "vagrant-home"), VAGRANT_CHECKPOINT_DISABLE="1")
    r = subprocess.run([vagrant, "box", "add", "--name", "kprobegen/test", box["box"]], env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    listed = subprocess.run([vagrant, "box", "list"], env=env, capture_output=True, text=True, timeout=120).stdout
    assert "kprobegen/test" in listed and "libvirt" in listed, listed
    stored = list((tmp_path / "vagrant-home" / "boxes").rglob("box.img"))
    assert len(stored) == 1 and stored[0].stat().st_size == box["img"].stat().st_size


def test_box_img_boots_to_the_login_prompt(box, tmp_path):
    """box.img booted as a provider boots it: from its own disk (no -kernel), through the
    firmware and syslinux; read from the serial console. No network device: DHCP gets
    nothing, and nothing waits for it."""
    console = tmp_path / "console.log"
    argv = ["qemu-system-x86_64",
            "-nodefaults", "-display", "none", "-no-reboot",
            "-accel", "tcg", "-m", "1024", "-smp", "2",
            # a copy-on-write view of the box's disk: nothing written in the boot stays
            "-drive", f"file={box['img']},format=qcow2,if=virtio,snapshot=on",
            "-serial", f"file:{console}",
            "-nic", "none"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wanted = ("kprobegen-box login:",)
    deadline = time.monotonic() + BOOT_TIMEOUT
    text = ""
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(2)
            text = re.sub(r"\x1b\[[0-9;]*m", "", console.read_text(errors="replace")) if console.exists() else ""
            if all(w in text for w in wanted):
                break
    finally:
        proc.kill()
        proc.wait()
    lines = [ln.strip() for ln in text.splitlines()]
    tail = "\n".join(lines[-40:])
    assert all(w in text for w in wanted), f"not booted within {BOOT_TIMEOUT} s:\n{tail}"
    assert f"Linux version {box['release']}" in text                      # the image's kernel, from syslinux
    assert "root=LABEL=kpgroot" in text                                    # the command line of syslinux.cfg
    assert any("EXT4-fs (vda2): mounted filesystem" in ln for ln in lines), tail   # the root: partition 2
    assert "systemd[1]: Hostname set to <kprobegen-box>." in text        # systemd from the box's root
    assert any("Reached target basic.target" in ln for ln in lines), tail
    assert any("Started serial-getty@ttyS0" in ln for ln in lines), tail
    assert not any("Failed to start" in ln for ln in lines), [ln for ln in lines if "Failed" in ln]


INSECURE_KEY_END = "hUc9c9WhQ== vagrant insecure public key"


def test_box_root_under_systemd_has_what_vagrant_needs(box):
    """The box's root (the box variant of the guest image), booted with systemd as PID 1:
    sshd, the service and networkd active, the vagrant user with the insecure key and
    passwordless sudo."""
    from kprobegen.vm import guest

    image = guest.find_image("bookworm", "box")
    assert image is not None and image.inputs == box["inputs"] and image.release == box["release"]
    out = bytearray()
    script = "; ".join([
        "sleep 5",
        "systemctl is-active multi-user.target ssh.service kprobegen.service systemd-networkd.service",
        "echo ===",
        "id vagrant", "stat -c '%a %U' /home/vagrant/.ssh /home/vagrant/.ssh/authorized_keys",
        "cat /home/vagrant/.ssh/authorized_keys",
        "echo ===",
        "sudo -n -l -U vagrant",
        "echo ===",
        "ls /etc/ssh/ssh_host_ed25519_key",
        "cat /etc/fstab",
    ])
    r = guest.run(image, ["sh", "-c", script], init="systemd", timeout=900, stdout=out.extend)
    r.raise_for_status()
    active, user, sudo, rest = out.decode(errors="replace").split("===\n")
    assert active.split() == ["active"] * 4, active
    assert "uid=" in user and "(vagrant)" in user
    assert "700 vagrant" in user and "600 vagrant" in user
    assert user.strip().endswith(INSECURE_KEY_END)
    assert "(ALL) NOPASSWD: ALL" in sudo
    assert "/etc/ssh/ssh_host_ed25519_key" in rest            # made at this boot (none are in the box)
    assert "LABEL=kpgroot / ext4" in rest
