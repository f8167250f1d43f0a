"""Tiny models for the tests: each exercises one thing the engine must get right."""

import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class Calls(nn.Module):
    """A model whose forward is one call (a lambda): the operators of that call alone."""

    def __init__(self, call: Callable) -> None:
        super().__init__()
        self.call = call

    def forward(self, x):
        return self.call(x)


class SplitBlock(nn.Module):
    """ShuffleNet-V2's block: half the channels pass as they are, half go through a branch,
    concatenated: its own operations are two rows, around its branch's."""

    def __init__(self) -> None:
        super().__init__()
        self.branch = nn.Conv2d(2, 2, 5, padding=2)

    def forward(self, x):
        kept, changed = x.chunk(2, dim=1)
        return torch.cat([kept, self.branch(changed)], 1)


class ShuffledHalves(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.block = nn.Conv2d(1, 4, 3, padding=1), SplitBlock()

    def forward(self, x):
        return self.block(self.stem(x))


class OwnOpsBeforeAPool(nn.Module):
    """As timm NesT's ConvPool: a convolution, the block's own permutes (its channels-last
    norm), then a pooling child, whose output (half the size) the block returns."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool = nn.Conv2d(1, 4, 3, padding=1), nn.AvgPool2d(2)

    def forward(self, x):
        return self.pool(self.conv(x).permute(0, 2, 3, 1).permute(0, 3, 1, 2))


class PooledBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block, self.head = OwnOpsBeforeAPool(), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.block(x))


class FunctionalOps(nn.Module):
    """Functional calls no hook-based counter sees: F.relu, a residual +, torch.cat,
    torch.flatten and @."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.weight = nn.Parameter(torch.randn(8 * 4 * 4, 5))

    def forward(self, x):
        y = F.relu(self.conv(x))
        y = y + self.conv(x)  # second call of the same module
        y = torch.cat([y, y], dim=1)
        y = F.max_pool2d(y, 2)
        return torch.flatten(y, 1) @ self.weight


class Residual(nn.Module):
    def __init__(self, channels=4):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        out = self.relu(self.bn(self.conv1(x)))
        out = self.conv2(out)
        out += x
        return self.relu(out)


def stages(blocks: int, norm: bool, classes: int) -> nn.Sequential:
    """A stem, a stage of `blocks` Residual blocks, a stage of a convolution (a BatchNorm
    after it where `norm`) and a ReLU, and a head of `classes` classes: two of these differ
    in every way a diff lists, a block removed, a layer added, a layer changed."""
    stage2 = OrderedDict(conv=nn.Conv2d(4, 8, 3, padding=1))
    if norm:
        stage2["bn"] = nn.BatchNorm2d(8)
    stage2["act"] = nn.ReLU()
    head = OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(8, classes))
    parts = OrderedDict(stem=nn.Conv2d(3, 4, 3, padding=1), stage1=nn.Sequential(*(Residual(4) for _ in range(blocks))))
    parts.update(stage2=nn.Sequential(stage2), head=nn.Sequential(head))
    return nn.Sequential(parts)


# An operator archprof will never have a formula for: archprof_tests::uncosted, a copy.
_UNCOSTED_LIBRARIES: list[torch.library.Library] = []  # defined once per process, kept alive


def uncosted(x: torch.Tensor) -> torch.Tensor:
    if not _UNCOSTED_LIBRARIES:
        library = torch.library.Library("archprof_tests", "DEF")
        library.define("uncosted(Tensor x) -> Tensor")
        library.impl("uncosted", torch.clone, "CompositeExplicitAutograd")
        _UNCOSTED_LIBRARIES.append(library)
    return torch.ops.archprof_tests.uncosted(x)


