#!/usr/bin/env python3
"""Capture every output of the kprobegen CLI, to compare a checkout before and after a change.

Issue #12 (the package restructure) demands that every CLI output and JSON output stays
identical. This script runs ``python -m kprobegen ...`` of one checkout over a fixed set of
cases and writes, for each case, what came out::

    OUTDIR/<case>/cmd      the command (normalized), its cache, stdin and extra environment
    OUTDIR/<case>/rc       the exit status
    OUTDIR/<case>/stdout   standard output (normalized)
    OUTDIR/<case>/stderr   standard error (normalized)
    OUTDIR/<case>/files/   the folder the command wrote (render -o, build -o), if any:
                           text files as they are (normalized), each .ko as a summary
                           (<name>.ko.summary: sha256 without debug info and build id,
                           .modinfo, section sizes); files/.listing names every entry and mode
    OUTDIR/_inputs/        the generated specs and kernel logs the cases read

so that ``diff -r BEFORE AFTER`` is the whole comparison:

    python tests/tools/outputs.py --checkout /work/baseline --out /tmp/before
    python tests/tools/outputs.py --checkout /work/main --out /tmp/after
    diff -r /tmp/before /tmp/after

Only the CLI is used (a subprocess per command, PYTHONPATH=<checkout>, cwd=<checkout>), never
kprobegen's modules, whose paths are what changes. Nothing boots: ``run``, ``vm``, ``image``,
``load`` are exercised only where they fail before a boot, and a guard folder first on PATH
replaces qemu, insmod, rmmod and modprobe by a script that fails, so that a command that would
boot or load shows up as an error instead of doing it. Kernel symbols come from a small
synthetic kernel profile seeded into a private cache at the documented place
(<cache>/profiles/<release>/{kallsyms,blacklist}.gz, docs/kernels.md), so `check --kernel`,
`render --kernel` (glob expansion) and `build --kernel` run without capturing a profile.

The specs are the examples (<checkout>/modules/*.yaml) and N generated ones (--specs,
default 300), made deterministically from --seed: valid specs covering every spec feature
(kprobe/kretprobe, offsets, filters, count_by keys, log2/linear histograms, print, types,
limits, report intervals, globs, odd but valid strings and YAML styles) and invalid ones
(one defect each: unknown keys, wrong values and types, impossible combinations, YAML syntax,
bad bytes, bounds). Spec i depends only on (seed, i): --specs N gives the first N of any larger run.

What runs on each spec: check --json and render -o (no kernel profile), check with the default
kernel's profile cached, render --kernel -o for glob specs, stap and bpftrace on every fourth
spec and on the glob specs (render -o writes the same scripts byte for byte); the examples and
the first --full generated specs get every variant (check/render with --kernel, a suite name,
--emit-c, stdin). Builds (Kbuild against the installed headers, one 6.1 kernel if there is
one): the examples in every mode (cache, --no-cache, --kernel-dir, --strict, --kernel,
--show-command), the first --builds valid generated specs, two glob specs with --kernel. Kernel
logs: every *.txt of tests/fixtures/logs (and tests/data) with parse, parse --json and
parse --json --all, some with more options, and --mutated-logs damaged copies. Then the
--help of every command, and bad input: missing and special files, bad options and paths.
Tracebacks (--debug) keep their first and last lines: the frames name files and line numbers.

What legitimately differs between runs and checkouts is normalized, and only that: the
checkout's path ($CHECKOUT), this run's work folder ($WORK: specs, output folders, caches,
temporary files), the random part of temporary names under it (XXXXXXXX), the interpreter's
prefix ($PYTHON_PREFIX) and the running host kernel's release ($UNAME_R). The environment is
fixed (LC_ALL=C.UTF-8, TZ=UTC, COLUMNS=80, PYTHONHASHSEED=0, umask 022, a private HOME, TMPDIR
and KPROBEGEN_CACHE), so no output depends on the caller's.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

# ----------------------------------------------------------------------------------------------
# Cases


@dataclass
class Case:
    name: str                       # the folder under OUTDIR (unique)
    argv: list[str]                 # after `python -m kprobegen`
    cache: str = "plain"            # "plain": no profile; "profiled": the synthetic profile seeded;
                                    # "isolated": a fresh, empty cache of this case alone
    stdin: bytes | None = None      # bytes fed on stdin (else /dev/null)
    stdin_label: str = ""           # what the stdin is, for the cmd file
    out_dir: Path | None = None     # a folder whose contents are recorded after the command
    env: dict[str, str] = field(default_factory=dict)  # extra environment (recorded)
    guard: bool = True              # qemu/insmod/rmmod/modprobe replaced by a failing script
    timeout: float = 120
    stdout: str = "pipe"            # "pipe", "closed" or "full" (/dev/full)


# A job is a list of cases run in order in one worker (builds whose "cached" depends on order).
Job = list


# ----------------------------------------------------------------------------------------------
# The synthetic kernel profile (kallsyms + kprobe blacklist), seeded into the profiled cache

TEXT_FUNCS = [
    # sync
    "ksys_sync", "__do_sys_sync", "__x64_sys_sync", "__ia32_sys_sync", "sync_filesystem", "iterate_supers",
    # fork
    "kernel_clone", "copy_process", "__do_sys_clone", "__x64_sys_clone",
    # open
    "do_sys_openat2", "do_sys_open", "__x64_sys_openat", "do_filp_open", "vfs_open",
    # vfs
    "vfs_read", "vfs_write", "vfs_readv", "vfs_writev", "vfs_llseek", "vfs_fsync", "vfs_fsync_range",
    "vfs_fstatat", "vfs_statx", "vfs_getattr", "vfs_mkdir", "vfs_rmdir", "vfs_unlink", "vfs_rename",
    "vfs_create", "vfs_link", "vfs_symlink", "vfs_statfs", "vfs_statfs.part.0.isra.0", "vfs_kern_mount",
    "vfs_kern_mount.part.0", "vfs_get_tree", "vfs_truncate", "vfs_fallocate", "vfs_setxattr", "vfs_getxattr",
    # compiler suffixes
    "match_id.isra.0", "membuf_write.isra.0", "topa_alloc.constprop.0", "set_bringup_idt_handler.constprop.0",
    # allocation, networking, scheduling
    "__kmalloc", "kmalloc_trace", "kmalloc_large_node", "__kmalloc_large_node", "kmem_cache_alloc",
    "tcp_sendmsg", "tcp_recvmsg", "udp_sendmsg", "schedule", "__schedule", "wake_up_process",
    "ext4_file_write_iter", "calibrate_delay",
    # the kprobe blacklist's kind
    "do_int3", "kprobe_int3_handler", "exc_int3", "exc_page_fault", "exc_nmi", "exc_debug",
    "exc_general_protection", "nmi_handle",
]
WEAK_FUNCS = ["calibration_delay_done", "page_is_ram"]
DUPLICATE_FUNCS = ["xen_mc_batch", "dup_static_helper"]  # two functions each: ambiguous names
NOT_ENTRY = ["calibrate_delay.cold", "vfs_get_tree.cold", "__pfx_vfs_read", "__cfi_vfs_write"]
BLACKLIST = ["do_int3", "kprobe_int3_handler", "exc_int3", "exc_page_fault", "exc_nmi", "exc_debug",
             "exc_general_protection", "nmi_handle", "__schedule"]


def synthetic_profile() -> tuple[str, str]:
    """(kallsyms text, blacklist text) of a small made-up kernel: every kind of symbol that
    kprobegen tells apart (functions, weak, duplicate names, .cold parts, padding, data, init
    code, module symbols, blacklisted functions)."""
    lines = ["0000000000000000 A fixed_percpu_data", "0000000000000000 A __per_cpu_start"]
    addr = 0xFFFFFFFF81000000
    addresses = {}

    def add(kind: str, name: str, module: str | None = None) -> None:
        nonlocal addr
        lines.append(f"{addr:016x} {kind} {name}" + (f"\t[{module}]" if module else ""))
        addresses.setdefault(name, addr)
        addr += 0x40

    add("T", "_stext")
    add("T", "_text")
    for name in TEXT_FUNCS:
        add("t" if name.endswith((".0", "_helper")) or name.startswith("vfs_s") else "T", name)
    for name in WEAK_FUNCS:
        add("W", name)
    for name in DUPLICATE_FUNCS:
        add("t", name)
        add("t", name)
    for name in NOT_ENTRY:
        add("t", name)
    add("T", "_etext")
    add("D", "jiffies")
    add("D", "jiffies_64")
    add("B", "some_bss_counter")
    add("R", "linux_banner")
    add("T", "_sinittext")
    add("T", "start_kernel")
    add("T", "vfs_caches_init")
    add("t", "xenbus_init")
    add("T", "_einittext")
    add("t", "ext4_file_read_iter", "ext4")
    add("T", "nft_do_chain", "nf_tables")
    blacklist = [f"0x{addresses[n]:016x}-0x{addresses[n] + 0x20:016x}\t{n}" for n in BLACKLIST]
    return "\n".join(lines) + "\n", "\n".join(blacklist) + "\n"


def seed_profile(cache: Path, release: str) -> None:
    kallsyms, blacklist = synthetic_profile()
    pdir = cache / "profiles" / release
    pdir.mkdir(parents=True, exist_ok=True)
    (pdir / "blacklist.gz").write_bytes(gzip.compress(blacklist.encode(), mtime=0))
    (pdir / "kallsyms.gz").write_bytes(gzip.compress(kallsyms.encode(), mtime=0))  # last: marks it complete


# ----------------------------------------------------------------------------------------------
# Spec generation

ARGS = [f"arg{i}" for i in range(6)]
COUNT_BY = ["comm", "pid", "tgid", "cpu"] + ARGS + ["retval"]
HIST_OF = ["latency", "retval"] + ARGS
OPS = ["==", "!=", "<", "<=", ">", ">="]
S64_MAX = (1 << 63) - 1
S64_MIN = -(1 << 63)

GOOD_SYMBOLS = ["ksys_sync", "vfs_read", "vfs_write", "do_sys_openat2", "kernel_clone", "vfs_open", "vfs_fstatat",
                "vfs_fsync", "vfs_statx", "vfs_mkdir", "vfs_unlink", "vfs_rename", "__x64_sys_sync",
                "__x64_sys_openat", "sync_filesystem", "vfs_statfs.part.0.isra.0", "match_id.isra.0",
                "topa_alloc.constprop.0", "calibration_delay_done", "xen_mc_batch", "tcp_sendmsg", "__kmalloc",
                "kmem_cache_alloc", "copy_process", "schedule", "wake_up_process", "vfs_kern_mount.part.0"]
BAD_SYMBOLS = ["vfs_reed", "ksys_synk", "no_such_function", "jiffies", "start_kernel", "calibrate_delay.cold",
               "__pfx_vfs_read", "ext4_file_read_iter", "exc_int3", "do_int3", "kernel_clon", "__schedule",
               "linux_banner", "sys_sync", "vfs_statfs.isra.0"]
GLOBS = ["vfs_*", "vfs_[rw]*", "*sync*", "__x64_sys_*", "vfs_?e*", "*kmalloc*", "exc_*", "nomatch_*",
         "vfs_statfs*", "do_sys_open*", "*.isra.0", "*", "vfs_[cdf]*", "?fs_read"]
COMMS = ["cat", "sync", "sh", "dd", "kworker/0:1", "a b", 'say "hi"', "back\\slash", "%s%n%d", "*/ x /*",
         "\u00e9t\u00e9-\u00fc", "123456789012345", "x", "-", "tab\there", "{json}", "#hash", "yes"]
DESCRIPTIONS = ["", "Count things", 'quotes " and \\ backslashes', "comment end */ and start /*",
                "printf %s %d %n", "a line with trailing space ", "x" * 200, "MODULE_LICENSE(\"x\")",
                "tabs are not printable? no: spaces only", "#include <evil.h>", "'single' and `back`",
                "braces {} [] () <> ; : , . ! ? @ $ ^ & | ~ = + - _"]
WORDS = ["alpha", "beta", "gamma", "delta", "sync", "open", "read", "write", "fork", "lat", "hist", "cnt", "x"]


def ident(rng: random.Random, prefix: str = "") -> str:
    return prefix + "_".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))


def comparison(rng: random.Random, allow_list: bool = True):
    """A filter value: an integer, "OP N" (decimal or hex) or a list of those."""
    def number() -> int:
        return rng.choice([0, 1, -1, 4096, -100, 7, 0x7FFFFFFF, S64_MAX, S64_MIN, rng.randint(-10 ** 6, 10 ** 6)])

    def one():
        n = number()
        kind = rng.random()
        if kind < 0.3:
            return n
        text = (f"-0x{-n:x}" if n < 0 else f"0x{n:x}") if rng.random() < 0.3 else str(n)
        if rng.random() < 0.15:
            return text  # a bare number as a string: "== N"
        return f"{rng.choice(OPS)}{rng.choice([' ', '', '  '])}{text}"

    if allow_list and rng.random() < 0.25:
        return [one() for _ in range(rng.randint(1, 3))]
    return one()


def gen_filter(rng: random.Random, kret: bool) -> dict:
    f: dict = {}
    keys = ["pid", "tgid", "comm"] + ARGS + (["retval"] if kret else [])
    for key in rng.sample(keys, rng.randint(1, 3)):
        if key in ("pid", "tgid"):
            f[key] = rng.choice([0, 1, 42, 4194304, rng.randint(0, 4194304)])
        elif key == "comm":
            f[key] = rng.choice(COMMS)
        else:
            f[key] = comparison(rng)
    return f


def gen_histogram(rng: random.Random, kret: bool) -> dict:
    of = rng.choice(HIST_OF if kret else ARGS)
    h: dict = {"of": of}
    if rng.random() < 0.45:
        h["scale"] = "linear"
        step = rng.choice([1, 2, 5, 10, 1024, 1 << 20])
        buckets = rng.choice([1, 2, 8, 16, 100, 1000, rng.randint(1, 1000)])
        lo = rng.choice([0, -4, -100, -(1 << 40), rng.randint(-1000, 1000)])
        h["min"], h["max"], h["step"] = lo, lo + step * buckets, step
    elif rng.random() < 0.4:
        h["scale"] = "log2"
    return h


def gen_print(rng: random.Random, kret: bool) -> dict:
    p: dict = {}
    if rng.random() < 0.6:
        p["burst"] = rng.choice([1, 10, 1000, rng.randint(1, 1000)])
    if rng.random() < 0.5:
        p["interval_ms"] = rng.choice([10, 1000, 3_600_000, rng.randint(10, 3_600_000)])
    fields = ARGS + (["retval", "latency"] if kret else [])
    if rng.random() < 0.8:
        p["fields"] = rng.sample(fields, rng.randint(0, min(4, len(fields))))
    return p


def derived_name(symbol: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", symbol)
    return ("h_" + name if name[0].isdigit() else name)[:48]


def gen_hook(rng: random.Random, taken: set[str], globs: bool) -> dict:
    h: dict = {}
    probe = rng.choice(["kprobe", "kretprobe", "kretprobe", None])
    kret = probe == "kretprobe"
    r = rng.random()
    if globs and r < 0.5:
        symbol = rng.choice(GLOBS)
    elif globs or r < 0.9:  # (a glob spec with a bad symbol would show no expansion)
        symbol = rng.choice(GOOD_SYMBOLS)
    else:
        symbol = rng.choice(BAD_SYMBOLS)
    if rng.random() < 0.4 or derived_name(symbol) in taken:
        while True:
            name = ident(rng) + (f"_{rng.randint(0, 99)}" if rng.random() < 0.5 else "")
            if rng.random() < 0.05:
                name = "_" + name.upper()
            name = name[:48]
            if name not in taken:
                break
        h["name"] = name
        taken.add(name)
    else:
        taken.add(derived_name(symbol))
    if probe is not None:
        h["probe"] = probe
    h["symbol"] = symbol
    if not kret and rng.random() < 0.1:
        h["offset"] = rng.choice([0, 4, 5, 16, 65535])
    if rng.random() < 0.4:
        h["filter"] = gen_filter(rng, kret)
    if rng.random() < 0.5:
        h["count_by"] = rng.choice(COUNT_BY if kret else COUNT_BY[:-1])
    if rng.random() < 0.4:
        h["histogram"] = gen_histogram(rng, kret)
    if rng.random() < 0.2:
        h["print"] = gen_print(rng, kret)
    if rng.random() < 0.25:
        names = ARGS + (["retval"] if kret else [])
        h["types"] = {n: rng.choice(["long", "int", "unsigned int"]) for n in rng.sample(names, rng.randint(1, 3))}
    if rng.random() < 0.3:  # key order does not matter to the spec
        items = list(h.items())
        rng.shuffle(items)
        h = dict(items)
    return h


def gen_valid(rng: random.Random, index: int, globs: bool) -> dict:
    module = f"g{index:04d}_" + ident(rng)
    if rng.random() < 0.05:
        module = (module + "_" + "x" * 60)[:55]  # the longest module name there is
    if rng.random() < 0.05:
        module = "_" + module.upper()
    spec: dict = {"module": module}
    if rng.random() < 0.6:
        spec["description"] = rng.choice(DESCRIPTIONS)
    n = rng.choice([1, 1, 2, 2, 3, 4, 5, rng.randint(6, 20)])
    taken: set[str] = set()
    spec["hooks"] = [gen_hook(rng, taken, globs) for _ in range(n)]
    if rng.random() < 0.3:
        limits = {}
        for key, values in (("max_hits", [0, 1, 100, S64_MAX]), ("max_keys", [1, 16, 1024, 65536]),
                            ("maxactive", [0, 1, 64, 4096])):
            if rng.random() < 0.6:
                limits[key] = rng.choice(values)
        spec["limits"] = limits
    if rng.random() < 0.25:
        spec["report"] = {"interval_ms": rng.choice([0, 100, 250, 1000, 3_600_000])}
    return spec


# -- invalid specs: one defect each --------------------------------------------------------------

def _hook(spec: dict, rng: random.Random) -> dict:
    return rng.choice(spec["hooks"])


def _kprobe(spec: dict, rng: random.Random) -> dict:
    h = _hook(spec, rng)
    h["probe"] = "kprobe"
    for key in ("histogram", "print", "types", "count_by", "filter"):
        h.pop(key, None)
    return h


def _kret(spec: dict, rng: random.Random) -> dict:
    h = _hook(spec, rng)
    h["probe"] = "kretprobe"
    h.pop("offset", None)
    return h


DATA_DEFECTS = {
    # unknown keys
    "typo-hook-key": lambda s, r: _hook(s, r).__setitem__(r.choice(["filtr", "cont_by", "histgram", "symbl", "prob", "typs"]), "x"),
    "typo-top-key": lambda s, r: s.__setitem__(r.choice(["modul", "hook", "limit", "reports", "descripton"]), 1),
    "typo-limit-key": lambda s, r: s.__setitem__("limits", {"max_hit": 1}),
    "typo-histogram-key": lambda s, r: _hook(s, r).__setitem__("histogram", {"of": "arg0", "scael": "log2"}),
    "unknown-filter-key": lambda s, r: _hook(s, r).__setitem__("filter", {"arg6": 1}),
    # values out of their set
    "bad-probe": lambda s, r: _hook(s, r).__setitem__("probe", r.choice(["kprobes", "uprobe", "KPROBE", ""])),
    "bad-count-by": lambda s, r: _hook(s, r).__setitem__("count_by", r.choice(["comms", "arg6", "uid", "latency"])),
    "bad-hist-of": lambda s, r: _kret(s, r).__setitem__("histogram", {"of": r.choice(["latncy", "arg9", "time"])}),
    "bad-scale": lambda s, r: _hook(s, r).__setitem__("histogram", {"of": "arg0", "scale": "log10"}),
    "bad-type": lambda s, r: _hook(s, r).__setitem__("types", {"arg0": r.choice(["short", "u64", "char *"])}),
    "bad-type-name": lambda s, r: _hook(s, r).__setitem__("types", {"arg9": "int"}),
    "bad-print-field": lambda s, r: _hook(s, r).__setitem__("print", {"fields": ["arg9"]}),
    "print-burst-0": lambda s, r: _hook(s, r).__setitem__("print", {"burst": 0}),
    "print-interval-5": lambda s, r: _hook(s, r).__setitem__("print", {"interval_ms": 5}),
    # kretprobe-only features on a kprobe
    "kprobe-count-retval": lambda s, r: _kprobe(s, r).__setitem__("count_by", "retval"),
    "kprobe-hist-latency": lambda s, r: _kprobe(s, r).__setitem__("histogram", {"of": r.choice(["latency", "retval"])}),
    "kprobe-filter-retval": lambda s, r: _kprobe(s, r).__setitem__("filter", {"retval": "< 0"}),
    "kprobe-type-retval": lambda s, r: _kprobe(s, r).__setitem__("types", {"retval": "int"}),
    "kprobe-print-latency": lambda s, r: _kprobe(s, r).__setitem__("print", {"fields": [r.choice(["latency", "retval"])]}),
    "kretprobe-offset": lambda s, r: _kret(s, r).__setitem__("offset", 4),
    "offset-too-big": lambda s, r: _kprobe(s, r).__setitem__("offset", 65536),
    "offset-negative": lambda s, r: _kprobe(s, r).__setitem__("offset", -1),
    # linear histograms
    "linear-step-not-dividing": lambda s, r: _hook(s, r).__setitem__("histogram", {"of": "arg0", "scale": "linear", "min": 0, "max": 10, "step": 3}),
    "linear-max-below-min": lambda s, r: _hook(s, r).__setitem__("histogram", {"of": "arg1", "scale": "linear", "min": 10, "max": 0, "step": 1}),
    "linear-missing-min": lambda s, r: _hook(s, r).__setitem__("histogram", {"of": "arg2", "scale": "linear", "max": 10, "step": 1}),
    "linear-step-0": lambda s, r: _hook(s, r).__setitem__("histogram", {"of": "arg0", "scale": "linear", "min": 0, "max": 10, "step": 0}),
    "linear-too-many-buckets": lambda s, r: _hook(s, r).__setitem__("histogram", {"of": "arg0", "scale": "linear", "min": 0, "max": 1001, "step": 1}),
    "log2-with-min": lambda s, r: _hook(s, r).__setitem__("histogram", {"of": "arg3", "min": 1}),
    "linear-max-overflow": lambda s, r: _hook(s, r).__setitem__("histogram", {"of": "arg0", "scale": "linear", "min": 0, "max": S64_MAX + 1, "step": 1}),
    # comparisons and filters
    "comparison-unreadable": lambda s, r: _hook(s, r).__setitem__("filter", {"arg1": r.choice([">= x", "=> 4", "4 <", "== 1.5", "0b101", "=="])}),
    "comparison-out-of-range": lambda s, r: _hook(s, r).__setitem__("filter", {"arg0": r.choice(["< 9223372036854775808", -(1 << 63) - 1, "0x1" + "0" * 16])}),
    "comparison-empty-list": lambda s, r: _hook(s, r).__setitem__("filter", {"arg0": []}),
    "comparison-float": lambda s, r: _hook(s, r).__setitem__("filter", {"arg2": 1.5}),
    "comparison-bool": lambda s, r: _hook(s, r).__setitem__("filter", {"arg0": True}),
    "comparison-huge": lambda s, r: _hook(s, r).__setitem__("filter", {"arg0": ">= " + "9" * 50}),
    "pid-string": lambda s, r: _hook(s, r).__setitem__("filter", {"pid": "12"}),
    "pid-negative": lambda s, r: _hook(s, r).__setitem__("filter", {"pid": -1}),
    "tgid-too-big": lambda s, r: _hook(s, r).__setitem__("filter", {"tgid": 4194305}),
    "comm-too-long": lambda s, r: _hook(s, r).__setitem__("filter", {"comm": r.choice(["0123456789abcdef", "\u00e9" * 8])}),
    "comm-empty": lambda s, r: _hook(s, r).__setitem__("filter", {"comm": ""}),
    "comm-nul": lambda s, r: _hook(s, r).__setitem__("filter", {"comm": "a\x00b"}),
    "filter-not-mapping": lambda s, r: _hook(s, r).__setitem__("filter", r.choice([True, "comm", [1, 2], 7])),
    # names
    "duplicate-derived-names": lambda s, r: s["hooks"].extend([{"symbol": "vfs_read"}, {"symbol": "vfs_read", "probe": "kretprobe"}]),
    "duplicate-names": lambda s, r: s["hooks"].extend([{"name": "same", "symbol": "vfs_read"}, {"name": "same", "symbol": "vfs_write"}]),
    "duplicate-glob-names": lambda s, r: s["hooks"].extend([{"symbol": "vfs_*"}, {"symbol": "vfs_?"}]),
    "name-injection": lambda s, r: _hook(s, r).__setitem__("name", r.choice(["x; evil()", "x__y */", "a-b", "3x", "x" * 49, ""])),
    "symbol-injection": lambda s, r: _hook(s, r).__setitem__("symbol", r.choice(['ksys_sync"); evil(); ("', "a b", "", "x" * 128, "ksys_sync\n#include", "vfs_{a,b}"])),
    "symbol-missing": lambda s, r: _hook(s, r).pop("symbol"),
    "symbol-int": lambda s, r: _hook(s, r).__setitem__("symbol", 42),
    "module-bad": lambda s, r: s.__setitem__("module", r.choice(["3m", "m-x", "", "m" * 56, "m\nMODULE_LICENSE", 123, None, ["m"]])),
    "module-missing": lambda s, r: s.pop("module"),
    "description-bad": lambda s, r: s.__setitem__("description", r.choice(["a\nb", "caf\u00e9", "x" * 201, 5, "tab\tin"])),
    # hooks
    "hooks-empty": lambda s, r: s.__setitem__("hooks", []),
    "hooks-missing": lambda s, r: s.pop("hooks"),
    "hooks-not-list": lambda s, r: s.__setitem__("hooks", r.choice([{"symbol": "ksys_sync"}, "ksys_sync", 1, None])),
    "hook-not-mapping": lambda s, r: s["hooks"].append(r.choice(["ksys_sync", 3, None, ["a"]])),
    "too-many-hooks": lambda s, r: s.__setitem__("hooks", [{"name": f"h{i}", "symbol": "vfs_read"} for i in range(257)]),
    # limits and report
    "max-keys-0": lambda s, r: s.__setitem__("limits", {"max_keys": r.choice([0, 65537, 100000])}),
    "maxactive-bad": lambda s, r: s.__setitem__("limits", {"maxactive": r.choice([-1, 4097])}),
    "max-hits-bad": lambda s, r: s.__setitem__("limits", {"max_hits": r.choice([-1, S64_MAX + 1])}),
    "limits-not-mapping": lambda s, r: s.__setitem__("limits", r.choice([[1], "x", 0])),
    "interval-short": lambda s, r: s.__setitem__("report", {"interval_ms": r.choice([1, 5, 99])}),
    "interval-long": lambda s, r: s.__setitem__("report", {"interval_ms": 3_600_001}),
    "interval-string": lambda s, r: s.__setitem__("report", {"interval_ms": "100"}),
    "two-defects": lambda s, r: (s.__setitem__("module", "3m"), _hook(s, r).__setitem__("probe", "kprobes")),
    "many-defects": lambda s, r: s.__setitem__("hooks", [{"symbol": "a b", "probe": "x", "count_by": "y", "offset": -1}]),
}

TEXT_DEFECTS = {
    "yaml-unclosed-flow": lambda t, r: t + "extra: [1, 2\n",
    "yaml-bad-indent": lambda t, r: t.replace("\n  ", "\n   ", 1).replace("\n    ", "\n  ", 1),
    "yaml-tab-indent": lambda t, r: t.replace("\n  ", "\n\t", 1),
    "yaml-duplicate-key": lambda t, r: t + "module: again\n",
    "yaml-anchor-alias": lambda t, r: t + "limits: &l {max_hits: 1}\nreport: *l\n",
    "yaml-merge-key": lambda t, r: t + "x: &a {b: 1}\nlimits:\n  <<: *a\n",
    "yaml-top-list": lambda t, r: "- module: m\n- hooks: []\n",
    "yaml-top-scalar": lambda t, r: r.choice(["just a string\n", "42\n", "null\n", "~\n", "true\n"]),
    "yaml-empty": lambda t, r: r.choice(["", "\n\n", "# only a comment\n", "---\n", "...\n"]),
    "yaml-two-documents": lambda t, r: t + "---\nmodule: second\n",
    "yaml-control-char": lambda t, r: t.replace("\n", r.choice(["\x07\n", "\x00\n", "\f\n", "\x1b[31m\n"]), 1),
    "yaml-deep-nesting": lambda t, r: t + "limits: " + "[" * r.choice([17, 100, 500]) + "\n",
    "yaml-deep-mapping": lambda t, r: t + "limits: " + "{a: " * 40 + "\n",
    "yaml-huge-int": lambda t, r: t + "limits: {max_hits: " + "9" * 5001 + "}\n",
    "yaml-bad-bool-tag": lambda t, r: t + "report: {interval_ms: !!bool maybe}\n",
    "yaml-bad-timestamp": lambda t, r: t + "report: {interval_ms: !!timestamp 2001-13-45}\n",
    "yaml-python-tag": lambda t, r: t + "limits: !!python/object:os.system {}\n",
    "yaml-complex-key": lambda t, r: t + "? [a, b]\n: 1\n",
    "yaml-truncated": lambda t, r: t[: r.randint(1, max(1, len(t) - 1))],
    "yaml-stray-colon": lambda t, r: t + ": :\n",
    "yaml-int-key": lambda t, r: t + "1: one\n",
}

BYTES_DEFECTS = {
    "bytes-not-utf8": lambda b, r: b.replace(b"\n", b" \xff\xfe\n", 1),
    "bytes-latin1": lambda b, r: b + b"description: caf\xe9\n",
    "bytes-utf16": lambda b, r: b.decode().encode("utf-16"),
    "bytes-nul-tail": lambda b, r: b + b"\x00" * 8,
    "bytes-binary": lambda b, r: bytes(r.randrange(256) for _ in range(200)),
}

# Valid variants of the text itself (each spec is still valid).
TEXT_VARIANTS = {
    "crlf": lambda t: t.replace("\n", "\r\n"),
    "bom": lambda t: "\ufeff" + t,
    "doc-markers": lambda t: "---\n" + t + "...\n",
    "no-final-newline": lambda t: t.rstrip("\n"),
    "comments": lambda t: "# a spec made by tests/tools/outputs.py\n" + t.replace("\nhooks:", "\n# the hooks\nhooks:  # list\n", 1),
}


class Emitter:
    """YAML text of a spec in varied, valid styles (block and flow, quoting, sequence indents)."""

    PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
    SPECIAL = {"y", "n", "yes", "no", "true", "false", "on", "off", "null", "~"}

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.seq_indent = rng.choice([0, 2, 2, 4])

    def scalar(self, v) -> str:
        rng = self.rng
        if v is None:
            return rng.choice(["null", "~"])
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return repr(v)
        s = str(v)
        if self.PLAIN.match(s) and s.lower() not in self.SPECIAL and rng.random() < 0.8:
            return s
        if s.isprintable() and s.isascii() and rng.random() < 0.3:
            return "'" + s.replace("'", "''") + "'"
        return json.dumps(s, ensure_ascii=rng.random() < 0.5)

    def key(self, k) -> str:
        s = str(k)
        return s if self.PLAIN.match(s) and s.lower() not in self.SPECIAL else json.dumps(s)

    def flow(self, v) -> str:
        if isinstance(v, dict):
            return "{" + ", ".join(f"{self.key(k)}: {self.flow(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(self.flow(x) for x in v) + "]"
        return self.scalar(v)

    def block(self, d: dict, indent: int) -> list[str]:
        pad = " " * indent
        out = []
        for k, v in d.items():
            if isinstance(v, dict):
                if not v or self.rng.random() < 0.35:
                    out.append(f"{pad}{self.key(k)}: {self.flow(v)}")
                else:
                    out.append(f"{pad}{self.key(k)}:")
                    out += self.block(v, indent + 2)
            elif isinstance(v, list):
                if not v or (all(not isinstance(x, (dict, list)) for x in v) and self.rng.random() < 0.6):
                    out.append(f"{pad}{self.key(k)}: {self.flow(v)}")
                else:
                    out.append(f"{pad}{self.key(k)}:")
                    out += self.sequence(v, indent + self.seq_indent)
            else:
                out.append(f"{pad}{self.key(k)}: {self.scalar(v)}")
        return out

    def sequence(self, items: list, indent: int) -> list[str]:
        pad = " " * indent
        out = []
        for item in items:
            if isinstance(item, dict) and item:
                inner = self.block(item, indent + 2)
                out.append(pad + "- " + inner[0][indent + 2:])
                out += inner[1:]
            elif isinstance(item, list) and item:
                out.append(pad + "- " + self.flow(item))
            else:
                out.append(pad + "- " + self.flow(item))
        return out

    def document(self, spec: dict) -> str:
        if self.rng.random() < 0.08:  # JSON is YAML too
            return json.dumps(spec, indent=self.rng.choice([None, 2])) + "\n"
        return "\n".join(self.block(spec, 0)) + "\n"


@dataclass
class GenSpec:
    ident: str
    data: bytes
    kind: str            # "valid", "valid-glob" or the defect's name
    valid: bool          # meant to be a valid spec
    globs: bool


def generate_spec(seed: int, index: int) -> GenSpec:
    rng = random.Random(f"kprobegen-outputs/{seed}/{index}")
    globs = rng.random() < 0.15
    spec = gen_valid(rng, index, globs)
    emitter = Emitter(rng)
    ident_ = f"gen-{index:04d}"
    roll = rng.random()
    if roll < 0.55:
        text = emitter.document(spec)
        kind = "valid-glob" if globs else "valid"
        if rng.random() < 0.15:
            variant = rng.choice(sorted(TEXT_VARIANTS))
            text = TEXT_VARIANTS[variant](text)
            kind += "+" + variant
        return GenSpec(ident_, text.encode(), kind, True, globs)
    if roll < 0.85:
        name = rng.choice(sorted(DATA_DEFECTS))
        spec = copy.deepcopy(spec)
        DATA_DEFECTS[name](spec, rng)
        return GenSpec(ident_, emitter.document(spec).encode(), name, False, globs)
    if roll < 0.96:
        name = rng.choice(sorted(TEXT_DEFECTS))
        return GenSpec(ident_, TEXT_DEFECTS[name](emitter.document(spec), rng).encode(), name, False, globs)
    name = rng.choice(sorted(BYTES_DEFECTS))
    return GenSpec(ident_, BYTES_DEFECTS[name](emitter.document(spec).encode(), rng), name, False, globs)


# ----------------------------------------------------------------------------------------------
# Kernel logs: the fixtures, and deterministic damage to some of them


def mutate_log(rng: random.Random, text: bytes) -> tuple[str, bytes]:
    lines = text.split(b"\n")
    proto = [i for i, line in enumerate(lines) if b"kprobegen/" in line] or [0]
    kind = rng.choice(["drop-line", "duplicate-line", "swap-lines", "flip-digit", "truncate", "crlf", "nul-byte",
                       "long-line", "forged-kmsg", "drop-end", "reverse", "bad-utf8"])
    i = rng.choice(proto)
    if kind == "drop-line":
        del lines[i]
    elif kind == "duplicate-line":
        lines.insert(i, lines[i])
    elif kind == "swap-lines" and len(proto) > 1:
        j = rng.choice(proto)
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "flip-digit":
        line = lines[i]
        digits = [k for k, c in enumerate(line) if 48 <= c <= 57]
        if digits:
            k = rng.choice(digits)
            lines[i] = line[:k] + bytes([48 + (line[k] - 47) % 10]) + line[k + 1:]
    elif kind == "truncate":
        joined = b"\n".join(lines)
        return kind, joined[: rng.randint(len(joined) // 3, len(joined))]
    elif kind == "crlf":
        return kind, b"\r\n".join(lines)
    elif kind == "nul-byte":
        lines[i] = lines[i][: len(lines[i]) // 2] + b"\x00" + lines[i][len(lines[i]) // 2:]
    elif kind == "long-line":
        lines.insert(i, b"x" * 70000 + b" kprobegen/2 m 9 key")
    elif kind == "forged-kmsg":
        lines.insert(i, b"12,999,999,-;" + lines[i].split(b";", 1)[-1].split(b"] ", 1)[-1])
    elif kind == "drop-end":
        ends = [k for k in proto if b" end " in lines[k]]
        if ends:
            del lines[rng.choice(ends)]
    elif kind == "reverse":
        lines.reverse()
    elif kind == "bad-utf8":
        lines[i] = lines[i] + b" \xff\xfe"
    return kind, b"\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Running and recording


class Runner:
    def __init__(self, checkout: Path, out: Path, work: Path):
        self.checkout = checkout
        self.out = out
        self.work = work
        self.python = sys.executable
        self.guard_bin = work / "guard-bin"
        self.caches = {"plain": work / "cache-plain", "profiled": work / "cache-profiled"}
        self.uname_r = os.uname().release
        prefix = Path(sys.prefix)
        # Longest first, so that e.g. a venv inside the checkout is named as the venv.
        self.replacements = sorted({
            (str(work), "$WORK"), (os.path.realpath(work), "$WORK"),
            (str(checkout), "$CHECKOUT"), (os.path.realpath(checkout), "$CHECKOUT"),
            (str(prefix), "$PYTHON_PREFIX"), (os.path.realpath(prefix), "$PYTHON_PREFIX"),
            (str(work / "home"), "$HOME"),
        }, key=lambda p: -len(p[0]))
        self.durations: dict[str, float] = {}
        self.hash_seed = "0"
        self.tmp_names = re.compile(re.escape("$WORK/tmp/") + r"([A-Za-z0-9_.+-]{8,})")

    def setup(self) -> None:
        for d in ("specs", "logs", "out", "tmp", "home", "pycache", "guard-bin", "cache-isolated",
                  *(c.name for c in self.caches.values())):
            (self.work / d).mkdir(parents=True, exist_ok=True)
        for tool in ("qemu-system-x86_64", "qemu-system-i386", "insmod", "rmmod", "modprobe"):
            script = self.guard_bin / tool
            script.write_text(f"#!/bin/sh\necho \"outputs.py guard: {tool} is not run by the harness\" >&2\nexit 97\n")
            script.chmod(0o755)

    def env(self, case: Case) -> dict[str, str]:
        path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin")
        env = {
            "PATH": (f"{self.guard_bin}:" if case.guard else "") + path,
            "HOME": str(self.work / "home"),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC",
            "COLUMNS": "80", "LINES": "24", "TERM": "dumb",
            "PYTHONPATH": str(self.checkout),
            "PYTHONHASHSEED": self.hash_seed,
            "PYTHONPYCACHEPREFIX": str(self.work / "pycache"),
            "TMPDIR": str(self.work / "tmp"),
            "KPROBEGEN_CACHE": str(self.work / "cache-isolated" / case.name if case.cache == "isolated"
                                   else self.caches[case.cache]),
        }
        env.update(case.env)
        return env

    def normalize(self, text: str) -> str:
        for old, new in self.replacements:
            text = text.replace(old, new)
        # tempfile names (mkdtemp/mkstemp): a prefix, then 8 random characters
        text = self.tmp_names.sub(lambda m: "$WORK/tmp/" + m.group(1)[:-8] + "XXXXXXXX", text)
        if len(self.uname_r) >= 8:
            text = text.replace(self.uname_r, "$UNAME_R")
        if "Traceback (most recent call last):" in text:
            text = self.TRACEBACK_FRAMES.sub("Traceback (most recent call last):\n  (frames: files and lines of the code)\n",
                                             text)
        return text

    # A traceback's frames name the code's files and lines, which a restructure moves; the
    # exception and its message (the last line) stay.
    TRACEBACK_FRAMES = re.compile(r"Traceback \(most recent call last\):\n(?:  .*\n)+")

    def norm_bytes(self, data: bytes) -> bytes:
        return self.normalize(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")

    def run(self, case: Case) -> None:
        argv = [self.python, "-m", "kprobegen", *case.argv]
        kw: dict = dict(cwd=self.checkout, env=self.env(case), stderr=subprocess.PIPE, timeout=case.timeout)
        if case.stdin is not None:
            kw["input"] = case.stdin
        else:
            kw["stdin"] = subprocess.DEVNULL
        full = None
        if case.stdout == "closed":
            argv = ["/bin/sh", "-c", 'exec "$@" >&-', "sh", *argv]
            kw["stdout"] = subprocess.DEVNULL  # replaced by the shell's >&-
        elif case.stdout == "full":
            full = open("/dev/full", "wb")
            kw["stdout"] = full
        else:
            kw["stdout"] = subprocess.PIPE
        t0 = time.monotonic()
        try:
            done = subprocess.run(argv, **kw)
            rc, stdout, stderr = str(done.returncode), done.stdout or b"", done.stderr
        except subprocess.TimeoutExpired as exc:
            rc, stdout, stderr = f"timeout after {case.timeout:g} s", exc.stdout or b"", exc.stderr or b""
        finally:
            if full is not None:
                full.close()
            self.durations[case.name] = time.monotonic() - t0
        self.record(case, rc, stdout, stderr)

    def record(self, case: Case, rc: str, stdout: bytes, stderr: bytes) -> None:
        d = self.out / case.name
        d.mkdir(parents=True)
        cmd = [f"kprobegen {self.normalize(shlex.join(case.argv))}", f"cache: {case.cache}"]
        if case.stdin is not None:
            cmd.append(f"stdin: {case.stdin_label or f'{len(case.stdin)} bytes'}")
        if case.stdout != "pipe":
            cmd.append(f"stdout: {case.stdout}")
        for k, v in sorted(case.env.items()):
            cmd.append(f"env: {k}={self.normalize(v)}")
        if not case.guard:
            cmd.append("guard: off (real qemu on PATH)")
        (d / "cmd").write_text("\n".join(cmd) + "\n")
        (d / "rc").write_text(rc + "\n")
        (d / "stdout").write_bytes(self.norm_bytes(stdout))
        (d / "stderr").write_bytes(self.norm_bytes(stderr))
        if case.out_dir is not None:
            self.record_dir(case.out_dir, d / "files")

    def record_dir(self, src: Path, dest: Path) -> None:
        dest.mkdir()
        if not os.path.lexists(src):
            (dest / ".listing").write_text("(the folder does not exist)\n")
            return
        listing = []
        for root, dirs, files in os.walk(src):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                p = Path(root) / name
                rel = p.relative_to(src)
                st = p.lstat()
                kind = "dir" if stat.S_ISDIR(st.st_mode) else "link" if stat.S_ISLNK(st.st_mode) else "file"
                listing.append(f"{kind} {stat.S_IMODE(st.st_mode):04o} {rel}")
                if kind != "file":
                    continue
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                data = p.read_bytes()
                if data[:4] == b"\x7fELF":
                    target.with_name(target.name + ".summary").write_text(self.elf_summary(p))
                else:
                    target.write_bytes(self.norm_bytes(data))
        (dest / ".listing").write_text("".join(f"{line}\n" for line in listing) or "(empty)\n")

    def elf_summary(self, ko: Path) -> str:
        """A kernel module without what depends on where it was built: its debug info holds the
        build folder (a temporary name) and its build id hashes that."""
        tmp = Path(tempfile.mkdtemp(dir=self.work / "out", prefix=".elf-"))
        try:
            stripped = tmp / "stripped.ko"
            subprocess.run(["objcopy", "--strip-debug", "--remove-section=.note.gnu.build-id", str(ko), str(stripped)],
                           check=True, capture_output=True)
            modinfo = tmp / "modinfo"
            subprocess.run(["objcopy", "-O", "binary", "--only-section=.modinfo", str(ko), str(modinfo)],
                           check=True, capture_output=True)
            sections = subprocess.run(["readelf", "-S", "-W", str(stripped)], check=True, capture_output=True,
                                      text=True).stdout
            data = stripped.read_bytes()
            lines = [f"ELF file, {len(data)} bytes without debug info and build id",
                     f"sha256 (without debug info and build id): {hashlib.sha256(data).hexdigest()}", "modinfo:"]
            lines += [f"  {item.decode(errors='replace')}" for item in modinfo.read_bytes().split(b"\0") if item]
            lines.append("sections (name type size):")
            for line in sections.splitlines():
                m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+(\S+)\s+\S+\s+\S+\s+(\S+)", line)
                if m:
                    lines.append(f"  {m.group(1)} {m.group(2)} {int(m.group(3), 16)}")
            return self.normalize("\n".join(lines) + "\n")
        except (OSError, subprocess.CalledProcessError) as exc:
            return f"could not summarize the ELF file: {exc}\n"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# The case list


def help_commands(runner: Runner) -> list[list[str]]:
    """Every command and subcommand, found in the CLI's own --help, and the known ones."""
    known = [[], ["schema"], ["check"], ["render"], ["stap"], ["bpftrace"], ["build"], ["parse"], ["run"], ["kernels"],
             ["kernels", "list"], ["kernels", "fetch"], ["load"], ["list"], ["snapshot"], ["unload"], ["image"],
             ["image", "build"], ["vm"], ["doctor"]]
    found: list[list[str]] = []
    todo: list[list[str]] = [[]]
    while todo:
        path = todo.pop(0)
        found.append(path)
        done = subprocess.run([runner.python, "-m", "kprobegen", *path, "--help"], cwd=runner.checkout,
                              env=runner.env(Case("help", [])), capture_output=True, text=True, timeout=60)
        in_commands = False
        for line in done.stdout.splitlines():
            if re.match(r"^  (COMMAND|SUBCOMMAND)\s*$", line) or re.match(r"^  \{.*\}\s*$", line):
                in_commands = True
                continue
            if in_commands:
                m = re.match(r"^    ([a-z][a-z0-9-]*)(\s|$)", line)
                if m:
                    todo.append(path + [m.group(1)])
                elif not line.startswith("      ") and line.strip():
                    in_commands = False
    out = []
    for path in found + [k for k in known if k not in found]:
        if path not in out:
            out.append(path)
    return out


