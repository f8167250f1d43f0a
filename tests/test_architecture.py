"""The house's shape: archprof's own imports, module level and inside functions alike,
form no cycle (data flows one way: load -> trace -> passes -> report -> render -> cli), and
every module but the operator catalogue's stays near 500 lines (one job each)."""

import ast
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
