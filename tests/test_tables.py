"""Tables at any width, as a tree, in Markdown and in notebooks (issue 17).

Expected figures come from the models themselves (parameters counted with torch, MACs worked
by hand) or from the full report summed independently of the tree and the roll-up."""

import io
import itertools
import re
from html.parser import HTMLParser

import pytest
import torch
from rich.console import Console
from torch import nn
from typer.testing import CliRunner

import archprof
from archprof.cli import app
from archprof.units import human_bytes, human_count
from archprof.zoo import MODELS
from tests.markdown_tables import first_table

runner = CliRunner()

SUMMARY_COLUMNS = ("Layer", "Type", "Output shape", "Params", "% Params", "MACs", "% MACs", "FLOPs", "Activations")
SUMMARY_COLUMNS += ("Elementwise FLOPs", "Live after", "Receptive field")
MEMORY_COLUMNS = ("Layer", "Type", "Output shape", "Activations", "Live after", "Peak in layer")
RF_COLUMNS = ("Layer", "Type", "Output shape", "Field", "Stride", "Centred", "Coverage")
DIFF_COLUMNS = ("Layer", "Type", "Output shape", "Params", "MACs", "Activations")


def piped(*args):
    """The command as `archprof ... | cat` runs it: not a terminal, no COLUMNS."""
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": None})


def at_width(width, *args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": str(width)})


def header_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.lstrip().startswith(("Layer ", "Model ")))


def left_out_note(output: str) -> list[str]:
    """The columns the note under the table names ([] without a note)."""
    text = " ".join(output.split())
    found = re.search(r"Left out to fit \d+ columns: (.*?) \(show every column with --wide", text)
    return found.group(1).split(", ") if found else []


# -- every column off a terminal; a note, --wide and --columns on one ----------------------------


@pytest.mark.parametrize(
    ("command", "headings"),
    [("summary", SUMMARY_COLUMNS), ("memory", MEMORY_COLUMNS), ("rf", RF_COLUMNS)],
)
def test_piped_output_has_every_column(command, headings):
    result = piped(command, "resnet18")
    assert result.exit_code == 0, result.output
    header = header_line(result.stdout)
    for heading in headings:
        assert heading in header, (command, heading)
    assert "…" not in result.stdout and "Left out" not in result.stdout


def test_columns_fits_a_piped_table_but_not_a_file_and_the_help_says_so(tmp_path):
    """COLUMNS is a width off a terminal too; --output always has every column; --wide's help
    says both (it said "off a terminal: always")."""
    assert "FLOPs" in left_out_note(at_width(60, "summary", "lenet5").stdout)
    target = tmp_path / "lenet5.txt"
    assert at_width(60, "summary", "lenet5", "-o", target).exit_code == 0
    assert all(heading in header_line(target.read_text()) for heading in SUMMARY_COLUMNS)
    help_text = " ".join(piped("summary", "-h").stdout.replace("│", " ").split())
    wide_help = help_text[help_text.index("--wide") : help_text.index("--help")]
    assert "COLUMNS" in wide_help and "--output" in wide_help


def test_piped_diff_and_compare_have_every_column():
    diff = piped("diff", "resnet18", "resnet34")
    assert diff.exit_code == 0, diff.output
    assert all(heading in header_line(diff.stdout) for heading in DIFF_COLUMNS)
    compare = piped("compare", "lenet5", "alexnet", "-j", "1")
    assert compare.exit_code == 0, compare.output
    for heading in ("Model", "Params", "MACs", "FLOPs", "Activations", "Peak memory", "Receptive field"):
        assert heading in header_line(compare.stdout), heading


def test_memory_marks_the_peak_where_the_totals_put_it():
    """The row marked ◀ peak shows the peak the totals give (issue 17: 6.42 MB against 9.64 MB)."""
    result = piped("memory", "resnet50")
    marked = next(line for line in result.stdout.splitlines() if "◀ peak" in line)
    peak_line = next(line for line in result.stdout.splitlines() if "Peak live activations" in line)
    peak = re.search(r"│\s+([\d.]+ [kMG]?B)\s+│", peak_line).group(1)
    assert marked.rstrip().endswith(peak), (marked, peak)


# Each command with a table, as the test runs it cheaply.
TABLE_COMMANDS = {
    "summary": ["summary", "lenet5"],
    "memory": ["memory", "lenet5"],
    "rf": ["rf", "lenet5"],
    "profile": ["profile", "lenet5", "--device", "cpu", "--warmup", "0", "--repeat", "1", "-q"],
    "compare": ["compare", "lenet5", "alexnet", "-j", "1"],
    "diff": ["diff", "lenet5", "alexnet"],
}
TABLE_COMMANDS["profile"] += ["--peak-flops", "1T", "--bandwidth", "100GB/s"]


@pytest.mark.parametrize("command", TABLE_COMMANDS)
def test_the_columns_example_in_each_help_works_on_that_table(command):
    help_text = " ".join(at_width(400, command, "-h").stdout.replace("│", " ").split())
    example = re.search(r"--columns HEADINGS .*? e\.g\. '([^']+)'", help_text).group(1)
    result = piped(*TABLE_COMMANDS[command], "--columns", example)
    assert result.exit_code == 0, result.output
    header = header_line(result.stdout)
    assert all(heading in header for heading in example.split(",")), (example, header)


LONG_NAME = "a_really_long_module_name_that_goes_on_" * 3

LONG_NAMES = f"""
from torch import nn


def net():
    model = nn.Sequential()
    model.add_module("{LONG_NAME}", nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    return model
"""


@pytest.mark.parametrize("width", [60, 45])
def test_long_names_on_a_narrow_terminal_stay_apart_and_keep_the_peak_mark(tmp_path, width):
    """Cut at the end, `<long>.0` and `<long>.1` read the same and the ◀ peak after the name went;
    longer than the line, each name is now folded over the lines it takes, whole."""
    (tmp_path / "long_names.py").write_text(LONG_NAMES)
    result = at_width(width, "memory", f"{tmp_path / 'long_names.py'}:net", "--input", "3x16x16")
    assert result.exit_code == 0, result.output
    layers, totals = (part.splitlines() for part in result.stdout.split("\nMemory\n"))
    unfolded = "".join("".join(layers).split())  # the names' folds and the indentation gone
    assert f"{LONG_NAME}.0LiveAfter" in unfolded.replace("after", "After"), unfolded
    assert f"{LONG_NAME}.1◀peak" in unfolded
    assert sum("◀ peak" in line for line in layers) == 1
    assert all(len(line) <= width for line in result.stdout.splitlines())
    # The totals (a table, or each label over its figures) name the peak's layer whole, over as many lines as it takes.
    labels = [line.split("│")[1].strip() if line.count("│") == 4 else line.strip() for line in totals]
    assert f"{LONG_NAME}.1" in "".join(
        label for line, label in zip(totals, labels, strict=True) if not line.startswith("   ")
    )


