"""Receptive fields through views and writes that move positions: a flipped map's effective
stride is the distance between neighbouring units' fields, whatever their order; a scatter
along a spatial dimension writes where its index's values say; Tensor.unfold's windows read
what a pooling of them would."""

import pytest
import torch
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
    report = archprof.analyze(SlidingWindows(windows), input_size=(1, 10, 10))
    output = report.graph.outputs[0]
    fields, spatial = tensor_fields(report.graph)
    model = positive(SlidingWindows(windows))
    for unit in [(h, w) for h in range(output.shape[2]) for w in range(output.shape[3])]:
        assert [tuple(b) for b in unit_box(fields[output.id], spatial, unit)] == unit_gradient_box(
            model, (1, 10, 10), unit
        )
