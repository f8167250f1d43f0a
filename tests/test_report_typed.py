"""The Report holds typed values (tuples, dicts, FieldMark), formatted only by its writers;
CSV reads back into the same values; by_operator and by_module sum to the totals."""

import csv
import io
import json
import re
from fractions import Fraction

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import archprof
from archprof.diff import read_csv_layers
from archprof.errors import ArchprofError
from archprof.passes.receptive_field import FieldMark
from archprof.report.columns import SUMMABLE
from archprof.zoo import MODELS
from tests.models import EveryKindOfCell


def by_operators(report) -> dict[str, dict]:
    """The rows of a report by the operators they ran (one row each in `EveryKindOfCell`)."""
    return {" ".join(row["operators"]): row for row in report.rows()}


@pytest.fixture(scope="module")
def mixed():
    return archprof.analyze(EveryKindOfCell(), input_size=(1, 8, 8))


def test_cells_are_typed_values(mixed):
    rows = by_operators(mixed)
    conv, up = mixed.rows()[0:2]
    assert conv["receptive_field"] == (3, 3) and conv["effective_stride"] == (1, 1)
    assert conv["receptive_field_start"] == (-1, -1)  # padding 1: unit 0 starts one pixel out
    # stride 2 transposed, padding 0: unit 0 reads input unit 0 only (tap 0); 3 -> 3 + 1 = 4
    assert up["receptive_field"] == (4, 4) and up["effective_stride"] == (Fraction(1, 2), Fraction(1, 2))
    uncounted = rows["archprof_tests.uncosted"]
    assert uncounted["receptive_field"] is uncounted["effective_stride"] is FieldMark.UNDEFINED
    assert "archprof_tests.uncosted" in uncounted["receptive_field_note"]
    assert uncounted["not_counted"] == {"archprof_tests.uncosted": 1} and conv["not_counted"] == {}
    assert rows["reflection_pad2d"]["receptive_field"] is FieldMark.UNDEFINED
    assert rows["mean"]["receptive_field"] is FieldMark.INPUT and rows["mean"]["effective_stride"] is None
    assert rows[""]["layer"] == "spare" and rows[""]["receptive_field"] is None  # never ran
    assert FieldMark.INPUT == "input" and FieldMark.UNDEFINED == "undefined"
    assert mixed.totals.not_counted == {"archprof_tests.uncosted": 1}
    layers = mixed.layers
    assert layers["receptive_field"].iloc[0] == (3, 3)
    assert (layers["receptive_field"] == "input").sum() == 1
    assert layers["not_counted"].tolist() == [row["not_counted"] for row in mixed.rows()]
    assert layers["operators"].iloc[0] == ("convolution",)  # a tuple of names, as in rows()


def test_csv_writes_the_documented_text(mixed):
    rows = list(csv.DictReader(io.StringIO(mixed.to_csv())))
    conv = next(row for row in rows if row["layer"] == "conv")
    assert (conv["receptive_field"], conv["effective_stride"], conv["receptive_field_start"]) == ("3x3", "1x1", "-1x-1")
    assert next(row for row in rows if row["layer"] == "pad")["receptive_field"] == "undefined"
    assert next(row for row in rows if row["layer"] == "spare")["receptive_field"] == ""
    assert next(row for row in rows if row["operators"] == "mean")["receptive_field"] == "input"
    assert [row["not_counted"] for row in rows if row["not_counted"]] == ["archprof_tests.uncosted x1"]
    markdown = mixed.to_markdown()
    assert "| 3x3 |" in markdown and "| archprof\\_tests.uncosted | 1 |" in markdown  # markdown escapes _


@pytest.mark.parametrize("model", ["mixed", "googlenet", "resnet18 training"])
def test_csv_reads_back_into_the_same_values(tmp_path, mixed, model):
    if model == "mixed":
        report = mixed
    else:
        name, _, mode = model.partition(" ")
        report = archprof.analyze(name, training=mode == "training")  # its backward columns too
    path = tmp_path / "report.csv"
    report.to_csv(path)
    assert read_csv_layers(path) == report.rows()
    rolled = report.rollup(1)
    rolled.to_csv(path)
    assert read_csv_layers(path) == rolled.rows()


def test_csv_reader_names_a_bad_field_cell(tmp_path, mixed):
    text = mixed.to_csv().replace("3x3,1x1,-1x-1", "3by3,1x1,-1x-1", 1)  # the field, its stride, its start
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ArchprofError, match=r"line 2: receptive_field is '3by3', not numbers joined by x"):
        read_csv_layers(path)


