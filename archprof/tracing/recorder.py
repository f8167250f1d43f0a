"""The dispatch mode that records a traced forward: every aten operator, the module call
it ran in, and a TensorMeta for every tensor it read and made.

Where the operator catalogue has an operator's shape formula, the recorder answers the
operator itself with empty meta tensors of the shapes it gives (`meta_outputs.answer_from_formula`):
PyTorch's meta kernels for batch norm, ReLU, add and others are Python decompositions
costing far more. Module calls reach it through the wrappers `archprof.tracing.trace` puts around
every module's forward (`enter`, `post_hook`), and calls that `archprof.tracing.shortcuts`
answers without their forward running through `answer_directly`.
"""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch

# Names read once, as `from` imports: see archprof.structure's (each `torch.<name>` read costs ~300 instructions).
from torch import Tensor, is_grad_enabled
from torch._C import _DisableTorchDispatch, _ForceDispatchKeyGuard

from archprof.cpu_allocation import MOST_FILE_CPU_BYTES, MOST_FILE_CPU_ELEMENTS, CpuBytesTally, called_safely
from archprof.dispatch_mode import DispatchMode
from archprof.errors import ArchprofError, failure_reason
from archprof.graph import ModuleCall, OpNode, TensorKind, TensorMeta, WrappedFloat, WrappedInt
from archprof.structure import tensors_in
from archprof.tracing.call_words import call_text, input_shapes_text
from archprof.tracing.math_bit_copies import MathBitCopies
from archprof.tracing.meta_outputs import (
    COLUMN_MAJOR_ON_A_CPU,
    ONE_TENSOR_TWICE_ON_META,
    MetaAnswers,
    Unmade,
    answer_from_formula,
    check_one_dtype,
    column_major,
    each_its_own,
)
from archprof.tracing.op_info import OpInfo
from archprof.tracing.parameter_attribution import ParameterOwners, followed_calls
from archprof.tracing.raised_calls import CallsRaisedIn
from archprof.tracing.random_states import RandomStates
from archprof.tracing.script_calls import Link
from archprof.tracing.script_stacks import mark
from archprof.tracing.shortcuts import Shortcut, may_shortcut
from archprof.tracing.state_memory import StateMemory

# Assertions an exported program makes about its inputs: no data, no arithmetic, not a layer.
_RUNTIME_CHECKS = frozenset(
    {"aten._assert_tensor_metadata", "aten._assert_async", "aten._assert_scalar", "aten.sym_constrain_range_for_size"}
)


class BeyondBounds(ArchprofError):
    """A model file's forward past what archprof lets it do (`Recorder` with `most_ops`): said
    as it is, in one line, never taken for a limit of the meta device (no real forward then)."""


# Tensors the trace itself holds from start to end: never watched for their release.
_HELD_THROUGHOUT = frozenset({"parameter", "buffer", "input"})


