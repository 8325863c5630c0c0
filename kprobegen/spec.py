"""YAML hook spec → a validated, frozen Spec model.

Loading happens in three steps, each with errors that name file:line:column and a key path:

1. ``yaml`` composes a node tree (syntax errors keep PyYAML's own mark);
2. :func:`_construct` turns nodes into plain Python values and remembers where every key and
   value came from (duplicate keys, aliases and non-scalar keys are refused here);
3. pydantic validates shapes and types against the models below (unknown keys get a
   "did you mean"), then :func:`_check_semantics` refuses impossible combinations.

The same models generate the JSON Schema printed by ``kprobegen schema``. Every string that
later reaches C is constrained here; kprobegen.codegen escapes it again on the way out.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from kprobegen.errors import SpecError, SymbolError
from kprobegen.ints import S64_MAX, S64_MIN
from kprobegen.specfile import MAX_SPEC_BYTES, is_stdin, read_spec_bytes

# Limits that keep generated C and the kernel safe from hostile specs.
MAX_HOOKS = 256  # also after glob expansion (Spec.expand)
# Nesting of YAML collections: a spec needs 5 (hooks[0].filter.arg0[0]); more is refused
# before PyYAML's recursive composer runs out of stack.
MAX_DEPTH = 16
# MODULE_NAME_LEN is 64 - sizeof(unsigned long) = 56 on 64-bit, including the NUL.
MODULE_NAME_MAX = 55
HOOK_NAME_MAX = 48
# KSYM_NAME_LEN grew from 128 to 512 in 6.1 (commit b8a94bfb3395, Rust symbols); stay under the old one.
SYMBOL_MAX = 127
# TASK_COMM_LEN is 16 including the NUL.
COMM_MAX = 15
LINEAR_BUCKETS_MAX = 1000

ARGS = tuple(f"arg{i}" for i in range(6))
COUNT_BY = ("comm", "pid", "tgid", "cpu") + ARGS + ("retval",)
HIST_OF = ("latency", "retval") + ARGS
OPERATORS = ("==", "!=", "<=", ">=", "<", ">")

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
ModuleName = Annotated[Identifier, StringConstraints(max_length=MODULE_NAME_MAX)]
HookName = Annotated[Identifier, StringConstraints(max_length=HOOK_NAME_MAX)]
# A kernel symbol (letters, digits, '_', and '.' for suffixes such as .isra.0), or a glob of one.
SymbolPattern = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_.*?\[\]]+$", min_length=1, max_length=SYMBOL_MAX)
]
# Printable ASCII on one line: it goes into a C comment and a C string.
Description = Annotated[str, StringConstraints(pattern=r"^[\x20-\x7e]*$", max_length=200)]
S64 = Annotated[int, Field(ge=S64_MIN, le=S64_MAX)]


class _Model(BaseModel):
    # strict: YAML's "3" stays a string and 3.0 is not an int; frozen: templates cannot mutate.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


@dataclass(frozen=True)
class Comparison:
    """``argN <op> value`` — argN and retval are compared as signed 64-bit (C ``long``)."""

    op: str
    value: int

    def __str__(self) -> str:
        return f"{self.op} {self.value}"


_COMPARISON = re.compile(r"^\s*(==|!=|<=|>=|<|>)?\s*(-?(?:0x[0-9a-fA-F]+|[0-9]+))\s*$")

ComparisonText = Annotated[
    Union[int, str],
    Field(
        description='An integer (meaning "== N") or "OP N" with OP one of == != < <= > >=, '
        'e.g. ">= 4096"; several as a list are ANDed.'
    ),
]


def _short(value: Any, limit: int = 60) -> str:
    """repr(value), cut to ``limit`` characters: an error line quotes a value, not a megabyte."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _parse_comparisons(value: Any) -> tuple[Comparison, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError("an empty list compares nothing; remove the key or give a comparison")
    out = []
    for item in items:
        if isinstance(item, int):
            op, number = "==", item
        else:
            match = _COMPARISON.match(item)
            if not match:
                raise ValueError(
                    f'cannot read comparison {_short(item)}: write "OP N" with OP one of '
                    f'{" ".join(OPERATORS)} and N an integer, e.g. ">= 4096"'
                )
            digits = match.group(2)
            if len(digits) > 40:  # far beyond 64 bits (and int()'s digit limit)
                raise ValueError(f"{_short(digits)} does not fit in a signed 64-bit long")
            op, number = match.group(1) or "==", int(digits, 0)
        if not S64_MIN <= number <= S64_MAX:
            raise ValueError(f"{_short(number)} does not fit in a signed 64-bit long")
        out.append(Comparison(op, number))
    return tuple(out)


