"""The dispatch mode that records a traced forward: every aten operator, the module call
it ran in, and a TensorMeta for every tensor it read and made.

Where the operator catalogue has an operator's shape formula, the recorder answers the
operator itself with empty meta tensors of the shapes it gives (`_answer_from_formula`):
PyTorch's meta kernels for batch norm, ReLU, add and others are Python decompositions
costing far more. Module calls reach it through the wrappers `archprof.trace` puts around
every module's forward (`enter`, `post_hook`), and calls that `archprof.shortcuts`
answers without their forward running through `answer_directly`.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._prims_common import make_contiguous_strides_for
from torch.utils._python_dispatch import TorchDispatchMode

from archprof.errors import short_reason
from archprof.graph import ModuleCall, OpNode, TensorKind, TensorMeta, WrappedFloat, WrappedInt
from archprof.kernels import COMPOSITE, HANDED_DOWN_WHOLE
from archprof.operators import Family, Layout, find_operator
from archprof.operators.cpu_convolution import cpu_convolution_format
from archprof.operators.shapes import Refused, elementwise_strides, output_dtype, suggests_channels_last
from archprof.script_calls import Link, mark
from archprof.shortcuts import Shortcut, may_shortcut
from archprof.structure import TensorSlots, tensors_in
from archprof.units import shapes_text

# Operators returning views of their input whose schemas carry no alias annotation
# (`_unsafe_view`: what `reshape` returns after its copy, and matmul's batch folds).
_UNANNOTATED_VIEWS = frozenset(
    {"aten.unsafe_split", "aten.unsafe_split_with_sizes", "aten.unsafe_chunk", "aten._unsafe_view"}
)
# Assertions an exported program makes about its inputs: no data, no arithmetic, not a layer.
_RUNTIME_CHECKS = frozenset(
    {"aten._assert_tensor_metadata", "aten._assert_async", "aten._assert_scalar", "aten.sym_constrain_range_for_size"}
)


# Tensors the trace itself holds from start to end: never watched for their release.
_HELD_THROUGHOUT = frozenset({"parameter", "buffer", "input"})


def call_text(call: ModuleCall | None) -> str:
    """A module call in words: "module 'layer1.0' (BasicBlock)", "the model (ResNet)" for its own."""
    if call is None:
        return "the model"
    return f"module '{call.path}' ({call.type})" if call.path else f"the model ({call.type})"


def input_shapes_text(shapes) -> str:
    """The shapes a forward was given, for an error: "1x3x224x224", "(no tensor)"."""
    return shapes_text(shapes) or "(no tensor)"


class Recorder(TorchDispatchMode):
    """Records every aten op; answers the ops it has a shape formula for itself."""

    def __init__(self, real: bool = False, module_types: dict[str, str] | None = None) -> None:
        super().__init__()
        self.ops: list[OpNode] = []
        self.calls: list[ModuleCall] = []
        self.call_outputs: dict[int, tuple[TensorMeta, ...]] = {}
        # The module calls running now, each with its arguments (their shapes, for errors).
        self._stack: list[tuple[ModuleCall, Any]] = []
        self._call_counts: dict[str, int] = {}
        self._metas: dict[int, TensorMeta] = {}  # id(tensor) -> its latest version
        self._named: dict[str, TensorMeta] = {}  # parameters and buffers by name
        self.answered_directly = 0  # module calls recorded through `archprof.shortcuts`
        # Each storage's tensor objects still alive; and the storages the forward let go of,
        # in the order it did: (storage, the number of ops recorded when its last object died).
        self._holders: dict[int, int] = {}
        self.released: list[tuple[int, int]] = []
        # id(weak reference) -> (the reference, id of its tensor, its storage)
        self._watched: dict[int, tuple[weakref.ref, int, int]] = {}
        self._on_death = self._died  # one bound method for every reference
        # Where not None, every tensor is kept instead of watched (a training trace's backward
        # pass: `archprof.training_recorder`).
        self._kept: list[torch.Tensor] | None = None
        # Whether a storage whose last object dies is one the forward let go of (not one
        # autograd lets go of in a backward pass, which the timeline times by its nodes).
        self._noting_releases = True
        self._next_storage = 0
        self._count = 0  # TensorMeta ids
        self.saved: list[TensorMeta] = []  # what autograd saved (training traces)
        self._real = real  # real tensors (the CPU fallback): no fast path
        self._meta_answers = _MetaAnswers()
        # The last exception an operator raised: what a TorchScript forward failed on, which
        # its interpreter hands on as a RuntimeError without its message or its type.
        self.failure: Exception | None = None
        # A conjugate view's copy, for the next op: its storage and a weak reference to it.
        self._resolved: tuple[int, weakref.ref] | None = None
        self._users_copies = 0  # the user's copies running (`users_copy`)
        # Without hooks (TorchScript): every module's type, ops attributed by parameters
        # (`_owner_call`): each parameter's and buffer's storage -> the submodules holding it,
        # the module call its ops go to now, the owner last chosen among a tied tensor's.
        self._by_parameters = module_types
        self._owners: dict[int, tuple[str, ...]] = {}
        self._open: _OwnerCall | None = None
        self._chosen: dict[tuple[str, ...], str] = {}
        self._versions: dict[int, int] = {}  # id of an in-place result -> id of the tensor it is a version of
        # Whether each forward op is marked for the profiler, which records its TorchScript
        # call stack (`archprof.script_calls`).
        self.marking = False
        self.calls_followed = False  # whether `follow_chains` attributed the forward's ops
        # The device and dtype of the first autocast region (torch.autocast) in which a meta
        # trace ran a matrix product in its inputs' dtype instead (`_note_autocast`).
        self.ignored_autocast: tuple[str, torch.dtype] | None = None

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Otherwise torch wraps __torch_dispatch__ in dynamo.disable, whose first call
        # imports torch._dynamo: 1.1 s of the CLI's start-up for nothing (no compilation
        # ever happens inside the trace).
        return False

    # -- tensors -------------------------------------------------------------------------

    def register(self, tensor: torch.Tensor, kind: TensorKind, name: str = "", storage: int | None = None):
        if storage is None:  # `new_storage`, inline: every tensor the trace makes comes here
            storage = self._next_storage
            self._next_storage = storage + 1
        count = self._count
        self._count = count + 1
        meta = TensorMeta(count, tuple(tensor.shape), tensor.dtype, storage, kind, name)
        if name:
            self._named[name] = meta
        if kind in _HELD_THROUGHOUT:  # a holder never let go of: its views' deaths free nothing
            self._metas[id(tensor)] = meta
            self._holders[storage] = self._holders.get(storage, 0) + 1
        else:
            self.bind(tensor, meta)
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
        """A TensorMeta for an output made without a tensor (`archprof.replay`'s copies)."""
        meta = TensorMeta(self._count, shape, dtype, storage, "activation")
        self._count += 1
        return meta

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
        left = self._holders[storage] - 1
        self._holders[storage] = left
        if not left and self._noting_releases:
            self.released.append((storage, len(self.ops)))

    def still_alive(self) -> list[tuple[torch.Tensor, int]]:
        """The watched tensors alive now, each with its storage."""
        alive = ((reference(), storage) for reference, _, storage in self._watched.values())
        return [(tensor, storage) for tensor, storage in alive if tensor is not None]

    def releases(self, held: Iterable[int] = ()) -> dict[int, int]:
        """Storage -> the number of ops recorded when the forward let go of it, in storage
        order (deaths come in another order in a block copied by `archprof.replay`); the
        storages in `held` (a cache the model keeps for its next call) held to the end."""
        released = dict(self.released)
        end = len(self.ops)
        for storage in held:
            released[storage] = end
        return dict(sorted(released.items()))

    @contextmanager
    def one_cpu_operator(self) -> Iterator[None]:
        """Around a composite call a CPU runs as one operator (`kernels._ONE_CPU_OPERATOR`): the
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
        let_go = {storage for storage, _ in self.released[released:]}
        made = dict.fromkeys([tensor.storage for op in self.ops[ops:] for tensor in op.outputs])
        # In the order made: a shortcut's outputs are let go of in another order than its forward's.
        self.note_workspace([storage for storage in made if storage in let_go])

    def note_workspace(self, storages: Iterable[int]) -> None:
        """Note `storages` as the workspace of the op recorded last (`OpNode.workspace`)."""
        workspace = tuple(storages)
        if workspace:
            self.ops[-1] = self.ops[-1].with_workspace(workspace)

    def lookup(self, tensor: torch.Tensor) -> TensorMeta:
        meta = self._metas.get(id(tensor))
        # A tensor made outside the trace (a plain tensor attribute of a module).
        return meta if meta is not None else self.register(tensor, "constant")

    # -- modules -------------------------------------------------------------------------

    def enter(self, path: str, type_name: str, args) -> None:
        """A call of the module at `path` begins (the pre hook)."""
        self._stack.append((self.open_call(path, type_name, len(self.ops)), args))
        # Here, not in __torch_dispatch__, where the dispatcher has autocast off.
        if not self._real and torch._C._is_any_autocast_enabled():
            self._note_autocast(tensors_in(args))

    def open_call(self, path: str, type_name: str, first_op: int) -> ModuleCall:
        """Record a call of the module at `path` (its stack entry is the caller's to make)."""
        count = self._call_counts.get(path, 0)
        self._call_counts[path] = count + 1
        call = ModuleCall(path, type_name, count, len(self.calls), first_op)
        self.calls.append(call)
        return call

    def start_root(self, type_name: str, args, owners: dict[int, tuple[str, ...]]) -> None:
        """Without hooks: the model's call (of class `type_name`), for errors; its ops get calls
        of their own. `owners`: each parameter's and buffer's storage -> the submodules holding it."""
        call = ModuleCall("", type_name, 0, -1, 0)
        self._stack.append((call, args))
        self._owners = owners

    def post_hook(self, module, args, output):
        call, _ = self._stack.pop()
        if isinstance(output, torch.Tensor):
            self.call_outputs[call.index] = (self.lookup(output),)
        else:
            self.call_outputs[call.index] = tuple(map(self.lookup, tensors_in(output)))

    def describe_failure(self, exc: Exception, input_shapes) -> str:
        reason = short_reason(exc)
        if not self._stack:
            return f"the model's forward failed on input {input_shapes_text(input_shapes)}: {reason}"
        call, args = self._stack[-1]
        shapes = tuple(tuple(a.shape) for a in tensors_in(args))
        return f"the forward pass failed in {call_text(call)} on input {input_shapes_text(shapes)}: {reason}"

    def inner_module(self) -> str:
        """The submodule call running now, "module 'layer1.0' (BasicBlock)"; "" in the model's own code."""
        call = self._stack[-1][0] if self._stack else None
        return call_text(call) if call is not None and call.path else ""

    # -- operators -----------------------------------------------------------------------

    def answer_directly(self, module: torch.nn.Module, x, shortcut: Shortcut) -> torch.Tensor | None:
        """The module's output, its operator recorded as its forward would have reached it
        (and the children the forward then calls, called on its output); None where the
        shortcut does not know the call (the forward runs instead)."""
        if not may_shortcut(x):
            return None
        call = shortcut(module, x)
        if call is None:
            return None
        func, args, *children = call
        # Noted as the composite the forward calls, which a CPU runs as one operator: what it lets
        # go of inside (layer_norm's mean and rstd, in inference) its workspace. As in
        # `one_cpu_operator`, without a generator and a context manager made for every call.
        ops, released = len(self.ops), len(self.released)
        output = self._dispatched(func, args)
        if isinstance(output, tuple):  # its other outputs let go of before the children run, as by the forward
            output = output[0]
        self._note_let_go_since(ops, released)
        self.answered_directly += 1
        for child in children:  # called as the forward calls them: recorded as module calls
            output = child(output)
        return output

    def answer_call(self, func, args: tuple):
        """What `func(*args)` returns, recorded as the dispatcher would hand it to this mode,
        without the round trip through it; None where the call may not skip the dispatcher
        (as `may_shortcut` says of its first argument)."""
        return self._dispatched(func, args) if may_shortcut(args[0]) else None

    def _dispatched(self, func, args: tuple):
        with torch._C._DisableTorchDispatch():  # as inside a dispatch: its tensors made untraced
            return self.__torch_dispatch__(func, (), args, {})

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        try:
            kwargs = kwargs or {}
            info = _OP_INFO.get(func)
            if info is None:
                info = _OP_INFO[func] = OpInfo.of(func)
            if info.composite:
                # Reached whole only where the Autograd keys, whose kernel decomposes it, were
                # skipped (inference mode): decomposed here, as eager PyTorch's device kernel is
                # the same composite one.
                with self:
                    return func._op_dk(COMPOSITE, *args, **kwargs)
            if info.name in _RUNTIME_CHECKS:
                return func(*args, **kwargs)
            tensors = info.slots.tensors(args, kwargs)
            out = None
            imported = len(sys.modules)
            if not self._real and info.shape is not None:
                out = _answer_from_formula(func, info, args, kwargs, tensors)
            # An answer from the formula had its tensors in one dtype (it declines others): only
            # a call it declined or was not asked may have mixed them.
            if out is None and info.same_dtype:
                _check_one_dtype(info, tensors)
            if out is None and not self._real and info.meta_answer_kept:
                out = self._meta_answers.answer(func, info, args, kwargs, tensors)
            if out is None:
                out = func(*args, **kwargs)
                if info.name in _ONE_TENSOR_TWICE_ON_META:
                    out = _each_its_own(out)
                elif info.name in _COLUMN_MAJOR_ON_A_CPU:
                    out = _column_major(out, _COLUMN_MAJOR_ON_A_CPU[info.name])
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

    def _note_autocast(self, tensors: list[torch.Tensor]) -> None:
        """A module is called in an autocast region, which acts on a device's own tensors
        only: on meta ones its convolutions and matrix products run in their inputs' dtype,
        where autocast would have cast any floating one but a float64 to the region's."""
        if self.ignored_autocast is not None:
            return
        for device in _AUTOCAST_DEVICES:
            if torch.is_autocast_enabled(device):
                dtype = torch.get_autocast_dtype(device)
                if any(t.is_floating_point() and t.dtype not in (dtype, torch.float64) for t in tensors):
                    self.ignored_autocast = (device, dtype)
                return

    def _record(
        self, info: OpInfo, args, kwargs, tensors: list[torch.Tensor], out, attributed: tuple | None = None
    ) -> None:
        """Append the op's node. `attributed`: its (module call, phase, origin) where the
        caller knows them (a backward op's, from its forward op); else the module call
        running now, in the forward."""
        written = None
        if info.out_names:  # an out= call does not read the tensors it writes: recorded as the plain call
            written = [kwargs[name] for name in info.out_names]
            kwargs = {name: value for name, value in kwargs.items() if name not in info.out_names}
            tensors = info.slots.tensors(args, kwargs)
        # Before the outputs: an in-place op's output is a new version of its input tensor.
        known = self._metas.get  # `lookup`, its common case inline: a tensor seen before
        inputs = tuple([known(id(tensor)) or self.lookup(tensor) for tensor in tensors])
        # A number where a tensor goes: the parser wrapped it (`_WRAPPED`).
        node_args, node_kwargs = info.slots.substituted(args, kwargs, inputs, _WRAPPED)
        # In-place ops and views live in their first input's storage.
        storage = inputs[0].storage if (info.writes_input or info.is_view) and inputs else None
        if written is not None:
            outputs = self._filled(written, out)
        elif isinstance(out, torch.Tensor):
            outputs = (self.register(out, "activation", "", storage),)
        else:
            outputs = tuple([self.register(t, "activation", "", storage) for t in tensors_in(out)])
        if attributed is None:
            module = self._stack[-1][0] if self._stack else None
            if self._by_parameters is not None and module is not None and not module.path:
                module = self._owner_call(info, inputs, outputs, module)
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
            )
        )
        if self._resolved is not None or info.name == "aten.clone":  # most ops: neither, no call
            self._note_math_bits_resolved(info, tensors, out)

    def _note_math_bits_resolved(self, info: OpInfo, tensors: list[torch.Tensor], out) -> None:
        """Note the copy of a conjugate (or negative) view that PyTorch's math-bit fallback makes
        for an operator that reads it (`grad.conj() * result.sgn()`, polar's gradient) as that
        operator's workspace (`OpNode.workspace`): the fallback resolves the view inside the
        operator's call and frees the copy as it returns, where the trace sees a `clone` of its
        own. Known as a clone that drops the view's bit, read by the op recorded next, and not
        the user's own copy (`x.conj().resolve_conj()`, read at once and maybe kept): one a call
        of the user's made (`users_copy`), or, made under another name (`torch.ops.aten.clone`),
        one with an autograd node, which the fallback's never has (it runs below autograd). A
        user's copy that needs no grad, made under another name, is taken for the fallback's."""
        resolved, self._resolved = self._resolved, None
        if resolved is not None and any(t.storage == resolved[0] for t in self.ops[-1].inputs):
            copy = resolved[1]()
            if copy is None or copy.grad_fn is None:
                self.note_workspace((resolved[0],))
        if info.name == "aten.clone" and not self._users_copies and _drops_a_math_bit(tensors[0], out):
            self._resolved = (self.ops[-1].outputs[0].storage, weakref.ref(out))

    @contextmanager
    def users_copy(self) -> Iterator[None]:
        """Around a call of the user's that copies a tensor (`kernels._USERS_COPIES`: `resolve_conj`,
        `clone`): its copy of a conjugate or negative view is the user's, however it is read, not
        the math-bit fallback's (`_note_math_bits_resolved`)."""
        self._users_copies += 1
        try:
            yield
        finally:
            self._users_copies -= 1

    def _filled(self, written: list[torch.Tensor], out) -> tuple[TensorMeta, ...]:
        """The results of an out= call, each in the storage of the tensor it was written into
        (`written`); in a new one where the call grew that tensor (resizing allocates anew)."""
        metas = []
        for destination, tensor in zip(written, tensors_in(out), strict=True):
            before = self.lookup(destination)
            grown = tensor.numel() * tensor.element_size() > before.nbytes
            metas.append(self.register(tensor, "activation", storage=None if grown else before.storage))
        return tuple(metas)

    def _owner_call(
        self, info: OpInfo, inputs: tuple[TensorMeta, ...], outputs: tuple[TensorMeta, ...], root: ModuleCall
    ) -> ModuleCall:
        """Without hooks: the call of the submodule whose parameters or buffers (or views of
        them: a linear layer's transposed weight) the op reads; else the model itself, one row
        per op (its output counted, as nothing says which ops a parameter-free module such as
        ReLU grouped).

        An op of the module now open continues its call unless it reads again a tensor the call
        has read (any version of it), or writes again one it has written: a module called twice
        in a row reads its weight twice, where one call of any layer reads each of its tensors
        once (a batch norm in training writes its batch count, then reads its weights and
        statistics). The model's own ops between two ops of one call are that call's (a linear
        layer's view of its input before its product); so is `_unsafe_view` of the call's last
        output, which only a composite's reshape of its own product makes (matmul's, linear's).
        A new call of a tied tensor goes to its next holder after the one chosen last, in the
        model's order: an Embedding's lookup, then the Linear head's product."""
        owned = [t for t in inputs if t.storage in self._owners]
        opened = self._open
        if not owned:
            last = self.ops[-1] if self.ops else None
            if (
                info.name == "aten._unsafe_view"
                and opened is not None
                and last is not None
                and last.module is opened.call
                and inputs
                and inputs[0] in last.outputs
            ):
                opened.last = len(self.ops)
                return opened.call
            call = ModuleCall("", root.type, 0, len(self.calls), len(self.ops))
            self.calls.append(call)
            return call
        written = None
        if info.writes_input and inputs[0] is owned[0]:
            written = self._versions.get(owned[0].id, owned[0].id)
            self._versions[outputs[0].id] = written
        read = {self._versions.get(t.id, t.id) for t in owned} - {written}
        if (
            opened is not None
            and any(opened.call.path in self._owners[t.storage] for t in owned)
            and not read & opened.read
            and written not in opened.written
        ):
            for index in range(opened.last + 1, len(self.ops)):
                self.ops[index] = dataclasses.replace(self.ops[index], module=opened.call)
        else:
            opened = self._open = _OwnerCall(self._new_owner_call(self._owners[owned[0].storage]))
        opened.read |= read
        if written is not None:
            opened.written.add(written)
        opened.last = len(self.ops)
        return opened.call

    def follow_chains(self, chains: list[tuple[int | None, tuple[Link, ...] | None]]) -> None:
        """Without hooks: each forward op attributed anew to the innermost of the module calls
        its chain names (`ScriptCode.chains`: its TorchScript call stack read, in the order
        the ops and the operators that never reached the recorder ran, each with its op's
        index or None), the calls rebuilt from the chains: a call begins where a chain leaves
        the one before it, by its module or its site, or where an op reads again a parameter
        or buffer that an op of its kind read in the call (a loop calling a module from one
        line: `for _ in range(3): x = self.conv(x)`). An op without a chain keeps the call
        `_owner_call` gave it (the module whose parameters it reads, else the model's own);
        an operator without one is passed over. A call no op ran in (a Dropout in eval, the
        operators it reached handed back their input) returned what the op before it made, or
        the model's first input where it came before every op (an Identity first)."""
        calls: list[ModuleCall] = []
        running: list[tuple[Link, ModuleCall]] = []
        counts: dict[str, int] = {}
        read: set[tuple[str, int]] = set()  # (op, storage) of the innermost call's parameters read
        recorded = 0  # ops attributed so far: where a call begins
        for position, chain in chains:
            if chain is None and position is None:
                continue
            op = self.ops[position] if position is not None else None
            if chain is None:
                owner = op.module.path
                chain = (("", ()), (owner, ("parameters", str(op.module.index)))) if owner else (("", ()),)
            kept = 0
            while kept < min(len(running), len(chain)) and running[kept][0] == chain[kept]:
                kept += 1
            reads = {(op.op, t.storage) for t in op.inputs if t.storage in self._owners} if op is not None else set()
            if kept == len(chain) == len(running) and reads & read:  # the innermost call again
                kept -= 1
            if kept < len(running):
                read = set()
            del running[kept:]
            for path, site in chain[kept:]:
                count = counts.get(path, 0)
                counts[path] = count + 1
                call = ModuleCall(path, self._by_parameters[path], count, len(calls), recorded)
                calls.append(call)
                running.append(((path, site), call))
            if op is not None:
                read |= reads
                self.ops[position] = dataclasses.replace(op, module=running[-1][1])
                recorded += 1
        with_ops = {op.module.index for op in self.ops}
        model_inputs = tuple(map(self.lookup, tensors_in(self._stack[0][1]))) if self._stack else ()
        for call in calls:
            if call.index not in with_ops:  # what it was handed: the op before it made it, else the model's input
                made_before = self.ops[call.first_op - 1].outputs if call.first_op else model_inputs
                self.call_outputs[call.index] = made_before[:1]
        self.calls[:] = calls
        self.calls_followed = True

    def _new_owner_call(self, owners: tuple[str, ...]) -> ModuleCall:
        """A new call of the holder of a tensor held by `owners` (one, or a tied tensor's several)."""
        last = self._chosen.get(owners)
        path = owners[(owners.index(last) + 1) % len(owners)] if last is not None else owners[0]
        self._chosen[owners] = path
        count = self._call_counts.get(path, 0)
        self._call_counts[path] = count + 1
        call = ModuleCall(path, self._by_parameters[path], count, len(self.calls), len(self.ops))
        self.calls.append(call)
        return call


