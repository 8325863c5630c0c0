"""Every example in modules/ builds, loads and counts exactly on 5.10, 6.1 and 6.12.

One VM per kernel loads all four example modules at once and runs one workload; every count is
exact and, where the hook has no filter, equal to the kernel's own dynamic kprobe on the same
symbol in the same run (tracefs kprobe_profile). The specs are the same on every kernel: the
kernel differences live in the templates.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kprobegen.pipeline import build_module
from kprobegen.pipeline import prepare
from kprobegen.report import parse_log
from kprobegen.vm import Oracle, run

MODULES = Path(__file__).resolve().parent.parent / "modules"
pytestmark = [pytest.mark.vm, pytest.mark.build]

SYNCS = 5
# `cat` opens /proc/version (fd 3), /nope (ENOENT), /proc/uptime (fd 3), /nope2 (ENOENT):
# 4 opens by cat, 2 failures with -2; the redirections are opened by sh, not cat.
WORKLOAD = (
    f"for i in $(seq {SYNCS}); do sync; done; "
    "cat /proc/version /nope /proc/uptime /nope2 > /dev/null 2>&1; "
    "sh -c 'exit 0'; echo done"
)


@pytest.fixture(scope="module")
def examples_run(each_kernel, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"examples-{each_kernel.release}")
    # fork_counter loads last: the insmods of the other modules are forks too, and the oracle
    # (armed just before the workload) must see the same window as the module.
    paths = sorted(MODULES.glob("*.yaml"), key=lambda p: (p.stem == "fork_counter", p.stem))
    specs = {p.stem: prepare(p, each_kernel) for p in paths}
    kos = [build_module(spec, out / name, kernel=each_kernel, strict=True).ko for name, spec in specs.items()]
    result = run(each_kernel, kos, ["sh", "-c", WORKLOAD], timeout=240,
                 oracles=[Oracle("kprobe", "ksys_sync"), Oracle("kretprobe", "ksys_sync"),
                          Oracle("kprobe", "kernel_clone")])
    result.raise_for_status()
    assert [load.insmod_rc for load in result.loads] == [0] * len(kos), [load.error for load in result.loads]
    assert result.exit_code == 0 and result.stdout == "done\n", (result.stdout, result.stderr)
    log = parse_log(result.kernel_log)
    return result, {r.module: r for r in log.results()}


def test_every_example_reported_completely(examples_run, each_kernel):
    _, results = examples_run
    assert set(results) == {"sync_counter", "fork_counter", "sync_latency", "openat_by_cat"}
    for report in results.values():
        assert report.complete and report.lost_lines == 0 and report.reason == "unload"
        assert report.kernel == each_kernel.release
        assert all(hook.missed == 0 for hook in report.hooks.values())


def test_sync_counter_exact_and_equal_to_the_oracle(examples_run):
    run_, results = examples_run
    sync = results["sync_counter"].hooks["sync"]
    assert (sync.hits, sync.dropped) == (SYNCS, 0)
    assert sync.by == {b"sync": SYNCS}
    assert run_.oracle["kprobe:ksys_sync"] == (SYNCS, 0)


def test_sync_latency_buckets_sum_to_hits(examples_run):
    run_, results = examples_run
    hook = results["sync_latency"].hooks["sync_ns"]
    assert hook.hits == SYNCS == run_.oracle["kretprobe:ksys_sync"][0]
    hist = hook.histogram
    assert (hist.of, hist.scale, hist.count) == ("latency", "log2", SYNCS)
    assert sum(b.count for b in hist.buckets) == SYNCS
    assert 0 < hist.min <= hist.max and hist.min * SYNCS <= hist.sum <= hist.max * SYNCS
    for bucket in hist.buckets:  # log2 buckets: [2^k, 2^(k+1))
        assert bucket.high == 2 * bucket.low


def test_fork_counter_two_hooks_counted_apart_equal_the_oracle(examples_run):
    run_, results = examples_run
    hooks = results["fork_counter"].hooks
    oracle_hits = run_.oracle["kprobe:kernel_clone"][0]
    assert oracle_hits >= SYNCS + 2  # every sync and cat, and the inner sh, is a fork
    # The module also sees one fork the oracle (disarmed after the workload) does not: the
    # one that runs its own rmmod.
    module_hits = oracle_hits + 1
    assert hooks["clone"].hits == hooks["clone_by_tgid"].hits == module_hits
    assert sum(hooks["clone"].by.values()) == sum(hooks["clone_by_tgid"].by.values()) == module_hits
    assert hooks["clone_by_tgid"].by[1] == 2  # init: the workload's subshell, and that rmmod
    assert hooks["clone"].by_kind == "comm" and hooks["clone_by_tgid"].by_kind == "tgid"


def test_openat_filter_counts_only_cat(examples_run):
    _, results = examples_run
    hooks = results["openat_by_cat"].hooks
    hist = hooks["open_result"].histogram
    assert hooks["open_result"].hits == 4
    assert [(b.low, b.high, b.count) for b in hist.buckets] == [(-2, 0, 2), (2, 4, 2)]  # fd 3, twice
    assert (hist.min, hist.max, hist.sum) == (-2, 3, 2)
    assert hooks["open_errors"].hits == 2 and hooks["open_errors"].by == {-2: 2}