class Recorder(CallsRaisedIn, DispatchMode):
    """Records every aten op; answers the ops it has a shape formula for itself."""

    def __init__(self, real: bool = False, most_ops: int | None = None) -> None:
        super().__init__()
        self.ops: list[OpNode] = []
        self.calls: list[ModuleCall] = []
        self.call_outputs: dict[int, tuple[TensorMeta, ...]] = {}
        # The module calls running now, each with its arguments (their shapes, for errors).
        self._stack: list[tuple[ModuleCall, Any]] = []
        # A module reached under several names (`reached_as`): the name chosen for its paths
        # in a running call's, and the one its last call had.
        self._reached_in: dict[tuple[int, str], str] = {}
        self._reached: dict[int, str] = {}
        self._call_counts: dict[str, int] = {}
        self._metas: dict[int, TensorMeta] = {}  # id(tensor) -> its latest version
        self._named: dict[str, TensorMeta] = {}  # parameters and buffers by name
        self.state_memory = StateMemory()  # and by the memory they hold
        self.answered_directly = 0  # module calls recorded through `archprof.tracing.shortcuts`
        self.random_states = RandomStates()  # noted while `random_states_noted` is active
        # Each storage's tensor objects still alive; and the storages the forward let go of,
        # in the order it did: (storage, the number of ops recorded when its last object died).
        self._holders: dict[int, int] = {}
        self.released: list[tuple[int, int]] = []
        # id(weak reference) -> (the reference, id of its tensor, its storage)
        self._watched: dict[int, tuple[weakref.ref, int, int]] = {}
        self._on_death = self._died  # one bound method for every reference
        # Where not None, every tensor is kept instead of watched (a training trace's backward
        # pass: `archprof.tracing.training_recorder`).
        self._kept: list[torch.Tensor] | None = None
        # Whether a storage whose last object dies is one the forward let go of (not one
        # autograd lets go of in a backward pass, which the timeline times by its nodes).
        self._noting_releases = True
        self._next_storage = 0
        self._count = 0  # TensorMeta ids
        self.saved: list[TensorMeta] = []  # what autograd saved (training traces)
        self._real = real  # real tensors (the CPU fallback): no fast path
        # The most operators a forward may run (None: no bound): a model file's loop is data.
        self._most_ops = most_ops
        # What a model file's forward (`most_ops`) reads and makes on the CPU.
        self._on_the_cpu = CpuBytesTally(MOST_FILE_CPU_BYTES, MOST_FILE_CPU_ELEMENTS)
        self._meta_answers = MetaAnswers()
        # The last exception an operator raised: what a TorchScript forward failed on, which
        # its interpreter hands on as a RuntimeError without its message or its type.
        self.failure: Exception | None = None
        self._math_bit_copies = MathBitCopies()
        # Without hooks (TorchScript): the forward's ops attributed by the parameters they read
        # (`start_root`); None where hooks record the module calls, and in a backward pass.
        self.attribution: ParameterOwners | None = None
        # Whether each forward op is marked for the profiler, which records its TorchScript
        # call stack (`archprof.tracing.script_calls`).
        self.marking = False
        self.calls_followed = False  # whether `Recorder.follow_chains` attributed the forward's ops
        # The device and dtype of the first autocast region (torch.autocast) of another device
        # than the CPU that a meta trace met, traced in its tensors' dtypes (`note_autocast`).
        self.ignored_autocast: tuple[str, torch.dtype] | None = None
        # The dtype of the first CPU autocast region a meta trace met: the trace gives way to a real one.
        self.cpu_autocast: torch.dtype | None = None
        self.forward_starts(below_autograd=False)

    def forward_starts(self, below_autograd: bool) -> None:
        """The forward is about to run, below autograd's keys or not: the key sets (included, excluded)
        a composite operator reaching the recorder whole runs under (`__torch_dispatch__`) are these;
        below them, an operator run in grad mode is noted (`grad_mode_met`: autograd's graph wanted)."""
        self._forward_keys = (torch._C._dispatch_tls_local_include_set(), torch._C._dispatch_tls_local_exclude_set())
        self._below_autograd = below_autograd
        self.grad_mode_met = False

    # -- tensors -------------------------------------------------------------------------

    def register(self, tensor: torch.Tensor, kind: TensorKind, name: str = "", storage: int | None = None):
        if kind in _HELD_THROUGHOUT:
            return self.register_held(tensor, kind, name)
        return self.register_made(tensor, storage, kind)

    def register_held(self, tensor: torch.Tensor, kind: TensorKind, name: str = "") -> TensorMeta:
        """A tensor the trace holds from start to end (`_HELD_THROUGHOUT`), in a storage of its
        own: never watched, a holder never let go of (its views' deaths free nothing)."""
        storage = self._next_storage
        self._next_storage = storage + 1
        count = self._count
        self._count = count + 1
        meta = TensorMeta(count, tuple(tensor.shape), tensor.dtype, storage, kind, name)
        if name:
            self._named[name] = meta
            self.state_memory.add(tensor, storage)
        self._metas[id(tensor)] = meta
        self._holders[storage] = 1
        return meta

    def register_made(self, tensor: torch.Tensor, storage: int | None, kind: TensorKind = "activation") -> TensorMeta:
        """A tensor the forward made (or found), in `storage` (None: a new one), bound as `bind` binds it."""
        if storage is None:  # `new_storage`, inline: every tensor the trace makes comes here
            storage = self._next_storage
            self._next_storage = storage + 1
        count = self._count
        self._count = count + 1
        meta = TensorMeta(count, tuple(tensor.shape), tensor.dtype, storage, kind)
        key = id(tensor)
        if key not in self._metas:  # `bind`, inline
            if self._kept is None:
                reference = weakref.ref(tensor, self._on_death)  # `watch`, inline
                self._watched[id(reference)] = (reference, key, storage)
                self._holders[storage] = self._holders.get(storage, 0) + 1
            else:
                self._kept.append(tensor)
        self._metas[key] = meta
        return meta

    def bind(self, tensor: torch.Tensor, meta: TensorMeta) -> None:
        """`meta` is now what the recorder knows `tensor` as (its latest version)."""
        key = id(tensor)
        if key not in self._metas:  # a tensor object new to the trace, not an in-place result
            if self._kept is None:
                self.watch(tensor, meta.storage, self._on_death)
            else:
                self._kept.append(tensor)  # its id stays unique
        self._metas[key] = meta

    def watch(self, tensor: torch.Tensor, storage: int, on_death: Callable[[weakref.ref], None]) -> weakref.ref:
        """Watch `tensor`, an object of `storage`, die: its id leaves the table when it dies,
        before Python can reuse it; and once the last object of its storage has died, the
        memory is let go of (in the forward, or in a Python backward: `TrainingRecorder`).
        `on_death`, called with the reference when the tensor dies, is `_died` or a function
        that calls it."""
        reference = weakref.ref(tensor, on_death)
        self._watched[id(reference)] = (reference, id(tensor), storage)
        self._holders[storage] = self._holders.get(storage, 0) + 1
        return reference

    def new_storage(self) -> int:
        self._next_storage += 1
        return self._next_storage - 1

    def new_activation(self, shape: tuple[int, ...], dtype: torch.dtype, storage: int) -> TensorMeta:
        """A TensorMeta for an output made without a tensor (`archprof.tracing.replay`'s copies)."""
        meta = TensorMeta(self._count, shape, dtype, storage, "activation")
        self._count += 1
        return meta

    def random_states_noted(self) -> AbstractContextManager:
        """While active, the CPU random-number states taken are noted (`random_states`)."""
        return self.random_states.noting(self._steps_run)

    def _steps_run(self) -> int:
        return len(self.ops)

    def made_so_far(self) -> tuple[int, int]:
        """The next TensorMeta id and storage id."""
        return self._count, self._next_storage

    def meta_of(self, tensor: torch.Tensor) -> TensorMeta | None:
        return self._metas.get(id(tensor))

    def named(self, name: str) -> TensorMeta | None:
        """The parameter or buffer registered under `name`."""
        return self._named.get(name)

    def _died(self, reference: weakref.ref) -> None:
        _, key, storage = self._watched.pop(id(reference))
        del self._metas[key]
        self._holder_gone(storage)

    def _holder_gone(self, storage: int) -> None:
        """One object of `storage` gone (a tensor died, or an `Unmade` output was dropped):
        with its last, the memory is let go of."""
        left = self._holders[storage] - 1
        self._holders[storage] = left
        if not left and self._noting_releases:
            self.released.append((storage, len(self.ops)))

    def stop_watching(self) -> None:
        """Forget every tensor still watched, once the trace is over. Each watch's callback
        holds this recorder (`_on_death`), which holds the watches: a reference cycle that
        would keep the recorder, and every table of it, alive until the collector next runs
        (and run its callbacks into a finished trace as what the model keeps dies)."""
        self._watched.clear()
        self._on_death = None

    def still_alive(self) -> list[tuple[torch.Tensor, int]]:
        """The watched tensors alive now, each with its storage."""
        alive = ((reference(), storage) for reference, _, storage in self._watched.values())
        return [(tensor, storage) for tensor, storage in alive if tensor is not None]

    def releases(self, held: Iterable[int] = ()) -> dict[int, int]:
        """Storage -> the number of ops recorded when the forward let go of it, in storage
        order (deaths come in another order in a block copied by `archprof.tracing.replay`); the
        storages in `held` (a cache the model keeps for its next call) held to the end."""
        released = dict(self.released) | dict.fromkeys(held, len(self.ops))
        return dict(sorted(released.items()))

    @contextmanager
    def one_cpu_operator(self) -> Iterator[None]:
        """Around a composite call a CPU runs as one operator (`kernels.one_cpu_operator.ONE_CPU_OPERATOR`): the
        storages its ops make and let go of before it returns are that operator's workspace,
        noted on its last op (`OpNode.workspace`)."""
        ops, released = len(self.ops), len(self.released)
        yield
        self._note_let_go_since(ops, released)

    def _note_let_go_since(self, ops: int, released: int) -> None:
        """`one_cpu_operator`'s note, for the call that began with `ops` ops recorded and
        `released` storages let go of: what its ops made and let go of, its workspace."""
        if len(self.released) == released:  # nearly always (a convolution, an activation): nothing let go of
            return
        let_go = set()
        for storage, _ in self.released[released:]:  # loops, not comprehensions: every batch norm comes here
            let_go.add(storage)
        # In the order made: a shortcut's outputs are let go of in another order than its forward's.
        workspace = []
        for op in self.ops[ops:]:
            for tensor in op.outputs:
                if tensor.storage in let_go and tensor.storage not in workspace:
                    workspace.append(tensor.storage)
        self.note_workspace(workspace)

    def note_workspace(self, storages: Iterable[int]) -> None:
        """Note `storages` as the workspace of the op recorded last (`OpNode.workspace`)."""
        workspace = tuple(storages)
        if workspace:
            self.ops[-1] = self.ops[-1].with_workspace(workspace)

    def lookup(self, tensor: torch.Tensor) -> TensorMeta:
        meta = self._metas.get(id(tensor))
        if meta is not None:
            return meta
        # A tensor made outside the trace (a plain tensor attribute of a module), in the storage
        # of the parameter or buffer whose memory it views, if it views one's.
        return self.register(tensor, "constant", "", self.state_memory.storage_viewed_by(tensor))

    # -- modules -------------------------------------------------------------------------

    def enter(self, path: str, type_name: str, args) -> None:
        """A call of the module at `path` begins (the pre hook)."""
        self._stack.append((self.open_call(path, type_name, len(self.ops)), args))

    def reached_as(self, paths: tuple[str, ...]) -> str:
        """Of a module's paths (`module_tree.reached_under`, its first first), the one the call
        running now holds it by: its first where that lies under the call's path (a block
        looped over as `blocks.2` that the model also holds as `last`), else the nearest under
        it (`self.stage = nn.Sequential(self.conv, ...)`: "stage.0" in the stage's call; a
        layer of a ModuleList the call loops over, two levels down), the first listed of those
        as near; else its first. Outside any call (a checkpointed block run again in the
        backward pass), the name its last call in the forward had."""
        if not self._stack:
            return self._reached.get(id(paths), paths[0])
        running = self._stack[-1][0].path
        key = (id(paths), running)  # by id: a module's paths are a tuple the trace holds throughout, maybe long
        chosen = self._reached_in.get(key)
        if chosen is None:
            prefix = f"{running}." if running else ""
            under = [path for path in paths if path.startswith(prefix)]
            # Its first, else the nearest (min keeps the first listed of those as near).
            chosen = min(under, key=lambda path: (path != paths[0], path.count("."))) if under else paths[0]
            self._reached_in[key] = chosen
        self._reached[id(paths)] = chosen
        return chosen

    def open_call(self, path: str, type_name: str, first_op: int) -> ModuleCall:
        """Record a call of the module at `path` (its stack entry is the caller's to make)."""
        count = self._call_counts.get(path, 0)
        self._call_counts[path] = count + 1
        call = ModuleCall(path, type_name, count, len(self.calls), first_op)
        self.calls.append(call)
        return call

    def start_root(self, type_name: str, args, attribution: ParameterOwners) -> None:
        """Without hooks: the model's call (of class `type_name`), for errors; its ops get calls
        of their own, by the parameters and buffers they read (`attribution`)."""
        call = ModuleCall("", type_name, 0, -1, 0)
        self._stack.append((call, args))
        self.attribution = attribution

    def follow_chains(self, chains: list[tuple[int | None, tuple[Link, ...] | None]]) -> None:
        """Without hooks: the forward's ops attributed anew, and its calls rebuilt, from their
        TorchScript call stacks (`parameter_attribution.followed_calls`)."""
        model_inputs = tuple(map(self.lookup, tensors_in(self._stack[0][1]))) if self._stack else ()
        ops, calls, handed = followed_calls(self.ops, chains, self.attribution, model_inputs)
        self.ops[:] = ops
        self.calls[:] = calls
        self.call_outputs.update(handed)
        self.calls_followed = True

    def post_hook(self, module, args, output):
        call, _ = self._stack.pop()
        if isinstance(output, Tensor):
            self.call_outputs[call.index] = (self._metas.get(id(output)) or self.lookup(output),)  # `lookup`, inline
        else:
            self.call_outputs[call.index] = tuple(map(self.lookup, tensors_in(output)))

    def open_calls(self) -> int:
        """How many module calls are running now."""
        return len(self._stack)

    def describe_failure(self, exc: Exception, input_shapes) -> str:
        reason = failure_reason(exc)
        failed = self._failed_in(exc)
        if failed is None:
            return f"the model's forward failed on input {input_shapes_text(input_shapes)}: {reason}"
        call, shapes = failed
        return f"the forward pass failed in {call_text(call)} on input {input_shapes_text(shapes)}: {reason}"

    def running_path(self) -> str:
        """The path of the module call running now (the one `enter` opened last)."""
        return self._stack[-1][0].path

    def inner_module(self, exc: BaseException) -> str:
        """The submodule call `exc` was raised in, "module 'layer1.0' (BasicBlock)"; "" in the model's own code."""
        failed = self._failed_in(exc)
        call = failed[0] if failed is not None else None
        return call_text(call) if call is not None and call.path else ""

    # -- operators -----------------------------------------------------------------------

    def answer_directly(self, own: dict[str, Any], x, shortcut: Shortcut) -> torch.Tensor | None:
        """The output of the module whose attributes are `own` (its `__dict__`), its operator recorded
        as its forward would have reached it (and the children the forward then calls, called on
        its output); None where the shortcut does not know the call (the forward runs instead)."""
        if not may_shortcut(x):
            return None
        try:
            call = shortcut(own, x)
        except KeyError:  # an attribute the module does not hold itself: the forward reads it as Python does
            return None
        if call is None:
            return None
        func, args, *children = call
        # Noted as the composite the forward calls, which a CPU runs as one operator: what it lets
        # go of inside (layer_norm's mean and rstd, in inference) its workspace. As in
        # `one_cpu_operator`, without a generator and a context manager made for every call.
        ops, released = len(self.ops), len(self.released)
        output = self._dispatched(func, args, first_only=True)
        if type(output) is tuple and type(output[-1]) is Unmade:  # answered by the formula, the others unmade
            # As `_died` lets go of tensors: last first, as Python frees a dropped tuple's items.
            for meta in reversed(self.ops[-1].outputs[1:]):
                self._holder_gone(meta.storage)
            output = output[0]
        else:
            if isinstance(output, tuple):  # its other outputs let go of before the children run, as by the forward
                output = output[0]
            self._note_let_go_since(ops, released)
        self.answered_directly += 1
        for child in children:  # called as the forward calls them: recorded as module calls
            output = child(output)
        return output

    def answering(self, x) -> Callable[[Any, tuple], Any] | None:
        """What records a call on `x` as the dispatcher would hand it to this mode, without the
        round trip through it (operator, arguments -> what it returns); None where calls on `x`
        may not skip the dispatcher (as `may_shortcut` says)."""
        return self._dispatched if may_shortcut(x) else None

    def _dispatched(self, func, args: tuple, first_only: bool = False):
        with _DisableTorchDispatch():  # as inside a dispatch: its tensors made untraced
            return self.__torch_dispatch__(func, (), args, {}, first_only)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None, first_only: bool = False):
        """The op recorded, and answered as its kernel would. `first_only`: the caller keeps the
        first output and lets go of the others at once (`answer_directly`): an answer from the
        formula makes that one alone, the others `Unmade` (noted as made, and let go of by the caller)."""
        try:
            kwargs = kwargs or {}
            info = _OP_INFO.get(func)
            if info is None:
                info = _OP_INFO[func] = OpInfo.of(func)
            if self._below_autograd and is_grad_enabled():
                self.grad_mode_met = True
            decomposed = info.decomposed
            if decomposed is not None and (info.stays_composite is None or info.stays_composite(*args, **kwargs)):
                # Whole where autograd's keys were skipped (a forward run below them, inference mode): run
                # as their kernel on a CPU runs it (`OpInfo.decomposed`), under the forward's key sets, not
                # this method's (which skip every key above Python's: views untracked, math bits unresolved).
                with _ForceDispatchKeyGuard(*self._forward_keys), self:
                    return decomposed(*args, **kwargs)
            if info.name in _RUNTIME_CHECKS:
                return func(*args, **kwargs)
            tensors = info.slots.tensors(args, kwargs)
            if self._most_ops is not None and not self._real:  # a model file's: its CPU tensors bounded too
                self._count_on_the_cpu(info, func, args, kwargs, tensors)
            out = None
            imported = len(sys.modules)
            if not self._real and info.shape is not None:
                out = answer_from_formula(func, info, args, kwargs, tensors, first_only)
            # An answer from the formula had its tensors in one dtype (it declines others): only
            # a call it declined or was not asked may have mixed them.
            if out is None and info.same_dtype:
                check_one_dtype(info, tensors)
            if out is None and not self._real and info.meta_answer_kept:
                out = self._meta_answers.answer(func, info, args, kwargs, tensors)
            if out is None:
                out = called_safely(func, args, kwargs)
                if info.name in ONE_TENSOR_TWICE_ON_META:
                    out = each_its_own(out)
                elif info.name in COLUMN_MAJOR_ON_A_CPU:
                    out = column_major(out, COLUMN_MAJOR_ON_A_CPU[info.name])
            if len(sys.modules) != imported:
                # A decomposition's first call imported a module (torch._dynamo, by
                # torch._compile's wrapper: a bool map's sum, rsub's `1 - x`): torch.fx's `wrap`,
                # run by that import, leaves frames in reference cycles whose `f_back` holds
                # the frames below, the model's forward or a Python backward with their locals,
                # until the collector runs, which it does not in a trace (`collector_paused`).
                # Eager PyTorch frees those locals as the function returns (a kernel imports nothing).
                gc.collect()
            self._record(info, args, kwargs, tensors, out)
            return out
        except Exception as exc:  # TorchScript's interpreter passes it on as a bare RuntimeError
            self.failure = exc
            raise

    def _count_on_the_cpu(self, info: OpInfo, func, args: tuple, kwargs: dict, tensors: list) -> None:
        tally = self._on_the_cpu
        if not tally.add(info.name, func, info.is_view, info.writes_input, args, kwargs, tensors):
            does = "computes" if tally.reading else "allocates"
            # Named by the operator that took it past: its refusal may be caught and the forward go
            # on to another (a TorchScript forward's bilinear ran a view after its _trilinear's).
            raise BeyondBounds(
                f"the forward {tally.done()} (by {tally.past}), which an analysis {does} for real: more than the"
                f" {tally.bound()} a model file may"
            )

    def note_autocast(self, device: str, dtype: torch.dtype) -> None:
        """An autocast region met by a meta trace (`archprof.tracing.autocast_regions`): a CPU
        one, which only a real forward runs (`cpu_autocast`), or another device's, which acts on
        none of its tensors (`ignored_autocast`, said); the first of each kept."""
        if device == "cpu":
            self.cpu_autocast = self.cpu_autocast or dtype
        elif self.ignored_autocast is None:
            self.ignored_autocast = (device, dtype)

    def _record(
        self, info: OpInfo, args, kwargs, tensors: list[torch.Tensor], out, attributed: tuple | None = None
    ) -> None:
        """Append the op's node. `attributed`: its (module call, phase, origin) where the caller
        knows them (a backward op's, from its forward op); else the module call running now."""
        if self._most_ops is not None and len(self.ops) >= self._most_ops:
            raise BeyondBounds(
                f"the forward runs more than {self._most_ops:,} operators, more than any network's (the largest of"
                " torchvision's and timm's runs 10,928): a loop that does not end?"
            )
        written = None
        if info.out_names:  # an out= call does not read the tensors it writes: recorded as the plain call
            written = [kwargs[name] for name in info.out_names]
            kwargs = {name: value for name, value in kwargs.items() if name not in info.out_names}
            tensors = info.slots.tensors(args, kwargs)
        # Before the outputs: an in-place op's output is a new version of its input tensor.
        known = self._metas.get  # `lookup`, its common case inline: a tensor seen before
        read = []
        for tensor in tensors:  # a loop, not a comprehension: its function and frame made for every op
            read.append(known(id(tensor)) or self.lookup(tensor))
        inputs = tuple(read)
        # A number where a tensor goes: the parser wrapped it (`_WRAPPED`).
        node_args, node_kwargs = info.slots.substituted(args, kwargs, inputs, _WRAPPED)
        # In-place ops and views live in their first input's storage.
        storage = inputs[0].storage if (info.writes_input or info.is_view) and inputs else None
        workspace = ()
        if written is not None:
            outputs = self._filled(written, out)
        elif isinstance(out, Tensor):
            outputs = (self.register_made(out, storage),)
        elif type(out) is tuple and type(out[-1]) is Unmade:  # answered `first_only`
            outputs, workspace = self._made_and_unmade(out, storage)
        else:
            made = []
            for tensor in tensors_in(out):  # a loop, not a comprehension (as above)
                made.append(self.register_made(tensor, storage))
            outputs = tuple(made)
        if attributed is None:
            module = self._stack[-1][0] if self._stack else None
            if self.attribution is not None and module is not None and not module.path:
                calls, counts = self.calls, self._call_counts
                module = self.attribution.call_of(info, inputs, outputs, module, self.ops, calls, counts)
            if self.marking:
                mark(len(self.ops))
            phase, origin = "forward", -1
        else:
            module, phase, origin = attributed
        self.ops.append(
            OpNode(
                len(self.ops),
                info.name,
                node_args,
                node_kwargs,
                inputs,
                outputs,
                module,
                info.writes_input,
                info.is_view,
                phase,
                origin,
                workspace,
            )
        )
        copies = self._math_bit_copies
        if copies.waiting is not None or info.name == "aten.clone":  # most ops: neither, no call
            copied = copies.workspace_after(self.ops[-1], tensors, out)
            if copied is not None:
                self.note_workspace((copied,))

    def _made_and_unmade(self, out: tuple, storage: int | None) -> tuple[tuple[TensorMeta, ...], tuple[int, ...]]:
        """The TensorMetas of an answer `first_only`: its first output's, registered; then each
        `Unmade` one's, as `register_made` registers a tensor, but none to watch. And the op's
        workspace, as `_note_let_go_since` would find it: the storages made for the `Unmade`
        ones, which the caller lets go of inside its call (`answer_directly`)."""
        made, workspace = [self.register_made(out[0], storage)], []
        for unmade in out[1:]:
            held = storage
            if storage is None:
                held = self.new_storage()
                workspace.append(held)
            made.append(self.new_activation(unmade.shape, unmade.dtype, held))
            self._holders[held] = self._holders.get(held, 0) + 1
        return tuple(made), tuple(workspace)

    def users_copy(self) -> AbstractContextManager:
        """Around a call of the user's that copies a tensor (`kernels._USERS_COPIES`): its copy is the
        user's, not the math-bit fallback's (`MathBitCopies.users_copy`)."""
        return self._math_bit_copies.users_copy()

    def _filled(self, written: list[torch.Tensor], out) -> tuple[TensorMeta, ...]:
        """The results of an out= call, each in the storage of the tensor it was written into
        (`written`); in a new one where the call grew that tensor (resizing allocates anew)."""
        metas = []
        for destination, tensor in zip(written, tensors_in(out), strict=True):
            before = self.lookup(destination)
            grown = tensor.numel() * tensor.element_size() > before.nbytes
            metas.append(self.register(tensor, "activation", storage=None if grown else before.storage))
        return tuple(metas)


_WRAPPED = {float: WrappedFloat, int: WrappedInt}  # bool and complex ones (1 and 16 B): not marked

# Per operator overload, read once per process: the schema and the catalogue do not change.
_OP_INFO: dict[Any, OpInfo] = {}
