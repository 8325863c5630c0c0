"""The CLI's spec-side commands: check, render, stap, bpftrace (no kernel needed); and the
host-mode commands' choice between the manager service and the kernel (a fake service)."""

from __future__ import annotations

import io
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from kprobegen import cli
from kprobegen.report import Bucket, Histogram, HookResult, Results, format_results

MODULES = Path(__file__).resolve().parent.parent / "modules"


def kprobegen(*args, env=None):
    return subprocess.run([sys.executable, "-m", "kprobegen", *args], capture_output=True, text=True, timeout=300,
                          env=env)


def test_check_json(tmp_path):
    done = kprobegen("check", str(MODULES / "fork_counter.yaml"), "--json",
                     env=dict(os.environ, KPROBEGEN_CACHE=str(tmp_path)))  # no profile cached
    assert done.returncode == 0
    assert json.loads(done.stdout) == {
        "spec": str(MODULES / "fork_counter.yaml"), "module": "fork_counter", "valid": True,
        "symbols_checked_against": None,
        "hooks": [{"name": "clone", "probe": "kprobe", "symbol": "kernel_clone"},
                  {"name": "clone_by_tgid", "probe": "kprobe", "symbol": "kernel_clone"}]}


def test_check_without_kernel_uses_the_default_kernels_cached_profile(kernel_61, tmp_path):
    """A misspelled symbol is caught by a plain `check` once the default kernel's profile is
    cached; without a profile, check says that symbols were not checked (never a bare "ok")."""
    from kprobegen.kernels.symbols import load_profile
    from kprobegen.pipeline import profile_capture

    load_profile(kernel_61, capture=profile_capture())  # cached by the first run on a machine (setup.sh's example)
    spec = tmp_path / "typo.yaml"
    spec.write_text("module: typo\nhooks:\n  - symbol: ksys_synk\n")
    done = kprobegen("check", str(spec))
    assert done.returncode == 2
    assert done.stderr.startswith(f"kprobegen: error: {spec}:3:13: hooks[0].symbol: symbol ksys_synk does not "
                                  f"exist in kernel {kernel_61.release}")
    done = kprobegen("check", str(MODULES / "sync_counter.yaml"))
    assert done.stdout.endswith(f"symbols checked against {kernel_61.release}\n")
    empty = dict(os.environ, KPROBEGEN_CACHE=str(tmp_path / "empty"))
    done = kprobegen("check", str(spec), env=empty)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == (f"{spec}: ok: module typo, 1 hook, symbols NOT checked (no kernel profile cached: "
                           "pass --kernel RELEASE|SUITE to capture one)\n")


def test_render_writes_all_four_files_and_warns(tmp_path):
    done = kprobegen("render", str(MODULES / "openat_by_cat.yaml"), "-o", str(tmp_path))
    assert done.returncode == 0
    names = {"openat_by_cat.c", "Makefile", "openat_by_cat.stp", "openat_by_cat.bt"}
    assert {p.name for p in tmp_path.iterdir()} == names
    for name in names:
        assert (tmp_path / name).read_text() == (MODULES / "openat_by_cat" / name).read_text()
    # lhist() needs min >= 0 in bpftrace: the shift is said, not hidden
    assert "kprobegen: warning: bpftrace: hook open_result: histogram (linear min=-4" in done.stderr


def test_emit_c_prints_the_module_source():
    done = kprobegen("render", str(MODULES / "sync_counter.yaml"), "--emit-c")
    assert done.returncode == 0 and done.stdout == (MODULES / "sync_counter" / "sync_counter.c").read_text()


def test_stap_and_bpftrace_print_the_scripts():
    for command, suffix in (("stap", ".stp"), ("bpftrace", ".bt")):
        done = kprobegen(command, str(MODULES / "sync_latency.yaml"))
        assert done.returncode == 0
        assert done.stdout == (MODULES / "sync_latency" / f"sync_latency{suffix}").read_text()
    assert "maxactive" in kprobegen("bpftrace", str(MODULES / "sync_latency.yaml")).stderr


def test_missing_file_is_one_line():
    done = kprobegen("check", "/nonexistent/spec.yaml")
    assert done.returncode == 2
    assert done.stderr == "kprobegen: error: /nonexistent/spec.yaml: cannot read the spec: No such file or directory\n"


