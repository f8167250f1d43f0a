"""Receptive fields of units beside a constant padding of a dimension pooled to one unit
(paths side by side along it, which no input axis runs along): through the windows,
resamplings, reductions and sums after it, every unit's box equals its gradient footprint
(`tests/field_oracle.py`), none where it reads only padding; ops that move those units
without following them give an upper bound, said so. Then the range over the units of a
map too long to measure unit by unit, whose last units differ from its first."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archprof.analysis import analysis, load
from archprof.passes.layers import group_layers
from archprof.passes.receptive_field import FieldMark, receptive_field_columns, row_states, spreads, unit_box
from tests.field_oracle import positive, unit_gradient_box

SIZE = (3, 9, 13)


class Lambda(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


def padded_rows(*after: nn.Module) -> nn.Sequential:
    """The rows pooled to one (1 x 5 units), then zero rows padded round it: padding, padding,
    the pooled row, padding; then `after`."""
    return nn.Sequential(nn.AdaptiveAvgPool2d((1, 5)), Lambda(lambda x: F.pad(x, (0, 0, 2, 1))), *after)


def padded_map(pad: tuple[int, ...], *after: nn.Module) -> nn.Sequential:
    """The map pooled to one unit along both dimensions (it reads the whole input), padded
    with zeros by `pad` (F.pad's order); then `after`."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), Lambda(lambda x: F.pad(x, pad)), *after)


def analysed(model: nn.Module, size: tuple[int, ...] = SIZE):
    """archprof's analysis of `model` (positive float64 weights, as the oracle's) on one input."""
    return analysis(load(model), size, None, torch.float64)


def output_state(model: nn.Module, size: tuple[int, ...] = SIZE):
    """The state of the model's output (each row's, the last), and the input's spatial size."""
    graph = analysed(model, size).graph
    states, spatial = row_states(graph, group_layers(graph))
    return states[-1], spatial


def gradient_box(model: nn.Module, size: tuple[int, ...], unit: tuple[int, int]) -> list[tuple[int, int]] | None:
    """The oracle's box of one output unit; None where no pixel's gradient from it is non-zero
    (the oracle then finds no first pixel to index)."""
    try:
        return unit_gradient_box(model, size, unit)
    except IndexError:
        return None


def archprof_box(state, spatial, unit: tuple[int, int]) -> list[tuple[int, int]] | None:
    """`rf --unit`'s box, None where the unit reads no pixel."""
    box = unit_box(state, spatial, unit)
    return None if None in box else [tuple(interval) for interval in box]


def units_of(model: nn.Module, size: tuple[int, ...] = SIZE) -> list[tuple[int, int]]:
    with torch.no_grad():
        rows, columns = model(torch.zeros(1, *size, dtype=torch.float64)).shape[2:]
    return list(itertools.product(range(rows), range(columns)))


def held(box, footprint) -> bool:
    """Whether the upper bound `box` holds the footprint (nothing holds nothing)."""
    if footprint is None:
        return True
    return box is not None and all(b[0] <= f[0] and f[1] <= b[1] for b, f in zip(box, footprint, strict=True))


def check_every_unit(model: nn.Module, size: tuple[int, ...] = SIZE, bound: bool = False) -> None:
    """Every output unit's box: the footprint itself; or with `bound`, where archprof says the
    field is an upper bound (its note), one that holds it."""
    model = positive(model)
    state, spatial = output_state(model, size)
    assert getattr(state, "bound", "").startswith("an upper bound: ") if bound else not getattr(state, "bound", "")
    for unit in units_of(model, size):
        box, footprint = archprof_box(state, spatial, unit), gradient_box(model, size, unit)
        assert held(box, footprint) if bound else box == footprint, (unit, box, footprint)


# -- windows and resampling along the padded dimension ---------------------------------------


@pytest.mark.parametrize(
    "after",
    [
        nn.Conv2d(3, 3, 1, stride=(2, 1)),  # rows 0 and 2: padding, then the pooled row
        nn.Conv2d(3, 3, (2, 1)),
        nn.Conv2d(3, 3, (2, 3), padding=(0, 1)),  # the columns moved too, each path alone
        nn.Conv2d(3, 3, 3, stride=2, padding=1),
        nn.ConvTranspose2d(3, 3, (3, 2), stride=(2, 1)),
        nn.AvgPool2d((1, 1), stride=(2, 1)),  # row 0 reads padding only
        nn.AdaptiveAvgPool2d((2, 3)),
        nn.Upsample(scale_factor=2),
        nn.Upsample(size=(7, 5)),
        nn.Upsample(scale_factor=2, mode="bilinear"),
    ],
    ids=lambda module: type(module).__name__,
)
def test_a_window_after_a_padded_pooled_dimension_reads_the_paths_of_its_units(after):
    """Each output unit reads the union of what the units of its window read there: the
    pooled row's columns, or nothing where they are all padding."""
    check_every_unit(padded_rows(after))


def test_a_crop_of_the_only_real_row_leaves_a_map_that_reads_no_pixel():
    """F.pad(x, (0, 0, -1, 3)) crops the pooled row away and pads three zero rows: the map
    has no field, as its gradient reaches no pixel from any unit."""
    model = positive(nn.Sequential(nn.AdaptiveAvgPool2d((1, 5)), Lambda(lambda x: F.pad(x, (0, 0, -1, 3)))))
    state, _ = output_state(model)
    assert state is None
    assert all(gradient_box(model, SIZE, unit) is None for unit in units_of(model))


@pytest.mark.parametrize("pads", [((2, 1), (1, 0)), ((0, 2), (1, 0)), ((1, 1), (0, 2))])
def test_a_pooled_dimension_padded_twice_indexes_each_padding_within_its_own(pads):
    """Padded again, the first padding's units lie within the second's: a unit's index there
    counts from the start of the part it lies in."""
    first, second = pads
    check_every_unit(padded_rows(Lambda(lambda x: F.pad(F.pad(x, (0, 0, *first)), (0, 0, *second)))))


# -- a map pooled to one unit everywhere, padded --------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        padded_map((2, 3, 0, 0)),
        padded_map((2, 3, 1, 0)),
        padded_map((2, 3, 1, 2), nn.Conv2d(3, 3, 3, padding=1), nn.AvgPool2d(2)),
        padded_map((2, 3, 1, 2), nn.AdaptiveAvgPool2d((2, 1))),
    ],
    ids=["columns", "rows and columns", "convolved", "pooled"],
)
def test_a_map_pooled_to_one_unit_then_padded_is_not_global(model):
    """Only the units beside the padding read the whole input; the padding's read nothing,
    which `--unit` says, and the row is no global one (every unit reading every pixel): its
    note says which units read it."""
    check_every_unit(model)
    graph = analysed(positive(model)).graph
    columns = receptive_field_columns(graph, group_layers(graph))
    assert columns["receptive_field"][-1] != FieldMark.INPUT
    assert columns["receptive_field_note"][-1] == "every unit that reads a pixel reads the whole of input dimension 1"


