"""The manager service (`kprobegen serve`) on a real running kernel: the full Debian guest's.

One boot for the whole module: a script starts the service in the background, drives it over
its Unix sockets with kprobegen.client (as root, as a member of the kprobegen group, as a user
outside it), kills it with SIGKILL while a module is loaded, restarts it, corrupts its state
file, and prints each answer as a section "=== NAME" that the tests below read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .test_host_guest import MODULES, in_guest

pytestmark = [pytest.mark.vm, pytest.mark.build, pytest.mark.slow]

DRIVER = r'''
import json, sys, time
from kprobegen.client import Client, ServiceError

name, sock, method, path = sys.argv[1:5]
body = sys.argv[5].encode() if len(sys.argv) > 5 else None
if body == b"@huge":
    body = b'{"spec": "' + b"a" * (2 << 20) + b'"}'
print("=== " + name, flush=True)
if method == "WAIT":            # until the service answers (a restarted one: its old socket may linger)
    deadline = time.monotonic() + 120
    while True:
        try:
            status, data = Client(sock, timeout=10).request("GET", "/v1/health")
            if status == 200:
                break
        except ServiceError:
            pass
        if time.monotonic() > deadline:
            status, data = None, {"error": "the service did not answer in 120 s"}
            break
        time.sleep(0.1)
else:
    try:
        status, data = Client(sock).request(method, path, raw=body)
    except ServiceError as exc:
        status, data = None, {"error": str(exc)}
print(json.dumps({"status": status, "body": data}), flush=True)
'''

SCRIPT = r'''
set -u
cp /root/drive.py /tmp/drive.py; chmod 644 /tmp/drive.py; cd /tmp
S=/run/kprobegen; ST=/var/lib/kprobegen; RW=$S/kprobegen.sock; RO=$S/kprobegen-ro.sock
D="/opt/kprobegen/bin/python /tmp/drive.py"
groupadd kprobegen
useradd -M -N -g nogroup outsider
useradd -M -N -g nogroup -G kprobegen member
as() { user=$1; shift; setpriv --reuid="$user" --regid=nogroup --init-groups "$@"; }
start() { kprobegen serve >>/tmp/serve.log 2>&1 & PID=$!; $D "$1" $RO WAIT /v1/health; }
ours() { echo "=== $1"; ls /sys/kernel/debug/kprobegen 2>/dev/null | tr '\n' ' '; echo; }

start up1
$D load $RW POST /v1/modules '{"spec_path": "/root/specs/sync_counter.yaml"}'
# the kernel's own kprobe on the same symbol, armed around the workload: the oracle
T=/sys/kernel/tracing
echo 'p:kpg/sync ksys_sync' >> $T/kprobe_events; echo 1 > $T/events/kpg/enable
sync; sync; sync
echo 0 > $T/events/kpg/enable
echo "=== oracle"; cat $T/kprobe_profile
echo '-:kpg/sync' >> $T/kprobe_events
$D snapshot1 $RW GET /v1/modules/sync_counter/snapshot
$D snapshot_all $RO GET /v1/snapshot
echo "=== modes"; stat -c '%n %a %U' $RW $RO $ST/state.json

# access: the kernel's word on the peer (SO_PEERCRED), not the socket's mode (0666)
as member $D member_ro $RO GET /v1/modules
as member $D member_snapshot $RO GET /v1/modules/sync_counter/snapshot
as member $D member_rw $RW GET /v1/health
as member $D member_unload $RW DELETE /v1/modules/sync_counter
as outsider $D outsider_ro $RO GET /v1/modules
as outsider $D outsider_load $RW POST /v1/modules '{"spec_path": "/root/specs/fork_counter.yaml"}'
$D root_unload_on_ro $RO DELETE /v1/modules/sync_counter

# hostile requests: each a 4xx with a reason, nothing loaded, the service still up
$D bad_json $RW POST /v1/modules '{"spec_path": '
$D traversal $RW DELETE '/v1/modules/..%2F..%2Fetc%2Fpasswd'
$D traversal_snapshot $RO GET '/v1/modules/..%2Fsync_counter/snapshot'
$D spec_name $RW POST /v1/modules '{"spec": "module: ../evil\nhooks:\n  - symbol: ksys_sync\n"}'
$D spec_injection $RW POST /v1/modules '{"spec": "module: evil\nhooks:\n  - symbol: \"ksys_sync; rm -rf /\"\n"}'
$D unknown_field $RW POST /v1/modules '{"spec_path": "/root/specs/fork_counter.yaml", "cmd": "reboot"}'
$D ko_traversal $RW POST /v1/modules '{"ko_path": "/root/../etc/passwd.ko"}'
$D huge $RW POST /v1/modules @huge
$D events $RO GET '/v1/events?since=0'
ours ours_after_hostile
$D list1 $RO GET /v1/modules

# crash: SIGKILL with the module loaded, hits while the service is down, restart: adopted
kill -9 $PID; wait $PID 2>/dev/null
sync; sync
start up2
$D list2 $RO GET /v1/modules
$D snapshot2 $RO GET /v1/modules/sync_counter/snapshot

# only one service per state dir
echo "=== second"; kprobegen serve --socket-dir /run/kpg-second 2>&1; echo "rc=$?"

# a corrupted state file: reported, and the state rebuilt from the kernel
kill -TERM $PID; wait $PID
printf '{"format": 1, "modules": {"sync_counter": {"modu' > $ST/state.json
start up3
$D health3 $RO GET /v1/health
$D list3 $RO GET /v1/modules
echo "=== aside"; ls $ST $ST/specs

$D unload $RW DELETE /v1/modules/sync_counter
$D list4 $RO GET /v1/modules
ours ours_end
echo "=== kprobes"; cat /sys/kernel/debug/kprobes/list
kill -TERM $PID; wait $PID; echo "=== stopped"; echo "rc=$?"
echo "=== log"; cat /tmp/serve.log
echo "=== dmesg"; dmesg
'''


@pytest.fixture(scope="module")
def guest(image, tmp_path_factory):
    out = tmp_path_factory.mktemp("service")
    (out / "drive.py").write_text(DRIVER)
    sections = in_guest(image, SCRIPT, add=[(MODULES, "/root/specs"), (out / "drive.py", "/root/drive.py")])
    (out / "sections.json").write_text(json.dumps(sections, indent=1))     # to read when a test fails
    return sections


def answer(guest, name: str) -> tuple[int | None, dict]:
    assert name in guest, f"no section {name}; log:\n{guest.get('log', '')[-3000:]}"
    got = json.loads(guest[name])
    return got["status"], got["body"]


def ok(guest, name: str) -> dict:
    status, body = answer(guest, name)
    assert status == 200, (name, body)
    return body


def hits(results: dict) -> int:
    return results["hooks"]["sync"]["hits"]


def test_a_spec_loads_through_the_api_and_counts_exactly(guest, image):
    for up in ("up1", "up2", "up3"):
        assert ok(guest, up)["status"] == "ok"
    loaded = ok(guest, "load")
    assert (loaded["module"], loaded["status"], loaded["origin"], loaded["loaded_by"]) == \
        ("sync_counter", "loaded", "service", 0)
    assert loaded["kernel"] == image.release and loaded["spec"] == "/root/specs/sync_counter.yaml"
    snap = ok(guest, "snapshot1")["results"]
    assert snap["reason"] == "snapshot" and snap["complete"] is True
    assert hits(snap) == 3 and snap["hooks"]["sync"]["by"] == {"sync": 3}
    oracle = {f[0]: int(f[1]) for f in (line.split() for line in guest["oracle"].splitlines()) if len(f) >= 2}
    assert oracle["sync"] == 3, guest["oracle"]          # the kernel's kprobe_profile agrees
    every = ok(guest, "snapshot_all")
    assert every["errors"] == {} and hits(every["snapshots"]["sync_counter"]) == 3
    modes = guest["modes"].split("\n")
    assert modes[0].endswith("kprobegen.sock 666 root") and modes[1].endswith("kprobegen-ro.sock 666 root")
    kinds = [(e["kind"], e["module"]) for e in ok(guest, "events")["events"]]
    assert kinds == [("started", None), ("loaded", "sync_counter")]


def test_killed_and_restarted_it_adopts_the_module_and_unload_has_every_hit(guest):
    listed = ok(guest, "list2")["modules"]
    assert [(m["module"], m["status"], m["origin"]) for m in listed] == [("sync_counter", "loaded", "service")]
    assert listed[0]["spec"] == "/root/specs/sync_counter.yaml"
    assert hits(ok(guest, "snapshot2")["results"]) == 5       # the two syncs made while it was down
    final = ok(guest, "unload")
    assert final["module"] == "sync_counter" and final["results"]["reason"] == "unload"
    assert final["results"]["complete"] is True and final["results"]["lost_lines"] == 0
    assert hits(final["results"]) == 5 and final["results"]["hooks"]["sync"]["by"] == {"sync": 5}
    assert ok(guest, "list4")["modules"] == []
    assert guest["ours_end"].strip() == "" and guest["kprobes"].strip() == ""
    assert guest["stopped"].strip() == "rc=0"
    assert not any(w in guest["dmesg"] for w in ("WARNING:", "BUG:", "Oops"))


def test_a_second_service_on_the_same_state_is_refused(guest):
    out, rc = guest["second"].rsplit("rc=", 1)
    assert rc.strip() == "1"
    assert "another kprobegen service" in out and out.strip().count("\n") == 0, out


def test_a_corrupted_state_file_is_reported_and_rebuilt_from_the_kernel(guest):
    problems = ok(guest, "health3")["problems"]
    assert len(problems) == 1 and "state.json is unreadable" in problems[0] and "rebuilt from the kernel" in problems[0]
    listed = ok(guest, "list3")["modules"]
    assert [(m["module"], m["status"], m["origin"]) for m in listed] == [("sync_counter", "loaded", "adopted")]
    assert "state.json.unreadable-" in guest["aside"]
    assert guest["aside"].rstrip().endswith("/var/lib/kprobegen/specs:")    # the refused inline specs are not kept


def test_access_is_decided_by_the_peers_credentials(guest):
    assert [m["module"] for m in ok(guest, "member_ro")["modules"]] == ["sync_counter"]
    assert hits(ok(guest, "member_snapshot")["results"]) == 3
    for name, reason in (("member_rw", "the read-write socket is for root only"),
                         ("member_unload", "the read-write socket is for root only"),
                         ("outsider_ro", "the read-only socket is for root and group kprobegen"),
                         ("outsider_load", "the read-write socket is for root only"),
                         ("root_unload_on_ro", "go through the read-write socket")):
        status, body = answer(guest, name)
        assert status == 403 and reason in body["error"], (name, body)


def test_hostile_requests_get_a_4xx_and_load_nothing(guest):
    expected = {
        "bad_json": (400, "the body is not JSON"),
        "traversal": (400, "is not a module name"),
        "traversal_snapshot": (400, "is not a module name"),
        "spec_name": (422, "spec:1:9: module: '../evil' is not a C identifier"),
        "spec_injection": (422, "spec:3:13: hooks[0].symbol: 'ksys_sync; rm -rf /' is not a kernel symbol name"),
        "unknown_field": (422, "cmd: unknown field"),
        "ko_traversal": (409, "no such module file"),
        "huge": (413, "over the limit"),
    }
    for name, (status, reason) in expected.items():
        got, body = answer(guest, name)
        assert (got, body.get("status")) == (status, status) and reason in body["error"], (name, body)
        assert "\n" not in body["error"]
    assert guest["ours_after_hostile"].split() == ["sync_counter"]
    assert [m["module"] for m in ok(guest, "list1")["modules"]] == ["sync_counter"]
