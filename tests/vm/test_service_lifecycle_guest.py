"""The manager service watching a real kernel (the full Debian guest's): modules that leave or
arrive without it (rmmod and insmod by hand), lifetimes (the loading client exits, a time
limit), kprobes switched off, uploads, durable event numbers, and 8 clients at once loading,
snapshotting and unloading 16 modules.

One boot for the module: tests/vm/service_driver.py runs in the guest against a `kprobegen
serve` started by the script below, and prints each finding as a section "=== NAME" (JSON)
that the tests read. The 16 modules are built here, on this machine, against the guest
kernel's headers (each counts ksys_sync from one process name only, so that the clients'
workloads do not count in each other's modules); 4 are loaded from inline specs (built by
the service in the guest, at the same time), 6 are uploaded, 6 are loaded from a path. The
examples used by the other checks are built here too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import require
from .test_host_guest import MODULES, in_guest

pytestmark = [pytest.mark.vm, pytest.mark.build, pytest.mark.slow]

DRIVER = Path(__file__).with_name("service_driver.py")
CLIENTS = 8
PER_CLIENT = 2
INLINE = {"conc_00", "conc_05", "conc_10", "conc_15"}
UPLOADED = {f"conc_{i:02d}" for i in (1, 2, 3, 4, 6, 7)}


def conc_spec(i: int) -> str:
    return (f"module: conc_{i:02d}\n"
            f"description: ksys_sync calls made by processes named kc{i:02d}\n"
            "hooks:\n"
            "  - name: sync\n"
            "    symbol: ksys_sync\n"
            f"    filter:\n      comm: kc{i:02d}\n")


def syncs(i: int) -> int:
    """How many times module conc_<i>'s client runs its sync."""
    return 3 + i % 5


SCRIPT = r'''
set -u
cd /tmp
cp /bin/sync /tmp/sync_by_hand
groupadd kprobegen
kprobegen serve >/tmp/serve.log 2>&1 &
PID=$!
/opt/kprobegen/bin/python /root/driver.py phase1 2>/tmp/driver.err || { echo "=== driver_failed"; tail -n 40 /tmp/driver.err; }
# restart: events go on numbering, gone records stay
kill -TERM $PID; wait $PID
kprobegen serve >>/tmp/serve.log 2>&1 &
PID=$!
/opt/kprobegen/bin/python /root/driver.py phase2 2>/tmp/driver.err || { echo "=== driver_failed"; tail -n 40 /tmp/driver.err; }
kill -TERM $PID; wait $PID
echo "=== ours_end"; ls /sys/kernel/debug/kprobegen 2>/dev/null | tr '\n' ' '; echo
echo "=== kprobes_end"; cat /sys/kernel/debug/kprobes/list
echo "=== events_file"; wc -l < /var/lib/kprobegen/events.jsonl
echo "=== log"; cat /tmp/serve.log
echo "=== dmesg"; dmesg | tail -n 200
'''


@pytest.fixture(scope="module")
def guest(image, tmp_path_factory):
    from kprobegen.kernels import find_kernel
    from kprobegen.errors import KernelError
    from kprobegen.pipeline import build_module
    from kprobegen.spec import load_spec

    out = tmp_path_factory.mktemp("service-lifecycle")
    try:
        tree = find_kernel(image.release).build_dir
    except KernelError as exc:
        tree = None
        require(False, f"no headers here for the guest's kernel {image.release} ({exc})")
    require(tree is not None and Path(tree).is_dir(), f"no Kbuild tree here for {image.release}")
    specs, kos = out / "specs", out / "ko"
    specs.mkdir()
    kos.mkdir()
    for i in range(CLIENTS * PER_CLIENT):
        name = f"conc_{i:02d}"
        (specs / f"{name}.yaml").write_text(conc_spec(i))
        if name not in INLINE:
            built = build_module(load_spec(specs / f"{name}.yaml"), out / "build" / name, kernel_dir=tree)
            (kos / f"{name}.ko").write_bytes(Path(built.ko).read_bytes())
    for name in ("sync_counter", "sync_latency", "fork_counter"):
        built = build_module(load_spec(MODULES / f"{name}.yaml"), out / "build" / name, kernel_dir=tree)
        (kos / f"{name}.ko").write_bytes(Path(built.ko).read_bytes())
    plan = {"clients": CLIENTS, "per_client": PER_CLIENT, "inline": sorted(INLINE), "uploaded": sorted(UPLOADED),
            "syncs": {f"conc_{i:02d}": syncs(i) for i in range(CLIENTS * PER_CLIENT)}}
    (out / "plan.json").write_text(json.dumps(plan))
    sections = in_guest(image, SCRIPT, add=[(MODULES, "/root/specs"), (specs, "/root/conc"), (kos, "/root/ko"),
                                            (DRIVER, "/root/driver.py"), (out / "plan.json", "/root/plan.json")])
    (out / "sections.json").write_text(json.dumps(sections, indent=1))     # to read when a test fails
    assert "driver_failed" not in sections, \
        f"driver: {sections['driver_failed']}\nserve log:\n{sections.get('log', '')[-3000:]}"
    return sections


