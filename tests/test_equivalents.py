"""SystemTap and bpftrace equivalents, checked by the real tools.

Every script rendered here is compiled by bpftrace (``--emit-elf``: parse, semantic analysis,
code generation, no kernel needed) and passes SystemTap's pass 2 (``stap -p2``: probe points
resolved against the 6.1 kernel's real System.map, types checked). The System.map comes from
the kernel profile (the guest's /proc/kallsyms; the first run boots the kernel once, ~10 s).

Time: about 30-40 s for the whole file on 2 cores (~0.3 s per stap -p2, ~0.1 s per bpftrace).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import decode_octal_literal
from kprobegen.codegen import Script, render_bpftrace, render_stap, script_comment, script_string
from kprobegen.errors import BuildError
from kprobegen.ints import S64_MIN
from kprobegen.spec import load_spec, parse_spec
from tools.equivalents import check_bpftrace, check_stap, stap_tree

from conftest import MODULES, require

REGENERATE = "for f in modules/*.yaml; do kprobegen render $f -o modules/$(basename $f .yaml); done"


# --------------------------------------------------------------------------------------------
# Fixtures: the real tools


@pytest.fixture(scope="session")
def bpftrace():
    require(shutil.which("bpftrace") is not None, "apt-get install bpftrace (0.17, Debian 12)")
    require(shutil.which("readelf") is not None, "apt-get install binutils")


@pytest.fixture(scope="session")
def tree(kernel_61):
    """A kernel tree for `stap -r`: the 6.1 headers plus the real System.map from the profile."""
    require(shutil.which("stap") is not None, "apt-get install systemtap (4.8, Debian 12)")
    require(shutil.which("qemu-system-x86_64") is not None,
            "apt-get install qemu-system-x86 busybox-static (the System.map comes from booting the kernel once)")
    return stap_tree(kernel_61)


@pytest.fixture(scope="session")
def profile(kernel_61):
    from kprobegen.kernels.symbols import load_profile
    from kprobegen.pipeline import profile_capture

    return load_profile(kernel_61, capture=profile_capture())


def stap_probes(stdout: str) -> list[str]:
    """The resolved probe points in `stap -p2` output (its "# probes" section)."""
    probes, inside = [], False
    for line in stdout.splitlines():
        if line.startswith("# "):
            inside = line == "# probes"
            continue
        if inside and not line.startswith(" "):
            probes.append(line.split(" /* ", 1)[0])
    return probes


def elf_programs(elf: bytes, tmp_path: Path) -> list[str]:
    """The BPF programs (one ELF section per probe, "s_<probe>_<n>") in bpftrace's object."""
    obj = tmp_path / "script.o"
    obj.write_bytes(elf)
    out = subprocess.run(["readelf", "-SW", str(obj)], capture_output=True, text=True, check=True).stdout
    return sorted(re.findall(r"\]\s+s_(\S+?)_\d+\s", out))


def both(spec, tree, tmp_path) -> tuple[Script, Script, list[str], list[str]]:
    """Render both scripts, check them with the real tools; return them and their probes."""
    stap, bt = render_stap(spec), render_bpftrace(spec)
    stap_out = check_stap(stap.text, tree)
    elf = check_bpftrace(bt.text)
    assert elf[:4] == b"\x7fELF"
    return stap, bt, stap_probes(stap_out), elf_programs(elf, tmp_path)


def spec_of(hooks: str, extra: str = "", source: str = "matrix.yaml"):
    return parse_spec(f"module: m\nhooks:\n{hooks}{extra}", source)


# --------------------------------------------------------------------------------------------
# Escaping (pure functions)


def decode_script_literal(literal: str) -> bytes:
    """The bytes of a SystemTap or bpftrace literal; nothing either tool would expand unescaped."""
    return decode_octal_literal(literal, '"\\\n%?$@')


HOSTILE_COMMS = [
    'a"b',
    "x\\",
    "%s%n%d",
    '"/{system("x")}',
    '"); system("id',
    "\n}\nprobe",
    "??=caf\u00e9",
    "$1 @x #c",
    "*/ // \t",
]


@pytest.mark.parametrize("value", HOSTILE_COMMS)
def test_string_literals_round_trip(value):
    assert decode_script_literal(script_string(value)) == value.encode()


def test_script_comment_stays_one_inert_line():
    text = script_comment("a\nb\\\r*/ /* \u2014")
    assert "\n" not in text and "\r" not in text and "\\" not in text
    assert "*/" not in text and "/*" not in text
    assert all(" " <= ch <= "~" for ch in text)


