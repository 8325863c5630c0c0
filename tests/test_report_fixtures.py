"""The parser on kernel logs of real runs (tests/fixtures/logs/, see README.md there).

Every capture is read in every form it exists in — dmesg, dmesg -r, /dev/kmsg straight from
the guest; dmesg -T, journalctl -k (short, short-precise), busybox syslogd and classic
syslog made from those captures with the real tools — and must give exactly the counts the
guest's kernel printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from kprobegen.errors import ReportError
from kprobegen import report
from kprobegen.report import parse_log
from kprobegen.report.results import Bucket, Histogram, HookResult, Results

LOGS = Path(__file__).resolve().parent / "fixtures" / "logs"
FORMS = ["dmesg", "dmesg-r", "kmsg", "dmesg-T", "journal-short", "journal-short-precise",
         "busybox-syslog", "syslog"]
K = "6.1.0-56-cloud-amd64"


def _hook(name, symbol, probe, hits, kind=None, by=None, hist=None):
    return HookResult(name, symbol, probe, hits, 0, 0, False, kind, by or {}, hist)


def _r(module, ts, hooks, report=0, reason="unload", instance=0, kernel=K):
    return Results(module, kernel, report, reason, ts, True, 0, [], {h.name: h for h in hooks},
                   instance, [])


def _same_workloads(kernel: str, ts: dict[str, int], tgid: int, latency: tuple,
                    retval: tuple) -> dict[str, list[Results]]:
    """The hand-sync, init-fails, fork-counter and generated-three runs on another kernel:
    the same counts; timestamps, pids, latencies and fd numbers are that run's own."""
    lsum, lmin, lmax, lbuckets = latency
    rsum, rmin, rmax, rbuckets = retval
    return {
        "hand-sync": [_r("kpg_hand_sync", ts["hand"], [_hook("sync", "ksys_sync", "kprobe", 5)],
                         kernel=kernel)],
        "init-fails": [_r("kpg_hand_sync", ts["fails"], [_hook("sync", "ksys_sync", "kprobe", 0)],
                          kernel=kernel)],
        "fork-counter": [_r("fork_counter", ts["fork"], [
            _hook("clone", "kernel_clone", "kprobe", 6, "comm", {b"sh": 4, b"init": 2}),
            _hook("clone_by_tgid", "kernel_clone", "kprobe", 6, "tgid", {tgid: 4, 1: 2})],
            kernel=kernel)],
        "generated-three": [
            _r("sync_counter", ts["sync"], [
                _hook("sync", "ksys_sync", "kprobe", 5, "comm", {b"sync": 3, b"busybox": 2})],
               kernel=kernel),
            _r("sync_latency", ts["latency"], [_hook("sync_ns", "ksys_sync", "kretprobe", 5, hist=Histogram(
                "latency", "log2", "ns", 5, lsum, lmin, lmax, lbuckets))], kernel=kernel),
            _r("openat_by_cat", ts["openat"], [
                _hook("open_result", "do_sys_openat2", "kretprobe", 6, hist=Histogram(
                    "retval", "linear", None, 6, rsum, rmin, rmax, rbuckets)),
                _hook("open_errors", "do_sys_openat2", "kretprobe", 3, "retval", {-2: 3})],
               kernel=kernel),
        ],
    }


