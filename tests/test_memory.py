"""Memory: liveness on hand-built models with hand-computed peaks, what autograd saves in
training against a real CPU forward, the inference peak against torch.profiler, sizes,
the largest batch that fits, and the `memory` command."""

import json
import re
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

import archprof
from archprof.analysis import build_report
from archprof.cli import app
from archprof.errors import ArchprofError, ArchprofWarning
from archprof.fit import MAX_FIT_TRACES, fit_batch, predicted_bytes
from archprof.passes.liveness import model_state_storages
from archprof.passes.memory import saved_activations
from archprof.tracing.trace import trace
from archprof.zoo import MODELS
from tests.cli import cli, one_error_line
from tests.memory_oracle import profiled_peaks, profiled_training_peaks
from tests.models import (
    Calls,
    CheckpointedBlocks,
    DistancesByCdist,
    FunctionalOps,
    MixedByEinsum,
    NestedCheckpoints,
    NumbersFirst,
    Residual,
    ScaledByNumbers,
    ScaledMap,
    SkipsHeldInLocals,
    WrittenOut,
)

runner = CliRunner()


def columns(report, *names):
    return tuple(report.columns[name] for name in names)


# --- liveness, by hand ----------------------------------------------------------------------
# float32, batch 1: a 4-vector is 16 bytes. nn.Linear runs t(weight) (a view of a parameter:
# no activation) and addmm (allocates its output).


def test_a_chain_frees_each_tensor_when_the_forward_lets_go_of_it():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    report = archprof.analyze(model, input_size=(4,))
    # input 16 (its caller holds it throughout), fc0 out 32, relu out 32, fc2 out 8.
    # Sequential's `input = module(input)` lets go of a layer's input once the layer returns.
    live, peak = columns(report, "live_bytes", "peak_live_bytes")
    assert peak == [16 + 32, 16 + 32 + 32, 16 + 32 + 8]  # an op's inputs and outputs are live together
    assert live == [16 + 32, 16 + 32, 16 + 8]  # then what its caller no longer holds is freed
    totals = report.totals
    assert totals.peak_activation_bytes == 80 and totals.peak_layer == "1"
    assert totals.peak_memory_bytes == totals.param_bytes + totals.buffer_bytes + 80
    assert totals.param_bytes == (4 * 8 + 8 + 8 * 2 + 2) * 4


class Shortcut(nn.Module):
    def __init__(self, shortcut=True):
        super().__init__()
        self.fc1, self.fc2, self.shortcut = nn.Linear(4, 8), nn.Linear(8, 4), shortcut

    def forward(self, x):
        y = self.fc2(torch.relu(self.fc1(x)))
        return y + x if self.shortcut else y


def test_a_residual_block_keeps_its_shortcut_alive():
    with_shortcut = archprof.analyze(Shortcut(), input_size=(4,))
    # rows: fc1, relu (the block's own op), fc2, add; x (16 B) is held throughout. fc1's
    # output (32) is let go of once relu returns, relu's (32) once fc2 returns, y (16) at the return.
    assert with_shortcut.columns["layer"] == ["fc1", "", "fc2", ""]
    live, peak = columns(with_shortcut, "live_bytes", "peak_live_bytes")
    assert live == [16 + 32, 16 + 32, 16 + 16, 16 + 16]
    assert peak == [16 + 32, 16 + 32 + 32, 16 + 32 + 16, 16 + 16 + 16]
    assert with_shortcut.totals.peak_activation_bytes == 80

    plain = archprof.analyze(Shortcut(shortcut=False), input_size=(4,))
    live, peak = columns(plain, "live_bytes", "peak_live_bytes")
    assert live == [16 + 32, 16 + 32, 16 + 16]  # x read by fc1 only, but held by the caller
    assert peak == [16 + 32, 16 + 32 + 32, 16 + 32 + 16]
    assert plain.totals.peak_activation_bytes == 80


def test_an_in_place_relu_allocates_nothing():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 2))
    report = archprof.analyze(model, input_size=(4,))
    live, peak = columns(report, "live_bytes", "peak_live_bytes")
    assert report.columns["operators"][1] == ("relu_",)
    # input 16 held throughout; relu_ writes fc0's output (32) over, which fc2's return lets go of
    assert peak == [16 + 32, 16 + 32, 16 + 32 + 8]  # the relu_ row adds nothing
    assert live == [16 + 32, 16 + 32, 16 + 8]
    assert report.totals.peak_activation_bytes == 56 and report.totals.peak_layer == "2"


class Views(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 2)

    def forward(self, x):  # x: 1x4x4, 64 bytes
        return self.fc(x.transpose(1, 2).transpose(1, 2).reshape(1, 16))


def test_views_share_their_base_storage_and_allocate_nothing():
    graph = trace(Views(), [(1, 4, 4)])
    views = [op for op in graph.ops if op.is_view]
    assert len(views) >= 3 and all(op.outputs[0].storage == graph.inputs[0].storage for op in views[:3])
    report = build_report(graph, "views")
    live, peak = columns(report, "live_bytes", "peak_live_bytes")
    assert report.columns["layer"] == ["", "fc"]
    assert peak == [64, 64 + 8] and live == [64, 64 + 8]  # the input's storage is held by its caller


def test_mixed_dtypes_are_counted_per_tensor():
    # A half model whose BatchNorm stays float32 (parameters, running statistics and the
    # per-channel statistics it computes), batch 2.
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))
    model.half()
    model[1].float()
    report = archprof.analyze(model, input_size=(3, 6, 6), batch=2)
    assert report.dtype == "float16"
    totals = report.totals
    assert totals.param_bytes == 108 * 2 + 8 * 4 + 130 * 2  # conv and linear half, BN float32
    assert totals.buffer_bytes == 8 * 4 + 8  # running mean and var float32, num_batches_tracked int64
    x, conv_out = 2 * 3 * 6 * 6 * 2, 2 * 4 * 4 * 4 * 2
    # The input is held throughout; the norm's output is half like its input. Its statistics
    # (float32) are let go of inside the CPU's one batch_norm operator: its workspace, not counted.
    assert report.columns["peak_live_bytes"][:2] == [x + conv_out, x + conv_out + conv_out]
    assert totals.peak_activation_bytes == x + conv_out + conv_out == 944
    assert totals.peak_memory_bytes == totals.param_bytes + totals.buffer_bytes + 944
    # what a real CPU forward holds, as the profiler sees it (the input allocated before it began)
    model.eval()
    half_input = torch.randn(2, 3, 6, 6, dtype=torch.half)
    assert profiled_peaks(model, half_input)[1] + half_input.nbytes == 944


def test_the_first_analysis_in_a_process_holds_what_the_later_ones_hold():
    """The first meta batch norm of mixed dtypes imports torch's dynamo, whose import keeps
    the frames running then, and with them the tensors they read, for the rest of the
    process: not the model's doing, so not held to the end of the forward. A fresh process
    analyses the model twice; both peaks are the same (944 B, worked above)."""
    script = (
        "import archprof, torch\n"
        "from torch import nn\n"
        "def model():\n"
        "    m = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),"
        " nn.Linear(64, 2))\n"
        "    m.half()\n"
        "    m[1].float()\n"
        "    return m\n"
        "for _ in range(2):\n"
        "    print(archprof.analyze(model(), input_size=(3, 6, 6), batch=2).totals.peak_activation_bytes)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["944", "944"]


def test_the_first_analysis_in_a_process_holds_the_forwards_locals():
    """A bool map's sum runs PyTorch's Python decomposition on meta, whose first call imports
    torch._dynamo; the import's frames, in reference cycles, held the forward's frame and its
    locals past its return while the collector was paused, so the first analysis in a
    process (every CLI call) freed them at their last reader: 311,304 B where the profiler
    measures 475,144 (the second analysis said so). Run in a fresh process, the oracle after."""
    script = (
        "import sys, torch, archprof\n"
        "from torch import nn\n"
        "from tests.memory_oracle import profiled_peaks\n"
        "class Masked(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.c, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1)\n"
        "    def forward(self, x):\n"
        "        y = self.c(x)\n"
        "        t = y > 0\n"
        "        w = t.sum()\n"
        "        return self.c2(y) * w\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "print(archprof.analyze(Masked().eval(), input_size=(3, 64, 64)).totals.peak_activation_bytes)\n"
        "x = torch.randn(1, 3, 64, 64)\n"
        "print(profiled_peaks(Masked().eval(), x)[1] + x.nbytes)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]
    )
    predicted, measured = done.stdout.split()[-2:]
    assert predicted == measured


def test_rollup_keeps_the_peak_and_names_the_ancestor():
    report = archprof.analyze("resnet18", input_size=(3, 64, 64))
    assert report.totals.peak_layer == "bn1"
    for depth in (0, 1, 2):
        rolled = report.rollup(depth)
        assert rolled.totals.peak_memory_bytes == report.totals.peak_memory_bytes
        assert rolled.columns["live_bytes"][-1] == report.columns["live_bytes"][-1]
    assert report.rollup(0).totals.peak_layer == ""


# --- training: what autograd saves ----------------------------------------------------------


def real_saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """What autograd saves in a real CPU training forward, one storage once (by its address),
    parameters and buffers left out."""
    state = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in state:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor  # kept alive by autograd: no address is reused while counting

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(x)
    del output
    return sum(saved.values())


def _layer_norms() -> nn.Module:
    return nn.Sequential(nn.Linear(32, 64), nn.LayerNorm(64), nn.GELU(), nn.Linear(64, 64), nn.LayerNorm(64))


def _half_with_float_bn():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))
    model.half()
    model[1].float()
    return model


