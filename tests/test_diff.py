"""archprof diff: per-layer changes matched by layer and call, and total changes."""

import csv
import io
import json
import warnings

import markdown_it
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import archprof
from archprof.cli import app
from archprof.diff import diff, read_csv_layers, read_csv_report
from archprof.errors import ArchprofError
from archprof.load import load_model
from tests.cli import cli, one_error_line
from tests.models import OwnOperationsAroundAChild

runner = CliRunner()
TOTALS = ("param_count", "macs", "flops", "activation_bytes")


def invoke(*args):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def resnets():
    return archprof.analyze("resnet18"), archprof.analyze("resnet34")


def test_totals_are_the_difference_of_the_analyses(resnets):
    old, new = resnets
    result = diff("resnet18", "resnet34")
    for total in result.totals:
        assert total.old == getattr(old.totals, total.metric)
        assert total.new == getattr(new.totals, total.metric)
        assert total.change == getattr(new.totals, total.metric) - getattr(old.totals, total.metric)
        assert total.percent == pytest.approx(100 * total.change / total.old)
    assert [t.metric for t in result.totals] == list(TOTALS)


def _widths_changed() -> tuple[nn.Module, nn.Module]:
    """Two small networks: the second's first convolution wider, a layer added after it."""
    old = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    new = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 4, 3), nn.Conv2d(4, 4, 1))
    return old, new


def test_the_diff_as_a_dataframe_holds_the_layers_changed_typed():
    """`to_dataframe()`: a row per layer added, removed or changed, the CSV's columns typed:
    counts Int64 (<NA> on the side a layer is missing from), ratios float64, the rest strings.
    The oracles: the parameters PyTorch counts per layer, and the CSV's lines."""
    old, new = _widths_changed()
    result = diff(archprof.analyze(old, input_size=(3, 16, 16)), archprof.analyze(new, input_size=(3, 16, 16)))
    frame = result.to_dataframe()
    assert list(frame["status"]) == ["changed", "changed", "changed", "added"]  # the ReLU's map wider too
    assert list(frame["layer"]) == ["0", "1", "2", "3"]
    assert frame["call"].dtype == "Int64" and frame["old_param_count"].dtype == "Int64"
    assert frame["macs_ratio"].dtype == "float64" and frame["layer"].dtype == "string"
    counted = frame.set_index("layer")
    for layer in ("0", "2"):
        before, after = (sum(p.numel() for p in model[int(layer)].parameters()) for model in (old, new))
        assert counted.loc[layer, ["old_param_count", "new_param_count"]].tolist() == [before, after]
        assert counted.loc[layer, "param_count_ratio"] == after / before
    assert counted.loc["3", "old_param_count"] is pd.NA and counted.loc["3", "old_module_type"] is pd.NA
    assert counted.loc["3", "param_count_change"] == sum(p.numel() for p in new[3].parameters())
    assert frame["param_count_change"].sum() == sum(p.numel() for p in new.parameters()) - sum(
        p.numel() for p in old.parameters()
    )
    lines = [line for line in csv.DictReader(io.StringIO(result.to_csv())) if line["status"] != "final"]
    assert len(lines) == len(frame)
    for line, (_, row) in zip(lines, frame.iterrows(), strict=True):
        assert {name: line[name] for name in frame.columns} == {
            name: "" if value is pd.NA or value != value else str(value) for name, value in row.items()
        }
    assert set(lines[0]) - set(frame.columns) == {
        "receptive_field_change",
        "effective_stride_change",
        "receptive_field_ratio",
        "effective_stride_ratio",
    }


