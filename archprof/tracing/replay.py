"""Module calls the trace records again from an earlier call instead of running them.

Networks repeat their blocks: ViT-B/16's 12 encoder layers are one block, fed tensors of
one shape; a stage of ResNet bottlenecks or of Swin blocks is one or two. Where a module
with submodules is called on arguments alike (the same class; tensors of the same shapes,
dtypes, strides, need of a gradient and conjugate or negative bits, which of them are one
tensor or share storage; the same plain keyword values, of the same types) to an earlier
call, and its state is the one the earlier module had as its call began
(`archprof.tracing.module_states`: the classes, the plain attributes, the parameters' and
buffers' shapes, dtypes and strides, of every module under it too), it runs the same
operators on tensors of the same shapes. `Replays` then copies what the earlier call
recorded instead of running the forward, its tensors renamed: its inputs to the new
inputs, its parameters to the new module's, what it made to new tensors, numbered in the
same order. The graph is the one the forward would have given (tests/test_replay.py traces
each case both ways).

The forward runs instead for:
- a call outside a plain inference trace on meta: a positional argument that is not a
  plain meta tensor, a keyword argument that is not a plain value (None, a number, a
  string), gradients recorded, another dispatch or torch-function mode, a global module hook;
- a module whose state cannot be compared: an attribute that is neither plain data nor a
  class or function (a tensor, another object, a callable instance), a hook, a forward of
  its own, a submodule also reached under another name, a model with tied parameters (no
  Replays then);
- a call whose record reads a tensor from outside the module (a constant, another
  module's parameter), writes a parameter or buffer, calls a module outside it, or returns
  anything but a meta tensor or a flat tuple or list of them, or a conjugate or negative view;
- a call that changed its module's state (a counter, a table made on the first call, an
  output appended to a list attribute): it is not copied from;
- a call of a module that holds, in place of a parameter or buffer the recording read,
  another tensor than the one of that name (torch.func.functional_call puts there the tensors
  it is given): a copy reads the one of that name.

What it cannot see: a forward that reads or keeps something in a global (a module-level
list of features, a counter in a closure). A copy runs no Python of the block, so it
neither reads such a value nor adds to it. None of the 1,451 torchvision and timm models
does (`benchmarks/fast_paths_check.py` compares every one with its plain forward).

Copying pays where a block's Python reaches many operators for few module calls (an
attention block: ViT-B/16's trace takes half the time). Where most of a block's calls are
layers that `archprof.tracing.shortcuts` answers (a ResNet bottleneck), comparing the modules costs
about what running them does; a class whose calls reach fewer operators than they make
module calls (shortcuts apart) is not watched again, known from its first call (which is
counted, not recorded), nor one whose calls were compared in
vain four times with none copied (torchvision's ConvNeXt and EfficientNet blocks each have
their own stochastic depth rate). Modules without submodules never take part.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from archprof.graph import ModuleCall, OpNode, TensorMeta
from archprof.structure import map_op_args
from archprof.tracing.module_states import PLAIN, ModuleState, ModuleStates, state_of
from archprof.tracing.shortcuts import may_shortcut

# Operators that the forward's own Python reaches (not through `archprof.tracing.shortcuts`) per
# module call, below which a class is not watched: its calls run about as fast as they are
# compared and copied. A ResNet bottleneck reaches 1 in 8 calls (an addition; its layers are
# shortcuts), Inception's conv-norm-ReLU 1 in 3; ViT-B/16's encoder block 39 in 9.
_WORTH_COPYING = 1
# Recordings kept per module class and arguments, the latest: blocks alike come in runs
# (a stage of bottlenecks; a Swin stage's two kinds, shifted or not), and a model whose
# blocks all differ (a stochastic depth rate each) would compare each with all before it.
_RECORDINGS_KEPT = 4
# Calls of a class compared in vain or returning what cannot be copied, none copied yet,
# after which its calls run unwatched.
_MISSES_ALLOWED = 4


@dataclass(slots=True)  # not frozen: made at every watched call, and frozen ones are slower to make
class _FirstCall:
    """Where the recorder stood as a call began: what `learn` counts of what it reached. A
    class's first call on such arguments is only counted: whether its class is worth watching."""

    module: nn.Module
    first_op: int
    first_call: int  # the call's own, made by the recorder's `enter`
    answered_directly: int  # the module calls answered by shortcuts so far


