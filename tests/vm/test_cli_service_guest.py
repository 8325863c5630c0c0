"""`kprobegen load/list/snapshot/unload` as clients of the manager service, on a real kernel: the
full Debian guest's.

One boot for the whole module: a script runs the host-mode commands without a service, then
with `kprobegen serve` running (they go through it), with `--no-service` beside it, after a
clean stop (direct again), and after a `kill -9` (a stale socket: a note, then direct). Each
command's stdout, stderr and exit status come back as sections "=== NAME", "=== NAME stderr",
"=== NAME rc". Counts are exact: N `sync` calls between a load and its snapshot.
"""

from __future__ import annotations

import json
import re

import pytest

from .test_host_guest import MODULES, in_guest

pytestmark = [pytest.mark.vm, pytest.mark.build, pytest.mark.slow]

N = 4
RW = "/run/kprobegen/kprobegen.sock"
RO = "/run/kprobegen/kprobegen-ro.sock"

SVC = r'''
import json, sys, time
from kprobegen.client import RO_SOCKET, Client, ServiceError

if sys.argv[1] == "wait":           # until a service answers (120 s at most)
    deadline = time.monotonic() + 120
    while True:
        try:
            Client(RO_SOCKET, timeout=10).health()
            break
        except ServiceError:
            if time.monotonic() > deadline:
                sys.exit("no service answered in 120 s")
            time.sleep(0.1)
else:                               # GET /v1/modules
    print(json.dumps(Client(RO_SOCKET).modules()))
'''

SCRIPT = r'''
set -u
cd /root
N=__N__
K=/opt/kprobegen/bin/python
run() { name=$1; shift; echo "=== $name"; "$@" 2>/tmp/stderr; r=$?; echo "=== $name stderr"; cat /tmp/stderr; echo "=== $name rc"; echo $r; }
syncs() { i=0; while [ $i -lt $1 ]; do sync; i=$((i+1)); done; }
start() { kprobegen serve >>/tmp/serve.log 2>&1 & PID=$!; $K /root/svc.py wait; }
groupadd kprobegen
useradd -M -N -g nogroup -G kprobegen member
as_member() { (cd /tmp && setpriv --reuid=member --regid=nogroup --init-groups "$@"); }
printf 'module: bad\nhooks:\n  - symbol: "ksys_sync; rm -rf /"\n' > bad.yaml

# 1. no service: direct, as always
run d_load kprobegen load specs/sync_counter.yaml --json
syncs $N
run d_snapshot kprobegen snapshot sync_counter --json
run d_snapshot_text kprobegen snapshot sync_counter
run d_list kprobegen list --json
run d_list_text kprobegen list
run d_twice kprobegen load specs/sync_counter.yaml
run d_unload kprobegen unload sync_counter --json
run d_not_loaded kprobegen unload sync_counter
run d_bad kprobegen load bad.yaml

# 2. the service runs: the same commands go through it
start
run s_load kprobegen load specs/sync_counter.yaml --json
echo "=== s_records"; $K /root/svc.py modules
syncs $N
run s_snapshot kprobegen snapshot sync_counter --json
run s_snapshot_text kprobegen snapshot sync_counter
run n_snapshot kprobegen snapshot sync_counter --no-service --json
run n_snapshot_text kprobegen snapshot sync_counter --no-service
run s_list kprobegen list --json
run s_list_text kprobegen list
run n_list kprobegen list --no-service --json
run m_list as_member kprobegen list --json
run m_snapshot as_member kprobegen snapshot sync_counter --json
run m_load as_member kprobegen load /root/specs/sync_counter.yaml
run s_twice kprobegen load specs/sync_counter.yaml
run n_unload kprobegen unload sync_counter --no-service
run s_unload kprobegen unload sync_counter --json
echo "=== s_records_after"; $K /root/svc.py modules
run s_not_loaded kprobegen unload sync_counter
run s_bad kprobegen load bad.yaml
# loaded behind the running service's back: listed, read and unloaded directly
run n_load kprobegen load specs/sync_counter.yaml --no-service --json
echo "=== n_records"; $K /root/svc.py modules
syncs 2
run u_list kprobegen list --json
run u_snapshot kprobegen snapshot sync_counter --json
run u_unload kprobegen unload sync_counter --json

# 3. the service stopped (it removes its sockets): direct again, without a word
kill -TERM $PID; wait $PID
echo "=== sockets_after_stop"; ls -A /run/kprobegen
run x_load kprobegen load specs/sync_counter.yaml --json
syncs $N
run x_snapshot kprobegen snapshot sync_counter --json
run x_unload kprobegen unload sync_counter --json

# 4. a service killed (its sockets stay behind): a note, then direct
start
kill -9 $PID; wait $PID 2>/dev/null
echo "=== sockets_after_kill"; ls -A /run/kprobegen
run k_load kprobegen load specs/sync_counter.yaml --json
syncs $N
run k_unload kprobegen unload sync_counter --json
run k_socket kprobegen list --socket /run/kprobegen
echo "=== serve_log"; cat /tmp/serve.log
echo "=== kprobes"; cat /sys/kernel/debug/kprobes/list
echo "=== dmesg"; dmesg
true
'''.replace("__N__", str(N))


