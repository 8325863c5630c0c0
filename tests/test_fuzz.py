"""Fuzzing (issue #11): hostile specs and CLI arguments never end in a traceback.

Hypothesis generates spec-shaped YAML (right keys, wrong values and shapes), mutated
example specs (control characters, cut text, stray bytes) and CLI argument lists; the only
outcomes allowed are a valid spec (which then renders) or a one-line SpecError, and for the
CLI an exit status with at most one-line errors on stderr. Bounded in time: a fixed number of
examples with small inputs (about half a minute in all here).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kprobegen.errors import RenderError, SpecError
from kprobegen.spec import load_spec, parse_spec

MODULES = Path(__file__).resolve().parent.parent / "modules"
EXAMPLES = [p.read_text() for p in sorted(MODULES.glob("*.yaml"))]

FUZZ = settings(max_examples=int(os.environ.get("KPROBEGEN_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

KEYS = ["module", "description", "hooks", "limits", "report", "name", "probe", "symbol", "offset", "filter",
        "count_by", "histogram", "print", "types", "pid", "tgid", "comm", "arg0", "arg1", "arg5", "retval", "of",
        "scale", "min", "max", "step", "burst", "interval_ms", "fields", "max_hits", "max_keys", "maxactive"]
WORDS = ["kprobe", "kretprobe", "ksys_sync", "vfs_*", "__x64_sys_*", "a.isra.0", "latency", "log2", "linear", "comm",
         "pid", "cpu", "arg0", "arg5", "retval", ">= 4", "== -1", "!= 0x10", "< 9223372036854775808", "int", "long",
         "unsigned int", "sync", "*/", "\"", "\\", "%s", "\x00", "é", "\u2028"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.sampled_from([0, 1, -1, 2 ** 63 - 1, -(2 ** 63), 2 ** 64]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.sampled_from(WORDS),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
hooks = st.dictionaries(st.sampled_from(KEYS[5:]), values, max_size=6)
spec_shaped = st.fixed_dictionaries(
    {"module": st.one_of(st.sampled_from(["m", "sync_counter", "3x", "x" * 60]), values),
     "hooks": st.one_of(st.lists(hooks, min_size=0, max_size=4), values)},
    optional={"limits": st.dictionaries(st.sampled_from(["max_hits", "max_keys", "maxactive", "x"]), values, max_size=3),
              "report": st.dictionaries(st.sampled_from(["interval_ms", "y"]), values, max_size=2),
              "description": values},
)

# Near-valid hooks, so that many specs pass validation and reach the templates.
comparisons = st.one_of(st.integers(-(2 ** 64), 2 ** 64), st.sampled_from(WORDS[15:20]),
                        st.lists(st.sampled_from(WORDS[15:20]), max_size=3))
near_valid_hook = st.fixed_dictionaries(
    {"symbol": st.sampled_from(["ksys_sync", "vfs_read", "a.isra.0", "__x64_sys_sync", "_x", "vfs_*"])},
    optional={
        "name": st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,50}\Z"),
        "probe": st.sampled_from(["kprobe", "kretprobe"]),
        "offset": st.integers(-1, 70000),
        "count_by": st.sampled_from(["comm", "pid", "tgid", "cpu", "arg0", "arg5", "retval"]),
        "filter": st.fixed_dictionaries({}, optional={"comm": st.text(max_size=17), "pid": st.integers(-1, 5000000),
                                                      "arg0": comparisons, "retval": comparisons}),
        "histogram": st.fixed_dictionaries({"of": st.sampled_from(["latency", "retval", "arg0", "arg3"])}, optional={
            "scale": st.sampled_from(["log2", "linear"]), "min": st.integers(-(2 ** 63), 2 ** 63),
            "max": st.integers(-(2 ** 63), 2 ** 63), "step": st.integers(0, 2 ** 64)}),
        "print": st.fixed_dictionaries({}, optional={"burst": st.integers(0, 2000),
                                                     "fields": st.lists(st.sampled_from(["arg0", "retval", "latency"]))}),
        "types": st.dictionaries(st.sampled_from(["arg0", "arg2", "retval"]), st.sampled_from(["int", "long", "unsigned int"])),
    },
)
near_valid = st.fixed_dictionaries(
    {"module": st.from_regex(r"\A[a-z_][a-z0-9_]{0,56}\Z"), "hooks": st.lists(near_valid_hook, min_size=1, max_size=5)},
    optional={"description": st.text(max_size=40), "limits": st.fixed_dictionaries({}, optional={
        "max_hits": st.integers(0, 2 ** 63), "max_keys": st.integers(0, 70000), "maxactive": st.integers(0, 5000)}),
        "report": st.fixed_dictionaries({"interval_ms": st.integers(0, 4000000)})},
)


@st.composite
def mutated_examples(draw) -> str:
    text = draw(st.sampled_from(EXAMPLES))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "repeat"]))
        if action == "insert":
            text = text[:at] + draw(st.text(st.characters(), max_size=6) | st.sampled_from(
                ["\f", "\x00", "[" * 40, "{a: " * 30, "9" * 5001, "&a ", "*a", "!!python/object ", ": :", "\t", "- "]
            )) + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)):]
        else:
            text = text[:at] + text[at:at + 30] * draw(st.integers(2, 50)) + text[at:]
    return text


def assert_spec_outcome(text: str) -> None:
    try:
        spec = parse_spec(text, "fuzz.yaml")
    except SpecError as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 1000, message
        return
    # A spec that validates renders (the generated C, Makefile and scripts), unless it has globs.
    from kprobegen.codegen import render_files

    try:
        files = render_files(spec)
    except RenderError as exc:
        assert spec.has_globs, exc
        return
    assert files[f"{spec.module}.c"].startswith("// SPDX-License-Identifier")


@FUZZ
@given(spec_shaped | near_valid)
def test_fuzz_spec_shaped_yaml(data):
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return
    assert_spec_outcome(text)


@FUZZ
@given(mutated_examples())
def test_fuzz_mutated_examples(text):
    assert_spec_outcome(text)


@FUZZ
@given(st.binary(max_size=300) | mutated_examples().map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_fuzz_spec_files(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_bytes(data)
        try:
            load_spec(path)
        except SpecError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path))


# -- the CLI ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def paths():
    with tempfile.TemporaryDirectory(prefix="kpg-fuzz-") as tmp:
        root = Path(tmp)
        (root / "afile").write_text("x")
        (root / "bad.yaml").write_text("module: m\nhooks:\n  - symbol: a\n    histogram: {of: latency}\n")
        (root / "ctl.yaml").write_bytes(b"module: m\f\x00\n")
        (root / "glob.yaml").write_text("module: g\nhooks:\n  - symbol: 'vfs_*'\n")
        (root / "dir").mkdir()
        yield root


def argv_strategy(root: Path):
    specs = st.sampled_from([str(MODULES / "sync_counter.yaml"), str(root / "bad.yaml"), str(root / "ctl.yaml"),
                             str(root / "glob.yaml"), str(root / "afile"), str(root / "missing.yaml"), "/dev/null",
                             "/dev/zero", str(root / "dir"), "-", "", "--", "-x"])
    # (the glob spec is valid too: with a kernel it would be expanded, after a boot for the profile)
    bad_specs = specs.filter(lambda s: "sync_counter" not in s and "glob" not in s)
    values = st.sampled_from(["", " ", "0", "-1", "1", "nan", "inf", "-inf", "1e400", "3.5", "10", "x", "\x00",
                              "--json", str(root / "afile"), str(root / "afile" / "sub"), str(root / "dir"),
                              str(root / "out"), "/proc/kpg-fuzz", "no-such-kernel", "bullseye-x"]) | st.text(max_size=8)
    opts = {
        "check": ["--kernel", "--json"], "render": ["-o", "--kernel", "--emit-c"], "stap": [], "bpftrace": [],
        "build": ["-o", "--kernel", "--kernel-dir", "--no-cache", "--strict", "--show-command", "--json"],
        "parse": ["--module", "--all", "--top", "--json"], "schema": [],
        "run": ["--timeout", "--top", "--keep", "--accel", "--kernel", "--json", "--add"],
        "kernels": ["list", "--json"],
    }

    @st.composite
    def argv(draw):
        command = draw(st.sampled_from(sorted(opts)))
        # Only a bad spec for build/run: a valid one would compile or boot, which other tests do.
        args = [command] + ([draw(bad_specs if command in ("build", "run") else specs)]
                            if command not in ("schema", "parse", "kernels") else [])
        for _ in range(draw(st.integers(0, 4))):
            args.append(draw(st.sampled_from(opts[command] or ["--json"]) | st.sampled_from(["--debug", "-h", "--bogus"])))
            if draw(st.booleans()):
                args.append(draw(values))
        if command == "run" and draw(st.booleans()):
            args += ["--", "true"]
        return [a for a in args if a != "--debug"]  # --debug shows tracebacks on purpose
    return argv()


def test_fuzz_cli_arguments(paths, monkeypatch):
    from kprobegen import cli

    monkeypatch.setenv("KPROBEGEN_CACHE", str(paths / "cache"))
    monkeypatch.chdir(paths / "dir")

    @FUZZ
    @given(argv_strategy(paths))
    def one(argv):
        out, err = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"module: m\n")))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(argv)
            except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
                code = exc.code
        stderr = err.getvalue()
        assert "Traceback" not in stderr, (argv, stderr)
        if code not in (0, None):
            # warnings and notes may come first; the error is the one last line
            lines = stderr.splitlines()
            assert lines and all(line.startswith("kprobegen: ") for line in lines), (argv, stderr)
            assert lines[-1].startswith("kprobegen: error: ") and not any("error" in l.split(":")[1] for l in lines[:-1]), (argv, stderr)
        # a relative -o (such as "0") makes a folder here; nothing is written here directly
        # (render -o '' used to write the module's files into the current folder)
        for entry in (paths / "dir").iterdir():
            assert entry.is_dir(), f"{argv} wrote {entry.name} into the current folder"
            shutil.rmtree(entry)

    one()