def test_parse_warns_about_lines_it_could_not_use(tmp_path):
    log = tmp_path / "dmesg.txt"
    log.write_text(
        "[    1.0] kprobegen/1 m 0 load kernel=x hooks=1 protocol=1\n"
        "[    1.1] kprobegen/1 m 1 begin report=0 reason=unload ts_ns=1 lines=1\n"
        "[    1.2] kprobegen/1 m 2 hook name=h probe=kprobe symbol=s hits=7 missed=0 dropped=0 disarmed=0 by=- keys=0 hist=0\n"
        "[    1.3] kprobegen/1 m 3 end report=0 lines=1\n"
        "[    1.4] kprobegen/1 m 4 bogus x=1\n")
    done = kprobegen("parse", str(log), "--json")
    assert done.returncode == 0
    assert json.loads(done.stdout)["reports"][0]["hooks"]["h"]["hits"] == 7
    assert done.stderr == "kprobegen: warning: 1 protocol line not understood: bogus\n"


# -- host mode: the CLI as a client of the manager service ----------------------------------
#
# A fake service (the standard library's HTTP server on a Unix socket, canned answers) stands
# in for `kprobegen serve`, which needs a kernel that loads modules: what is checked here is the
# CLI's side (which socket, the output rebuilt from the JSON, the refusals as direct mode's
# errors). tests/vm/test_cli_service_guest.py runs the real service in the full guest.

RESULTS = Results("sync_counter", "6.1.0-test", 4, "snapshot", 123456, True, 0, [], {
    "sync": HookResult("sync", "ksys_sync", "kprobe", 5, 0, 0, False, "comm",
                       {b"sync": 3, b"a\\b": 1, b"\xff\x01": 1}, None),
    "sync_ns": HookResult("sync_ns", "ksys_sync", "kretprobe", 5, 1, 0, False, None, {},
                          Histogram("latency", "log2", "ns", 5, 5000, 200, 3000,
                                    [Bucket(128, 256, 1), Bucket(512, 1024, 2), Bucket(2048, 4096, 2)])),
})
RECORD = {"module": "sync_counter", "status": "loaded", "origin": "service", "kernel": "6.1.0-test",
          "loaded_at": "2026-12-02T08:10:03Z", "loaded_by": 0, "spec": "/root/specs/sync_counter.yaml",
          "ko": "/root/.cache/kprobegen/host/sync_counter/sync_counter.ko", "gone_at": None}
GONE = dict(RECORD, module="old", status="gone", gone_at="2026-12-02T09:00:00Z", gone_reason="removed")


