"""deploy/daemonset.yaml checked against Kubernetes' own schemas (kubernetes-validate, which
ships them; strict: an unknown field is an error), and a broken copy of it refused; then what
a schema cannot say (the selector matches, every mount has a volume, the preStop is Python).
container/compose.yaml is checked by docker-compose itself. No cluster and no daemon needed.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import COMPOSE_FILE, IN_CI, require

try:
    from kubernetes_validate.utils import ValidationError, latest_version, validate
except ImportError:
    if IN_CI:
        raise
    pytest.skip("kubernetes-validate is not installed: pip install -e '.[test]'", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "deploy" / "daemonset.yaml"
#: The oldest Kubernetes still common, one in the middle, the newest the package knows.
VERSIONS = ("1.28", "1.31", latest_version())


def documents(path: Path = MANIFEST) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def daemonset(docs: list[dict]) -> dict:
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    return ds


def container(ds: dict) -> dict:
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    return c


@pytest.mark.parametrize("version", VERSIONS)
def test_the_manifest_passes_the_schema(version):
    docs = documents()
    assert [d["kind"] for d in docs] == ["Namespace", "DaemonSet"]
    for doc in docs:
        validate(doc, version, strict=True)


def _set(path: str, value):
    """A change to the DaemonSet: ``path`` is dotted, list items by number; None deletes."""
    def change(ds: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node = ds
        for p in parents:
            node = node[p]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return change


BROKEN = {
    "no selector": _set("spec.selector", None),
    "a misspelt field": _set("spec.template.spec.volumes.0.hostPth", {"path": "/lib/modules"}),
    "privileged as a string": _set("spec.template.spec.containers.0.securityContext.privileged", "yes"),
    "a container without a name": _set("spec.template.spec.containers.0.name", None),
    "a grace period in words": _set("spec.template.spec.terminationGracePeriodSeconds", "a minute"),
    "preStop without a handler": _set("spec.template.spec.containers.0.lifecycle.preStop", {"exec": {"command": "rmmod"}}),
    "a mount without a path": _set("spec.template.spec.containers.0.volumeMounts.0.mountPath", None),
}


@pytest.mark.parametrize("change", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_manifest_fails_the_schema(change):
    ds = copy.deepcopy(daemonset(documents()))
    change(ds)
    with pytest.raises(ValidationError):
        validate(ds, latest_version(), strict=True)


def test_the_command_line_check_as_ci_runs_it(tmp_path):
    """`kubernetes-validate --strict FILE`: exit 0 for the manifest, non-zero for a broken one."""
    cli = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
    ok = subprocess.run([*cli, str(MANIFEST)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(MANIFEST.read_text().replace("mountPath: /lib/modules", "mountPth: /lib/modules"))
    bad = subprocess.run([*cli, str(broken)], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "did not validate" in bad.stdout and "volumeMounts.0" in bad.stdout, bad.stdout


def test_what_the_schema_cannot_say():
    ds = daemonset(documents())
    pod = ds["spec"]["template"]["spec"]
    c = container(ds)
    # the selector selects the pods it makes
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # every mount has its volume, and the kernel's trees are read-only
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert {m["name"] for m in mounts.values()} == set(volumes)
    assert mounts["/lib/modules"].get("readOnly") and mounts["/usr/src"].get("readOnly")
    assert volumes[mounts["/sys/kernel/debug"]["name"]]["hostPath"]["path"] == "/sys/kernel/debug"
    assert volumes[mounts["/run/kprobegen"]["name"]]["hostPath"]["path"] == "/run/kprobegen"
    assert volumes[mounts["/var/lib/kprobegen"]["name"]]["hostPath"]["path"] == "/var/lib/kprobegen"
    # host mode needs exactly these two capabilities (the rest is dropped), and no network
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["SYS_MODULE", "SYSLOG"]}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and pod["automountServiceAccountToken"] is False
    # it runs the service on the sockets the probes and the preStop use
    assert c["args"][:2] == ["kprobegen", "serve"] and c["args"][c["args"].index("--socket-dir") + 1] == "/run/kprobegen"
    # the preStop and the probes are Python that compiles, and the preStop unloads
    pre = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre[:2] == ["/opt/kprobegen/bin/python", "-c"] and ".unload(" in pre[2]
    for command in (pre, c["readinessProbe"]["exec"]["command"], c["livenessProbe"]["exec"]["command"]):
        compile(command[2], "probe", "exec")
    # the preStop's unloads fit in the grace period, which leaves time for the service to stop
    assert "timeout=50" in pre[2] and pod["terminationGracePeriodSeconds"] >= 60


def test_the_compose_file_is_valid_for_docker_compose():
    require(shutil.which("docker-compose") is not None, "docker-compose is not installed (apt-get install docker-compose)")
    proc = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "config"], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "KPROBEGEN_SOCKET_DIR": "/run/x"})
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    service = config["services"]["kprobegen"]
    assert service["network_mode"] == "none" and "ports" not in service and "networks" not in service
    volumes = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in service["volumes"]]
    assert [v.split(":")[:2] for v in volumes] == [["/run/x", "/run/kprobegen"], ["state", "/var/lib/kprobegen"]]