class _OwnOperation(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(8, 8)
        self.width = width

    def forward(self, x):
        return self.linear(x)[:, : self.width] * 2  # the model's own operations: the layer ''


def test_the_dataframe_names_the_models_own_row_as_the_report_does():
    """'' (the model's own operations), not <NA>, which groupby drops."""
    old, new = (archprof.analyze(_OwnOperation(width), input_size=(8,)) for width in (8, 4))
    frame = diff(old, new).to_dataframe()
    assert "" in set(frame["layer"]) and not frame["layer"].isna().any()
    assert frame.groupby("layer")["activation_bytes_change"].sum()[""] == (4 - 8) * 4  # the product (the slice: a view)


def test_a_diffs_repr_says_the_models_the_layers_and_the_totals_change(resnets):
    """It printed every field of every row. The figures: the analyses' totals."""
    result = diff(*resnets)
    old, new = (report.totals.param_count for report in resnets)
    text = repr(result)
    assert text.startswith("<archprof diff of resnet18 → resnet34: layers: 56 added, 69 unchanged>")
    assert f"Parameters 11.69 M → 21.80 M (+{100 * (new - old) / old:.1f}%)" in text and ".to_dataframe()" in text
    assert len(text.splitlines()) == 3
    empty = diff(resnets[0], resnets[0])
    assert repr(empty).startswith("<archprof diff of resnet18 → resnet18: layers: none added, removed or changed")
    assert empty.to_dataframe().empty and list(empty.to_dataframe().columns) == list(result.to_dataframe().columns)


def test_layers_are_matched_by_layer_and_call(resnets):
    old, new = resnets
    result = diff(old, new)
    old_keys = set(zip(old.columns["layer"], old.columns["call"], strict=True))
    new_keys = set(zip(new.columns["layer"], new.columns["call"], strict=True))
    added = {(c.layer, c.call) for c in result.layers if c.status == "added"}
    removed = {(c.layer, c.call) for c in result.layers if c.status == "removed"}
    assert added == new_keys - old_keys and not removed
    assert ("layer1.2.conv1", 0) in added and ("layer1.2.relu", 1) in added
    # Shared layers are identical but for the final fc (same shape) - nothing else changed.
    changed = [c for c in result.layers if c.status == "changed"]
    assert changed == []
    assert result.unchanged == len(old_keys)
    # Per-layer deltas add up to the total change.
    for metric in TOTALS:
        total = next(t for t in result.totals if t.metric == metric)
        assert sum(c.delta(metric) for c in result.layers) == total.change
    backwards = diff(new, old)
    assert {(c.layer, c.call) for c in backwards.layers if c.status == "removed"} == added


def test_changed_rows_from_a_different_input(tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    assert invoke("summary", "resnet18", "-f", "csv", "-o", str(first)).exit_code == 0
    assert invoke("summary", "resnet18", "-f", "csv", "-i", "3x160x160", "-o", str(second)).exit_code == 0
    result = diff(str(first), str(second))
    assert result.old == "a" and result.new == "b"
    conv1 = next(c for c in result.layers if c.layer == "conv1")
    assert conv1.status == "changed"
    assert conv1.old["output_shape"] == "1x64x112x112" and conv1.new["output_shape"] == "1x64x80x80"
    assert conv1.delta("param_count") == 0 and conv1.delta("macs") < 0
    assert next(t for t in result.totals if t.metric == "param_count").change == 0
    same = diff(str(first), "resnet18")  # a CSV against a model spec
    assert same.layers == [] and all(t.change == 0 for t in same.totals)


def test_diff_command_on_models_and_csv(tmp_path, resnets):
    result = invoke("diff", "resnet18", "resnet34")
    assert result.exit_code == 0, result.output
    for text in ("resnet18 → resnet34", "+10.11 M", "+86.5%", "layer1.2.conv1", "added"):
        assert text in result.output
    report = tmp_path / "r18.csv"
    invoke("summary", "resnet18", "-f", "csv", "-o", str(report))
    document = json.loads(invoke("diff", str(report), "resnet34", "-f", "json").stdout)
    old, new = resnets
    params = next(t for t in document["totals"] if t["metric"] == "param_count")
    assert params["change"] == new.totals.param_count - old.totals.param_count == 10_108_160
    rows = list(csv.DictReader(io.StringIO(invoke("diff", "resnet18", "resnet34", "-f", "csv").stdout)))
    *layers, final = rows
    assert {r["status"] for r in layers} == {"added"} and final["status"] == "final"
    assert sum(int(r["macs_change"]) for r in layers) == new.totals.macs - old.totals.macs
    markdown = invoke("diff", "resnet18", "resnet34", "-f", "markdown").stdout
    assert "| Parameters | 11.69 M | 21.80 M | +10.11 M | +86.5% |" in markdown


def test_model_options_where_both_sides_are_reports_are_refused_not_ignored(tmp_path):
    """As summary refuses --arg for a model file: an option nothing reads is a mistake said."""
    before, after = tmp_path / "before.csv", tmp_path / "after.json"
    invoke("summary", "lenet5", "-f", "csv", "-o", str(before))
    invoke("summary", "lenet5", "-f", "json", "-o", str(after))
    result = invoke("diff", str(before), str(after), "--weights", "none.pt", "--fold-bn", "-i", "1x64x64")
    assert result.exit_code == 2
    assert result.output.startswith("error: --input, --weights and --fold-bn (Python: inputs, weights, fold_bn) apply")
    result = invoke("diff", str(before), str(after), "--batch", "2")
    assert result.exit_code == 2 and "--batch (Python: batch) applies to a model to analyse" in result.output
    with pytest.raises(ArchprofError, match=r"^--dtype \(Python: dtype\) applies to a model to analyse"):
        archprof.diff.diff(str(before), archprof.analyze("lenet5"), dtype="float16")
    # A tensor has no truth value: told by identity and type, not ==.
    with pytest.raises(ArchprofError, match=r"^--input \(Python: inputs\) applies"):
        archprof.diff.diff(str(before), str(after), inputs=torch.zeros(1, 1, 32, 32))
    assert invoke("diff", str(before), "lenet5", "--batch", "2").exit_code == 0  # one side a model: it applies
    assert invoke("diff", str(before), str(after)).exit_code == 0


def test_diff_command_with_input_and_output(tmp_path):
    target = tmp_path / "diff.json"
    result = invoke("diff", "lenet5", "lenet5", "--batch", "2", "--output", str(target))
    assert result.exit_code == 0
    assert json.loads(target.read_text())["unchanged_layers"] == 12


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b\n1,2\n", "not an archprof CSV report"),
        (None, "does not exist"),
        ("BAD", "line 3: macs is 'many', not a whole number"),
        ("NEGATIVE", "line 3: macs is '-5', below 0, which no report writes there"),
        ("CALL", "line 3: call is '-2', below -1, which no report writes there"),
    ],
)
def test_bad_reports_exit_2(tmp_path, content, message):
    good = tmp_path / "good.csv"
    invoke("summary", "lenet5", "-f", "csv", "-o", str(good))
    bad = tmp_path / "bad.csv"
    if content in ("BAD", "NEGATIVE", "CALL"):
        lines = good.read_text().splitlines()
        header = lines[0].split(",")
        cells = next(csv.reader([lines[2]]))
        column, value = {"BAD": ("macs", "many"), "NEGATIVE": ("macs", "-5"), "CALL": ("call", "-2")}[content]
        cells[header.index(column)] = value
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(cells)
        lines[2] = buffer.getvalue().rstrip("\n")
        bad.write_text("\n".join(lines) + "\n")
    elif content is not None:
        bad.write_text(content)
    result = invoke("diff", str(good), str(bad))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_a_report_of_more_rows_than_any_networks_is_refused_before_its_rows_are_read(tmp_path, monkeypatch):
    """Reports of tiny rows within the 256 MiB a report may be took gigabytes to read (8 MiB
    of CSV rows: 1.7 GB, 11 s), which no network's report nears (the largest hub model's has
    2,179 rows): a report of more than MOST_ROWS is refused, CSV or JSON, at the first row
    past it. Here with a bound of 5 rows, which lenet5's report passes."""
    import archprof.diff

    report = archprof.analyze("lenet5")
    assert len(report.layers) > 5
    (tmp_path / "r.csv").write_text(report.to_csv())
    (tmp_path / "r.json").write_text(report.to_json())
    monkeypatch.setattr(archprof.diff, "MOST_ROWS", 5)
    with pytest.raises(ArchprofError, match=r"r\.csv, line 7: more than 5 rows, more than a report of any network"):
        read_csv_layers(tmp_path / "r.csv")
    with pytest.raises(ArchprofError, match=r"r\.json, layer 5: more than 5 rows, more than a report of any network"):
        diff(tmp_path / "r.json", "lenet5")


