"""A frame's records → Results: the hook, key, hist and bucket records read and checked.

The records of a report come in the order the C template prints them: a ``hook`` record
announces how many ``key`` records follow and whether a ``hist`` record does; a ``hist``
record announces its ``bucket`` records. Whatever breaks that order, or a value that cannot
be read, is a problem of the frame (the Results are then incomplete), named with the record's
SEQ and log line; inconsistent sums that lose no line are warnings.

Records exactly as the C template prints them are read with one regex each (the fast paths);
anything else (other field orders, extra fields, damaged text) takes the general path through
``kprobegen.report.fields``, which says what is wrong. Both give the same Results
(tests/test_report_fastpaths.py).
"""

from __future__ import annotations

import re

from kprobegen.report.fields import bound, flag, need, sint, split_fields, uint, unescape
from kprobegen.report.results import BYTES_KEYS, KEY_KINDS, Bucket, Histogram, HookResult, Results

#: the record types of a frame's body (between its begin and end), read here
FRAME_TYPES = frozenset({"hook", "key", "hist", "bucket"})

# the key and bucket records exactly as the C template prints them (other field orders and
# extra fields take the general path)
# (at most 19 digits here, so int() is always in range; longer values take the checked path)
_KEY_RE = re.compile(r"hook=([A-Za-z0-9_]+) key=([^ ]*) count=([0-9]{1,19})")
_BUCKET_RE = re.compile(r"hook=([A-Za-z0-9_]+) low=(-inf|-?[0-9]{1,18}) high=(inf|-?[0-9]{1,18}) "
                        r"count=([0-9]{1,19})")
# hook and hist records exactly as the C template prints them (a value holds no space, no
# '=' and no tab, as split_fields would read it); checked and converted like the general path
_HOOK_RE = re.compile(r"name=([^ =\t]*) probe=([^ =\t]*) symbol=([^ =\t]*) hits=([^ =\t]*) "
                      r"missed=([^ =\t]*) dropped=([^ =\t]*) disarmed=([^ =\t]*) "
                      r"by=([^ =\t]*) keys=([^ =\t]*) hist=([^ =\t]*)")
_HIST_RE = re.compile(r"hook=([^ =\t]*) of=([^ =\t]*) scale=([^ =\t]*) unit=([^ =\t]*) "
                      r"count=([^ =\t]*) sum=([^ =\t]*) min=([^ =\t]*) max=([^ =\t]*) "
                      r"buckets=([^ =\t]*)")


_NONE = ()      # a frame's malformed record types when there are none (most frames): shared


def decode_frames(frames) -> None:
    """Each frame not read yet (``frame._results`` is None) as Results, and the types of its
    records that could not be read, kept in the frame (``_results``, ``_malformed``).

    ``frames`` are ``kprobegen.report.frames.Frame`` (that module calls this one): their
    records, framing problems and lost lines (their rows, ``frames.ROW_FIELDS``), and what
    the load record of their instance says. Problems found in the records make the Results
    incomplete. One loop for all: some logs hold as many frames as lines."""
    for frame in frames:
        if frame._results is not None:
            continue
        (begin, end, records, _, _, _, problems, lost_lines, report, reason, ts_ns,
         _) = frame._row
        problems = problems[:]
        if records:
            hooks, malformed = _read_records(records, problems)
            warnings = _warnings(hooks)
        else:               # a frame of nothing but a begin or an end: nothing to read
            hooks, malformed, warnings = {}, _NONE, []
        inst = frame.instance
        announced = inst.hooks
        if end is not None and begin is not None and announced is not None \
                and len(hooks) != announced and not problems:
            problems.append(f"the load record announced {announced} hook(s), the frame has "
                            f"{len(hooks)}")
        frame._results = Results(frame.module, inst.kernel, report, reason, ts_ns, not problems,
                                 lost_lines, problems, hooks, inst.index, warnings)
        frame._malformed = malformed or _NONE


