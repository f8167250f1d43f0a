"""docs/ cannot go stale silently: every module, file and code name docs/architecture.md and
docs/formulas.md put in backticks that belongs to archprof exists (the oracle: the filesystem
and import), and every link within the architecture page finds its section."""

from __future__ import annotations

import importlib
import re
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "archprof"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
FORMULAS = ROOT / "docs" / "formulas.md"
# The repository's own folders a path in the doc may be written relative to.
PATH_ROOTS = [ROOT, PACKAGE, PACKAGE / "passes", PACKAGE / "operators", PACKAGE / "passes" / "receptive_field"]


def _spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def _modules_by_short_name() -> dict[str, list[str]]:
    """Every archprof module under its last name (`shapes` -> archprof.operators.shapes)."""
    found: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        found.setdefault(parts[-1], []).append(".".join(parts))
    return found


def _classes_by_name() -> dict[str, list[str]]:
    """Every class archprof defines at module level, with the modules that define it."""
    found: dict[str, list[str]] = {}
    modules = _modules_by_short_name()
    for dotted in (name for names in modules.values() for name in names):
        path = ROOT.joinpath(*dotted.split("."))
        source = (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text()
        for name in re.findall(r"^class (\w+)", source, re.MULTILINE):
            found.setdefault(name, []).append(dotted)
    return found


def _has(owner: object, name: str) -> object | None:
    """`owner.name`: a field's declared type where `owner` is a class that declares it (a slotted
    dataclass's field is a member descriptor on the class), else the attribute; None if neither."""
    if isinstance(owner, type):
        hints = typing.get_type_hints(owner)
        if name in hints:
            return hints[name] if isinstance(hints[name], type) else object
    return getattr(owner, name, None)


def _resolves(start: object, attributes: list[str]) -> bool:
    owner = start
    for name in attributes:
        owner = _has(owner, name)
        if owner is None:
            return False
    return True


def _path_exists(path: str) -> bool:
    if ".." in Path(path).parts:  # outside the repository: nothing a reader who clones it can open
        return False
    candidates = [path, f"{path}.py"] if not path.endswith("/") and "." not in Path(path).name else [path]
    return any((root / candidate).exists() for root in PATH_ROOTS for candidate in candidates)


def _resolves_in_package(parts: list[str]) -> bool:
    """`archprof.kernels`, `archprof.compare`: the longest prefix that imports, then attributes."""
    for end in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:end]))
        except ModuleNotFoundError:
            continue
        return _resolves(module, parts[end:])
    return False


def _code_name_exists(name: str) -> bool:
    """`shapes.Refused`, `Graph.engine.seeds`, `cli/common.user_errors`, `archprof.compare`."""
    head, *attributes = name.removesuffix("()").split(".")
    if head == "archprof" or "/" in head:
        return _resolves_in_package(["archprof", *head.split("/")[head == "archprof" :], *attributes])
    modules = [importlib.import_module(dotted) for dotted in _modules_by_short_name().get(head, [])]
    classes = [getattr(importlib.import_module(dotted), head) for dotted in _classes_by_name().get(head, [])]
    return any(_resolves(owner, attributes) for owner in modules + classes)


def _is_archprof_name(span: str) -> bool:
    """A dotted name whose first part is an archprof module or class (not torch's, not Python's)."""
    if not re.fullmatch(r"[\w/]+(\.\w+)+(\(\))?", span, re.ASCII) or re.search(r"\.(py|md)$", span):
        return False
    head = span.split(".")[0]
    return head == "archprof" or "/" in head or head in _modules_by_short_name() or head in _classes_by_name()


def _is_path(span: str) -> bool:
    """A file or folder of the repository: `tests/test_replay.py`, `passes/`, `costs.py`."""
    return re.fullmatch(r"[\w./]+", span, re.ASCII) is not None and (span.endswith(("/", ".py", ".md")) or "/" in span)


def _layer_table_modules(text: str) -> list[str]:
    """The backticked names in the modules column of the layer table."""
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.count("|") >= 4]
    return [name for row in rows for name in _spans(row.split("|")[2])]


TEXT = ARCHITECTURE.read_text(encoding="utf-8")
SPANS = {span for page in (TEXT, FORMULAS.read_text(encoding="utf-8")) for span in _spans(page)}
CODE_NAMES = sorted(span for span in SPANS if _is_archprof_name(span))
PATHS = sorted(span for span in SPANS if _is_path(span) and not _is_archprof_name(span))


def test_the_doc_names_code_and_files():
    # Guards the filters below: a doc they read nothing from would pass every test vacuously.
    assert len(CODE_NAMES) > 20 and len(PATHS) > 10 and len(_layer_table_modules(TEXT)) > 20


@pytest.mark.parametrize("name", CODE_NAMES)
def test_every_code_name_exists(name):
    assert _code_name_exists(name), f"docs/ names `{name}`, which archprof does not define"


@pytest.mark.parametrize("path", PATHS)
def test_every_path_exists(path):
    assert _path_exists(path), f"docs/ names `{path}`, which is not in the repository"


def test_every_module_of_the_layer_table_exists():
    short_names = _modules_by_short_name()
    for name in _layer_table_modules(TEXT):
        assert name.rstrip("/") in short_names or _path_exists(name), name


def _anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_within_the_page_finds_its_section():
    anchors = {_anchor(heading) for heading in re.findall(r"^#+ (.+)$", TEXT, re.MULTILINE)}
    links = re.findall(r"\]\(#([^)]+)\)", TEXT)
    assert links and set(links) <= anchors, set(links) - anchors


def test_the_filters_catch_a_stale_name():
    assert not _code_name_exists("shapes.no_such_formula") and not _code_name_exists("Graph.engine.no_such_note")
    assert _code_name_exists("archprof.kernels") and not _code_name_exists("archprof.no_such_module")
    assert not _path_exists("tests/test_no_such_file.py") and not _path_exists("no_such_package/")
    assert not _path_exists("../archprof/")
    assert _is_archprof_name("Graph.engine.seeds") and not _is_archprof_name("torch.get_rng_state")
    assert _anchor("Pipeline, measuring and combining") == "pipeline-measuring-and-combining"
