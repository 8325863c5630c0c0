"""A deliberately small reader of report-protocol lines for the VM tests.

It does not use kprobegen.report on purpose: the VM tests check the counts the kernel printed
independently of the parser (which has its own tests, partly on the logs these runs saved).
"""

from __future__ import annotations

import re

# Run.kernel_log is /dev/kmsg records ("PRI,SEQ,TS,FLAGS;text"): the kernel's are PRI < 8. The
# line check (chk=, protocol 2) is read as one more field; the parser's tests check it.
_LINE = re.compile(r"^(?:[0-7],\d+,\d+,[^;]*;)?(?:\[[^\]]*\] )?"
                   r"kprobegen/[12] (?P<mod>\w+) (?P<seq>\d+) (?P<type>\w+)(?P<rest>(?: \S+)*)\s*$")


def records(log: str, module: str) -> list[dict[str, str]]:
    out = []
    for line in log.splitlines():
        m = _LINE.match(line)
        if m and m["mod"] == module:
            rec = {"type": m["type"], "seq": m["seq"]}
            rec.update(kv.split("=", 1) for kv in m["rest"].split())
            out.append(rec)
    return out


def hooks(log: str, module: str) -> dict[str, dict[str, str]]:
    """hook name -> its last `hook` record (the unload report of the last instance)."""
    return {r["name"]: r for r in records(log, module) if r["type"] == "hook"}


def keys(log: str, module: str, hook: str) -> dict[str, int]:
    return {r["key"]: int(r["count"]) for r in records(log, module) if r["type"] == "key" and r["hook"] == hook}


def buckets(log: str, module: str, hook: str) -> list[tuple[str, str, int]]:
    return [(r["low"], r["high"], int(r["count"])) for r in records(log, module)
            if r["type"] == "bucket" and r["hook"] == hook]