def _read_records(records, problems: list[str]) -> tuple[dict[str, HookResult], list[str]]:
    """The hooks of a frame's records, in order; problems found are appended to ``problems``.
    Also returns the types of the records that could not be read.

    The state of the hook being read (what it still announces) lives in local variables:
    this loop runs once per record of every report read."""
    hooks: dict[str, HookResult] = {}
    malformed: list[str] = []
    cur: HookResult | None = None
    want_keys = 0
    want_hist = False
    want_buckets = 0
    conv = None
    skipping = 0        # records after a malformed hook record: theirs, not checked
    for rec in records:
        typ = rec[1]
        if skipping and typ in ("key", "hist", "bucket"):
            skipping += 1
            continue
        if skipping > 1:
            problems.append(f"{skipping - 1} record(s) of that hook not read")
        skipping = 0
        try:
            # fast paths: key and bucket records as the C template prints them
            if typ == "key" and want_keys:
                m = _KEY_RE.fullmatch(rec[2])
                if m is not None:
                    hook, key, count = m.groups()
                    if hook == cur.name:
                        k = conv(key)
                        by = cur.by
                        if k not in by:
                            by[k] = int(count)
                            want_keys -= 1
                            continue
            elif typ == "bucket" and want_buckets:
                m = _BUCKET_RE.fullmatch(rec[2])
                if m is not None and m.group(1) == cur.name:
                    low, high, count = m.group(2, 3, 4)
                    cur.histogram.buckets.append(Bucket(None if low == "-inf" else int(low),
                                                        None if high == "inf" else int(high),
                                                        int(count)))
                    want_buckets -= 1
                    continue
            # hook and hist records as the C template prints them: one regex
            m = _HOOK_RE.fullmatch(rec[2]) if typ == "hook" else (
                _HIST_RE.fullmatch(rec[2]) if typ == "hist" else None)
            d = split_fields(rec[2]) if m is None else None
            if typ == "key":
                _add_key(d, cur, want_keys, conv)
                want_keys -= 1
            elif typ == "bucket":
                _add_bucket(d, cur, want_buckets)
                want_buckets -= 1
            elif typ == "hook":
                _unfinished(cur, want_keys, want_hist, want_buckets, problems)
                cur = None
                cur, want_keys, want_hist, conv = _hook(m, d, hooks)
                want_buckets = 0
            elif typ == "hist":
                cur.histogram, buckets = _histogram(m, d, cur, want_hist, want_keys)
                want_hist = False
                want_buckets = uint(buckets)
            else:
                raise ValueError(f"record type {typ!r} is not a record type of the protocol")
        except ValueError as e:
            problems.append(f"{typ} record at SEQ {rec[0]} (log line {rec[3]}): {e}")
            if typ in FRAME_TYPES:
                malformed.append(typ)
            if typ == "hook":
                cur = None
                want_keys = want_buckets = 0
                want_hist = False
                skipping = 1
    if skipping > 1:
        problems.append(f"{skipping - 1} record(s) of that hook not read")
    _unfinished(cur, want_keys, want_hist, want_buckets, problems)
    return hooks, malformed


def _unfinished(cur: HookResult | None, want_keys: int, want_hist: bool, want_buckets: int,
                problems: list[str]) -> None:
    """What the hook being read announced and did not get (the next hook or the frame's end
    came first)."""
    if cur is None:
        return
    if want_keys:
        problems.append(f"hook {cur.name}: {want_keys} key record(s) missing")
    if want_hist:
        problems.append(f"hook {cur.name}: its hist record is missing")
    if want_buckets:
        problems.append(f"hook {cur.name}: {want_buckets} bucket record(s) missing")