class Filter(_Model):
    """Which hits count. All given conditions must hold (AND)."""

    pid: Annotated[int, Field(ge=0, le=4194304, description="Thread id (the kernel's pid).")] | None = None
    tgid: Annotated[int, Field(ge=0, le=4194304, description="Process id (the kernel's tgid).")] | None = None
    comm: Annotated[
        str,
        StringConstraints(min_length=1, max_length=COMM_MAX),
        Field(description="Exact task name (current->comm), at most 15 bytes."),
    ] | None = None
    arg0: ComparisonText | list[ComparisonText] | None = None
    arg1: ComparisonText | list[ComparisonText] | None = None
    arg2: ComparisonText | list[ComparisonText] | None = None
    arg3: ComparisonText | list[ComparisonText] | None = None
    arg4: ComparisonText | list[ComparisonText] | None = None
    arg5: ComparisonText | list[ComparisonText] | None = None
    retval: ComparisonText | list[ComparisonText] | None = Field(
        default=None, description="kretprobe only: comparisons on the return value."
    )

    @field_validator(*ARGS, "retval")
    @classmethod
    def _comparisons_parse(cls, value: Any) -> Any:
        if value is not None:
            _parse_comparisons(value)
        return value

    @field_validator("comm")
    @classmethod
    def _comm_fits(cls, value: str | None) -> str | None:
        if value is not None:
            if "\x00" in value:
                raise ValueError("comm cannot contain a NUL byte")
            if len(value.encode()) > COMM_MAX:
                raise ValueError(f"comm {value!r} is {len(value.encode())} bytes; the kernel keeps at most {COMM_MAX}")
        return value

    def comparisons(self) -> dict[str, tuple[Comparison, ...]]:
        """argN/retval → parsed comparisons, in a fixed order."""
        out = {}
        for name in ARGS + ("retval",):
            value = getattr(self, name)
            if value is not None:
                out[name] = _parse_comparisons(value)
        return out

    @property
    def comm_bytes(self) -> bytes | None:
        return None if self.comm is None else self.comm.encode()


class Histogram(_Model):
    """A distribution of one value per hit, in per-CPU buckets."""

    of: Literal[HIST_OF] = Field(
        description="latency (ns, kretprobe), retval (kretprobe) or an argument."
    )
    scale: Literal["log2", "linear"] = "log2"
    min: S64 | None = Field(default=None, description="linear only: lower bound of the first bucket.")
    max: S64 | None = Field(default=None, description="linear only: upper bound (exclusive) of the last bucket.")
    step: Annotated[int, Field(ge=1, le=S64_MAX)] | None = Field(default=None, description="linear only: bucket width.")

    @property
    def linear_buckets(self) -> int:
        assert self.scale == "linear" and self.min is not None and self.max is not None and self.step
        return (self.max - self.min) // self.step


class Print(_Model):
    """Rate-limited per-event printing (one ``event`` record per hit, at most ``burst`` per ``interval_ms``)."""

    burst: Annotated[int, Field(ge=1, le=1000)] = 10
    interval_ms: Annotated[int, Field(ge=10, le=3_600_000)] = 1000
    fields: list[Literal["arg0", "arg1", "arg2", "arg3", "arg4", "arg5", "retval", "latency"]] = Field(
        default_factory=list, description="Values to print besides pid, tgid, cpu and comm."
    )


