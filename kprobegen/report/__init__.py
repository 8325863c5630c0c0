"""The report protocol (docs/report-protocol.md, versions 1 and 2): kernel log → frames → Results.

``parse_log(text)`` finds every ``kprobegen/1`` and ``kprobegen/2`` line in any common form of
the kernel log (dmesg, dmesg -T, dmesg -r, dmesg -x, /dev/kmsg, journalctl -k, syslog), takes
only the kernel's lines where the form shows who wrote them (a facility, a syslog tag) and only
version-2 lines whose check matches, groups the records by module and module instance, drops
lines seen twice, cuts each instance into report frames and checks every frame: a frame is
complete only when nothing of it is missing and nothing conflicts with it. Incomplete frames
are kept and marked; they are never repaired. See docs/results.md and the "Integrity" section
of docs/report-protocol.md. ``read_log`` reads a log from a stream with bounds.

This module is the stage's public API; the work is done in one module per step:

- ``scan``: the protocol lines of a log of any form → records grouped by module (the C
  scanner ``_logscan`` does it when built; ``scan.scan_py`` is the same in Python);
- ``instances``: a module's records → its loads, duplicate lines dropped;
- ``frames``: a load's records → report frames (framing checked), events, load failures;
  conflicts between frames (the grouping into loads, the cutting into frames and the checks
  of each load's frames are done in C too, ``_logscan.layout``, when it is built;
  ``frames.layout_py`` is the same in Python);
- ``decode``: a frame's records → Results (done when a frame's Results are first asked for);
- ``parse``: ``parse_log`` and ``LogParse``, the steps joined;

and beside them ``fields`` (reading a record's values), ``read`` (a log from a stream, with
bounds), ``results`` (the Results model and its JSON) and ``format`` (Results as text). How
fast each step is: bench/README.md (parse_bench.py).
"""

from __future__ import annotations

from kprobegen.errors import ReportError
from kprobegen.report.fields import unescape
from kprobegen.report.format import format_histogram, format_results
from kprobegen.report.frames import Event, Frame, LoadFailure
from kprobegen.report.instances import Instance, Record
from kprobegen.report.parse import LogParse, parse_log
from kprobegen.report.read import MAX_LINE, MAX_LOG_BYTES, read_log
from kprobegen.report.results import (JSON_VERSION, Bucket, Histogram, HookResult, Results,
                                      bytes_to_text, results_from_json, results_json,
                                      text_to_bytes)
from kprobegen.report.scan import (PROTOCOL_VERSION, R_CHECK, R_NOCHECK, R_PLACE, R_USER,
                                   R_V1CHK)

__all__ = ["parse_log", "LogParse", "Frame", "Event", "Record", "Instance", "LoadFailure",
           "Results", "HookResult", "Histogram", "Bucket", "format_results", "format_histogram",
           "results_json", "results_from_json", "bytes_to_text", "text_to_bytes",
           "ReportError", "PROTOCOL_VERSION", "JSON_VERSION", "unescape", "read_log",
           "MAX_LOG_BYTES", "MAX_LINE", "R_USER", "R_PLACE", "R_CHECK", "R_NOCHECK", "R_V1CHK"]
