"""`--hide-idle` (summary, memory, rf): the rows of modules that ran no operation and hold no
parameters (an `nn.Identity`, a Dropout in evaluation: their output is their input) left out
of the table and the Markdown, the totals the model's; and without it, a line saying how many
there are where they are a tenth of the rows or more (timm's models call an Identity in a
third of theirs)."""

import itertools

import pytest

from tests.cli import cli, one_error_line

MODEL = (
    "from torch import nn\n"
    "class Block(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.conv = nn.Conv2d(8, 8, 3, padding=1)\n"
    "        self.aa = nn.Identity()\n"
    "        self.skip = nn.Identity()\n"
    "    def forward(self, x):\n"
    "        return x + self.skip(self.aa(self.conv(x)))\n"
    "def net():\n"
    "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Block(), nn.Dropout(0.5),"
    " nn.Sequential(nn.Identity(), nn.Identity()), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))\n"
)
# The model's rows as the tree draws them: the containers first, then what they hold.
SHOWN = ["0", "1", "1.conv", "4", "5"]  # 4: Flatten, a view: an operation
IDLE = ["1.aa", "1.skip", "2", "3", "3.0", "3.1"]  # 3: a Sequential of Identities, idle as a whole


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "placeholders.py"
    path.write_text(MODEL)
    return f"{path}:net"


def _layers(output: str) -> list[str]:
    """The layer names of the first Markdown table (its heading and rule left out)."""
    lines = output.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[first:]))
    # memory's table marks the peak's row after its name
    names = [line.strip("|").split("|")[0].replace("&nbsp;", "").strip().removesuffix("◀ peak") for line in table[2:]]
    return [name.strip() for name in names]


def _after(output: str, line: str) -> str:
    """What follows `line` (the totals, rf's verdict): the same with the idle rows left out or not."""
    assert line in output, output
    return output[output.index(line) + len(line) :]


@pytest.mark.parametrize("command", ["summary", "memory", "rf"])
def test_idle_rows_are_left_out_and_said_so_with_the_models_totals(spec, command):
    every = cli(command, spec, "-i", "3x16x16", "-f", "markdown", "--wide")
    hidden = cli(command, spec, "-i", "3x16x16", "-f", "markdown", "--wide", "--hide-idle")
    assert every.exit_code == hidden.exit_code == 0, (every.output, hidden.output)
    assert sorted(_layers(every.stdout)) == sorted(SHOWN + IDLE)
    assert _layers(hidden.stdout) == SHOWN
    # The types, the most common first; without the option more than a tenth of the rows are
    # idle, and the line says how to leave them out.
    counted = f"{len(IDLE)} of {len(SHOWN + IDLE)} rows that ran no operation and hold no parameters"
    counted += " (Identity, Dropout, Sequential)"
    assert _after(hidden.stdout, f"Left out: {counted}.") == _after(
        every.stdout, f"{counted}: --hide-idle leaves them out."
    )


def test_no_line_where_few_rows_are_idle(tmp_path):
    path = tmp_path / "plain.py"
    path.write_text(
        "from torch import nn\n"
        "def net():\n"
        "    return nn.Sequential(*[nn.Conv2d(3, 3, 1) for _ in range(10)], nn.Dropout())\n"
    )
    done = cli("summary", f"{path}:net", "-i", "3x8x8", "-f", "markdown")
    assert done.exit_code == 0, done.output
    assert "rows that ran no operation" not in done.stdout  # 1 of 11 rows: under a tenth


def test_the_top_rows_by_activation_are_the_rows_that_made_them(spec):
    """An Identity's output is its input's tensor, which the layer before made: it holds no
    activation bytes of its own, so it ranks among the top rows neither with --hide-idle nor
    without (it tied the layer that made the tensor when it counted what it passed on)."""
    every = cli("summary", spec, "-i", "3x16x16", "--top", "3", "--by", "activation", "-f", "markdown")
    hidden = cli("summary", spec, "-i", "3x16x16", "--top", "3", "--by", "activation", "-f", "markdown", "--hide-idle")
    assert every.exit_code == hidden.exit_code == 0, (every.output, hidden.output)

    def ranked(output):
        table = output[: output.index("these ")]
        rows = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("|")][2:]
        return [row[1].strip() for row in rows]

    # Every row but the linear layer's output (10 floats) and the model's flatten holds an 8x16x16 map.
    for done in (every, hidden):
        assert ranked(done.stdout) == ["0", "1.conv", "1"]  # alike: in the order they ran (the block's add last)
        assert "(5 rows have any)" in done.stdout  # 0, 1, 1.conv, the flatten's view, the linear layer


@pytest.mark.parametrize("command", ["summary", "memory", "rf"])
@pytest.mark.parametrize("format", ["csv", "json", "html"])
def test_a_format_that_holds_every_row_refuses_it_before_any_work(spec, command, format):
    done = cli(command, spec, "-i", "3x16x16", "-f", format, "--hide-idle")
    assert done.exit_code == 2
    assert one_error_line(done) == (
        f"error: --hide-idle leaves rows out of the table and Markdown: {format} holds every row, the idle ones"
        " with no operators and no parameters"
    )


def test_the_apis_table_and_a_page_name_no_option(spec):
    """`Report.table()` (a notebook's) and an HTML page draw every row, and say nothing of an
    option they do not take."""
    import archprof
    from archprof.render.export import markdown_text

    report = archprof.analyze(spec, input_size=(3, 16, 16))
    assert sorted(_layers(markdown_text(report.table()))) == sorted(SHOWN + IDLE)
    assert "rows that ran no operation" not in markdown_text(report.table())
    for command in ("memory", "rf"):
        page = cli(command, spec, "-i", "3x16x16", "-f", "html")
        assert page.exit_code == 0, page.output
        assert "1.skip" in page.stdout and "hide-idle" not in page.stdout