SAVING_MODELS = {
    "conv-bn-relu-pool-linear": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * 4 * 4, 10),
        ),
        (3, 8, 8),
        torch.float32,
    ),
    "residual": (Residual, (4, 6, 6), torch.float32),
    "functional": (FunctionalOps, (3, 8, 8), torch.float32),
    "dropout-avgpool-sigmoid": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(), nn.Linear(8, 4)
        ),
        (3, 9, 9),
        torch.float32,
    ),
    "bn1d-gelu-softmax": (
        lambda: nn.Sequential(
            nn.Flatten(), nn.Linear(48, 32), nn.BatchNorm1d(32), nn.GELU(), nn.Linear(32, 3), nn.Softmax(-1)
        ),
        (3, 4, 4),
        torch.float32,
    ),
    "half-with-float32-bn": (_half_with_float_bn, (3, 6, 6), torch.float16),
    "resnet18": (MODELS["resnet18"].build, (3, 32, 32), torch.float32),
    # A CPU keeps a layer norm's mean and rstd in a half input's dtype (the meta kernel, float32:
    # 1,600 B over); with a float32 weight, in float32.
    **{
        f"layer norms in {dtype}": (lambda dtype=dtype: _layer_norms().to(dtype), (50, 32), dtype)
        for dtype in (torch.float16, torch.bfloat16)
    },
    "a float16 layer norm with a float32 weight": (
        lambda: nn.Sequential(Calls(lambda x: x.half()), nn.LayerNorm(32)),
        (50, 32),
        torch.float32,
    ),
    # What a recomputed block saves inside the backward pass is not the forward's: reentrant,
    # two blocks' ReLU maps (32,768 B) were counted again.
    "two checkpointed blocks": (partial(CheckpointedBlocks, blocks=2), (3, 16, 16), torch.float32),
    "two blocks checkpointed reentrantly": (
        partial(CheckpointedBlocks, blocks=2, reentrant=True),
        (3, 16, 16),
        torch.float32,
    ),
}


@pytest.mark.parametrize("name", SAVING_MODELS)
def test_saved_activations_equal_what_autograd_saves_in_a_real_forward(name):
    build, size, dtype = SAVING_MODELS[name]
    model = build()
    report = archprof.analyze(model, input_size=size, batch=2, training=True)
    assert report.totals.saved_activation_bytes == real_saved_bytes(model, torch.randn(2, *size, dtype=dtype))


def test_saved_views_of_one_storage_count_once_and_weights_are_not_activations():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    graph = trace(model, [(1, 4)], training=True)
    storages = [t.storage for t in graph.saved]
    # relu saves its result and fc2's addmm saves it again (mat1); fc2's addmm also saves
    # t(weight), a view of a parameter: model state, not an activation
    assert len(storages) > len(set(storages))
    assert any(t.kind == "activation" and t.storage in model_state_storages(graph) for t in graph.saved)
    assert sum(saved_activations(graph).values()) == 16 + 32  # x (for fc0) and relu's output
    report = build_report(graph, "chain")
    # Saved tensors stay live until the backward pass: the forward peaks at relu (16+32+32),
    # and ends holding the output (8) and what was saved (48).
    assert report.columns["live_bytes"] == [16 + 32, 16 + 32, 16 + 32 + 8]
    assert report.totals.peak_activation_bytes == 80
    assert real_saved_bytes(model, torch.randn(1, 4)) == 48


def test_the_training_estimate_adds_gradients_optimizer_state_and_saved_activations():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    model[0].weight.requires_grad_(False)  # frozen: no gradient, no optimizer state
    trained = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in trained) * 4
    # Adam's state also holds a 4 B step counter per parameter it updates.
    for optimizer, copies, counters in (("sgd", 0, 0), ("momentum", 1, 0), ("adam", 2, 4 * len(trained))):
        totals = archprof.analyze(model, input_size=(3, 6, 6), batch=2, training=True, optimizer=optimizer).totals
        assert totals.gradient_bytes == trainable
        assert totals.optimizer_state_bytes == copies * trainable + counters
        assert totals.training_memory_bytes == (
            totals.param_bytes
            + totals.buffer_bytes
            + trainable * (1 + copies)
            + counters
            + totals.saved_activation_bytes
        )
    inference = archprof.analyze(model, input_size=(3, 6, 6), batch=2).totals
    assert inference.training_memory_bytes is None and inference.saved_activation_bytes is None
    assert not model[0].weight.requires_grad and model.training  # the caller's model is untouched


def test_an_unknown_optimizer_is_an_error():
    with pytest.raises(ArchprofError, match="unknown optimizer 'lamb'"):
        archprof.analyze("lenet5", training=True, optimizer="lamb")


# --- the inference peak against torch.profiler ----------------------------------------------


class CopiedByReshape(nn.Module):
    """`reshape` of a transposed tensor copies it (`clone`), then `_unsafe_view`s the copy:
    a view whose schema does not say so, which allocates nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(32 * 32, 16)

    def forward(self, x):  # x: batch x 32 x 32
        return self.fc(x.transpose(1, 2).reshape(x.shape[0], -1))


class BagsOfRows(nn.Module):
    """nn.EmbeddingBag over 24 fixed indices in 6 bags of 4 (a seventh offset closing the last
    with include_last_offset), per-index weights taken from the input where asked for: the
    peak is the bag's four results (output, offset2bag, bag_size, max_indices) held at once."""

    def __init__(self, mode: str, per_index: bool = False, last: bool = False, frozen: bool = False, **options):
        super().__init__()
        self.bag = nn.EmbeddingBag(100, 16, mode=mode, include_last_offset=last, **options)
        self.bag.weight.requires_grad_(not frozen)  # frozen: `_embedding_bag_forward_only`
        self.per_index = per_index
        self.register_buffer("indices", torch.arange(24) * 7 % 100)
        self.register_buffer("offsets", torch.arange(0, 24 + 4 * last, 4))

    def forward(self, x):  # x: batch x 12
        weights = x.flatten().abs() if self.per_index else None
        return self.bag(self.indices, self.offsets, per_sample_weights=weights)


# nn.EmbeddingBag's results as a CPU sizes them: offset2bag none on the sum's fast road, else one
# index more than the shape says; bag_size one per offset; max_indices one per bag but for max's.
BAGS_OF_ROWS = {
    "a bag sum": dict(mode="sum"),
    "a bag sum to the last offset": dict(mode="sum", last=True),
    "a bag sum weighted per index": dict(mode="sum", per_index=True),
    "a bag sum with a padding index": dict(mode="sum", padding_idx=0),
    "a bag sum of frozen rows to the last offset": dict(mode="sum", last=True, frozen=True),
    "a bag mean": dict(mode="mean"),
    "a bag mean to the last offset": dict(mode="mean", last=True),
    "a bag max": dict(mode="max"),
    "a bag max to the last offset": dict(mode="max", last=True),
}


