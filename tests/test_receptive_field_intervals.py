"""Exact input intervals of any unit, through transposed convolutions, upsampling, pixel
shuffle, channels-last permutes, padding modes, rolls and branches: for random units of
random networks, archprof's box equals the input-gradient footprint (all-positive weights
and inputs, eval mode, double precision, so nothing cancels); the torchvision models every
layer of which gets a field; hand-worked U-Net decoder numbers; the CLI's --unit and --plot."""

from __future__ import annotations

import json
from collections.abc import Callable
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import archprof
from archprof.analysis import analysis, load
from archprof.passes.layers import group_layers
from archprof.passes.receptive_field import MAX_UNITS, field_budget, row_states, spreads, tensor_fields, unit_box
from archprof.passes.receptive_field.dims import WHOLE
from archprof.passes.receptive_field.field_budget import TOO_IRREGULAR, deep_maps
from tests.cli import cli, one_error_line

# -- helpers -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def one_thread():
    """Small forwards and backwards run several times faster on one thread (and on a busy
    machine far faster than on all of them)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def positive(module: nn.Module, dtype: torch.dtype = torch.float64, low: float = 0.1, high: float = 1.0) -> nn.Module:
    """float64 (or `dtype`), eval mode, every weight and bias in [low, high]: a gradient is
    non-zero exactly where some path of non-zero weights reaches."""
    module = module.to(dtype).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(low, high)
    return module


def footprints(module: nn.Module, x: torch.Tensor, units) -> list[list[tuple[int, int] | None]]:
    """Per unit, per spatial dimension, the first and last input pixel whose gradient from
    that output unit (every channel of it) is not zero; None where there is none."""
    x = x.clone().requires_grad_()
    y = module(x)
    return [_box(torch.autograd.grad(y[(0, slice(None), *unit)].sum(), x, retain_graph=True)[0]) for unit in units]


def _box(grad: torch.Tensor) -> list[tuple[int, int] | None]:
    reached = grad[0].abs().sum(0) > 0
    box = []
    for axis in range(reached.dim()):
        others = tuple(a for a in range(reached.dim()) if a != axis)
        where = torch.nonzero(reached.any(dim=others) if others else reached).flatten()
        box.append((int(where.min()), int(where.max())) if len(where) else None)
    return box


def output_state(module: nn.Module, input_size: tuple[int, ...], dtype: torch.dtype):
    """archprof's state of the model's output, and the input's spatial size."""
    graph = analysis(load(module), input_size, None, dtype).graph
    fields, spatial = tensor_fields(graph)
    return fields.get(graph.outputs[0].id), spatial


def check_units(module: nn.Module, input_size: tuple[int, ...], units, dtype: torch.dtype = torch.float64) -> None:
    module = positive(module, dtype)
    state, spatial = output_state(module, input_size, dtype)
    x = torch.rand(1, *input_size, dtype=dtype) + 0.5
    for unit, expected in zip(units, footprints(module, x, units), strict=True):
        got = unit_box(state, spatial, unit)
        if getattr(state, "bound", ""):  # an upper bound, said so: it holds the unit's box
            held = [
                e is None or (g is not None and g[0] <= e[0] and e[1] <= g[1])
                for g, e in zip(got, expected, strict=True)
            ]
            assert all(held), (unit, got, expected)
        else:
            assert got == expected, (unit, got, expected)


