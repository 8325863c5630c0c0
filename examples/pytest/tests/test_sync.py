"""Exact kernel counts as test assertions: each workload calls the probed function a known
number of times, and the test says how many."""

import pytest

SYNCS = 5


def test_every_sync_is_counted_once(kprobes, specs):
    with kprobes(specs / "sync_by_comm.yaml") as probe:
        probe.run(f"for i in $(seq {SYNCS}); do sync; done")
    hook = probe.results.hooks["sync"]
    assert hook.hits == SYNCS
    assert hook.by == {b"sync": SYNCS}        # comm keys are bytes, as the kernel has them


def test_a_spec_written_inline_counts_one_program_only(kprobes):
    spec = {"module": "sync_by_my_tool",
            "hooks": [{"name": "sync", "symbol": "ksys_sync", "filter": {"comm": "my-tool"}}]}
    with kprobes(spec) as probe:
        probe.run("cp /bin/sync /tmp/my-tool && /tmp/my-tool && /tmp/my-tool && sync")
    assert probe.results.hooks["sync"].hits == 2       # the plain `sync` is not my-tool


def test_a_yaml_string_and_a_live_snapshot(kprobes):
    with kprobes("""
        module: sync_snapshot
        hooks:
          - name: sync
            symbol: ksys_sync
    """) as probe:
        probe.run("sync; sync")
        assert probe.snapshot().hooks["sync"].hits == 2     # live, while loaded
        probe.run("sync")
    assert probe.results.hooks["sync"].hits == 3


def test_latency_histogram_has_one_sample_per_call(kprobes, specs, tmp_path):
    workload = tmp_path / "workload.sh"
    workload.write_text(f"#!/bin/sh\nfor i in $(seq {SYNCS}); do sync; done\n")
    with kprobes(specs / "sync_latency.yaml") as probe:
        probe.add(workload, "/tmp/workload.sh")        # files the workload needs go where it runs
        probe.run("sh /tmp/workload.sh")
    hist = probe.results.hooks["sync_ns"].histogram
    assert hist.count == SYNCS and hist.min > 0


@pytest.mark.parametrize("calls", [1, 3])
def test_parametrized_workloads(kprobes, specs, calls):
    with kprobes(specs / "sync_by_comm.yaml") as probe:
        probe.run(" ; ".join(["sync"] * calls))
    assert probe.results.hooks["sync"].hits == calls
