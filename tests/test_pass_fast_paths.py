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


def test_a_one_input_ops_merged_inputs_are_what_merge_gives_of_its_state():
    graph = archprof.analyze(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), input_size=(3, 8, 8)).graph
    relu = next(op for op in graph.ops if op.op.startswith("aten.relu"))
    x, out = relu.inputs[0], relu.outputs[0].shape
    field = tensor_fields(graph)[0][x.id]
    walk = Walk((AxisMap(0, 8), AxisMap(1, 8)), graph)
    for state in (None, WHOLE, Undefined("why"), field, Extent("another extent")):
        walk.fields[x.id] = state
        assert walk.merge_inputs(relu, out) == walk.merge(relu, [(state, x.shape)], out), state
