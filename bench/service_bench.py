"""The manager service (`kprobegen serve`) in the full Debian guest, in one boot (issue #14's benchmarks).

    .venv/bin/python bench/service_bench.py [--requests N] [--rounds N] [--syncs N] [--accel auto|kvm|tcg]

The service is started in the background in the guest, and one Python process there (the
guest's kprobegen venv) drives it over the read-write socket with `kprobegen.client.Client`,
one connection kept alive throughout:

1. API round trips. Four example modules (modules/*.yaml, built on this machine for the
   guest's kernel) are loaded through the API, then, alternating request by request in
   `--requests` rounds (the order rotated every round): `GET /v1/snapshot` (every module),
   `GET /v1/modules/sync_counter/snapshot`, `GET /v1/modules` (the list); beside them, in the
   same process, a direct open+read of each loaded module's debugfs report file
   (/sys/kernel/debug/kprobegen/<module>/report), the same reads followed by what the service
   does with them (`parse_log`, the module's latest Results, `to_json()`), the service's own
   work for the request called in-process (`kprobegen.host.snapshot` of each module, the
   response model's JSON, read back), one file alone, and `kprobegen.host.loaded()` (what
   `kprobegen list` reads); `GET /v1/events` with nothing new is the HTTP floor. The driver's
   own CPU time in each call, and for the requests the service's (its threads' schedstat) are
   kept beside the times. Median and p99 of each, and the
   ratios API / direct. Counts asserted: `--syncs` sync commands make exactly that many hits
   in sync_counter and sync_latency, through the API and in the file, in every answer of the
   timed loop, and in the final counts of the unload; every answer names every module.
2. Loading: the same prebuilt `.ko` (sync_counter), alternating in `--rounds` rounds (order
   rotated): `Client.load(ko_path=…)` vs the command `kprobegen load --no-service FILE.ko`
   (direct: host mode in the command's process) vs `insmod`, and a spec whose build is cached
   (built once first, untimed) through `Client.load(spec_path=…)` vs `kprobegen load
   --no-service SPEC`; beside them the command without --no-service, which goes through the
   running service (the CLI as its client). Only the load is timed; each is unloaded its own
   way (API, `kprobegen unload`, rmmod) after one sync(2), whose one hit is asserted in the
   final counts.
   Beside them, what the service runs for each request called in the driver's own process
   (`kprobegen.host.load_ko`, `kprobegen.pipeline.load_on_host`: the work without HTTP), and
   `true` as a command (what starting any process costs in this guest), and the steps of a
   cached spec load, each timed alone. After every load and unload the driver waits until the
   service is idle (a service that watches module uevents adopts a module loaded behind its
   back and reads the final counts of one removed behind its back): that work is not the next
   load's, and the service's CPU time for each cycle is printed beside it.

Prints the tables; never asserts a time. Numbers in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kprobegen.kernels import find_kernel  # noqa: E402
from kprobegen.pipeline import build_module  # noqa: E402
from kprobegen.spec import load_spec  # noqa: E402
from kprobegen.vm import guest  # noqa: E402

MODULES = ("sync_counter", "sync_latency", "fork_counter", "openat_by_cat")

# Runs in the guest, with the guest's kprobegen venv (/opt/kprobegen/bin/python). Prints one
# line "KPGB {json}" per result; the raw samples (seconds) go back to the host for the stats.
DRIVER = r'''
import json, os, shutil, subprocess, sys, time
from pathlib import Path
from kprobegen import host
from kprobegen.client import Client, ServiceError
from kprobegen.report import parse_log

requests, rounds, syncs, spid = (int(a) for a in sys.argv[1:5])
KOS = sorted(Path("/root/ko").glob("*.ko"))
KO = Path("/root/ko/sync_counter.ko")
SPEC = Path("/root/specs/sync_counter.yaml")
REPORTS = Path("/sys/kernel/debug/kprobegen")
KPROBEGEN = shutil.which("kprobegen")
ME = Path("/proc/self/comm").read_text().strip()
clock = time.perf_counter


def out(kind, **kw):
    print("KPGB " + json.dumps({"kind": kind, **kw}), flush=True)


def say(msg):
    print(f"drive: {msg}", file=sys.stderr, flush=True)


def run(*argv):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert r.returncode == 0, (argv, r.returncode, r.stderr.decode(errors="replace")[-2000:])
    return r.stdout


c = Client()          # the read-write socket; one connection, kept alive
deadline = time.monotonic() + 180
while True:           # until the service answers
    try:
        if c.request("GET", "/v1/modules")[0] == 200:
            break
    except ServiceError:
        pass
    assert time.monotonic() < deadline, "the service did not answer in 180 s"
    time.sleep(0.2)

# -- 1. round trips -----------------------------------------------------------------------
names = sorted(c.load(ko_path=str(ko))["module"] for ko in KOS)
assert names == sorted(ko.stem for ko in KOS), names
paths = [REPORTS / n / "report" for n in names]
out("modules", names=names)


def sync_hits(snapshots):
    return (snapshots["sync_counter"]["hooks"]["sync"]["hits"],
            snapshots["sync_latency"]["hooks"]["sync_ns"]["hits"])


def clones_by_me(snapshots):
    return snapshots["fork_counter"]["hooks"]["clone"]["by"].get(ME, 0)


before = c.snapshot_all()
assert not before["errors"], before["errors"]
h0, clones0 = sync_hits(before["snapshots"]), clones_by_me(before["snapshots"])
for _ in range(syncs):
    run("sync")
after = c.snapshot_all()
want = (h0[0] + syncs, h0[1] + syncs)
got = sync_hits(after["snapshots"])
assert got == want, f"sync hits through the API: {got}, expected {want}"
assert clones_by_me(after["snapshots"]) - clones0 == syncs, (clones0, clones_by_me(after["snapshots"]))


def read_all():
    for p in paths:
        with open(p, "rb") as f:
            f.read()


def read_one():
    with open(paths[names.index("sync_counter")], "rb") as f:
        f.read()


def read_parse_all():
    # what the service does per module (kprobegen.host.snapshot) minus its two stat checks
    res = {}
    for n, p in zip(names, paths):
        with open(p, "rb") as f:
            text = f.read().decode(errors="replace")
        res[n] = parse_log(text).results(module=n)[-1].to_json()
    return res


def service_work_all():
    # what the service does for GET /v1/snapshot, called in this process: kprobegen.host.snapshot
    # of every module (its checks, the read, parse_log, the latest Results), the response model and
    # its JSON; the answer read back as the client would
    res = {n: host.snapshot(n).to_json() for n in names}
    return json.loads(models.Snapshots(snapshots=res, errors={}).model_dump_json())


try:
    from kprobegen.service import models
    models.Snapshots(snapshots={}, errors={}).model_dump_json()
except Exception as exc:        # the models may move; the rest of the benchmark does not need them
    say(f"no in-process service work: {exc!r}")
    service_work_all = None

conn = None


def api(fn):
    def call():
        r = fn()
        global conn
        if conn is None:
            conn = c._conn.sock
        assert c._conn is not None and c._conn.sock is conn, "the kept-alive connection was replaced"
        return r
    return call


ops = [
    ("api snapshot (all)", api(c.snapshot_all)),
    ("api snapshot (sync_counter)", api(lambda: c.snapshot("sync_counter"))),
    ("api list", api(c.modules)),
    ("api events (none new: the HTTP floor)", api(lambda: c.events(since=10 ** 9))),
    ("read (all)", read_all),
    ("read+parse (all)", read_parse_all),
    ("service's work (all), in-process", service_work_all),
    ("read (sync_counter)", read_one),
    ("host.loaded()", host.loaded),
]
ops = [(name, fn) for name, fn in ops if fn is not None]


def check(name, r):
    if name in ("api snapshot (all)", "service's work (all), in-process"):
        assert sorted(r["snapshots"]) == names and not r["errors"], r
        assert sync_hits(r["snapshots"]) == want, sync_hits(r["snapshots"])
    elif name == "api snapshot (sync_counter)":
        assert r["results"]["hooks"]["sync"]["hits"] == want[0], r
    elif name == "api list":
        assert [m["module"] for m in r] == names and all(m["status"] == "loaded" for m in r), r
    elif name == "read+parse (all)":
        assert sorted(r) == names and sync_hits(r) == want, sync_hits(r)
    elif name.startswith("api events"):
        assert r["events"] == [], r
    elif name == "host.loaded()":
        assert [m.name for m in r] == names, r


CGROUP = Path("/sys/fs/cgroup/kpg-serve")


def server_cpu_cgroup():
    """CPU seconds of the service's cgroup (its threads, live or ended, and the insmod and rmmod
    it runs), read outside the timed calls."""
    with open(CGROUP / "cpu.stat") as f:
        return int(f.readline().split()[1]) / 1e6     # usage_usec


def server_cpu():
    """CPU seconds the service's live threads have run (schedstat), where there is no cgroup:
    a thread that ended takes its time with it."""
    total = 0
    for t in os.listdir(f"/proc/{spid}/task"):
        try:
            with open(f"/proc/{spid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:   # a thread that just ended
            pass
    return total / 1e9


try:
    if str(spid) in (CGROUP / "cgroup.procs").read_text().split():
        server_cpu = server_cpu_cgroup
    server_cpu()
except OSError as exc:
    say(f"no server CPU times: {exc}")
    server_cpu = None
out("server_cpu", how=getattr(server_cpu, "__name__", None))

for warm in range(20):          # imports, the server's thread, the page cache
    for name, fn in ops:
        check(name, fn())
samples = {name: [] for name, _ in ops}
cpu = {name: [] for name, _ in ops}             # this process's CPU seconds in each call
server = {name: [] for name, _ in ops if name.startswith("api")}   # the service's
cpu_clock = time.process_time
t_loop = clock()
for i in range(requests):
    k = i % len(ops)
    for name, fn in ops[k:] + ops[:k]:
        s0 = server_cpu() if server_cpu and name in server else 0
        c0 = cpu_clock()
        t0 = clock()
        r = fn()
        t1 = clock()
        c1 = cpu_clock()
        if server_cpu and name in server:
            server[name].append(server_cpu() - s0)
        samples[name].append(t1 - t0)
        cpu[name].append(c1 - c0)
        check(name, r)
out("roundtrip", samples=samples, cpu=cpu, server=server if server_cpu else None,
    seconds=clock() - t_loop, syncs=syncs, hits_before=h0)
final = {n: c.unload(n)["results"] for n in names}
assert sync_hits(final) == want, f"final counts {sync_hits(final)}, expected {want}"
assert os.listdir(REPORTS) == [], os.listdir(REPORTS)
say(f"round trips done: {requests} rounds; sync hits {want} in every answer and in the final counts")

# -- 2. loads -----------------------------------------------------------------------------


def one_hit(results, how):
    hits = results["hooks"]["sync"]["hits"]
    assert hits == 1, f"{how}: {hits} sync hits, expected 1"


def ping():
    # untimed: a kept-alive connection idle for 60 s is closed by the server, and the client
    # does not retry a request with a body (a load) on a new one; the rounds stay well under
    # that, but a slow round must not end the run
    c.modules()


def api_load(what, **source):
    """Load through the API (a .ko path or a spec path), sync once, unload: (load s, unload s)."""
    def once():
        ping()
        t0 = clock(); c.load(**source); t1 = clock()
        os.sync()
        t2 = clock(); r = c.unload("sync_counter"); t3 = clock()
        one_hit(r["results"], what)
        return t1 - t0, t3 - t2
    return once


api_ko = api_load("api .ko", ko_path=str(KO))
api_spec = api_load("api spec", spec_path=str(SPEC))


def cli(target, direct):
    # `kprobegen load` goes through a running service (the CLI as its client); --no-service
    # loads directly (host mode in the command's own process), and the service adopts the module.
    # Unloaded with `kprobegen unload` either way: through the service when it knows the module,
    # directly when it does not (yet)
    flags = ["--no-service"] if direct else []

    def go():
        t0 = clock(); run(KPROBEGEN, "load", *flags, str(target)); t1 = clock()
        os.sync()
        t2 = clock(); text = run(KPROBEGEN, "unload", "sync_counter", "--json"); t3 = clock()
        one_hit(json.loads(text), f"kprobegen load {target}")
        return t1 - t0, t3 - t2
    return go


def insmod():
    t0 = clock(); run("insmod", str(KO)); t1 = clock()
    os.sync()
    text = (REPORTS / "sync_counter" / "report").read_text()
    one_hit(parse_log(text).results(module="sync_counter")[-1].to_json(), "insmod")
    t2 = clock(); run("rmmod", "sync_counter"); t3 = clock()
    return t1 - t0, t3 - t2


def true():
    t0 = clock(); run("true"); t1 = clock()
    return t1 - t0, None


def in_process(load):
    # what the service runs for the request, called here directly (no HTTP, no state file)
    def go():
        t0 = clock(); load(); t1 = clock()
        os.sync()
        t2 = clock(); r = host.unload("sync_counter"); t3 = clock()
        one_hit(r.to_json(), "in-process")
        return t1 - t0, t3 - t2
    return go


from kprobegen import pipeline  # noqa: E402  (the service imports it at its first load too)
from kprobegen.cache import cache_dir  # noqa: E402
from kprobegen.spec import load_spec  # noqa: E402

step_times = []


def steps():
    # the steps of a cached spec load (kprobegen.pipeline.load_on_host), each timed alone
    t = {}
    t0 = clock(); spec = load_spec(SPEC); t["load_spec (YAML, validation)"] = clock() - t0
    t0 = clock(); host.require_loading(); t["require_loading (a /proc/kallsyms scan)"] = clock() - t0
    t0 = clock(); profile = host.running_profile(); t["running_profile (/proc/kallsyms parsed)"] = clock() - t0
    t0 = clock()
    for hook in spec.hooks:
        profile.check(hook.symbol)
    t["symbols checked"] = clock() - t0
    tree = Path(f"/lib/modules/{host.release()}/build")
    t0 = clock(); built = pipeline.build_module(spec, cache_dir() / "host" / spec.module, kernel_dir=tree)
    t["build_module (cache hit)"] = clock() - t0
    t0 = clock(); host.load_ko(built.ko, loading_checked=True); t["load_ko (modinfo, insmod, state)"] = clock() - t0
    os.sync()
    t2 = clock(); r = host.unload("sync_counter"); t3 = clock()
    one_hit(r.to_json(), "steps")
    step_times.append(t)
    return sum(t.values()), t3 - t2


loads = [("api .ko", api_ko), ("kprobegen load --no-service .ko", cli(KO, True)),
         ("kprobegen load .ko (via service)", cli(KO, False)),
         ("host.load_ko() in-process", in_process(lambda: host.load_ko(KO))), ("insmod", insmod),
         ("api spec (cached)", api_spec), ("kprobegen load --no-service spec", cli(SPEC, True)),
         ("kprobegen load spec (via service)", cli(SPEC, False)),
         ("pipeline.load_on_host() in-process", in_process(lambda: pipeline.load_on_host(SPEC))),
         ("its steps, each timed (sum)", steps), ("true", true)]
t0 = clock(); first = api_spec(); say(f"first spec load through the API (builds in the guest): {clock() - t0:.1f} s")
out("first_spec_load", seconds=first[0])


def settle():
    """Until the service is idle: a service that watches module uevents rescans when one comes
    (and again 0.2, 1 and 3 s after a module it does not know appears: a load by the command,
    insmod, or its own load before it is recorded), adopts what was loaded outside it and reads
    the final counts of what was removed outside it. That work is the service's, not the next
    load's: wait 3.5 s after a cycle, then until its threads run no more in half a second than
    they do idle (its timers: housekeeping every 0.25 s, the servers' and the watcher's polls)."""
    time.sleep(3.5)
    if server_cpu is None:
        return
    for _ in range(20):
        s0 = server_cpu()
        time.sleep(0.5)
        if server_cpu() - s0 < 1.5 * idle_rate * 0.5 + 0.001:
            return
    say("the service did not settle in 10 s")


def idle():
    """The idle service's CPU seconds per second: the least of five 1-second windows."""
    rates = []
    for _ in range(5):
        s0, t0 = server_cpu(), clock()
        time.sleep(1.0)
        rates.append((server_cpu() - s0) / (clock() - t0))
    return min(rates)


