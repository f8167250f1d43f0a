"""The receptive-field walk's shortcuts give what its general roads give: each test fails
where its shortcut is broken on purpose."""

import torch
import torch.nn.functional as F
from torch import nn

import archprof
from archprof.analysis import group_layers
from archprof.passes.receptive_field import receptive_field_columns, tensor_fields, walk
from archprof.passes.receptive_field.dims import Field, Undefined


class _WrittenThroughAView(nn.Module):
    """A map sliced (a view of its storage), then added to in place: the slice now holds
    what the sum wrote, which archprof cannot place; the sum's own versions keep theirs."""

    def __init__(self):
        super().__init__()
        self.near, self.far = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 5, padding=2)

    def forward(self, x):
        y = self.near(x)
        top = y[:, :2]
        y += self.far(x)
        return top * 2.0, y.relu_()


def test_an_in_place_write_undefines_the_other_views_of_its_storage_only():
    """`Walk._storage_members` indexes only the storages some op writes in place: the slice's
    is one (the add's), and the slice is found among its views."""
    graph = archprof.analyze(_WrittenThroughAView(), input_size=(3, 16, 16)).graph
    fields = tensor_fields(graph)[0]
    (sliced,) = [op for op in graph.ops if op.op == "aten.slice"]
    (added,) = [op for op in graph.ops if op.op == "aten.add_"]
    view = fields[sliced.outputs[0].id]
    assert isinstance(view, Undefined) and "another view of this tensor's storage" in view.reason
    assert isinstance(fields[added.inputs[0].id], Field)  # the version the sum replaced keeps its field
    assert isinstance(fields[added.outputs[0].id], Field)


class _DenseBlock(nn.Module):
    """DenseNet's block: each layer reads all the maps before it, concatenated, and each
    concatenation begins with the one before's inputs (`gathered.gathered` resumes it). Each
    layer reads the concatenation one unit on (cropped on the near side, padded on the far):
    where its unit 0's field begins, the first map's unit 1 alone reads, the concatenation's
    first path (a resumed merge that lost it would begin later)."""

    def __init__(self, layers: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.layers = nn.ModuleList(nn.Conv2d(4 * (i + 1), 4, 1) for i in range(layers))

    def forward(self, x):
        maps = [self.stem(x)]
        for layer in self.layers:
            maps.append(layer(F.pad(torch.cat(maps, 1), (-1, 1, -1, 1))).relu())
        return torch.cat(maps, 1).mean((2, 3))


def test_concatenations_that_resume_the_last_merge_give_the_fields_of_a_merge_anew(monkeypatch):
    """A merge that resumes the one before adds its entries to those that one gathered
    (`dims.Entries`), and asks only of them: the same fields as each gathered anew."""
    result = archprof.analyze(_DenseBlock(), input_size=(3, 20, 20))
    graph, groups = result.graph, group_layers(result.graph)
    resumed = receptive_field_columns(graph, groups)
    assert set(resumed["receptive_field_start"]) == {(-1, -1), (1, 1), None}  # the stem's, the layers', the mean's
    merged = walk.gathered
    monkeypatch.setattr(walk, "gathered", lambda last, fields, ndim: merged(None, fields, ndim))
    assert receptive_field_columns(graph, groups) == resumed
