"""Run a model once on meta tensors and capture every aten operation it performs.

No weight and no activation is allocated: a model's parameters and buffers are replaced by
empty meta stand-ins in its tables for the call only (`_swap_in`, then `_put_back`), so the
caller's model is never touched. Each operation is attributed to the innermost module call
running when it ran.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import torch

from archprof.errors import ArchprofError, ArchprofWarning, is_meta_limitation, memory_for, short_reason
from archprof.graph import EngineNotes, Graph, OpNode, ParameterInfo, TensorMeta
from archprof.kernels import DeviceKernels
from archprof.load.inputs import check_fits
from archprof.meta import is_uninitialised
from archprof.recorder import Recorder, input_shapes_text
from archprof.replay import MODULE_INTERNALS, Replays
from archprof.script_calls import ScriptCode, saved_and_loaded, stacks_of_marks
from archprof.shortcuts import Shortcut, shortcut_for
from archprof.structure import tensors_in
from archprof.training_recorder import TrainingRecorder
from archprof.units import tensor_text


@dataclass(frozen=True)
class TraceInput:
    """One input of the traced forward: its full shape (batch included), its dtype (None:
    the trace's floating dtype) and its keyword (None: positional)."""

    shape: tuple[int, ...]
    dtype: torch.dtype | None = None
    name: str | None = None


class NeedsTwoSamples(ArchprofError):
    """A training step refuses this batch: a BatchNorm sees one value per channel (batch 1,
    and a 1x1 map or a vector), as PyTorch refuses it. Batch 2 on may train."""


class MetaUnsupported(ArchprofError):
    """The forward cannot run on the meta device (it reads tensor values, calls an op
    without a meta kernel, mixes in a real tensor): a real forward may still work."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def trace(
    model: torch.nn.Module,
    input_shapes: Sequence[tuple[int, ...] | TraceInput],
    *,
    dtype: torch.dtype | None = None,
    training: bool = False,
    real: bool = False,
    owned: bool = False,
) -> Graph:
    """Trace `model` in eval mode on meta inputs of the given full shapes (batch included).

    `input_shapes` are shapes (positional inputs in the trace's floating dtype) or
    TraceInputs (a dtype each, keyword inputs by name).

    `dtype` casts floating parameters, buffers and inputs (as `model.to(dtype)` would);
    None keeps the model's own dtypes and feeds inputs in the dtype of its first floating
    parameter.

    `training` traces a training step instead: a forward in train mode, grad enabled,
    stand-ins of trainable parameters requiring grad, and every tensor autograd saves for the
    backward pass recorded in `Graph.saved` (through `saved_tensors_hooks`, which sees the
    same tensor objects as the recorder, fast-path answers included); then the backward pass
    from the floating outputs (gradients of ones), on meta too, into `Graph.backward_ops`
    (`archprof.training_recorder.TrainingRecorder` says how each is attributed).

    `real` runs the model as it is, with its own weights, on real inputs on its device (the
    CPU fallback: the caller hands over a module it may run, in the dtype it wants); ops
    are recorded the same way, from real tensors. A forward that fails on meta for want of
    data (`.item()`, an op without a meta kernel) raises MetaUnsupported.

    The caller's model is as it was afterwards: its weights, buffers, modes and gradients,
    and, unless `owned` says the model is archprof's own (built by it, or a copy), what its
    forward changed of the modules' plain attributes (`_Attributes`: a call counter, a
    cache filled on the first call, now holding a meta tensor; a list appended to; a
    submodule made on the first call).

    A TorchScript module runs no Python hooks: a copy of it saved and loaded again runs
    under torch's profiler, and its ops are attributed to the module calls their TorchScript
    call stacks name (`archprof.script_calls`); where a stack cannot be read, to the module
    whose parameters they read (convolutions, linear and norm layers), the others to the
    model itself, as every op of a module marked `_archprof_attribution = "parameters"`.

    Lazy layers not yet called (nn.LazyLinear, ...) are first given their shapes by one
    forward on the inputs, unrecorded (`_lazy_layers_initialised`): on a meta copy, never on
    the caller's model.

    A forward that registers a submodule or a parameter on the model (a head made on its
    first call: `if not hasattr(self, "head"): self.head = nn.Linear(...)`) is traced again
    at its second call, as a lazy model is: on a copy that one forward has grown (the model
    itself for a real trace), whose new parameters are then counted and whose new module
    gets its rows, as after a real first call.
    """
    graph, grew = _traced_once(model, input_shapes, dtype=dtype, training=training, real=real, owned=owned)
    if grew:  # once: a forward that registers something on every call is taken as it is then
        # A real trace runs on archprof's own copy, which its first call has grown already;
        # on meta, the caller's model was put back: a meta copy is grown by one forward.
        grown = model if real else _lazy_layers_initialised(model, _trace_inputs(input_shapes), real)
        graph, _ = _traced_once(grown, input_shapes, dtype=dtype, training=training, real=real, owned=owned or not real)
    return graph


def _trace_inputs(input_shapes: Sequence[tuple[int, ...] | TraceInput]) -> list[TraceInput]:
    return [s if isinstance(s, TraceInput) else TraceInput(tuple(s)) for s in input_shapes]


def _traced_once(
    model: torch.nn.Module,
    input_shapes: Sequence[tuple[int, ...] | TraceInput],
    *,
    dtype: torch.dtype | None,
    training: bool,
    real: bool,
    owned: bool,
) -> tuple[Graph, bool]:
    """`trace`'s graph of one forward, and whether that forward registered a submodule or a
    parameter on one of the model's modules."""
    by_parameters = isinstance(model, torch.jit.ScriptModule) or (
        getattr(model, "_archprof_attribution", "hooks") == "parameters"
    )
    script_code = None  # a ScriptModule's code files, whose lines its call stacks name
    if isinstance(model, torch.jit.ScriptModule):
        try:
            model, script_code = _script_copy(model, dtype, real, owned)
        except Exception as exc:  # its weights will not go onto meta: a real forward may still run
            if not real:
                raise MetaUnsupported(
                    f"cannot move the TorchScript module onto the meta device: {short_reason(exc)}", short_reason(exc)
                ) from exc
    specs = _trace_inputs(input_shapes)
    original = model
    tree = _walked(model)
    if any(isinstance(module, _LazyModule) and module.has_uninitialized_params() for _, module in tree.modules):
        model = _lazy_layers_initialised(model, specs, real)
        tree = _walked(model)
    modules, module_types, named = tree.modules, tree.types, tree.tensors
    code = ScriptCode(script_code, modules, _canonical_paths(modules)) if script_code is not None else None
    # After any lazy initialisation, which works on a meta copy (archprof's own).
    attributes = _Attributes.of(modules) if not owned and model is original else None
    tensors = [t for _, t, _ in named]
    shapes = [s.shape for s in specs]
    recorder_type = TrainingRecorder if training else Recorder
    recorder = recorder_type(real=real, module_types=module_types if by_parameters else None)
    if real or isinstance(model, torch.jit.ScriptModule) or _stands_for_itself(tensors, dtype):
        # Its own tensors: on meta already (a ScriptModule's put there by `_script_copy`), or real ones.
        stand_ins, parameters = _own_tensors(named, recorder)
    else:
        stand_ins, parameters = _stand_ins(named, dtype, recorder)
    if real:  # quantized layers, which only a real trace can run
        parameters += _packed_parameters(modules)
    input_dtype = dtype or _first_floating_dtype(tensors)
    inputs, args, kwargs = _inputs(specs, input_dtype, _input_device(tensors, real), real)
    input_metas = [recorder.register(x, "input") for x in inputs]

    training_modes = tree.modes
    if model.training != training:  # as `in_traced_mode`, each flag written directly
        _set_mode(model, training_modes, training)
    # A training step on the model's own tensors writes their .grad: the caller's are put
    # back afterwards (and a later trace starts from none, as a step after zero_grad does).
    own_gradients = {t: t.grad for _, t, is_buffer in named if not is_buffer} if training and stand_ins is None else {}
    for parameter in own_gradients:
        parameter.grad = None
    # Module calls answered by `archprof.shortcuts`, and batch norms handed straight to the
    # recorder: on meta tensors, in inference (a training step's autograd must see the
    # forward's own torch calls).
    shortcuts = not (real or training)
    kernels = DeviceKernels(answer=recorder.answer_call if shortcuts else None)
    backward_ran = True  # no backward pass asked for, or one that ran
    try:
        with ExitStack() as stack:
            if not by_parameters:
                replays = None
                if shortcuts and not tree.tied:  # a copy renames a block's parameters: untied ones
                    replays = Replays(modules, tree.own_forwards, recorder, kernels.chosen)
                for handle in _attach_hooks(modules, module_types, recorder, shortcuts, replays):
                    stack.callback(handle.remove)
            registered_on = stack.enter_context(_registrations_noted())
            if training:
                stack.enter_context(torch.enable_grad())
                stack.enter_context(recorder.saved_tensors_hooks())
                stack.enter_context(recorder.random_states_noted())
            else:
                stack.enter_context(torch.no_grad())
            if real:
                stack.enter_context(native_attention_off())
            stack.enter_context(recorder)
            stack.enter_context(kernels)  # on meta, composite calls would not pick the CPU's kernels
            if by_parameters:
                recorder.start_root(_type_name(model), args, _owners(modules, stand_ins, recorder))
            if stand_ins is not None or attributes is not None:
                # The parameter, buffer and submodule tables as they were: stand-ins swapped
                # back, a buffer or a submodule the caller's forward made on its first call gone.
                stack.callback(_put_back, _tables(modules))
            if stand_ins is not None:
                _swap_in(modules, stand_ins)
            output = _model_called(model, args, kwargs, recorder, by_parameters, code)
            if training:  # the stand-ins still in place: checkpointing recomputes blocks on them
                backward_ran = recorder.run_backward(output)
                recorder.engine.given_gradients = _given_gradients(named, stand_ins)
            # Before the caller's attributes are put back, which lets go of what the forward kept there.
            kept = _kept_by_the_model(modules, recorder.still_alive(), output)
    except ArchprofError:
        raise
    except Exception as raised:  # the user's forward failed: say where and on what
        # A ScriptModule's interpreter (which has no try/except to catch one with) hands an
        # operator's exception on bare: the one the recorder saw is the reason.
        script_failure = isinstance(model, torch.jit.ScriptModule) and recorder.failure is not None
        exc = recorder.failure if script_failure else raised
        hint = _one_value_per_channel_hint(exc, training)
        message = recorder.describe_failure(exc, shapes) + hint
        if not real and is_meta_limitation(exc):
            raise MetaUnsupported(message, short_reason(exc)) from exc
        raise (NeedsTwoSamples if hint else ArchprofError)(message) from exc
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit and kin: the caller's process must go on
        raise forward_exit_error(_type_name(model), exc, recorder.inner_module()) from None
    finally:
        for module, was_training in training_modes.items():
            if module.training != was_training:
                _set_flag(module, was_training)
        for parameter, gradient in own_gradients.items():
            parameter.grad = gradient
        if attributes is not None:
            attributes.put_back()

    outputs = [recorder.lookup(t) for t in tensors_in(output)]
    followed = recorder.calls_followed
    graph = Graph(
        ops=_creations_join_their_consumer(recorder.ops) if by_parameters and not followed else recorder.ops,
        module_calls=recorder.calls,
        call_outputs=recorder.call_outputs,
        inputs=input_metas,
        outputs=outputs,
        parameters=parameters,
        module_types=module_types,
        training=training,
        saved=recorder.saved,
        kernels=dict(kernels.chosen),
        backward_ops=recorder.backward_ops if training else [],
        engine=recorder.engine if training else EngineNotes(),
        released=recorder.releases(kept),
        kept_by_the_model=kept,
        # A trace on the model's own tensors without a real forward: all on meta, no values.
        buffer_minima=_buffer_minima(named, recorder) if real or stand_ins is not None else {},
    )
    if recorder.ignored_autocast is not None:
        _warn_autocast_ignored(*recorder.ignored_autocast)
    if training and not backward_ran:
        warnings.warn(
            "no output of the forward requires grad (none is computed from a trainable parameter, or all are under"
            " no_grad or inference_mode): the training step has no backward pass, where a real loss.backward() raises",
            ArchprofWarning,
            stacklevel=6,  # attributed to archprof.analyze
        )
    return graph, _any_of(registered_on, modules)


def _warn_autocast_ignored(device: str, dtype: torch.dtype) -> None:
    """Say that an autocast region of the forward was traced in the model's dtype (autocast
    acts on a device's own tensors, never on meta ones): its convolutions and matrix
    products, and the activation memory after them, are not the region's."""
    warnings.warn(
        f'the forward runs in torch.autocast("{device}", dtype={dtype}), which the meta device ignores: that region'
        f" was traced in the model's own dtype (its activations and peak memory there are those of that dtype, not"
        f" {str(dtype).removeprefix('torch.')}'s)",
        ArchprofWarning,
        stacklevel=6,  # attributed to archprof.analyze
    )


_LazyModule = torch.nn.modules.lazy.LazyModuleMixin


@contextmanager
def _registrations_noted() -> Iterator[list[torch.nn.Module]]:
    """The modules that a submodule or a parameter is registered on while active, through
    torch's global registration hooks, which only `nn.Module.__setattr__` and `register_*`
    call: nothing on a forward's common path (the trace swaps tensors in the tables directly)."""
    registered_on: list[torch.nn.Module] = []

    def note(module: torch.nn.Module, name: str, value) -> None:
        registered_on.append(module)

    handles = [register(note) for register in (_module_registration_hook, _parameter_registration_hook)]
    try:
        yield registered_on
    finally:
        for handle in handles:
            handle.remove()


_module_registration_hook = torch.nn.modules.module.register_module_module_registration_hook
_parameter_registration_hook = torch.nn.modules.module.register_module_parameter_registration_hook


def _any_of(found: list[torch.nn.Module], modules: list[tuple[str, torch.nn.Module]]) -> bool:
    """Whether a module of `found` is one of `modules` (not a module the forward made and
    filled itself, an nn.Linear's own weight or a Sequential built for one call)."""
    if not found:
        return False
    ours = {id(module) for _, module in modules}
    return any(id(module) in ours for module in found)


@dataclass(frozen=True)
class _ModuleTree:
    """What the trace asks of the model's modules, from one walk of them (`_walked`)."""

    modules: list[tuple[str, torch.nn.Module]]  # as `named_modules()`: each once, under its first path
    types: dict[str, str]  # path -> `_type_name`
    tensors: list[tuple[str, torch.Tensor, bool]]  # `named_parameters()`, `named_buffers()`: name, tensor, is a buffer
    tied: bool  # a parameter or buffer met twice (tied weights)
    own_forwards: set[int]  # the ids of the modules with a `forward` attribute of their own
    modes: dict[torch.nn.Module, bool]  # each module's `training` flag


def _walked(model: torch.nn.Module) -> _ModuleTree:
    """The model's modules in `named_modules()` order, and their parameters and buffers in
    `named_parameters()` and `named_buffers()` order, from one walk of the tree (from a
    stack: `named_modules()` makes a generator per level, which every module found deeper
    passes through). Refused in one line: a model nested past the depth at which
    `named_modules()` would exceed Python's recursion limit (the forward, `train()` and
    `parameters()` recurse once a level too), and a submodule whose name holds a '.' (set
    through `_modules`: `add_module` refuses it), whose path would read as a module nested in
    another (a direct child 'a.b' and the child 'b' of 'a' would be one row)."""
    deepest = sys.getrecursionlimit() - _frames_below()
    modules: list[tuple[str, torch.nn.Module]] = []
    parameters: list[tuple[str, torch.Tensor, bool]] = []
    buffers: list[tuple[str, torch.Tensor, bool]] = []
    seen: set[torch.nn.Module] = set()
    seen_parameters: set[int] = set()  # ids; apart from the buffers', as in their own walks
    seen_buffers: set[int] = set()
    tied = False
    to_visit = [("", model, 1)]  # path, module, depth; the next to visit last
    while to_visit:
        path, module, depth = to_visit.pop()
        if module in seen:  # `named_modules()`'s memo: a module reached under two names is listed once
            continue
        seen.add(module)
        modules.append((path, module))
        prefix = f"{path}." if path else ""
        if module._parameters:
            tied |= _listed(module._parameters, prefix, False, parameters, seen_parameters)
        if module._buffers:
            tied |= _listed(module._buffers, prefix, True, buffers, seen_buffers)
        if module._modules:
            children = [(name, child) for name, child in module._modules.items() if child is not None]
            _check_children(path, children, depth, deepest)
            to_visit += [(prefix + name, child, depth + 1) for name, child in reversed(children)]  # the first on top
    return _ModuleTree(
        modules,
        {path: _type_name(module) for path, module in modules},
        parameters + buffers,
        tied,
        {id(module) for _, module in modules if "forward" in module.__dict__},
        {module: module.training for _, module in modules},
    )


def _listed(table: dict, prefix: str, is_buffer: bool, found: list, seen: set[int]) -> bool:
    """Add to `found` the tensors of a module's parameter or buffer `table` not in `seen`
    (ids), named after the module's `prefix`; whether one was (a tied tensor)."""
    tied = False
    for name, tensor in table.items():
        if tensor is None:
            continue
        if id(tensor) in seen:
            tied = True
        else:
            seen.add(id(tensor))
            found.append((prefix + name, tensor, is_buffer))
    return tied


def _check_children(path: str, children: list[tuple[str, torch.nn.Module]], depth: int, deepest: int) -> None:
    """Refuse the children of the module at `path` (`_walked`): past `deepest` levels, or named with a '.'."""
    if depth >= deepest:
        raise ArchprofError(
            f"the model nests its modules too deeply to walk (past Python's recursion limit, {sys.getrecursionlimit()}"
            " levels)"
        )
    dotted = next((name for name, _ in children if "." in name), None)
    if dotted is not None:
        where = f"module '{path}'" if path else "the model"
        raise ArchprofError(
            f"{where} holds a submodule named {dotted!r}: a name with '.' reads as a path to a module nested in"
            " another, which archprof cannot tell apart (torch's add_module refuses such names)"
        )


def _frames_below() -> int:
    """How many frames the stack holds under the caller's."""
    frame, count = sys._getframe(1), 0
    while frame is not None:
        frame, count = frame.f_back, count + 1
    return count


@contextmanager
def native_attention_off() -> Iterator[None]:
    """nn.MultiheadAttention and nn.TransformerEncoderLayer without their inference fast
    path: on real CPU tensors without grad, each would be one fused operator
    (`_native_multi_head_attention`, `_transformer_encoder_layer_fwd`) of no formula. Its
    operators are then the ones a meta trace records."""
    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(was)


def _lazy_layers_initialised(model: torch.nn.Module, specs: list[TraceInput], real: bool) -> torch.nn.Module:
    """The model with its lazy layers (nn.LazyLinear, nn.LazyConv2d, ...) initialised as on
    their first call, by one forward on the inputs without recording. On meta, that is a copy
    whose tensors are all empty meta ones (the caller's model stays as it is, and no weight
    is allocated); for a real trace, the module itself (the CPU fallback's own copy)."""
    if not real:
        model = _meta_copy(model)
    tensors = [*model.parameters(), *model.buffers()]
    _, args, kwargs = _inputs(specs, _first_floating_dtype(tensors), _input_device(tensors, real), real)
    try:
        with torch.no_grad(), forward_exits_as_errors(_type_name(model)):
            model(*args, **kwargs)
    except ArchprofError:
        raise
    except Exception as exc:
        reason = short_reason(exc)
        shapes = input_shapes_text([s.shape for s in specs])
        message = f"initialising the lazy layers by a forward on input {shapes} failed: {reason}"
        if not real and is_meta_limitation(exc):
            raise MetaUnsupported(message, reason) from exc
        raise ArchprofError(message) from exc
    return model


def _meta_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of `model` with every parameter and buffer an empty meta tensor of its
    kind, shape and dtype (a lazy one stays uninitialised, on meta): no data is copied."""
    memo: dict[int, Any] = {}
    for tensor in (*model.parameters(), *model.buffers()):
        if is_uninitialised(tensor):
            kind = type(tensor)
            memo[id(tensor)] = kind(requires_grad=tensor.requires_grad, device="meta", dtype=tensor.dtype)
        elif isinstance(tensor, torch.nn.Parameter):
            memo[id(tensor)] = type(tensor)(torch.empty_like(tensor, device="meta"), tensor.requires_grad)
        else:
            memo[id(tensor)] = torch.empty_like(tensor, device="meta")
    return copy.deepcopy(model, memo)


def _owners(
    modules: list[tuple[str, torch.nn.Module]], stand_ins: dict[int, torch.Tensor] | None, recorder: Recorder
) -> dict[int, tuple[str, ...]]:
    """Each parameter's and buffer's storage (the recorder's) -> the paths of the submodules
    that hold it, in the model's order: a tied weight has several (an Embedding's and a
    Linear's), which `named_parameters()` names after the first only. A submodule of the
    same class as an earlier one, holding all of its tensors under the same names, is that
    module under a second name: torch.jit.script gives a module called twice
    (`Sequential(conv, conv)`) an entry per attribute. NB: so are two modules whose tensors
    were all tied by hand, which nothing in a ScriptModule tells apart from one."""
    owners: dict[int, list[str]] = {}
    canonical = _canonical_paths(modules)
    for path, module in modules:
        if not path or canonical[path] != path:  # the model's own tensors: its own rows
            continue
        for _, tensor in _held(module):
            paths = owners.setdefault(recorder.lookup(_traced(tensor, stand_ins)).storage, [])
            if path not in paths:
                paths.append(path)
    return {storage: tuple(paths) for storage, paths in owners.items()}


def _canonical_paths(modules: list[tuple[str, torch.nn.Module]]) -> dict[str, str]:
    """Each module's path -> the path of the first module it is alike (`_owners`: of its
    class, holding all the same tensors under the same names), its own where none is."""
    canonical: dict[str, str] = {}
    first: dict[tuple, str] = {}
    for path, module in modules:
        alike = (_type_name(module), tuple((name, id(tensor)) for name, tensor in _held(module)))
        canonical[path] = first.setdefault(alike, path) if alike[1] else path
    return canonical


def _held(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """A module's own parameters and buffers (not its submodules'), by name."""
    return [(name, t) for table in (module._parameters, module._buffers) for name, t in table.items() if t is not None]


def _tables(modules: list[tuple[str, torch.nn.Module]]) -> list[tuple[dict, dict]]:
    """Each module's parameter, buffer and submodule tables, with a copy of what they hold now."""
    return [
        (table, dict(table))
        for _, module in modules
        for table in (module._parameters, module._buffers, module._modules)
    ]