def cycle(fn):
    """One load and unload; the service's CPU from before it until the service is idle again,
    and how long that was."""
    s0, t0 = server_cpu() if server_cpu else 0.0, clock()
    t = fn()
    settle()
    return (*t, server_cpu() - s0 if server_cpu else None, clock() - t0)


time.sleep(3.5)
idle_rate = idle() if server_cpu else 0.0
out("idle", rate=idle_rate)
say(f"the idle service: {idle_rate * 1e3:.1f} ms of CPU per second")
for name, fn in loads:          # warm: each path once, untimed
    cycle(fn)
times = {name: [] for name, _ in loads}
for i in range(rounds):
    k = i % len(loads)
    for name, fn in loads[k:] + loads[:k]:
        times[name].append(cycle(fn))
out("loads", times=times)
out("steps", times={k: [t[k] for t in step_times[1:]] for k in step_times[0]})   # the timed rounds
assert not host.is_loaded("sync_counter") and os.listdir(REPORTS) == [], os.listdir(REPORTS)
say("loads done")
'''

SCRIPT = r"""
set -u
cd /root
# the service in a cgroup of its own: its CPU time, threads that ended and children included
CG=/sys/fs/cgroup
mountpoint -q $CG || mount -t cgroup2 cgroup2 $CG 2>/dev/null
mkdir -p $CG/kpg-serve 2>/dev/null
sh -c 'echo $$ > /sys/fs/cgroup/kpg-serve/cgroup.procs 2>/dev/null; exec kprobegen serve --group ""' >/tmp/serve.log 2>&1 &
SPID=$!
/opt/kprobegen/bin/python /root/drive.py {requests} {rounds} {syncs} $SPID
rc=$?
kill -TERM $SPID; wait $SPID; echo "KPGB {\"kind\": \"serve_exit\", \"rc\": $?}"
echo KPGB-LOG; cat /tmp/serve.log
exit $rc
"""


def p99(xs: list[float]) -> float:
    s = sorted(xs)
    return s[max(0, math.ceil(0.99 * len(s)) - 1)]


def fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.0f} µs"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000, help="timed rounds of requests (each op once per round)")
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds of loads")
    ap.add_argument("--syncs", type=int, default=20, help="sync commands before the timed requests")
    ap.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=None,
                    help="how the guest boots (default: $KPROBEGEN_ACCEL, else auto)")
    ap.add_argument("--save", type=Path, help="write every sample (seconds) to this JSON file")
    args = ap.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load0 = os.getloadavg()
    image = guest.build_image("bookworm", progress=lambda m: print(m, file=sys.stderr))
    kernel = find_kernel(image.release)
    with tempfile.TemporaryDirectory() as t:
        work = Path(t)
        add = [(work / "drive.py", "/root/drive.py")]
        (work / "drive.py").write_text(DRIVER)
        for name in MODULES:
            ko = build_module(load_spec(REPO / "modules" / f"{name}.yaml"), work / name, kernel=kernel).ko
            add.append((ko, f"/root/ko/{name}.ko"))
        add.append((REPO / "modules" / "sync_counter.yaml", "/root/specs/sync_counter.yaml"))
        script = SCRIPT.replace("{requests}", str(args.requests)).replace("{rounds}", str(args.rounds)) \
                       .replace("{syncs}", str(args.syncs))
        out, err = bytearray(), bytearray()
        t0 = time.monotonic()
        r = guest.run(image, ["bash", "-c", script], add=add, timeout=7200, accel=args.accel,
                      stdout=out.extend, stderr=lambda b: (err.extend(b), sys.stderr.buffer.write(b),
                                                           sys.stderr.flush()))
        wall = time.monotonic() - t0
    text = out.decode(errors="replace")
    head, _, serve_log = text.partition("KPGB-LOG\n")
    results = {}
    for line in head.splitlines():
        if line.startswith("KPGB "):
            d = json.loads(line[5:])
            results[d.pop("kind")] = d
    odd = [ln for ln in serve_log.splitlines() if "internal error" in ln or "Traceback" in ln or "housekeeping:" in ln]
    results["serve_log"] = serve_log
    if r.status != "ok" or r.exit_code != 0 or "loads" not in results:
        print(text[-5000:], file=sys.stderr)
        r.raise_for_status()
        raise SystemExit(f"the guest's driver failed (exit {r.exit_code}); its stderr is above")
    load1 = os.getloadavg()
    if args.save:
        args.save.write_text(json.dumps({"started": started, "load": [load0, load1], **results}) + "\n")
    med = statistics.median

    rt = results["roundtrip"]["samples"]
    n = len(rt["api list"])
    print(f"\n{started}, {r.accel}, guest {image.release}, one boot {wall:.0f} s; host load average "
          f"{load0[0]:.2f} at start, {load1[0]:.2f} at end ({os.cpu_count()} cores)")
    print(f"modules loaded through the API: {', '.join(results['modules']['names'])}; "
          f"{results['roundtrip']['syncs']} syncs counted exactly (API, file, final counts)")
    print(f"\nround trips, {n} of each, alternating (one kept-alive connection):\n")
    cpu, server = results["roundtrip"]["cpu"], results["roundtrip"]["server"] or {}
    print(f"| {'what':42} | {'median':>9} | {'p99':>9} | {'max':>9} | {'its CPU':>9} | {'service CPU':>11} |")
    print(f"|{'-' * 44}|{'-' * 11}|{'-' * 11}|{'-' * 11}|{'-' * 11}|{'-' * 13}|")
    for name, xs in rt.items():
        srv = fmt(med(server[name])) if name in server else "—"
        print(f"| {name:42} | {fmt(med(xs)):>9} | {fmt(p99(xs)):>9} | {fmt(max(xs)):>9} | "
              f"{fmt(med(cpu[name])):>9} | {srv:>11} |")
    print(f"(its CPU: the driver process's own CPU time in the call, medians; service CPU: the "
          f"service's ({results['server_cpu']['how']}))")
    print()
    for api_name, direct in (("api snapshot (all)", "read (all)"), ("api snapshot (all)", "read+parse (all)"),
                             ("api snapshot (all)", "service's work (all), in-process"),
                             ("api snapshot (sync_counter)", "read (sync_counter)"),
                             ("api list", "read (all)"), ("api list", "host.loaded()")):
        if direct not in rt:
            continue
        a, b = rt[api_name], rt[direct]
        print(f"{api_name} / {direct}: {med(a) / med(b):.1f}x (medians), {p99(a) / p99(b):.1f}x (p99)")

    ld = results["loads"]["times"]
    rounds = len(ld["insmod"])
    ins = med(x[0] for x in ld["insmod"])
    if "idle" in results:
        print(f"\nthe idle service (its timers): {results['idle']['rate'] * 1e3:.1f} ms of CPU per second "
              f"({results['idle']['rate'] * 100:.2f} % of the guest's vCPU)")
    print(f"\nloads of sync_counter, {rounds} rounds alternating (first spec load, building in the guest: "
          f"{results['first_spec_load']['seconds']:.1f} s, untimed in these):\n")
    print(f"| {'what':36} | {'load median':>11} | {'min':>9} | {'max':>9} | {'× insmod':>8} | {'unload median':>13} "
          f"| {'service CPU':>11} |")
    print(f"|{'-' * 38}|{'-' * 13}|{'-' * 11}|{'-' * 11}|{'-' * 10}|{'-' * 15}|{'-' * 13}|")
    for name, xs in ld.items():
        loads = [x[0] for x in xs]
        unl = [x[1] for x in xs if x[1] is not None]
        idle_rate = results.get("idle", {}).get("rate", 0.0)
        srv = [x[2] - idle_rate * x[3] for x in xs if len(x) > 3 and x[2] is not None]
        print(f"| {name:36} | {fmt(med(loads)):>11} | {fmt(min(loads)):>9} | {fmt(max(loads)):>9} | "
              f"{med(loads) / ins:>7.2f}x | {fmt(med(unl)) if unl else '—':>13} | {fmt(med(srv)) if srv else '—':>11} |")
    print(f"(service CPU: the service's CPU time ({results['server_cpu']['how']}) from before the load until it is "
          "idle again after the unload, 3.5 s or more, less its idle rate over that time; `true`: what is left "
          "of the idle rate)")
    print()
    for a, b in (("api .ko", "kprobegen load --no-service .ko"), ("kprobegen load .ko (via service)",
                                                                    "kprobegen load --no-service .ko"),
                 ("api .ko", "host.load_ko() in-process"), ("api .ko", "insmod"),
                 ("api spec (cached)", "kprobegen load --no-service spec"),
                 ("kprobegen load spec (via service)", "kprobegen load --no-service spec"),
                 ("api spec (cached)", "pipeline.load_on_host() in-process")):
        per_round = med(x[0] / y[0] for x, y in zip(ld[a], ld[b]))
        print(f"{a} / {b}: {med(x[0] for x in ld[a]) / med(x[0] for x in ld[b]):.2f}x (medians; "
              f"per round {per_round:.2f}x)")
    if "steps" in results:
        print(f"\nthe steps of a cached spec load (in-process, in the same rounds; medians of {rounds}):\n")
        for name, xs in results["steps"]["times"].items():
            print(f"  {name:42} {fmt(med(xs)):>10}")
    said = {}
    for ln in serve_log.splitlines():
        word = ln.removeprefix("kprobegen serve: ").split(" ", 1)[0]
        said[word] = said.get(word, 0) + 1
    print(f"\nservice: exit code {results.get('serve_exit', {}).get('rc')} on SIGTERM; "
          f"{len(odd)} internal errors or tracebacks in its log; its log's lines by first word: "
          + ", ".join(f"{k} {v}" for k, v in sorted(said.items(), key=lambda kv: -kv[1])))
    for ln in odd:
        print(f"  {ln}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
