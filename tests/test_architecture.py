"""The package keeps the layers of docs/architecture.md, and its picture is the code's.

The import graph comes from tools/import_graph.py (read with ast, nothing imported): no
import cycle, no import into a higher layer, every module in exactly one layer, and
docs/import-graph.dot / .svg are what the code gives now.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "kprobegen"
DOC = REPO / "docs" / "architecture.md"
DOT = REPO / "docs" / "import-graph.dot"
SVG = REPO / "docs" / "import-graph.svg"
FIX = "run `python tools/import_graph.py --write`"


def _load_tool():
    spec = importlib.util.spec_from_file_location("import_graph", REPO / "tools" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


ig = _load_tool()


# -- the package itself ---------------------------------------------------------------------

def test_no_import_cycles_and_no_upward_imports():
    records = ig.scan(PACKAGE)
    problems = ig.violations(ig.imports(PACKAGE), ig.layers(DOC), ig.sites(records))
    assert problems == [], "\n".join(["", *problems, "(layers: docs/architecture.md)"])


def test_every_module_is_in_exactly_one_layer():
    problems = ig.placement_problems(ig.modules(PACKAGE), ig.layers(DOC))
    assert problems == [], "\n".join(["", *problems])


def test_the_package_has_the_modules_the_checks_rely_on():
    """The checks above pass trivially on an empty graph: make sure the scan sees the package."""
    graph = ig.imports(PACKAGE)
    assert {"kprobegen", "kprobegen.cli", "kprobegen.errors", "kprobegen.pipeline"} <= set(graph)
    assert "kprobegen.errors" in graph["kprobegen.cli"]
    assert sum(len(targets) for targets in graph.values()) > 20


def test_import_graph_dot_is_current():
    assert DOT.is_file(), f"docs/import-graph.dot is missing: {FIX}"
    assert DOT.read_text() == ig.dot(PACKAGE, ig.layers(DOC)), \
        f"docs/import-graph.dot is not the graph of the code and docs/architecture.md now: {FIX}"


def test_import_graph_svg_was_rendered_from_the_dot():
    assert SVG.is_file(), f"docs/import-graph.svg is missing: {FIX}"
    svg = SVG.read_text()
    stamp = re.search(r"rendered from import-graph\.dot sha256:([0-9a-f]{64})", svg)
    assert stamp, f"docs/import-graph.svg carries no sha256 of the DOT it was drawn from: {FIX}"
    assert stamp.group(1) == hashlib.sha256(DOT.read_bytes()).hexdigest(), \
        f"docs/import-graph.svg was drawn from another docs/import-graph.dot: {FIX}"
    assert "<svg" in svg and "</svg>" in svg


def test_the_doc_shows_the_picture():
    assert "![import graph](import-graph.svg)" in DOC.read_text()


# -- the checker, on small packages made here ------------------------------------------------

def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


LAYERS = """\
# Layers