def corner_units(module: nn.Module, input_size: tuple[int, ...], extra=()) -> list[tuple[int, ...]]:
    with torch.no_grad():
        out = module.double()(torch.zeros(1, *input_size, dtype=torch.float64)).shape[2:]
    return [
        tuple(0 for _ in out),
        tuple(n - 1 for n in out),
        tuple((n - 1) // 2 for n in out),
        *(tuple(min(u, n - 1) for u, n in zip(unit, out, strict=True)) for unit in extra),
    ]


# -- modules the random networks are made of ----------------------------------------------


class Interpolate(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs

    def forward(self, x):
        return F.interpolate(x, **self.kwargs)

    def extra_repr(self) -> str:  # a falsifying example names its resampling
        return ", ".join(f"{key}={value!r}" for key, value in self.kwargs.items())


class Pad(nn.Module):
    def __init__(self, pad, mode):
        super().__init__()
        self.pad, self.mode = pad, mode

    def forward(self, x):
        return F.pad(x, self.pad, mode=self.mode)


class CroppedThenPadded(nn.Module):
    """A map cropped, then zero-padded back (a U-Net's skip cropped, padded to size): the
    padded units read no pixel, the others their own unit's field."""

    def forward(self, x):
        return F.pad(x[..., 1:-2, 2:], (1, 2, 2, 1))


class ChannelsLast(nn.Module):
    """ConvNeXt's pattern: permute to (N, H, W, C), a linear layer over channels, back."""

    def __init__(self, channels: int, out: int):
        super().__init__()
        self.linear = nn.Linear(channels, out)

    def forward(self, x):
        return self.linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Roll(nn.Module):
    def __init__(self, shifts):
        super().__init__()
        self.shifts = shifts

    def forward(self, x):
        return torch.roll(x, self.shifts, (2, 3))


class Skip(nn.Module):
    """A U-Net skip: the map plus a pooled-then-upsampled copy of it."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        down = F.avg_pool2d(x, 2)
        align = {} if self.mode == "nearest" else {"align_corners": False}
        return x + F.interpolate(down, size=x.shape[2:], mode=self.mode, **align)


class PaddedBack(nn.Module):
    """A map plus a copy shifted and padded back with zeros (a rolled-by-padding residual):
    the copy's border units read no pixel, the map's do, so the sum's fields are out of order."""

    def forward(self, x):
        return x + F.pad(x[:, :, 2:, :-1], (1, 0, 0, 2))


class TwoShifts(nn.Module):
    """Two copies of a map shifted apart and padded back with zeros, summed: each copy's
    units that read a pixel are others than the other's."""

    def forward(self, x):
        return F.pad(x[:, :, :-2, 1:], (0, 1, 2, 0)) + F.pad(x[:, :, 2:, :-1], (1, 0, 0, 2))


class MergedShifts(nn.Module):
    """Paths of windows `kernels` wide along W, shifted by `shifts` units (zeros where they
    read past the map: PNASNet's pooling shifted by a padding and a crop), added up: the
    units of each that read a pixel differ, and where one path's begin or stop, the sum's
    fields may stay in order or not."""

    def __init__(self, shifts: tuple[int, ...], kernels: tuple[int, ...]):
        super().__init__()
        self.shifts = shifts
        self.convs = nn.ModuleList(nn.Conv2d(2, 2, (1, k), padding=(0, k // 2)) for k in kernels)

    def forward(self, x):
        total = 0
        for conv, shift in zip(self.convs, self.shifts, strict=True):
            y = conv(x)
            if shift > 0:
                y = F.pad(y, (shift, 0))[..., :-shift]
            elif shift < 0:
                y = F.pad(y, (0, -shift))[..., -shift:]
            total = total + y
        return total


class Concat(nn.Module):
    """Inception-style: the map and a convolution of it, along channels."""

    def __init__(self, channels: int, k: int, d: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, k, padding=d * (k - 1) // 2, dilation=d)

    def forward(self, x):
        return torch.cat([x, self.conv(x)], 1)


class WindowMix(nn.Module):
    """Swin's window partition, a mixing of each window's positions (here their mean) and the
    reverse: every unit reads its whole window."""

    def __init__(self, size: int, mix: bool = True):
        super().__init__()
        self.size, self.mix = size, mix

    def forward(self, x):
        n, c, h, w = x.shape
        k = self.size
        windows = x.view(n, c, h // k, k, w // k, k).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h // k, w // k, k * k)
        if self.mix:
            windows = windows + windows.mean(-1, keepdim=True)
        return windows.view(n, c, h // k, w // k, k, k).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)


@st.composite
def layer(draw, channels: int, size: tuple[int, int]) -> tuple[nn.Module, int]:
    """One random layer for a (channels, *size) map, and its output channels."""
    h, w = size
    kind = draw(
        st.sampled_from(
            [
                "conv",
                "transposed",
                "upsample",
                "shuffle",
                "unshuffle",
                "channels_last",
                "pool",
                "pad",
                "roll",
                "skip",
                "concat",
                "windows",
            ]
        )
    )
    small = min(h, w)
    if kind == "conv":
        k, d = draw(st.integers(1, 4)), draw(st.integers(1, 2))
        mode = draw(st.sampled_from(["zeros", "reflect", "replicate"]))
        p = draw(st.integers(0, min(d * (k - 1), small - 1)))
        return nn.Conv2d(channels, 2, k, draw(st.integers(1, 2)), p, d, padding_mode=mode), 2
    if kind == "transposed":
        k, s, d = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
        p = draw(st.integers(0, d * (k - 1)))
        extra = draw(st.integers(0, max(s, d) - 1))
        return nn.ConvTranspose2d(channels, 2, k, s, p, extra, dilation=d), 2
    if kind == "upsample":
        mode = draw(st.sampled_from(["nearest", "nearest-exact", "bilinear"]))
        options = {"align_corners": draw(st.booleans())} if mode == "bilinear" else {}
        if draw(st.booleans()):
            return Interpolate(scale_factor=draw(st.sampled_from([2, 3, 0.5, 1.5])), mode=mode, **options), channels
        target = (draw(st.integers(2, 2 * h + 3)), draw(st.integers(2, 2 * w + 3)))
        return Interpolate(size=target, mode=mode, **options), channels
    if kind == "shuffle":
        return nn.Sequential(nn.Conv2d(channels, 4, 1), nn.PixelShuffle(2)), 1
    if kind == "unshuffle" and h % 2 == 0 and w % 2 == 0:
        return nn.PixelUnshuffle(2), 4 * channels
    if kind == "channels_last":
        return ChannelsLast(channels, 2), 2
    if kind == "pool":
        k = draw(st.integers(1, 3))
        return nn.AvgPool2d(k, draw(st.integers(1, 2)), draw(st.integers(0, k // 2)), draw(st.booleans())), channels
    if kind == "pad":
        mode = draw(st.sampled_from(["constant", "reflect", "replicate"]))
        pad = [draw(st.integers(0, min(2, small - 1))) for _ in range(4)]
        return Pad(pad, mode), channels
    if kind == "roll":
        return Roll((draw(st.integers(-3, 3)), draw(st.integers(-3, 3)))), channels
    if kind == "skip" and h % 2 == 0 and w % 2 == 0:
        return Skip(draw(st.sampled_from(["nearest", "bilinear"]))), channels
    # Windows smaller than the map: one window across a whole dimension mixes that dimension,
    # which archprof reports as reading the whole input along it, pixels a stride before skips
    # at the far edge included (a documented limit, README "Receptive fields").
    if kind == "windows" and h % 2 == 0 and w % 2 == 0 and h > 2 and w > 2:
        return WindowMix(2, draw(st.booleans())), channels
    if kind == "concat":
        return Concat(channels, draw(st.sampled_from([1, 3, 5])), draw(st.integers(1, 2))), channels + 1
    return nn.Identity(), channels


@st.composite
def networks(draw):
    size = (draw(st.integers(4, 12)), draw(st.integers(4, 12)))
    layers, channels, shape = [], 2, size
    for _ in range(draw(st.integers(1, 5))):
        module, out = draw(layer(channels, shape))
        try:
            with torch.no_grad():
                trial = nn.Sequential(*layers, module).double()(torch.zeros(1, 2, *size, dtype=torch.float64))
        except RuntimeError:
            continue  # sizes this layer cannot take
        if min(trial.shape[2:]) < 1 or trial.numel() > 20_000:
            continue
        layers.append(module)
        channels, shape = out, tuple(trial.shape[2:])
    units = draw(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=3))
    return nn.Sequential(*layers, nn.Conv2d(channels, 2, 1)), (2, *size), units


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(networks())
def test_intervals_equal_the_gradient_footprints_of_random_networks(case):
    model, input_size, extra = case
    check_units(model, input_size, corner_units(model, input_size, extra))


def field_by_brute_force(axis_map, unit: int, memo: dict, exact: bool = False) -> tuple[int, int] | None:
    """A map's field of `unit` straight from its links' reads, every parent unit in every
    range visited: no period, no shortcut for monotone maps. Padded, or `exact`: only real
    units, down to real pixels (None for a unit past the map's ends)."""
    key = (id(axis_map), unit, exact)
    if key not in memo:
        value = None
        if not exact or 0 <= unit < axis_map.size:
            value = (unit, unit) if not axis_map.links else None
            for link in axis_map.links:
                for first, last in link.reads(unit):
                    for parent_unit in range(first, last + 1):
                        parent = field_by_brute_force(link.parent, parent_unit, memo, exact)
                        if parent is not None:
                            value = parent if value is None else (min(value[0], parent[0]), max(value[1], parent[1]))
        memo[key] = value
    return memo[key]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(networks())
def test_periodic_maps_give_every_unit_the_field_its_links_give(case):
    """A map's padded fields repeat with its period (upsampling by 2: every other unit), so
    archprof evaluates one period and shifts: for every unit of every map of every tensor,
    and some beyond the ends, that equals the field computed from the links unit by unit."""
    model, input_size, _ = case
    check_fields_by_their_links(model, input_size)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(networks())
def test_exact_spans_equal_the_hull_of_their_units_exact_fields(case):
    """A map whose units each read one range of real parent units, in order (a convolution
    without dilation, a pooling), has its exact span from the start of its first unit's field
    and the end of its last's, each followed alone: for every range of units of every map of
    every tensor, that equals the hull of the exact fields its links give unit by unit."""
    model, input_size, _ = case
    check_exact_spans(model, input_size)


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.Conv2d(2, 2, 3, dilation=2), nn.Conv2d(2, 2, 1)),  # taps apart: no order
        nn.Sequential(nn.Conv2d(2, 2, 3, stride=2, dilation=3, padding=3), nn.Conv2d(2, 2, 3)),
        nn.Sequential(nn.ConvTranspose2d(2, 2, 3, stride=2), nn.AvgPool2d(2)),  # units that read nothing
        nn.Sequential(nn.Conv2d(2, 2, 3, stride=2, padding=1), nn.MaxPool2d(3, 2, 1), nn.Conv2d(2, 2, 1, stride=2)),
        nn.Sequential(nn.Conv2d(2, 2, 1, stride=3), nn.Conv2d(2, 2, 3, padding=1)),  # pixels skipped
        nn.Sequential(Pad((0, 3, 0, 3), "reflect"), nn.Conv2d(2, 2, 3)),  # the far end mirrored back
        nn.Sequential(Roll((2, -3)), nn.Conv2d(2, 2, 3)),
        # TensorFlow's "same" padding (timm's tf_ models): units of zeros that read no pixel.
        nn.Sequential(Pad((1, 2, 0, 3), "constant"), nn.Conv2d(2, 2, 3, stride=2), Pad((4, 0, 2, 2), "constant")),
        nn.Sequential(Pad((3, 3, 3, 3), "constant"), nn.Conv2d(2, 2, 1, stride=4), nn.Conv2d(2, 2, 2)),
        nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), PaddedBack(), nn.Conv2d(2, 2, 2)),
        nn.Sequential(TwoShifts(), nn.AvgPool2d(2, 1)),
        # Paths whose units that read a pixel differ, summed: in order (PNASNet's), or not.
        nn.Sequential(MergedShifts((0, -1), (1, 3)), nn.Conv2d(2, 2, 3, stride=2)),
        nn.Sequential(MergedShifts((1, -3), (3, 1)), nn.Conv2d(2, 2, 3)),
        nn.Sequential(MergedShifts((0, -2), (1, 1)), nn.Conv2d(2, 2, 3)),  # where a path stops only
        nn.Sequential(MergedShifts((0, 2), (1, 5)), nn.Conv2d(2, 2, 3)),  # where a path begins only
        nn.Sequential(MergedShifts((1, 0, -1), (3, 1, 3)), nn.AvgPool2d(3, 2), MergedShifts((0, 1), (3, 1))),
        # After a reflection every map is out of order: spans from the units' reads together.
        nn.Sequential(Pad((3, 1, 2, 2), "reflect"), nn.Conv2d(2, 2, 3, stride=2), nn.Conv2d(2, 2, 2, stride=2)),
        nn.Sequential(Pad((2, 2, 1, 3), "reflect"), nn.Conv2d(2, 2, 1, stride=3), nn.Conv2d(2, 2, 3, padding=1)),
        nn.Sequential(Pad((2, 0, 3, 1), "replicate"), Skip("nearest"), Pad((1, 2, 2, 1), "reflect")),
        nn.Sequential(Pad((1, 1, 1, 1), "reflect"), nn.Conv2d(2, 2, 3, dilation=2), nn.AvgPool2d(2)),
        # A dilated convolution's taps each a shift: runs in order, split where taps stop reading.
        nn.Sequential(nn.Conv2d(2, 2, 3, dilation=3, padding=2), nn.Conv2d(2, 2, 3, dilation=2, padding=3)),
        nn.Sequential(Pad((2, 1, 3, 2), "replicate"), nn.Conv2d(2, 2, 3, dilation=2), nn.AvgPool2d(2, 1)),
        nn.Sequential(Concat(2, 3, 4), nn.Conv2d(3, 2, 3, dilation=5, padding=1), nn.MaxPool2d(3, 2, 1)),
        nn.Sequential(Pad((3, 0, 1, 2), "reflect"), MergedShifts((2, -1), (3, 1)), nn.Conv2d(2, 2, 2, dilation=4)),
        # A transposed convolution whose kernel is at least its stride: a range per unit, in order.
        nn.Sequential(nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1), nn.Conv2d(2, 2, 3, stride=2)),
        nn.Sequential(nn.ConvTranspose2d(2, 2, 3, stride=3, padding=1, output_padding=2), nn.AvgPool2d(2)),
        # Negative padding crops one side while the other is mirrored or repeated.
        nn.Sequential(Pad((-1, 2, 2, -1), "reflect"), nn.Conv2d(2, 2, 3, dilation=2), nn.AvgPool2d(2, 1)),
        nn.Sequential(Pad((3, -2, -1, 1), "replicate"), nn.Conv2d(2, 2, 3, dilation=2), nn.AvgPool2d(2, 1)),
    ],
    ids=[
        "dilated",
        "strided_dilated",
        "transposed",
        "strided",
        "skipping",
        "reflected",
        "rolled",
        "same",
        "zeros",
        "padded_back",
        "two_shifts",
        "merged_in_order",
        "merged_out_of_order",
        "merged_out_of_order_at_a_stop",
        "merged_out_of_order_at_a_beginning",
        "merged_three",
        "reflected_dense",
        "reflected_skipping",
        "replicated_skip",
        "reflected_dilated",
        "dilated_into_padding",
        "replicated_dilated",
        "dilated_beside_its_input",
        "reflected_shifted_dilated",
        "transposed_in_order",
        "transposed_by_its_kernel",
        "reflected_and_cropped",
        "replicated_and_cropped",
    ],
)
def test_exact_spans_of_windows_equal_the_hull_of_their_units_exact_fields(model):
    check_exact_spans(model, (2, 13, 11))


def check_exact_spans(model: nn.Module, input_size: tuple[int, ...]) -> None:
    """Every range of units of every map of every tensor, and its units at each position in
    blocks of 1 to 4: their exact span equals the hull of the exact fields its links give
    unit by unit."""
    memo: dict = {}
    for entry in every_map(model, input_size):
        brute = [field_by_brute_force(entry, unit, memo, exact=True) for unit in range(entry.size)]
        for first in range(entry.size):
            hull = None
            for last in range(first, entry.size):
                unit = brute[last]
                if unit is not None:
                    hull = unit if hull is None else (min(hull[0], unit[0]), max(hull[1], unit[1]))
                assert entry.span(first, last, exact=True) == hull, (entry.exact_runs, first, last)
        for step in range(1, 5):  # the units at one position in every block of `step` (a grid attention's)
            for first in range(step):
                fields = [field for field in brute[first::step] if field is not None]
                hull = (min(f[0] for f in fields), max(f[1] for f in fields)) if fields else None
                assert entry.exact_strided_span(first, step) == hull, (entry.exact_runs, first, step)


def every_map(model: nn.Module, input_size: tuple[int, ...]) -> list:
    """The maps of every dimension of every tensor of the model's float64 trace."""
    graph = analysis(load(model.double()), input_size, None, torch.float64).graph
    fields, _ = tensor_fields(graph)
    dims = [entry for state in fields.values() for entry in getattr(state, "dims", ())]
    return [entry for entry in dims if getattr(entry, "links", None) is not None]


def test_a_span_whose_end_fields_are_out_of_order_is_taken_unit_by_unit():
    # Found by the test above (random examples): after a stride-3 transposed convolution
    # (two of every three units read nothing) and a pixel unshuffle, a span's end units
    # had fields out of order, and its field was read from their ends reversed: (1, 0)
    # where the hull of its units' fields is (0, 1).
    model = nn.Sequential(
        nn.ConvTranspose2d(2, 2, 1, stride=3),
        nn.PixelUnshuffle(2),
        nn.Conv2d(8, 2, 2, dilation=2),
        nn.AvgPool2d(2, stride=1),
        nn.Conv2d(2, 2, 1),
    )
    check_fields_by_their_links(model, (2, 4, 4))


def check_fields_by_their_links(model: nn.Module, input_size: tuple[int, ...]) -> None:
    """Every unit's padded field of every map of every tensor (and some beyond the ends)
    equals the field computed from the links unit by unit."""
    memo: dict = {}
    for entry in every_map(model, input_size):
        for unit in range(-3, entry.size + 3):
            assert entry.field(unit) == field_by_brute_force(entry, unit, memo), (entry.period, unit)


class BlurDense(nn.Module):
    """A BlurPool (reflection padding, then a fixed stride-2 window, as timm's) and a dense
    block after it: three 3x3 convolutions, each reading the concatenation of all before."""

    def __init__(self):
        super().__init__()
        self.blur = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(2, 2, 3, stride=2, groups=2))
        self.layers = nn.ModuleList(nn.Conv2d(2 + 2 * i, 2, 3, padding=1) for i in range(3))

    def forward(self, x):
        features = [self.blur(x)]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


def test_a_blur_pool_leaves_a_few_irregular_units_and_every_field_exact():
    """A reflection's mirrored border units break the order and the period of a map's fields,
    and the maps after it inherit a few such units near each border (a padded field that
    reads a mirrored pixel). archprof tracks them and keeps, map by map, only those that do
    break the order or the period: their number stays the same however deep the network, and
    every other unit is evaluated by a span's ends and the map's period (timm's BlurPool
    DenseNet: 200 -> 60 ms). Every unit of every map, and some beyond the ends, equals its
    field computed unit by unit from the links."""
    graph = analysis(load(BlurDense().double()), (2, 21, 21), None, torch.float64).graph
    fields, _ = tensor_fields(graph)
    memo: dict = {}
    maps = {id(m): m for state in fields.values() for m in getattr(state, "dims", ()) if getattr(m, "links", None)}
    for axis_map in maps.values():
        assert axis_map.irregular is not None and len(axis_map.irregular) <= 4 and axis_map.period == 1
        for unit in range(-6, axis_map.size + 6):
            assert axis_map.field(unit) == field_by_brute_force(axis_map, unit, memo), unit
    mirrored = [m for m in maps.values() if any(link.breaks for link in m.links)]
    assert mirrored and all(m.irregular for m in mirrored)  # the mirrored units themselves
    check_units(BlurDense(), (2, 21, 21), corner_units(BlurDense(), (2, 21, 21)))


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_every_unit_after_a_border_padding_and_dilated_convolutions_reads_what_its_gradient_says(mode):
    """A reflection's or a replication's border units and a dilated convolution's taps leave
    their maps a few runs in order (`AxisMap.exact_runs`), spans taken run by run: every
    unit's box equals its input-gradient footprint, along a side a negative padding crops
    too."""
    model = nn.Sequential(
        Pad((-1, 2, 3, 1), mode),
        nn.Conv2d(2, 2, 3, dilation=2),
        nn.Conv2d(2, 2, 3, dilation=3, padding=2),
        nn.AvgPool2d(2, 1),
    )
    check_units(model, (2, 13, 11), every_unit(model, (2, 13, 11)))


class ShiftedSum(nn.Module):
    """A 1x1 convolution's map plus a copy shifted one unit along both axes, each padded back
    with zeros: at a unit in either copy's padding only the other copy reads a pixel."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)

    def forward(self, x):
        y = self.conv(x)
        return F.pad(y, (0, 1, 0, 0)) + F.pad(y, (1, 0, 1, -1))


@pytest.mark.parametrize(("model", "size"), [(ShiftedSum(), (1, 4, 4)), (TwoShifts(), (1, 6, 6))])
def test_paths_padded_along_different_axes_and_added_give_an_upper_bound_that_holds_every_unit(model, size):
    """The fields go axis by axis: a unit where one path reads nothing along W (its padding)
    still gets that path's rows along H. Said to be an upper bound, each box holds the
    unit's gradient footprint."""
    state, _ = output_state(positive(model), size, torch.float64)
    assert state.bound.startswith("an upper bound: aten.add in (model) merges paths one of which reads no pixel")
    check_units(model, size, every_unit(model, size))


class PaddedPooledRows(nn.Module):
    """Rows pooled to one, then zero rows padded after (or before) it: a padding unit reads nothing."""

    def __init__(self, pad: tuple[int, int, int, int]):
        super().__init__()
        self.pad = pad

    def forward(self, x):
        return F.pad(F.adaptive_avg_pool2d(x, (1, 3)), self.pad)


@pytest.mark.parametrize("pad", [(0, 0, 0, 2), (0, 0, 2, 1), (1, 0, 1, 0)])
def test_a_pooled_away_dimension_padded_with_zeros_has_units_that_read_nothing(pad):
    """Along a dimension pooled to one unit no input axis runs; the padding's units beside
    that unit read no pixel, the unit itself every row of its columns."""
    model = PaddedPooledRows(pad)
    check_units(model, (1, 9, 12), every_unit(model, (1, 9, 12)))


class ReflectedBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        conv = [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.ReLU()]
        self.body = nn.Sequential(*conv, *conv)

    def forward(self, x):
        return x + self.body(x)


def test_a_generator_with_reflections_everywhere_gets_every_field_exact():
    """A CycleGAN-style generator: a 7x7 reflection-padded stem, strided convolutions down,
    residual blocks padded by reflection, transposed convolutions up, a reflection-padded 7x7
    head. Reflections of maps that already have irregular units leave those maps without a
    known order (evaluated unit by unit); every unit of every map, and some beyond the ends,
    equals its field computed unit by unit from the links."""
    model = nn.Sequential(
        nn.ReflectionPad2d(3),
        nn.Conv2d(3, 2, 7),
        nn.Conv2d(2, 2, 3, 2, 1),
        nn.Conv2d(2, 2, 3, 2, 1),
        *(ReflectedBlock(2) for _ in range(3)),
        nn.ConvTranspose2d(2, 2, 3, 2, 1, output_padding=1),
        nn.ConvTranspose2d(2, 2, 3, 2, 1, output_padding=1),
        nn.ReflectionPad2d(3),
        nn.Conv2d(2, 3, 7),
    )
    graph = analysis(load(model.double()), (3, 24, 24), None, torch.float64).graph
    fields, _ = tensor_fields(graph)
    memo: dict = {}
    maps = {id(m): m for state in fields.values() for m in getattr(state, "dims", ()) if getattr(m, "links", None)}
    for axis_map in maps.values():
        for unit in range(-4, axis_map.size + 4):
            assert axis_map.field(unit) == field_by_brute_force(axis_map, unit, memo), unit


def test_a_dilated_transposed_convolution_has_no_order():
    """Stride 3, dilation 2: outputs 0, 1, 2 read inputs 0, -1, 0. A span over its units must
    visit each one, not its two ends (found by hypothesis: the bilinear map after it had
    fields ending before they began)."""
    model = nn.Sequential(
        nn.ConvTranspose2d(2, 2, 3, stride=3, dilation=2), Interpolate(scale_factor=2, mode="bilinear")
    )
    graph = analysis(load(model.double()), (2, 4, 4), None, torch.float64).graph
    fields, _ = tensor_fields(graph)
    memo: dict = {}
    for axis_map, _ in fields[graph.outputs[0].id].places(0):
        for unit in range(-3, axis_map.size + 3):
            assert axis_map.field(unit) == field_by_brute_force(axis_map, unit, memo), unit


def test_an_hrnet_fusion_is_periodic():
    """Branches at strides 1 and 2 fused by a nearest upsampling by 2: one period of 2 units."""

    class Fusion(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Conv2d(2, 2, 3, 2, 1)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")

        def forward(self, x):
            return x + self.up(self.down(x))

    graph = analysis(load(Fusion().double()), (2, 16, 16), None, torch.float64).graph
    fields, _ = tensor_fields(graph)
    fused = fields[graph.outputs[0].id]
    assert [m.period for m, _ in fused.places(0)] == [2]
    check_units(Fusion(), (2, 16, 16), every_unit(Fusion(), (2, 16, 16)))


# -- operators one by one, every unit -----------------------------------------------------


def every_unit(module: nn.Module, input_size) -> list[tuple[int, ...]]:
    with torch.no_grad():
        out = module.double()(torch.zeros(1, *input_size, dtype=torch.float64)).shape[2:]
    grid = torch.cartesian_prod(*(torch.arange(n) for n in out)).reshape(-1, len(out))
    return [tuple(int(i) for i in index) for index in grid]


@pytest.mark.parametrize(
    "module",
    [
        Interpolate(scale_factor=2, mode="bicubic"),
        Interpolate(size=(5, 11), mode="bicubic", align_corners=True),
        Interpolate(scale_factor=1.5, mode="bilinear"),
        Interpolate(size=(3, 4), mode="bilinear", align_corners=True),
        Interpolate(scale_factor=3, mode="nearest-exact"),
        Interpolate(size=(13, 5), mode="nearest"),
        nn.ConvTranspose2d(4, 4, 4, 2, 1),
        nn.ConvTranspose2d(4, 4, 2, 3, 0),  # stride past the kernel: some units read no input
        nn.ConvTranspose2d(4, 4, 3, 2, 1, 1, dilation=2),
        nn.PixelShuffle(2),
        Pad((2, 1, 3, 0), "reflect"),
        Pad((2, 1, 3, 0), "replicate"),
        Roll((2, -3)),
        CroppedThenPadded(),
    ],
    ids=lambda m: repr(m)[:40],
)
def test_each_operator_every_unit(module):
    input_size = (4, 6, 7)
    model = nn.Sequential(nn.Conv2d(4, 4, 1), module)
    check_units(model, input_size, every_unit(model, input_size))


class Folded(nn.Module):
    """Two paths of different fields concatenated along channels, mixed by a 1x1 convolution
    (every channel then reads both) and folded into W."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, (1, 5), padding=(0, 2))
        self.mix = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        y = self.mix(torch.cat([self.a(x), self.b(x)], 1))
        return y.permute(0, 2, 3, 1).reshape(y.shape[0], 1, y.shape[2], -1)


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(4, 4, 3, padding=1), nn.PixelShuffle(2)),
        nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.PixelUnshuffle(2), nn.Conv2d(4, 8, 1), nn.PixelShuffle(2)),
        Folded(),
    ],
    ids=["unshuffle-conv-shuffle", "unshuffle-1x1-shuffle", "concatenated-mixed-folded"],
)
def test_channels_mixed_by_a_convolution_read_alike_and_fold_exactly(model):
    """Channels that read different fields (a pixel unshuffle's, concatenated paths) read
    alike once a convolution mixes them: folded into a spatial dimension, exact."""
    check_units(model, (1, 8, 8), every_unit(model, (1, 8, 8)))


UNSHUFFLED_MIXED_TRANSPOSED = nn.Sequential(
    nn.Conv2d(2, 2, 1, stride=2),
    nn.PixelUnshuffle(2),
    ChannelsLast(8, 2),
    nn.ConvTranspose2d(2, 2, 1, dilation=2, output_padding=1),
    nn.Conv2d(2, 2, 1),
)


class MixedThenPadded(nn.Module):
    """Every unit reads all of W (a mean over it added back: a row's context; or a gate from
    it, as squeeze-and-excitation's over one dimension), then units that read nothing: zero
    padding (a U-Net's before its skip), a transposed convolution's output padding."""

    def __init__(self, gate: bool):
        super().__init__()
        self.conv, self.gate = nn.Conv2d(2, 2, 1), gate
        self.up = nn.ConvTranspose2d(2, 2, 1, stride=2, output_padding=1)

    def forward(self, x):
        y = self.conv(x)
        if self.gate:
            return self.up(y * torch.sigmoid(y.mean(3, keepdim=True)))
        return F.pad(y + y.mean(3, keepdim=True), (1, 2, 2, 1))


@pytest.mark.parametrize(
    "model",
    [
        MixedThenPadded(gate=False),
        MixedThenPadded(gate=True),
        UNSHUFFLED_MIXED_TRANSPOSED,
    ],
    ids=["row-mean-added-padded", "row-gate-transposed", "unshuffled-mixed-transposed"],
)
def test_a_padding_unit_made_after_positions_were_mixed_reads_no_pixel(model):
    """Units of zero padding read nothing, not the positions every other unit mixed before
    them (those gave them the mixed span)."""
    check_units(model, (2, 8, 8), every_unit(model, (2, 8, 8)))


def test_padding_along_a_dimension_no_input_axis_runs_along_is_an_upper_bound():
    """Found by hypothesis: at 4x4 every position is folded into channels (a 1x1 map, kept
    at one position) and mixed; the transposed convolution's output padding then makes a
    unit that reads nothing beside one that reads all, which the field cannot tell apart: it
    says its box is an upper bound, which holds both."""
    state, _ = output_state(UNSHUFFLED_MIXED_TRANSPOSED, (2, 4, 4), torch.float64)
    assert state.bound.startswith("an upper bound: aten.convolution in 3 makes units that read nothing")
    check_units(UNSHUFFLED_MIXED_TRANSPOSED, (2, 4, 4), every_unit(UNSHUFFLED_MIXED_TRANSPOSED, (2, 4, 4)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode,factor", [("bilinear", 1.8), ("bicubic", 1.8), ("nearest", 2.2), ("nearest-exact", 2.2)])
def test_resampling_follows_the_arithmetic_of_pytorchs_kernels(mode, factor, dtype):
    # Linear and cubic compute source coordinates in the dtype's arithmetic: with factor 1.8,
    # output 13 of a 10-pixel row has source 13.5 / 1.8 - 0.5 = 7.0 in double (input 7 alone)
    # but 7.0000005 in float32 (inputs 7 and 8). Nearest always computes in float32: with
    # factor 2.2, output 33 copies input floor(33 * float32(1 / 2.2)) = 15, not 14.
    model = nn.Sequential(nn.Conv2d(1, 1, 1), Interpolate(scale_factor=factor, mode=mode))
    check_units(model, (1, 10, 17), every_unit(model, (1, 10, 17)), dtype)


@pytest.mark.parametrize(
    "resample",
    [Interpolate(scale_factor=3, mode="bicubic"), Interpolate(size=(17, 17), mode="bicubic", align_corners=True)],
    ids=["x3", "9-to-17-align-corners"],
)
def test_a_window_after_bicubic_resampling_reads_every_unit_of_its_span(resample):
    """A unit whose source coordinate is a whole number reads one input, its neighbours four
    around it: a window's padded field is the hull of all its units', not of its end units'
    (the report said 1x1 for a 2x2 window after an upsampling by 3). Without padding, every
    unit's padded field is its gradient footprint."""
    model = positive(nn.Sequential(nn.Conv2d(1, 1, 1), resample, nn.Conv2d(1, 1, 2)))
    state, _ = output_state(model, (1, 9, 9), torch.float64)
    units = every_unit(model, (1, 9, 9))
    with deep_maps():
        padded = [[state.dims[2 + axis].field(index) for axis, index in enumerate(unit)] for unit in units]
    expected = footprints(model, torch.rand(1, 1, 9, 9, dtype=torch.float64) + 0.5, units)
    for unit, got, box in zip(units, padded, expected, strict=True):
        assert got == box, (unit, got, box)
    first = archprof.analyze(model, input_size=(1, 9, 9)).rows()[-1]
    assert first["receptive_field"] == tuple(last - start + 1 for start, last in expected[0])
    assert first["receptive_field_start"] == tuple(start for start, _ in expected[0])


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_a_source_coordinate_just_below_a_whole_number_is_floored_in_float32(mode):
    # Found by hypothesis. Align corners from 33 to 99 pixels: output 49's source is
    # 49 * (32 / 98) = 15.999999999999998 in double, but the kernels floor it as a float
    # (guard_index_and_lambda's floorf): input 16 with weight 1, not inputs 15 and 16.
    mode = {"linear": "bilinear", "cubic": "bicubic"}[mode]
    model = nn.Sequential(nn.Conv2d(1, 1, 1), Interpolate(size=(3, 99), mode=mode, align_corners=True))
    check_units(model, (1, 2, 33), every_unit(model, (1, 2, 33)))


def test_a_1d_audio_net_with_a_transposed_upsampler():
    model = nn.Sequential(
        nn.Conv1d(1, 2, 9, 4, 4),
        nn.Conv1d(2, 2, 3, dilation=3),
        nn.ConvTranspose1d(2, 1, 8, 4, 2),
        nn.Upsample(scale_factor=2),
    )
    check_units(model, (1, 64), every_unit(model, (1, 64)))


# -- fields and strides in the columns, worked by hand ------------------------------------


class UNet(nn.Module):
    """A two-level U-Net: encoder 3x3 convs and a 2x2 max-pool, a stride-2 transposed conv
    back up, concatenated with the skip, a 3x3 conv."""

    def __init__(self, pool=nn.MaxPool2d):
        super().__init__()
        self.enc = nn.Conv2d(1, 4, 3, padding=1)
        self.down = pool(2)
        self.mid = nn.Conv2d(4, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.dec = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x):
        skip = self.enc(x)
        y = self.up(self.mid(self.down(skip)))
        return self.dec(torch.cat([skip, y], 1))


def test_unet_decoder_worked_by_hand():
    """By hand (one dimension; field [start, end] of unit u, padding included):
    enc 3x3 pad 1: [u - 1, u + 1], 3 pixels, stride 1.
    down 2x2/2: unit u pools enc units 2u, 2u + 1: [2u - 1, 2u + 2], 4 pixels, stride 2.
    mid 3x3 pad 1: down units u - 1 .. u + 1: [2u - 3, 2u + 4], 8 pixels, stride 2.
    up 2x2/2 (o = 2 i + t): output o reads mid unit o // 2 alone: [2 (o // 2) - 3, 2 (o // 2) + 4],
      8 pixels for every unit, stride 2 x 1/2 = 1, unit 0 from -3.
    cat with the skip (enc: [o - 1, o + 1]): the union, [o - 3, o + 4] for even o and
      [o - 4, o + 3] for odd o: 8 pixels, stride 1.
    dec 3x3 pad 1: units o - 1 .. o + 1: even o: [(o - 1) - 4, (o + 1) + 3] = [o - 5, o + 4], odd o:
      [(o - 1) - 3, (o + 1) + 4] = [o - 4, o + 5]: 10 pixels for every unit, unit 0 from -5."""
    report = archprof.analyze(UNet(), input_size=(1, 16, 16))
    rows = {r["layer"]: r for r in report.rows()}
    assert rows["down"]["receptive_field"] == (4, 4) and rows["down"]["effective_stride"] == (2, 2)
    assert rows["mid"]["receptive_field"] == (8, 8) and rows["mid"]["receptive_field_start"] == (-3, -3)
    assert rows["up"]["receptive_field"] == (8, 8) and rows["up"]["effective_stride"] == (1, 1)
    assert rows["up"]["receptive_field_start"] == (-3, -3)
    assert rows["dec"]["receptive_field"] == (10, 10) and rows["dec"]["receptive_field_start"] == (-5, -5)
    analysed = analysis(load(UNet()), (1, 16, 16), None, None)
    groups = group_layers(analysed.graph)
    states, spatial = row_states(analysed.graph, groups)
    [dec] = spreads([states[[g.path for g in groups].index("dec")]], spatial)
    assert (dec[0].first, dec[0].centre, dec[0].smallest, dec[0].largest) == (10, 10, 10, 10)
    # A max-pool's gradient reaches the winning pixel only: the footprints are an average pool's.
    check_units(UNet(nn.AvgPool2d), (1, 16, 16), [(0, 0), (7, 8), (15, 15)])


def test_upsampling_halves_the_stride():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, stride=2), nn.Upsample(scale_factor=2), nn.Upsample(scale_factor=3))
    report = archprof.analyze(model, input_size=(1, 17, 17))
    strides = [r["effective_stride"] for r in report.rows()[1:]]
    assert strides == [(1, 1), (Fraction(1, 3), Fraction(1, 3))]
    assert report.to_csv().count(",1/3x1/3,") == 1
    assert json.loads(report.to_json())["layers"][-1]["effective_stride"] == ["1/3", "1/3"]


def test_a_transposed_convolutions_units_differ_and_the_table_shows_the_range():
    # stride 2, kernel 3, padding 1 (o = 2 i - 1 + t): even outputs read input o / 2 (tap 1),
    # odd ones (o - 1) / 2 and (o + 1) / 2 (taps 2 and 0): after a 3x3 conv, 3 and 4 pixels.
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ConvTranspose2d(1, 1, 3, 2, 1))
    analysed = analysis(load(model), (1, 9, 9), None, None)
    states, spatial = row_states(analysed.graph, group_layers(analysed.graph))
    spread = spreads([states[-1]], spatial)[0][0]
    assert (spread.first, spread.smallest, spread.largest) == (3, 3, 4)
    check_units(model, (1, 9, 9), every_unit(model, (1, 9, 9)))


def test_a_transposed_convolutions_map_repeats_every_stride_units():
    """A transposed convolution whose kernel is at least its stride (no dilation) reads a
    range of inputs per output, the same one input on every S outputs: its map and the maps
    after it have a period, so the range over a decoder's units covers every unit however
    many (past `MAX_UNITS` the first ones only, before), evaluating one period; every unit's
    field, and some beyond the ends, equals the one its links give unit by unit."""
    model = nn.Sequential(
        nn.Conv2d(2, 2, 3, 2, 1),
        nn.ConvTranspose2d(2, 2, 4, 2, 1),
        nn.ConvTranspose2d(2, 2, 3, 3, 1, output_padding=2),
        nn.Conv2d(2, 2, 3, padding=1),
    )
    graph = analysis(load(model.double()), (2, 10, 9), None, torch.float64).graph
    fields, _ = tensor_fields(graph)
    memo: dict = {}
    [(last, _)] = fields[graph.outputs[0].id].places(0)
    assert last.period == 6  # 3 outputs an input unit on, of a map that repeats every 2
    for axis_map in {
        id(m): m for s in fields.values() for m in getattr(s, "dims", ()) if getattr(m, "links", None)
    }.values():
        for unit in range(-6, axis_map.size + 6):
            assert axis_map.field(unit) == field_by_brute_force(axis_map, unit, memo), unit
    analysed = analysis(load(model), (2, 4000, 4), None, None)  # 12,000 units along H at the end
    states, spatial = row_states(analysed.graph, group_layers(analysed.graph))
    spread = spreads([states[-1]], spatial)[0][0]
    assert spread.units == 12_000 and spread.measured == 12_000 > MAX_UNITS


class GridResidual(nn.Module):
    """MaxViT's grid attention (timm's grid partition and its reverse: a 2 x 2 grid of
    blocks, attention over the tokens at one position in every block) added to its input,
    three times: on 16 x 16 tokens, a 3x3 convolution after it; again, then a 3x3
    convolution of stride 2; on the 8 x 8 tokens left, through a 3x3 convolution before the
    sum."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(2, 4, 3, padding=1)
        self.qkv = nn.Linear(4, 4)
        self.between = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.down = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4)
        self.mix = nn.Conv2d(4, 4, 3, padding=1, groups=4)

    def attend(self, x):
        b, c, h, w = x.shape
        grid = x.permute(0, 2, 3, 1).reshape(b, 2, h // 2, 2, w // 2, c).permute(0, 2, 4, 1, 3, 5)
        tokens = self.qkv(grid.reshape(-1, 4, c))
        scores = tokens @ tokens.transpose(1, 2) / 1000  # scaled: a softmax of one-hot weights would cut gradients
        attended = torch.softmax(scores, -1) @ tokens
        back = attended.reshape(b, h // 2, w // 2, 2, 2, c).permute(0, 3, 1, 4, 2, 5).reshape(b, h, w, c)
        return back.permute(0, 3, 1, 2)

    def forward(self, x):
        x = self.embed(x)
        x = self.between(x + self.attend(x))
        x = self.down(x + self.attend(x))
        return x + self.mix(self.attend(x))


def test_a_grid_attentions_map_repeats_every_block():
    """Unit q n + r after a grid attention reads position r of every block of n units, as unit
    r does: its map repeats every n units, shifted by nothing. Its sum with its input (whose
    unit u it reads among the others) keeps that period over the real units, a convolution
    after it over the units whose windows stay within them: a unit's field there is its
    twin's in the first block (MaxxViT's fields were evaluated unit by unit, 12 parent units
    each, and its analysis grew with the resolution). Every unit's padded field, and some
    beyond the ends, equals the one its links give unit by unit; every exact span of every
    map equals the hull of its units' (a hull of exact fields stops where it holds every
    pixel); and the output's corner and centre units equal their gradient's footprint."""
    maps_by_id = {id(m): m for m in every_map(GridResidual(), (2, 16, 16))}
    grids = [m for m in maps_by_id.values() if any(link.repeats for link in m.links)]
    assert {(m.size, m.period) for m in grids} == {(16, 8), (8, 4)}
    sums = [m for m in maps_by_id.values() if len(m.links) == 2 and any(link.parent in grids for link in m.links)]
    assert {(m.size, m.period, m.periodic) for m in sums} == {(16, 8, True)}  # at every real unit
    convolved = [m for m in maps_by_id.values() if len(m.links) == 1 and m.links[0].parent in sums]
    assert {(m.size, m.period, m.periodic, m.exact_zone) for m in convolved} == {
        (16, 8, False, (1, 14)),  # a 3x3 window stays within the real units from unit 1 to unit 14
        (8, 4, False, (1, 7)),  # of stride 2: units 1 to 7 (unit 0 reads unit -1)
    }
    assert all(m.everything == (0, 15) for m in maps_by_id.values())  # no exact field reaches past the input
    assert any(m.field(u, exact=True) == (0, 15) for m in grids for u in range(m.size))  # hulls that stop there
    check_against_links_and_gradients(GridResidual, (2, 16, 16), [(3, 6), (5, 1)])


def check_against_links_and_gradients(make: Callable[[], nn.Module], input_size: tuple[int, ...], units) -> None:
    """Every unit's padded field of every map (and some beyond the ends) against the one its
    links give unit by unit, every exact span against the hull of its units', and the
    output's corners, centre and `units` against their gradient's footprint."""
    check_fields_by_their_links(make(), input_size)
    check_exact_spans(make(), input_size)
    check_units(make(), input_size, corner_units(make(), input_size, units))


class ShiftedResidual(nn.Module):
    """Swin's blocks in plain torch: attention within windows of 7 x 7 tokens added to its
    input, then the same on the map rolled by -3 and rolled back, a 3x3 convolution between,
    and once more rolled by -2 (28 x 28 tokens: four windows a side, no padding)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(2, 4, 3, padding=1)
        self.qkv = nn.Linear(4, 4)
        self.between = nn.Conv2d(4, 4, 3, padding=1, groups=4)

    def attend(self, x):
        b, c, h, w = x.shape
        windows = x.permute(0, 2, 3, 1).reshape(b, h // 7, 7, w // 7, 7, c).permute(0, 1, 3, 2, 4, 5)
        tokens = self.qkv(windows.reshape(-1, 49, c))
        scores = tokens @ tokens.transpose(1, 2) / 1000  # scaled: a softmax of one-hot weights would cut gradients
        attended = torch.softmax(scores, -1) @ tokens
        back = attended.reshape(b, h // 7, w // 7, 7, 7, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        return back.permute(0, 3, 1, 2)

    def shifted(self, x, shift):
        return x + torch.roll(self.attend(torch.roll(x, (-shift, -shift), (2, 3))), (shift, shift), (2, 3))

    def forward(self, x):
        x = self.embed(x)
        x = self.between(self.shifted(x + self.attend(x), 3))
        return self.shifted(x, 2)


def test_a_rolled_map_keeps_its_period_on_either_side_of_its_wrap():
    """A roll by -3 reads unit u + 3 short of its wrap: the map's period holds over those
    units, and the maps after it over the units whose reads stay within them (Swin's maps
    were taken unit by unit after each roll, its analysis growing with the resolution).
    Every unit's padded field, and some beyond the ends, equals the one its links give unit
    by unit; every exact span of every map equals the hull of its units'; and the output's
    corner and centre units equal their gradient's footprint."""
    maps_by_id = {id(m): m for m in every_map(ShiftedResidual(), (2, 28, 28))}
    rolled = [m for m in maps_by_id.values() if any(link.permutes for link in m.links)]
    assert len(rolled) == 8  # two rolls there and back, along each axis
    assert all(m.period == 7 and not m.periodic for m in rolled)  # its windows' period, over part of the map
    assert all(m.exact_runs is None for m in rolled)  # spans go by the zones
    assert [m.exact_zone for m in rolled[:2]] == [(4, 17)] * 2  # the first roll: inside the windows' zone, 7..20
    check_against_links_and_gradients(ShiftedResidual, (2, 28, 28), [(3, 25), (20, 6)])


def test_the_range_over_units_after_a_reflection_counts_its_border_units():
    """Reflected borders make a few units' fields smaller than the period's: the range over
    units is measured unit by unit there, and equals the fields computed from the links."""
    model = nn.Sequential(nn.ReflectionPad2d(2), nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3, padding=1))
    analysed = analysis(load(model.double()), (1, 9, 9), None, torch.float64)
    states, spatial = row_states(analysed.graph, group_layers(analysed.graph))
    memo: dict = {}
    for state in states[1:]:
        spread = spreads([state], spatial)[0][0]
        axis_map = state.places(0)[0][0]
        fields = [field_by_brute_force(axis_map, unit, memo) for unit in range(axis_map.size)]
        sizes = [last - first + 1 for first, last in fields]
        assert (spread.first, spread.smallest, spread.largest, spread.measured) == (
            sizes[0],
            min(sizes),
            max(sizes),
            axis_map.size,
        )
        assert spread.smallest < spread.largest  # the borders do differ


# -- where archprof says global, and where it stops -------------------------------------


class Attention(nn.Module):
    """Self-attention over all positions (flattened tokens): every unit reads every pixel."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.attention = nn.MultiheadAttention(4, 2, batch_first=True)

    def forward(self, x):
        y = self.conv(x)
        tokens = y.flatten(2).transpose(1, 2)
        out, _ = self.attention(tokens, tokens, tokens)
        return out.transpose(1, 2).reshape(y.shape)


def test_attention_over_all_positions_is_global():
    report = archprof.analyze(Attention(), input_size=(1, 8, 8))
    rows = {r["layer"]: r for r in report.rows()}  # the model's own row: the last reshape
    assert rows["conv"]["receptive_field"] == (3, 3)
    assert rows["attention"]["receptive_field"] == rows[""]["receptive_field"] == "input"


@pytest.mark.parametrize("mix", [True, False], ids=["mixed", "partition-and-back"])
def test_windows_are_read_whole_once_mixed(mix):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), WindowMix(3, mix))
    check_units(model, (1, 9, 12), every_unit(model, (1, 9, 12)))
    field = archprof.analyze(model, input_size=(1, 9, 12)).rows()[-1]["receptive_field"]
    assert field == ((5, 5) if mix else (3, 3))  # a 3-pixel window of 3x3 fields; or the conv's own


def test_swin_shifted_windows_against_gradient_footprints(hub_packages):
    """swin_t's first stage: attention within 7x7 windows of 4x4-pixel tokens, the second
    block's windows shifted by 3 (torch.roll); small weights keep the softmax from
    saturating (a weight of exactly 0 would hide a path)."""
    torchvision, _ = hub_packages

    class ChannelsFirst(nn.Module):
        def __init__(self, stage):
            super().__init__()
            self.stage = stage

        def forward(self, x):
            return self.stage(x).permute(0, 3, 1, 2)

    model = positive(ChannelsFirst(torchvision.models.swin_t().features[:2]), low=0.001, high=0.01)
    state, spatial = output_state(model, (3, 64, 64), torch.float64)
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64) + 0.5
    units = [(0, 0), (3, 3), (8, 13), (15, 15)]
    expected = [[(0, 27), (0, 27)], [(0, 55), (0, 55)], [(0, 55), (28, 63)], [(28, 63), (28, 63)]]
    assert footprints(model, x, units) == expected
    assert [unit_box(state, spatial, unit) for unit in units] == expected


# -- torchvision models: every layer gets a field -----------------------------------------

TORCHVISION = {
    "convnext_tiny": lambda tv: tv.models.convnext_tiny(),
    "efficientnet_b0": lambda tv: tv.models.efficientnet_b0(),
    "fcn_resnet50": lambda tv: tv.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None),
    "deeplabv3_mobilenet_v3_large": lambda tv: tv.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None
    ),
    "lraspp_mobilenet_v3_large": lambda tv: tv.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None
    ),
    "swin_t": lambda tv: tv.models.swin_t(),
    "shufflenet_v2_x0_5": lambda tv: tv.models.shufflenet_v2_x0_5(),
}


class Output(nn.Module):
    """A segmentation model's 'out' map, or a submodule's output, as a tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        y = self.model(x)
        return y["out"] if isinstance(y, dict) else y


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_every_layer_of_torchvision_models_gets_a_field(hub_packages, name):
    torchvision, _ = hub_packages
    model = TORCHVISION[name](torchvision)
    report = archprof.analyze(model, input_size=(3, 64, 64))
    fields = report.columns["receptive_field"]
    undefined = [
        (layer, note)
        for layer, f, note in zip(report.columns["layer"], fields, report.columns["receptive_field_note"], strict=True)
        if f == "undefined"
    ]
    assert not undefined, undefined[:3]
    assert all(f is None or f == "input" or isinstance(f, tuple) for f in fields)


@pytest.mark.parametrize(
    "name,part,units",
    [
        ("convnext_tiny", lambda m: m.features[:2], [(0, 0), (3, 5), (7, 7)]),  # channels-last blocks
        ("fcn_resnet50", Output, [(0, 0), (13, 22), (31, 31)]),  # dilated backbone, bilinear x8
        # channel shuffles: the halves a unit keeps and branches read their own channels' fields
        ("shufflenet_v2_x0_5", lambda m: nn.Sequential(m.conv1, m.stage2, m.stage3), [(0, 0), (1, 2), (3, 3)]),
    ],
    ids=["convnext_tiny.features.1", "fcn_resnet50", "shufflenet_v2_x0_5.stage3"],
)
def test_torchvision_units_against_gradient_footprints(hub_packages, name, part, units):
    torchvision, _ = hub_packages
    model = part(TORCHVISION[name](torchvision))
    check_units(model, (3, 32, 32), units)


@pytest.mark.parametrize(
    "name,part",
    [
        ("efficientnet_b0", lambda m: m.features[:2]),  # the first squeeze-and-excitation
        ("deeplabv3_mobilenet_v3_large", Output),  # ASPP's image pooling
        ("lraspp_mobilenet_v3_large", Output),  # the global-average branch
    ],
    ids=["efficientnet_b0.features.1", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"],
)
def test_global_layers_are_reached_by_every_pixel(hub_packages, name, part):
    torchvision, _ = hub_packages
    # Small weights: a sigmoid of a large sum is exactly 1.0 in double, its gradient exactly 0.
    model = positive(part(TORCHVISION[name](torchvision)), low=0.001, high=0.01)
    state, _ = output_state(model, (3, 32, 32), torch.float64)
    assert state is WHOLE
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64) + 0.5
    assert footprints(model, x, [(0, 0), (3, 2)]) == [[(0, 31), (0, 31)]] * 2


def max_pools_as_averages(module: nn.Module) -> nn.Module:
    """A max pool's gradient reaches its window's winner only: its averaging twin's, the whole window."""
    for name, child in module.named_children():
        if isinstance(child, nn.MaxPool3d):
            setattr(module, name, nn.AvgPool3d(child.kernel_size, child.stride, child.padding))
        else:
            max_pools_as_averages(child)
    return module


@pytest.mark.parametrize(
    "part",
    [
        lambda video: nn.Sequential(*list(video.r3d_18().children())[:3]),  # 3x7x7 stem, 3x3x3 blocks
        lambda video: nn.Sequential(*list(video.r2plus1d_18().children())[:3]),  # (2+1)D: 1x3x3 then 3x1x1
        lambda video: max_pools_as_averages(video.s3d().features[:6]),  # separable 1x7x7 / 7x1x1, pools, inception
    ],
    ids=["r3d_18.layer2", "r2plus1d_18.layer2", "s3d.features.5"],
)
def test_video_networks_3d_fields_against_gradient_footprints(hub_packages, part):
    torchvision, _ = hub_packages
    model = part(torchvision.models.video)
    check_units(model, (3, 6, 20, 20), corner_units(model, (3, 6, 20, 20), [(1, 2, 3)]))


def test_convnext_features_1_is_a_76_pixel_field_with_stride_4(hub_packages):
    # stem 4x4/4: 4 pixels, stride 4; three blocks of a 7x7 depthwise conv: 4 + 3 * 6 * 4 = 76.
    torchvision, _ = hub_packages
    report = archprof.analyze(torchvision.models.convnext_tiny(), input_size=(3, 224, 224))
    row = next(r for r in report.rows() if r["layer"] == "features.1.2")  # the last block's sum
    assert row["receptive_field"] == (76, 76) and row["effective_stride"] == (4, 4)
    assert row["receptive_field_start"] == (-36, -36)  # 3 blocks x padding 3 x stride 4


# -- the CLI -------------------------------------------------------------------------------


def cropped_then_padded() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), CroppedThenPadded())


def test_cli_a_padding_unit_reads_no_pixel():
    """Unit (0, 3) of a map cropped and padded back is padding along H: it reads no pixel at
    all (it read none along H and 3..5 along W); unit (3, 3) its conv unit (2, 4)'s field."""
    spec = "tests/test_receptive_field_intervals.py:cropped_then_padded"
    model = positive(cropped_then_padded())
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64) + 0.5
    assert footprints(model, x, [(0, 3), (3, 3)]) == [[None, None], [(1, 3), (3, 5)]]
    for unit, reads in [("0,3", "no input pixel"), ("3,3", "input pixels 1..3 x 3..5")]:
        done = cli("rf", spec, "--input", "1x8x8", "--layer", "1", "--unit", unit)
        assert done.exit_code == 0, done.output
        assert done.stdout == f"layer 1, unit {unit} reads {reads} (of 8x8)\n"


