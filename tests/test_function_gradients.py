"""A custom autograd Function whose forward runs a composite (`a @ b`, which PyTorch's
matmul decomposes): its backward's products are the Function's, a weight's gradient a
weight's, checkpointed or not, and its Python backward frees what it makes as a real step
does.

The composite's end used to tag the nodes of its last op before the Function's `apply` had
made one (its forward runs with grad off), so the Function's node went untagged and its
backward's ops were taken for the op after it (a ReLU's, where no operand is a weight): the
weight's gradient, `a.t() @ grad`, counted as an input's. Oracles: the lecture's matrix
products (each gradient of `x @ W` costs the forward's m·k·n MACs) and a real CPU step's
allocations."""

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import archprof
from tests.memory_oracle import profiled_training_peaks


class MatrixProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return grad @ b.t(), a.t() @ grad


class Head(nn.Module):
    """A convolution, then the Function's product with a weight, then a ReLU."""

    def __init__(self, checkpointed: bool = False) -> None:
        super().__init__()
        self.checkpointed = checkpointed
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.w = nn.Parameter(torch.randn(48, 10))

    def _product(self, y):
        return MatrixProduct.apply(y, self.w).relu()

    def forward(self, x):
        y = self.conv(x).flatten(1)
        return checkpoint(self._product, y, use_reentrant=False) if self.checkpointed else self._product(y)


CONVOLUTION = 3 * 16 * 3 * 3 * 3  # out channels · 4x4 · in channels · 3x3
PRODUCT = 1 * 48 * 10  # m·k·n


@pytest.mark.parametrize("checkpointed", [False, True])
def test_a_functions_weight_gradient_is_a_weights(checkpointed):
    totals = archprof.analyze(Head(checkpointed), input_size=(3, 4, 4), training=True).totals
    assert totals.macs == CONVOLUTION + PRODUCT
    assert totals.backward_input_macs == PRODUCT  # grad @ w.T; the first convolution's input needs none
    assert totals.backward_weight_macs == CONVOLUTION + PRODUCT  # each weight's: its forward's MACs
    assert totals.recomputed_macs == (PRODUCT if checkpointed else 0)  # the block's forward, once more


@pytest.mark.parametrize("batch", [1, 3])
def test_a_functions_backward_frees_what_it_makes_as_a_real_step(batch):
    x = torch.randn(batch, 3, 4, 4)
    totals = archprof.analyze(Head(), input_size=(3, 4, 4), batch=batch, training=True).totals
    _, lasting = profiled_training_peaks(Head(), x)
    assert totals.training_peak_bytes == totals.param_bytes + lasting + x.nbytes
