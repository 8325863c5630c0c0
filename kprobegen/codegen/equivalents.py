"""SystemTap and bpftrace scripts that do what a spec's kernel module does.

Beside ``<module>.c`` kprobegen writes ``<module>.stp`` and ``<module>.bt``: the same hooks,
filters, counters, histograms, limits and reports, written for the two tools that people reach
for instead of a hand-written module. docs/equivalents.md maps every spec feature to its C,
SystemTap and bpftrace forms side by side.

Where a tool has no faithful form of a feature, nothing is approximated silently: the feature's
:class:`Script` carries a warning (also written as a comment at the top of the script) that says
what differs and what to do. Python decides what each hook needs and builds every expression
from validated spec values; the templates (``templates/module.stp.j2``, ``module.bt.j2``) only
lay the pieces out. Strings from the spec that can hold anything (``filter.comm``, the spec's
path) are escaped for each tool's syntax here and never reach a template raw.

Semantics mirrored from the C module (templates/module.c.j2, docs/report-protocol.md):

- filters: ``pid`` is the thread id, ``tgid`` the process id, ``comm`` exact, comparisons on
  argN / retval ANDed and made on signed 64-bit values. For a kretprobe, the task and argument
  filters apply at function entry (the C entry handler), the retval filter at return.
- a hit is counted after the filter, up to ``limits.max_hits``; keyed counts and histograms
  are updated for every counted hit; latency is ns from entry to return.
- reports: every ``report.interval_ms`` (cumulative) and at the end.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import jinja2

from kprobegen import __version__
from kprobegen.errors import BuildError, RenderError
from kprobegen.codegen import c_string, environment
from kprobegen.spec import S64_MAX, S64_MIN, Hook, Spec

__all__ = [
    "Script", "render_stap", "render_bpftrace", "stap_string", "bpftrace_string", "comment_text",
    "stap_tree", "check_stap", "check_bpftrace", "stap_runtime", "build_stap",
]

# SystemTap's runtime keeps linear histogram bounds in a C ``int`` and has at most
# STP_MAX_BUCKETS (128, runtime/stat.h) buckets including underflow and overflow.
STAP_INT_MIN, STAP_INT_MAX = -(1 << 31), (1 << 31) - 1
STAP_MAX_BUCKETS = 128
# bpftrace 0.17: lhist() needs min >= 0 and at most 1000 buckets (the spec allows 1000).
BPFTRACE_MAP_KEYS_MAX_DEFAULT = 4096


@dataclass(frozen=True)
class Script:
    """One rendered script. ``text`` is deterministic: the same spec gives the same bytes."""

    text: str
    # Features of the spec with no faithful form in this tool (also comments at the top).
    warnings: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Escaping: every string from the spec that can hold anything passes through one of these.

# Bytes written as themselves inside a string literal; everything else is a 3-digit octal
# escape (both stap, which copies literals into C, and bpftrace's lexer read \ooo). No quote,
# backslash, '%', '?' (C trigraphs), '$' or '@' ever appears raw.
_STRING_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _.,:;-+/()[]<>=!#")


def _string_literal(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else bytes(value)
    if b"\0" in data:
        raise RenderError(f"a NUL byte cannot be in a script string ({data!r}); the spec check should have refused it")
    return c_string(data, safe=_STRING_SAFE)


def stap_string(value: str | bytes) -> str:
    """A SystemTap string literal holding exactly these bytes."""
    return _string_literal(value)


def bpftrace_string(value: str | bytes) -> str:
    """A bpftrace string literal holding exactly these bytes."""
    return _string_literal(value)


def comment_text(value: str) -> str:
    """Text safe on one ``#`` (stap) or ``//`` (bpftrace) comment line: printable ASCII, no
    backslash (a line splice in C-like lexers), no comment terminators; the rest becomes '?'."""
    text = "".join(ch if " " <= ch <= "~" and ch != "\\" else "?" for ch in str(value))
    return text.replace("*/", "*?").replace("/*", "?*")


def int_literal(value: int) -> str:
    """A signed 64-bit integer for either tool; S64_MIN cannot be a negated literal."""
    if isinstance(value, bool) or not isinstance(value, int) or not S64_MIN <= value <= S64_MAX:
        raise RenderError(f"{value!r} is not a signed 64-bit integer")
    if value == S64_MIN:
        return f"({S64_MIN + 1} - 1)"
    return f"({value})" if value < 0 else str(value)


_SYMBOL = re.compile(r"^[A-Za-z0-9_.*?\[\]]+$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_names(spec: Spec) -> None:
    # Re-checked here because these reach the scripts unescaped (probe points, map names).
    if not _IDENT.match(spec.module):
        raise RenderError(f"module name {spec.module!r} is not an identifier")
    for hook in spec.hooks:
        if not _IDENT.match(hook.hook_name) or not _SYMBOL.match(hook.symbol):
            raise RenderError(f"hook {hook.hook_name!r} / symbol {hook.symbol!r} is not a valid name")


# --------------------------------------------------------------------------------------------
# Templates: the project's Jinja environment (kprobegen.codegen: StrictUndefined, templates/).


def _render(template: str, context: dict) -> str:
    try:
        return environment().get_template(template).render(context)
    except jinja2.TemplateError as exc:
        raise RenderError(f"rendering {template} failed (a kprobegen bug): {exc}") from exc


# --------------------------------------------------------------------------------------------
# What each hook needs, independent of the tool.


def _print_plan(p, latency: str, retval: str, arg) -> dict:
    """The rate-limited event line of a hook, as one tool spells its values: the protocol's
    field names (latency is printed as latency_ns) paired with the tool's expressions."""
    fields = [("latency_ns", latency) if f == "latency" else (f, retval if f == "retval" else arg(f))
              for f in p.fields]
    return {"burst": p.burst, "interval_ns": p.interval_ms * 1_000_000, "fields": fields}


