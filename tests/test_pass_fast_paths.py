"""The passes' shortcuts for their common cases give what their general roads give."""

import torch
import torch.nn.functional as F
from torch import nn

import archprof
from archprof.graph import TensorMeta
from archprof.passes.flops import shaped_arguments
from archprof.passes.receptive_field import tensor_fields
from archprof.passes.receptive_field.dims import WHOLE, Extent, Undefined
from archprof.passes.receptive_field.maps import AxisMap
from archprof.passes.receptive_field.walk import Walk
from archprof.structure import map_op_args


class _Mixed(nn.Module):
    """Tensors first and one an argument (a convolution without a bias, an add), a number
    where a tensor goes before one (`1.0 - x`) and after (`x * 0.5`), a tensor twice, tensors
    in a list (`cat`), and keywords."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.conv(x)
        y = (1.0 - y) * 0.5 + y * y
        y = torch.cat([y, x, y], dim=1)
        return F.interpolate(y, scale_factor=2.0, mode="bilinear").sum(dim=(2, 3), keepdim=True)


def test_an_operators_shaped_arguments_are_those_of_the_walk_over_every_argument():
    graph = archprof.analyze(_Mixed(), input_size=(3, 8, 8), training=True).graph
    ops = (*graph.ops, *graph.backward_ops)
    assert {"aten.rsub", "aten.cat", "aten.convolution"} <= {op.op for op in ops}
    for op in ops:
        walked = map_op_args(lambda t: t.shape, TensorMeta, op.args, op.kwargs)
        assert shaped_arguments(op) == walked, op.op


def test_an_ops_merged_inputs_are_what_merge_gives_of_their_states():
    """Where only the first input, read unit for unit, may have a state (a ReLU, a batch
    norm), and where another has one (an add, a square)."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.norm(self.conv(x)).relu()
            return y + y * y

    graph = archprof.analyze(Block().eval(), input_size=(3, 8, 8)).graph
    fields = tensor_fields(graph)[0]
    field = next(state for state in fields.values() if state is not None)
    ops = [op for op in graph.ops if op.op != "aten.convolution"]
    assert {len(op.inputs) for op in ops} == {1, 2, 5}
    walk = Walk((AxisMap(0, 8), AxisMap(1, 8)), graph)
    for op in ops:
        out = op.outputs[0].shape
        mapped = [t for t in op.inputs[1:] if len(t.shape) == len(out)]  # (not a batch norm's weights)
        for first in (None, WHOLE, Undefined("why"), field, Extent("another extent")):
            for other in (None, field) if mapped else (None,):
                walk.fields.clear()
                walk.fields.update({t.id: other for t in mapped if other is not None})
                if first is not None:
                    walk.fields[op.inputs[0].id] = first
                items = [(walk.fields.get(t.id), t.shape) for t in op.inputs]
                assert walk.merge_inputs(op, out) == walk.merge(op, items, out), (op.op, first, other)
