"""The house's shape: archprof's own imports, module level and inside functions alike,
form no cycle (data flows one way: load -> trace -> passes -> report -> render -> cli), and
every module but the operator catalogue's stays near 500 lines (one job each)."""

import ast
import itertools
import re
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "archprof"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The archprof modules `path` imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from package import submodule` imports the submodule too.
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in modules and target != name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_archprof_imports_form_no_cycle():
    graph = import_graph()
    assert (
        "archprof.analysis" in graph and "archprof.tracing.trace" in graph["archprof.analysis"]
    )  # the parser sees imports
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


# DESIGN.md: "a module has one job and stays near or under 500 lines". The operator catalogue
# (its table and its cost formulas, one entry per operator) is the one exception.
MOST_LINES = 600
CATALOGUE = {"archprof.operators", "archprof.operators.costs"}


def _too_long(modules: dict[str, Path]) -> dict[str, int]:
    lengths = {name: len(path.read_text().splitlines()) for name, path in modules.items() if name not in CATALOGUE}
    return {name: count for name, count in lengths.items() if count > MOST_LINES}


def test_the_length_check_finds_a_long_module(tmp_path):
    long, short = tmp_path / "long.py", tmp_path / "short.py"
    long.write_text("x = 1\n" * (MOST_LINES + 1))
    short.write_text("x = 1\n" * MOST_LINES)
    assert _too_long({"long": long, "short": short}) == {"long": MOST_LINES + 1}


def test_every_module_but_the_catalogue_stays_near_500_lines():
    modules = _modules()
    assert modules.keys() >= CATALOGUE  # the exception names modules that exist
    too_long = _too_long(modules)
    assert not too_long, f"modules over {MOST_LINES} lines (split them by job): {too_long}"


# -- layers ------------------------------------------------------------------------------------

ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"
# The one exception the layer table names: the Report's own methods for a notebook (`table`,
# `to_markdown`, `_repr_html_`, `explain`) hand it to the renderer and the explainer at call time.
UPWARD_ALLOWED = {
    ("archprof.report", "archprof.render.export"),
    ("archprof.report", "archprof.render.profile"),
    ("archprof.report", "archprof.explain"),
}


def documented_layers() -> dict[str, int]:
    """docs/architecture.md's layer table: each top-level module or package it names (a
    backticked name in the "modules" column) -> its row, the bottom row 0."""
    lines = ARCHITECTURE.read_text().splitlines()
    start = lines.index("| layer | modules | job |") + 2  # past the heading and its rule
    rank: dict[str, int] = {}
    for row, line in enumerate(itertools.takewhile(lambda line: line.startswith("|"), lines[start:])):
        modules_cell = line.split("|")[2]
        for name in re.findall(r"`([a-z_]+)(?:/|\.py)?`", modules_cell):
            rank[name] = row
    return rank


def upward_imports(graph: dict[str, set[str]], rank: dict[str, int]) -> tuple[list[tuple[str, str]], set[str]]:
    """The imports of a module from a layer above its own, and the modules no layer holds.
    The package itself (`archprof`: its version and lazy public names) stands outside the layers."""

    def layer(module: str) -> int | None:
        parts = module.split(".")
        return rank.get(parts[1]) if len(parts) > 1 else None

    upward, unplaced = [], set()
    for importer, imported in sorted(graph.items()):
        if importer != "archprof" and layer(importer) is None:
            unplaced.add(importer)
        for target in sorted(imported):
            below, above = layer(importer), layer(target)
            if below is not None and above is not None and above > below:
                upward.append((importer, target))
    return upward, unplaced


def test_the_direction_check_finds_an_upward_import():
    rank = {"graph": 0, "passes": 1, "cli": 2}
    graph = {"archprof.graph": {"archprof.passes.flops"}, "archprof.passes.flops": {"archprof.graph"}}
    graph |= {"archprof": set(), "archprof.stray": set()}
    assert upward_imports(graph, rank) == ([("archprof.graph", "archprof.passes.flops")], {"archprof.stray"})


def test_imports_point_down_the_documented_layers():
    rank = documented_layers()
    assert rank["errors"] == 0 and rank["cli"] == max(rank.values())  # the table was read, bottom to top
    upward, unplaced = upward_imports(import_graph(), rank)
    assert not unplaced, f"modules in no layer of docs/architecture.md's table: {sorted(unplaced)}"
    unexpected = [edge for edge in upward if edge not in UPWARD_ALLOWED]
    assert not unexpected, "imports of a layer above: " + "; ".join(" -> ".join(edge) for edge in unexpected)
    assert set(upward) == UPWARD_ALLOWED  # an exception no longer needed goes from the list