def _swap_in(modules: list[tuple[str, torch.nn.Module]], stand_ins: dict[int, torch.Tensor]) -> None:
    """Every parameter and buffer in the modules' tables replaced by its stand-in (keyed by
    the tensor's id: a tied tensor, under two names, by its one stand-in), as
    `torch.func.functional_call` swaps them, without its walk from the root to each name
    (resnet50 held on the CPU: 1 ms of its 14). `_put_back` swaps the model's own back."""
    for _, module in modules:
        for table in (module._parameters, module._buffers):
            for name, tensor in list(table.items()):
                stand_in = stand_ins.get(id(tensor)) if tensor is not None else None
                if stand_in is not None:
                    table[name] = stand_in


def _put_back(tables: list[tuple[dict, dict]]) -> None:
    """The tables as they were: the model's own tensors back in place of the stand-ins, and
    no tensor or submodule the forward registered (a TorchScript submodule's table, whose
    names are fixed, gets its own back)."""
    for table, held in tables:
        if isinstance(table, dict):
            if table or held:  # refilled unasked: cheaper than asking whether it changed
                table.clear()
                table.update(held)
        else:  # a TorchScript submodule's table: its names are fixed, and it has no clear()
            for name, value in held.items():
                if table[name] is not value:
                    table[name] = value