# Composites a CPU runs as one operator, each called on 8-channel maps: the temporaries it makes
# and frees inside are that operator's workspace (tests/test_training_peak.py runs a training step through them).
ONE_CPU_OPERATOR_CALLS = {
    "a pairwise distance of maps and their flips": lambda y: F.pairwise_distance(y.flatten(1), y.flip(1).flatten(1)),
    "a triplet margin loss": lambda y: F.triplet_margin_loss(y.flatten(1), y.flip(1).flatten(1), y.flip(0).flatten(1)),
    "a margin ranking loss": lambda y: F.margin_ranking_loss(y, y.flip(1), torch.ones_like(y)),
    "a hinge embedding loss": lambda y: F.hinge_embedding_loss(y, torch.ones_like(y)),
    "a summed L1 loss": lambda y: F.l1_loss(y, y.flip(1), reduction="sum"),
    "a Poisson loss with Stirling's term": (
        lambda y: F.poisson_nll_loss(y, y.flip(1).abs() + 1, full=True, reduction="sum")
    ),
    # its mean over the target lengths inside the one operator; its gradient had no meta kernel
    "a CTC loss over a map's positions": lambda y: F.ctc_loss(
        y.flatten(2).permute(2, 0, 1).log_softmax(2), y.new_ones((2, 5), dtype=torch.long), [256, 256], [5, 5]
    ),
    # their mean and rstd (or inverse std), freed inside the composite in inference, saved in training
    "a layer norm over the maps' last dimension": lambda y: F.layer_norm(y, (16,)),
    "a group norm of 4 groups": lambda y: F.group_norm(y, 4),
    "an instance norm": F.instance_norm,
    # attention the CPU runs on its math road (a mask of 3 dimensions, or 5-d heads), whose scores
    # and their softmax the one operator scaled_dot_product_attention frees inside
    "attention under a 3-d mask": lambda y: F.scaled_dot_product_attention(y, y, y, attn_mask=y.new_zeros(8, 16, 16)),
    "attention over 5-d heads": lambda y: F.scaled_dot_product_attention(*[y.unflatten(1, (2, 4))] * 3),
    "attention called as torch._C._nn's": lambda y: torch._C._nn.scaled_dot_product_attention(
        y, y, y, attn_mask=y.new_zeros(8, 16, 16)
    ),
    # CPU flash attention: the boolean mask turned into a float one inside the operator
    "flash attention under a boolean mask": lambda y: F.scaled_dot_product_attention(
        y, y, y, attn_mask=torch.ones(16, 16, dtype=torch.bool, device=y.device).tril()
    ),
    # matmul folding a non-contiguous batch into one bmm: its copy of each operand made and
    # freed inside the operator; torchvision's swin_v2 cosine attention over permuted heads
    "a product of maps over permuted batches": lambda y: y.transpose(1, 2) @ y.transpose(1, 3),
    "cosine attention's scores over permuted heads": lambda y: (
        F.normalize(y.transpose(1, 2), dim=-1) @ F.normalize(y.transpose(1, 2), dim=-1).transpose(-2, -1)
    ),
    # einsum's permuted copy of each operand its one bmm cannot read as it is, made and freed
    # inside the operator: a lambda layer's content term mixing channels; attention scores over
    # permuted heads, as torchvision's MaxViT writes them
    "an einsum mixing the maps' channels": lambda y: torch.einsum("bchw,cd->bdhw", y, y.new_ones(8, 24)),
    "an einsum of scores over permuted heads": lambda y: torch.einsum(
        "bhnd,bhmd->bhnm", y.transpose(1, 2), y.transpose(1, 2)
    ),
    # tensordot's permuted copy of each operand its one mm cannot read as it is; the map's copy
    # freed inside the operator in a training step too, as mm keeps it only for a gradient of the constant
    "a tensordot mixing the maps' channels": lambda y: torch.tensordot(y, y.new_ones(8, 24), dims=([1], [0])),
    "a tensordot over the maps' channels and rows": lambda y: torch.tensordot(
        y, y.new_ones(16, 8, 24), dims=([1, 2], [1, 0])
    ),
    # bilinear's copy of each operand it cannot flatten into rows as it is, and _trilinear's
    # product before the bias is added, made and freed inside the operator
    "a bilinear form of channels-last maps": lambda y: F.bilinear(
        y.transpose(1, 3), y.transpose(1, 3), y.new_ones(5, 8, 8)
    ),
    "a bilinear form of rows with a bias": lambda y: F.bilinear(
        y.flatten(1, 2), y.flatten(1, 2).flip(1), y.new_ones(5, 16, 16), y.new_ones(5)
    ),
    # matrix_power's intermediate powers, multi_dot's product of the first two matrices and
    # rms_norm's squares, mean and reciprocal root, made and freed inside the one operator
    "a matrix power of the maps": lambda y: torch.linalg.matrix_power(y, 3),
    "a multi-dot of the maps' first rows": lambda y: torch.linalg.multi_dot([y[0, 0], y[0, 1], y[1, 0]]),
    "an RMS norm over the maps' last dimension": lambda y: F.rms_norm(y, (16,)),
}

FEATURES: dict[str, torch.Tensor] = {}  # a forward hook's, kept at module level as feature extractors keep them
HISTORY: list[torch.Tensor] = []


def _features_kept_by_a_hook() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 8, 1), nn.Conv2d(8, 128, 1))
    model[0].register_forward_hook(lambda module, args, output: FEATURES.__setitem__("first", output))
    return model


class _ChannelsLast(nn.Module):
    def forward(self, x):
        return x.contiguous(memory_format=torch.channels_last)


PROFILED_MODELS = {
    # A one-channel map a kernel makes channels last (its channel stride 1, as torch.empty makes
    # it) is no contiguous one: the convolution after it writes channels last, and the flatten
    # then copies (that copy short, 32,768 and 16,384 B, when the map was taken for contiguous).
    "a one-channel map concatenated in channels last, convolved and flattened": (
        lambda: nn.Sequential(
            _ChannelsLast(),
            Calls(lambda x: torch.cat([x[:, :1], x[:, 1:2]], dim=2)),
            nn.Conv2d(1, 16, 3, padding=1),
            nn.Flatten(),
            nn.Linear(16 * 32 * 16, 4),
        ),
        (3, 16, 16),
        1,
    ),
    "a one-channel convolution in channels last, convolved and flattened": (
        lambda: nn.Sequential(
            _ChannelsLast(),
            nn.Conv2d(3, 1, 3, padding=1),
            nn.Conv2d(1, 16, 3, padding=1),
            nn.Flatten(),
            nn.Linear(16 * 16 * 16, 4),
        ),
        (3, 16, 16),
        1,
    ),
    # a tensor the model's code keeps outside any module, held to the end (once let go of at its last reader)
    "features a forward hook keeps in a dict": (_features_kept_by_a_hook, (3, 16, 16), 2),
    "maps appended to a list at module level": (
        lambda: nn.Sequential(nn.Conv2d(3, 16, 3), Calls(lambda y: HISTORY.append(y) or y * 2), nn.Conv2d(16, 4, 1)),
        (3, 16, 16),
        2,
    ),
    "conv-bn-relu-pool-linear": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 8 * 8, 10),
        ),
        (3, 16, 16),
        4,
    ),
    "residual": (lambda: Residual(8), (8, 16, 16), 4),
    "resnet18": (MODELS["resnet18"].build, (3, 64, 64), 2),
    "skips held in locals": (SkipsHeldInLocals, (3, 32, 32), 2),
    "a reshape that copies": (CopiedByReshape, (32, 32), 64),
    "mobilenet_v2": (MODELS["mobilenet_v2"].build, (3, 64, 64), 1),
    "densenet121": (MODELS["densenet121"].build, (3, 64, 64), 1),
    "scaled by Python numbers": (ScaledByNumbers, (3, 16, 16), 2),
    "a map times a Python number": (ScaledMap, (3, 16, 16), 2),
    "Python numbers first": (NumbersFirst, (3, 16, 16), 2),
    "results written out=": (WrittenOut, (3, 16, 16), 2),
    # isfinite, one operator on a CPU: its composite's `self == self` and `self.abs() != inf` its workspace
    "a map kept where finite": (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(lambda y: y * torch.isfinite(y))),
        (3, 16, 16),
        2,
    ),
    # composites a CPU runs as one operator: the temporaries it makes and frees inside are its workspace
    **{
        # nn.LayerNorm answered directly (archprof.tracing.shortcuts); the others through their forward
        f"a conv, then nn.{norm.__class__.__name__}": (
            lambda norm=norm: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm),
            (3, 16, 16),
            2,
        )
        for norm in (nn.LayerNorm(16), nn.GroupNorm(4, 8), nn.InstanceNorm2d(8, affine=True))
    },
    **{
        name: (lambda call=call: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(call)), (3, 16, 16), 2)
        for name, call in (
            *ONE_CPU_OPERATOR_CALLS.items(),
            # cov's centred copy and its product, freed inside the one operator; inference only, as
            # its composite calls aten::equal, which has no meta kernel, when its input needs grad
            ("a covariance of the maps", lambda y: torch.cov(y.flatten(0, 1).flatten(1))),
            ("a cosine similarity of maps and their flips", lambda y: F.cosine_similarity(y, y.flip(1))),
            ("a cross entropy over classes", lambda y: F.cross_entropy(y, y.new_zeros((2, 16, 16), dtype=torch.long))),
            ("a cross entropy over probabilities", lambda y: F.cross_entropy(y, y.softmax(1))),
            ("a KL divergence", lambda y: F.kl_div(y.log_softmax(1), y.softmax(1), reduction="batchmean")),
            (
                "a cosine embedding loss",
                lambda y: F.cosine_embedding_loss(y.flatten(1), y.flip(1).flatten(1), y.new_ones(2)),
            ),
            # nll_loss's total weight, and log_sigmoid's buffer, freed inside the composite
            (
                "a negative log-likelihood over classes",
                lambda y: F.nll_loss(y.log_softmax(1), y.new_zeros((2, 16, 16), dtype=torch.long)),
            ),
            ("a log-sigmoid", F.logsigmoid),
            ("a multi-label soft margin loss", lambda y: F.multilabel_soft_margin_loss(y, y.flip(1))),
        )
    },
    **{name: (lambda options=options: BagsOfRows(**options), (12,), 2) for name, options in BAGS_OF_ROWS.items()},
    # max-pools at the peak, their indices let go of inside the one CPU operator (nn.MaxPool2d answered directly)
    "a conv, then a max-pool": (lambda: nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.MaxPool2d(2)), (3, 64, 64), 1),
    "a conv, then F.max_pool2d rounding up": (
        lambda: nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), Calls(lambda y: F.max_pool2d(y, 3, 2, ceil_mode=True))),
        (3, 63, 63),
        1,
    ),
    "a 1-d conv, then a max-pool": (
        lambda: nn.Sequential(nn.Conv1d(3, 16, 3, padding=1), nn.MaxPool1d(2)),
        (3, 4096),
        1,
    ),
    "a 3-d conv, then a max-pool": (
        lambda: nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.MaxPool3d(2)),
        (3, 16, 16, 16),
        1,
    ),
    # the indices asked for: a result, held
    "a max-pool's indices asked for": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), Calls(lambda y: F.max_pool2d(y, 2, return_indices=True)[0] + 1)
        ),
        (3, 64, 64),
        1,
    ),
}