def pooled(x: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, 1)


@pytest.mark.parametrize(
    "model",
    [
        # Columns padded, then rows: paths along the rows hold paths along the columns, and the
        # other way round once the columns are padded again; a window along both reads them.
        padded_map(
            (0, 2, 3, 0),
            nn.ConvTranspose2d(3, 3, 1, stride=(3, 2), output_padding=(2, 1)),
            Lambda(lambda x: F.pad(x, (1, 2, 0, 1))),
            nn.Conv2d(3, 3, (2, 4)),
        ),
        padded_map((2, 3, 1, 3), Lambda(lambda x: F.pad(x, (3, 3, -1, 3)))),  # rows cropped inside the columns
        Lambda(lambda x: torch.cat([F.pad(pooled(x), (0, 1)), pooled(x).expand(-1, -1, 1, 2)], 2)),
    ],
    ids=["window over both", "rows cropped", "beside a map read whole"],
)
def test_paths_along_one_dimension_inside_paths_along_the_other_are_followed(model):
    """Both dimensions pooled away and padded: each unit reads what its path along each reads,
    however the paths nest, or nothing."""
    check_every_unit(model)


class ConvolvedBeside(nn.Module):
    """The map and its convolution along the columns, side by side along the channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, (1, 3), padding=(0, 1))

    def forward(self, x):
        return torch.cat([x, self.conv(x)], 1)


class Residual(nn.Module):
    """The map plus its dilated convolution along the rows ("same" padding)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, (3, 1), padding="same", dilation=2)

    def forward(self, x):
        return x + self.conv(x)


@pytest.mark.parametrize(
    ("model", "size"),
    [
        # Both columns read the pooled map, then a dilated window reads only their padding.
        (
            padded_map(
                (0, 1, 2, 2), nn.Conv2d(3, 3, (1, 3), padding=(0, 1)), nn.Conv2d(3, 3, (1, 2), 1, (0, 1), (1, 3))
            ),
            SIZE,
        ),
        # Rows that lost their paths (beside channels), resized, then beside channels again.
        (padded_rows(ConvolvedBeside(3), nn.Upsample(size=(12, 5)), ConvolvedBeside(6)), SIZE),
        # A transposed convolution's empty rows and columns, its units pooled along both after a sum.
        (
            padded_map(
                (3, 3, 0, 3),
                nn.AvgPool2d((4, 3), (1, 2), (0, 1)),
                nn.ConvTranspose2d(3, 3, (2, 4), (2, 3), (1, 3), (1, 1), groups=3, dilation=2),
                Residual(3),
                nn.AdaptiveAvgPool2d((3, 9)),
            ),
            (3, 5, 14),
        ),
    ],
    ids=["window over padding only", "paths lost, resized", "bound pooled"],
)
def test_units_that_may_read_nothing_get_an_upper_bound(model, size):
    """Where a unit may read nothing but archprof cannot place it (a window along a dimension
    every unit of which read the whole input; rows whose paths an op did not follow, however
    they move after), the field is an upper bound, kept through every path, and each box
    holds the footprint."""
    check_every_unit(model, size, bound=True)


