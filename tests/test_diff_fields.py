"""archprof diff's final receptive field and stride: each side's, the change, a bound marked,
a report that recorded none. Expected fields are worked by hand from r_l = r_{l-1} + (K_l - 1)
j_{l-1}, j_l = j_{l-1} S_l (docs/formulas.md), or the input-gradient box of tests/field_oracle.py."""

import csv
import io
import json
from fractions import Fraction

import pytest

import archprof
from archprof.diff import diff
from archprof.diff.changes import FinalField, Side, final_field
from archprof.passes.receptive_field import FieldMark
from tests.cli import cli, one_error_line
from tests.field_oracle import positive, unit_gradient_box
from tests.models import CircularlyPadded, PooledBlock, UnshuffledChannelPicked
from tests.test_diff_html import tables, totals_by_label

# OLD: two 3x3 convolutions, stride 1: r = 1 + 2 + 2 = 5, j = 1.
# NEW: a 3x3 stride 2 (r = 3, j = 2), then a 3x3 dilated 2, which spans 2 (3 - 1) + 1 = 5
# pixels: r = 3 + (5 - 1) 2 = 11, j = 2. Unpadded, on 1x32x32.
NETS = """from torch import nn


def old():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3))


def new():
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.Conv2d(4, 4, 3, dilation=2))


def upsampled():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3), nn.Upsample(scale_factor=2))
"""
OLD_FIELD, OLD_STRIDE, NEW_FIELD, NEW_STRIDE = 5, 1, 11, 2


@pytest.fixture
def nets(tmp_path):
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return f"{path}:old", f"{path}:new", f"{path}:upsampled"


def totals_rows(output: str) -> dict[str, list[str]]:
    """The table's totals rows by label, their cells split on runs of two spaces or more."""
    rows = {}
    for line in output.splitlines():
        for label in ("Final receptive field", "Final stride"):
            if line.strip().startswith(label):
                rows[label] = line.strip()[len(label) :].split()
    return rows


def test_the_final_field_and_stride_of_each_side_and_their_change(nets):
    old, new, _ = nets
    fields = diff(old, new, (1, 32, 32)).fields
    assert (fields.old.size, fields.old.stride, fields.new.size, fields.new.stride) == (5, 1, 11, 2)
    assert (fields.change("size"), fields.change("stride")) == (6, 1)
    assert fields.percent("size") == pytest.approx(120.0) and fields.percent("stride") == pytest.approx(100.0)
    assert fields.old.layer == fields.new.layer == "1" and not fields.old.bound


def test_every_format_shows_the_final_field(nets):
    old, new, _ = nets
    args = ("diff", old, new, "--input", "1x32x32")
    table = cli(*args)
    assert table.exit_code == 0, table.output
    rows = totals_rows(table.stdout)
    assert rows["Final receptive field"] == ["5x5", "11x11", "+6", "px", "+120.0%"]
    assert rows["Final stride"] == ["1x1", "2x2", "+1", "px", "+100.0%"]
    markdown = cli(*args, "-f", "markdown").stdout
    assert "| Final receptive field | 5x5 | 11x11 | +6 px | +120.0% |" in markdown
    assert "| Final stride | 1x1 | 2x2 | +1 px | +100.0% |" in markdown
    document = json.loads(cli(*args, "-f", "json").stdout)["final_receptive_field"]
    assert document["old"] == {"layer": "1", "receptive_field": 5, "effective_stride": 1, "receptive_field_note": ""}
    assert (document["new"]["receptive_field"], document["new"]["effective_stride"]) == (NEW_FIELD, NEW_STRIDE)
    assert (document["receptive_field_change"], document["effective_stride_change"]) == (6, 1)
    # CSV has no totals: each layer it lists has its field and stride on each side, as summary
    # writes them, then a "final" row with the final figures (smallest side) and changes.
    *rows, final = csv.DictReader(io.StringIO(cli(*args, "-f", "csv").stdout))
    # layer 0: 3x3 -> 3x3, stride 1 -> 2; layer 1: 5x5 -> 11x11, stride 1 -> 2 (a dilated stride 1).
    assert [(r["layer"], r["old_receptive_field"], r["new_receptive_field"]) for r in rows] == [
        ("0", "3x3", "3x3"),
        ("1", "5x5", "11x11"),
    ]
    assert [(r["old_effective_stride"], r["new_effective_stride"]) for r in rows] == [("1x1", "2x2")] * 2
    figures = ("receptive_field", "effective_stride")
    assert [final[f"{side}_{figure}"] for figure in figures for side in ("old", "new")] == ["5", "11", "1", "2"]
    assert (final["status"], final["receptive_field_change"], final["effective_stride_change"]) == ("final", "6", "1")