def _header_lines(spec: Spec, tool: str) -> list[str]:
    # The spec's file name, not its path: the same spec renders the same bytes wherever it is
    # rendered from (as in the C module's header).
    source = PurePosixPath(str(spec.source).replace("\\", "/")).name or str(spec.source)
    lines = [
        "SPDX-License-Identifier: GPL-2.0",
        f"generated by kprobegen {__version__} from {comment_text(source)} \N{EM DASH} do not edit",
        f"The {tool} equivalent of kernel module {spec.module} (see docs/equivalents.md).",
    ]
    if spec.description:
        lines.append(f"{spec.module}: {comment_text(spec.description)}")
    return lines


def _cmp_conditions(value: str, comparisons) -> list[str]:
    return [f"{value} {c.op} {int_literal(c.value)}" for c in comparisons]


def _constant_comparison(c) -> bool | None:
    """True / False for a comparison every signed 64-bit value passes / fails, else None."""
    if (c.op == ">=" and c.value == S64_MIN) or (c.op == "<=" and c.value == S64_MAX):
        return True
    if (c.op == "<" and c.value == S64_MIN) or (c.op == ">" and c.value == S64_MAX):
        return False
    return None


def _glob_warning(hook: Hook) -> str:
    return (
        f"hook {hook.hook_name}: symbol pattern {hook.symbol!r} is expanded by the tool at run time and "
        "every matching function counts into this one hook; the C module has one hook per matching "
        "symbol (render from the spec expanded against the kernel, as `kprobegen render --kernel` does, "
        "to get one probe per function)"
    )


def _script_context(spec: Spec, tool: str, warnings: list[str], string_literal) -> dict:
    """What both script templates show the same way: the header, the warnings and notes as
    comments, the report interval, the module name as the tool's string literal."""
    return {
        "spec": spec,
        "header": _header_lines(spec, tool),
        "warnings": [comment_text(w) for w in warnings],
        "notes": ["not reported by this script: missed (the kernel's nmissed per probe)"],
        "interval_ms": spec.report.interval_ms,
        "module_literal": string_literal(spec.module),
    }