# An nn.Module's own registries, hooks and mode (MODULE_INTERNALS) are not put back here:
# the trace's own steps put back what it changes of them.
_CONTAINERS = (list, dict, set)
_MISSING = object()


@dataclass(frozen=True)
class _Attributes:
    """Each module's attributes and the contents of its own list, dict and set attributes,
    as they were before a forward, to put back after it: a forward may count its calls, fill
    a cache (with a meta tensor, which would break the caller's next real forward) or append
    to a list on its first call (a submodule it makes is `_put_back`'s). What it changes
    inside another object (an attribute's attribute, a global) is not seen. The contents
    of a torch.nn class's own lists and dicts are not copied: its forward adds to none
    (an RNN's rebinds its list of weights, which is put back as any attribute is)."""

    held: list[tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]]

    @staticmethod
    def of(modules: list[tuple[str, torch.nn.Module]]) -> _Attributes:
        held = []
        for _, module in modules:
            if isinstance(module, torch.jit.ScriptModule):  # its attributes live in C++
                continue
            attributes = vars(module).copy()
            contents = {}
            if not type(module).__module__.startswith("torch.nn."):
                contents = {
                    name: copy.copy(value)
                    for name, value in attributes.items()
                    if type(value) in _CONTAINERS and name not in MODULE_INTERNALS
                }
            held.append((module, attributes, contents))
        return _Attributes(held)

    def put_back(self) -> None:
        for module, attributes, contents in self.held:
            state = vars(module)
            if not _same_objects(state, attributes):
                for name in [name for name in state if name not in attributes and name not in MODULE_INTERNALS]:
                    del state[name]
                for name, value in attributes.items():
                    if name not in MODULE_INTERNALS and state.get(name, _MISSING) is not value:
                        state[name] = value
            for name, held in contents.items():
                _refill(attributes[name], held)