class FakeService(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list = []

    def address_string(self):
        return "unix"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.seen.append(("GET", self.path, None))
        if self.path == "/v1/modules":
            return self.answer(200, {"modules": [RECORD, GONE]})
        if self.path == "/v1/modules/sync_counter/snapshot":
            return self.answer(200, {"module": "sync_counter", "results": RESULTS.to_json()})
        if self.path == "/v1/modules/gone_one/snapshot":
            return self.answer(409, {"status": 409, "error": "module gone_one is gone: no live counts"})
        return self.answer(404, {"status": 404, "error": "module is not known to this service"})

    def do_DELETE(self):
        self.seen.append(("DELETE", self.path, None))
        if self.path == "/v1/modules/sync_counter":
            return self.answer(200, {"module": "sync_counter", "loaded_at": RECORD["loaded_at"],
                                     "unloaded_at": "2026-12-02T08:11:40Z",
                                     "results": dict(RESULTS.to_json(), reason="unload")})
        if self.path == "/v1/modules/busy":
            return self.answer(409, {"status": 409, "error": "rmmod busy failed: Module busy is in use; it stays loaded"})
        return self.answer(404, {"status": 404, "error": "module is not known to this service"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(("POST", self.path, body))
        path = body.get("spec_path") or body.get("ko_path") or ""
        if path.endswith("bad.yaml"):
            return self.answer(422, {"status": 422, "error": f"{path}:3:13: hooks[0].symbol: 'x y' is not a kernel symbol name"})
        if "spec" in body:
            return self.answer(422, {"status": 422, "error": "spec:1:9: module: '../evil' is not a C identifier"})
        if path.endswith(".ko"):
            return self.answer(409, {"status": 409, "error": "module sync_counter is already loaded by kprobegen: "
                                                             "unload it first (kprobegen unload sync_counter)"})
        if path.endswith("forbidden.yaml"):
            return self.answer(403, {"status": 403, "error": "uid 1000 refused: the read-write socket is for root only"})
        return self.answer(200, dict(RECORD, spec=path))


@pytest.fixture
def service(tmp_path):
    """A fake service's two sockets in tmp_path (a folder, as `serve --socket-dir` makes)."""
    FakeService.seen = []
    servers = []
    for name in ("kprobegen.sock", "kprobegen-ro.sock"):
        server = socketserver.ThreadingUnixStreamServer(str(tmp_path / name), FakeService)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield tmp_path
    for server in servers:
        server.shutdown()
        server.server_close()


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """cli.main in this process (so that SERVICE_DIR can be patched): (code, stdout, stderr)."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_default_sockets_are_the_clients():
    from kprobegen import client

    assert cli.SERVICE_DIR / cli.RW_SOCKET_NAME == client.RW_SOCKET
    assert cli.SERVICE_DIR / cli.RO_SOCKET_NAME == client.RO_SOCKET


@pytest.mark.parametrize("argv", [("load", "x.yaml"), ("list",), ("snapshot", "m"), ("unload", "m")])
def test_socket_to_a_missing_path_is_one_line(argv, tmp_path):
    done = kprobegen(*argv, "--socket", str(tmp_path / "nope.sock"))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"kprobegen: error: --socket {tmp_path / 'nope.sock'}: no such socket\n"


def test_socket_to_a_stale_socket_or_a_file_is_an_error(tmp_path):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "stale.sock"))          # bound, never listening: what a killed service leaves
    stale.close()
    done = kprobegen("list", "--socket", str(tmp_path / "stale.sock"))
    assert done.returncode == 1
    assert done.stderr == (f"kprobegen: error: --socket {tmp_path / 'stale.sock'}: nothing answers there "
                           "(a socket left by a service that stopped)\n")
    (tmp_path / "file").write_text("")
    done = kprobegen("snapshot", "m", "--socket", str(tmp_path / "file"))
    assert (done.returncode, done.stderr) == (1, f"kprobegen: error: --socket {tmp_path / 'file'}: not a socket\n")


@pytest.mark.parametrize("argv", [("load", "x.yaml"), ("list",), ("snapshot", "m"), ("unload", "m")])
def test_socket_and_no_service_conflict(argv, tmp_path):
    done = kprobegen(*argv, "--socket", str(tmp_path), "--no-service")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"kprobegen: error: {argv[0]}: argument --no-service: not allowed with argument --socket "
                           f"(see kprobegen {argv[0]} --help)\n")


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "604801", "soon"])
def test_a_bad_time_limit_is_a_usage_error(value):
    done = kprobegen("load", "m.yaml", "--time-limit", value)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("kprobegen: error: load: argument --time-limit:")


def test_force_goes_with_no_service():
    done = kprobegen("unload", "m", "--force")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("kprobegen: error: unload: --force goes with --no-service")


def test_snapshot_and_unload_through_a_service_print_what_direct_mode_prints(service, capsys):
    direct_table = format_results([RESULTS], top=10)
    assert run_cli(capsys, "snapshot", "sync_counter", "--socket", str(service)) == (0, direct_table, "")
    code, out, err = run_cli(capsys, "snapshot", "sync_counter", "--socket", str(service / "kprobegen-ro.sock"),
                             "--json")
    assert (code, err) == (0, "") and json.loads(out) == RESULTS.to_json()
    final = Results.from_json(dict(RESULTS.to_json(), reason="unload"))
    code, out, err = run_cli(capsys, "unload", "sync_counter", "--socket", str(service), "--json", "--top", "1")
    assert (code, err) == (0, "") and json.loads(out) == final.to_json()
    assert run_cli(capsys, "unload", "sync_counter", "--socket", str(service), "--top", "1") == \
        (0, format_results([final], top=1), "")
    # reads went to the read-only socket, the unloads to the read-write one (the folder's sockets)
    assert [(m, p) for m, p, _ in FakeService.seen] == [
        ("GET", "/v1/modules/sync_counter/snapshot"), ("GET", "/v1/modules/sync_counter/snapshot"),
        ("DELETE", "/v1/modules/sync_counter"), ("DELETE", "/v1/modules/sync_counter")]


def test_list_through_a_service_has_direct_modes_shape(service, capsys, monkeypatch):
    from kprobegen import host

    monkeypatch.setattr(host, "loaded", lambda: [])     # nothing in this machine's kernel
    code, out, err = run_cli(capsys, "list", "--socket", str(service), "--json")
    assert code == 0
    assert json.loads(out) == [{k: RECORD[k] for k in ("module", "kernel", "loaded_at", "spec", "ko")}]
    assert err == (f"kprobegen: note: the service at {service / 'kprobegen-ro.sock'} also records old, gone "
                   "(removed, 2026-12-02T09:00:00Z)\n")
    code, out, _ = run_cli(capsys, "list", "--socket", str(service))
    assert out == (f"{'MODULE':32} {'LOADED AT':21} SPEC\n"
                   f"{'sync_counter':32} {'2026-12-02T08:10:03Z':21} /root/specs/sync_counter.yaml\n")
    # for root: a module loaded behind the service's back (--no-service) is listed too, as direct
    # mode lists it, and what the service's record lacks comes from host mode's own record
    monkeypatch.setattr(host, "loaded", lambda: [
        host.LoadedModule("another", "6.1.0-test", None, None, "/a.ko"),
        host.LoadedModule("sync_counter", "6.1.0-test", "2026-12-02T08:10:03Z", "/elsewhere.yaml", "/s.ko")])
    monkeypatch.setitem(RECORD, "loaded_at", None)
    code, out, _ = run_cli(capsys, "list", "--socket", str(service), "--json")
    assert json.loads(out) == [
        {"module": "another", "kernel": "6.1.0-test", "loaded_at": None, "spec": None, "ko": "/a.ko"},
        {"module": "sync_counter", "kernel": "6.1.0-test", "loaded_at": "2026-12-02T08:10:03Z",
         "spec": RECORD["spec"], "ko": RECORD["ko"]}]


def test_load_through_a_service_sends_absolute_paths_and_says_who_owns_it(service, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "specs").mkdir()
    code, out, err = run_cli(capsys, "load", "specs/good.yaml", "--socket", str(service))
    assert (code, err) == (0, "")
    assert out == ("loaded sync_counter into 6.1.0-test; `kprobegen snapshot sync_counter` for live counts, "
                   "`kprobegen unload sync_counter` for the final ones "
                   f"(the service at {service / 'kprobegen.sock'} owns it)\n")
    assert FakeService.seen[-1] == ("POST", "/v1/modules", {"spec_path": str(tmp_path / "specs/good.yaml")})
    code, out, _ = run_cli(capsys, "load", "specs/good.yaml", "--socket", str(service), "--json")
    assert json.loads(out) == {"module": "sync_counter", "kernel": "6.1.0-test", "loaded_at": RECORD["loaded_at"],
                               "spec": str(tmp_path / "specs/good.yaml"), "ko": RECORD["ko"],
                               "service": str(service / "kprobegen.sock")}
    # a folder stands for its one .ko, sent by its resolved path
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "m.ko").write_bytes(b"")
    code, _, err = run_cli(capsys, "load", "out", "--socket", str(service))
    assert FakeService.seen[-1][2] == {"ko_path": str(tmp_path / "out" / "m.ko")}
    assert (code, err) == (1, "kprobegen: error: module sync_counter is already loaded by kprobegen: "
                              "unload it first (kprobegen unload sync_counter)\n")


def test_refusals_of_a_service_are_direct_modes_errors(service, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    # a spec error names the file as the user gave it, exit 2 as in direct mode
    assert run_cli(capsys, "load", "bad.yaml", "--socket", str(service)) == \
        (2, "", "kprobegen: error: bad.yaml:3:13: hooks[0].symbol: 'x y' is not a kernel symbol name\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"module: ../evil\n")))
    assert run_cli(capsys, "load", "-", "--socket", str(service)) == \
        (2, "", "kprobegen: error: <stdin>:1:9: module: '../evil' is not a C identifier\n")
    assert FakeService.seen[-1][2] == {"spec": "module: ../evil\n"}
    sock = service / "kprobegen.sock"
    assert run_cli(capsys, "load", "forbidden.yaml", "--socket", str(service)) == \
        (1, "", f"kprobegen: error: {sock}: uid 1000 refused: the read-write socket is for root only\n")
    assert run_cli(capsys, "unload", "busy", "--socket", str(service)) == \
        (1, "", "kprobegen: error: rmmod busy failed: Module busy is in use; it stays loaded\n")
    assert run_cli(capsys, "snapshot", "gone_one", "--socket", str(service)) == \
        (1, "", "kprobegen: error: module gone_one is gone: no live counts\n")


def test_a_module_the_service_does_not_know_is_handled_directly(service, capsys, monkeypatch):
    from kprobegen import host
    from kprobegen.errors import LoadError

    calls = []

    def direct(name):
        calls.append(name)
        raise LoadError(f"module {name} is not loaded")

    monkeypatch.setattr(host, "snapshot", direct)
    monkeypatch.setattr(host, "unload", direct)
    assert run_cli(capsys, "snapshot", "nothere", "--socket", str(service)) == \
        (1, "", "kprobegen: error: module nothere is not loaded\n")
    assert run_cli(capsys, "unload", "nothere", "--socket", str(service)) == \
        (1, "", "kprobegen: error: module nothere is not loaded\n")
    assert calls == ["nothere", "nothere"]


def test_the_default_socket_is_used_when_a_service_answers(service, capsys, monkeypatch):
    monkeypatch.setattr(cli, "SERVICE_DIR", service)
    code, out, _ = run_cli(capsys, "snapshot", "sync_counter", "--json")
    assert code == 0 and json.loads(out) == RESULTS.to_json()
    assert FakeService.seen == [("GET", "/v1/modules/sync_counter/snapshot", None)]


def test_without_a_service_or_with_a_stale_socket_it_acts_directly(tmp_path, capsys, monkeypatch):
    from kprobegen import host

    monkeypatch.setattr(host, "loaded", lambda: [host.LoadedModule("m", "6.1.0-test", None, None, "/m.ko")])
    monkeypatch.setattr(cli, "SERVICE_DIR", tmp_path)
    direct = [{"module": "m", "kernel": "6.1.0-test", "loaded_at": None, "spec": None, "ko": "/m.ko"}]
    code, out, err = run_cli(capsys, "list", "--json")
    assert (code, json.loads(out), err) == (0, direct, "")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "kprobegen-ro.sock"))
    stale.close()
    code, out, err = run_cli(capsys, "list", "--json")
    assert (code, json.loads(out)) == (0, direct)
    assert err == (f"kprobegen: note: {tmp_path / 'kprobegen-ro.sock'}: nothing answers there (a socket left by a "
                   "service that stopped): acting on the kernel directly\n")
    assert run_cli(capsys, "list", "--json", "--no-service")[2] == ""      # --no-service: not even looked at


def test_no_service_refuses_to_unload_what_a_running_service_owns(service, capsys, monkeypatch):
    from kprobegen import host

    monkeypatch.setattr(cli, "SERVICE_DIR", service)
    monkeypatch.setattr(FakeService, "do_GET", lambda self: (self.seen.append(("GET", self.path, None)), self.answer(
        200, RECORD) if self.path == "/v1/modules/sync_counter" else self.answer(404, {"error": "unknown"}))[1])
    monkeypatch.setattr(host, "unload", lambda name: RESULTS)
    code, out, err = run_cli(capsys, "unload", "sync_counter", "--no-service")
    assert (code, out) == (1, "")
    assert err == (f"kprobegen: error: module sync_counter is owned by the kprobegen service "
                   f"({service / 'kprobegen-ro.sock'}): unload it through the service (without --no-service), "
                   "or add --force to remove it behind its back\n")
    code, out, err = run_cli(capsys, "unload", "sync_counter", "--no-service", "--force", "--json")
    assert code == 0 and json.loads(out) == RESULTS.to_json()
    assert err.startswith("kprobegen: warning: module sync_counter is owned by the service at ")
    code, out, err = run_cli(capsys, "unload", "other", "--no-service", "--json")   # not the service's: no question
    assert (code, err) == (0, "")
    assert ("DELETE", "/v1/modules/sync_counter", None) not in FakeService.seen