class Uncounted(nn.Module):
    """Uses an operator archprof has no formula for (`uncosted`)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        return uncosted(self.fc(x).unflatten(-1, (2, 3))[..., :2])


# A custom operator's library namespace may be any text the dispatcher's name parser refuses:
# a spreadsheet formula, a space, an ANSI escape, Rich markup.
HOSTILE_NAMESPACE = "=cmd|' /C calc'!A0 \x1b[31m[bold]x"
_CUSTOM_LIBRARIES: dict[str, torch.library.Library] = {}  # defined once per process, kept alive


def custom_operator(namespace: str, name: str = "f"):
    """Operator `name` ("f" or "g", each a copy) of a library `namespace` (any text the
    dispatcher takes: a space, "; ", quotes, a line break), which archprof has no formula for."""
    if namespace not in _CUSTOM_LIBRARIES:
        library = torch.library.Library(namespace, "DEF")
        for defined in ("f", "g"):
            library.define(f"{defined}(Tensor x) -> Tensor")
            # Not "Meta": torch.library.Library.impl parses the name for that key and refuses it.
            library.impl(defined, torch.clone, "CompositeExplicitAutograd")
        _CUSTOM_LIBRARIES[namespace] = library
    return getattr(getattr(torch.ops, namespace), name)


class HostileNamespace(nn.Module):
    """A convolution, then HOSTILE_NAMESPACE's operator f (a copy), which archprof has no formula for."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.f = custom_operator(HOSTILE_NAMESPACE)

    def forward(self, x):
        return self.f(self.conv(x))


class CustomOperatorCalls(nn.Module):
    """One child module per custom operator (namespace, name), in order, each calling its
    operator (`custom_operator`) on what the one before returned."""

    def __init__(self, operators: list[tuple[str, str]]):
        super().__init__()
        self.calls = nn.Sequential(*(Calls(custom_operator(*operator)) for operator in operators))

    def forward(self, x):
        return self.calls(x)


class WithUnusedHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.aux = nn.Linear(4, 2)  # never called in forward

    def forward(self, x):
        return self.body(x)


class LinearOnTransposed(nn.Module):
    """A linear layer on a non-contiguous batch of sequences (a (B, L, E) map seen as (L, B, E)):
    on the CPU, PyTorch's mm of a copy, then an add_ of the bias."""

    def __init__(self, features: int = 64, out_features: int = 48) -> None:
        super().__init__()
        self.fc = nn.Linear(features, out_features)

    def forward(self, x):
        return self.fc(x.transpose(0, 1))


class Checkpointed(nn.Module):
    """A convolution block run under activation checkpointing (non-reentrant): the backward
    runs its forward again."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(checkpoint(self.block, self.stem(x), use_reentrant=False))


class CheckpointedBlocks(nn.Module):
    """Convolution blocks (conv, [batch norm], ReLU, conv, [ReLU]) each run under activation
    checkpointing: the backward runs each block's forward again, non-reentrant (saved-tensor
    hooks replay it as far as its last saved tensor when a node first unpacks one) or
    reentrant (the block's node replays it whole and runs a backward pass of its own), keeping
    the CPU's random-number state to replay each with, or not (`preserve_rng_state`). With
    `relu_first`, a block starts with a ReLU, which saves its result, not the block's input."""

    def __init__(
        self,
        blocks=1,
        reentrant=False,
        batch_norm=False,
        ends_in_relu=True,
        preserve_rng_state=True,
        relu_first=False,
    ) -> None:
        super().__init__()
        self.preserve_rng_state = preserve_rng_state
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.ModuleList(self._block(batch_norm, ends_in_relu, relu_first) for _ in range(blocks))
        self.head = nn.Linear(16, 10)
        self.reentrant = reentrant

    @staticmethod
    def _block(batch_norm: bool, ends_in_relu: bool, relu_first: bool) -> nn.Sequential:
        first = [nn.ReLU()] if relu_first else []
        norm = [nn.BatchNorm2d(16)] if batch_norm else []
        last = [nn.ReLU()] if ends_in_relu else []
        layers = [*first, nn.Conv2d(16, 16, 3, padding=1), *norm, nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), *last]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=self.reentrant, preserve_rng_state=self.preserve_rng_state)
        return self.head(x.mean((2, 3)))