def _same_objects(now: dict, before: dict) -> bool:
    """Whether two dicts hold the same objects under the same names: a dict comparison,
    which takes an object as equal to itself without asking it (C speed for the modules a
    forward left alone); one that asks (a tensor, which may refuse) is taken as changed."""
    try:
        return bool(now == before)
    except Exception:  # an object's own __eq__ or __bool__ refused: compared name by name then
        return False


def _refill(container: list | dict | set, held: list | dict | set) -> None:
    """`container` holding what `held` holds, in place (the caller may hold it too)."""
    if isinstance(container, list):
        container[:] = held
    else:
        container.clear()
        container.update(held)


def in_traced_mode(model: torch.nn.Module, training: bool) -> torch.nn.Module:
    """The model in the mode a trace runs it in, for a real run to match: `model.train(training)`,
    unless the model is in that mode already; then its modules keep their own (train() then a
    BatchNorm frozen by its own eval(), or eval() then Monte Carlo dropout's train()), as
    the user's own step or forward has them."""
    if model.training != training:
        model.train(training)
    return model


def _set_mode(model: torch.nn.Module, modes: dict[torch.nn.Module, bool], training: bool) -> None:
    """`model.train(training)`, writing each module's flag directly where no module has a
    `train` of its own (which may keep some modules as they were: frozen norms)."""
    if any(type(module).train is not torch.nn.Module.train for module in modes):
        model.train(training)
        return
    for module in modes:
        _set_flag(module, training)


