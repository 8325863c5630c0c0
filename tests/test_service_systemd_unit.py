"""The service under systemd, what can be checked without a kernel to load into: sd_notify
(kprobegen/service/systemd.py, and serve() saying READY=1 only once its sockets answer),
and the unit file contrib/systemd/kprobegen.service (systemd-analyze verify, its exposure
rating, and that README and `serve --help` say how to install it). The unit itself runs
under systemd in the full guest: tests/vm/test_service_systemd.py."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kprobegen import host
from kprobegen.client import Client
from kprobegen.service import serve
from kprobegen.service.systemd import Notifier, notify_address

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "contrib" / "systemd" / "kprobegen.service"


def _receiver(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(60)
    return s


def test_notify_socket_addresses():
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@sd-notify/123") == "\0sd-notify/123"     # the abstract namespace
    assert notify_address(None) is None and notify_address("") is None
    assert notify_address("vsock:2:1234") is None                   # not a Unix socket: nothing is sent


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_the_notifier_sends_one_datagram_and_takes_the_variable_away(tmp_path, abstract):
    if abstract:
        name = f"kpg-test-{secrets.token_hex(6)}"
        receiver, value = _receiver("\0" + name), "@" + name
    else:
        receiver, value = _receiver(str(tmp_path / "notify")), str(tmp_path / "notify")
    env = {"NOTIFY_SOCKET": value, "PATH": "/bin"}
    with receiver:
        n = Notifier(env)
        assert n and env == {"PATH": "/bin"}        # children (make, gcc, insmod) do not inherit it
        assert n.ready("serving on /run/kprobegen\nstate in /var/lib/kprobegen")
        assert receiver.recv(4096) == b"READY=1\nSTATUS=serving on /run/kprobegen state in /var/lib/kprobegen"
        assert n.stopping("stopping")
        assert receiver.recv(4096) == b"STOPPING=1\nSTATUS=stopping"


def test_outside_systemd_nothing_is_sent_and_a_dead_socket_is_said_once(tmp_path):
    assert not Notifier({}) and Notifier({}).ready("x") is False
    said = []
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")}, say=said.append)
    assert n.ready("x") is False
    assert len(said) == 1 and "cannot notify systemd" in said[0] and "nobody" in said[0]


@pytest.fixture
def no_kernel(monkeypatch):
    """serve() on this machine, which cannot load modules: a kernel with nothing loaded."""
    monkeypatch.setattr(host, "require_loading", lambda: None)
    monkeypatch.setattr(host, "loaded", lambda: [])
    monkeypatch.setattr(host, "release", lambda: "6.1-test")
    monkeypatch.setattr(host, "is_loaded", lambda name: False)


def test_serve_says_ready_once_its_sockets_answer_and_stopping_on_sigterm(no_kernel, tmp_path, monkeypatch):
    receiver = _receiver(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    seen: dict = {}

    def systemd() -> None:      # what systemd does: wait for READY=1, then use the service, then stop it
        try:
            seen["ready"] = receiver.recv(4096)
            for name in ("kprobegen.sock", "kprobegen-ro.sock"):
                with Client(tmp_path / "run" / name, timeout=10) as c:
                    seen[name] = c.health()["status"]
        except Exception as exc:
            seen["error"] = repr(exc)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)
        seen["stopping"] = receiver.recv(4096)

    watcher = threading.Thread(target=systemd, daemon=True)
    watcher.start()
    with receiver:
        assert serve(tmp_path / "run", tmp_path / "state", group=None) == 0
        watcher.join(30)
    assert "error" not in seen, seen
    assert seen["ready"] == f"READY=1\nSTATUS=serving on {tmp_path / 'run'}, state in {tmp_path / 'state'}".encode()
    assert seen["kprobegen.sock"] == seen["kprobegen-ro.sock"] == "ok"
    assert seen["stopping"] == b"STOPPING=1\nSTATUS=stopping; loaded modules stay loaded"
    assert "NOTIFY_SOCKET" not in os.environ
    assert not list((tmp_path / "run").glob("*.sock"))


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("systemd-analyze not found -- CI must provide it (apt-get install systemd)")
        pytest.skip("systemd-analyze not found (apt-get install systemd)")
    return tool


def _installed_copy(tmp_path: Path) -> Path:
    """The unit as README says to install it where kprobegen is not /usr/local/bin/kprobegen:
    ExecStart= changed to this venv's kprobegen."""
    text = UNIT.read_text()
    assert text.count("\nExecStart=/usr/local/bin/kprobegen serve\n") == 1
    kprobegen = Path(sys.executable).parent / "kprobegen"
    assert kprobegen.is_file(), f"{kprobegen}: kprobegen is not installed in this venv"
    unit = tmp_path / "kprobegen.service"
    unit.write_text(text.replace("ExecStart=/usr/local/bin/kprobegen", f"ExecStart={kprobegen}"))
    return unit


def test_systemd_analyze_verify_finds_nothing_wrong_with_the_unit(tmp_path):
    tool = _systemd_analyze()
    unit = _installed_copy(tmp_path)
    proc = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if "kprobegen" in line]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


def test_the_unit_stays_hardened(tmp_path):
    """`systemd-analyze security` of the unit as a file: the rating a weakened unit would lose
    (root with CAP_SYS_MODULE, which loading modules takes, keeps it above 2)."""
    tool = _systemd_analyze()
    unit = _installed_copy(tmp_path)
    proc = subprocess.run([tool, "security", "--offline=true", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=120)
    rating = re.search(r"Overall exposure level for kprobegen\.service: ([0-9.]+)", proc.stdout)
    assert rating, proc.stdout[-2000:] + proc.stderr
    assert float(rating[1]) <= 2.5, proc.stdout
    caps = re.findall(r"^CapabilityBoundingSet=(.*)$", UNIT.read_text(), re.M)
    assert caps == ["CAP_SYS_MODULE CAP_SYSLOG"]


def test_readme_and_serve_help_say_how_to_install_it():
    steps = ["install -m 0644 contrib/systemd/kprobegen.service /etc/systemd/system/",
             "groupadd --system kprobegen", "systemctl daemon-reload", "systemctl enable --now kprobegen"]
    readme = (REPO / "README.md").read_text()
    proc = subprocess.run([sys.executable, "-m", "kprobegen", "serve", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    for text in (readme, proc.stdout, UNIT.read_text()):
        for step in steps:
            assert step in text, step
        assert "ExecStart" in text and ".venv/bin/kprobegen" in text
