"""Host mode (`kprobegen load` / `list` / `snapshot` / `unload`) on a real running kernel: the
full Debian guest's. The machines here cannot load modules, so each test class of checks runs
as one script inside one boot of the guest, and the checks read what it printed.

The first boot builds every example inside the guest against its running kernel, loads them
all, runs a workload with the kernel's own dynamic kprobes armed as oracles, snapshots and then
unloads each module. The second loads prebuilt modules and walks the failure paths, then does
100 load/snapshot/unload cycles.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import require

pytestmark = [pytest.mark.vm, pytest.mark.build, pytest.mark.slow]

MODULES = Path(__file__).resolve().parents[2] / "modules"
SYNCS = 5
WORKLOAD = (f"for i in $(seq {SYNCS}); do sync; done; "
            "cat /proc/version /nope /proc/uptime /nope2 > /dev/null 2>&1; sh -c 'exit 0'")
EXAMPLES = ("sync_counter", "sync_latency", "openat_by_cat", "fork_counter")
#: Loaded from a spec (built by `load`, while neither module below is loaded yet: the builds
#: run cat and fork); the others are built first and loaded from their folders.
FROM_SPEC = ("sync_counter", "sync_latency")


def in_guest(image, script: str, add=()) -> dict[str, str]:
    """Run ``script`` (sh) in the guest; its stdout is sections "=== NAME" -> text."""
    from kprobegen.vm import guest

    out, err = bytearray(), bytearray()
    r = guest.run(image, ["sh", "-c", script], add=list(add), timeout=1500, stdout=out.extend,
                  stderr=err.extend)
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
def examples(image):
    script = ["set -e", "cd /root/specs", "T=/sys/kernel/tracing", 'KDIR="/lib/modules/$(uname -r)/build"']
    for name in EXAMPLES:
        if name not in FROM_SPEC:
            script += [f"kprobegen build {name}.yaml -o /root/out/{name} --kernel-dir \"$KDIR\" >&2"]
    for name in EXAMPLES:
        target = f"{name}.yaml" if name in FROM_SPEC else f"/root/out/{name}"
        script += [f"echo '=== load {name}'", f"kprobegen load {target} --json"]
    script += [
        "echo '=== list'", "kprobegen list --json",
        # the kernel's own kprobes on the same symbols, armed only around the workload
        "echo 'p:kpg/sync ksys_sync' >> $T/kprobe_events",
        "echo 'r:kpg/syncret ksys_sync' >> $T/kprobe_events",
        # openat by cat, traced with the kernel's own filter on comm (GNU cat also opens its
        # libraries and locale: the count is whatever the kernel sees, compared as it is)
        "echo 'r:kpg/open do_sys_openat2 ret=$retval:s32' >> $T/kprobe_events",
        """echo 'comm == "cat"' > $T/events/kpg/open/filter""",
        "echo > $T/trace",
        "echo 1 > $T/events/kpg/enable",
        f"{{ {WORKLOAD}; }} || true",      # cat fails on /nope (set -e spares a list before ||)
        "echo 0 > $T/events/kpg/enable",
        # read with the shell's own read: a `cat` here would be counted by openat_by_cat
        "show() { while IFS= read -r l; do printf '%s\\n' \"$l\"; done < \"$1\"; }",
        "echo '=== oracle'", "show $T/kprobe_profile",
        "echo '=== trace'", "show $T/trace",
        "echo '-:kpg/sync' >> $T/kprobe_events", "echo '-:kpg/syncret' >> $T/kprobe_events",
        "echo '-:kpg/open' >> $T/kprobe_events",
    ]
    for name in EXAMPLES:
        script += [f"echo '=== snapshot {name}'", f"kprobegen snapshot {name} --json"]
    for name in reversed(EXAMPLES):
        script += [f"echo '=== unload {name}'", f"kprobegen unload {name} --json"]
    script += ["echo '=== after'", "kprobegen list --json", "echo '=== kprobes'", "cat /sys/kernel/debug/kprobes/list",
               "echo '=== dmesg'", "dmesg"]
    return in_guest(image, "\n".join(script), add=[(MODULES, "/root/specs")])


def oracle(sections, event: str) -> int:
    for line in sections["oracle"].splitlines():
        fields = line.split()
        if fields and fields[0] == event:
            return int(fields[1])
    raise AssertionError(f"no {event} in {sections['oracle']}")


def test_every_example_loads_and_is_listed(examples, image):
    for name in EXAMPLES:
        loaded = json.loads(examples[f"load {name}"])
        assert loaded["module"] == name and loaded["kernel"] == image.release
        if name in FROM_SPEC:
            assert loaded["spec"] == f"/root/specs/{name}.yaml"
        else:
            assert (loaded["spec"], loaded["ko"]) == (None, f"/root/out/{name}/{name}.ko")
    assert sorted(m["module"] for m in json.loads(examples["list"])) == sorted(EXAMPLES)
    assert json.loads(examples["after"]) == []
    assert examples["kprobes"].strip() == ""            # no probe left behind
    assert not any(w in examples["dmesg"] for w in ("WARNING:", "BUG:", "Oops"))


def test_counts_are_exact_and_equal_the_kernels_own_kprobes(examples):
    final = {name: json.loads(examples[f"unload {name}"]) for name in EXAMPLES}
    for report in final.values():
        assert report["complete"] is True and report["reason"] == "unload" and report["lost_lines"] == 0
    sync = final["sync_counter"]["hooks"]["sync"]
    assert sync["hits"] == SYNCS == oracle(examples, "syncret") == oracle(examples, "sync")
    assert sync["by"] == {"sync": SYNCS}
    latency = final["sync_latency"]["hooks"]["sync_ns"]
    assert latency["hits"] == SYNCS and latency["histogram"]["count"] == SYNCS
    opens = final["openat_by_cat"]["hooks"]
    traced = [line.rsplit("ret=", 1)[1].strip() for line in examples["trace"].splitlines() if " open: " in line]
    assert len(traced) >= 4                          # at least the workload's four files
    assert opens["open_result"]["hits"] == len(traced)
    failed = [r for r in traced if int(r) < 0]
    assert failed.count("-2") >= 2
    assert opens["open_errors"]["by"] == {r: failed.count(r) for r in set(failed)}


def test_a_snapshot_equals_the_final_counts_when_nothing_ran_between(examples):
    for name in ("sync_counter", "sync_latency", "openat_by_cat"):
        snap, final = json.loads(examples[f"snapshot {name}"]), json.loads(examples[f"unload {name}"])
        assert snap["reason"] == "snapshot" and snap["complete"] is True
        assert snap["hooks"] == final["hooks"], name
    # fork_counter also sees the forks between its snapshot and its removal: the shell starting
    # `kprobegen unload`, and any that process makes (none: it calls delete_module itself). Only those.
    snap = json.loads(examples["snapshot fork_counter"])["hooks"]["clone"]
    final = json.loads(examples["unload fork_counter"])["hooks"]["clone"]
    assert final["hits"] >= snap["hits"] + 1
    grew = {comm: n - snap["by"].get(comm, 0) for comm, n in final["by"].items() if n != snap["by"].get(comm, 0)}
    assert set(grew) <= {"sh", "kprobegen"} and sum(grew.values()) == final["hits"] - snap["hits"], grew


@pytest.fixture(scope="module")
def failures(image, kernel_61, tmp_path_factory):
    """Prebuilt modules from this machine, the refusals, and 100 cycles, in one boot."""
    from kprobegen.errors import KernelError
    from kprobegen.pipeline import build_module
    from kprobegen.kernels import find_kernel
    from kprobegen.spec import load_spec

    require(kernel_61.release == image.release,
            f"the guest runs {image.release} and this machine's headers are for {kernel_61.release}: "
            "apt-get upgrade linux-headers-cloud-amd64 or rebuild the image")
    out = tmp_path_factory.mktemp("prebuilt")
    built = build_module(load_spec(MODULES / "sync_counter.yaml"), out / "here", kernel=kernel_61)
    try:
        other = find_kernel("bullseye")
    except KernelError:
        require(False, "kprobegen kernels fetch bullseye")
    foreign = build_module(load_spec(MODULES / "sync_counter.yaml"), out / "bullseye", kernel=other)
    handmade = out / "handmade"
    shutil.copytree(Path(__file__).resolve().parents[1] / "data" / "handmade", handmade)
    done = subprocess.run(["make", "-C", str(kernel_61.build_dir), f"M={handmade}", "modules"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    plain = sorted(handmade.glob("*.ko"))[0]
    bad_spec = out / "blacklisted.yaml"
    bad_spec.write_text("module: bl\nhooks:\n  - symbol: __die\n")
    cycles = (
        "from kprobegen import host\n"
        "for i in range(100):\n"
        "    host.load_ko('/root/here.ko')\n"
        "    assert [m.name for m in host.loaded()] == ['sync_counter']\n"
        "    host.snapshot('sync_counter')\n"
        "    host.unload('sync_counter')\n"
        "print(len(host.loaded()))\n"
    )
    # The running kernel's profile (1.5 s of /proc/kallsyms parsing under TCG) is kept while
    # only kprobegen modules come and go; a module that is not ours makes it anew.
    profiles = (
        "import subprocess\n"
        "from kprobegen import host\n"
        "first = host.running_profile()\n"
        "host.load_ko('/root/here.ko')\n"
        "with_ours = host.running_profile()\n"
        "host.unload('sync_counter')\n"
        "after = host.running_profile()\n"
        "foreign = next(n for n in ('dummy', 'tun', 'veth', 'loop') if subprocess.run(['modprobe', n]).returncode == 0)\n"
        "with_foreign = host.running_profile()\n"
        "subprocess.run(['modprobe', '-r', foreign], check=True)\n"
        "print(with_ours is first, after is first, with_foreign is first, 'ksys_sync' in with_foreign.functions)\n"
    )
    script = "\n".join([
        "cd /root",
        "run() { name=$1; shift; echo \"=== $name\"; \"$@\" 2>&1; r=$?; echo \"=== $name rc\"; echo $r; }",
        "run prebuilt kprobegen load here.ko --json",
        "run twice kprobegen load here.ko",
        "exec 3< /sys/kernel/debug/kprobegen/sync_counter/report",   # holds a reference: in use
        "run busy kprobegen unload sync_counter",
        "run busy_list kprobegen list --json",
        "exec 3<&-",
        "run unload kprobegen unload sync_counter --json",
        "run vermagic kprobegen load foreign.ko",
        f"run not_ours kprobegen load {plain.name}",
        "run not_loaded kprobegen unload sync_counter",
        "run not_ours_unload kprobegen unload virtio_blk",
        "run blacklisted kprobegen load blacklisted.yaml",
        "run nonroot setpriv --reuid=65534 --regid=65534 --clear-groups kprobegen load here.ko",
        "mv /lib/modules/$(uname -r)/build /root/build-aside",
        "run no_headers kprobegen load specs/sync_counter.yaml",
        "mv /root/build-aside /lib/modules/$(uname -r)/build",
        "run cycles /opt/kprobegen/bin/python cycles.py",
        "run profiles /opt/kprobegen/bin/python profiles.py",
        "echo '=== modules'; grep -c '^sync_counter ' /proc/modules || true",
        "echo '=== kprobes'; cat /sys/kernel/debug/kprobes/list",
        "echo '=== dmesg'; dmesg",
    ])
    (out / "cycles.py").write_text(cycles)
    (out / "profiles.py").write_text(profiles)
    add = [(built.ko, "/root/here.ko"), (foreign.ko, "/root/foreign.ko"), (plain, f"/root/{plain.name}"),
           (bad_spec, "/root/blacklisted.yaml"), (out / "cycles.py", "/root/cycles.py"),
           (out / "profiles.py", "/root/profiles.py"),
           (MODULES, "/root/specs")]
    return in_guest(image, script, add=add)


def rc(sections, name) -> int:
    return int(sections[f"{name} rc"].strip())


def test_a_prebuilt_module_loads_and_refusals_are_one_line(failures):
    assert rc(failures, "prebuilt") == 0 and json.loads(failures["prebuilt"])["module"] == "sync_counter"
    refused = {
        "twice": "kprobegen: error: module sync_counter is already loaded by kprobegen: unload it first",
        "vermagic": "kprobegen: error: /root/foreign.ko was built for kernel 5.10.",
        "not_ours": "kprobegen: error: /root/",
        "not_loaded": "kprobegen: error: module sync_counter is not loaded",
        "not_ours_unload": "kprobegen: error: module virtio_blk is not a kprobegen module",
        "blacklisted": "kprobegen: error: blacklisted.yaml:3:13: hooks[0].symbol: symbol __die is in the kprobe blacklist",
        "nonroot": "kprobegen: error: cannot load modules on this machine: loading modules needs root",
        "no_headers": "kprobegen: error: no kernel build tree at /lib/modules/",
    }
    for name, start in refused.items():
        assert rc(failures, name) != 0, name
        assert failures[name].startswith(start), (name, failures[name])
        assert failures[name].count("\n") == 1, (name, failures[name])      # one line
    assert "not a kprobegen module" in failures["not_ours"]
    assert "linux-headers-" in failures["no_headers"]


def test_a_module_in_use_is_not_removed_and_stays_listed(failures):
    assert rc(failures, "busy") == 1
    assert failures["busy"].startswith("kprobegen: error: rmmod sync_counter failed: ")
    assert "in use" in failures["busy"] and "stays loaded" in failures["busy"]
    assert [m["module"] for m in json.loads(failures["busy_list"])] == ["sync_counter"]
    final = json.loads(failures["unload"])
    assert rc(failures, "unload") == 0 and final["complete"] is True and final["hooks"]["sync"]["hits"] == 0


def test_100_cycles_leave_nothing_behind(failures):
    assert rc(failures, "cycles") == 0, failures["cycles"]
    assert failures["cycles"].strip() == "0"
    assert failures["modules"].strip() == "0"
    assert failures["kprobes"].strip() == ""
    assert not any(w in failures["dmesg"] for w in ("WARNING:", "BUG:", "Oops"))


def test_the_running_kernels_profile_is_kept_while_only_our_modules_change(failures):
    assert rc(failures, "profiles") == 0, failures["profiles"]
    assert failures["profiles"].split() == ["True", "True", "False", "True"]
