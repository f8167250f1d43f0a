"""`archprof explain` / `Report.explain`: each printed result is the report's number, the
worked examples of docs/formulas.md come out verbatim, and the receptive-field steps are
the recurrence worked by hand."""

import copy
import functools
import re
import warnings

import pytest
import torch
from rich.cells import cell_len
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import archprof
from archprof.errors import ArchprofError, ArchprofWarning
from archprof.explain import explanation
from archprof.explain.document import Explanation, Section, Step
from archprof.text import dims_text, markdown_literal
from tests.cli import cli, one_error_line, runner
from tests.models import Checkpointed, LinearOnTransposed


def _blocks(text: str) -> dict[str, dict[str, str]]:
    """Printed text -> {section title: {figure: result}} (a figure's last `= ...`)."""
    blocks = {}
    for block in text.strip().split("\n\n"):
        title, *lines = block.splitlines()
        figures = {}
        for line in lines:
            parts = line.strip().split(" = ")
            if len(parts) > 1:
                figures.setdefault(parts[0], parts[-1])
        blocks[title] = figures
    return blocks


def _number(text: str) -> int:
    return int(text.replace(",", ""))


ROW = "this row, as the report counts it"

_RECURRENCE = {  # r = r_prev + D (K - 1) j_prev, j = j_prev S, start = start_prev - P j_prev
    "r": (r"(-?\d+) \+ (\d+) · \((\d+) - 1\) · (\d+)", lambda r, d, k, j: r + d * (k - 1) * j),
    "j": (r"(\d+) · (\d+)", lambda j, s: j * s),
    "start": (r"(-?\d+) - (\d+) · (\d+)", lambda start, p, j: start - p * j),
}


def _recurrence(name: str, worked: str) -> int:
    pattern, formula = _RECURRENCE[name.rpartition("_")[0]]
    return formula(*map(int, re.fullmatch(pattern, worked).groups()))


def _without_ones(shape: str) -> list[str]:
    return [size for size in shape.split("x") if size != "1"]


def _check_rows_against_report(report, rows=None) -> None:
    """Every row's printed figures (or those of the `rows` numbered from 0) are the report's."""
    for index in range(len(report)) if rows is None else rows:
        text = report.explain(f"#{index + 1}")
        for line in text.splitlines():  # every receptive-field step's arithmetic, redone
            if line.strip().startswith(("r_", "j_", "start_")):
                name, _, worked, result = line.strip().split(" = ")
                assert _recurrence(name, worked) == int(result), line
        blocks = _blocks(text)
        row = blocks[ROW]
        assert _number(row["parameters"]) == report.columns["param_count"][index]
        assert _number(row["MACs"]) == report.columns["macs"][index]
        assert _number(row["FLOPs"]) == report.columns["flops"][index]
        assert _number(row["elementwise FLOPs"]) == report.columns["elementwise_flops"][index]
        assert _number(row["activation bytes"]) == report.columns["activation_bytes"][index]
        operators = [title for title in blocks if title.startswith("aten.")]
        if len(operators) != 1:
            continue
        # The row's one counted operator: its own figures are the row's.
        figures = blocks[operators[0]]
        if "output shape" in figures:  # a 1-d pooling's operator has its input unsqueezed: a dimension of 1 more
            assert _without_ones(figures["output shape"]) == _without_ones(report.columns["output_shape"][index])
        for figure, column in (("MACs", "macs"), ("parameters", "param_count")):
            if figure in figures:
                assert _number(figures[figure]) == report.columns[column][index], operators
        if "r_w" in figures:  # the window's receptive-field step lands on the pass's numbers
            field, jump, start = (report.columns[c][index] for c in _FIELD_COLUMNS)
            assert (figures["r_w"], figures["j_w"], figures["start_w"]) == (
                str(field[-1]),
                str(jump[-1]) if isinstance(jump, tuple) else dims_text(jump),
                str(start[-1]),
            )


_FIELD_COLUMNS = ("receptive_field", "effective_stride", "receptive_field_start")


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.weight = nn.Parameter(torch.ones(4, 1, 3, 3))

    def forward(self, x):
        y = nn.functional.conv2d(x, self.weight, stride=2, padding=1, groups=4)  # functional, depthwise
        y = nn.functional.interpolate(y, scale_factor=2.0, mode="bilinear")
        return torch.cat([self.conv(x) + x, y], dim=1).softmax(dim=1).mean(dim=(2, 3))


class _Mixing(nn.Module):
    """Padding, pixel shuffle, bicubic resampling, a batched matrix product, a variance, PReLU."""

    def __init__(self):
        super().__init__()
        self.prelu = nn.PReLU()

    def forward(self, x):
        y = nn.functional.pixel_shuffle(nn.functional.pad(x, (1, 1, 1, 1)), 2)
        y = nn.functional.interpolate(y, scale_factor=0.5, mode="bicubic").flatten(2)
        scores = torch.bmm(y.transpose(1, 2), y)
        return self.prelu(scores.var(dim=-1))


class _Gram(nn.Module):
    """A linear layer, then its output times its own transpose: a product with no weights."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 5)

    def forward(self, x):
        y = self.proj(x)
        return torch.mm(y, y.t())


LAYER_TYPES = {
    "conv1d": (nn.Sequential(nn.Conv1d(3, 8, 5, stride=2, padding=1, dilation=2), nn.ReLU()), (3, 40)),
    "conv2d grouped": (nn.Sequential(nn.Conv2d(4, 8, 3, groups=2, bias=False), nn.GELU()), (4, 12, 12)),
    "conv3d": (nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.MaxPool3d(2), nn.AvgPool3d(2)), (2, 8, 8, 8)),
    "transposed": (nn.Sequential(nn.ConvTranspose2d(4, 2, 3, stride=2, output_padding=1)), (4, 6, 6)),
    "norms and pooling": (
        nn.Sequential(
            nn.Conv2d(3, 8, 3),
            nn.BatchNorm2d(8),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.AvgPool2d(2),
            nn.GroupNorm(2, 8),
            nn.AdaptiveMaxPool2d(2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 6, bias=False),
            nn.BatchNorm1d(6),
            nn.LayerNorm(6),
            nn.Sigmoid(),
            nn.Dropout(),
        ),
        (3, 21, 21),
    ),
    "functional": (_Residual(), (4, 8, 8)),
    "mixing": (_Mixing(), (4, 6, 6)),
    "product of activations": (_Gram(), (6,)),
    "upsampling": (nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(3, 3, 1), nn.Tanh()), (3, 5, 5)),
    # torch runs a 1-d pooling as a 2-d one on its input unsqueezed: a window of one more dimension
    "pooling 1d": (nn.Sequential(nn.Conv1d(2, 4, 3), nn.MaxPool1d(2), nn.AvgPool1d(2)), (2, 16)),
    # the last window would start in the right padding: torch drops it
    "ceil mode": (nn.Sequential(nn.MaxPool2d(2, stride=3, padding=1, ceil_mode=True)), (1, 4, 4)),
    # aten runs it as a batch norm over its input reshaped to 1 x (N·C) x ...
    "instance norm": (nn.Sequential(nn.Conv2d(2, 4, 3), nn.InstanceNorm2d(4, affine=True)), (2, 6, 6)),
}


@pytest.mark.parametrize("name", list(LAYER_TYPES))
def test_every_printed_figure_is_the_report_s(name):
    model, shape = LAYER_TYPES[name]
    _check_rows_against_report(archprof.analyze(model, input_size=shape, batch=2))


def test_every_row_of_resnet18_with_folded_norms():
    _check_rows_against_report(archprof.analyze("resnet18", fold_bn=True))


def test_the_worked_convolution_of_the_formulas_document():
    # 16 filters of 8 x 5 x 5, P = 2, S = 1, on an 8 x 32 x 32 input (docs/formulas.md, worked example 1)
    report = archprof.analyze(nn.Sequential(nn.Conv2d(8, 16, 5, padding=2)), input_size=(8, 32, 32))
    text = report.explain("0")
    assert "parameters = weights + bias = 3,200 + 16 = 3,216" in text
    assert "output shape = N x C_out x H_out x W_out = 1 x 16 x 32 x 32 = 1x16x32x32" in text
    assert "activation bytes = numel · bytes per element = 1·16·32·32 · 4 = 65,536" in text
    assert "= 1 · 16 · 32 · 32 · (8 / 1) · 5 · 5 = 3,276,800" in text
    assert "FLOPs = 2 · MACs = 2 · 3,276,800 = 6,553,600" in text


def test_vgg16_first_layer_verbatim():
    text = archprof.analyze("vgg16").explain("features.0")
    assert "  parameters = weights + bias = 1,728 + 64 = 1,792\n" in text
    macs = "MACs = N · C_out · H_out · W_out · (C_in / G) · K_h · K_w = 1 · 64 · 224 · 224 · (3 / 1) · 3 · 3"
    assert f"  {macs} = 86,704,128\n" in text
    assert (
        "  H_out = floor((H_in + 2P_h - D_h (K_h - 1) - 1) / S_h) + 1 = floor((224 + 2 · 1 - 1 · (3 - 1) - 1) / 1) + 1"
        " = 224" in text
    )


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_a_poolings_output_size_is_its_worked_arithmetic(ceil_mode):
    """torch's size (the oracle: a real forward), and the printed arithmetic evaluates to it,
    a last window that would start in the right padding dropped included."""
    import math

    model = nn.Sequential(nn.MaxPool2d(2, stride=3, padding=1, ceil_mode=ceil_mode))
    expected = model(torch.zeros(1, 1, 4, 4)).shape[-1]
    text = archprof.analyze(model, input_size=(1, 4, 4)).explain("0")
    line = next(line.strip() for line in text.splitlines() if line.strip().startswith("H_out"))
    _, _, worked, result = line.split(" = ")
    arithmetic = worked.replace("·", "*").replace("ceil", "math.ceil").replace("floor", "math.floor")
    assert eval(arithmetic, {"math": math}) == int(result) == expected  # the text archprof printed, arithmetic only


def test_receptive_field_steps_are_the_recurrence():
    # Two 3x3 convolutions, the second with stride 2 and dilation 2, then a 2x2 pool:
    # r: 1 -> 3 -> 3 + 2 (3 - 1) 1 = 7 -> 7 + (2 - 1) 2 = 9; j: 1, 1, 2, 4; start: 0, -1, -1 - 1 = -2, -2
    model = nn.Sequential(
        nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, stride=2, padding=1, dilation=2), nn.MaxPool2d(2)
    )
    report = archprof.analyze(model, input_size=(1, 32, 32))
    second = _blocks(report.explain("1"))
    (section,) = [figures for title, figures in second.items() if title.startswith("aten.convolution")]
    assert (section["r_h"], section["j_h"], section["start_h"]) == ("7", "2", "-2")
    pool = next(f for t, f in _blocks(report.explain("2")).items() if t.startswith("aten.max_pool"))
    assert (pool["r_w"], pool["j_w"], pool["start_w"]) == ("9", "4", "-2")
    assert "r_h = r_prev + D_h (K_h - 1) j_prev = 3 + 2 · (3 - 1) · 1 = 7" in report.explain("1")


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_a_field_after_reflected_padding_is_not_worked_by_the_recurrence(mode):
    """A reflected or replicated border reads real pixels again: unit 0's field is not the
    recurrence's there, so no step of it is printed that does not add up (CycleGAN's
    generator pads so before each convolution). The field shown is the pass's: unit 0 of a
    3-wide window over a reflect-padded line reads pixels 1, 0, 1, unit 0 of the next 3-wide
    window pixels 0 to 2 (by hand)."""
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode=mode), nn.Conv2d(1, 1, 3, padding=1))
    report = archprof.analyze(model, input_size=(1, 16, 16))
    _check_rows_against_report(report)
    first = report.explain("0")
    assert "field 2x2, jump 1x1, start 0x0" in first and "not the recurrence's" in first
    assert not any(line.strip().startswith("r_") for line in first.splitlines())


def test_a_parameter_read_in_slices_is_counted_once_in_its_rows_operators():
    """nn.MultiheadAttention's composite road (distinct query, key and value) reads
    in_proj_weight and in_proj_bias in three chunks, a product and an add each: the
    operators' parameter lines add up to the row's count, each parameter once, as the
    module's own parameters say (the oracle); each chunk counted the whole parameter before
    (2,720 for 1,088)."""

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.MultiheadAttention(16, 4, batch_first=True)

        def forward(self, q, k, v):
            return self.attention(q, k, v)[0]

    model = Attention()
    report = archprof.analyze(model, inputs=[(6, 16)] * 3, batch=2)
    (index,) = [i for i, row in enumerate(report.rows()) if row["layer"] == "attention"]
    own = sum(p.numel() for p in model.attention.parameters())  # out_proj's too: its forward reads them itself
    assert report.rows()[index]["param_count"] == own
    text = report.explain(f"#{index + 1}")
    sections = [block for block in text.strip().split("\n\n") if block.startswith("aten.")]
    counted = [
        _number(line.rsplit(" = ", 1)[1])
        for block in sections
        for line in block.splitlines()
        if line.strip().startswith("parameters = ")
    ]
    assert sum(counted) == own
    assert text.count("part of the parameter attention.in_proj_weight, counted once on this row") == 2


def test_grouped_and_depthwise_convolutions_say_so():
    report = archprof.analyze(LAYER_TYPES["functional"][0], input_size=(4, 8, 8))
    text = report.explain("(model)")
    assert "a depthwise convolution (G = C_in = 4)" in text
    assert "weights = C_out · (C_in / G) · K_h · K_w = 4 · (4 / 4) · 3 · 3 = 36" in text
    assert "a grouped convolution (G = 2)" in archprof.analyze(*_spec("conv2d grouped")).explain("0")


def _spec(name):
    model, shape = LAYER_TYPES[name]
    return model, shape


def test_a_container_adds_up_its_children():
    report = archprof.analyze("resnet18")
    blocks = _blocks(report.explain("layer1.0"))
    totals = blocks["totals: the sum of its children and its own operations"]
    modules = report.by_module()
    row = modules[modules["module"] == "layer1.0"].iloc[0]
    for figure, column in (("parameters", "param_count"), ("MACs", "macs"), ("elementwise FLOPs", "elementwise_flops")):
        assert _number(totals[figure]) == row[column]
    # its own operation, the residual add: one FLOP per element of 64 x 56 x 56
    assert blocks["aten.add_: a residual merge"]["elementwise FLOPs"] == "200,704"


def test_a_sequentials_children_are_named_as_python_indexes_them():
    """'parameters = 864 (0) + 192 (1) + 0 (2)' read as products; now '[0]', each term the
    child's own parameter count from torch (a 3x3 depthwise conv of 96 channels, its
    BatchNorm's weight and bias, a ReLU6)."""
    import torch

    from archprof.zoo import MODELS

    report = archprof.analyze("mobilenet_v2")
    line = next(line for line in report.explain("features.2.conv.1").splitlines() if "parameters =" in line)
    with torch.device("meta"):
        block = MODELS["mobilenet_v2"].build().features[2].conv[1]
    counts = [sum(p.numel() for p in child.parameters()) for child in block]
    terms = " + ".join(f"{count:,} ([{index}])" for index, count in enumerate(counts))
    assert line.strip() == f"parameters = Σ children = {terms} = {sum(counts):,}"


