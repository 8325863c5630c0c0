"""The spec features beyond plain counting, exact in a real kernel (Debian 12's 6.1):
max_hits disarms a hook, rate-limited event printing, periodic reports (a time series),
argument filters and histograms, count_by cpu/pid, and the report's escaping of a comm
that holds spaces and '='."""

from __future__ import annotations

import pytest

from kprobegen.pipeline import build_module
from kprobegen.pipeline import prepare
from kprobegen.report import parse_log
from kprobegen.spec import parse_spec
from kprobegen.vm import Oracle, run

pytestmark = [pytest.mark.vm, pytest.mark.build]

CAPPED = """
module: capped
hooks:
  - {name: sync, symbol: ksys_sync}
  - {name: sync_ret, probe: kretprobe, symbol: ksys_sync}
limits: {max_hits: 4}
"""

FEATURES = """
module: features
hooks:
  - name: printed
    symbol: ksys_sync
    print: {burst: 3, interval_ms: 3600000}
  - name: by_cpu
    symbol: ksys_sync
    count_by: cpu
  - name: dd_reads
    symbol: vfs_read
    filter: {comm: dd, arg2: [">= 1000", "< 2000"]}
    count_by: arg2
    histogram: {of: arg2, scale: linear, min: 0, max: 4000, step: 1000}
  - name: by_pid
    probe: kretprobe
    symbol: ksys_sync
    filter: {retval: 0}
    count_by: pid
    histogram: {of: retval}
  - name: odd_comm
    symbol: ksys_sync
    count_by: comm
  - name: stat_int
    probe: kretprobe
    symbol: vfs_fstatat
    filter: {comm: stat, arg0: -100}
    count_by: retval
    types: {arg0: int, retval: int}
  - name: stat_long
    probe: kretprobe
    symbol: vfs_fstatat
    filter: {comm: stat}
    count_by: arg0
report: {interval_ms: 200}
"""

SYNCS = 10
ODD_COMM = b"busybox a=b c"
TOTAL = SYNCS + 1
# dd reads 5 blocks of 1234 bytes from /dev/zero: 5 vfs_read calls with count (arg2) 1234.
# Busybox runs argv[1] as the applet when its own name starts with "busybox", so a link named
# "busybox a=b c" calls sync(2) once with that comm: a space and an '=' to escape.
WORKLOAD = (
    f"for i in $(seq {SYNCS}); do sync; done; "
    "dd if=/dev/zero of=/dev/null bs=1234 count=5 2>/dev/null; "
    "ln -s /bin/busybox '/tmp/busybox a=b c' && '/tmp/busybox a=b c' sync; "
    "stat /nope > /dev/null 2>&1; stat /nope2 > /dev/null 2>&1; "
    "sleep 1; echo ok"
)


@pytest.fixture(scope="module")
def features_run(kernel_61, tmp_path_factory):
    out = tmp_path_factory.mktemp("features")
    kos = []
    for text in (CAPPED, FEATURES):
        spec = prepare(parse_spec(text, "features.yaml"), kernel_61)
        kos.append(build_module(spec, out / spec.module, kernel=kernel_61, strict=True).ko)
    result = run(kernel_61, kos, ["sh", "-c", WORKLOAD], timeout=240,
                 oracles=[Oracle("kprobe", "ksys_sync")])
    result.raise_for_status()
    assert result.exit_code == 0 and result.stdout == "ok\n", (result.stdout, result.stderr)
    return result, parse_log(result.kernel_log)


def test_max_hits_disarms_each_hook_exactly(features_run):
    result, log = features_run
    assert result.oracle["kprobe:ksys_sync"][0] == TOTAL
    (report,) = log.results("capped")
    for name in ("sync", "sync_ret"):
        hook = report.hooks[name]
        assert (hook.hits, hook.disarmed) == (4, True), name


def test_events_are_rate_limited_to_the_burst(features_run):
    _, log = features_run
    events = [e for e in log.events if e.module == "features" and e.hook == "printed"]
    assert len(events) == 3
    assert {e.comm for e in events} == {b"sync"}
    assert [e.seq for e in events] == sorted(e.seq for e in events)


def test_periodic_reports_form_a_time_series(features_run):
    _, log = features_run
    series = log.results("features", all=True)
    assert [r.reason for r in series][-1] == "unload"
    intervals = [r for r in series if r.reason == "interval"]
    assert len(intervals) >= 3  # the workload sleeps 1 s; reports every 200 ms
    assert all(r.complete for r in series)
    hits = [r.hooks["by_cpu"].hits for r in series]
    assert hits == sorted(hits) and hits[-1] == TOTAL
    assert [r.report for r in series] == list(range(len(series)))


def test_argument_filter_key_and_linear_histogram(features_run):
    _, log = features_run
    (report,) = log.results("features")
    dd = report.hooks["dd_reads"]
    assert (dd.hits, dd.by) == (5, {1234: 5})
    assert [(b.low, b.high, b.count) for b in dd.histogram.buckets] == [(1000, 2000, 5)]
    assert (dd.histogram.min, dd.histogram.max, dd.histogram.sum) == (1234, 1234, 5 * 1234)


def test_count_by_cpu_pid_and_retval_filter(features_run):
    _, log = features_run
    (report,) = log.results("features")
    assert report.hooks["by_cpu"].by == {0: TOTAL}  # the VM has one CPU
    by_pid = report.hooks["by_pid"]
    assert by_pid.hits == TOTAL and sum(by_pid.by.values()) == TOTAL
    assert len(by_pid.by) == TOTAL  # every sync is its own process
    assert [(b.low, b.high, b.count) for b in by_pid.histogram.buckets] == [(0, 1, TOTAL)]


def test_a_comm_with_space_and_equals_round_trips(features_run):
    result, log = features_run
    (report,) = log.results("features")
    assert report.hooks["odd_comm"].by == {b"sync": SYNCS, ODD_COMM: 1}
    # In the kernel log the key is escaped: one token, no bare space or '=' (dmesg shows the
    # module's text as printed; /dev/kmsg escapes its backslash once more, as \x5c).
    assert any(" key hook=odd_comm key=busybox\\x20a\\x3db\\x20c count=1 chk=" in line
               for line in result.log_forms["dmesg"].splitlines())


def test_int_typed_argument_and_return_value(features_run):
    """vfs_fstatat(int dfd, ...) returns int: typed as int, AT_FDCWD is -100 and ENOENT is -2;
    as the raw 64-bit register (the default, long) the same dfd reads 4294967196."""
    _, log = features_run
    (report,) = log.results("features")
    typed, raw = report.hooks["stat_int"], report.hooks["stat_long"]
    assert typed.hits == raw.hits == 2  # one stat(2) of a missing path per `stat`
    assert typed.by == {-2: typed.hits}
    assert raw.by == {(1 << 32) - 100: raw.hits}