def _renamed(report_csv: str, row: int, name: str) -> str:
    """The CSV `report_csv` with the layer of its row `row` (from 0) renamed `name`."""
    lines = report_csv.splitlines()
    cells = lines[row + 1].split(",")
    cells[0] = name
    lines[row + 1] = ",".join(cells)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("a." + "a" * 511, "nested 2 levels deep is named in 513 characters, more than the 512 a report's layer"),
        (".".join(["a"] * 129), "is named in 129 levels, more than the 128 levels a report's layer may have"),
    ],
    ids=["long", "deep"],
)
def test_a_report_layer_named_past_any_networks_module_is_refused(tmp_path, name, says):
    """A 160 KB CSV whose layer is named in 80,000 levels ('a.a.a...') took 3.5 GB and ended
    in a MemoryError traceback (each ancestor's name kept), and one of 990 levels crashed
    the tree's recursion: a name past MOST_LAYER_LEVELS (128), or a nested one past
    MOST_LAYER_CHARS (512), is refused, in one line, from `diff` and `check --baseline`
    alike; one at both bounds (128 levels of 3 characters, 511 in all) is read, as is a
    name of one level, any length (`test_a_report_reads_back_a_name_longer_than_a_csv_field_may_be`)."""
    report = archprof.analyze("lenet5").to_csv()
    assert report.splitlines()[1].split(",")[0] == "features.0"  # the row renamed
    (tmp_path / "named.csv").write_text(_renamed(report, 0, name))
    result = cli("diff", tmp_path / "named.csv", "lenet5")
    assert result.exit_code == 2
    assert "named.csv, line 2: layer '" in one_error_line(result) and says in one_error_line(result)
    result = cli("check", "lenet5", "--baseline", tmp_path / "named.csv", "--max-increase", "macs=5%")
    assert result.exit_code == 2 and says in one_error_line(result)
    at_the_bounds = ".".join(["a00"] * 128)
    assert len(at_the_bounds) == 511
    (tmp_path / "bounds.csv").write_text(_renamed(report, 0, at_the_bounds))
    assert cli("diff", tmp_path / "bounds.csv", "lenet5").exit_code == 0


def test_a_report_naming_more_modules_than_a_report_holds_is_refused(tmp_path, monkeypatch):
    """Each distinct module a report's names hold, containers too, costs memory in every
    view (the tree): past MOST_MODULES in all, the report is refused. Here with a bound of
    the count of lenet5's (features, features.0, ...: each prefix of a name once, the model
    uncounted), which its report passes and one with its first row renamed 'x.y.z.w' (four
    modules for one) does not."""
    import archprof.diff

    report = archprof.analyze("lenet5").to_csv()
    (tmp_path / "plain.csv").write_text(report)
    (tmp_path / "more.csv").write_text(_renamed(report, 0, "x.y.z.w"))
    names = {row["layer"] for row in read_csv_layers(tmp_path / "plain.csv")}
    modules = {name[:end] for name in names if name for end in [*(i for i, c in enumerate(name) if c == "."), None]}
    monkeypatch.setattr(archprof.diff, "MOST_MODULES", len(modules))
    read_csv_layers(tmp_path / "plain.csv")
    with pytest.raises(ArchprofError, match=r"more\.csv, line \d+: its layers name more than \d+ modules"):
        read_csv_layers(tmp_path / "more.csv")


def test_a_json_report_of_more_values_than_a_report_holds_is_refused_unparsed(tmp_path):
    """255 MiB of `[]` took 6.8 GB and a minute to parse before "no layers" was said: values
    are counted in the text first (a report's row holds 30 to 40; 100 a row allowed)."""
    bomb = tmp_path / "bomb.json"
    bomb.write_text('{"layers": [' + "[]," * 2_600_000 + "0]}")
    result = cli("diff", bomb, "lenet5")
    assert result.exit_code == 2
    assert "holds over 5,000,000 JSON values, more than a report of 50,000 layers" in one_error_line(result)


def test_the_markdown_title_shows_the_names_as_text(tmp_path):
    """A CSV report's name is its file's: "<img src=x onerror=...>" was written as HTML."""
    name = "<img src=x onerror=alert(1)> *[a](b)"
    report = tmp_path / f"{name}.csv"
    archprof.analyze("lenet5").to_csv(report)
    result = invoke("diff", str(report), "lenet5", "-f", "markdown")
    assert result.exit_code == 0, result.output
    (heading,) = [t for t in markdown_it.MarkdownIt("commonmark").parse(result.stdout) if t.type == "inline"][:1]
    shown = [child for child in heading.children if child.content or child.type != "text"]
    assert [child.type for child in shown] == ["strong_open", "text", "strong_close"]
    assert heading.content.startswith("**\\<img") and shown[1].content == f"{name} → lenet5"


