"""A roll laid out as a CPU lays it out, by the trace's fast path (`strides.rolled_channels_last`).

A CPU rolls one dimension at a time, each a concatenation of the two parts of the tensor
along it; a concatenation is channels last only where both parts suggest it, and a shift by
a multiple of the size leaves one part empty, which suggests neither. So a channels-last
map rolled along a dimension of size 1 (an odd input's last stage, 1x1) comes out
contiguous, and the flatten after it is a view, not a copy. The oracle is a real CPU call,
every stride compared."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import archprof
from archprof.tracing.recorder import Recorder

CL = torch.channels_last

LAYOUTS = {
    "channels last": lambda shape, device: torch.empty(shape, device=device, memory_format=CL),
    "channels last, channels sliced": lambda shape, device: torch.empty(
        (shape[0], shape[1] + 2, *shape[2:]), device=device, memory_format=CL
    )[:, 1:-1],
    "NHWC permuted": lambda shape, device: torch.empty((shape[0], *shape[2:], shape[1]), device=device).permute(
        0, 3, 1, 2
    ),
    "contiguous": lambda shape, device: torch.empty(shape, device=device),
}
SHAPES = [(2, 4, 1, 6), (1, 3, 5, 1), (3, 4, 2, 3)]
ROLLS = [((1,), (2,)), ((5,), (2,)), ((2,), (2,)), ((-1,), (3,)), ((3,), (-1,)), ((1, 1), (2, 3)), ((0, 2), (1, 3))]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("shape", "roll"), list(itertools.product(SHAPES, ROLLS)))
def test_a_roll_is_laid_out_as_a_cpu_lays_it(layout, shape, roll):
    shifts, dims = roll
    want = torch.roll(LAYOUTS[layout](shape, "cpu"), shifts, dims)
    with Recorder():
        got = torch.roll(LAYOUTS[layout](shape, "meta"), shifts, dims)
    assert (tuple(got.shape), got.stride()) == (tuple(want.shape), want.stride())


class _Operators(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


class RolledThenFlattened(nn.Module):
    def forward(self, x):
        return torch.roll(x.contiguous(memory_format=CL), 1, 2).flatten(1)


def test_a_flatten_after_a_roll_copies_only_where_a_cpu_does():
    """A 1-row channels-last map rolled by 1 along its rows: archprof recorded a channels-last
    roll and then a copy in the flatten (clone, _unsafe_view), where a CPU's roll comes out
    contiguous and its flatten is a view: one map's bytes too many."""
    x = torch.randn(3, 4, 1, 6)
    with _Operators() as cpu:
        RolledThenFlattened()(x)
    report = archprof.analyze(RolledThenFlattened(), input_size=(4, 1, 6), batch=3)
    assert [op.op for op in report.graph.ops] == cpu.names == ["aten.clone", "aten.roll", "aten.view"]