# -- reductions and sums keep the paths apart -----------------------------------------------


@pytest.mark.parametrize(
    "after",
    [
        Lambda(lambda x: x + torch.relu(x)),  # the same paths twice
        Lambda(lambda x: x + F.avg_pool2d(x, (1, 3), 1, (0, 1))),
        Lambda(lambda x: x + F.pad(x, (0, 0, 1, -1))),  # paths that end elsewhere
        Lambda(lambda x: x * x.mean(1, keepdim=True)),
        Lambda(lambda x: x.mean(3, keepdim=True)),
        Lambda(lambda x: torch.softmax(x, 3)),
        nn.AdaptiveAvgPool2d((4, 1)),
    ],
    ids=["relu added", "pooled added", "shifted added", "channel mean", "row mean", "softmax", "adaptive"],
)
def test_a_sum_or_a_reduction_keeps_each_unit_on_its_own_path(after):
    """Sums read, unit by unit, the union of each input's path there; a reduction along the
    other dimension reduces each path alone."""
    check_every_unit(padded_rows(after))


def two_pooled_rows(x: torch.Tensor) -> torch.Tensor:
    """The map pooled into one row, joined along the rows to its lower left part's pooled."""
    return torch.cat([F.adaptive_avg_pool2d(x, (1, 5)), F.adaptive_avg_pool2d(x[:, :, 3:, :6], (1, 5))], 2)


def test_paths_joined_along_a_pooled_dimension_are_each_read_through_a_window():
    """Two rows pooled differently and joined along the rows, then convolved along the
    columns and upsampled: each unit reads its own row's columns."""
    model = nn.Sequential(
        Lambda(two_pooled_rows),
        nn.Conv2d(3, 3, (1, 3), padding=(0, 1)),
        nn.Upsample(size=(5, 5)),
    )
    check_every_unit(model)


@pytest.mark.parametrize(
    "after",
    [
        Lambda(lambda x: torch.flip(x, [2])),
        nn.ReflectionPad2d((0, 0, 1, 1)),
        Lambda(lambda x: x.cumsum(2)),
        Lambda(lambda x: F.pad(x, (0, 0, 0, 0, 1, 1))),  # channels padded beside the padded rows
    ],
    ids=["flip", "reflection", "running sum", "channels padded"],
)
def test_an_op_that_moves_the_paths_without_following_them_gives_an_upper_bound(after):
    """Where the paths lose their places (read as the union of all), the field says it is an
    upper bound, and each unit's box holds its footprint."""
    check_every_unit(padded_rows(after), bound=True)


# -- the range over units of a long map ----------------------------------------------------


def width_spread(model: nn.Module, size: tuple[int, int, int]):
    """The range over the output's units along the width (`archprof rf`'s Field column)."""
    state, spatial = output_state(model, size)
    return spreads([state], spatial)[0][1]


def footprint_width(model: nn.Module, size: tuple[int, int, int], column: int) -> int:
    first, last = gradient_box(model, size, (0, column))[1]
    return last - first + 1


def test_the_range_over_a_long_maps_units_measures_its_last_units():
    """A "same" convolution of 4 columns over a replication padding, on 5,000 columns, more
    than the units measured one by one: its last unit reads two pixels, its first three,
    the others four (before, the first 4,096 alone were measured: 3..4)."""
    model = positive(nn.Conv2d(3, 4, (1, 4), padding="same", padding_mode="replicate"))
    size = (3, 1, 5000)
    widths = [footprint_width(model, size, column) for column in (0, 1, 2500, 4998, 4999)]
    spread = width_spread(model, size)
    assert (spread.smallest, spread.largest) == (min(widths), max(widths)) == (2, 4)


class ReflectedRight(nn.Module):
    """Six columns reflected after the map's last, then a convolution of 7 columns: the
    units near the end read fewer pixels, the reflected columns lying among their own."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, (1, 7))

    def forward(self, x):
        return self.conv(F.pad(x, (0, 6, 0, 0), mode="reflect"))


def test_a_reflected_maps_range_over_units_is_every_units():
    """Past the units measured one by one, a map whose period breaks only near a reflection's
    border holds every unit's size in one period and those units: unit W - 4 reads 4 pixels."""
    model = positive(ReflectedRight())
    size = (3, 1, 9000)
    widths = [footprint_width(model, size, column) for column in (0, 4500, 8996, 8999)]
    spread = width_spread(model, size)
    assert (spread.smallest, spread.largest) == (min(widths), max(widths)) == (4, 7)
    assert spread.measured == spread.units == 9000
