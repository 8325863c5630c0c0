"""The service image (container/Dockerfile) started from container/compose.yaml: the API on
the bind-mounted Unix socket, no network, every example of modules/ run through
POST /v1/runs with exact counts, refusals that leave it serving, and a stop that leaves no
qemu behind. This machine's kernel cannot load modules: the container runs each spec in the
disposable busybox VM under qemu (TCG), with the image's own Debian cloud kernel.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from kprobegen.client import Client

from .conftest import SERVICE, compose, container_id, responsive

pytestmark = [pytest.mark.container, pytest.mark.vm, pytest.mark.build, pytest.mark.slow]

MODULES = Path(__file__).resolve().parents[2] / "modules"
SYNCS = "for i in $(seq 5); do sync; done"
#: cat opens /proc/version (fd 3), /nope (ENOENT), /proc/uptime (fd 3), /nope2 (ENOENT);
#: the redirections are opened by sh, not cat.
CATS = "cat /proc/version /nope /proc/uptime /nope2 > /dev/null 2>&1; true"
#: Three forks by the workload's shell (busybox sh forks for a command that is not its last).
FORKS = "for i in 1 2 3; do /bin/sh -c true; done"


def in_container(*argv: str, timeout: float = 120) -> str:
    proc = compose("exec", "-T", SERVICE, *argv, timeout=timeout)
    return proc.stdout


def subprocess_out(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.fixture(scope="module")
def image_kernel(service):
    """The kernel the image ships (what `kprobegen kernels list` finds in it)."""
    kernels = json.loads(in_container("kprobegen", "kernels", "list", "--json"))
    installed = [k for k in kernels if k["origin"] == "installed"]
    assert len(installed) == 1 and installed[0]["release"].endswith("-cloud-amd64"), kernels
    assert installed[0]["build_dir"] == f"/lib/modules/{installed[0]['release']}/build", kernels
    assert installed[0]["build_problem"] is None, kernels
    return installed[0]["release"]


def run(sock: Path, spec: str, workload: str, **extra) -> tuple[int, dict]:
    with Client(sock) as c:
        return c.request("POST", "/v1/runs", {"spec": spec, "workload": workload, "timeout_s": 300, **extra})


def test_health_says_runs_only_and_the_image_has_what_run_needs(service, image_kernel):
    with Client(service) as c:
        health = c.health()
    assert health["status"] == "ok" and health["socket"] == "rw"
    assert health["can_load"] is False               # this kernel cannot load modules: runs only
    assert health["state_dir"] == "/var/lib/kprobegen"
    doctor = json.loads(in_container("kprobegen", "doctor", "--json"))
    checks = {c["name"]: c for c in doctor["checks"]}
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["kernel"]["detail"].startswith(f"{image_kernel} (installed)")
    assert checks["profile"]["detail"] == "cached"   # captured when the image was built
    assert "/dev/kvm missing" in checks["kvm"]["detail"]
    # the read-only socket answers too, and refuses runs
    with Client(service.parent / "kprobegen-ro.sock") as c:
        assert c.health()["socket"] == "ro"
        status, body = c.request("POST", "/v1/runs", {"spec": "module: m\nhooks: [{symbol: ksys_sync}]\n",
                                                      "workload": "true"})
    assert status == 403, body


def test_no_network_in_the_container(service):
    cid = container_id()
    info = json.loads(subprocess_out("docker", "inspect", cid))[0]
    assert info["HostConfig"]["NetworkMode"] == "none"
    assert info["NetworkSettings"]["Networks"].keys() == {"none"}
    assert in_container("ls", "/sys/class/net").split() == ["lo"]
    # compose made no network for the project
    networks = subprocess_out("docker", "network", "ls", "--format", "{{.Name}}").split()
    assert not [n for n in networks if n.startswith("kprobegen-test")], networks


def test_every_example_counts_exactly_through_the_api(service, image_kernel):
    """The four examples at once (the service runs two VMs at a time, the others wait)."""
    cases = {"sync_counter": SYNCS, "sync_latency": SYNCS, "openat_by_cat": CATS, "fork_counter": FORKS}
    assert {p.stem for p in MODULES.glob("*.yaml")} == set(cases)
    answers: dict[str, tuple[int, dict]] = {}

    def one(name: str) -> None:
        try:
            answers[name] = run(service, (MODULES / f"{name}.yaml").read_text(), cases[name], kernel=image_kernel)
        except Exception as exc:
            answers[name] = (0, {"exception": repr(exc)})

    threads = [threading.Thread(target=one, args=(name,), daemon=True) for name in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    runs = {}
    for name in cases:
        status, body = answers[name]
        assert status == 200, (name, body)
        r = body["run"]
        assert body["report_error"] is None and r["complete"] is True and r["lost_lines"] == 0, (name, body)
        assert (r["module"], r["kernel"], r["reason"], r["exit_code"]) == (name, image_kernel, "unload", 0), r
        assert r["accel"] == "tcg"
        assert all(h["missed"] == 0 and h["dropped"] == 0 for h in r["hooks"].values()), r["hooks"]
        runs[name] = r["hooks"]

    sync = runs["sync_counter"]["sync"]
    assert (sync["hits"], sync["by"]) == (5, {"sync": 5})

    latency = runs["sync_latency"]["sync_ns"]
    hist = latency["histogram"]
    assert latency["hits"] == hist["count"] == sum(b["count"] for b in hist["buckets"]) == 5
    assert (hist["of"], hist["scale"], hist["unit"]) == ("latency", "log2", "ns")
    assert all(b["high"] == 2 * b["low"] for b in hist["buckets"])
    assert 0 < hist["min"] <= hist["max"] and hist["min"] * 5 <= hist["sum"] <= hist["max"] * 5

    opened, errors = runs["openat_by_cat"]["open_result"], runs["openat_by_cat"]["open_errors"]
    assert opened["hits"] == 4
    assert [(b["low"], b["high"], b["count"]) for b in opened["histogram"]["buckets"]] == [(-2, 0, 2), (2, 4, 2)]
    assert (opened["histogram"]["min"], opened["histogram"]["max"], opened["histogram"]["sum"]) == (-2, 3, 2)
    assert (errors["hits"], errors["by"]) == (2, {"-2": 2})

    clone, by_tgid = runs["fork_counter"]["clone"], runs["fork_counter"]["clone_by_tgid"]
    assert clone["by"]["sh"] == 3                     # the workload's three forks, by name ...
    workload_tgids = {k: v for k, v in by_tgid["by"].items() if k != "1"}
    assert list(workload_tgids.values()) == [3]       # ... and by its shell's pid
    # the rest are the guest's init (it starts the workload, then rmmod): both hooks saw them all
    assert clone["hits"] == by_tgid["hits"] == sum(clone["by"].values()) == sum(by_tgid["by"].values())
    assert clone["by"].get("init", 0) == by_tgid["by"].get("1", 0) == clone["hits"] - 3

    with Client(service) as c:
        events = [e for e in c.events()["events"] if e["kind"] == "run"]
    assert sorted(e["module"] for e in events[-4:]) == sorted(cases)


def test_a_suite_name_picks_the_images_kernel(service, image_kernel):
    status, body = run(service, (MODULES / "sync_counter.yaml").read_text(), "sync; sync; sync", kernel="bookworm")
    assert status == 200, body
    assert body["run"]["kernel"] == image_kernel and body["run"]["hooks"]["sync"]["hits"] == 3


BAD = [
    # (what, request, status, words in the error)
    ("YAML that is not a spec", {"spec": "module: [unclosed\n", "workload": "true"}, 422, "spec:"),
    ("a module name that is not a C identifier",
     {"spec": "module: ../evil\nhooks:\n  - symbol: ksys_sync\n", "workload": "true"}, 422, "spec:1:9"),
    ("a symbol the kernel lacks",
     {"spec": "module: m\nhooks:\n  - symbol: kpg_no_such_fn\n", "workload": "true"}, 422, "kpg_no_such_fn"),
    ("a symbol with a shell command in it",
     {"spec": "module: m\nhooks:\n  - symbol: 'ksys_sync; reboot'\n", "workload": "true"}, 422, "spec:3:"),
    ("an unknown field", {"spec": "module: m\n", "workload": "true", "image": "x"}, 422, "image"),
    ("no workload", {"spec": "module: m\nhooks:\n  - symbol: ksys_sync\n"}, 422, "workload"),
    ("a kernel that is not there", {"spec": "module: m\nhooks:\n  - symbol: ksys_sync\n", "workload": "true",
                                    "kernel": "9.9.9-nope"}, 422, "9.9.9-nope"),
    ("a timeout above an hour", {"spec": "module: m\nhooks:\n  - symbol: ksys_sync\n", "workload": "true",
                                 "timeout_s": 1e9}, 422, "timeout_s"),
    ("an unknown accelerator", {"spec": "module: m\nhooks:\n  - symbol: ksys_sync\n", "workload": "true",
                                "accel": "hvf"}, 422, "accel"),
]


@pytest.mark.parametrize("what,request_,status,words", BAD, ids=[b[0] for b in BAD])
def test_a_bad_request_is_a_4xx_and_the_service_keeps_serving(service, what, request_, status, words):
    with Client(service) as c:
        got, body = c.request("POST", "/v1/runs", request_)
        assert (got, body["status"]) == (status, status), body
        assert words in body["error"], body
        assert c.health()["status"] == "ok"


def test_garbage_bodies_are_4xx_and_a_good_run_follows(service):
    with Client(service) as c:
        assert c.request("POST", "/v1/runs", raw=b"{not json")[0] == 400
        assert c.request("POST", "/v1/runs", raw=b"[1, 2]")[0] == 400
        assert c.request("POST", "/v1/runs", raw=b"x" * (2 << 20))[0] == 413
    status, body = run(service, (MODULES / "sync_counter.yaml").read_text(), "sync")
    assert status == 200 and body["run"]["hooks"]["sync"]["hits"] == 1, body


# -- stopping ---------------------------------------------------------------------------------

def _processes_in(cid: str) -> dict[int, str]:
    """pid -> command name of this host's processes in the container's cgroup."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if cid in (entry / "cgroup").read_text():
                out[int(entry.name)] = (entry / "comm").read_text().strip()
        except OSError:
            continue
    return out


