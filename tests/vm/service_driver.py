"""Drives `kprobegen serve` inside the full guest for tests/vm/test_service_lifecycle_guest.py.

Run by the guest's Python (/opt/kprobegen/bin/python) as root: ``phase1`` (everything up to
the service's restart), ``phase2`` (after it), or ``client I`` (one of the concurrent
clients). Findings are printed as sections "=== NAME" followed by one line of JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kprobegen.client import Client, ServiceError

RW = "/run/kprobegen/kprobegen.sock"
KPROBES = Path("/sys/kernel/debug/kprobes")
PLAN = json.loads(Path("/root/plan.json").read_text())


def say(name: str, value) -> None:
    print(f"=== {name}\n{json.dumps(value)}", flush=True)


def client(timeout: float = 600.0) -> Client:
    return Client(RW, timeout=timeout)


def wait_for_service() -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if client(10).request("GET", "/v1/health")[0] == 200:
                return
        except ServiceError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the service did not answer in 120 s")
        time.sleep(0.1)


def run(*argv: str, times: int = 1) -> None:
    for _ in range(times):
        subprocess.run(argv, check=True)


def by_hand(c: Client) -> None:
    """rmmod and insmod without the service: the watcher notices both."""
    since = c.events()["next"]
    c.load(ko_path="/root/ko/sync_counter.ko")
    run("sync", times=4)
    run("rmmod", "sync_counter")
    say("removed_event", c.wait_for("removed", "sync_counter", since, timeout=30))
    say("removed_record", c.module("sync_counter"))
    say("removed_snapshot", c.request("GET", "/v1/modules/sync_counter/snapshot"))
    say("removed_delete", c.unload("sync_counter"))
    say("removed_after_delete", c.request("GET", "/v1/modules/sync_counter")[0])

    since = c.events()["next"]
    run("insmod", "/root/ko/conc_14.ko")
    say("adopted_event", c.wait_for("adopted", "conc_14", since, timeout=30))
    say("adopted_record", c.module("conc_14"))
    say("adopted_unload", c.unload("conc_14"))


def lifetimes(c: Client) -> None:
    since = c.events()["next"]
    child = subprocess.Popen(
        [sys.executable, "-c", "import json, sys\n"
                               "from kprobegen.client import Client\n"
                               f"print(json.dumps(Client({RW!r}).load(ko_path='/root/ko/sync_latency.ko', "
                               "lifetime='client')), flush=True)\n"
                               "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    say("client_loaded", json.loads(child.stdout.readline()))
    run("sync", times=2)
    child.stdin.close()          # the client exits
    child.wait()
    say("client_exited_event", c.wait_for("client-exited", "sync_latency", since, timeout=30))
    say("client_exited_record", c.module("sync_latency"))
    say("client_exited_in_kernel", os.path.exists("/sys/module/sync_latency"))

    since = c.events()["next"]
    say("limited_loaded", c.load(ko_path="/root/ko/fork_counter.ko", time_limit_s=3))
    say("expired_event", c.wait_for("expired", "fork_counter", since, timeout=60))
    say("expired_record", c.module("fork_counter"))
    say("expired_in_kernel", os.path.exists("/sys/module/fork_counter"))

    since = c.events()["next"]
    (KPROBES / "enabled").write_text("0\n")
    c.wait_for("disarmed", None, since, timeout=30)
    (KPROBES / "enabled").write_text("1\n")
    c.wait_for("armed", None, since, timeout=30)
    say("armed_events", [e for e in c.events(since)["events"] if e["kind"] in ("armed", "disarmed")])


def uploads(c: Client) -> None:
    say("upload", c.upload("conc_01", "/root/ko/conc_01.ko"))
    say("upload_renamed", c.request("PUT", "/v1/modules/conc_03", raw=Path("/root/ko/conc_02.ko").read_bytes(),
                                    headers={"Content-Type": "application/octet-stream"}))
    from kprobegen.kernels.modules import modinfo

    foreign = next((Path(d, f) for d, _, files in os.walk(f"/lib/modules/{os.uname().release}/kernel")
                    for f in files if f.endswith(".ko")), None)
    if foreign is None:
        say("upload_not_ours", [None, {"error": "no uncompressed .ko in /lib/modules"}])
    else:
        say("upload_not_ours", c.request("PUT", f"/v1/modules/{modinfo(foreign)['name']}", raw=foreign.read_bytes(),
                                         headers={"Content-Type": "application/octet-stream"}))
    say("uploads_kept", len(os.listdir("/var/lib/kprobegen/modules")))
    c.unload("conc_01")


def one_client(index: int) -> None:
    """Load two modules, run each one's workload, snapshot both, unload both."""
    names = [f"conc_{index * PLAN['per_client'] + k:02d}" for k in range(PLAN["per_client"])]
    out = {"snapshots": {}, "finals": {}, "loaded_by": {}, "errors": []}
    c = client()
    try:
        for name in names:
            if name in PLAN["inline"]:
                c.load(spec=Path(f"/root/conc/{name}.yaml").read_text())
                out["loaded_by"][name] = "spec"
            elif name in PLAN["uploaded"]:
                c.upload(name, f"/root/ko/{name}.ko")
                out["loaded_by"][name] = "upload"
            else:
                c.load(ko_path=f"/root/ko/{name}.ko")
                out["loaded_by"][name] = "path"
        for name in names:
            program = f"/tmp/kc{name[-2:]}"
            shutil.copy("/bin/sync", program)
            run(program, times=PLAN["syncs"][name])
        for name in names:
            out["snapshots"][name] = c.snapshot(name)["results"]["hooks"]["sync"]["hits"]
        for name in names:
            out["finals"][name] = c.unload(name)["results"]["hooks"]["sync"]["hits"]
    except Exception as exc:
        out["errors"].append(f"client {index}: {exc}")
    print(json.dumps(out), flush=True)


def concurrency(c: Client) -> None:
    since = c.events()["next"]
    children = [subprocess.Popen([sys.executable, __file__, "client", str(i)], stdout=subprocess.PIPE, text=True)
                for i in range(PLAN["clients"])]
    report = {"snapshots": {}, "finals": {}, "loaded_by": {}, "errors": []}
    for i, child in enumerate(children):
        out, _ = child.communicate(timeout=1200)
        try:
            got = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            report["errors"].append(f"client {i} printed {out[-300:]!r}, exit {child.returncode}")
            continue
        for key in ("snapshots", "finals", "loaded_by"):
            report[key].update(got[key])
        report["errors"] += got["errors"]
    report["left"] = [m["module"] for m in c.modules() if m["status"] == "loaded"]
    report["kprobes_left"] = (KPROBES / "list").read_text().strip()
    report["event_kinds"] = [e["kind"] for e in c.events(since)["events"]]
    say("concurrency", report)


def main() -> None:
    if sys.argv[1] == "client":
        one_client(int(sys.argv[2]))
        return
    wait_for_service()
    c = client()
    if sys.argv[1] == "phase1":
        by_hand(c)
        lifetimes(c)
        uploads(c)
        concurrency(c)
        say("seq_before_restart", c.events()["next"])
    else:
        say("events_after_restart", c.events(0))
        say("gone_after_restart", {m["module"]: m["gone_reason"] for m in c.modules() if m["status"] == "gone"})


if __name__ == "__main__":
    main()