# --------------------------------------------------------------------------------------------
# The feature matrix: each feature renders, passes both real tools, and warns exactly where
# the tool has no faithful form. `warn` lists (tool, fragment) for every expected warning.

K = "  - name: h\n    symbol: ksys_sync\n"
R = "  - name: h\n    probe: kretprobe\n    symbol: vfs_read\n"

MATRIX = {
    "count": (K, "", []),
    "filter_pid": (K + "    filter: {pid: 42}\n", "", []),
    "filter_tgid": (K + "    filter: {tgid: 7}\n", "", []),
    "filter_comm": (K + "    filter: {comm: sync}\n", "", []),
    "filter_args": (K + '    filter: {arg0: ">= -3", arg5: [0, "!= 4096"]}\n', "", []),
    "filter_s64_extremes": (K + f'    filter: {{arg1: [">= {S64_MIN}", "<= 9223372036854775807"]}}\n', "", []),
    "kret_filter_always_true": (R + f'    filter: {{arg0: ">= {S64_MIN}", arg1: "<= 9223372036854775807"}}\n    histogram: {{of: latency}}\n', "", []),
    "kret_filter_never_true": (R + f'    filter: {{arg0: "< {S64_MIN}", comm: x}}\n    histogram: {{of: latency}}\n', "", []),
    "filter_retval": (R + '    filter: {retval: "< 0"}\n', "", []),
    "kret_entry_filters": (R + '    filter: {pid: 1, tgid: 1, comm: cat, arg2: "> 0", retval: ">= 0"}\n', "", []),
    "by_comm": (K + "    count_by: comm\n", "", []),
    "by_pid": (K + "    count_by: pid\n", "", []),
    "by_tgid": (K + "    count_by: tgid\n", "", []),
    "by_cpu": (K + "    count_by: cpu\n", "", []),
    "by_arg3": (K + "    count_by: arg3\n", "", []),
    "by_retval": (R + "    count_by: retval\n", "", []),
    "kret_by_arg1": (R + "    count_by: arg1\n", "", []),
    "hist_log2_arg": (K + "    histogram: {of: arg2}\n", "", []),
    "hist_log2_retval": (R + "    histogram: {of: retval}\n", "", []),
    "hist_latency": (R + "    histogram: {of: latency, scale: log2}\n", "", []),
    "hist_linear": (R + "    histogram: {of: retval, scale: linear, min: 0, max: 100, step: 10}\n", "", []),
    "hist_linear_negative": (R + "    histogram: {of: retval, scale: linear, min: -4, max: 12, step: 2}\n", "",
                             [("bt", "shifted by 4")]),
    "hist_linear_many_buckets": (K + "    histogram: {of: arg0, scale: linear, min: 0, max: 1000, step: 1}\n", "",
                                 [("stap", "-DSTP_MAX_BUCKETS=1002")]),
    "hist_linear_wide": (K + "    histogram: {of: arg0, scale: linear, min: 0, max: 40000000000, step: 1000000000}\n", "",
                         [("stap", "32-bit int")]),
    "hist_linear_huge_range": (K + f"    histogram: {{of: arg0, scale: linear, min: {S64_MIN}, max: 9223372036854775806, step: 9223372036854775807}}\n", "",
                               [("stap", "32-bit int"), ("bt", "does not fit in 64 bits")]),
    "max_hits": (K, "limits: {max_hits: 3}\n", [("bt", "max_hits")]),
    "kret_max_hits": (R + "    histogram: {of: latency}\n", "limits: {max_hits: 3}\n", [("bt", "max_hits")]),
    "maxactive": (R, "limits: {maxactive: 20}\n", [("bt", "maxactive")]),
    "maxactive_kprobes_only": (K, "limits: {maxactive: 20}\n", []),
    "interval": (K, "report: {interval_ms: 500}\n", []),
    "print_kprobe": (K + "    print: {burst: 2, interval_ms: 100, fields: [arg0, arg1]}\n", "", [("bt", "rate limit")]),
    "print_kret": (R + "    print: {fields: [latency, retval, arg2]}\n", "", [("bt", "rate limit")]),
    "offset": (K + "    offset: 4\n", "", [("stap", "left out")]),
    "types_int": (R + '    filter: {arg0: -100, retval: "< 0"}\n    count_by: retval\n    histogram: {of: arg2}\n'
                  "    types: {arg0: int, arg2: unsigned int, retval: int}\n", "", []),
    "types_kprobe": (K + "    filter: {arg1: -1}\n    count_by: arg1\n    types: {arg1: int}\n", "", []),
    # limits.max_keys has no faithful equivalent: said only when the spec sets it (a default never warns)
    "by_comm_max_keys": (K + "    count_by: comm\n", "limits: {max_keys: 100}\n",
                         [("stap", "max_keys (100)"), ("bt", "max_keys (100)")]),
    "glob": ("  - name: h\n    symbol: vfs_rea*\n", "", [("stap", "expanded by the tool"), ("bt", "expanded by the tool")]),
    "glob_question": ("  - name: h\n    symbol: vfs_rea?\n", "",
                      [("stap", "expanded by the tool"), ("bt", "expanded by the tool"), ("bt", "'*' only")]),
}


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_feature_passes_both_tools_and_warns_exactly(case, tree, bpftrace, tmp_path):
    hooks, extra, expected = MATRIX[case]
    spec = spec_of(hooks, extra)
    stap, bt, stap_points, bt_programs = both(spec, tree, tmp_path)
    for tool, script in (("stap", stap), ("bt", bt)):
        want = [frag for t, frag in expected if t == tool]
        assert len(script.warnings) == len(want), f"{tool}: {script.warnings}"
        for frag in want:
            assert any(frag in w for w in script.warnings), f"{tool}: no warning with {frag!r} in {script.warnings}"
        # Every warning is also a comment at the top, before the first probe.
        head = script.text.split("\nprobe ", 1)[0].split("\nBEGIN", 1)[0]
        for w in script.warnings:
            assert script_comment(w) in head
    hook = spec.hooks[0]
    kret = hook.is_kretprobe
    if case == "offset":
        assert not [p for p in stap_points if p.startswith("kprobe")], "the offset hook is left out of stap"
        assert "kprobe:ksys_sync+4" in bt_programs
        return
    if not hook.is_glob:
        suffix = ".return" + (".maxactive(20)" if case == "maxactive" else "") if kret else ""
        assert f'kprobe.function("{hook.symbol}"){suffix}' in stap_points
        assert f"{'kretprobe' if kret else 'kprobe'}:{hook.symbol}" in bt_programs
    if kret and (hook.measures_latency or hook.filter and (hook.filter.pid or hook.filter.comm) or hook.count_by == "arg1"):
        # bpftrace carries entry data in a kprobe on the same function; stap uses @entry().
        assert f"kprobe:{hook.symbol}" in bt_programs
        assert "@entry(" in stap.text
    if "interval" in case:
        assert "timer.ms(500)" in stap_points and "interval:ms:500" in bt_programs
    assert "end" in stap_points and "END" in bt_programs


