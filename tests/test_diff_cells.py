"""A report's cells read back by `diff` exactly as archprof writes them: a cell in another
notation (int() reads '117_600', ' +0 ' and other scripts' digits) is one error line naming
the row, and every report archprof writes reads back to its own values."""

import csv
import io
import json

import pytest
from torch import nn

import archprof
from archprof.diff import diff, read_csv_layers
from archprof.errors import ArchprofError
from archprof.passes.receptive_field import FieldMark
from tests.cli import cli, one_error_line
from tests.models import EveryKindOfCell


@pytest.fixture(scope="module")
def lenet5():
    return archprof.analyze("lenet5")


def _edited_csv(report, path, column: str, cell: str) -> None:
    """`report`'s CSV at `path`, with `column` of its second layer (line 3) set to `cell`."""
    rows = list(csv.reader(io.StringIO(report.to_csv(), newline="")))
    rows[2][rows[0].index(column)] = cell
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


# Each a cell that Python's int(), Fraction() or a \d regex reads, in a notation no report writes.
CELLS_NO_REPORT_WRITES = [
    ("macs", "117_600"),
    ("macs", " 117600"),
    ("macs", "+117600"),
    ("macs", "١١٧٦٠٠"),  # Arabic-Indic digits
    ("macs", "0117600"),
    ("call", " +0 "),
    ("call", "+0"),
    ("call", "-0"),
    ("param_count", "０"),  # a fullwidth zero
    ("output_shape", "١x٦x٢٨x٢٨"),
    ("output_shape", "01x6x28x28"),
    ("output_shape", "1x6x28x28 "),
    ("receptive_field", "٥x٥"),
    ("receptive_field", "-5x-5"),
    ("receptive_field", "1/2x1/2"),  # a fraction is a stride's, never a field's
    ("effective_stride", "+1x1"),
    ("effective_stride", "1_0x1"),
    ("effective_stride", "1.5x1"),
    ("effective_stride", " 1/2x1/2"),
    ("effective_stride", "-1/2x1/2"),
]


@pytest.mark.parametrize(("column", "cell"), CELLS_NO_REPORT_WRITES)
def test_a_csv_cell_no_report_writes_is_one_error_line_naming_the_row(tmp_path, lenet5, column, cell):
    bad = tmp_path / "bad.csv"
    _edited_csv(lenet5, bad, column, cell)
    result = cli("diff", bad, "lenet5")
    assert result.exit_code == 2, result.output
    assert f"bad.csv, line 3: {column} is " in one_error_line(result)


@pytest.mark.parametrize("cell", [" 0x0", "+0x0", "٠x٠", "0_0x0", "-0x0", "1/2x0"])
def test_a_field_start_no_report_writes_is_refused_naming_the_row(tmp_path, lenet5, cell):
    """receptive_field_start, which diff does not compare, is read by `read_csv_layers`."""
    bad = tmp_path / "bad.csv"
    _edited_csv(lenet5, bad, "receptive_field_start", cell)
    with pytest.raises(ArchprofError, match=r"bad\.csv, line 3: receptive_field_start is "):
        read_csv_layers(bad)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("output_shape", "١x٦x٢٨x٢٨"),
        ("output_shape", "1x6x28x028"),
        ("receptive_field", ["5", 5]),  # a whole entry is a JSON number
        ("receptive_field", [-5, 5]),
        ("effective_stride", ["+1/2", "1/2"]),
        ("effective_stride", ["١/٢", "1/2"]),
        ("effective_stride", [" 1/2", "1/2"]),
    ],
)
def test_a_json_string_no_report_writes_is_one_error_line_naming_the_layer(tmp_path, lenet5, name, value):
    document = json.loads(lenet5.to_json())
    document["layers"][1][name] = value
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document), encoding="utf-8")
    result = cli("diff", bad, "lenet5")
    assert result.exit_code == 2, result.output
    assert f"bad.json, layer 1: {name} is " in one_error_line(result)


@pytest.fixture(scope="module")
def every_cell():
    return archprof.analyze(EveryKindOfCell(), input_size=(1, 8, 8))


@pytest.fixture(scope="module")
def past_int64():
    """A layer of 2**64 MACs: 2**44 samples of 1024 features through a 1024 x 1024 Linear."""
    return archprof.analyze(nn.Linear(1024, 1024), input_size=(1024,), batch=2**44)


def test_every_kind_of_cell_a_report_writes_reads_back(tmp_path, every_cell, past_int64):
    """The cells the reader must keep reading: the reports hold each (asserted), and their
    CSV, rolled up (`--depth`) too, and their JSON diff as the report itself does."""
    assert max(row["macs"] for row in past_int64.rows()) >= 2**63
    rows = every_cell.rows()
    assert any(row["call"] == -1 for row in rows)
    assert any(any(part < 0 for part in row["receptive_field_start"] or ()) for row in rows if row["call"] >= 0)
    assert any(str(part) == "1/2" for row in rows for part in row["effective_stride"] or () if row["call"] >= 0)
    assert {FieldMark.INPUT, FieldMark.UNDEFINED} <= {row["receptive_field"] for row in rows}
    assert FieldMark.UNDEFINED in {row["receptive_field_start"] for row in rows}
    for report in (every_cell, every_cell.rollup(1), past_int64):
        path, document = tmp_path / "report.csv", tmp_path / "report.json"
        report.to_csv(path)
        report.to_json(document)
        assert read_csv_layers(path) == report.rows()
        for side in (path, document):
            changes = diff(side, report)
            assert not changes.layers and all(total.change == 0 for total in changes.totals)
            assert changes.fields.old == changes.fields.new
        result = cli("diff", path, document)
        assert result.exit_code == 0, result.output


def test_a_depth_report_from_the_command_line_reads_back(tmp_path):
    """`summary --depth 1`'s CSV and JSON diff as one report: no layer changed."""
    paths = [tmp_path / "depth.csv", tmp_path / "depth.json"]
    for path in paths:
        assert cli("summary", "resnet18", "--depth", "1", "-o", path).exit_code == 0
    result = cli("diff", *paths, "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["unchanged_layers"] == len(read_csv_layers(paths[0])) > 1