@pytest.mark.parametrize("command", ["summary", "memory", "rf", "diff"])
def test_a_narrow_table_names_the_columns_it_left_out(command):
    args = (command, "resnet18", "resnet34") if command == "diff" else (command, "resnet18")
    result = at_width(80, *args)
    assert result.exit_code == 0, result.output
    left_out = left_out_note(result.stdout)
    assert left_out, result.stdout
    header = header_line(result.stdout).split("  ")
    shown = {cell.strip() for cell in header if cell.strip()}
    assert not shown & set(left_out)
    assert "--columns" in " ".join(result.stdout.split())
    wide = at_width(80, *args, "--wide")
    assert left_out_note(wide.stdout) == [] and all(heading in header_line(wide.stdout) for heading in left_out)


@pytest.mark.parametrize(
    ("args", "width"),
    [(("summary", "resnet18"), 30), (("summary", "resnet18"), 40), (("compare", "resnet18", "mobilenet_v2"), 40)],
)
def test_the_note_of_columns_left_out_keeps_each_heading_on_one_line(args, width):
    """On 40 columns the note read 'Type, %' and 'MACs, ...' on the next line ('Live' /
    'after' too): each heading it names is whole on one line, and is named as the table's
    --wide header names it."""
    output = at_width(width, *args).stdout
    lines = output[output.index("Left out to fit") :].splitlines()
    left_out = left_out_note(output)
    assert {"% MACs", "Receptive field"} & set(left_out) or "x Params" in left_out
    for heading in left_out:
        assert any(heading in line for line in lines), heading
    assert every_line_fits(output, width)
    wide = header_line(at_width(width, *args, "--wide").stdout)
    assert all(heading in wide for heading in left_out)


def leaf_names(name: str) -> set[str]:
    """The names of the model's modules that hold no other, from torch (built on the meta device)."""
    import torch

    with torch.device("meta"):
        modules = MODELS[name].build().named_modules()
        return {module_name for module_name, module in modules if module_name and not list(module.children())}


def lines_from(output: str, name: str, count: int) -> str:
    """`count` lines from the first that shows layer `name` (a table's row, or a stacked row's block)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if name in line.split())
    return "\n".join(lines[start : start + count])


@pytest.mark.parametrize("width", [30, 40, 50, 60])
@pytest.mark.parametrize(
    "args", [("summary",), ("memory", "--train"), ("rf",), ("diff", "resnet34")], ids=lambda args: args[0]
)
def test_on_a_narrow_terminal_no_name_is_cut_where_the_rows_stacked_fit(args, width):
    """memory resnet18 --train on 50 columns cut 17 names ('laye… (call 2)', 'la…nsample.0'),
    summary on 60 ('lay….0.conv1'), diff on 30 ('add…'), though each name fits a line of its
    own. Where the columns kept do not fit beside the names, each row's figures go under its
    name, each beside its heading. Names from torch's modules; figures from torch's counts."""
    result = at_width(width, args[0], "resnet18", *args[1:])
    assert result.exit_code == 0, result.output
    output = result.stdout
    assert "…" not in output and every_line_fits(output, width)
    assert left_out_note(output)
    words = set(output.split())
    names = leaf_names("resnet34") - leaf_names("resnet18") if args[0] == "diff" else leaf_names("resnet18")
    assert names <= words, sorted(names - words)[:5]
    params = param_count("resnet18")
    if args[0] == "summary":
        assert f"{params:,}" in words and human_count(params) in output  # Total parameters, whole
    if args[0] == "memory":
        assert f"{4 * params:,} B" in output  # float32 parameters and their gradients
    if args[0] == "rf":
        assert "7x7" in lines_from(output, "conv1", 3)  # its 7x7 kernel on the image
    if args[0] == "diff":
        assert f"+{human_count(64 * 64 * 3 * 3)}" in lines_from(output, "layer1.2.conv1", 2)  # a 3x3 conv, 64 to 64


@pytest.mark.parametrize("width", [30, 40])
def test_narrow_summary_totals_keep_every_figure_whole(width):
    """Rich cut the totals' exact figures ('11,68…', '1,814…') and put '46.76' over 'MB'; now
    each total's figures go under its name. Parameters from torch; MACs of lenet5 by hand."""
    result = at_width(width, "summary", "lenet5")
    assert result.exit_code == 0, result.output
    totals = result.stdout[result.stdout.index("\nTotals") :]
    assert "…" not in totals and every_line_fits(result.stdout, width)
    lines = [line.strip() for line in totals.splitlines()]
    params = param_count("lenet5")
    # conv 6x(1x5x5) on 28x28, conv 16x(6x5x5) on 10x10, then 400x120, 120x84, 84x10 linears
    macs = 6 * 25 * 28 * 28 + 16 * 6 * 25 * 10 * 10 + 400 * 120 + 120 * 84 + 84 * 10
    assert lines[lines.index("Total parameters") + 1] == f"{human_count(params)}   {params:,}"
    assert lines[lines.index("Parameter memory") + 1] == f"{human_bytes(4 * params)}   {4 * params:,} B"
    assert lines[lines.index("MACs (multiply-accumulates)") + 1] == f"{human_count(macs)}   {macs:,}"


@pytest.mark.parametrize("name", ["x" * 120, "卷积" * 40], ids=["long", "wide characters"])
def test_a_name_too_long_for_the_terminal_is_folded_whole_and_its_figures_are_not(tmp_path, name):
    """A layer name longer than the line was cut in the middle (an ellipsis where most of it
    had been): the rows go one under another, the name folded over the lines it takes, every
    figure whole under it beside its heading."""
    source = tmp_path / "long_names.py"
    source.write_text(
        "from torch import nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        f"        self.add_module({name!r}, nn.Conv2d(3, 4, 3))\n\n"
        "    def forward(self, x):\n"
        f"        return getattr(self, {name!r})(x)\n",
        encoding="utf-8",
    )
    result = at_width(60, "summary", f"{source}:Net", "--input", "3x16x16")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.lstrip().startswith(name[:5]))
    folded = list(itertools.takewhile(lambda line: not line.startswith("   "), lines[first:]))
    assert "".join(line.strip() for line in folded) == name and len(folded) > 1  # the name, whole
    figures = dict(re.split(r"   +", line.strip()) for line in lines[first + len(folded) :][:3])
    macs = human_count(4 * 3 * 3 * 3 * 14 * 14)  # C_out C_in K K H_out W_out
    assert figures == {"Output shape": "1x4x14x14", "Params": "112", "MACs": macs}, figures
    assert "…" not in result.stdout
    assert all(Console().measure(line).maximum <= 60 for line in lines)