def spec_cases(runner: Runner, ident: str, path: str, *, full: bool, globs: bool, release: str,
               scripts: bool = True) -> list[Job]:
    """The spec-side commands on one spec. Every spec: check --json and render -o without a
    profile, and check with the default kernel's profile cached; ``scripts``: stap and bpftrace
    (render -o writes the same scripts, byte for byte, so not every spec needs them); glob
    specs: render --kernel (expansion). ``full`` adds every other variant."""
    out = runner.work / "out"
    c = f"spec.{ident}"
    cases = [
        Case(f"{c}.check-json", ["check", "--json", path]),
        Case(f"{c}.render-o", ["render", path, "-o", str(out / f"{c}.render-o")], out_dir=out / f"{c}.render-o"),
        Case(f"{c}.check-profiled", ["check", path], cache="profiled"),
    ]
    if scripts or full or globs:
        cases += [Case(f"{c}.stap", ["stap", path]), Case(f"{c}.bpftrace", ["bpftrace", path])]
    if globs or full:
        o = out / f"{c}.render-kernel-o"
        cases.append(Case(f"{c}.render-kernel-o", ["render", path, "--kernel", release, "-o", str(o)],
                          cache="profiled", out_dir=o))
    if full:
        o = out / f"{c}.render-emit-c-o"
        cases += [
            Case(f"{c}.check", ["check", path]),
            Case(f"{c}.check-profiled-json", ["check", path, "--json"], cache="profiled"),
            Case(f"{c}.check-kernel", ["check", path, "--kernel", release], cache="profiled"),
            Case(f"{c}.check-kernel-json", ["check", "--kernel", release, "--json", path], cache="profiled"),
            Case(f"{c}.check-kernel-suite", ["check", path, "--kernel", "bookworm"], cache="profiled"),
            Case(f"{c}.render-stdout", ["render", path]),
            Case(f"{c}.render-emit-c", ["render", "--emit-c", path]),
            Case(f"{c}.render-emit-c-o", ["render", path, "--emit-c", "-o", str(o)], out_dir=o),
            Case(f"{c}.render-kernel-emit-c", ["render", path, "--kernel", release, "--emit-c"], cache="profiled"),
            Case(f"{c}.check-accel-tcg", ["check", path, "--accel", "tcg", "--kernel", release], cache="profiled"),
        ]
    return [[case] for case in cases]


