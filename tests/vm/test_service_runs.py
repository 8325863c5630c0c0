"""POST /v1/runs on this machine, whose kernel cannot load modules: the service builds the
spec, boots the disposable busybox VM with a real Debian kernel, runs the workload and
returns the kernel's exact counts (what the service container does, issue #15)."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import pytest

from kprobegen.client import Client
from kprobegen.service import Running

pytestmark = [pytest.mark.vm, pytest.mark.build, pytest.mark.slow]

MODULES = Path(__file__).resolve().parents[2] / "modules"


@pytest.fixture(scope="module")
def service(kernel):
    run_dir = Path(tempfile.mkdtemp(prefix="kpg-runs-"))
    running = Running(run_dir / "run", run_dir / "state", group=None)
    yield running
    running.close()


def test_a_run_counts_exactly_and_two_go_side_by_side(service, kernel):
    spec = (MODULES / "sync_counter.yaml").read_text()
    answers = {}

    def one(n: int) -> None:
        with Client(service.socket_dir / "kprobegen.sock") as c:
            answers[n] = c.request("POST", "/v1/runs", {"spec": spec, "workload": f"for i in $(seq {n}); do sync; done",
                                                        "kernel": kernel.release, "timeout_s": 300})

    threads = [threading.Thread(target=one, args=(n,)) for n in (3, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in (3, 5):
        status, body = answers[n]
        assert status == 200, body
        run = body["run"]
        assert body["report_error"] is None and run["complete"] is True and run["exit_code"] == 0
        assert run["kernel"] == kernel.release and run["reason"] == "unload"
        assert run["hooks"]["sync"]["hits"] == n and run["hooks"]["sync"]["by"] == {"sync": n}
    with Client(service.socket_dir / "kprobegen.sock") as c:
        runs = [e for e in c.events()["events"] if e["kind"] == "run"]
        assert len(runs) == 2 and all(e["module"] == "sync_counter" for e in runs)
        status, body = c.request("POST", "/v1/runs", {"spec": spec, "workload": "sync",
                                                      "kernel": kernel.release, "timeout_s": 300,
                                                      "accel": "tcg"})
        assert status == 200 and body["run"]["hooks"]["sync"]["hits"] == 1 and body["run"]["accel"] == "tcg"
        assert c.health()["status"] == "ok"


def test_a_spec_with_a_symbol_the_kernel_lacks_is_a_422(service, kernel):
    with Client(service.socket_dir / "kprobegen.sock") as c:
        status, body = c.request("POST", "/v1/runs", {"spec": "module: m\nhooks:\n  - symbol: kpg_no_such_fn\n",
                                                      "workload": "true", "kernel": kernel.release})
    assert status == 422 and "kpg_no_such_fn" in body["error"] and body["error"].startswith("spec:3:13: hooks[0].symbol: ")