ValueName = Literal["arg0", "arg1", "arg2", "arg3", "arg4", "arg5", "retval"]
ValueType = Literal["long", "int", "unsigned int"]


class Hook(_Model):
    name: HookName | None = Field(default=None, description="Unique in the spec; defaults to the symbol.")
    probe: Literal["kprobe", "kretprobe"] = "kprobe"
    symbol: SymbolPattern = Field(description="A kernel function, or a glob such as vfs_* expanded against the kernel.")
    offset: Annotated[int, Field(ge=0, le=65535)] | None = Field(default=None, description="kprobe only: bytes into the function.")
    filter: Filter | None = None
    count_by: Literal[COUNT_BY] | None = None
    histogram: Histogram | None = None
    print: Print | None = None
    types: dict[ValueName, ValueType] | None = Field(
        default=None,
        description="C types of arguments / the return value: long (default, the whole 64-bit register), "
        "int (32-bit, sign-extended: -100 stays -100) or unsigned int. E.g. {arg0: int} for an int dfd.",
    )

    def value_type(self, name: str) -> str:
        """The spec's type for argN / retval ("long" unless hooks[].types says otherwise)."""
        return (self.types or {}).get(name, "long")

    @property
    def is_glob(self) -> bool:
        return any(c in self.symbol for c in "*?[")

    @property
    def hook_name(self) -> str:
        """The name, or one derived from the symbol ("vfs_read.isra.0" → "vfs_read_isra_0").
        Underscores are kept: ``foo`` and ``__foo`` are different functions and hooks."""
        if self.name:
            return self.name
        derived = re.sub(r"[^A-Za-z0-9_]", "_", self.symbol)
        if derived[0].isdigit():
            derived = "h_" + derived
        return derived[:HOOK_NAME_MAX]

    @property
    def is_kretprobe(self) -> bool:
        return self.probe == "kretprobe"

    @property
    def measures_latency(self) -> bool:
        return (self.histogram is not None and self.histogram.of == "latency") or (
            self.print is not None and "latency" in self.print.fields
        )

    @property
    def entry_args(self) -> list[str]:
        """Arguments a kretprobe carries from entry to return (C: kretprobe instance data), in
        argument order; none for a kprobe, which reads them where it counts."""
        if not self.is_kretprobe:
            return []
        used = set()
        if self.count_by in ARGS:
            used.add(self.count_by)
        if self.histogram is not None and self.histogram.of in ARGS:
            used.add(self.histogram.of)
        if self.print is not None:
            used.update(f for f in self.print.fields if f in ARGS)
        return [a for a in ARGS if a in used]

    @property
    def entry_filter(self) -> bool:
        """Does the filter test anything at function entry (the task or an argument)?"""
        f = self.filter
        if f is None:
            return False
        return (f.pid is not None or f.tgid is not None or f.comm is not None
                or any(name != "retval" for name in self.comparisons))

    @property
    def needs_data(self) -> bool:
        """Does a kretprobe keep per-call data (arguments, entry time) from entry to return?"""
        return self.is_kretprobe and bool(self.entry_args or self.measures_latency)

    @property
    def needs_entry(self) -> bool:
        """Does a kretprobe need an entry handler (to filter at entry or to keep per-call data)?"""
        return self.is_kretprobe and (self.entry_filter or self.needs_data)

    @property
    def comparisons(self) -> dict[str, tuple[Comparison, ...]]:
        return self.filter.comparisons() if self.filter else {}


class Limits(_Model):
    max_hits: Annotated[int, Field(ge=0, le=S64_MAX)] = Field(
        default=0, description="A hook disarms itself after this many hits; 0 = no limit."
    )
    max_keys: Annotated[int, Field(ge=1, le=65536)] = Field(
        default=1024, description="Keys per CPU in a count_by table; hits beyond are counted as dropped."
    )
    maxactive: Annotated[int, Field(ge=0, le=4096)] = Field(
        default=0, description="kretprobe instances in flight; 0 = the kernel's default."
    )