# --------------------------------------------------------------------------------------------
# SystemTap


def render_stap(spec: Spec) -> Script:
    """The SystemTap script equivalent to ``spec``'s module (probe points that need no debuginfo)."""
    _check_names(spec)
    warnings: list[str] = []
    hooks = []
    for hook in spec.hooks:
        hooks.append(_stap_hook(spec, hook, warnings))
    context = _script_context(spec, "SystemTap", warnings, stap_string)
    context.update(hooks=hooks, active=[h for h in hooks if not h["omitted"]])
    return Script(_render("module.stp.j2", context), tuple(warnings))


def _stap_hook(spec: Spec, hook: Hook, warnings: list[str]) -> dict:
    n = hook.hook_name
    kret = hook.is_kretprobe
    lim = spec.limits
    h: dict = {"name": n, "probe": hook.probe, "symbol": hook.symbol, "omitted": False, "omitted_reason": ""}
    if hook.is_glob:
        warnings.append(_glob_warning(hook))
    if hook.offset:
        reason = (
            f"hook {n}: offset +{hook.offset} into {hook.symbol} has no SystemTap probe point without "
            "debuginfo (kprobe.statement takes an absolute address and guru mode, and KASLR moves "
            "it): this hook is left out of the script"
        )
        warnings.append(reason)
        h.update(omitted=True, omitted_reason=comment_text(reason))
        return h

    point = f'kprobe.function("{hook.symbol}")'
    if kret:
        point += ".return"
        if lim.maxactive:
            point += f".maxactive({lim.maxactive})"
    h["point"] = point

    def arg(name: str) -> str:
        # long_arg() counts from 1; int_arg()/uint_arg() narrow to 32 bits as hooks[].types asks.
        fn = {"long": "long_arg", "int": "int_arg", "unsigned int": "uint_arg"}[hook.value_type(name)]
        expr = f"{fn}({int(name[3]) + 1})"
        return f"@entry({expr})" if kret else expr

    # returnval() is the whole register; an int return value is sign-extended from 32 bits.
    returnval = {"long": "returnval()", "int": "((returnval() << 32) >> 32)",
                 "unsigned int": "(returnval() & 0xffffffff)"}[hook.value_type("retval")]

    def at_entry(expr: str) -> str:
        # Task filters of a kretprobe hold at entry in C (the entry handler); @entry keeps
        # the value per call, so nested and recursive calls pair up like kretprobe instances.
        return f"@entry({expr})" if kret else expr

    conds = []
    f = hook.filter
    if f is not None:
        if f.pid is not None:
            conds.append(f"{at_entry('tid()')} == {f.pid}")
        if f.tgid is not None:
            conds.append(f"{at_entry('pid()')} == {f.tgid}")
        if f.comm is not None:
            conds.append(f"{at_entry('execname()')} == {stap_string(f.comm_bytes)}")
        for name, comps in hook.comparisons.items():
            value = returnval if name == "retval" else arg(name)
            for c in comps:
                constant = _constant_comparison(c)
                if constant is None:
                    conds.append(f"{value} {c.op} {int_literal(c.value)}")
                elif constant is False:
                    conds.append("0")
    h["never"] = "0" in conds
    if "0" in conds:
        # SystemTap 4.8 fails pass 2 ("symbol without referent") when its optimiser folds
        # away a comparison that holds an @entry() value, so comparisons that are always
        # true are left out and one that is never true stands alone: the hook never counts.
        conds = ["0"]
    h["conds"] = conds
    h["max_hits"] = lim.max_hits

    h["key"] = None
    if hook.count_by:
        by = hook.count_by
        expr = {"comm": "execname()", "pid": "tid()", "tgid": "pid()", "cpu": "cpu()", "retval": returnval}.get(by) or arg(by)
        h["key"] = {"by": by, "expr": expr, "string": by == "comm", "max_keys": lim.max_keys}
        if "max_keys" in lim.model_fields_set:  # a default never warns
            warnings.append(
                f"hook {n}: limits.max_keys ({lim.max_keys}) bounds the whole table here (keys beyond are "
                "counted as dropped), while the C module bounds each CPU's table: with several CPUs the "
                "module can keep more keys and drop fewer"
            )

    h["hist"] = None
    h["latency"] = hook.measures_latency
    latency = "latency"  # a local set once per hit from @entry(ktime_get_ns()) (see the template)
    if hook.histogram is not None:
        hist = hook.histogram
        value = {"latency": latency, "retval": returnval}.get(hist.of) or arg(hist.of)
        hd = {"of": hist.of, "scale": hist.scale, "value": value, "unit": "ns" if hist.of == "latency" else "-",
              "print": f"@hist_log({n}__hist)"}
        if hist.scale == "linear":
            buckets = hist.linear_buckets
            stop = hist.max - hist.step  # stap's last regular bucket is [stop, stop + step)
            label = f"linear min={hist.min} max={hist.max} step={hist.step}"
            if not all(STAP_INT_MIN <= v <= STAP_INT_MAX for v in (hist.min, stop, hist.step, stop - hist.min)):
                warnings.append(
                    f"hook {n}: histogram ({label}): SystemTap's runtime keeps @hist_linear bounds in a "
                    "32-bit int; these do not fit, so only count/sum/min/max are printed"
                )
                hd["print"] = None
            else:
                hd["print"] = f"@hist_linear({n}__hist, {hist.min}, {stop}, {hist.step})"
                if buckets + 2 > STAP_MAX_BUCKETS:
                    warnings.append(
                        f"hook {n}: histogram ({label}) has {buckets} buckets; SystemTap allows "
                        f"{STAP_MAX_BUCKETS - 2} unless run as `stap -DSTP_MAX_BUCKETS={buckets + 2} ...` "
                        "(without it stap prints no histogram)"
                    )
        h["hist"] = hd

    h["print"] = None
    if hook.print is not None:
        h["print"] = _print_plan(hook.print, latency, returnval, arg)
    h["globals"] = _stap_globals(h)
    return h


