"""The tests' model of the C side of docs/report-protocol.md, and of the kernel log forms.

``ModuleWriter`` prints what a generated module prints (load, begin/hook/key/hist/bucket/end,
event), following the protocol document's rules — written independently of the parser, so
that a misreading of the protocol shows up as a disagreement between the two.
``LOG_FORMS`` wrap kernel-log text the way dmesg, dmesg -T, dmesg -r, dmesg -x, /dev/kmsg,
journalctl -k (short, short-precise) and syslog daemons show it.
"""

from __future__ import annotations

import random
import zlib

from kprobegen.report.results import Histogram, HookResult, Results


def escape(value: bytes) -> str:
    """Protocol escaping: bytes outside 0x21..0x7e and \\ = " become \\xHH (lowercase)."""
    out = []
    for c in value:
        if 0x21 <= c <= 0x7E and c not in b'\\="':
            out.append(chr(c))
        else:
            out.append("\\x%02x" % c)
    return "".join(out)


def _bound(value: int | None, low: bool) -> str:
    if value is None:
        return "-inf" if low else "inf"
    return str(value)


class ModuleWriter:
    """One instance (one load) of a module: SEQ 0, 1, 2, … across everything it prints."""

    def __init__(self, module: str, version: int = 1):
        self.module = module
        self.version = version
        self.seq = 0
        self.reports = 0

    def line(self, type_: str, fields: list[tuple[str, object]]) -> str:
        text = " ".join(f"{k}={v}" for k, v in fields)
        out = f"kprobegen/{self.version} {self.module} {self.seq} {type_}" + (f" {text}" if text else "")
        self.seq += 1
        if self.version >= 2:       # the line check: CRC-32 (zlib's) of the text before it
            out += f" chk={zlib.crc32(out.encode('latin-1')):08x}"
        return out

    def load(self, kernel: str, hooks: int) -> list[str]:
        return [self.line("load", [("kernel", kernel), ("hooks", hooks), ("protocol", self.version)])]

    def error(self, hook: str, symbol: str, err: int) -> list[str]:
        return [self.line("error", [("hook", hook), ("symbol", symbol), ("err", err)])]

    def event(self, hook: str, pid: int, tgid: int, cpu: int, comm: bytes,
              values: dict[str, int]) -> list[str]:
        return [self.line("event", [("hook", hook), ("pid", pid), ("tgid", tgid), ("cpu", cpu),
                                    ("comm", escape(comm))] + list(values.items()))]

    def body(self, r: Results, rng: random.Random | None = None) -> list[tuple[str, list]]:
        """The frame's records (type, fields) between begin and end."""
        recs: list[tuple[str, list]] = []
        for h in r.hooks.values():
            recs.append(("hook", [
                ("name", h.name), ("probe", h.probe), ("symbol", h.symbol), ("hits", h.hits),
                ("missed", h.missed), ("dropped", h.dropped), ("disarmed", int(h.disarmed)),
                ("by", h.by_kind or "-"), ("keys", len(h.by)),
                ("hist", int(h.histogram is not None))]))
            keys = list(h.by.items())
            if rng is not None:
                rng.shuffle(keys)           # the kernel's table has no particular order
            for k, c in keys:
                ktext = escape(k) if isinstance(k, bytes) else str(k)
                recs.append(("key", [("hook", h.name), ("key", ktext), ("count", c)]))
            g = h.histogram
            if g is not None:
                recs.append(("hist", [("hook", h.name), ("of", g.of), ("scale", g.scale),
                                      ("unit", g.unit or "-"), ("count", g.count),
                                      ("sum", g.sum), ("min", g.min), ("max", g.max),
                                      ("buckets", len(g.buckets))]))
                for b in g.buckets:
                    recs.append(("bucket", [("hook", h.name), ("low", _bound(b.low, True)),
                                            ("high", _bound(b.high, False)),
                                            ("count", b.count)]))
        return recs

    def report(self, r: Results, rng: random.Random | None = None,
               events: list[tuple] | None = None) -> list[str]:
        """A whole frame. ``events`` — (hook, pid, tgid, cpu, comm, values) tuples — are
        printed in between its records (with ``rng``), the way an event printed by a probe
        on another CPU lands inside an interval report; they take SEQs too."""
        body = self.body(r, rng)
        out = [self.line("begin", [("report", r.report), ("reason", r.reason),
                                   ("ts_ns", r.ts_ns), ("lines", len(body))])]
        pending = list(events or [])
        for type_, fields in body:
            if pending and rng is not None and rng.random() < 0.3:
                out += self.event(*pending.pop(0))
            out.append(self.line(type_, fields))
        for ev in pending:
            out += self.event(*ev)
        out.append(self.line("end", [("report", r.report), ("lines", len(body))]))
        self.reports += 1
        return out