def test_columns_chooses_the_columns_in_the_order_given():
    result = at_width(200, "summary", "lenet5", "--columns", "% macs, Output shape")
    assert result.exit_code == 0, result.output
    assert header_line(result.stdout).split() == ["Layer", "%", "MACs", "Output", "shape"]
    markdown = piped("summary", "lenet5", "--columns", "params", "-f", "markdown")
    assert first_table(markdown.stdout)[0] == ["Layer", "Params"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--columns", "Params,Colour"), "no column 'Colour'; its columns: Layer, "),
        (("--columns", " , "), "--columns needs column headings"),
        (("--columns", "Params", "--wide"), "give one of them"),
        (("--columns", "Params", "-f", "csv"), "csv has every column"),
    ],
)
def test_bad_column_choices_fail_on_one_line(args, message):
    result = piped("summary", "lenet5", *args)
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert result.stdout == ""


# -- the tree --------------------------------------------------------------------------------------


def layer_column(markdown: str) -> list[tuple[int, str]]:
    """(indentation, name) of every row of the first table."""
    names = []
    for row in first_table(markdown)[1:]:
        name = row[0]
        stripped = name.lstrip("\u00a0")
        names.append((len(name) - len(stripped), stripped))
    return names


def test_a_module_comes_before_what_it_holds_and_is_indented_above_it():
    report = archprof.analyze("resnet18")
    rows = layer_column(report.to_markdown())
    order = [name for _, name in rows]
    indent = dict((name, level) for level, name in rows)
    modules = {name for name, _ in MODELS["resnet18"].build().named_modules() if name}
    shown_containers = [name for name in order if any(other.startswith(name + ".") for other in order)]
    # the containers that hold a row: every module of resnet18 that has children
    assert set(shown_containers) == {m for m in modules if any(o.startswith(m + ".") for o in modules)}
    for container in shown_containers:
        below = [i for i, name in enumerate(order) if name.startswith(container + ".")]
        start = order.index(container)
        assert below == list(range(start + 1, start + 1 + len(below))), container  # its rows follow it, together
        assert all(indent[order[i].split(" (")[0]] > indent[container] for i in below)
    # the block's residual add is the block's row: once, before its layers (it ran after them)
    assert order.count("layer1.0") == 1 and order.index("layer1.0") < order.index("layer1.0.conv1")
    # every other row once: a container's own rows are its row
    own_rows = sum(path in shown_containers for path in report.columns["layer"])
    assert own_rows == 8 and len(order) == len(report) - own_rows + len(shown_containers)  # 8 blocks: 8 adds


def test_plain_figures_add_up_to_the_totals_and_subtotals_to_their_subtree():
    """Subtotals are in parentheses: the plain Params and MACs cells sum to the model's."""
    model = MODELS["resnet18"].build()
    report = archprof.analyze("resnet18")
    table = first_table(report.to_markdown())
    headings = table[0]
    params = [row[headings.index("Params")] for row in table[1:]]
    plain = [cell for cell in params if not cell.startswith("(") and cell != "-"]
    assert len(plain) + params.count("-") + sum(c.startswith("(") for c in params) == len(params)
    exact_total = sum(p.numel() for p in model.parameters())
    assert report.totals.param_count == exact_total
    from archprof.render.tree import tree_rows

    nodes = tree_rows(report)
    plain_sum = sum(node.own.get("param_count", 0) if node.is_container else node.row["param_count"] for node in nodes)
    assert plain_sum == exact_total
    for node in nodes:
        if node.is_container:
            expected = sum(p.numel() for p in model.get_submodule(node.label).parameters())
            assert node.row["param_count"] == expected, node.label


class Attention(nn.Module):
    """A container with MACs of its own: q @ k^T is no sub-module's."""

    def __init__(self):
        super().__init__()
        self.q = nn.Linear(8, 8, bias=False)
        self.k = nn.Linear(8, 8, bias=False)

    def forward(self, x):
        return self.q(x) @ self.k(x).transpose(-1, -2)


def test_a_container_shows_its_own_macs_plain_and_its_subtree_in_parentheses():
    report = archprof.analyze(nn.Sequential(Attention()), input_size=(4, 8))
    rows = {name.strip("\u00a0"): row for name, *row in first_table(report.to_markdown())[1:]}
    headings = first_table(report.to_markdown())[0][1:]
    macs = {name: row[headings.index("MACs")] for name, row in rows.items()}
    # q and k: 4 x 8 x 8 = 256 each; the product [4, 8] @ [8, 4]: 4 x 4 x 8 = 128
    assert macs["0.q"] == "256" and macs["0.k"] == "256"
    assert macs["0"] == "128 (640)"
    assert report.totals.macs == 640


def test_depth_subtotals_equal_the_sum_of_the_rolled_up_children():
    full = archprof.analyze("resnet50")
    layers = full.columns["layer"]
    result = at_width(200, "summary", "resnet50", "--depth", "2", "-f", "markdown")
    table = first_table(result.stdout)
    headings = table[0]
    rows = {row[0].strip("\u00a0"): row for row in table[1:]}
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        children = {path.split(".")[1] for path in layers if path.startswith(stage + ".")}
        assert {name for name in rows if name.startswith(stage + ".")} == {f"{stage}.{c}" for c in children}
        for column, heading in (("param_count", "Params"), ("macs", "MACs")):
            values = zip(layers, full.columns[column], strict=True)
            expected = sum(value for path, value in values if path.startswith(stage + "."))
            assert rows[stage][headings.index(heading)] == f"({human_count(expected)})", stage
    # the four stages of a ResNet-50 hold 3, 4, 6 and 3 blocks
    assert [sum(n.startswith(f"layer{i}.") for n in rows) for i in (1, 2, 3, 4)] == [3, 4, 6, 3]


# -- Markdown: the human table, for every command -------------------------------------------------


@pytest.mark.parametrize("command", ["summary", "memory", "rf"])
def test_markdown_is_the_human_table_with_its_totals(command):
    result = piped(command, "resnet18", "-f", "markdown")
    assert result.exit_code == 0, result.output
    text = result.stdout
    for python_repr in ("[[", "{}", "None", "[1,", "(1,"):
        assert python_repr not in text, python_repr
    table = first_table(text)
    assert all(len(row) == len(table[0]) for row in table)
    if command != "rf":
        assert "11,689,512" in text or "46,758,048 B" in text  # the totals block: parameters, exact
        assert "1x3x224x224" in text and "float32" in text
    else:
        assert "the field covers the whole 224x224 input" in text


