"""Memory per row: what is live after the row ran, the peak while it ran, what autograd
saves for the backward pass, and the size of the gradients of the row's parameters.

Liveness works on storages, not tensors: a view or an in-place result shares its base's
`TensorMeta.storage` and allocates nothing. A storage is live from the op that makes it
until its last reader has run or, where later, until the forward let go of its last tensor
object (`Graph.released`: the trace watches each die) [docs/formulas.md, Memory]:

- the network inputs are live from the start to the end (the caller holds them);
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

Eager Python holds a tensor longer than its last reader: a module's caller keeps its
argument until the module returns and a local variable keeps a tensor until its function
returns. The trace runs the same Python on meta tensors, so it sees when each tensor object
dies (`Recorder.released`); a peak holds each storage until then, in inference and in a
training step's forward (what autograd saved is held for the backward pass). Measured
against torch.profiler on the CPU (allocations that outlive the op that made them, batch 1,
the input held by the caller): ResNet-18, GoogLeNet, LeNet-5, MobileNet-v2, DenseNet-121 and
a small U-Net within 0.01% (the last reader alone read MobileNet-v2 7.8% low, DenseNet-121
17.7%, the U-Net 42%). A max-pool's argmax indices are counted, as the
meta and CUDA kernels make them; oneDNN on the CPU skips them for larger inputs (VGG-11
-28%, AlexNet -19%). Kernel workspace (cuDNN, oneDNN scratch buffers) is no activation and
is not counted, except where a kernel returns it for the backward pass.

The graph holds the kernels a CPU runs (`archprof.kernels`), not the meta device's
decompositions: fused attention saves its output and a log-sum-exp, not the L x L
attention matrix; oneDNN's LSTM also saves the workspace it returns while autograd records.
Saved activations then equal saved-tensor hooks on a CPU forward: an attention block at
L = 1024 1,314,816 bytes (the math decomposition: 5,242,880), torchvision's vit_b_16
118,160,680 (+31% before), timm's mobilevit_xxs 58,722,112 (+16% before), nn.LSTM(32, 48)
on a 10 x 32 sequence 57,216 (14,720 before).

A training step's peak (`training_timeline`) follows the same storages on through the
backward pass as the autograd engine runs it: saved tensors and incoming gradients released
once the autograd node that reads them has run, a node's own temporaries at the end of the
C++ statement that read them last, but a Python backward's (a custom torch.autograd.Function's)
when the trace saw their last object die, as Python frees them (an unnamed one right after the
op that read it, a local variable when the function returns), parameters' gradients kept in
`.grad`, the optimizer state (`OPTIMIZER_STATE_COPIES`) held throughout; then the optimizer's step,
from what the backward pass left (`TrainingTimeline.end`, the gradients of ones it started from
gone) plus its own temporaries
(`optimizer_step_temporaries`). Against torch.profiler on a real CPU step (allocations that outlive
the aten op that made them, the input held by the caller): equal to the byte for ResNet-18
(64 x 64, batch 2: 49,062,944 B), a residual block, conv and MLP stacks with and without a
frozen first layer, an attention block, an LSTM and MLP updates held in a list until the
forward returns (by the last-reader rule, its forward peak read 6% low), and checkpointed blocks,
reentrant or not, with the CPU random-number states checkpoint keeps (5,056 B each), made by no
aten op (`EngineNotes.random_states`): one per block (a non-reentrant one's until its last node
that saved a tensor has run, a reentrant one's until the caller lets go of the output), and one
more while a block is replayed (up to two states, 10,112 B, short before). timm's CoaT-Tiny at batch
2 with SGD: 414,300,672 B predicted against 414,300,880 measured (1.011x before its forward
held its MLPs' updates as it does); tf_efficientnet_lite2, whose "same" padding reads the
input and saves nothing, equal (1.0048x before the input was held to the end);
convformer_m36, whose downsampling convolutions read channels-last maps, equal (1.0013x
before their weight gradients were copied into the weights' layout, as AccumulateGrad does);
rexnet_150, whose blocks add their input to their first channels only, equal (6,664 B over
before the engine's sum into a channel slice of a gradient was counted as a new tensor);
eca_nfnet_l0, whose layers multiply by Python numbers, equal (744 B short before the 8-byte
tensor autograd keeps for each such number was counted: `EngineNotes.saved_numbers`);
convnextv2_pico equal (0.77% over before a node's temporaries, which its global response
norms' backward makes, were freed at their last reader); torchvision's efficientnet_b0 equal
(10,240 B over before the copies AccumulateGrad makes were told from CopySlices' clone, for
its in-place dropout on a view: `EngineNotes.grad_storages`); swinv2_tiny_window8_256 equal (6,144 B
over before a slice of its concatenated query-key-value bias's gradient was taken over as a
`.grad`, as AccumulateGrad does, though other slices of it are read later); timm's
resnetv2_50d_frn equal (401,408 B, 0.08%, short before a node's temporaries were held to the
end of their C++ statement: its TLU's backward, `where(x == tau, grad / 2, grad).masked_fill_(x
< tau, 0)`, holds a mask and a quotient until masked_fill_ has run), and efficientvit_b2 too
(149,568 B short: its attention divides by a normaliser, whose gradient
`-grad * ((v / s) / s)` holds both quotients and the negation until the product is made);
dla60x equal (802,816 B over before what a dead node saved was let go of with it: one of its
trees max-pools a map it then ignores, whose indices autograd saved); timm's memory-efficient
Swish (`SwishAutoFn`) between two convolutions equal at batch 8 (488,904 B with its weights;
three maps, 196,600 B, over before a Python backward's temporaries were freed as Python frees
them: its `grad * (s * (1 + x * (1 - s)))` held all six of its maps to the node's end), and
its Mish too, whose x_sigmoid, read last two ops before the return, would be a map short if
freed at its last reader."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

import torch

from archprof.graph import (
    WRAPPED_NUMBER_BYTES,
    FunctionCall,
    Graph,
    OpNode,
    ParameterInfo,
    TensorMeta,
    WrappedFloat,
    WrappedInt,
)
from archprof.optimizers import OPTIMIZERS, optimizer_model
from archprof.passes.layers import LayerGroup, consecutive_runs

# Copies of the trainable parameters each optimizer keeps as state [docs/formulas.md, Memory]:
# plain SGD none, SGD with momentum its momentum buffer, Adam(W) two moment estimates, ...
# (`archprof.optimizers.OPTIMIZERS`, where each optimizer is described).
OPTIMIZER_STATE_COPIES = {name: model.copies for name, model in OPTIMIZERS.items()}


def optimizer_step_temporaries(optimizer: str, parameter_bytes: list[int]) -> int:
    """The most the optimizer's step allocates beyond its state, its parameters (in the
    optimizer's order: the model's) each of `parameter_bytes`: on the CPU, PyTorch's default
    updates one parameter at a time, and each optimizer's `UpdatePhase`s say what one
    parameter's update holds at once (Adam: its denominator sqrt(v) / c, two new tensors of
    the parameter's size, the first freed once the second exists, while the previous
    parameter's denominator is still held, and the Python number c a tensor too, 8 B, while
    the division runs). Plain SGD updates in place. (CUDA's default, one update over all
    parameters at once, holds temporaries the size of all of them instead.)"""
    return optimizer_model(optimizer).step_temporaries(parameter_bytes)


def optimizer_state_bytes(optimizer: str, parameter_bytes: list[int]) -> int:
    """The state the optimizer keeps for the parameters it holds state for, each of
    `parameter_bytes`: `OptimizerModel.copies` copies of each, and its 0-dim scalars per parameter
    (Adam's step counter, NAdam's and its mu_product: `optimizer_scalar_bytes` each)."""
    model = optimizer_model(optimizer)
    return model.copies * sum(parameter_bytes) + len(model.scalars) * optimizer_scalar_bytes() * len(parameter_bytes)


def optimizer_scalar_bytes() -> int:
    """One 0-dim scalar of an optimizer's state (Adam's `state["step"]`): on the CPU (neither
    fused nor capturable, PyTorch's default there) a tensor of torch.optim's scalar dtype
    (`_get_scalar_dtype()`), float64 where the default dtype is float64, else float32,
    whatever the parameters' dtype."""
    return 8 if torch.get_default_dtype() == torch.float64 else 4


def optimizer_state_copies(optimizer: str) -> int:
    """Copies of the parameters the optimizer's state holds; an unknown name is an ArchprofError."""
    return optimizer_model(optimizer).copies


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
    """Storages of parameters and buffers (views of them and in-place results included), and
    of one the model returns as it is, which no forward op may read (a learnt scale returned
    beside the logits: the backward pass reads it to make its gradient of ones)."""
    state = {t.storage for op in graph.ops for t in op.inputs if t.kind in _STATE}
    state.update(t.storage for t in (*graph.saved, *graph.outputs) if t.kind in _STATE)
    return state


def _operator_workspace(*ops: list[OpNode]) -> set[int]:
    """The storages that are some CPU operator's workspace (`OpNode.workspace`), counted as none."""
    return {storage for steps in ops for op in steps for storage in op.workspace}


def liveness(graph: Graph) -> Liveness:
    """Live bytes over the forward (`Graph.ops`)."""
    kept = _held_by_the_caller(graph)
    if graph.training:
        kept.update(_held_for_backward(graph))
    numbers = _numbers_kept(graph, len(graph.ops))  # held for the backward pass
    numbers += _wrapped_numbers(graph)
    return _liveness(
        graph.ops,
        graph.inputs,
        kept,
        model_state_storages(graph) | _operator_workspace(graph.ops),
        released=graph.released,
        numbers=numbers,
        held_between=graph.engine.random_states,
    )


def _wrapped_numbers(graph: Graph) -> list[tuple[int, int, int]]:
    """Each number a forward op took where a tensor goes (`x * 0.5`, `torch.sub(1.0, x)`,
    marked `WrappedFloat` or `WrappedInt` in its arguments), as `_liveness` takes it: a
    tensor of its own while that op runs; unless autograd keeps it for the backward pass
    (`EngineNotes.saved_numbers`, held longer). NFNets multiply by such numbers: an
    inference peak 8 B short without them."""
    kept = {op for op, _ in graph.engine.saved_numbers}
    return _numbers_wrapped((index, op) for index, op in enumerate(graph.ops) if index not in kept)


def _wrapped_in_python(graph: Graph) -> list[tuple[int, int, int]]:
    """Each number an op of a Python backward took where a tensor goes (`1 + t` in timm's
    Swish backward), as `_wrapped_numbers` takes the forward's."""
    forward = len(graph.ops)
    return _numbers_wrapped((forward + i, graph.backward_ops[i]) for i in sorted(graph.engine.python_ops))


def _numbers_wrapped(steps: Iterable[tuple[int, OpNode]]) -> list[tuple[int, int, int]]:
    """Per number among the arguments of the ops (each with its step), as `_liveness` takes
    it: a tensor of its own while its op runs."""
    return [
        (step, step, WRAPPED_NUMBER_BYTES)
        for step, op in steps
        for argument in op.args
        if type(argument) in _WRAPPED_NUMBERS  # type(): twice isinstance's speed here
    ]


_WRAPPED_NUMBERS = frozenset({WrappedFloat, WrappedInt})


def _held_for_backward(graph: Graph) -> set[int]:
    """The storages autograd saved that it still holds when the forward ends. A node whose
    results nothing on the way to the outputs reads dies with its results, and what it saved
    with it: the trace saw them die (`Graph.released`), as DLA's unused max pool (its result
    ignored by the block it is passed to) lets go of its indices at once."""
    return {t.storage for t in graph.saved if t.storage not in graph.released}


def _held_by_the_caller(graph: Graph) -> set[int]:
    """The storages of the network's inputs and outputs: its caller holds them to the end."""
    return {t.storage for t in (*graph.inputs, *graph.outputs)}


def _liveness(
    steps: list[OpNode],
    inputs: list[TensorMeta],
    kept: set[int],
    state: set[int],
    same: dict[int, int] | None = None,
    release: list[int] | None = None,
    released: dict[int, int] | None = None,
    numbers: Iterable[tuple[int, int, int]] = (),
    died: dict[int, int] | None = None,
    held_between: Iterable[tuple[int, int | None, int]] = (),
    one_statement: set[int] = frozenset(),
    in_place: set[int] = frozenset(),
    results: set[int] = frozenset(),
    function_calls: Iterable[FunctionCall] = (),
    reductions: set[int] = frozenset(),
    named_locals: set[int] = frozenset(),
) -> Liveness:
    """Live bytes over `steps` run in order (indices are positions in `steps`): `kept`
    storages stay live to the end, `state` ones are not counted, a storage in `same` is
    counted as the storage it maps to (a copy or sum that takes over its source's memory),
    what step i read last is freed right after step `release[i]` (default: i), and a storage
    in `released` not before the forward let go of it (`Graph.released`: the steps run by then);
    `numbers` are tensors no step reads or makes (`EngineNotes.saved_numbers`), each as (the step
    that makes it, the step that reads it last or `len(steps)`: to the end, its bytes); a
    storage in `died` is freed once that many steps have run, and not by `release` (a Python
    backward's temporary, freed when its last object dies: `EngineNotes.python_releases`);
    `held_between` are tensors no step reads or makes either, each as (the steps run when it
    was made, those run when it died or None: to the end, its bytes: `EngineNotes.random_states`);
    a step in `one_statement` belongs to a node that runs all its ops in one C++ statement
    (`EngineNotes.one_statement_ops`), one in `in_place` writes in place and goes on with its
    statement (`EngineNotes.in_place_ops`), and one in `results` makes a gradient its node's
    formula returns (`EngineNotes.formula_results`), ending the formula's C++ call; `function_calls`
    are the functions a formula calls inside a statement, at positions in `steps`
    (`EngineNotes.function_calls`); one in `reductions` is the engine's sum of a gradient to its
    input's shape (`EngineNotes.reductions`) or its cast to the input's dtype, run after its
    node's formula; a storage in
    `named_locals` is a local variable of its node's formula that one op alone reads
    (`EngineNotes.named_locals`: renorm's `grad_norm`, sinc's `out`)."""
    same = same or {}
    died = died or {}
    size: dict[int, int] = {}
    first: dict[int, int] = {}  # storage -> the first step that makes, reads or writes it
    last: dict[int, int] = {}  # storage -> the last step that reads or writes it
    held_from_start: set[int] = set()

    for tensor in inputs:
        if tensor.storage not in size:
            size[tensor.storage], first[tensor.storage], last[tensor.storage] = tensor.nbytes, -1, -1
            held_from_start.add(tensor.storage)
    for index, op in enumerate(steps):
        for tensor in (*op.inputs, *op.outputs):
            storage = same.get(tensor.storage, tensor.storage)
            if storage in state:
                continue
            if storage not in size:  # made by this step (or first seen as its argument)
                size[storage] = _allocated(op, tensor)
            if first.get(storage, -1) < 0:
                first[storage] = index
            last[storage] = index

    count = len(steps)
    if released:  # the forward let go of these only after some later steps had run
        for storage, steps_run in released.items():
            if storage in last and storage not in held_from_start:
                last[storage] = max(last[storage], min(steps_run, count) - 1)
    for storage in kept:
        storage = same.get(storage, storage)
        if storage in size:
            last[storage] = count

    # +bytes at the step that makes a storage, -bytes right after its last reader.
    made, freed = [0] * count, [0] * count
    named = _named_locals(steps, release, named_locals) if release is not None else set()
    statement_ends = (
        _statement_ends(steps, release, one_statement, named, in_place, reductions) if release is not None else None
    )
    call_ends = _call_ends(release, statement_ends, results) if release is not None else None
    returns = _returns(function_calls)
    start = live = sum(size[s] for s in held_from_start)
    for storage, nbytes in size.items():
        if storage in held_from_start:
            if last[storage] < 0:  # an input nothing reads: gone before the first step
                live -= nbytes
        else:
            made[first[storage]] += nbytes
        if 0 <= last[storage] < count:
            steps_run = died.get(storage)
            if steps_run is None:
                local_ends = call_ends if storage in named else None
                after = _freed_after(first[storage], last[storage], release, statement_ends, local_ends)
                freed[_by_the_return(first[storage], last[storage], after, returns)] += nbytes
            else:
                freed[max(last[storage], steps_run - 1)] += nbytes
    for made_at, last_read, nbytes in numbers:
        made[made_at] += nbytes
        if last_read < count:
            freed[_freed_after(made_at, last_read, release, statement_ends)] += nbytes
    for taken, died_after, nbytes in held_between:
        if taken < count and (died_after is None or died_after > taken):
            made[taken] += nbytes
            if died_after is not None and died_after <= count:
                freed[died_after - 1] += nbytes
    during, after = [], []
    for index in range(count):
        live += made[index]
        during.append(live)
        live -= freed[index]
        after.append(live)
    return Liveness(start, during, after, live, size, first)


# Ops whose CPU kernel makes its output like its first input, then resizes it to the result's
# shape, which keeps the storage where the result is smaller: losses that write every element's
# loss into their output, then resize that to the reduced 0-dim result (mse_loss's and
# smooth_l1_loss's structured kernels, binary cross entropy's, soft margin's), and col2im
# (F.fold, and F.unfold's gradient), whose output starts as `empty_like` its column input.
_MADE_LIKE_THE_INPUT = frozenset(
    {"aten.mse_loss", "aten.smooth_l1_loss", "aten.binary_cross_entropy", "aten.soft_margin_loss", "aten.col2im"}
)


# Ops making a tensor whose storage holds no byte: a zero tensor (`_efficientzerotensor`, the
# gradient sgn's formula returns for a real input), whose allocator allocates nothing; an op
# reading it takes a 0-dim zero expanded in its place.
_NO_BYTES_MADE = frozenset({"aten._efficientzerotensor"})


# nn.EmbeddingBag's operators, whose CPU kernel (EmbeddingBag.cpp's _embedding_bag_cpu_impl) sizes
# its four results otherwise than their meta kernel shapes them (`_embedding_bag_bytes`).
_EMBEDDING_BAGS = frozenset({"aten._embedding_bag", "aten._embedding_bag_forward_only"})
_BAG_SUM, _BAG_MAX = 0, 2
# The weights' dtypes the CPU's sum over each bag takes its fast road for (is_fast_path_index_select).
_FAST_BAG_SUMS = frozenset({torch.float32, torch.float16, torch.bfloat16})


def _embedding_bag_bytes(op: OpNode, place: int) -> int:
    """The bytes a CPU allocates for result `place` of an embedding bag (output, offset2bag,
    bag_size, max_indices), each sized as _embedding_bag_cpu_impl sizes it, the indices' dtype
    for the last three:

    - offset2bag: none on the sum's fast road (a weight of float32, float16 or bfloat16, no
      padding index), which never needs it; else made for one index more than there are, then
      shrunk by a resize, which keeps the storage;
    - bag_size: made one per offset, then, but for `_embedding_bag_forward_only`'s sum, shrunk to
      one per bag (one offset fewer with include_last_offset), the storage kept;
    - max_indices: made as bag_size's shape is by then; for max, grown to one index per bag and
      embedding dimension (the meta kernel's shape); else one per bag, where the meta kernel has
      none for a sum.

    The weights' and indices' strides are taken for contiguous (nn.EmbeddingBag's are)."""
    weight, indices, offsets = op.args[:3]
    mode, include_last_offset, padding_idx = (
        op.args[at] if len(op.args) > at else default for at, default in ((4, _BAG_SUM), (7, False), (8, -1))
    )
    if place == 0:
        return op.outputs[0].nbytes
    index_bytes = op.outputs[place].dtype.itemsize
    bags = offsets.shape[0] - bool(include_last_offset)
    if place == 1:
        fast_sum = mode == _BAG_SUM and weight.dtype in _FAST_BAG_SUMS and padding_idx < 0
        return 0 if fast_sum else (indices.shape[0] + 1) * index_bytes
    shrunk = mode != _BAG_SUM or op.op == "aten._embedding_bag"  # make_bag_size_out's requires_grad or mode
    if place == 2:
        return offsets.shape[0] * index_bytes
    if mode == _BAG_MAX:
        return bags * weight.shape[1] * index_bytes
    return (bags if shrunk else offsets.shape[0]) * index_bytes


def _zero_tensors(ops: list[OpNode]) -> set[int]:
    """The storages of the zero tensors `ops` make (`_NO_BYTES_MADE`)."""
    return {tensor.storage for op in ops if op.op in _NO_BYTES_MADE for tensor in op.outputs}


def _allocated(op: OpNode, tensor: TensorMeta) -> int:
    """The bytes of `tensor`'s storage, made or read by `op`: its own, but the first output of
    an op of `_MADE_LIKE_THE_INPUT`, the larger of its first input's bytes and its own (a
    resize only grows a storage), and none for an op of `_NO_BYTES_MADE`."""
    if op.op in _NO_BYTES_MADE:
        return 0
    if op.op in _EMBEDDING_BAGS and tensor in op.outputs:
        return _embedding_bag_bytes(op, op.outputs.index(tensor))
    if op.op in _MADE_LIKE_THE_INPUT and tensor is op.outputs[0]:
        return max(op.inputs[0].numel * tensor.dtype.itemsize, tensor.nbytes)
    return tensor.nbytes


def _freed_after(
    first: int,
    last: int,
    release: list[int] | None,
    statement_ends: list[int] | None,
    local_ends: list[int] | None = None,
) -> int:
    """The step after which a storage made (or first read) at step `first` and read last at
    step `last` is freed: `release[last]`, the end of the autograd node that read it last;
    but a temporary, made and read again inside one node (the product that AddcmulBackward
    sums into a weight's gradient), at the end of the C++ statement that read it last
    (`_statement_ends`), where C++ drops it, unless it is a named local (`_named_locals`,
    `local_ends` given: `_call_ends`), a local variable of the formula's C++ call, dropped as
    that call returns."""
    if release is None or statement_ends is None:
        return last
    if 0 <= first < last and release[first] == release[last]:
        return statement_ends[last] if local_ends is None else local_ends[last]
    return release[last]


def _call_ends(release: list[int], statement_ends: list[int], results: set[int]) -> list[int]:
    """For each step, the last step of the C++ call of its node's gradient formula it runs in,
    as far as the ops show it: the end of the statement of the first step, at or after it in
    its node, that makes a gradient the node returns (`results`); its node's end where none
    does. A node runs one call per formula (derivatives.yaml's `min, max:
    clamp_backward_min_max(...)`, then `self: clamp_backward(...)`): the 0-dim zero the bounds'
    gradients share dies as their call returns, before the input's gradient is made."""
    ends = list(release)
    following = -1  # the end of the call of the nearest step making a result, scanning backward
    for index in range(len(release) - 1, -1, -1):
        if following >= 0 and release[following] != release[index]:
            following = -1  # another node
        if index in results:
            following = statement_ends[index]
        if following >= 0:
            ends[index] = following
    return ends


def _returns(function_calls: Iterable[FunctionCall]) -> dict[int, int]:
    """Step -> the step after which a storage it makes is freed at the latest, for the steps of
    `function_calls`' statements: the function's return for a tensor the function made (not
    what it returns, which goes on to the statement), the statement's end for the statement's."""
    returns = {}
    for call in function_calls:
        returns.update((step, call.statement_end) for step in range(call.statement_start, call.statement_end + 1))
        returns.update((step, call.returning) for step in range(call.first, call.returning))
    return returns


def _by_the_return(first: int, last: int, after: int, returns: dict[int, int]) -> int:
    """`after`, or sooner, where a statement that calls a function made the storage (at `first`)
    and read it last within it (`_returns`): the function frees its temporaries and locals as it
    returns (norm_backward's quotient and mask, before dist's negation of its result;
    logcumsumexp's lambda its inner flip and running log-sum-exp, before the add), and the
    statement its own as it ends (its argument: `self - other`, which norm_backward reads twice,
    as a named argument)."""
    latest = returns.get(first)
    if latest is None or last > latest:
        return after
    return min(after, latest)


def _statement_ends(
    steps: list[OpNode],
    release: list[int],
    one_statement: set[int] = frozenset(),
    named: set[int] = frozenset(),
    in_place: set[int] = frozenset(),
    reductions: set[int] = frozenset(),
) -> list[int]:
    """For each step, the last step of the C++ statement it belongs to, as far as the ops show
    it: a statement is a run of consecutive steps of one autograd node, each making a new tensor
    that a later one in the run reads, up to a step whose result the run does not read (its
    root). A view or an in-place write ends a run, as it does when C++ works on a named tensor
    (CopySlices' copy of the gradient, written in place and viewed in several statements), but a
    write in `in_place`, which goes on with its statement (clamp's masks, combined in place and
    read by the `where` after), or into a temporary of its node (`_writes_into_temporaries`).
    C++ frees the temporaries of an expression when the statement ends: DivBackward's
    `-grad * ((self / other) / other)` holds both quotients and the negation until the product
    is made; TLU's `where(x == tau, grad / 2, grad).masked_fill_(x < tau, 0)`
    its masks and quotient until masked_fill_ has run. A step that nothing after it in the run
    reads (the engine's sum of a broadcast gradient, another output's formula) ends a statement
    of its own; but a step in `one_statement` ends with its node's formula: atan2's and cdist's
    make all their gradients in one statement. The engine's sum of a broadcast gradient to its
    input's shape (`reductions`), as its cast to the input's dtype, runs once the formula has
    returned: every statement has ended before it (atan2's temporaries are gone as it sums the
    gradient of an operand broadcast along the batch), and it ends its own. A step making a storage
    in `named` (a local variable of the formula) ends its statement too: `mask =
    self_abs.eq(norm).logical_or(self_abs.isnan())` frees its two masks once `mask` is made,
    though later statements read it."""
    ends = list(range(len(steps)))
    returned = _returning_statements(steps, release, one_statement, named)
    in_place = in_place | _writes_into_temporaries(steps, release, named)
    workspace = _operator_workspace(steps)
    root, read_in_run = -1, set()
    for index in range(len(steps) - 1, -1, -1):
        op = steps[index]
        if index in returned or index in reductions:
            ends[index], root, read_in_run = returned.get(index, index), -1, set()
            continue
        # A view of an operator's workspace is made inside that operator's call, in its
        # statement: the ZeroTensor fallback's expanded 0-dim zero, read by DivBackward's `-grad`.
        viewed_in_a_call = op.is_view and any(tensor.storage in workspace for tensor in op.outputs)
        joins = (
            root >= 0
            and release[index] == release[root]
            # a write into a named tensor (CopySlices' result), or a view of one
            and not ((op.writes_input and index not in in_place) or (op.is_view and not viewed_in_a_call))
            and any(tensor.storage in read_in_run for tensor in op.outputs)
            and not any(tensor.storage in named for tensor in op.outputs)
        )
        if not joins:
            root, read_in_run = index, set()
        ends[index] = root
        read_in_run.update(tensor.storage for tensor in op.inputs)
    return ends


def _writes_into_temporaries(steps: list[OpNode], release: list[int], named: set[int]) -> set[int]:
    """The in-place writes into a temporary of their own node (made by an earlier op of it, not
    a view or a write, and no `named` local), which go on with the statement that made it:
    norm_backward's `grad * (self / norm).masked_fill_(norm == 0, 0)` holds the mask until the
    product is made."""
    made_at: dict[int, int] = {}  # storage -> the node (its `release`) of the op that made it
    writes = set()
    for index, op in enumerate(steps):
        if op.is_view:
            continue
        if op.writes_input:
            storage = op.outputs[0].storage if op.outputs else None
            if storage not in named and made_at.get(storage) == release[index] != index:
                writes.add(index)
        else:
            made_at.update((tensor.storage, release[index]) for tensor in op.outputs)
    return writes


def _named_locals(steps: list[OpNode], release: list[int], read_once: set[int] = frozenset()) -> set[int]:
    """The storages of a node's tensors that are local variables of its C++ formula, as far as
    the ops show them: those two or more later ops of the node read. An unnamed temporary is
    read once, by the operator it is passed to; one read twice was given a name, and lives until
    the formula returns (norm(p=inf)'s `self_abs` and `mask`, read by the statements after the
    one that made them). A storage is counted, not a tensor: a view of a local reads it as the
    local does, so the view's readers count (not the view), and an in-place write goes on with
    the tensor it writes (cdist's `ratio.masked_fill_(res == 0, 0)`, then two sums of `ratio`), so
    it does not count as a reader of it. A local read once looks like a temporary: it is known
    from the formula's text (`read_once`: `EngineNotes.named_locals`, sinc's `out`), and named
    where its node made it."""
    maker: dict[int, int] = {}  # storage -> the step that made it
    readers: dict[int, int] = {}  # storage -> the steps of its maker's node that read it so far
    named = set()
    for index, op in enumerate(steps):
        if maker and not op.is_view:
            written = {tensor.storage for tensor in op.outputs} if op.writes_input else set()
            for storage in {tensor.storage for tensor in op.inputs} - written:
                made = maker.get(storage)
                if made is not None and release[made] == release[index]:
                    readers[storage] = readers.get(storage, 0) + 1
                    if readers[storage] == 2 or storage in read_once:
                        named.add(storage)
        # A step its node ends with (a forward op, a one-op node) makes nothing its node reads again.
        if release[index] != index and not (op.writes_input or op.is_view):
            for tensor in op.outputs:
                maker[tensor.storage] = index
    return named


def _returning_statements(
    steps: list[OpNode], release: list[int], one_statement: set[int], named: set[int]
) -> dict[int, int]:
    """The steps of `one_statement` that run in their node's return statement, which makes all of
    the node's gradients: those after the node's last step that makes or writes a `named` local
    (atan2's `recip`, cdist's `ratio` and its masked_fill_: earlier statements made them), each
    with that statement's last step (the node's last in `one_statement`: the engine's sums of
    its gradients, after it, are no part of the formula)."""
    nodes: dict[int, list[int]] = {}
    for index in sorted(one_statement):
        nodes.setdefault(release[index], []).append(index)
    returned = {}
    for indices in nodes.values():
        naming = [i for i in indices if not steps[i].is_view and any(t.storage in named for t in steps[i].outputs)]
        start = naming[-1] + 1 if naming else indices[0]
        returned.update((index, indices[-1]) for index in indices if index >= start)
    return returned


@dataclass(frozen=True, slots=True)
class TrainingTimeline:
    """Activation and gradient bytes held over one training step (parameters, buffers and
    optimizer state apart): the forward's ops, then the backward's, in the order they ran."""

    steps: list[OpNode]  # Graph.ops then Graph.backward_ops (recomputed forward ops among them)
    held: list[int]  # while step i runs: everything live before it, plus its outputs
    parameter_gradients: dict[int, int]  # storage -> bytes of each gradient left in a `.grad`
    end: int  # held once the backward pass is over (the gradients, the outputs, the seeds)
    seed_bytes: int  # of that, the gradients of ones the backward pass started from

    @property
    def peak_step(self) -> int:
        """The (first) step at which the most is held; -1 when the training step ran no op."""
        return max(range(len(self.held)), key=self.held.__getitem__, default=-1)

    @property
    def peak_bytes(self) -> int:
        return self.held[self.peak_step] if self.held else 0


def training_timeline(graph: Graph) -> TrainingTimeline:
    """The training step's liveness [docs/formulas.md, Memory], on the forward's rules extended
    through the backward pass:

    - what autograd saved stays live until the autograd node that reads it last has run (a
      saved storage no backward op reads, until the end of the step; one the forward let go
      of, as a node whose result nothing read dies, from then: `_held_for_backward`);
    - a temporary of a node (made by one of its ops and read again only inside it: the
      product AddcmulBackward sums into a weight's gradient) is freed at the end of the C++
      statement that read it last (`_statement_ends`: the run of the node's ops that each
      make what a later one reads, up to the op whose result the run does not read; the
      engine's sum of a broadcast gradient to its input's shape, and its cast to the input's
      dtype, run after them all, each a statement of its own: `EngineNotes.reductions`); but
      one two later ops of the node read, a local variable of its formula, when the formula's
      C++ call returns (`_named_locals`, `_call_ends`), as one the formula names though one op
      alone reads it
      (`EngineNotes.named_locals`: sinc's `out`, renorm's `grad_norm`); and one a function the
      formula calls inside a statement made, when that function returns
      (`EngineNotes.function_calls`: dist's norm_backward, before the negation of its result;
      logcumsumexp's lambda), its argument at the statement's end (`_returns`);
    - a result of a node's op that nothing reads (a gradient of an input that wants none, made
      with the others at once: oneDNN LSTM's initial states') as soon as the op returns
      (`_dropped_at_once`), before the engine casts the node's other gradients to their
      inputs' dtype;
    - but a tensor a Python backward makes (a custom torch.autograd.Function's: timm's
      memory-efficient Swish), when its last object dies (`EngineNotes.python_releases`, as
      the trace saw it): an unnamed temporary once the op after it has read it, a local
      variable when the function returns; the gradients it returns go on as any node's, and
      a number its ops take where a tensor goes is a tensor of its own while the op runs;
      what it had from before it started (its incoming gradients, what its node saved) is
      held until it returns (`_held_through_python_backwards`: reentrant checkpointing's runs a
      backward pass of its own in between);
    - a forward op that activation checkpointing runs again is a node of its own: what the
      re-run makes and nothing saved is freed after its last reader (the last convolution's
      output of a block ending in a ReLU), not held with the node whose unpacking asked for
      the re-run;
    - a gradient is allocated by the backward op that computes it and freed once the node
      (or the engine's add where two gradients meet) that reads it last has run, except a
      parameter's gradient, which stays in `.grad` to the end (AccumulateGrad's copy), unlike a
      detached input's, which reentrant checkpointing takes from its `.grad` and returns;
    - where two gradients meet (the adds the engine runs between nodes' formulas,
      `EngineNotes.gradient_sums`), the engine adds the second into the first in place, unless
      the caller holds the first (a seed) or it is not dense (`EngineNotes.gapped_sums`);
    - a Python number a tensor requiring grad was multiplied or divided by is a tensor of its
      own, kept by the op's node until it has run (`EngineNotes.saved_numbers`), or until it
      died, where nothing read its result (`EngineNotes.number_releases`);
    - the network inputs and outputs stay live to the end (the caller holds them), and so do the
      gradients of ones the backward pass starts from (held by whoever passed them to
      `torch.autograd.backward`; a scalar loss's is one element) and what a module keeps in an
      attribute (`Graph.kept_by_the_model`: until its next forward replaces it).

    AccumulateGrad takes a fresh gradient over as the parameter's `.grad` without copying it
    (when no one else holds it and its strides match the parameter's); in the trace it copies (the
    trace holds a reference), recorded as new_empty_strided + copy_. Such a copy is counted
    as the memory of its source, as a CPU step allocates it, unless the strides differ
    (`EngineNotes.relaid_gradients`: a convolution's weight gradient is channels last where its
    input is), where a CPU step copies too."""
    backward = graph.backward_ops
    state = model_state_storages(graph) | _operator_workspace(graph.ops, backward)
    copies = _accumulated(backward, graph.engine.grad_storages)
    seeds = graph.engine.seeds
    adds = sorted(graph.engine.gradient_sums)
    # The engine adds a gradient into the one already waiting, in place, unless the caller
    # holds that one (a seed), it is not dense (`EngineNotes.gapped_sums`) or it is a view, whose
    # base shares its storage (a tied weight's gradient through `t()`): then it allocates the sum.
    viewed = _views(backward)
    moved = {
        backward[i].outputs[0].storage: backward[i].inputs[0].storage
        for i in adds
        if backward[i].inputs[0].id not in viewed
    }
    # A zero tensor (sgn's gradient of a real map) takes no sum in place either: it is immutable.
    unwritable = seeds | _zero_tensors(backward)
    gapped = graph.engine.gapped_sums
    moved = {made: into for made, into in moved.items() if into not in unwritable and made not in gapped}
    seed_tensors = {t.id for op in backward for t in op.outputs if t.storage in seeds and t.id not in viewed}
    moved.update(_taken_over(backward, copies, state, graph.engine.relaid_gradients, seed_tensors))
    moved = {storage: _final(moved, storage) for storage in moved}  # a sum added into again
    read_in_backward = {moved.get(t.storage, t.storage) for op in backward for t in op.inputs}
    unread_saved = _held_for_backward(graph) - read_in_backward
    returned = _leaf_gradients_read_on(backward, copies)
    kept = _held_by_the_caller(graph) | graph.kept_by_the_model | (set(copies) - returned) | unread_saved | seeds
    steps = [*graph.ops, *backward]
    between = set(adds) | {i for i, op in enumerate(backward) if op.outputs and op.outputs[0].storage in copies}
    release = list(range(len(graph.ops))) + [len(graph.ops) + end for end in _node_ends(backward, between)]
    numbers = _numbers_read(graph) + _wrapped_numbers(graph) + _wrapped_in_python(graph)
    forward = len(graph.ops)
    died = _dropped_at_once(backward, moved, read_in_backward | kept, graph.engine.received)
    died |= graph.engine.python_releases
    died = {storage: forward + steps_run for storage, steps_run in died.items()}
    reductions = {forward + index for index in graph.engine.reductions}
    results, casts = _formula_results(steps, release, graph.engine.formula_results, reductions)
    for storage, steps_run in _held_through_python_backwards(graph).items():
        storage = moved.get(storage, storage)  # a gradient passed in as the `.grad` it was taken over as
        died[storage] = max(died.get(storage, 0), forward + steps_run)
    live = _liveness(
        steps,
        graph.inputs,
        kept,
        state,
        moved,
        release,
        graph.released,
        numbers,
        died,
        graph.engine.random_states,
        {forward + index for index in graph.engine.one_statement_ops},
        {forward + index for index in graph.engine.in_place_ops},
        results,
        [_shifted(call, forward) for call in graph.engine.function_calls],
        reductions | casts,
        graph.engine.named_locals,
    )
    gradients = {moved.get(s, s) for s in copies if s not in returned}
    seed_bytes = sum(live.storage_bytes.get(s, 0) for s in seeds - gradients)
    return TrainingTimeline(steps, live.during, {s: live.storage_bytes[s] for s in gradients}, live.end, seed_bytes)


def _formula_results(
    steps: list[OpNode], release: list[int], returned: set[int], reductions: set[int]
) -> tuple[set[int], set[int]]:
    """The steps that made a gradient their node's formula returned (`EngineNotes.formula_results`,
    as the node's post hook saw it), before the engine fitted it to its input (validate_outputs):
    `sum_to` its shape, the engine's sum of a broadcast gradient (`reductions`: clamp's bounds',
    made by the `where` before) and, where the input lacks leading dimensions, a view of that
    sum; then a cast to its dtype. And those casts: run once the formula has returned, as the
    engine's sums are."""
    maker = {t.id: index for index, op in enumerate(steps) for t in op.outputs}

    def source(index: int) -> int | None:
        """The earlier step of the same node that made the one tensor step `index` reads."""
        made = maker.get(steps[index].inputs[0].id, index) if len(steps[index].inputs) == 1 else index
        return made if made < index and release[made] == release[index] else None

    results, casts = set(), set()
    for index, op in enumerate(steps):
        if not any(t.id in returned for t in op.outputs):
            continue
        # Undone in the reverse of the engine's order: the cast, sum_to's view, its sum.
        if op.op == "aten._to_copy" and source(index) is not None:
            casts.add(index)
            index = source(index)
        if steps[index].op == "aten.view" and source(index) in reductions:
            index = source(index)
        if index in reductions and source(index) is not None:
            index = source(index)
        results.add(index)
    return results, casts


def _shifted(call: FunctionCall, steps: int) -> FunctionCall:
    """`call`, its indices `steps` later (a backward op's index among the forward's and the backward's)."""
    return FunctionCall(
        call.statement_start + steps, call.first + steps, call.returning + steps, call.statement_end + steps
    )


def _leaf_gradients_read_on(backward: list[OpNode], copies: dict[int, int]) -> set[int]:
    """Of the `.grad` storages AccumulateGrad wrote (`copies`), those a later backward op reads:
    not a parameter's but a detached input's, whose gradient reentrant checkpointing's backward
    takes from its `.grad` and returns to the engine, which frees it once the node it goes to
    has run. A parameter's stays in `.grad` to the end."""
    written_at = {op.inputs[0].storage: index for index, op in enumerate(backward) if op.op in _ACCUMULATES}
    return {
        t.storage
        for index, op in enumerate(backward)
        for t in op.inputs
        if t.storage in copies and index > written_at[t.storage]
    }


def _dropped_at_once(
    backward: list[OpNode], moved: dict[int, int], held: set[int], received: dict[int, int]
) -> dict[int, int]:
    """Storage -> the backward ops run when it is freed, for each result of a node's op (not a
    recomputation's) that no op reads and no one holds (`held`): a gradient, computed with
    others at once, of an input that wants none (oneDNN LSTM's `mkldnn_rnn_layer_backward`
    returns its initial states' too). The node's C++ drops it as soon as the op returns, with
    the tuple it came in, before the engine casts the gradients the node passes on to their
    inputs' dtype (a bfloat16 LSTM's `_to_copy`s, each made before its float32 source is freed).
    But a gradient passed on to a node that reads none of it (sgn's of a real input, which
    returns a zero tensor) is held until that node has run (`EngineNotes.received`)."""
    return {
        storage: received.get(storage, index + 1)
        for index, op in enumerate(backward)
        if op.phase == "backward" and not (op.is_view or op.writes_input)
        for storage in (moved.get(t.storage, t.storage) for t in op.outputs)
        if storage not in held
    }


def _held_through_python_backwards(graph: Graph) -> dict[int, int]:
    """Storage -> the number of backward ops run when the Python backward (a custom
    torch.autograd.Function's) that had it from before it started returns: its arguments (the
    incoming gradients) and what its node saved, which Python and the node hold until then,
    however early their last reader. Reentrant checkpointing's backward runs a backward pass
    of its own from its incoming gradients, whose first node is their last reader, and returns
    only once that pass is over. It returns when the last tensor it made dies, as its local
    variables do then (`EngineNotes.python_releases`), or after its last op."""
    backward, releases = graph.backward_ops, graph.engine.python_releases
    held: dict[int, int] = {}
    for run in consecutive_runs(sorted(graph.engine.python_ops)):
        first, last = run[0], run[-1]
        its_own = _storages_made(backward[first : last + 1])
        returns = max((releases[storage] for storage in its_own if storage in releases), default=last + 1)
        made = _storages_made(backward[first:returns])
        for op in backward[first:returns]:
            for tensor in op.inputs:
                if tensor.storage not in made:
                    held[tensor.storage] = max(held.get(tensor.storage, 0), returns)
    return held


def _storages_made(ops: list[OpNode]) -> set[int]:
    """The storages `ops` allocate (not a view's or an in-place result's: their input's)."""
    return {t.storage for op in ops if not (op.is_view or op.writes_input) for t in op.outputs}


@dataclass(frozen=True, slots=True)
class TrainingStep:
    """A training step's totals that follow the step through (`Totals.training_peak_*`)."""

    optimizer_state_bytes: int  # held throughout the step
    peak_bytes: int  # activations and gradients at the step's peak (parameters and state apart)
    peak_layer: str  # the layer of the op at the peak ("" at the optimizer's update)
    peak_phase: str  # forward, backward, recompute or "optimizer step"


def training_step(graph: Graph, optimizer: str) -> TrainingStep:
    """The step's optimizer state and its peak: the busiest op of `training_timeline`, or,
    where higher, the optimizer's update (its temporaries on top of the gradients), from
    what the backward pass left but the gradients of ones it started from (the caller's
    list of them is gone once `backward` returns)."""
    timeline = training_timeline(graph)
    updated = [p.nbytes for p in parameters_given_gradients(graph)]
    held = [p.nbytes for p in trainable_parameters(graph)] if optimizer_model(optimizer).eager else updated
    state = optimizer_state_bytes(optimizer, held)
    update = timeline.end - timeline.seed_bytes + optimizer_step_temporaries(optimizer, updated)
    if update > timeline.peak_bytes:
        return TrainingStep(state, update, "", "optimizer step")
    at = timeline.steps[timeline.peak_step] if timeline.steps else None
    layer = at.module.path if at is not None and at.module is not None else ""
    return TrainingStep(state, timeline.peak_bytes, layer, at.phase if at is not None else "forward")


def _numbers_read(graph: Graph) -> list[tuple[int, int, int]]:
    """Each number autograd kept (`EngineNotes.saved_numbers`) as `_liveness` takes it over the
    step: from its forward op until the backward node of that op has run (its last op in the
    step), or died (`_numbers_kept`)."""
    forward = len(graph.ops)
    node_last: dict[int, int] = {}
    for index, op in enumerate(graph.backward_ops):
        if op.phase == "backward":
            node_last[op.origin] = forward + index
    end = forward + len(graph.backward_ops)
    return _numbers_kept(graph, end, node_last)


def _numbers_kept(graph: Graph, end: int, node_last: dict[int, int] | None = None) -> list[tuple[int, int, int]]:
    """Each number autograd kept as `_liveness` takes it, over `end` steps: from its forward op
    until its node died (`EngineNotes.number_releases`: one whose result nothing read, in the
    forward), else until the node's last op (`node_last`), else to the end."""
    node_last = node_last or {}
    deaths = graph.engine.number_releases
    return [
        (op, deaths[op] - 1 if op in deaths and deaths[op] <= end else node_last.get(op, end), nbytes)
        for op, nbytes in graph.engine.saved_numbers
    ]


def _final(moved: dict[int, int], storage: int) -> int:
    while storage in moved:
        storage = moved[storage]
    return storage


def _views(backward: list[OpNode]) -> set[int]:
    """The ids of the tensors the backward pass made as views of another (not `detach`'s, which
    keeps no reference to its source): each holds its base, and so shares its storage."""
    return {t.id for op in backward if op.is_view and op.op != "aten.detach" for t in op.outputs}


def _node_ends(backward: list[OpNode], between: set[int]) -> list[int]:
    """For each backward op, the last op of its autograd node (a run of consecutive ops of
    one forward op): the engine releases a node's saved tensors and incoming gradients once
    the whole node has run, not after the op that last read them. The engine's own ops
    (`between`) run between nodes, each alone, and so does a recomputed forward op: checkpoint
    re-runs the block when a node first unpacks what it saved, before that node's own ops,
    and frees what the re-run made and saved nothing of when the re-run ends (the last
    convolution's output, read by the ReLU that ends the block and whose node asked for it)."""
    ends = list(range(len(backward)))
    for index in range(len(backward) - 2, -1, -1):
        op, after = backward[index], backward[index + 1]
        one_node = op.origin == after.origin and op.phase == after.phase == "backward"
        if one_node and index not in between and index + 1 not in between:
            ends[index] = ends[index + 1]
    return ends


_ACCUMULATES = frozenset({"aten.copy_", "aten.add_"})


def _accumulated(backward: list[OpNode], grad_storages: set[int]) -> dict[int, int]:
    """What AccumulateGrad did with each parameter's gradient in the trace (`grad_storages`:
    what it wrote), as `.grad` storage -> the gradient's storage: a copy (an empty tensor made
    from the gradient, then copy_ from it), or, where the traced parameter already had a
    `.grad` (a model traced before), an add_ into that storage."""
    copies = {}
    for make, copy in pairwise(backward):
        # AccumulateGrad copies a gradient into the parameter's layout (clone_obey_contract).
        if make.op == "aten.new_empty_strided" and copy.op == "aten.copy_" and make.inputs and len(copy.inputs) == 2:
            target, source = copy.inputs
            made = make.outputs[0].storage
            if made in grad_storages and target.storage == made and source.storage == make.inputs[0].storage:
                copies[target.storage] = source.storage
    for op in backward:
        if op.op == "aten.add_" and len(op.inputs) == 2 and op.inputs[0].storage in grad_storages:
            copies[op.inputs[0].storage] = op.inputs[1].storage
    return copies


def _taken_over(
    backward: list[OpNode], copies: dict[int, int], state: set[int], relaid: set[int], seed_tensors: set[int]
) -> dict[int, int]:
    """Of AccumulateGrad's copies (.grad -> gradient), those a CPU step takes over from their
    source instead: the gradient tensor read by nothing after the copy (AccumulateGrad counts
    the references to the tensor, not to its storage: a slice of a larger gradient, as a
    concatenated bias's part, is taken over and holds the whole storage), and in the
    parameter's layout (not `relaid`). A seed itself (`seed_tensors`: a parameter returned as
    it is gets the gradient of ones) is held by the caller too, so it is copied; a view a node
    made of one (a parameter returned viewed) is a tensor of its own, taken over. A step starts
    with every `.grad` None (zero_grad's default), so an add_ into a `.grad` left by an earlier
    trace counts as the gradient taken over too."""
    last_read = {t.id: index for index, op in enumerate(backward) for t in op.inputs}
    copied_at = {op.inputs[0].storage: index for index, op in enumerate(backward) if op.op in _ACCUMULATES}
    copied = {copy: backward[copied_at[copy]].inputs[1].id for copy in copies}
    return {
        copy: source
        for copy, source in copies.items()
        if last_read[copied[copy]] == copied_at[copy]
        and copied[copy] not in seed_tensors
        and source not in state
        and source not in relaid
    }


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
    if not graph.saved:  # inference: nothing saved, and no need to walk the ops for the model's state
        return {}
    live = live or liveness(graph)
    state = model_state_storages(graph)
    return {t.storage: live.storage_bytes.get(t.storage, t.nbytes) for t in graph.saved if t.storage not in state}


@dataclass(frozen=True, slots=True)
class SavedStorage:
    """An activation storage autograd saved, as `saved_activation_bytes` counts it."""

    nbytes: int
    op: int  # the forward op that made it (a network input: the first that read it); -1: none
    row: int  # the row it is charged to: that op's


def saved_rows(graph: Graph, groups: list[LayerGroup], live: Liveness | None = None) -> dict[int, SavedStorage]:
    """Storage -> `SavedStorage` of every activation autograd saved (`saved_activations`). A
    saved storage is charged to the row whose op made it (a network input: the row that
    first read it). Autograd saves an op's inputs before the op runs and its outputs after,
    so "the op running when it was saved" would be ambiguous; the maker is not."""
    live = live or liveness(graph)
    row_of_op = {op.index: row for row, group in enumerate(groups) for op in group.ops}
    saved = {}
    for storage, nbytes in saved_activations(graph, live).items():
        op = live.first_op.get(storage, -1)
        saved[storage] = SavedStorage(nbytes, op, row_of_op.get(op, 0))
    return saved


def _saved_per_row(graph: Graph, groups: list[LayerGroup], live: Liveness) -> list[int]:
    column = [0] * len(groups)
    for saved in saved_rows(graph, groups, live).values():
        column[saved.row] += saved.nbytes
    return column


def parameters_given_gradients(graph: Graph) -> list[ParameterInfo]:
    """The trainable parameters that get a gradient, in the model's order: in a training
    step's trace, those the backward pass reached (`EngineNotes.given_gradients`); an
    optimizer holds state for these and updates only these. Otherwise every trainable one."""
    trainable = trainable_parameters(graph)
    if not graph.training:
        return trainable
    return [p for p in trainable if p.name in graph.engine.given_gradients]


def trainable_parameters(graph: Graph) -> list[ParameterInfo]:
    """Every trainable parameter, in the model's order, reached by the backward pass or not: an
    optimizer given them all that makes its state when built (Adagrad) holds state for each."""
    return [p for p in graph.parameters if p.trainable and not p.is_buffer]


def gradient_rows(graph: Graph, groups: list[LayerGroup]) -> list[tuple[ParameterInfo, int]]:
    """Each parameter that gets a gradient (`parameters_given_gradients`) and the row
    `param_count` puts it on (the row that reads it first, else its module's first row or
    its nearest ancestor's)."""
    owner: dict[str, int] = {}
    first_row_of: dict[str, int] = {}
    for row, group in enumerate(groups):
        first_row_of.setdefault(group.path, row)
        for op in group.ops:
            for tensor in op.inputs:
                if tensor.kind == "parameter":
                    owner.setdefault(tensor.name, row)
    rows = []
    for parameter in parameters_given_gradients(graph):
        row = owner.get(parameter.name)
        if row is None:
            path = parameter.module_path
            while path not in first_row_of and path:
                path = path.rpartition(".")[0]
            row = first_row_of.get(path, 0)
        rows.append((parameter, row))
    return rows


def _gradients_per_row(graph: Graph, groups: list[LayerGroup]) -> list[int]:
    """Bytes of the gradients of the parameters that get one, one per parameter in its
    dtype, on its row (`gradient_rows`)."""
    column = [0] * len(groups)
    for parameter, row in gradient_rows(graph, groups):
        column[row] += parameter.nbytes
    return column
