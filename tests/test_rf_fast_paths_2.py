"""The receptive-field walk's shortcuts of its fourth pass give what its general roads
give: each test fails where its shortcut is broken on purpose."""

import torch
from torch import nn

import archprof
from archprof.passes.receptive_field import maps, tensor_fields
from archprof.passes.receptive_field.dims import Field
from archprof.passes.receptive_field.maps import AxisMap
from archprof.passes.receptive_field.walk import Walk


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


def _paired(fast: dict, slow: dict) -> list[tuple[AxisMap, AxisMap]]:
    """The maps of two walks over one graph, each with its twin: those of each tensor's
    field, then those their links read, down to the input."""
    pairs, seen = [], set()
    todo = [
        (e, f)
        for key, state in fast.items()
        if isinstance(state, Field)
        for e, f in zip(state.dims, slow[key].dims, strict=True)
        if isinstance(e, AxisMap)
    ]
    while todo:
        mine, twin = todo.pop()
        if id(mine) not in seen:
            seen.add(id(mine))
            pairs.append((mine, twin))
            todo += [(a.parent, b.parent) for a, b in zip(mine.links, twin.links, strict=True)]
    return pairs


def test_maps_with_a_formula_are_those_their_links_give(monkeypatch):
    """A map whose links are windows of maps with a formula (`links.affine_through`) gives
    its padded fields from it, and is in order with a period of 1 at every unit without
    asking its links; with no formula anywhere (a second walk over the same graph), the
    links give the same order, period and fields, at every unit and past both ends. Maps of
    paths of other strides summed have none."""
    graph = archprof.analyze(_Windows(), input_size=(3, 41, 29)).graph
    fast = tensor_fields(graph)[0]
    monkeypatch.setattr(maps, "affine_through", lambda links: None)
    pairs = _paired(fast, tensor_fields(graph)[0])
    assert sum(m.affine is not None and len(m.links) > 1 for m, _ in pairs) == 4  # the sum's and the concatenation's
    assert sum(m.affine is None for m, _ in pairs) == 2  # the last sum's, along H and W
    for mine, twin in pairs:
        assert twin.affine is None
        order = ("jump", "note", "irregular", "_unordered", "period", "_step", "_regular", "_origin")
        assert [getattr(mine, name) for name in order] == [getattr(twin, name) for name in order]
        units = range(-6, mine.size + 6)
        assert [mine.field(u) for u in units] == [twin.field(u) for u in units]


class _Idle(_Windows):
    """`_Windows`, and beside it windows some of whose units read only padding: a 1x1
    convolution of stride 2 padded by 1, over 40 x 28 units (its first unit), then a 3x3
    one padded by 2 (its first unit reads only that one and padding)."""

    def __init__(self):
        super().__init__()
        self.padded = nn.Sequential(
            nn.Conv2d(3, 3, 2), nn.Conv2d(3, 3, 1, stride=2, padding=1), nn.Conv2d(3, 3, 3, padding=2)
        )

    def forward(self, x):
        return *super().forward(x), self.padded(x)


def test_units_that_read_by_windows_are_those_their_links_give(monkeypatch):
    """Which units of a map with a formula read a real pixel (`Walk._reading_units`), where
    its windows say every unit does (`Walk._windows_read_all`), is what its links give (a
    second walk, that road closed), for every map of the network, asked in either order."""
    graph = archprof.analyze(_Idle(), input_size=(3, 41, 29)).graph
    fields = tensor_fields(graph)[0]
    every = [m for m, _ in _paired(fields, fields)]
    assert sum(m.affine is not None for m in every) > 20

    def units(order: list[AxisMap]) -> list:
        walk = Walk(tuple({m for m in every if not m.links}), graph)
        return [walk._reading_units(m) for m in order], [walk.every_unit_reads(m) for m in order]

    fast, fast_backwards = units(every), units(every[::-1])
    monkeypatch.setattr(Walk, "_windows_read_all", lambda walk, axis_map: False)
    slow = units(every)
    assert fast == slow
    assert fast_backwards == units(every[::-1])
    assert slow[1].count(False) == 4  # the 1x1 padded convolution's, the 3x3's after it (H and W)