def test_glob_probes_resolve_against_the_real_symbol_table(tree, bpftrace, tmp_path):
    spec = spec_of("  - name: h\n    symbol: vfs_rea?\n")
    stap_points = stap_probes(check_stap(render_stap(spec).text, tree))
    # vfs_rea? matches vfs_read only (vfs_readv and vfs_readlink are longer) in 6.1.
    assert [p for p in stap_points if p.startswith("kprobe")] == ['kprobe.function("vfs_read")']
    assert "kprobe:vfs_rea*" in render_bpftrace(spec).text


def test_a_missing_symbol_is_refused_by_stap(tree):
    spec = spec_of("  - name: h\n    symbol: no_such_function_kpg\n")
    with pytest.raises(BuildError, match="no match"):
        check_stap(render_stap(spec).text, tree)


def test_a_suffixed_symbol_is_quoted_for_bpftrace(profile, tree, bpftrace, tmp_path):
    symbol = sorted(f for f in profile.functions if ".isra." in f and f not in profile.blacklist)[0]
    spec = spec_of(f"  - name: h\n    symbol: {symbol}\n    count_by: pid\n")
    _, bt, stap_points, bt_programs = both(spec, tree, tmp_path)
    assert f'kprobe:"{symbol}"' in bt.text
    assert f'kprobe.function("{symbol}")' in stap_points
    assert any(p.startswith("kprobe:") for p in bt_programs)


# --------------------------------------------------------------------------------------------
# Semantics the tools name differently


def test_pid_is_the_thread_and_tgid_the_process():
    spec = spec_of(K + "    filter: {pid: 11, tgid: 22}\n    count_by: tgid\n")
    stap, bt = render_stap(spec).text, render_bpftrace(spec).text
    assert "tid() == 11 && pid() == 22" in stap and "key = pid()" in stap
    assert "/tid == 11 && pid == 22/" in bt and "@h__by[pid] = count();" in bt