def stdin_cases(runner: Runner, ident: str, data: bytes) -> list[Job]:
    out = runner.work / "out"
    c = f"stdin.{ident}"
    label = f"the bytes of spec {ident}"
    return [[case] for case in [
        Case(f"{c}.check", ["check", "-"], stdin=data, stdin_label=label),
        Case(f"{c}.check-json", ["check", "--json", "-"], stdin=data, stdin_label=label),
        Case(f"{c}.render-emit-c", ["render", "-", "--emit-c"], stdin=data, stdin_label=label),
        Case(f"{c}.render-o", ["render", "-", "-o", str(out / f"{c}.render-o")], stdin=data, stdin_label=label,
             out_dir=out / f"{c}.render-o"),
        Case(f"{c}.stap", ["stap", "-"], stdin=data, stdin_label=label),
        Case(f"{c}.bpftrace", ["bpftrace", "-"], stdin=data, stdin_label=label),
        Case(f"{c}.check-profiled", ["check", "-"], stdin=data, stdin_label=label, cache="profiled"),
    ]]


def build_chain(runner: Runner, ident: str, path: str, release: str, *, full: bool, kernel_only: bool = False) -> Job:
    """Builds of one spec, in order (the second build of the same bytes comes from the cache)."""
    out = runner.work / "out"
    b = f"build.{ident}"
    kdir = f"/lib/modules/{release}/build"

    def case(variant: str, args: list[str], cache: str = "plain", record: bool = True) -> Case:
        o = out / f"{b}.{variant}"
        return Case(f"{b}.{variant}", ["build", path, "-o", str(o), *args], cache=cache,
                    out_dir=o if record else None, timeout=600)

    if kernel_only:
        return [case("kernel-json", ["--kernel", release, "--json"], cache="profiled")]
    chain = [case("build", []), case("json", ["--json"])]
    if full:
        chain += [
            case("show-command", ["--show-command"]),
            case("show-command-kernel-dir", ["--show-command", "--kernel-dir", kdir]),
            case("no-cache-json", ["--no-cache", "--json"]),
            case("kernel-dir-json", ["--kernel-dir", kdir, "--json"]),
            case("strict", ["--strict"]),
            case("kernel-json", ["--kernel", release, "--json"], cache="profiled"),
            case("kernel-no-symbol-check", ["--kernel", release, "--no-symbol-check"], cache="profiled"),
            case("kernel-suite-json", ["--kernel", "bookworm", "--json"], cache="profiled"),
        ]
    return chain