def test_a_container_of_a_training_step_says_its_sums_are_the_forwards():
    """--train on a container changed one batch norm's figure and said nothing of the backward,
    which is explained per row: the container now says so; a leaf row shows its backward."""
    report = archprof.analyze("resnet18", training=True)
    assert "explain a child for its backward pass" in report.explain("layer1.0")
    assert "explain a child" not in archprof.analyze("resnet18").explain("layer1.0")
    assert "backward" in report.explain("layer1.0.conv1")


def test_a_module_never_called_lists_its_own_parameters_and_no_empty_formula():
    """'parameters = 20' with no terms, and 'activation bytes = numel · bytes per element = 0'
    with nothing to fill the formula in: now its weight and bias (torch's numel) and a plain 0."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    model.add_module("spare", nn.Linear(4, 5))
    model.forward = lambda x: model[0](x)
    lines = [
        line.strip()
        for line in archprof.analyze(model, input_size=(3, 8, 8)).explain("spare (not called)").splitlines()
    ]
    weight, bias = model.spare.weight.numel(), model.spare.bias.numel()
    assert f"parameters = {weight} (spare.weight) + {bias} (spare.bias) = {weight + bias}" in lines
    assert "activation bytes = 0" in lines


def test_a_training_batch_norms_counter_is_named_as_the_buffer_it_updates():
    """'aten.add_: pointwise ... output () from ()' was num_batches_tracked += 1, unsaid."""
    text = archprof.analyze("resnet18", training=True).explain("layer1.0.bn1")
    assert "aten.add_: pointwise, updating the buffer layer1.0.bn1.num_batches_tracked in place" in text


def test_the_network_view_lays_out_the_receptive_field_table_and_stage_shares():
    report = archprof.analyze("vgg16")
    text = report.explain()
    rows = {
        line.split()[1]: line.split()
        for line in text.splitlines()
        if line.startswith("  ") and line.split()[0].isdigit()
    }
    assert rows["features.28"][2:] == ["3x3", "1x1", "196x196", "16x16", "-90x-90"]  # conv5_3
    assert rows["features.30"][2:] == ["2x2", "2x2", "212x212", "32x32", "-90x-90"]  # pool5
    for label, cells in rows.items():
        if label in report.columns["layer"]:
            index = report.columns["layer"].index(label)
            expected = [dims_text(report.columns[c][index]) for c in _FIELD_COLUMNS]
            assert cells[4:] == [cell for cell in expected if cell]  # "input" has no stride or start
    assert "  features    Sequential         14,714,688   10.6%" in text
    assert f"{report.totals.param_count:,}" in text.splitlines()[-1]


def test_stage_shares_of_a_total_of_0_are_undefined_in_every_row_the_total_too():
    text = archprof.analyze(nn.Sequential(nn.ReLU(), nn.Identity()), input_size=(1, 8, 8)).explain()
    stages = text[text.index("share of each stage") :].splitlines()
    assert stages[2].split() == ["0", "ReLU", "0", "-", "0", "-"]
    assert stages[-1].split() == ["total", "0", "-", "0", "-"]  # was "100%" of 0
    vgg = archprof.analyze("vgg16").explain()
    assert vgg.splitlines()[-1].split()[-4:] == [f"{138_357_544:,}", "100%", f"{15_470_264_320:,}", "100%"]


def test_the_network_view_aligns_its_columns_in_terminal_cells_whatever_a_layer_is_named():
    # A CJK name takes two cells a character; a zero-width space is shown as its escape
    # (`visible_text`): each column still starts in the same cell on every row.
    model = nn.Sequential()
    for name in ("卷积层", "conv", "\u200bconv3"):
        model.add_module(name, nn.Conv2d(3, 3, 3))
    text = archprof.analyze(model, input_size=(3, 16, 16)).explain()
    table = text[text.index("receptive field down the network") :].split("\n\n")[0].splitlines()
    rows = [line for line in table if "3x3" in line]
    assert len(rows) == 3
    starts = {cell_len(line[: line.index("3x3")]) for line in rows}
    assert len(starts) == 1, rows


def test_markdown_holds_the_same_figures():
    report = archprof.analyze("vgg16")
    markdown = report.explain("features.0", markdown=True)
    assert markdown.startswith("### features.0 (Conv2d)")
    assert "| parameters | weights + bias | 1,728 + 64 | 1,792 |" in markdown
    formula, worked = "N · C_out · H_out · W_out · (C_in / G) · K_h · K_w", "1 · 64 · 224 · 224 · (3 / 1) · 3 · 3"
    assert f"| MACs | {markdown_literal(formula)} | {worked} | 86,704,128 |" in markdown


def test_layers_are_found_by_label_number_or_container_and_refused_otherwise():
    report = archprof.analyze("resnet18")
    assert report.explain(1) == report.explain("conv1") == report.explain("#1")
    assert report.explain("layer1.0.relu (call 2)").startswith("layer1.0.relu (call 2) (ReLU), row 11 of")
    with pytest.raises(ArchprofError, match=r"^no layer 'nope' in resnet18 \(e\.g\. 'conv1'\): give a layer"):
        report.explain("nope")
    # A misspelt name, a row's or a container's: the closest one asked for.
    with pytest.raises(
        ArchprofError, match=r"^no layer 'layer1\.0\.cnv1' in resnet18 \(did you mean 'layer1\.0\.conv1'\?\)"
    ):
        report.explain("layer1.0.cnv1")
    with pytest.raises(ArchprofError, match=r"\(did you mean 'layer1'\?\)"):
        report.explain("layr1")
    # A tie goes to the first row ('features.O': 0 and 5 alike); never the name typed itself.
    with pytest.raises(ArchprofError, match=r"\(did you mean 'features\.0'\?\)"):
        archprof.analyze("lenet5").explain("features.O")
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    model.add_module("spare", nn.Linear(4, 4))
    model.forward = lambda x: model[0](x)  # the Linear never called: its row is 'spare (not called)'
    with pytest.raises(ArchprofError, match=r"\(did you mean 'spare \(not called\)'\?\)"):
        archprof.analyze(model, input_size=(3, 8, 8)).explain("spare")
    with pytest.raises(ArchprofError, match="row 99 does not exist"):
        report.explain(99)
    with pytest.raises(ArchprofError, match="not rolled up"):
        report.rollup(1).explain("layer1")
    # nn.Sequential names its layers 0, 1, ...: a name first, then a row number
    sequential = archprof.analyze(nn.Sequential(nn.ReLU(), nn.Conv2d(3, 3, 1)), input_size=(3, 4, 4))
    assert sequential.explain("1").startswith("1 (Conv2d), row 2")
    assert sequential.explain("#1").startswith("0 (ReLU), row 1")


def test_cli_explain(tmp_path):
    result = cli("explain", "vgg16", "features.0")
    assert result.exit_code == 0, result.output
    assert "parameters = weights + bias = 1,728 + 64 = 1,792" in result.stdout
    target = tmp_path / "layer.md"
    written = cli("explain", "vgg16", "features.0", "-o", target)
    assert written.exit_code == 0 and target.read_text().startswith("### features.0 (Conv2d)")
    network = cli("explain", "resnet18", "--fold-bn")
    assert network.exit_code == 0 and "receptive field down the network" in network.stdout


_WIDE = [("resnet18", "layer1.0.conv1", "--train"), ("vgg16", "features.0"), ("vgg16",), ("resnet18", "layer1.0")]


def test_cli_explain_on_30_columns_keeps_each_formula_within_the_width():
    result = _explain_cli(("vgg16", "features.0"), "30")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 30, result.stdout
    # N C_out H W of the conv's output (1x64x224x224) and its weight's name, each whole on a line
    assert any(line.split() == ["=", "1·64·224·224"] for line in lines)
    assert any("(features.0.weight)" in line.split() for line in lines)


def _explain_cli(args, columns):
    from archprof.cli import app

    return runner.invoke(app, ["explain", *args], env={"COLUMNS": columns})  # None: COLUMNS unset


@pytest.mark.parametrize("columns", [80, 40])
@pytest.mark.parametrize("args", _WIDE)
def test_cli_explain_fits_the_terminal_width(args, columns):
    """At COLUMNS=80 (a terminal's width) no line is wider, and only spaces changed: no
    number or formula cut, every result whole after its `=`. At 40 (and on 30 columns,
    vgg16's features.0), a part's word that did not fit after its `=` ('(features.0.weight)',
    '1·64·224·224') ran past the width: the part now hangs nearer the left."""
    model, *rest = args
    report = archprof.analyze(model, training="--train" in rest)
    layer = next((arg for arg in rest if arg != "--train"), None)
    one_line = report.explain(layer)
    assert max(map(len, one_line.splitlines())) > 100  # worth wrapping
    result = _explain_cli(args, str(columns))
    assert result.exit_code == 0, result.output
    assert max(map(len, result.stdout.splitlines())) <= columns, result.stdout
    assert result.stdout.split() == one_line.split()
    for section in explanation(report, layer).sections:
        for step in section.steps:
            assert f"= {step.result}" in result.stdout or step.formula == step.worked == "", step


def test_cli_explain_piped_or_markdown_is_not_wrapped():
    """Piped without COLUMNS (or written to a file) the text is as before, a figure a line;
    Markdown is never wrapped."""
    report = archprof.analyze("resnet18", training=True)
    piped = _explain_cli(("resnet18", "layer1.0.conv1", "--train"), None)
    assert piped.exit_code == 0 and piped.stdout == report.explain("layer1.0.conv1")
    assert "  MACs = N · C_out · H_out · W_out · (C_in / G) · K_h · K_w = 1 · 64 · 56 · 56" in piped.stdout
    markdown = _explain_cli(("vgg16", "features.0", "--format", "markdown"), "80")
    assert markdown.stdout == archprof.analyze("vgg16").explain("features.0", markdown=True)


# A BatchNorm's rows, in a training step and not; a convolution's; a container's; the network's.
_NARROW = [
    ("resnet18", "layer1.0.bn1", True),
    ("resnet18", "layer1.0.bn1", False),
    ("resnet18", "layer1.0.conv1", True),
    ("resnet18", "layer1.0", True),
    ("resnet18", None, False),
]


@functools.cache
def _analysis(model: str, train: bool):
    return archprof.analyze(model, training=train)


def _unspaced(text: str) -> str:
    return "".join(text.split())


def _in_order(words: list[str], printed: list[str]) -> bool:
    remaining = iter(printed)
    return all(word in remaining for word in words)  # each found after the one before


@pytest.mark.parametrize("width", [30, 40, 60, 100])
@pytest.mark.parametrize(("model", "layer", "train"), _NARROW)
def test_explain_on_a_narrow_terminal_loses_no_word_and_no_line_passes_the_width(model, layer, train, width):
    """explain wrapped on its own, a word wider than its line left whole: on 30 columns
    'aten.native_batch_norm_backward' (31 characters), and '(aten.native_batch_norm)' or
    '= 1,806,336' hung under a deep `=`, ran past the edge (on 40 too). Now it follows a
    stacked table's rule: an indentation nearer the left where a word would not fit after
    it, a word longer than the line folded. Every character of the one-line text is there,
    in order, and each word that fits a line (with its `= `) is printed whole."""
    report = _analysis(model, train)
    one_line = report.explain(layer)
    text = report.explain(layer, width=width)
    assert all(cell_len(line) <= width for line in text.splitlines()), text
    assert _unspaced(text) == _unspaced(one_line)
    assert _in_order([word for word in one_line.split() if cell_len(word) <= width - 2], text.split())


def test_cli_explain_on_30_columns_folds_an_operator_name_longer_than_the_line():
    """COLUMNS=30: the BatchNorm's backward operator, as torch names it, and its parameters,
    as the model names them, all there, folded where longer than the line."""
    from archprof.zoo import MODELS

    result = _explain_cli(("resnet18", "layer1.0.bn1", "--train"), "30")
    assert result.exit_code == 0, result.output
    assert all(cell_len(line) <= 30 for line in result.stdout.splitlines()), result.stdout
    backward = torch.ops.aten.native_batch_norm_backward.default.name().replace("::", ".")
    with torch.device("meta"):
        named = MODELS["resnet18"].build().named_parameters()
        parameters = [name for name, _ in named if name.startswith("layer1.0.bn1.")]
    assert len(backward) > 30 and parameters == ["layer1.0.bn1.weight", "layer1.0.bn1.bias"]
    assert all(name in _unspaced(result.stdout) for name in (backward, *parameters))
    assert _unspaced(result.stdout) == _unspaced(_analysis("resnet18", True).explain("layer1.0.bn1"))


def test_a_figure_name_wider_than_the_line_wraps_and_its_parts_follow_its_last_line():
    """A figure's name was never wrapped: 'backward elementwise FLOPs' ran past a 20-column line."""
    text = Explanation("t", (Section("s", (Step("backward elementwise FLOPs", "a + b", "1 + 2", 3),)),)).text(20)
    lines = ["  backward", "    elementwise", "    FLOPs = a + b", "          = 1 + 2", "          = 3"]
    assert text.splitlines()[3:] == lines


def test_a_word_wider_than_the_line_is_folded_onto_the_next():
    """A 101-character formula on 40 columns ran 61 past the edge; now folded, as a stacked
    table's name: its part and the note start at the left edge, 40 characters a line."""
    token = "1·" * 50 + "1"
    text = Explanation("t", (Section("s", (Step("numel", "a · b", token, 1),), ("note " + token,)),)).text(40)
    step = ["  numel = a · b", f"= {token[:38]}", token[38:78], f"{token[78:]} = 1"]
    assert text.splitlines()[3:] == [*step, "note", token[:40], token[40:80], token[80:]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("explain", "vgg16", "nowhere"), "no layer 'nowhere'"),
        (("explain", "vgg16", "-f", "csv"), "explain writes a table (plain text) or markdown, not csv"),
        (("explain", "vgg16", "²"), "no layer '²'"),  # str.isdigit's digit, which int() refuses
        (("explain", "vgg16", "#²"), "no layer '#²'"),
        (("explain", "vgg16", "#" + "9" * 5000), "no layer '#999"),  # past int()'s 4,300 digits
        (("explain", "vgg16", "#99"), "row 99 does not exist"),
    ],
)
def test_cli_explain_refuses_on_one_line(args, message):
    result = cli(*args)
    assert result.exit_code == 2
    assert message in one_error_line(result)