@pytest.mark.parametrize("name", PROFILED_MODELS)
def test_the_inference_peak_matches_the_profiler(name):
    """Tolerance, and why:

    - The prediction holds a network input until the forward returns, as its caller does;
      it was allocated before profiling began, so the comparison is with the profiler's
      peak plus the input's bytes.
    - Each activation is held until the forward lets go of its last tensor object, not
      freed at its last reader: a U-Net's skip connections stay in local variables, a
      block's caller holds its argument until the block returns (MobileNet-v2: +7.8% over
      the last-reader peak; DenseNet-121's concatenated features more).
    - Against allocations that outlive their op, the prediction is equal to the byte. A
      batch norm in evaluation keeps no statistics on the CPU (counting 2 x C floats for
      them, as the meta kernel makes them, ResNet-18 is 512 B over); a Python number an op
      takes where a tensor goes is a tensor of 8 B while the op runs (without it, the model
      map times a Python number is 8 B short). The embedding bags' results are sized as a CPU
      sizes them (with the meta kernel's shapes, the bag sum 152 B over, the mean 48 B short, the
      max 8 B short). A max-pool's argmax indices, which `max_pool2d` (1-d, 3-d) computes and
      lets go of inside in inference, are that one CPU operator's workspace (counted, the
      convolution and max-pool 131,072 B over, 1-d 262,144 B, 3-d 32,768 B).
    - The raw peak, workspace included, exceeds that by at most the kernels' workspace.
    """
    build, size, batch = PROFILED_MODELS[name]
    model = build()
    x = torch.randn(batch, *size)
    predicted = archprof.analyze(model, input_size=size, batch=batch).totals.peak_activation_bytes
    everything, lasting = profiled_peaks(model, x)
    assert predicted == lasting + x.nbytes
    assert everything + x.nbytes >= predicted


class CachesOnItsFirstCall(nn.Module):
    """Keeps a tensor its first call computes, for its next calls (timm's LeViT and TinyViT
    cache their attention biases so)."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(64, 256))
        self.fc1, self.fc2 = nn.Linear(256, 256), nn.Linear(256, 256)
        self.cache: dict[str, torch.Tensor] = {}

    def forward(self, x):
        if "bias" not in self.cache:
            self.cache["bias"] = self.table.repeat(4, 1)  # 256 x 256, read once, then held
        return self.fc2(torch.relu(self.fc1(x + self.cache["bias"])))


def test_a_tensor_the_model_keeps_after_its_forward_is_held_to_the_end():
    """The oracle: the CPU allocator's events over the model's first real forward (the one
    that fills the cache), the input held by the caller as before."""
    from tests.memory_oracle import allocation_peaks

    x = torch.randn(256, 256)
    model = CachesOnItsFirstCall().eval()
    with torch.no_grad():
        _, lasting = allocation_peaks(lambda: model(x))
    graph = trace(CachesOnItsFirstCall().to("meta").eval(), [x.shape], owned=True)  # as archprof keeps its own
    assert build_report(graph, "cache").totals.peak_activation_bytes == lasting + x.nbytes


# --- the largest batch that fits ------------------------------------------------------------


def test_fit_finds_the_largest_batch_in_four_analyses():
    one = predicted_bytes(archprof.analyze("lenet5", batch=1))
    slope = predicted_bytes(archprof.analyze("lenet5", batch=2)) - one
    budget = one + 5 * slope + slope // 2  # room for 6
    found = fit_batch("lenet5", budget)
    assert found.batch == 6 and found.traces == 4
    assert found.bytes_at_batch <= budget < found.bytes_at_next
    assert predicted_bytes(archprof.analyze("lenet5", batch=6)) == found.bytes_at_batch
    assert predicted_bytes(archprof.analyze("lenet5", batch=7)) == found.bytes_at_next
    assert found.report.input_shapes == ((6, 1, 32, 32),)


class Gram(nn.Module):
    """A batch x batch product: memory grows with the square of the batch."""

    def forward(self, x):
        return x @ x.t()


def test_fit_of_a_program_exported_with_a_fixed_batch_says_so(tmp_path):
    """torch.export without a Dim on the batch specialises the program to its example's batch
    (it refuses another); --fit tried batch 1 and said "cannot be analysed at 1x3x16x16:
    give that shape", a shape the user never gave."""
    model, example = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), torch.randn(2, 3, 16, 16)
    program = torch.export.export(model, (example,))
    with pytest.raises(AssertionError, match="Guard failed"):  # torch's own verdict: batch 1 is not the program's
        program.module()(torch.randn(1, 3, 16, 16))
    torch.export.save(program, tmp_path / "static.pt2")
    result = cli("memory", tmp_path / "static.pt2", "--fit", "1MB")
    assert result.exit_code == 2
    assert "exported with a fixed batch of 2" in one_error_line(result)


