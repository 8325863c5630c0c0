"""provision/debian.sh, the one script that sets up a machine (issue 16): its roles and package
lists, and that setup.sh, the Vagrantfile and the image build all run it rather than install
anything themselves. It is run for real in a debootstrap root by every image build
(tests/vm/test_provision_image.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kprobegen.vm import guest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "provision" / "debian.sh"


def packages(role: str) -> list[str]:
    r = subprocess.run([str(SCRIPT), "--role", role, "--list"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.split("\n")[:-1]


def test_shellcheck():
    tool = shutil.which("shellcheck")
    if tool is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("shellcheck not found -- CI must install it (provision/debian.sh --role dev)")
        pytest.skip("shellcheck not found; to enable this test, apt-get install shellcheck")
    r = subprocess.run([tool, str(SCRIPT), str(ROOT / "setup.sh")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout


def test_roles_build_on_each_other():
    dev, host, image, box = (set(packages(r)) for r in ("dev", "host", "image", "box"))
    assert host <= image <= box and host <= dev
    # the Kbuild toolchain, kmod, python3 venv and headers, libudev on every machine
    assert {"make", "gcc", "libc6-dev", "dwarves", "kmod", "python3-venv", "python3-dev", "libudev1"} <= host
    # the image boots Debian's cloud kernel and builds against its headers
    assert {"linux-image-cloud-amd64", "linux-headers-cloud-amd64"} <= image - host
    # what Vagrant needs in a box
    assert {"openssh-server", "sudo", "rsync", "systemd-sysv"} <= box - image
    # the development machine: the VM, the equivalents, the image and the box tools, vagrant
    assert {"qemu-system-x86", "busybox-static", "systemtap", "bpftrace", "debootstrap", "e2fsprogs", "graphviz",
            "syslinux", "mtools", "dosfstools", "qemu-utils", "fdisk", "shellcheck",
            "vagrant (optional)", "vagrant-libvirt (optional)"} <= dev


@pytest.mark.parametrize("args, message", [
    ([], "say which machine this is: --role dev|host|image|box"),
    (["--role", "laptop"], "unknown role 'laptop': use dev, host, image or box"),
    (["--role", "host", "--frobnicate"], "unknown argument '--frobnicate' (see --help)"),
    (["--role", "host", "--src", "/nonexistent"], "/nonexistent is not a kprobegen source tree"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, message):
    r = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"provision: {message}")


def test_the_package_lists_and_install_steps_are_in_the_script_only():
    """setup.sh, the Vagrantfile and the image build run the script; none installs a package
    or kprobegen itself."""
    setup = (ROOT / "setup.sh").read_text()
    assert re.search(r"^provision/debian\.sh --role dev\b", setup, re.M)
    code = [ln for ln in setup.splitlines() if not ln.lstrip().startswith("#")]
    assert not [ln for ln in code if re.search(r"apt-get|pip install|python3 -m venv", ln)]
    vagrantfile = (ROOT / "Vagrantfile").read_text()
    assert 'path: "provision/debian.sh"' in vagrantfile and "apt-get" not in vagrantfile
    source = (ROOT / "kprobegen" / "vm" / "guest.py").read_text()
    assert guest.PROVISION == "provision/debian.sh"
    assert not re.search(r'"apt-get"|"pip"|"install", "-y"', source)
    assert "linux-image-cloud-amd64" not in source


def test_the_image_is_rebuilt_when_the_script_changes(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    for rel in guest._source_files(ROOT):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, tree / rel)
    assert Path(guest.PROVISION) in guest._source_files(ROOT)
    monkeypatch.setattr(guest, "source_tree", lambda: tree)
    before = guest.image_inputs("bookworm")
    assert before == guest.image_inputs("bookworm") != guest.image_inputs("bookworm", "box")
    with open(tree / guest.PROVISION, "a") as f:
        f.write("# changed\n")
    assert guest.image_inputs("bookworm") != before


def test_editing_the_readme_does_not_rebuild_the_image(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    for rel in [*guest._source_files(ROOT), Path("README.md")]:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, tree / rel)
    monkeypatch.setattr(guest, "source_tree", lambda: tree)
    before = guest.image_inputs("bookworm")
    with open(tree / "README.md", "a") as f:
        f.write("\nA new paragraph.\n")
    assert guest.image_inputs("bookworm") == before
    with open(tree / "kprobegen" / "__init__.py", "a") as f:
        f.write("\n# changed\n")
    assert guest.image_inputs("bookworm") != before


def test_the_box_variant_is_cached_apart(monkeypatch, tmp_path):
    monkeypatch.setenv("KPROBEGEN_CACHE", str(tmp_path))
    assert guest.image_dir("bookworm").name == "bookworm"
    assert guest.image_dir("bookworm", "box").name == "bookworm-box"
    with pytest.raises(Exception, match="unknown image variant 'vm'"):
        guest.build_image("bookworm", variant="vm")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (unshare, chroot); run the tests as root")
def test_a_chroot_whose_root_is_not_a_mount_is_told_apart(tmp_path):
    """In a plain chroot `unshare --propagation private` fails (EINVAL on /), so the image
    build refuses there with a way out; bind-mounted onto itself, the chroot is fine."""
    import inspect
    import textwrap

    root = tmp_path / "root"
    dirs = [d for d in ("usr", "lib", "lib64", "bin", "sbin") if Path("/", d).is_dir() and not Path("/", d).is_symlink()]
    links = [d for d in ("lib", "lib64", "bin", "sbin") if Path("/", d).is_symlink()]
    check = textwrap.dedent(inspect.getsource(guest._root_is_a_mount)) + "\nprint(_root_is_a_mount())\n"
    (tmp_path / "check.py").write_text("from pathlib import Path\n" + check)
    script = f"""
set -e
root={root}
mkdir -p $root/proc $root/tmp {' '.join(f'$root/{d}' for d in dirs)}
{' '.join(f'ln -s $(readlink /{d}) $root/{d};' for d in links)}
{' '.join(f'mount --bind /{d} $root/{d};' for d in dirs)}
cp {tmp_path}/check.py $root/tmp/
mount -t proc proc $root/proc
chroot $root /usr/bin/python3 /tmp/check.py
if chroot $root unshare --mount --propagation private true 2>/dev/null; then echo unshare-ok; else echo unshare-failed; fi
mount --rbind $root $root
mount -t proc proc $root/proc
chroot $root /usr/bin/python3 /tmp/check.py
chroot $root unshare --mount --propagation private true && echo unshare-ok
"""
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "unshare-failed", "True", "unshare-ok"]
