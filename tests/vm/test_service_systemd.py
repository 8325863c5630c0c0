"""The manager service as a systemd unit, installed the way README.md says, in the full Debian
guest booted with systemd as PID 1 (guest.run(init="systemd")).

One boot for the whole module: the script installs contrib/systemd/kprobegen.service,
`systemctl enable --now`s it (Type=notify: active only once READY=1 came), loads
sync_counter through the socket with kprobegen.client, counts syncs exactly across a
`systemctl stop`/`start` and a SIGKILL that systemd restarts (Restart=on-failure), unloads,
then shows that each of the two capabilities the unit keeps is needed (a drop-in without it
makes a load fail), and prints the journal and `systemd-analyze security`. Each answer is a
section "=== NAME" that the tests below read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .test_host_guest import MODULES
from .test_service_guest import DRIVER, answer, hits, ok

pytestmark = [pytest.mark.vm, pytest.mark.build, pytest.mark.slow]

UNIT = Path(__file__).resolve().parents[2] / "contrib" / "systemd" / "kprobegen.service"

SCRIPT = r'''
set -u
cp /root/drive.py /tmp/drive.py; chmod 644 /tmp/drive.py; cd /tmp
S=/run/kprobegen; ST=/var/lib/kprobegen; C=/var/cache/kprobegen; RW=$S/kprobegen.sock; RO=$S/kprobegen-ro.sock
D="/opt/kprobegen/bin/python /tmp/drive.py"
show() { systemctl show -p ActiveState,SubState,Result,NRestarts,ExecMainStatus,StatusText,MainPID kprobegen; }
active_again() {    # until systemd has restarted the service (a new main pid) and it is active
	for i in $(seq 600); do
		pid=$(systemctl show -p MainPID --value kprobegen)
		[ "$(systemctl is-active kprobegen)" = active ] && [ "$pid" != 0 ] && [ "$pid" != "$1" ] && return 0
		sleep 0.2
	done
	return 1
}
echo "=== pid1"; cat /proc/1/comm

# installed as README.md says; kprobegen is /usr/local/bin/kprobegen in the image
install -m 0644 /root/kprobegen.service /etc/systemd/system/
groupadd --system kprobegen
systemctl daemon-reload
echo "=== enable"; systemctl enable --now kprobegen 2>&1; echo "rc=$?"
echo "=== started"; show; systemctl show -p Type,NotifyAccess,CapabilityBoundingSet kprobegen
$D health $RO GET /v1/health

$D load $RW POST /v1/modules '{"spec_path": "/root/specs/sync_counter.yaml"}'
sync; sync; sync
$D snapshot1 $RW GET /v1/modules/sync_counter/snapshot
useradd -M -N -g nogroup -G kprobegen member
setpriv --reuid=member --regid=nogroup --init-groups $D member_ro $RO GET /v1/modules/sync_counter/snapshot
echo "=== files"; stat -c '%n %a %U' $S $RW $RO $ST $ST/state.json $C $C/tmp
# what the service may write, tried in its mount namespace (ProtectSystem=strict, ReadOnlyPaths=, ...)
PID=$(systemctl show -p MainPID --value kprobegen)
echo "=== writable"
for d in / /etc /usr/src /tmp /var/tmp /root /home /run /run/lock /sys/kernel/debug /proc/sys \
		$ST $C/tmp $S; do
	[ -d $d ] || { echo "$d missing"; continue; }
	nsenter -t $PID -m sh -c "touch $d/.kpg-probe 2>/dev/null && rm $d/.kpg-probe" && echo "$d rw" || echo "$d ro"
done
echo "=== dev"; nsenter -t $PID -m ls -1 /dev

# a stop leaves the module loaded and counting, and the runtime folder; the sockets go
systemctl stop kprobegen
echo "=== stopped"; show; ls -1A $S; echo "ours: $(ls /sys/kernel/debug/kprobegen)"
sync; sync
systemctl start kprobegen
$D list2 $RO GET /v1/modules
$D snapshot2 $RO GET /v1/modules/sync_counter/snapshot

# a crash: systemd starts it again, and it adopts the module
OLD=$(systemctl show -p MainPID --value kprobegen)
systemctl kill -s KILL kprobegen
active_again "$OLD"; rc=$?; echo "=== restarted"; echo "rc=$rc"; show
sync
$D snapshot3 $RO GET /v1/modules/sync_counter/snapshot
$D unload $RW DELETE /v1/modules/sync_counter
cp $C/host/sync_counter/sync_counter.ko /tmp/sync_counter.ko     # /tmp: the system's, read-only to it

# each capability kept is needed: a drop-in without it, and a load of the built module fails
mkdir /etc/systemd/system/kprobegen.service.d
for cap in CAP_SYS_MODULE CAP_SYSLOG; do
	keep=$(echo CAP_SYS_MODULE CAP_SYSLOG | tr ' ' '\n' | grep -vx $cap)
	printf '[Service]\nCapabilityBoundingSet=\nCapabilityBoundingSet=%s\n' "$keep" \
		> /etc/systemd/system/kprobegen.service.d/caps.conf
	systemctl daemon-reload; systemctl restart kprobegen
	echo "=== bounding_without_$cap"; systemctl show -p CapabilityBoundingSet,ActiveState kprobegen
	$D "load_without_$cap" $RW POST /v1/modules '{"ko_path": "/tmp/sync_counter.ko"}'
	echo "=== loaded_without_$cap"; ls /sys/kernel/debug/kprobegen
	rmmod sync_counter 2>/dev/null
done
rm -r /etc/systemd/system/kprobegen.service.d
systemctl daemon-reload; systemctl restart kprobegen
$D load_with_both $RW POST /v1/modules '{"ko_path": "/tmp/sync_counter.ko"}'
$D unload_with_both $RW DELETE /v1/modules/sync_counter
# lifetime client: the service watches its client's /proc/<pid>; the driver exits at once
$D client_load $RW POST /v1/modules '{"ko_path": "/tmp/sync_counter.ko", "lifetime": "client"}'
sleep 3
$D client_gone $RO GET /v1/modules/sync_counter
$D client_forget $RW DELETE /v1/modules/sync_counter

systemctl stop kprobegen
echo "=== final"; show; ls -1A $S; echo "ours: $(ls /sys/kernel/debug/kprobegen)"; ls -1 $ST
echo "=== journal"; journalctl -t kprobegen -o cat --no-pager
echo "=== unit_journal"; journalctl -u kprobegen -o cat --no-pager
echo "=== security"; systemd-analyze security --no-pager kprobegen
echo "=== kprobes"; cat /sys/kernel/debug/kprobes/list
echo "=== dmesg"; dmesg
'''


def in_systemd_guest(image, script: str, add=()) -> dict[str, str]:
    """Run ``script`` (sh) in the guest under systemd; its stdout is sections "=== NAME" -> text."""
    from kprobegen.vm import guest

    out, err = bytearray(), bytearray()
    r = guest.run(image, ["sh", "-c", script], add=list(add), timeout=1800, init="systemd",
                  stdout=out.extend, stderr=err.extend)
    r.raise_for_status()
    assert r.exit_code == 0, err.decode(errors="replace")[-3000:]
    sections, name = {}, None
    for line in out.decode(errors="replace").splitlines(keepends=True):
        if line.startswith("=== "):
            name = line[4:].strip()
            sections[name] = ""
        elif name is not None:
            sections[name] += line
    return sections


@pytest.fixture(scope="module")
def guest(image, tmp_path_factory):
    out = tmp_path_factory.mktemp("systemd")
    (out / "drive.py").write_text(DRIVER)
    sections = in_systemd_guest(image, SCRIPT, add=[(MODULES, "/root/specs"), (out / "drive.py", "/root/drive.py"),
                                                    (UNIT, "/root/kprobegen.service")])
    (out / "sections.json").write_text(json.dumps(sections, indent=1))     # to read when a test fails
    return sections


def props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_systemd_is_pid_1_and_the_unit_starts_as_type_notify(guest):
    assert guest["pid1"].strip() == "systemd"
    assert guest["enable"].rstrip().endswith("rc=0")
    assert "multi-user.target.wants/kprobegen.service" in guest["enable"]
    started = props(guest["started"])
    assert (started["Type"], started["ActiveState"], started["SubState"]) == ("notify", "active", "running")
    # STATUS= from the service: what `systemctl status` shows
    assert started["StatusText"] == "serving on /run/kprobegen, state in /var/lib/kprobegen"
    assert started["CapabilityBoundingSet"] == "cap_sys_module cap_syslog"
    health = ok(guest, "health")
    assert health["pid"] == int(started["MainPID"]) and health["state_dir"] == "/var/lib/kprobegen"


def test_a_spec_loads_through_the_socket_and_counts_exactly_across_stop_and_crash(guest, image):
    loaded = ok(guest, "load")
    assert (loaded["module"], loaded["status"], loaded["origin"], loaded["loaded_by"]) == \
        ("sync_counter", "loaded", "service", 0)
    assert loaded["kernel"] == image.release
    # built in the unit's cache directory (KPROBEGEN_CACHE=%C/kprobegen)
    assert loaded["ko"] == "/var/cache/kprobegen/host/sync_counter/sync_counter.ko"
    snap = ok(guest, "snapshot1")["results"]
    assert hits(snap) == 3 and snap["hooks"]["sync"]["by"] == {"sync": 3}
    assert hits(ok(guest, "member_ro")["results"]) == 3       # the group's read-only socket
    # stopped: the module stays loaded and counts; started again, it is the service's again
    assert [(m["module"], m["status"], m["origin"]) for m in ok(guest, "list2")["modules"]] == \
        [("sync_counter", "loaded", "service")]
    assert hits(ok(guest, "snapshot2")["results"]) == 5
    # SIGKILL: systemd restarts it (Restart=on-failure) and the module's counts go on
    assert guest["restarted"].startswith("rc=0")
    restarted = props(guest["restarted"])
    assert (restarted["ActiveState"], restarted["NRestarts"]) == ("active", "1")
    assert hits(ok(guest, "snapshot3")["results"]) == 6
    final = ok(guest, "unload")["results"]
    assert final["reason"] == "unload" and final["complete"] is True and final["lost_lines"] == 0
    assert hits(final) == 6 and final["hooks"]["sync"]["by"] == {"sync": 6}
    assert guest["kprobes"].strip() == ""
    assert not any(w in guest["dmesg"] for w in ("WARNING:", "BUG:", "Oops"))


def test_state_runtime_and_cache_directories(guest):
    modes = dict(line.split(" ", 1) for line in guest["files"].splitlines())
    assert modes["/run/kprobegen"] == "755 root"
    assert modes["/run/kprobegen/kprobegen.sock"] == modes["/run/kprobegen/kprobegen-ro.sock"] == "666 root"
    assert modes["/var/lib/kprobegen"] == "755 root"
    assert modes["/var/lib/kprobegen/state.json"] == "600 root"        # UMask=0077
    assert modes["/var/cache/kprobegen"] == "755 root" and modes["/var/cache/kprobegen/tmp"] == "755 root"
    # a clean stop: the sockets are gone, the folder stays (RuntimeDirectoryPreserve=yes), the
    # module stays loaded; the state stays in the state folder
    for name in ("stopped", "final"):
        lines = guest[name].splitlines()
        stopped = props(guest[name])
        assert (stopped["ActiveState"], stopped["Result"], stopped["ExecMainStatus"]) == ("inactive", "success", "0")
        assert not any(line.endswith(".sock") for line in lines), guest[name]
    assert "ours: sync_counter" in guest["stopped"]
    final = guest["final"].splitlines()
    assert "ours: " in final and "state.json" in final


def test_the_service_may_write_its_own_folders_only(guest):
    writable = dict(line.split(" ", 1) for line in guest["writable"].splitlines())
    assert writable == {**{d: "ro" for d in ("/", "/etc", "/usr/src", "/tmp", "/var/tmp", "/root", "/home", "/run",
                                             "/run/lock", "/sys/kernel/debug", "/proc/sys")},
                        **{d: "rw" for d in ("/var/lib/kprobegen", "/var/cache/kprobegen/tmp", "/run/kprobegen")}}
    dev = guest["dev"].split()      # PrivateDevices=yes, and the kernel log bound in
    assert "kmsg" in dev and "null" in dev and "vda" not in dev and "mem" not in dev, dev


def test_each_capability_the_unit_keeps_is_needed(guest):
    assert props(guest["bounding_without_CAP_SYS_MODULE"])["CapabilityBoundingSet"] == "cap_syslog"
    status, body = answer(guest, "load_without_CAP_SYS_MODULE")
    assert status == 409 and "insmod sync_counter failed" in body["error"] \
        and "Operation not permitted" in body["error"], body
    assert props(guest["bounding_without_CAP_SYSLOG"])["CapabilityBoundingSet"] == "cap_sys_module"
    status, body = answer(guest, "load_without_CAP_SYSLOG")     # /dev/kmsg: kernel.dmesg_restrict=1
    assert status == 409 and "cannot read the kernel log (/dev/kmsg: Operation not permitted)" in body["error"] \
        and "CAP_SYSLOG" in body["error"], body
    for cap in ("CAP_SYS_MODULE", "CAP_SYSLOG"):
        assert guest[f"loaded_without_{cap}"].strip() == ""
    assert ok(guest, "load_with_both")["module"] == "sync_counter"
    assert ok(guest, "unload_with_both")["results"]["reason"] == "unload"


def test_a_module_that_lives_as_long_as_its_client(guest):
    """The hardened service still sees its client's /proc/<pid>: a module loaded with lifetime
    client loads, and goes when the client exits."""
    assert ok(guest, "client_load")["lifetime"] == "client"
    gone = ok(guest, "client_gone")
    assert (gone["status"], gone["gone_reason"]) == ("gone", "client-exited"), gone
    assert ok(guest, "client_forget")["module"] == "sync_counter"


def test_the_journal_has_the_services_lines(guest):
    journal = guest["journal"]
    for line in ("kprobegen serve: serving on /run/kprobegen/kprobegen.sock (root) and "
                 "/run/kprobegen/kprobegen-ro.sock (read-only), state in /var/lib/kprobegen",
                 "kprobegen serve: loaded sync_counter for uid 0",
                 "kprobegen serve: stopped; loaded modules stay loaded",
                 "kprobegen serve: unloaded sync_counter for uid 0"):
        assert line in journal, journal[-3000:]
    assert re.search(r"kprobegen serve: adopted sync_counter", journal), journal[-3000:]
    assert "Scheduled restart job, restart counter is at 1" in guest["unit_journal"]


def test_systemd_analyze_security_rates_it(guest):
    rating = re.search(r"Overall exposure level for kprobegen\.service: ([0-9.]+)", guest["security"])
    assert rating and float(rating[1]) <= 2.5, guest["security"]