def test_markdown_of_a_profile_has_no_python_values():
    options = ("--device", "cpu", "--repeat", "1", "--warmup", "0", "--peak-flops", "1T", "--bandwidth", "10GB/s")
    result = piped("profile", "lenet5", *options, "-q", "-f", "markdown")
    assert result.exit_code == 0, result.output
    assert "| Layer |" in result.stdout and "Latency, median" in result.stdout
    assert "None" not in result.stdout and "{}" not in result.stdout


# -- notebooks --------------------------------------------------------------------------------------


def test_repr_is_a_few_lines_naming_model_input_and_totals():
    report = archprof.analyze("resnet18")
    text = repr(report)
    assert len(text) < 1000 and len(text.splitlines()) <= 4
    # resnet18: 11,689,512 parameters; 1.81 GMACs (torchvision's documented 1.81 GFLOPS, which are MACs)
    assert "resnet18" in text and "1x3x224x224" in text and "11,689,512" in text and "1.81 G" in text


class _CheckedHTML(HTMLParser):
    """Fails on an end tag that closes no open element; collects the text."""

    VOID = frozenset({"br", "hr", "img", "meta", "input", "link"})

    def __init__(self):
        super().__init__()
        self.open: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, (tag, self.open)
        self.open.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_repr_html_is_valid_html_with_the_table_and_totals():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    report = archprof.analyze(model, input_size=(3, 8, 8))
    parser = _CheckedHTML()
    parser.feed(report._repr_html_())
    parser.close()
    assert parser.open == []
    text = "".join(parser.text)
    params = sum(p.numel() for p in model.parameters())  # 3 x 8 x 9 + 8 + 288 x 10 + 10 = 3,114
    assert params == 3114 and "Total parameters" in text and "3,114" in text
    # MACs: conv 8 x 6 x 6 x 27 = 7,776; linear 288 x 10 = 2,880
    assert "10,656" in text and "Layer" in text and "Output shape" in text


def test_table_returns_the_rich_renderable_with_every_column():
    report = archprof.analyze("lenet5")
    console = Console(width=300, record=True, file=io.StringIO())
    console.print(report.table())
    text = console.export_text()
    assert all(heading in header_line(text) for heading in SUMMARY_COLUMNS)
    assert "Totals" in text and "61,706" in text  # LeNet-5: 156 + 2,416 + 48,120 + 10,164 + 850


def test_a_narrow_diff_keeps_the_columns_that_changed(tmp_path):
    """A smaller input changes every shape and MAC count, no parameter: Params goes first.
    (90 columns: the module tree's indented names and modules' subtotals take more room than
    the flat list did, and on 80 the output shapes no longer fit beside the MACs.)"""
    report = tmp_path / "resnet18.csv"
    archprof.analyze("resnet18").to_csv(report)
    result = at_width(90, "diff", report, "resnet18", "--input", "3x160x160")
    assert result.exit_code == 0, result.output
    header = header_line(result.stdout)
    assert "Output shape" in header and "MACs" in header and "Params" not in header
    assert "Params" in left_out_note(result.stdout)
    assert "1x64x112x112 → 1x64x80x80" in result.stdout  # conv1: (160 + 6 - 7) // 2 + 1 = 80


def test_repr_html_dims_subtotals_and_escapes_names():
    model = nn.Sequential()
    model.add_module("<b>x</b>", Attention())
    html = archprof.analyze(model, input_size=(4, 8))._repr_html_()
    parser = _CheckedHTML()
    parser.feed(html)
    parser.close()
    assert parser.open == [] and "<b>x</b>" in "".join(parser.text) and "<b>x</b>" not in html
    assert '128 <span style="opacity:0.6">(640)</span>' in html  # own MACs, then the subtree's, dimmed


@pytest.mark.parametrize("command", ["rf", "memory", "profile"])
def test_every_plot_option_takes_a_file(command):
    help_text = " ".join(at_width(400, command, "-h").stdout.replace("│", " ").split())
    assert re.search(r"--plot (\S+) Draw", help_text).group(1) == "FILE"


def test_a_share_that_is_neither_none_nor_all_never_reads_as_either():
    """% MACs and % Params of a layer holding 99.95% of the model's: '>99.9%', not '100.0%';
    the other's 0.05%... 0.0001%: '<0.1%', as in explain's stage shares (which said 0.0%)."""
    report = archprof.analyze(nn.Sequential(nn.Linear(2000, 2000, bias=False), nn.Linear(2000, 1, bias=False)), (2000,))
    console = Console(width=300, record=True, file=io.StringIO())
    console.print(report.table())
    rows = {line.split()[0]: line.split() for line in console.export_text().splitlines() if line[:3] in (" 0 ", " 1 ")}
    assert rows["0"].count(">99.9%") == 2 and "100.0%" not in rows["0"], rows
    assert rows["1"].count("<0.1%") == 2, rows
    stages = {line.split()[0]: line.split() for line in report.explain().splitlines() if line[:4] in ("  0 ", "  1 ")}
    assert stages["0"][3::2] == [">99.9%", ">99.9%"] and stages["1"][3::2] == ["<0.1%", "<0.1%"], stages


@pytest.mark.parametrize(
    "args", [("summary", "resnet18"), ("memory", "resnet18"), ("rf", "resnet18"), ("compare", "resnet18", "resnet50")]
)
@pytest.mark.parametrize("width", [80, 100, 120])
def test_a_fitted_table_leaves_out_only_the_columns_that_do_not_fit(args, width):
    """A column too wide for the room left is left out, not every narrower one after it: at
    100 columns summary used 80 and left out % Params (11 wide), which fitted."""

    def table_width(*extra):
        output = at_width(1000, *args, *extra).stdout
        return len(next(line for line in output.splitlines() if line.lstrip().startswith("─")).rstrip())

    result = at_width(width, *args)
    assert result.exit_code == 0, result.output
    used = len(next(line for line in result.stdout.splitlines() if line.lstrip().startswith("─")).rstrip())
    alone = table_width("--columns", "Layer" if args[0] != "compare" else "Model")
    for heading in left_out_note(result.stdout):
        needs = table_width("--columns", heading) - alone
        assert used + needs > width, f"{heading} ({needs} wide) fits in {width - used} columns"