@dataclass(slots=True)
class _Start(_FirstCall):
    """Where the recorder stood when a call began that later calls may copy."""

    state: ModuleState  # the module's, and its submodules', as its call began
    path: str
    inputs: tuple[TensorMeta, ...]  # the arguments' metas
    first_made: int  # the next TensorMeta id
    first_storage: int  # the next storage id
    kernels: dict[str, int]  # the kernel choices made so far
    first_released: int  # the storages the forward had let go of so far (`Recorder.released`)


@dataclass(slots=True)
class _Recording:
    """What one call recorded. `parameters` is filled when a later call first asks to copy
    it, by `_read`, which also says whether it can be: `copyable`."""

    start: _Start
    calls: list[ModuleCall]  # the module's own call, then those under it
    # The outputs of the calls under the module's, as the calls returned: (call index, outputs).
    call_outputs: list[tuple[int, tuple[TensorMeta, ...]]]
    ops: list[OpNode]
    returns: tuple[int | TensorMeta, ...]  # each output: the argument it is, or its meta
    layouts: tuple[_Layout | None, ...]  # each made output's
    returned_as: type | None  # tuple or list; None: one tensor
    arguments_after: tuple[TensorMeta, ...]  # each argument's meta when the call returned
    kernels: Counter  # the kernel choices (`archprof.kernels`) the call made
    # The storages the call let go of before it returned: (storage, ops it had run by then).
    released: list[tuple[int, int]]
    after: ModuleState  # the module's state as its call returned
    copyable: bool | None = None  # None: not read yet
    # What it read of the module's parameters and buffers: TensorMeta.id -> (name below the module, storage).
    parameters: dict[int, tuple[str, int]] = field(default_factory=dict)


