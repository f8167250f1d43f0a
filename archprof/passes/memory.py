"""Memory per row: what is live after the row ran, the peak while it ran, what autograd
saves for the backward pass, and the size of the gradients of the row's parameters.

Liveness works on storages, not tensors: a view or an in-place result shares its base's
`TensorMeta.storage` and allocates nothing. A storage is live from the op that makes it
until its last reader has run [FORMULAS.md, Memory]:

- the network inputs are live from the start (until their last reader, like any tensor);
- the network outputs stay live until the end;
- in a training trace, what autograd saved stays live until the end of the forward (the
  backward pass reads it);
- a tensor the trace first sees as an argument (a plain tensor attribute of a module) is
  live from its first reader;
- parameters and buffers, and views of them, are never activations: they are live
  throughout and counted apart (`param_bytes`, `buffer_bytes`).

While an op runs, its inputs and its outputs are all live; right after it, the storages it
was the last reader of are freed. Bytes are counted per tensor in its own dtype, so a half
model with float32 BatchNorm statistics is counted exactly.

This is what an execution that frees every tensor promptly needs. Measured against
torch.profiler on the CPU (allocations that outlive the op that made them, batch 1, the
input held by the caller): ResNet-18, GoogLeNet, LeNet-5 within 0.01%. Eager Python can
hold more, which a dispatch trace cannot see: a module's caller keeps its argument until
the module returns and a local variable keeps a tensor until its function returns
(MobileNet-v2 +7.8%, DenseNet-121 +17.7%). A max-pool's argmax indices are counted, as the
meta and CUDA kernels make them; oneDNN on the CPU skips them for larger inputs (VGG-11
-28%, AlexNet -19%). Kernel workspace (cuDNN, oneDNN scratch buffers) is no activation and
is not counted, except where a kernel returns it for the backward pass.

The graph holds the kernels a CPU runs (`archprof.kernels`), not the meta device's
decompositions: fused attention saves its output and a log-sum-exp, not the L x L
attention matrix; oneDNN's LSTM also saves the workspace it returns while autograd records.
Saved activations then equal saved-tensor hooks on a CPU forward: an attention block at
L = 1024 1,314,816 bytes (the math decomposition: 5,242,880), torchvision's vit_b_16
118,160,680 (+31% before), timm's mobilevit_xxs 58,722,112 (+16% before), nn.LSTM(32, 48)
on a 10 x 32 sequence 57,216 (14,720 before)."""

from __future__ import annotations

from dataclasses import dataclass

from archprof.errors import ArchprofError
from archprof.graph import Graph
from archprof.passes.layers import LayerGroup

# Copies of the trainable parameters an optimizer keeps as state [FORMULAS.md, Memory]:
# plain SGD none, SGD with momentum its momentum buffer, Adam(W) two moment estimates.
# (Adam's per-parameter `step` counter, a scalar on the CPU by default, is left out.)
OPTIMIZER_STATE_COPIES = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}


def optimizer_state_copies(optimizer: str) -> int:
    try:
        return OPTIMIZER_STATE_COPIES[optimizer.lower()]
    except (KeyError, AttributeError):
        choices = ", ".join(OPTIMIZER_STATE_COPIES)
        raise ArchprofError(f"unknown optimizer '{optimizer}'; choose one of {choices}") from None


_STATE = ("parameter", "buffer")


@dataclass(frozen=True, slots=True)
class Liveness:
    """Live activation bytes over the graph's ops (parameters and buffers excluded)."""

    start: int  # before the first op: the network inputs
    during: list[int]  # while op i runs: everything live before it, plus its outputs
    after: list[int]  # right after op i, once what it read for the last time is freed
    end: int  # after the last op: the outputs (and, training, what autograd saved)
    storage_bytes: dict[int, int]  # activation storage -> bytes of the tensor that made it
    first_op: dict[int, int]  # activation storage -> the op that made or first read it (-1: none)


def model_state_storages(graph: Graph) -> set[int]:
    """Storages of parameters and buffers (views of them and in-place results included)."""
    state = {t.storage for op in graph.ops for t in op.inputs if t.kind in _STATE}
    state.update(t.storage for t in graph.saved if t.kind in _STATE)
    return state