class SkipsHeldInLocals(nn.Module):
    """A small U-Net: each level's output kept in a local variable for the way up, where the
    forward holds it until it returns, long after its last reader (the concatenation)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.down1, self.down2 = nn.Conv2d(3, width, 3, padding=1), nn.Conv2d(width, 2 * width, 3, padding=1)
        self.middle = nn.Conv2d(2 * width, 2 * width, 3, padding=2, dilation=2)
        self.up2 = nn.ConvTranspose2d(2 * width, 2 * width, 2, stride=2)
        self.merge2 = nn.Conv2d(4 * width, width, 3, padding=1)
        self.up1 = nn.Upsample(scale_factor=2, mode="bilinear")
        self.merge1 = nn.Conv2d(2 * width, width, 3, padding=1)
        self.head = nn.Conv2d(width, 2, 1)

    def forward(self, x):
        a = torch.relu(self.down1(x))
        b = torch.relu(self.down2(nn.functional.max_pool2d(a, 2)))
        m = self.middle(nn.functional.avg_pool2d(b, 2))
        y = self.merge2(torch.cat([self.up2(m), b], 1))
        y = self.merge1(torch.cat([self.up1(y), a], 1))
        return self.head(y)


class UpdatesHeldInLocals(nn.Module):
    """Three streams, each updated by an MLP, every update computed before any is added (as
    CoaT's parallel blocks do): the forward holds each update in its list until it returns,
    though its last reader, an add, saves nothing for the backward pass."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(3))
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)) for _ in range(3)
        )

    def forward(self, x):
        streams = [norm(x) for norm in self.norms]
        updates = [mlp(stream) for mlp, stream in zip(self.mlps, streams, strict=True)]
        return [stream + update for stream, update in zip(streams, updates, strict=True)]


class ConvOfAChannelsLastMap(nn.Module):
    """A layer norm over the channels, moved last and back (as ConvFormer's downsamplers do),
    before a convolution: its input is laid out channels last, and so is its weight's
    gradient, which AccumulateGrad then copies into the weight's own layout."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(64)
        self.conv = nn.Conv2d(64, 128, 3, stride=2)

    def forward(self, x):
        return self.conv(self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


class ConvAfterAChannelsLastConv(nn.Module):
    """GCViT's downsampler: a layer norm over the channels, moved last and back, then a
    depthwise convolution, GELU and a strided convolution. A CPU writes the depthwise
    convolution's output channels last, as its input is, so the strided convolution's input
    and its weight's gradient are channels last too (AccumulateGrad copies that gradient
    into the weight's own layout); the meta kernel would write it contiguous."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(32)
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.act = nn.GELU()
        self.reduction = nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False)

    def forward(self, x):
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.reduction(self.act(self.depthwise(x)))


class GroupNormAfterAChannelsLastNorm(nn.Module):
    """PoolFormerV2's stem and first mixer: a layer norm over the channels, moved last and
    back (a channels-last map), a group norm of one group, a pooling subtracted, added back.
    A CPU's group norm keeps the channels-last input as it is and saves it for the backward;
    on meta the composite would copy it contiguous first, a copy the step would keep."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.norm = nn.LayerNorm(16)
        self.group_norm = nn.GroupNorm(1, 16)
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)

    def forward(self, x):
        x = self.norm(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        y = self.group_norm(x)
        return x + self.pool(y) - y


class NormedTokensPooledAsAMap(nn.Module):
    """PVT-v2's last stage: tokens (B, H W, C) embedded, through a residual MLP and a layer norm, laid
    back out as a (B, C, H, W) map, then averaged over space. The mean's gradient reaches the
    layer norm through the permutation, not contiguous: a CPU's layer-norm gradient is
    contiguous whatever it reads, so the MLP's last layer takes it as a matrix for free; the
    meta kernel's follows the permutation, and that would be copied, held while the product
    that reads it makes the hidden layer's gradient and the shortcut holds the original."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(channels, channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))
        self.norm = nn.LayerNorm(channels)

    def forward(self, x):
        batch, tokens, channels = x.shape
        side = int(tokens**0.5)
        x = self.embed(x)
        x = self.norm(x + self.mlp(x)).reshape(batch, side, side, channels).permute(0, 3, 1, 2).contiguous()
        return x.mean((2, 3))


class PaddedChannelsLastMap(nn.Module):
    """A channels-last map (a layer norm over the channels, moved last and back), reflection
    padded, then convolved. A CPU pads it into a channels-last map, so the convolution's
    output and its weight's gradient are channels last too (AccumulateGrad copies that
    gradient into the weight's own layout); the meta kernel would pad it contiguous."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(16)
        self.conv = nn.Conv2d(16, 32, 3)

    def forward(self, x):
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.conv(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"))


class TransposedTokensBatchNormed(nn.Module):
    """Tokens (B, L, C) normalised by a BatchNorm1d over their channels, transposed to
    (B, C, L) and back, then a linear layer. A CPU's batch norm writes its output
    contiguous, so the tokens come back transposed and the linear layer copies them into a
    matrix; the meta kernel keeps the transposed layout, which would make the copy free."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(channels)
        self.fc = nn.Linear(channels, channels)

    def forward(self, x):
        return self.fc(self.norm(x.transpose(1, 2)).transpose(1, 2))