class Replays:
    """The copying of one trace's repeated calls. The trace's wrapper asks `answer` at each
    call of a module with submodules, and tells `learn` what a call not copied returned."""

    def __init__(
        self, modules: list[tuple[str, nn.Module]], own_forwards: set[int], recorder, kernels: Counter
    ) -> None:
        self._states = ModuleStates(modules, own_forwards)
        self._recorder = recorder
        self._kernels = kernels
        # (module class, arguments) -> the calls recorded so far (their modules may differ).
        self._recordings: dict[Any, list[_Recording]] = {}
        self._not_worth: set[type] = set()  # classes whose calls are not copied (any more)
        self._misses: Counter[type] = Counter()  # calls compared with recordings, none alike
        self._copied: set[type] = set()  # classes with a call copied

    def answer(self, module: nn.Module, path: str, args: tuple, kwargs: dict) -> tuple[Any, Any]:
        """(the output, None) where the call was copied; else (None, what `learn` needs),
        or (None, None) where the call can never be copied."""
        if (
            type(module) in self._not_worth
            or not args
            or not all(map(may_shortcut, args))
            or (kwargs and not all(type(value) in PLAIN for value in kwargs.values()))
            or nn.modules.module._has_any_global_hook()
        ):
            return None, None
        recorder = self._recorder
        inputs = tuple(map(recorder.meta_of, args))
        if None in inputs:
            return None, None
        cls = type(module)
        # Each keyword's type too: 1, 1.0 and True are one key, and make tensors of three dtypes.
        keywords = tuple(sorted((name, type(value), value) for name, value in kwargs.items())) if kwargs else ()
        key = (cls, _arguments_key(args, inputs), keywords)
        recordings = self._recordings.get(key)
        if recordings is None:
            # The first call of its class on such arguments is not recorded: most are the only
            # one (a stage, an encoder), and a recording takes the state of every module under
            # the one called, twice. Blocks that repeat are copied from their second call on.
            # It is counted: a class not worth copying (a ResNet bottleneck) is then known
            # before any call of it is recorded.
            self._recordings[key] = []
            return None, (
                None,
                _FirstCall(module, len(recorder.ops), len(recorder.calls) - 1, recorder.answered_directly),
            )
        for recording in recordings:
            # Compared with the earlier module's state as its recorded call began, not as it
            # is now: its parent may have set an attribute of it since.
            if self._states.alike(recording.start.state, module):
                if recording.copyable is None:
                    # Not a call that changed its state (a counter, a lazy set-up, an output
                    # appended to a list): a module in the state it began in would not run it.
                    recording.copyable = self._states.alike(recording.start.state, recording.after) and _read(
                        recording, recorder
                    )
                if recording.copyable and not _holds_its_own(module, path, recorder):
                    return None, None  # a tensor put in a parameter's place: the forward reads it
                output = _copy(recording, recorder, path, args, self._kernels) if recording.copyable else None
                if output is None:  # its blocks read what a copy cannot rename
                    self._not_worth.add(cls)
                    return None, None
                self._copied.add(cls)
                return output, None
        if recordings:  # none alike: its blocks may all differ (a stochastic depth rate each)
            self._missed(cls)
            if cls in self._not_worth:
                return None, None
        if not _holds_its_own(module, path, recorder):
            return None, None  # a call reading a tensor put in a parameter's place: no recording to copy
        made, storage = recorder.made_so_far()
        start = _Start(
            module,
            len(recorder.ops),
            len(recorder.calls) - 1,
            recorder.answered_directly,
            state=state_of(module),
            path=path,
            inputs=inputs,
            first_made=made,
            first_storage=storage,
            kernels=dict(self._kernels),
            first_released=len(recorder.released),
        )
        return None, (recordings, start)

    def learn(
        self, started: tuple[list[_Recording], _Start] | tuple[None, _FirstCall], args: tuple, output: Any
    ) -> None:
        """What a call `answer` did not copy reached: its class not worth watching, or (a call after its
        class's first on such arguments) its recording kept for later calls to copy."""
        recordings, start = started
        recorder = self._recorder
        reached = len(recorder.ops) - start.first_op - (recorder.answered_directly - start.answered_directly)
        if reached < _WORTH_COPYING * (len(recorder.calls) - start.first_call):
            self._not_worth.add(type(start.module))
            return
        if recordings is None:  # a first call alike, counted only
            return
        recording = _recorded(start, recorder, args, output, self._kernels)
        if recording is None:  # what it returned cannot be copied (a dict, a view of another dtype)
            self._missed(type(start.module))
            return
        recordings.append(recording)
        if len(recordings) > _RECORDINGS_KEPT:
            del recordings[0]

    def _missed(self, cls: type) -> None:
        """A call of the class that could not be copied, nor be copied from."""
        self._misses[cls] += 1
        if self._misses[cls] >= _MISSES_ALLOWED and cls not in self._copied:
            self._not_worth.add(cls)


def _arguments_key(args: tuple, metas: tuple[TensorMeta, ...]) -> tuple:
    """The arguments as the call's operators see them; which are one tensor or share a
    storage matters to in-place operators."""
    same: dict[int, int] = {}
    shared: dict[int, int] = {}
    return tuple(
        (
            tuple(x.shape),
            x.dtype,
            x.stride(),
            x.storage_offset(),
            x.requires_grad,  # a matmul folds its operands where one needs a gradient, else expands them
            x.is_conj(),
            x.is_neg(),
            same.setdefault(id(x), i),
            shared.setdefault(meta.storage, i),
        )
        for i, (x, meta) in enumerate(zip(args, metas, strict=True))
    )


