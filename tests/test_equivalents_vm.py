"""The rendered bpftrace scripts, run for real: bpftrace inside the disposable 6.1 VM.

The host kernel has no kprobes, but the guest's has kprobes, BPF and BTF: the host's bpftrace
binary and its shared libraries go into the initramfs, each script runs with
``bpftrace -c WORKLOAD SCRIPT`` (probes attached before the workload starts, END when it exits),
and its report is checked for exact counts: the same counts the C module's VM tests assert.

The SystemTap script runs too: SystemTap 4.8's pass 4 fails on Debian's 6.1.192 kernel
(task_work_cancel changed), and tests/tools/equivalents.py's stap_runtime() builds against a runtime
copy with that one call renamed; staprun and stapio go into the guest like bpftrace.

Time: about 90 s: two VM boots (~25 s each under TCG, most of it unpacking bpftrace's ~200 MB
of libraries), one Kbuild build and one `stap -p4` (~45 s, cached by stap afterwards).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import require
from kprobegen.codegen import render_bpftrace, render_stap
from kprobegen.spec import parse_spec

pytestmark = [pytest.mark.vm, pytest.mark.build, pytest.mark.slow]

WORKLOAD = """\
sync
sync
sync
cat /proc/version > /dev/null
cat /nonexistent-kpg 2> /dev/null
true
"""

# One spec, many features; the workload above makes every count known in advance.
MAIN = """\
module: equiv_main
hooks:
  - name: sync_by_comm
    symbol: ksys_sync
    count_by: comm
  - name: sync_latency
    probe: kretprobe
    symbol: ksys_sync
    histogram: {of: latency}
  - name: sync_nobody
    symbol: ksys_sync
    filter: {comm: nobody}
  - name: sync_events
    symbol: ksys_sync
    print: {burst: 2, interval_ms: 3600000, fields: [arg0]}
  - name: cat_opens
    probe: kretprobe
    symbol: do_sys_openat2
    filter: {comm: cat}
    count_by: retval
  - name: cat_dfd
    symbol: do_sys_openat2
    filter: {comm: cat}
    count_by: arg0
  - name: cat_at_fdcwd_64
    symbol: do_sys_openat2
    filter: {comm: cat, arg0: 4294967196}
  - name: cat_at_fdcwd_negative
    symbol: do_sys_openat2
    filter: {comm: cat, arg0: -100}
  - name: cat_open_errors
    probe: kretprobe
    symbol: do_sys_openat2
    filter: {comm: cat, retval: "< 0"}
    histogram: {of: retval, scale: linear, min: -4, max: 4, step: 2}
"""

LIMITED = """\
module: equiv_limited
hooks:
  - name: sync_two
    symbol: ksys_sync
limits: {max_hits: 2}
"""


def guest_files_for(binary: str) -> list[tuple[Path, str]]:
    """The binary and every shared library it loads (ldd), at the same paths in the guest."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = sorted({word for line in out.splitlines() for word in line.split() if word.startswith("/")})
    return [(Path(binary), binary)] + [(Path(lib), lib) for lib in libs]


def tool_files(binaries) -> list[tuple[Path, str]]:
    add: list[tuple[Path, str]] = []
    for binary in binaries:
        add += [f for f in guest_files_for(binary) if f[1] not in {g for _, g in add}]
    return add