def test_diff_markdown_has_the_tables_columns_and_writes_names_as_summary_does(tmp_path):
    """The Markdown had no Type column and put names in backticks, where summary's escapes them."""
    old, new = tmp_path / "old.py", tmp_path / "new.py"
    old.write_text("from torch import nn\n\ndef net():\n    return nn.Sequential(nn.Conv2d(1, 4, 3))\n")
    new.write_text(
        "from torch import nn\n\ndef net():\n    model = nn.Sequential(nn.Conv2d(1, 4, 3))\n"
        "    model.add_module('odd_name*x', nn.ReLU())\n    return model\n"
    )
    args = ("diff", f"{old}:net", f"{new}:net", "--input", "1x8x8")
    table_header = next(line for line in invoke(*args).stdout.splitlines() if " Layer " in line)
    markdown = invoke(*args, "-f", "markdown").stdout
    header = next(line for line in markdown.splitlines() if "| Layer |" in line)
    assert " ".join(header.replace("|", " ").split()) == " ".join(table_header.split())
    summary = invoke("summary", f"{new}:net", "--input", "1x8x8", "-f", "markdown").stdout
    summary_name = next(cell.strip() for line in summary.splitlines() for cell in line.split("|") if "odd" in cell)
    diff_cell = next(cell.strip() for line in markdown.splitlines() for cell in line.split("|") if "odd" in cell)
    assert diff_cell == summary_name


def test_a_layer_whose_type_changed_shows_both_types(tmp_path):
    """A ReLU swapped for a GELU at the same place: the Type cell showed only 'GELU', where
    the output shape beside it shows 'old → new'. The table, Markdown and HTML show both."""
    old, new = tmp_path / "old.py", tmp_path / "new.py"
    for path, activation in ((old, "ReLU"), (new, "GELU")):
        path.write_text(
            f"from torch import nn\n\ndef net():\n    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.{activation}())\n"
        )
    args = ("diff", f"{old}:net", f"{new}:net", "--input", "1x8x8")
    row = next(line for line in invoke(*args).stdout.splitlines() if line.split()[:2] == ["changed", "1"])
    assert "ReLU → GELU" in row, row
    markdown = invoke(*args, "-f", "markdown").stdout
    assert any("ReLU → GELU" in line for line in markdown.splitlines() if line.startswith("|")), markdown
    assert '<td class="text">ReLU → GELU</td>' in invoke(*args, "-f", "html").stdout


@pytest.mark.parametrize("digits", [400, 5000])
def test_a_figure_no_model_has_is_refused_in_one_line(tmp_path, digits):
    """A 400-digit count, which int() reads, overflowed the floats of the human units and of
    the percentages: a traceback. int() refuses 5,000 digits: that was 'not a whole number'."""
    report = tmp_path / "big.csv"
    archprof.analyze("lenet5").to_csv(report)
    rows = list(csv.reader(io.StringIO(report.read_text(), newline="")))
    rows[1][rows[0].index("macs")] = "9" * digits
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    report.write_text(buffer.getvalue())
    for format in ("table", "json", "csv"):
        result = cli("diff", "lenet5", report, "-f", format)
        assert result.exit_code == 2, result.output
        error = one_error_line(result)
        assert "big.csv, line 2: macs is '999" in error and "larger than any model's figure" in error


def test_a_report_cut_short_says_its_row_ends_early(tmp_path):
    """The missing cells read as None: "line 3: call is None, not a whole number"."""
    report = tmp_path / "cut.csv"
    archprof.analyze("lenet5").to_csv(report)
    lines = report.read_text().splitlines()
    report.write_text("\n".join([*lines[:2], "features.1,Tanh"]) + "\n")
    result = cli("diff", report, "lenet5")
    assert result.exit_code == 2, result.output
    assert one_error_line(result).endswith("cut.csv, line 3: the row ends before its call cell: is the file cut short?")


def test_a_report_of_its_header_alone_is_refused(tmp_path):
    """It read as a report of no layers: every layer of the other side 'removed', exit 0."""
    report = tmp_path / "header.csv"
    archprof.analyze("lenet5").to_csv(report)
    report.write_text(report.read_text().splitlines()[0] + "\n")
    result = cli("diff", "lenet5", report)
    assert result.exit_code == 2, result.output
    assert one_error_line(result).endswith("header.csv has no rows: a report has one per layer; is the file cut short?")