class SliceAssignedBeforeSoftmax(nn.Module):
    """MViTv2's relative positions: attention scores written in place into a slice of
    themselves (`attn[:, 1:, 1:] = ...`), then a softmax. The write makes the scores' node a
    CopySlices, which runs the write's gradient after the softmax's."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(16, 16)
        self.bias = nn.Parameter(torch.zeros(32, 32))

    def forward(self, x):  # x: (N, 33, 16)
        q = self.q(x)
        attn = q @ q.transpose(-2, -1)
        attn[:, 1:, 1:] = attn[:, 1:, 1:] + self.bias
        return attn.softmax(dim=-1) @ q


class ReadsItsValues(nn.Module):
    """A forward that reads a value (`.item()`), which no meta tensor has: archprof traces
    it on the CPU instead."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.a(x))
        return self.b(y) if y.mean().item() > -1e9 else y


class PartialShortcut(nn.Module):
    """A block that adds its input to its first channels only and passes the rest through (as
    RexNet's blocks do: `cat([y[:, :c] + x, y[:, c:]])`). The shortcut's gradient reaches the
    input first, as a channel slice of the block's output gradient: not dense, so the autograd
    engine allocates its sum with the convolution's gradient instead of adding in place. The
    wide first layer puts the step's peak where that sum is held."""

    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Conv2d(3, 64, 3, padding=1)
        self.stem = nn.Conv2d(64, 8, 1)
        self.expand = nn.Conv2d(8, 12, 3, padding=1)
        self.head = nn.Conv2d(12, 4, 1)

    def forward(self, x):
        x = self.stem(self.wide(x))
        y = self.expand(x)
        return self.head(torch.cat([y[:, :8] + x, y[:, 8:]], dim=1))


class ScaledByNumbers(nn.Module):
    """Activations and a gain scaled by Python numbers, as NFNet's layers are (`gain * scale`,
    `act(x).mul_(gamma)`, `out * alpha`): each number that multiplies or divides a tensor
    requiring grad becomes a 0-dim tensor of its own (8 B) that the op's autograd node keeps
    until it has run in the backward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 8, 3, padding=1)
        self.gain = nn.Parameter(torch.ones(8, 1, 1))

    def forward(self, x):
        y = torch.relu((self.a(x) * 0.5 + 1).mul_(1.7))
        return self.b(y) / 3 * (self.gain * 2)


class ScaledMap(nn.Module):
    """A convolution's map times a Python number (NFNet's `out * alpha`): the inference peak
    is the product, beside the map and the 8-byte tensor the number becomes for the call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x) * 0.2


class NumbersFirst(nn.Module):
    """Python numbers in an operator's first place (`torch.sub(1.0, x)`, `torch.div(2.0, x)`):
    each a 0-dim tensor of its own for the call, as where it comes second, kept by the
    autograd node of a product or a quotient whose tensor requires grad."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return torch.add(1, torch.mul(0.5, y)) * torch.div(2.0, torch.sub(3.0, y))


class WrittenOut(nn.Module):
    """Results written into tensors the forward made (`out=`): one of the result's size, and
    empty ones that the call grows (resizing allocates anew)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        y = torch.mul(y, 2, out=torch.empty_like(y))
        joined = torch.cat([y, x], 1, out=x.new_empty(0))
        return torch.add(joined, 1, out=x.new_empty(0))


class TwoHeads(nn.Module):
    """Two outputs (a classifier and an auxiliary head, as GoogLeNet trains): the backward
    pass starts from a gradient of ones for each, both held by the caller to the end."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 64)

    def forward(self, x):
        y = self.fc(x)
        return y, torch.relu(y)


class TwoLosses(nn.Module):
    """Two scalar losses, as a model with a main and an auxiliary loss returns them."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 64)

    def forward(self, x):
        y = self.fc(x)
        return y.mean(), torch.sigmoid(y).sum()