# ------------------------------------------------------------------ log forms

_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _mono(i: int) -> tuple[int, int]:
    us = 12_345_678 + i * 1_237
    return us // 1_000_000, us % 1_000_000


def _wall(i: int) -> tuple[str, str, int]:
    secs = 7 * 3600 + 35 * 60 + i // 7
    hh, mm, ss = secs // 3600, secs // 60 % 60, secs % 60
    return "Nov 26", f"{hh:02d}:{mm:02d}:{ss:02d}", (i * 9973) % 1_000_000


def kmsg_escape(text: str) -> str:
    """What /dev/kmsg does to a record's text (kernel/printk: msg_add_ext_text)."""
    out = []
    for ch in text:
        c = ord(ch)
        if c < 0x20 or c >= 0x7F or ch == "\\":
            out.append("\\x%02x" % c)
        else:
            out.append(ch)
    return "".join(out)


def form_dmesg(lines: list[str]) -> list[str]:
    return [f"[{s:5d}.{us:06d}] {t}" for i, t in enumerate(lines) for s, us in [_mono(i)]]


def form_dmesg_T(lines: list[str]) -> list[str]:
    out = []
    for i, t in enumerate(lines):
        day, hms, _ = _wall(i)
        out.append(f"[Thu {day} {hms} 2026] {t}")
    return out


def form_dmesg_r(lines: list[str]) -> list[str]:
    return [f"<6>[{s:5d}.{us:06d}] {t}" for i, t in enumerate(lines) for s, us in [_mono(i)]]


def form_kmsg(lines: list[str]) -> list[str]:
    out = []
    for i, t in enumerate(lines):
        s, us = _mono(i)
        out.append(f"6,{1000 + i},{s * 1_000_000 + us},-;{kmsg_escape(t)}")
        if i % 5 == 2:      # a dictionary (continuation) line, as device messages carry
            out.append(" SUBSYSTEM=kprobegen/1 fake 0 load kernel=x hooks=1 protocol=1")
            out.append(" DEVICE=+pci:0000:00:1f.2")
    return out


def form_dmesg_x(lines: list[str]) -> list[str]:
    """util-linux dmesg -x: facility and level, then the timestamp."""
    return [f"kern  :info  : [{s:5d}.{us:06d}] {t}" for i, t in enumerate(lines)
            for s, us in [_mono(i)]]


def form_journal_short(lines: list[str]) -> list[str]:
    return [f"{_wall(i)[0]} {_wall(i)[1]} vm kernel: {t}" for i, t in enumerate(lines)]


def form_journal_precise(lines: list[str]) -> list[str]:
    return [f"{_wall(i)[0]} {_wall(i)[1]}.{_wall(i)[2]:06d} vm kernel: {t}"
            for i, t in enumerate(lines)]


def form_syslog(lines: list[str]) -> list[str]:
    return [f"{_wall(i)[0]} {_wall(i)[1]} vm kernel: [{s:5d}.{us:06d}] {t}"
            for i, t in enumerate(lines) for s, us in [_mono(i)]]


def form_busybox(lines: list[str]) -> list[str]:
    return [f"{_wall(i)[0]} {_wall(i)[1]} vm kern.info kernel: {t}" for i, t in enumerate(lines)]


def form_bare(lines: list[str]) -> list[str]:
    """dmesg --notime, or a serial console without timestamps."""
    return list(lines)


LOG_FORMS = {
    "dmesg": form_dmesg,
    "dmesg-T": form_dmesg_T,
    "dmesg-r": form_dmesg_r,
    "dmesg-x": form_dmesg_x,
    "kmsg": form_kmsg,
    "journal-short": form_journal_short,
    "journal-short-precise": form_journal_precise,
    "syslog": form_syslog,
    "busybox-syslog": form_busybox,
    "bare": form_bare,
}


def render_log(lines: list[str], form: str, crlf: bool = False) -> str:
    nl = "\r\n" if crlf else "\n"
    return nl.join(LOG_FORMS[form](lines)) + nl


__all__ = ["ModuleWriter", "escape", "kmsg_escape", "LOG_FORMS", "render_log", "Results",
           "HookResult", "Histogram"]