@pytest.fixture(scope="module")
def guest_run(kernel_61, tmp_path_factory):
    """Both specs' bpftrace scripts and SystemTap modules, each run over the workload in one
    guest: {"main": bpftrace output, "limited": …, "stap_main": stap output, "stap_limited": …}."""
    from tools.equivalents import build_stap, stap_tree
    from kprobegen.vm import run

    require(shutil.which("bpftrace") is not None, "apt-get install bpftrace")
    require(shutil.which("stap") is not None, "apt-get install systemtap")
    require(shutil.which("qemu-system-x86_64") is not None, "apt-get install qemu-system-x86 busybox-static")
    work = tmp_path_factory.mktemp("bt-vm")
    (work / "workload.sh").write_text(WORKLOAD)
    tree = stap_tree(kernel_61)
    runner = ["set -u"]
    for name, text in (("main", MAIN), ("limited", LIMITED)):
        spec = parse_spec(text, f"{name}.yaml")
        (work / f"{name}.bt").write_text(render_bpftrace(spec).text)
        build_stap(render_stap(spec).text, tree, work, f"stap_{name}")
        runner += [
            f"echo '=== {name}'",
            f"/usr/bin/bpftrace -c '/bin/sh /root/kpg-bt/workload.sh' /root/kpg-bt/{name}.bt; echo \"=== rc $?\"",
            f"echo '=== stap_{name}'",
            f"/usr/bin/staprun -c '/bin/sh /root/kpg-bt/workload.sh' /root/kpg-bt/stap_{name}.ko; echo \"=== rc $?\"",
        ]
    (work / "run.sh").write_text("\n".join(runner) + "\n")
    add = [(work, "/root/kpg-bt")] + tool_files(["/usr/bin/bpftrace", "/usr/bin/staprun", "/usr/lib/systemtap/stapio"])
    result = run(kernel_61, [], ["/bin/sh", "/root/kpg-bt/run.sh"], add=add, timeout=600, memory_mb=1536)
    assert result.status == "ok", result.console_tail[-3000:]
    sections = dict(re.findall(r"^=== (\w+)\n(.*?)^=== rc 0$", result.stdout, re.S | re.M))
    assert set(sections) == {"main", "limited", "stap_main", "stap_limited"}, \
        f"a run failed:\n{result.stdout}\n{result.stderr}"
    return sections


def values(output: str) -> dict[str, str]:
    """bpftrace's printed map lines, "@map[key]: value" → {"@map[key]": "value"}."""
    return dict(re.findall(r"^(@\S+?): (.+)$", output, re.M))


def test_counts_filters_keys_and_latency_are_exact(guest_run):
    v = values(guest_run["main"])
    assert v["@hits[sync_by_comm]"] == "3"
    assert v["@sync_by_comm__by[sync]"] == "3"
    assert v["@hits[sync_latency]"] == "3"
    assert re.fullmatch(r"count 3, average \d+, total \d+", v["@stats[sync_latency]"])
    assert int(v["@min[sync_latency]"]) > 0
    assert "@hits[sync_nobody]" not in v, "a comm filter that matches nobody counts nothing"
    assert v["@hits[sync_events]"] == "3"
    # cat opens /proc/version (a new fd) and fails on /nonexistent-kpg (-ENOENT): keyed by
    # the signed return value.
    assert v["@hits[cat_opens]"] == "2"
    fds = {k: n for k, n in v.items() if k.startswith("@cat_opens__by[")}
    assert fds.pop("@cat_opens__by[-2]") == "1"
    assert len(fds) == 1 and re.fullmatch(r"@cat_opens__by\[\d+\]", *fds) and list(fds.values()) == ["1"]
    # Both opens are relative to AT_FDCWD, an int -100. Arguments are whole 64-bit registers
    # compared as signed 64-bit (as in C: (long)regs_get_kernel_argument()), and x86-64 leaves
    # a 32-bit int zero-extended in its register: -100 arrives as 4294967196, not -100.
    assert v["@cat_dfd__by[4294967196]"] == "2"
    assert v["@hits[cat_at_fdcwd_64]"] == "2"
    assert "@hits[cat_at_fdcwd_negative]" not in v
    assert v["@hits[cat_open_errors]"] == "1"
    assert re.fullmatch(r"count 1, average -2, total -2", v["@stats[cat_open_errors]"])


def test_linear_histogram_with_negative_min_is_shifted_and_exact(guest_run):
    # min -4 is shifted by 4 for lhist(): -2 lands in the printed bucket [2, 4).
    out = guest_run["main"]
    hist = out.split("hist hook=cat_open_errors of=retval scale=linear shifted_by=4\n", 1)[1]
    assert re.match(r"@cat_open_errors__hist: \n\[2, 4\)\s+1 \|@+\|", hist), hist[:300]


def test_print_is_rate_limited_to_the_burst(guest_run):
    events = re.findall(r"^event hook=sync_events pid=\d+ tgid=\d+ cpu=\d+ comm=sync arg0=-?\d+$", guest_run["main"], re.M)
    assert len(events) == 2


def test_max_hits_stops_counting(guest_run):
    v = values(guest_run["limited"])
    assert v["@hits[sync_two]"] == "2"
    assert v["@disarmed[sync_two]"] == "1"