class Report(_Model):
    interval_ms: Annotated[int, Field(ge=0, le=3_600_000)] = Field(
        default=0, description="Also report every interval_ms (at least 100); 0 = only at unload."
    )


class Spec(_Model):
    """One spec file: one kernel module."""

    module: ModuleName = Field(description="C identifier; the .ko's name.")
    description: Description = ""
    hooks: Annotated[list[Hook], Field(min_length=1, max_length=MAX_HOOKS)]
    limits: Limits = Field(default_factory=Limits)
    report: Report = Field(default_factory=Report)

    # Where the spec came from, for provenance headers and errors; not part of the schema.
    _source: str = "<string>"
    # Where each key and value was in the file, for errors found later (glob expansion).
    _located: Any = None

    @property
    def source(self) -> str:
        return self._source

    @property
    def kprobes(self) -> list[Hook]:
        return [h for h in self.hooks if h.probe == "kprobe"]

    @property
    def kretprobes(self) -> list[Hook]:
        return [h for h in self.hooks if h.probe == "kretprobe"]

    @property
    def has_globs(self) -> bool:
        return any(h.is_glob for h in self.hooks)

    def at(self, path: tuple) -> str:
        """``file:line:col`` of the value at key ``path`` (e.g. ``("hooks", 0, "symbol")``), for
        errors found after validation (a symbol the kernel lacks); the file alone when the spec
        was not read from YAML."""
        where = self._located.where(path) if self._located is not None else None
        return f"{self._source}:{where.line}:{where.column}" if where else self._source

    def expand(self, functions_matching) -> "Spec":
        """Replace glob hooks by one hook per matching symbol name.

        ``functions_matching(pattern) -> list[str]`` comes from the kernel profile (symbols.py)
        and raises SymbolError when nothing matches. Each expanded hook is named after its
        symbol (prefixed with the glob hook's name, if it has one); a name already taken gets
        the first free suffix ``_2``, ``_3``, … in symbol order, so expansion is deterministic.
        At most MAX_HOOKS hooks remain after expansion.
        """
        located = self._located or _Located(self._source)
        hooks: list[Hook] = []
        taken = {h.hook_name for h in self.hooks if not h.is_glob}
        grew: list[tuple[int, str, int]] = []  # (index, pattern, matches) of each glob
        for i, hook in enumerate(self.hooks):
            if not hook.is_glob:
                hooks.append(hook)
                continue
            try:
                symbols = list(dict.fromkeys(functions_matching(hook.symbol)))  # one hook per name
            except SymbolError as exc:
                raise SymbolError(f"{self.at(('hooks', i, 'symbol'))}: hooks[{i}].symbol: {exc}") from None
            grew.append((i, hook.symbol, len(symbols)))
            for symbol in symbols:
                try:
                    base = Hook.model_validate({**hook.model_dump(exclude_none=True), "symbol": symbol, "name": None})
                except ValidationError:
                    continue  # a kernel name a spec could not spell either (over 127 characters)
                name = _unique_name(f"{hook.name}__{base.hook_name}" if hook.name else base.hook_name, taken)
                taken.add(name)
                hooks.append(base.model_copy(update={"name": name}))
        if len(hooks) > MAX_HOOKS:
            i, pattern, count = max(grew, key=lambda g: g[2])
            raise located.error(
                ("hooks", i, "symbol"),
                f"glob {pattern!r} matches {count} functions, which makes {len(hooks)} hooks in all; a module "
                f"holds at most {MAX_HOOKS}: narrow the pattern or split the hooks over several specs")
        expanded = self.model_copy(update={"hooks": hooks})  # keeps _source
        _check_semantics(expanded, self._source)
        return expanded


def _unique_name(name: str, taken: set[str]) -> str:
    """``name`` cut to HOOK_NAME_MAX, or with the first suffix _2, _3, … that is not taken."""
    name = name[:HOOK_NAME_MAX]
    n = 2
    candidate = name
    while candidate in taken:
        suffix = f"_{n}"
        candidate = name[: HOOK_NAME_MAX - len(suffix)] + suffix
        n += 1
    return candidate