def test_the_csv_s_final_row_reads_in_pandas_and_filters_out(nets):
    """A pandas reader keeps the layers by status and finds the final figures in their row:
    the layers' MAC changes add up to the change of the totals, each total a sum of its rows."""
    import pandas

    old, new, _ = nets
    table = pandas.read_csv(io.StringIO(cli("diff", old, new, "--input", "1x32x32", "-f", "csv").stdout))
    layers, final = table[table.status != "final"], table[table.status == "final"]
    assert len(final) == 1 and list(layers.layer) == [0, 1]
    # OLD: 4 x 1 x 3 x 3 x 30 x 30 + 4 x 4 x 3 x 3 x 28 x 28; NEW: 4 x 9 x 15 x 15 + 4 x 4 x 9 x 11 x 11.
    old_macs, new_macs = 4 * 9 * 30 * 30 + 16 * 9 * 28 * 28, 4 * 9 * 15 * 15 + 16 * 9 * 11 * 11
    assert layers.macs_change.sum() == new_macs - old_macs
    final = final.iloc[0]
    assert (final.old_receptive_field, final.new_receptive_field, final.receptive_field_change) == ("5", "11", 6)
    assert (final.old_effective_stride, final.new_effective_stride, final.effective_stride_change) == ("1", "2", 1)


