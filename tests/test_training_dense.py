"""Training dense-prediction networks: segmentation and detection losses, against a real CPU
step (torch.profiler for the peaks, FlopCounterMode for the FLOPs)."""

from functools import partial
from math import prod

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import archprof
from archprof.passes.flops import op_cost
from archprof.tracing.trace import trace
from tests.test_training import counted_training_flops
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


COLUMN_OPS = {
    "fold": lambda m, z: F.fold(F.unfold(z, 3), (8, 8), 3),
    "unfold": lambda m, z: F.unfold(z, 3),
    "nn.Fold": lambda m, z: nn.Fold((8, 8), 3, padding=1)(nn.Unfold(3, padding=1)(z)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", COLUMN_OPS)
def test_col2im_keeps_the_storage_of_its_columns(name, dtype):
    """The oracle: a real CPU training step (SGD) under torch.profiler. col2im (F.fold, and
    F.unfold's gradient) makes its output `empty_like` its columns, then resizes it to the
    image, which keeps the larger storage: a 2 x 4 x 8 x 8 fold of 2 x 36 x 36 columns (3 x 3
    windows, no padding) holds 2 x 36 x 36 elements, 2 x 36 x 64 with padding. Sized by its
    shape, fold's peak was 16,640 B short in float32 (both its forward's and its gradient's
    col2im), unfold's 6,272."""
    model, x = LossOfAMap(COLUMN_OPS[name]).to(dtype), torch.randn(2, 3, 8, 8, dtype=dtype)
    columns = torch.randn(2, 36, 36, dtype=dtype)
    folded = F.fold(columns, (8, 8), 3)
    assert folded.untyped_storage().nbytes() == columns.nbytes  # the oracle's premise
    real = real_optimizer_step(model, x, "sgd")
    totals = archprof.analyze(model, input_size=(3, 8, 8), batch=2, dtype=dtype, training=True).totals
    assert totals.training_peak_bytes == real.peak_bytes


ONE_STATEMENT_GRADIENTS = {
    "atan2": lambda m, z: torch.atan2(z, z.flip(1)),
    "cdist": lambda m, z: torch.cdist(z.flatten(2).transpose(1, 2), z.flatten(2).transpose(1, 2)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ONE_STATEMENT_GRADIENTS)
def test_a_gradient_formula_returning_both_gradients_holds_its_temporaries_to_its_end(name, dtype):
    """The oracle: a real CPU training step (SGD) under torch.profiler. atan2's gradient
    (FunctionsManual.cpp, `return {grad * other * recip, grad * -self * recip}`) and cdist's
    (_euclidean_dist_backward: `x1 * ratio.sum(-1, true) - ratio.matmul(x2)`, then x2's) make
    both gradients in one C++ statement, which holds the first one's temporaries (`grad *
    other`; the product, the sums and the matmul) until the second is made. Freed at the end
    of the first gradient, the peak read a map short (2,048 B in float32 for atan2, 5,120 for
    cdist)."""
    model, x = LossOfAMap(ONE_STATEMENT_GRADIENTS[name]).to(dtype), torch.randn(2, 3, 8, 8, dtype=dtype)
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


class SpatialTransformer(nn.Module):
    """A map resampled at an affine grid a linear layer predicts (F.affine_grid, then
    F.grid_sample): both the map and the grid need a gradient; `sample_the_input`, the
    network's input is sampled (no gradient for it), the map only predicts the grid."""

    def __init__(self, dims: int = 2, sample_the_input: bool = False, **sampling):
        super().__init__()
        convolution = nn.Conv2d if dims == 2 else nn.Conv3d
        self.conv, self.locate = convolution(3, 4, 3, padding=1), nn.Linear(4, dims * (dims + 1))
        self.dims, self.sample_the_input = dims, sample_the_input
        self.sampling = {"align_corners": False, **sampling}

    def forward(self, x):
        features = self.conv(x)
        theta = self.locate(features.mean(dim=tuple(range(2, 2 + self.dims)))).view(-1, self.dims, self.dims + 1)
        sampled = x if self.sample_the_input else features
        grid = F.affine_grid(theta, list(sampled.shape), align_corners=self.sampling["align_corners"])
        return F.grid_sample(sampled, grid, **self.sampling)


# (the transformer's arguments, input size, FLOPs per output-gradient element: the input's
# gradient's, the grid's): T taps, d coordinates
SAMPLERS = {
    "bilinear, zeros": ({}, (3, 6, 6), 2 * 4, 2 * (2 * 4 + 1)),
    "bilinear, border, aligned corners": (
        {"padding_mode": "border", "align_corners": True},
        (3, 6, 6),
        2 * 4,
        2 * (2 * 4 + 1),
    ),
    "nearest, reflection": ({"mode": "nearest", "padding_mode": "reflection"}, (3, 6, 6), 1, 0),
    "bicubic": ({"mode": "bicubic"}, (3, 6, 6), 2 * 16, 2 * (2 * 16 + 1)),
    "trilinear (3-d)": ({"dims": 3}, (3, 4, 4, 4), 2 * 8, 3 * (2 * 8 + 1)),
    "the input sampled": ({"sample_the_input": True}, (3, 6, 6), 0, 2 * (2 * 4 + 1)),
}


@pytest.mark.parametrize("name", SAMPLERS)
def test_a_spatial_transformers_gradients_are_counted(name):
    """grid_sample's gradient, by hand (docs/formulas.md): each output gradient times each of
    its T taps' weights added into the input's gradient, 2T per output-gradient element (a
    nearest sample adds it into the one input it read, 1); per coordinate of the grid, each
    tap's value times its weight's derivative accumulated (2T) and times the output gradient
    (1), then the coordinate's gradient scaled back from pixels once per grid element (1); a
    nearest sample's grid gets no gradient. Batch 2: the output gradient has as many elements as
    the output. FlopCounterMode counts the grid's gradient (the batched product affine_grid's
    backward decomposes into), not affine_grid itself: its N x H x W x (d + 1) x d MACs by
    hand; the rest against it. The peak against a real CPU step. Before, grid_sample's
    gradient was not counted."""
    arguments, shape, per_input_gradient, per_grid_gradient = SAMPLERS[name]
    model = SpatialTransformer(**arguments)
    dims = len(shape) - 1
    graph = trace(model, [(2, *shape)], training=True)
    sampled = [op for op in graph.backward_ops if op.op == f"aten.grid_sampler_{dims}d_backward"]
    assert len(sampled) == 1
    channels = shape[0] if model.sample_the_input else 4  # the sampled map's
    outputs, grid_elements = 2 * channels * prod(shape[1:]), 2 * prod(shape[1:]) * dims
    expected = outputs * (per_input_gradient + per_grid_gradient) + (grid_elements if per_grid_gradient else 0)
    assert op_cost(sampled[0]).elementwise_flops == expected
    report = archprof.analyze(model, input_size=shape, batch=2, training=True)
    assert report.totals.not_counted == {}
    affine_grid_macs = 2 * prod(shape[1:]) * (dims + 1) * dims
    counted = counted_training_flops(model, torch.randn(2, *shape)).get_total_flops()
    assert report.totals.training_flops == counted + 2 * affine_grid_macs
    real = real_optimizer_step(model, torch.randn(2, *shape), "sgd")
    assert report.totals.training_peak_bytes == real.peak_bytes


class Resampled(nn.Module):
    """A 1x1 convolution (2 -> 3 channels), its map resampled by F.interpolate, then scaled."""

    def __init__(self, dims: int, **interpolation):
        super().__init__()
        self.conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1](2, 3, 1)
        self.interpolation = interpolation

    def forward(self, x):
        return F.interpolate(self.conv(x), **self.interpolation) * 1.5


# (dims, F.interpolate's arguments, the gradient's FLOPs per output-gradient element: T taps
# each times its weight and added in, 2T; nearest adds each into the one input it read, 1)
RESAMPLINGS = {
    "nearest, scale": (2, {"scale_factor": 2, "mode": "nearest"}, 1),
    "nearest, size": (2, {"size": (7, 9), "mode": "nearest"}, 1),
    "nearest-exact 1-d": (1, {"scale_factor": 3, "mode": "nearest-exact"}, 1),
    "nearest-exact 2-d": (2, {"size": (7, 9), "mode": "nearest-exact"}, 1),
    "nearest-exact 3-d": (3, {"size": (3, 5, 7), "mode": "nearest-exact"}, 1),
    "linear": (1, {"scale_factor": 2, "mode": "linear"}, 2 * 2),
    "bilinear, aligned corners": (2, {"scale_factor": 2, "mode": "bilinear", "align_corners": True}, 2 * 4),
    "bilinear, size": (2, {"size": (7, 9), "mode": "bilinear"}, 2 * 4),
    "bilinear, down": (2, {"size": (3, 2), "mode": "bilinear"}, 2 * 4),
    "bicubic": (2, {"scale_factor": 2, "mode": "bicubic"}, 2 * 16),
    "bicubic, aligned corners, size": (2, {"size": (7, 9), "mode": "bicubic", "align_corners": True}, 2 * 16),
    "trilinear": (3, {"scale_factor": 2, "mode": "trilinear"}, 2 * 8),
}


@pytest.mark.parametrize("name", RESAMPLINGS)
def test_interpolations_train_with_every_gradient_counted(name):
    """The gradient of F.interpolate by hand (docs/formulas.md), the MACs against
    FlopCounterMode, the peak against a real CPU step (SGD). nearest-exact's gradient was not
    counted."""
    dims, interpolation, per_element = RESAMPLINGS[name]
    shape = (2, *(5, 4, 3)[:dims])
    model = Resampled(dims, **interpolation)
    report = archprof.analyze(model, input_size=shape, batch=2, training=True)
    assert report.totals.not_counted == {}
    resampled = [op for op in report.graph.backward_ops if "upsample" in op.op]
    assert len(resampled) == 1
    assert op_cost(resampled[0]).elementwise_flops == per_element * resampled[0].inputs[0].numel
    x = torch.randn(2, *shape)
    assert report.totals.training_flops == counted_training_flops(model, x).get_total_flops()
    assert report.totals.training_peak_bytes == real_optimizer_step(model, x, "sgd").peak_bytes


# --- whole networks against a real step ----------------------------------------------------


class VideoBlock(nn.Module):
    """r3d's basic block: two 3x3x3 convolutions with BatchNorm3d, an identity shortcut."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv3d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm3d(channels)
        self.conv2, self.bn2 = nn.Conv3d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm3d(channels)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class MiniR3D(nn.Module):
    """A two-block r3d: a (3, 5, 5) stem strided in space, a 3-D max or average pool, the
    blocks, a global 3-D average pool and a linear head."""

    def __init__(self, pool: type[nn.Module] = nn.MaxPool3d):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(3, 8, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2), bias=False),
            nn.BatchNorm3d(8),
            nn.ReLU(inplace=True),
        )
        self.pool, self.blocks, self.head = pool(2), nn.Sequential(VideoBlock(8), VideoBlock(8)), nn.Linear(8, 5)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool3d(self.blocks(self.pool(self.stem(x))), 1).flatten(1))


class Pools3d(nn.Module):
    """3-D pools as video nets vary them: ceil mode, padding left out of an average, an
    adaptive max, a divisor of its own."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv3d(2, 4, 3, padding=1), nn.BatchNorm3d(4)

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)))
        return (
            F.max_pool3d(y, 3, stride=2, padding=1, ceil_mode=True).sum()
            + F.avg_pool3d(y, 2, stride=2, ceil_mode=True, count_include_pad=False).sum()
            + F.adaptive_max_pool3d(y, (1, 2, 2)).sum()
            + F.avg_pool3d(y, (1, 3, 3), stride=1, padding=(0, 1, 1), divisor_override=5).mean()
        )