def _stap_globals(h: dict) -> list[str]:
    n = h["name"]
    out = [f"{n}__hits"]
    if h["max_hits"]:
        out += [f"{n}__taken", f"{n}__disarmed"]
    if h["key"]:
        out += [f"{n}__by[{h['key']['max_keys']}]", f"{n}__keys", f"{n}__dropped"]
    if h["hist"]:
        out += [f"{n}__hist"]
    if h["print"]:
        out += [f"{n}__window", f"{n}__printed"]
    return out


# --------------------------------------------------------------------------------------------
# bpftrace


def _bt_symbol(hook: Hook, warnings: list[str]) -> str:
    symbol = hook.symbol
    if hook.is_glob:
        warnings.append(_glob_warning(hook))
        if any(c in symbol for c in "?["):
            # bpftrace 0.17 understands only '*' in probe names.
            wider = re.sub(r"\[[^\]]*\]|\?", "*", symbol)
            warnings.append(
                f"hook {hook.hook_name}: bpftrace matches probe names with '*' only, so {symbol!r} "
                f"is written {wider!r}, which can match more functions"
            )
            symbol = wider
        return symbol
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", symbol):
        return symbol
    return f'"{symbol}"'  # suffixed symbols such as vfs_read.isra.0 are quoted


def render_bpftrace(spec: Spec) -> Script:
    """The bpftrace script equivalent to ``spec``'s module (kprobe:/kretprobe: probes and maps)."""
    _check_names(spec)
    warnings: list[str] = []
    hooks = [_bt_hook(spec, hook, warnings) for hook in spec.hooks]
    shared, maps = _bt_maps(hooks)
    if spec.limits.maxactive and spec.kretprobes:
        warnings.append(
            f"limits.maxactive ({spec.limits.maxactive}): bpftrace 0.17 cannot set a kretprobe's maxactive; "
            "its kretprobes use the kernel's default number of instances"
        )
    context = _script_context(spec, "bpftrace", warnings, bpftrace_string)
    context.update(hooks=hooks, shared=shared, maps=maps)
    return Script(_render("module.bt.j2", context), tuple(warnings))


