"""Liveness: the activation bytes live over a run of ops, storage by storage, and the step after
which each storage is freed (in a backward node, at the end of the C++ statement or call that
read it last).

Liveness works on storages, not tensors: a view or an in-place result shares its base's
`TensorMeta.storage` and allocates nothing. A storage is live from the op that makes it
until its last reader has run or, where later, until the forward let go of its last tensor
object (`Graph.released`: the trace watches each die) [docs/formulas.md, Memory]:

- the network inputs are live from the start to the end (the caller holds them);
- the network outputs stay live until the end;
- in a training trace, what autograd saved stays live until the end of the forward (the
  backward pass reads it);
- a tensor the trace first sees as an argument is live from its first reader, but one the
  model keeps after the forward (a module's plain tensor attribute, `held_from_before`),
  made before the forward, is live from the start to the end, as the inputs are;
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
is not counted, except where a kernel returns it for the backward pass."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from math import prod

from archprof.graph import (
    WRAPPED_NUMBER_BYTES,
    FunctionCall,
    Graph,
    OpNode,
    TensorMeta,
    WrappedFloat,
    WrappedInt,
)
from archprof.passes.allocation import SIZED_OTHERWISE, allocated, operator_workspace

_STATE = ("parameter", "buffer")


@dataclass(frozen=True, slots=True)
class Liveness:
    """Live activation bytes over the graph's ops (parameters and buffers excluded)."""

    start: int  # before the first op: the network inputs (and the model's tensors `held_from_before`)
    during: list[int]  # while op i runs: everything live before it, plus its outputs
    after: list[int]  # right after op i, once what it read for the last time is freed
    end: int  # after the last op: the outputs (and, training, what autograd saved)
    storage_bytes: dict[int, int]  # activation storage -> bytes of the tensor that made it
    first_op: dict[int, int]  # activation storage -> the op that made or first read it (-1: none)


def model_state_storages(graph: Graph) -> set[int]:
    """Storages of parameters and buffers (views of them and in-place results included, and
    the plain attributes that view them: `Graph.state_storages`), and of one the model returns
    as it is, which no forward op may read (a learnt scale returned beside the logits: the
    backward pass reads it to make its gradient of ones)."""
    state = {t.storage for op in graph.ops for t in op.inputs if t.kind in _STATE}
    state.update(graph.state_storages)
    state.update(t.storage for t in (*graph.saved, *graph.outputs) if t.kind in _STATE)
    return state


def held_from_before(graph: Graph) -> list[TensorMeta]:
    """The tensors the forward reads that were made before it and that the model keeps, each
    storage once: a module's plain tensor attribute (`self.scale = torch.ones(8, 16, 16)`,
    neither a parameter nor a buffer), which the trace first sees as an argument (kind
    "constant", not a view of a tensor the trace made: that one's storage it saw first) and
    which is still held after the forward (`Graph.kept_by_the_model`). Held throughout, as
    the inputs are; what a run holds before it starts, beside the parameters and buffers
    (`archprof.measure.peak_memory`). Not a tensor the forward makes without an operator
    (`torch.tensor([...])`, dropped when it returns)."""
    kept = graph.kept_by_the_model
    if not kept:  # most models: nothing to look for
        return []
    first_seen: dict[int, TensorMeta] = {}
    for op in graph.ops:
        for tensor in (*op.inputs, *op.outputs):
            first_seen.setdefault(tensor.storage, tensor)
    state = graph.state_storages  # a plain attribute viewing a parameter holds the parameter's bytes
    return [t for storage, t in first_seen.items() if t.kind == "constant" and storage in kept and storage not in state]


def liveness(graph: Graph) -> Liveness:
    """Live bytes over the forward (`Graph.ops`)."""
    kept = held_by_the_caller(graph)
    if graph.training:
        kept.update(held_for_backward(graph))
    made_before = held_from_before(graph)
    kept.update(t.storage for t in made_before)
    numbers = numbers_kept(graph, len(graph.ops))  # held for the backward pass
    numbers += wrapped_numbers(graph)
    return liveness_over(
        graph.ops,
        [*graph.inputs, *made_before],
        kept,
        model_state_storages(graph) | operator_workspace(graph.ops),
        released=graph.released,
        numbers=numbers,
        held_between=graph.engine.random_states,
    )


