"""The CLI alike across its commands: a plot that cannot be written leaves the report's file
as it was, an empty optimizer name is refused everywhere, a COLUMNS that is not a width is
unset, choices are read in any case, stderr carries no colour codes it was not asked for,
and a plotting backend's notes stay off it."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

import archprof.render.figures
from archprof.cli.streams import say
from archprof.errors import ArchprofError
from tests.cli import cli, one_error_line

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize("command", ["rf", "memory"])
def test_a_plot_that_cannot_be_written_leaves_the_reports_file_as_it_was(command, tmp_path, monkeypatch):
    """The plot was written after the report: its failure ended the command with exit 2 and
    the report's file already replaced."""
    report = tmp_path / "report.csv"
    report.write_text("ORIGINAL\n")

    def cannot_write(image, target):
        raise ArchprofError(f"cannot write {target}: No such file or directory")

    monkeypatch.setattr(archprof.render.figures, "write_image", cannot_write)
    result = cli(command, "lenet5", "--plot", tmp_path / "plot.png", "-o", report)
    assert result.exit_code == 2
    assert "cannot write" in one_error_line(result)
    assert report.read_text() == "ORIGINAL\n"


@pytest.mark.parametrize(
    "args",
    [
        ("memory", "lenet5", "--train", "--optimizer", ""),
        ("compare", "lenet5", "edge_conv", "--train", "--optimizer", "", "-j", "1"),
        ("check", "lenet5", "--optimizer", "", "--max-training-memory", "1G"),
    ],
    ids=["memory", "compare", "check"],
)
def test_an_empty_optimizer_name_is_refused_by_every_command(args):
    """memory and compare took "" for the default, sgd; check refused it."""
    result = cli(*args)
    assert result.exit_code == 2
    assert "unknown optimizer ''" in one_error_line(result)


def _piped(*args: str, columns: str | None = None) -> str:
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = columns
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-m", "archprof", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=True).stdout


def _piped_summary(columns: str | None) -> str:
    return _piped("summary", "lenet5", columns=columns)


def test_a_piped_budget_table_keeps_its_title_on_one_line(tmp_path):
    """Piped, check's title was wrapped at 80 columns, mid-word ('...whe' / 'n_piped...'),
    where summary's and every table's stay whole."""
    folder = tmp_path / ("a_folder_with_a_long_name_" * 3)
    folder.mkdir()
    (folder / "net.py").write_text("from torch import nn\n\ndef net():\n    return nn.Conv2d(3, 4, 3)\n")
    spec = f"{folder / 'net.py'}:net"
    output = _piped("check", spec, "--input", "3x8x8", "--max-params", "1M")
    assert output.splitlines()[0] == f"{spec}  ·  input 1x3x8x8  ·  float32  ·  within budget"


def test_a_columns_that_is_not_a_width_is_taken_as_unset():
    """COLUMNS="" or "abc" laid a piped table out for 80 columns, most of them left out."""
    every_column = _piped_summary(None)
    assert max(map(len, every_column.splitlines())) > 120
    for columns in ("", "abc", "-5", "80.5"):
        assert _piped_summary(columns) == every_column, columns


