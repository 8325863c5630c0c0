"""End-to-end: modules generated from modules/*.yaml, built with Kbuild, loaded in the VM.

Every count is exact and checked against an oracle in the same VM run (the kernel's own
dynamic kprobe on the same symbol, counted in tracefs kprobe_profile).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kprobegen.vm import Oracle, run

pytestmark = [pytest.mark.vm, pytest.mark.build]

from .conftest import require
from .reportlines import buckets, hooks, keys, records

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def generated(kernel, kernel_tree, tmp_path_factory):
    """name -> .ko for the example specs in modules/, built for the VM's kernel."""
    try:
        from kprobegen.pipeline import build_module
        from kprobegen.spec import load_spec
    except ImportError as e:  # the generator is another engineer's piece
        require(False, f"the generator is not importable ({e})")
    out = tmp_path_factory.mktemp("generated")
    built = {}

    def get(name: str) -> Path:
        if name not in built:
            spec = load_spec(ROOT / "modules" / f"{name}.yaml")
            built[name] = build_module(spec, out_dir=out / name, kernel=kernel).ko
        return built[name]

    return get


# -- one VM: sync by comm, sync latency (kretprobe), openat filtered by comm --------------

SYNCS, BUSYBOX_SYNCS = 3, 2
CAT_WORKLOAD = (
    f"for i in $(seq {SYNCS}); do sync; done; "
    f"for i in $(seq {BUSYBOX_SYNCS}); do /bin/busybox sync; done; "   # comm 'busybox'
    "cat /proc/version /nope /proc/uptime /nope2 /nope3 > /dev/null; "   # 5 opens by cat, 3 fail
    "ls / > /tmp/x; cat /tmp/x > /dev/null; echo hi > /tmp/y; "          # opens by ls and sh too
    "echo done"
)


@pytest.fixture(scope="module")
def multi(kernel, generated):
    r = run(kernel, [generated("sync_counter"), generated("sync_latency"), generated("openat_by_cat")],
            ["sh", "-c", CAT_WORKLOAD],
            oracles=[Oracle("kprobe", "ksys_sync"), Oracle("kretprobe", "ksys_sync"),
                     Oracle("kretprobe", "do_sys_openat2")], timeout=180)
    r.raise_for_status()
    assert r.exit_code == 0 and r.stdout == "done\n", (r.stdout, r.stderr)
    assert [m.insmod_rc for m in r.loads] == [0, 0, 0]
    assert [m.rmmod_rc for m in r.loads] == [0, 0, 0]
    return r


def test_sync_hits_equal_the_oracle(multi):
    n = SYNCS + BUSYBOX_SYNCS
    h = hooks(multi.kernel_log, "sync_counter")["sync"]
    assert (h["hits"], h["missed"], h["dropped"]) == (str(n), "0", "0")
    assert multi.oracle["kprobe:ksys_sync"] == (n, 0)


def test_keyed_count_by_comm_is_the_exact_breakdown(multi):
    assert keys(multi.kernel_log, "sync_counter", "sync") == {"sync": SYNCS, "busybox": BUSYBOX_SYNCS}


def test_kretprobe_latency_histogram_sums_to_its_hits(multi):
    n = SYNCS + BUSYBOX_SYNCS
    h = hooks(multi.kernel_log, "sync_latency")["sync_ns"]
    assert h["hits"] == str(n)
    assert multi.oracle["kretprobe:ksys_sync"] == (n, 0)
    b = buckets(multi.kernel_log, "sync_latency", "sync_ns")
    assert sum(c for _, _, c in b) == n
    [hist] = [r for r in records(multi.kernel_log, "sync_latency") if r["type"] == "hist"]
    assert (hist["count"], hist["unit"], hist["scale"]) == (str(n), "ns", "log2")
    assert 0 < int(hist["min"]) <= int(hist["max"])
    for low, high, _ in b:  # log2 buckets
        assert int(high) == 2 * int(low)


def test_filter_by_comm_counts_only_that_process(multi):
    h = hooks(multi.kernel_log, "openat_by_cat")
    assert h["open_result"]["hits"] == "6"        # 5 files + /tmp/x, all by cat
    assert h["open_errors"]["hits"] == "3"        # the three missing files
    assert keys(multi.kernel_log, "openat_by_cat", "open_errors") == {"-2": 3}   # -ENOENT
    assert sum(c for _, _, c in buckets(multi.kernel_log, "openat_by_cat", "open_result")) == 6
    # ls, sh and the rest opened files too: the oracle saw them, the filtered hooks did not
    assert multi.oracle["kretprobe:do_sys_openat2"][0] > 6


# -- two hooks on one symbol, counted apart, against the oracle ---------------------------

def test_two_hooks_in_one_module_are_counted_apart(kernel, generated):
    r = run(kernel, [generated("fork_counter")],
            ["sh", "-c", "for i in 1 2 3 4; do /bin/true; done; (/bin/true) & wait"],
            oracles=[Oracle("kprobe", "kernel_clone")], timeout=180)
    r.raise_for_status()
    hits, missed = r.oracle["kprobe:kernel_clone"]
    # the workload's forks: /init's subshell for it, then sh's 4 × /bin/true and 1 subshell
    assert (hits, missed) == (6, 0)
    h = hooks(r.kernel_log, "fork_counter")
    # The module also counts the fork that runs its own rmmod; the oracle is disarmed by then.
    assert h["clone"]["hits"] == h["clone_by_tgid"]["hits"] == str(hits + 1)
    assert (h["clone"]["by"], h["clone_by_tgid"]["by"]) == ("comm", "tgid")
    assert keys(r.kernel_log, "fork_counter", "clone") == {"sh": 5, "init": 2}
    by_tgid = keys(r.kernel_log, "fork_counter", "clone_by_tgid")
    assert by_tgid["1"] == 2 and sum(by_tgid.values()) == hits + 1


# -- 100 load/unload cycles ---------------------------------------------------------------

CYCLES = 100


def test_100_load_unload_cycles_leave_nothing_behind(kernel, generated):
    loop = (f"for i in $(seq {CYCLES}); do "
            "insmod /root/fork_counter.ko && insmod /root/openat_by_cat.ko && cat /proc/version > /dev/null "
            "&& rmmod openat_by_cat && rmmod fork_counter || exit $i; done")
    r = run(kernel, [], ["sh", "-c", loop],
            add=[(generated("fork_counter"), "fork_counter.ko"), (generated("openat_by_cat"), "openat_by_cat.ko")],
            timeout=300)
    assert r.status == "ok", (r.status, r.reason, r.console_tail)   # no Oops/WARNING/BUG in the log
    assert r.exit_code == 0, r.stderr
    assert r.leftover_modules == []
    assert r.leftover_kprobes == []
    for word in ("Oops", "WARNING:", "BUG:"):
        assert word not in r.kernel_log
    for mod in ("fork_counter", "openat_by_cat"):
        recs = records(r.kernel_log, mod)
        assert sum(1 for x in recs if x["type"] == "load") == CYCLES
        assert sum(1 for x in recs if x["type"] == "end") == CYCLES
    # each cycle's cat opened /proc/version once: every unload report says so
    opens = [x["hits"] for x in records(r.kernel_log, "openat_by_cat")
             if x["type"] == "hook" and x["name"] == "open_result"]
    assert opens == ["1"] * CYCLES