def test_report_leaves_no_stray_maps(guest_run):
    # END prints, then clears every map, so bpftrace's own exit-time dump adds nothing.
    for out in (guest_run["main"], guest_run["limited"]):
        tail = out.rsplit("report module=", 1)[1]
        assert len(re.findall(r"^@hits\[", tail, re.M)) == len(set(re.findall(r"^@hits\[(\w+)\]", tail, re.M)))
        assert not re.search(r"^@\S+: 0$", tail, re.M)


# --------------------------------------------------------------------------------------------
# The module and its bpftrace script, side by side on one workload

COMPARED = """\
module: equiv_compare
hooks:
  - name: sync_by_comm
    symbol: ksys_sync
    count_by: comm
  - name: sync_latency
    probe: kretprobe
    symbol: ksys_sync
    histogram: {of: latency}
  - name: sync_nobody
    symbol: ksys_sync
    filter: {comm: nobody}
  - name: cat_opens
    probe: kretprobe
    symbol: do_sys_openat2
    filter: {comm: cat}
    count_by: retval
  - name: cat_dfd
    symbol: do_sys_openat2
    filter: {comm: cat, arg0: 4294967196}
    count_by: arg0
  - name: cat_errors
    probe: kretprobe
    symbol: do_sys_openat2
    filter: {comm: cat, retval: "< 0"}
    count_by: tgid
"""


def module_report(kernel_log: str, module: str) -> dict[str, tuple[int, dict[str, int]]]:
    """hook → (hits, {key: count}) from the module's last report frame (docs/report-protocol.md)."""
    lines = re.findall(rf"^[0-7],\d+,\d+,[^;]*;kprobegen/2 {module} \d+ (\w+) (.*)$", kernel_log, re.M)
    begins = [i for i, (kind, _) in enumerate(lines) if kind == "begin"]
    assert begins, f"no report from {module} in the kernel log"
    hooks: dict[str, tuple[int, dict[str, int]]] = {}
    for kind, rest in lines[begins[-1]:]:
        fields = dict(f.split("=", 1) for f in rest.split())
        if kind == "hook":
            hooks[fields["name"]] = (int(fields["hits"]), {})
        elif kind == "key":
            hooks[fields["hook"]][1][fields["key"]] = int(fields["count"])
        elif kind == "end":
            break
    return hooks


def bpftrace_report(output: str, hooks: list[str]) -> dict[str, tuple[int, dict[str, int]]]:
    v = values(output)
    out = {}
    for hook in hooks:
        keys = {k[len(f"@{hook}__by["):-1]: int(n) for k, n in v.items() if k.startswith(f"@{hook}__by[")}
        out[hook] = (int(v.get(f"@hits[{hook}]", "0")), keys)
    return out


def stap_report(output: str) -> dict[str, tuple[int, dict[str, int]]]:
    """hook → (hits, {key: count}) from the SystemTap script's end report."""
    end = output.rsplit("reason=end", 1)[1]
    hooks: dict[str, tuple[int, dict[str, int]]] = {}
    for kind, rest in re.findall(r"^(hook|key) (.*)$", end, re.M):
        fields = dict(f.split("=", 1) for f in rest.split() if "=" in f)
        if kind == "hook":
            hooks[fields["name"]] = (int(fields["hits"]), {})
        else:
            hooks[fields["hook"]][1][fields["key"]] = int(fields["count"])
    return hooks