def test_explanation_structure_matches_its_text():
    report = archprof.analyze("lenet5")
    found = explanation(report, 1)
    text = found.text()
    for step in found.steps("MACs"):
        assert f"= {step.result}" in text


def test_a_layer_says_which_batch_norm_folded_into_it():
    text = archprof.analyze("resnet18", fold_bn=True).explain("conv1")
    assert "BatchNorm bn1 folded in (--fold-bn)" in text
    assert "bias = C_out = 64" in text  # the bias the convolution gained
    assert "folded in" not in archprof.analyze("resnet18").explain("conv1")


def help_formats(command: str) -> list[str]:
    """The formats --format's help names: 'Output format: table, csv, json, markdown or html'."""
    help_text = " ".join(cli(command, "-h").stdout.replace("│", " ").split())
    listed = re.search(r"--format -f FORMAT Output format: (.+?) \[default", help_text).group(1)
    return re.split(r", | or ", listed)


def test_explain_help_shows_the_formats_it_writes_and_refuses_the_others_itself():
    """The help listed csv, json and html; html was refused in words about other commands."""
    shown = help_formats("explain")
    for format in shown:
        assert cli("explain", "lenet5", "-f", format).exit_code == 0, format
    others = set(help_formats("summary")) - set(shown)
    assert others
    for format in others:
        result = cli("explain", "lenet5", "-f", format)
        assert result.exit_code == 2 and one_error_line(result).startswith("error: explain "), format