def test_fit_of_a_program_with_a_bounded_batch_searches_within_its_dim(tmp_path):
    """A batch Dim with a max: --fit searched past it and failed on the program's own check
    ("Expected input at *args[0].shape[0] to be <= 6"); with a min, it began at batch 1,
    which the program refuses too."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    batch = torch.export.Dim("batch", min=3, max=6)
    program = torch.export.export(model, (torch.randn(4, 3, 16, 16),), dynamic_shapes=({0: batch},))
    for refused in (2, 7):  # torch's own verdict on the batches the program takes
        with pytest.raises(Exception, match="<= 6" if refused == 7 else ">= 3"):
            program.module()(torch.randn(refused, 3, 16, 16))
    path = tmp_path / "bounded.pt2"
    torch.export.save(program, path)
    need = {b: predicted_bytes(archprof.analyze(str(path), batch=b)) for b in (3, 4, 5, 6)}
    largest = fit_batch(str(path), 10**9)
    assert (largest.batch, largest.bytes_at_batch, largest.bytes_at_next) == (6, need[6], None)
    assert largest.beyond_text == "the model takes no batch above 6"
    within = fit_batch(str(path), need[4])
    assert (within.batch, within.bytes_at_batch, within.bytes_at_next) == (4, need[4], need[5])
    with pytest.raises(ArchprofError, match=r"not even batch 3 fits .*\(the smallest batch the exported program"):
        fit_batch(str(path), need[3] - 1)
    result = cli("memory", path, "--fit", "1GB", "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["batch_fit"]["bytes_at_next_batch"] is None
    assert "the model takes no batch above 6" in result.stderr
    page = tmp_path / "fit.html"
    assert cli("memory", path, "--fit", "1GB", "-o", page).exit_code == 0
    assert "not taken by the model" in page.read_text()


def test_fit_of_a_program_with_a_dynamic_batch_begins_at_batch_1(tmp_path):
    """torch.export records 2 as the least of a dynamic size (Dim.DYNAMIC, or min=2), which its
    own run-time check does not enforce: the fit began at batch 2 and refused a budget that
    batch 1 fits, calling 2 "the smallest batch the exported program takes"."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    for batch in (torch.export.Dim.DYNAMIC, torch.export.Dim("batch", min=2)):
        program = torch.export.export(model, (torch.randn(4, 3, 16, 16),), dynamic_shapes=({0: batch},))
        assert [int(r.lower) for r in program.range_constraints.values()] == [2]
        program.module()(torch.randn(1, 3, 16, 16))  # torch's own verdict: batch 1 runs
        path = tmp_path / "dynamic.pt2"
        torch.export.save(program, path)
        one, two = (predicted_bytes(archprof.analyze(str(path), batch=b)) for b in (1, 2))
        assert fit_batch(str(path), (one + two) // 2).batch == 1


def test_fit_bisects_when_memory_is_not_affine_in_the_batch():
    need = {b: predicted_bytes(archprof.analyze(Gram(), input_size=(8,), batch=b)) for b in (100, 101)}
    found = fit_batch(Gram(), need[100], input_size=(8,))
    assert found.batch == 100 and found.bytes_at_next == need[101]
    assert found.traces <= MAX_FIT_TRACES


def test_fit_follows_the_line_where_a_training_steps_peak_bends():
    """resnet18's training step needs 20.5 MB more at batch 2 than at 1, and 22.4 MB a sample
    far out (its peak is the largest of several lines in the batch): for 1e17 B the line from
    batches 1 and 2 guessed batch 4.9e9, and the bisection from there ran out of analyses
    ("memory is not affine in the batch"). The line through the pair it gave lands on the
    answer. The oracle: what the answer means, each side analysed on its own."""
    budget = 10**17
    found = fit_batch("resnet18", budget, training=True)
    assert found.traces == 6
    below, above = (
        predicted_bytes(archprof.analyze("resnet18", batch=b, training=True)) for b in (found.batch, found.batch + 1)
    )
    assert (below, above) == (found.bytes_at_batch, found.bytes_at_next)
    assert below <= budget < above


def test_fit_bisects_below_a_batch_whose_tensors_would_pass_int64():
    """Gram in 1PB: the line from batches 1 and 2 guessed batch 22,727,272,727,272, whose
    batch x batch product torch cannot size ("Storage size calculation overflowed"): fit
    stopped there with that error. Such a batch needs more than any budget: the search
    bisects below it (by halving the ratio while it is large: a linear bisection took more
    than MAX_FIT_TRACES analyses). The oracle: the product's 4 b^2 B and the input's 32 b B."""
    budget = 10**15
    found = fit_batch(Gram(), budget, input_size=(8,))
    assert (found.bytes_at_batch, found.bytes_at_next) == (
        4 * found.batch**2 + 32 * found.batch,
        4 * (found.batch + 1) ** 2 + 32 * (found.batch + 1),
    )
    assert found.bytes_at_batch <= budget < found.bytes_at_next
    assert found.traces <= MAX_FIT_TRACES


class CostlyAtBatchOne(nn.Module):
    """At batch 1 the forward takes a path that holds a large temporary: batch 2 needs less."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(256, 4)

    def forward(self, x):
        if x.shape[0] == 1:
            x = x + torch.zeros(1, 100_000, device=x.device)[:, :256]
        return self.linear(x)


def test_fit_searches_on_where_batch_2_needs_less_than_batch_1():
    """fit refused the model ("does not grow with the batch") where batch 2 needed less than
    batch 1, though it grows from there. The oracle: a real CPU forward's peak
    (torch.profiler) at the batch found fits the budget, at one more it does not."""
    from tests.memory_oracle import allocation_peaks

    def measured(batch):
        model, x = CostlyAtBatchOne().eval(), torch.randn(batch, 256)
        held = sum(p.nbytes for p in model.parameters()) + x.nbytes
        with torch.no_grad():
            return held + allocation_peaks(lambda: model(x))[1]

    assert measured(2) < measured(1)
    budget = 500_000
    found = fit_batch(CostlyAtBatchOne(), budget, input_size=(256,))
    assert found.bytes_at_batch == measured(found.batch) <= budget < measured(found.batch + 1) == found.bytes_at_next
    assert found.traces <= MAX_FIT_TRACES


class ReadsAValue(nn.Module):
    """Its forward reads a value: traced by a real forward on the CPU, not on meta."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1024, 1024)

    def forward(self, x):
        y = self.linear(x)
        return y * 2 if y.sum().item() > 0 else y


def test_fit_refuses_before_running_for_real_batches_that_cannot_fit_in_memory(monkeypatch):
    """A model traced by real CPU forwards: --fit 40GB ran batch 3,254,866 for real (a 13 GB
    input, then the forward) on a machine with 22 GB free, out of memory. It is refused in
    one line, before the run, where the budget (with half again for workspace) passes the
    memory available; within it, fit answers as ever."""
    import archprof.fit

    monkeypatch.setattr(archprof.fit, "cpu_available_memory", lambda: 100_000_000)
    with pytest.warns(ArchprofWarning, match="cannot run on the meta device"):
        with pytest.raises(ArchprofError, match=r"runs on the CPU for real.* 100\.00 MB of memory available"):
            fit_batch(ReadsAValue(), 40 * 10**9, input_size=(1024,))
        found = fit_batch(ReadsAValue(), 10_000_000, input_size=(1024,))
    assert found.bytes_at_batch <= 10_000_000 < found.bytes_at_next


def batch_norm_head():
    return nn.Sequential(nn.Linear(64, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 10))


def test_fit_train_starts_at_batch_2_where_a_training_step_needs_two_samples():
    """A BatchNorm1d head sees one value per channel at batch 1, which a training step
    refuses: --fit --train searched from batch 1 and stopped there ("needs a batch of at
    least 2 (--batch 2)", which --fit refuses). The oracle: the real CPU step's peak
    (torch.profiler) at the batch found fits, one more does not."""
    from tests.memory_oracle import profiled_training_peaks

    budget = 200_000
    found = fit_batch(batch_norm_head, budget, input_size=(64,), training=True)

    def measured(batch):
        torch.manual_seed(0)
        model, x = batch_norm_head(), torch.randn(batch, 64)
        held = sum(t.nbytes for t in (*model.parameters(), *model.buffers())) + x.nbytes
        return held + profiled_training_peaks(model, x)[1]

    assert found.batch > 2
    assert found.bytes_at_batch == measured(found.batch) <= budget < measured(found.batch + 1) == found.bytes_at_next
    with pytest.raises(ArchprofError, match=r"not even batch 2 fits in 100\.00 kB: .* at batch 2 \(a training step"):
        fit_batch(batch_norm_head, 100_000, input_size=(64,), training=True)


def test_fit_errors():
    with pytest.raises(ArchprofError, match=r"not even batch 1 fits in 1\.00 kB"):
        fit_batch("lenet5", 1000)
    with pytest.raises(ArchprofError, match="unknown optimizer"):
        fit_batch("lenet5", 10**9, training=True, optimizer="lion")


# --- the command ----------------------------------------------------------------------------


def invoke(*args):
    return runner.invoke(app, ["memory", *args], env={"COLUMNS": "160"})


def test_memory_command_prints_layers_and_the_breakdown():
    result = invoke("resnet18")
    assert result.exit_code == 0, result.output
    # At bn1: the parameters (46,758,048 B), the buffers (38,560) and conv1's and bn1's
    # outputs (2 x 3,211,264; in evaluation the CPU's batch norm keeps no statistics), and
    # the input, which its caller holds: + 3 x 224 x 224 x 4 B
    held = f"{11_689_512 * 4 + 38_560 + 2 * 64 * 112 * 112 * 4 + 3 * 224 * 224 * 4:,} B"
    for text in ("Live after", "Peak in layer", "bn1  ◀ peak", "Peak inference memory", held):
        assert text in result.stdout
    assert "Peak memory (inference)" not in result.stdout  # summary's totals' name for it, not another
    result = invoke("resnet18", "--train", "--optimizer", "adam", "--batch", "2")
    assert result.exit_code == 0, result.output
    shown = ("Saved for backward", "Gradients", "Optimizer state (adam: 2 copies)", "Training step peak (adam; at ")
    for text in shown:
        assert text in result.stdout
    peak = archprof.analyze("resnet18", batch=2, training=True, optimizer="adam").totals.training_peak_bytes
    assert f"{peak:,} B" in result.stdout


def test_the_breakdown_counts_the_optimizers_copies_whatever_the_parameters_size():
    """The oracle: a real torch.optim.Adam's state after a step holds two tensors the size of
    each parameter (its moments) and a step counter. Of four 1 x 1 linear layers (32 B of
    gradients, 96 B of state with the counters) the breakdown said "3 copies", dividing the
    state by the gradients."""
    from rich.console import Console

    from archprof.render.memory import memory_totals_table

    def tiny():
        return nn.Sequential(*(nn.Linear(1, 1) for _ in range(4)))

    model = tiny()
    adam = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 1)).sum().backward()
    adam.step()
    copies = {sum(v.shape == p.shape for v in adam.state[p].values()) for p in model.parameters()}
    assert copies == {2}
    console = Console(width=200, record=True)
    console.print(memory_totals_table(archprof.analyze(tiny, input_size=(1,), training=True, optimizer="adam")))
    assert "Optimizer state (adam: 2 copies)" in console.export_text()