# --------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class _Where:
    line: int
    column: int


Path_ = tuple  # a key path: ("hooks", 1, "histogram", "of")


def _format_path(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, str):  # a user's key, quoted in an error line: printable, and not all of it
            part = "".join(c if c.isprintable() else repr(c)[1:-1] for c in part)
            part = part if len(part) <= 40 else part[:39] + "…"
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


class _Located:
    """Values built from YAML nodes, with the mark of every key and value by key path."""

    def __init__(self, source: str):
        self.source = source
        self.values: dict[Path_, _Where] = {}
        self.keys: dict[Path_, _Where] = {}

    def __eq__(self, other: object) -> bool:  # Spec equality compares its private attributes too
        return isinstance(other, _Located) and (self.source, self.values, self.keys) == (other.source, other.values, other.keys)

    __hash__ = None

    def where(self, path: Path_, key: bool = False) -> _Where | None:
        # Walk up until something is known: a missing key is reported at its parent mapping.
        path = tuple(path)
        while True:
            found = (self.keys if key else self.values).get(path) or self.values.get(path)
            if found or not path:
                return found
            path = path[:-1]

    def error(self, path: Path_, message: str, key: bool = False) -> SpecError:
        where = self.where(path, key)
        at = f"{self.source}:{where.line}:{where.column}" if where else self.source
        return SpecError(f"{at}: {_format_path(path)}: {message}")


def _mark(node: yaml.Node) -> _Where:
    return _Where(node.start_mark.line + 1, node.start_mark.column + 1)


def _construct(node: yaml.Node, loader: yaml.SafeLoader, located: _Located, path: Path_, seen: set[int]) -> Any:
    if id(node) in seen:
        # Aliases make YAML bombs possible and buy nothing in a spec.
        raise located.error(path, "anchors and aliases (&x / *x) are not supported in specs; write the value out")
    seen.add(id(node))
    located.values[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError(f"{located.source}:{_mark(key_node).line}:{_mark(key_node).column}: "
                                f"{_format_path(path)}: keys must be plain words")
            key = loader.construct_object(key_node)
            if not isinstance(key, str):
                key = str(key)
            child = path + (key,)
            located.keys[child] = _mark(key_node)
            if key in result:
                raise located.error(child, f"duplicate key {_short(key)}; give each key once", key=True)
            result[key] = _construct(value_node, loader, located, child, seen)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, loader, located, path + (i,), seen) for i, item in enumerate(node.value)]
    return _scalar(node, loader, located, path)


def _scalar(node: yaml.Node, loader: yaml.SafeLoader, located: _Located, path: Path_) -> Any:
    """A scalar's value; what PyYAML's constructors raise on odd input (an integer over
    Python's 4300-digit limit, `!!bool maybe`, a 13th month) becomes a SpecError at the node."""
    try:
        return loader.construct_object(node)
    except (yaml.YAMLError, SpecError):
        raise
    except Exception as exc:  # ValueError, KeyError, OverflowError, … from the constructors
        where = _mark(node)
        what = ("an integer of over 4300 digits; no value in a spec is that large" if "digits" in str(exc) else
                f"PyYAML cannot read this value as {node.tag.rsplit(':', 1)[-1]} ({type(exc).__name__}); "
                "write a plain integer or string")
        raise SpecError(f"{located.source}:{where.line}:{where.column}: {_format_path(path)}: {what}") from None


class _TooDeep(Exception):
    def __init__(self, mark):
        self.mark = mark


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with a bound on nesting (its composer recurses once per level)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _line_col(text: str, position: int) -> tuple[int, int]:
    line = text.count("\n", 0, position) + 1
    return line, position - (text.rfind("\n", 0, position) + 1) + 1