def found(guest, name: str):
    assert name in guest, f"no section {name}; serve log:\n{guest.get('log', '')[-3000:]}"
    return json.loads(guest[name])


def hits(results: dict | None, hook: str = "sync") -> int:
    assert results is not None
    return results["hooks"][hook]["hits"]


def test_rmmod_by_hand_is_seen_at_once_with_its_final_counts(guest):
    event = found(guest, "removed_event")
    assert (event["kind"], event["module"], event["uid"]) == ("removed", "sync_counter", None)
    rec = found(guest, "removed_record")
    assert (rec["status"], rec["gone_reason"]) == ("gone", "removed")
    assert hits(rec["final"]) == 4 and rec["final"]["reason"] == "unload" and rec["final"]["complete"] is True
    status, body = found(guest, "removed_snapshot")
    assert status == 409 and "final counts are in the record" in body["error"]
    unloaded = found(guest, "removed_delete")      # a client's DELETE hands over the kept counts, then forgets
    assert unloaded["gone_reason"] == "removed" and hits(unloaded["results"]) == 4
    assert found(guest, "removed_after_delete") == 404


def test_a_module_insmodded_by_hand_is_adopted(guest):
    event = found(guest, "adopted_event")
    assert (event["kind"], event["module"]) == ("adopted", "conc_14")
    rec = found(guest, "adopted_record")
    assert (rec["status"], rec["origin"]) == ("loaded", "adopted")
    assert hits(found(guest, "adopted_unload")["results"]) == 0


def test_a_client_lifetime_module_is_unloaded_when_its_client_exits(guest):
    loaded = found(guest, "client_loaded")
    assert loaded["lifetime"] == "client" and loaded["client_pid"] > 1
    event = found(guest, "client_exited_event")
    assert (event["kind"], event["module"]) == ("client-exited", "sync_latency")
    rec = found(guest, "client_exited_record")
    assert (rec["status"], rec["gone_reason"]) == ("gone", "client-exited")
    assert rec["final"]["reason"] == "unload" and hits(rec["final"], "sync_ns") == 2
    assert found(guest, "client_exited_in_kernel") is False


def test_a_time_limit_unloads_and_keeps_the_final_counts(guest):
    loaded = found(guest, "limited_loaded")
    assert loaded["time_limit_s"] == 3 and loaded["expires_at"]
    event = found(guest, "expired_event")
    assert (event["kind"], event["module"]) == ("expired", "fork_counter")
    rec = found(guest, "expired_record")
    assert (rec["status"], rec["gone_reason"]) == ("gone", "expired")
    assert rec["final"]["reason"] == "unload" and rec["final"]["complete"] is True
    assert found(guest, "expired_in_kernel") is False


def test_kprobes_switched_off_and_on_are_events(guest):
    kinds = [(e["kind"], e["module"]) for e in found(guest, "armed_events")]
    assert kinds == [("disarmed", None), ("armed", None)]


def test_an_upload_loads_and_a_renamed_or_foreign_upload_is_refused(guest):
    rec = found(guest, "upload")
    assert (rec["module"], rec["status"], rec["origin"]) == ("conc_01", "loaded", "service")
    assert rec["ko"].startswith("/var/lib/kprobegen/modules/")
    status, body = found(guest, "upload_renamed")
    assert status == 422 and "is named 'conc_02', not 'conc_03'" in body["error"]
    status, body = found(guest, "upload_not_ours")
    assert status == 409 and "not a kprobegen module" in body["error"]
    assert found(guest, "uploads_kept") == 1     # the refused ones are not kept; conc_01's is, until unloaded


def test_eight_clients_sixteen_modules_no_count_lost_nothing_left(guest):
    report = found(guest, "concurrency")
    assert report["errors"] == []
    plan = {f"conc_{i:02d}": syncs(i) for i in range(CLIENTS * PER_CLIENT)}
    assert report["snapshots"] == plan and report["finals"] == plan
    assert sorted(report["loaded_by"].values()) == sorted(["spec"] * 4 + ["upload"] * 6 + ["path"] * 6)
    assert report["left"] == [] and report["kprobes_left"] == ""
    kinds = report["event_kinds"]
    assert kinds.count("loaded") == 16 and kinds.count("unloaded") == 16


def test_event_numbers_go_on_after_a_restart(guest):
    before, after = found(guest, "seq_before_restart"), found(guest, "events_after_restart")
    assert after["oldest"] == 1 and after["missed"] is False
    seqs = [e["seq"] for e in after["events"]]
    assert seqs == list(range(1, len(seqs) + 1)) and seqs[-1] > before
    kinds = [e["kind"] for e in after["events"] if e["seq"] > before]
    assert kinds[:2] == ["stopped", "started"]
    gone = found(guest, "gone_after_restart")        # gone records, with their counts, survive the restart
    assert gone == {"fork_counter": "expired", "sync_latency": "client-exited"}


def test_nothing_is_left_and_the_kernel_did_not_complain(guest):
    assert guest["ours_end"].strip() == "" and guest["kprobes_end"].strip() == ""
    assert not any(w in guest["dmesg"] for w in ("WARNING:", "BUG:", "Oops", "Call Trace"))
    assert "internal error" not in guest["log"] and "housekeeping:" not in guest["log"]