@pytest.mark.parametrize(
    ("column", "cell", "message"),
    [
        ("operators", '"my lib.f', "a name opened by '\"' is not a JSON string"),
        ("operators", '"my lib.f"x', "not operator names"),
        ("operators", "convolution  relu", "not operator names"),
        ("not_counted", '"my lib.f" 1', "not operator counts"),
        ("not_counted", "my.f x1; my.g", "not operator counts"),
    ],
)
def test_csv_reader_names_a_bad_operator_names_cell(tmp_path, mixed, column, cell, message):
    rows = list(csv.reader(io.StringIO(mixed.to_csv())))
    rows[1][rows[0].index(column)] = cell
    path = tmp_path / "bad.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    with pytest.raises(ArchprofError, match=rf"line 2: {column} is .*{re.escape(message)}"):
        read_csv_layers(path)


def test_json_writes_lists_strings_nulls_and_objects(mixed):
    layers = json.loads(mixed.to_json())["layers"]
    conv = next(row for row in layers if row["layer"] == "conv")
    assert (conv["receptive_field"], conv["effective_stride"], conv["receptive_field_start"]) == (
        [3, 3],
        [1, 1],
        [-1, -1],
    )
    assert next(row for row in layers if row["layer"] == "pad")["receptive_field"] == "undefined"
    assert next(row for row in layers if row["layer"] == "spare")["receptive_field"] is None
    mean = next(row for row in layers if row["operators"] == "mean")
    assert mean["receptive_field"] == "input" and mean["effective_stride"] is None
    assert [row["not_counted"] for row in layers if row["not_counted"]] == [{"archprof_tests.uncosted": 1}]


@pytest.fixture(scope="module")
def resnet18():
    return archprof.analyze("resnet18")


def test_by_operator_sums_to_the_totals_and_matches_flop_counter_mode(resnet18):
    by_operator = resnet18.by_operator()
    assert list(by_operator.columns) == ["operator", "calls", "macs", "flops", "elementwise_flops"]
    for name in ("macs", "flops", "elementwise_flops"):
        assert by_operator[name].sum() == getattr(resnet18.totals, name), name
    assert by_operator["flops"].is_monotonic_decreasing
    assert by_operator["operator"].is_unique
    conv = by_operator.set_index("operator").loc["aten.convolution"]
    assert conv["calls"] == 20  # the stem, 16 in the blocks, 3 downsampling shortcuts
    model = MODELS["resnet18"].build().eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    assert 2 * conv["macs"] == conv["flops"] == counter.get_flop_counts()["Global"][torch.ops.aten.convolution]
    assert by_operator.iloc[0]["operator"] == "aten.convolution"


def test_by_operator_survives_rollup(resnet18):
    for depth in (0, 1, 2):
        assert resnet18.rollup(depth).by_operator().equals(resnet18.by_operator()), depth


def test_by_module_sums_every_subtree(resnet18):
    by_module = resnet18.by_module()
    model = MODELS["resnet18"].build()
    paths = [name for name, _ in model.named_modules()]
    assert sorted(by_module["module"]) == sorted(paths)  # containers included, "" the model
    for path, params in zip(by_module["module"], by_module["param_count"], strict=True):
        assert params == sum(p.numel() for p in model.get_submodule(path).parameters()), path
    root = by_module.set_index("module").loc[""]
    for name in SUMMABLE:
        assert root[name] == resnet18.layers[name].sum(), name
    assert (root["macs"], root["param_count"]) == (resnet18.totals.macs, 11_689_512)
    layer1 = by_module.set_index("module").loc["layer1"]
    assert layer1["module_type"] == "Sequential" and layer1["depth"] == 1
    # layer1: 4 convolutions 64 -> 64, 3x3, on 56x56 outputs
    assert layer1["macs"] == 4 * 64 * 64 * 9 * 56 * 56


def test_by_module_depth_keeps_the_shallow_modules(resnet18):
    shallow = resnet18.by_module(depth=1)
    every = resnet18.by_module()
    assert shallow.equals(every[every["depth"] <= 1].reset_index(drop=True))
    assert shallow["module"].tolist()[:3] == ["", "conv1", "bn1"]
    with pytest.raises(ArchprofError, match=r"depth must be at least 0 \(0 = the whole model\), got -1"):
        resnet18.by_module(depth=-1)


def test_an_inference_reports_training_totals_are_none_as_the_readme_says():
    """The README said an inference report's saved_activation_bytes is 0, where its total is
    None; the column is 0 on every row, and gradient_bytes counts every trainable parameter."""
    from archprof.zoo import MODELS

    report = archprof.analyze("lenet5")
    totals = report.totals
    fields = ("optimizer_state_bytes", "saved_activation_bytes", "training_peak_bytes", "training_memory_bytes")
    assert all(getattr(totals, name) is None for name in (*fields, "training_flops"))
    assert set(report.layers["saved_activation_bytes"]) == {0}
    model = MODELS["lenet5"].build()
    assert totals.gradient_bytes == sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