def parse_cases(runner: Runner, logs: list[Path], detailed: set[str]) -> list[Job]:
    jobs: list[Job] = []
    for log in logs:
        p = str(log)
        c = f"parse.{log.name}"
        jobs += [[Case(f"{c}.text", ["parse", p])], [Case(f"{c}.json", ["parse", p, "--json"])],
                 [Case(f"{c}.json-all", ["parse", "--json", "--all", p])]]
        if log.name in detailed:
            data = log.read_bytes()
            jobs += [[Case(f"{c}.all", ["parse", p, "--all"])],
                     [Case(f"{c}.top1", ["parse", p, "--top", "1"])],
                     [Case(f"{c}.top1-all-json", ["parse", p, "--top", "1", "--all", "--json"])],
                     [Case(f"{c}.module-fork", ["parse", p, "--module", "fork_counter"])],
                     [Case(f"{c}.module-sync-json", ["parse", p, "--module", "sync_counter", "--json"])],
                     [Case(f"{c}.module-none", ["parse", p, "--module", "no_such_module"])],
                     [Case(f"{c}.max-bytes-small", ["parse", p, "--max-bytes", "100"])],
                     [Case(f"{c}.max-bytes-exact", ["parse", p, "--max-bytes", str(len(data)), "--json"])],
                     [Case(f"{c}.stdin", ["parse", "-"], stdin=data, stdin_label=f"the log {log.name}")],
                     [Case(f"{c}.stdin-implicit-json", ["parse", "--json"], stdin=data,
                           stdin_label=f"the log {log.name}")]]
    return jobs