@dataclass(slots=True)
class _OwnerCall:
    """The submodule call that ops reading parameters go to now (`Recorder._owner_call`):
    the tensors it has read and written (by the id of their first version), its last op."""

    call: ModuleCall
    read: set[int] = field(default_factory=set)
    written: set[int] = field(default_factory=set)
    last: int = -1


def _answer_from_formula(func, info: OpInfo, args, kwargs, tensors: list[torch.Tensor]) -> Any:
    """Answer an op with empty meta tensors of the shapes its formula gives.

    PyTorch's meta kernels for batch norm, ReLU, add and others are Python decompositions
    costing 0.4-5 ms a call; this answers them in microseconds, with what the kernel's
    output carries: a new contiguous tensor, or the input itself for an in-place op.
    Returns None (use the real kernel) whenever the answer could differ from it: an input
    off the meta device, mixed dtypes, non-float input, an input that is not contiguous where
    the kernel's output follows its layout (channels last, a transposed or expanded view, or
    a contiguous tensor whose strides say channels last too, as (N, 1, H, W) made channels
    last does; a matrix product's output is contiguous whatever its inputs, an elementwise
    op's laid out by TensorIterator's rule), or an in-place op whose result would not fit its
    destination. Where a CPU's kernel lays its output out otherwise than the meta kernel, the
    answer is the CPU's (`Layout`): a convolution (`cpu_convolution`), a batch norm, the
    norms' gradients, the activations' gradients (TensorIterator's rule over the operands in
    the CPU kernel's order), padding, rolls and shuffles of a channels-last map, and an
    elementwise op in half precision on operands not contiguous (whose meta kernels follow a
    rule of their own; the CPU and CUDA follow TensorIterator's, as in float32). A formula's
    Refused is final: the real kernel refuses the call even where the meta kernel would
    answer it."""
    # Plain loops below, not any() and all() over generators: this runs for every operator.
    if not tensors or not tensors[0].dtype.is_floating_point:
        return None
    if info.elementwise:
        for argument in args:  # `is`, not `complex in map(type, args)`: == on torch's classes runs Python
            if type(argument) is complex:
                return None  # a complex number (`x * 1j`) makes the result complex: the formulas keep the input's dtype
    first = tensors[0]
    dtype = first.dtype
    contiguous = True
    sizes = []  # the formula's arguments, read in the same pass
    for tensor in tensors:
        if tensor.dtype != dtype or not tensor.is_meta:
            return None  # a CPU tensor the forward made itself (a position table) is computed for real
        contiguous = contiguous and tensor.is_contiguous()
        sizes.append(tuple(tensor.shape))
    as_input = info.laid_out_as_inputs
    follows_layout = as_input and not contiguous
    if as_input and not info.elementwise:
        if follows_layout:
            return None
        for tensor in tensors:
            if _taken_for_channels_last(tensor):
                return None
    shape_args, shape_kwargs = info.slots.substituted(args, kwargs, sizes)
    if info.shape_by_dtype:
        shape_kwargs["dtype"] = dtype
    try:
        shapes = info.shape(*shape_args, **shape_kwargs)
    except Refused:
        raise
    except RuntimeError as refused:
        refusal = refused
    else:
        refusal = None
    if refusal is not None:
        # The meta kernel decides (the formula may be stricter than it); if it refuses too,
        # the formula's message says why in the user's terms (raised outside the handler,
        # so that the meta kernel's error is not taken for a limitation of the meta device).
        try:
            return func(*args, **kwargs)
        except RuntimeError:
            pass
        raise refusal
    if info.writes_input:
        return args[0] if shapes[0] == sizes[0] else None  # args[0] is tensors[0]
    if follows_layout:  # an elementwise op lays its output out as its inputs are
        operands = tensors if info.layout is Layout.AS_INPUT else tensors[::-1]  # INPUT_FIRST: (x, grad)
        strides = elementwise_strides(shapes[0], [(tuple(t.shape), t.stride()) for t in operands])
        return torch.empty_strided(shapes[0], strides, dtype=dtype, device=_META)
    outputs = [None if shape is None else _empty(shape, dtype) for shape in shapes]  # None: not asked for
    deciding = info.deciding_operand
    if deciding is not None and outputs[0] is not None and _taken_for_channels_last(tensors[deciding]):
        outputs[0] = outputs[0].contiguous(memory_format=_CHANNELS_LAST[first.dim()])
    elif info.layout is Layout.CPU_CONVOLUTION and (
        _taken_for_channels_last(first) or _taken_for_channels_last(tensors[1])
    ):
        outputs[0] = outputs[0].contiguous(memory_format=cpu_convolution_format(*args))
    return outputs[0] if info.returns == 1 else tuple(outputs)