EXPECTED = {
    "vm-6.1-hand-sync": [
        _r("kpg_hand_sync", 3652226484, [_hook("sync", "ksys_sync", "kprobe", 5)])],
    "vm-6.1-init-fails": [
        _r("kpg_hand_sync", 3296385190, [_hook("sync", "ksys_sync", "kprobe", 0)])],
    "vm-6.1-fork-counter": [
        _r("fork_counter", 3644679241, [
            _hook("clone", "kernel_clone", "kprobe", 6, "comm", {b"sh": 4, b"init": 2}),
            _hook("clone_by_tgid", "kernel_clone", "kprobe", 6, "tgid", {86: 4, 1: 2})])],
    "vm-6.1-generated-three": [
        _r("sync_counter", 3564508164, [
            _hook("sync", "ksys_sync", "kprobe", 5, "comm", {b"sync": 3, b"busybox": 2})]),
        _r("sync_latency", 3521843174, [
            _hook("sync_ns", "ksys_sync", "kretprobe", 5, hist=Histogram(
                "latency", "log2", "ns", 5, 3313614, 47693, 3055363,
                [Bucket(32768, 65536, 3), Bucket(65536, 131072, 1), Bucket(2097152, 4194304, 1)]))]),
        _r("openat_by_cat", 3478297628, [
            _hook("open_result", "do_sys_openat2", "kretprobe", 6, hist=Histogram(
                "retval", "linear", None, 6, 6, -2, 4, [Bucket(-2, 0, 3), Bucket(4, 6, 3)])),
            _hook("open_errors", "do_sys_openat2", "kretprobe", 3, "retval", {-2: 3})]),
    ],
    "vm-6.1-escaped-comm": [
        _r("kpg_escaped_comm", 5344423987, [
            _hook("sync", "ksys_sync", "kretprobe", 6, "comm",
                  {b"busybox.long na": 3, b'busybox a=b"\\': 2, b"busybox\xff\x01x": 1},
                  Histogram("latency", "log2", "ns", 6, 861266, 46690, 549428,
                            [Bucket(32768, 65536, 4), Bucket(65536, 131072, 1),
                             Bucket(524288, 1048576, 1)]))], report=10)],
}


for _name, _exp in _same_workloads(
        "5.10.0-32-cloud-amd64",
        {"hand": 3274833075, "fails": 3321486651, "fork": 4160478915, "sync": 4272631740,
         "latency": 4244685875, "openat": 4229473973}, 77,
        (9375154, 48088, 9125030, [Bucket(32768, 65536, 3), Bucket(65536, 131072, 1),
                                   Bucket(8388608, 16777216, 1)]),
        (3, -2, 3, [Bucket(-2, 0, 3), Bucket(2, 4, 3)])).items():
    EXPECTED[f"vm-5.10-{_name}"] = _exp
for _name, _exp in _same_workloads(
        "6.12.95+deb12-cloud-amd64",
        {"hand": 4880380434, "fails": 4444592714, "fork": 3752778173, "sync": 5204741605,
         "latency": 5140517309, "openat": 5101110459}, 137,
        (1353913, 46491, 1114124, [Bucket(32768, 65536, 3), Bucket(65536, 131072, 1),
                                   Bucket(1048576, 2097152, 1)]),
        (3, -2, 3, [Bucket(-2, 0, 3), Bucket(2, 4, 3)])).items():
    EXPECTED[f"vm-6.12-{_name}"] = _exp


def _files(name: str) -> list[tuple[str, Path]]:
    found = [(form, LOGS / f"{name}.{form}.txt") for form in FORMS]
    found = [(form, p) for form, p in found if p.exists()]
    if not found:
        pytest.fail(f"no fixture files for {name} in {LOGS}")
    return found


def _parse(path: Path):
    return parse_log(path.read_bytes())


CASES = [(name, form, path) for name in sorted(EXPECTED) for form, path in _files(name)]


@pytest.mark.parametrize("name,form,path", CASES, ids=[f"{n}.{f}" for n, f, _ in CASES])
def test_real_capture_counts(name, form, path):
    p = _parse(path)
    assert p.results() == EXPECTED[name]
    assert (p.unrecognised, p.problems, p.duplicates, p.load_failures) == ({}, [], 0, [])
    assert all(f.complete for f in p.frames)


def test_every_fixture_has_every_form():
    for name in list(EXPECTED) + ["vm-6.1-100-cycles"]:
        assert [f for f, _ in _files(name)] == FORMS, name
        assert (LOGS / f"{name}.source.txt").exists()