def misc_cases(runner: Runner, specs: Path, example: str, release: str) -> list[Job]:
    """Commands without a spec, and bad input: missing and special files, bad YAML, bad options."""
    w = runner.work
    out = w / "out"
    bad = specs / "bad"
    bad.mkdir()
    (bad / "afile").write_text("not a folder\n")
    (bad / "dir").mkdir()
    os.mkfifo(bad / "fifo.yaml")
    (bad / "empty.yaml").write_bytes(b"")
    (bad / "big.yaml").write_bytes(b"# " + b"x" * (1 << 20) + b"\nmodule: m\n")
    (bad / "glob.yaml").write_text("module: g\nhooks:\n  - symbol: 'vfs_*'\n    count_by: comm\n")
    (bad / "typo.yaml").write_text("module: typo\nhooks:\n  - symbol: ksys_synk\n")
    (bad / "latency.yaml").write_text("module: m\nhooks:\n  - symbol: a\n    histogram: {of: latency}\n")
    (bad / "log.txt").write_bytes(b"")
    (bad / "binary.log").write_bytes(bytes(range(256)) * 4)
    (bad / "noise.log").write_text("just\nsome\nnoise kprobegen/9 m 0 what\n")
    missing = str(bad / "missing.yaml")
    afile = str(bad / "afile")
    jobs: list[Case] = []

    def add(name: str, argv: list[str], **kw) -> None:
        jobs.append(Case(name, argv, **kw))

    # no spec
    add("misc.schema", ["schema"])
    add("misc.version", ["--version"])
    add("misc.no-arguments", [])
    add("misc.kernels-list", ["kernels", "list"])
    add("misc.kernels-list-json", ["kernels", "list", "--json"])
    add("misc.kernels-list-profiled", ["kernels", "list"], cache="profiled")
    add("misc.kernels-fetch-unknown-suite", ["kernels", "fetch", "nosuchsuite"])
    add("misc.kernels-fetch-unknown-suite-json", ["kernels", "fetch", "sid", "--json"])
    add("misc.kernels-no-subcommand", ["kernels"])
    add("misc.image-no-subcommand", ["image"])
    add("misc.image-build-bad-suite", ["image", "build", "sid"])
    add("misc.doctor", ["doctor"], guard=False, cache="isolated")
    add("misc.doctor-json", ["doctor", "--json"], guard=False, cache="isolated")
    add("misc.doctor-profiled", ["doctor"], cache="profiled", guard=False)
    add("misc.doctor-reset-kvm", ["doctor", "--reset-kvm"], guard=False, cache="isolated")
    add("misc.doctor-accel-env-tcg", ["doctor", "--json"], env={"KPROBEGEN_ACCEL": "tcg"}, guard=False, cache="isolated")
    add("misc.doctor-accel-env-bad", ["doctor"], env={"KPROBEGEN_ACCEL": "warp"}, guard=False, cache="isolated")
    add("misc.list", ["list"])
    add("misc.list-json", ["list", "--json"])
    add("misc.snapshot-not-loaded", ["snapshot", "no_such_module"])
    add("misc.snapshot-not-loaded-json", ["snapshot", "no_such_module", "--json", "--top", "3"])
    add("misc.snapshot-bad-name", ["snapshot", "bad name!"])
    add("misc.unload-not-loaded", ["unload", "no_such_module"])
    add("misc.unload-bad-name", ["unload", "../etc"])
    add("misc.schema-stdout-closed", ["schema"], stdout="closed")
    add("misc.schema-stdout-full", ["schema"], stdout="full")
    add("misc.check-stdout-full", ["check", example], stdout="full")
    add("misc.debug-flag-ok", ["--debug", "check", example])
    # run / vm: only what fails before a boot
    add("bad.run-no-workload", ["run", example], cache="isolated")
    add("bad.run-missing-spec", ["run", missing, "--", "true"], cache="isolated")
    add("bad.run-bad-spec", ["run", str(bad / "latency.yaml"), "--", "true"], cache="isolated")
    add("bad.run-host", ["run", "--host", example, "--", "true"], cache="isolated")
    add("bad.run-vm-and-host", ["run", "--vm", "--host", example, "--", "true"], cache="isolated")
    add("bad.run-add-missing", ["run", example, "--add", missing, "--", "true"], cache="isolated")
    add("bad.run-keep-afile", ["run", example, "--keep", afile, "--", "true"], cache="isolated")
    add("bad.run-keep-empty", ["run", example, "--keep", "", "--", "true"], cache="isolated")
    add("bad.run-log-empty", ["run", example, "--log", " ", "--", "true"], cache="isolated")
    for value in ("nan", "inf", "-inf", "0", "-5", "1e400", "x", "604801"):
        add(f"bad.run-timeout-{value}", ["run", example, "--timeout", value, "--", "true"], cache="isolated")
    for value in ("0", "-1", "x", "1.5"):
        add(f"bad.run-top-{value}", ["run", example, "--top", value, "--", "true"], cache="isolated")
    add("bad.run-accel-bad", ["run", example, "--accel", "warp", "--", "true"], cache="isolated")
    add("bad.run-accel-env-bad", ["run", example, "--", "true"], env={"KPROBEGEN_ACCEL": "warp"}, cache="isolated")
    add("bad.run-kernel-unknown", ["run", example, "--kernel", "9.9.9-nosuch", "--", "true"], cache="isolated")
    add("bad.run-kernel-suite-not-fetched", ["run", example, "--kernel", "bullseye", "--", "true"], cache="isolated")
    add("bad.vm-no-command", ["vm"], cache="isolated")
    add("bad.vm-bad-image", ["vm", "--image", "sid", "--", "true"], cache="isolated")
    add("bad.vm-timeout-0", ["vm", "--timeout", "0", "--", "true"], cache="isolated")
    add("bad.vm-memory-0", ["vm", "--memory", "0", "--", "true"], cache="isolated")
    add("bad.load-no-target", ["load"])
    # spec files that cannot be read
    for cmd in ("check", "render", "stap", "bpftrace"):
        add(f"bad.{cmd}-missing-file", [cmd, missing])
        add(f"bad.{cmd}-directory", [cmd, str(bad / "dir")])
        add(f"bad.{cmd}-dev-null", [cmd, "/dev/null"])
        add(f"bad.{cmd}-fifo", [cmd, str(bad / "fifo.yaml")], timeout=30)
        add(f"bad.{cmd}-empty", [cmd, str(bad / "empty.yaml")])
        add(f"bad.{cmd}-stdin-empty", [cmd, "-"], stdin=b"", stdin_label="empty")
    add("bad.check-dev-zero", ["check", "/dev/zero"], timeout=30)
    add("bad.check-root", ["check", "/"])
    add("bad.check-big", ["check", str(bad / "big.yaml")])
    add("bad.check-big-stdin", ["check", "-"], stdin=b"# " + b"y" * (1 << 20) + b"\n", stdin_label="1 MiB of comment")
    add("bad.check-empty-path", ["check", ""])
    add("bad.check-no-spec", ["check"])
    add("bad.check-unknown-option", ["check", example, "--bogus"])
    add("bad.check-kernel-unknown", ["check", example, "--kernel", "9.9.9-nosuch"], cache="profiled")
    add("bad.check-kernel-suite-not-fetched", ["check", example, "--kernel", "trixie"], cache="profiled")
    add("bad.check-accel-bad", ["check", example, "--accel", "warp"])
    add("bad.check-accel-env-bad", ["check", example], env={"KPROBEGEN_ACCEL": "warp"})
    add("bad.check-typo-profiled", ["check", str(bad / "typo.yaml")], cache="profiled")
    add("bad.check-typo-plain", ["check", str(bad / "typo.yaml")])
    add("bad.debug-traceback", ["--debug", "check", str(bad / "latency.yaml")])
    add("bad.render-glob-no-kernel", ["render", str(bad / "glob.yaml"), "-o", str(out / "bad.render-glob")],
        out_dir=out / "bad.render-glob")
    add("bad.render-glob-emit-c", ["render", str(bad / "glob.yaml")])
    add("bad.stap-glob", ["stap", str(bad / "glob.yaml")])
    add("bad.bpftrace-glob", ["bpftrace", str(bad / "glob.yaml")])
    add("bad.render-o-empty", ["render", example, "-o", ""])
    add("bad.render-o-blank", ["render", example, "-o", " "])
    add("bad.render-o-afile", ["render", example, "-o", afile])
    add("bad.render-o-under-afile", ["render", example, "-o", str(Path(afile) / "sub")])
    add("bad.render-o-proc", ["render", example, "-o", "/proc/kprobegen-outputs/x"])
    add("bad.render-o-removed-on-failure", ["render", str(bad / "latency.yaml"), "-o", str(out / "bad.removed" / "deeper")],
        out_dir=out / "bad.removed")
    add("bad.render-kernel-unknown", ["render", example, "--kernel", "9.9.9-nosuch", "-o", str(out / "bad.rk")],
        cache="profiled", out_dir=out / "bad.rk")
    # build: failures before Kbuild
    add("bad.build-no-output", ["build", example])
    add("bad.build-o-blank", ["build", example, "-o", " "])
    add("bad.build-o-afile", ["build", example, "-o", afile])
    add("bad.build-o-under-afile", ["build", example, "-o", str(Path(afile) / "sub" / "deeper")])
    add("bad.build-missing-spec", ["build", missing, "-o", str(out / "bad.build-missing")], out_dir=out / "bad.build-missing")
    add("bad.build-fifo", ["build", str(bad / "fifo.yaml"), "-o", str(out / "bad.build-fifo")], timeout=30,
        out_dir=out / "bad.build-fifo")
    add("bad.build-bad-spec", ["build", str(bad / "latency.yaml"), "-o", str(out / "bad.build-bad")],
        out_dir=out / "bad.build-bad")
    add("bad.build-kernel-and-kernel-dir", ["build", example, "-o", str(out / "bad.b-kk"), "--kernel", release,
                                            "--kernel-dir", "/tmp"])
    add("bad.build-kernel-unknown", ["build", example, "-o", str(out / "bad.b-ku"), "--kernel", "9.9.9-nosuch"],
        out_dir=out / "bad.b-ku")
    add("bad.build-kernel-dir-missing", ["build", example, "-o", str(out / "bad.b-kdm"), "--kernel-dir",
                                         str(bad / "no-tree")], out_dir=out / "bad.b-kdm")
    add("bad.build-kernel-dir-not-a-tree", ["build", example, "-o", str(out / "bad.b-kdn"), "--kernel-dir",
                                            str(bad / "dir")], out_dir=out / "bad.b-kdn")
    add("bad.build-glob-no-kernel", ["build", str(bad / "glob.yaml"), "-o", str(out / "bad.b-glob")],
        out_dir=out / "bad.b-glob")
    add("bad.build-typo-kernel", ["build", str(bad / "typo.yaml"), "-o", str(out / "bad.b-typo"), "--kernel", release],
        cache="profiled", out_dir=out / "bad.b-typo")
    add("bad.build-accel-bad", ["build", example, "-o", str(out / "bad.b-acc"), "--accel", "warp"])
    # parse
    add("bad.parse-missing", ["parse", missing])
    add("bad.parse-directory", ["parse", str(bad / "dir")])
    add("bad.parse-dev-null", ["parse", "/dev/null"])
    add("bad.parse-dev-zero", ["parse", "/dev/zero"], timeout=30)
    add("bad.parse-fifo", ["parse", str(bad / "fifo.yaml")], timeout=30)
    add("bad.parse-empty", ["parse", str(bad / "log.txt")])
    add("bad.parse-empty-json", ["parse", str(bad / "log.txt"), "--json"])
    add("bad.parse-binary", ["parse", str(bad / "binary.log")])
    add("bad.parse-noise", ["parse", str(bad / "noise.log")])
    add("bad.parse-noise-json", ["parse", str(bad / "noise.log"), "--json", "--all"])
    add("bad.parse-stdin-empty", ["parse", "-"], stdin=b"", stdin_label="empty")
    add("bad.parse-stdin-bound", ["parse", "--max-bytes", "1000", "-"], stdin=b"z" * 5000, stdin_label="5000 bytes")
    for value in ("0", "-1", "x"):
        add(f"bad.parse-top-{value}", ["parse", "--top", value, str(bad / "noise.log")])
        add(f"bad.parse-max-bytes-{value}", ["parse", "--max-bytes", value, str(bad / "noise.log")])
    add("bad.parse-two-files", ["parse", str(bad / "noise.log"), str(bad / "log.txt")])
    return [[j] for j in jobs]