def wrapped_numbers(graph: Graph) -> list[tuple[int, int, int]]:
    """Each number a forward op took where a tensor goes (`x * 0.5`, `torch.sub(1.0, x)`,
    marked `WrappedFloat` or `WrappedInt` in its arguments), as `liveness_over` takes it: a
    tensor of its own while that op runs; unless autograd keeps it for the backward pass
    (`EngineNotes.saved_numbers`, held longer). NFNets multiply by such numbers: an
    inference peak 8 B short without them."""
    kept = {op for op, _ in graph.engine.saved_numbers}
    steps = enumerate(graph.ops)
    return numbers_wrapped(((index, op) for index, op in steps if index not in kept) if kept else steps)


def numbers_wrapped(steps: Iterable[tuple[int, OpNode]]) -> list[tuple[int, int, int]]:
    """Per number among the arguments of the ops (each with its step), as `liveness_over` takes
    it: a tensor of its own while its op runs."""
    return [
        (step, step, WRAPPED_NUMBER_BYTES)
        for step, op in steps
        for argument in op.args
        if type(argument) in _WRAPPED_NUMBERS  # type(): twice isinstance's speed here
    ]


_WRAPPED_NUMBERS = frozenset({WrappedFloat, WrappedInt})


def held_for_backward(graph: Graph) -> set[int]:
    """The storages autograd saved that it still holds when the forward ends. A node whose
    results nothing on the way to the outputs reads dies with its results, and what it saved
    with it: the trace saw them die (`Graph.released`), as DLA's unused max pool (its result
    ignored by the block it is passed to) lets go of its indices at once."""
    return {t.storage for t in graph.saved if t.storage not in graph.released}


def held_by_the_caller(graph: Graph) -> set[int]:
    """The storages of the network's inputs and outputs: its caller holds them to the end."""
    return {t.storage for t in (*graph.inputs, *graph.outputs)}


def numbers_kept(graph: Graph, end: int, node_last: dict[int, int] | None = None) -> list[tuple[int, int, int]]:
    """Each number autograd kept as `liveness_over` takes it, over `end` steps: from its forward op
    until its node died (`EngineNotes.number_releases`: one whose result nothing read, in the
    forward), else until the node's last op (`node_last`), else to the end."""
    node_last = node_last or {}
    deaths = graph.engine.number_releases
    return [
        (op, deaths[op] - 1 if op in deaths and deaths[op] <= end else node_last.get(op, end), nbytes)
        for op, nbytes in graph.engine.saved_numbers
    ]


def liveness_over(
    steps: list[OpNode],
    inputs: list[TensorMeta],
    kept: set[int],
    state: set[int],
    *,
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
        plain = op.op not in SIZED_OTHERWISE  # each storage its tensor's bytes: no call to `allocated`
        for tensor in op.inputs + op.outputs:
            storage = tensor.storage
            if same:  # a training step's timeline only: the forward's counts each storage as itself
                storage = same.get(storage, storage)
            if storage in state:
                continue
            if storage not in size:  # made by this step (or first seen as its argument)
                # Its nbytes, the product inline: a property's call per storage of every timeline.
                size[storage] = prod(tensor.shape) * tensor.dtype.itemsize if plain else allocated(op, tensor)
                first[storage] = index
            elif first[storage] < 0:  # an input, read for the first time
                first[storage] = index
            last[storage] = index

    count = len(steps)
    if released:  # the forward let go of these only after some later steps had run
        for storage, steps_run in released.items():
            if storage in last and storage not in held_from_start:
                # Compared, not max() and min(): a builtin's call each, per storage of every timeline.
                let_go = (steps_run if steps_run < count else count) - 1
                if let_go > last[storage]:
                    last[storage] = let_go
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
            if steps_run is not None:
                freed[max(last[storage], steps_run - 1)] += nbytes
            elif release is None and not returns:  # the forward's: `_freed_after`'s `last`, no call needed
                freed[last[storage]] += nbytes
            else:
                local_ends = call_ends if storage in named else None
                after = _freed_after(first[storage], last[storage], release, statement_ends, local_ends)
                freed[_by_the_return(first[storage], last[storage], after, returns)] += nbytes
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
    workspace = operator_workspace(steps)
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