def test_stopping_the_container_leaves_no_qemu_behind(service, socket_dir):
    """Last: it stops the container mid-run, then starts it again and checks it serves."""
    cid = container_id()
    spec = (MODULES / "sync_counter.yaml").read_text()
    answer: dict = {}

    def long_run() -> None:
        try:
            answer["result"] = run(service, spec, "sleep 600", timeout_s=900)
        except Exception as exc:  # the connection breaks when the container stops: expected
            answer["error"] = exc

    t = threading.Thread(target=long_run, daemon=True)
    t.start()
    deadline, qemus = time.monotonic() + 120, {}
    while time.monotonic() < deadline and not qemus:
        qemus = {pid: comm for pid, comm in _processes_in(cid).items() if comm.startswith("qemu-system")}
        time.sleep(0.5)
    assert qemus, f"no qemu started in the container: {_processes_in(cid)}"

    t0 = time.monotonic()
    compose("stop", SERVICE, timeout=120)
    stopped_in = time.monotonic() - t0
    t.join(timeout=30)
    assert not t.is_alive() and "result" not in answer, answer
    left = [pid for pid in qemus if Path(f"/proc/{pid}").exists()]
    assert left == [], f"qemu still running after the stop: {left}"
    assert _processes_in(cid) == {}
    assert stopped_in < 15, f"the stop took {stopped_in:.1f} s: SIGTERM did not stop the service"
    assert not (socket_dir / "kprobegen.sock").exists()     # a clean stop removes its sockets

    compose("start", SERVICE, timeout=120)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not responsive(service):
        time.sleep(0.5)
    with Client(service) as c:
        assert c.health()["status"] == "ok"
        # the state folder is the compose volume: the events go on from before the stop
        kinds = [e["kind"] for e in c.events()["events"]]
    assert kinds.count("started") >= 2 and "run" in kinds, kinds
