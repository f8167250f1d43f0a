"""Receptive fields through operators that move or gather positions: a flipped map's effective
stride is the distance between neighbouring units' fields, whatever their order; a scatter
along a spatial dimension writes where its index's values say; Tensor.unfold's windows read
what a pooling of them would; a running sum and an LSTM along a spatial dimension read from
one end; torch.rot90 is a flip and a transpose."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archprof
from archprof.passes.receptive_field import tensor_fields, unit_box
from tests.field_oracle import positive, unit_gradient_box


class FlippedStridedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x).flip(3)


class MirroredByScatter(nn.Module):
    """A map's columns mirrored by scatter, index 7..0 (what each unit reads is in the values)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        index = torch.arange(7, -1, -1, device=x.device).view(1, 1, 1, 8).expand(1, 2, 8, 8)
        return torch.zeros(1, 2, 8, 8, dtype=x.dtype, device=x.device).scatter(3, index, self.conv(x))


def test_a_flipped_maps_effective_stride_is_the_distance_between_neighbours():
    """It read (2, -2): `diff` then reported the same network without the flip as a change of -4 px."""
    report = archprof.analyze(FlippedStridedConv(), input_size=(1, 16, 16))
    last = report.row(len(report) - 1)
    model = positive(FlippedStridedConv())
    left, right = (unit_gradient_box(model, (1, 16, 16), (3, column)) for column in (3, 4))
    assert left[1][0] - right[1][0] == 2  # the oracle: a unit further right reads 2 pixels further left
    assert last["effective_stride"] == (2, 2)
    fields, spatial = tensor_fields(report.graph)
    assert unit_box(fields[report.graph.outputs[0].id], spatial, (3, 3)) == left


def test_a_scatter_along_a_spatial_dimension_has_no_field_it_could_state():
    """It read the whole line (columns 0..7) as exact, where unit (0, 0) reads columns 6..7."""
    assert unit_gradient_box(positive(MirroredByScatter()), (1, 8, 8), (0, 0)) == [(0, 1), (6, 7)]
    report = archprof.analyze(MirroredByScatter(), input_size=(1, 8, 8))
    last = report.row(len(report) - 1)
    assert last["receptive_field"] == "undefined"
    assert "positions written are in its index's values" in last["receptive_field_note"]
    fields, spatial = tensor_fields(report.graph)
    with pytest.raises(archprof.ArchprofError, match="undefined"):
        unit_box(fields[report.graph.outputs[0].id], spatial, (0, 0))


class SlidingWindows(nn.Module):
    def __init__(self, windows):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.windows = windows

    def forward(self, x):
        return self.windows(self.conv(x))


WINDOWS = {
    "along H, 4 every 2, summed": lambda y: y.unfold(2, 4, 2).sum(-1),
    "along W, 3 every 1, summed": lambda y: y.unfold(3, 3, 1).sum(-1),
    "along both, summed": lambda y: y.unfold(2, 3, 2).unfold(3, 2, 3).sum((-1, -2)),
    "along the channels": lambda y: y.unfold(1, 2, 1).sum(-1),
}


@pytest.mark.parametrize("windows", WINDOWS.values(), ids=WINDOWS.keys())
def test_every_unit_of_sliding_windows_reads_its_gradient_footprint(windows):
    """Tensor.unfold had no rule: every row after it was undefined (timm's HaloNet from its
    first halo attention on), where each window reads what a pooling of it would."""
    _assert_every_unit_exact(SlidingWindows(windows), (1, 10, 10))


RUNNING_SUMS = {
    "along H": lambda y: y.cumsum(2),
    "along W, then pooled": lambda y: F.avg_pool2d(y.cumsum(-1), 2),
    "along both": lambda y: y.cumsum(2).cumsum(3),
    "from the other end": lambda y: y.flip(3).cumsum(3).flip(3),
    "along the channels": lambda y: y.cumsum(1),
}


