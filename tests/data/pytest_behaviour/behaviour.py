"""Not collected by the project's own suite (no test_ prefix). Run by tests/vm/test_pytest_plugin.py as a user's test session (in a subprocess): some of
these fail on purpose, and that test reads how the failures are reported. Run in file order."""

import pytest

SYNC = {"module": "behaviour_sync", "hooks": [{"name": "sync", "symbol": "ksys_sync"}]}


def test_fails_on_a_count(kprobes):
    with kprobes(SYNC) as probe:
        probe.run("sync; sync")
    assert probe.results.hooks["sync"].hits == 3          # fails: 2, and the report shows the table


def test_fails_to_load_twice(kprobes):
    with kprobes(SYNC):
        with kprobes(SYNC):                               # fails: the service's reason
            pass


def test_fails_on_an_unknown_symbol(kprobes):
    kprobes({"module": "behaviour_nosuch", "hooks": [{"symbol": "kpg_no_such_function"}]}).__enter__()


def test_leaves_a_module_loaded(kprobes):
    kprobes(SYNC).__enter__()                              # no __exit__: the fixture unloads it


def test_the_next_test_finds_nothing_loaded(kprobegen_target):
    status, body = kprobegen_target.session.request("GET", "/v1/modules")
    assert status == 200 and [m["module"] for m in body["modules"] if m["status"] == "loaded"] == []
    assert "behaviour_sync" not in kprobegen_target.session.exec("ls /sys/module").stdout.decode()


def test_a_block_that_raises_still_gives_counts(kprobes):
    with pytest.raises(RuntimeError):
        with kprobes(SYNC) as probe:
            probe.run("sync")
            raise RuntimeError("the workload's own failure")
    assert probe.results.hooks["sync"].hits == 1 and probe.results.reason == "unload"


def test_a_failing_command_says_so(kprobes):
    with kprobes(SYNC) as probe:
        with pytest.raises(Exception, match="exited with 3"):
            probe.run("echo oops >&2; exit 3")
        done = probe.run("echo out; exit 4", check=False)
        assert (done.returncode, done.stdout) == (4, b"out\n")


def test_comparing_results_shows_both_tables(kprobes):
    with kprobes(SYNC) as one:
        one.run("sync")
    with kprobes(SYNC) as two:
        two.run("sync; sync")
    assert one.results == two.results                     # fails: the explanation has both tables
