"""docs/ cannot go stale silently: every module, file and code name docs/architecture.md and
docs/formulas.md put in backticks that belongs to archprof exists (the oracle: the filesystem
and import), and every link within the architecture page finds its section. The README's and
benchmarks/README.md's commands name only options their command takes, the README's column
tables are the Report's columns, a figure the docs quote from a committed report is the
report's, and the README's figures measured against an oracle are the oracle's."""

from __future__ import annotations

import functools
import importlib
import re
import typing
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "archprof"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
FORMULAS = ROOT / "docs" / "formulas.md"
README = ROOT / "README.md"
BENCHMARKS_README = ROOT / "benchmarks" / "README.md"
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
    """`shapes.Refused`, `Graph.engine.seeds`, `cli/streams.user_errors`, `archprof.compare`."""
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


# The private names the docs quote that are PyTorch's but no attribute to look up: an autograd
# node's `_input_metadata`, the suffix of aten's `_embedding_bag_forward_only`.
TORCH_PRIVATE_NAMES = {"_input_metadata", "_forward_only"}
PRIVATE_NAMES = sorted(span.removesuffix("()") for span in SPANS if re.fullmatch(r"_\w+(\(\))?", span, re.ASCII))


@functools.cache
def _package_source() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in PACKAGE.rglob("*.py"))


def _private_name_exists(name: str) -> bool:
    """`_point`, `_hull`: defined in archprof (a function, class, attribute or field), or
    torch's (an operator, a function, a module's own attribute, a torch.nn class's method:
    `_conv_forward`)."""
    escaped = re.escape(name)
    defined = rf"(def|class)\s+{escaped}\b|^\s*{escaped}\s*[:=]|self\.{escaped}\s*[:=]"
    if re.search(defined, _package_source(), re.MULTILINE):
        return True
    layers = [owner for owner in vars(torch.nn).values() if isinstance(owner, type)]
    owners = (torch, torch._C, torch.ops.aten, torch.nn.Module(), *layers)
    return name in TORCH_PRIVATE_NAMES or any(hasattr(owner, name) for owner in owners)


def test_the_docs_quote_private_names():
    assert len(PRIVATE_NAMES) > 20  # a filter that read nothing would pass vacuously


@pytest.mark.parametrize("name", PRIVATE_NAMES)
def test_every_private_name_exists(name):
    assert _private_name_exists(name), f"docs/ names `{name}`, which neither archprof nor torch defines"


def test_the_private_name_check_catches_a_stale_name():
    assert _private_name_exists("_hull") and _private_name_exists("_efficientzerotensor")
    assert not _private_name_exists("_in_evaluation_order") and not _private_name_exists("_exact_hull")


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


# -- the commands' options ----------------------------------------------------------------


def _command_lines(text: str) -> list[str]:
    """Every command a page shows: each line of its bash blocks, and each code span that is a
    whole command (`archprof memory --measure`, `python benchmarks/hub_sweep.py --sample 100`)."""
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    lines = [line.split("  #")[0] for block in blocks for line in block.splitlines()]
    lines += [span for span in _spans(text) if re.match(r"(archprof|python benchmarks/\w+\.py) ", span)]
    return [part.strip() for line in lines for part in line.split("&&") if part.strip()]


@functools.cache
def _cli_options() -> dict[str, set[str]]:
    """Each archprof command's long options, as its Click command declares them."""
    import typer.main

    from archprof.cli.app import app

    commands = typer.main.get_command(app).commands
    return {name: {o for p in c.params for o in p.opts + p.secondary_opts} | {"--help"} for name, c in commands.items()}


def _script_options(script: str) -> set[str]:
    """The long options a benchmark script's argparse declares."""
    source = (ROOT / script).read_text(encoding="utf-8")
    return set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", source)) | {"--help"}


