"""The receptive-field oracle: a model with positive weights and one output unit's input
gradient, whose non-zero pixels are exactly those a path of weights reaches."""

from __future__ import annotations

import torch
from torch import nn


def positive(module: nn.Module) -> nn.Module:
    """float64, eval mode, every weight and bias in [0.1, 1]: a gradient is non-zero exactly
    where some path of non-zero weights reaches (no cancellation, no ReLU cut-off)."""
    module = module.double().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(0.1, 1.0)
    return module


def unit_gradient_box(module: nn.Module, input_size: tuple[int, ...], unit: tuple[int, int]) -> list[tuple[int, int]]:
    """The gradient box (H, W) of one output unit of a 2-d map: per axis, the first and last
    input pixel whose gradient from the unit (over every channel) is non-zero."""
    x = (torch.rand(1, *input_size, dtype=torch.float64) + 0.5).requires_grad_()
    module(x)[(0, slice(None), *unit)].sum().backward()
    reached = x.grad[0].abs().sum(0) > 0
    return [tuple(int(i) for i in torch.nonzero(reached.any(dim=1 - axis)).flatten()[[0, -1]]) for axis in range(2)]