@pytest.fixture(scope="module")
def guest(image, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_service")
    (out / "svc.py").write_text(SVC)
    sections = in_guest(image, SCRIPT, add=[(MODULES, "/root/specs"), (out / "svc.py", "/root/svc.py")])
    (out / "sections.json").write_text(json.dumps(sections, indent=1))     # to read when a test fails
    return sections


def ran(guest, name: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of the command the script ran as ``name``."""
    assert f"{name} rc" in guest, f"no section {name}; the service's log:\n{guest.get('serve_log', '')[-3000:]}"
    return int(guest[f"{name} rc"]), guest[name], guest[f"{name} stderr"]


def ok(guest, name: str, stderr: str = ""):
    """The JSON a command printed; it succeeded and said nothing on stderr (or ``stderr``)."""
    code, out, err = ran(guest, name)
    assert (code, err) == (0, stderr), (name, code, err)
    return json.loads(out)


def shape(value):
    """The JSON's keys, recursively (the values' types aside): what both modes must agree on."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items() if k != "by"}    # `by`'s keys are data
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return None


def hits(results: dict) -> int:
    return results["hooks"]["sync"]["hits"]


def no_time(table: str) -> str:
    """A report table without what differs between two reads of equal counts."""
    return re.sub(r"report \d+", "report N", re.sub(r" at \d+\.\d+s", "", table))


def test_load_through_the_service_prints_what_direct_mode_prints(guest, image):
    direct, service = ok(guest, "d_load"), ok(guest, "s_load")
    assert shape(direct) == shape(service)
    assert (direct["service"], service["service"]) == (None, RW)
    for key in ("module", "kernel", "spec", "ko"):
        assert direct[key] == service[key], key
    assert service["spec"] == "/root/specs/sync_counter.yaml" and service["kernel"] == image.release
    records = json.loads(guest["s_records"])
    assert [(r["module"], r["status"], r["origin"], r["loaded_by"], r["spec"]) for r in records] == \
        [("sync_counter", "loaded", "service", 0, "/root/specs/sync_counter.yaml")]


def test_snapshot_through_the_service_is_exact_and_has_direct_modes_shape(guest):
    direct, service, beside = ok(guest, "d_snapshot"), ok(guest, "s_snapshot"), ok(guest, "n_snapshot")
    assert shape(direct) == shape(service) == shape(beside)
    assert hits(service) == hits(direct) == hits(beside) == N
    assert service["hooks"] == direct["hooks"] == beside["hooks"]
    assert service["reason"] == "snapshot" and service["complete"] is True and service["lost_lines"] == 0
    assert service["hooks"]["sync"]["by"] == {"sync": N}
    tables = [no_time(ran(guest, name)[1]) for name in ("d_snapshot_text", "s_snapshot_text", "n_snapshot_text")]
    assert tables[0] == tables[1] == tables[2] and "ksys_sync" in tables[0], tables
    assert hits(ok(guest, "m_snapshot")) == N      # a member of the group reads through the read-only socket


def test_list_through_the_service_equals_direct_list(guest):
    assert ok(guest, "s_list") == ok(guest, "n_list") == ok(guest, "m_list")
    assert shape(ok(guest, "s_list")) == shape(ok(guest, "d_list"))
    assert [m["module"] for m in ok(guest, "s_list")] == ["sync_counter"]
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
    assert stamp.sub("T", ran(guest, "s_list_text")[1]) == stamp.sub("T", ran(guest, "d_list_text")[1])
    assert ran(guest, "s_list_text")[1].startswith("MODULE")


def test_unload_through_the_service_has_every_hit(guest):
    direct, service = ok(guest, "d_unload"), ok(guest, "s_unload")
    assert shape(direct) == shape(service)
    assert service["reason"] == "unload" and service["complete"] is True and service["lost_lines"] == 0
    assert hits(service) == hits(direct) == N and service["hooks"] == direct["hooks"]
    assert json.loads(guest["s_records_after"]) == []


def test_refusals_through_the_service_are_direct_modes_errors(guest):
    for direct, service in (("d_twice", "s_twice"), ("d_not_loaded", "s_not_loaded"), ("d_bad", "s_bad")):
        assert ran(guest, direct) == ran(guest, service), (direct, service)
    code, _, err = ran(guest, "s_twice")
    assert code == 1 and err == ("kprobegen: error: module sync_counter is already loaded by kprobegen: "
                                 "unload it first (kprobegen unload sync_counter)\n")
    assert ran(guest, "s_not_loaded")[::2] == (1, "kprobegen: error: module sync_counter is not loaded\n")
    code, _, err = ran(guest, "s_bad")                  # the file as given, line and column: exit 2
    assert code == 2 and err.startswith("kprobegen: error: bad.yaml:3:13: hooks[0].symbol: ") and err.count("\n") == 1
    code, out, err = ran(guest, "m_load")
    assert (code, out) == (1, "")
    assert re.fullmatch(rf"kprobegen: error: {RW}: uid \d+ refused: the read-write socket is for root only\n", err)


def test_no_service_beside_a_running_service(guest):
    code, out, err = ran(guest, "n_unload")            # it owns the module: refused, nothing removed
    assert (code, out) == (1, "")
    assert err == (f"kprobegen: error: module sync_counter is owned by the kprobegen service ({RO}): unload it "
                   "through the service (without --no-service), or add --force to remove it behind its back\n")
    loaded = ok(guest, "n_load", stderr=f"kprobegen: warning: a service runs ({RO}); sync_counter was loaded "
                                        "without it (--no-service), so the service only adopts it\n")
    assert loaded["service"] is None
    # the service did not load it: it knows it as adopted (its watcher saw it come), or not at all
    assert [(r["module"], r["origin"]) for r in json.loads(guest["n_records"])] in ([], [("sync_counter", "adopted")])
    # either way it is listed as direct mode lists it, read and unloaded with exact counts
    listed = ok(guest, "u_list")
    assert listed == [dict(ok(guest, "s_list")[0], loaded_at=loaded["loaded_at"])]
    assert hits(ok(guest, "u_snapshot")) == 2
    assert hits(ok(guest, "u_unload")) == 2


def test_without_the_service_the_default_path_is_direct(guest):
    assert not [f for f in guest["sockets_after_stop"].split() if f.endswith(".sock")]
    assert ok(guest, "x_load")["service"] is None
    assert hits(ok(guest, "x_snapshot")) == N and hits(ok(guest, "x_unload")) == N


def test_a_stale_socket_is_said_and_the_command_acts_directly(guest):
    assert sorted(guest["sockets_after_kill"].split()) == ["kprobegen-ro.sock", "kprobegen.sock"]
    note = (f"kprobegen: note: {RW}: nothing answers there (a socket left by a service that stopped): "
            "acting on the kernel directly\n")
    assert ok(guest, "k_load", stderr=note)["service"] is None
    assert hits(ok(guest, "k_unload", stderr=note)) == N
    assert ran(guest, "k_socket") == (1, "", f"kprobegen: error: --socket {RO}: nothing answers there "
                                             "(a socket left by a service that stopped)\n")


def test_nothing_is_left_behind(guest):
    assert guest["kprobes"].strip() == ""
    assert not any(w in guest["dmesg"] for w in ("WARNING:", "BUG:", "Oops"))