@pytest.mark.parametrize("form", FORMS)
def test_escaped_comm_series_and_events(form):
    p = _parse(LOGS / f"vm-6.1-escaped-comm.{form}.txt")
    series = p.results("kpg_escaped_comm", all=True)
    assert [(r.report, r.reason, r.hooks["sync"].hits) for r in series] == [
        (0, "interval", 1), (1, "interval", 1), (2, "interval", 2), (3, "interval", 2),
        (4, "interval", 3), (5, "interval", 5), (6, "interval", 5), (7, "interval", 6),
        (8, "interval", 6), (9, "interval", 6), (10, "unload", 6)]
    assert all(r.complete for r in series)
    assert [(e.seq, e.pid, e.tgid, e.cpu, e.comm, e.values) for e in p.events] == [
        (1, 92, 92, 0, b'busybox a=b"\\', {"retval": 0, "latency_ns": 739741}),
        (14, 94, 94, 0, b'busybox a=b"\\', {"retval": 0, "latency_ns": 150816}),
        (29, 96, 96, 0, b"busybox\xff\x01x", {"retval": 0, "latency_ns": 70773}),
        (38, 98, 98, 0, b"busybox.long na", {"retval": 0, "latency_ns": 74272}),
        (39, 99, 99, 0, b"busybox.long na", {"retval": 0, "latency_ns": 118523}),
        (60, 101, 101, 0, b"busybox.long na", {"retval": 0, "latency_ns": 58526})]


def test_real_kmsg_escapes_the_protocol_escape():
    raw = (LOGS / "vm-6.1-escaped-comm.kmsg.txt").read_text(encoding="latin-1")
    assert r"key=busybox\x5cx20a\x5cx3db\x5cx22\x5cx5c count=2" in raw     # as the kernel wrote it


@pytest.mark.parametrize("form", FORMS)
def test_one_hundred_reloads(form):
    p = _parse(LOGS / f"vm-6.1-100-cycles.{form}.txt")
    fork = p.results("fork_counter", all=True)
    opens = p.results("openat_by_cat", all=True)
    assert [r.instance for r in fork] == list(range(100))
    assert [r.instance for r in opens] == list(range(100))
    assert all(r.complete and r.report == 0 and r.reason == "unload" for r in fork + opens)
    for r in fork:
        assert r.hooks["clone"].by == {b"sh": 4} and r.hooks["clone"].hits == 4
        assert r.hooks["clone_by_tgid"].by == {85: 4}
    for r in opens:
        assert r.hooks["open_result"].hits == 1
        assert r.hooks["open_result"].histogram.buckets == [Bucket(4, 6, 1)]
        assert r.hooks["open_errors"].hits == 0
    assert len({r.ts_ns for r in fork}) == 100       # 100 different reports, none merged
    assert p.results("fork_counter") == [fork[-1]]
    assert len(p.instances) == 200 and p.duplicates == 0 and p.problems == []


def test_real_capture_read_twice_in_two_forms():
    a = (LOGS / "vm-6.1-generated-three.kmsg.txt").read_bytes()
    b = (LOGS / "vm-6.1-generated-three.journal-short.txt").read_bytes()
    p = parse_log(a + b)
    assert p.results() == EXPECTED["vm-6.1-generated-three"]
    assert p.duplicates == 23 and p.problems == []
    # and with the hundred reloads: nothing doubles, nothing merges
    c = (LOGS / "vm-6.1-100-cycles.dmesg.txt").read_bytes()
    p = parse_log(c + c)
    assert len(p.results("fork_counter", all=True)) == 100 and p.duplicates == 1400