def test_memory_command_writes_every_format(tmp_path):
    document = json.loads(invoke("lenet5", "--train", "-f", "json").stdout)
    totals = document["totals"]
    assert totals["training"] is True and totals["optimizer"] == "sgd"
    assert totals["saved_activation_bytes"] == sum(r["saved_activation_bytes"] for r in document["layers"])
    path = tmp_path / "lenet5.csv"
    result = invoke("lenet5", "--output", str(path))
    assert result.exit_code == 0 and "live_bytes" in path.read_text().splitlines()[0]


@pytest.mark.parametrize("train", [False, True])
def test_memory_fit_answers_a_batch_that_fits_and_one_more_that_does_not(train):
    mode = ["--train", "--optimizer", "adam"] if train else []
    kwargs = {"training": True, "optimizer": "adam"} if train else {}
    result = invoke("lenet5", "--fit", "3MB", "-f", "json", *mode)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    batch = document["totals"]["input_shapes"][0][0]
    assert f"fits in 3.00 MB: {batch} " in result.stderr
    fits = predicted_bytes(archprof.analyze("lenet5", batch=batch, **kwargs))
    needs = predicted_bytes(archprof.analyze("lenet5", batch=batch + 1, **kwargs))
    assert fits <= 3_000_000 < needs
    assert document["batch_fit"] == {
        "budget_bytes": 3_000_000,
        "batch": batch,
        "bytes_at_batch": fits,
        "bytes_at_next_batch": needs,
        "budget_in_binary_units": False,
    }
    table = invoke("lenet5", "--fit", "3MB", *mode)
    assert "Largest batch that fits" in table.stdout and f"{batch + 1} needs" in table.stdout


def test_a_budget_in_binary_units_is_shown_back_in_them():
    """--fit 3MiB read back as 3.15 MB: the user never saw 3 MiB again."""
    result = invoke("lenet5", "--fit", "3MiB", "-f", "json")
    assert result.exit_code == 0, result.output
    fit = json.loads(result.stdout)["batch_fit"]
    assert fit["budget_bytes"] == 3 * 2**20 and fit["budget_in_binary_units"] is True
    assert f"fits in 3.00 MiB: {fit['batch']} ({fit['bytes_at_batch'] / 2**20:.2f} MiB; " in result.stderr
    table = invoke("lenet5", "--fit", "3MiB").stdout
    budget = next(line for line in table.splitlines() if "Budget" in line)
    assert "3.00 MiB" in budget and f"{3 * 2**20:,} B" in budget
    peak = next(line for line in table.splitlines() if "Peak inference memory" in line)  # not MB beside MiB
    assert f"{fit['bytes_at_batch'] / 2**20:.2f} MiB" in peak
    refused = invoke("lenet5", "--fit", "100KiB")
    assert refused.exit_code == 2 and "not even batch 1 fits in 100.00 KiB: lenet5 needs" in refused.stderr
    # The layer rows too (mobilenet_v2 in 512MiB showed a layer's 518.82 MB beside the 512.00 MiB budget):
    # each row's live bytes, from the report's column, in KiB or MiB.
    rows = json.loads(result.stdout)["layers"]
    for row in rows:
        line = next((line for line in table.splitlines() if line.split()[:1] == [row["layer"]]), None)
        if line is not None and row["live_bytes"]:
            live = row["live_bytes"]
            assert (f"{live / 2**20:.2f} MiB" if live >= 2**20 else f"{live / 2**10:.2f} KiB") in line, line
            assert "MB" not in line and "kB" not in line, line


def test_fit_batch_takes_a_size_as_the_cli_reads_it():
    """fit_batch("lenet5", "3MiB") and 3e6 said 'the memory budget must be a whole number of
    bytes', where --fit takes both: the same answers as the bytes, binary units kept."""
    in_bytes = fit_batch("lenet5", 3 * 2**20, binary=True)
    as_text = fit_batch("lenet5", "3MiB")
    assert (as_text.batch, as_text.budget_bytes, as_text.binary) == (in_bytes.batch, 3 * 2**20, True)
    assert fit_batch("lenet5", 3e6).batch == fit_batch("lenet5", 3_000_000).batch
    with pytest.raises(ArchprofError, match="cannot read the size '-1GB'"):
        fit_batch("lenet5", "-1GB")


def test_memory_fit_never_shows_the_next_batch_needing_the_budget_itself():
    """resnet18 in 16GiB: batch 2439 needs 17,179,893,568 B, over the 17,179,869,184 B
    budget, and both read "17.18 GB": "fits in 17.18 GB ... batch 2439 needs 17.18 GB"
    read as if it fitted. Where the two read the same, the bytes are given."""
    found = fit_batch("resnet18", 16 * 2**30)
    table = invoke("resnet18", "--fit", "16GiB")
    assert table.exit_code == 0, table.output
    assert f"{found.batch + 1} needs {found.bytes_at_next:,} B" in table.stdout
    result = invoke("resnet18", "--fit", "16GiB", "-f", "json")
    assert f"batch {found.batch + 1} needs {found.bytes_at_next:,} B)" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fit", "1kB"], "not even batch 1 fits in 1.00 kB: lenet5 needs"),
        (["--fit", "16 GBs"], "--fit: cannot read the size '16 GBs'"),
        (["--fit", "0"], "--fit: the size '0' must be more than 0 bytes"),
        (["--fit", "1GB", "--batch", "4"], "--fit finds the batch itself"),
        (["--batch", "0"], "'--batch' / '-b': must be at least 1, got 0"),
        (["--batch", "-2"], "'--batch' / '-b': must be at least 1, got -2"),
        (["--train", "--optimizer", "lamb"], "unknown optimizer 'lamb'"),
        (["--optimizer", "adam"], "add --train"),
        (["--optimizer", "adamx"], "unknown optimizer 'adamx'"),  # not "add --train", which would not mend it
        (["--weights", ""], "'--weights' / '-w': it is empty: give a file name"),  # Path('') read as '.'
    ],
)
def test_memory_command_errors_are_one_line_with_exit_2(args, message):
    result = invoke("lenet5", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="measures on the CPU where there is no GPU")
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_measure_on_the_cpu_agrees_with_the_prediction(name):
    """Without a GPU, the peaks come from the CPU allocator's own events (torch.profiler).
    An SGD step's peak is in the backward pass, which the analysis models op by op: equal
    to the byte. The forward's: within its BatchNorms' per-channel statistics, which the
    CPU kernel frees before returning and the graph holds for the length of the op.
    (Counting the gradients of the step before as held, though zero_grad frees them first,
    would read about 1.4x.)"""
    from archprof.load import load_model
    from archprof.measure.peak_memory import predicted_and_measured

    measured = predicted_and_measured(load_model(name), [(3, 64, 64)], 2, None, "sgd")
    assert "threads" in measured.device  # the CPU, by name
    forward, step = measured.steps
    assert step.measured.bytes == step.predicted_bytes
    assert 0 <= forward.predicted_bytes - forward.measured.bytes <= 1024
    result = invoke("lenet5", "--measure")
    assert result.exit_code == 0, result.output
    assert "Measured on" in result.stdout and "Training step (sgd)" in result.stdout


