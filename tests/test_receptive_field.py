"""Receptive fields: docs/formulas.md's worked examples, the built-in models against hand-derived
values, and an empirical check on random (branching) networks built for real: back-propagate
from one output unit and compare the input pixels with a non-zero gradient with the field."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import archprof
from archprof.passes.receptive_field import tensor_fields, unit_box
from tests.cli import cli, one_error_line
from tests.field_oracle import positive, unit_gradient_box
from tests.models import OwnPooling, PooledBlock, ShuffledHalves, UnshuffledChannelPicked

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
AVG_POOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


# -- helpers -------------------------------------------------------------------------------


def row(report, layer: str | None = None) -> dict:
    """A report row by layer path (None: the last row)."""
    rows = report.rows()
    if layer is None:
        return rows[-1]
    matches = [r for r in rows if r["layer"] == layer]
    assert matches, f"no row {layer!r}"
    return matches[-1]


def shape(cell: str) -> list[int]:
    return [int(v) for v in cell.split("x")]


def field_of(report, layer: str | None = None, unit: str = "first") -> list[tuple[int, int]]:
    """[start, end] per spatial dimension of output unit 0 (or the last unit) of a row."""
    r = row(report, layer)
    sizes, starts = r["receptive_field"], r["receptive_field_start"]
    spans = [(start, start + size - 1) for start, size in zip(starts, sizes, strict=True)]
    if unit == "first":
        return spans
    jumps = r["effective_stride"]
    out = shape(r["output_shape"])[2:]
    return [(s + (n - 1) * j, e + (n - 1) * j) for (s, e), j, n in zip(spans, jumps, out, strict=True)]


def clipped(spans, spatial) -> list[tuple[int, int]]:
    return [(max(s, 0), min(e, n - 1)) for (s, e), n in zip(spans, spatial, strict=True)]


def gradient_box(module: nn.Module, input_size: tuple[int, ...], unit: str = "first") -> list[tuple[int, int]]:
    """Bounding box, per spatial dimension, of the input pixels whose gradient from one output
    unit (unit 0, or the last one) is non-zero."""
    x = (torch.rand(1, *input_size, dtype=torch.float64) + 0.5).requires_grad_()
    y = module(x)
    index = tuple(0 if unit == "first" else size - 1 for size in y.shape[2:])
    y[(0, slice(None), *index)].sum().backward()  # every channel of that unit
    reached = x.grad[0].abs().sum(0) > 0  # over channels: (*spatial)
    box = []
    for axis in range(reached.dim()):
        others = tuple(a for a in range(reached.dim()) if a != axis)
        hit = reached.any(dim=others) if others else reached
        where = torch.nonzero(hit).flatten()
        assert len(where), "the unit reads no input pixel"
        box.append((int(where.min()), int(where.max())))
    return box


def output_unit_box(report, unit: tuple[int, ...]) -> list[tuple[int, int] | None]:
    """archprof's exact input box of one unit of the model's output."""
    fields, spatial = tensor_fields(report.graph)
    return unit_box(fields.get(report.graph.outputs[0].id), spatial, unit)


def check_against_gradients(module: nn.Module, input_size: tuple[int, ...], units=("first", "last")):
    module = positive(module)
    report = archprof.analyze(module, input_size=input_size)
    spatial = input_size[1:]
    for unit in units:
        expected = clipped(field_of(report, unit=unit), spatial)
        assert gradient_box(module, input_size, unit) == expected, (unit, row(report))
    return report


# -- docs/formulas.md, verbatim -----------------------------------------------------------------


@pytest.mark.parametrize("layers", [1, 2, 3, 4, 5, 6])
def test_stacked_3x3_convolutions_give_2L_plus_1(layers):
    model = nn.Sequential(*(nn.Conv2d(2, 2, 3, padding=1) for _ in range(layers)))
    report = archprof.analyze(model, input_size=(2, 32, 32))
    size = 2 * layers + 1
    assert row(report)["receptive_field"] == (size, size)
    assert row(report)["effective_stride"] == (1, 1)
    assert row(report)["receptive_field_start"] == (-layers, -layers)  # centred on its unit


def test_dilated_3x3_convolutions_1_2_4_give_3_7_15():
    model = nn.Sequential(*(nn.Conv2d(1, 1, 3, padding=d, dilation=d) for d in (1, 2, 4)))
    report = archprof.analyze(model, input_size=(1, 32, 32))
    assert [row(report, str(i))["receptive_field"] for i in range(3)] == [(3, 3), (7, 7), (15, 15)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 7), st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=6))
def test_strided_formula_on_random_stacks(layers):
    """r_L = 1 + sum_l (K_l - 1) prod_{i<l} S_i, K_l = D (K - 1) + 1; jump = prod S."""
    model = nn.Sequential(*(nn.Conv1d(1, 1, k, stride=s, dilation=d) for k, s, d in layers))
    size = 1 + sum(d * (k - 1) + 1 for k, _, d in layers) * math.prod(s for _, s, _ in layers)  # big enough
    report = archprof.analyze(model, input_size=(1, size))
    r, jump = 1, 1
    for index, (k, s, d) in enumerate(layers):
        r += (d * (k - 1) + 1 - 1) * jump
        jump *= s
        assert row(report, str(index))["receptive_field"] == (r,)
        assert row(report, str(index))["effective_stride"] == (jump,)
        assert row(report, str(index))["receptive_field_start"] == (0,)  # no padding


# -- per dimension, 1-D and 3-D, ceil_mode ---------------------------------------------------


def test_rectangular_kernels_are_tracked_per_dimension():
    model = nn.Sequential(
        nn.Conv2d(1, 2, (1, 5), stride=(2, 1), padding=(0, 2)),
        nn.Conv2d(2, 2, (3, 1), padding=(1, 0)),
        nn.AvgPool2d((2, 3), stride=(2, 3)),
    )
    report = check_against_gradients(model, (1, 17, 19))
    # H: 1 (J 2) -> 1 + 2*2 = 5 -> 5 + 1*2 = 7 (J 4); W: 5 -> 5 -> 5 + 2*1 = 7 (J 3)
    assert row(report, "0")["receptive_field"] == (1, 5)
    assert row(report, "1")["receptive_field"] == (5, 5)
    assert row(report, "2")["receptive_field"] == (7, 7)
    assert row(report, "2")["effective_stride"] == (4, 3)
    assert row(report, "2")["receptive_field_start"] == (-2, -2)


def test_1d_and_3d_networks():
    one = nn.Sequential(nn.Conv1d(2, 2, 5, stride=2, padding=2), nn.AvgPool1d(3, 2), nn.Conv1d(2, 2, 3, dilation=2))
    report = check_against_gradients(one, (2, 41))
    # 5 (J 2) -> 5 + 2*2 = 9 (J 4) -> 9 + 4*4 = 25
    assert [row(report, str(i))["receptive_field"] for i in range(3)] == [(5,), (9,), (25,)]
    assert row(report)["effective_stride"] == (4,)

    three = nn.Sequential(nn.Conv3d(1, 2, (3, 1, 5), padding=(1, 0, 2)), nn.AvgPool3d(2), nn.Conv3d(2, 1, 3))
    report = check_against_gradients(three, (1, 12, 11, 14))
    # D: 3 -> 4 -> 4 + 2*2 = 8; H: 1 -> 2 -> 6; W: 5 -> 6 -> 10
    assert row(report)["receptive_field"] == (8, 6, 10)
    assert row(report)["effective_stride"] == (2, 2, 2)
    assert row(report)["receptive_field_start"] == (-1, 0, -2)


@pytest.mark.parametrize("pool", [nn.MaxPool2d(3, 2, ceil_mode=True), nn.AvgPool2d(3, 2, padding=1, ceil_mode=True)])
def test_ceil_mode_adds_units_not_field(pool):
    floor = type(pool)(**{**_pool_kwargs(pool), "ceil_mode": False})
    model = nn.Sequential(nn.Conv2d(1, 1, 3), pool)
    ceil_report = archprof.analyze(model, input_size=(1, 16, 16))
    floor_report = archprof.analyze(nn.Sequential(nn.Conv2d(1, 1, 3), floor), input_size=(1, 16, 16))
    assert row(ceil_report)["output_shape"] != row(floor_report)["output_shape"]
    for column in ("receptive_field", "effective_stride", "receptive_field_start"):
        assert row(ceil_report)[column] == row(floor_report)[column]
    assert row(ceil_report)["receptive_field"] == (5, 5)  # 3 + (3 - 1) * 1
    if isinstance(pool, nn.AvgPool2d):  # the extra last unit's window is partly outside: clipped
        check_against_gradients(model, (1, 16, 16))


def _pool_kwargs(pool):
    return {name: getattr(pool, name) for name in ("kernel_size", "stride", "padding", "ceil_mode")}


# -- branches --------------------------------------------------------------------------------


class Inception(nn.Module):
    """Four paths of different kernels, concatenated along channels (GoogLeNet's block)."""

    def __init__(self):
        super().__init__()
        self.b1 = nn.Conv2d(2, 1, 1)
        self.b2 = nn.Sequential(nn.Conv2d(2, 1, 1), nn.Conv2d(1, 1, 3, padding=1))
        self.b3 = nn.Sequential(nn.Conv2d(2, 1, 1), nn.Conv2d(1, 1, 5, padding=2))
        self.b4 = nn.Sequential(nn.AvgPool2d(3, 1, padding=1), nn.Conv2d(2, 1, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class Residual(nn.Module):
    """A strided residual block with a 1x1 strided shortcut (ResNet's downsampling block)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 2, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.down = nn.Conv2d(2, 2, 1, stride=2)

    def forward(self, x):
        return self.conv2(self.conv1(x)) + self.down(x)


def test_a_concatenation_of_paths_takes_the_widest():
    report = check_against_gradients(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), Inception()), (2, 15, 15))
    assert row(report)["receptive_field"] == (7, 7)  # 3 then the 5x5 path
    assert row(report)["receptive_field_start"] == (-3, -3)


def test_a_residual_sum_takes_the_union_per_dimension():
    report = check_against_gradients(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), Residual()), (2, 17, 17))
    # main path: 3 -> 3 + 2 = 5 (J 2) -> 5 + 2*2 = 9, start -1 -1 -2 = -4; shortcut: 3, start -1
    assert row(report)["receptive_field"] == (9, 9)
    assert row(report)["receptive_field_start"] == (-4, -4)
    assert row(report)["effective_stride"] == (2, 2)


class PickedChannels(nn.Module):
    """Two paths of different fields, 1x1 and 5x5 (2 channels each), side by side along the
    channels, then some channels picked back out: `pick` names how."""

    def __init__(self, pick: str):
        super().__init__()
        self.pick = pick
        self.near, self.far = nn.Conv2d(1, 2, 1), nn.Conv2d(1, 2, 5, padding=2)
        self.norm = nn.BatchNorm2d(4)
        self.grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)  # each group within one path

    def forward(self, x):
        near, far = self.near(x), self.far(x)
        if self.pick == "stacked":
            return torch.stack([near, far], 1)[:, 0]
        y = torch.cat([near, far], 1)
        picks = {
            "slice-first": lambda: y[:, :2],
            "slice-second": lambda: y[:, 2:],
            "select": lambda: y[:, 1:2] * y.select(1, 0).unsqueeze(1),
            "normalised-chunk": lambda: torch.relu(self.norm(y)).chunk(2, 1)[0],
            "split-across": lambda: y.split([1, 3], 1)[1][:, :2],
            "grouped": lambda: self.grouped(y)[:, :2],
            "channel-mean-added": lambda: (y + y.mean(1, keepdim=True))[:, :2],
            "depthwise-then-slice": lambda: F.avg_pool2d(y, 3, 1, 1)[:, :2],
        }
        return picks[self.pick]()


@pytest.mark.parametrize(
    "pick,field",
    [
        ("slice-first", (1, 1)),
        ("slice-second", (5, 5)),
        ("select", (1, 1)),
        ("normalised-chunk", (1, 1)),
        ("split-across", (5, 5)),  # channels 1 (near) and 2 (far)
        ("grouped", (3, 3)),
        ("stacked", (1, 1)),
        ("channel-mean-added", (5, 5)),  # the mean reads both paths
        ("depthwise-then-slice", (3, 3)),
    ],
)
def test_channels_picked_from_a_concatenation_read_their_own_paths_field(pick, field):
    """Channels sliced, selected or chunked out of a concatenation (after pointwise ops and a
    normalisation, or a convolution whose groups each lie within one path) read the field of
    the path they came from, unit for unit as the gradient says (they read the union of all
    the paths). Where a later op mixes the channels (a mean added), every path's. A pooling
    in between is a bound: the union (3x3 pooling of the 5x5 path is 7)."""
    model = positive(PickedChannels(pick))
    report = archprof.analyze(model, input_size=(1, 10, 10))
    if pick == "depthwise-then-slice":
        assert row(report, "")["receptive_field"] == (7, 7)  # a bound: the union of the paths
        assert row(report, "")["receptive_field_note"].startswith("an upper bound: aten.slice in (model)")
        return
    assert row(report, "")["receptive_field"] == field and row(report, "")["receptive_field_note"] == ""
    for unit in [(0, 0), (3, 7), (9, 9), (5, 5)]:
        assert output_unit_box(report, unit) == unit_gradient_box(model, (1, 10, 10), unit), unit


class UnevenPicked(nn.Module):
    """Channels that read different pixels, some picked out: `how` names which and how."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.mix = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        unshuffled = F.pixel_unshuffle(x, 2)  # channel 2 i + j reads pixel (2 h + i, 2 w + j)
        padded = F.pad(self.conv(x), (0, 0, 0, 0, 2, 1))  # channels 0, 1 and 4 read nothing
        picks = {
            "unshuffle-slice": lambda: unshuffled[:, :1],
            "unshuffle-select-conv": lambda: self.mix(unshuffled.select(1, 3).unsqueeze(1)),
            "folded-grouped-slice": lambda: self.grouped(SpaceToDepth("blocks-first")(x))[:, 1:2],
            "unshuffle-cropped": lambda: F.pad(unshuffled, (0, 0, 0, 0, -3, 0)),
            "padded-channels-real": lambda: padded[:, 2:4],
            "padded-channels-empty": lambda: padded[:, :2] + padded[:, 4:],
            "unshuffle-mean-added": lambda: (unshuffled + unshuffled.mean(1, keepdim=True))[:, :1],
        }
        return picks[self.how]()


def _contains(outer: list[tuple[int, int]], inner: list[tuple[int, int]]) -> bool:
    return all(a <= c and d <= b for (a, b), (c, d) in zip(outer, inner, strict=True))


@pytest.mark.parametrize(
    "how", ["unshuffle-slice", "unshuffle-select-conv", "folded-grouped-slice", "unshuffle-cropped"]
)
def test_channels_picked_from_channels_that_read_unevenly_are_marked_an_upper_bound(how):
    """Channels sliced or selected out of a pixel unshuffle's (each reads one pixel of every
    2x2 block), or of a grouped convolution's over folded positions, get the union of all
    the channels' fields: it holds every unit's gradient box (the oracle) but is larger
    (pixel 2h, 2w alone for channel 0), so the note says it is an upper bound, on every row
    computed from it too (the convolution after a select). It was given as exact."""
    model = positive(UnevenPicked(how))
    report = archprof.analyze(model, input_size=(1, 8, 8))
    last = row(report, "mix" if how == "unshuffle-select-conv" else "")
    assert last["receptive_field_note"].startswith("an upper bound: aten.")
    assert "picks indices that read different fields" in last["receptive_field_note"]
    units = [(0, 0), (1, 2), (3, 3)]
    boxes = [(output_unit_box(report, unit), unit_gradient_box(model, (1, 8, 8), unit)) for unit in units]
    assert all(_contains(given, true) for given, true in boxes), boxes
    if how != "unshuffle-cropped":  # channels 1..3 read the 2x2 block but its first pixel: the bound is tight there
        assert any(given != true for given, true in boxes), boxes


class ShuffledUnits(nn.Module):
    """ShuffleNetV2's units: half the channels kept, half through a 3x3 convolution, side by
    side, then shuffled (torchvision's channel_shuffle: a view, a transpose, a view)."""

    def __init__(self, pick: str):
        super().__init__()
        self.pick = pick
        self.branches = nn.ModuleList(nn.Conv2d(2, 2, 3, padding=1) for _ in range(3))

    def forward(self, x):
        for branch in self.branches:
            kept, other = x.chunk(2, 1)
            x = torch.cat([kept, branch(other)], 1)
            n, c, h, w = x.shape  # torchvision's channel_shuffle(x, 2)
            x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)
        return {"kept": x[:, :1], "earlier": x[:, 2:3], "half": x.chunk(2, 1)[0]}[self.pick]


@pytest.mark.parametrize("pick,field", [("kept", (1, 1)), ("earlier", (5, 5)), ("half", (7, 7))])
def test_channels_shuffled_read_the_paths_they_came_from(pick, field):
    """By hand, the channels after each unit: [c0, b1, c1, b1'] (b1: 3x3 over c2, c3), then
    [c0, b2, b1, b2'] (b2: 3x3 over c1 and b1', 5x5), then [c0, b3, b2, b3'] (b3 over b1 and
    b2', 7x7). Channel 0 is input channel 0, kept each time (pixel for pixel), channel 2 the
    second unit's branch, the first half holds the last branch: as the gradient says, every
    unit, with no note (each was the union of the paths, 7x7, marked a bound)."""
    model = positive(ShuffledUnits(pick))
    report = archprof.analyze(model, input_size=(4, 10, 10))
    assert row(report, "")["receptive_field"] == field and row(report, "")["receptive_field_note"] == ""
    for unit in [(0, 0), (3, 7), (9, 9), (5, 5)]:
        assert output_unit_box(report, unit) == unit_gradient_box(model, (4, 10, 10), unit), unit


def test_cli_unit_box_of_a_bound_says_so():
    """`rf --unit` on a field that is an upper bound gives the bound's box (it holds the unit's
    true one, pixel 2 x 4 by the gradient) and says that it is one."""
    model = positive(UnshuffledChannelPicked())
    assert unit_gradient_box(model, (1, 8, 8), (1, 2)) == [(2, 2), (4, 4)]
    result = cli(
        "rf", "tests/models.py:UnshuffledChannelPicked", "--input", "1x8x8", "--layer", "head", "--unit", "1,2"
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "reads input pixels 2..3 x 4..5 (of 8x8); an upper bound: aten.slice in (model)" in text
    explained = " ".join(archprof.analyze(model, input_size=(1, 8, 8)).explain("head").split())
    assert "field 2x2, jump 2x2, start 0x0 (an upper bound: aten.slice in (model)" in explained


@pytest.mark.parametrize("width", [30, 40, 60])
def test_cli_unit_box_fits_a_narrow_terminal(width):
    """`rf --unit` wrote its one line whatever the width: a terminal of 40 columns broke it
    where it ran out, inside '6..217'. Now it wraps between words to COLUMNS, the same words
    as piped (where it stays one line)."""
    from typer.testing import CliRunner

    from archprof.cli import app

    args = ["rf", "vgg16", "--unit", "3,4", "--layer", "features.30"]
    piped, narrow = (CliRunner().invoke(app, args, env={"COLUMNS": columns}) for columns in (None, str(width)))
    assert piped.exit_code == narrow.exit_code == 0, narrow.output
    assert len(piped.stdout.splitlines()) == 1 and len(piped.stdout) > width
    assert all(len(line) <= width for line in narrow.stdout.splitlines())
    assert narrow.stdout.split() == piped.stdout.split()


@pytest.mark.parametrize("how,field", [("padded-channels-real", (3, 3)), ("unshuffle-mean-added", (2, 2))])
def test_channels_picked_where_their_fields_are_known_are_exact(how, field):
    """F.pad along the channels puts channels that read nothing beside the others: sliced back
    out, the real ones read the convolution's field exactly. A pixel unshuffle's channels with
    their mean added each read the whole 2x2 block: one sliced out too. As the gradient says,
    with no note (they were a union presented as exact, then a bound)."""
    model = positive(UnevenPicked(how))
    report = archprof.analyze(model, input_size=(1, 8, 8))
    assert row(report, "")["receptive_field"] == field and row(report, "")["receptive_field_note"] == ""
    for unit in [(0, 0), (1, 2), (3, 3)]:
        assert output_unit_box(report, unit) == unit_gradient_box(model, (1, 8, 8), unit), unit


def test_channels_added_by_padding_read_no_input():
    """The channels F.pad adds, sliced out, read no input pixel (their gradient is zero
    everywhere): no field, covers_input NA (they were given the convolution's field)."""
    empty = positive(UnevenPicked("padded-channels-empty"))
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert not torch.autograd.grad(empty(x).sum(), x)[0].any()
    nothing = row(archprof.analyze(empty, input_size=(1, 8, 8)), "")
    assert nothing["receptive_field"] is None and nothing["covers_input"] is None


# -- the empirical check on random networks --------------------------------------------------


class Branches(nn.Module):
    def __init__(self, paths, merge):
        super().__init__()
        self.paths = nn.ModuleList(paths)
        self.merge = merge

    def forward(self, x):
        outs = [path(x) for path in self.paths]
        if self.merge == "cat":
            return torch.cat(outs, 1)
        total = outs[0]
        for out in outs[1:]:
            total = total + out
        return total


class Track:
    """Per dimension: feature-map size, field size and jump, used only to keep the random
    networks free of holes (a field with gaps has a bounding box a gradient cannot confirm
    at the image border) and free of units that read nothing but padding."""

    def __init__(self, sizes):
        self.n = list(sizes)
        self.size = [1] * len(sizes)
        self.jump = [1] * len(sizes)

    def copy(self):
        other = Track(self.n)
        other.size, other.jump = list(self.size), list(self.jump)
        return other

    def fits(self, k, s, p, d) -> bool:
        # contiguous union of the taps' fields; the last unit reaches the last input unit
        # (exact division, P a multiple of D); unit 0's last tap is a real unit.
        return all(
            (kk == 1 or dd * j <= size)
            and pp <= dd * (kk - 1)
            and pp % dd == 0
            and n + 2 * pp - dd * (kk - 1) - 1 >= 0
            and (n + 2 * pp - dd * (kk - 1) - 1) % ss == 0
            for kk, ss, pp, dd, n, size, j in zip(k, s, p, d, self.n, self.size, self.jump, strict=True)
        )

    def apply(self, k, s, p, d):
        for i, (kk, ss, pp, dd) in enumerate(zip(k, s, p, d, strict=True)):
            self.n[i] = (self.n[i] + 2 * pp - dd * (kk - 1) - 1) // ss + 1
            self.size[i] += dd * (kk - 1) * self.jump[i]
            self.jump[i] *= ss


@st.composite
def layer_params(draw, track: Track, same: bool = False):
    nd = len(track.n)
    for _ in range(20):
        k = [draw(st.sampled_from([1, 3, 5]) if same else st.integers(1, 5)) for _ in range(nd)]
        d = [draw(st.integers(1, 3)) if kk > 1 else 1 for kk in k]
        s = [draw(st.integers(1, 2)) for _ in range(nd)]
        if same:
            p = [dd * (kk - 1) // 2 for kk, dd in zip(k, d, strict=True)]
        else:
            p = [dd * draw(st.integers(0, kk - 1)) for kk, dd in zip(k, d, strict=True)]
        if track.fits(k, s, p, d):
            return k, s, p, d
    return [1] * nd, [1] * nd, [0] * nd, [1] * nd


@st.composite
def networks(draw):
    nd = draw(st.sampled_from([1, 2, 2, 2, 3]))
    sizes = [draw(st.integers(9, 24 if nd < 3 else 10)) for _ in range(nd)]
    track = Track(sizes)
    layers, channels = [], 2
    for _ in range(draw(st.integers(1, 4 if nd < 3 else 2))):
        kind = draw(st.sampled_from(["conv", "pool", "branches", "norm"]))
        if kind == "norm":
            layers.append({1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[nd](channels))
            continue
        if kind == "branches":
            # Every path maps n -> (n - 1) / S + 1 ("same" padding, one stride S): sizes match.
            stride = draw(st.integers(1, 2))
            if any((n - 1) % stride for n in track.n):
                stride = 1
            paths, tracks, out_channels = [], [], []
            for _ in range(draw(st.integers(2, 3))):
                branch = track.copy()
                modules, out = [], channels
                for position in range(draw(st.integers(1, 2))):
                    k, _, p, d = draw(layer_params(branch, same=True))
                    s = [stride if position == 0 else 1] * nd
                    if not branch.fits(k, s, p, d):
                        k, p, d = [1] * nd, [0] * nd, [1] * nd
                        if not branch.fits(k, s, p, d):
                            s = [1] * nd  # cannot stride here: keep sizes equal with a no-op
                            k = [1] * nd
                    branch.apply(k, s, p, d)
                    modules.append(CONV[nd](out, out := draw(st.integers(1, 2)), k, s, p, d))
                paths.append(nn.Sequential(*modules))
                tracks.append(branch)
                out_channels.append(out)
            if len({tuple(t.n) for t in tracks}) > 1:
                continue  # a path could not take the stride: skip the block
            merge = draw(st.sampled_from(["add", "cat"]))
            if merge == "add":
                paths = [nn.Sequential(*path, CONV[nd](c, 2, 1)) for path, c in zip(paths, out_channels, strict=True)]
                channels = 2
            else:
                channels = sum(out_channels)
            layers.append(Branches(paths, merge))
            track.n = tracks[0].n
            track.size = [max(t.size[i] for t in tracks) for i in range(nd)]  # a lower bound of the union
            track.jump = tracks[0].jump
            continue
        if kind == "pool":
            k = [draw(st.integers(1, 3)) for _ in range(nd)]
            s = [draw(st.integers(1, kk)) for kk in k]
            p = [draw(st.integers(0, kk // 2)) for kk in k]
            d = [1] * nd
            if not track.fits(k, s, p, d):
                continue
            layers.append(AVG_POOL[nd](k, s, p))
        else:
            k, s, p, d = draw(layer_params(track))
            out = draw(st.integers(1, 3))
            layers.append(CONV[nd](channels, out, k, s, p, d))
            channels = out
        track.apply(k, s, p, d)
    layers.append(CONV[nd](channels, 2, 1))  # the output: two channels whatever came before
    return nn.Sequential(*layers), (2, *sizes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(networks())
def test_fields_match_the_gradients_of_random_networks(case):
    model, input_size = case
    model = positive(model)
    report = archprof.analyze(model, input_size=input_size)
    for unit in ("first", "last"):
        expected = clipped(field_of(report, unit=unit), input_size[1:])
        box = gradient_box(model, input_size, unit)
        if dilated(model) and reads_padding_inside(model, input_size, unit):
            # A dilated kernel can step over a map's border unit onto padding: the image's
            # border pixel is then inside the field (padding counted) but reached by no path.
            # The field still contains what the gradient reaches, and its near end is exact.
            near = 0 if unit == "first" else 1
            assert all(b[near] == e[near] and e[0] <= b[0] <= b[1] <= e[1] for b, e in zip(box, expected, strict=True))
        else:
            assert box == expected, (unit, row(report))


def dilated(model: nn.Module) -> bool:
    return any(max(getattr(m, "dilation", (1,))) > 1 for m in model.modules())


def reads_padding_inside(model: nn.Module, input_size, unit: str) -> bool:
    """Whether the units that output unit 0 reads, layer by layer back to the input, include
    padding past a map's far end (the near end for the last unit). Walks the modules back."""
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def record(module, args, output):
        shapes[module] = args[0].shape[2:]  # returns None: the output stays as it is

    hooks = [m.register_forward_hook(record) for m in model.modules()]
    with torch.no_grad():
        final = model(torch.zeros(1, *input_size, dtype=torch.float64)).shape[2:]
    for hook in hooks:
        hook.remove()
    found = False

    def back(module, spans):
        nonlocal found
        if isinstance(module, nn.Sequential):
            for child in reversed(module):
                spans = back(child, spans)
            return spans
        if isinstance(module, Branches):
            each = [back(path, spans) for path in module.paths]
            return [(min(s[i][0] for s in each), max(s[i][1] for s in each)) for i in range(len(spans))]
        if not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
            return spans
        nd = len(spans)
        k, s, p = (_tuple(getattr(module, a), nd) for a in ("kernel_size", "stride", "padding"))
        d = _tuple(getattr(module, "dilation", 1), nd)
        windows = zip(spans, k, s, p, d, strict=True)
        spans = [(lo * ss - pp, hi * ss - pp + dd * (kk - 1)) for (lo, hi), kk, ss, pp, dd in windows]
        for (lo, hi), n in zip(spans, shapes[module], strict=True):
            found |= hi > n - 1 if unit == "first" else lo < 0
        return spans

    back(model, [(0, 0) if unit == "first" else (n - 1, n - 1) for n in final])
    return found


def _tuple(value, nd: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * nd


class ChannelsAndRowsJoined(nn.Module):
    """Channels and rows joined into one dimension and split back (`x.reshape(N, C * H, W)`),
    with a linear layer over the columns between (what `nn.Linear` does to an NCHW map)."""

    def __init__(self, mix: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.mix = nn.Linear(10, 10) if mix else nn.Identity()
        self.after = nn.Conv2d(2, 2, 3)

    def forward(self, x):
        y = self.conv(x)
        joined = y.reshape(y.shape[0], -1, y.shape[3])
        return self.after(self.mix(joined).reshape(y.shape))


@pytest.mark.parametrize("mix", [False, True], ids=["reshaped-back", "linear-over-columns"])
def test_channels_and_rows_joined_and_split_back_keep_the_rows_field(mix):
    """Each row keeps its own field through the round trip: the oracle is the gradient."""
    model = positive(ChannelsAndRowsJoined(mix))
    report = archprof.analyze(model, input_size=(2, 12, 10))
    # Columns read whole (the linear layer) have no stride that carries unit 0's span to the last unit.
    for unit in ("first",) if mix else ("first", "last"):
        assert gradient_box(model, (2, 12, 10), unit) == clipped(field_of(report, unit=unit), (12, 10))


# -- resampling and transposed convolution ---------------------------------------------------


def test_transposed_convolution_with_stride_1_keeps_a_jump():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), CONV_T[2](2, 1, 3, padding=0), nn.Conv2d(1, 1, 3, padding=1))
    report = check_against_gradients(model, (1, 17, 17))
    assert row(report, "1")["effective_stride"] == (2, 2)
    # a stride-1 transposed conv of K 3, P 0 is a conv of padding 2: 3 -> 3 + 2*2 = 7, start 0 - 2*2
    assert row(report, "1")["receptive_field"] == (7, 7)
    assert row(report, "1")["receptive_field_start"] == (-4, -4)


@pytest.mark.parametrize("kernel,stride,padding", [(4, 2, 1), (3, 2, 1), (2, 2, 0), (5, 3, 2)])
def test_transposed_convolution_with_stride_divides_the_stride(kernel, stride, padding):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), CONV_T[2](2, 1, kernel, stride, padding))
    report = check_against_gradients(model, (1, 15, 15), units=("first",))
    assert row(report)["effective_stride"] == (Fraction(2, stride),) * 2  # 2 x 1/S
    # A later 3x3 reads unit 1 too, whose field is not a shift of unit 0's: exact all the same.
    after = nn.Sequential(*model, nn.Conv2d(1, 1, 3, padding=1))
    assert isinstance(row(check_against_gradients(after, (1, 15, 15), units=("first",)))["receptive_field"], tuple)


class Resample(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, stride=2)
        self.kwargs = kwargs

    def forward(self, x):
        return F.interpolate(self.conv(x), **self.kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale_factor": 2, "mode": "nearest"},
        {"scale_factor": 3, "mode": "nearest-exact"},
        {"size": (11, 17), "mode": "nearest"},
        {"scale_factor": 2, "mode": "bilinear"},
        {"scale_factor": 2, "mode": "bilinear", "align_corners": True},
        {"size": (5, 4), "mode": "bilinear"},
        {"size": (4, 3), "mode": "nearest-exact"},
    ],
)
def test_upsampling_gives_unit_0_exactly(kwargs):
    report = check_against_gradients(Resample(**kwargs), (1, 15, 15), units=("first",))
    assert isinstance(row(report)["receptive_field"], tuple)


def test_whole_number_downsampling_keeps_a_jump():
    report = check_against_gradients(Resample(scale_factor=0.5, mode="nearest"), (1, 17, 17))
    assert row(report)["effective_stride"] == (4, 4)
    report = check_against_gradients(Resample(size=(2, 2), mode="bilinear"), (1, 17, 17))
    assert row(report)["effective_stride"] == (8, 8)


class MixedStrides(nn.Module):
    """A full-resolution path added to a pooled-then-upsampled one (a U-Net skip)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        return self.conv(x) + F.interpolate(self.pool(x), scale_factor=2)


def test_a_pooled_then_upsampled_path_merges_at_stride_1():
    report = check_against_gradients(MixedStrides(), (1, 16, 16))
    assert row(report)["receptive_field"] == (3, 3)
    assert row(report)["receptive_field_start"] == (-1, -1)
    assert row(report)["effective_stride"] == (1, 1)  # 2 x 1/2


class TwoStrides(nn.Module):
    def __init__(self):
        super().__init__()
        self.fine = nn.Conv2d(1, 1, 3, padding=1)
        self.coarse = nn.Conv2d(1, 1, 2, stride=2)

    def forward(self, x):
        return self.fine(x)[:, :, :8, :8] + self.coarse(x)


def test_paths_of_different_strides_merge_into_an_exact_unit_0():
    report = check_against_gradients(TwoStrides(), (1, 16, 16), units=("first",))
    assert row(report)["receptive_field"] == (3, 3)
    assert row(report)["receptive_field_start"] == (-1, -1)
    assert row(report)["effective_stride"] == "undefined"
    assert row(report)["receptive_field_note"] == "paths with different strides merged"


# -- the whole input, and what is not a field ------------------------------------------------


class Head(nn.Module):
    def __init__(self, pool: str):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2)
        self.fc = nn.Linear(4 if pool != "flatten" else 4 * 7 * 7, 3)
        self.pool = pool

    def forward(self, x):
        y = self.conv(x)
        if self.pool == "adaptive":
            y = torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)
        elif self.pool == "mean":
            y = y.mean((2, 3))
        else:
            y = torch.flatten(y, 1)
        return self.fc(y)


@pytest.mark.parametrize("pool", ["adaptive", "mean", "flatten"])
def test_global_pooling_flatten_and_linear_see_the_whole_input(pool):
    report = archprof.analyze(Head(pool), input_size=(1, 15, 15))
    assert row(report, "fc")["receptive_field"] == "input"
    assert row(report, "fc")["covers_input"] is True
    assert row(report, "fc")["effective_stride"] is None and row(report, "fc")["receptive_field_start"] is None
    assert row(report, "conv")["receptive_field"] == (3, 3)
    assert row(report, "conv")["covers_input"] is False


class Unflattened(nn.Module):
    """Flattens, then reads the tensor back as an image: never the whole input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.after = nn.Conv2d(2, 2, 3)

    def forward(self, x):
        y = torch.flatten(self.conv(x), 1)
        return self.after(y.view(1, 2, 13, 13))


class Attention(nn.Module):
    """Non-local / self-attention over the positions: every unit sees every position."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        y = self.conv(x).flatten(2)  # (N, C, HW)
        weights = torch.softmax(y.transpose(1, 2) @ y, dim=-1)  # (N, HW, HW)
        return (y @ weights).view(1, 2, 13, 13)


def test_a_flattened_map_read_back_as_an_image_keeps_its_field():
    report = check_against_gradients(Unflattened(), (1, 15, 15))
    assert row(report)["receptive_field"] == (5, 5) and row(report)["effective_stride"] == (1, 1)


def test_attention_over_positions_sees_the_whole_input():
    report = archprof.analyze(Attention(), input_size=(1, 15, 15))
    assert row(report)["receptive_field"] == "input"


def _band(n: int) -> torch.Tensor:
    """Keys within one position of the query: True where a key is kept."""
    i = torch.arange(n)
    return (i[:, None] - i[None, :]).abs() <= 1


class MaskedRowAttention(nn.Module):
    """Attention along W within each row, its scores masked by `mask`: keys a mask sets to
    -inf (or below exp's range) get weight 0, so a query reads fewer than the whole row; a
    finite mask (Swin's -100) leaves every key a weight."""

    def __init__(self, mask: str):
        super().__init__()
        self.mask = mask
        self.out = nn.Conv2d(2, 1, 1)
        if mask.startswith("buffer"):  # Swin's way: an additive mask made once, held in a buffer (W = 8)
            value = {"buffer-inf": float("-inf"), "buffer-1e9": -1e9, "buffer-finite": -100.0}[mask]
            self.register_buffer("additive", torch.zeros(8, 8).masked_fill(~_band(8), value))

    def forward(self, x):
        n, c, h, w = x.shape
        t = x.permute(0, 2, 3, 1).reshape(n * h, w, c)
        if self.mask.startswith("sdpa"):
            band = _band(w).to(x.device)
            causal = self.mask == "sdpa-causal"
            y = F.scaled_dot_product_attention(t, t, t, attn_mask=None if causal else band, is_causal=causal)
        else:
            y = torch.softmax(self._masked(t @ t.transpose(1, 2)), -1) @ t
        return self.out(y.reshape(n, h, w, c).permute(0, 3, 1, 2))

    def _masked(self, scores):
        band = _band(scores.shape[-1]).to(scores.device)
        if self.mask == "masked-fill":
            return scores.masked_fill(~band, float("-inf"))
        if self.mask == "finfo-min":
            return scores.masked_fill(~band, torch.finfo(scores.dtype).min)
        if self.mask == "additive-triu":
            return scores + torch.full(scores.shape[-2:], float("-inf"), device=scores.device).triu(1)
        if self.mask.startswith("buffer"):
            return scores + self.additive
        if self.mask == "index-put":
            literal = torch.zeros(scores.shape[-2:], dtype=scores.dtype, device=scores.device)
            literal[~band] = float("-inf")
            return scores + literal
        return scores.masked_fill(~band, -100.0)  # "finite"


@pytest.mark.parametrize(
    "mask",
    ["sdpa-band", "sdpa-causal", "masked-fill", "finfo-min", "additive-triu", "index-put", "buffer-inf", "buffer-1e9"],
)
def test_attention_masked_by_minus_infinity_is_undefined(mask):
    """The gradient of unit (0, 0) reaches pixels 0..1 (a band) or 0 (causal) along W, not
    the whole row archprof gave: which keys a mask drops is in its values, which a meta
    trace does not have (a buffer's smallest value it notes: it gave the whole row for one
    of -inf). Undefined, naming the softmax."""
    model = MaskedRowAttention(mask)
    box = gradient_box(positive(model), (2, 3, 8))
    assert box[1] == ((0, 0) if mask in ("sdpa-causal", "additive-triu") else (0, 1))
    r = row(archprof.analyze(model, input_size=(2, 3, 8)))
    assert r["receptive_field"] == "undefined"
    assert "softmax" in r["receptive_field_note"] and "masked" in r["receptive_field_note"]


@pytest.mark.parametrize("mask", ["finite", "buffer-finite"])
def test_attention_with_a_finite_mask_reads_the_whole_row(mask):
    """Swin's -100 leaves a masked key a small weight: every unit reads its whole row."""
    report = check_against_gradients(MaskedRowAttention(mask), (2, 3, 8), units=("first",))
    assert row(report)["receptive_field"] == (1, 8)


class WindowAttention(nn.Module):
    """Attention within 2x2 windows (Swin's, unshifted) or, with `window` None, over every
    position, through F.scaled_dot_product_attention on (windows, heads, positions, C): the
    fused CPU kernel, as a CPU runs it. `mask`: keys within one position of the query
    ("band"), or causal."""

    def __init__(self, window: int | None = 2, mask: str | None = None):
        super().__init__()
        self.window, self.mask = window, mask
        self.out = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        s = self.window or h
        t = x.view(n, c, h // s, s, w // s, s).permute(0, 2, 4, 3, 5, 1).reshape(-1, 1, s * s, c).contiguous()
        band = _band(s * s).to(x.device) if self.mask == "band" else None
        y = F.scaled_dot_product_attention(t, t, t, attn_mask=band, is_causal=self.mask == "causal")
        y = y.reshape(n, h // s, w // s, s, s, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, h, w)
        return self.out(y)


def _fused(report) -> bool:
    return any(op.op == "aten._scaled_dot_product_flash_attention_for_cpu" for op in report.graph.ops)


def test_fused_attention_within_windows_reads_each_window():
    """Each unit reads its own 2x2 window, as the gradient says (the fused kernel had no rule)."""
    model = positive(WindowAttention())
    report = archprof.analyze(model, input_size=(2, 8, 8))
    assert _fused(report) and row(report)["receptive_field"] == (2, 2)
    for unit in [(0, 0), (3, 4), (7, 7), (5, 2)]:
        assert output_unit_box(report, unit) == unit_gradient_box(model, (2, 8, 8), unit), unit


def test_fused_attention_over_every_position_is_global():
    model = WindowAttention(window=None)
    report = archprof.analyze(model, input_size=(2, 4, 4))
    assert _fused(report) and row(report)["receptive_field"] == "input"
    assert gradient_box(positive(model), (2, 4, 4)) == [(0, 3), (0, 3)]


@pytest.mark.parametrize("mask", ["band", "causal"])
def test_fused_attention_with_a_mask_is_undefined(mask):
    """Unit (0, 0) of attention over the 16 positions reads pixel (0, 0) only (causal) or
    (0, 0) and (0, 1) (the band), not every position: the fused kernel's rule leaves the keys
    a mask keeps, which are in its values, undefined."""
    model = WindowAttention(window=None, mask=mask)
    assert gradient_box(positive(model), (2, 4, 4)) == [(0, 0), (0, 0) if mask == "causal" else (0, 1)]
    report = archprof.analyze(model, input_size=(2, 4, 4))
    r = row(report)
    assert _fused(report) and r["receptive_field"] == "undefined"
    assert r["receptive_field_note"].startswith("aten._scaled_dot_product_flash_attention_for_cpu")


def test_multihead_attention_over_positions_is_global():
    """nn.MultiheadAttention over the flattened map, through its inference fast path's kernel."""

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention, self.out = nn.MultiheadAttention(4, 2, batch_first=True), nn.Conv2d(4, 1, 1)

        def forward(self, x):
            n, c, h, w = x.shape
            t = x.flatten(2).transpose(1, 2)
            y = self.attention(t, t, t, need_weights=False)[0]
            return self.out(y.transpose(1, 2).reshape(n, c, h, w))

    model = Tokens()
    report = archprof.analyze(model, input_size=(4, 4, 4))
    assert any(op.op == "aten._native_multi_head_attention" for op in report.graph.ops)
    assert row(report, "out")["receptive_field"] == "input"
    assert gradient_box(positive(model), (4, 4, 4)) == [(0, 3), (0, 3)]


class ClassToken(nn.Module):
    """ViT's patches, flattened, with a class token in front (or, `padded`, a unit of zero
    padding where it would be: CoaT's convolutional position encoding, padded back to the
    tokens' length); then attention over all the tokens (`attend`), or the class token set
    aside and the patches read back as a map and convolved (CoaT's convolutional position
    encoding)."""

    def __init__(self, attend: bool, padded: bool = False):
        super().__init__()
        self.attend, self.padded = attend, padded
        self.patch = nn.Conv2d(2, 4, 4, stride=4)
        self.token = nn.Parameter(torch.zeros(1, 1, 4))
        self.out = nn.Conv2d(4, 2, 3, padding=1)
        self.attention = nn.Linear(4, 4) if attend else None

    def forward(self, x):
        y = self.patch(x)
        n, c, h, w = y.shape
        patches = y.flatten(2).transpose(1, 2)
        tokens = F.pad(patches, (0, 0, 1, 0)) if self.padded else torch.cat([self.token.expand(n, -1, -1), patches], 1)
        if self.attend:
            tokens = torch.softmax(tokens @ tokens.transpose(1, 2), -1) @ self.attention(tokens)
        return self.out(tokens[:, 1:].transpose(1, 2).reshape(n, c, h, w))


def test_a_class_token_beside_the_patches_then_attention_sees_the_whole_input():
    """The class token reads no pixel: attention over it and the patches reads every patch
    (the concatenation was undefined, and so every row after it)."""
    model = ClassToken(attend=True)
    report = archprof.analyze(model, input_size=(2, 16, 16))
    assert [r["receptive_field"] for r in report.rows()[1:]] == ["input"] * (len(report.rows()) - 1)
    assert gradient_box(positive(model), (2, 16, 16)) == [(0, 15), (0, 15)]


@pytest.mark.parametrize("padded", [False, True], ids=["class-token", "padding"])
def test_patches_with_the_class_token_set_aside_keep_their_field(padded):
    """Cut back out of the tokens, the patches are the map they were: a 3x3 convolution on
    4x4 patches reads 12 pixels, unit for unit as the gradient says. Padded in front of the
    patches, a unit of zeros is a class token that reads nothing (it was undefined: "padding
    along a flattened or split dimension", CoaT's crpe rows)."""
    model = ClassToken(attend=False, padded=padded)
    assert row(archprof.analyze(model, input_size=(2, 16, 16)), "out")["receptive_field"] == (12, 12)
    check_against_gradients(model, (2, 16, 16))


class ClassAttention(nn.Module):
    """CaiT's class attention after attention over the patches, each of which then reads the
    whole input: a class token joined in front of them, normalised, its query taken alone,
    keys and values from every token. With `coat`, CoaT's convolutional position encoding
    first: the class token set aside again, the patches read back as a map and convolved,
    and joined back to it."""

    def __init__(self, coat: bool = False):
        super().__init__()
        self.coat = coat
        self.patch = nn.Conv2d(2, 4, 4, stride=4)
        self.mix = nn.Linear(4, 4)
        self.token = nn.Parameter(torch.zeros(1, 1, 4))
        self.norm = nn.LayerNorm(4)
        self.q, self.k, self.v = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
        self.cpe = nn.Conv2d(4, 4, 3, padding=1, groups=4)

    def forward(self, x):
        y = self.patch(x)
        n, c, h, w = y.shape
        patches = y.flatten(2).transpose(1, 2)
        patches = torch.softmax(patches @ patches.transpose(1, 2), -1) @ self.mix(patches)  # each reads every pixel
        u = self.norm(torch.cat([self.token.expand(n, -1, -1), patches], 1))
        if self.coat:
            token, rest = u[:, :1], u[:, 1:]
            rest = self.cpe(rest.transpose(1, 2).reshape(n, c, h, w)).flatten(2).transpose(1, 2)
            u = torch.cat([token, rest], 1)
        q = self.q(u[:, 0]).unsqueeze(1)
        weights = torch.softmax(q @ self.k(u).transpose(1, 2), -1)
        return weights @ self.v(u)


def _token_boxes(model: nn.Module, input_size: tuple[int, ...]) -> dict[str, list]:
    """Per submodule, the gradient box of each token of its output (all channels): None for a
    token no pixel reaches."""
    model = positive(model)
    outputs = {}
    for name, module in model.named_children():
        module.register_forward_hook(lambda m, a, out, name=name: outputs.__setitem__(name, out))
    x = (torch.rand(1, *input_size, dtype=torch.float64) + 0.5).requires_grad_()
    outputs[""] = model(x)
    boxes = {}
    for name, out in outputs.items():
        tokens = out[0].flatten(1).T if out.dim() == 4 else out[0] if out.dim() == 3 else out  # (tokens, channels)
        boxes[name] = [_box(tokens[t].sum(), x) for t in range(tokens.shape[0])]
    return boxes


def _box(unit: torch.Tensor, x: torch.Tensor) -> list[tuple[int, int]] | None:
    if not unit.requires_grad:
        return None
    (gradient,) = torch.autograd.grad(unit, x, retain_graph=True)
    reached = gradient[0].abs().sum(0) > 0
    if not reached.any():
        return None
    return [tuple(int(i) for i in torch.nonzero(reached.any(dim=1 - a)).flatten()[[0, -1]]) for a in range(2)]


@pytest.mark.parametrize("coat", [False, True], ids=["class-attention", "conv-position-encoding"])
def test_a_class_token_joined_to_tokens_that_read_the_whole_input_reads_nothing(coat):
    """The tokens read the whole input, the class token joined to them none, as the gradient
    says token by token: the rows of the tokens read the whole input, the class token's query
    has no field (it read the whole input: the tokens' field was the whole input's, which holds
    no token to set apart), and once attention mixes them every token reads it all."""
    size = (2, 16, 16)
    everything, nothing = [(0, 15), (0, 15)], None
    boxes = _token_boxes(ClassAttention(coat), size)
    rows = {r["layer"]: r for r in archprof.analyze(ClassAttention(coat), input_size=size).rows()}
    assert boxes["norm"] == [nothing] + [everything] * 16
    assert rows["norm"]["receptive_field"] == "input" and rows["norm"]["covers_input"] is True
    if coat:  # the patches read back as a map and out again keep the whole input; the class token, nothing
        assert boxes["cpe"] == [everything] * 16 and rows["cpe"]["receptive_field"] == "input"
    assert boxes["q"] == [nothing] and rows["q"]["receptive_field"] is None and rows["q"]["covers_input"] is None
    assert boxes["k"] == [nothing] + [everything] * 16 and rows["k"]["receptive_field"] == "input"
    assert boxes[""] == [everything]  # the class token's output, after attention over every token


def test_a_global_pooling_reads_what_its_units_reach():
    """A stride-2 1x1 convolution on 4 x 4 pixels reads pixels 0 and 2 of each axis: pooled
    globally, they are pixels 0..2, a field of 3 that does not cover the input, as the
    gradient says (it said the whole input). On 5 x 5 they reach pixel 4: the whole input."""
    model = nn.Sequential(nn.Conv2d(1, 1, 1, stride=2), nn.AdaptiveAvgPool2d(1))
    last = row(archprof.analyze(model, input_size=(1, 4, 4)))
    assert (last["receptive_field"], last["receptive_field_start"], last["covers_input"]) == ((3, 3), (0, 0), False)
    assert gradient_box(positive(model), (1, 4, 4)) == [(0, 2), (0, 2)]
    assert row(archprof.analyze(model, input_size=(1, 5, 5)))["receptive_field"] == "input"
    assert gradient_box(positive(model), (1, 5, 5)) == [(0, 4), (0, 4)]


class Unknown(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3)
        self.op = op

    def forward(self, x):
        return self.op(self.conv(x))


@pytest.mark.parametrize(
    "op",
    [
        torch.tril,  # zeroes the units above the diagonal: no rule yet
        lambda y: F.pad(y, (1, 1, 1, 1), mode="circular"),  # written slice by slice into a new tensor
        lambda y: y.view(1, 1, 100)[..., 5:].view(1, 1, 5, 19),  # a flattened map cut, read as an image
        lambda y: F.interpolate(y, scale_factor=2, mode="bilinear", antialias=True),
        lambda y: torch.stack(y.unbind(2), 2),  # rows picked and stacked back: each unit its own row's
    ],
    ids=["tril", "circular-pad", "flattened-cut", "antialias", "rows-stacked-back"],
)
def test_what_archprof_cannot_place_is_undefined_and_says_why(op):
    r = row(archprof.analyze(Unknown(op), input_size=(1, 12, 12)))
    assert r["receptive_field"] == r["effective_stride"] == r["receptive_field_start"] == "undefined"
    assert r["covers_input"] is None
    assert r["receptive_field_note"]


class Interleaved(nn.Module):
    """Two paths of different fields interleaved along W (out[..., 2k] = a[..., k],
    out[..., 2k + 1] = b[..., k]), by a stack or by channels folded into W."""

    def __init__(self, by: str):
        super().__init__()
        self.by = by
        self.a = nn.Conv2d(1, 1, 1)
        self.b = nn.Conv2d(1, 1, (1, 5), padding=(0, 2))

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        n, c, h, w = a.shape
        if self.by == "stack":
            return torch.stack([a, b], -1).reshape(n, c, h, 2 * w)
        return torch.cat([a, b], 1).permute(0, 2, 3, 1).reshape(n, 1, h, 2 * w)


@pytest.mark.parametrize(
    "model,op",
    [(Interleaved("stack"), "aten.view"), (Interleaved("channels"), "aten._unsafe_view")],
    ids=["stacked-into-w", "channels-into-w"],
)
def test_indices_of_different_fields_folded_into_a_spatial_dimension_are_undefined(model, op):
    """Units 0 and 1 along W read different boxes (their own path's, their own pixel), where
    one unit of the map before read the union of both. Undefined, naming the op."""
    model = positive(model)
    assert unit_gradient_box(model, (1, 8, 8), (0, 0))[1] != unit_gradient_box(model, (1, 8, 8), (0, 1))[1]
    r = row(archprof.analyze(model, input_size=(1, 8, 8)))
    assert r["receptive_field"] == "undefined"
    assert r["receptive_field_note"].startswith(op) and "different fields" in r["receptive_field_note"]


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.Conv2d(1, 1, 1), nn.PixelUnshuffle(2), nn.PixelShuffle(2)),
        nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.PixelShuffle(2)),
        nn.Sequential(
            nn.PixelUnshuffle(2), nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.PixelShuffle(2), nn.Conv2d(1, 1, 3)
        ),
    ],
    ids=["unshuffle-shuffle", "unshuffle-depthwise-shuffle", "then-a-convolution"],
)
def test_channels_of_different_fields_made_positions_are_a_marked_bound(model):
    """A pixel shuffle of channels that read different pixels (a pixel unshuffle's, each
    position of a 2x2 block): each position gets the union of its block's channels, which
    holds its gradient box (the oracle) but is larger (pixel for pixel, the identity, gives
    the whole block); the note says it is an upper bound, on the rows after it too. It was
    undefined."""
    model = positive(model)
    report = archprof.analyze(model, input_size=(1, 8, 8))
    assert row(report)["receptive_field_note"].startswith("an upper bound: aten.pixel_shuffle in ")
    units = [(0, 0), (1, 2), (5, 5)]
    boxes = [(output_unit_box(report, unit), unit_gradient_box(model, (1, 8, 8), unit)) for unit in units]
    assert all(_contains(given, true) for given, true in boxes) and any(g != t for g, t in boxes), boxes


class PathsShuffled(nn.Module):
    """Paths of `sizes` channels (a convolution of each of `kernels`, "same" padding) side by
    side, pixel-shuffled by 2; then the one channel `pick`, or all."""

    def __init__(self, sizes: tuple[int, ...], kernels: tuple[int, ...], pick: int | None = None):
        super().__init__()
        self.paths = nn.ModuleList(nn.Conv2d(1, n, k, padding=k // 2) for n, k in zip(sizes, kernels, strict=True))
        self.pick = pick

    def forward(self, x):
        shuffled = F.pixel_shuffle(torch.cat([path(x) for path in self.paths], 1), 2)
        return shuffled if self.pick is None else shuffled[:, self.pick : self.pick + 1]


# Units of a 16x16 output at every position of their 2x2 blocks, inside and at the borders.
SHUFFLED_UNITS = [(0, 0), (0, 1), (1, 0), (1, 1), (7, 8), (8, 7), (15, 15), (14, 3)]


@pytest.mark.parametrize(
    "sizes,kernels,pick,field",
    [
        ((4, 4), (3, 5), None, (5, 5)),  # each output channel one path's group of 4
        ((4, 4), (3, 5), 0, (3, 3)),  # the first path's channel alone
        ((4, 4, 4), (1, 3, 5), 1, (3, 3)),
        ((6, 6), (3, 5), None, (5, 5)),  # groups across paths, but every position reads both
    ],
    ids=["whole-groups", "whole-groups-sliced", "three-paths-sliced", "groups-across-paths"],
)
def test_a_pixel_shuffle_of_paths_every_position_reads_is_exact(sizes, kernels, pick, field):
    """Concatenated paths pixel-shuffled: where every position of a 2x2 block reads channels of
    every path, the union of the paths is each unit's field, and paths of whole groups of 4
    channels stay apart (output channel 0 of 4 + 4 is the first path's 3x3 alone), every unit
    as the gradient says, with no note. They were marked an upper bound (5x5 for channel 0)."""
    model = positive(PathsShuffled(sizes, kernels, pick))
    report = archprof.analyze(model, input_size=(1, 8, 8))
    assert row(report)["receptive_field"] == field and row(report)["receptive_field_note"] == ""
    for unit in SHUFFLED_UNITS:
        assert output_unit_box(report, unit) == unit_gradient_box(model, (1, 8, 8), unit), unit


def test_a_pixel_shuffle_of_paths_some_positions_miss_is_a_bound_that_says_why():
    """Paths of 2 (5x5) and 6 (1x1) channels shuffled by 2: the odd rows' positions read
    channels 2, 3, 6, 7, the 1x1 path's alone (pixel for pixel, by the gradient), the even
    rows' both; a box per dimension cannot hold that, so each unit gets the union, marked,
    naming the paths and why."""
    model = positive(PathsShuffled((2, 6), (5, 1)))
    assert unit_gradient_box(model, (1, 8, 8), (1, 1)) == [(0, 0), (0, 0)]
    report = archprof.analyze(model, input_size=(1, 8, 8))
    note = row(report)["receptive_field_note"]
    assert note.startswith("an upper bound: aten.pixel_shuffle in (model) makes positions of paths of 2+6 channels")
    assert "not every path at every position of its 2x2 blocks" in note
    boxes = [(output_unit_box(report, u), unit_gradient_box(model, (1, 8, 8), u)) for u in SHUFFLED_UNITS]
    assert all(_contains(given, true) for given, true in boxes) and any(g != t for g, t in boxes), boxes


class SpaceToDepth(nn.Module):
    """2x2 blocks moved into channels by view, permute and view (timm's SpaceToDepth in
    TResNet's stem, YOLOv2's reorg: `order` "blocks-first"; a pixel unshuffle's channel order:
    "channels-first")."""

    def __init__(self, order: str):
        super().__init__()
        self.order = order

    def forward(self, x):
        n, c, h, w = x.shape
        blocks = x.view(n, c, h // 2, 2, w // 2, 2)
        moved = blocks.permute(0, 3, 5, 1, 2, 4) if self.order == "blocks-first" else blocks.permute(0, 1, 3, 5, 2, 4)
        return moved.reshape(n, 4 * c, h // 2, w // 2)


@pytest.mark.parametrize("order", ["blocks-first", "channels-first"])
def test_space_to_depth_then_a_convolution_reads_whole_blocks(order):
    """A convolution mixing every channel reads every position of each block it reaches, as
    after nn.PixelUnshuffle: unit (3, 5) reads pixels 4..9 x 8..13 (it was undefined)."""
    model = positive(nn.Sequential(SpaceToDepth(order), nn.Conv2d(12, 4, 3, padding=1), nn.Conv2d(4, 2, 1)))
    report = check_against_gradients(model, (3, 16, 16))
    assert row(report)["receptive_field"] == (6, 6) and row(report)["effective_stride"] == (2, 2)
    for unit in [(0, 0), (3, 5), (7, 7), (6, 1)]:
        assert output_unit_box(report, unit) == unit_gradient_box(model, (3, 16, 16), unit), unit
    unshuffled = archprof.analyze(
        nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, 4, 3, padding=1)), input_size=(3, 16, 16)
    )
    assert output_unit_box(unshuffled, (3, 5)) == output_unit_box(report, (3, 5)) == [(4, 9), (8, 13)]


def test_a_convolution_over_channels_holding_a_folded_dimension_reads_all_of_it():
    """W folded into channels, then a Conv1d along H mixing every channel: each unit reads
    its rows' whole width, as the gradient says."""

    class FoldedWidth(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2 * 6, 2, 3, padding=1)

        def forward(self, x):
            n, c, h, w = x.shape
            y = self.conv(x.permute(0, 1, 3, 2).reshape(n, c * w, h))  # (N, C W, H)
            return y.unsqueeze(-1)

    model = positive(FoldedWidth())
    report = check_against_gradients(model, (2, 8, 6), units=("first",))
    assert row(report)["receptive_field"] == (3, 6)


@pytest.mark.parametrize("groups", [4, 2])
def test_a_grouped_convolution_over_folded_positions_reads_the_union_of_its_channels(groups):
    """A depthwise (or grouped) convolution after a space-to-depth: each channel reads its
    own positions of the blocks, and a unit, over all its channels, every position of the
    blocks its window reaches, as the gradient says (it was undefined). Folded back into a
    spatial dimension, its channels' different fields are an upper bound, marked."""
    model = positive(nn.Sequential(SpaceToDepth("blocks-first"), nn.Conv2d(4, 4, 3, padding=1, groups=groups)))
    report = check_against_gradients(model, (1, 8, 8))
    assert row(report)["receptive_field"] == (6, 6) and row(report)["effective_stride"] == (2, 2)
    for unit in [(0, 0), (1, 2), (3, 3), (2, 0)]:
        assert output_unit_box(report, unit) == unit_gradient_box(model, (1, 8, 8), unit), unit
    folded_back = nn.Sequential(*model, nn.PixelShuffle(2))
    note = row(archprof.analyze(folded_back, input_size=(1, 8, 8)))["receptive_field_note"]
    assert note.startswith("an upper bound: aten.pixel_shuffle")


def test_fields_too_irregular_to_follow_are_undefined_in_bounded_time():
    """Resamplings by 1.5 between strided pools, 60 times: maps without a period whose padded
    fields widen geometrically (all 60 followed would take hours and all memory). The rows
    past the budget are undefined, saying why; the first are as the gradient gives them."""
    blocks = [nn.Sequential(nn.Conv1d(1, 1, 3, padding=1), nn.Upsample(scale_factor=1.5), nn.AvgPool1d(3, 2, 1))]
    model = nn.Sequential(*(blocks * 60))  # one block, called 60 times
    report = archprof.analyze(model, input_size=(1, 64))
    last = report.rows()[-1]
    assert last["receptive_field"] == "undefined" and "too irregular to follow" in last["receptive_field_note"]
    first = report.rows()[0]
    assert first["receptive_field"] == (3,) and first["receptive_field_start"] == (-1,)


@pytest.mark.parametrize(
    "op,field,stride,start",
    [
        # conv unit u sees [u, u + 2]; padded unit 0 mirrors unit 2 (H, top 2) and unit 1 (W, left 1)
        (lambda y: F.pad(y, (1, 1, 2, 2), mode="reflect"), (3, 3), (1, 1), (2, 1)),
        (lambda y: F.pad(y, (1, 1, 2, 2), mode="replicate"), (3, 3), (1, 1), (0, 0)),  # the edge, repeated
        (lambda y: y.transpose(2, 3), (3, 3), (1, 1), (0, 0)),
        (lambda y: y[:, :, 2], (3, 3), (1,), (2, 0)),  # row 2 of the map, kept: H is unit 2's field
    ],
    ids=["reflection-pad", "replication-pad", "swap-spatial", "select-row"],
)
def test_padding_modes_swaps_and_selects_are_exact(op, field, stride, start):
    r = row(archprof.analyze(Unknown(op), input_size=(1, 12, 12)))
    assert r["receptive_field"] == field
    assert r["receptive_field_start"] == start
    if len(stride) == 2:
        assert r["effective_stride"] == stride
    else:  # one spatial dimension left: the other is kept at one unit, without a stride
        assert r["effective_stride"] == "undefined"


def test_zero_padding_slicing_and_channel_ops_are_exact():
    class Layout(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3)

        def forward(self, x):
            y = F.pad(self.conv(x), (2, 0, 1, 0))  # left 2 in W, top 1 in H
            y = y[:, :, 1::2, 3:]  # every other row from row 1, from column 3
            a, b = torch.chunk(y, 2, dim=1)
            return torch.stack([a, b], 1).sum(1) * torch.sigmoid(y.mean(1, keepdim=True))

    report = check_against_gradients(Layout(), (2, 15, 16))
    # H: pad top 1, then from row 1 -> start 0, stride 2; W: pad left 2, then from column 3 -> start 1
    assert row(report)["receptive_field"] == (3, 3)
    assert row(report)["receptive_field_start"] == (0, 1)
    assert row(report)["effective_stride"] == (2, 1)


def test_in_place_writes_through_a_view_are_not_guessed():
    class Assemble(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            out = torch.zeros_like(x)
            out[:, :, :4] = self.conv(x)[:, :, :4]
            return out * 2

    assert row(archprof.analyze(Assemble(), input_size=(1, 8, 8)))["receptive_field"] == "undefined"


def test_rows_without_a_spatial_field_are_empty():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)
            self.spare = nn.Linear(2, 2)  # never called: a row of parameters only

        def forward(self, x):
            return self.conv(x)

    report = archprof.analyze(Unused(), input_size=(1, 8, 8))
    spare = row(report, "spare")
    assert spare["receptive_field"] is spare["effective_stride"] is spare["receptive_field_start"] is None
    assert spare["covers_input"] is None  # NA: it reads no input, covering or not
    flat = archprof.analyze(nn.Linear(6, 6), input_size=(6,))  # no spatial dimension at all
    assert row(flat)["receptive_field"] is None


def test_covers_input_once_unit_0_spans_the_image():
    model = nn.Sequential(*(nn.Conv2d(1, 1, 3, padding=1) for _ in range(5)))
    report = archprof.analyze(model, input_size=(1, 6, 6))
    # fields 3, 5, 7, 9, 11 starting at -1 .. -5: unit 0 reaches pixel 5 from the 5th conv on
    assert [row(report, str(i))["covers_input"] for i in range(5)] == [False, False, False, False, True]
    assert report.layers["covers_input"].dtype == "boolean"


@pytest.mark.parametrize(
    "model,unit",
    [(ShuffledHalves, (5, 6)), (PooledBlock, (7, 7))],
    ids=["own-ops-after-its-children", "own-ops-before-its-last-child"],
)
def test_a_unit_of_a_module_is_its_outputs(model, unit):
    """`rf --unit` on a module whose own operations are rows of their own gives the box of
    what the module returns (the gradient of that unit is the oracle), not of its first row's
    (ShuffleNet's concatenation after its branch) nor of its last's (NesT's ConvPool: its
    own permutes before its pooling child, whose output it returns: 6..8 was given for
    13..15)."""
    module = positive(model())
    returned = {}
    module.block.register_forward_hook(lambda _, args, output: returned.update(output=output))
    x = (torch.rand(1, 1, 16, 16, dtype=torch.float64) + 0.5).requires_grad_()
    module(x)
    returned["output"][(0, slice(None), *unit)].sum().backward()
    rows, cols = (torch.nonzero((x.grad[0, 0] != 0).any(dim=1 - axis)).flatten() for axis in range(2))
    expected = f"{int(rows.min())}..{int(rows.max())} x {int(cols.min())}..{int(cols.max())}"
    spec, where = f"tests/models.py:{model.__name__}", ",".join(map(str, unit))
    result = cli("rf", spec, "--input", "1x16x16", "--layer", "block", "--unit", where)
    assert result.exit_code == 0, result.output
    assert f"reads input pixels {expected} (of 16x16)" in result.stdout


def test_a_unit_of_the_models_own_operations_is_found_by_the_tables_name():
    """The table names the model's own operations "(model)": `--layer "(model)"` gives the box
    of what the model returns (it said "no layer '(model)'"; only "" found it, and the line
    began "layer , unit"). Unit (2, 2): the 3 x 3 pooling of 3 x 3 convolutions, pixels 0..4."""
    module = positive(OwnPooling())
    expected = "0..4 x 0..4"
    assert unit_gradient_box(module, (1, 8, 8), (2, 2)) == [(0, 4), (0, 4)]
    for name in ("(model)", ""):
        result = cli("rf", "tests/models.py:OwnPooling", "--input", "1x8x8", "--layer", name, "--unit", "2,2")
        assert result.exit_code == 0, result.output
        assert f"layer (model), unit 2,2 reads input pixels {expected} (of 8x8)" in result.stdout


def test_a_unit_past_a_modules_output_is_refused():
    """The block returns an 8x8 map (its pooling child's), which has no unit 12."""
    result = cli("rf", "tests/models.py:PooledBlock", "--input", "1x16x16", "--layer", "block", "--unit", "12,12")
    assert result.exit_code == 2 and "outside the layer's 8 units" in one_error_line(result)


class _AddedToInPlace(nn.Module):
    """As torchvision's FusedMBConv adds its input: a normalised map, scaled in place (as its
    activation is), then a wider path added to it in place, which widens the storage's field."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2)
        self.wide = nn.Conv2d(2, 2, 5, padding=2)

    def forward(self, x):
        result = self.norm(self.conv(x)).mul_(2.0)
        result += self.wide(x)
        return result


def test_a_map_added_to_in_place_keeps_the_field_its_row_made():
    """An in-place write makes other views of a storage unplaceable, but not the written
    tensor's own earlier versions: the norm's row keeps its field (the gradient of the norm's
    output, the same modules up to it, is the oracle), and the sum takes the union."""
    model = positive(_AddedToInPlace())
    report = archprof.analyze(model, input_size=(2, 9, 9))
    assert row(report, "norm")["receptive_field_note"] == ""
    truncated = nn.Sequential(model.conv, model.norm)
    for unit in ("first", "last"):
        assert clipped(field_of(report, "norm", unit), (9, 9)) == gradient_box(truncated, (2, 9, 9), unit)
        assert clipped(field_of(report, None, unit), (9, 9)) == gradient_box(model, (2, 9, 9), unit)


class _TwoBranches(nn.Module):
    """A downsampling ShuffleNet block's shape: two branches read one map, a 3x3 one first,
    then a 1x1 one, whose field is its input's."""

    def __init__(self) -> None:
        super().__init__()
        self.wide, self.narrow = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return torch.cat([self.wide(x), self.narrow(x)], 1)


def test_the_verdict_names_where_every_later_layer_covers_the_input():
    """The field covers the input 'from layer X on' only where every later layer's does: a
    branch beside a covering one may not (unit 0's fields 3, 5, 7 on a 5x5 input: pixels
    up to 1, 2, 3; then 9 for the 3x3 branch, to pixel 4, and still 7 for the 1x1 one)."""
    from archprof.render import to_text
    from archprof.render.fields import receptive_field_table

    model = nn.Sequential(*(nn.Conv2d(4, 4, 3, padding=1) for _ in range(3)), _TwoBranches())
    report = archprof.analyze(model, input_size=(4, 5, 5))
    assert [r["covers_input"] for r in report.rows()] == [False, False, False, True, False, True]
    text = " ".join(to_text(receptive_field_table(report)).split())
    assert "at layer 3.wide, but not at every layer after it (not at 3.narrow); from layer 3 on it does" in text


class _ConstantBranch(nn.Module):
    """A map whose field covers the 8x8 input, then rows that read no input pixel: a grid
    from arange and meshgrid through a convolution (RAFT's initial flow), a positional
    embedding; the sum of all reads the map's field again."""

    def __init__(self) -> None:
        super().__init__()
        self.wide, self.head = nn.Conv2d(1, 1, 17, padding=8), nn.Conv2d(2, 1, 1)
        self.position = nn.Parameter(torch.zeros(1, 1, 8, 8))

    def forward(self, x):
        y = self.wide(x)
        rows, cols = torch.meshgrid(*[torch.arange(8, dtype=x.dtype)] * 2, indexing="ij")
        return y + self.head(torch.stack([rows, cols])[None]) + self.position


def test_rows_reading_no_input_are_neither_covering_nor_not():
    """The grid's row reads no input pixel (its gradient from the input is none: the grid
    does not depend on x): its covers_input is NA, and the verdict, which passes over it, says
    the field covers from the wide convolution on (it said "but not at every layer after it")."""
    from archprof.render import to_text
    from archprof.render.fields import receptive_field_table

    model = positive(_ConstantBranch())
    made = {}
    model.head.register_forward_hook(lambda _, args, output: made.update(head=output))
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    model(x)
    assert torch.autograd.grad(made["head"].sum(), x, allow_unused=True)[0] is None
    report = archprof.analyze(model, input_size=(1, 8, 8))
    assert row(report, "head")["receptive_field"] is None and row(report, "head")["covers_input"] is None
    assert row(report, "wide")["covers_input"] is True and row(report)["covers_input"] is True
    text = " ".join(to_text(receptive_field_table(report)).split())
    assert "the field covers the whole 8x8 input from layer wide on" in text


class _GramOverColumns(nn.Module):
    """A Gram matrix of a map's columns (axial attention's scores along W): unit (v, w) reads
    columns v and w of the map, every row of both."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        y = self.conv(x)
        return y.transpose(-2, -1) @ y


def test_a_map_along_two_dimensions_of_an_output_shows_the_range_of_its_units_fields():
    """Both dimensions of the scores run along the input's W: the units' fields along W range
    from a column's own (v = w) to the hull of the first and last columns', as the gradient of
    every unit shows; along H each reads every row, a size the Field column shows beside the
    range (it showed 6x3, one size, where the units' differ)."""
    from archprof.passes.layers import group_layers
    from archprof.passes.receptive_field import row_states, spreads
    from archprof.render import to_text
    from archprof.render.fields import receptive_field_table

    model = positive(_GramOverColumns())
    x = torch.rand(1, 1, 6, 7, dtype=torch.float64, requires_grad=True)
    scores = model(x)
    heights, widths = set(), set()
    for v in range(scores.shape[-2]):
        for w in range(scores.shape[-1]):
            reached = torch.autograd.grad(scores[0, :, v, w].sum(), x, retain_graph=True)[0][0, 0] != 0
            rows, columns = reached.any(1).nonzero().flatten(), reached.any(0).nonzero().flatten()
            heights.add(int(rows.max() - rows.min() + 1))
            widths.add(int(columns.max() - columns.min() + 1))
    assert heights == {6} and (min(widths), max(widths)) == (3, 7)
    centre_width = 3  # unit (2, 2), the centre's, reads column 2's field alone
    report = archprof.analyze(model, input_size=(1, 6, 7))
    states, spatial = row_states(report.graph, group_layers(report.graph))
    cells = to_text(receptive_field_table(report, spreads=spreads(states, spatial))).splitlines()
    model_row = next(line for line in cells if line.lstrip().startswith("(model)"))
    assert f" 6x{centre_width} (6x{min(widths)}..{max(widths)}) " in model_row


# -- the built-in models -------------------------------------------------------------------
#
# By hand, r' = r + (K - 1) J, J' = J S, start' = start - P J (torchvision layouts):
# VGG-16: five blocks of 3x3 convs (pad 1) each closed by a 2x2/2 max-pool:
#   3, 5 | 6 (J 2) | 10, 14 | 16 (J 4) | 24, 32, 40 | 44 (J 8) | 60, 76, 92 | 100 (J 16)
#   | 132, 164, 196 = conv5_3 | 212 = pool5 (J 32); start -1-1 -2-2 -4*3 -8*3 -16*3 = -90.
#   Araujo et al.'s 212 for vgg_16 is this pool5 value; conv5_3 itself is 196.
# AlexNet: conv1 11/4 pad 2: 11 (J 4) | pool 3/2: 19 (J 8) | conv2 5 pad 2: 51 | pool: 67 (J 16)
#   | conv3-5 3x3: 99, 131, 163 = conv5 | pool5: 195 (J 32); start -2 -2*8 -1*16*3 = -66.
#   195 (Araujo et al.'s alexnet_v2) is pool5's; conv5 is 163.
# ResNet-50 (stride on the 3x3 conv, torchvision): conv1 7/2: 7 | maxpool 3/2: 11 (J 4)
#   | layer1 3 x (+2*4): 35 | layer2 +2*4 (J 8), 3 x (+2*8): 91 | layer3 +2*8 (J 16), 5 x (+2*16): 267
#   | layer4 +2*16 (J 32), 2 x (+2*32): 427; start -3 -2 -3*4 -4 -3*8 -8 -5*16 -16 -2*32 = -213.
#   (TF-slim's resnet_v1_50 strides its blocks' last unit instead, hence a larger field there.)
# MobileNetV2: conv 3/2: 3 (J 2) | one 3x3 depthwise per block, strides 1,2,1,2,1,1,2,1,1,1,1,1,1,2,1,1,1:
#   3+4=7 | +4 (J 4) 11, +8 19 | +8 (J 8) 27, +16*2 59 | +16 (J 16) 75, +32*3 171 | +32*3 267
#   | +32 (J 32) 299, +64*2 427 | +64 491.
# GoogLeNet (ceil-mode max-pools, padding 0): conv1 7/2: 7 (J 2), start -3 | pool 3/2: 11 (J 4)
#   | conv3 3x3: 19, start -7 | pool 3/2: 27 (J 8) | 3a, 3b (widest path: one 3x3): 43, 59, start -23
#   | pool 3/2: 75 (J 16) | 4a-4e: 75 + 5*32 = 235, start -103 | pool 2/2: 251 (J 32)
#   | 5a, 5b: 379, start -103 - 2*32 = -167.
# DenseNet-121: conv0 7/2: 7, start -3 | pool 3/2: 11 (J 4), start -5 | block1 6 x (+2*4): 59,
#   start -29 | transition (1x1, avg 2/2): 63 (J 8) | block2 12 x 16: 255, start -125 | 263 (J 16)
#   | block3 24 x 32: 1031, start -509 | 1047 (J 32) | block4 16 x 64: 2071, start -1021.


@pytest.mark.parametrize(
    "model,layer,field,stride,start",
    [
        ("vgg16", "features.28", 196, 16, -90),  # conv5_3
        ("vgg16", "features.30", 212, 32, -90),  # pool5
        ("alexnet", "features.10", 163, 16, -66),  # conv5
        ("alexnet", "features.12", 195, 32, -66),  # pool5
        ("resnet50", "layer4.2.conv3", 427, 32, -213),
        ("resnet50", "layer4", None, None, None),
        ("mobilenet_v2", "features.18.0", 491, 32, -245),
        ("googlenet", "maxpool4", 251, 32, -103),
        ("googlenet", "inception5b", 379, 32, -167),
        ("densenet121", "features.norm5", 2071, 32, -1021),
    ],
)
def test_built_in_models_against_hand_derived_fields(model, layer, field, stride, start):
    report = archprof.analyze(model)
    if field is None:  # a rolled-up row takes its last row's field
        rolled = report.rollup(1)
        assert row(rolled, layer)["receptive_field"] == row(report, "layer4.2.relu")["receptive_field"] == (427, 427)
        return
    r = row(report, layer)
    assert r["receptive_field"] == (field, field)
    assert r["effective_stride"] == (stride, stride)
    assert r["receptive_field_start"] == (start, start)


def test_resnet18_layer4():
    # layer1: 2 blocks x 2 3x3 convs at J 4: 11 + 4*8 = 43; layer2: 43 + 8 (J 8) + 3*16 = 99;
    # layer3: 99 + 16 (J 16) + 3*32 = 211; layer4: 211 + 32 (J 32) + 3*64 = 435.
    report = archprof.analyze("resnet18")
    assert [row(report, f"layer{i}.1.conv2")["receptive_field"] for i in (1, 2, 3, 4)] == [
        (43, 43),
        (99, 99),
        (211, 211),
        (435, 435),
    ]


def test_every_built_in_model_has_a_defined_field_everywhere():
    from archprof.zoo import MODELS

    for name in MODELS:
        report = archprof.analyze(name)
        fields = report.columns["receptive_field"]
        assert "undefined" not in fields, name
        if len(report.columns["output_shape"][-1].split("x")) == 2:  # a classifier head
            assert fields[-1] == "input", name


def test_cli_rf_prints_the_table_and_where_the_field_covers_the_input(tmp_path):
    from typer.testing import CliRunner

    from archprof.cli import app

    runner = CliRunner()
    done = runner.invoke(app, ["rf", "resnet18"], terminal_width=200)
    assert done.exit_code == 0, done.output
    assert "435x435" in done.output
    assert "the field covers the whole 224x224 input from layer avgpool on" in done.output
    done = runner.invoke(app, ["rf", "edge_conv", "-i", "1x32x32"])
    assert done.exit_code == 0, done.output
    assert "never covers the whole 32x32 input" in done.output
    done = runner.invoke(app, ["rf", "lenet5", "-f", "csv"])
    assert "receptive_field,effective_stride,receptive_field_start,covers_input" in done.output
    done = runner.invoke(app, ["rf", "alexnet", "-o", str(tmp_path / "rf.txt")])
    assert done.exit_code == 0 and "195x195" in (tmp_path / "rf.txt").read_text()
    assert runner.invoke(app, ["rf", "no_such_model"]).exit_code == 2


class _StatisticsByHand(nn.Module):
    """An instance norm written as the reductions it computes."""

    def forward(self, x):
        mean, var = x.mean((2, 3), keepdim=True), x.var((2, 3), keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + 1e-5)


@pytest.mark.parametrize("norm", [nn.GroupNorm(2, 4), nn.InstanceNorm2d(4), nn.LayerNorm((4, 7, 8)), nn.BatchNorm2d(4)])
def test_a_normalisation_is_pointwise_by_convention(norm):
    """Its statistics are not part of the field (README, formulas.md): after a 3x3
    convolution the field stays 3x3, in evaluation and in a training trace; the same
    statistics written as reductions read every position."""
    for training in (False, True):
        report = archprof.analyze(nn.Sequential(nn.Conv2d(1, 4, 3), norm), input_size=(1, 9, 10), training=training)
        assert row(report)["receptive_field"] == (3, 3)
    by_hand = archprof.analyze(nn.Sequential(nn.Conv2d(1, 4, 3), _StatisticsByHand()), input_size=(1, 9, 10))
    assert row(by_hand)["receptive_field"] == "input"


class MixedStridedRows(nn.Module):
    """A 3x3 convolution with stride 2 over 8 rows reads rows 0 to 6 (the stride's remainder,
    row 7, none), then a mean over its rows; with `beside`, a 2x2 convolution with stride 3
    (rows 3 i to 3 i + 1, row 7 the last's) added to it, the mean broadcast over its rows."""

    def __init__(self, beside: bool):
        super().__init__()
        self.strided = nn.Conv2d(1, 2, 3, stride=2)
        self.beside = nn.Conv2d(1, 2, 2, stride=3) if beside else None

    def forward(self, x):
        mixed = self.strided(x).mean(2, keepdim=True)
        return mixed if self.beside is None else mixed + self.beside(x)


@pytest.mark.parametrize("beside", [False, True], ids=["mixed", "mixed-beside-a-map"])
def test_a_dimension_mixed_whole_reads_the_footprint_of_the_map_it_mixed(beside):
    """Mixed whole, a dimension reads every row the mixed map's units read, not the whole
    input: the unit box ends at row 6, as the gradient says, unless the map beside it reads
    row 7 (it answered rows 0 to 7 for every unit)."""
    model = positive(MixedStridedRows(beside))
    report = archprof.analyze(model, input_size=(1, 8, 8))
    units = [(0, 0), (0, 2)] + ([(1, 1), (2, 0), (2, 2)] if beside else [])
    for unit in units:
        assert output_unit_box(report, unit) == unit_gradient_box(model, (1, 8, 8), unit), unit
    assert unit_gradient_box(model, (1, 8, 8), (0, 0))[0] == (0, 6)  # the oracle itself: row 7 unread


_CONV_CALLED_TWICE = """
import torch
from torch import nn


class ConvTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3)

    def forward(self, x):
        return self.conv(self.conv(x))
"""


def test_a_unit_of_a_modules_second_call_is_found_by_the_tables_name(tmp_path):
    """`rf` lists a module called twice as "conv" and "conv (call 2)": `--layer` takes either,
    and gives the box of that call's output (the oracle: the gradient of its unit on a model
    of positive weights). It refused "conv (call 2)", which left no way to the second call."""
    (tmp_path / "twice.py").write_text(_CONV_CALLED_TWICE)
    namespace: dict = {}
    exec(_CONV_CALLED_TWICE, namespace)
    module = positive(namespace["ConvTwice"]())
    outputs = []
    module.conv.register_forward_hook(lambda _, args, output: outputs.append(output))
    x = (torch.rand(1, 1, 12, 12, dtype=torch.float64) + 0.5).requires_grad_()
    module(x)
    for call, label in enumerate(("conv", "conv (call 2)")):
        x.grad = None
        outputs[call][0, :, 4, 5].sum().backward(retain_graph=True)
        rows, cols = (torch.nonzero((x.grad[0, 0] != 0).any(dim=1 - axis)).flatten() for axis in range(2))
        expected = f"{int(rows.min())}..{int(rows.max())} x {int(cols.min())}..{int(cols.max())}"
        result = cli(
            "rf", f"{tmp_path / 'twice.py'}:ConvTwice", "--input", "1x12x12", "--layer", label, "--unit", "4,5"
        )
        assert result.exit_code == 0, result.output
        assert f"layer {label}, unit 4,5 reads input pixels {expected} (of 12x12)" in result.stdout
    assert expected == "4..8 x 5..9"  # two 3x3 convolutions: 5 pixels from the unit's own index
