"""A linear layer as a real CPU run computes it (`cpu_linear`), for `DeviceKernels` and the
recurrent layers' projections.

Modelled (PyTorch 2.x, CPU):

- linear layers: on an input of other than two dimensions that is not contiguous, the
  composite multiplies (matmul) and then adds the bias in place (linear.cpp), but out of
  place for a tensor that looks like a subclass, as every tensor does under a dispatch
  mode: a copy of the output that a real run never makes. Such a call on meta is run as
  the real one runs; any other keeps the composite road, the same there as anywhere.
"""

from __future__ import annotations

import torch


def cpu_linear(input, weight, bias=None):
    """at::linear as a real CPU run computes it: where it neither flattens the input into one
    addmm nor takes a matrix, a product and the bias added in place (out of place under a
    dispatch mode, for tensors that look like subclasses there)."""
    if bias is None or input.dim() == 2 or _flattened_by_linear(input, bias):
        return torch._C._nn.linear(input, weight, bias)
    return torch.matmul(input, weight.t()).add_(bias)


def _flattened_by_linear(input, bias) -> bool:
    """Whether linear.cpp flattens the input into one matrix product with the bias (addmm):
    a contiguous input of three dimensions, or of any number with a one-dimensional bias."""
    return input.is_contiguous() and (input.dim() == 3 or bias.dim() == 1)