def _hook(m: re.Match | None, d: dict[str, str] | None, hooks: dict[str, HookResult]):
    """A hook record (``m``: matched as the template prints it, else its fields ``d``) →
    (the hook, added to ``hooks``; key records it announces; whether a hist record follows;
    the conversion of its keys). ValueError when it cannot be read."""
    name, probe, symbol, hits, missed, dropped, disarmed, by, keys, hist = (
        m.groups() if m is not None else need(
            d, "name", "probe", "symbol", "hits", "missed", "dropped", "disarmed",
            "by", "keys", "hist"))
    if by != "-" and by not in KEY_KINDS:
        raise ValueError(f"by={by} is not a known key kind")
    if name in hooks:
        raise ValueError(f"hook {name} appears twice in the frame")
    cur = HookResult(name, symbol, probe, uint(hits), uint(missed), uint(dropped),
                     flag(disarmed), None if by == "-" else by, {}, None)
    hooks[name] = cur
    want_keys = uint(keys)
    if want_keys and by == "-":
        raise ValueError(f"keys={want_keys} but by=-")
    return cur, want_keys, flag(hist), unescape if by in BYTES_KEYS else sint


def _follows(hook: str | None, cur: HookResult | None) -> None:
    if cur is None or hook != cur.name:
        raise ValueError(f"hook={hook} does not follow hook {cur.name if cur else '(none)'}")


def _histogram(m: re.Match | None, d: dict[str, str] | None, cur: HookResult | None,
               want_hist: bool, want_keys: int) -> tuple[Histogram, str]:
    """A hist record → (its histogram, without buckets yet; the bucket count as printed).
    ValueError when it cannot be read or is not where the hook announced it."""
    _follows(m.group(1) if m is not None else d.get("hook"), cur)
    if not want_hist:
        raise ValueError(f"hook {cur.name} announced no histogram")
    if want_keys:
        raise ValueError(f"{want_keys} key record(s) of hook {cur.name} are missing before it")
    of, scale, unit, count, sum_, mn, mx, buckets = (
        m.groups()[1:] if m is not None else need(
            d, "of", "scale", "unit", "count", "sum", "min", "max", "buckets"))
    return Histogram(of, scale, None if unit == "-" else unit, uint(count),
                     sint(sum_), sint(mn), sint(mx), []), buckets


def _add_key(d: dict[str, str], cur: HookResult | None, want_keys: int, conv) -> None:
    """A key record read from its fields, added to the hook being read."""
    _follows(d.get("hook"), cur)
    if not want_keys:
        raise ValueError(f"more key records than hook {cur.name} announced")
    key, count = need(d, "key", "count")
    k = conv(key)
    if k in cur.by:
        raise ValueError(f"key {key} appears twice")
    cur.by[k] = uint(count)


def _add_bucket(d: dict[str, str], cur: HookResult | None, want_buckets: int) -> None:
    """A bucket record read from its fields, added to the histogram being read."""
    _follows(d.get("hook"), cur)
    if not want_buckets:
        raise ValueError(f"more bucket records than hook {cur.name}'s hist announced")
    low, high, count = need(d, "low", "high", "count")
    if low == "inf" or high == "-inf":
        raise ValueError("bucket bounds are the wrong way round")
    cur.histogram.buckets.append(Bucket(bound(low), bound(high), uint(count)))


def _warnings(hooks: dict[str, HookResult]) -> list[str]:
    """Sums that disagree without a line lost: keys + dropped vs hits, buckets vs count."""
    warnings: list[str] = []
    for h in hooks.values():
        if h.by_kind is not None:
            keyed = sum(h.by.values())
            if keyed + h.dropped != h.hits:
                warnings.append(f"hook {h.name}: keys sum to {keyed} and dropped={h.dropped}, "
                                f"but hits={h.hits}")
        if h.histogram is not None:
            inb = sum(b.count for b in h.histogram.buckets)
            if inb != h.histogram.count:
                warnings.append(f"hook {h.name}: buckets sum to {inb} but count={h.histogram.count}")
    return warnings