def test_choices_are_read_in_any_case():
    """-f CSV and --dtype FLOAT16 were refused, where -o x.CSV and --optimizer Adam were not."""
    assert cli("summary", "lenet5", "-f", "CSV").stdout == cli("summary", "lenet5", "-f", "csv").stdout
    assert cli("summary", "lenet5", "-f", "MD").exit_code == 0
    half = cli("summary", "lenet5", "--dtype", "FLOAT16", "-f", "csv")
    assert half.exit_code == 0 and half.stdout == cli("summary", "lenet5", "--dtype", "float16", "-f", "csv").stdout


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "style, environment, coloured",
    [
        ({}, {}, False),
        ({"fg": "red"}, {}, True),
        ({"fg": "red"}, {"NO_COLOR": "1"}, False),
        ({"fg": "red"}, {"TERM": "dumb"}, False),
    ],
    ids=["plain", "styled", "NO_COLOR", "TERM=dumb"],
)
def test_a_line_on_a_terminals_stderr_carries_colour_codes_only_where_asked(style, environment, coloured, monkeypatch):
    """Every plain line ended with a reset code (typer.secho's), NO_COLOR and TERM=dumb or not."""
    for name in ("NO_COLOR", "TERM"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    say("error: unknown model 'nosuch'", **style)
    assert ("\x1b[" in terminal.getvalue()) is coloured
    assert "error: unknown model 'nosuch'" in terminal.getvalue()


def test_a_plotting_backends_notes_stay_off_stderr(tmp_path):
    """PostScript's "does not support transparency" note reached stderr before 'wrote'."""
    pytest.importorskip("matplotlib")
    plot = tmp_path / "fields.eps"
    command = [sys.executable, "-m", "archprof", "rf", "lenet5", "--plot", str(plot), "-f", "csv"]
    # A process of its own: in this one, pytest's handlers take matplotlib's log off stderr.
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300
    )
    assert done.returncode == 0
    assert done.stderr.splitlines() == [f"wrote {plot}"]


def test_rf_unit_takes_every_layer_the_rf_table_lists(tmp_path):
    """A container with no operations of its own (a Sequential: lenet5's `features`,
    resnet18's `layer1`) has a row in the table, its output's field, and --unit refused it,
    pointing back at that table."""
    from tests.field_oracle import positive, unit_gradient_box

    source = tmp_path / "nets.py"
    source.write_text(
        "from torch import nn\n"
        "def net():\n"
        "    block = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(2))\n"
        "    return nn.Sequential(block, nn.Conv2d(2, 2, 3, stride=2))\n"
    )
    spec = f"{source}:net"
    table = cli("rf", spec, "--input", "1x32x32").stdout
    assert any(line.split()[:2] == ["0", "Sequential"] for line in table.splitlines() if line.strip())
    result = cli("rf", spec, "--input", "1x32x32", "--unit", "2,3", "--layer", "0")
    assert result.exit_code == 0, result.output
    block = positive(nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(2)))
    rows, columns = unit_gradient_box(block, (1, 32, 32), (2, 3))
    assert f"reads input pixels {rows[0]}..{rows[1]} x {columns[0]}..{columns[1]} " in result.stdout


@pytest.mark.parametrize("suffix", ["md", "html", "txt"])
def test_diff_given_a_report_it_cannot_read_names_the_ones_it_can(suffix, tmp_path):
    """A Markdown or HTML report was refused as a model file: 'archprof reads TorchScript (.pt, ...)'."""
    csv_report, other = tmp_path / "lenet5.csv", tmp_path / f"lenet5.{suffix}"
    for path in (csv_report, other):
        assert cli("summary", "lenet5", "-o", path).exit_code == 0
    result = cli("diff", csv_report, other)
    assert result.exit_code == 2
    assert "diff reads a report as CSV or JSON" in one_error_line(result)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--peak-flops", "0", "--peak-flops: the FLOP rate '0' must be at least 1 per second"),
        ("--peak-flops", "abc", "--peak-flops: "),
        ("--bandwidth", "abc", "--bandwidth: cannot read the bandwidth 'abc'"),
    ],
)
def test_profile_names_the_rate_option_it_cannot_read(option, value, message):
    """They said "the FLOP rate '0' must be at least 1 per second", naming no option."""
    result = cli("profile", "lenet5", option, value)
    assert result.exit_code == 2
    assert one_error_line(result).startswith(f"error: {message}")


def test_diff_of_a_json_report_with_a_number_past_pythons_digit_limit_says_so_plainly(tmp_path):
    """It ended in Python's advice: "use sys.set_int_max_str_digits() to increase the limit"."""
    report = tmp_path / "lenet5.json"
    assert cli("summary", "lenet5", "-o", report).exit_code == 0
    huge = tmp_path / "huge.json"
    huge.write_text(report.read_text().replace('"param_count": 156', '"param_count": ' + "9" * 5000, 1))
    result = cli("diff", report, huge)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "is not valid JSON: it holds a number of over" in line and "sys." not in line