def test_arguments_are_signed_64_bit_and_counted_from_zero():
    spec = spec_of(K + '    filter: {arg0: "< -1"}\n    count_by: arg5\n')
    stap, bt = render_stap(spec).text, render_bpftrace(spec).text
    assert "long_arg(1) < (-1)" in stap and "key = long_arg(6)" in stap
    assert "(int64)arg0 < (-1)" in bt and "@h__by[(int64)arg5]" in bt


def test_kretprobe_filters_apply_at_entry_and_retval_at_return():
    spec = spec_of(R + '    filter: {comm: cat, arg1: 3, retval: "< 0"}\n')
    stap, bt = render_stap(spec).text, render_bpftrace(spec).text
    assert '@entry(execname()) == "cat" && @entry(long_arg(2)) == 3 && returnval() < 0' in stap
    entry, ret = bt.split("kretprobe:vfs_read", 1)
    assert 'if (comm == "cat" && (int64)arg1 == 3)' in entry
    assert "if ($start && (int64)retval < 0)" in ret


def test_max_hits_is_a_counter_guard_that_reports_disarmed():
    spec = spec_of(K, "limits: {max_hits: 5}\n")
    stap, bt = render_stap(spec).text, render_bpftrace(spec).text
    assert "if (h__taken >= 5) {\n\t\th__disarmed = 1" in stap
    assert 'if (@taken["h"] < 5) {' in bt and '@disarmed["h"] = 1;' in bt


def test_linear_histogram_bounds_match_the_protocol():
    # C: [-inf, min) [min, min+step) ... [max-step, max) [max, inf). stap's last regular
    # bucket is [stop, stop+step), so stop is max - step; bpftrace lhist takes max as is.
    spec = spec_of(R + "    histogram: {of: retval, scale: linear, min: 0, max: 100, step: 10}\n")
    assert "@hist_linear(h__hist, 0, 90, 10)" in render_stap(spec).text
    assert "lhist((int64)retval, 0, 100, 10)" in render_bpftrace(spec).text


# --------------------------------------------------------------------------------------------
# Hostile input: comm and the spec's path cannot inject code


def bpftrace_ast_strings(text: str) -> list[bytes]:
    """String literals as bpftrace's own parser read them (`bpftrace -d`, a dry run)."""
    out = subprocess.run(["bpftrace", "-d", "-"], input=text, capture_output=True, text=True, timeout=120)
    strings = []
    for line in (out.stdout + out.stderr).splitlines():
        m = re.match(r"^\s*string: (.*) :: type\[string", line)
        if m:
            raw, data, i = m.group(1), bytearray(), 0
            while i < len(raw):
                if raw.startswith("\\x", i):
                    data.append(int(raw[i + 2:i + 4], 16))
                    i += 4
                elif raw[i] == "\\":
                    data.append(ord({"n": "\n", "t": "\t", "r": "\r"}.get(raw[i + 1], raw[i + 1])))
                    i += 2
                else:
                    data += raw[i].encode()
                    i += 1
            strings.append(bytes(data))
    return strings


@pytest.mark.parametrize("comm", HOSTILE_COMMS[:6] + ["??=caf\u00e9"])
def test_hostile_comm_is_one_inert_string(comm, tree, bpftrace, tmp_path):
    import json

    spec = spec_of(K + f"    filter: {{comm: {json.dumps(comm)}}}\n")
    expected = comm.encode()
    stap, bt, stap_points, bt_programs = both(spec, tree, tmp_path)
    assert stap_points == ['kprobe.function("ksys_sync")', "begin", "end"]
    assert bt_programs == sorted(["BEGIN", "END", "kprobe:ksys_sync"])
    # The literal each tool compares comm with holds exactly the spec's bytes.
    literal = re.search(r'execname\(\) == ("[^"]*")', stap.text).group(1)
    assert decode_script_literal(literal) == expected
    p1 = subprocess.run(["stap", "-p1", "-r", str(tree), "-"], input=stap.text, capture_output=True, text=True, timeout=120)
    assert p1.returncode == 0 and literal in p1.stdout, "stap's parser read the literal as one token"
    assert expected in bpftrace_ast_strings(bt.text)


HOSTILE_SOURCES = [
    "evil\n}\nprobe begin { system(\"id\") }\nBEGIN { system(\"id\"); }",
    "a*/ b /* c\\",
    "dir/\u2014\r\n%s.yaml",
]


