"""The spec model: what it accepts, and the one-line errors for what it refuses."""

from __future__ import annotations

import json

import pytest

from kprobegen.errors import SpecError
from kprobegen.spec import json_schema, load_spec, parse_spec

BASE = "module: m\nhooks:\n  - symbol: ksys_sync\n"


def error_of(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "hooks.yaml")
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    return message


def test_minimal_spec_defaults():
    spec = parse_spec(BASE, "hooks.yaml")
    (hook,) = spec.hooks
    assert (spec.module, hook.hook_name, hook.probe, hook.symbol) == ("m", "ksys_sync", "kprobe", "ksys_sync")
    assert (spec.limits.max_hits, spec.limits.max_keys, spec.limits.maxactive) == (0, 1024, 0)
    assert spec.report.interval_ms == 0


def test_examples_load(example_specs):
    assert len(example_specs) >= 4
    for path in example_specs:
        assert load_spec(path).hooks


@pytest.mark.parametrize(
    "text, expected",
    [
        # unknown key, with the nearest known one, at the key's own line and column
        (BASE + "    filtr: {comm: x}\n", "hooks.yaml:4:5: hooks[0].filtr: unknown key 'filtr'; did you mean 'filter'?"),
        (BASE + "    histogram: {of: latncy}\n", "hooks.yaml:4:21: hooks[0].histogram.of: 'latncy' is not one of"),
        ("module: m\nhooks:\n  - symbol: a\n    probe: kretprobe\n    offset: 4\n",
         "hooks.yaml:5:5: hooks[0].offset: offset applies to kprobes only"),
        (BASE + "    histogram: {of: latency}\n", "hooks[0].histogram.of: a histogram of latency needs probe: kretprobe"),
        (BASE + "    histogram: {of: arg0, scale: linear, min: 0, max: 10, step: 0}\n", "hooks[0].histogram.step"),
        (BASE + "    histogram: {of: arg0, scale: linear, min: 0, max: 10, step: 3}\n",
         "hooks[0].histogram.step: step 3 does not divide max - min = 10"),
        (BASE + "    histogram: {of: arg0, scale: linear, min: 10, max: 0, step: 1}\n", "max (0) must be greater than min (10)"),
        (BASE + "    histogram: {of: arg0, scale: linear, max: 10, step: 1}\n", "min, max and step; min is missing"),
        (BASE + "    histogram: {of: arg0, min: 1}\n", "hooks[0].histogram.min: min applies to scale: linear only"),
        (BASE + "    count_by: retval\n", "hooks[0].count_by: count_by: retval needs probe: kretprobe"),
        (BASE + "    filter: {retval: 0}\n", "hooks[0].filter.retval: a retval filter needs probe: kretprobe"),
        (BASE + "  - symbol: ksys_sync\n", "hooks.yaml:4:5: hooks[1].name: duplicate hook name 'ksys_sync'"),
        (BASE + "limits: {max_keys: 0}\n", "limits.max_keys"),
        (BASE + "limits: {max_keys: 100000}\n", "limits.max_keys"),
        (BASE + "limits: {maxactive: -1}\n", "limits.maxactive"),
        (BASE + "report: {interval_ms: 5}\n", "report.interval_ms: 5 ms is too short"),
        ("module: m\nmodule: n\nhooks: []\n", "hooks.yaml:2:1: module: duplicate key 'module'"),
        ("hooks:\n  - symbol: a\n", "module: required key 'module' is missing"),
        ("module: m\nhooks: []\n", "hooks"),
        ("module: 3m\nhooks:\n  - symbol: a\n", "hooks.yaml:1:9: module: '3m' is not a C identifier"),
        ("module: m\nhooks:\n  - symbol: a\n    count_by: 3\n", "hooks[0].count_by"),
        ("module: m\nhooks:\n  - symbol: a\n    filter: {pid: \"12\"}\n", "hooks[0].filter.pid: expected an integer, got str '12'"),
        ("module: m\nhooks:\n  - symbol: a\n    filter: {arg1: \">= x\"}\n", "hooks[0].filter.arg1: cannot read comparison '>= x'"),
        ("module: m\nhooks:\n  - symbol: a\n    filter: {comm: \"0123456789abcdefg\"}\n", "hooks[0].filter.comm"),
        ("module: [\n", "hooks.yaml:2:1: YAML syntax error"),
        ("- a\n- b\n", "a spec is a mapping"),
        ("", "the spec is empty"),
        ("a: &x 1\nb: *x\n", "anchors and aliases"),
    ],
)
def test_errors_name_file_line_key_and_fix(text, expected):
    assert expected in error_of(text)


def test_more_problems_are_counted_not_listed():
    message = error_of("module: 3m\nhooks:\n  - symbol: a\n    probe: kprobes\n")
    assert message.startswith("hooks.yaml:1:9: module:") and message.endswith("(and 1 more problem)")


@pytest.mark.parametrize(
    "field, value",
    [
        ("symbol", 'ksys_sync"); evil(); ("'),
        ("symbol", "ksys_sync\\n#include"),
        ("symbol", "a b"),
        ("name", "x; evil()"),
        ("name", "x__y */"),
        ("module", "m\nMODULE_LICENSE"),
    ],
)
def test_injection_in_identifiers_is_refused(field, value):
    hook = {"symbol": "ksys_sync"}
    spec = {"module": "m", "hooks": [hook]}
    if field == "module":
        spec["module"] = value
    else:
        hook[field] = value
    message = error_of(json.dumps(spec))
    assert "is not" in message