class _ScatterAdds(nn.Module):
    def forward(self, x):
        index = torch.zeros(2, 8, dtype=torch.long)
        return torch.zeros(3, 8).scatter_add(0, index, x)


def test_a_scatter_add_is_worked_out_not_called_free():
    """A data-movement operator that adds (formulas.md: a scatter_add one FLOP per source
    element, 2 x 8 here) gets its section, where explain listed it as free with no arithmetic."""
    text = archprof.analyze(_ScatterAdds(), input_size=(8,), batch=2).explain(1)
    section = text[text.index("aten.scatter_add:") :]
    assert re.search(r"elementwise FLOPs\b.*= 16\b", section)
    assert not re.search(r"scatter_add[^\n]*no arithmetic", text)


class _Attention(nn.Module):
    """Scaled dot-product attention of 2 heads of 8 over a sequence, masked or not: the CPU's
    fused flash attention (`kernels.attention.flash_attention_kernel`)."""

    def __init__(self, masked: bool) -> None:
        super().__init__()
        self.masked = masked

    def forward(self, q, k, v):
        mask = torch.zeros(q.shape[-2], k.shape[-2], device=q.device) if self.masked else None
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("masked", [False, True])
def test_fused_attention_is_worked_out_with_the_layer_s_values(masked):
    """Its section printed the cost function's docstring as the formula, no value put in."""
    batch, heads, length, keys, width, value_width = 2, 2, 5, 7, 8, 8  # flash: one head width
    shapes = [(heads, length, width), (heads, keys, width), (heads, keys, value_width)]
    report = archprof.analyze(_Attention(masked), inputs=shapes, batch=batch)
    row = next(i for i, ops in enumerate(report.columns["operators"]) if any("flash_attention" in op for op in ops))
    found = explanation(report, row + 1)
    scores = batch * heads * length * keys  # FORMULAS.md: Q K^T, then softmax(...) V
    macs = scores * width + scores * value_width
    elementwise = batch * heads * length * width + batch * heads * keys * width + (4 if masked else 3) * scores
    assert found.steps("scores")[0].value == scores
    macs_step = found.steps("MACs")[0]
    assert macs_step.value == macs and macs_step.worked == f"{scores:,} · ({width} + {value_width})"
    assert found.steps("elementwise FLOPs")[0].value == elementwise
    assert "Fused attention, counted" not in found.text()  # the docstring is not the formula


def test_a_bias_added_as_an_operator_of_its_own_is_among_the_parameters_worked_out():
    """The mm's section said parameters 48 and the add_'s named none, where the row counts 54."""
    model = LinearOnTransposed(8, 6)  # PyTorch's mm, then an add_ of the bias
    found = explanation(archprof.analyze(model, input_size=(5, 8), batch=3), "fc")
    sections = [s for s in found.sections if s.title.startswith(("aten.mm", "aten.add_"))]
    worked = sum(step.value for section in sections for step in section.steps if step.name == "parameters")
    assert worked == sum(p.numel() for p in model.parameters()) == 54
    assert "adds fc.bias" in found.text()


