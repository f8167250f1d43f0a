"""The recorder of a training step: the forward as `archprof.tracing.recorder.Recorder` records
it, then the backward pass, each of its operators attributed to a forward operator."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace

import torch
import torch.utils.checkpoint as checkpointing
from torch._prims_common import suggest_memory_format
from torch.autograd.function import BackwardCFunction

from archprof.errors import ArchprofError, failure_reason
from archprof.graph import EngineNotes, FunctionCall, ModuleCall, OpNode, TensorMeta
from archprof.operators.strides import is_dense
from archprof.structure import tensors_in
from archprof.tracing.autograd_hooks import CPU_ROADS, CpuRoads, HeldByTheNode, RunningFormulas
from archprof.tracing.custom_functions import MadeWithoutGrad, given_to
from archprof.tracing.gradient_formulas import (
    CALLS_IN_A_STATEMENT,
    FILLS_ZEROS,
    IN_PLACE_ON_A_CPU,
    KEEPS_ITS_NUMBER,
    LOCALS_READ_ONCE,
    ONE_STATEMENT_NODES,
    ZEROS,
    CallInAStatement,
    Read,
    group_norm_gradient_running,
    materialises_a_zero,
    reduces_to_an_input,
    same_layout,
    tensors_with_new_nodes,
    wrapped_bytes,
)
from archprof.tracing.op_info import OpInfo
from archprof.tracing.recomputation import Recomputations, Replay, may_run_again, replay_key
from archprof.tracing.recorder import Recorder, call_text

# The key of autograd node metadata naming the forward op (its index) that made the node.
_ORIGIN = "archprof_origin"
_GIVEN = "archprof_given"  # a custom Function's node: the tensors given to its apply (`given_to`)
# The key of the metadata of a Python backward's node (a custom torch.autograd.Function's)
# whose returned gradients the recorder keeps (`TrainingRecorder._python_backward_returned`).
_RETURNS_KEPT = "archprof_returns_kept"
# The key of the metadata of a node whose death the recorder watches (`HeldByTheNode`).
_DEATH_WATCH = "archprof_death_watch"
# The autograd node that moves a gradient into its parameter's `.grad` (`Node.name()`).
_ACCUMULATE_GRAD = "torch::autograd::AccumulateGrad"
_aten = torch.ops.aten


class TrainingRecorder(Recorder):
    """The recorder of a training step: the forward as `Recorder` records it, then the
    backward pass (`run_backward`) into `backward_ops`, each op attributed to a forward op.

    The autograd node an op creates exists only once the op has returned through the
    autograd layer, above this dispatch mode: so each op's outputs are tagged with its index
    (their `grad_fn.metadata`) when the next op is recorded. In the backward pass, an op
    belongs to the forward op of the autograd node running it
    (`torch._C._current_autograd_node`); an op of a node no forward op made (AccumulateGrad,
    which moves a gradient into `.grad`) to the forward op of the op before it.

    Activation checkpointing runs forward ops again inside the backward, with grad enabled
    (backward ops run without): those are recorded as "recompute", each attributed to the
    forward op it runs again (`Replay`): a checkpointed region runs the same code again, so
    its ops are, in order, a run of consecutive forward ops, the same operators making the
    same shapes in the same modules (the module calls that fire again say which). That run
    starts at or before the forward op of the autograd node that asked for the
    recomputation (an op of the region; reentrant checkpointing's node belongs to its last
    op), at the latest such start: the backward pass recomputes the last region first. Where
    a later op rules that start out (a repeated block), the run's ops are attributed anew.
    Their outputs are tagged as the forward's are: reentrant checkpointing runs a backward
    pass through them.

    Every tensor the backward pass makes is kept alive (see `run_backward`), but those a
    Python backward makes (a custom torch.autograd.Function's `backward`): each is watched
    die, as in the forward, and its storage's death noted (`EngineNotes.python_releases`).
    Python frees such a temporary when its last reference goes (an unnamed one right after
    the op that read it, a local variable when the function returns), not at the end of a
    C++ statement. The gradients the function returns are kept from then on (a post hook on
    its node, registered when the forward tags it), as every other node's are."""

    def __init__(self, real: bool = False, most_ops: int | None = None) -> None:
        super().__init__(real, most_ops)
        self.backward_ops: list[OpNode] = []
        self.engine = EngineNotes()  # `Graph.engine`
        self.engine.random_states = self.random_states.noted
        self._phase = "forward"
        self._last_made: tuple[list[torch.Tensor], int] = ([], -1)  # the forward op whose outputs await a tag
        self._forward_ops: list[OpNode] = []
        self._origin = -1  # the forward op of the backward op recorded last
        self._recomputing = Recomputations()
        self._made_without_grad = MadeWithoutGrad()
        self._positions: dict[tuple, list[int]] = {}  # `replay_key` of a forward op -> its indices
        self._replay: Replay | None = None  # the recomputation being recorded
        self._tagging_for: tuple[Replay, int] | None = None  # the replay and step of `_last_made`'s op
        self._python_made: set[int] = set()  # storages a Python backward made, watched until they die
        self._python_watched: dict[int, weakref.ref] = {}  # id(tensor) -> its reference, for those
        self._numbered: set[int] = set()  # the forward ops of `engine.saved_numbers`
        self._formulas = RunningFormulas(self._metas, self.engine, self.backward_ops)
        self._cpu_roads = CpuRoads()
        self._frames_holding: dict[int, int] = {}  # storage -> the checkpoint frames holding it (`checkpoints_noted`)
        # Watching each of `engine.random_states` die, the checkpoint frames, and the nodes of `_numbered`'s ops.
        self._watching: list[weakref.finalize] = []

    def run_backward(self, output) -> bool:
        """The backward pass from the outputs that require grad (floating or complex), with gradients of
        ones; False where no output requires grad (no backward pass to run)."""
        self._tag_last_made()
        # The forward's releases are all noted: from here a tensor dies when autograd lets go
        # of what it saved, which the timeline times by the nodes that read it. Every tensor
        # the backward pass makes is kept, real ones too (the CPU fallback): the timeline
        # (`passes.training_memory.training_timeline`) reads the backward pass autograd runs while the
        # recorder holds each gradient (AccumulateGrad then copies a gradient into `.grad`,
        # recorded, where a step of the user's takes it over).
        self._noting_releases = False
        self._kept = []
        self._forward_ops = self.ops
        self.ops = self.backward_ops  # _record appends to self.ops
        self._phase = "backward"
        self.attribution = None  # backward ops are attributed through their forward op
        self._origin = len(self._forward_ops) - 1
        for op in self._forward_ops:
            self._positions.setdefault(replay_key(op), []).append(op.index)
        roots = [t for t in tensors_in(output) if t.requires_grad]  # floating or complex: no other can require grad
        if roots:
            with torch.no_grad():  # not a recomputed forward op
                seeds = [torch.ones_like(t) for t in roots]
            self.engine.seeds = {self.lookup(seed).storage for seed in seeds}
            torch.autograd.backward(roots, seeds)
        for storage in self._python_made:  # still held somewhere (a Python backward stashed it): to the end
            if self._holders[storage]:
                self.engine.python_releases[storage] = len(self.ops)
        self._python_made = set()
        self._replay = None
        for watching in self._watching:  # a frame, a node that ran: held to the end
            watching.detach()
        self.random_states.held_to_the_end()  # a reentrant block's, with its node
        self.ops = self._forward_ops
        return bool(roots)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None, first_only=False):  # all made (`_last_made`)
        if self._cpu_roads.running:  # the road a real step does not take: run, not recorded
            return func(*args, **(kwargs or {}))
        if func is _aten.clone.default and self._phase == "backward" and group_norm_gradient_running():
            tensor = args[0]
            memory_format = suggest_memory_format(tensor)  # the CPU's `contiguous(memory_format)`
            if tensor.is_contiguous(memory_format=memory_format):
                return tensor  # no op at all
            args, kwargs = (tensor,), {"memory_format": memory_format}
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if func in KEEPS_ITS_NUMBER and self._phase == "forward" and torch.is_grad_enabled():
            self._note_saved_number(args, kwargs or {})
        return out

    def _note_saved_number(self, args: tuple, kwargs: dict) -> None:
        """A product's or quotient's Python number, which autograd keeps where the tensor it
        meets requires grad (`x * 0.5`, `torch.div(1.0, x)`: the gradient of each operand
        reads the other)."""
        operands = (*args, kwargs["other"]) if "other" in kwargs else args
        number, tensor = (operands[1], operands[0]) if isinstance(operands[0], torch.Tensor) else operands[:2]
        if not isinstance(number, torch.Tensor) and tensor.requires_grad:
            self.engine.saved_numbers.append((len(self.ops) - 1, wrapped_bytes(number)))
            self._numbered.add(len(self.ops) - 1)

    def _note_let_go_since(self, ops: int, released: int) -> None:
        # The composite has returned: its last op's nodes are made, so they are tagged now and
        # its outputs held no longer, those no node keeps (a max pooling's indices, a norm's
        # statistics, a dropout's mask under no_grad) dying inside it, as a CPU lets go of them.
        self._tag_last_made()
        super()._note_let_go_since(ops, released)

    def _record(self, info: OpInfo, args, kwargs, tensors: list[torch.Tensor], out) -> None:
        if self._phase == "forward":
            self._tag_last_made()
            super()._record(info, args, kwargs, tensors, out)
            self._last_made = (tensors_with_new_nodes(info, out), len(self.ops) - 1)
            return
        self._tag_last_made()  # before reading the node running: it may be the one just tagged
        node = torch._C._current_autograd_node()  # None for the seeds, made before the backward pass
        node_name = node.name() if node is not None else ""  # read once: torch builds the string each call
        phase, origin = self._backward_origin(node)
        module = self._forward_ops[origin].module if origin >= 0 else None
        in_place_on_a_cpu = info.name in IN_PLACE_ON_A_CPU.get(node_name, ()) and self._made_by_the_node(
            tensors, origin
        )
        if in_place_on_a_cpu or (info.name in FILLS_ZEROS and self._fills_the_zeros_just_made(tensors)):
            info = replace(info, writes_input=True)  # as the real step runs it
        kept, storages = len(self._kept), self._next_storage
        # Outside the formula's bracket run the engine's adds, and a hook on the tensor whose
        # gradient comes in (the engine calls those before the node's pre hooks): the user's.
        outside = self._formulas.engines_op(node)
        engines = outside and info.name == "aten.add" and len(tensors) == 2
        super()._record(info, args, kwargs, tensors, out, (module, phase, origin))
        if engines:
            self.engine.gradient_sums.add(len(self.ops) - 1)
        elif outside:
            self.engine.hook_ops.add(len(self.ops) - 1)
        if in_place_on_a_cpu:
            self.engine.in_place_ops.add(len(self.ops) - 1)
        if isinstance(node, BackwardCFunction) and _RETURNS_KEPT in node.metadata:
            self._watch_python_temporaries(kept, storages)
            self.engine.python_ops.add(len(self.ops) - 1)
            self.engine.function_inputs[len(self.ops) - 1] = node.metadata[_GIVEN]
        if info.name == "aten.sum" and node is not None and reduces_to_an_input(node, args, kwargs or {}):
            self.engine.reductions.add(len(self.ops) - 1)  # the engine's, after the formula
        elif node_name in ONE_STATEMENT_NODES:
            self.engine.one_statement_ops.add(len(self.ops) - 1)
        if node_name in LOCALS_READ_ONCE:
            self._note_locals_read_once(LOCALS_READ_ONCE[node_name], info.name, args, origin)
        if node_name in CALLS_IN_A_STATEMENT:
            self._note_function_call(CALLS_IN_A_STATEMENT[node_name], origin)
        if node_name == _ACCUMULATE_GRAD:
            _refuse_a_sparse_gradient(tensors, module)
            self.engine.grad_storages.update(t.storage for t in self.ops[-1].outputs)
            if info.name == "aten.new_empty_strided" and tensors and not same_layout(tensors[0], *args[1:3]):
                self.engine.relaid_gradients.add(self.ops[-1].inputs[0].storage)
        elif engines and not is_dense(tuple(tensors[0].shape), tensors[0].stride()):
            self.engine.gapped_sums.add(self.ops[-1].outputs[0].storage)
        if phase == "recompute":  # reentrant checkpointing runs a backward through these
            self._tagging_for = self._replayed(node)
            self._last_made = (tensors_with_new_nodes(info, out), self.ops[-1].origin)
        self._note_zeros_materialised()

    def _note_zeros_materialised(self) -> None:
        """Note the zeros PyTorch's ZeroTensor fallback makes for an operator with no ZeroTensor
        kernel that reads a zero tensor (sgn's gradient of a real map, negated by sub's gradient
        formula) as that operator's workspace (`OpNode.workspace`): a 0-dim zero expanded to each
        such operand's shape (`at::zeros({}, options).expand(sizes)`), made inside the operator's
        call and freed as it returns, where the trace sees a `zeros` and an `expand` of their own.
        Known as the pairs of a 0-dim `zeros` and its `expand` recorded just before a backward op
        that reads them all: 4 B over a CPU step's peak for a float32 map, each."""
        ops, zeros = self.ops, []
        at = len(ops) - 2
        while at > 0 and materialises_a_zero(ops[at - 1], ops[at]):
            zeros.append(ops[at - 1].outputs[0].storage)
            at -= 2
        read = {tensor.storage for tensor in ops[-1].inputs}
        if zeros and read.issuperset(zeros):
            self.note_workspace(reversed(zeros))

    def _note_locals_read_once(self, reads: frozenset[Read], operator: str, args: tuple, origin: int) -> None:
        """Note the storages of the locals read once (`EngineNotes.named_locals`) that the op just
        recorded, `operator` of the node of forward op `origin`, reads: those at its positions
        `reads` gives it, read through a cast, where the node made them (of what the read's `of`
        made, where it names one)."""
        for place in reads:
            at = place.position
            read = self.meta_of(args[at]) if place.operator == operator and at < len(args) else None
            maker = self._maker_in_the_node(read, origin) if read is not None else None
            if maker is not None and maker.op == "aten._to_copy":  # `local.to(dtype)`, a copy of the local
                read, maker = maker.inputs[0], self._maker_in_the_node(maker.inputs[0], origin)
            # Not the forward's `result` (a detached view of it, unpacked); another torch's
            # formula may pass its arguments otherwise.
            if maker is None or maker.is_view:
                continue
            if place.of is None or self._made_of(read.storage, place.of, origin):
                self.engine.named_locals.add(read.storage)

    def _maker_in_the_node(self, tensor: TensorMeta, origin: int) -> OpNode | None:
        """The op that made `tensor`, of the node running (the run of backward ops just recorded
        from forward op `origin`); None where another made it."""
        return next((op for op in self._node_ops(origin) if tensor in op.outputs), None)

    def _node_ops(self, origin: int) -> Iterator[OpNode]:
        """The ops of the node running (those just recorded from forward op `origin`), the latest first."""
        for op in reversed(self.ops):
            if op.origin != origin:
                return
            yield op

    def _made_of(self, storage: int, operator: str, origin: int) -> bool:
        """Whether the op that made `storage` (not one writing into it since), of the node of forward
        op `origin`, read a storage that an `operator` op of the node made."""
        node_ops = list(self._node_ops(origin))
        makers = (op for op in node_ops if not op.writes_input and any(t.storage == storage for t in op.outputs))
        maker = next(makers, None)
        read = {tensor.storage for tensor in maker.inputs} if maker is not None else set()
        return any(op.op == operator and any(t.storage in read for t in op.outputs) for op in node_ops)

    def _note_function_call(self, statement: CallInAStatement, origin: int) -> None:
        """Where the ops just recorded, all of the node of forward op `origin`, end a statement
        that calls a function (`CALLS_IN_A_STATEMENT`: `statement.after`), note the call
        (`EngineNotes.function_calls`): its ops are the node's after the last op making its
        argument (`statement.argument`), the statement's first, up to those."""
        end = len(self.ops) - 1
        returning = end - len(statement.after)
        after = self.ops[returning + 1 :]
        if tuple(op.op for op in after) != statement.after or any(op.origin != origin for op in after):
            return
        for index in range(returning, -1, -1):
            if self.ops[index].origin != origin:
                return
            if self.ops[index].op == statement.argument:
                if index < returning:
                    self.engine.function_calls.append(FunctionCall(index, index + 1, returning, end))
                return

    def _watch_python_temporaries(self, kept: int, storages: int) -> None:
        """The tensor objects the op just recorded made in a Python backward (those kept from
        index `kept` on, their new storages numbered from `storages`), watched instead of kept."""
        for tensor in self._kept[kept:]:
            storage = self._metas[id(tensor)].storage
            self._python_watched[id(tensor)] = self.watch(tensor, storage, self._python_tensor_died)
            if storage >= storages:
                self._python_made.add(storage)
        del self._kept[kept:]

    def _python_tensor_died(self, reference: weakref.ref) -> None:
        _, key, storage = self._watched[id(reference)]
        del self._python_watched[key]
        self._died(reference)
        if not self._holders[storage] and storage in self._python_made:
            self.engine.python_releases[storage] = len(self.ops)
            self._python_made.discard(storage)

    def _python_backward_returned(self, gradients: tuple, _incoming: tuple) -> None:
        """A Python backward's node has run (its post hook): the gradients it returned go on to
        the nodes that read them, kept as every other node's are; its temporaries have died."""
        for tensor in gradients:
            reference = self._python_watched.pop(id(tensor), None) if tensor is not None else None
            if reference is not None:
                _, _, storage = self._watched.pop(id(reference))
                self._holders[storage] -= 1
                self._python_made.discard(storage)
                self._kept.append(tensor)

    def _fills_the_zeros_just_made(self, tensors: list[torch.Tensor]) -> bool:
        """Whether the op's first tensor is the tensor of zeros the op before it made."""
        last = self.ops[-1] if self.ops else None
        return last is not None and last.op in ZEROS and bool(tensors) and self.meta_of(tensors[0]) is last.outputs[0]

    def _made_by_the_node(self, tensors: list[torch.Tensor], origin: int) -> bool:
        """Whether the op's first tensor was made by an op of the node running (the run of
        backward ops just recorded from the same forward op)."""
        first = self.meta_of(tensors[0]) if tensors else None
        return first is not None and self._maker_in_the_node(first, origin) is not None

    def _tag_last_made(self) -> None:
        made, index = self._last_made
        waiting = self._made_without_grad.taken()
        if waiting is not None:
            self._tag_nodes(*waiting)
        self._tag_nodes(made, index)
        if made and not torch.is_grad_enabled() and (self._phase == "forward" or self._recomputing.running):
            self._made_without_grad.note(made, index)  # a Function's forward, maybe
        self._last_made, self._tagging_for = ([], -1), None

    def _tag_nodes(self, made: list[torch.Tensor | None], index: int) -> None:
        """Tag the autograd nodes of `made` (None: a tensor that died) that have none yet as
        forward op `index`'s."""
        for tensor in made:
            node = tensor.grad_fn if tensor is not None else None
            if node is not None and _ORIGIN not in node.metadata:
                node.metadata[_ORIGIN] = index
                if self._tagging_for is not None:  # a recomputed op's: tagged anew if attributed anew
                    replay, step = self._tagging_for
                    replay.tags.append((step, node.metadata))
                if node.name() in CPU_ROADS:  # before the bracket: its post hook sees the road taken
                    self._cpu_roads.reroute(node)
                self._formulas.bracket(node)
                if isinstance(node, BackwardCFunction):  # a Python backward
                    node.register_hook(self._python_backward_returned)
                    node.metadata[_RETURNS_KEPT] = True
                    node.metadata[_GIVEN] = given_to(node, self.lookup, self.ops, _ORIGIN)
                if index in self._numbered and self._phase == "forward":
                    self._watch_node_die(node, index)

    def _watch_node_die(self, node, index: int) -> None:
        """Note when `node`, the autograd node of forward op `index`, dies, and the number it
        keeps with it (`EngineNotes.number_releases`): through an object in its metadata, which
        only the node holds."""
        held_by_the_node = HeldByTheNode()
        node.metadata[_DEATH_WATCH] = held_by_the_node
        self._watching.append(weakref.finalize(held_by_the_node, self._node_died, index))

    def _node_died(self, index: int) -> None:
        self.engine.number_releases[index] = self._steps_run()

    def _backward_origin(self, node) -> tuple[str, int]:
        """The phase of the backward-pass op being recorded, and its forward op (`node`: the
        autograd node running it); for a recomputed op, the forward op of the node that asked
        for the recomputation, until `_replayed` finds the op it runs again."""
        # Grad is on in a recomputation and off in the backward pass; off too inside an
        # autograd.Function's forward, which a block's recomputation notes.
        recomputing = self._recomputing.running or torch.is_grad_enabled()
        return "recompute" if recomputing else "backward", self._node_origin(node)

    def _node_origin(self, node) -> int:
        origin = node.metadata.get(_ORIGIN) if node is not None else None
        if origin is not None:
            self._origin = origin
        return self._origin

    def _replayed(self, node) -> tuple[Replay, int] | None:
        """Attribute the recomputed op just recorded to the forward op it runs again (see the
        class docstring), and the ops of its recomputation before it anew where it rules out
        the start they were attributed by. Its recomputation and its step in it; None where
        no forward op is alike (it stays with the node that asked for the recomputation)."""
        index = len(self.ops) - 1
        key, path = replay_key(self.ops[index]), self._recomputed_path(node)
        forward, replay = self._forward_ops, self._replay
        if replay is not None and replay.node is node:
            step = len(replay.ops)
            starts = [
                s for s in replay.starts if s + step < len(forward) and may_run_again(forward[s + step], key, path)
            ]
            if starts:
                replay.starts = starts
                replay.ops.append(index)
                if starts[-1] != replay.start:
                    self._attribute(replay, starts[-1])
                else:
                    self._attribute_op(index, replay.start + step)
                return replay, step
        latest = self.ops[index].origin  # the forward op of the node asking for the recomputation
        starts = [s for s in self._positions.get(key, ()) if s <= latest and may_run_again(forward[s], key, path)]
        if not starts:
            self._replay = None
            return None
        self._replay = Replay(node, starts, starts[-1], [index], [])
        self._attribute_op(index, starts[-1])
        return self._replay, 0

    def _recomputed_path(self, node) -> str | None:
        """The module call running the recomputation `node` asked for, None outside any."""
        for call, asker in reversed(self._stack):
            if asker is node:
                return call.path
        return None

    def _attribute(self, replay: Replay, start: int) -> None:
        replay.start = start
        for step, index in enumerate(replay.ops):
            self._attribute_op(index, start + step)
        for step, metadata in replay.tags:
            metadata[_ORIGIN] = start + step

    def _attribute_op(self, index: int, origin: int) -> None:
        self.ops[index] = replace(self.ops[index], module=self._forward_ops[origin].module, origin=origin)

    def enter(self, path: str, type_name: str, args) -> None:
        if self._phase == "forward":
            super().enter(path, type_name, args)
        else:  # a recomputed call, with the node that asked for it: its path narrows the forward ops it runs again
            self._stack.append((ModuleCall(path, type_name, -1, -1, 0), torch._C._current_autograd_node()))

    def post_hook(self, module, args, output):
        if self._phase == "forward":
            return super().post_hook(module, args, output)
        self._stack.pop()
        return None

    def describe_failure(self, exc: Exception, input_shapes) -> str:
        if self._phase == "forward":
            return super().describe_failure(exc, input_shapes)
        call = self._forward_ops[self._origin].module if self._origin >= 0 else None
        where = f" in the gradient of module '{call.path}' ({call.type})" if call is not None and call.path else ""
        return f"the backward pass failed{where}: {failure_reason(exc)}"

    def pack_saved(self, tensor: torch.Tensor) -> torch.Tensor:
        """saved_tensors_hooks' pack hook: note what autograd keeps for the backward pass."""
        meta = self._metas.get(id(tensor))
        if meta is None:  # not seen by the recorder: a view made above the dispatch mode, or a plain attribute
            base = self._metas.get(id(tensor._base)) if tensor._base is not None else None
            meta = self.register(tensor, "constant", storage=base.storage) if base is not None else self.lookup(tensor)
        if self._phase == "forward":  # not what a recomputed block saves, briefly, inside the backward pass
            self.saved.append(meta)
        # Autograd checks a saved tensor's version when it is unpacked only where no hooks pack
        # it (SavedVariable::unpack): the version goes with it, for `unpack_saved` to check, and
        # the op that saved it (the last recorded), for the error to find what wrote over it.
        return tensor, tensor._version, meta, self.ops[-1] if self.ops else None

    def unpack_saved(self, packed: tuple[torch.Tensor, int, TensorMeta, OpNode | None]) -> torch.Tensor:
        """saved_tensors_hooks' unpack hook: the tensor saved, refused as autograd refuses it
        where it has been written over in place since (a real step cannot run its backward)."""
        tensor, version, meta, saver = packed
        if tensor._version != version:
            raise ArchprofError(self._overwritten_saved_tensor(meta, saver))
        return tensor

    def _overwritten_saved_tensor(self, meta: TensorMeta, saver: OpNode | None) -> str:
        """What cannot run: the gradient reading a saved tensor, and the in-place op that wrote
        over it after it was saved (the first writing into its storage)."""
        node = torch._C._current_autograd_node()
        origin = node.metadata.get(_ORIGIN, -1) if node is not None else -1
        reader = node.name() if node is not None else "a gradient"
        if origin >= 0:
            reader += f", the gradient of {call_text(self._forward_ops[origin].module)},"
        ops = self.backward_ops if saver is not None and saver.phase == "recompute" else self._forward_ops
        writer = _first_writer(ops, saver.index + 1 if saver is not None else 0, meta.storage)
        written = f"{writer.op} in {call_text(writer.module)} then wrote" if writer is not None else "was then written"
        return (
            f"the training step cannot run: {reader} reads a tensor it saved that {written} over in place, as a real"
            " backward says (one of the variables needed for gradient computation has been modified by an inplace"
            " operation)"
        )

    def stop_watching(self) -> None:
        """As `Recorder.stop_watching`, the tensors a Python backward made too (a stashed one
        dying after the trace would look itself up in the watches, gone)."""
        super().stop_watching()
        self._python_watched.clear()

    @contextmanager
    def checkpoints_noted(self) -> Iterator[None]:
        """While active, each non-reentrant checkpointed block's inputs are noted, with when
        the block's frame, which holds them for the replay, dies (`EngineNotes.checkpoint_inputs`);
        a state a replay takes dies by its end (`RandomStates.let_go_after`); and
        checkpointing a block of meta tensors forks the states while replaying it as for a
        CPU's, where torch.random.fork_rng does nothing for the meta device."""
        device_type_of = checkpointing._infer_device_type
        save_inputs = checkpointing._CheckpointFrame.save_inputs

        def as_on_a_cpu(*args) -> str:
            device_type = device_type_of(*args)
            return checkpointing.DefaultDeviceType.get_device_type() if device_type == "meta" else device_type

        def noted_inputs(frame, *args) -> None:
            save_inputs(frame, *args)
            frame.recompute_fn = self._recomputing.noted(self.random_states.let_go_after(frame.recompute_fn))
            if not self._saving_for_itself():  # inside another block's forward: packed by its frame, not held
                return
            inputs = {self.lookup(arg).storage for arg in args if isinstance(arg, torch.Tensor)}
            self._held_for_the_replay(frame, inputs)

        cache_entry = checkpointing._VersionWrapper.__init__

        def noted_cache_entry(entry, value) -> None:  # an output selective checkpointing keeps for the replay
            cache_entry(entry, value)
            if isinstance(value, torch.Tensor):
                self._held_for_the_replay(entry, {self.lookup(value).storage})

        reentrant = checkpointing.CheckpointFunction.forward

        def noted_function(ctx, run_function, *rest):  # the function a reentrant block's backward runs again
            return reentrant(ctx, self._recomputing.noted(run_function), *rest)

        checkpointing._infer_device_type = as_on_a_cpu
        checkpointing._CheckpointFrame.save_inputs = noted_inputs
        checkpointing._VersionWrapper.__init__ = noted_cache_entry
        checkpointing.CheckpointFunction.forward = staticmethod(noted_function)
        try:
            yield
        finally:
            checkpointing._infer_device_type = device_type_of
            checkpointing._CheckpointFrame.save_inputs = save_inputs
            checkpointing._VersionWrapper.__init__ = cache_entry
            checkpointing.CheckpointFunction.forward = staticmethod(reentrant)

    def _saving_for_itself(self) -> bool:
        """Whether what autograd saves now is packed by this recorder's hook (`pack_saved`),
        not by an enclosing checkpointed block's, which keeps a placeholder and lets the tensor go."""
        top = torch._C._autograd._top_saved_tensors_default_hooks(False)
        return top is not None and getattr(top[0], "__self__", None) is self

    def _held_for_the_replay(self, holder: object, storages: set[int]) -> None:
        """`storages` held for a block's replay until `holder` dies (`EngineNotes.checkpoint_inputs`): a
        non-reentrant block's frame (its inputs), or an entry of selective checkpointing's cache."""
        for storage in storages:
            self._frames_holding[storage] = self._frames_holding.get(storage, 0) + 1
            self.engine.checkpoint_inputs[storage] = None
        self._watching.append(weakref.finalize(holder, self._frame_died, storages))

    def _frame_died(self, storages: set[int]) -> None:
        """What held `storages` for a replay died: a frame, once the block's last node that saved a
        tensor has run (another frame may hold them on); a cache entry, once the replay took it."""
        for storage in storages:
            self._frames_holding[storage] -= 1
            if not self._frames_holding[storage]:
                self.engine.checkpoint_inputs[storage] = self._steps_run()

    def _steps_run(self) -> int:
        """The ops recorded so far, the forward's and the backward's together."""
        return len(self.ops) + (len(self._forward_ops) if self._phase == "backward" else 0)

    def saved_tensors_hooks(self) -> AbstractContextManager:
        """While active, every tensor autograd saves for the backward pass is noted (`pack_saved`)."""
        return torch.autograd.graph.saved_tensors_hooks(self.pack_saved, self.unpack_saved)


def _refuse_a_sparse_gradient(tensors: list[torch.Tensor], module: ModuleCall | None) -> None:
    """Refuse a parameter's gradient that is sparse (`nn.Embedding(sparse=True)`'s: the indices
    and values of the rows looked up): the memory passes size every gradient, and the optimizer
    state that follows it, dense, and a real step's have no steady size (SGD's momentum buffer
    gains the rows of each step's gradient; Adam refuses sparse gradients)."""
    if any(tensor.layout != torch.strided for tensor in tensors):
        raise ArchprofError(
            f"{call_text(module)} makes a sparse gradient (sparse=True), whose memory a training analysis cannot"
            " size (archprof counts every gradient and its optimizer state dense): analyse it with sparse=False"
        )


def _first_writer(ops: list[OpNode], start: int, storage: int) -> OpNode | None:
    """The first op from `start` on that writes in place into `storage`."""
    return next((op for op in ops[start:] if op.writes_input and op.outputs[0].storage == storage), None)
