"""Results as text: the hook table, the top keys, and histograms drawn the way bpftrace
draws them (``kprobegen parse``, ``kprobegen run``)."""

from __future__ import annotations

from kprobegen.report.results import Bucket, Histogram, Results

BAR_WIDTH = 52          # bpftrace's hist() / lhist() bar
_SUFFIXES = ((1 << 60, "E"), (1 << 50, "P"), (1 << 40, "T"), (1 << 30, "G"),
             (1 << 20, "M"), (1 << 10, "K"))


def bound_text(value: int) -> str:
    """A bucket bound the bpftrace way: 1024 → 1K, 3145728 → 3M, 1000 → 1000."""
    if value:
        for mult, suffix in _SUFFIXES:
            if value % mult == 0:
                return f"{value // mult}{suffix}"
    return str(value)


def bucket_label(bucket: Bucket, scale: str) -> str:
    if bucket.low is None:
        return "(..., %s)" % ("..." if bucket.high is None else bound_text(bucket.high))
    if bucket.high is None:
        return "[%s, ...)" % bound_text(bucket.low)
    if scale == "log2" and bucket.high == bucket.low + 1:
        return "[%s]" % bound_text(bucket.low)       # bpftrace prints [0] and [1]
    return "[%s, %s)" % (bound_text(bucket.low), bound_text(bucket.high))


#: a run of more missing empty buckets than this is drawn as one "..." line
MAX_EMPTY_FILL = 16


def _with_empty_buckets(hist: Histogram) -> list[Bucket | None]:
    """The printed (non-empty) buckets plus the empty ones between them, as bpftrace shows
    them; None marks a long run of empty buckets that is not drawn."""
    out: list[Bucket | None] = []
    prev: Bucket | None = None
    step = None
    if hist.scale == "linear":
        steps = {b.high - b.low for b in hist.buckets if b.low is not None and b.high is not None}
        step = steps.pop() if len(steps) == 1 else None
    for b in hist.buckets:
        if prev is not None and prev.high is not None and b.low is not None and b.low > prev.high:
            fill: list[Bucket] = []
            lo = prev.high
            if hist.scale == "log2" and (lo >= 1 or lo == 0 and b.low >= 1):
                if lo == 0:                     # [0] precedes the doubling buckets
                    fill.append(Bucket(0, 1, 0))
                    lo = 1
                while lo < b.low and len(fill) <= MAX_EMPTY_FILL:
                    fill.append(Bucket(lo, lo * 2, 0))
                    lo *= 2
            elif step and (b.low - lo) % step == 0:
                while lo < b.low and len(fill) <= MAX_EMPTY_FILL:
                    fill.append(Bucket(lo, lo + step, 0))
                    lo += step
            if lo == b.low and len(fill) <= MAX_EMPTY_FILL:
                out.extend(fill)
            else:
                out.append(None)
        out.append(b)
        prev = b
    return out


def format_histogram(hist: Histogram, indent: str = "") -> str:
    rows = _with_empty_buckets(hist)
    if not rows:
        return indent + "(no values)\n"
    labels = [bucket_label(b, hist.scale) if b else "..." for b in rows]
    width = max(16, max(len(s) for s in labels))
    top = max(b.count for b in hist.buckets) or 1
    lines = []
    for b, label in zip(rows, labels):
        if b is None:
            lines.append(f"{indent}{label}")
            continue
        bar = "@" * int(b.count / top * BAR_WIDTH)
        lines.append(f"{indent}{label:<{width}}{b.count:>8} |{bar:<{BAR_WIDTH}}|")
    return "\n".join(lines) + "\n"


def _table(rows: list[list[str]], right: set[int], indent: str) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append((indent + "  ".join(cells)).rstrip())
    return out


def _title(r: Results) -> str:
    parts = [r.module]
    if r.instance:
        parts.append(f"(load #{r.instance + 1})")
    parts.append("report ?" if r.report is None else f"report {r.report}")
    if r.reason:
        parts.append(f"({r.reason})")
    if r.kernel:
        parts.append(f"kernel {r.kernel}")
    if r.ts_ns is not None:
        parts.append(f"at {r.ts_ns // 1_000_000_000}.{r.ts_ns % 1_000_000_000:09d}s")
    return " ".join(parts)


def format_results(results: list[Results], top: int | None = 10) -> str:
    """Human output: per report a hook table, the top keys and bpftrace-style histograms."""
    out: list[str] = []
    for r in results:
        if out:
            out.append("")
        out.append(_title(r))
        if not r.complete:
            out.append(f"  INCOMPLETE: {r.lost_lines} line(s) lost; " + "; ".join(r.problems))
        for w in r.warnings:
            out.append(f"  warning: {w}")
        if not r.hooks:
            out.append("  (no hook records)")
            continue
        rows = [["HOOK", "PROBE", "SYMBOL", "HITS", "MISSED", "DROPPED", "DISARMED"]]
        for h in r.hooks.values():
            rows.append([h.name, h.probe, h.symbol, str(h.hits), str(h.missed), str(h.dropped),
                         "yes" if h.disarmed else "no"])
        out.extend(_table(rows, {3, 4, 5}, "  "))
        for h in r.hooks.values():
            if h.by_kind is not None:
                ranked = h.top()
                shown = ranked if top is None else ranked[:top]
                title = f"  {h.name}: hits by {h.by_kind}"
                if len(shown) < len(ranked):
                    title += f" (top {len(shown)} of {len(ranked)} keys)"
                out.append("")
                out.append(title + ":")
                if not shown:
                    out.append("    (no keys)")
                else:
                    rows = [["COUNT", h.by_kind.upper()]]
                    rows += [[str(c), h.key_text(k)] for k, c in shown]
                    out.extend(_table(rows, {0}, "    "))
                rest = len(ranked) - len(shown)
                if rest:
                    hidden = sum(c for _, c in ranked[len(shown):])
                    out.append(f"    … {rest} more key(s), {hidden} hit(s)")
                if h.dropped:
                    out.append(f"    + {h.dropped} hit(s) dropped: the key table was full")
            if h.histogram is not None:
                g = h.histogram
                unit = f" ({g.unit})" if g.unit else ""
                stats = f"count {g.count}"
                if g.count:
                    stats += f", avg {round(g.avg)}, min {g.min}, max {g.max}, sum {g.sum}"
                out.append("")
                out.append(f"  {h.name}: {g.of}{unit}, {g.scale}; {stats}")
                out.append(format_histogram(g, "  ").rstrip("\n"))
    return "\n".join(out) + "\n"