def _bt_hook(spec: Spec, hook: Hook, warnings: list[str]) -> dict:
    n = hook.hook_name
    kret = hook.is_kretprobe
    lim = spec.limits
    h: dict = {"name": n, "probe": hook.probe, "symbol": hook.symbol, "kret": kret, "k": bpftrace_string(n)}
    symbol = _bt_symbol(hook, warnings)
    h["entry_point"] = f"kprobe:{symbol}" + (f"+{hook.offset}" if hook.offset else "")
    h["return_point"] = f"kretprobe:{symbol}"
    h["point"] = h["return_point"] if kret else h["entry_point"]  # of a hook without an entry probe

    f = hook.filter
    task = []
    if f is not None:
        if f.pid is not None:
            task.append(f"tid == {f.pid}")
        if f.tgid is not None:
            task.append(f"pid == {f.tgid}")
        if f.comm is not None:
            task.append(f"comm == {bpftrace_string(f.comm_bytes)}")
    comps = hook.comparisons
    entry_args = hook.entry_args

    def raw(name: str) -> str:
        """argN / retval as a signed 64-bit value, narrowed first as hooks[].types asks."""
        narrow = {"long": "", "int": "(int32)", "unsigned int": "(uint32)"}[hook.value_type(name)]
        return f"(int64){narrow}{name}"

    arg_conds = [c for name, cs in comps.items() if name != "retval"
                 for c in _cmp_conditions(raw(name), cs)]
    ret_conds = _cmp_conditions(raw("retval"), comps.get("retval", ()))

    def arg(name: str) -> str:
        return f"${name}" if kret else raw(name)

    # A kretprobe that needs entry (a task or argument filter, arguments, latency) gets a
    # kprobe that pushes one frame per call onto a per-thread stack: @N__depth[tid] is the
    # depth, @N__entry[tid, depth] the entry time of a call that passed the filter (0 if it
    # did not). The return pops the frame, so nested and recursive calls pair up the way
    # kretprobe instances do in C, and a filtered-out call is never counted at its return.
    needs_entry = hook.needs_entry
    h["needs_entry"] = needs_entry
    h["entry_conds"] = task + arg_conds if needs_entry else []
    h["entry_args"] = entry_args
    h["entry_values"] = {a: raw(a) for a in entry_args}
    if kret:
        h["predicate"] = [] if needs_entry else task + ret_conds
        h["ret_conds"] = ret_conds if needs_entry else []
    else:
        h["predicate"] = task + arg_conds
        h["ret_conds"] = []
    h["latency"] = hook.measures_latency

    h["max_hits"] = lim.max_hits
    if lim.max_hits:
        warnings.append(
            f"hook {n}: limits.max_hits ({lim.max_hits}) is checked with a plain map counter, which "
            "bpftrace does not update atomically: hits racing on several CPUs can pass the limit by a "
            "few (C uses an atomic counter and then disarms the probe)"
        )

    h["key"] = None
    if hook.count_by:
        by = hook.count_by
        expr = {"comm": "comm", "pid": "tid", "tgid": "pid", "cpu": "cpu", "retval": raw("retval")}.get(by) or arg(by)
        h["key"] = {"by": by, "expr": expr}
        if "max_keys" in lim.model_fields_set:  # a default never warns
            warnings.append(
                f"hook {n}: limits.max_keys ({lim.max_keys}) has no bpftrace form: a map is bounded only by "
                f"BPFTRACE_MAP_KEYS_MAX (default {BPFTRACE_MAP_KEYS_MAX_DEFAULT}, for every map), and keys "
                "beyond it are lost without a dropped count"
            )

    h["hist"] = None
    if hook.histogram is not None:
        hist = hook.histogram
        value = {"latency": "$latency", "retval": raw("retval")}.get(hist.of) or arg(hist.of)
        hd = {"of": hist.of, "scale": hist.scale, "value": value, "call": f"hist({value})", "shift": 0}
        if hist.scale == "linear":
            label = f"linear min={hist.min} max={hist.max} step={hist.step}"
            if hist.min >= 0:
                hd["call"] = f"lhist({value}, {hist.min}, {hist.max}, {hist.step})"
            elif hist.max - hist.min > S64_MAX:
                warnings.append(
                    f"hook {n}: histogram ({label}): bpftrace's lhist() needs min >= 0 and its range "
                    "(max - min) does not fit in 64 bits, so only count/sum/min/max are printed"
                )
                hd["call"] = None
            else:
                span = hist.max - hist.min
                # Values below min go to lhist's underflow bucket (-1), values at or above max to
                # its overflow bucket (span); the rest are shifted by -min, which cannot overflow.
                shifted = (f"({value} < {int_literal(hist.min)} ? -1 : ({value} >= {int_literal(hist.max)} ? "
                           f"{span} : {value} - {int_literal(hist.min)}))")
                hd["call"] = f"lhist({shifted}, 0, {span}, {hist.step})"
                hd["shift"] = hist.min
                warnings.append(
                    f"hook {n}: histogram ({label}): bpftrace's lhist() needs min >= 0, so values are "
                    f"counted shifted by {-hist.min}: add {hist.min} to every printed bucket bound "
                    "(the counts are exact)"
                )
        h["hist"] = hd

    h["print"] = None
    if hook.print is not None:
        p = hook.print
        h["print"] = _print_plan(p, "$latency", raw("retval"), arg)
        warnings.append(
            f"hook {n}: print rate limit ({p.burst} per {p.interval_ms} ms) uses plain map counters, "
            "which bpftrace does not update atomically: CPUs racing can print a few more events"
        )
    return h