def test_json_reports_diff_as_their_csv_and_their_models_do(tmp_path):
    """`summary -f json` writes a report diff could not read ('cannot load r.json')."""
    for name in ("resnet18", "resnet34"):
        assert invoke("summary", name, "-i", "3x64x64", "-o", str(tmp_path / f"{name}.json")).exit_code == 0
        assert invoke("summary", name, "-i", "3x64x64", "-o", str(tmp_path / f"{name}.csv")).exit_code == 0
    from_json = diff(tmp_path / "resnet18.json", str(tmp_path / "resnet34.json"))
    from_csv = diff(str(tmp_path / "resnet18.csv"), tmp_path / "resnet34.csv")
    assert from_json.layers == from_csv.layers and from_json.totals == from_csv.totals
    params = next(t for t in from_json.totals if t.metric == "param_count")
    from archprof.zoo import MODELS

    built = {name: sum(p.numel() for p in MODELS[name].build().parameters()) for name in ("resnet18", "resnet34")}
    assert (params.old, params.new) == (built["resnet18"], built["resnet34"])
    same = cli("diff", tmp_path / "resnet18.json", "resnet18", "-i", "3x64x64")
    assert same.exit_code == 0 and "layers: none added, removed or changed, 69 unchanged" in same.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[[", "bad.json is not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "bad.json is not valid JSON"),
        ('{"layers": 5}', "not an archprof JSON report"),
        ('{"layers": []}', "not an archprof JSON report"),
        ('{"layers": [3]}', "bad.json, layer 0: not an object"),
        ('{"layers": [{"layer": "a"}]}', "bad.json, layer 0: no call"),
        ("LAYER", """bad.json, layer 1: macs is '"many"', not a report's"""),
        ("BOOL", "bad.json, layer 1: call is 'true', not a report's"),
        ("NEGATIVE", "bad.json, layer 1: param_count is '-1', not a report's"),
        ('{"layers": [{"macs": 1' + "0" * 5000 + "}]}", "bad.json is not valid JSON"),
    ],
)
def test_a_bad_json_report_is_one_line(tmp_path, text, message):
    bad = tmp_path / "bad.json"
    if text in ("LAYER", "BOOL", "NEGATIVE"):
        document = json.loads(archprof.analyze("lenet5").to_json())
        column, value = {"LAYER": ("macs", "many"), "BOOL": ("call", True), "NEGATIVE": ("param_count", -1)}[text]
        document["layers"][1][column] = value
        text = json.dumps(document)
    bad.write_text(text)
    result = cli("diff", bad, "lenet5")
    assert result.exit_code == 2, result.output
    assert message in one_error_line(result)


def test_a_report_reads_back_a_name_longer_than_a_csv_field_may_be(tmp_path):
    """csv reads cells up to 131,072 characters; archprof writes a module's name whole."""
    name = "A" * 200_000
    model = nn.Sequential()
    model.add_module(name, nn.Conv2d(3, 4, 3))
    report = tmp_path / "long.csv"
    archprof.analyze(model, (3, 8, 8)).to_csv(report)
    limit = csv.field_size_limit()
    result = cli("diff", report, report, "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["unchanged_layers"] == 1
    assert [row["layer"] for row in read_csv_layers(report)] == [name]
    assert csv.field_size_limit() == limit  # raised for the reading only


def test_model_files_are_models_to_diff(tmp_path):
    """A .pt or .pt2 file is a model, as for summary, not a CSV report to read."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    torch.jit.save(torch.jit.script(model), str(tmp_path / "model.pt"))
    torch.export.save(torch.export.export(model, (torch.randn(2, 3, 16, 16),)), str(tmp_path / "model.pt2"))
    for old, new in (("model.pt", "model.pt2"), ("model.pt2", "model.pt2")):
        result = cli("diff", tmp_path / old, tmp_path / new, "-i", "3x16x16", "-f", "json")
        assert result.exit_code == 0, result.output
        params = next(t for t in json.loads(result.stdout)["totals"] if t["metric"] == "param_count")
        assert params["old"] == params["new"] == 4 * 3 * 3 * 3 + 4


def test_an_unknown_model_exits_2():
    result = invoke("diff", "resnet18", "resnet35")
    assert result.exit_code == 2
    assert "unknown model 'resnet35'" in result.output


def test_read_csv_report_types(tmp_path):
    path = tmp_path / "vgg.csv"
    archprof.analyze("vgg16").to_csv(path)
    side = read_csv_report(path)
    assert side.total("param_count") == 138_357_544
    assert all(isinstance(row["call"], int) for row in side.rows)


def test_the_layer_count_line_says_what_happened_to_them():
    """resnet18 → resnet34 added 56 layers and changed none: it said '56 layers changed'."""
    result = cli("diff", "resnet18", "resnet34")
    assert result.exit_code == 0, result.output
    assert "layers: 56 added, 69 unchanged" in result.stdout
    assert "**layers: 56 added, 69 unchanged**" in cli("diff", "resnet18", "resnet34", "-f", "markdown").stdout


# OLD: conv 3 -> 4, 3x3 on 3x8x8 (out 4x6x6), a ReLU, a 2x2 max pool (4x3x3).
# NEW: conv 3 -> 6, 5x5 (out 6x4x4), the ReLU, then a 1x1 conv 6 -> 1 (1x4x4); the pool removed.
RATIO_NETS = """from collections import OrderedDict

from torch import nn


def old():
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), act=nn.ReLU(), pool=nn.MaxPool2d(2)))


