"""The SystemTap script equivalent to a spec's module (templates/module.stp.j2).

Probe points that need no debuginfo: ``kprobe.function("f")`` and its ``.return``; arguments
through ``long_arg()`` / ``int_arg()`` / ``uint_arg()``, entry values of a kretprobe through
``@entry()``. What the shared parts are, and which semantics are mirrored from the C module:
:mod:`kprobegen.codegen.scripts`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kprobegen.codegen.escape import script_comment, script_int, script_string
from kprobegen.codegen.jinja import render_template
from kprobegen.codegen.scripts import (
    Script,
    check_names,
    constant_comparison,
    glob_warning,
    print_plan,
    script_context,
)
from kprobegen.ints import S32_MAX, S32_MIN

if TYPE_CHECKING:
    from kprobegen.spec import Hook, Spec

__all__ = ["render_stap"]

# SystemTap's runtime keeps linear histogram bounds in a C ``int`` and has at most
# STP_MAX_BUCKETS (128, runtime/stat.h) buckets including underflow and overflow.
STAP_INT_MIN, STAP_INT_MAX = S32_MIN, S32_MAX
STAP_MAX_BUCKETS = 128


def render_stap(spec: Spec) -> Script:
    """The SystemTap script equivalent to ``spec``'s module (probe points that need no debuginfo)."""
    check_names(spec)
    warnings: list[str] = []
    hooks = []
    for hook in spec.hooks:
        hooks.append(_stap_hook(spec, hook, warnings))
    context = script_context(spec, "SystemTap", warnings)
    context.update(hooks=hooks, active=[h for h in hooks if not h["omitted"]])
    return Script(render_template("module.stp.j2", context), tuple(warnings))


def _stap_hook(spec: Spec, hook: Hook, warnings: list[str]) -> dict:
    n = hook.hook_name
    kret = hook.is_kretprobe
    lim = spec.limits
    h: dict = {"name": n, "probe": hook.probe, "symbol": hook.symbol, "omitted": False, "omitted_reason": ""}
    if hook.is_glob:
        warnings.append(glob_warning(hook))
    if hook.offset:
        reason = (
            f"hook {n}: offset +{hook.offset} into {hook.symbol} has no SystemTap probe point without "
            "debuginfo (kprobe.statement takes an absolute address and guru mode, and KASLR moves "
            "it): this hook is left out of the script"
        )
        warnings.append(reason)
        h.update(omitted=True, omitted_reason=script_comment(reason))
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
            conds.append(f"{at_entry('execname()')} == {script_string(f.comm_bytes)}")
        for name, comps in hook.comparisons.items():
            value = returnval if name == "retval" else arg(name)
            for c in comps:
                constant = constant_comparison(c)
                if constant is None:
                    conds.append(f"{value} {c.op} {script_int(c.value)}")
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
        h["print"] = print_plan(hook.print, latency, returnval, arg)
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