def _recorded(start: _Start, recorder, args: tuple, output: Any, kernels: Counter) -> _Recording | None:
    """What the call recorded, taken as it returns; None where its output cannot be copied."""
    returned = _returned(output, args, recorder, start.first_made)
    if returned is None:
        return None
    calls = recorder.calls[start.first_call :]
    # The calls under the module's have all returned, the last of the trace to return.
    call_outputs = list(itertools.islice(reversed(recorder.call_outputs.items()), len(calls) - 1))[::-1]
    chosen = Counter(kernels) - Counter(start.kernels) if kernels != start.kernels else Counter()
    return _Recording(
        start,
        calls,
        call_outputs,
        recorder.ops[start.first_op :],
        *returned,
        tuple(map(recorder.meta_of, args)),
        chosen,
        [(storage, steps - start.first_op) for storage, steps in recorder.released[start.first_released :]],
        state_of(start.module),
    )


def _read(recording: _Recording, recorder) -> bool:
    """Whether the recording can be copied (see the module docstring); fills its
    `parameters` with the parameters and buffers it read."""
    start = recording.start
    prefix = start.path + "."
    calls = recording.calls
    if any(not call.path.startswith(prefix) for call in calls[1:]):
        return False
    inputs = {meta.id for meta in start.inputs}
    storages = {meta.storage for meta in start.inputs}
    parameters = recording.parameters

    def known(meta: TensorMeta) -> bool:
        if meta.id >= start.first_made:
            return meta.kind == "activation"
        if meta.id in inputs:
            return True
        if meta.kind in ("parameter", "buffer") and meta.name.startswith(prefix):
            parameters[meta.id] = meta.name[len(prefix) :], meta.storage
            storages.add(meta.storage)
            return True
        return False  # a tensor from outside the block

    next_storage = start.first_storage
    for op in recording.ops:
        if not all(map(known, op.inputs)) or (op.writes_input and op.inputs[0].kind != "activation"):
            return False
        for meta in op.outputs:
            if meta.storage == next_storage:  # new storages come in order: copies number them alike
                next_storage += 1
            elif meta.storage > next_storage or (meta.storage < start.first_storage and meta.storage not in storages):
                return False
    if not all(index > calls[0].index and all(map(known, metas)) for index, metas in recording.call_outputs):
        return False
    if any(storage < start.first_storage for storage, _ in recording.released):
        return False  # it let go of a tensor from outside the block
    return all(map(known, recording.arguments_after)) and all(
        map(known, (meta for meta in recording.returns if not isinstance(meta, int)))
    )


def _holds_its_own(module: nn.Module, path: str, recorder) -> bool:
    """Whether each parameter and buffer of the module at `path` (and of the modules under it)
    that the trace named is in its place: not another tensor put there (torch.func.functional_call
    puts there the tensors it is given, for one call). A copy reads the tensors of those names,
    and a call recorded while another stood in one's place read that one. A place the trace
    named nothing (a weight tied to one named elsewhere, a child made by the forward) is not asked."""
    stack = [(module, path)]
    while stack:
        owner, where = stack.pop()
        own = vars(owner)
        for table in (own["_parameters"], own["_buffers"]):
            for name, held in table.items():
                named = recorder.named(f"{where}.{name}")
                if named is not None and held is not None and recorder.meta_of(held) is not named:
                    return False
        stack += [(child, f"{where}.{name}") for name, child in own["_modules"].items() if child is not None]
    return True