def _bt_maps(hooks: list[dict]) -> tuple[dict, list[str]]:
    """Which shared maps (keyed by hook name) the script uses, and every map, to clear in END.

    Counters that C keeps per hook live in maps keyed by the hook's name (@hits["sync"]):
    bpftrace prints every map left at exit, and a cleared map without keys still prints as
    "@x: 0", while a cleared keyed map prints nothing."""
    shared = {
        "disarmed": any(h["max_hits"] for h in hooks),  # with @taken
        "stats": any(h["hist"] for h in hooks),
        "window": any(h["print"] for h in hooks),
    }
    maps = ["@hits"]
    if shared["disarmed"]:
        maps += ["@taken", "@disarmed"]
    if shared["stats"]:
        maps += ["@stats", "@min", "@max"]
    if shared["window"]:
        maps += ["@window", "@printed"]
    for h in hooks:
        n = h["name"]
        if h["needs_entry"]:
            maps += [f"@{n}__depth", f"@{n}__entry"] + [f"@{n}__{a}" for a in h["entry_args"]]
        if h["key"]:
            maps.append(f"@{n}__by")
        if h["hist"] and h["hist"]["call"]:
            maps.append(f"@{n}__hist")
    return shared, maps


# --------------------------------------------------------------------------------------------
# Checking scripts with the real tools (used by the tests; usable from the CLI).