def _unknown_options(command: str, cli: dict[str, set[str]]) -> list[str]:
    """The options of `command` that the command it runs does not take."""
    words = command.split()
    if words[0] == "archprof" or words[:3] == ["python", "-m", "archprof"]:
        words = words[words.index("archprof") + 1 :]
        known = cli.get(words[0], set()) if words and words[0] in cli else {"--version", "--help"}
    elif words[0] == "python" and len(words) > 1 and words[1].startswith("benchmarks/"):
        known = _script_options(words[1])
    else:
        return []
    return [w.split("=")[0] for w in words if w.startswith("--") and w.split("=")[0] not in known]


# The README's example of an error: an option no command takes.
SHOWN_FAILING = {"archprof --bogus"}
COMMANDS = [
    (page, line)
    for page in (README, BENCHMARKS_README)
    for line in _command_lines(page.read_text("utf-8"))
    if line not in SHOWN_FAILING
]


def test_the_pages_show_commands():
    # Guards the reader below: pages it read no command from would pass vacuously.
    assert sum(page == README for page, _ in COMMANDS) > 60 and sum(page != README for page, _ in COMMANDS) >= 8


@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[line[:60] for _, line in COMMANDS])
def test_every_option_a_command_shows_is_one_it_takes(page, command):
    unknown = _unknown_options(command, _cli_options())
    assert not unknown, f"{page.name} runs `{command}`, which takes no {unknown}"


def test_the_option_check_catches_a_stale_option():
    cli = _cli_options()
    assert _unknown_options("archprof rf vgg16 --train", cli) == ["--train"]  # summary's, not rf's
    assert _unknown_options("archprof summary vgg16 --dtype=float16 --no-such", cli) == ["--no-such"]
    assert _unknown_options("python benchmarks/hub_sweep.py --sample 10 --rounds 3", cli) == ["--rounds"]
    assert _unknown_options("python -m archprof summary lenet5 --wide", cli) == []
    assert _unknown_options("archprof --bogus", cli) == ["--bogus"]


# -- the column tables ----------------------------------------------------------------------


def _table_names(text: str, after: str) -> list[str]:
    """The backticked names in the first column of the first table after the text `after`."""
    section = text[text.index(after) :]
    table = section[section.index("\n|") + 1 :].split("\n\n")[0]
    cells = [line.split("|")[1] for line in table.splitlines()[2:]]  # past the heading and its rule
    return [name for cell in cells for name in _spans(cell)]


def test_the_readme_column_tables_are_the_reports_columns():
    from archprof.report.columns import COLUMNS, MEASURED_COLUMNS, TRAINING_COLUMNS

    text = README.read_text(encoding="utf-8")
    documented = _table_names(text, "## Columns of `Report.layers`")
    assert sorted(documented) == sorted(c.name for c in COLUMNS + TRAINING_COLUMNS)
    measured = _table_names(text, "and the whole-model figures in `report.measured`")
    assert sorted(measured) == sorted(c.name for c in MEASURED_COLUMNS)


# -- figures quoted from the committed reports --------------------------------------------