def test_cli_unit_box_and_plot(tmp_path):
    done = cli("rf", "vgg16", "--unit", "3,4", "--layer", "features.30")
    # pool5 unit u: [32 u - 90, 32 u + 121], clipped to the image: rows 6..217, columns 38..223
    assert done.exit_code == 0, done.output
    assert done.stdout == "layer features.30, unit 3,4 reads input pixels 6..217 x 38..223 (of 224x224)\n"
    for args, message in [
        (["--layer", "features.30"], "add --unit"),
        (["--unit", "3", "--layer", "features.30"], "--unit needs 2 coordinates"),
        (["--unit", "3,x", "--layer", "features.30"], "--unit takes whole numbers"),
        (["--unit", "3,7", "--layer", "features.30"], "outside the layer's 7 units along W (input dimension 2)"),
        (["--unit", "0,0", "--layer", "nope"], "no layer 'nope'"),
        (["--unit", "0,0", "--layer", "classifier.6"], "reads the whole input (global)"),
        (["--unit", "0,0", "--layer", "features.30", "-f", "csv"], "drop --plot, --output and --format"),
    ]:
        done = cli("rf", "vgg16", *args)
        assert done.exit_code == 2 and message in one_error_line(done), (args, done.output)
    pytest.importorskip("matplotlib")
    target = tmp_path / "rf.png"
    done = cli("rf", "resnet18", "--plot", target)
    assert done.exit_code == 0, done.output
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    done = cli("rf", "resnet18", "--plot", tmp_path / "rf.unknown")
    assert done.exit_code == 2 and "cannot tell the image format" in one_error_line(done)
    assert not (tmp_path / "rf.unknown").exists()