def test_the_hand_worked_fields_are_what_a_gradient_reaches(nets, tmp_path):
    """The oracle behind the numbers above: output unit (0, 0) of each net, unpadded, reads the
    input box [0, r - 1] in both dimensions; unit (0, 1) starts one stride to the right."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nets", tmp_path / "nets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for build, field, stride in ((module.old, OLD_FIELD, OLD_STRIDE), (module.new, NEW_FIELD, NEW_STRIDE)):
        net = positive(build())
        assert unit_gradient_box(net, (1, 32, 32), (0, 0)) == [(0, field - 1), (0, field - 1)]
        assert unit_gradient_box(net, (1, 32, 32), (0, 1))[1] == (stride, stride + field - 1)


def test_a_fractional_stride_after_upsampling(nets):
    """Nearest upsampling by 2 halves the jump: j = 1 / 2; each output unit reads one unit
    before it, so r stays 5. The stride shrinks by 1/2 px, -50%; JSON writes '1/2' as a report does."""
    old, _, upsampled = nets
    args = ("diff", old, upsampled, "--input", "1x32x32")
    assert totals_rows(cli(*args).stdout)["Final stride"] == ["1x1", "1/2x1/2", "-1/2", "px", "-50.0%"]
    document = json.loads(cli(*args, "-f", "json").stdout)["final_receptive_field"]
    assert (document["new"]["receptive_field"], document["new"]["effective_stride"]) == (5, "1/2")
    assert document["effective_stride_change"] == "-1/2"


BOUND, EXACT = "tests/models.py:UnshuffledChannelPicked", "tests/models.py:PooledBlock"


def test_a_bound_final_field_is_marked_as_compare_marks_it():
    """UnshuffledChannelPicked's unit reads one pixel (the gradient) where archprof gives its
    2x2 block's union, 2 px: '≤2x2' and the note under the totals; PooledBlock's 3x3 conv,
    2x2 pool: r = 3 + (2 - 1) 1 = 4, j = 2, exact, bare."""
    assert unit_gradient_box(positive(UnshuffledChannelPicked()), (1, 8, 8), (1, 1)) == [(2, 2), (2, 2)]
    assert unit_gradient_box(positive(PooledBlock()), (1, 8, 8), (1, 1)) == [(1, 4), (1, 4)]
    args = ("diff", BOUND, EXACT, "--input", "1x8x8")
    table = cli(*args)
    assert table.exit_code == 0, table.output
    assert totals_rows(table.stdout)["Final receptive field"] == ["≤2x2", "4x4", "+2", "px", "+100.0%"]
    text = " ".join(table.stdout.split())
    assert f"{BOUND}: receptive field is an upper bound: aten.slice in (model)" in text
    assert text.count("≤") == 1 and f"{EXACT}: receptive field" not in text
    markdown = cli(*args, "-f", "markdown").stdout
    assert "| Final receptive field | ≤2x2 | 4x4 | +2 px | +100.0% |" in markdown
    assert markdown.count("upper bound") == 1
    document = json.loads(cli(*args, "-f", "json").stdout)["final_receptive_field"]
    assert document["old"]["receptive_field_note"].startswith("an upper bound: aten.slice")
    assert document["new"]["receptive_field_note"] == ""
    backwards = cli("diff", EXACT, BOUND, "--input", "1x8x8")
    assert totals_rows(backwards.stdout)["Final receptive field"] == ["4x4", "≤2x2", "-2", "px", "-50.0%"]
    # The CSV writes the bound's figure and says why in its note, as the JSON does.
    final = list(csv.DictReader(io.StringIO(cli(*args, "-f", "csv").stdout)))[-1]
    assert (final["old_receptive_field"], final["new_receptive_field"], final["receptive_field_change"]) == (
        "2",
        "4",
        "2",
    )
    assert final["old_receptive_field_note"].startswith("an upper bound: aten.slice")
    page = tables(cli(*args, "-f", "html").stdout)
    field = totals_by_label(page)["Final receptive field"]
    assert field["cells"][1:] == ["≤2x2", "4x4", "+2 px", "+100.0%", "2.00x"] and field["class"] == "grew"
    assert [note.startswith(f"{BOUND}: receptive field is an upper bound: aten.slice") for note in page.notes] == [True]


UNDEFINED = "tests/models.py:CircularlyPadded"


def test_an_undefined_final_field_in_every_format():
    """CircularlyPadded's circular padding: unit (0, 0) reads input pixels 5..7 x 5..7, unit
    (0, 3) 5..7 x 2..4 (the gradient), copies written slice by slice that archprof cannot
    follow: it says undefined, and the diff has no change for it. PooledBlock beside it:
    4 px, stride 2 (worked above). The other totals are the two reports' own."""
    net = positive(CircularlyPadded())
    assert [unit_gradient_box(net, (1, 8, 8), (0, w)) for w in (0, 3)] == [[(5, 7), (5, 7)], [(5, 7), (2, 4)]]
    old, new = (archprof.analyze(spec, (1, 8, 8)).totals for spec in (UNDEFINED, EXACT))
    args = ("diff", UNDEFINED, EXACT, "--input", "1x8x8")
    reason = "undefined: aten.copy_ in (model)"

    table = cli(*args)
    assert table.exit_code == 0, table.output
    rows = totals_rows(table.stdout)
    assert rows["Final receptive field"] == ["undefined", "4x4", "n/a", "n/a"]
    assert rows["Final stride"] == ["undefined", "2x2", "n/a", "n/a"]
    assert f"{UNDEFINED}: receptive field is {reason}" in " ".join(table.stdout.split())

    markdown = cli(*args, "-f", "markdown").stdout
    assert "| Final receptive field | undefined | 4x4 | n/a | n/a |" in markdown
    assert "| Final stride | undefined | 2x2 | n/a | n/a |" in markdown
    assert f"| Parameters | {old.param_count} | {new.param_count} | +{new.param_count - old.param_count} |" in markdown

    document = json.loads(cli(*args, "-f", "json").stdout)
    fields = document["final_receptive_field"]
    assert (fields["old"]["receptive_field"], fields["old"]["effective_stride"]) == (None, None)
    assert fields["old"]["receptive_field_note"].startswith(reason)
    assert (fields["new"]["receptive_field"], fields["new"]["effective_stride"]) == (4, 2)
    assert fields["receptive_field_change"] is None and fields["effective_stride_change"] is None
    assert {t["metric"]: t["change"] for t in document["totals"]}["macs"] == new.macs - old.macs

    *layers, final = csv.DictReader(io.StringIO(cli(*args, "-f", "csv").stdout))
    assert [final[f"{side}_receptive_field"] for side in ("old", "new")] == ["undefined", "4"]
    assert [final[f"{side}_effective_stride"] for side in ("old", "new")] == ["undefined", "2"]
    assert final["receptive_field_change"] == final["effective_stride_change"] == ""
    assert final["old_receptive_field_note"].startswith(reason) and final["new_receptive_field_note"] == ""
    assert sum(int(row["activation_bytes_change"]) for row in layers) == new.activation_bytes - old.activation_bytes

    page = tables(cli(*args, "-f", "html").stdout)
    totals = totals_by_label(page)
    assert totals["Final receptive field"]["cells"][1:] == ["undefined", "4x4", "n/a", "n/a", "n/a"]
    assert totals["Final stride"]["cells"][1:] == ["undefined", "2x2", "n/a", "n/a", "n/a"]
    assert totals["Final receptive field"]["class"] is None  # neither grown nor shrunk
    assert totals["Parameters"]["cells"][5] == f"{new.param_count / old.param_count:.2f}x"
    assert any(f"{UNDEFINED}: receptive field is {reason}" in note for note in page.notes)