class PickedByIndex(nn.Module):
    """Channels picked by index (`how`: index_select, advanced indexing, gather) or the
    values of max(dim), sort or cummax: each gradient formula fills a tensor of zeros in place
    on the CPU (`zeros.index_add_`, `scatter_`, `scatter_add_`), out of place under a dispatch
    mode."""

    PICKS: ClassVar[dict[str, Callable]] = {
        "index_select": lambda y, order: y.index_select(1, order),
        "indexing": lambda y, order: y[:, order],
        "gather": lambda y, order: y.gather(1, order.view(1, -1, 1, 1).expand(y.shape)),
        "max": lambda y, order: y.max(1, keepdim=True)[0] + y,
        "sort": lambda y, order: y.sort(1)[0],
        "cummax": lambda y, order: y.cummax(1)[0],
    }

    def __init__(self, how: str) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1)
        self.register_buffer("order", torch.tensor([1, 0, 3, 2, 5, 4, 7, 6]))
        self.pick = self.PICKS[how]

    def forward(self, x):
        return self.b(self.pick(self.a(x), self.order))


class TiedTransposed(nn.Module):
    """One weight used as itself (an encoder) and transposed (a tied decoder): its two
    gradients meet in the engine, the first to arrive a view (of a view of a product), which
    shares its base's storage, so the engine allocates their sum instead of adding in place."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(64, 128)

    def forward(self, x):
        return F.linear(torch.tanh(self.encoder(x)), self.encoder.weight.t())


class MixedByEinsum(nn.Module):
    """A convolution's map mixed across channels by an einsum (a lambda layer's content
    term): PyTorch runs the einsum as a permuted copy of the map and a batched product, the
    copy freed before the einsum returns: the einsum's workspace to the CPU allocator and to
    the trace, which notes the einsum as one CPU operator."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.mix = nn.Parameter(torch.ones(16, 24))

    def forward(self, x):
        return torch.einsum("bchw,cd->bdhw", self.conv(x), self.mix)


class DistancesByCdist(nn.Module):
    """The distances between a convolution's positions (2 x 8 16x16 maps as 256 points each):
    PyTorch runs cdist as a copy of each transposed operand, reshaped into batches, and the
    distances between them, the copies freed before cdist returns: cdist's workspace to the CPU
    allocator, operators of their own to the trace."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        points = self.conv(x).flatten(2).transpose(1, 2)
        return torch.cdist(points, points)


class ResponseNorm(nn.Module):
    """ConvNeXt-V2's global response normalisation after a convolution: the backward pass of
    its `addcmul` multiplies the gradient by the normalised map for the weight's gradient, a
    temporary of the map's size that it sums to one value per channel and frees at once,
    inside the one autograd node."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 4, 1)
        self.weight, self.bias = nn.Parameter(torch.zeros(1, 32, 1, 1)), nn.Parameter(torch.zeros(1, 32, 1, 1))

    def forward(self, x):
        x = self.conv(x)
        norms = x.norm(p=2, dim=(2, 3), keepdim=True)
        scaled = norms / (norms.mean(dim=1, keepdim=True) + 1e-6)
        return self.head(x + torch.addcmul(self.bias, self.weight, x * scaled))


class ThresholdedLinearUnit(nn.Module):
    """Filter response normalisation's TLU after a convolution, `maximum(x, tau)`: its backward
    computes `where(x == tau, grad / 2, grad).masked_fill_(x < tau, 0)` in one C++ statement,
    whose mask and quotient live until masked_fill_ has run, not only until `where` read them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 4, 1)
        self.tau = nn.Parameter(torch.zeros(1, 32, 1, 1))

    def forward(self, x):
        return self.head(torch.maximum(self.conv(x), self.tau))


class DividedByItsSum(nn.Module):
    """A map divided by its sum along a dimension, as EfficientViT's linear attention divides
    by its normaliser: the divisor's gradient, `-grad * ((y / s) / s)`, is one C++ statement,
    which holds both quotients and the negated gradient until their product is made."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        return self.head(y / (y.sum(dim=-1, keepdim=True) + 1.0))