def liveness(graph: Graph) -> Liveness:
    state = model_state_storages(graph)
    size: dict[int, int] = {}
    first: dict[int, int] = {}  # storage -> the first op that makes, reads or writes it
    last: dict[int, int] = {}  # storage -> the last op that reads or writes it
    inputs: set[int] = set()

    for tensor in graph.inputs:
        if tensor.storage not in size:
            size[tensor.storage], first[tensor.storage], last[tensor.storage] = tensor.nbytes, -1, -1
            inputs.add(tensor.storage)
    for op in graph.ops:
        for tensor in (*op.inputs, *op.outputs):
            storage = tensor.storage
            if storage in state:
                continue
            if storage not in size:  # made by this op (or first seen as its argument)
                size[storage] = tensor.nbytes
            if first.get(storage, -1) < 0:
                first[storage] = op.index
            last[storage] = op.index

    count = len(graph.ops)
    kept = [t.storage for t in graph.outputs]
    if graph.training:
        kept += [t.storage for t in graph.saved]
    for storage in kept:
        if storage in size:
            last[storage] = count

    # +bytes at the op that makes a storage, -bytes right after its last reader.
    made, freed = [0] * count, [0] * count
    start = live = sum(size[s] for s in inputs)
    for storage, nbytes in size.items():
        if storage in inputs:
            if last[storage] < 0:  # an input nothing reads: gone before the first op
                live -= nbytes
        else:
            made[first[storage]] += nbytes
        if 0 <= last[storage] < count:
            freed[last[storage]] += nbytes
    during, after = [], []
    for index in range(count):
        live += made[index]
        during.append(live)
        live -= freed[index]
        after.append(live)
    return Liveness(start, during, after, live, size, first)


def memory_columns(graph: Graph, groups: list[LayerGroup]) -> dict[str, list[int]]:
    """`live_bytes`, `peak_live_bytes`, `saved_activation_bytes` and `gradient_bytes` per row."""
    live = liveness(graph)
    live_after, peak_during = [], []
    state = live.start
    for group in groups:
        if group.ops:
            state = live.after[group.ops[-1].index]
            live_after.append(state)
            peak_during.append(max(live.during[op.index] for op in group.ops))
        else:  # a call that ran no op, or a module never called: the state at that point
            live_after.append(state)
            peak_during.append(state)
    return {
        "live_bytes": live_after,
        "peak_live_bytes": peak_during,
        "saved_activation_bytes": _saved_per_row(graph, groups, live),
        "gradient_bytes": _gradients_per_row(graph, groups),
    }


def saved_activations(graph: Graph, live: Liveness | None = None) -> dict[int, int]:
    """Storage -> bytes of every activation autograd saved, each storage once however many
    views of it were saved. Parameters and buffers (and views of them, such as the
    transposed weight a linear layer saves) are left out: they are counted as parameters."""
    live = live or liveness(graph)
    state = model_state_storages(graph)
    return {t.storage: live.storage_bytes.get(t.storage, t.nbytes) for t in graph.saved if t.storage not in state}


def _saved_per_row(graph: Graph, groups: list[LayerGroup], live: Liveness) -> list[int]:
    """A saved storage is charged to the row whose op made it (a network input: the row that
    first read it). Autograd saves an op's inputs before the op runs and its outputs after,
    so "the op running when it was saved" would be ambiguous; the maker is not."""
    row_of_op = {op.index: row for row, group in enumerate(groups) for op in group.ops}
    column = [0] * len(groups)
    for storage, nbytes in saved_activations(graph, live).items():
        column[row_of_op.get(live.first_op.get(storage, -1), 0)] += nbytes
    return column


def _gradients_per_row(graph: Graph, groups: list[LayerGroup]) -> list[int]:
    """Bytes of the gradients of trainable parameters, one per parameter in its dtype, on
    the row `param_count` puts the parameter on (the row that reads it first, else its
    module's first row or its nearest ancestor's)."""
    owner: dict[str, int] = {}
    first_row_of: dict[str, int] = {}
    for row, group in enumerate(groups):
        first_row_of.setdefault(group.path, row)
        for op in group.ops:
            for tensor in op.inputs:
                if tensor.kind == "parameter":
                    owner.setdefault(tensor.name, row)
    column = [0] * len(groups)
    for parameter in graph.parameters:
        if not parameter.trainable:
            continue
        row = owner.get(parameter.name)
        if row is None:
            path = parameter.module_path
            while path not in first_row_of and path:
                path = path.rpartition(".")[0]
            row = first_row_of.get(path, 0)
        column[row] += parameter.nbytes
    return column