# ----------------------------------------------------------------------------------------------
# Main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkout", type=Path, required=True, help="the kprobegen checkout to run (its modules/ and tests/)")
    ap.add_argument("--out", type=Path, required=True, help="where the outputs go (must not exist, or be empty)")
    ap.add_argument("--specs", type=int, default=300, help="generated specs (default 300)")
    ap.add_argument("--seed", type=int, default=12, help="seed of the generated specs and logs (default 12)")
    ap.add_argument("--builds", type=int, default=20, help="generated valid specs also built with Kbuild (default 20)")
    ap.add_argument("--full", type=int, default=30, help="generated specs that get every command variant (default 30)")
    ap.add_argument("--mutated-logs", type=int, default=30, help="damaged kernel logs to parse (default 30)")
    ap.add_argument("--logs", type=Path, default=None,
                    help="folder of kernel logs (*.txt) to parse (default: CHECKOUT/tests/fixtures/logs and "
                         "the logs under CHECKOUT/tests/data)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="commands run at once (default: CPUs)")
    ap.add_argument("--hash-seed", default="0",
                    help="PYTHONHASHSEED of the commands (default 0; 'random' shows what depends on set order)")
    ap.add_argument("--slowest", type=int, default=0, metavar="N", help="print the N slowest cases")
    ap.add_argument("--keep-work", action="store_true", help="keep the work folder (its path is printed)")
    args = ap.parse_args()

    checkout = args.checkout.resolve()
    out = args.out.resolve()
    if not (checkout / "kprobegen").is_dir():
        ap.error(f"{checkout}: no kprobegen package there")
    if out.exists() and any(out.iterdir()):
        ap.error(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    os.umask(0o022)
    started = time.monotonic()
    # A fixed-length name: the random part is the same length in every run.
    work = Path(tempfile.mkdtemp(prefix="kpgout-"))
    runner = Runner(checkout, out, work)
    runner.hash_seed = args.hash_seed
    runner.setup()

    # Which kprobegen runs: it must be the checkout's, not the venv's editable install.
    probe = subprocess.run([runner.python, "-c", "import kprobegen; print(kprobegen.__file__)"], cwd=checkout,
                           env=runner.env(Case("probe", [])), capture_output=True, text=True)
    imported = probe.stdout.strip()
    print(f"kprobegen imported from: {imported or probe.stderr.strip()}", flush=True)
    if not imported or not Path(imported).resolve().is_relative_to(checkout):
        print(f"error: kprobegen is not imported from {checkout}", file=sys.stderr)
        return 1

    # Kernels: the installed ones get the synthetic profile; builds use a 6.1 one if there is.
    listing = subprocess.run([runner.python, "-m", "kprobegen", "kernels", "list", "--json"], cwd=checkout,
                             env=runner.env(Case("kernels", [])), capture_output=True, text=True)
    try:
        kernels = json.loads(listing.stdout)
    except json.JSONDecodeError:
        print(f"error: kernels list --json: {listing.stdout!r} {listing.stderr!r}", file=sys.stderr)
        return 1
    installed = [k["release"] for k in kernels if k.get("origin") == "installed"]
    if not installed:
        print("error: no installed kernel (kernels list --json)", file=sys.stderr)
        return 1
    release = next((r for r in installed if r.startswith("6.1.")), installed[0])
    for r in installed:
        seed_profile(runner.caches["profiled"], r)
    print(f"kernel for builds and profiles: {release}", flush=True)

    # Inputs
    specs_dir = work / "specs"
    inputs = out / "_inputs"
    (inputs / "specs").mkdir(parents=True)
    (inputs / "logs").mkdir()
    examples = sorted((checkout / "modules").glob("*.yaml"))
    generated = [generate_spec(args.seed, i) for i in range(args.specs)]
    kinds = []
    for g in generated:
        (specs_dir / f"{g.ident}.yaml").write_bytes(g.data)
        (inputs / "specs" / f"{g.ident}.yaml").write_bytes(g.data)
        kinds.append(f"{g.ident} {g.kind}")
    (inputs / "specs.txt").write_text("".join(f"{k}\n" for k in kinds))
    kallsyms, blacklist = synthetic_profile()
    (inputs / "profile.kallsyms").write_text(kallsyms)
    (inputs / "profile.blacklist").write_text(blacklist)

    log_dirs = [args.logs] if args.logs else [checkout / "tests" / "fixtures" / "logs", checkout / "tests" / "data"]
    logs: list[Path] = []
    for d in log_dirs:
        if d.is_dir():
            for p in sorted(d.rglob("*")):
                if p.is_file() and (p.suffix in (".txt", ".log")) and p.name.lower() != "readme.txt":
                    dest = work / "logs" / p.name
                    if not dest.exists():
                        shutil.copyfile(p, dest)
                        logs.append(dest)
    rng = random.Random(f"kprobegen-outputs/{args.seed}/logs")
    bases = [p for p in logs if b"kprobegen/" in p.read_bytes()]
    for i in range(args.mutated_logs if bases else 0):
        base = bases[rng.randrange(len(bases))]
        kind, data = mutate_log(rng, base.read_bytes())
        dest = work / "logs" / f"mutated-{i:03d}.{kind}.{base.name}"
        dest.write_bytes(data)
        (inputs / "logs" / dest.name).write_bytes(data)
        logs.append(dest)
    logs.sort(key=lambda p: p.name)

    # Cases
    jobs: list[Job] = []
    for path in help_commands(runner):
        label = "-".join(path) or "top"
        jobs.append([Case(f"help.{label}", [*path, "--help"])])
    jobs.append([Case("help.top-h", ["-h"])])
    example_paths = [str(p.relative_to(checkout)) for p in examples]
    for p in example_paths:
        ident = "ex-" + Path(p).stem
        jobs += spec_cases(runner, ident, p, full=True, globs=False, release=release)
        jobs.append(build_chain(runner, ident, p, release, full=True))
    if examples:
        jobs += stdin_cases(runner, "ex-" + examples[0].stem, examples[0].read_bytes())
    for i, g in enumerate(generated):
        jobs += spec_cases(runner, g.ident, str(specs_dir / f"{g.ident}.yaml"), full=i < args.full,
                           globs=g.globs, release=release, scripts=i % 4 == 0)
    for g in [g for g in generated if not g.valid][:5]:
        jobs += stdin_cases(runner, g.ident, g.data)
    buildable = [g for g in generated if g.valid and not g.globs][: args.builds]
    for g in buildable:
        jobs.append(build_chain(runner, g.ident, str(specs_dir / f"{g.ident}.yaml"), release, full=False))
    for g in [g for g in generated if g.valid and g.globs][:2]:  # globs expanded against the profile, compiled
        jobs.append(build_chain(runner, g.ident, str(specs_dir / f"{g.ident}.yaml"), release, full=False,
                                kernel_only=True))
    for g in [g for g in generated if not g.valid][:3]:
        jobs.append(build_chain(runner, g.ident, str(specs_dir / f"{g.ident}.yaml"), release, full=False)[:1])
    detailed = {p.name for p in logs if p.name.endswith(("6.1-generated-three.dmesg.txt", "6.1-fork-counter.kmsg.txt",
                                                           "6.1-escaped-comm.journal-short.txt",
                                                           "6.1-100-cycles.dmesg-r.txt", "6.1-v2-forged.kmsg.txt"))}
    jobs += parse_cases(runner, logs, detailed)
    jobs += misc_cases(runner, specs_dir, example_paths[0] if example_paths else str(specs_dir / "gen-0000.yaml"),
                       release)

    names = [c.name for job in jobs for c in job]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise SystemExit(f"duplicate case names: {sorted(duplicates)[:5]}")
    # Longest jobs (builds) first, so that they do not end the run alone.
    jobs.sort(key=lambda job: -sum(c.timeout for c in job))

    def run_job(job: Job) -> None:
        for case in job:
            runner.run(case)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for _ in pool.map(run_job, jobs):
            pass

    if args.slowest:
        by_kind: dict[str, list[float]] = {}
        for name, seconds in runner.durations.items():
            by_kind.setdefault(name.split(".")[0] + "." + name.rsplit(".", 1)[-1], []).append(seconds)
        for kind, values in sorted(by_kind.items(), key=lambda kv: -sum(kv[1]))[: args.slowest]:
            print(f"  {sum(values):7.1f} s in {len(values):4d} x {kind}")
        for name, seconds in sorted(runner.durations.items(), key=lambda kv: -kv[1])[: args.slowest]:
            print(f"  {seconds:6.1f} s  {name}")
    if args.keep_work:
        print(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started
    timeouts = sum(1 for n in names if (out / n / "rc").read_text().startswith("timeout"))
    print(f"{len(names)} cases ({len(examples)} examples, {len(generated)} generated specs, {len(logs)} logs, "
          f"{sum(len(j) for j in jobs if j[0].name.startswith('build.'))} build cases{f', {timeouts} TIMEOUTS' if timeouts else ''}) "
          f"from {checkout} in {out} in {elapsed:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
