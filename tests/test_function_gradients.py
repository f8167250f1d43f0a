"""A custom autograd Function whose forward runs a composite (`a @ b`, which PyTorch's
matmul decomposes): its backward's products are the Function's, a weight's gradient a
weight's, checkpointed or not, and its Python backward frees what it makes as a real step
does.

The composite's end used to tag the nodes of its last op before the Function's `apply` had
made one (its forward runs with grad off), so the Function's node went untagged and its
backward's ops were taken for the op after it (a ReLU's, where no operand is a weight): the
weight's gradient, `a.t() @ grad`, counted as an input's; checkpointed, its recomputation
was taken for backward ops. Oracles: the lecture's matrix
products (each gradient of `x @ W` costs the forward's m·k·n MACs) and a real CPU step's
allocations."""

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import FlopCounterMode

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

    def __init__(self, checkpointed: str | None = None) -> None:
        super().__init__()
        self.checkpointed = checkpointed  # None, "reentrant" or "non-reentrant"
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.w = nn.Parameter(torch.randn(48, 10))

    def _product(self, y):
        return MatrixProduct.apply(y, self.w).relu()

    def forward(self, x):
        y = self.conv(x).flatten(1)
        if self.checkpointed is None:
            return self._product(y)
        return checkpoint(self._product, y, use_reentrant=self.checkpointed == "reentrant")


CONVOLUTION = 3 * 16 * 3 * 3 * 3  # out channels · 4x4 · in channels · 3x3
PRODUCT = 1 * 48 * 10  # m·k·n


@pytest.mark.parametrize("checkpointed", [None, "non-reentrant", "reentrant"])
def test_a_functions_weight_gradient_is_a_weights(checkpointed):
    """Checkpointed, it runs again in the backward pass, its forward with grad off as ever:
    its ops recomputed ones, and a reentrant block's backward runs through its node again."""
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


class LinearFunction(torch.autograd.Function):
    """PyTorch's own example of a custom Function ("Extending torch.autograd"), as written
    there: its forward ends with the bias's add, not with its product."""

    @staticmethod
    def forward(ctx, input, weight, bias=None):
        ctx.save_for_backward(input, weight, bias)
        output = input.mm(weight.t())
        if bias is not None:
            output += bias.unsqueeze(0).expand_as(output)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        input, weight, bias = ctx.saved_tensors
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = grad_output.mm(weight)
        if ctx.needs_input_grad[1]:
            grad_weight = grad_output.t().mm(input)
        if bias is not None and ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum(0)
        return grad_input, grad_weight, grad_bias


class FunctionLinear(nn.Module):
    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(outputs, inputs))
        self.bias = nn.Parameter(torch.randn(outputs))

    def forward(self, x):
        return LinearFunction.apply(x, self.weight, self.bias)


def test_the_documentations_linear_function_splits_its_gradients_by_what_was_given_to_it():
    """Its node was tagged with the bias's add, whose operands have no weight's shape: the
    weight's gradient counted as an input's (input 20,480, weight 2,048)."""
    model = nn.Sequential(nn.Linear(16, 32), FunctionLinear(32, 64), nn.ReLU(), FunctionLinear(64, 8))
    totals = archprof.analyze(model, input_size=(16,), batch=4, training=True).totals
    first, second, third = 4 * 16 * 32, 4 * 32 * 64, 4 * 64 * 8  # batch · in · out each
    assert totals.backward_input_macs == second + third  # the first layer's input needs no gradient
    assert totals.backward_weight_macs == first + second + third
    x = torch.randn(4, 16, requires_grad=False)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    forward_and_backward = counter.get_total_flops() // 2
    assert totals.macs + totals.backward_input_macs + totals.backward_weight_macs == forward_and_backward


class DoubledProduct(MatrixProduct):
    """A Python number in the backward (`grad * 2`): PyTorch's argument parser wraps it in a
    tensor of 8 bytes for that one call, which Python lets go of as it returns."""

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad = grad * 2
        return grad @ b.t(), a.t() @ grad


class DoubledHead(nn.Module):
    """Where that number is held at the step's peak: beside the two products' gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.w = nn.Parameter(torch.randn(64, 16))

    def forward(self, x):
        return DoubledProduct.apply(self.conv(x).flatten(1), self.w).relu()


def test_a_number_in_a_python_backward_is_held_while_its_op_runs_only():
    """It was held to the end of the backward: 8 B over the real step's peak."""
    x = torch.randn(2, 3, 4, 4)
    totals = archprof.analyze(DoubledHead(), input_size=(3, 4, 4), batch=2, training=True).totals
    _, lasting = profiled_training_peaks(DoubledHead(), x)
    assert totals.training_peak_bytes == totals.param_bytes + lasting + x.nbytes