class LargestMagnitudes(nn.Module):
    """Each map's largest magnitude, `linalg.vector_norm(y, inf, dim=(2, 3))`: its gradient
    names `self_abs` and `mask = self_abs.eq(norm).logical_or(self_abs.isnan())`, each read by
    two later operators, which live until the formula returns, while the two masks `mask` is
    made of are freed once it is made."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return torch.linalg.vector_norm(self.conv(x), float("inf"), dim=(2, 3))


class ClampedAroundItsMean(nn.Module):
    """A map clamped between two tensors, its channel mean less and plus 0.1: clamp's gradient
    combines its masks in place on a CPU (`self_ge_min.logical_and_(self_le_max)`), named locals
    held until the `where` that reads them has run; out of place under a dispatch mode. With
    `bounds_learn`, the bounds take gradients too, each of its own masks and `where`."""

    def __init__(self, bounds_learn: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bounds_learn = bounds_learn

    def forward(self, x):
        y = self.conv(x)
        mean = y.mean(1, keepdim=True)
        if not self.bounds_learn:
            mean = mean.detach()
        return y.clamp(mean - 0.1, mean + 0.1)


class RunningProduct(nn.Module):
    """A running product along the channels: its gradient, `cumprod_backward`, is a composite
    operator that a CPU step runs as one operator (its temporaries workspace inside it)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x).cumprod(1)


class IgnoredPool(nn.Module):
    """A max pool whose result nothing reads, as DLA's trees pass a pooled map to a block
    that ignores it: its autograd node dies with the result, and with it the indices it
    saved for a backward pass that never comes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        nn.functional.max_pool2d(y, 2)
        return self.head(y)


class IgnoredScaledMean(nn.Module):
    """A map's mean scaled by a Python number, let go of at once: the product's autograd node
    dies with it, and with it the 8-byte tensor it kept for the number."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        scaled = y.mean((2, 3), keepdim=True) * 0.5
        del scaled
        return self.head(y)


def dropout_in_place_on_a_view() -> nn.Module:
    """torchvision's EfficientNet head: an in-place dropout on the flattened pooled map (a view
    of it). Its backward (CopySlices) clones the gradient with the very ops AccumulateGrad
    copies a parameter's gradient with (new_empty_strided, copy_): no `.grad`, freed once used."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2, inplace=True),
        nn.Linear(32, 10),
    )


class ConcatenatedBias(nn.Module):
    """A projection whose bias is concatenated from parameters and a buffer of zeros (the query,
    key and value biases of Swin-V2's and BEiT's attention). The bias's gradient is split into
    slices of one tensor; AccumulateGrad takes each slice over as its parameter's `.grad`
    (nothing else holds that slice), which holds the whole tensor. The wide layers before it
    put the step's peak after those `.grad`s are made."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.wide = nn.Sequential(nn.Linear(width, 16 * width), nn.Linear(16 * width, width))
        self.weight = nn.Parameter(torch.randn(3 * width, width) / width)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(width)), nn.Parameter(torch.zeros(width))
        self.register_buffer("k_bias", torch.zeros(width), persistent=False)
        self.head = nn.Linear(3 * width, width)

    def forward(self, x):
        x = self.wide(x)
        bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))  # made after: its backward runs before theirs
        return self.head(torch.nn.functional.linear(x, self.weight, bias))


class UnusedAndGatedLayers(nn.Module):
    """A layer the forward never calls and a gate it calls only under no_grad: neither gets a
    `.grad`, so an optimizer keeps no state for them and updates neither."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(32, 64), nn.Linear(64, 8)
        self.unused, self.gate = nn.Linear(64, 64), nn.Linear(64, 64)

    def forward(self, x):
        y = torch.relu(self.body(x))
        with torch.no_grad():
            weight = torch.sigmoid(self.gate(y))
        return self.head(y * weight)


class WithAnIndexOutput(nn.Module):
    """Two outputs, the second an argmax (int64, no gradient): the caller holds both through
    the step."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y[:, 0].sum(), y.argmax(1)


class ReturnsAParameter(nn.Module):
    """A learnt scale returned beside the logits (CLIP's logit scale), as it is or as a view:
    the backward pass starts from a gradient of ones for it too, which goes straight to its
    AccumulateGrad (through the view's node, viewed)."""

    def __init__(self, viewed: bool = False) -> None:
        super().__init__()
        self.linear, self.scale = nn.Linear(32, 32), nn.Parameter(torch.randn(100_000))
        self.viewed = viewed

    def forward(self, x):
        return self.linear(x), self.scale.view(100, 1000) if self.viewed else self.scale


