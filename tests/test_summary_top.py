"""`archprof summary --top N --by KEY`: the N rows with the most of a figure, largest first,
each with its share of the model's total, as the lecture's formulas count them."""

import pytest

from archprof.units import share_text
from tests.cli import cli, one_error_line

# (layer, MACs = C_out · C_in · K_h · K_w · H_out · W_out (a linear layer: out · in), params = weights + biases)
LAYERS = {
    "0": (8 * 3 * 3 * 3 * 16 * 16, 8 * 3 * 3 * 3 + 8),  # 3x3 convolution, padding 1, 16x16 -> 16x16
    "1": (16 * 8 * 3 * 3 * 8 * 8, 16 * 8 * 3 * 3 + 16),  # 3x3 convolution, stride 2 -> 8x8
    "2": (4 * 16 * 1 * 1 * 8 * 8, 4 * 16 + 4),  # 1x1 convolution
    "4": (10 * 256, 10 * 256 + 10),  # linear layer on the flattened 4x8x8 map
}
MODEL = (
    "from torch import nn\n"
    "def net():\n"
    "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, 2, padding=1),"
    " nn.Conv2d(16, 4, 1), nn.Flatten(), nn.Linear(256, 10))\n"
)


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "ranked.py"
    path.write_text(MODEL)
    return f"{path}:net"


def _ranked_rows(output: str) -> list[list[str]]:
    """The ranked Markdown table's rows, as cells (its heading and rule left out; the totals' table after it too)."""
    table = output[: output.index("these ")]
    lines = [line for line in table.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


@pytest.mark.parametrize(("by", "figure"), [("macs", 0), ("params", 1)])
def test_the_top_rows_are_those_with_the_most_largest_first_with_their_shares(spec, by, figure):
    done = cli("summary", spec, "-i", "3x16x16", "--top", "3", "--by", by, "-f", "markdown", "--wide")
    assert done.exit_code == 0, done.output
    expected = sorted(LAYERS, key=lambda layer: -LAYERS[layer][figure])[:3]
    rows = _ranked_rows(done.stdout)
    assert [row[0] for row in rows] == ["1", "2", "3"] and [row[1] for row in rows] == expected
    heading = next(line for line in done.stdout.splitlines() if line.startswith("|"))
    headings = [cell.strip() for cell in heading.strip("|").split("|")]
    # Headed '#', which `archprof explain` reads as a row number: '#3' was another layer there.
    assert headings[:2] == ["Rank", "Layer"]
    share = headings.index("% MACs" if by == "macs" else "% Params")
    total = sum(figures[figure] for figures in LAYERS.values())
    assert [row[share] for row in rows] == [share_text(LAYERS[layer][figure] / total) for layer in expected]
    held = share_text(sum(LAYERS[layer][figure] for layer in expected) / total)
    assert f"these 3 rows hold {held} of the model" in done.stdout and "(4 rows have any)" in done.stdout


def test_top_without_by_ranks_by_macs_and_keeps_the_totals(spec):
    done = cli("summary", spec, "-i", "3x16x16", "--top", "1")
    assert done.exit_code == 0, done.output
    assert "the 1 rows with the most MACs" in done.stdout and "Totals" in done.stdout
    assert f"{sum(macs for macs, _ in LAYERS.values()):,}" in done.stdout  # the model's total, not the row's


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--top", "3", "--by", "bogus"], "cannot rank rows by 'bogus': choose one of macs, params"),
        (["--by", "params"], "--by says what --top ranks rows by: add --top N"),
        (["--top", "3", "-f", "csv"], "--top ranks the rows of the table and Markdown: csv holds every row"),
        (["--top", "0"], "must be at least 1"),
    ],
)
def test_a_ranking_that_cannot_be_drawn_is_refused_before_any_work(spec, options, message):
    done = cli("summary", spec, "-i", "3x16x16", *options)
    assert done.exit_code == 2 and message in one_error_line(done)