def resnet18_avgpool() -> nn.Module:
    """The built-in resnet18 with an average pool for its max pool: the same window, so the
    same fields, but a gradient that reaches all of each window, not only its maximum."""
    from archprof.zoo import MODELS

    model = MODELS["resnet18"].build()
    model.maxpool = nn.AvgPool2d(3, stride=2, padding=1)
    return model


@pytest.mark.parametrize(
    ("depth", "layer", "unit"),
    [(1, "layer1", (3, 4)), (2, "layer2.0", (3, 4)), (1, "layer4", (1, 0)), (1, "layer1.0.conv2", (3, 4))],
)
def test_cli_rolled_up_rows_give_the_box_of_the_modules_output(depth, layer, unit):
    """`rf --depth N` gives a module one row, whose unit box is that of the module's output:
    the gradient footprint of the module's output unit (a forward hook keeps it). A layer
    inside a rolled-up module is still named (it was "no layer 'layer1.0.conv2'", which the
    command the message pointed to lists)."""
    model = positive(resnet18_avgpool())
    kept = []
    model.get_submodule(layer).register_forward_hook(lambda module, args, output: kept.append(output))
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64).requires_grad_()
    model(x)
    rows, columns = _box(torch.autograd.grad(kept[0][(0, slice(None), *unit)].sum(), x)[0])
    where = ",".join(map(str, unit))
    spec = "tests/test_receptive_field_intervals.py:resnet18_avgpool"
    done = cli("rf", spec, "--input", "3x64x64", "--depth", depth, "--layer", layer, "--unit", where)
    assert done.exit_code == 0, done.output
    box = f"{rows[0]}..{rows[1]} x {columns[0]}..{columns[1]}"
    assert done.stdout == f"layer {layer}, unit {where} reads input pixels {box} (of 64x64)\n"


