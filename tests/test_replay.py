"""archprof.tracing.replay: a block copied from an earlier call records what its forward would have.

The oracle is the same trace with no block copied (`_no_copies`), every forward running; or,
where a test says so, under a torch-function mode that passes every call through (`Passing`,
as in test_shortcuts), which copies none either (but under which nn.MultiheadAttention, as
on any device, does not take its inference fast path). A spy on
`archprof.tracing.replay._copy` counts the copies, so that each test says which way its trace went."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import archprof
import archprof.tracing.replay
from archprof.tracing.trace import trace
from tests.memory_oracle import profiled_peaks

F = torch.nn.functional


class Passing(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.fixture
def copies(monkeypatch) -> list:
    """The calls copied: (the path copied to, from the path recorded)."""
    made = []
    original = archprof.tracing.replay._copy

    def spy(recording, recorder, path, args, kernels):
        output = original(recording, recorder, path, args, kernels)
        if output is not None:
            made.append((path, recording.start.path))
        return output

    monkeypatch.setattr(archprof.tracing.replay, "_copy", spy)
    return made


@contextlib.contextmanager
def _no_copies():
    """Every block's forward runs: `_copy` declines each call (as it does one it cannot copy)."""
    copying = archprof.tracing.replay._copy
    archprof.tracing.replay._copy = lambda *args: None
    try:
        yield
    finally:
        archprof.tracing.replay._copy = copying


def _traced_both_ways(model: nn.Module, *shapes, dtype=None):
    model = model.to("meta").eval()
    twin = copy.deepcopy(model)  # as it was: a forward may change its state
    copied = trace(model, list(shapes), dtype=dtype)
    with _no_copies():
        ran = trace(twin, list(shapes), dtype=dtype)
    assert repr(copied) == repr(ran)
    return copied


class Attention(nn.Module):
    """Self-attention written out, as many models do: a dozen operators in four calls."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        batch, tokens, dim = x.shape
        qkv = self.qkv(self.norm(x)).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attention = (q @ k.transpose(-2, -1) * (dim // self.heads) ** -0.5).softmax(-1)
        return x + self.proj((attention @ v).transpose(1, 2).reshape(batch, tokens, dim))


def test_repeated_attention_blocks_are_copied_and_record_what_they_run(copies):
    model = nn.Sequential(*[Attention(16, 4) for _ in range(4)])
    graph = _traced_both_ways(model, (2, 10, 16))
    # The first call of a kind is not recorded: most are the only one (a stage, an encoder).
    assert copies == [("2", "1"), ("3", "1")]
    # The copies' parameters are their own modules'.
    read = {t.name for op in graph.ops if op.module.path.startswith("3") for t in op.inputs if t.kind == "parameter"}
    assert read == {"3.qkv.weight", "3.qkv.bias", "3.proj.weight", "3.proj.bias", "3.norm.weight", "3.norm.bias"}


class CosineGate(nn.Module):
    """Attention gated by a cosine similarity: a composite a CPU runs as one operator, whose
    temporaries are that operator's workspace (`OpNode.workspace`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attention = Attention(dim, 4)

    def forward(self, x):
        y = self.attention(x)
        return y * F.cosine_similarity(x, y, dim=-1).unsqueeze(-1)


def test_copies_keep_the_workspace_of_one_cpu_operator(copies):
    """A copied block's cosine similarity counted its temporaries again (the copy left its
    `workspace` out): 110,596 B of inference peak where a CPU holds 71,680."""
    model = nn.Sequential(*[CosineGate(16) for _ in range(4)])
    graph = _traced_both_ways(model, (2, 10, 16))
    assert copies == [("2", "1"), ("3", "1")]
    noted = [op for op in graph.ops if op.workspace]
    # each block's layer norm (its mean and rstd), two matmuls over permuted heads (their copies)
    # and cosine similarity (its temporaries)
    assert [op.module.path for op in noted] == [
        path for block in "0123" for path in (f"{block}.attention.norm", *[f"{block}.attention"] * 2, block)
    ]
    made = {t.storage for op in graph.ops for t in op.outputs}
    assert all(set(op.workspace) <= made for op in noted)  # the copy's own storages, not the recording's
    real, x = nn.Sequential(*[CosineGate(16) for _ in range(4)]).eval(), torch.randn(2, 10, 16)
    _, lasting = profiled_peaks(real, x)
    assert archprof.analyze(real, input_size=(10, 16), batch=2).totals.peak_activation_bytes == lasting + x.nbytes