def _set_flag(module: torch.nn.Module, training: bool) -> None:
    # nn.Module.__setattr__ looks through parameters, buffers and submodules first: a
    # tenth of a small network's trace, for a plain attribute.
    if type(module).__setattr__ is torch.nn.Module.__setattr__:
        module.__dict__["training"] = training
    else:
        module.training = training


def _kept_by_the_model(
    modules: list[tuple[str, torch.nn.Module]], alive: list[tuple[torch.Tensor, int]], output
) -> set[int]:
    """The storages of the tensors alive after the forward that a module keeps in an
    attribute, or in a dict, list or tuple there (a cache for its next call: timm's LeViT
    and TinyViT attention biases). A tensor alive for another reason is not held to the
    end: the model's output, or one in the frames that torch's first import of dynamo, in
    the first call of some meta decompositions, keeps for the rest of the process."""
    returned = {id(tensor) for tensor in tensors_in(output)}
    storages = {id(tensor): storage for tensor, storage in alive if id(tensor) not in returned}
    if not storages:  # nearly always: nothing but the output outlives the forward
        return set()
    kept = set()
    for _, module in modules:
        for value in vars(module).values():
            if isinstance(value, dict):
                items = value.values()
            elif isinstance(value, (list, tuple)):
                items = value
            else:
                items = (value,)
            kept.update(storages[id(item)] for item in items if id(item) in storages)
    return kept


