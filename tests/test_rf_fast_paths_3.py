"""The receptive-field cells' shortcut of the fifth pass gives what the general road gives:
the test fails where the shortcut is broken on purpose."""

from fractions import Fraction

import torch
from torch import nn

import archprof
from archprof.passes.receptive_field import FieldMark, _cells, _own_maps, tensor_fields
from archprof.passes.receptive_field.dims import Field, Parts


class _Kinds(nn.Module):
    """Fields of the kinds a row's cells tell apart: windows, upsamplings (strides of half a
    pixel, and whole again after a strided window), a flip (units that run backwards), a
    channels-last permute (maps not in the last dimensions), concatenated paths (`Parts`
    among the channels), channels picked among a pixel unshuffle's (an upper bound), a
    dimension read twice; and, for the general road, a pooling along one dimension (a map
    read whole), a row picked (a map kept at one unit) and a flatten."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 5, stride=2, padding=2)
        self.up = nn.Upsample(scale_factor=2)
        self.down = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.branch = nn.Conv2d(4, 4, 3, padding=1)
        self.fine = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        whole = self.down(self.up(self.stem(x)))
        last = torch.flip(whole, [3]).permute(0, 2, 3, 1) * 2
        joined = torch.cat([whole, self.branch(whole)], 1)
        picked = nn.functional.pixel_unshuffle(joined, 2)[:, :3] + 1
        twice = whole.unsqueeze(-1) + whole.unsqueeze(-2)
        fine = self.fine(self.up(x))
        return last, picked, twice, fine, joined.mean(3), joined[:, :, 1], joined.flatten(1)


def test_cells_of_fields_keyed_by_their_maps_are_the_general_roads():
    """A field that `_own_maps` keys (no map read whole or kept at one unit, nothing
    flattened or split) has its cells from its maps alone (each axis's places its maps
    along that axis); every such field's cells are those the general road gives it,
    asking it everything (`Field.places`, whether it is flattened, whether some units read
    nothing), to the type of each number. Fields of every kind the general road tells
    apart are among them."""
    graph = archprof.analyze(_Kinds(), input_size=(3, 24, 20)).graph
    fields, spatial = tensor_fields(graph)
    states = [state for state in fields.values() if isinstance(state, Field)]
    assert sum(_own_maps(state) is None for state in states) >= 3  # read whole, kept at one unit, flattened
    keyed = [(state, _own_maps(state)) for state in states if _own_maps(state) is not None]
    cells = []
    for state, maps in keyed:
        shortcut, general = _cells(state, spatial, maps), _cells(state, spatial)
        assert repr(shortcut) == repr(general)
        cells.append(shortcut)
    strides = [stride for _, stride, *_ in cells]
    assert (2, 2) in strides and (1, 1) in strides and (Fraction(1, 2), Fraction(1, 2)) in strides
    assert FieldMark.UNDEFINED in strides  # read twice
    assert any(start[1] > 0 for _, _, start, *_ in cells)  # flipped: unit 0 at the far end
    assert any(note.startswith("an upper bound") for *_, note in cells)
    assert any(state.dims[-1] is None for state, _ in keyed)  # channels last
    assert any(isinstance(state.dims[1], Parts) for state, _ in keyed)