@pytest.mark.parametrize(
    "args",
    [
        ("check", "resnet50", "--max-params", "20M", "--max-macs", "5G", "--max-peak-memory", "1GB"),
        ("diff", "resnet18", "resnet34"),
    ],
)
def test_a_check_or_diff_totals_on_60_columns_wraps_its_labels_never_a_figure(args):
    """check's table and diff's totals on 60 columns cut figures ('113.48…', '+101.9…',
    'Ver…'): their labels wrap instead, and every figure shows whole."""
    result = at_width(60, *args)
    first_table = result.stdout.split("\n\n\n")[0] if args[0] == "check" else result.stdout.split("layers: ")[0]
    assert "…" not in first_table, first_table
    wide = at_width(200, *args).stdout
    figures = re.findall(r"[-+]?\d[\d.]* (?:[KMG]B?|kB|px)(?: \([-+][\d.]+%\))?|[-+][\d.]+%", wide.split("layers")[0])
    assert figures and all(figure in first_table for figure in figures), figures
    assert all(len(line) <= 60 for line in first_table.splitlines())


def test_a_training_summary_says_so_in_its_title():
    """summary --train's table was titled as the inference one (memory's says which it shows)."""
    result = at_width(120, "summary", "lenet5", "--train")
    assert result.stdout.splitlines()[0].rstrip().endswith("float32  ·  training step"), result.stdout
    assert "training" not in at_width(120, "summary", "lenet5").stdout.splitlines()[0]


# A command line of each command that prints a table, quick to run.
EACH_COMMAND = [
    ("summary", "lenet5"),
    ("memory", "lenet5"),
    ("rf", "lenet5"),
    ("compare", "lenet5", "alexnet"),
    ("check", "lenet5", "--max-params", "1M"),
    ("diff", "lenet5", "lenet5"),
    ("explain", "lenet5"),
    ("zoo",),
]


@pytest.mark.parametrize("args", EACH_COMMAND)
def test_a_table_piped_or_written_has_no_trailing_spaces(args, tmp_path):
    """Off a terminal every line ended in the spaces Rich pads it with to the table's width
    (171 on a blank line): noise in a file, a diff or a pull request."""
    for result in (piped(*args), at_width(80, *args)):
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() and not re.search(r" \n", result.stdout), result.stdout
    if args[0] in ("summary", "memory", "rf", "compare", "diff"):
        target = tmp_path / "table.txt"
        assert piped(*args, "-o", target).exit_code == 0
        assert not re.search(r" \n", target.read_text())


def test_rf_coverage_keeps_two_figures_and_never_reads_all_for_less(tmp_path):
    """Coverage below 1% in two significant figures (resnet18's 0.20% above 0.39%; it said
    0.2%), and a field of 2000 of 2001 pixels '>99.9%', not '100%' (the whole input's)."""
    result = at_width(200, "rf", "resnet18", "--columns", "Coverage")
    rows = {line.split()[0]: line.split()[-1] for line in result.stdout.splitlines() if line.startswith("   ")}
    assert rows["layer1.0.conv1"] == "0.20%" and rows["layer1.0.conv2"] == "0.39%", rows
    source = tmp_path / "wide_kernel.py"
    source.write_text("from torch import nn\n\ndef net():\n    return nn.Conv2d(1, 1, (1, 2000))\n")
    result = at_width(200, "rf", f"{source}:net", "--input", "1x1x2001", "--columns", "Coverage")
    assert result.exit_code == 0, result.output
    assert "(model)" in result.stdout and ">99.9%" in result.stdout and "100%" not in result.stdout, result.stdout


def test_rf_coverage_from_1_percent_has_one_decimal_as_every_share():
    """lenet5's features end in a 16x16 field from pixel 0 of 32x32: 256 / 1024 = 25.0%, which
    read '25%' beside features.0's 5x5, 25 / 1024 = 2.4% (a column of shares whose points did
    not line up); the whole input, as a global field, still '100%'."""
    result = at_width(200, "rf", "lenet5", "--columns", "Coverage")
    rows = dict(line.split() for line in result.stdout.splitlines() if line.startswith(" ") and "%" in line)
    assert (rows["features"], rows["features.0"], rows["classifier"]) == ("25.0%", "2.4%", "100%"), rows


def test_rf_rows_are_the_module_tree_as_in_the_summary():
    """rf listed rows in the order they ran: layer1.0's row (its residual add) after
    layer1.0.bn2, layer1 none at all, the blocks' layers indented under no parent. Now the
    summary's tree: each module before its layers, holding the field of its output. By hand
    (r' = r + (K - 1) J, J' = J S): conv1 7 (J 2), maxpool 7 + 2*2 = 11 (J 4), layer1.0's two
    3x3 convolutions 11 + 2*4 = 19 and 27, layer1.1's 35 and 43: layer1 and layer1.1 end at
    43x43, layer1.0 at 27x27."""

    def rows(command):
        lines = piped(command, "resnet18").stdout.splitlines()
        return [
            line.split() for line in lines if line.startswith(" ") and not line.lstrip().startswith(("Layer ", "─"))
        ]

    rf_rows = rows("rf")
    names = [row[0] for row in rf_rows]
    assert names == [row[0] for row in rows("summary")]
    assert names.index("layer1") < names.index("layer1.0") < names.index("layer1.0.conv1")
    assert names.index("layer1.0.conv2") < names.index("layer1.1") < names.index("layer1.1.conv1")
    fields = {row[0]: row[3] for row in rf_rows}
    assert (fields["layer1"], fields["layer1.0"], fields["layer1.1"]) == ("43x43", "27x27", "43x43")


@pytest.mark.parametrize("width", [None, 80])
def test_a_table_made_narrow_by_columns_keeps_its_title_on_one_line(width):
    """rf lenet5 --columns Coverage wrapped its title to the table: 'lenet5  ·' over three lines."""
    args = ("rf", "lenet5", "--columns", "Coverage")
    result = piped(*args) if width is None else at_width(width, *args)
    assert result.stdout.splitlines()[0] == "lenet5  ·  receptive fields on a 32x32 input", result.stdout


@pytest.mark.parametrize("command", ["summary", "memory"])
def test_a_folded_report_says_so_in_its_title(command):
    """--fold-bn's table (11,684,712 parameters for resnet18) read as the model's own (11,689,512)."""
    folded = at_width(200, command, "resnet18", "--fold-bn").stdout.splitlines()[0]
    assert folded.endswith("  ·  BatchNorms folded"), folded
    assert "folded" not in at_width(200, command, "resnet18").stdout.splitlines()[0]
    markdown = at_width(200, command, "resnet18", "--fold-bn", "-f", "markdown").stdout
    assert "BatchNorms folded" in markdown.splitlines()[0]