def _read_yaml(text: str, source: str) -> tuple[Any, _Located]:
    located = _Located(source)
    loader = None
    try:
        loader = _Loader(text)  # the reader checks the characters here already
        node = loader.get_single_node()
        if node is None:
            raise SpecError(f"{source}: the spec is empty; start with `module: NAME` and a `hooks:` list")
        data = _construct(node, loader, located, (), set())
    except _TooDeep as exc:
        raise SpecError(f"{source}:{exc.mark.line + 1}:{exc.mark.column + 1}: lists and mappings are nested more "
                        f"than {MAX_DEPTH} deep; a spec needs 5 at most") from None
    except yaml.reader.ReaderError as exc:
        line, column = _line_col(text, exc.position)
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        raise SpecError(f"{source}:{line}:{column}: the spec holds the character U+{ord(char):04X}, which YAML does "
                        "not allow (a control character or binary data); remove it") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise SpecError(f"{where}: YAML syntax error: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: YAML error: {' '.join(str(exc).split())}") from None
    except RecursionError:  # not expected with the depth bound, but never a traceback
        raise SpecError(f"{source}: the spec is nested too deeply to read") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, located


# Models by the key path that leads to them, to suggest keys for "did you mean".
def _model_at(path: Path_) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Spec
    for part in path:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = next((m for m in _models_in(annotation)), None)
    return model


def _models_in(annotation: Any):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _models_in(arg)


def _data_path(loc: tuple, located: _Located) -> Path_:
    """pydantic's loc, less the union-member names it inserts ("int", "list[...]")."""
    kept: Path_ = ()
    for part in loc:
        child = kept + (part,)
        model = _model_at(kept)
        if child in located.values or child in located.keys or (model and part in model.model_fields):
            kept = child
        elif isinstance(part, str) and part == loc[-1] and model is not None:
            kept = child  # an unknown key the user wrote
    return kept