def test_every_unit_of_an_upsampled_single_position_reads_it():
    """A 1x1 map through a reshape (a channels-last linear layer) keeps its one position per
    dimension; upsampled to 2x2, each of the four units reads it (the gradient, the oracle,
    of every unit). Found by the random networks above: unit (1, 1) was refused."""
    model = nn.Sequential(
        nn.ConvTranspose2d(2, 2, 4, padding=3),  # 4x4 -> 1x1
        ChannelsLast(2, 2),
        Interpolate(size=(2, 2), mode="nearest"),
        nn.Conv2d(2, 2, 1),
    )
    check_units(model, (2, 4, 4), [(0, 0), (1, 1), (0, 1), (1, 0)])


class ChannelsInColumns(nn.Module):
    """Convolutions, each row's columns and channels flattened into one dimension (unit u of it
    reads column u // channels) and split back, then a global pooling and a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.Conv2d(4, 4, 3, 1, 1))
        self.pool, self.head = nn.AdaptiveAvgPool2d(1), nn.Sequential(nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x):
        x = self.stem(x)
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(n, h, w * c) * 2
        return self.head(self.pool(rows.reshape(n, h, w, c).permute(0, 3, 1, 2)))


class DilatedPyramid(nn.Module):
    """DeepLab's shape: a strided stem, convolutions dilated 2 and 4 instead of strided, then
    branches dilated 6, 12 and 18 side by side (its ASPP), a global pooling and a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.Conv2d(4, 4, 3, 1, 2, dilation=2))
        self.body = nn.Conv2d(4, 4, 3, 1, 4, dilation=4)
        self.branches = nn.ModuleList(nn.Conv2d(4, 2, 3, 1, d, dilation=d) for d in (6, 12, 18))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2))

    def forward(self, x):
        x = self.body(self.stem(x)) + x[:, :, ::2, ::2].mean(1, keepdim=True)
        return self.head(torch.cat([branch(x) for branch in self.branches], 1))