def test_module_stap_and_bpftrace_count_the_same(kernel_61, tmp_path):
    """The C module, the SystemTap script and the bpftrace script, all three attached to one
    workload in one guest, report the same hits and the same keys."""
    from tools.equivalents import build_stap, stap_tree
    from kprobegen.pipeline import build_module
    from kprobegen.vm import run

    require(shutil.which("bpftrace") is not None, "apt-get install bpftrace")
    require(shutil.which("stap") is not None, "apt-get install systemtap")
    spec = parse_spec(COMPARED, "equiv_compare.yaml")
    built = build_module(spec, tmp_path / "build", kernel=kernel_61)
    work = tmp_path / "guest"
    work.mkdir()
    # stap 4.8's pass 4 needs the runtime fix of tools.equivalents.stap_runtime() for this kernel.
    build_stap(render_stap(spec).text, stap_tree(kernel_61), work, "stap_equiv_compare")
    (work / "workload.sh").write_text(WORKLOAD)
    (work / "equiv_compare.bt").write_text(render_bpftrace(spec).text)
    (work / "bt.sh").write_text(
        "/usr/bin/bpftrace -c '/bin/sh /root/kpg-bt/workload.sh' /root/kpg-bt/equiv_compare.bt > /root/bt.out 2>&1\n")
    # The module is loaded first, then staprun starts the stap module and runs bt.sh, in which
    # bpftrace attaches and runs the workload. Nothing any of them counts (sync, and opens by
    # processes named cat) happens outside the workload.
    (work / "run.sh").write_text(
        "/usr/bin/staprun -c '/bin/sh /root/kpg-bt/bt.sh' /root/kpg-bt/stap_equiv_compare.ko; echo \"=== stap rc $?\"\n"
        # A shell loop, not cat: the module is still loaded and counts opens by cat.
        "echo '=== bpftrace'\nwhile IFS= read -r line; do echo \"$line\"; done < /root/bt.out\n")
    add = [(work, "/root/kpg-bt")]
    add += tool_files(["/usr/bin/bpftrace", "/usr/bin/staprun", "/usr/lib/systemtap/stapio"])
    result = run(kernel_61, [built.ko], ["/bin/sh", "/root/kpg-bt/run.sh"], add=add, timeout=600, memory_mb=1536)
    assert result.status == "ok" and "=== stap rc 0" in result.stdout, result.stdout + result.stderr
    stap_out, bt_out = result.stdout.split("=== bpftrace\n", 1)
    names = [h.hook_name for h in spec.hooks]
    c = module_report(result.kernel_log, "equiv_compare")
    bt = bpftrace_report(bt_out, names)
    st = stap_report(stap_out)
    # comm keys: the protocol escapes bytes outside 0x21..0x7e; these comms need none.
    assert c == bt, f"module {c}\nbpftrace {bt}"
    assert c == st, f"module {c}\nstap {st}"
    assert c["sync_by_comm"] == (3, {"sync": 3}) and c["sync_latency"][0] == 3
    assert c["sync_nobody"] == (0, {}) and c["cat_dfd"] == (2, {"4294967196": 2})
    assert c["cat_errors"][0] == 1 and c["cat_opens"][1]["-2"] == 1


# --------------------------------------------------------------------------------------------
# The SystemTap scripts, run for real


def test_stap_counts_filters_keys_and_latency_are_exact(guest_run):
    st = stap_report(guest_run["stap_main"])
    assert st["sync_by_comm"] == (3, {"sync": 3})
    assert st["sync_latency"] == (3, {})
    assert st["sync_nobody"] == (0, {})
    assert st["sync_events"] == (3, {})
    hits, fds = st["cat_opens"]
    assert hits == 2 and fds.pop("-2") == 1 and list(fds.values()) == [1] and int(*fds) >= 0
    assert st["cat_dfd"] == (2, {"4294967196": 2})
    assert st["cat_at_fdcwd_64"][0] == 2 and st["cat_at_fdcwd_negative"][0] == 0
    out = guest_run["stap_main"]
    assert re.search(r"^hist hook=sync_latency of=latency scale=log2 unit=ns count=3 sum=\d+ min=[1-9]\d* max=\d+$", out, re.M)
    assert re.search(r"^hist hook=cat_open_errors of=retval scale=linear unit=- count=1 sum=-2 min=-2 max=-2$", out, re.M)


def test_stap_linear_histogram_has_the_protocol_buckets(guest_run):
    # @hist_linear(h, -4, 2, 2): regular buckets -4, -2, 0, 2 (= [max-step, max)); -2 is in [-2, 0).
    out = guest_run["stap_main"].split("hist hook=cat_open_errors", 1)[1]
    assert re.search(r"^\s*-2 \|@+\s+1$", out, re.M), out[:600]


def test_stap_print_is_rate_limited_to_the_burst(guest_run):
    events = re.findall(r"^event hook=sync_events pid=\d+ tgid=\d+ cpu=\d+ comm=sync arg0=-?\d+$", guest_run["stap_main"], re.M)
    assert len(events) == 2


def test_stap_max_hits_stops_counting(guest_run):
    out = guest_run["stap_limited"]
    assert re.search(r"^hook name=sync_two probe=kprobe symbol=ksys_sync hits=2 disarmed=1 by=-$", out, re.M), out