@pytest.mark.parametrize("source", HOSTILE_SOURCES)
def test_hostile_spec_path_stays_in_one_comment(source, tree, bpftrace, tmp_path):
    spec = spec_of(K, source=source)
    stap, bt, stap_points, bt_programs = both(spec, tree, tmp_path)
    assert stap_points == ['kprobe.function("ksys_sync")', "begin", "end"]
    assert bt_programs == sorted(["BEGIN", "END", "kprobe:ksys_sync"])
    for script, comment in ((stap, "#"), (bt, "//")):
        lines = script.text.splitlines()
        generated = [i for i, line in enumerate(lines) if "generated by kprobegen" in line]
        assert len(generated) == 1 and lines[generated[0]].startswith(comment + " ")
        assert "system(" not in script.text.replace(lines[generated[0]], "")


# --------------------------------------------------------------------------------------------
# Headers, determinism, the checked-in examples


def test_headers_and_determinism():
    spec = load_spec(MODULES / "sync_counter.yaml")
    for render, shebang, comment in ((render_stap, "#!/usr/bin/env stap", "# "), (render_bpftrace, "#!/usr/bin/env bpftrace", "// ")):
        first, second = render(spec), render(spec)
        assert first == second
        lines = first.text.splitlines()
        assert lines[0] == shebang
        assert lines[1] == comment + "SPDX-License-Identifier: GPL-2.0"
        assert re.fullmatch(re.escape(comment) + r"generated by kprobegen \S+ from sync_counter\.yaml \u2014 do not edit", lines[2])
    # The path a spec is loaded from does not change the output.
    moved = parse_spec((MODULES / "sync_counter.yaml").read_text(), "/elsewhere/sync_counter.yaml")
    assert render_stap(moved).text == render_stap(spec).text


EXAMPLES = sorted(MODULES.glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_checked_in_scripts_are_current(path):
    spec = load_spec(path)
    folder = MODULES / path.stem
    for name, script in ((f"{spec.module}.stp", render_stap(spec)), (f"{spec.module}.bt", render_bpftrace(spec))):
        present = folder / name
        assert present.is_file(), f"{present} is missing; regenerate with: {REGENERATE}"
        assert present.read_text() == script.text, f"{present} is stale; regenerate with: {REGENERATE}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_pass_both_tools(path, tree, bpftrace, tmp_path):
    spec = load_spec(path)
    stap, bt, stap_points, bt_programs = both(spec, tree, tmp_path)
    for hook in spec.hooks:
        kind = "kretprobe" if hook.is_kretprobe else "kprobe"
        assert f"{kind}:{hook.symbol}" in bt_programs
        assert any(p.startswith(f'kprobe.function("{hook.symbol}")') for p in stap_points)


def test_hook_names_that_are_keywords_or_long_stay_distinct(tree, bpftrace, tmp_path):
    long_name = "h" * 48
    names = ["probe", "BEGIN", "__x", "x__", "x", "tid", long_name]
    hooks = "".join(f"  - name: {n}\n    symbol: ksys_sync\n    count_by: pid\n    histogram: {{of: arg0}}\n" for n in names)
    spec = spec_of(hooks, "limits: {max_hits: 9}\n")
    stap, bt, stap_points, bt_programs = both(spec, tree, tmp_path)
    assert stap_points.count('kprobe.function("ksys_sync")') == len(names)
    assert bt_programs.count("kprobe:ksys_sync") == len(names)
    for n in names:
        assert f"{n}__hits <<< 1" in stap.text and f'@hits["{n}"] = count();' in bt.text


def test_the_full_feature_script_translates_to_c(tree):
    # Pass 3 (translation to C) as well, on a spec with every feature stap can express.
    spec = spec_of(
        K + '    filter: {pid: 1, tgid: 1, comm: "a b", arg0: ">= -1"}\n    count_by: comm\n'
        "    print: {fields: [arg0]}\n"
        + R.replace("name: h", "name: r") + '    filter: {comm: cat, retval: "< 0"}\n    count_by: arg1\n'
        "    histogram: {of: latency}\n    print: {fields: [latency, retval, arg1]}\n"
        "  - name: l\n    probe: kretprobe\n    symbol: do_sys_openat2\n"
        "    histogram: {of: retval, scale: linear, min: -4, max: 12, step: 2}\n",
        "limits: {max_hits: 100, maxactive: 8}\nreport: {interval_ms: 1000}\n",
    )
    c = check_stap(render_stap(spec).text, tree, last_pass=3)
    assert "_stp_map_new" in c or "_stp_pmap_new" in c


# --------------------------------------------------------------------------------------------
# Random specs: any combination of features renders scripts both tools accept.

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SYMBOLS = ("ksys_sync", "vfs_read", "do_sys_openat2", "kernel_clone")
_COMMS = st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF), min_size=1, max_size=7)
_S64 = st.integers(min_value=S64_MIN, max_value=(1 << 63) - 1)