FIELD_COLUMNS = ("receptive_field", "effective_stride", "receptive_field_start", "covers_input", "receptive_field_note")


def without_fields(report: archprof.Report, path, suffix: str):
    """The report saved as an archprof before receptive fields wrote it: no field column."""
    target = path / f"before.{suffix}"
    if suffix == "json":
        document = json.loads(report.to_json())
        for layer in document["layers"]:
            for name in FIELD_COLUMNS:
                del layer[name]
        target.write_text(json.dumps(document))
        return target
    rows = list(csv.DictReader(io.StringIO(report.to_csv(), newline="")))
    header = [name for name in rows[0] if name not in FIELD_COLUMNS]
    with target.open("w", newline="") as file:
        writer = csv.DictWriter(file, header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return target


@pytest.mark.parametrize("suffix", ["csv", "json"])
def test_a_report_saved_without_fields_says_not_recorded(tmp_path, suffix):
    """LeNet-5's features: 5x5 conv (r 5), 2x2 pool stride 2 (r 6, j 2), 5x5 conv (r 6 + 4 x 2
    = 14), 2x2 pool stride 2 (r 14 + 1 x 2 = 16, j 4): the new side's 16 px, the old 'not recorded'."""
    before = without_fields(archprof.analyze("lenet5"), tmp_path, suffix)
    table = cli("diff", before, "lenet5")
    assert table.exit_code == 0, table.output
    rows = totals_rows(table.stdout)
    assert rows["Final receptive field"] == ["not", "recorded", "16x16", "n/a", "n/a"]
    assert rows["Final stride"] == ["not", "recorded", "4x4", "n/a", "n/a"]
    assert "before: receptive field is not recorded: the report has no receptive_field column" in table.stdout
    assert "layers: none added, removed or changed, 12 unchanged" in table.stdout
    document = json.loads(cli("diff", before, "lenet5", "-f", "json").stdout)["final_receptive_field"]
    assert document["old"]["receptive_field"] is None and document["receptive_field_change"] is None
    assert document["old"]["receptive_field_note"].startswith("not recorded")
    assert document["new"]["receptive_field"] == 16
    *rows, final = csv.DictReader(io.StringIO(cli("diff", before, "resnet18", "-f", "csv").stdout))
    assert rows and all(row["old_receptive_field"] == row["old_effective_stride"] == "" for row in rows)
    assert (final["old_receptive_field"], final["new_receptive_field"], final["receptive_field_change"]) == (
        "not recorded",
        "435",
        "",
    )
    assert final["old_receptive_field_note"].startswith("not recorded: the report has no receptive_field column")


def test_a_json_report_s_fields_read_back_as_the_model_s(nets, tmp_path):
    """A JSON report writes a field as a list ([5, 5]) and a fractional stride's entries as
    '1/2': read back, they diff as the model itself does."""
    old, _, upsampled = nets
    report = tmp_path / "upsampled.json"
    archprof.analyze(upsampled, (1, 32, 32)).to_json(report)
    from_json = diff(report, old, (1, 32, 32)).fields
    assert from_json == diff(upsampled, old, (1, 32, 32)).fields
    assert (from_json.old.size, from_json.old.stride) == (5, Fraction(1, 2))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("receptive_field", "wide", "receptive_field is '\"wide\"', not a list of numbers"),
        ("receptive_field", [True, 2], "receptive_field is '[true, 2]', not a list of numbers"),
        ("effective_stride", ["2x2"], "effective_stride is '[\"2x2\"]', not a list of numbers"),
        ("receptive_field_note", 3, "receptive_field_note is '3', not text"),
    ],
)
def test_a_json_report_s_bad_field_is_one_line(tmp_path, name, value, message):
    document = json.loads(archprof.analyze("lenet5").to_json())
    document["layers"][2][name] = value
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))
    result = cli("diff", bad, "lenet5")
    assert result.exit_code == 2, result.output
    assert f"bad.json, layer 2: {message}" in one_error_line(result)


