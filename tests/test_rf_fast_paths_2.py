"""The receptive-field walk's shortcuts of its fourth pass give what its general roads
give: each test fails where its shortcut is broken on purpose."""

import torch
from torch import nn

import archprof
from archprof.passes.receptive_field import tensor_fields
from archprof.passes.receptive_field.dims import Field
from archprof.passes.receptive_field.maps import AxisMap


class _MaskCarriedFar(nn.Module):
    """Attention along W within each row, its scores masked by -inf, then passed through a
    long chain of ops that each carry the mask on (a scale, a shift) before the softmax."""

    def __init__(self, chain: int):
        super().__init__()
        self.chain = chain
        self.out = nn.Conv2d(3, 1, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        t = x.permute(0, 2, 3, 1).reshape(n * h, w, c)
        i = torch.arange(w, device=x.device)
        band = (i[:, None] - i[None, :]).abs() <= 1  # keys within one position of the query
        scores = (t @ t.transpose(1, 2)).masked_fill(~band, float("-inf"))
        for _ in range(self.chain):
            scores = scores * 1.0 + 0.0
        y = torch.softmax(scores, -1) @ t
        return self.out(y.reshape(n, h, w, c).permute(0, 3, 1, 2))


def test_a_mask_carried_through_a_long_chain_of_ops_is_found_where_the_softmax_asks():
    """`Walk.holds_mask` follows an operand back through the ops that made it, as the
    softmax asks, not as each op is stepped: 1,500 ops that carry the mask on (3,000 frames
    back) still bring it to the softmax, whose field is then undefined (the keys each query
    reads are in the mask's values: `test_attention_masked_by_minus_infinity_is_undefined`).
    Asking only the ops the walk marks as it goes (reading no field) misses it."""
    r = archprof.analyze(_MaskCarriedFar(750), input_size=(3, 3, 8)).rows()[-1]
    assert r["receptive_field"] == "undefined"
    assert "softmax" in r["receptive_field_note"] and "masked" in r["receptive_field_note"]


class _Windows(nn.Module):
    """Windows of every kind a CNN chains: a strided stem, a padded max pooling, a residual
    sum whose shortcut is a strided 1x1 convolution, a concatenation of branches of other
    windows, an average pooling; and a sum of a pooled path and a wide convolution of one
    size but other strides, whose padded fields follow no one formula."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 7, stride=2, padding=3)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 3, padding=1))
        self.shortcut = nn.Conv2d(4, 4, 1, stride=2)
        self.branches = nn.ModuleList([nn.Conv2d(4, 2, 1), nn.Conv2d(4, 2, 5, padding=2), nn.MaxPool2d(3, 1, 1)])
        self.wide = nn.Conv2d(8, 8, (4, 3))  # 6 x 4 units to 3 x 2, as a pooling by 2

    def forward(self, x):
        y = self.pool(self.stem(x))
        y = self.body(y) + self.shortcut(y)
        y = torch.cat([branch(y) for branch in self.branches], 1)
        return nn.functional.avg_pool2d(y, 3, 2, ceil_mode=True), self.wide(y) + nn.functional.avg_pool2d(y, 2)


def _maps_below(states) -> list:
    """Every map the states' fields hold, and the maps those read, down to the input."""
    seen, todo = {}, [e for s in states if isinstance(s, Field) for e in s.dims if isinstance(e, AxisMap)]
    while todo:
        axis_map = todo.pop()
        if id(axis_map) not in seen:
            seen[id(axis_map)] = axis_map
            todo += [link.parent for link in axis_map.links]
    return list(seen.values())


def test_padded_fields_by_formula_are_those_the_links_give():
    """A map whose links are windows of maps with a formula (`links.affine_through`) gives
    its padded fields from it; with every map's formula taken away, the links' spans give
    the same fields at every unit, past both ends too. Maps of paths of other strides
    summed have none."""
    graph = archprof.analyze(_Windows(), input_size=(3, 41, 29)).graph
    maps = _maps_below(tensor_fields(graph)[0].values())
    by_formula = {id(m): [m.field(u) for u in range(-6, m.size + 6)] for m in maps}
    assert sum(m.affine is not None and len(m.links) > 1 for m in maps) == 4  # the sum's and the concatenation's
    assert sum(m.affine is None for m in maps) == 2  # the last sum's, along H and W
    for axis_map in maps:
        axis_map.affine = None
    assert {id(m): [m.field(u) for u in range(-6, m.size + 6)] for m in maps} == by_formula