# (page, the figures as it quotes them, report, the same figures as the report states them)
QUOTED = [
    (ARCHITECTURE, r"time per traced operator \(median (\d+) µs", "hub_sweep.md", r"(\d+) µs per traced operator"),
    (README, r"`reports/memory_sweep.md`: all (\d+) equal", "memory_sweep.md", r"equal to the byte \| \*\*(\d+) of"),
    (README, r"`reports/memory_sweep_training.md`: all (\d+) measured", "memory_sweep_training.md", r"\*\*(\d+) of"),
    (README, r"`reports/hub_sweep_families.md`: all (\d+)", "hub_sweep_families.md", r"all (\d+) models"),
    (
        README,
        r"`reports/fast_paths_check.md` has all\s+([\d,]+) the same",
        "fast_paths_check.md",
        r"([\d,]+) of [\d,]+ hub",
    ),
    (
        README,
        r"\(`reports/memory_sweep_training_adam.md`, [^:]*: all (\d+)",
        "memory_sweep_training_adam.md",
        r"\*\*(\d+) of",
    ),
    (README, r"passed on all\s+(\d+) models run", "profile_sweep.md", r"\| output shapes \| (\d+) \| 0 \| 0 \|"),
    (README, r"every check passes on all (\d+)", "profile_sweep.md", r"\| FLOPs \| (\d+) \| 0 \| 0 \|"),
    (README, r"passed on all\s+\d+ models run \((\d+) over", "profile_sweep.md", r"(\d+) over the limits"),
    (
        README,
        r"--dtype bfloat16`, all\s+(\d+) that take",
        "profile_sweep_bfloat16_3x97x83_batch3.md",
        r"\| FLOPs \| (\d+) \| 0 \| 0 \|",
    ),
    (
        README,
        r"all (\d+) run, the\s+detectors'",
        "profile_sweep_families.md",
        r"\| output shapes \| (\d+) \| 0 \| 0 \|",
    ),
    (
        README,
        r"(\d+) equal to the byte and fasterrcnn",
        "profile_sweep_families.md",
        r"measured to the byte \| (\d+) of",
    ),
]


@pytest.mark.parametrize(("page", "quoted", "report", "stated"), QUOTED, ids=[q[2] for q in QUOTED])
def test_a_figure_quoted_from_a_report_is_the_reports(page, quoted, report, stated):
    quote = re.search(quoted, page.read_text(encoding="utf-8"))
    statement = re.search(stated, (ROOT / "reports" / report).read_text(encoding="utf-8"))
    assert quote and statement, (quoted, stated)
    figures = [[figure.replace(",", "") for figure in match.groups()] for match in (quote, statement)]
    assert figures[0] == figures[1], f"{page.name} quotes {quote.group(0)!r}; reports/{report}: {statement.group(0)!r}"


