#!/usr/bin/env python3
"""The import graph of the kprobegen package, checked against the layers of docs/architecture.md.

    python tools/import_graph.py --check    exit 1 on an import cycle, an upward import, or a
                                            module that is in no layer (or in two)
    python tools/import_graph.py --dot      print the graph in Graphviz DOT
    python tools/import_graph.py --write    write docs/import-graph.dot and render
                                            docs/import-graph.svg with `dot -Tsvg` (graphviz)
    python tools/import_graph.py --lazy     list the function-level imports

What counts as an import (read with ``ast``, nothing is imported or run):

* every ``import`` and ``from ... import`` anywhere in a module: at module level, inside
  functions (lazy imports), inside ``try:`` and inside ``if TYPE_CHECKING:``;
* relative imports are resolved against the importing module (a package's ``__init__`` is
  the package itself);
* ``from P import n`` is an import of the module ``P.n`` when that module exists, else of
  ``P`` (``n`` is then a name defined in ``P``); ``import a.b.c`` is an import of the longest
  of ``a.b.c``, ``a.b``, ``a`` that is a module of the package;
* the parent packages that Python runs on the way (``kprobegen/__init__.py`` for every
  ``kprobegen.x``) are not edges: only the module named is;
* imports of anything outside the package are left out, and so is a module importing itself;
* modules are the ``.py`` files under the package and its C extensions (a ``.c`` file that
  defines ``PyInit_<name>``), at the granularity ``kprobegen.x.y``.

``if TYPE_CHECKING:`` imports count like any other for cycles and for the direction between
layers (an annotation that names a type of a higher layer is a dependency on that layer even
when it costs nothing at run time); the picture draws them dashed. Function-level imports
count too, and are drawn dotted.

The layers are the fenced ``layers`` block of docs/architecture.md, bottom layer first, one
line per layer: ``name: module module ...``. A declared name stands for that module and, when
it is a package, every module under it; the package root itself (``kprobegen``) stands for
its ``__init__.py`` alone. Each declared name is one *stage*. A module may import modules of
its own layer and of lower layers; no import cycle may join modules, nor stages.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "kprobegen"
DOC = REPO / "docs" / "architecture.md"
DOT_FILE = REPO / "docs" / "import-graph.dot"
SVG_FILE = REPO / "docs" / "import-graph.svg"

#: How an import statement is written, weakest first: a module-level import, one inside a
#: function (runs when the function is first called), one under ``if TYPE_CHECKING:``.
TOP, LAZY, TYPE = "top", "lazy", "type"
_STRENGTH = {TYPE: 0, LAZY: 1, TOP: 2}


@dataclass(frozen=True)
class Import:
    """One import statement of one module of the package, resolved to a module of the package."""

    source: str     # the importing module
    target: str     # the imported module
    path: str       # the importing file, relative to the package's parent folder
    line: int
    kind: str       # TOP, LAZY or TYPE

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Layer:
    name: str
    entries: tuple[str, ...]    # the declared modules/packages: each one a stage


# ---------------------------------------------------------------------------------- modules

def _module_files(root: Path) -> dict[str, Path]:
    """Module name → file, for every module of the package at ``root``."""
    root = Path(root)
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    for path in sorted(root.rglob("*.c")):
        if re.search(rf"\bPyInit_{re.escape(path.stem)}\b", path.read_text(errors="replace")):
            found[".".join((root.name, *path.relative_to(root).with_suffix("").parts))] = path
    return found


def modules(root: Path) -> set[str]:
    """Every module of the package at ``root`` (the folder ``kprobegen/``): ``kprobegen.x.y``."""
    return set(_module_files(root))


def _type_checking_test(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(tree: ast.AST):
    """(import statement, kind) for every import in the tree."""
    def walk(node: ast.AST, kind: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, kind
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(child, TYPE if kind == TYPE else LAZY)
            elif isinstance(child, ast.If) and _type_checking_test(child.test):
                for stmt in child.body:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), TYPE)
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), kind)
            else:
                yield from walk(child, kind)
    yield from walk(tree, TOP)


def scan(root: Path) -> list[Import]:
    """Every import within the package at ``root``, one record per imported module per statement."""
    root = Path(root)
    files = _module_files(root)
    known = set(files)
    records: list[Import] = []
    for name, path in sorted(files.items()):
        if path.suffix != ".py":
            continue
        rel = path.relative_to(root.parent).as_posix()
        tree = ast.parse(path.read_bytes(), filename=str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node, kind in _statements(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                for alias in node.names:
                    targets.append(_longest_known(alias.name, known))
            else:
                if node.level:
                    base_parts = package.split(".")
                    if node.level - 1 >= len(base_parts):
                        raise SyntaxError(f"{rel}:{node.lineno}: relative import beyond the top-level package")
                    base = ".".join(base_parts[:len(base_parts) - (node.level - 1)])
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.append(full if full in known else _longest_known(base, known))
            for target in sorted(set(targets)):      # `from m import a, b`: one import of m
                if target and target != name:
                    records.append(Import(name, target, rel, node.lineno, kind))
    return records


def _longest_known(dotted: str, known: set[str]) -> str:
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return ""


def imports(root: Path) -> dict[str, set[str]]:
    """Module → the modules of the package it imports; every module of the package is a key."""
    graph: dict[str, set[str]] = {m: set() for m in modules(root)}
    for rec in scan(root):
        graph[rec.source].add(rec.target)
    return graph


def edge_kinds(records: list[Import]) -> dict[tuple[str, str], str]:
    """(source, target) → the strongest way it is imported: TOP, else LAZY, else TYPE."""
    kinds: dict[tuple[str, str], str] = {}
    for rec in records:
        key = (rec.source, rec.target)
        if key not in kinds or _STRENGTH[rec.kind] > _STRENGTH[kinds[key]]:
            kinds[key] = rec.kind
    return kinds


def sites(records: list[Import]) -> dict[tuple[str, str], list[str]]:
    """(source, target) → where it is imported (``kprobegen/x.py:12``), for messages."""
    out: dict[tuple[str, str], list[str]] = {}
    for rec in records:
        out.setdefault((rec.source, rec.target), []).append(rec.where)
    return out


# ----------------------------------------------------------------------------------- layers

def layers(doc: str | Path) -> list[Layer]:
    """The layers declared in the fenced ``layers`` block of ``doc`` (a path, or the text), bottom first."""
    text = Path(doc).read_text() if isinstance(doc, Path) else doc
    block = re.search(r"^```layers[ \t]*\n(.*?)^```", text, re.S | re.M)
    if block is None:
        raise ValueError("no ```layers block in the architecture document")
    found: list[Layer] = []
    seen_entries: dict[str, str] = {}
    for number, line in enumerate(block.group(1).splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, colon, rest = line.partition(":")
        entries = tuple(e for e in re.split(r"[\s,]+", rest.strip()) if e)
        if not colon or not name.strip() or not entries:
            raise ValueError(f"layers block, line {number}: expected 'layer: module module ...', got {line!r}")
        name = name.strip()
        if any(layer.name == name for layer in found):
            raise ValueError(f"layers block: layer {name!r} is declared twice")
        for entry in entries:
            if entry in seen_entries:
                raise ValueError(f"layers block: {entry} is declared twice (layers {seen_entries[entry]} and {name})")
            seen_entries[entry] = name
        found.append(Layer(name, entries))
    if not found:
        raise ValueError("the ```layers block declares no layer")
    return found


def _covers(entry: str, module: str, top: str) -> bool:
    if entry == top:                     # the package root: its __init__.py alone
        return module == top
    return module == entry or module.startswith(entry + ".")


def placement(mods, layer_list: list[Layer]) -> dict[str, list[tuple[int, str]]]:
    """Module → every (layer index, declared entry) that covers it (exactly one when all is well)."""
    mods = sorted(mods)
    top = _top(mods, layer_list)
    return {m: [(i, e) for i, layer in enumerate(layer_list) for e in layer.entries if _covers(e, m, top)]
            for m in mods}


def _top(mods, layer_list: list[Layer]) -> str:
    names = list(mods) or [e for layer in layer_list for e in layer.entries]
    return min(names, key=len).split(".")[0] if names else ""


def placement_problems(mods, layer_list: list[Layer]) -> list[str]:
    """A module in no layer, or covered by two declared names."""
    problems = []
    for module, places in placement(mods, layer_list).items():
        if not places:
            problems.append(f"{module} is in no layer: add it (or its package) to a layer in docs/architecture.md")
        elif len(places) > 1:
            shown = ", ".join(f"{e} ({layer_list[i].name})" for i, e in places)
            problems.append(f"{module} is in more than one place: {shown}")
    return problems


def missing(mods, layer_list: list[Layer]) -> list[str]:
    """Declared names that match no module (not an error: a planned module, or a stale name)."""
    mods = sorted(mods)
    top = _top(mods, layer_list)
    return [f"{e} (layer {layer.name}) is declared but no such module exists"
            for layer in layer_list for e in layer.entries if not any(_covers(e, m, top) for m in mods)]


# ------------------------------------------------------------------------------- violations

def _sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan, iterative), each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    nodes = sorted(set(graph) | {t for ts in graph.values() for t in ts})
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    out.append(sorted(component))
    return sorted(out)


def _cycle_through(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first member, within the component."""
    members = set(component)
    start = component[0]
    parent: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph.get(node, ())):
            if child not in members:
                continue
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [start, *reversed(path[:-1]), start] if node != start else [start, start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    return [*component, component[0]]


def _at(graph_sites, a: str, b: str) -> str:
    where = (graph_sites or {}).get((a, b))
    return f" ({', '.join(where)})" if where else ""


def violations(graph: dict[str, set[str]], layer_list: list[Layer],
               where: dict[tuple[str, str], list[str]] | None = None) -> list[str]:
    """Import cycles between modules, import cycles between stages (declared names), and imports
    from a lower layer into a higher one; ``where`` (from ``sites``) adds file:line to messages.
    Modules in no layer are checked for cycles only (``placement_problems`` reports them)."""
    problems: list[str] = []
    module_cycles = [c for c in _sccs(graph) if len(c) > 1]
    for component in module_cycles:
        cycle = _cycle_through(graph, component)
        steps = "; ".join(f"{a} → {b}{_at(where, a, b)}" for a, b in zip(cycle, cycle[1:]))
        others = (f" (the cycle joins {len(component)} modules: {', '.join(component)})"
                  if len(component) > len(cycle) - 1 else "")
        problems.append(f"import cycle: {' → '.join(cycle)}{others}: {steps}")

    places = placement(graph, layer_list)
    stage = {m: p[0][1] for m, p in places.items() if len(p) == 1}
    layer_of = {m: p[0][0] for m, p in places.items() if len(p) == 1}

    stage_graph: dict[str, set[str]] = {}
    crossing: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for a in sorted(graph):
        for b in sorted(graph[a]):
            if a in stage and b in stage and stage[a] != stage[b]:
                stage_graph.setdefault(stage[a], set()).add(stage[b])
                crossing.setdefault((stage[a], stage[b]), []).append((a, b))
    module_cycle_stages = [{stage.get(m) for m in c} for c in module_cycles]
    for component in (c for c in _sccs(stage_graph) if len(c) > 1):
        if set(component) in module_cycle_stages:
            continue                      # already said as a cycle between modules
        cycle = _cycle_through(stage_graph, component)
        steps = "; ".join(
            f"{s} → {t} by " + ", ".join(f"{a} → {b}{_at(where, a, b)}" for a, b in crossing[(s, t)])
            for s, t in zip(cycle, cycle[1:]))
        problems.append(f"import cycle between stages: {' → '.join(cycle)}: {steps}")

    for a in sorted(graph):
        for b in sorted(graph[a]):
            if a in layer_of and b in layer_of and layer_of[a] < layer_of[b]:
                problems.append(
                    f"upward import: {a} (layer {layer_list[layer_of[a]].name}) imports {b} "
                    f"(layer {layer_list[layer_of[b]].name}, higher){_at(where, a, b)}")
    return problems


# ------------------------------------------------------------------------------------- DOT

def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(root: Path, layer_list: list[Layer]) -> str:
    """The import graph in Graphviz DOT: one cluster per layer (top layer drawn on top), one
    nested cluster per stage of several modules in a layer of several stages; edges point
    from importer to imported; dashed: only under ``if TYPE_CHECKING:``, dotted: only in
    functions; red: an import that is part of a cycle or goes upward. Sorted throughout: the
    same tree gives the same text."""
    records = scan(root)
    graph = imports(root)
    kinds = edge_kinds(records)
    top = _top(graph, layer_list)
    places = placement(graph, layer_list)
    layer_of = {m: p[0][0] for m, p in places.items() if len(p) == 1}
    stage_of = {m: p[0][1] for m, p in places.items() if len(p) == 1}
    in_cycle = {(a, b) for c in _sccs(graph) if len(c) > 1 for a in c for b in graph[a] if b in c}

    def label(module: str) -> str:
        return module if module == top else module[len(top) + 1:] if module.startswith(top + ".") else module

    lines = [
        f"// The import graph of the {top} package, by tools/import_graph.py --write: do not edit.",
        "// Layers and stages are those of docs/architecture.md. An edge goes from the importer to",
        "// the imported module; dashed: only under `if TYPE_CHECKING:`; dotted: only inside",
        "// functions (lazy); red: part of an import cycle, or an import into a higher layer.",
        f"digraph {_q(top)} {{",
        "  rankdir=TB;",
        "  newrank=true;",
        "  compound=true;",
        '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica", fontsize=11];',
        '  edge [color="#555555", arrowsize=0.7];',
        '  graph [fontname="Helvetica", fontsize=12, style="rounded", color="#999999"];',
    ]
    bands: list[list[str]] = []             # the members of each layer drawn, top layer first
    for i in range(len(layer_list) - 1, -1, -1):
        layer = layer_list[i]
        members = sorted(m for m in graph if layer_of.get(m) == i)
        if not members:
            continue
        bands.append(members)
        lines.append(f"  subgraph {_q(f'cluster_{i}_{layer.name}')} {{")
        lines.append(f"    label={_q(f'{layer.name}')}; labeljust=l; bgcolor=\"#f4f4f4\";")
        for entry in layer.entries:
            stage_members = [m for m in members if stage_of[m] == entry]
            if len(stage_members) > 1 and len(layer.entries) > 1:
                lines.append(f"    subgraph {_q(f'cluster_{i}_{entry}')} {{")
                lines.append(f"      label={_q(label(entry))}; bgcolor=white;")
                lines.extend(f"      {_q(m)} [label={_q(label(m))}];" for m in stage_members)
                lines.append("    }")
            else:
                lines.extend(f"    {_q(m)} [label={_q(label(m))}];" for m in stage_members)
        lines.append("  }")
    unplaced = sorted(m for m in graph if m not in layer_of)
    if unplaced:
        lines.append(f"  subgraph {_q('cluster_unplaced')} {{")
        lines.append('    label="in no layer (or in two)"; labeljust=l; color=red; fontcolor=red;')
        lines.extend(f"    {_q(m)} [label={_q(label(m))}, color=red];" for m in unplaced)
        lines.append("  }")
    # Keep the layers stacked, top layer on top: an invisible node between two layers, below
    # every module of the upper one and above every module of the lower one.
    for n, (upper, lower) in enumerate(zip(bands, bands[1:])):
        band = _q(f"band {n}")
        lines.append(f"  {band} [style=invis, shape=point, width=0, height=0, label=\"\"];")
        lines.extend(f"  {_q(m)} -> {band} [style=invis];" for m in upper)
        lines.extend(f"  {band} -> {_q(m)} [style=invis];" for m in lower)
    for a in sorted(graph):
        for b in sorted(graph[a]):
            attrs = []
            if kinds[(a, b)] == TYPE:
                attrs.append("style=dashed")
            elif kinds[(a, b)] == LAZY:
                attrs.append("style=dotted")
            if (a, b) in in_cycle or (a in layer_of and b in layer_of and layer_of[a] < layer_of[b]):
                attrs.append("color=red, penwidth=1.6")
            lines.append(f"  {_q(a)} -> {_q(b)}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def svg_stamp(dot_text: str) -> str:
    """The comment the SVG carries: which DOT text it was rendered from."""
    return f"<!-- rendered from import-graph.dot sha256:{hashlib.sha256(dot_text.encode()).hexdigest()} -->"


def render_svg(dot_text: str) -> str:
    """``dot -Tsvg`` of the text, stamped with the text's sha256 (see ``svg_stamp``)."""
    exe = shutil.which("dot")
    if exe is None:
        raise SystemExit("import_graph: `dot` not found: install Graphviz (Debian: apt-get install graphviz; "
                         "setup.sh installs it)")
    svg = subprocess.run([exe, "-Tsvg"], input=dot_text, capture_output=True, text=True, check=True).stdout
    head, tag, tail = svg.partition("<svg")
    if not tag:
        raise SystemExit("import_graph: `dot -Tsvg` printed no <svg> element")
    return f"{head}{svg_stamp(dot_text)}\n{tag}{tail}"


# -------------------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--check", action="store_true", help="exit 1 listing cycles, upward imports, unplaced modules")
    what.add_argument("--dot", action="store_true", help="print the graph in Graphviz DOT")
    what.add_argument("--write", action="store_true",
                      help="write import-graph.dot and import-graph.svg beside the layers document (docs/)")
    what.add_argument("--lazy", action="store_true", help="list the function-level imports (of any module)")
    parser.add_argument("--package", type=Path, default=PACKAGE, help="the package folder (default: kprobegen/)")
    parser.add_argument("--layers", type=Path, default=DOC, help="the document with the ```layers block")
    args = parser.parse_args(argv)

    if args.lazy:
        for name, path in sorted(_module_files(args.package).items()):
            if path.suffix != ".py":
                continue
            tree = ast.parse(path.read_bytes(), filename=str(path))
            for node, kind in sorted(_statements(tree), key=lambda s: s[0].lineno):
                if kind == LAZY:
                    names = ", ".join(a.name for a in node.names)
                    what_ = (f"import {names}" if isinstance(node, ast.Import)
                             else f"from {'.' * node.level}{node.module or ''} import {names}")
                    print(f"{path.relative_to(args.package.parent).as_posix()}:{node.lineno}: {what_}")
        return 0

    layer_list = layers(args.layers)
    if args.check:
        records = scan(args.package)
        graph = imports(args.package)
        errors = violations(graph, layer_list, sites(records)) + placement_problems(graph, layer_list)
        for warning in missing(graph, layer_list):
            print(f"warning: {warning}")
        for error in errors:
            print(f"error: {error}")
        count = sum(len(ts) for ts in graph.values())
        print(f"{len(graph)} modules, {count} imports between them, {len(layer_list)} layers: "
              + (f"{len(errors)} problem{'s' if len(errors) != 1 else ''}" if errors else "ok"))
        return 1 if errors else 0
    text = dot(args.package, layer_list)
    if args.dot:
        sys.stdout.write(text)
        return 0
    svg = render_svg(text)
    dot_file, svg_file = args.layers.parent / DOT_FILE.name, args.layers.parent / SVG_FILE.name
    dot_file.write_text(text)
    svg_file.write_text(svg)
    print(f"wrote {dot_file} and {svg_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
