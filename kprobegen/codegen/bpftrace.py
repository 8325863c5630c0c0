"""The bpftrace script equivalent to a spec's module (templates/module.bt.j2).

``kprobe:`` / ``kretprobe:`` probes and maps; a kretprobe that needs its entry gets a kprobe on
the same function that keeps one frame per call. What the shared parts are, and which
semantics are mirrored from the C module: :mod:`kprobegen.codegen.scripts`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from kprobegen.codegen.escape import script_int, script_string
from kprobegen.codegen.jinja import render_template
from kprobegen.codegen.scripts import (
    Script,
    check_names,
    cmp_conditions,
    glob_warning,
    print_plan,
    script_context,
)
from kprobegen.ints import S64_MAX

if TYPE_CHECKING:
    from kprobegen.spec import Hook, Spec

__all__ = ["render_bpftrace"]

# bpftrace 0.17: lhist() needs min >= 0 and at most 1000 buckets (the spec allows 1000); a map
# holds at most BPFTRACE_MAP_KEYS_MAX keys.
BPFTRACE_MAP_KEYS_MAX_DEFAULT = 4096


def _bt_symbol(hook: Hook, warnings: list[str]) -> str:
    symbol = hook.symbol
    if hook.is_glob:
        warnings.append(glob_warning(hook))
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
    check_names(spec)
    warnings: list[str] = []
    hooks = [_bt_hook(spec, hook, warnings) for hook in spec.hooks]
    shared, maps = _bt_maps(hooks)
    if spec.limits.maxactive and spec.kretprobes:
        warnings.append(
            f"limits.maxactive ({spec.limits.maxactive}): bpftrace 0.17 cannot set a kretprobe's maxactive; "
            "its kretprobes use the kernel's default number of instances"
        )
    context = script_context(spec, "bpftrace", warnings)
    context.update(hooks=hooks, shared=shared, maps=maps)
    return Script(render_template("module.bt.j2", context), tuple(warnings))


def _bt_hook(spec: Spec, hook: Hook, warnings: list[str]) -> dict:
    n = hook.hook_name
    kret = hook.is_kretprobe
    lim = spec.limits
    h: dict = {"name": n, "probe": hook.probe, "symbol": hook.symbol, "kret": kret, "k": script_string(n)}
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
            task.append(f"comm == {script_string(f.comm_bytes)}")
    comps = hook.comparisons
    entry_args = hook.entry_args

    def raw(name: str) -> str:
        """argN / retval as a signed 64-bit value, narrowed first as hooks[].types asks."""
        narrow = {"long": "", "int": "(int32)", "unsigned int": "(uint32)"}[hook.value_type(name)]
        return f"(int64){narrow}{name}"

    arg_conds = [c for name, cs in comps.items() if name != "retval"
                 for c in cmp_conditions(raw(name), cs)]
    ret_conds = cmp_conditions(raw("retval"), comps.get("retval", ()))

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
                shifted = (f"({value} < {script_int(hist.min)} ? -1 : ({value} >= {script_int(hist.max)} ? "
                           f"{span} : {value} - {script_int(hist.min)}))")
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
        h["print"] = print_plan(p, "$latency", raw("retval"), arg)
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