class ScaledByAPlainAttribute(nn.Module):
    """Multiplies by a tensor it holds as a plain attribute (neither a parameter nor a buffer),
    made before any forward: an 8x16x16 scale (8,192 B), read last or, `late`, after the
    peak (a wide convolution's map, narrowed by a 1x1 one)."""

    def __init__(self, late: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 64 if late else 8, 3, padding=1)
        self.narrow = nn.Conv2d(64, 8, 1) if late else nn.Identity()
        self.scale = torch.ones(8, 16, 16)

    def forward(self, x):
        return self.narrow(self.conv(x)) * self.scale


@pytest.mark.skipif(torch.cuda.is_available(), reason="measures on the CPU where there is no GPU")
@pytest.mark.parametrize("late", [False, True], ids=["read last", "read after the peak"])
def test_a_plain_tensor_attribute_is_held_from_before_the_run(late):
    """The scale exists before the run, as the weights and the input do. The oracle: what they
    hold, the scale's 8,192 B included, plus the most torch.profiler's allocations during the
    run held above it (a forward; a forward and backward pass, SGD's update writing in place).
    Inference and the training step measure and predict it exactly. The measurement read
    8,192 B low where it held only parameters, buffers, inputs and optimizer state from before
    the run; the prediction too where the scale is read after the peak, held from its reader on."""
    from archprof.load import load_model
    from archprof.measure.peak_memory import predicted_and_measured

    make = partial(ScaledByAPlainAttribute, late)
    forward, step = predicted_and_measured(load_model(make), [(3, 16, 16)], 2, None, "sgd").steps
    model, x = make(), torch.randn(2, 3, 16, 16)
    held = sum(t.nbytes for t in (*model.parameters(), model.scale, x))
    assert model.scale.nbytes == 8_192
    inference = held + profiled_peaks(model, x)[1]
    training = held + profiled_training_peaks(model, x)[1]  # SGD's update writes in place: no more
    assert forward.measured.bytes == forward.predicted_bytes == inference
    assert step.measured.bytes == step.predicted_bytes == training