def test_a_title_longer_than_the_terminal_wraps_to_the_terminal_not_to_the_table():
    """On 40 columns rf lenet5 --columns Coverage (a table 26 wide) took three lines for its title."""
    lines = at_width(40, "rf", "lenet5", "--columns", "Coverage").stdout.splitlines()
    assert lines[:2] == ["lenet5  ·  receptive fields on a 32x32", "input"], lines
    assert all(len(line) <= 40 for line in lines)


# -- what does not fit even with columns left out: one block per row, never a cut figure ------


def param_count(name: str) -> int:
    """Counted by torch on the model itself, built on the meta device (no memory)."""
    import torch

    with torch.device("meta"):
        return sum(parameter.numel() for parameter in MODELS[name].build().parameters())


def every_line_fits(output: str, width: int) -> bool:
    return all(len(line) <= width for line in output.splitlines())


@pytest.mark.parametrize("width", [40, 50])
def test_a_narrow_diff_stacks_its_totals_with_every_figure_whole(width):
    """The four figures of a total side by side need ~44 characters: at 40 the totals' names
    shrank to nothing and figures were cut ('+101.96' without '%'); each total a block."""
    old, new = param_count("lenet5"), param_count("alexnet")
    assert old == 156 + 2_416 + 48_120 + 10_164 + 850  # LeNet-5 by hand: (5*5*1+1)*6, (5*5*6+1)*16, ...
    percent = (new - old) / old * 100
    result = at_width(width, "diff", "lenet5", "alexnet")
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stdout.splitlines()]
    block = lines[lines.index("Parameters") : lines.index("Parameters") + 5]
    assert block == [
        "Parameters",
        f"Old      {human_count(old)}",
        f"New      {human_count(new)}",
        f"Change   +{human_count(new - old)}",
        f"%        +{percent:,.1f}%",
    ]
    assert all(name in lines for name in ("MACs", "FLOPs", "Activation memory"))
    assert "…" not in result.stdout and every_line_fits(result.stdout, width)


def test_a_diff_that_fits_keeps_its_totals_table():
    result = at_width(120, "diff", "lenet5", "alexnet")
    row = next(line for line in result.stdout.splitlines() if line.strip().startswith("Parameters"))
    # (61,100,840 - 61,706) / 61,706 = +98,919.3%, grouped as the counts are
    assert row.split() == ["Parameters", "61.71", "K", "61.10", "M", "+61.04", "M", "+98,919.3%"]
    assert re.search(r"Total +Old +New +Change +%", result.stdout)
    narrow = at_width(60, "diff", "lenet5", "alexnet")  # the table still fits: its names wrap
    assert re.search(r"Total +Old +New +Change +%", narrow.stdout) and "…" not in narrow.stdout


@pytest.mark.parametrize("width", [40, 50])
def test_a_narrow_budget_check_shows_every_figure_and_every_verdict_whole(width):
    """Value, Margin and Verdict side by side were wider than 40 columns: '11.69…', '(-1069.0…',
    'Verdi…', and the limit's name gone. Margins worked from torch's parameter count."""
    limit = 1_000_000
    counts = {name: param_count(name) for name in ("lenet5", "resnet18")}
    result = at_width(width, "check", "lenet5", "resnet18", "--max-params", "1M", "--max-training-memory", "16GB")
    assert result.exit_code == 1, result.output
    lines = [line.strip() for line in result.stdout.splitlines()]
    for name, count in counts.items():
        margin = limit - count
        block = lines[lines.index("max-params 1M", lines.index(next(t for t in lines if t.startswith(name)))) :][:4]
        sign = "+" if margin > 0 else "-"
        assert block == [
            "max-params 1M",
            f"Value     {human_count(count)}",
            f"Margin    {sign}{human_count(abs(margin))} ({margin / limit * 100:+,.1f}%)",
            f"Verdict   {'pass' if margin >= 0 else 'FAIL'}",
        ]
    assert sum(line.startswith("Verdict") for line in lines) == 4  # a verdict for each limit of each model
    assert "…" not in result.stdout and every_line_fits(result.stdout, width)


def test_a_budget_check_that_fits_keeps_its_table():
    result = at_width(120, "check", "resnet18", "--max-params", "1M")
    assert re.search(r"Limit +Value +Margin +Verdict", result.stdout)
    row = next(line for line in result.stdout.splitlines() if line.strip().startswith("max-params"))
    assert row.split() == ["max-params", "1M", "11.69", "M", "-10.69", "M", "(-1,069.0%)", "FAIL"]  # 1M - 11,689,512


@pytest.mark.parametrize("width", [40, 50, 80])
def test_a_narrow_zoo_puts_each_description_under_its_model(width):
    """Four columns on 40: headings cut ('Par…', 'Def… inp…') and each description a word a
    line; now a line per model (name, parameters, input) and its description under it, whole."""
    result = at_width(width, "zoo")
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout and every_line_fits(result.stdout, width)
    text = " ".join(result.stdout.split())
    assert "Name Params" in text and "Default" in text and "input" in text
    for name in ("lenet5", "resnet18", "wide_resnet50_2"):
        model = MODELS[name]
        line = f"{name} {human_count(param_count(name))} {'x'.join(map(str, model.input_size))}"
        assert f"{line} {model.description}" in text, name  # the description follows, in its words


@pytest.mark.parametrize("width", [30, 35, 39])
def test_a_zoo_narrower_than_a_models_line_puts_its_figures_under_its_name(width):
    """Below 40 columns a model's line (name, parameters, input) did not fit: its input went
    under its name and the heading 'Default input' was cut to '…'. Now each figure goes under
    the model's name beside its heading, the description wrapping after it."""
    result = at_width(width, "zoo")
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout and every_line_fits(result.stdout, width)
    text = " ".join(result.stdout.split())
    for name in ("lenet5", "resnet18", "wide_resnet50_2"):
        model = MODELS[name]
        shape = "x".join(map(str, model.input_size))
        block = f"{name} Params {human_count(param_count(name))} Default input {shape} Description {model.description}"
        assert block in text, name