class SwishFunction(torch.autograd.Function):
    """timm's memory-efficient Swish (`activations_me.SwishAutoFn`): x * sigmoid(x), saving
    only x. Its Python backward is one expression: Python frees each unnamed temporary once
    the op after it has read it, and the local x_sigmoid when the function returns."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.mul(torch.sigmoid(x))

    @staticmethod
    def backward(ctx, grad_output):
        x = ctx.saved_tensors[0]
        x_sigmoid = torch.sigmoid(x)
        return grad_output * (x_sigmoid * (1 + x * (1 - x_sigmoid)))


class SwishOnItsContext(torch.autograd.Function):
    """The same Swish keeping its input as an attribute of its context, not saved through
    `save_for_backward` (no saved-tensor hook sees it)."""

    @staticmethod
    def forward(ctx, x):
        ctx.x = x
        return x.mul(torch.sigmoid(x))

    @staticmethod
    def backward(ctx, grad_output):
        x_sigmoid = torch.sigmoid(ctx.x)
        return grad_output * (x_sigmoid * (1 + ctx.x * (1 - x_sigmoid)))


class MishFunction(torch.autograd.Function):
    """timm's memory-efficient Mish (`activations_me.MishAutoFn`): its backward names two
    temporaries and reads them across several ops; x_sigmoid, read last by the second op
    after it, is held until the function returns."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.mul(torch.tanh(F.softplus(x)))

    @staticmethod
    def backward(ctx, grad_output):
        x = ctx.saved_tensors[0]
        x_sigmoid = torch.sigmoid(x)
        x_tanh_sp = F.softplus(x).tanh()
        return grad_output.mul(x_tanh_sp + x * x_sigmoid * (1 - x_tanh_sp * x_tanh_sp))


class SumOfThreeTerms(torch.autograd.Function):
    """sin(x) - cos(x) + exp(x), whose Python backward names its three terms and returns their
    sum: `a + b + c` adds two tensors the backward made, as the engine does where two gradients
    of one tensor meet, but allocates each sum while a, b and c are held (until the return)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.sin() - x.cos() + x.exp()

    @staticmethod
    def backward(ctx, grad_output):
        x = ctx.saved_tensors[0]
        a = grad_output * x.cos()
        b = grad_output * x.sin()
        c = grad_output * x.exp()
        return a + b + c


class WithACustomActivation(nn.Module):
    """Two convolutions with a custom autograd Function (`SwishFunction` and its kin) between
    them: the step's peak is in that Function's Python backward."""

    def __init__(self, function: type[torch.autograd.Function] = SwishFunction) -> None:
        super().__init__()
        self.function = function
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.b(self.function.apply(self.a(x))).relu()


class WithACustomFunctionOfAWeight(nn.Module):
    """A weight passed through `SwishFunction`: the gradient its Python backward returns goes
    straight to AccumulateGrad, which takes it over as the `.grad` where nothing else holds it."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4 * width, width) / width)
        self.head = nn.Linear(4 * width, 8)

    def forward(self, x):
        return self.head(F.linear(x, SwishFunction.apply(self.weight)))


class KeepsItsMap(nn.Module):
    """Keeps a map of its forward in an attribute (as a model keeps its attention maps to be
    looked at), detached or with its graph: the model holds it from that forward on, through
    the backward pass and the optimizer's update, until its next forward replaces it."""

    def __init__(self, detached: bool = True) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(64, 256), nn.Linear(256, 8)
        self.detached = detached
        self.kept = None

    def forward(self, x):
        y = torch.relu(self.body(x))
        self.kept = y.detach() * 2 if self.detached else y * 2
        return self.head(y)


def weight_normed_layer() -> nn.Module:
    """`nn.utils.weight_norm` (deprecated, still common in vocoders): a forward pre-hook sets
    the layer's `weight` attribute to g * v / |v|, which the layer then keeps until its next
    forward: a tensor of the weight's size that the backward pass reads and that outlives it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.Sequential(nn.utils.weight_norm(nn.Linear(32, 64)), nn.ReLU(), nn.Linear(64, 4))


class FlattenedClassifier(nn.Sequential):
    """A classifier with no spatial layer: every row's output a vector (no receptive field)."""

    def __init__(self) -> None:
        super().__init__(nn.Flatten(), nn.Linear(1024, 10))  # a 1x32x32 input, as lenet5's