def test_description_must_be_one_printable_line():
    assert "description" in error_of("module: m\ndescription: \"a\\nb\"\nhooks:\n  - symbol: a\n")


def test_comparisons_parse():
    spec = parse_spec("module: m\nhooks:\n  - symbol: a\n    filter: {arg0: [\">= 0x10\", \"< 100\"], arg2: 7}\n")
    comparisons = spec.hooks[0].comparisons
    assert [(c.op, c.value) for c in comparisons["arg0"]] == [(">=", 16), ("<", 100)]
    assert [(c.op, c.value) for c in comparisons["arg2"]] == [("==", 7)]


def test_glob_expansion_names_hooks_by_symbol():
    spec = parse_spec("module: m\nhooks:\n  - symbol: vfs_*\n    count_by: comm\n")
    assert spec.has_globs
    expanded = spec.expand(lambda pattern: ["vfs_read", "vfs_write"])
    assert [(h.hook_name, h.symbol, h.count_by) for h in expanded.hooks] == [
        ("vfs_read", "vfs_read", "comm"), ("vfs_write", "vfs_write", "comm")]


def test_schema_is_generated_from_the_model_and_validates_examples(example_specs):
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = json_schema()
    assert schema["title"] == "kprobegen hook spec"
    assert set(schema["properties"]) == {"module", "description", "hooks", "limits", "report"}
    for path in example_specs:
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"module": "m", "hooks": [{"symbol": "a", "bogus": 1}]}, schema)


def test_types_narrow_arguments_and_return_values():
    spec = parse_spec("module: m\nhooks:\n  - probe: kretprobe\n    symbol: a\n    types: {arg0: int, retval: unsigned int}\n")
    hook = spec.hooks[0]
    assert (hook.value_type("arg0"), hook.value_type("arg1"), hook.value_type("retval")) == ("int", "long", "unsigned int")
    assert error_of(BASE + "    types: {retval: int}\n").endswith("hooks[0].types.retval: a retval type needs probe: kretprobe")
    assert "'short' is not one of" in error_of(BASE + "    types: {arg0: short}\n")
    assert "hooks[0].types" in error_of(BASE + "    types: {arg9: int}\n")


def test_derived_names_keep_underscores_and_expansion_makes_them_unique():
    """Issue #11/#10: foo and __foo are different functions; the 6.1 kernel has hundreds of such pairs."""
    assert parse_spec("module: m\nhooks:\n  - symbol: __x64_sys_sync\n").hooks[0].hook_name == "__x64_sys_sync"
    spec = parse_spec("module: m\nhooks:\n  - symbol: '*kmalloc*'\n  - symbol: kmalloc_trace\n")
    symbols = ["__kmalloc", "kmalloc", "kmalloc_large_node", "__kmalloc_large_node", "kmalloc.isra.0",
               "kmalloc_isra_0", "kmalloc_trace", "kmalloc"]  # a name twice (several functions): one hook
    names = [(h.hook_name, h.symbol) for h in spec.expand(lambda pattern: symbols).hooks]
    assert names == [("__kmalloc", "__kmalloc"), ("kmalloc", "kmalloc"), ("kmalloc_large_node", "kmalloc_large_node"),
                     ("__kmalloc_large_node", "__kmalloc_large_node"), ("kmalloc_isra_0", "kmalloc.isra.0"),
                     ("kmalloc_isra_0_2", "kmalloc_isra_0"), ("kmalloc_trace_2", "kmalloc_trace"),
                     ("kmalloc_trace", "kmalloc_trace")]
    # deterministic: the same input gives the same names
    assert [h.hook_name for h in spec.expand(lambda pattern: symbols).hooks] == [n for n, _ in names]
    named = parse_spec("module: m\nhooks:\n  - {name: k, symbol: '*kmalloc*'}\n")
    assert [h.hook_name for h in named.expand(lambda p: ["kmalloc", "__kmalloc"]).hooks] == ["k__kmalloc", "k____kmalloc"]


def test_long_expanded_names_stay_unique_within_the_limit():
    long = "x" * 60
    spec = parse_spec("module: m\nhooks:\n  - symbol: 'x*'\n")
    hooks = spec.expand(lambda p: [long + "a", long + "b", long + "c"]).hooks
    names = [h.hook_name for h in hooks]
    assert len(set(names)) == 3 and all(len(n) <= 48 for n in names), names


def test_hook_limit_applies_after_expansion():
    spec = parse_spec("module: m\nhooks:\n  - symbol: ksys_sync\n  - symbol: 'ext4_*'\n    count_by: comm\n", "g.yaml")
    symbols = [f"ext4_f{i}" for i in range(612)]
    with pytest.raises(SpecError) as info:
        spec.expand(lambda pattern: symbols)
    assert str(info.value) == ("g.yaml:4:13: hooks[1].symbol: glob 'ext4_*' matches 612 functions, which makes 613 "
                               "hooks in all; a module holds at most 256: narrow the pattern or split the hooks over "
                               "several specs")
    assert len(spec.expand(lambda pattern: symbols[:255]).hooks) == 256