def test_a_zoo_that_fits_keeps_its_table():
    result = at_width(120, "zoo")
    assert re.search(r"┃ Name +┃ +Params ┃ Default input ┃ Description +┃", result.stdout)
    row = next(line for line in result.stdout.splitlines() if "│ lenet5 " in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells == ["lenet5", "61.71 K", "1x32x32", MODELS["lenet5"].description]


# -- profile and memory --measure on a narrow terminal -------------------------------------------

GIVEN_CEILINGS = ("--peak-flops", "100G", "--bandwidth", "10GB/s")  # given, not measured: the ridge is 10 by hand


def spied(monkeypatch, module, name: str) -> list:
    """What `module.name` returns, each time the command calls it."""
    real, returned = getattr(module, name), []

    def spy(*args, **kwargs):
        returned.append(real(*args, **kwargs))
        return returned[-1]

    monkeypatch.setattr(module, name, spy)
    return returned


def profiled_at(monkeypatch, width):
    """`archprof profile lenet5` at `width` columns, and the report it was given."""
    import archprof.api

    reports = spied(monkeypatch, archprof.api, "profile")
    result = at_width(width, "profile", "lenet5", "--warmup", "0", "--repeat", "1", *GIVEN_CEILINGS)
    assert result.exit_code == 0, result.output
    return result.stdout, reports[0].measured


def whole_model_figures(measured) -> dict[str, str]:
    """Each whole-model label, its figure with its unit, written here from the measurement's values."""
    return {
        "Latency, median (no hooks)": f"{measured.median_ms:,.3f} ms",
        "Throughput": f"{measured.throughput_per_s:,.1f} samples/s",
        "Achieved FLOP/s": f"{human_count(round(measured.achieved_flops_per_s))}FLOP/s",
        "Forward with per-layer hooks, median": f"{measured.hooked_median_ms:,.3f} ms",
        "Sum of per-layer medians": f"{measured.layer_sum_ms:,.3f} ms",
        "Unattributed (between hooks)": f"{measured.unattributed_ms:,.3f} ms",
        "Roofline floor (sum over rows)": f"{measured.roofline_ms:,.3f} ms",
        "Peak memory, predicted": human_bytes(measured.predicted_peak_memory_bytes),
        "Peak memory, measured": human_bytes(measured.measured_peak_memory_bytes),
        "Peak memory, with workspace": human_bytes(measured.measured_peak_memory_with_workspace_bytes),
    }


@pytest.mark.parametrize("width", [40, 50])
def test_a_narrow_profile_keeps_every_word_and_every_figure_with_its_unit(monkeypatch, width):
    """At 40 and 50 columns the whole-model table cut words ('Unattribu…', '(torch.pr…') and put
    '4.23' over 'MFLOP/s'; the ceilings line broke 'ridge 2.5' from 'FLOPs/byte' and the
    cross-check '(319,912' from 'B'. Now each label is on a line, its figure under it, and no
    figure is parted from its unit."""
    output, measured = profiled_at(monkeypatch, width)
    lines = [line.strip() for line in output.splitlines()]
    assert "…" not in output and every_line_fits(output, width)
    for label, figure in whole_model_figures(measured).items():
        assert lines[lines.index(label) + 1].startswith(figure), (label, figure)
    figures = [
        f"p90 {measured.p90_ms:,.3f} ms",
        f"{human_count(measured.work_flops)} FLOPs",
        human_bytes(measured.bytes_moved),
        "100.00 GFLOP/s",
        "10.00 GB/s",
        "10.0 FLOPs/byte",  # 100 GFLOP/s over 10 GB/s
        f"{measured.predicted_peak_memory_bytes:,} B",
        f"{measured.measured_peak_memory_with_workspace_bytes:,} B",
    ]
    for figure in figures:
        assert any(figure in line for line in lines), figure


def test_a_profile_on_30_columns_keeps_its_cross_check_figures_whole(monkeypatch):
    """On 30 columns the cross-check's summaries went a word a line and cut their figures
    ('833,04…', '(319,9…'); now each summary goes under its verdict, wrapped between words.
    (The layer table above, a module's time in parentheses, may cut its longest names by a
    character or two, as `render.base.fitted_table` cuts a table a little too wide.)"""
    output, measured = profiled_at(monkeypatch, 30)
    assert "…" not in output[output.index("Left out to fit") :] and every_line_fits(output, 30)
    checks = " ".join(output[output.index("Cross-check") :].split())
    assert "ok output shapes" in checks and "ok FLOPs" in checks and "ok peak memory" in checks
    lines = output.splitlines()
    predicted, with_workspace = measured.predicted_peak_memory_bytes, measured.measured_peak_memory_with_workspace_bytes
    for figure in (f"{predicted:,} B", f"({with_workspace:,} B"):
        assert any(figure in line for line in lines), figure


def test_a_profile_that_fits_keeps_its_whole_model_table(monkeypatch):
    output, measured = profiled_at(monkeypatch, 120)
    for label, figure in whole_model_figures(measured).items():
        assert re.search(rf"│ {re.escape(label)} +│ +{re.escape(figure)} │", output), label
    assert "ridge 10.0 FLOPs/byte" in " ".join(output.split())


@pytest.mark.parametrize("width", [40, 50])
def test_a_narrow_memory_measure_keeps_every_figure_whole(monkeypatch, width):
    """The totals folded 'activation' from 's'; the measured table cut every heading and figure
    ('Pred…', '288.…'). Now each step's figures go under it, each on a line with its heading.
    Parameter bytes from torch's count (4 bytes a float32)."""
    import archprof.measure.peak_memory

    measurements = spied(monkeypatch, archprof.measure.peak_memory, "predicted_and_measured")
    result = at_width(width, "memory", "lenet5", "--measure")
    assert result.exit_code == 0, result.output
    shown = result.stdout[result.stdout.index("\nMemory") :]  # the per-layer table's names may be cut
    lines = [line.strip() for line in shown.splitlines()]
    assert "…" not in shown and every_line_fits(result.stdout, width)
    param_bytes = 4 * param_count("lenet5")
    assert any(human_bytes(param_bytes) in line and f"{param_bytes:,} B" in line for line in lines)
    measured = measurements[0]
    for step in measured.steps:
        block = lines[lines.index(step.what) + 1 :][:4]
        figures = [human_bytes(step.predicted_bytes), human_bytes(step.measured.bytes)]
        figures.append(human_bytes(step.measured.with_workspace))
        assert block == [
            *(
                f"{heading}{' ' * (23 - len(heading))}{figure}"
                for heading, figure in zip(measured.headings, figures, strict=False)
            ),
            f"Measured / predicted   {step.measured.bytes / step.predicted_bytes:.3f}",
        ]


def test_prose_wraps_between_words_never_between_a_figure_and_its_unit():
    from rich.console import Group
    from rich.text import Text

    from archprof.render import to_text
    from archprof.render.base import Prose

    line = "ceilings; ridge 2.5 FLOPs/byte, predicted 845.85 K FLOPs (319,912 B with workspace)"
    assert to_text(Text(line), 20).splitlines()[0:2] == ["ceilings; ridge 2.5", "FLOPs/byte,"]  # as Rich wraps
    assert to_text(Group(Prose(line)), 20).splitlines() == [
        "ceilings; ridge",
        "2.5 FLOPs/byte,",
        "predicted",
        "845.85 K FLOPs",
        "(319,912 B with",
        "workspace)",
    ]
    assert to_text(Group(Prose(line)), 200) == to_text(Text(line), 200)


def test_a_table_a_few_characters_too_wide_keeps_a_row_a_layer():
    """On 70 columns resnet18's summary is 5 characters too wide for its longest names: it keeps
    one line a layer (stacked, each of its rows would take four), each name cut in the middle
    keeping two thirds of itself at least. Names from torch's modules."""
    output = at_width(70, "summary", "resnet18").stdout
    assert every_line_fits(output, 70)
    rows = [line.split()[0] for line in output.splitlines()[4:] if line.strip() and not line.startswith(" ─")]
    names = leaf_names("resnet18")
    whole = [row for row in rows if row in names]
    cut = [row for row in rows if "…" in row]
    assert cut and len(whole) + len(cut) >= len(names)
    for row in cut:
        start, end = row.split("…")
        assert any(n.startswith(start) and n.endswith(end) and 3 * len(row) >= 2 * len(n) for n in names), row


def test_where_a_class_name_or_a_layer_name_must_be_cut_the_class_name_goes_first():
    """vgg16 on 100 columns is a few characters too wide: 'AdaptiveAvgPool2d' is cut, where
    every 'classifier.N' was ('cla…fier.0'), the row's own name losing to a type that repeats.
    Names and types from torch's modules."""
    import torch

    output = at_width(100, "summary", "vgg16").stdout
    assert every_line_fits(output, 100)
    with torch.device("meta"):
        types = {name: type(module).__name__ for name, module in MODELS["vgg16"].build().named_modules() if name}
    rows = [line.split() for line in output.splitlines()[4:] if line.split()[:1] and line.split()[0] in types]
    assert {row[0] for row in rows} == set(types)  # every layer named whole
    cut = {row[0]: row[1] for row in rows if "…" in row[1]}
    assert cut == {"avgpool": cut.get("avgpool")} and types["avgpool"].startswith(cut["avgpool"].rstrip("…"))
    assert all(row[1] == types[row[0]] for row in rows if row[0] not in cut)


@pytest.mark.parametrize("args", EACH_COMMAND, ids=lambda args: args[0])
def test_under_30_columns_a_command_lays_out_for_30_and_cuts_nothing(args):
    """COLUMNS=1 to 29 cut every name and figure to a character or two and an ellipsis
    ('cla…  1x…'): now each command writes what it writes on 30 columns, every name and
    figure whole, and the terminal wraps the lines."""
    on_30 = at_width(30, *args)
    assert on_30.exit_code == 0 and "…" not in on_30.stdout, on_30.output
    for width in (1, 12, 29):
        assert at_width(width, *args).stdout == on_30.stdout, width


class _UnusedHead(nn.Module):
    """A body it calls, a head (a container) it never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x):
        return self.body(x)


def test_a_container_nothing_under_which_ran_is_named_not_called_as_a_leaf_is():
    """The head's layers were "(not called)", the head itself named as if it ran; the real
    forward's hooks say which modules ran."""
    model = _UnusedHead()
    ran = set()
    for name, module in model.named_modules():
        module.register_forward_hook(lambda m, i, o, name=name: ran.add(name))
    model(torch.randn(1, 3, 8, 8))
    text = archprof.analyze(model, input_size=(3, 8, 8)).to_markdown()
    for name in ("body", "head"):
        assert (f"{name} (not called)" in text) == (name not in ran)


def test_a_field_over_the_whole_input_is_global_in_every_table_and_input_in_the_report():
    """rf said "global" where summary, explain and compare said "input" for one row."""
    report = archprof.analyze("vgg16")
    row = report.columns["layer"].index("classifier.0")
    assert report.columns["receptive_field"][row] == "input"  # the report's columns, CSV and JSON
    for command in (["summary", "vgg16"], ["rf", "vgg16"]):
        line = next(line for line in piped(*command).stdout.splitlines() if "classifier.0" in line)
        assert "global" in line.split() and "input" not in line.split(), line
    network = report.explain()
    assert "global" in next(line for line in network.splitlines() if " (model) " in line).split()  # the flatten
    from archprof.render.html import report_html

    assert ">global<" in report_html(report) and ">input<" not in report_html(report)


LONG_CLASS = """from torch import nn

Long = type("T" * 100, (nn.Conv2d,), {})


def long_class():
    return nn.Sequential(Long(2, 2, 1), nn.ReLU())


def plain():
    return nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU())
"""


def _lines_within(result, width: int) -> list[str]:
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(len(line) <= width for line in lines), result.stdout
    return lines


@pytest.mark.parametrize(
    ("command", "columns", "figure"),
    [("summary", "Type,MACs", " 64"), ("memory", "Type,Activations", " 128 B"), ("rf", "Type,Field", " 1x1")],
)
@pytest.mark.parametrize("width", [40, 80])
def test_columns_chosen_beside_a_long_class_name_keep_every_figure_whole(tmp_path, command, columns, figure, width):
    """A class name wider than the terminal, in columns chosen by name: the name is cut, not
    the headings and figures beside it (Rich cut them all to '…')."""
    (tmp_path / "models.py").write_text(LONG_CLASS)
    result = at_width(width, command, f"{tmp_path / 'models.py'}:long_class", "-i", "2x4x4", "--columns", columns)
    lines = _lines_within(result, width)
    heading = next(line for line in lines if line.lstrip().startswith("Layer"))
    assert heading.split() == ["Layer", "Type", columns.split(",")[1]]
    row = next(line for line in lines if line.lstrip().startswith("0 "))
    assert "TTTTTTTTTT…" in row and row.endswith(figure), row


def test_a_diff_whose_changed_class_name_is_long_keeps_its_figures(tmp_path):
    """Type changed, and first in the diff's priority: cut to the room left, with the figures
    beside it, where every figure was left out for it and then Type too ('changed  0')."""
    (tmp_path / "models.py").write_text(LONG_CLASS)
    models = tmp_path / "models.py"
    result = at_width(100, "diff", f"{models}:plain", f"{models}:long_class", "-i", "2x4x4")
    lines = _lines_within(result, 100)
    heading = next(line for line in lines if line.lstrip().startswith("Layer"))
    assert heading.split() == ["Layer", "Type", "Output", "shape", "Params", "MACs", "Activations"]
    assert not any(line.startswith("Left out") for line in lines)
