"""The Results model of one report and its JSON form (docs/results.md).

The parser builds these objects from report frames (``kprobegen.report.decode``); the JSON
shape is versioned (``JSON_VERSION``) and described by schema/results.schema.json. The text
form is ``kprobegen.report.format``.
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
