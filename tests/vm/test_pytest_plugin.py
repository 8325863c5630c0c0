"""The pytest plugin at work on a real kernel: the full guest, booted once per session.

Each check runs a pytest session in a subprocess, as a user's project would run: the
example project (examples/pytest: all pass, exact counts), a session of tests that fail on
purpose (tests/data/pytest_behaviour: how failures read, and that modules never outlive
their test), and the example project inside the guest with --kprobegen-target=host (the
guest's kernel is a host that can load modules).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .conftest import require

pytestmark = [pytest.mark.vm, pytest.mark.build, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "pytest"
BEHAVIOUR = REPO / "tests" / "data" / "pytest_behaviour" / "behaviour.py"


def pytest_session(args: list[str], cwd: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """Run pytest in a subprocess with CI=true; (the process, {test name: outcome})."""
    junit = tmp_path / "junit.xml"
    env = {**os.environ, "CI": "true"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", f"--junitxml={junit}",
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=3000)
    outcomes = {}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
            outcomes[case.get("name")] = kinds[0] if kinds else "passed"
    return proc, outcomes


@pytest.fixture(scope="module")
def image_ready(image):
    """The guest image is built (the sessions below reuse it rather than each building it)."""
    require(os.geteuid() == 0, "the plugin's guest sessions need root here (to build the image)")
    return image


def test_the_example_project_passes_with_exact_counts(image_ready, tmp_path):
    proc, outcomes = pytest_session(["-q"], EXAMPLE, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert len(outcomes) == 6 and set(outcomes.values()) == {"passed"}, outcomes
    assert re.search(r"\b6 passed\b", proc.stdout)


@pytest.fixture(scope="module")
def behaviour(image_ready, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("behaviour")
    proc, outcomes = pytest_session([str(BEHAVIOUR), "-p", "no:randomly", "-v"], BEHAVIOUR.parent, tmp)
    (tmp / "output.txt").write_text(proc.stdout + proc.stderr)     # to read when a check fails
    return proc, outcomes


def test_failures_are_the_intended_ones(behaviour):
    proc, outcomes = behaviour
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert outcomes == {
        "test_fails_on_a_count": "failure",
        "test_fails_to_load_twice": "failure",
        "test_fails_on_an_unknown_symbol": "failure",
        "test_leaves_a_module_loaded": "passed",
        "test_the_next_test_finds_nothing_loaded": "passed",
        "test_a_block_that_raises_still_gives_counts": "passed",
        "test_a_failing_command_says_so": "passed",
        "test_comparing_results_shows_both_tables": "failure",
    }, proc.stdout[-3000:]


def _section(output: str, test: str) -> str:
    """The failure report of one test in pytest's output."""
    start = output.index(f"_ {test} _")
    end = output.find("\n____", start + 1)
    return output[start:end if end > 0 else None]


def test_a_count_failure_shows_the_hooks_table(behaviour):
    proc, _ = behaviour
    text = _section(proc.stdout, "test_fails_on_a_count")
    assert "assert 2 == 3" in text
    assert "kprobegen counts" in text
    table = text[text.index("kprobegen counts"):]
    assert re.search(r"behaviour_sync", table) and re.search(r"\bsync\b.*\bksys_sync\b.*\b2\b", table), table


def test_a_failed_load_gives_the_reason(behaviour):
    proc, _ = behaviour
    twice = _section(proc.stdout, "test_fails_to_load_twice")
    assert "ProbeError" in twice and "module behaviour_sync is already loaded" in twice
    unknown = _section(proc.stdout, "test_fails_on_an_unknown_symbol")
    assert "kpg_no_such_function" in unknown and "SymbolError" in unknown


def test_comparing_results_shows_both_tables(behaviour):
    proc, _ = behaviour
    text = _section(proc.stdout, "test_comparing_results_shows_both_tables")
    assert "kprobegen results differ:" in text and "left:" in text and "right:" in text


def test_the_example_runs_on_a_host_that_loads_modules(image_ready):
    """Inside the guest, pytest with --kprobegen-target=host: the guest's kernel is the host."""
    from kprobegen.vm import guest

    out, err = bytearray(), bytearray()
    r = guest.run(image_ready, ["sh", "-c", "cd /root/example && CI=true /opt/kprobegen/bin/python -m pytest "
                                           "-p no:cacheprovider -q --kprobegen-target=host"],
                  add=[(EXAMPLE, "/root/example")], timeout=1500, stdout=out.extend, stderr=err.extend)
    r.raise_for_status()
    text = out.decode(errors="replace")
    assert r.exit_code == 0, text[-4000:] + err.decode(errors="replace")[-2000:]
    assert re.search(r"\b6 passed\b", text), text[-2000:]