class Decoder(nn.Module):
    """A strided convolution down, then up again with transposed convolutions (stride,
    output_padding, dilation as given), `dims` 1, 2 or 3."""

    def __init__(self, dims: int, stride: int = 2, output_padding: int = 1, dilation: int = 1):
        super().__init__()
        convolution = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
        transposed = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[dims - 1]
        self.down = convolution(3, 4, 3, stride=2, padding=1)
        self.up = transposed(4, 6, 3, stride, padding=1, output_padding=output_padding, dilation=dilation)
        self.out = transposed(6, 2, 2, stride=2)

    def forward(self, x):
        return self.out(F.relu(self.up(F.relu(self.down(x)))))


class AtrousPyramid(nn.Module):
    """DeepLab's ASPP: a 1x1 branch, dilated 3x3 branches and a global-pool branch upsampled
    back, concatenated and projected, then the logits upsampled x2."""

    def __init__(self, channels: int = 4, width: int = 6, rates: tuple[int, ...] = (2, 3)):
        super().__init__()

        def branch(kernel: int, rate: int = 1) -> nn.Sequential:
            padding = rate * (kernel // 2)
            conv = nn.Conv2d(channels, width, kernel, padding=padding, dilation=rate, bias=False)
            return nn.Sequential(conv, nn.BatchNorm2d(width), nn.ReLU())

        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.branches = nn.ModuleList([branch(1), *(branch(3, rate) for rate in rates)])
        self.pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), branch(1))
        self.project = nn.Sequential(nn.Conv2d(width * (len(rates) + 2), width, 1, bias=False), nn.BatchNorm2d(width))
        self.classify = nn.Conv2d(width, 3, 1)

    def forward(self, x):
        x = self.stem(x)
        pooled = F.interpolate(self.pooled(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        y = self.classify(F.relu(self.project(torch.cat([*(b(x) for b in self.branches), pooled], 1))))
        return F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)


class SubPixel(nn.Module):
    """ESPCN-style: a convolution to 4x the channels, pixel_shuffle, pixel_unshuffle back."""

    def __init__(self):
        super().__init__()
        self.conv, self.out = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        return self.out(F.pixel_unshuffle(F.pixel_shuffle(self.conv(x), 2), 2)[:, :2])


class CheckpointedDecoder(nn.Module):
    """An encoder, a decoder block (transposed convolution, batch norm) under
    torch.utils.checkpoint, the input concatenated back as a skip."""

    def __init__(self, reentrant: bool | None):
        super().__init__()
        self.encode = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.decode = nn.Sequential(
            nn.ConvTranspose2d(8, 4, 2, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)
        )
        self.out, self.reentrant = nn.Conv2d(7, 2, 1), reentrant

    def forward(self, x):
        encoded = self.encode(x)
        if self.reentrant is None:
            decoded = self.decode(encoded)
        else:
            decoded = checkpoint(self.decode, encoded, use_reentrant=self.reentrant)
        return self.out(torch.cat([decoded, x], 1))


class AuxiliaryHead(nn.Module):
    """A segmentation net whose loss adds an auxiliary head's, weighted 0.4 (PSPNet's)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1))
        self.aux = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
        self.head = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 1))
        self.register_buffer("target", torch.randint(0, 4, (2, 8, 8), generator=torch.Generator().manual_seed(2)))

    def forward(self, x):
        features = F.relu(self.body(x))

        def logits(head):
            return F.interpolate(head(features), size=x.shape[-2:], mode="bilinear", align_corners=False)

        return F.cross_entropy(logits(self.head), self.target) + 0.4 * F.cross_entropy(logits(self.aux), self.target)


def dice_loss(m, z):
    probabilities = z.softmax(1)
    one_hot = F.one_hot(m.target.clamp(max=z.shape[1] - 1), z.shape[1]).permute(0, 3, 1, 2).to(z.dtype)
    overlap = (probabilities * one_hot).sum((2, 3))
    return 1 - ((2 * overlap + 1) / (probabilities.sum((2, 3)) + one_hot.sum((2, 3)) + 1)).mean()


def focal_loss(m, z, gamma: float = 2.0):
    log_p = F.log_softmax(z, 1).gather(1, m.target.clamp(max=z.shape[1] - 1).unsqueeze(1)).squeeze(1)
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()


def sigmoid_focal_loss(m, z, gamma: float = 2.0, alpha: float = 0.25):
    p = torch.sigmoid(z)
    cross_entropy = F.binary_cross_entropy_with_logits(z, m.soft, reduction="none")
    p_t = p * m.soft + (1 - p) * (1 - m.soft)
    return ((alpha * m.soft + (1 - alpha) * (1 - m.soft)) * cross_entropy * (1 - p_t) ** gamma).mean()


LOSSES = {
    "cross_entropy, ignore_index, weights": lambda m, z: F.cross_entropy(z, m.target, m.weight, ignore_index=255),
    "cross_entropy, label smoothing, summed": lambda m, z: F.cross_entropy(
        z, m.target.clamp(max=3), reduction="sum", label_smoothing=0.1
    ),
    "cross_entropy, all three": lambda m, z: F.cross_entropy(
        z, m.target, m.weight, ignore_index=255, label_smoothing=0.1
    ),
    "cross_entropy, soft targets": lambda m, z: F.cross_entropy(z, m.soft),
    "dice": dice_loss,
    "focal": focal_loss,
    "sigmoid focal": sigmoid_focal_loss,
    "huber": lambda m, z: F.huber_loss(z, m.soft),
}


NETWORKS = {
    "r3d, max pool": (MiniR3D, (3, 4, 8, 8)),
    "r3d, average pool": (lambda: MiniR3D(nn.AvgPool3d), (3, 4, 8, 8)),
    "3-d pools": (Pools3d, (2, 4, 7, 7)),
    "transposed 1-d": (lambda: Decoder(1), (3, 16)),
    "transposed 2-d, dilated": (lambda: Decoder(2, dilation=2), (3, 8, 8)),
    "transposed 3-d, stride 3": (lambda: Decoder(3, stride=3, output_padding=2), (3, 4, 6, 6)),
    "atrous pyramid": (AtrousPyramid, (3, 8, 8)),
    "pixel shuffle": (SubPixel, (3, 6, 6)),
    "decoder": (lambda: CheckpointedDecoder(None), (3, 8, 8)),
    "decoder checkpointed": (lambda: CheckpointedDecoder(False), (3, 8, 8)),
    "decoder checkpointed, reentrant": (lambda: CheckpointedDecoder(True), (3, 8, 8)),
    "auxiliary head": (AuxiliaryHead, (3, 8, 8)),
    **{f"loss: {name}": (partial(LossOfAMap, loss), (3, 8, 8)) for name, loss in LOSSES.items()},
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", NETWORKS)
def test_a_dense_prediction_network_trains_as_a_real_cpu_step(name, dtype):
    """The step's FLOPs against FlopCounterMode around a real CPU forward and backward (the
    convolutions', transposed ones' and products' MACs, all it counts); the step's peak
    against a real CPU step (SGD) under torch.profiler, to the byte; every operator counted."""
    build, shape = NETWORKS[name]
    torch.manual_seed(0)
    model, x = build().to(dtype), torch.randn(2, *shape, dtype=dtype)
    totals = archprof.analyze(model, input_size=shape, batch=2, dtype=dtype, training=True).totals
    assert totals.not_counted == {}
    assert totals.training_flops == counted_training_flops(model, x).get_total_flops()
    assert totals.training_peak_bytes == real_optimizer_step(model, x, "sgd").peak_bytes


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_a_grouped_transposed_convolution_costs_its_groups_apart(dims):
    """FlopCounterMode (torch 2.13) counts a grouped convolution's weight gradient as dense
    (G times too much); the same layer written as G transposed convolutions, one per group
    of channels, is its oracle. Stride 2, padding 1, output_padding 1, dilation 2."""
    transposed = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[dims - 1]
    layout = {"stride": 2, "padding": 1, "output_padding": 1, "dilation": 2}
    grouped = transposed(8, 6, 3, groups=2, **layout)
    groups = nn.ModuleList(transposed(4, 3, 3, **layout) for _ in range(2))

    class Split(nn.Module):
        def forward(self, x):
            return torch.cat([conv(part) for conv, part in zip(groups, x.chunk(2, dim=1), strict=True)], dim=1)

    shape = (8, *(5, 4, 3)[:dims])
    x = torch.randn(2, *shape, requires_grad=True)  # its gradient computed, as after a layer
    expected = counted_training_flops(Split(), x).get_flop_counts()["Global"]
    stem = nn.Sequential((nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1](8, 8, 1), grouped)
    report = archprof.analyze(stem, input_size=shape, batch=2, training=True)
    row = report.columns["layer"].index("1")
    assert 2 * report.columns["macs"][row] == expected[torch.ops.aten.convolution]
    backward = report.columns["backward_input_macs"][row] + report.columns["backward_weight_macs"][row]
    assert 2 * backward == expected[torch.ops.aten.convolution_backward]
    real = real_optimizer_step(stem, torch.randn(2, *shape), "sgd")
    assert report.totals.training_peak_bytes == real.peak_bytes