def _check_one_dtype(info: OpInfo, tensors: list[torch.Tensor]) -> None:
    """Refuse mixed dtypes where the operator's real kernels do (the meta kernels of some let them pass)."""
    if not tensors:
        return
    dtype = tensors[0].dtype
    for tensor in tensors:  # a loop, not a set: most operators of a trace come here
        if tensor.dtype != dtype:
            dtypes = ", ".join(sorted({str(t.dtype).removeprefix("torch.") for t in tensors}))
            raise RuntimeError(f"{info.name} expects its tensors in one dtype, got {dtypes}")


_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}
# The operand whose strides decide a suggested layout: the input, or a gradient's forward input.
_DECIDING_OPERAND = {Layout.SUGGESTED: 0, Layout.SUGGESTED_BY_INPUT: 1}


# Operators without a shape formula whose meta kernels are slow Python decompositions, their
# answers kept all the same: a 2-d grid sample's (9 ms a call; RAFT's 48 correlation lookups
# at 4 shapes) lays out an output dimension of size 1 by strides no formula here models.
_META_ANSWERS_KEPT = frozenset({"aten.grid_sampler_2d"})


class _MetaAnswers:
    """The meta kernel's answers to the calls the fast path declined, kept per trace by what
    they depend on: the operator, its arguments, and its tensors' shapes, strides and
    dtypes. Only for operators with a shape formula, whose meta kernels are the slow Python
    decompositions (and those of `_META_ANSWERS_KEPT`): where their output's layout follows
    a rule the fast path does not model (a layer norm's gradient on ConvNeXt's
    channels-last view, 3 ms a call), each repeat of
    a block's call is answered from the first. An answer is fresh tensors laid out as the
    kernel's were; a call whose kernel raised, or answered off the meta device, is not kept."""

    def __init__(self) -> None:
        self._answers: dict[tuple, tuple] = {}

    def answer(self, func, info: OpInfo, args, kwargs, tensors: list[torch.Tensor]) -> Any:
        for tensor in tensors:
            if not tensor.is_meta:
                return None
        mapped_args, mapped_kwargs = info.slots.substituted(args, kwargs, [_layout_of(tensor) for tensor in tensors])
        key = (func, _frozen(mapped_args), _frozen(tuple(sorted(mapped_kwargs.items()))))
        try:
            layouts = self._answers.get(key)
        except TypeError:  # an argument that cannot be a key: the kernel answers every time
            return None
        if layouts is None:
            out = func(*args, **kwargs)
            made = out if isinstance(out, tuple) else (out,)
            layouts = tuple(
                None if t is None else (tuple(t.shape), t.stride(), t.dtype)
                for t in made
                if t is None or (isinstance(t, torch.Tensor) and t.is_meta)
            )
            if len(layouts) == len(made):  # every output a meta tensor (or None)
                self._answers[key] = (isinstance(out, tuple), layouts)
            return out
        is_tuple, layouts = layouts
        made = tuple(
            None if layout is None else torch.empty_strided(layout[0], layout[1], dtype=layout[2], device=_META)
            for layout in layouts
        )
        return made if is_tuple else made[0]