@pytest.mark.parametrize("running", RUNNING_SUMS.values(), ids=RUNNING_SUMS.keys())
def test_every_unit_of_a_running_sum_reads_its_gradient_footprint(running):
    """A running sum along a spatial dimension was undefined: unit u reads units 0 to u."""
    _assert_every_unit_exact(SlidingWindows(running), (1, 10, 10))


ROTATIONS = {f"k={k}, dims={dims}": (k, dims) for k in (1, 2, 3, -1) for dims in ((2, 3), (3, 2))}


@pytest.mark.parametrize("k, dims", ROTATIONS.values(), ids=ROTATIONS.keys())
def test_every_unit_of_a_rotated_map_reads_its_gradient_footprint(k, dims):
    """torch.rot90 was undefined: a flip and a transpose, each of which archprof follows."""
    model = SlidingWindows(lambda y: F.avg_pool2d(torch.rot90(y, k, dims), 2, 1))
    _assert_every_unit_exact(model, (1, 10, 10), transposed=k % 2 == 1)


class LSTMAlongRows(nn.Module):
    """A map's rows (or columns) as sequences through an LSTM, as Sequencer2D's blocks run them."""

    def __init__(self, bidirectional: bool, along_columns: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.lstm = nn.LSTM(4, 3, batch_first=True, bidirectional=bidirectional)
        self.along_columns = along_columns

    def forward(self, x):
        y = self.conv(x)
        y = y.transpose(2, 3) if self.along_columns else y
        batch, channels, rows, columns = y.shape
        out = self.lstm(y.permute(0, 2, 3, 1).reshape(batch * rows, columns, channels))[0]
        out = out.reshape(batch, rows, columns, -1).permute(0, 3, 1, 2)
        return out.transpose(2, 3) if self.along_columns else out


@pytest.mark.parametrize(
    "bidirectional, along_columns", [(False, False), (True, False), (False, True)], ids=["forward", "both ways", "down"]
)
def test_every_unit_of_an_lstm_along_a_spatial_dimension_reads_its_gradient_footprint(bidirectional, along_columns):
    """oneDNN's LSTM layer had no rule: every row after it undefined (timm's sequencer2d_s, its
    head included). Step t reads steps 0 to t (t to the end, reversed)."""
    model = LSTMAlongRows(bidirectional, along_columns)
    report = archprof.analyze(model, input_size=(1, 8, 8))
    if not any("oneDNN" in kernel for kernel in report.graph.kernels):
        pytest.skip("this processor's float32 LSTM is not oneDNN's")
    _assert_every_unit_exact(model, (1, 8, 8))


def _assert_every_unit_exact(model: nn.Module, input_size: tuple[int, ...], transposed: bool = False) -> None:
    """Every unit of the model's output map: archprof's exact box is the gradient footprint
    (`unit_box` takes a unit in the input's order of dimensions: swapped for a transposed map)."""
    report = archprof.analyze(model, input_size=input_size)
    output = report.graph.outputs[0]
    fields, spatial = tensor_fields(report.graph)
    oracle = positive(model)
    for h in range(output.shape[2]):
        for w in range(output.shape[3]):
            box = unit_box(fields[output.id], spatial, (w, h) if transposed else (h, w))
            assert [tuple(b) for b in box] == unit_gradient_box(oracle, input_size, (h, w)), (h, w)


class SpaceToDepth(nn.Module):
    """timm's SpaceToDepth (TResNet's stem): each 2x2 block of pixels moved into channels by a
    view and a permute, after a 3x3 convolution; or the same by a tiling F.unfold viewed back
    as a map."""

    def __init__(self, unfold: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.unfold = unfold

    def forward(self, x):
        y = self.conv(x)
        n, c, h, w = y.shape
        if self.unfold:
            return F.unfold(y, 2, stride=2).view(n, c * 4, h // 2, w // 2)
        y = y.view(n, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4).contiguous()
        return y.view(n, c * 4, h // 2, w // 2)


@pytest.mark.parametrize("unfold", [False, True], ids=["view and permute", "unfold"])
def test_a_space_to_depth_unit_reads_its_whole_block(unfold):
    """A space-to-depth's unit holds its whole 2x2 block in its channels: unit (2, 3) after
    a 3x3 convolution reads pixels 3..6 x 5..8, its block's and the window's around it, as
    the gradient oracle says. The row read one pixel of each block (3x3, the first offset's),
    which timm's TResNet showed as a field of 1x1 for its stem."""
    model = positive(SpaceToDepth(unfold))
    report = archprof.analyze(model, input_size=(1, 16, 16))
    fields, spatial = tensor_fields(report.graph)
    state = fields[report.graph.outputs[0].id]
    for unit in ((0, 0), (2, 3), (7, 7)):
        assert unit_box(state, spatial, unit) == unit_gradient_box(model, (1, 16, 16), unit), unit
    row = report.rows()[-1]
    assert (row["receptive_field"], row["receptive_field_start"], row["effective_stride"]) == ((4, 4), (-1, -1), (2, 2))


class SideBySide(nn.Module):
    """A 3x3 and a 5x5 convolution of one map (or two 3x3 ones: `alike`), joined along its width."""

    def __init__(self, alike: bool = False):
        super().__init__()
        self.narrow = nn.Conv2d(1, 1, 3, padding=1)
        self.wide = nn.Conv2d(1, 1, 3, padding=1) if alike else nn.Conv2d(1, 1, 5, padding=2)

    def forward(self, x):
        return torch.cat([self.narrow(x), self.wide(x)], 3)


def test_paths_joined_along_one_dimension_with_other_fields_along_another_are_a_bound():
    """Unit 0 lies in the 3x3 path: it reads 2 rows (0..1), the oracle says, where a field
    per dimension gives it the union of both paths' rows along the height (5 from -2). No note
    said so; it is now marked an upper bound, and every unit's box holds the oracle's."""
    model = positive(SideBySide())
    report = archprof.analyze(model, input_size=(1, 8, 8))
    row = report.rows()[-1]
    assert row["receptive_field_note"].startswith("an upper bound")
    fields, spatial = tensor_fields(report.graph)
    state = fields[report.graph.outputs[0].id]
    for unit in ((0, 0), (4, 3), (4, 12)):
        bound, oracle = unit_box(state, spatial, unit), unit_gradient_box(model, (1, 8, 8), unit)
        assert all(b[0] <= o[0] and o[1] <= b[1] for b, o in zip(bound, oracle, strict=True)), unit
    assert unit_gradient_box(model, (1, 8, 8), (0, 0))[0] == (0, 1)


def test_paths_joined_along_one_dimension_that_read_alike_along_the_others_are_exact():
    """Two 3x3 convolutions of one map side by side read alike along the height: no bound
    (their maps, built by two operators, were taken for different ones), and every unit's
    box is the gradient oracle's."""
    model = positive(SideBySide(alike=True))
    report = archprof.analyze(model, input_size=(1, 8, 8))
    assert not report.rows()[-1]["receptive_field_note"].startswith("an upper bound")
    fields, spatial = tensor_fields(report.graph)
    state = fields[report.graph.outputs[0].id]
    for unit in ((0, 0), (4, 3), (4, 12), (7, 15)):
        assert unit_box(state, spatial, unit) == unit_gradient_box(model, (1, 8, 8), unit), unit


class PooledChannelsLast(nn.Module):
    """A channels-last map of 1x1 (a 3x3 convolution of stride 4 on 5x5) pooled to 1x1: ATen's
    adaptive average pooling restrides its output to channels last (`as_strided_`), which had
    no rule, so the pooling, the flatten and the linear layer after it were undefined
    (ConvNeXt's head on a map that ends at 1x1)."""

    def __init__(self, channels_last: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
        self.layout = torch.channels_last if channels_last else torch.contiguous_format

    def forward(self, x):
        return self.head(self.conv(x.contiguous(memory_format=self.layout)))


def test_a_channels_last_map_pooled_to_1x1_keeps_the_field_of_its_unit():
    report = archprof.analyze(PooledChannelsLast(channels_last=True), input_size=(3, 5, 5))
    assert "aten.as_strided_" in {op.op for op in report.graph.ops}
    contiguous = archprof.analyze(PooledChannelsLast(channels_last=False), input_size=(3, 5, 5))
    assert "aten.as_strided_" not in {op.op for op in contiguous.graph.ops}
    columns = ["layer", "receptive_field", "receptive_field_start", "receptive_field_note"]
    layers = [
        report.layers[columns].iloc[-4:].reset_index(drop=True),
        contiguous.layers[columns].reset_index(drop=True),
    ]
    assert layers[0].equals(layers[1])  # the convolution's row and the head's three: the layout moves no unit
    # The one unit reads pixels 0 to 2 along each side (3x3, stride 4), as the gradient says.
    assert unit_gradient_box(
        positive(nn.Sequential(*list(PooledChannelsLast(True).children())[:1])), (3, 5, 5), (0, 0)
    ) == [(0, 2), (0, 2)]
    assert list(report.layers["receptive_field"])[-4:] == [(3, 3)] * 4
    assert list(report.layers["receptive_field_start"])[-4:] == [(0, 0)] * 4


class Restrided(nn.Module):
    """torch.as_strided over a 4x4 map: picking every other row and column; the same sizes,
    rows and columns swapped (a transpose by strides); a column's view restrided to stride 1
    (the first row's units). The units read depend on strides the graph does not keep."""

    def __init__(self, how: str):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.how = how

    def forward(self, x):
        y = self.conv(x)
        if self.how == "apart":
            return torch.as_strided(y, (1, 1, 2, 2), (16, 16, 8, 2))
        if self.how == "swapped":
            return torch.as_strided(y, (1, 1, 4, 4), (16, 16, 1, 4))
        return torch.as_strided(y[:, :, :, :1].transpose(2, 3), (1, 1, 1, 4), (16, 16, 16, 1))


@pytest.mark.parametrize("how", ["apart", "swapped", "of a view"])
def test_strides_that_move_units_leave_the_field_undefined(how):
    report = archprof.analyze(Restrided(how), input_size=(1, 4, 4))
    last = report.rows()[-1]
    assert last["receptive_field"] == "undefined"
    assert "depend on strides the graph does not keep" in last["receptive_field_note"]


class KeptAndAddedBack(nn.Module):
    """A 1x1 map (a convolution of stride 4 on 5x5) through a linear layer over its channels
    (permuted to the end and back, its one unit kept along each axis), added to a 1x1 map:
    itself (ConvNeXt's blocks where the last map is 1x1), or another convolution's (`other`:
    5x5, so that the kept unit reads more than the map beside it)."""

    def __init__(self, other: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4)
        self.other = nn.Conv2d(3, 4, 5, stride=5) if other else None
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.conv(x)
        kept = self.other(x) if self.other is not None else y
        return y + self.fc(kept.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("other", [False, True])
def test_a_unit_kept_through_a_permute_and_added_to_a_map_reads_both(other):
    """`archprof rf --unit` refused both ("runs along input dimension 1 twice"); the first,
    whose kept unit is the map's own, also read "kept at one position or read twice" with no
    effective stride, a plain 3x3 field of stride 4."""
    model = KeptAndAddedBack(other)
    report = archprof.analyze(model, input_size=(3, 5, 5))
    fields, spatial = tensor_fields(report.graph)
    expected = unit_gradient_box(positive(KeptAndAddedBack(other)), (3, 5, 5), (0, 0))
    assert expected == ([(0, 4), (0, 4)] if other else [(0, 2), (0, 2)])
    assert unit_box(fields[report.graph.outputs[0].id], spatial, (0, 0)) == expected
    last = report.rows()[-1]
    if not other:
        assert (last["receptive_field"], last["effective_stride"], last["receptive_field_note"]) == ((3, 3), (4, 4), "")