```layers
# bottom first
low:  pkg pkg.low
mid:  pkg.a pkg.b
high: pkg.high pkg.top
```
"""

CLEAN = {
    "__init__.py": "VERSION = '1'\n",
    "low.py": "from . import VERSION\n",
    "a.py": "from .low import x\n",
    "b.py": "from pkg import a\n",
    "high/__init__.py": "from ..b import thing\n",
    "high/part.py": "import pkg.high\nimport os\n",
    "top.py": "",
}


def test_a_clean_package_has_no_problems(tmp_path):
    root = _package(tmp_path, CLEAN)
    layer_list = ig.layers(LAYERS)
    graph = ig.imports(root)
    assert graph == {
        "pkg": set(),
        "pkg.low": {"pkg"},
        "pkg.a": {"pkg.low"},
        "pkg.b": {"pkg.a"},
        "pkg.high": {"pkg.b"},
        "pkg.high.part": {"pkg.high"},
        "pkg.top": set(),
    }
    assert ig.violations(graph, layer_list) == []
    assert ig.placement_problems(graph, layer_list) == []


def test_the_checker_reports_a_cycle_and_an_upward_import(tmp_path):
    root = _package(tmp_path, {
        **CLEAN,
        # a → b at module level, b → a inside a function: a cycle all the same
        "a.py": "from .low import x\nfrom . import b\n",
        "b.py": "def f():\n    from pkg import a\n",
        # the bottom layer reaching up, only for annotations: still an upward import
        "low.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .top import T\n",
    })
    records = ig.scan(root)
    problems = ig.violations(ig.imports(root), ig.layers(LAYERS), ig.sites(records))
    cycles = [p for p in problems if p.startswith("import cycle:")]
    upward = [p for p in problems if p.startswith("upward import:")]
    assert len(cycles) == 1 and "pkg.a → pkg.b → pkg.a" in cycles[0], problems
    assert "pkg/a.py:2" in cycles[0] and "pkg/b.py:2" in cycles[0]
    assert len(cycles) + len(upward) == len(problems) == 2, problems
    assert "pkg.low (layer low) imports pkg.top (layer high" in upward[0]
    assert "pkg/low.py:3" in upward[0]
    assert ig.main(["--check", "--package", str(root), "--layers", str(_doc(tmp_path))]) == 1


def test_a_cycle_between_stages_of_one_layer_is_reported(tmp_path):
    """pkg.a.one → pkg.b and pkg.b → pkg.a.two: no module cycle, but the stages a and b use each other."""
    root = _package(tmp_path, {name: text for name, text in CLEAN.items() if name != "a.py"} | {
        "a/__init__.py": "",
        "a/one.py": "import pkg.b\n",
        "a/two.py": "",
        "b.py": "from pkg.a import two\n",
    })
    assert ig.imports(root)["pkg.b"] == {"pkg.a.two"}
    problems = ig.violations(ig.imports(root), ig.layers(LAYERS))
    assert len(problems) == 1, problems
    assert problems[0].startswith("import cycle between stages: pkg.a → pkg.b → pkg.a")


def test_placement_and_missing_names(tmp_path):
    root = _package(tmp_path, {**CLEAN, "stray.py": ""})
    layer_list = ig.layers(LAYERS.replace("high: pkg.high", "high: pkg.high pkg.later pkg.high.part"))
    mods = ig.modules(root)
    problems = ig.placement_problems(mods, layer_list)
    assert len(problems) == 2, problems
    assert problems[0].startswith("pkg.high.part is in more than one place")
    assert problems[1].startswith("pkg.stray is in no layer")
    assert ig.missing(mods, layer_list) == ["pkg.later (layer high) is declared but no such module exists"]


def test_a_declared_name_that_does_not_exist_is_only_a_warning(tmp_path, capsys):
    root = _package(tmp_path, CLEAN)
    doc = _doc(tmp_path, LAYERS.replace("high: pkg.high", "high: pkg.high pkg.later"))
    assert ig.main(["--check", "--package", str(root), "--layers", str(doc)]) == 0
    out = capsys.readouterr().out
    assert "warning: pkg.later (layer high)" in out and "error" not in out


def test_the_layers_block_is_required_and_well_formed():
    with pytest.raises(ValueError, match="no ```layers block"):
        ig.layers("# nothing here\n")
    with pytest.raises(ValueError, match="declared twice"):
        ig.layers("```layers\nlow: pkg.a\nhigh: pkg.a\n```\n")
    with pytest.raises(ValueError, match="expected 'layer: module"):
        ig.layers("```layers\njust words\n```\n")
    assert [layer.name for layer in ig.layers(DOC)][:1] == ["ground"]


def test_dot_marks_kinds_of_imports_and_is_deterministic(tmp_path):
    root = _package(tmp_path, {
        **CLEAN,
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n",
        "a.py": "def f():\n    from .low import x\n",
    })
    text = ig.dot(root, ig.layers(LAYERS))
    assert text == ig.dot(root, ig.layers(LAYERS))
    assert '"pkg.b" -> "pkg.a" [style=dashed];' in text
    assert '"pkg.a" -> "pkg.low" [style=dotted];' in text
    assert '"pkg.high.part" -> "pkg.high";' in text
    assert text.index("cluster_2_high") < text.index("cluster_1_mid") < text.index("cluster_0_low")


def _doc(tmp_path: Path, text: str = LAYERS) -> Path:
    path = tmp_path / "architecture.md"
    path.write_text(text)
    return path