def test_blocks_of_layers_the_shortcuts_answer_are_run_not_copied(copies):
    # Comparing their modules would cost what running them does (a ResNet bottleneck too).
    blocks = [nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()) for _ in range(4)]
    _traced_both_ways(nn.Sequential(*blocks), (1, 8, 6, 6))
    assert copies == []


class ConvBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)

    def forward(self, x):
        return x + self.norm(self.conv(x))  # one operator of its own for two calls the shortcuts answer


def test_a_class_not_worth_copying_is_known_from_its_first_call(copies, monkeypatch):
    """Its first call is counted, not recorded: no call of it takes a state, which would
    walk every module under it (its second call did, before it was known)."""
    taken = []
    state_of = archprof.tracing.replay.state_of
    monkeypatch.setattr(archprof.tracing.replay, "state_of", lambda module: taken.append(module) or state_of(module))
    _traced_both_ways(nn.Sequential(*[ConvBlock() for _ in range(4)]), (1, 8, 6, 6))
    assert copies == [] and taken == []


def test_copies_of_torch_transformer_layers_keep_kernels_and_shapes(copies):
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
    model = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
    graph = _traced_both_ways(model, (2, 7, 32))
    assert len(copies) == 2
    # Each layer takes its inference fast path, one operator, copies too.
    assert sum(op.op == "aten._transformer_encoder_layer_fwd" for op in graph.ops) == 4
    assert not graph.kernels  # no scaled-dot-product attention to choose a kernel for


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_copies_in_half_precision_and_a_cpu_built_model(copies, dtype):
    model = nn.Sequential(*[Attention(8, 2) for _ in range(3)])  # on the CPU: traced through stand-ins
    twin = copy.deepcopy(model)
    traced = trace(model.eval(), [(1, 5, 8)], dtype=dtype)
    with Passing():
        ran = trace(twin.eval(), [(1, 5, 8)], dtype=dtype)
    assert repr(traced) == repr(ran)
    assert copies and model[0].qkv.weight.device.type == "cpu"


class InPlace(nn.Module):
    """Writes its input in place, and returns it or a tuple with it."""

    def __init__(self, returns: str) -> None:
        super().__init__()
        self.returns = returns
        self.scale = nn.Parameter(torch.ones(6))
        self.gate = nn.Linear(6, 6)

    def forward(self, x):
        x.mul_(2).add_(1)
        y = torch.sigmoid(self.gate(x)) * self.scale + x.mean(-1, keepdim=True)
        if self.returns == "input":
            return x
        if self.returns == "tuple":
            return y, x, y
        return [y.exp(), y]


@pytest.mark.parametrize("returns", ["input", "tuple", "list"])
def test_in_place_writes_to_the_input_and_returned_structures(copies, returns):
    class Chain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(InPlace(returns) for _ in range(4))

        def forward(self, x):
            outputs = []
            for block in self.blocks:
                out = block(x.clone())
                outputs.append(out)
                x = out if isinstance(out, torch.Tensor) else out[0]
            return x, outputs[0]

    _traced_both_ways(Chain(), (3, 6))
    assert copies == [("blocks.2", "blocks.1"), ("blocks.3", "blocks.1")]


def test_a_block_called_again_is_copied_from_its_own_earlier_call(copies):
    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = Attention(8, 2)

        def forward(self, x):
            for _ in range(4):
                x = self.block(x)
            return x

    graph = _traced_both_ways(Recurrent(), (1, 6, 8))
    assert copies == [("block", "block")] * 2
    assert [c.call for c in graph.module_calls if c.path == "block"] == [0, 1, 2, 3]