def new():
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 6, 5), act=nn.ReLU(), head=nn.Conv2d(6, 1, 1)))
"""


def test_json_and_csv_carry_each_ratio_new_over_old(tmp_path):
    """new / old as the float nearest the quotient: of each total and the final field and stride
    (JSON) and of each changed layer's metrics (JSON and CSV, whose ratios come after every
    column it had before); none (null, empty) for a layer added or removed or an old figure of 0.
    Parameters are torch's count of the models; MACs C_out x C_in x k x k per output pixel;
    activation bytes float32 outputs; fields by hand: old 3 px then the pool's 4 px at stride 2,
    new 5 px at stride 1."""
    import runpy

    path = tmp_path / "nets.py"
    path.write_text(RATIO_NETS)
    built = runpy.run_path(str(path))
    old_model, new_model = built["old"](), built["new"]()
    params = [sum(p.numel() for p in model.parameters()) for model in (old_model, new_model)]
    old_conv, new_conv = 4 * 3 * 9 * 36, 6 * 3 * 25 * 16
    macs = [old_conv, new_conv + 1 * 6 * 16]
    activations = [4 * (2 * 4 * 36 + 4 * 9), 4 * (2 * 6 * 16 + 16)]
    args = ("diff", f"{path}:old", f"{path}:new", "--input", "3x8x8")

    document = json.loads(cli(*args, "-f", "json").stdout)
    totals = {total["metric"]: total["ratio"] for total in document["totals"]}
    assert totals["param_count"] == params[1] / params[0]
    assert totals["macs"] == totals["flops"] == macs[1] / macs[0]
    assert totals["activation_bytes"] == activations[1] / activations[0]
    final = document["final_receptive_field"]
    assert (final["receptive_field_ratio"], final["effective_stride_ratio"]) == (5 / 4, 1 / 2)
    layers = {layer["layer"]: layer["ratio"] for layer in document["layers"]}
    conv_params = [sum(p.numel() for p in model.conv.parameters()) for model in (old_model, new_model)]
    assert layers["conv"]["param_count"] == conv_params[1] / conv_params[0]
    assert layers["conv"]["macs"] == new_conv / old_conv
    assert layers["act"] == {"param_count": None, "macs": None, "flops": None, "activation_bytes": 384 / 576}
    assert set(layers["head"].values()) == set(layers["pool"].values()) == {None}

    text = cli(*args, "-f", "csv").stdout
    header = text.splitlines()[0].split(",")
    ratios = [f"{name}_ratio" for name in (*TOTALS, "receptive_field", "effective_stride")]
    # The ratios after the notes, then each side's kernel (added last, for readers by position).
    assert header[-len(ratios) - 2 : -2] == ratios and header[-2:] == ["old_kernel", "new_kernel"]
    assert header.index("new_receptive_field_note") == len(header) - 9
    rows = {row["layer"] or row["status"]: row for row in csv.DictReader(io.StringIO(text))}
    assert float(rows["conv"]["param_count_ratio"]) == conv_params[1] / conv_params[0]
    assert float(rows["conv"]["macs_ratio"]) == new_conv / old_conv
    assert [rows["act"][name] for name in ratios[:3]] == ["", "", ""]  # a ReLU: no parameters, no MACs
    assert float(rows["act"]["activation_bytes_ratio"]) == 384 / 576
    assert all(rows[layer][name] == "" for layer in ("head", "pool") for name in ratios)
    assert (
        float(rows["final"]["receptive_field_ratio"]) == 5 / 4
        and float(rows["final"]["effective_stride_ratio"]) == 1 / 2
    )
    assert [rows["final"][name] for name in ratios[:4]] == ["", "", "", ""]


# resnet-like stages (tests.models.stages): OLD has two residual blocks, no BatchNorm in its
# second stage and 10 classes; NEW one block, a BatchNorm, 5 classes. So block stage1.1 is
# removed (conv1 4 x 4 x 9 = 144 parameters, its bn 8, conv2 144 + 4 = 148: 300), stage2.bn
# added (8 + 8 = 16), head.fc changed (8 x 10 + 10 = 90 to 8 x 5 + 5 = 45): hand-counted, and
# checked against torch's parameters() below.
TREE_LINES = [
    ("changed", "stage1", "(-300)"),  # a module on both sides (it holds block stage1.0, unchanged)
    ("removed", "stage1.1", "(-300)"),  # its own row, the residual add, removed with it
    ("removed", "stage1.1.conv1", "-144"),
    ("removed", "stage1.1.bn", "-8"),
    ("removed", "stage1.1.relu", "0"),
    ("removed", "stage1.1.conv2", "-148"),
    ("removed", "stage1.1.relu (call 2)", "0"),
    ("changed", "stage2", "(+16)"),
    ("added", "stage2.bn", "+16"),
    ("changed", "head", "(-45)"),
    ("changed", "head.fc", "-45"),
]


def tree_diff():
    """The diff of two `stages` nets, and the two nets."""
    from tests.models import stages

    old, new = stages(2, False, 10), stages(1, True, 5)
    return diff(old, new, input_size=(3, 8, 8)), old, new


def test_the_table_lists_the_layers_as_the_module_tree_with_each_modules_change():
    """The table and its Markdown listed the layers in the order they ran, with no line for a
    module: a block removed was five layers and an unnamed sum among the others. Now as
    summary lists a report, the module tree: each module holding a listed layer before its
    layers, in torch's named_modules() order (a layer on one side only in its side's), its
    subtree's change in parentheses, what its layers' changes add up to; the CSV and JSON
    keep the order the layers ran in, one entry a layer."""
    from archprof.render.base import Layout
    from archprof.render.compare import diff_tables
    from archprof.render.export import markdown_text
    from tests.markdown_tables import first_table

    result, old, new = tree_diff()
    markdown = markdown_text(diff_tables(result, Layout(width=None)))
    rows = first_table(markdown[markdown.index("**layers:") :])
    headings, lines = rows[0], rows[1:]
    params = headings.index("Params")
    shown = [(line[0], line[1].strip("\u00a0 "), line[params]) for line in lines]
    assert shown == TREE_LINES
    names = list(dict.fromkeys(name.removesuffix(" (call 2)") for _, name, _ in shown))
    for model in (old, new):  # each side's modules in its own named_modules() order
        modules = [name for name, _ in model.named_modules() if name]
        assert [name for name in names if name in modules] == [name for name in modules if name in names]
    old_modules, new_modules = dict(old.named_modules()), dict(new.named_modules())
    for name in ("stage1", "stage1.1", "stage2", "head"):
        counts = [
            sum(p.numel() for p in sides[name].parameters()) if name in sides else 0
            for sides in (old_modules, new_modules)
        ]
        assert next(cells for _, line, cells in shown if line == name) == f"({counts[1] - counts[0]:+})", name
    # The CSV and JSON: the order the layers ran in, no line for a module.
    ran = ["stage1.1.conv1", "stage1.1.bn", "stage1.1.relu", "stage1.1.conv2", "stage1.1", "stage1.1.relu"]
    ran += ["stage2.bn", "head.fc"]
    assert [layer["layer"] for layer in json.loads(result.to_json())["layers"]] == ran
    assert [row["layer"] for row in csv.DictReader(io.StringIO(result.to_csv())) if row["status"] != "final"] == ran


def test_a_side_that_fails_is_named_in_the_error():
    """Both lenet5 and vgg16 have a module 'features.0': the error says which side's forward failed."""
    result = CliRunner().invoke(app, ["diff", "lenet5", "vgg16", "--input", "1x32x32"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith("error: vgg16: the forward pass failed in module 'features.0' (Conv2d)")


def test_a_diff_given_as_a_report_is_said_to_be_a_diff(tmp_path):
    """A diff's JSON has layers too: it was refused for its first layer's missing module_type."""
    made = CliRunner().invoke(app, ["diff", "lenet5", "lenet5", "-f", "json", "-o", str(tmp_path / "d.json")])
    assert made.exit_code == 0, made.output
    result = CliRunner().invoke(app, ["diff", str(tmp_path / "d.json"), "lenet5"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {tmp_path / 'd.json'} is a diff (from `archprof diff -f json`), not a report: diff the reports or"
        " models it compares"
    )


def test_a_diff_writes_its_csv_and_json_to_a_path_as_a_report_does(tmp_path):
    """`ReportDiff.to_csv(path)` and `to_json(path)` write what they return, as `Report`'s do
    (they took no path: a TypeError); the JSON's parameter change is torch's counts' difference."""
    changes = diff("lenet5", "alexnet")
    assert changes.to_csv(tmp_path / "d.csv") == (tmp_path / "d.csv").read_text(encoding="utf-8")
    document = json.loads(changes.to_json(tmp_path / "d.json"))
    assert document == json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))
    params = {name: sum(p.numel() for p in load_model(name).module.parameters()) for name in ("lenet5", "alexnet")}
    (total,) = [t for t in document["totals"] if t["metric"] == "param_count"]
    assert total["change"] == params["alexnet"] - params["lenet5"]


def _lone_surrogate_names() -> nn.Module:
    """A name UTF-8 has no code for: a module named from bytes that were not UTF-8 (Python
    reads 0xff as the lone surrogate U+DCFF)."""
    model = nn.Sequential()
    model.add_module("s\udcffx", nn.Conv2d(2, 2, 1))
    return model


def test_names_utf8_cannot_hold_are_escaped_in_the_csv_and_match_the_model_in_a_diff(tmp_path):
    report = archprof.analyze(_lone_surrogate_names(), input_size=(2, 4, 4))
    written = tmp_path / "report.csv"
    report.to_csv(written)
    rows = list(csv.DictReader(io.StringIO(written.read_bytes().decode("utf-8"))))  # valid UTF-8
    assert rows[0]["layer"] == "s\\udcffx"
    as_json = tmp_path / "report.json"
    report.to_json(as_json)
    for side in (written, as_json):
        result = diff(side, _lone_surrogate_names(), input_size=(2, 4, 4))
        assert result.unchanged == 1 and not result.layers, side


def test_a_report_with_a_row_repeated_is_refused_and_a_calls_two_segments_are_not(tmp_path):
    """A row copied again (a file edited, or two joined) matched the other side's row twice:
    its layer counted twice in the totals and a receptive field taken from the wrong row."""
    report = archprof.analyze("lenet5")
    csv_text, document = report.to_csv(), json.loads(report.to_json())
    header, first, *rest = csv_text.splitlines(keepends=True)
    repeated = tmp_path / "repeated.csv"
    repeated.write_text(header + first + "".join(rest) + first)
    line = one_error_line(cli("diff", repeated, "lenet5"))
    first_layer = document["layers"][0]["layer"]
    rows = len(rest) + 2
    assert f"repeated.csv, line {rows + 1}: layer '{first_layer}' call 0 repeats the row of line 2" in line
    document["layers"].append(document["layers"][0])
    repeated_json = tmp_path / "repeated.json"
    repeated_json.write_text(json.dumps(document))
    line = one_error_line(cli("diff", repeated_json, "lenet5"))
    assert f"layer {rows - 1}: layer '{first_layer}' call 0 repeats the row of layer 0" in line

    split = archprof.analyze(nn.Sequential(OwnOperationsAroundAChild()), input_size=(3, 8, 8))
    layers = [(row["layer"], row["call"]) for row in split.rows()]
    assert layers.count(("0", 0)) == 2  # the case a repeat is right: around the child's row
    written = tmp_path / "split.csv"
    written.write_text(split.to_csv())
    assert len(read_csv_report(written).rows) == len(layers)  # read back, not refused
    assert all(total.change == 0 for total in diff(written, split).totals)


def _windowed(kernel: int, pool: int) -> nn.Sequential:
    """A convolution of `kernel` (padded to keep the size), then a max pooling of `pool`, stride 2 (8 to 4)."""
    return nn.Sequential(nn.Conv2d(3, 4, kernel, padding=kernel // 2), nn.MaxPool2d(pool, 2, padding=(pool - 1) // 2))


def test_a_layer_whose_window_changed_is_listed_with_its_old_and_new_kernel(tmp_path):
    """A 3x3 convolution made 5x5 showed only its deltas; a max pooling of 2 made 3 (the same
    shape, no parameter, no MAC) was not listed at all. Each module's kernel_size says what changed."""
    old, new = _windowed(3, 2), _windowed(5, 3)
    result = diff(old, new, input_size=(3, 8, 8))
    kernels = {change.layer: (change.old["kernel"], change.new["kernel"]) for change in result.layers}
    expected = {
        name: tuple("x".join(map(str, nn.modules.utils._pair(m.kernel_size))) for m in (old[int(name)], new[int(name)]))
        for name in ("0", "1")
    }
    assert kernels == expected == {"0": ("3x3", "5x5"), "1": ("2x2", "3x3")}
    assert all(change.status == "changed" for change in result.layers)
    frame = result.to_dataframe()
    assert list(frame["old_kernel"]) == ["3x3", "2x2"] and list(frame["new_kernel"]) == ["5x5", "3x3"]
    # A CSV report written before reports had a kernel column still diffs: where a window is
    # unknown it is not compared (the pooling, unlisted), the figures are (the convolution's).
    written = tmp_path / "old.csv"
    archprof.analyze(old, input_size=(3, 8, 8)).to_csv(written)
    lines = list(csv.reader(io.StringIO(written.read_text())))
    column = lines[0].index("kernel")
    written.write_text("".join(",".join(row[:column] + row[column + 1 :]) + "\n" for row in lines))
    assert [change.layer for change in diff(str(written), new, input_size=(3, 8, 8)).layers] == ["0"]


def test_a_kernel_one_side_did_not_record_is_neither_compared_nor_shown_as_none(tmp_path):
    """A CSV without the kernel column diffed with a model: the layer listed for its bias showed
    'None → 3x3' in a Kernel column; windows it cannot compare are not a column."""
    old = tmp_path / "old.csv"
    archprof.analyze(_windowed(3, 2), input_size=(3, 8, 8)).to_csv(old)
    lines = list(csv.reader(io.StringIO(old.read_text())))
    column = lines[0].index("kernel")
    old.write_text("".join(",".join(row[:column] + row[column + 1 :]) + "\n" for row in lines))
    new = _windowed(3, 2)
    new[0].bias = None  # 4 parameters fewer, the same window
    result = diff(str(old), new, input_size=(3, 8, 8))
    assert [change.layer for change in result.layers] == ["0"]
    from archprof.render import diff_tables, to_text

    table = to_text(diff_tables(result), 200)
    assert "None" not in table and "Kernel" not in table


def test_a_kernel_read_from_a_report_is_neutralised_in_the_diffs_csv(tmp_path):
    """A report's kernel cell is any text a CSV read from elsewhere holds: as its names, it is
    written so that a spreadsheet does not run it as a formula."""
    path = tmp_path / "old.csv"
    archprof.analyze(_windowed(3, 2), input_size=(3, 8, 8)).to_csv(path)
    path.write_text(path.read_text().replace(",3x3,", ',"=HYPERLINK(""http://x"",""3x3"")",', 1))
    text = diff(str(path), _windowed(5, 2), input_size=(3, 8, 8)).to_csv()
    row = next(row for row in csv.DictReader(io.StringIO(text)) if row["layer"] == "0")
    assert row["old_kernel"].startswith("'=")  # the CSV report's own neutralising mark


def test_a_report_written_with_depth_beside_a_full_one_is_warned_of(tmp_path):
    """`summary -d 1` sums features.0 ... into one row 'features': every layer then showed as
    removed and added, and nothing said why."""
    full, rolled = tmp_path / "full.csv", tmp_path / "d1.csv"
    archprof.analyze("lenet5").to_csv(full)
    assert cli("summary", "lenet5", "-d", "1", "-o", rolled).exit_code == 0
    with pytest.warns(
        archprof.ArchprofWarning, match=r"d1's row 'features' sums rows that full lists apart \('features\.0'"
    ):
        diff(str(full), str(rolled))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        diff(str(full), str(full))


def test_a_module_with_none_of_its_own_rows_listed_shows_its_type_and_its_subtrees_status(tmp_path):
    """A block that gained a layer, and one new with its layers: their lines showed no type and
    no status (a module's came from its own rows, which a Sequential has none of). Each shows
    its class, as the models define it, and 'changed' (on both sides: it holds a layer of each)
    or 'added' (its every layer added), in the table and the HTML page."""
    old, new = tmp_path / "old.py", tmp_path / "new.py"
    preamble = "from torch import nn\n\nclass Stage(nn.Sequential):\n    pass\n\n"
    preamble += "class Head(nn.Sequential):\n    pass\n\ndef net():\n    return nn.Sequential(nn.Conv2d(1, 4, 3), "
    old.write_text(preamble + "Stage(nn.ReLU(), nn.Conv2d(4, 4, 3)))\n")
    new.write_text(
        preamble + "Stage(nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4)), Head(nn.Flatten(), nn.Linear(64, 2)))\n"
    )
    args = ("diff", f"{old}:net", f"{new}:net", "--input", "1x8x8")
    lines = {line.split()[1]: line.split() for line in invoke(*args).stdout.splitlines() if len(line.split()) > 2}
    assert lines["1"][:3] == ["changed", "1", "Stage"]
    assert lines["2"][:3] == ["added", "2", "Head"]
    html = invoke(*args, "-f", "html").stdout
    assert '<td class="text">Stage</td><td class="text"></td><td class="text status">changed</td>' in html
    assert '<td class="text">Head</td><td class="text"></td><td class="text status">added</td>' in html
