"""The Vagrantfile (issue 16): `vagrant validate` with Debian's vagrant and vagrant-libvirt,
and what its environment variables set, read by loading it under a stand-in for Vagrant
(tests/data/vagrant/config_dump.rb). `vagrant up` is never run here: its providers give the
VM a management network on a private address range, which this workplace does not allow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DUMP = ROOT / "tests" / "data" / "vagrant" / "config_dump.rb"
ENABLE = ("apt-get install vagrant vagrant-libvirt (./setup.sh does, through provision/debian.sh "
          "--role dev, where the Debian release has them)")


def _codename() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return ""


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        # Debian 12 and 13 both ship vagrant and vagrant-libvirt; CI (Debian 12) must have them.
        if os.environ.get("CI", "").lower() in ("1", "true", "yes") and _codename() in ("bookworm", "trixie"):
            pytest.fail(f"{tool} not found -- CI must install it ({ENABLE})")
        pytest.skip(f"{tool} not found; to enable this test, {ENABLE}")
    return path


def _vagrant(args, cwd: Path, tmp_path: Path, **env):
    home = tmp_path / "vagrant-home"
    home.mkdir(exist_ok=True)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("KPROBEGEN_DEBIAN", "KPROBEGEN_BOX",
                                                                       "KPROBEGEN_MEMORY", "KPROBEGEN_CPUS"))}
    # .vagrant/ (vagrant's state of the project folder) in the temporary folder, not the checkout
    full.update(VAGRANT_HOME=str(home), VAGRANT_DOTFILE_PATH=str(tmp_path / "dotfile"),
                VAGRANT_CHECKPOINT_DISABLE="1", **env)
    return subprocess.run([_need("vagrant"), *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=120)


def _plugins(tmp_path) -> str:
    return _vagrant(["plugin", "list"], ROOT, tmp_path).stdout


@pytest.mark.parametrize("env", [{}, {"KPROBEGEN_DEBIAN": "13"}, {"KPROBEGEN_BOX": "kprobegen/bookworm"},
                                 {"KPROBEGEN_MEMORY": "4096", "KPROBEGEN_CPUS": "4"}],
                         ids=["debian12", "debian13", "own-box", "memory-cpus"])
def test_vagrant_validate(env, tmp_path):
    assert "vagrant-libvirt" in _plugins(tmp_path), f"the libvirt provider is not installed: {ENABLE}"
    r = _vagrant(["validate"], ROOT, tmp_path, **env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Vagrantfile validated successfully" in r.stdout


def test_validate_checks_the_libvirt_providers_settings(tmp_path):
    """The provider's block is validated by vagrant-libvirt, so a mistake there would fail
    above: a copy of the Vagrantfile with a setting libvirt does not have is refused."""
    shutil.copytree(ROOT / "provision", tmp_path / "provision")
    text = (ROOT / "Vagrantfile").read_text()
    assert "    libvirt.cpus = cpus\n" in text
    (tmp_path / "Vagrantfile").write_text(text.replace("    libvirt.cpus = cpus\n",
                                                       "    libvirt.cpus = cpus\n    libvirt.cpuz = cpus\n"))
    r = _vagrant(["validate"], tmp_path, tmp_path)
    assert r.returncode != 0 and "cpuz" in r.stdout + r.stderr


def test_validate_needs_the_provisioning_script(tmp_path):
    """The shell provisioner's path is checked: without provision/debian.sh beside it, the
    Vagrantfile is invalid (so validate above did look for the shared script)."""
    shutil.copy(ROOT / "Vagrantfile", tmp_path / "Vagrantfile")
    r = _vagrant(["validate"], tmp_path, tmp_path)
    assert r.returncode != 0 and "provision/debian.sh" in r.stdout + r.stderr


@pytest.mark.parametrize("env, message", [
    ({"KPROBEGEN_DEBIAN": "11"}, "KPROBEGEN_DEBIAN=11 is not a Debian release this Vagrantfile knows: use 12 or 13"),
    ({"KPROBEGEN_MEMORY": "2G"}, "KPROBEGEN_MEMORY=2G is not a positive whole number"),
    ({"KPROBEGEN_CPUS": "0"}, "KPROBEGEN_CPUS=0 is not a positive whole number"),
])
def test_validate_refuses_bad_settings_with_one_line(env, message, tmp_path):
    r = _vagrant(["validate"], ROOT, tmp_path, **env)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == f"kprobegen: {message}"


def _settings(**env) -> dict:
    ruby = shutil.which("ruby")
    if ruby is None:
        _need("vagrant")            # vagrant brings ruby: the same reason to skip
        pytest.skip("ruby not found")
    full = {k: v for k, v in os.environ.items() if not k.startswith("KPROBEGEN_")}
    full.update(env)
    r = subprocess.run([ruby, str(DUMP), str(ROOT / "Vagrantfile")], cwd=ROOT, env=full, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_defaults_debian12_both_providers_and_the_shared_script():
    s = _settings()
    assert s["vm.box"] == "debian/bookworm64"
    for provider in ("libvirt", "virtualbox"):
        assert (s[f"vm.provider.{provider}.memory"], s[f"vm.provider.{provider}.cpus"]) == (2048, 2)
    (folder,) = s["vm.synced_folder"]
    assert folder["args"] == [".", "/vagrant"] and folder["kw"]["type"] == "rsync"
    assert ".venv/" in folder["kw"]["rsync__exclude"]
    (prov,) = s["vm.provision"]
    assert prov["kw"] == {"type": "shell", "path": "provision/debian.sh", "args": ["--role", "host", "--src", "/vagrant"]}
    assert (ROOT / prov["kw"]["path"]).is_file()


def test_environment_selects_debian13_a_box_memory_and_cpus():
    assert _settings(KPROBEGEN_DEBIAN="13")["vm.box"] == "debian/trixie64"
    assert _settings(KPROBEGEN_DEBIAN="trixie")["vm.box"] == "debian/trixie64"
    assert _settings(KPROBEGEN_DEBIAN="13", KPROBEGEN_BOX="kprobegen/bookworm")["vm.box"] == "kprobegen/bookworm"
    s = _settings(KPROBEGEN_MEMORY="4096", KPROBEGEN_CPUS="3")
    assert s["vm.provider.libvirt.memory"] == s["vm.provider.virtualbox.memory"] == 4096
    assert s["vm.provider.libvirt.cpus"] == s["vm.provider.virtualbox.cpus"] == 3