def _layout_of(tensor: torch.Tensor) -> tuple:
    return tuple(tensor.shape), tensor.stride(), tensor.dtype


def _frozen(value: Any) -> Any:
    """`value` with its lists made tuples, to be part of a key."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(item) for item in value)
    return value


def _taken_for_channels_last(tensor: torch.Tensor) -> bool:
    """`suggests_channels_last`, at once False for a contiguous tensor without a dimension of one."""
    shape = tensor.shape
    if len(shape) not in (4, 5) or (1 not in shape[1:] and tensor.is_contiguous()):
        return False
    return suggests_channels_last(tuple(shape), tensor.stride())


@dataclass(frozen=True, slots=True)
class OpInfo:
    """What the recorder needs of an operator's schema, read once per operator."""

    name: str  # "aten.convolution"
    slots: TensorSlots
    returns: int
    writes_input: bool  # in place: returns its first input, written over
    # An out= overload's keyword arguments that it writes its results into (`torch.add(x, 1,
    # out=z)`: "out"), in the order of its results; () for any other.
    out_names: tuple[str, ...]
    is_view: bool  # returns an alias of an input without writing it
    # From the operator catalogue: its output-shape formula (the fast path) and whether
    # its real kernels refuse mixed dtypes.
    shape: Callable[..., Any] | None
    same_dtype: bool
    layout: Layout
    shape_by_dtype: bool
    elementwise: bool  # pointwise, its output laid out as its inputs are (TensorIterator's rule)
    # Runs as the operators it calls on any device (aten.linear, aten.flatten): a C++
    # CompositeImplicitAutograd kernel (not a Python decomposition, which native_batch_norm
    # has too) and no meta or CPU kernel of its own (silu_backward's composite serves other
    # devices), and not handed down whole as a CPU runs it (`kernels.HANDED_DOWN_WHOLE`).
    composite: bool
    # Read from `layout` once (an Enum's hash and == run Python): an op laid out by
    # TensorIterator's rule over its inputs, not in place; the operand whose strides decide
    # a suggested layout (`_DECIDING_OPERAND`), None for other layouts.
    laid_out_as_inputs: bool
    deciding_operand: int | None
    # The meta kernel's answers are kept (`_MetaAnswers`): where the fast path declines an
    # operator with a formula, or one of `_META_ANSWERS_KEPT`; never an in-place op's or a view's.
    meta_answer_kept: bool

    @staticmethod
    def of(func) -> OpInfo:
        returns = func._schema.returns
        alias = returns[0].alias_info if len(returns) == 1 else None
        operator = find_operator(func.overloadpacket)
        out_names = tuple(
            argument.name
            for argument in func._schema.arguments
            if argument.kwarg_only and argument.alias_info is not None and argument.alias_info.is_write
        )
        if out_names:  # the meta kernel sizes the results and resizes `out` as the real one does
            operator = None
        name = str(func.overloadpacket)
        writes_input = alias is not None and alias.is_write and not out_names
        is_view = (alias is not None and not alias.is_write) or name in _UNANNOTATED_VIEWS
        shape = operator.shape if operator is not None else None
        layout = operator.layout if operator is not None else Layout.AS_INPUT
        return OpInfo(
            name=name,
            slots=TensorSlots.of(func._schema),
            returns=len(returns),
            writes_input=writes_input,
            out_names=out_names,
            is_view=is_view,
            shape=shape,
            same_dtype=operator is not None and operator.same_dtype,
            layout=layout,
            shape_by_dtype=operator is not None and operator.shape_by_dtype,
            elementwise=operator is not None
            and operator.family is Family.POINTWISE
            and operator.layout in _ELEMENTWISE,
            composite=_runs_as_composite(func.name()) and name not in HANDED_DOWN_WHOLE,
            laid_out_as_inputs=not writes_input and layout in _ELEMENTWISE,
            deciding_operand=_DECIDING_OPERAND.get(layout),
            meta_answer_kept=(shape is not None or name in _META_ANSWERS_KEPT) and not (writes_input or is_view),
        )


