"""Narrow terminals: a stacked row's long text across the whole width, a word longer than the
line folded onto the next, never cut or past the edge; `archprof zoo` at 30, 40 and 60 columns."""

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