class _Interleaved(nn.Module):
    """The model calls its block's two layers with another layer between them."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
        self.between = nn.ReLU()

    def forward(self, x):
        return self.block[1](self.between(self.block[0](x)))


def test_a_container_whose_rows_are_apart_names_them():
    """Its title lists its rows as they are (1 and 3 here), where it said "rows 1 to 3"."""
    report = archprof.analyze(_Interleaved(), input_size=(3, 8, 8))
    layers = [row["layer"] for row in report.rows()]
    mine = [i + 1 for i, layer in enumerate(layers) if layer.startswith("block.")]
    assert mine == [1, 3] and layers[1] == "between"
    assert report.explain("block").splitlines()[0] == "block (Sequential), a container of rows 1, 3"


def _norm_section(text: str) -> tuple[str, dict[str, str]]:
    return next(
        (title, figures)
        for title, figures in _blocks(text).items()
        if title.startswith("aten.") and "batch_norm" in title
    )


@pytest.mark.parametrize(
    ("affine", "running_statistics", "per_element"),
    [(True, False, 5), (False, False, 5), (True, True, 2)],  # formulas.md: statistics 5, a fixed affine map 2
)
def test_an_instance_norm_is_explained_per_sample_and_channel(affine, running_statistics, per_element):
    """aten runs an InstanceNorm as a batch norm over its input reshaped to 1 x (N·C) x ...:
    explain called it a BatchNorm over N·C = 6 channels with 2 · 6 parameters, where the
    module has C = 3 channels and 2 · 3 parameters (the summary row's count)."""
    norm = nn.InstanceNorm2d(3, affine=affine, track_running_stats=running_statistics).eval()
    report = archprof.analyze(nn.Sequential(norm), input_size=(3, 5, 5), batch=2)
    title, figures = _norm_section(report.explain("0"))
    assert "InstanceNorm over 3 channels of each of 2 samples" in title
    assert "BatchNorm" not in title
    assert (
        _number(figures["parameters"]) == sum(p.numel() for p in norm.parameters()) == report.columns["param_count"][0]
    )
    statistics = sum(b.numel() for name, b in norm.named_buffers() if name.startswith("running_"))
    assert _number(figures["running statistics (buffers)"]) == statistics
    numel = norm(torch.zeros(2, 3, 5, 5)).numel()
    assert _number(figures["elementwise FLOPs"]) == per_element * numel == report.columns["elementwise_flops"][0]
    assert f"{per_element} · 2·3·5·5 = " in report.explain("0")  # numel of the module's own input, not 1·6·5·5


class _FunctionalInstanceNorm(nn.Module):
    def forward(self, x):
        return nn.functional.instance_norm(x)


def test_a_functional_instance_norm_is_one_too():
    report = archprof.analyze(_FunctionalInstanceNorm(), input_size=(4, 6), batch=3)
    title, figures = _norm_section(report.explain("(model)"))
    assert "InstanceNorm over 4 channels of each of 3 samples" in title
    assert figures["parameters"] == "0"


def test_a_batch_norm_at_batch_one_stays_a_batch_norm():
    report = archprof.analyze(nn.Sequential(nn.BatchNorm2d(3).eval()), input_size=(3, 5, 5), batch=1)
    title, figures = _norm_section(report.explain("0"))
    assert "BatchNorm over 3 channels" in title
    assert _number(figures["parameters"]) == 6


class _BorrowedWeights(nn.Module):
    """Functional layers whose weights are not their own: another layer's parameters, a
    buffer, a weight computed in the forward pass."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.other = nn.Conv2d(3, 3, 3, padding=1)
        self.register_buffer("kernel", torch.ones(3, 3, 3, 3))
        self.proj = nn.Linear(4, 4)
        self.register_buffer("mixing", torch.ones(4, 4))

    def forward(self, x):
        x = self.conv(x)
        x = nn.functional.conv2d(x, self.conv.weight, self.other.bias, padding=1)  # the weight is row 1's
        x = nn.functional.conv2d(x, self.kernel, padding=1)  # a buffer
        x = self.proj(x)
        x = nn.functional.linear(x, self.mixing)  # a buffer
        return nn.functional.linear(x, self.proj.weight * 2, self.proj.bias)  # computed; the bias is proj's


def test_weights_a_layer_does_not_own_are_not_its_parameters():
    """The summary counts a parameter on the first row that reads it and a buffer never:
    explain called every convolution's or linear layer's weight its parameters (81 + 3 for
    the first functional convolution, whose row counts 3)."""
    model = _BorrowedWeights()
    report = archprof.analyze(model, input_size=(3, 4, 4), batch=2)
    functional = [i for i, layer in enumerate(report.columns["layer"]) if layer == ""]
    # What each functional row reads first: other's bias; then nothing (proj read its own weight and bias)
    first_reads = [model.other.bias.numel(), 0]
    assert [report.columns["param_count"][i] for i in functional] == first_reads
    texts = [report.explain(f"#{index + 1}") for index in functional]
    for index, text in zip(functional, texts, strict=True):
        sections = [figures for title, figures in _blocks(text).items() if title.startswith("aten.")]
        own = sum(_number(figures.get("parameters", "0")) for figures in sections)
        assert own == report.columns["param_count"][index], text
    convolutions, products = texts
    assert "  parameters = bias = 3\n" in convolutions
    assert "weights: the parameter conv.weight, counted on row 1 (conv), the first to use it" in convolutions
    assert "weights: the buffer kernel, model state counted in buffer bytes, not a parameter" in convolutions
    assert "weights: the buffer mixing, model state counted in buffer bytes, not a parameter" in products
    assert "bias: the parameter proj.bias, counted on row 3 (proj), the first to use it" in products


class _FoldedBatch(nn.Module):
    """A BatchNorm1d(6) run on 2 x 3 x L folded into 1 x 6 x L: a batch norm by the module called."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(6)

    def forward(self, x):
        return self.norm(x.reshape(1, 6, -1))


def test_a_batch_norm_module_on_a_folded_batch_stays_a_batch_norm():
    report = archprof.analyze(_FoldedBatch(), input_size=(3, 5), batch=2)
    title, figures = _norm_section(report.explain("norm"))
    assert "BatchNorm over 6 channels" in title
    assert (
        _number(figures["parameters"]) == 2 * 6 == report.columns["param_count"][report.columns["layer"].index("norm")]
    )


def test_pooling_titles_take_their_article():
    report = archprof.analyze(nn.Sequential(nn.MaxPool2d(2), nn.AvgPool2d(2)), input_size=(1, 8, 8))
    assert ": a max-pool of 1x1x8x8;" in report.explain("0")
    assert ": an average-pool of 1x1x4x4;" in report.explain("1")  # it read "a average-pool"


# --- a training report: the backward pass worked out ----------------------------------------

TRAINING = "this row's training step, as the report counts it"
SAVED = "saved for the backward pass"
_TRAINING_FIGURES = {  # a printed figure -> the summary --train column it must equal
    "backward input MACs": "backward_input_macs",
    "backward weight MACs": "backward_weight_macs",
    "recomputed MACs": "recomputed_macs",
    "backward FLOPs": "backward_flops",
    "backward elementwise FLOPs": "backward_elementwise_flops",
    "training FLOPs": "training_flops",
    "gradient bytes": "gradient_bytes",
}


def _training_rows(report) -> list[dict[str, int]]:
    """Each row's printed training figures (asserted equal to the report's columns), by name."""
    rows = []
    for index in range(len(report)):
        blocks = _blocks(report.explain(f"#{index + 1}"))
        figures = {name: _number(blocks[TRAINING][name]) for name in _TRAINING_FIGURES}
        figures["saved activation bytes"] = _number(blocks[SAVED]["saved activation bytes"])
        for name, column in (*_TRAINING_FIGURES.items(), ("saved activation bytes", "saved_activation_bytes")):
            assert figures[name] == report.columns[column][index], (report.columns["layer"][index], name)
        rows.append(figures)
    return rows


def _step_flops(module: nn.Module, x: torch.Tensor) -> int:
    """FlopCounterMode around a real CPU forward and backward (from ones) of `module`."""
    with FlopCounterMode(display=False) as counter:
        out = module(x)
        out.backward(torch.ones_like(out))
    return counter.get_total_flops()


def _gradient_flops(layer: nn.Module, x: torch.Tensor, to_input: bool, to_weights: bool) -> int:
    """FlopCounterMode's backward FLOPs of one layer run alone on a real input of its shape:
    the gradient of its input where `to_input`, of its parameters where `to_weights`."""
    if not (to_input or to_weights):
        return 0  # no backward pass
    layer = copy.deepcopy(layer)
    for parameter in layer.parameters():
        parameter.requires_grad_(to_weights)
    x = x.detach().clone().requires_grad_(to_input)
    with torch.no_grad(), FlopCounterMode(display=False) as forward:
        layer(x)
    return _step_flops(layer, x) - forward.get_total_flops()


def _saved_by_module(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Bytes autograd saves in a real CPU training forward (saved_tensors_hooks), each storage
    once, parameters and buffers left out, per module that made the storage (the model's
    input: the first module to read it; a tensor made inside a module, a norm's statistics:
    the module running when it was saved)."""
    state = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    maker, running, kept, saved = {}, [], [], {}

    def before(name):
        def hook(module, args):
            running.append(name)
            for arg in args:
                maker.setdefault(arg.untyped_storage().data_ptr(), name)

        return hook

    def after(name):
        def hook(module, args, out):
            running.pop()
            kept.append(out)  # alive to the end: no storage address is reused
            maker.setdefault(out.untyped_storage().data_ptr(), name)

        return hook

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in state:
            saved.setdefault(storage.data_ptr(), (storage.nbytes(), running[-1]))
        return tensor

    for name, module in model.named_children():
        module.register_forward_pre_hook(before(name))
        module.register_forward_hook(after(name))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(x)
    by_module: dict[str, int] = {}
    for pointer, (nbytes, packed_in) in saved.items():
        module = maker.get(pointer, packed_in)
        by_module[module] = by_module.get(module, 0) + nbytes
    return by_module


@pytest.mark.parametrize("name", list(LAYER_TYPES))
def test_every_training_figure_is_the_report_s_on_every_layer_type(name):
    # transposed, grouped and 3-d convolutions, norms, pooling, resampling, products of
    # activations: every backward operator of each row explained, its figures the columns'
    model, shape = LAYER_TYPES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ArchprofWarning)  # a model with no parameter has no backward pass
        report = archprof.analyze(model, input_size=shape, batch=2, training=True)
    _training_rows(report)


class _ConvStack(nn.Module):
    """A convolution, batch norm and ReLU, a second convolution (no bias), a linear head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 4, 3, stride=2, bias=False)
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        return self.fc(self.conv2(self.relu(self.bn(self.conv(x)))).flatten(1))


def test_a_training_row_works_out_its_gradients_as_a_real_backward_counts_them():
    model = _ConvStack()
    report = archprof.analyze(model, input_size=(3, 8, 8), batch=2, training=True)
    rows = dict(zip(report.columns["layer"], _training_rows(report), strict=True))
    # Hand (FORMULAS.md): MACs = N · C_out · H_out · W_out · (C_in / G) · K_h · K_w, each
    # gradient product the forward's. conv: 2 · 8 · 8 · 8 · 3 · 9; conv2 (8x8 -> 3x3, stride
    # 2): 2 · 4 · 3 · 3 · 8 · 9; fc: N · in · out = 2 · 36 · 5.
    conv, conv2, fc = 2 * 8 * 8 * 8 * 3 * 9, 2 * 4 * 3 * 3 * 8 * 9, 2 * 36 * 5
    assert (rows["conv"]["backward input MACs"], rows["conv"]["backward weight MACs"]) == (0, conv)  # the first layer
    assert (rows["conv2"]["backward input MACs"], rows["conv2"]["backward weight MACs"]) == (conv2, conv2)
    assert (rows["fc"]["backward input MACs"], rows["fc"]["backward weight MACs"]) == (fc, fc)
    assert rows["fc"]["training FLOPs"] == 2 * fc + 2 * (fc + fc)
    # FlopCounterMode around each layer alone, on a real input of its shape: its gradients.
    x = torch.randn(2, 3, 8, 8)
    inputs = {"conv": (x, False), "conv2": (torch.randn(2, 8, 8, 8), True), "fc": (torch.randn(2, 36), True)}
    for name, (sample, needs_gradient) in inputs.items():
        layer = getattr(model, name)
        figures = rows[name]
        assert 2 * figures["backward input MACs"] == _gradient_flops(layer, sample, needs_gradient, False)
        assert 2 * figures["backward weight MACs"] == _gradient_flops(layer, sample, False, True)
        assert figures["backward FLOPs"] == _gradient_flops(layer, sample, needs_gradient, True)
    # Elementwise (README): a ReLU's gradient 1 per element; a bias gradient sums the output
    # gradient, 1 per element (conv: 2 · 8 · 8 · 8; fc: 2 · 5).
    assert rows["relu"]["backward elementwise FLOPs"] == 2 * 8 * 8 * 8
    assert rows["conv"]["backward elementwise FLOPs"] == 2 * 8 * 8 * 8
    assert rows["fc"]["backward elementwise FLOPs"] == 2 * 5
    # The whole step: FlopCounterMode around a real forward and backward of the model.
    assert sum(row["training FLOPs"] for row in rows.values()) == _step_flops(copy.deepcopy(model).train(), x)
    # What autograd saved, per module that made it, and each parameter's gradient bytes.
    saved = _saved_by_module(copy.deepcopy(model).train(), x)
    assert {name: row["saved activation bytes"] for name, row in rows.items() if row["saved activation bytes"]} == saved
    real = copy.deepcopy(model).train()
    out = real(x)
    out.backward(torch.ones_like(out))
    for name, module in real.named_children():
        assert rows[name]["gradient bytes"] == sum(p.grad.nbytes for p in module.parameters())


def test_the_first_layer_and_a_frozen_one_say_which_gradient_they_do_not_compute():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    for parameter in (*model[0].parameters(), *model[4].parameters()):
        parameter.requires_grad_(False)
    report = archprof.analyze(model, input_size=(3, 10, 10), batch=1, training=True)
    rows = dict(zip(report.columns["layer"], _training_rows(report), strict=True))
    # Hand: conv 2: 1 · 8 · 6 · 6 · 8 · 9 = 20,736 MACs; conv 4: 1 · 4 · 4 · 4 · 8 · 9 = 4,608.
    assert (rows["0"]["backward input MACs"], rows["0"]["backward weight MACs"]) == (0, 0)
    assert (rows["2"]["backward input MACs"], rows["2"]["backward weight MACs"]) == (0, 20_736)
    assert (rows["4"]["backward input MACs"], rows["4"]["backward weight MACs"]) == (4_608, 0)
    assert rows["0"]["gradient bytes"] == rows["4"]["gradient bytes"] == 0
    assert rows["2"]["gradient bytes"] == (8 * 8 * 9 + 8) * 4
    last = report.explain("4")
    assert "weight gradient MACs = none: the weights are frozen (requires_grad False) = 0" in last
    assert "4.weight: frozen (requires_grad False), no gradient" in last
    assert "no input gradient: nothing before this layer needs a gradient" in report.explain("2")
    total = _step_flops(copy.deepcopy(model), torch.randn(1, 3, 10, 10))
    assert sum(row["training FLOPs"] for row in rows.values()) == total


def test_a_checkpointed_layer_shows_its_forward_run_again():
    report = archprof.analyze(Checkpointed(), input_size=(3, 6, 6), batch=2, training=True)
    rows = dict(zip(report.columns["layer"], _training_rows(report), strict=True))
    conv = 2 * 8 * 6 * 6 * 8 * 9  # hand: N · C_out · H_out · W_out · C_in · K_h · K_w
    assert rows["block.0"]["recomputed MACs"] == conv
    assert rows["block.0"]["backward FLOPs"] == 2 * (conv + conv + conv)
    text = report.explain("block.0")
    assert "aten.convolution: run again in the backward pass (activation checkpointing)" in text
    total = _step_flops(Checkpointed(), torch.randn(2, 3, 6, 6))
    assert sum(row["training FLOPs"] for row in rows.values()) == total


def test_an_inference_report_explains_no_backward_pass_and_the_cli_takes_train():
    assert TRAINING not in archprof.analyze(_ConvStack(), input_size=(3, 8, 8)).explain("conv")
    result = cli("explain", "lenet5", "#1", "--train")
    assert result.exit_code == 0, result.output
    assert TRAINING in result.output and "aten.convolution_backward" in result.output
    assert TRAINING not in cli("explain", "lenet5", "#1").output
    markdown = cli("explain", "lenet5", "#1", "--train", "--format", "markdown")
    assert markdown.exit_code == 0 and f"**{markdown_literal(TRAINING)}**" in markdown.output


# --- layer types beyond 2-d CNNs: each figure against an oracle, each formula evaluated --------

# A symbol of a formula (C_out, K_h, dil_d, r_prev, numel(out), backward FLOPs: not the
# forward's FLOPs) or a number; and a value of its worked line (a number, or a numel written
# 2·4·6 with no spaces: one value).
_SYMBOL = re.compile(r"numel\([a-z]+\)|(?:backward )?[A-ZΣ][A-Za-z]*(?:_[a-z]+)?|[a-z]+(?:_[a-z]+)+|\d+")
_VALUE = re.compile(r"\d+(?:·\d+)*")
_LABEL = re.compile(r" \([^()]*[A-Za-z_][^()]*\)")  # a sum's term named: "216 (0.weight)"


def _evaluated(worked: str):
    """The worked arithmetic of a figure evaluated (floor, ceil, ·, /), or None where it is
    not arithmetic alone."""
    import math

    arithmetic = _LABEL.sub("", worked).replace(",", "").replace("·", "*")
    if not arithmetic or not re.fullmatch(r"(floor|ceil|[\d\s*+\-/()])+", arithmetic):
        return None
    return eval(arithmetic, {"floor": math.floor, "ceil": math.ceil})  # archprof's text, digits and operators only


def _check_formulas(found: Explanation) -> None:
    """Each figure's worked arithmetic gives its printed result, each shape its dimensions;
    and within a section no symbol stands for two values (a formula's symbols and numbers
    paired with its worked line's values; `_prev`: the field before, per line)."""
    for section in found.sections:
        meaning: dict[str, int] = {}
        for step in section.steps:
            if step.name in ("MACs", "elementwise FLOPs") and step.value:  # worked out, not a formula's words
                assert _evaluated(step.worked) == step.value, step
            if isinstance(step.value, tuple):
                assert step.worked == " x ".join(map(str, step.value)), step
            elif isinstance(step.value, int) and (value := _evaluated(step.worked)) is not None:
                assert value == step.value, step
            symbols, values = _SYMBOL.findall(step.formula), _VALUE.findall(step.worked.replace(",", ""))
            if not symbols or len(symbols) != len(values):
                continue
            for symbol, value in zip(symbols, values, strict=True):
                value = eval(value.replace("·", "*"))
                if symbol.isdigit():
                    assert int(symbol) == value, step
                elif not symbol.endswith("_prev"):
                    assert meaning.setdefault(symbol, value) == value, (section.title, symbol, step)
        # a letter bare and subscripted (D and D_in, K and K_h): two things, or one named two ways
        bare = {symbol for symbol in meaning if "_" not in symbol}
        assert not {s for s in meaning if s.split("_")[0] in bare and "_" in s}, (section.title, sorted(meaning))


class _Embedded(nn.Module):
    """An embedding of 50 words of 16, looked up at indices made from the input."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)

    def forward(self, x):
        return self.emb((x.abs() * 10).long().clamp(max=49))


class _SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x)[0]


class _Recurrent(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.rnn = kind(8, 12, batch_first=True)

    def forward(self, x):
        return self.rnn(x)[0]


def _single(layer):
    return nn.Sequential(layer), "0"


# name -> (model, the row explained, input per sample, the row's figures by hand at batch 2:
# docs/formulas.md's formulas with the layer's values, N = 2)
BEYOND_2D = {
    # L_out = floor((40 + 6 - 2 · 4 - 1) / 2) + 1 = 19; MACs = N · C_out · L_out · C_in · K
    "conv1d dilated": (
        *_single(nn.Conv1d(3, 8, 5, stride=2, padding=3, dilation=2)),
        (3, 40),
        {"macs": 2 * 8 * 19 * 3 * 5, "param_count": 8 * 3 * 5 + 8},
    ),
    # D_out = 8 + 2 - 2 · 2 - 1 + 1 = 6, H_out = floor((9 + 2 - 2 - 1) / 2) + 1 = 5, W_out = floor(7 / 2) + 1 = 4
    "conv3d dilated in depth": (
        *_single(nn.Conv3d(2, 4, 3, stride=(1, 2, 2), padding=(1, 1, 0), dilation=(2, 1, 1))),
        (2, 8, 9, 10),
        {"macs": 2 * 4 * 6 * 5 * 4 * 2 * 27, "param_count": 4 * 2 * 27 + 4},
    ),
    # L_out = (7 - 1) 2 - 2 + 2 · 2 + 1 + 1 = 16; MACs = N · C_in · L_in · (C_out / G) · K
    "transposed 1d": (
        *_single(nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1, dilation=2, groups=2)),
        (4, 7),
        {"macs": 2 * 4 * 7 * 3 * 3, "param_count": 4 * 3 * 3 + 6},
    ),
    # H_out = (5 - 1) 2 - 2 + 2 + 1 + 1 = 10, W_out = (6 - 1) 3 + 2 · 1 + 2 + 1 = 20
    "transposed 2d": (
        *_single(
            nn.ConvTranspose2d(
                4, 6, (3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 2), dilation=(1, 2), groups=2
            )
        ),
        (4, 5, 6),
        {"macs": 2 * 4 * 5 * 6 * 3 * 3 * 2, "param_count": 4 * 3 * 3 * 2 + 6},
    ),
    "transposed 3d depthwise": (
        *_single(nn.ConvTranspose3d(4, 4, 3, stride=2, output_padding=1, groups=4)),
        (4, 3, 4, 5),
        {"macs": 2 * 4 * 3 * 4 * 5 * 27, "param_count": 4 * 27 + 4},
    ),
    "depthwise dilated": (
        *_single(nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=6)),
        (6, 9, 9),
        {"macs": 2 * 6 * 9 * 9 * 9, "param_count": 6 * 9 + 6},
    ),
    # H_out = floor((9 - 2 - 1) / 2) + 1 = 4; C_in / G = 2
    "grouped": (
        *_single(nn.Conv2d(6, 9, (3, 1), stride=(2, 1), groups=3)),
        (6, 9, 5),
        {"macs": 2 * 9 * 4 * 5 * 2 * 3, "param_count": 9 * 2 * 3 + 9},
    ),
    # ceil: D 4, H ceil(7 / 2) + 1 = 5, W 5; (27 - 1) comparisons per output
    "max pool 3d ceil": (
        *_single(nn.MaxPool3d(3, stride=2, padding=1, ceil_mode=True)),
        (2, 7, 8, 9),
        {"elementwise_flops": 26 * 2 * 2 * 4 * 5 * 5},
    ),
    # D 6, H 3, W 4; 12 per output (11 additions, a division)
    "avg pool 3d no padding counted": (
        *_single(nn.AvgPool3d((2, 3, 2), stride=(1, 2, 2), padding=1, count_include_pad=False)),
        (2, 5, 6, 7),
        {"elementwise_flops": 12 * 2 * 2 * 6 * 3 * 4},
    ),
    "avg pool ceil": (
        *_single(nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
        (2, 7, 8),
        {"elementwise_flops": 9 * 2 * 2 * 4 * 5},
    ),
    # windows: 5 -> 2: [0, 3) [2, 5); 7 -> 3: [0, 3) [2, 5) [4, 7); 8 -> 3: [0, 3) [2, 6) [5, 8)
    "adaptive avg pool 3d": (
        *_single(nn.AdaptiveAvgPool3d((2, 3, 3))),
        (2, 5, 7, 8),
        {"elementwise_flops": 2 * 2 * (3 + 3) * (3 + 3 + 3) * (3 + 4 + 3)},
    ),
    # 7 -> 3: 3 + 3 + 3; 9 -> 4: [0, 3) [2, 5) [4, 7) [6, 9); a maximum: window - 1 comparisons
    "adaptive max pool 2d": (
        *_single(nn.AdaptiveMaxPool2d((3, 4))),
        (2, 7, 9),
        {"elementwise_flops": 2 * 2 * 9 * 12 - 2 * 2 * 3 * 4},
    ),
    # 2T - 1 per output: bilinear 7, trilinear 15; nearest a copy
    "bilinear align corners": (
        *_single(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)),
        (2, 5, 6),
        {"elementwise_flops": 7 * 2 * 2 * 10 * 12},
    ),
    "nearest to a size": (*_single(nn.Upsample(size=(7, 9))), (2, 5, 6), {"elementwise_flops": 0}),
    "trilinear": (
        *_single(nn.Upsample(scale_factor=1.5, mode="trilinear")),
        (2, 4, 4, 4),
        {"elementwise_flops": 15 * 2 * 2 * 6 * 6 * 6},
    ),
    "pixel shuffle": (*_single(nn.PixelShuffle(2)), (8, 4, 4), {"elementwise_flops": 0, "macs": 0}),
    "pixel unshuffle": (*_single(nn.PixelUnshuffle(2)), (2, 8, 8), {"elementwise_flops": 0, "macs": 0}),
    # 5 FLOPs per element (mean 1, variance 2, normalise and affine 2), 2 parameters per element normalised
    "layer norm": (
        *_single(nn.LayerNorm([4, 5])),
        (3, 4, 5),
        {"elementwise_flops": 5 * 2 * 3 * 4 * 5, "param_count": 2 * 4 * 5},
    ),
    "group norm": (*_single(nn.GroupNorm(2, 4)), (4, 5, 5), {"elementwise_flops": 5 * 2 * 4 * 5 * 5, "param_count": 8}),
    "instance norm 3d": (
        *_single(nn.InstanceNorm3d(4, affine=True)),
        (4, 3, 5, 5),
        {"elementwise_flops": 5 * 2 * 4 * 3 * 5 * 5, "param_count": 8},
    ),
    "embedding": (_Embedded(), "emb", (7,), {"param_count": 50 * 16, "macs": 0, "elementwise_flops": 0}),
    # projections N · L · E · 3E and N · L · E · E, scores and their use N · heads · L · L · E / heads each
    "multi-head attention": (
        _SelfAttention(),
        "attn",
        (5, 16),
        {"macs": 2 * 5 * 16 * 48 + 2 * 2 * 4 * 5 * 5 * 4 + 2 * 5 * 16 * 16, "param_count": 4 * 16 * 16 + 4 * 16},
    ),
    # per step and sample 4H (I + H) MACs and 13 H FLOPs (FORMULAS.md), T = 5, B = 2
    "lstm": (
        _Recurrent(nn.LSTM),
        "rnn",
        (5, 8),
        {"macs": 5 * 2 * 48 * (8 + 12), "elementwise_flops": 13 * 5 * 2 * 12, "param_count": 48 * 20 + 2 * 48},
    ),
    "gru": (_Recurrent(nn.GRU), "rnn", (5, 8), {"macs": 5 * 2 * 36 * (8 + 12), "param_count": 36 * 20 + 2 * 36}),
    # N · L rows: 2 · 5 · 8 · 6
    "linear on 3-d input": (*_single(nn.Linear(8, 6)), (5, 8), {"macs": 2 * 5 * 8 * 6, "param_count": 8 * 6 + 6}),
}


def _row_output_shape(report, index) -> str:
    return report.columns["output_shape"][index].split(",")[0].strip()


@pytest.mark.parametrize("name", list(BEYOND_2D))
def test_every_figure_of_a_layer_beyond_2d_cnns_is_the_oracle_s(name):
    """Each printed figure is the report's (`_check_rows_against_report`) and the hand
    formula's; the output shape a real CPU forward's; MACs FlopCounterMode's where it counts
    the operator; every worked line evaluates to its result, no symbol means two things."""
    model, label, shape, hand = BEYOND_2D[name]
    report = archprof.analyze(model, input_size=shape, batch=2)
    _check_rows_against_report(report)
    index = report.columns["layer"].index(label)
    found = explanation(report, f"#{index + 1}")  # attn is a container too: its row by number
    _check_formulas(found)
    with FlopCounterMode(display=False) as counter:
        out = copy.deepcopy(model).eval()(torch.randn(2, *shape))
    assert _row_output_shape(report, index) == "x".join(map(str, out.shape))
    shapes = found.steps("output shape")  # of one operator: the layer's (of several: each product's own)
    if len(shapes) == 1 and not isinstance(model, _Recurrent):  # a recurrent layer's: one step's hidden state
        assert shapes[0].value == tuple(out.shape), shapes[0]
    if counter.get_total_flops():
        assert 2 * report.columns["macs"][index] == counter.get_total_flops()
    row = _blocks(found.text())[ROW]
    for column, value in hand.items():
        assert report.columns[column][index] == value, column
        assert (
            _number(
                row[{"macs": "MACs", "elementwise_flops": "elementwise FLOPs", "param_count": "parameters"}[column]]
            )
            == value
        )


def _layer_inputs(model: nn.Module, x_shape, names) -> dict[str, tuple[int, ...]]:
    """The input shape of each named layer in a forward on the meta device (no arithmetic)."""
    model = copy.deepcopy(model).to("meta")
    shapes = {}

    def keep(name):
        def hook(module, args):
            shapes.setdefault(name, tuple(args[0].shape))

        return hook

    for name in names:
        model.get_submodule(name).register_forward_pre_hook(keep(name))
    model.eval()(torch.empty(1, *x_shape, device="meta"))
    return shapes


def _check_hub_layers(model, x_shape, names, hand) -> None:
    """Each named layer of a hub model: its printed figures the report's, its formulas
    consistent; its output shape a real CPU forward's of the layer alone on its input shape,
    its MACs FlopCounterMode's there (where it counts the op) and the hand formula's."""
    report = archprof.analyze(model, input_size=x_shape)
    inputs = _layer_inputs(model, x_shape, names)
    for name in names:
        index = report.columns["layer"].index(name)
        _check_rows_against_report(report, [index])
        _check_formulas(explanation(report, f"#{index + 1}"))
        layer = copy.deepcopy(model.get_submodule(name)).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = layer(torch.randn(inputs[name]))
        assert _row_output_shape(report, index) == "x".join(map(str, out.shape)), name
        assert 2 * report.columns["macs"][index] == counter.get_total_flops(), name
        for column, value in hand.get(name, {}).items():
            assert report.columns[column][index] == value, (name, column)


def test_a_video_model_s_3d_layers_are_explained_as_the_oracles_count_them(hub_packages):
    torchvision, _ = hub_packages
    model = torchvision.models.video.r3d_18(weights=None)
    hand = {  # N · C_out · D_out · H_out · W_out · C_in · K_d · K_h · K_w
        "stem.0": {"macs": 64 * 16 * 56 * 56 * 3 * 3 * 7 * 7},  # 3 x 7 x 7, stride 1 x 2 x 2, padding 1 x 3 x 3
        "layer2.0.conv1.0": {"macs": 128 * 8 * 28 * 28 * 64 * 27},  # 3 x 3 x 3, stride 2: 16 x 56 x 56 -> 8 x 28 x 28
        "layer2.0.downsample.0": {"macs": 128 * 8 * 28 * 28 * 64},
        "fc": {"macs": 512 * 400},
    }
    _check_hub_layers(model, (3, 16, 112, 112), list(hand), hand)


def test_a_segmentation_model_s_dilated_layers_are_explained_as_the_oracles_count_them(hub_packages):
    torchvision, _ = hub_packages
    model = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None)
    dilated = [
        name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.dilation[0] > 1 and m.groups > 1
    ]
    names = [dilated[0], "classifier.0.convs.1.0", "classifier.0.project.0"]
    # ASPP's 3 x 3 of dilation 12 on 960 x 14 x 14 (output stride 16 on 224): 256 · 14 · 14 · 960 · 9 MACs
    hand = {"classifier.0.convs.1.0": {"macs": 256 * 14 * 14 * 960 * 9}}
    _check_hub_layers(model, (3, 224, 224), names, hand)
    report = archprof.analyze(model, input_size=(3, 224, 224))
    # the pooled branch upsampled back (bilinear: 2T - 1 = 7 per output) and the logits to the input size
    pooled, logits = report.columns["layer"].index("classifier.0.convs.4"), len(report) - 1
    for index, numel in ((pooled, 256 * 14 * 14), (logits, 21 * 224 * 224)):
        _check_rows_against_report(report, [index])
        _check_formulas(explanation(report, f"#{index + 1}"))
        assert report.columns["elementwise_flops"][index] == 7 * numel


class _AfterAConvolution(nn.Module):
    """A 1 x 1 convolution, then `layer`: the layer's input wants a gradient (a first layer's
    does not, and its backward FLOPs would equal its forward's)."""

    def __init__(self, channels: int, dims: int, layer: nn.Module):
        super().__init__()
        self.first = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1](channels, channels, 1)
        self.layer = layer

    def forward(self, x):
        return self.layer(self.first(x))