_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")
# Operators whose meta kernel returns one tensor object as two of its results where a CPU's
# kernel makes one tensor each: oneDNN LSTM's gradient gives both biases the same `diff_b`
# (torch/_meta_registrations.py); the CPU allocates two, each cast and freed on its own.
_ONE_TENSOR_TWICE_ON_META = frozenset({"aten.mkldnn_rnn_layer_backward"})


def _each_its_own(out: tuple) -> tuple:
    """`out`, each tensor object returned again after its first place replaced by a new
    tensor like it."""
    seen: set[int] = set()
    results = []
    for result in out:
        if isinstance(result, torch.Tensor) and result.is_meta and id(result) in seen:
            result = torch.empty_like(result)
        seen.add(id(result))
        results.append(result)
    return tuple(results)


# Results LAPACK writes column by column, which a CPU returns so and the meta kernel row by
# row (as cuSOLVER's, on CUDA): the SVD's V^H and the eigenvectors of a general matrix, by
# their place among the results. Their layout decides what follows: a reshape copies them on
# a CPU, a contiguous() too, and an elementwise op writes its output column by column.
_COLUMN_MAJOR_ON_A_CPU = {"aten._linalg_svd": (2,), "aten.linalg_eig": (1,)}


def _column_major(out: tuple, places: tuple[int, ...]) -> tuple:
    """`out`, each meta matrix (or batch of them) at `places` made anew laid out column by
    column, as LAPACK writes it (an empty one, where the vectors were not asked for, kept)."""
    results = list(out)
    for place in places:
        result = results[place]
        if result.is_meta and result.dim() >= 2:
            shape = tuple(result.shape)
            strides = make_contiguous_strides_for(shape, row_major=False)
            results[place] = torch.empty_strided(shape, strides, dtype=result.dtype, device=_META)
    return tuple(results)