def test_real_capture_with_a_line_lost():
    lines = (LOGS / "vm-6.1-fork-counter.dmesg.txt").read_text().splitlines()
    victim = next(i for i, ln in enumerate(lines) if "fork_counter 6 key" in ln)
    p = parse_log("\n".join(lines[:victim] + lines[victim + 1:]))
    [r] = p.results("fork_counter", all=True)
    assert (r.complete, r.lost_lines) == (False, 1)
    assert "1 line(s) missing between SEQ 1 and 8" in r.problems
    assert r.hooks["clone_by_tgid"].by == {1: 2}         # what is there, nothing invented
    with pytest.raises(ReportError, match="fork_counter report 0 \\(unload\\): 1 line\\(s\\) lost"):
        p.results("fork_counter")


def test_real_capture_cut_by_a_wrapped_ring_buffer():
    lines = (LOGS / "vm-6.1-generated-three.dmesg.txt").read_text().splitlines()
    # the oldest lines are gone, up to and including sync_latency's begin
    cut = next(i for i, ln in enumerate(lines) if "sync_latency 1 begin" in ln) + 1
    p = parse_log("\n".join(lines[cut:]))
    assert [r.module for r in p.results()] == ["sync_counter"]      # the only complete one
    lat = p.results("sync_latency", all=True)
    assert [(r.complete, r.lost_lines, r.kernel, r.report) for r in lat] == [(False, 1, None, 0)]
    assert p.problems[0].startswith("sync_latency: SEQ 0..1 not in the log (2 line(s)")
    with pytest.raises(ReportError, match="not one line from openat_by_cat among 11 protocol line.s., modules found: sync_latency, sync_counter"):
        p.results("openat_by_cat")


# ------------------------------------------------------------------ protocol 2 captures

V2_KERNELS = ["5.10", "6.1", "6.12"]
GUEST_FORMS = ["kmsg", "dmesg-r", "dmesg"]


def _v2(ver: str, what: str, form: str) -> str:
    return f"vm-{ver}-v2-{what}.{form}.txt"


@pytest.mark.parametrize("form", GUEST_FORMS)
@pytest.mark.parametrize("ver", V2_KERNELS)
def test_v2_capture_counts_exactly(ver, form):
    """Real protocol-2 lines (line checks computed by the module in the guest kernel): the
    workload's counts, complete, nothing refused; the same Results in every form."""
    p = _parse(LOGS / _v2(ver, "generated-three", form))
    sync, lat, openat = p.results()
    assert (sync.module, lat.module, openat.module) == ("sync_counter", "sync_latency", "openat_by_cat")
    assert all(r.complete and r.kernel.startswith(ver + ".") for r in (sync, lat, openat))
    assert sync.hooks["sync"].hits == 5 and sync.hooks["sync"].by == {b"sync": 3, b"busybox": 2}
    h = lat.hooks["sync_ns"]
    assert h.hits == h.histogram.count == 5 == sum(b.count for b in h.histogram.buckets)
    assert openat.hooks["open_result"].hits == 6 and openat.hooks["open_errors"].by == {-2: 3}
    assert p.rejected == {} and p.problems == []
    assert (p.notes == []) == (form != "dmesg")     # plain dmesg cannot show who wrote a line
    assert p.results() == _parse(LOGS / _v2(ver, "generated-three", "kmsg")).results()


@pytest.mark.parametrize("ver", V2_KERNELS)
def test_v2_forged_report_refused_where_the_log_shows_the_facility(ver):
    """The workload wrote a checked report with hits=999999 to /dev/kmsg: the kernel gave
    those records the user facility, so /dev/kmsg and dmesg -r show them as user space's."""
    for form in ("kmsg", "dmesg-r"):
        p = _parse(LOGS / _v2(ver, "forged", form))
        (r,) = p.results()
        assert r.complete and r.hooks["sync"].hits == 3 and r.hooks["sync"].by == {b"sync": 3}
        assert list(p.rejected) == [report.R_USER] and len(p.rejected[report.R_USER]) == 4
    # plain dmesg shows no facility: the forged frame is read, and conflicts with the real one
    p = _parse(LOGS / _v2(ver, "forged", "dmesg"))
    with pytest.raises(ReportError, match="claim report 0"):
        p.results()
    assert p.notes
