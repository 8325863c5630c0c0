"""What `run` takes from the kernel log of its VM (pipeline.module_report): the module's latest
complete report; when conflicting or cut frames leave none, its latest frame, incomplete and
with its problems, plus the reason, so that `run` shows it and still fails (issue #11)."""

from __future__ import annotations

import pytest

from kprobegen.errors import ReportError
from kprobegen.pipeline import module_report
from kprobegen.report import parse_log
from report_model import render_log
from test_report_integrity import SYNC, forged_frame, real_lines


def test_a_complete_report_is_the_result():
    results, error = module_report(parse_log(render_log(real_lines(), "kmsg")), "sync_counter")
    assert results == [SYNC] and error is None


def test_conflicting_frames_give_the_latest_frame_incomplete_and_a_reason():
    real = render_log(real_lines(), "dmesg").splitlines()
    log = "\n".join(real[:1] + render_log(forged_frame(), "dmesg").splitlines() + real[1:]) + "\n"
    (latest,), error = module_report(parse_log(log), "sync_counter")
    assert not latest.complete and latest.problems
    assert latest.to_json()["complete"] is False
    assert "no complete report for module sync_counter" in error and "claim report 0" in error


def test_a_module_without_any_frame_is_an_error():
    with pytest.raises(ReportError, match="no complete report for module other"):
        module_report(parse_log(render_log(real_lines(), "kmsg")), "other")