# name -> (model, the row explained, input per sample): layers whose input wants a gradient;
# no grouped convolution: FlopCounterMode counts its weight gradient G times over (README)
_AFTER_A_CONVOLUTION = {
    "conv3d after a convolution": (
        _AfterAConvolution(2, 3, nn.Conv3d(2, 4, 3, stride=(1, 2, 2), padding=(1, 1, 0), dilation=(2, 1, 1))),
        "layer",
        (2, 8, 9, 10),
    ),
    "transposed 2d after a convolution": (
        _AfterAConvolution(
            4,
            2,
            nn.ConvTranspose2d(4, 6, (3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 2), dilation=(1, 2)),
        ),
        "layer",
        (4, 5, 6),
    ),
    "bilinear after a convolution": (
        _AfterAConvolution(2, 2, nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)),
        "layer",
        (2, 5, 6),
    ),
    "trilinear after a convolution": (
        _AfterAConvolution(2, 3, nn.Upsample(scale_factor=1.5, mode="trilinear")),
        "layer",
        (2, 4, 4, 4),
    ),
    "nearest after a convolution": (_AfterAConvolution(2, 2, nn.Upsample(size=(7, 9))), "layer", (2, 5, 6)),
}
_BACKWARD_CHECKED = {
    **{
        name: BEYOND_2D[name][:3]
        for name in (
            "conv3d dilated in depth",
            "linear on 3-d input",
            "layer norm",
            "group norm",
            "gru",
        )
    },
    **_AFTER_A_CONVOLUTION,
}


