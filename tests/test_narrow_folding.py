"""Narrow terminals: a stacked row's long text across the whole width, a word longer than the
line folded onto the next, never cut or past the edge; `archprof zoo` at 30, 40 and 60 columns."""

import re
import textwrap

import pytest
import torch
from rich.console import Console
from rich.text import Text
from typer.testing import CliRunner

from archprof.cli import app
from archprof.render.base import Layout, fitted_table, stacked_rows, to_text
from archprof.units import human_count
from archprof.zoo import MODELS

runner = CliRunner()

# Longer than a 30-column line (31 characters), as `explain --train` names a BatchNorm's gradient.
OPERATOR = "aten.native_batch_norm_backward"


def lines_fit(output: str, width: int) -> bool:
    return all(Console().measure(line).maximum <= width for line in output.splitlines())


def unspaced(text: str) -> str:
    return "".join(text.split())


def zoo_at(width: int) -> str:
    result = runner.invoke(app, ["zoo"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    return result.stdout


def param_count(name: str) -> int:
    """Counted by torch on the model itself, built on the meta device."""
    with torch.device("meta"):
        return sum(parameter.numel() for parameter in MODELS[name].build().parameters())


@pytest.mark.parametrize("width", [30, 40, 60])
def test_the_zoo_loses_no_word_and_no_line_passes_the_width(width):
    output = zoo_at(width)
    assert lines_fit(output, width) and "…" not in output
    printed = unspaced(output)
    position = 0
    for name, model in MODELS.items():  # every model's words, in order, none cut
        shape = "x".join(map(str, model.input_size))
        for words in (name, human_count(param_count(name)), shape, model.description):
            found = printed.find(unspaced(words), position)
            assert found >= 0, (name, words)
            position = found + len(unspaced(words))


@pytest.mark.parametrize("width", [30, 35])
def test_a_stacked_zoo_wraps_each_description_across_the_whole_width(width):
    """On 30 columns each description wrapped in the 11 characters beside its heading, a word
    or two a line; now on the lines under its heading, each as full as the width allows."""
    lines = zoo_at(width).splitlines()
    for name, model in MODELS.items():
        heading = lines.index("   Description", lines.index(f" {name}"))
        wrapped = textwrap.wrap(model.description, width - 5, break_on_hyphens=False)
        assert lines[heading + 1 : heading + 1 + len(wrapped)] == ["     " + line for line in wrapped], name


@pytest.mark.parametrize("width", [30, 40, 60])
def test_a_word_longer_than_the_line_is_folded_in_a_stacked_row(width):
    """A name and a cell each holding a word longer than the line: folded onto the next line,
    every character kept, in order, and no line past the width."""
    word = OPERATOR + "_and_its_saved_statistics" * (width // 20)  # longer than any of these lines
    columns = {"Operator": [word, "  " + word], "Calls": ["3", "1"], "Note": [f"gradient of {word}", "-"]}
    output = to_text(stacked_rows(Text("Operators"), columns, width=width), width)
    assert lines_fit(output, width)
    expected = "Operators" + f"{word}Calls3Note gradient of {word}" + f"{word}Calls1Note-"
    assert unspaced(output) == unspaced(expected)


@pytest.mark.parametrize(("width", "name"), [(30, OPERATOR), (40, OPERATOR + "_and_its_saved_statistics")])
def test_a_table_of_names_longer_than_the_line_stacks_them_whole(width, name):
    """`aten.native_batch_norm_backward` could not fit a 30-column line: the rows were not
    stacked and the names were cut in the middle ('aten.nat…_backward'); now folded, whole."""
    names = [name, "aten.convolution_backward"]
    table = fitted_table("Not counted", {"Layer": names, "Calls": ["12", "3"]}, ["Layer", "Calls"], Layout(width))
    output = to_text(table, width)
    assert lines_fit(output, width) and "…" not in output
    assert unspaced(output) == unspaced(f"Not counted {names[0]} Calls 12 {names[1]} Calls 3")


def table_rows(text: str) -> list[list[str]]:
    """The cells of each row of the first table in `text`, as printed wide: the rows under the
    heading's rule, split at its dividers (a cell's own words are one space apart)."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.strip() and set(line.strip()) <= set("─━┡╇┩"))
    rows = []
    for line in lines[rule + 1 :]:
        if not line.strip() or line.lstrip().startswith("└"):
            break
        rows.append([cell.strip() for cell in re.split(r"│| {2,}", line) if cell.strip()])
    return rows


def each_cell_whole_in_order(output: str, rows: list[list[str]]) -> bool:
    """Whether every cell of `rows` is in `output`, in order, each figure whole on one line;
    the rows' labels (their first cells) in order too, word by word (a table's label column
    wraps, a label's last word printed under its row's figures)."""
    labels = [word for label, *_ in rows for word in label.split()]
    figures = [figure for _, *cells in rows for figure in cells]
    return in_order(output, labels) and in_order(output, figures)


def in_order(output: str, texts: list[str]) -> bool:
    position = 0
    for text in texts:
        found = output.find(text, position)
        if found < 0:
            return False
        position = found + len(text)
    return True


CHECK = ["check", "resnet18", "--max-params", "30M", "--max-macs", "5G", "--max-activation", "10MB"]


@pytest.mark.parametrize("width", [30, 40, 60, 100])
def test_check_on_a_narrow_terminal_keeps_each_figure_on_one_line(width):
    """check's stacked limits had no width: on 30 columns the margin '-22.92 MB (-229.2%)' wrapped
    in the 17 characters beside its heading; now it goes under it, whole, as in every stacked table."""
    wide = runner.invoke(app, CHECK, env={"COLUMNS": "100"})
    rows = table_rows(wide.stdout)
    assert [row[0] for row in rows] == ["max-params 30M", "max-macs 5G", "max-activation 10MB"]
    result = runner.invoke(app, CHECK, env={"COLUMNS": str(width)})
    assert result.exit_code == 1, result.output  # resnet18's 32.92 MB of activations exceed 10MB
    assert lines_fit(result.stdout, width) and "…" not in result.stdout
    assert each_cell_whole_in_order(result.stdout, rows), result.stdout


@pytest.mark.parametrize("width", [30, 40, 60, 100])
def test_measured_memory_on_a_narrow_terminal_keeps_each_figure_on_one_line(width):
    """memory --measure's stacked steps had no width: on 30 columns '288.55 kB' read '288.' '55 k'
    'B' over three lines beside 'Measured / predicted'; now each figure goes under its heading."""
    from archprof.measure.peak_memory import MeasuredMemory, MeasuredStep, Peak
    from archprof.render import measured_table

    steps = (MeasuredStep("Inference peak", 288_550, Peak(288_550, 319_912)),)
    steps += (MeasuredStep("Training step (sgd)", 553_650, Peak(553_650, 577_990)),)
    measured = MeasuredMemory("AMD EPYC, 2 threads", steps)
    rows = table_rows(to_text(measured_table(measured, 100), 100))
    assert rows[0] == ["Inference peak", "288.55 kB", "288.55 kB", "319.91 kB", "1.000"]  # 288,550 B is 288.55 kB
    output = to_text(measured_table(measured, width), width)
    assert lines_fit(output, width) and "…" not in output
    assert each_cell_whole_in_order(output, rows), output


def test_stacked_figures_sit_under_the_layers_name_past_the_status_before_it():
    """diff's rows are labelled by a status and a layer: the figures were indented by the
    spaces leading the joined label, so an added layer's sat at the status, left of its
    parent's. Now two past the layer's text, whatever status is before it."""
    columns = {
        "Status": ["", "added", "added"],
        "Layer": ["  layer1", "    layer1.2", "      layer1.2.conv1"],
        "Params": ["(+73.98 K)", "(+73.98 K)", "+36.86 K"],
    }
    lines = to_text(stacked_rows(Text("Changes"), columns, labels=2, width=40), 40).splitlines()
    for layer in columns["Layer"]:
        row = next(i for i, line in enumerate(lines) if line.endswith(layer.strip()))
        assert lines[row + 1].index("Params") == lines[row].index(layer.strip()) + 2, "\n".join(lines)
