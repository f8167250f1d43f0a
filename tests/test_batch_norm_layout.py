"""A batch norm, and its gradient, on a map whose strides say both contiguous and channels
last ((N, 1, H, W) or (N, C, 1, 1) made channels last): a CPU writes them contiguous, as
ATen's `suggest_memory_format_contig` says; a group norm keeps the channels-last strides.
The oracle is the real CPU kernel's output, every stride compared (a dimension of size 1
too: the next convolution picks its layout by them)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from archprof.tracing.recorder import Recorder
from archprof.tracing.trace import trace

aten = torch.ops.aten
AMBIGUOUS = [(3, 1, 2, 4), (3, 4, 1, 1), (2, 1, 1, 5)]


def _map(shape, device: str) -> torch.Tensor:
    x = torch.empty(shape, device=device).to(memory_format=torch.channels_last)
    return x.normal_() if device == "cpu" else x


def _batch_norm(shape, device: str, training: bool):
    channels = shape[1]
    mean, var = torch.zeros(channels, device=device), torch.ones(channels, device=device)
    return aten.native_batch_norm(_map(shape, device), None, None, mean, var, training, 0.1, 1e-5)[0]


def _batch_norm_gradient(shape, device: str, training: bool):
    ones = [torch.ones(shape[1], device=device) for _ in range(5)]
    return aten.native_batch_norm_backward(
        _map(shape, device).contiguous(), _map(shape, device), *ones, training, 1e-5, [True, True, True]
    )[0]


def _group_norm(shape, device: str, training: bool):
    n, c = shape[:2]
    return aten.native_group_norm(_map(shape, device), None, None, n, c, shape[2] * shape[3], 1, 1e-5)[0]


@pytest.mark.parametrize("shape", AMBIGUOUS)
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("call", [_batch_norm, _batch_norm_gradient, _group_norm])
def test_norms_of_a_map_of_two_layouts_are_laid_out_as_a_cpu_lays_them(call, shape, training):
    want = call(shape, "cpu", training).stride()
    with Recorder():
        got = call(shape, "meta", training).stride()
    assert got == want


class OneChannelNorm(nn.Module):
    """A one-channel map made channels last by a convolution over a permuted layer norm's
    output, batch-normalised, convolved again and flattened: a CPU's batch norm writes it
    contiguous, so the next convolution's output is contiguous and the flatten a free view."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.squeeze = nn.Conv2d(8, 1, 3, padding=1)
        self.bn = nn.BatchNorm2d(1)
        self.expand = nn.Conv2d(1, 8, 3, padding=1)

    def forward(self, x):
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.expand(self.bn(self.squeeze(x))).flatten(1)


def test_a_meta_trace_records_what_a_real_forward_runs():
    model = OneChannelNorm().eval()
    on_meta = trace(model, [(1, 8, 16, 16)])
    real = trace(model, [(1, 8, 16, 16)], real=True)
    assert [op.op for op in on_meta.ops] == [op.op for op in real.ops]