def _benchmark_rows() -> dict[str, dict[str, str]]:
    """reports/benchmark_analysis.md's per-model rows (sections 4 and 5), by model, by heading."""
    rows, heading = {}, []
    for line in (ROOT / "reports" / "benchmark_analysis.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] == "model":
            heading = cells
        elif line.startswith("| `") and "FlopCounterMode ms" in heading:
            rows[cells[0].strip("`")] = dict(zip(heading, cells, strict=True))
    return rows


# The small networks docs/architecture.md names, as the benchmark names them.
SMALL_NETWORKS = {
    "mobilenet_v3": "timm:mobilenetv3_large_100",
    "efficientnet_b0": "torchvision:efficientnet_b0",
    "mobilenet_v2": "mobilenet_v2",
    "regnety_016": "timm:regnety_016",
    "densenet121": "densenet121",
}


def test_what_10x_leaves_the_small_networks_is_the_benchmarks():
    quote = re.search(
        r"fastest peer is FlopCounterMode's real CPU forward[^(]*\(([\w, ]+): (\d+) to\s+(\d+) ms.*?"
        r"that is (\d+) to (\d+) µs per operator.*?passes alone take\s+(?:about )?(\d+)(?: to (\d+))?.*?"
        r"shortcut, (\d+) to (\d+)\.",
        ARCHITECTURE.read_text(encoding="utf-8"),
        re.DOTALL,
    )
    assert quote and quote[1].split(", ") == list(SMALL_NETWORKS)
    rows = [_benchmark_rows()[name] for name in SMALL_NETWORKS.values()]

    def span(heading):
        values = [round(float(row[heading].replace(",", ""))) for row in rows]
        return [str(min(values)), str(max(values))]

    stated = span("FlopCounterMode ms") + span("10x leaves µs/op") + span("passes µs/op") + span("floor µs/op")
    assert list(quote.groups()[1:]) == stated


def test_the_table_of_what_10x_leaves_is_the_benchmarks():
    """docs/architecture.md's table of what 10x leaves each hub model: every row's figures as
    reports/benchmark_analysis.md states them (the model named with a space for its colon)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text[text.index("### Where the 10x target is out of reach") :]
    lines = [line for line in section.splitlines() if line.startswith("| torchvision ") or line.startswith("| timm ")]
    assert len(lines) == 6
    rows = _benchmark_rows()
    for line in lines:
        model, peer, leaves, per_op, passes, speed_up, reach = (cell.strip() for cell in line.strip("|").split("|"))
        row = rows[model.replace(" ", ":", 1)]
        name, _, time = peer.partition(", ")
        assert row["vs fastest peer"].startswith(f"{speed_up} ({name})"), (line, row["vs fastest peer"])
        assert f"{row[f'{name} ms']} ms" == time, line
        stated = [row["10x leaves µs/op"], row["archprof µs/op"], row["passes µs/op"], row["within reach"]]
        assert [leaves, per_op, passes, reach] == stated, line


# -- the README's figures against their oracle -----------------------------------------------


def test_the_readme_resnet50_totals_are_its_parameters_and_flopcountermodes_macs():
    from archprof.zoo import MODELS

    text = README.read_text(encoding="utf-8")
    params = int(re.search(r"report\.totals\.param_count  # (\d+)", text)[1])
    macs = int(re.search(r"report\.totals\.macs  # (\d+)", text)[1])
    with torch.device("meta"):
        model = MODELS["resnet50"].build().eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    assert (params, macs) == (sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2)


def test_the_readme_figures_of_flopcountermodes_grouped_gradient_are_a_real_steps():
    """The README: FlopCounterMode counts a grouped convolution's weight gradient G times
    over (MobileNetV2 at NxCxHxW: A G against archprof's B G). A is FlopCounterMode's count
    around a real CPU step; B archprof's, whose grouped convolutions are held to an oracle
    (the same layer as G convolutions) in tests/test_training.py."""
    import archprof
    from archprof.zoo import MODELS

    quote = re.search(
        r"MobileNetV2 at (\d+)x(\d+)x(\d+)x(\d+): ([\d.]+) G against ([\d.]+) G", README.read_text("utf-8")
    )
    batch, *size = (int(n) for n in quote.groups()[:4])
    model = MODELS["mobilenet_v2"].build().train()
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(batch, *size)).sum().backward()
    report = archprof.analyze("mobilenet_v2", input_size=tuple(size), batch=batch, training=True)
    assert f"{counter.get_total_flops() / 1e9:.2f}" == quote[5]
    assert f"{report.totals.training_flops / 1e9:.2f}" == quote[6]


def test_the_readme_lstms_saved_bytes_are_what_autograd_saves():
    import archprof
    from archprof import InputSpec

    quote = re.search(r"`nn\.LSTM\((\d+), (\d+)\)` on \((\d+), (\d+)\): ([\d,]+) B", README.read_text("utf-8"))
    features, hidden, steps, width = (int(n) for n in quote.groups()[:4])
    lstm = torch.nn.LSTM(features, hidden)
    parameters = {p.untyped_storage().data_ptr() for p in lstm.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()  # each storage once, as the column counts
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        lstm(torch.randn(steps, width))
    report = archprof.analyze(lstm, inputs=[InputSpec((steps, width), batched=False)], training=True)
    figure = int(quote[5].replace(",", ""))
    assert sum(saved.values()) == figure == report.totals.saved_activation_bytes


def test_every_python_example_of_the_readme_runs(tmp_path):
    """Each ```python block of the README, run as written, in a process of its own: none
    raises (the figures their comments quote are tested where the features are). They run in
    a folder of their own (the files they write stay there), beside the repository's tests/
    for the model files they name."""
    import os
    import subprocess
    import sys

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 5
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    for block in blocks:
        completed = subprocess.run(
            [sys.executable, "-c", block], cwd=tmp_path, env=environment, capture_output=True, text=True, check=False
        )
        assert completed.returncode == 0, f"{block}\n{completed.stderr[-3000:]}"