class Counting(Attention):
    """Keeps a count of its calls (a plain attribute its forward changes)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__(dim, heads)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x) * self.calls


class LazyTable(Attention):
    """Makes a table on its first call and keeps it (timm's ConViT does): a tensor attribute."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__(dim, heads)
        self.table = None

    def forward(self, x):
        if self.table is None:
            self.table = torch.zeros(x.shape[1], device=x.device)
        return super().forward(x) + self.table[:, None]


OUTSIDE = torch.ones(8, device="meta")


class ReadsOutside(Attention):
    def forward(self, x):
        return super().forward(x) + OUTSIDE  # a tensor from outside the block


class ReturnsView(Attention):
    """Returns a view, another's storage beneath it: a copy's output lies in storage alike."""

    def forward(self, x):
        y = super().forward(x)
        return torch.cat([y, y])[len(y) :].transpose(0, 1)  # its storage twice its size, and offset


class ReadsNeighbour(nn.Module):
    """Reads another module's parameter, reached through a plain attribute."""

    def __init__(self, neighbour: nn.Linear) -> None:
        super().__init__()
        self.inner = Attention(8, 2)
        self.__dict__["neighbour"] = neighbour  # not a submodule

    def forward(self, x):
        return self.inner(x) @ self.neighbour.weight


@pytest.mark.parametrize(
    "make",
    [
        lambda i: Counting(8, 2),
        lambda i: LazyTable(8, 2),
        lambda i: ReadsOutside(8, 2),
        lambda i: Attention(8, [1, 2, 4, 8][i]),  # another plain attribute: not one block
    ],
    ids=["changes its state", "keeps a tensor", "reads a tensor from outside", "differs"],
)
def test_blocks_that_cannot_be_copied_run_their_forward(copies, make):
    _traced_both_ways(nn.Sequential(*[make(i) for i in range(4)]), (2, 6, 8))
    assert copies == []


def test_views_returned_are_made_alike(copies):
    model = nn.Sequential(*[ReturnsView(8, 2) for _ in range(4)])
    _traced_both_ways(model, (6, 6, 8))
    assert copies == [("3", "2")]  # "0" is fed a contiguous tensor, the others a view


class WithPositions(Attention):
    """Returns a table of positions it makes on the CPU beside its output (models do, for indices)."""

    def forward(self, x):
        return super().forward(x), torch.arange(x.shape[1])


def test_a_block_returning_a_cpu_tensor_is_not_copied(copies):
    class UsesPositions(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(WithPositions(8, 2) for _ in range(3))

        def forward(self, x):
            for block in self.blocks:
                x, positions = block(x)
                x = x[:, : int(positions.max()) + 1]  # reads the table's values: a CPU tensor's
            return x

    graph = _traced_both_ways(UsesPositions(), (1, 5, 8))
    assert copies == [] and graph.outputs[0].shape == (1, 5, 8)


def test_a_block_reading_a_tensor_met_before_it_is_not_copied(copies):
    class SeenFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.Sequential(*[ReadsOutside(8, 2) for _ in range(3)])

        def forward(self, x):
            return self.blocks(x * OUTSIDE)  # the constant is the trace's before any block reads it

    _traced_both_ways(SeenFirst(), (2, 6, 8))
    assert copies == []


class Settings:
    """An object the blocks share and the model changes between them: nothing says it acts alike."""

    scale = 1.0


class Scaled(Attention):
    def __init__(self, dim: int, heads: int, settings: Settings) -> None:
        super().__init__(dim, heads)
        self.settings = settings

    def forward(self, x):
        return super().forward(x) * self.settings.scale


def test_blocks_sharing_an_object_are_not_taken_for_alike(copies):
    class Changing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.settings = Settings()
            self.blocks = nn.ModuleList(Scaled(8, 2, self.settings) for _ in range(3))

        def forward(self, x):
            for i, block in enumerate(self.blocks):
                self.settings.scale = float(i + 2)
                x = block(x)
            return x

    _traced_both_ways(Changing(), (2, 6, 8))
    assert copies == []


def test_a_block_reading_another_modules_parameter_is_not_copied(copies):
    head = nn.Linear(8, 8)
    model = nn.Sequential(head, *[ReadsNeighbour(head) for _ in range(3)])
    _traced_both_ways(model, (1, 5, 8))
    assert copies == [("3.inner", "2.inner")]  # the attention inside still is


def test_tied_weights_a_shared_submodule_and_hooks_turn_copying_off(copies):
    with torch.device("meta"):  # tied on meta: moving a model there unties it
        tied = nn.Sequential(*[Attention(8, 2) for _ in range(3)])
    tied[2].proj.weight = tied[1].proj.weight
    _traced_both_ways(tied, (1, 5, 8))
    assert copies == []

    shared = nn.Sequential(*[Attention(8, 2) for _ in range(3)])
    shared[2].norm = shared[1].norm  # one module under two names
    _traced_both_ways(shared, (1, 5, 8))
    assert copies == []

    hooked = nn.Sequential(*[Attention(8, 2) for _ in range(4)])
    seen = []
    hooked[2].register_forward_hook(lambda module, args, output: seen.append(output.shape))
    _traced_both_ways(hooked, (1, 5, 8))
    assert copies == [("3", "1")] and len(seen) == 2  # the hooked block runs, hook and all, both times
    copies.clear()
    handle = nn.modules.module.register_module_forward_hook(lambda module, args, output: seen.append(type(module)))
    try:
        _traced_both_ways(nn.Sequential(*[Attention(8, 2) for _ in range(3)]), (1, 5, 8))
    finally:
        handle.remove()
    assert copies == [] and seen.count(nn.Linear) == 2 * 6


def test_inputs_of_another_layout_or_dtype_are_not_taken_for_alike(copies):
    class TwoLayouts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(Attention(8, 2) for _ in range(4))

        def forward(self, x):
            x = self.blocks[0](x)
            x = self.blocks[1](x.transpose(0, 1).contiguous().transpose(0, 1))  # other strides
            x = self.blocks[2](x.contiguous())
            return self.blocks[3](x)

    _traced_both_ways(TwoLayouts(), (3, 6, 8))
    assert copies == [("blocks.3", "blocks.2")]  # "blocks.0" the first fed a contiguous tensor


def test_no_copies_in_training_traces_nor_real_ones(copies):
    model = nn.Sequential(*[Attention(8, 2) for _ in range(3)])
    archprof.analyze(model, input_size=(5, 8), training=True)
    trace(model.eval(), [(1, 5, 8)], real=True)
    assert copies == []


def test_hub_transformers_give_the_same_graph_copied_or_not(copies, hub_packages, monkeypatch):
    torchvision, timm = hub_packages
    # ViT-B/16 and DeiT: 12 blocks alike, all but the first two copied; Swin-T: 2, 2, 6 and 2
    # blocks, shifted or not, their attention and MLP alike across the shift.
    for make, shape, copied in [
        (lambda: torchvision.models.vit_b_16(), (1, 3, 224, 224), 10),
        (lambda: timm.create_model("deit_tiny_patch16_224"), (2, 3, 224, 224), 10),
        (lambda: timm.create_model("swin_tiny_patch4_window7_224"), (1, 3, 224, 224), 5),
    ]:
        with torch.device("meta"):
            model = make()
        before = len(copies)
        _traced_both_ways(model, shape)
        assert len(copies) - before >= copied


# A copy is made from the state its recording began in, never from one its call or its
# parent changed; values are compared with their types; an argument's need of a gradient
# and its conjugate bit are part of the arguments.


class Counted(Attention):
    """Drops the first token from its second call on: its call changes its state."""

    def __init__(self) -> None:
        super().__init__(8, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        y = super().forward(x)
        return y[:, 1:] if self.calls >= 2 else y


class Flagged(Attention):
    def __init__(self) -> None:
        super().__init__(8, 2)
        self.extra = False

    def forward(self, x):
        y = super().forward(x)
        return y * y.sigmoid() if self.extra else y


class Toggling(nn.Module):
    """Sets the first block's flag for its call only, as a return-attention switch does."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Flagged() for _ in range(3))

    def forward(self, x):
        for i, block in enumerate(self.blocks):
            block.extra = i == 0
            x = block(x)
            block.extra = False
        return x


class Gate:
    """A callable object the blocks share, whose attribute the model changes between them."""

    def __init__(self) -> None:
        self.extra = False

    def __call__(self, y):
        return y * y.sigmoid() if self.extra else y


class Gated(Attention):
    def __init__(self, gate: Gate) -> None:
        super().__init__(8, 2)
        self.gate = gate

    def forward(self, x):
        return self.gate(super().forward(x))


class SharedGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = Gate()
        self.blocks = nn.ModuleList(Gated(self.shared) for _ in range(3))

    def forward(self, x):
        for i, block in enumerate(self.blocks):
            self.shared.extra = i > 0
            x = block(x)
        return x


class Sink(Attention):
    """Appends an auxiliary output to a list its parent holds and empties after each call."""

    def __init__(self, sink: list) -> None:
        super().__init__(8, 2)
        self.sink = sink

    def forward(self, x):
        y = super().forward(x)
        self.sink.append(y.mean())
        return y


class Sinks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.auxiliary = []
        self.blocks = nn.ModuleList(Sink(self.auxiliary) for _ in range(3))

    def forward(self, x):
        total = 0
        for block in self.blocks:
            x = block(x)
            total = total + self.auxiliary.pop()
        return x + total


class Stepped(Attention):
    def forward(self, x, step=1):
        return super().forward(x) + torch.arange(0, x.shape[-1], step, device=x.device)


class SteppedTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Stepped(8, 2) for _ in range(2))

    def forward(self, x):
        return self.blocks[1](self.blocks[0](x, step=1), step=1.0)  # a float arange


class Filled(Attention):
    def __init__(self, scales: list) -> None:
        super().__init__(8, 2)
        self.scales = scales

    def forward(self, x):
        return super().forward(x) * torch.full((x.shape[-1],), self.scales[0], device=x.device)


class Recounted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Counted()

    def forward(self, x):
        return self.block(self.block(x))


@pytest.mark.parametrize(
    "make",
    [
        Recounted,  # the same block again, after its call changed its counter
        Toggling,  # the first block's flag set for its call, put back after it
        SharedGate,  # a callable instance, compared by identity, changed between the blocks
        Sinks,  # a list the call appends to, empty again at the next block's call
        SteppedTwice,  # a keyword 1 then 1.0: an int64 then a float32 arange
        lambda: nn.Sequential(Filled([1, 1]), Filled([1.0, 1.0])),  # an int64 then a float32 full
    ],
    ids=[
        "own-counter",
        "flag-put-back",
        "callable-instance",
        "appended-list",
        "int-then-float-keyword",
        "int-then-float-list",
    ],
)
def test_a_block_is_not_copied_from_a_call_whose_state_or_values_differ(copies, make):
    graph = _traced_both_ways(make(), (1, 5, 8))  # the same graph copied or not
    real = make().eval()(torch.randn(1, 5, 8))
    assert graph.outputs[0].shape == tuple(real.shape)


def test_a_flag_put_back_after_the_call_is_still_copied_where_it_matches(copies):
    _traced_both_ways(Toggling(), (1, 5, 8))
    assert copies == [("blocks.2", "blocks.1")]  # not blocks.1 from the first block, which was flagged


class ByArgument(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, x, weight):
        y = self.norm(self.inner(x)).transpose(0, 1)  # a batch that is not contiguous
        return (y @ weight).transpose(0, 1).contiguous()


class WeightHandedOn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 8))
        self.blocks = nn.ModuleList(ByArgument() for _ in range(2))

    def forward(self, x):
        x = self.blocks[0](x, self.weight)  # needs a gradient: matmul folds the batch into one mm
        return self.blocks[1](x, self.weight * 1.0)  # made under no_grad: expanded into a bmm


def test_an_argument_needing_a_gradient_is_not_taken_for_one_that_does_not(copies):
    model = WeightHandedOn().eval()  # on the CPU: traced through stand-ins, which need a gradient as the parameters do
    graph = trace(model, [(2, 5, 8)])
    with _no_copies():
        assert repr(trace(copy.deepcopy(model), [(2, 5, 8)])) == repr(graph)
    assert copies == []
    operators = [op.op for op in graph.ops if op.op in ("aten.mm", "aten.bmm")]
    assert operators[-2:] == ["aten.mm", "aten.bmm"]  # as a real forward runs them


class Conjugated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(8, 8, dtype=torch.complex64)
        self.second = nn.Linear(8, 8, dtype=torch.complex64)

    def forward(self, x):
        return (self.second(self.first(x) * x) + x).conj()  # a lazy conjugate view


def test_conjugate_views_are_neither_arguments_alike_nor_copied(copies):
    model = nn.Sequential(*[Conjugated() for _ in range(3)])
    graph = _traced_both_ways(model, (2, 8), dtype=torch.complex64)
    # The clone PyTorch's math-bit fallback makes of each block's conjugate input (a real
    # forward's four: one in each of the two blocks after the first).
    assert sum(op.op == "aten.clone" for op in graph.ops) == 4
