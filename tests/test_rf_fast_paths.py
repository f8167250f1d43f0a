"""The receptive-field walk's shortcuts give what its general roads give: each test fails
where its shortcut is broken on purpose."""

from torch import nn

import archprof
from archprof.passes.receptive_field import tensor_fields
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