def stap_tree(kernel=None, dest=None):
    """A kernel tree that ``stap -r`` can check scripts against: a folder of symlinks to every
    entry of the kernel's Kbuild tree, plus the real ``System.map``.

    SystemTap 4.8 resolves ``kprobe.function("f")`` against a symbol table: with ``-r DIR`` it
    reads ``DIR/System.map`` (then ``/boot/System.map-<version>``). Debian's System.map is a
    stub, so the table comes from the kernel profile (the guest's /proc/kallsyms, captured once
    by booting the kernel: kprobegen.kernels.symbols.load_profile). Returns the folder
    (default: the kprobegen cache, ``stap-trees/<release>``).
    """
    from kprobegen.kernels import cache_dir, find_kernel
    from kprobegen.kernels.symbols import load_profile

    if kernel is None or isinstance(kernel, str):
        kernel = find_kernel(kernel)
    if kernel.build_dir is None or not Path(kernel.build_dir).is_dir():
        raise BuildError(f"kernel {kernel.release} has no Kbuild tree: install its headers "
                         f"(apt-get install linux-headers-{kernel.release})")
    system_map = load_profile(kernel).system_map()
    tree = Path(dest) if dest is not None else cache_dir() / "stap-trees" / kernel.release
    tree.mkdir(parents=True, exist_ok=True)
    build = Path(kernel.build_dir)
    for entry in sorted(build.iterdir()):
        if entry.name == "System.map":
            continue
        link = tree / entry.name
        target = os.path.realpath(entry)
        if os.path.islink(link) and os.readlink(link) == target:
            continue
        if os.path.lexists(link):
            link.unlink()
        link.symlink_to(target)
    current = tree / "System.map"
    if not current.is_file() or current.read_text() != system_map:
        fd, tmp = tempfile.mkstemp(dir=tree, prefix=".System.map.")
        with os.fdopen(fd, "w") as f:
            f.write(system_map)
        os.chmod(tmp, 0o644)
        os.replace(tmp, current)
    return tree


def check_stap(text: str, tree, timeout: float = 300.0, last_pass: int = 2) -> str:
    """Run SystemTap's pass 2 (parse, resolve probe points against System.map, elaborate and
    type-check) on a script: ``stap -p2 -r TREE SCRIPT``. Returns stap's stdout (the resolved
    script; with ``last_pass=3`` the C it translates to); raises BuildError with stap's message
    when stap refuses it. SystemTap 4.8's pass 4 (compiling the module) does not work against
    Debian's 6.1 kernel, so pass 2 (or 3, translation) is the check that can be made."""
    if last_pass not in (1, 2, 3):
        raise ValueError("last_pass must be 1, 2 or 3")
    return _run_tool(["stap", f"-p{last_pass}", "-r", str(tree)], text, ".stp", f"SystemTap (stap -p{last_pass})", timeout)


def check_bpftrace(text: str, timeout: float = 300.0) -> bytes:
    """Compile a script with bpftrace without loading it: ``bpftrace --emit-elf OUT SCRIPT``
    (parse, semantic analysis, LLVM code generation; a dry run that needs no BPF-capable
    kernel). Returns the ELF object; raises BuildError with bpftrace's message on failure.
    Symbol existence is not checked by this (bpftrace only warns "not traceable" when the
    host kernel has no kprobes); stap -p2 checks it against the kernel's System.map."""
    with tempfile.TemporaryDirectory(prefix="kprobegen-bt-") as tmp:
        out = Path(tmp) / "script.o"
        _run_tool(["bpftrace", "--emit-elf", str(out)], text, ".bt", "bpftrace (--emit-elf)", timeout)
        if not out.is_file():
            raise BuildError("bpftrace --emit-elf exited 0 but wrote no ELF object")
        return out.read_bytes()