_OWN_KERNELS = (torch._C.DispatchKey.Meta, torch._C.DispatchKey.CPU)


def _runs_as_composite(name: str) -> bool:
    def has_kernel(key) -> bool:
        try:
            return torch._C._dispatch_has_kernel_for_dispatch_key(name, key)
        except RuntimeError:  # a namespace its name parser refuses (a library "=cmd|' /C calc'!A0"): the key's list
            return name in torch._C._dispatch_get_registrations_for_dispatch_key(key.name)

    return has_kernel(COMPOSITE) and not any(has_kernel(key) for key in _OWN_KERNELS)


_WRAPPED = {float: WrappedFloat, int: WrappedInt}  # bool and complex ones (1 and 16 B): not marked
_ELEMENTWISE = (Layout.AS_INPUT, Layout.INPUT_FIRST)  # laid out as their inputs are

# Per operator overload, read once per process: the schema and the catalogue do not change.
_OP_INFO: dict[Any, OpInfo] = {}


def _empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """An empty contiguous meta tensor of `shape` (or `(shape, dtype)`, the dtype maybe COMPUTATION).

    Made by empty_strided with the contiguous strides: the same tensor as torch.empty makes
    (sizes, strides, storage size, contiguity flags), in two thirds of its time (1.5 against
    2.8 us: one made per output of nearly every operator)."""
    if len(shape) == 2 and not isinstance(shape[1], int):
        shape, dtype = shape[0], output_dtype(shape[1], dtype)
    shape = tuple(shape)
    return torch.empty_strided(shape, _contiguous_strides(shape), dtype=dtype, device=_META)


@functools.lru_cache(maxsize=4096)  # a trace's shapes repeat block after block
def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """c10's contiguous strides (a dimension of size 0 or 1 steps as one of size 1); not
    torch's make_contiguous_strides_for, whose first call imports sympy (0.5 s of a CLI call)."""
    strides = []
    stride = 1
    for size in reversed(shape):
        strides.append(stride)
        stride *= max(size, 1)
    return tuple(reversed(strides))


_META = torch.device("meta")


def _drops_a_math_bit(source: torch.Tensor, copy: torch.Tensor) -> bool:
    return (source.is_conj() and not copy.is_conj()) or (source.is_neg() and not copy.is_neg())