def _creations_join_their_consumer(ops: list[OpNode]) -> list[OpNode]:
    """Without hooks, an op that reads no tensor (TorchScript's `empty` before a convolution
    or a batch norm) joins the module of the op after it rather than splitting rows."""
    joined = list(ops)
    for index in range(len(joined) - 2, -1, -1):
        op, after = joined[index], joined[index + 1]
        if not op.inputs and op.module is not after.module:
            joined[index] = dataclasses.replace(op, module=after.module)
    return joined


def _one_value_per_channel_hint(exc: Exception, training: bool) -> str:
    """What fixes a training BatchNorm that sees one value per channel (batch 1, and a 1x1
    map or a vector: squeeze-excitation blocks, a BatchNorm1d head), which PyTorch refuses."""
    if training and "Expected more than 1 value per channel" in str(exc):
        return "; a training step needs a batch of at least 2 here (--batch 2; batch=2 from Python)"
    return ""


def forward_exit_error(name: str, exc: BaseException, where: str = "") -> ArchprofError:
    """The error for a forward that raised SystemExit (sys.exit in the user's code) or another
    BaseException but KeyboardInterrupt: one line, e.g. "the forward of Net raised SystemExit: 3"."""
    reason = f": {short_reason(exc)}" if str(exc).strip() else ""
    inside = f", in {where}" if where else ""
    return ArchprofError(f"the forward of {name} raised {type(exc).__name__}{reason}{inside}")


@contextmanager
def forward_exits_as_errors(name: str) -> Iterator[None]:
    """Run a real forward of the user's model: SystemExit and the like become `forward_exit_error`."""
    try:
        yield
    except (Exception, KeyboardInterrupt):
        raise
    except BaseException as exc:
        raise forward_exit_error(name, exc) from None


def _type_name(module: torch.nn.Module) -> str:
    """The class name to show: a ScriptModule's original class, an unflattened exported
    program's original module class (set by archprof.load), else the class itself."""
    label = module.__dict__.get("_archprof_type")
    if isinstance(label, str):
        return label
    if isinstance(module, torch.jit.ScriptModule):
        with suppress(Exception):
            return module.original_name
    return type(module).__name__


def _input_device(tensors: list[torch.Tensor], real: bool) -> torch.device:
    """Where the inputs go: meta, or for a real forward the device of the model's tensors."""
    return torch.device("meta") if not real else (tensors[0].device if tensors else torch.device("cpu"))


def _inputs(specs: list[TraceInput], dtype: torch.dtype, device: torch.device, real: bool):
    """The forward's inputs (each in its spec's dtype, else `dtype`), and them as the call's
    positional and keyword arguments."""
    inputs = [_input(s.shape, s.dtype or dtype, device, real) for s in specs]
    args = tuple(x for s, x in zip(specs, inputs, strict=True) if s.name is None)
    kwargs = {s.name: x for s, x in zip(specs, inputs, strict=True) if s.name is not None}
    return inputs, args, kwargs


def _input(shape, dtype: torch.dtype, device: torch.device, real: bool) -> torch.Tensor:
    check_fits(shape, dtype, f"input {tensor_text(shape, dtype)}")
    if not real:
        return torch.empty(shape, dtype=dtype, device=device)
    with memory_for(f"the input {tensor_text(shape, dtype)} on {device}"):
        if dtype.is_floating_point or dtype.is_complex:
            return torch.randn(shape, dtype=dtype, device=device)
        return torch.zeros(shape, dtype=dtype, device=device)  # token ids, masks: 0 is always valid


