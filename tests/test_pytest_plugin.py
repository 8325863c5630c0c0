"""The pytest plugin's side that needs no kernel: registration, options, markers, the skip or
failure where no target is available, and spec reading. The fixture at work (a guest booted
once, exact counts, failure reports) is tests/vm/test_pytest_plugin.py."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

from kprobegen import pytest_plugin
from kprobegen.errors import SpecError

pytest_plugins = ("pytester",)

USES_KPROBES = """
def test_counts(kprobes):
    with kprobes({"module": "m", "hooks": [{"symbol": "ksys_sync"}]}) as probe:
        probe.run("sync")
    assert probe.results.hooks["ksys_sync"].hits == 1

def test_plain():
    pass
"""


def test_the_plugin_is_registered_through_pytest11():
    names = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert names.get("kprobegen") == "kprobegen.pytest_plugin", \
        "reinstall kprobegen (pip install -e .) so that its entry points are registered"


def test_tests_using_kprobes_are_marked_and_can_be_left_out(pytester):
    pytester.makepyfile(USES_KPROBES)
    result = pytester.runpytest_subprocess("-m", "not kprobegen", "-q")
    result.assert_outcomes(passed=1, deselected=1)


def test_help_lists_every_option(pytester):
    result = pytester.runpytest_subprocess("--help")
    out = result.stdout.str()
    for option in ("--kprobegen-target", "--kprobegen-image", "--kprobegen-kernel", "--kprobegen-timeout",
                   "--kprobegen-accel"):
        assert option in out


@pytest.mark.parametrize("ci,outcome", [("", "skipped"), ("true", "errors")])
def test_no_target_skips_with_how_to_enable_or_fails_under_ci(pytester, monkeypatch, ci, outcome):
    """This machine's kernel cannot load modules: the host target is not available here."""
    from kprobegen import host

    assert host.cannot_load(), "this test needs a machine that cannot load modules"
    monkeypatch.setenv("CI", ci)
    pytester.makepyfile(USES_KPROBES)
    result = pytester.runpytest_subprocess("--kprobegen-target=host", "-rs", "-q")
    result.assert_outcomes(passed=1, **{outcome: 1})
    text = result.stdout.str()
    assert "this machine cannot load modules" in text
    if outcome == "skipped":
        assert "to enable:" in text and "--kprobegen-target=guest" in text
    else:
        assert "under CI this is a failure" in text


def test_a_bad_option_value_is_a_usage_error(pytester):
    pytester.makepyfile(USES_KPROBES)
    result = pytester.runpytest_subprocess("--kprobegen-target=moon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "invalid choice: 'moon'" in result.stderr.str()


def test_specs_come_as_files_yaml_text_or_dicts(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("module: from_file\nhooks:\n  - symbol: ksys_sync\n")
    for given, module in ((path, "from_file"), (str(path), "from_file"),
                          ("module: from_text\nhooks:\n  - symbol: ksys_sync\n", "from_text"),
                          ({"module": "from_dict", "hooks": [{"symbol": "ksys_sync"}]}, "from_dict")):
        spec, text = pytest_plugin._read_spec(given)
        assert spec.module == module and "ksys_sync" in text


def test_a_bad_spec_is_refused_at_once_with_its_place(tmp_path):
    with pytest.raises(SpecError, match=r"<string>:3:13: .*hooks\[0\]\.symbol"):
        pytest_plugin._read_spec("module: m\nhooks:\n  - symbol: 'a; reboot'\n")
    with pytest.raises(SpecError, match="<dict>:1:9"):
        pytest_plugin._read_spec({"module": "../evil", "hooks": [{"symbol": "ksys_sync"}]})
    with pytest.raises(TypeError, match="not int"):
        pytest_plugin._read_spec(3)
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match="nope.yaml"):
        pytest_plugin._read_spec(missing)


def test_results_are_only_there_after_the_block():
    class Target:
        def load(self, spec, text):
            return spec.module

        def unload(self, name):
            from kprobegen.report import Results

            return Results(name, "6.1", 1, "unload", 1, True, 0)

    probe = pytest_plugin.Probes(Target())({"module": "m", "hooks": [{"symbol": "ksys_sync"}]})
    with probe:
        with pytest.raises(pytest_plugin.ProbeError, match="once the `with` block ends"):
            probe.results
    assert probe.results.reason == "unload" and not probe.loaded
    with pytest.raises(pytest_plugin.ProbeError, match="is not loaded"):
        probe.snapshot()