@dataclass(frozen=True, slots=True)
class _Layout:
    """How a returned tensor lies in its storage: a copy's tensor is made alike."""

    stride: tuple[int, ...]
    offset: int
    storage_bytes: int | None  # a view's (or a tensor's off its storage's start); None: its own, just fitting

    @staticmethod
    def of(tensor: torch.Tensor) -> _Layout | None:
        if tensor.is_conj() or tensor.is_neg():
            return None  # a lazy view a copy does not make: the next operator's copy of it is the model's
        if tensor._base is None and not tensor.storage_offset():
            return _Layout(tensor.stride(), 0, None)
        storage_bytes = tensor.untyped_storage().nbytes()
        if storage_bytes % tensor.dtype.itemsize:
            return None  # a view of another dtype's storage
        return _Layout(tensor.stride(), tensor.storage_offset(), storage_bytes)

    def tensor(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        with torch._C._DisableTorchDispatch():  # made by the copy, not by the model: not an operator
            if self.storage_bytes is None:
                return torch.empty_strided(shape, self.stride, dtype=dtype, device="meta")
            base = torch.empty(self.storage_bytes // dtype.itemsize, dtype=dtype, device="meta")
            return base.as_strided(shape, self.stride, self.offset)


def _returned(output: Any, args: tuple, recorder, first_made: int):
    """The output as (each tensor's argument index or meta, each made one's layout, its
    container), if it is a tensor or a flat tuple or list of them."""
    if isinstance(output, torch.Tensor):
        items, returned_as = [output], None
    elif type(output) in (tuple, list):
        items, returned_as = list(output), type(output)
    else:
        return None
    returns, layouts = [], []
    for tensor in items:
        index = next((i for i, arg in enumerate(args) if tensor is arg), None)
        if index is not None:
            returns.append(index)
            layouts.append(None)
            continue
        # A copy makes meta tensors: not a CPU tensor the forward made (a table whose values it reads).
        meta = recorder.meta_of(tensor) if type(tensor) is torch.Tensor and tensor.is_meta else None
        layout = _Layout.of(tensor) if meta is not None and meta.id >= first_made else None
        if layout is None:
            return None
        returns.append(meta)
        layouts.append(layout)
    return tuple(returns), tuple(layouts), returned_as


def _copy(recording: _Recording, recorder, path: str, args: tuple, kernels: Counter) -> Any:
    """Record the recording again for the call of the module at `path` on `args`, and
    return its output; None where the module's parameters are not all found."""
    prefix = path + "."
    metas: dict[int, TensorMeta] = {}  # recorded TensorMeta.id -> the copy's
    storages: dict[int, int] = {}  # recorded storage id -> the copy's
    for old_id, (name, storage) in recording.parameters.items():
        new = recorder.named(prefix + name)
        if new is None:
            return None
        metas[old_id] = new
        storages[storage] = new.storage
    for old, x in zip(recording.start.inputs, args, strict=True):
        metas[old.id] = new = recorder.meta_of(x)
        storages[old.storage] = new.storage

    own, *under = recording.calls
    first_op = len(recorder.ops)
    shift = first_op - own.first_op
    cut = len(recording.start.path)
    calls = {own.index: recorder.calls[-1]}
    for call in under:
        calls[call.index] = recorder.open_call(path + call.path[cut:], call.type, call.first_op + shift)

    def renamed(meta: TensorMeta) -> TensorMeta:
        return metas[meta.id]

    for op in recording.ops:
        node_args, node_kwargs = map_op_args(renamed, TensorMeta, op.args, op.kwargs)
        outputs = []
        for meta in op.outputs:
            storage = storages.get(meta.storage)
            if storage is None:
                storage = storages[meta.storage] = recorder.new_storage()
            metas[meta.id] = copied = recorder.new_activation(meta.shape, meta.dtype, storage)
            outputs.append(copied)
        recorder.ops.append(
            OpNode(
                len(recorder.ops),
                op.op,
                node_args,
                node_kwargs,
                tuple(map(renamed, op.inputs)),
                tuple(outputs),
                calls[op.module.index],
                op.writes_input,
                op.is_view,
                workspace=tuple(storages[storage] for storage in op.workspace),
            )
        )
    for index, outputs in recording.call_outputs:
        recorder.call_outputs[calls[index].index] = tuple(map(renamed, outputs))
    for storage, steps in recording.released:  # the block's tensors, let go of as the forward would
        recorder.released.append((storages[storage], first_op + steps))
    for x, after in zip(args, recording.arguments_after, strict=True):
        recorder.bind(x, metas[after.id])
    made: dict[int, torch.Tensor] = {}
    results = []
    for returned, layout in zip(recording.returns, recording.layouts, strict=True):
        if isinstance(returned, int):
            results.append(args[returned])
            continue
        tensor = made.get(returned.id)
        if tensor is None:
            tensor = made[returned.id] = layout.tensor(returned.shape, returned.dtype)
            recorder.bind(tensor, metas[returned.id])
        results.append(tensor)
    kernels.update(recording.kernels)
    return results[0] if recording.returned_as is None else recording.returned_as(results)