def _script_copy(
    model: torch.jit.ScriptModule, dtype: torch.dtype | None, real: bool, owned: bool
) -> tuple[torch.jit.ScriptModule, dict]:
    """A copy of the ScriptModule, saved and loaded again (`saved_and_loaded`), and its code:
    on meta in `dtype` (the model's own where None), or for a real trace on its own device,
    on the model's own weights where it is archprof's (`owned`), not a second set of them."""
    tensors = [*model.parameters(), *model.buffers()]
    needs_cast = not real and dtype is not None and any(t.is_floating_point() and t.dtype != dtype for t in tensors)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        copied, code = saved_and_loaded(model, _input_device(tensors, real), share=real and owned)
        return (copied.to(dtype) if needs_cast else copied), code


def _stands_for_itself(tensors: list[torch.Tensor], dtype: torch.dtype | None) -> bool:
    """Whether the model's own tensors can be traced as they are: all on meta already (a
    model archprof built) and none to cast. Stand-ins would only cost time (ResNet-50:
    creating and swapping 320 tensors, a fifth of the trace). Not one made in inference
    mode (a model built inside `torch.inference_mode()`), which autograd may not save and
    nothing may write in place outside it."""
    return all(
        tensor.is_meta
        and not tensor.is_inference()
        and not is_uninitialised(tensor)
        and (dtype is None or not tensor.is_floating_point() or tensor.dtype == dtype)
        for tensor in tensors
    )


def _own_tensors(named: list[tuple[str, torch.Tensor, bool]], recorder: Recorder):
    """The model's own parameters and buffers (`named`: name, tensor, is a buffer),
    registered by name (no stand-ins)."""
    parameters: list[ParameterInfo] = []
    seen: set[int] = set()
    for name, tensor, is_buffer in named:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        meta = recorder.register(tensor, "buffer" if is_buffer else "parameter", name)
        parameters.append(_parameter_info(meta, tensor, is_buffer))
    return None, parameters


def _buffer_minima(named: list[tuple[str, torch.Tensor, bool]], recorder: Recorder) -> dict[int, float]:
    """The smallest value of each floating buffer the model holds for real, by the id of its
    TensorMeta (`Graph.buffer_minima`)."""
    minima: dict[int, float] = {}
    with torch.no_grad():
        for name, tensor, is_buffer in named:
            meta = recorder.named(name) if is_buffer else None
            if meta is not None and tensor.is_floating_point() and tensor.numel() and tensor.device.type != "meta":
                minima[meta.id] = float(tensor.min())
    return minima


def _given_gradients(
    named: list[tuple[str, torch.Tensor, bool]], stand_ins: dict[int, torch.Tensor] | None
) -> set[str]:
    """The names of the parameters whose `.grad` the backward pass wrote (`EngineNotes.given_gradients`),
    each read from the tensor the trace ran on."""
    return {name for name, t, is_buffer in named if not is_buffer and _traced(t, stand_ins).grad is not None}


def _traced(tensor: torch.Tensor, stand_ins: dict[int, torch.Tensor] | None) -> torch.Tensor:
    """The tensor the trace ran on for one of the model's: its stand-in, or itself."""
    return stand_ins.get(id(tensor), tensor) if stand_ins is not None else tensor


def _parameter_info(meta: TensorMeta, tensor: torch.Tensor, is_buffer: bool) -> ParameterInfo:
    """What the report lists of a parameter or buffer, from its registered stand-in (`meta`:
    its name, shape and traced dtype) and the model's own tensor (whether it trains)."""
    return ParameterInfo(
        meta.name,
        meta.name.rpartition(".")[0],
        meta.shape,
        meta.dtype,
        not is_buffer and tensor.requires_grad,
        is_buffer,
    )


def _packed_parameters(modules: list[tuple[str, torch.nn.Module]]) -> list[ParameterInfo]:
    """The weights and biases packed into TorchScript objects, as torch.ao's quantized
    linear and convolution layers keep theirs (`unpack()` gives them back): parameters that
    no table lists, counted as their module's, in their quantized dtype, not trained."""
    found = []
    for path, module in modules:
        for attribute, value in _attributes(module):
            if not isinstance(value, torch.ScriptObject) or not hasattr(value, "unpack"):
                continue
            for role, tensor in zip(("weight", "bias"), value.unpack(), strict=False):
                if isinstance(tensor, torch.Tensor):
                    name = ".".join(part for part in (path, attribute, role) if part)
                    found.append(ParameterInfo(name, path, tuple(tensor.shape), tensor.dtype, False, False))
    return found


def _attributes(module: torch.nn.Module) -> Iterable[tuple[str, Any]]:
    """A module's own attributes: a ScriptModule (a TorchScript file's) keeps them in C++,
    out of its `vars()`."""
    if isinstance(module, torch.jit.ScriptModule):
        return torch._C._jit_debug_module_iterators(module._c)["named_attributes"]
    return vars(module).items()


def _first_floating_dtype(tensors: list[torch.Tensor]) -> torch.dtype:
    for tensor in tensors:
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


def _stand_ins(named: list[tuple[str, torch.Tensor, bool]], dtype: torch.dtype | None, recorder: Recorder):
    """Empty meta tensors, one per parameter and buffer of `named` (tied ones once), keyed by
    the id of the tensor each stands in for; those of trainable parameters require grad, in
    inference too: a composite picks its kernels by it under no_grad as well (matmul of a
    non-contiguous batch by a weight that requires grad copies the batch and takes one mm,
    where it would otherwise expand the weight for a bmm)."""
    stand_ins: dict[int, torch.Tensor] = {}
    parameters: list[ParameterInfo] = []
    for name, tensor, is_buffer in named:
        if is_uninitialised(tensor):
            raise ArchprofError(f"'{name}' is a lazy parameter not yet initialised: run one forward pass first")
        target = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        stand_in = torch.empty(tensor.shape, dtype=target, device="meta")
        if not is_buffer and tensor.requires_grad and stand_in.is_floating_point():
            stand_in.requires_grad_(True)
        stand_ins[id(tensor)] = stand_in
        meta = recorder.register(stand_in, "buffer" if is_buffer else "parameter", name)
        parameters.append(_parameter_info(meta, tensor, is_buffer))
    return stand_ins, parameters


