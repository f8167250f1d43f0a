"""A training step's memory: the forward's liveness followed on through the backward pass and the
optimizer's step, and the step's peak.

A training step's peak (`training_timeline`) follows the same storages on through the
backward pass as the autograd engine runs it: saved tensors and incoming gradients released
once the autograd node that reads them has run, a node's own temporaries at the end of the
C++ statement that read them last, but a Python backward's (a custom torch.autograd.Function's)
when the trace saw their last object die, as Python frees them (an unnamed one right after the
op that read it, a local variable when the function returns), parameters' gradients kept in
`.grad`, the optimizer state (`optimizer_state.OPTIMIZER_STATE_COPIES`) held throughout; then the optimizer's step,
from what the backward pass left (`TrainingTimeline.end`, the gradients of ones it started from
gone) plus its own temporaries
(`optimizer_state.optimizer_step_temporaries`). Against torch.profiler on a real CPU step (allocations that outlive
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

from dataclasses import dataclass
from itertools import pairwise

from archprof.graph import FunctionCall, Graph, OpNode
from archprof.optimizers import optimizer_model
from archprof.passes.allocation import operator_workspace, zero_tensors
from archprof.passes.layers import consecutive_runs
from archprof.passes.liveness import (
    held_by_the_caller,
    held_for_backward,
    held_from_before,
    liveness_over,
    model_state_storages,
    numbers_kept,
    numbers_wrapped,
    wrapped_numbers,
)
from archprof.passes.optimizer_state import (
    optimizer_state_bytes,
    optimizer_step_temporaries,
    parameters_given_gradients,
    trainable_parameters,
)


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
      of, as a node whose result nothing read dies, from then: `held_for_backward`);
    - a temporary of a node (made by one of its ops and read again only inside it: the
      product AddcmulBackward sums into a weight's gradient) is freed at the end of the C++
      statement that read it last (`liveness._statement_ends`: the run of the node's ops that each
      make what a later one reads, up to the op whose result the run does not read; the
      engine's sum of a broadcast gradient to its input's shape, and its cast to the input's
      dtype, run after them all, each a statement of its own: `EngineNotes.reductions`); but
      one two later ops of the node read, a local variable of its formula, when the formula's
      C++ call returns (`liveness._named_locals`, `_call_ends`), as one the formula names though one op
      alone reads it
      (`EngineNotes.named_locals`: sinc's `out`, renorm's `grad_norm`); and one a function the
      formula calls inside a statement made, when that function returns
      (`EngineNotes.function_calls`: dist's norm_backward, before the negation of its result;
      logcumsumexp's lambda), its argument at the statement's end (`liveness._returns`);
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
      attribute (`Graph.kept_by_the_model`: until its next forward replaces it); one made before
      the step (a plain tensor attribute, `liveness.held_from_before`) is live from the start.

    AccumulateGrad takes a fresh gradient over as the parameter's `.grad` without copying it
    (when no one else holds it and its strides match the parameter's); in the trace it copies (the
    trace holds a reference), recorded as new_empty_strided + copy_. Such a copy is counted
    as the memory of its source, as a CPU step allocates it, unless the strides differ
    (`EngineNotes.relaid_gradients`: a convolution's weight gradient is channels last where its
    input is), where a CPU step copies too."""
    backward = graph.backward_ops
    state = model_state_storages(graph) | operator_workspace(graph.ops, backward)
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
    unwritable = seeds | zero_tensors(backward)
    gapped = graph.engine.gapped_sums
    moved = {made: into for made, into in moved.items() if into not in unwritable and made not in gapped}
    seed_tensors = {t.id for op in backward for t in op.outputs if t.storage in seeds and t.id not in viewed}
    moved.update(_taken_over(backward, copies, state, graph.engine.relaid_gradients, seed_tensors))
    moved = _finals(moved)  # a sum added into again
    read_in_backward = {moved.get(t.storage, t.storage) for op in backward for t in op.inputs}
    unread_saved = held_for_backward(graph) - read_in_backward
    returned = _leaf_gradients_read_on(backward, copies)
    frames = graph.engine.checkpoint_inputs
    outlived = {storage for storage, steps_run in frames.items() if steps_run is None}
    kept = (
        held_by_the_caller(graph) | graph.kept_by_the_model | (set(copies) - returned) | unread_saved | seeds | outlived
    )
    steps = [*graph.ops, *backward]
    between = set(adds) | {i for i, op in enumerate(backward) if op.outputs and op.outputs[0].storage in copies}
    node_ends = _node_ends(backward, between, graph.engine.hook_ops)
    release = list(range(len(graph.ops))) + [len(graph.ops) + end for end in node_ends]
    numbers = _numbers_read(graph) + wrapped_numbers(graph)
    forward = len(graph.ops)
    died = _dropped_at_once(backward, moved, read_in_backward | kept, graph.engine.received)
    died |= graph.engine.python_releases
    died = {storage: forward + steps_run for storage, steps_run in died.items()}
    reductions = {forward + index for index in graph.engine.reductions}
    results, casts = _formula_results(steps, release, graph.engine.formula_results, reductions)
    for storage, steps_run in _held_through_python_backwards(graph).items():
        storage = moved.get(storage, storage)  # a gradient passed in as the `.grad` it was taken over as
        died[storage] = max(died.get(storage, 0), forward + steps_run)
    live = liveness_over(
        steps,
        [*graph.inputs, *held_from_before(graph)],
        kept,
        state,
        same=moved,
        release=release,
        released=_let_go_of(graph.released, frames),
        numbers=numbers,
        died=died,
        held_between=[*graph.engine.random_states, *_wrapped_in_python(graph)],
        one_statement={forward + index for index in graph.engine.one_statement_ops},
        in_place={forward + index for index in graph.engine.in_place_ops},
        results=results,
        function_calls=[_shifted(call, forward) for call in graph.engine.function_calls],
        reductions=reductions | casts,
        named_locals=graph.engine.named_locals,
    )
    gradients = {moved.get(s, s) for s in copies if s not in returned}
    seed_bytes = sum(live.storage_bytes.get(s, 0) for s in seeds - gradients)
    return TrainingTimeline(steps, live.during, {s: live.storage_bytes[s] for s in gradients}, live.end, seed_bytes)