def _run_tool(argv: list[str], text: str, suffix: str, what: str, timeout: float) -> str:
    if shutil.which(argv[0]) is None:
        raise BuildError(f"{argv[0]} is not installed: apt-get install {'systemtap' if argv[0] == 'stap' else 'bpftrace'}")
    with tempfile.TemporaryDirectory(prefix="kprobegen-check-") as tmp:
        script = Path(tmp) / f"script{suffix}"
        script.write_text(text)
        try:
            proc = subprocess.run(argv + [str(script)], capture_output=True, text=True, timeout=timeout,
                                  cwd=tmp, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BuildError(f"{what} did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if "error" in line.lower() and "RLIMIT_MEMLOCK" not in line]
        first = errors[0] if errors else (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise BuildError(f"{what} refused the script (exit {proc.returncode}): {first}\n{proc.stderr}")
    return proc.stdout


# --------------------------------------------------------------------------------------------
# Building and running the SystemTap script for real (pass 4) on kernels stap 4.8 predates.

STAP_RUNTIME = "/usr/share/systemtap/runtime"


def stap_runtime(tree) -> str:
    """The SystemTap runtime folder to build against this kernel tree (``stap -R``).

    SystemTap 4.8's runtime calls ``task_work_cancel(task, func)``. The kernel (upstream in 2024,
    and the 6.1.y stable series by 6.1.192, which Debian 12 ships) renamed that to ``task_work_cancel_func()``
    and gave ``task_work_cancel()`` a ``struct callback_head *`` argument and a bool result, so
    pass 4 fails with "incompatible pointer type" in runtime/stp_task_work.c. For such a tree
    (told apart by ``task_work_cancel_func`` in the tree's System.map),
    this returns a copy of the runtime (cached beside the kprobegen cache) whose
    stp_task_work.c uses ``task_work_cancel_func``, the same operation under its new name;
    for other trees, the system's runtime unchanged."""
    from kprobegen.kernels import cache_dir

    system_map = Path(tree) / "System.map"
    try:
        text = system_map.read_text()
    except OSError:
        raise BuildError(f"{system_map} is missing: make the tree with kprobegen.codegen.equivalents.stap_tree()") from None
    if not re.search(r"^\S+ [tT] task_work_cancel_func$", text, re.M):
        return STAP_RUNTIME
    source = Path(STAP_RUNTIME) / "stp_task_work.c"
    original = source.read_text()
    old_type = "typedef typeof(&task_work_cancel) task_work_cancel_fn;"
    old_lookup = 'kallsyms_lookup_name("task_work_cancel")'
    if old_type not in original or old_lookup not in original:
        # A SystemTap that already knows the new API (or changed this file): use it as it is.
        return STAP_RUNTIME
    patched = original.replace(old_type, "typedef typeof(&task_work_cancel_func) task_work_cancel_fn;").replace(
        old_lookup, 'kallsyms_lookup_name("task_work_cancel_func")')
    key = hashlib.sha256(original.encode()).hexdigest()[:16]
    dest = cache_dir() / "stap-runtime" / key
    if (dest / "stp_task_work.c").is_file() and (dest / "stp_task_work.c").read_text() == patched:
        return str(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".runtime-", dir=dest.parent))
    try:
        shutil.copytree(STAP_RUNTIME, staging / "runtime", symlinks=True)
        (staging / "runtime" / "stp_task_work.c").write_text(patched)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging / "runtime", dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(dest)


def build_stap(text: str, tree, out_dir, name: str, timeout: float = 900.0):
    """Build a SystemTap script into ``out_dir/<name>.ko`` (passes 1-4:
    ``stap -p4 -R RUNTIME -r TREE -m NAME SCRIPT``), to be run with ``staprun NAME.ko``.
    ``tree`` is from :func:`stap_tree`; the runtime from :func:`stap_runtime`."""
    if not _IDENT.match(name) or len(name) > 55:
        raise BuildError(f"stap module name {name!r} must be an identifier of at most 55 characters")
    if shutil.which("stap") is None:
        raise BuildError("stap is not installed: apt-get install systemtap")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    argv = ["stap", "-p4", "-R", stap_runtime(tree), "-r", str(tree), "-m", name]
    with tempfile.TemporaryDirectory(prefix="kprobegen-stap-") as tmp:
        script = Path(tmp) / f"{name}.stp"
        script.write_text(text)
        try:
            proc = subprocess.run(argv + [str(script)], capture_output=True, text=True, timeout=timeout,
                                  cwd=tmp, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BuildError(f"stap -p4 did not finish in {timeout:.0f} s") from None
        ko = Path(tmp) / f"{name}.ko"
        if proc.returncode != 0 or not ko.is_file():
            errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
            raise BuildError(f"stap -p4 could not build {name}.ko (exit {proc.returncode}): "
                             f"{errors[0] if errors else proc.stderr.strip()[-300:]}\n{proc.stderr}")
        shutil.copy2(ko, out / ko.name)
    return out / f"{name}.ko"