def _describe_error(err: dict, located: _Located) -> SpecError:
    loc = _data_path(tuple(err["loc"]), located)
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        key = loc[-1]
        parent = _model_at(loc[:-1])
        known = sorted(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
        return located.error(loc, f"unknown key {_short(key)}; {hint}", key=True)
    if kind == "missing":
        return located.error(loc, f"required key {loc[-1]!r} is missing; add it", key=True)
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        close = difflib.get_close_matches(str(value), re.findall(r"'([^']+)'", expected), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return located.error(loc, f"{_short(value)} is not one of {expected}{hint}")
    if kind == "string_pattern_mismatch":
        field = loc[-1] if loc else ""
        what = {
            "module": "a C identifier (letters, digits, _; not starting with a digit)",
            "name": "a C identifier (letters, digits, _; not starting with a digit)",
            "symbol": "a kernel symbol name (letters, digits, _ and . — or a glob with * ? [ ])",
            "description": "printable ASCII on one line",
        }.get(str(field), "a value matching " + err.get("ctx", {}).get("pattern", ""))
        return located.error(loc, f"{_short(value)} is not {what}")
    if kind in ("int_type", "string_type", "model_type", "list_type", "dict_type", "bool_type"):
        expected = {"int_type": "an integer", "string_type": "a string", "model_type": "a mapping of keys",
                    "dict_type": "a mapping of keys", "list_type": "a list", "bool_type": "true or false"}[kind]
        return located.error(loc, f"expected {expected}, got {type(value).__name__} {_short(value)}")
    if kind in ("string_too_long", "string_too_short", "too_long", "too_short", "greater_than_equal", "less_than_equal"):
        return located.error(loc, f"{_short(value)}: {err['msg'].lower()}; change it to fit")
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return located.error(loc, f"{message} (got {_short(value)})" if kind != "value_error" else message)


def _check_semantics(spec: Spec, source: str, located: _Located | None = None) -> None:
    located = located or _Located(source)
    seen: dict[str, int] = {}
    for i, hook in enumerate(spec.hooks):
        at = ("hooks", i)
        kret = hook.is_kretprobe
        if hook.offset is not None and kret:
            raise located.error(at + ("offset",), "offset applies to kprobes only; a kretprobe fires on return — remove offset or use probe: kprobe", key=True)
        if hook.histogram is not None:
            of = hook.histogram.of
            if of in ("latency", "retval") and not kret:
                raise located.error(at + ("histogram", "of"), f"a histogram of {of} needs probe: kretprobe (a kprobe fires before the function returns)")
            _check_histogram(hook.histogram, located, at + ("histogram",))
        if hook.count_by == "retval" and not kret:
            raise located.error(at + ("count_by",), "count_by: retval needs probe: kretprobe")
        if hook.filter is not None and hook.filter.retval is not None and not kret:
            raise located.error(at + ("filter", "retval"), "a retval filter needs probe: kretprobe", key=True)
        if hook.types and "retval" in hook.types and not kret:
            raise located.error(at + ("types", "retval"), "a retval type needs probe: kretprobe", key=True)
        if hook.print is not None:
            for field in hook.print.fields:
                if field in ("retval", "latency") and not kret:
                    raise located.error(at + ("print", "fields"), f"printing {field} needs probe: kretprobe")
        name = hook.hook_name
        if name in seen:
            why = "" if hook.name else f" (derived from symbol {hook.symbol!r}; give one of them a name:)"
            raise located.error(at + ("name",), f"duplicate hook name {name!r}, already used by hooks[{seen[name]}]{why}; names must be unique", key=True)
        seen[name] = i
    interval = spec.report.interval_ms
    if 0 < interval < 100:
        raise located.error(("report", "interval_ms"), f"{interval} ms is too short; use 0 (report only at unload) or at least 100")


def _check_histogram(hist: Histogram, located: _Located, at: Path_) -> None:
    if hist.scale == "log2":
        for key in ("min", "max", "step"):
            if getattr(hist, key) is not None:
                raise located.error(at + (key,), f"{key} applies to scale: linear only; remove it or set scale: linear", key=True)
        return
    for key in ("min", "max", "step"):
        if getattr(hist, key) is None:
            raise located.error(at, f"a linear histogram needs min, max and step; {key} is missing", key=True)
    if hist.max <= hist.min:
        raise located.error(at + ("max",), f"max ({hist.max}) must be greater than min ({hist.min})")
    if (hist.max - hist.min) % hist.step:
        raise located.error(at + ("step",), f"step {hist.step} does not divide max - min = {hist.max - hist.min}; pick a step that does")
    if hist.linear_buckets > LINEAR_BUCKETS_MAX:
        raise located.error(at + ("step",), f"{hist.linear_buckets} buckets is too many (at most {LINEAR_BUCKETS_MAX}); raise step")


def parse_spec(text: str, source: str = "<string>") -> Spec:
    """Validate spec text; ``source`` names it in errors and in generated headers."""
    if len(text) > MAX_SPEC_BYTES or len(text.encode(errors="replace")) > MAX_SPEC_BYTES:
        raise SpecError(f"{source}: the spec is over {MAX_SPEC_BYTES} bytes; a spec this large is not a hook spec")
    data, located = _read_yaml(text, source)
    if not isinstance(data, dict):
        raise SpecError(f"{source}:1:1: a spec is a mapping with `module:` and `hooks:`, not a {type(data).__name__}")
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = _describe_error(errors[0], located)
        # A union reports one error per member; count places, not members.
        others = {_data_path(tuple(e["loc"]), located) for e in errors} - {_data_path(tuple(errors[0]["loc"]), located)}
        if others:
            first = SpecError(f"{first} (and {len(others)} more problem{'s' if len(others) > 1 else ''})")
        raise first from None
    spec._source = source
    spec._located = located
    _check_semantics(spec, source, located)
    return spec


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file (``-``: standard input). Only a regular file (or stdin) is
    read, and at most MAX_SPEC_BYTES of it (see specfile.read_spec_bytes)."""
    raw = read_spec_bytes(path)
    source = "<stdin>" if is_stdin(path) else str(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError(f"{source}:{line}:{column}: the spec is not UTF-8 text (byte {exc.start}: "
                        f"0x{raw[exc.start]:02x}); save it as UTF-8") from None
    return parse_spec(text, source)


def json_schema() -> dict:
    """The JSON Schema of a spec file, generated from the models that validate it."""
    schema = Spec.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "kprobegen hook spec"
    return schema
