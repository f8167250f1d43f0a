"""Training dense-prediction networks: segmentation and detection losses, against a real CPU
step (torch.profiler for the peaks, FlopCounterMode for the FLOPs)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archprof
from tests.test_training_peak import real_optimizer_step


class LossOfAMap(nn.Module):
    """A small segmentation head whose forward ends in a loss against targets held as buffers:
    class indices (some 255, ignored), per-class weights, soft targets in [0, 1]."""

    def __init__(self, loss, classes: int = 4, batch: int = 2, size: int = 8):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, classes, 1)
        generator = torch.Generator().manual_seed(1)
        target = torch.randint(0, classes, (batch, size, size), generator=generator)
        target[:, 0, :3] = 255
        self.register_buffer("target", target)
        self.register_buffer("weight", torch.rand(classes, generator=generator) + 0.5)
        self.register_buffer("soft", torch.rand(batch, classes, size, size, generator=generator))
        self.register_buffer("pos_weight", torch.rand(classes, 1, 1, generator=generator) + 1)
        self.loss = loss

    def forward(self, x):
        return self.loss(self, self.head(F.relu(self.conv(x))))


# Losses whose CPU kernel writes the unreduced loss into its output and then resizes it to
# the reduced 0-dim result: the output keeps the whole map's storage.
RESIZED_LOSSES = {
    "mse": lambda m, z: F.mse_loss(z, m.soft),
    "smooth_l1": lambda m, z: F.smooth_l1_loss(z, m.soft, beta=0.5),
    "smooth_l1 summed": lambda m, z: F.smooth_l1_loss(z, m.soft, reduction="sum"),
    "binary_cross_entropy": lambda m, z: F.binary_cross_entropy(torch.sigmoid(z), m.soft),
    "soft_margin": lambda m, z: F.soft_margin_loss(z, m.soft * 2 - 1),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", RESIZED_LOSSES)
def test_a_reduced_loss_holds_its_unreduced_storage(name, dtype):
    """The oracle: a real CPU training step (SGD) under torch.profiler. mse_loss's and
    smooth_l1_loss's structured kernels, binary_cross_entropy's and soft_margin_loss's write
    the loss of every element into their output, then resize it to the 0-dim mean or sum,
    which keeps the storage: the loss holds 2 x 4 x 8 x 8 elements, not one, held by the
    caller through the backward pass. Sized by its shape, the peak was that less one element
    short (2,044 B in float32, 4,088 in float64)."""
    model, x = LossOfAMap(RESIZED_LOSSES[name]).to(dtype), torch.randn(2, 3, 8, 8, dtype=dtype)
    with torch.no_grad():
        loss = model(x)
    assert loss.untyped_storage().nbytes() == 2 * 4 * 8 * 8 * dtype.itemsize  # the oracle's premise
    real = real_optimizer_step(model, x, "sgd")
    totals = archprof.analyze(model, input_size=(3, 8, 8), batch=2, dtype=dtype, training=True).totals
    assert totals.training_peak_bytes == real.peak_bytes


LOGIT_LOSSES = {
    "plain": lambda m, z: F.binary_cross_entropy_with_logits(z, m.soft),
    "pos_weight": lambda m, z: F.binary_cross_entropy_with_logits(z, m.soft, pos_weight=m.pos_weight),
    "pos_weight and weight": lambda m, z: F.binary_cross_entropy_with_logits(
        z, m.soft, weight=m.soft, pos_weight=m.pos_weight, reduction="sum"
    ),
    "per element": lambda m, z: F.binary_cross_entropy_with_logits(
        z, m.soft, pos_weight=m.pos_weight, reduction="none"
    ),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_the_gradient_of_a_binary_cross_entropy_of_logits_is_made_in_place(name, dtype):
    """The oracle: a real CPU training step (SGD) under torch.profiler. Its gradient formula
    (FunctionsManual.cpp) works in place where grad mode is off, as it is in a backward pass,
    and no tensor looks like a subclass: with pos_weight, `t = pos_weight * y`, then
    `t.add(1).sub_(y).mul_(x.sigmoid()).sub_(t).mul_(grad)` (and `.mul_(weight)`): three maps
    at once, not seven; without it, `x.sigmoid().sub_(y).mul_(grad)`. Under a dispatch mode
    every tensor looks like a subclass, and the trace took the formula's out-of-place road:
    the peak was 8,048 B over in float32 with pos_weight, 10,096 B with a weight too."""
    model, x = LossOfAMap(LOGIT_LOSSES[name]).to(dtype), torch.randn(2, 3, 8, 8, dtype=dtype)
    real = real_optimizer_step(model, x, "sgd")
    totals = archprof.analyze(model, input_size=(3, 8, 8), batch=2, dtype=dtype, training=True).totals
    assert totals.training_peak_bytes == real.peak_bytes