class ScaledByAViewOfItsParameter(nn.Module):
    """Multiplies by a plain attribute that views a parameter's memory (`detach()` shares its
    storage): an 8x16x16 scale the forward reads, the parameter itself never."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.table = nn.Parameter(torch.ones(8, 16, 16))
        self.scale = self.table.detach()

    def forward(self, x):
        return self.conv(x) * self.scale


@pytest.mark.skipif(torch.cuda.is_available(), reason="measures on the CPU where there is no GPU")
def test_a_plain_attribute_viewing_a_parameter_holds_no_bytes_of_its_own():
    """The scale is the parameter's memory, which the weights already hold: the oracle, what the
    parameters and the input hold plus the most torch.profiler's allocations during the run
    held above them, counts its 8,192 B once. Prediction and measurement counted them twice, as
    a plain attribute's own and as the parameter's."""
    from archprof.load import load_model
    from archprof.measure.peak_memory import predicted_and_measured

    forward, step = predicted_and_measured(load_model(ScaledByAViewOfItsParameter), [(3, 16, 16)], 2, None, "sgd").steps
    model, x = ScaledByAViewOfItsParameter(), torch.randn(2, 3, 16, 16)
    assert model.scale.untyped_storage().data_ptr() == model.table.untyped_storage().data_ptr()
    held = sum(t.nbytes for t in (*model.parameters(), x))
    assert forward.measured.bytes == forward.predicted_bytes == held + profiled_peaks(model, x)[1]
    assert step.measured.bytes == step.predicted_bytes == held + profiled_training_peaks(model, x)[1]


class ReadingAHalfPrecisionTable(nn.Module):
    """A float32 convolution times a float16 table, detached: through a plain attribute that views
    it (`through_view`), or by the forward itself."""

    def __init__(self, through_view: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.table = nn.Parameter(torch.ones(8, 16, 16, dtype=torch.float16))
        self.scale = self.table.detach() if through_view else None

    def forward(self, x):
        return self.conv(x) * (self.table.detach() if self.scale is None else self.scale)


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_a_view_of_a_parameter_the_cast_leaves_as_it_is_holds_no_bytes_of_its_own(training):
    """Cast to float16, the convolution is traced on stand-ins; the table, float16 already, is
    one too, which `model.to` would leave in its memory: the view still reads it. The oracle,
    the same model detaching the table in its forward (a view the trace sees made): the same
    bytes, to the one."""
    through_view, itself = (
        archprof.analyze(
            partial(ReadingAHalfPrecisionTable, through_view),
            input_size=(3, 16, 16),
            batch=2,
            dtype=torch.float16,
            training=training,
        ).totals
        for through_view in (True, False)
    )
    assert through_view.peak_memory_bytes == itself.peak_memory_bytes
    if training:
        assert through_view.training_peak_bytes == itself.training_peak_bytes


def test_the_measured_table_has_a_workspace_column_where_the_measurement_has_one():
    """CUDA's counter holds workspace in its one figure: no second column, and the caption
    says what the figure includes (drawn here without a GPU, from the figures alone)."""
    from rich.console import Console

    from archprof.measure.peak_memory import MeasuredMemory, MeasuredStep, Peak
    from archprof.render import measured_table

    def drawn(peak: Peak) -> str:
        console = Console(width=200, record=True)
        console.print(measured_table(MeasuredMemory("a device", (MeasuredStep("Inference peak", 2_000_000, peak),))))
        return console.export_text()

    cpu, cuda = drawn(Peak(1_000_000, 2_000_000)), drawn(Peak(2_100_000))
    assert "With workspace" in cpu and "2.00 MB" in cpu and "0.500" in cpu
    assert "With workspace" not in cuda and "kernel workspace included" in cuda and "1.050" in cuda


@pytest.mark.skipif(torch.cuda.is_available(), reason="measures on the CPU where there is no GPU")
def test_measure_on_the_cpu_shows_the_peak_with_and_without_workspace():
    """An einsum's permuted copy, made and freed inside the operator, is the einsum's workspace
    to the CPU allocator (torch.profiler's events, the oracle) and to the analysis, which runs
    it as one CPU operator: the predicted inference peak is the measurement without workspace,
    below the one with it (above it, 32,768 B, where the copy was an operator of its own).
    cdist's copies of its operands are operators of their own to the analysis and cdist's
    workspace to the allocator: its prediction lies between the two (32,768 B over the one
    without). The table shows both figures, as do the note lines of a run written to a file and
    its JSON."""
    from archprof.load import load_model
    from archprof.measure.peak_memory import predicted_and_measured

    forward, step = predicted_and_measured(load_model(MixedByEinsum), [(3, 16, 16)], 2, None, "sgd").steps
    assert forward.measured.bytes == forward.predicted_bytes < forward.measured.with_workspace
    assert step.measured.bytes == step.predicted_bytes <= step.measured.with_workspace
    forward, _ = predicted_and_measured(load_model(DistancesByCdist), [(3, 16, 16)], 2, None, "sgd").steps
    assert forward.measured.bytes + 32_768 == forward.predicted_bytes < forward.measured.with_workspace
    result = invoke("lenet5", "--measure")
    assert result.exit_code == 0, result.output
    shown = " ".join(result.stdout.split())
    assert "With workspace" in shown and "the prediction lies between the two" in shown
    result = invoke("lenet5", "--measure", "--format", "csv")
    assert result.exit_code == 0, result.output
    note = r"Inference peak: predicted [\d,]+ B, measured [\d,]+ B \([\d,]+ B with workspace\)"
    assert re.search(note, result.output)
    result = invoke("lenet5", "--measure", "--format", "json")  # the figures in the document too
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    forward, step = document["measured_memory"]["steps"]
    assert forward["predicted_bytes"] == document["totals"]["peak_memory_bytes"]
    assert forward["measured_bytes"] <= forward["measured_with_workspace_bytes"]
    assert step["what"] == "Training step (sgd)" and step["measured_bytes"] == step["predicted_bytes"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3).requires_grad_(False)),  # nothing to train
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(0), nn.Softmax(0)).requires_grad_(False),
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.LazyLinear(2)),  # a lazy layer, made by the forward
    ],
    ids=["frozen", "no gradient out", "lazy"],
)
def test_measure_runs_the_steps_a_model_has(make):
    """A step with nothing to train has no update (the optimizer refused an empty parameter
    list), one whose outputs need no gradient no backward pass; a lazy layer holds nothing
    before its first call (reading its size raised)."""
    from archprof.analysis import analysis
    from archprof.load import load_model
    from archprof.measure.peak_memory import measure_memory

    measured = measure_memory(analysis(load_model(make), (3, 8, 8), 1, None))
    assert measured.inference.bytes > 0 and measured.training.bytes >= measured.inference.bytes // 2


def _lazy_net() -> nn.Module:
    return nn.Sequential(
        nn.LazyConv2d(8, 3, padding=1), nn.LazyBatchNorm2d(), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10)
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="measures on the CPU where there is no GPU")
def test_measure_reads_a_lazy_model_after_the_call_that_makes_its_weights():
    """The oracle: torch.profiler over a forward after a first one (which made the lazy
    layers' weights), from the weights and the input held: equal to the prediction. The
    first call alone would read low, its weights not yet made at its peak."""
    from archprof.analysis import analysis
    from archprof.load import load_model
    from archprof.measure.peak_memory import measure_memory

    analysed = analysis(load_model(_lazy_net), (3, 16, 16), 2, None)
    measured = measure_memory(analysed, training=False)
    model, x = _lazy_net(), torch.randn(2, 3, 16, 16)
    _, lasting = profiled_peaks(model, x)  # after a first forward
    held = sum(t.nbytes for t in (*model.parameters(), *model.buffers())) + x.nbytes
    assert measured.inference.bytes == held + lasting == analysed.report.totals.peak_memory_bytes


def test_a_callers_lazy_module_is_profiled_on_a_copy():
    """Its weights, not yet made, cannot be copied: the copy's first call makes its own."""
    model = _lazy_net()
    report = archprof.profile(model, input_size=(3, 16, 16), warmup=1, repeat=1)
    assert report.totals.param_count == 8 * 3 * 9 + 8 + 16 + 8 * 16 * 16 * 10 + 10
    assert isinstance(model[0].weight, nn.parameter.UninitializedParameter)  # the caller's, left lazy


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_measure_reports_cuda_memory_beside_the_prediction():
    from archprof.analysis import analysis
    from archprof.load import load_model
    from archprof.measure.peak_memory import measure_memory

    inference = archprof.analyze("resnet18", batch=8).totals.peak_memory_bytes
    training = archprof.analyze("resnet18", batch=8, training=True, optimizer="adam").totals.training_memory_bytes
    measured = measure_memory(analysis(load_model("resnet18"), None, 8, None), optimizer="adam")
    # Loose bounds: the allocator rounds every block up to 512 bytes, cuDNN takes workspace,
    # and backward holds activation gradients the estimate leaves out.
    assert 0.8 * inference <= measured.inference.bytes <= 2 * inference
    assert 0.8 * training <= measured.training.bytes <= 2 * training
    result = invoke("resnet18", "--measure", "--batch", "8", "--train", "--optimizer", "adam")
    assert result.exit_code == 0, result.output
    assert "Measured on" in result.stdout and "Training step (adam)" in result.stdout


class KeepsFloat32(nn.Module):
    """Keeps a table in float32 when the model is cast (an `_apply` of its own, as timm's
    rotary embeddings keep theirs), so that bfloat16 features times it are float32."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 64)
        self.register_buffer("periods", torch.arange(64, dtype=torch.float32))

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self.periods.dtype != torch.float32:
            self.register_buffer("periods", self.periods.float())
        return self

    def forward(self, x):
        return self.linear(x) * self.periods


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_cast_leaves_what_a_modules_own_apply_keeps_as_model_to_does(dtype):
    """The stand-ins took every floating tensor to the dtype asked: the table was counted in
    half (128 of 256 B), and the product and the output in half where a CPU makes float32."""
    from tests.memory_oracle import profiled_peaks

    real = KeepsFloat32().to(dtype).eval()
    x = torch.randn(1, 64, dtype=dtype)
    with torch.no_grad():
        output = real(x)
    report = archprof.analyze(KeepsFloat32(), input_size=(64,), dtype=dtype)
    assert report.graph.outputs[0].dtype == output.dtype == torch.float32
    assert report.totals.buffer_bytes == real.periods.nbytes == 256
    _, lasting = profiled_peaks(real, x)
    assert report.totals.peak_activation_bytes == lasting + x.nbytes


class MonteCarloDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(32, 128), nn.Linear(128, 10)

    def forward(self, x):
        return self.second(F.dropout(self.first(x), 0.1, training=True))


def test_a_dropout_in_inference_lets_go_of_its_mask_inside_it():
    """A CPU runs aten::dropout as one operator, its random mask freed inside it: the peak
    held the mask through the product (10,240 B for 20 x 128 floats)."""
    from tests.memory_oracle import profiled_peaks

    model, x = MonteCarloDropout().eval(), torch.randn(20, 32)
    _, lasting = profiled_peaks(model, x)
    report = archprof.analyze(model, input_size=(32,), batch=20)
    assert report.totals.peak_activation_bytes == lasting + x.nbytes


class KeepsItsWeight(nn.Module):
    """Never casts its own weight (an `_apply` of its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 8))

    def _apply(self, fn, recurse=True):
        return self

    def forward(self, x):
        return x.to(self.weight.dtype) @ self.weight


class TiedAcrossACast(nn.Module):
    """The weight tied to a linear layer's, which casts it for both in `model.to(dtype)`."""

    def __init__(self) -> None:
        super().__init__()
        self.keeps = KeepsItsWeight()
        self.head = nn.Linear(8, 8, bias=False)
        self.head.weight = self.keeps.weight

    def forward(self, x):
        return self.head(self.keeps(x))


class Locked(nn.Module):
    """An `_apply` of its own that casts as nn.Module's does, beside a lock deepcopy refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 8)
        self.lock = threading.Lock()

    def _apply(self, fn, recurse=True):
        return super()._apply(fn, recurse)

    def forward(self, x):
        return self.linear(x)


@pytest.mark.parametrize("build", [KeepsItsWeight, TiedAcrossACast, Locked])
def test_a_cast_is_model_to_s_across_tied_weights_and_uncopyable_attributes(build):
    """A model that cannot be deep-copied (the lock) raised a bare TypeError; a weight tied
    across the module that keeps its own was left in float32, where the linear layer's cast
    reaches it (256 B where model.to(float16) holds 128)."""
    real = build().to(torch.float16)
    report = archprof.analyze(build(), input_size=(8,), dtype=torch.float16)
    assert report.totals.param_bytes == sum(parameter.nbytes for parameter in real.parameters())
    with torch.no_grad():
        assert report.graph.outputs[0].dtype == real(torch.randn(1, 8, dtype=torch.float16)).dtype


@pytest.mark.parametrize("inplace", [False, True])
def test_an_in_place_dropout_in_inference_lets_go_of_its_mask_inside_it(inplace):
    from tests.memory_oracle import profiled_peaks

    model = nn.Sequential(nn.Linear(32, 128), InferenceDropout(inplace), nn.Linear(128, 10)).eval()
    x = torch.randn(20, 32)
    _, lasting = profiled_peaks(model, x)
    assert archprof.analyze(model, input_size=(32,), batch=20).totals.peak_activation_bytes == lasting + x.nbytes


class InferenceDropout(nn.Module):
    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        return F.dropout(x, 0.1, training=True, inplace=self.inplace)


@pytest.mark.parametrize(
    "build",
    [
        partial(CheckpointedBlocks, blocks=2),
        partial(CheckpointedBlocks, blocks=2, reentrant=True),
        NestedCheckpoints,
        partial(CheckpointedBlocks, blocks=2, preserve_rng_state=False),
    ],
    ids=["non-reentrant", "reentrant", "nested", "no random state kept"],
)
def test_a_checkpointed_forward_holds_its_random_number_states_in_inference_too(build):
    """checkpoint takes the CPU's random-number state (5,056 B) as a block starts, grad on or
    off, and holds it until the block returns: the real forward's peak, 5,056 B a block (two
    nested) short before."""
    torch.manual_seed(0)
    model, x = build().eval(), torch.randn(2, 3, 16, 16)
    _, lasting = profiled_peaks(model, x)
    held = sum(t.nbytes for t in (*model.parameters(), *model.buffers()))
    report = archprof.analyze(model, input_size=(3, 16, 16), batch=2)
    assert report.totals.peak_memory_bytes == held + lasting + x.nbytes