@pytest.mark.parametrize("name", list(_BACKWARD_CHECKED))
def test_the_backward_of_a_layer_beyond_2d_cnns_is_the_oracle_s(name):
    """--train: every training figure printed is the report's column, every worked line
    evaluates to its result, and the step's FLOPs are FlopCounterMode's around a real
    forward and backward."""
    model, label, shape = _BACKWARD_CHECKED[name]
    report = archprof.analyze(model, input_size=shape, batch=2, training=True)
    rows = _training_rows(report)
    index = report.columns["layer"].index(label)
    _check_formulas(explanation(report, f"#{index + 1}"))
    assert sum(row["training FLOPs"] for row in rows) == _step_flops(copy.deepcopy(model), torch.randn(2, *shape))


def test_an_lstm_layer_s_gradient_is_worked_out_product_by_product():
    """oneDNN's LSTM gradient, one operator: each product with T, B, H, I put in, each result
    the report's training columns and the hand formula's, and FlopCounterMode's count of a
    real forward and backward of the layer run as its cell loop (oneDNN off: addmm and mm)."""
    model = _Recurrent(nn.LSTM)  # I = 8, H = 12; batch-first 2 x 5 x 8: T = 5, B = 2
    report = archprof.analyze(model, input_size=(5, 8), batch=2, training=True)
    (row,) = _training_rows(report)
    found = explanation(report, "rnn")
    _check_formulas(found)
    # Hand: the gates' gradient dG is T x B x 4H; dX = dG W_ih and dh_prev = dG W_hh (every
    # step's, the first's too: the kernel returns the initial state's gradient), dW_ih = dG^T X
    # and dW_hh = dG^T h_prev; the cell's 13 FLOPs per hidden unit and step again.
    to_input, to_hidden = 5 * 2 * 48 * 8, 5 * 2 * 48 * 12
    assert row["backward input MACs"] == found.steps("input and hidden-state gradient MACs")[0].value
    assert row["backward input MACs"] == to_input + to_hidden
    assert row["backward weight MACs"] == found.steps("weight gradient MACs")[0].value == 48 * 8 * 10 + 48 * 12 * 10
    assert row["backward elementwise FLOPs"] == 13 * 5 * 2 * 12
    text = report.explain("rnn")
    assert "= 5 · 2 · 4 · 12 · 8 + 5 · 2 · 4 · 12 · 12 = 9,600" in text
    assert "One LSTM layer" not in text  # the cost function's docstring is not the formula
    # The cell loop's backward leaves out the initial hidden state's gradient (h0 = 0 needs
    # none): B · 4H · H MACs fewer than the kernel's.
    with torch.backends.mkldnn.flags(enabled=False):
        loop = _gradient_flops(model, torch.randn(2, 5, 8), to_input=True, to_weights=True)
    assert loop + 2 * 2 * 48 * 12 == 2 * (row["backward input MACs"] + row["backward weight MACs"])