class BlurResidual(nn.Module):
    """timm's BlurPool ResNets: a reflection padding and a fixed 3x3 filter of stride 2 after
    each stage, residual blocks padded by reflection, a global pooling and a classifier."""

    def __init__(self):
        super().__init__()
        blur = [nn.ReflectionPad2d(1), nn.Conv2d(2, 2, 3, stride=2, groups=2)]
        self.stages = nn.Sequential(nn.Conv2d(3, 2, 3, 1, 1), *blur, ReflectedBlock(2), *blur, ReflectedBlock(2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))

    def forward(self, x):
        return self.head(self.stages(x))


_SMALL_NETWORKS = {"channels_in_columns": ChannelsInColumns, "dilated": DilatedPyramid, "blur": BlurResidual}


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "channels_in_columns", "dilated", "blur"])
def test_the_fields_a_pass_evaluates_do_not_grow_with_the_resolution(monkeypatch, name):
    """Whether the global pooling reads every pixel asks for the exact span of every unit of
    its map: at 512x512 these networks need 130 fields evaluated, as at 64x64, where taking
    that span unit by unit needed over 4,500, growing with the resolution, and time with it.
    Columns and channels flattened together (unit u reads column u // channels) repeat every
    `channels` units: in order too. A dilated convolution's taps and a reflection's mirrored
    units break that order at the borders only: their maps are a few runs in order."""
    monkeypatch.setattr(field_budget, "FIELD_BUDGET", 1_000)
    model = _SMALL_NETWORKS[name]() if name in _SMALL_NETWORKS else name
    report = archprof.analyze(model, (3, 512, 512))
    assert not [note for note in report.columns["receptive_field_note"] if TOO_IRREGULAR in note]
    assert report.columns["receptive_field"][-2:] == ["input", "input"]  # the pooling, the classifier