class UnshuffledChannelPicked(nn.Module):
    """One channel of a pixel unshuffle (it reads pixel 2h, 2w of each 2x2 block alone) through a
    1x1 convolution: archprof gives it the union of the four channels', an upper bound."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(1, 1, 1)

    def forward(self, x):
        return self.head(nn.functional.pixel_unshuffle(x, 2)[:, :1])


class OwnOperationsAroundAChild(nn.Module):
    """Its own operations before and after its child's call: two rows of one layer and call."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.inner(x * 2) + 1


class CircularlyPadded(nn.Module):
    """A 3x3 convolution, then circular padding: unit (0, 0) is a copy of the far corner's,
    written slice by slice through views of the new map, which archprof cannot follow: its
    field is undefined."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3)

    def forward(self, x):
        return F.pad(self.conv(x), (1, 1, 1, 1), mode="circular")


class OwnPooling(nn.Module):
    """A convolution, then the model's own average pooling (3 x 3, stride 1, padding 1): the
    model's operations make its output, a row "(model)"."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return F.avg_pool2d(self.conv(x), 3, stride=1, padding=1)


class EveryKindOfCell(nn.Module):
    """Every kind of cell: a field, a fractional stride (a stride-2 transposed conv: 1/2),
    an undefined field (reflection padding), an operator without a formula (`uncosted`), the
    whole input (a mean), and a module that never runs (no field at all)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.up = nn.ConvTranspose2d(2, 2, 3, stride=2)
        self.pad = nn.ReflectionPad2d(1)
        self.spare = nn.Linear(2, 2)

    def forward(self, x):
        y = self.conv(x)
        return self.pad(uncosted(self.up(y))), y.mean()


class NestedCheckpoints(nn.Module):
    """A checkpointed block (non-reentrant) holding another, whose input the outer block's
    frame packs (a placeholder, the tensor let go of), not the inner one's; then the outer
    block's input read again after it."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(3, 8, 3, padding=1)
        self.middle, self.last = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def inner(self, t):
        return self.last(torch.relu(t))

    def outer(self, t):
        return checkpoint(self.inner, torch.relu(self.middle(torch.relu(t))), use_reentrant=False)

    def forward(self, x):
        y = self.first(x)
        return checkpoint(self.outer, y, use_reentrant=False) + y


class NestedNotLast(nn.Module):
    """A checkpointed block (non-reentrant) holding another that is not its last op: the outer
    block's replay runs the inner one's forward again, taking a random-number state that its
    frame, and the nodes the replay made, hold until the replay ends."""

    def __init__(self):
        super().__init__()
        self.first = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.after = nn.Conv2d(8, 8, 3, padding=1)

    def outer(self, t):
        return self.after(checkpoint(self.first, t, use_reentrant=False))

    def forward(self, x):
        return checkpoint(self.outer, x, use_reentrant=False) * 2


class Gate(nn.Module):
    """A squeeze-excitation gate: the map scaled per channel by its global mean, convolved (no
    sigmoid, which the gradient oracle's positive weights would saturate to a gradient of 0)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return x * self.fc(x.mean((2, 3), keepdim=True))


def se_net(gated: bool = True) -> nn.Sequential:
    """Features (a 3x3 convolution, a gate or not, two stride-2 3x3 convolutions), then a head."""
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        Gate(8) if gated else nn.Identity(),
        nn.Conv2d(8, 8, 3, 2, padding=1),
        nn.Conv2d(8, 8, 3, 2, padding=1),
    )
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


class RunsCodeAsItLoads(nn.Module):
    """A module whose `__setstate__`, straight-line, runs code as the file it is saved in loads
    (each subclass its own, a class of its own: TorchScript compiles by qualified name): its
    result, `made`, is added to the input."""

    def __init__(self):
        super().__init__()
        self.made = 0.0

    def forward(self, x):
        return x + self.made

    @torch.jit.export
    def __getstate__(self) -> tuple[float, bool]:
        return (self.made, self.training)