@pytest.mark.parametrize(
    ("name", "value"), [("receptive_field", [10**60, 5]), ("effective_stride", ["1/" + "9" * 61, 1])]
)
def test_a_json_report_s_field_past_any_model_s_is_one_line(tmp_path, name, value):
    """A diff's percentages and ratios of fields are floats: a field of 4,000 digits was an
    OverflowError."""
    document = json.loads(archprof.analyze("lenet5").to_json())
    for layer in document["layers"]:
        if isinstance(layer[name], list):
            layer[name] = value
    big = tmp_path / "big.json"
    big.write_text(json.dumps(document))
    result = cli("diff", "lenet5", big)
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert f"big.json, layer 0: {name} is" in line and "larger than any model's figure" in line


def test_a_report_whose_old_final_field_or_stride_is_0_gives_no_percentage(tmp_path):
    """An edited report's 0x0 field, its 0 stride: the change is shown, its percentage n/a
    (a division by 0 was a traceback)."""
    document = json.loads(archprof.analyze("lenet5").to_json())
    for layer in document["layers"]:
        for name in ("receptive_field", "effective_stride"):
            if isinstance(layer[name], list):
                layer[name] = [0, 0]
    zero = tmp_path / "zero.json"
    zero.write_text(json.dumps(document))
    result = cli("diff", zero, "lenet5", "-f", "markdown")
    assert result.exit_code == 0, result.output
    field = next(line for line in result.output.splitlines() if "Final receptive field" in line)
    assert "0x0" in field and "16x16" in field and "n/a" in field


def side(*fields, note: str = "", output_shape: str = "1x8") -> Side:
    rows = [
        {
            "layer": f"l{i}",
            "output_shape": output_shape,
            "receptive_field": field,
            "effective_stride": None,
            "receptive_field_note": note,
        }
        for i, field in enumerate(fields)
    ]
    return Side("m", rows)


def test_the_final_field_passes_over_global_rows_and_says_undefined_or_none():
    """After a global pool (FieldMark.INPUT) the final field is the last spatial row's; an
    undefined one after it is 'undefined' with its note; no spatial row at all, 'none'."""
    assert final_field(side((3, 3), FieldMark.INPUT, None)).size == 3
    undefined = final_field(side((3, 3), FieldMark.UNDEFINED, FieldMark.INPUT, note="a mask"))
    assert undefined == FinalField("l1", missing="undefined", note="undefined: a mask")
    assert final_field(side(None, FieldMark.INPUT)).missing == "none"
    # A map whose every unit sees the whole input (8 positions past batch and channels): global.
    assert final_field(side((3, 3), FieldMark.INPUT, output_shape="1x4x2x4")).whole_input


def test_resnets_final_fields_by_hand():
    """The README's figures. ResNet-18: conv1 7x7/2 (r 7, j 2), max-pool 3/2 (r 11, j 4), then
    3x3 convolutions (each adds 2 j): layer1's 4 at j 4 (r 43); layer2's strided first (51,
    j 8) and 3 more (99); layer3 (115, j 16; 211); layer4 (243, j 32; 435). ResNet-34, with
    6, 8, 12 and 6 convolutions: 11 + 6 x 8 = 59; 67, + 7 x 16 = 179; 195, + 11 x 32 = 547;
    579, + 5 x 64 = 899. Stride 32 each."""
    fields = diff("resnet18", "resnet34").fields
    assert (fields.old.size, fields.new.size, fields.old.stride, fields.new.stride) == (435, 899, 32, 32)
    rows = totals_rows(cli("diff", "resnet18", "resnet34").stdout)
    assert rows["Final receptive field"] == ["435x435", "899x899", "+464", "px", "+106.7%"]
