"""The Results model of one report, its JSON form (docs/results.md) and its human form.

The parser (kprobegen/report.py) builds these objects from report frames; the JSON shape
is versioned (``JSON_VERSION``) and described by schema/results.schema.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kprobegen.errors import ReportError

JSON_VERSION = 1

#: ``by=`` values whose keys are escaped byte strings; every other kind has integer keys.
BYTES_KEYS = frozenset({"comm"})
KEY_KINDS = frozenset({"comm", "pid", "tgid", "cpu", "retval",
                       "arg0", "arg1", "arg2", "arg3", "arg4", "arg5"})

Key = bytes | int


# ------------------------------------------------------------------ byte strings as text

def bytes_to_text(value: bytes) -> str:
    """A comm (any bytes) as readable text that converts back exactly.

    UTF-8 text stays as it is, except that a backslash, a control character (0x00-0x1f,
    0x7f) and every byte that is not part of valid UTF-8 are written ``\\xHH`` (two
    lowercase hex digits). A backslash is always escaped, so ``\\x`` in the text always
    starts an escape: :func:`text_to_bytes` is the exact inverse.
    """
    if value.isascii() and value.isalnum():
        return value.decode("ascii")
    text = value.decode("utf-8", "surrogateescape")
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:        # a byte that is not valid UTF-8
            out.append("\\x%02x" % (code - 0xDC00))
        elif code < 0x20 or code == 0x7F or ch == "\\":
            out.append("\\x%02x" % code)
        else:
            out.append(ch)
    return "".join(out)


def text_to_bytes(text: str) -> bytes:
    """The inverse of :func:`bytes_to_text`; raises ValueError on a text it cannot produce."""
    if "\\" not in text:
        return text.encode("utf-8", "surrogateescape")
    parts = text.split("\\")
    out = bytearray(parts[0].encode("utf-8"))
    for part in parts[1:]:
        if len(part) < 3 or part[0] != "x":
            raise ValueError(f"bad escape in {text!r}: a backslash must start \\xHH")
        out.append(int(part[1:3], 16))
        out += part[3:].encode("utf-8")
    return bytes(out)


# ------------------------------------------------------------------ the model

@dataclass
class Bucket:
    """The half-open range ``[low, high)``; ``None`` is an open end (-inf / +inf)."""

    low: int | None
    high: int | None
    count: int

    def to_json(self) -> dict:
        return {"low": self.low, "high": self.high, "count": self.count}


@dataclass
class Histogram:
    of: str                 # latency, retval, arg0..arg5
    scale: str              # log2 or linear
    unit: str | None        # "ns" for latency, else None ("-" in the protocol)
    count: int
    sum: int
    min: int
    max: int
    buckets: list[Bucket] = field(default_factory=list)

    @property
    def avg(self) -> float | None:
        return self.sum / self.count if self.count else None

    def to_json(self) -> dict:
        return {"of": self.of, "scale": self.scale, "unit": self.unit, "count": self.count,
                "sum": self.sum, "min": self.min, "max": self.max, "avg": self.avg,
                "buckets": [b.to_json() for b in self.buckets]}


@dataclass
class HookResult:
    name: str
    symbol: str
    probe: str              # kprobe or kretprobe
    hits: int
    missed: int
    dropped: int
    disarmed: bool
    by_kind: str | None     # comm, pid, tgid, cpu, arg0..arg5, retval; None for "-"
    by: dict[Key, int] = field(default_factory=dict)   # bytes keys for comm, int otherwise
    histogram: Histogram | None = None

    def top(self, n: int | None = None) -> list[tuple[Key, int]]:
        """Keys by count, largest first; equal counts in key order."""
        items = sorted(self.by.items(), key=lambda kv: (-kv[1], kv[0]))
        return items if n is None else items[:n]

    def key_text(self, key: Key) -> str:
        return bytes_to_text(key) if isinstance(key, bytes) else str(key)

    def to_json(self) -> dict:
        return {"symbol": self.symbol, "probe": self.probe, "hits": self.hits,
                "missed": self.missed, "dropped": self.dropped, "disarmed": self.disarmed,
                "by_kind": self.by_kind,
                "by": {self.key_text(k): c for k, c in self.top()},
                "histogram": self.histogram.to_json() if self.histogram else None}


@dataclass
class Results:
    """One report of one module instance (a frame of the report protocol)."""

    module: str
    kernel: str | None      # from the instance's `load` record; None when that line is gone
    report: int | None      # None when neither `begin` nor `end` survived
    reason: str | None      # interval / unload; None without `begin`
    ts_ns: int | None       # ktime at `begin`; None without `begin`
    complete: bool
    lost_lines: int         # a lower bound: lines known to be missing from this frame
    problems: list[str] = field(default_factory=list)   # why it is incomplete (empty iff complete)
    hooks: dict[str, HookResult] = field(default_factory=dict)
    instance: int = 0       # 0, 1, … : which load of the module in this log
    warnings: list[str] = field(default_factory=list)   # inconsistencies that lose no line

    def to_json(self) -> dict:
        return {"version": JSON_VERSION, "module": self.module, "kernel": self.kernel,
                "instance": self.instance, "report": self.report, "reason": self.reason,
                "ts_ns": self.ts_ns, "complete": self.complete, "lost_lines": self.lost_lines,
                "problems": list(self.problems), "warnings": list(self.warnings),
                "hooks": {name: h.to_json() for name, h in self.hooks.items()}}

    @classmethod
    def from_json(cls, data: dict) -> Results:
        """Rebuild Results from :meth:`to_json` output (exactly: keys are converted back)."""
        if data.get("version") != JSON_VERSION:
            raise ReportError(f"results JSON version {data.get('version')!r} is not "
                              f"{JSON_VERSION}: use the kprobegen that wrote it")
        hooks = {}
        for name, h in data["hooks"].items():
            kind = h["by_kind"]
            conv = text_to_bytes if kind in BYTES_KEYS else int
            hist = None
            if h["histogram"] is not None:
                hd = h["histogram"]
                hist = Histogram(hd["of"], hd["scale"], hd["unit"], hd["count"], hd["sum"],
                                 hd["min"], hd["max"],
                                 [Bucket(b["low"], b["high"], b["count"]) for b in hd["buckets"]])
            hooks[name] = HookResult(name, h["symbol"], h["probe"], h["hits"], h["missed"],
                                     h["dropped"], h["disarmed"], kind,
                                     {conv(k): c for k, c in h["by"].items()}, hist)
        return cls(data["module"], data["kernel"], data["report"], data["reason"],
                   data["ts_ns"], data["complete"], data["lost_lines"], list(data["problems"]),
                   hooks, data["instance"], list(data["warnings"]))


def results_json(results: list[Results], log_problems: list[str] | None = None,
                 log_notes: list[str] | None = None) -> dict:
    """The document `kprobegen parse --json` prints: ``{"version": 1, "reports": [...]}``,
    and ``"log": {"problems": [...], "notes": [...]}`` when findings about the log as a whole
    are given (``LogParse.problems``, ``LogParse.notes``)."""
    out = {"version": JSON_VERSION, "reports": [r.to_json() for r in results]}
    if log_problems is not None or log_notes is not None:
        out["log"] = {"problems": list(log_problems or ()), "notes": list(log_notes or ())}
    return out


def results_from_json(data: dict) -> list[Results]:
    if data.get("version") != JSON_VERSION:
        raise ReportError(f"results JSON version {data.get('version')!r} is not {JSON_VERSION}")
    return [Results.from_json(r) for r in data["reports"]]


# ------------------------------------------------------------------ human output

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