def _attach_hooks(
    modules: list[tuple[str, torch.nn.Module]],
    module_types: dict[str, str],
    recorder: Recorder,
    shortcuts: bool,
    replays: Replays | None,
):
    """Run the recorder's `enter` and `post_hook` around every submodule's forward, until the
    handles returned are removed. Not as nn.Module hooks: a module with any hook takes the
    slow road through `Module._call_impl` (RegNetY-016's 709 calls: a sixth of its trace,
    and registering 1,418 hooks another tenth); an instance attribute `forward` that calls
    the hooks around the class's is found first. A module with forward hooks of its own
    (which may replace its output) gets the post hook as its last forward hook, as before.
    With `shortcuts`, where `archprof.shortcuts` knows the module's call, the wrapper records
    its operator instead of running the forward; with `replays`, a block that repeats an
    earlier one is copied from it (`archprof.replay`). Hooks run as they would.
    As with nn.Module hooks, a forward that raises leaves its call on the recorder's stack,
    for the error to say where it failed."""
    originals, handles = [], []
    for path, module in modules:
        if not path:  # the model's own call is recorded around its whole call (`_model_called`)
            continue
        originals.append((module, module.__dict__.get("forward")))
        post_hook = not module._forward_hooks
        if not post_hook:
            handles.append(module.register_forward_hook(recorder.post_hook))
        shortcut = shortcut_for(module) if shortcuts else None
        # A lone layer is as quick to run as to copy.
        watched = replays if module._modules else None
        module.__dict__["forward"] = _RecordedForward(
            module, path, module_types[path], module.forward, post_hook, recorder, shortcut, watched
        )
    return [_Restore(originals), *handles]


def _model_called(
    model: torch.nn.Module, args, kwargs, recorder: Recorder, by_parameters: bool, code: ScriptCode | None
):
    """`model(*args, **kwargs)`, recorded as the model's own call (unless `by_parameters`, where
    `Recorder.start_root` opened it) from its first hook to its last: ops its pre-hooks, the
    global module hooks or a `__call__` of its own run outside its forward are the model's too.
    A ScriptModule with its `code` runs under the profiler, its ops then attributed by their
    call stacks (`archprof.script_calls`); before any backward pass, whose ops follow theirs."""
    if by_parameters:
        if code is None:
            return model(*args, **kwargs)
        recorder.marking = True
        try:
            with stacks_of_marks() as stacks:
                output = model(*args, **kwargs)
        finally:
            recorder.marking = False
        chains = code.chains(stacks, len(recorder.ops))
        if chains is not None:  # none where a profiler of the caller's was running
            recorder.follow_chains(chains)
        return output
    recorder.enter("", _type_name(model), args)
    output = model(*args, **kwargs)
    recorder.post_hook(model, args, output)
    return output


class _RecordedForward:
    """The `forward` a submodule is given for the trace (`_attach_hooks`): the recorder's
    `enter`, the call (answered by its `shortcut`, copied by `replays`, or `__wrapped__`,
    the forward it had), then the post hook unless one of the module's own forward hooks
    runs it. One object per module, not a closure: a closure of these eight values took
    eleven objects to make and let go of on every trace (its cells, its tuple of them, the
    function and the dict that holds its `__wrapped__`; regnety_016: 708 modules).
    `inspect.signature(module.forward)` follows `__wrapped__` to the forward's own, as it
    does a decorated function's; a copy of the module shares it, as it would a function."""

    __slots__ = ("__wrapped__", "module", "path", "post_hook", "recorder", "replays", "shortcut", "type_name")

    def __init__(
        self,
        module: torch.nn.Module,
        path: str,
        type_name: str,
        forward: Callable,
        post_hook: bool,
        recorder: Recorder,
        shortcut: Shortcut | None,
        replays: Replays | None,
    ) -> None:
        self.module = module
        self.path = path
        self.type_name = type_name
        self.__wrapped__ = forward
        self.post_hook = post_hook
        self.recorder = recorder
        self.shortcut = shortcut
        self.replays = replays

    def __call__(self, *args, **kwargs):
        recorder = self.recorder
        recorder.enter(self.path, self.type_name, args)
        output = start = None
        if self.shortcut is not None and len(args) == 1 and not kwargs:
            output = recorder.answer_directly(self.module, args[0], self.shortcut)
        elif self.replays is not None:
            output, start = self.replays.answer(self.module, self.path, args, kwargs)
        if output is None:
            output = self.__wrapped__(*args, **kwargs)
            if start is not None:
                self.replays.learn(start, args, output)
        if self.post_hook:
            recorder.post_hook(self.module, args, output)
        return output

    def __copy__(self) -> _RecordedForward:
        return self

    def __deepcopy__(self, memo: dict) -> _RecordedForward:
        return self


@dataclass(frozen=True)
class _Restore:
    """Removes the recorded forwards: each module's own instance attribute back, if it had one."""

    originals: list[tuple[torch.nn.Module, Callable | None]]

    def remove(self) -> None:
        for module, forward in self.originals:
            if forward is None:
                module.__dict__.pop("forward", None)
            else:
                module.__dict__["forward"] = forward