# mode, F.interpolate's arguments, input per sample, inputs per output T (docs/formulas.md:
# linear 2 per axis, bicubic 4 per axis; 2T - 1 FLOPs per output, nearest a copy), the title's words
_INTERPOLATIONS = {
    "nearest to a size": ({"size": (7, 9)}, (2, 5, 6), 0, "nearest; 5x6 to 7x9, to a size"),
    "nearest-exact by a scale": (
        {"scale_factor": 1.5, "mode": "nearest-exact"},
        (2, 5, 6),
        0,
        "nearest-exact; 5x6 to 7x9, scale factor 1.5 x 1.5",
    ),
    "linear": ({"scale_factor": 2.0, "mode": "linear"}, (2, 6), 2, "linear, align_corners=False; 6 to 12, scale"),
    "bilinear align corners": (
        {"scale_factor": 2.0, "mode": "bilinear", "align_corners": True},
        (2, 5, 6),
        4,
        "bilinear, align_corners=True; 5x6 to 10x12, scale factor 2.0 x 2.0",
    ),
    "bicubic to a size": (
        {"size": (7, 9), "mode": "bicubic"},
        (2, 5, 6),
        16,
        "bicubic, align_corners=False; 5x6 to 7x9, to a size",
    ),
    "bilinear scale recomputed": (
        {"scale_factor": 2.0, "mode": "bilinear", "recompute_scale_factor": True},
        (2, 5, 6),
        4,
        "bilinear, align_corners=False; 5x6 to 10x12, to a size",
    ),
    "trilinear": (
        {"scale_factor": 1.5, "mode": "trilinear"},
        (2, 4, 4, 4),
        8,
        "trilinear, align_corners=False; 4x4x4 to 6x6x6, scale factor 1.5 x 1.5 x 1.5",
    ),
}


class _Interpolated(nn.Module):
    def __init__(self, **arguments):
        super().__init__()
        self.arguments = arguments

    def forward(self, x):
        return nn.functional.interpolate(x, **self.arguments)


@pytest.mark.parametrize("name", list(_INTERPOLATIONS))
def test_an_interpolation_names_its_mode_and_how_its_size_was_given(name):
    arguments, shape, taps, words = _INTERPOLATIONS[name]
    model = _Interpolated(**arguments)
    report = archprof.analyze(model, input_size=shape, batch=2)
    found = explanation(report, "#1")
    _check_formulas(found)
    (section,) = (s for s in found.sections if "upsample" in s.title)
    assert words in section.title, section.title
    with FlopCounterMode(display=False) as counter:
        out = model(torch.randn(2, *shape))
    assert counter.get_total_flops() == 0  # it counts no interpolation: the hand count is the oracle
    flops = (2 * taps - 1) * out.numel() if taps else 0
    assert found.steps("elementwise FLOPs")[0].value == flops == report.columns["elementwise_flops"][0]
    sizes = [s.value for s in section.steps if s.name.endswith("_out")]
    assert sizes == list(out.shape[2:])


def test_an_antialiased_interpolation_sums_its_windows():
    # Hand (UpSampleKernel.cpp's windows): 0.5 x 0.5 reads 2 inputs per output either side
    # of centre 2 (i + 0.5), clipped: H 5 -> 2: [0, 3) [1, 5), 3 + 4; W 6 -> 3: [0, 3) [1, 5)
    # [3, 6), 3 + 4 + 3. Each output 2T - 1 FLOPs over its T = rows x columns inputs.
    model = _Interpolated(scale_factor=0.5, mode="bilinear", antialias=True)
    report = archprof.analyze(model, input_size=(2, 5, 6), batch=2)
    found = explanation(report, "#1")
    _check_formulas(found)
    (section,) = (s for s in found.sections if "upsample" in s.title)
    assert "bilinear, align_corners=False, antialias=True; 5x6 to 2x3, scale factor 0.5 x 0.5" in section.title
    steps = {step.name: step for step in section.steps}
    assert (steps["ΣT_h"].worked, steps["ΣT_w"].worked) == ("3 + 4", "3 + 4 + 3")
    assert steps["elementwise FLOPs"].value == 2 * (3 + 4) * (3 + 4 + 3) * 2 * 2 - 2 * 2 * 2 * 3
    assert report.columns["elementwise_flops"][0] == steps["elementwise FLOPs"].value


# antialias=True on 5 x 6: F.interpolate's other arguments, and each output's window along H
# and along W by hand (UpSampleKernel.cpp: scale = in / out; centre c = scale (i + 0.5),
# support s = taps / 2, times the scale where it downsamples; inputs int(c - s + 0.5) to
# int(c + s + 0.5), clipped to the axis).
_ANTIALIASED_GRADIENTS = {
    # scale 2, s = 2: H c = 1, 3: [0, 3) [1, 5); W c = 1, 3, 5: [0, 3) [1, 5) [3, 6)
    "bilinear": ({"scale_factor": 0.5, "mode": "bilinear"}, [3, 4], [3, 4, 3]),
    # H 5 -> 5, which the forward copies and the gradient filters: scale 1, s = 2, c = i + 0.5:
    # [0, 3) [0, 4) [1, 5) [2, 5) [3, 5); W scale 2, s = 4, c = 1, 3, 5: [0, 5) [0, 6) [1, 6)
    "bicubic": ({"size": (5, 3), "mode": "bicubic"}, [3, 4, 4, 3, 2], [5, 6, 5]),
}


@pytest.mark.parametrize("mode", list(_ANTIALIASED_GRADIENTS))
def test_an_antialiased_interpolation_s_gradient_sums_its_windows(mode):
    # Hand: each output gradient times each of its T = rows x columns inputs' weights, added
    # in: 2T per output-gradient element, summed over them (FlopCounterMode counts none).
    arguments, rows, columns = _ANTIALIASED_GRADIENTS[mode]
    model = _AfterAConvolution(2, 2, _Interpolated(antialias=True, **arguments))
    report = archprof.analyze(model, input_size=(2, 5, 6), batch=2, training=True)
    row = _training_rows(report)[1]  # the interpolation, after the convolution
    found = explanation(report, "layer")
    _check_formulas(found)
    (section,) = (s for s in found.sections if s.title.split(":")[0].endswith("_aa_backward"))
    assert f"({mode}, antialias=True): each output gradient" in section.title, section.title
    steps = {step.name: step for step in section.steps}
    assert steps["ΣT_h"].worked == " + ".join(map(str, rows))
    assert steps["ΣT_w"].worked == " + ".join(map(str, columns))
    flops = 2 * sum(rows) * sum(columns) * 2 * 2  # N = C = 2
    assert steps["elementwise FLOPs"].value == row["backward elementwise FLOPs"] == flops


# mode, dimensions, input per sample, inputs per output T (1 for a nearest copy)
_INTERPOLATION_GRADIENTS = {
    "nearest": ({"size": (7, 9)}, 2, (2, 5, 6), 1),
    "nearest-exact": ({"scale_factor": 2.0, "mode": "nearest-exact"}, 2, (2, 5, 6), 1),
    "linear": ({"scale_factor": 2.0, "mode": "linear"}, 1, (2, 6), 2),
    "bilinear": ({"scale_factor": 0.5, "mode": "bilinear"}, 2, (2, 5, 6), 4),
    "bicubic": ({"scale_factor": 2.0, "mode": "bicubic", "align_corners": True}, 2, (2, 5, 6), 16),
    "trilinear": ({"scale_factor": 1.5, "mode": "trilinear"}, 3, (2, 4, 4, 4), 8),
}


@pytest.mark.parametrize("mode", list(_INTERPOLATION_GRADIENTS))
def test_an_interpolation_s_gradient_names_its_mode_and_works_out_its_flops(mode):
    # Hand (docs/formulas.md): each output gradient times each of its T inputs' weights,
    # added in: 2T per output-gradient element; a nearest copy's gradient added into its one input: 1.
    arguments, dims, shape, taps = _INTERPOLATION_GRADIENTS[mode]
    model = _AfterAConvolution(2, dims, _Interpolated(**arguments))
    report = archprof.analyze(model, input_size=shape, batch=2, training=True)
    row = _training_rows(report)[1]  # the interpolation, after the convolution
    found = explanation(report, "layer")
    _check_formulas(found)
    (section,) = (s for s in found.sections if s.title.split(":")[0].endswith("_backward"))
    assert f"({mode}): each output gradient" in section.title, section.title
    out = model(torch.randn(2, *shape))
    per_element = 2 * taps if taps > 1 else 1
    assert section.steps[0].value == row["backward elementwise FLOPs"] == per_element * out.numel()


def test_a_layer_named_with_control_characters_is_found_by_the_name_the_summary_shows():
    """A module named 'a', newline, 'b' shows as 'a\\nb' in the summary; typed so (a shell
    passes a backslash and an n), explain finds it, and a name ending in a newline, which
    the stripped argument could never hold, too. The name itself still works."""
    model = nn.Sequential()
    for name in ("a\nb", "e\tf", "g\n"):
        model.add_module(name, nn.Conv2d(2, 2, 1))
    report = archprof.analyze(model, input_size=(2, 4, 4))
    for typed, heading in (("a\\nb", "a\\nb"), ("a\nb", "a\\nb"), ("e\\tf", "e\\tf"), ("g\\n", "g\\n")):
        row = 1 + ["a", "e", "g"].index(heading[0])
        assert report.explain(typed).splitlines()[0] == f"{heading} (Conv2d), row {row} of 3: aten.convolution"


def test_a_concatenation_counts_its_tensors_in_the_singular_for_one():
    """DenseNet's first layer concatenates the one tensor so far: 'a concatenation of 1 tensors'."""

    class Joined(nn.Module):
        def forward(self, x):
            return torch.cat([x], 1), torch.cat([x, x], 1)

    text = archprof.analyze(Joined(), input_size=(2, 4, 4)).explain("(model)")
    assert "a concatenation of 1 tensor along dimension 1" in text
    assert "a concatenation of 2 tensors along dimension 1" in text
