"""The report's rows, on their common roads, give what the general rules give (a row's
operators and bytes, a container's outputs, a convolution's window), and the shape texts
stay bounded."""

import torch
from torch import nn

import archprof
from archprof import units
from archprof.analysis import _row_columns
from archprof.passes.layers import _leaf_paths, group_layers, interface_columns, window_lead
from archprof.units import shape_text, shapes_text


class _Rows(nn.Module):
    """A convolution, an op-less row (an identity), and the root's own ops between and after
    its children's calls: a residual add, then a split whose two outputs the root returns."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.skip = nn.Identity()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        y = self.conv(x)
        y = self.pool(y + self.skip(y))
        a, b = y.split(2, dim=1)
        return a * 2, b


def _graph():
    return archprof.analyze(_Rows(), input_size=(3, 8, 8)).graph


def test_a_rows_operators_and_bytes_are_those_of_its_ops_and_made_outputs():
    groups = group_layers(_graph())
    columns = _row_columns(groups)
    assert any(not group.ops for group in groups)  # the identity's row
    assert any(len(group.made_outputs) > 1 for group in groups)  # the root's split
    for row, group in enumerate(groups):
        assert columns["operators"][row] == tuple(dict.fromkeys(op.op.removeprefix("aten.") for op in group.ops))
        assert columns["activation_bytes"][row] == sum(t.nbytes for t in group.made_outputs)


def test_a_containers_run_returns_what_its_call_returned_that_it_made():
    graph = _graph()
    leaves = _leaf_paths(graph.module_types)
    containers = [group for group in group_layers(graph) if group.ops and group.path not in leaves]
    assert len(containers) == 2  # the root's add, then its split and multiply
    for group in containers:
        made = {t.id for op in group.ops for t in op.outputs}
        returned = graph.call_outputs[group.ops[0].module.index]
        assert group.outputs == (tuple(t for t in returned if t.id in made) or group.ops[-1].outputs[:1])
    assert [len(group.outputs) for group in containers] == [1, 2]


def test_a_convolutions_window_is_its_whole_weight_window():
    groups = group_layers(_graph())
    kernels = interface_columns(groups)["kernel"]
    for group, kernel in zip(groups, kernels, strict=True):
        if group.ops and group.ops[0].op == "aten.convolution":
            op = group.ops[0]
            assert kernel == shape_text(op.inputs[1].shape[2:][window_lead(op, group.ops) :]) == "3x3"
    assert "2x2" in kernels  # the pooling's, from its arguments


def test_shape_texts_are_kept_up_to_a_bound_and_made_again_after():
    texts = units._SHAPE_TEXTS
    texts.clear()
    for size in range(4096):
        assert shape_text((1, size)) == f"1x{size}"
    assert len(texts) == 4096
    assert shapes_text([torch.Size([2, 3]), (4,)]) == "2x3, 4"  # a shape more: emptied, then kept
    assert len(texts) == 2
    assert shape_text(()) == "()" and shapes_text([[5, 6]]) == "5x6" and shapes_text([]) == ""
