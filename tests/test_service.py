"""The manager service's refusals and its reading of state, without a kernel to load into.

Only what is decided before a module is touched: hostile requests, peer credentials, the
schema, and the reconciliation table (the kernel's answers given as data, since this
machine cannot load modules). Every load, snapshot and unload, and the events they make,
run for real in the full guest (tests/vm/test_service_guest.py). Requests from another
uid are made from a forked child that drops to that uid (root only)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from kprobegen import host
from kprobegen.client import Client
from kprobegen.service import Running, json_schema
from kprobegen.service import state as state_mod
from kprobegen.service.events import EventLog
from kprobegen.service.models import MAX_BODY, MAX_UPLOAD

REPO = Path(__file__).resolve().parent.parent


class FakeResults:
    def __init__(self, hits):
        self.hits = hits

    def to_json(self):
        return {"module": "m", "hooks": {"h": {"hits": self.hits}}}


@pytest.fixture
def kernel(monkeypatch):
    """A fake kernel: {name: hits} of the kprobegen modules 'loaded'."""
    loaded: dict[str, int] = {}
    monkeypatch.setattr(host, "loaded", lambda: [host.LoadedModule(n, "6.1-test", None, None, None) for n in sorted(loaded)])
    monkeypatch.setattr(host, "release", lambda: "6.1-test")
    monkeypatch.setattr(host, "is_loaded", lambda n: n in loaded)

    def load_ko(ko, **kw):
        name = Path(ko).stem
        if name in loaded:
            raise host.LoadError(f"module {name} is already loaded by kprobegen: unload it first")
        loaded[name] = 0
        return host.LoadedModule(name, "6.1-test", "2026-01-01T00:00:00Z", None, str(ko))

    def snapshot(name):
        if name not in loaded:
            raise host.LoadError(f"module {name} is not loaded")
        return FakeResults(loaded[name])

    def unload(name):
        return FakeResults(loaded.pop(name))

    monkeypatch.setattr(host, "load_ko", load_ko)
    monkeypatch.setattr(host, "snapshot", snapshot)
    monkeypatch.setattr(host, "unload", unload)
    monkeypatch.setattr(host, "final_report", lambda name: None)
    monkeypatch.setattr(host, "cannot_load", lambda: None)
    return loaded


@pytest.fixture
def service(kernel, tmp_path):
    running = Running(tmp_path / "run", tmp_path / "state", group=None)
    yield running
    running.close()


def rw(service):
    return Client(service.socket_dir / "kprobegen.sock", timeout=10)


def ro(service):
    return Client(service.socket_dir / "kprobegen-ro.sock", timeout=10)


def test_the_schema_file_is_what_the_models_give():
    assert json.loads((REPO / "schema" / "service.schema.json").read_text()) == json_schema(), \
        "regenerate it: kprobegen serve --schema > schema/service.schema.json"


HOSTILE = [
    ("POST", "/v1/modules", b"{not json", 400, "the body is not JSON"),
    ("POST", "/v1/modules", b"[1]", 400, "must be a JSON object"),
    ("POST", "/v1/modules", b'{"ko_path": "/x/a.ko", "shell": "rm -rf /"}', 422, "shell: unknown field"),
    ("POST", "/v1/modules", b'{"ko_path": "../../a.ko"}', 422, "absolute path"),
    ("POST", "/v1/modules", b'{"ko_path": "/x/a.ko", "spec_path": "/x/a.yaml"}', 422, "exactly one"),
    ("POST", "/v1/modules", b"{}", 422, "exactly one"),
    ("POST", "/v1/modules", b'{"spec": "module: ../evil\\nhooks:\\n  - symbol: ksys_sync\\n"}', 422,
     "spec:1:9: module: '../evil' is not a C identifier"),
    ("DELETE", "/v1/modules/..%2F..%2Fetc%2Fpasswd", None, 400, "is not a module name"),
    ("GET", "/v1/modules/a;rm%20-rf/snapshot", None, 400, "is not a module name"),
    ("GET", "/v1/modules/nope", None, 404, "not known"),
    ("GET", "/v1/events?since=x", None, 400, "since must be an integer"),
    ("GET", "/v2/health", None, 404, "/v1/"),
    ("POST", "/v1/modules", b"x" * (MAX_BODY + 1), 413, "over the limit"),
    ("POST", "/v1/modules", b"x" * (4 * MAX_BODY), 413, "over the limit"),
    ("POST", "/v1/modules", b'{"ko_path": "/x/a.ko", "time_limit_s": NaN}', 422, "time_limit_s:"),
    ("POST", "/v1/modules", b'{"ko_path": "/x/a.ko", "time_limit_s": -1}', 422, "time_limit_s: Input should be greater than 0"),
    ("POST", "/v1/modules", b'{"ko_path": "/x/a.ko", "time_limit_s": 1e12}', 422, "time_limit_s: Input should be less"),
    ("POST", "/v1/modules", b'{"ko_path": "/x/a.ko", "lifetime": "forever"}', 422, "lifetime: Input should be"),
    ("PUT", "/v1/modules/m", b"#!/bin/sh\nreboot\n", 422, "not a kernel module (no ELF header)"),
    ("PUT", "/v1/modules/m", b"\x7fELF\x02" + b"\xff" * 200, 409, "not a well-formed ELF"),
    ("PUT", "/v1/modules/m?lifetime=client&lifetime=client", b"\x7fELF", 400, "given 2 times"),
    ("PUT", "/v1/modules/m?time_limit_s=nan", b"\x7fELF", 422, "time_limit_s:"),
    ("PUT", "/v1/modules/m?reboot=1", b"\x7fELF", 422, "reboot: unknown field"),
    ("PUT", "/v1/modules/..%2Fm", b"\x7fELF", 400, "is not a module name"),
    ("PUT", "/v1/modules/m", b"x" * (MAX_UPLOAD + 1), 413, "over the limit"),
    ("GET", "/v1/events?wait=nan", None, 400, "wait must be between"),
    ("GET", "/v1/events?wait=61", None, 400, "wait must be between"),
    ("GET", "/v1/events?sinse=3", None, 400, "unknown query parameter 'sinse'"),
]


@pytest.mark.parametrize("method,path,body,status,reason", HOSTILE, ids=[f"{h[3]}-{i}" for i, h in enumerate(HOSTILE)])
def test_hostile_requests_get_a_4xx_and_a_reason_and_nothing_loads(service, kernel, method, path, body, status, reason):
    with rw(service) as c:
        got, data = c.request(method, path, raw=body)
        assert (got, data["status"]) == (status, status) and reason in data["error"], data
        assert "\n" not in data["error"]
        assert kernel == {} and c.modules() == []
        assert c.health()["status"] == "ok"        # still serving, on a new connection if need be
    assert not list(service.service.state_dir.glob("specs/*"))    # a refused inline spec is not kept
    assert not list(service.service.state_dir.glob("modules/*"))  # nor a refused upload


def test_a_body_without_length_and_a_garbage_request_line(service):
    path = str(service.socket_dir / "kprobegen.sock")
    for raw, status in ((b"POST /v1/modules HTTP/1.1\r\nHost: x\r\n\r\n", 411), (b"\x00\x01garbage\r\n\r\n", 400)):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(path)
            s.sendall(raw)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and answer.endswith(b"\n") and b"{" in answer:
                    break
        assert answer.startswith(f"HTTP/1.".encode()) and f" {status} ".encode() in answer.split(b"\r\n")[0], answer


def _as_user(uid: int, gid: int, groups: list[int], sock: Path, path: str) -> tuple[int, dict]:
    """One GET from a forked child running as uid/gid."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            status, data = Client(sock, timeout=10).request("GET", path)
            os.write(w, json.dumps([status, data]).encode())
        except BaseException as exc:
            os.write(w, json.dumps([None, {"error": repr(exc)}]).encode())
        finally:
            os._exit(0)
    os.close(w)
    with open(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return tuple(json.loads(out))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
def test_peer_credentials_decide_with_a_group(kernel, tmp_path):
    import tempfile

    run = Path(tempfile.mkdtemp(prefix="kpg-service-"))     # tmp_path is 0700: others cannot reach a socket in it
    os.chmod(run, 0o755)
    running = Running(run, tmp_path / "state", group="nogroup")
    try:
        import grp

        member = grp.getgrnam("nogroup").gr_gid
        rw_sock, ro_sock = running.socket_dir / "kprobegen.sock", running.socket_dir / "kprobegen-ro.sock"
        assert oct(ro_sock.stat().st_mode & 0o777) == "0o666"
        status, data = _as_user(65534, 65534, [], rw_sock, "/v1/health")
        assert status == 403 and "read-write socket is for root only" in data["error"]
        status, data = _as_user(12345, 12345, [], ro_sock, "/v1/modules")
        assert status == 403 and "uid 12345 refused" in data["error"] and "nogroup" in data["error"]
        assert _as_user(12345, 12345, [member], ro_sock, "/v1/modules") == (200, {"modules": []})
        assert _as_user(12345, member, [], ro_sock, "/v1/health")[0] == 200
    finally:
        running.close()
        os.rmdir(run)


def test_start_adopts_ours_marks_the_gone_and_survives_a_bad_state_file(kernel, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    recorded = {"format": 1, "modules": {name: {"module": name, "status": "loaded", "origin": "service",
                                                "kernel": "6.1-test", "loaded_at": "t", "loaded_by": 0,
                                                "spec": "/s.yaml", "ko": None} for name in ("kept", "gone")}}
    (state / "state.json").write_text(json.dumps(recorded))
    kernel.update(kept=7, stranger=1)
    running = Running(tmp_path / "run", state, group=None)
    try:
        with rw(running) as c:
            mods = {m["module"]: m for m in c.modules()}
            assert {n: (m["status"], m["origin"]) for n, m in mods.items()} == {
                "kept": ("loaded", "service"), "gone": ("gone", "service"), "stranger": ("loaded", "adopted")}
            assert mods["kept"]["spec"] == "/s.yaml" and mods["gone"]["gone_at"]
            assert c.snapshot("kept")["results"]["hooks"]["h"]["hits"] == 7
            assert c.request("GET", "/v1/modules/gone/snapshot")[0] == 409
            assert c.unload("kept")["results"]["hooks"]["h"]["hits"] == 7
    finally:
        running.close()
    # a second service on the same state dir is refused while one runs
    running = Running(tmp_path / "run", state, group=None)
    try:
        with pytest.raises(state_mod.ServiceError, match="another kprobegen service"):
            Running(tmp_path / "run2", state, group=None)
    finally:
        running.close()
    (state / "state.json").write_text('{"format": 1, "modules": {"kept": {"modu')
    running = Running(tmp_path / "run", state, group=None)
    try:
        with rw(running) as c:
            health = c.health()
            assert len(health["problems"]) == 1 and "is unreadable" in health["problems"][0]
            assert "state rebuilt from the kernel" in health["problems"][0]
            assert [m["module"] for m in c.modules()] == ["stranger"]
            assert "state-unreadable" in [e["kind"] for e in c.events()["events"]]
        assert list(state.glob("state.json.unreadable-*"))
        assert json.loads((state / "state.json").read_text())["modules"].keys() == {"stranger"}
    finally:
        running.close()


def test_a_recorded_module_still_in_sys_module_is_not_called_gone(kernel, tmp_path, monkeypatch):
    """Without debugfs (host.loaded() sees nothing), /sys/module still says it is loaded."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.json").write_text(json.dumps({"format": 1, "modules": {"hidden": {
        "module": "hidden", "status": "loaded", "origin": "service", "kernel": "6.1-test", "loaded_at": "t",
        "loaded_by": 0, "spec": None, "ko": "/x/hidden.ko"}}}))
    monkeypatch.setattr(host, "is_loaded", lambda n: n == "hidden")
    running = Running(tmp_path / "run", state, group=None)
    try:
        with rw(running) as c:
            assert [(m["module"], m["status"]) for m in c.modules()] == [("hidden", "loaded")]
    finally:
        running.close()


def test_a_refused_request_with_a_body_does_not_poison_the_connection(service, kernel):
    with ro(service) as c:
        status, data = c.request("POST", "/v1/modules", raw=b'{"ko_path": "/x/a.ko"}' + b" " * 100_000)
        assert status == 403 and "read-write socket" in data["error"]
        assert c.request("GET", "/v1/modules") == (200, {"modules": []})
        assert kernel == {}
    with rw(service) as c:          # and on a kept-alive connection, after a refusal with a body
        assert c.request("GET", "/v1/health", raw=b"{}")[0] == 400
        assert c.request("GET", "/v1/health")[0] == 200


def test_events_are_numbered_for_good_and_survive_a_restart(kernel, tmp_path):
    state = tmp_path / "state"
    for _ in range(2):
        running = Running(tmp_path / "run", state, group=None)
        running.close()
    running = Running(tmp_path / "run", state, group=None)
    try:
        with rw(running) as c:
            got = c.events()
            assert [(e["seq"], e["kind"]) for e in got["events"]] == [
                (1, "started"), (2, "stopped"), (3, "started"), (4, "stopped"), (5, "started")]
            assert (got["next"], got["oldest"], got["missed"]) == (5, 1, False)
            assert [e["seq"] for e in c.events(since=3)["events"]] == [4, 5]
            assert c.events(since=5)["events"] == []
    finally:
        running.close()


def test_a_waiting_client_gets_the_next_event_as_it_happens(service, kernel):
    import threading

    with rw(service) as c:
        since = c.events()["next"]
    got = {}
    waiter = threading.Thread(target=lambda: got.update(rw(service).request("GET", f"/v1/events?since={since}&wait=30")[1]))
    waiter.start()
    with rw(service) as c:
        c.load(ko_path="/x/waited.ko")
    waiter.join(timeout=30)
    assert [(e["kind"], e["module"]) for e in got["events"]] == [("loaded", "waited")]
    with rw(service) as c:      # nothing new: a wait of 0.2 s returns empty
        assert c.request("GET", f"/v1/events?since={got['next']}&wait=0.2")[1]["events"] == []


def test_the_event_file_skips_a_damaged_line_and_is_cut_back(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path, keep=4)
    for i in range(9):
        log.add("loaded", f"m{i}", 0)
    log.close()
    # the 8th line (2 x keep) cut the file back to the newest 4; the 9th was appended after
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [5, 6, 7, 8, 9]
    with open(path, "ab") as f:
        f.write(b'{"seq": 10, "time": "2026-')         # a crash mid-write
    log = EventLog(path, keep=4)
    assert log.problems == [f"{path}: 1 unreadable line(s) skipped"]
    event = log.add("unloaded", "m1", 0)
    log.close()
    assert event.seq == 10
    assert json.loads(path.read_text().splitlines()[-1])["seq"] == 10
    reread = EventLog(path, keep=4)
    assert reread.since(6).events[-1].seq == 10 and reread.since(6).missed is False
    assert reread.since(2).missed is True and reread.since(2).oldest == 7


def test_where_modules_cannot_load_it_serves_runs_and_refuses_loads(tmp_path):
    """This machine's own kernel cannot load modules: the service says so, and loads are a 409
    that points at POST /v1/runs (which tests/vm/test_service_runs.py runs for real)."""
    assert host.cannot_load()
    running = Running(tmp_path / "run", tmp_path / "state", group=None)
    try:
        with rw(running) as c:
            assert c.health()["can_load"] is False
            for method, path, body in (("POST", "/v1/modules", b'{"ko_path": "/x/a.ko"}'),
                                       ("PUT", "/v1/modules/m", b"\x7fELF")):
                status, data = c.request(method, path, raw=body)
                assert status == 409 and "cannot load modules" in data["error"] and "/v1/runs" in data["error"]
            for body, reason in ((b'{"spec": "module: m\\nhooks: [{symbol: ksys_sync}]", "workload": "sync", '
                                  b'"kernel": "../../x"}', "kernel: String should match pattern"),
                                 (b'{"spec": "module: m\\nhooks: [{symbol: ksys_sync}]", "workload": "sync", '
                                  b'"timeout_s": 0}', "timeout_s: Input should be greater than 0"),
                                 (b'{"spec": "module: ../m\\nhooks: [{symbol: ksys_sync}]", "workload": "sync"}',
                                  "spec:1:9: module: '../m' is not a C identifier"),
                                 (b'{"spec": "module: m\\nhooks: [{symbol: ksys_sync}]", "workload": "sync", '
                                  b'"kernel": "no-such-kernel"}', "no-such-kernel")):
                status, data = c.request("POST", "/v1/runs", raw=body)
                assert status == 422 and reason in data["error"], data
        with ro(running) as c:
            status, data = c.request("POST", "/v1/runs", raw=b"{}")
            assert status == 403 and "read-write socket" in data["error"]
    finally:
        running.close()


def test_no_answer_says_why_in_errno(tmp_path):
    import errno

    from kprobegen.client import ServiceError

    def failure(path, timeout=5.0):
        with pytest.raises(ServiceError) as caught:
            Client(path, timeout=timeout).health()
        assert caught.value.status is None
        return caught.value

    assert failure(tmp_path / "none.sock").errno == errno.ENOENT
    bound = socket.socket(socket.AF_UNIX)              # a socket file with nobody listening
    bound.bind(str(tmp_path / "stale.sock"))
    bound.close()
    assert failure(tmp_path / "stale.sock").errno == errno.ECONNREFUSED
    with socket.socket(socket.AF_UNIX) as mute:          # listening, never answering
        mute.bind(str(tmp_path / "mute.sock"))
        mute.listen()
        gone = failure(tmp_path / "mute.sock", timeout=0.3)
    assert gone.errno == errno.ETIMEDOUT, gone
