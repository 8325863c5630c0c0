"""Fixtures for the container tests: the image (container/build.py), and the service started
from container/compose.yaml with pytest-docker's fixtures, stopped and removed afterwards.

pytest-docker runs `docker-compose -f container/compose.yaml -p kprobegen-test ...`: the
project name is pinned, and `down -v` runs before `up`, so that a session stopped before its
teardown (a second Ctrl-C, a kill) leaves nothing that the next one trips over. A first Ctrl-C
runs the teardown (`down -v`) as usual.

Without a Docker daemon these tests skip, saying how to start one (container/dockerd.sh);
with CI=true they fail instead (.ci/run starts it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from kprobegen.client import Client

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "container" / "compose.yaml"
PROJECT = "kprobegen-test"
SERVICE = "kprobegen"
#: The image the tests build and run (not :latest, which is the user's).
IMAGE = "kprobegen:test"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: bool, what: str) -> None:
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{what} -- CI must provide it (.ci/run runs container/dockerd.sh)")
    pytest.skip(f"{what}; to enable these tests, run container/dockerd.sh as root")


def compose(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """docker-compose on the test project, as pytest-docker runs it."""
    proc = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "-p", PROJECT, *args],
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker-compose {' '.join(args)}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


@pytest.fixture(scope="session")
def docker_ready():
    require(shutil.which("docker") is not None, "docker is not installed (apt-get install docker.io)")
    require(shutil.which("docker-compose") is not None, "docker-compose is not installed (apt-get install docker-compose)")
    proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          timeout=60)
    require(proc.returncode == 0, f"no Docker daemon answers ({proc.stderr.strip()[-300:]})")
    return proc.stdout.strip()


@pytest.fixture(scope="session")
def kprobegen_image(docker_ready):
    """The service image, built by container/build.py (reused while its inputs are unchanged)."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(REPO / "container" / "build.py"), "--tag", IMAGE, "--json"],
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    print(f"\ncontainer image {result['hashed']}: {'built' if result['built'] else 'up to date'} "
          f"in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return result


@pytest.fixture(scope="session")
def socket_dir():
    """The host folder bind-mounted as the container's /run/kprobegen; pinned, like the
    project name, so that a session killed before its teardown leaves no folder per run."""
    d = Path(tempfile.gettempdir()) / f"{PROJECT}-sockets"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(mode=0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# -- pytest-docker's fixtures, set for this project ---------------------------------------------

@pytest.fixture(scope="session")
def docker_compose_command():
    return "docker-compose"      # Debian 12 has compose v1, not the `docker compose` plugin


@pytest.fixture(scope="session")
def docker_compose_file():
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name():
    return PROJECT


@pytest.fixture(scope="session")
def docker_setup(kprobegen_image, socket_dir):
    # compose.yaml reads these; pytest-docker's commands inherit the environment. They stay set
    # until docker_services' teardown (`down -v`) has run, which comes before this one's.
    saved = {k: os.environ.get(k) for k in ("KPROBEGEN_IMAGE", "KPROBEGEN_SOCKET_DIR")}
    os.environ["KPROBEGEN_IMAGE"] = kprobegen_image["image"]
    os.environ["KPROBEGEN_SOCKET_DIR"] = str(socket_dir)
    # `down -v` first: a session killed before its teardown left the pinned project behind.
    yield ["down -v --remove-orphans", "up -d"]
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def docker_cleanup():
    return ["down -v --remove-orphans"]


def responsive(sock: Path) -> bool:
    try:
        with Client(sock, timeout=5) as c:
            return c.health()["status"] == "ok"
    except Exception:          # refused, reset, not there yet: not responsive
        return False


class ServiceExited(Exception):
    pass


@pytest.fixture(scope="session")
def service(docker_services, socket_dir):
    """The read-write socket of the running container, once its health answers."""
    sock = socket_dir / "kprobegen.sock"

    def check() -> bool:
        if responsive(sock):
            return True
        state = subprocess.run(["docker", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                                container_id()], capture_output=True, text=True, timeout=60).stdout.split()
        if state and state[0] in ("exited", "dead"):
            raise ServiceExited(f"the container {state[0]} with status {state[1]}")
        return False

    try:
        docker_services.wait_until_responsive(check=check, timeout=120, pause=0.5)
    except Exception as exc:
        logs = compose("logs", "--no-color", "--tail", "20", SERVICE, check=False).stdout
        pytest.fail(f"the service did not answer on {sock} ({exc}); its log:\n{logs}")
    return sock


def container_id() -> str:
    cid = compose("ps", "-q", SERVICE).stdout.strip()
    assert cid, "the service's container is not there"
    return cid


def pytest_configure(config):
    config.addinivalue_line("markers", "container: starts the service image with docker-compose (tests/container)")