@st.composite
def _hook(draw, index: int) -> dict:
    kret = draw(st.booleans())
    hook: dict = {"name": f"h{index}", "symbol": draw(st.sampled_from(_SYMBOLS))}
    if kret:
        hook["probe"] = "kretprobe"
    elif draw(st.booleans()):
        hook["offset"] = draw(st.sampled_from([0, 1, 4, 8]))
    filt: dict = {}
    for key, strategy in (("pid", st.integers(0, 4194304)), ("tgid", st.integers(0, 4194304)), ("comm", _COMMS)):
        if draw(st.integers(0, 3)) == 0:
            filt[key] = draw(strategy)
    for arg in draw(st.lists(st.sampled_from([f"arg{i}" for i in range(6)] + (["retval"] if kret else [])), max_size=2, unique=True)):
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
        filt[arg] = f"{op} {draw(_S64)}"
    if filt:
        hook["filter"] = filt
    by = draw(st.sampled_from([None, "comm", "pid", "tgid", "cpu", "arg0", "arg5"] + (["retval"] if kret else [])))
    if by:
        hook["count_by"] = by
    of = draw(st.sampled_from([None, "arg1"] + (["latency", "retval"] if kret else [])))
    if of:
        hist = {"of": of}
        if draw(st.booleans()):
            step = draw(st.integers(1, 1 << 40))
            lo = draw(st.integers(-(1 << 50), 1 << 50))
            hist.update(scale="linear", min=lo, max=lo + step * draw(st.integers(1, 1000)), step=step)
        hook["histogram"] = hist
    if draw(st.booleans()):
        fields = ["arg0", "arg3"] + (["retval", "latency"] if kret else [])
        hook["print"] = {"burst": draw(st.integers(1, 1000)), "fields": draw(st.lists(st.sampled_from(fields), max_size=3, unique=True))}
    return hook


@st.composite
def _spec_text(draw) -> str:
    import json

    n = draw(st.integers(1, 3))
    spec = {
        "module": "random_spec",
        "hooks": [draw(_hook(i)) for i in range(n)],
        "limits": {"max_hits": draw(st.sampled_from([0, 1, 1000])), "max_keys": draw(st.integers(1, 65536)),
                   "maxactive": draw(st.sampled_from([0, 64]))},
        "report": {"interval_ms": draw(st.sampled_from([0, 100, 3_600_000]))},
    }
    return json.dumps(spec)  # JSON is YAML


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=_spec_text())
def test_random_specs_pass_both_tools(text, tree, bpftrace):
    spec = parse_spec(text, "random.yaml")
    stap, bt = render_stap(spec), render_bpftrace(spec)
    check_stap(stap.text, tree)
    assert check_bpftrace(bt.text)[:4] == b"\x7fELF"
    assert render_stap(spec) == stap and render_bpftrace(spec) == bt
    # Offsets are the only thing stap leaves out; everything else is probed.
    offsets = sum(1 for h in spec.hooks if h.offset)
    assert stap.text.count("\nprobe kprobe.function(") == len(spec.hooks) - offsets
    assert sum(1 for w in stap.warnings if "left out" in w) == offsets


def test_comparisons_with_the_extremes_are_folded_for_stap():
    # stap 4.8 fails pass 2 when its optimiser folds a comparison holding an @entry() value.
    always = spec_of(R + f'    filter: {{arg0: ">= {S64_MIN}", arg2: 3}}\n')
    assert "if (!(@entry(long_arg(3)) == 3))" in render_stap(always).text
    never = spec_of(R + f'    filter: {{arg0: "< {S64_MIN}", arg2: 3}}\n')
    assert "if (!(0))" in render_stap(never).text
    # bpftrace keeps them as written.
    assert f"(int64)arg0 < {S64_MIN + 1} - 1" not in render_bpftrace(never).text
    assert "(int64)arg0 < (-9223372036854775807 - 1)" in render_bpftrace(never).text