def _let_go_of(released: dict[int, int], frames: dict[int, int | None]) -> dict[int, int]:
    """Storage -> the steps run when the forward let go of it (`Graph.released`) or, for a
    checkpointed block's input, when its frame did (`EngineNotes.checkpoint_inputs`), the later."""
    later = dict(released)
    for storage, steps_run in frames.items():
        if steps_run is not None:
            later[storage] = max(later.get(storage, 0), steps_run)
    return later


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
    """Each number autograd kept (`EngineNotes.saved_numbers`) as `liveness_over` takes it over the
    step: from its forward op until the backward node of that op has run (its last op in the
    step), or died (`numbers_kept`)."""
    forward = len(graph.ops)
    node_last: dict[int, int] = {}
    for index, op in enumerate(graph.backward_ops):
        if op.phase == "backward":
            node_last[op.origin] = forward + index
    end = forward + len(graph.backward_ops)
    return numbers_kept(graph, end, node_last)


def _wrapped_in_python(graph: Graph) -> list[tuple[int, int, int]]:
    """Each number an op of a Python backward or of a hook took where a tensor goes (`1 + t`
    in timm's Swish backward, `x / 3.` in its HardSwish's, a tensor hook's `g * 0.5`), as
    `liveness_over`'s `held_between` takes it: held while its op runs, the argument parser's
    tensor for that one call, which Python lets go of as the call returns (a C++ formula's
    lives to the end of its statement)."""
    forward = len(graph.ops)
    python = graph.engine.python_ops | graph.engine.hook_ops
    steps = ((forward + i, graph.backward_ops[i]) for i in sorted(python))
    return [(step, step + 1, nbytes) for step, _, nbytes in numbers_wrapped(steps)]


def _finals(moved: dict[int, int]) -> dict[int, int]:
    """Each storage of `moved` -> the last of its chain (a sum added into again, and again),
    in `moved`'s order; each link followed once (a chain of N sums in place: N steps, not N²/2)."""
    final: dict[int, int] = {}
    for start in moved:
        chain = []
        storage = start
        while storage in moved and storage not in final:
            chain.append(storage)
            storage = moved[storage]
        end = final.get(storage, storage)
        for link in chain:
            final[link] = end
    return {storage: final[storage] for storage in moved}


def _views(backward: list[OpNode]) -> set[int]:
    """The ids of the tensors the backward pass made as views of another (not `detach`'s, which
    keeps no reference to its source): each holds its base, and so shares its storage."""
    return {t.id for op in backward if op.is_view and op.op != "aten.detach" for t in op.outputs}


def _node_ends(backward: list[OpNode], between: set[int], hooks: set[int]) -> list[int]:
    """For each backward op, the last op of its autograd node (a run of consecutive ops of
    one forward op): the engine releases a node's saved tensors and incoming gradients once
    the whole node has run, not after the op that last read them. The engine's own ops
    (`between`) run between nodes, each alone, and so does a recomputed forward op: checkpoint
    re-runs the block when a node first unpacks what it saved, before that node's own ops,
    and frees what the re-run made and saved nothing of when the re-run ends (the last
    convolution's output, read by the ReLU that ends the block and whose node asked for it).
    A hook's ops (`hooks`: `EngineNotes.hook_ops`) end where the hook returns, apart from the
    formula's: the gradient a tensor's hook replaced is gone before the formula runs."""
    ends = list(range(len(backward)))
    for index in range(len(backward) - 2, -1, -1):
        op, after = backward[index], backward[index + 1]
        one_node = op.origin == after.origin and op.phase == after.phase == "backward"
        one_call = (index in hooks) == (index + 1 in hooks)
        if one_node and one_call and index not in between and index + 1 not in between:
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
