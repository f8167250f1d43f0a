"""Run a model once on meta tensors and capture every aten operation it performs.

No weight and no activation is allocated: parameters and buffers are replaced by empty
meta stand-ins through `torch.func.functional_call`, so the caller's model is never
touched. Each operation is attributed to the innermost module call running when it ran.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import re
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from archprof.errors import ArchprofError, first_line
from archprof.graph import Graph, ModuleCall, OpNode, ParameterInfo, TensorKind, TensorMeta
from archprof.kernels import DeviceKernels
from archprof.operators import Family, Layout, find_operator
from archprof.operators.shapes import Refused, elementwise_strides, output_dtype, suggests_channels_last
from archprof.replay import Replays
from archprof.shortcuts import Shortcut, may_shortcut, shortcut_for
from archprof.structure import TensorSlots, tensors_in
from archprof.units import shapes_text


@dataclass(frozen=True)
class TraceInput:
    """One input of the traced forward: its full shape (batch included), its dtype (None:
    the trace's floating dtype) and its keyword (None: positional)."""

    shape: tuple[int, ...]
    dtype: torch.dtype | None = None
    name: str | None = None


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
    (`_TrainingRecorder` says how each is attributed).

    `real` runs the model as it is, with its own weights, on real inputs on its device (the
    CPU fallback: the caller hands over a module it may run, in the dtype it wants); ops
    are recorded the same way, from real tensors. A forward that fails on meta for want of
    data (`.item()`, an op without a meta kernel) raises MetaUnsupported.

    A TorchScript module runs no Python hooks: its ops are attributed to the module whose
    parameters they read (convolutions, linear and norm layers), the others to the model
    itself; so is a module marked `_archprof_attribution = "parameters"`.

    Lazy layers not yet called (nn.LazyLinear, ...) are first given their shapes by one
    forward on the inputs, unrecorded (`_lazy_layers_initialised`): on a meta copy, never on
    the caller's model.
    """
    by_parameters = isinstance(model, torch.jit.ScriptModule) or (
        getattr(model, "_archprof_attribution", "hooks") == "parameters"
    )
    if isinstance(model, torch.jit.ScriptModule) and not real:
        try:
            model = _script_on_meta(model, dtype)
        except Exception as exc:  # its weights will not go onto meta: a real forward may still run
            raise MetaUnsupported(
                f"cannot move the TorchScript module onto the meta device: {_reason(exc)}", _reason(exc)
            ) from exc
    specs = [s if isinstance(s, TraceInput) else TraceInput(tuple(s)) for s in input_shapes]
    modules = list(model.named_modules())
    if any(isinstance(module, _LazyModule) and module.has_uninitialized_params() for _, module in modules):
        model = _lazy_layers_initialised(model, specs, real)
        modules = list(model.named_modules())
    module_types = {path: _type_name(module) for path, module in modules}
    # One walk of the model's tensors for every question asked of them below.
    named, tied = _named_tensors(modules)
    tensors = [t for _, t, _ in named]
    shapes = [s.shape for s in specs]
    recorder_type = _TrainingRecorder if training else _Recorder
    recorder = recorder_type(real=real, module_types=module_types if by_parameters else None)
    if real or isinstance(model, torch.jit.ScriptModule) or _stands_for_itself(tensors, dtype):
        # Its own tensors (on meta already for a ScriptModule: stateless calls refuse it).
        stand_ins, parameters = _own_tensors(named, recorder)
    else:
        stand_ins, parameters = _stand_ins(named, dtype, recorder, requires_grad=training)
    input_dtype = dtype or _first_floating_dtype(tensors)
    inputs, args, kwargs = _inputs(specs, input_dtype, _input_device(tensors, real), real)
    input_metas = [recorder.register(x, "input") for x in inputs]

    training_modes = {module: module.training for _, module in modules}
    if any(mode != training for mode in training_modes.values()):
        _set_mode(model, training_modes, training)
    # A training step on the model's own tensors writes their .grad: the caller's are put
    # back afterwards (and a later trace starts from none, as a step after zero_grad does).
    own_gradients = {p: p.grad for p in model.parameters()} if training and stand_ins is None else {}
    for parameter in own_gradients:
        parameter.grad = None
    # Module calls answered by `archprof.shortcuts`, and batch norms handed straight to the
    # recorder: on meta tensors, in inference (a training step's autograd must see the
    # forward's own torch calls).
    shortcuts = not (real or training)
    kernels = DeviceKernels(answer=recorder.answer_call if shortcuts else None)
    try:
        with ExitStack() as stack:
            if not by_parameters:
                replays = None
                if shortcuts and not tied:  # a copy renames a block's parameters: untied ones
                    own_forwards = {id(module) for _, module in modules if "forward" in module.__dict__}
                    replays = Replays(modules, own_forwards, recorder, kernels.chosen)
                for handle in _attach_hooks(modules, module_types, recorder, shortcuts, replays):
                    stack.callback(handle.remove)
            if training:
                stack.enter_context(torch.enable_grad())
                stack.enter_context(torch.autograd.graph.saved_tensors_hooks(recorder.pack_saved, _unpack_saved))
            else:
                stack.enter_context(torch.no_grad())
            stack.enter_context(recorder)
            stack.enter_context(kernels)  # on meta, composite calls would not pick the CPU's kernels
            if by_parameters:
                recorder.start_root(model, args)
            step = _ForwardThenBackward(model, recorder) if training else model
            if stand_ins is None:
                output = step(*args, **kwargs)
            else:
                if training:
                    stand_ins = {f"model.{name}": tensor for name, tensor in stand_ins.items()}
                stack.callback(_put_back, _tensor_tables(modules))
                output = torch.func.functional_call(step, stand_ins, args, kwargs, tie_weights=True, strict=False)
    except ArchprofError:
        raise
    except Exception as exc:  # the user's forward failed: say where and on what
        message = recorder.describe_failure(exc, shapes)
        if not real and is_meta_limitation(exc):
            raise MetaUnsupported(message, _reason(exc)) from exc
        raise ArchprofError(message) from exc
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

    outputs = [recorder.lookup(t) for t in tensors_in(output)]
    return Graph(
        ops=_creations_join_their_consumer(recorder.ops) if by_parameters else recorder.ops,
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
    )


_LazyModule = torch.nn.modules.lazy.LazyModuleMixin
_Uninitialised = torch.nn.parameter.UninitializedTensorMixin


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
        reason = _reason(exc)
        shapes = _shapes_text([s.shape for s in specs])
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
        if isinstance(tensor, _Uninitialised):
            kind = type(tensor)
            memo[id(tensor)] = kind(requires_grad=tensor.requires_grad, device="meta", dtype=tensor.dtype)
        elif isinstance(tensor, torch.nn.Parameter):
            memo[id(tensor)] = type(tensor)(torch.empty_like(tensor, device="meta"), tensor.requires_grad)
        else:
            memo[id(tensor)] = torch.empty_like(tensor, device="meta")
    return copy.deepcopy(model, memo)


def _named_tensors(modules: list[tuple[str, torch.nn.Module]]) -> tuple[list[tuple[str, torch.Tensor, bool]], bool]:
    """`named_parameters()` then `named_buffers()` (name, tensor, is a buffer), from the
    modules already listed: one walk instead of two more through `named_modules`; and
    whether a tensor was met twice (tied weights)."""
    named = []
    tied = False
    for is_buffer, attribute in ((False, "_parameters"), (True, "_buffers")):
        seen: set[int] = set()
        for path, module in modules:
            for name, tensor in getattr(module, attribute).items():
                if tensor is None:
                    continue
                if id(tensor) in seen:
                    tied = True
                else:
                    seen.add(id(tensor))
                    named.append((f"{path}.{name}" if path else name, tensor, is_buffer))
    return named, tied


def _tensor_tables(modules: list[tuple[str, torch.nn.Module]]) -> list[tuple[dict, dict]]:
    """Each module's parameter and buffer tables, with a copy of what they hold now."""
    return [(table, dict(table)) for _, module in modules for table in (module._parameters, module._buffers)]


def _put_back(tables: list[tuple[dict, dict]]) -> None:
    """The tables as they were. `torch.func.functional_call` swaps the tensors of a module
    reached under two names (timm's CoaT shares its positional convolutions) out twice and
    back once: the caller's model would keep a stand-in."""
    for table, held in tables:
        if table.keys() != held.keys() or any(table[name] is not tensor for name, tensor in held.items()):
            if isinstance(table, dict):
                table.clear()
                table.update(held)
            else:  # a TorchScript submodule's table: its names are fixed, and it has no clear()
                for name, tensor in held.items():
                    table[name] = tensor


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


def _creations_join_their_consumer(ops: list[OpNode]) -> list[OpNode]:
    """Without hooks, an op that reads no tensor (TorchScript's `empty` before a convolution
    or a batch norm) joins the module of the op after it rather than splitting rows."""
    joined = list(ops)
    for index in range(len(joined) - 2, -1, -1):
        op, after = joined[index], joined[index + 1]
        if not op.inputs and op.module is not after.module:
            joined[index] = dataclasses.replace(op, module=after.module)
    return joined


_META_LIMITATION = re.compile(r"\bmeta\b|data.dependent|no data|cannot copy out", re.IGNORECASE)


def is_meta_limitation(exc: BaseException) -> bool:
    """Whether an exception says the meta device lacks what a real device has (data, a
    kernel), rather than that the model is wrong: then a real forward may work."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, NotImplementedError) or "DataDependent" in type(exc).__name__:
            return True
        if _META_LIMITATION.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def forward_exit_error(name: str, exc: BaseException, where: str = "") -> ArchprofError:
    """The error for a forward that raised SystemExit (sys.exit in the user's code) or another
    BaseException but KeyboardInterrupt: one line, e.g. "the forward of Net raised SystemExit: 3"."""
    reason = f": {_reason(exc)}" if str(exc).strip() else ""
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


def _reason(exc: BaseException) -> str:
    line = first_line(exc, bare=True)
    # A long explanation (torch's for nonzero runs to 300 characters): its first sentence.
    return line.split(". ")[0] if len(line) > 120 else line


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
    if not real:
        return torch.empty(shape, dtype=dtype, device=device)
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, dtype=dtype, device=device)
    return torch.zeros(shape, dtype=dtype, device=device)  # token ids, masks: 0 is always valid


def _script_on_meta(model: torch.jit.ScriptModule, dtype: torch.dtype | None) -> torch.jit.ScriptModule:
    """The ScriptModule with meta weights in `dtype`: a copy whenever it would change (a
    ScriptModule with real weights is saved and loaded again onto the meta device)."""
    tensors = (*model.parameters(), *model.buffers())
    on_meta = all(t.device.type == "meta" for t in tensors)
    needs_cast = dtype is not None and any(t.is_floating_point() and t.dtype != dtype for t in tensors)
    if on_meta and not needs_cast:
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if on_meta:
            copied = copy.deepcopy(model)
        else:
            buffer = io.BytesIO()
            torch.jit.save(model, buffer)
            buffer.seek(0)
            copied = torch.jit.load(buffer, map_location="meta")
        return copied.to(dtype) if needs_cast else copied


def _stands_for_itself(tensors: list[torch.Tensor], dtype: torch.dtype | None) -> bool:
    """Whether the model's own tensors can be traced as they are: all on meta already (a
    model archprof built) and none to cast. Stand-ins would only cost time (ResNet-50:
    creating and swapping 320 tensors, a fifth of the trace)."""
    return all(
        tensor.is_meta
        and not isinstance(tensor, _Uninitialised)
        and (dtype is None or not tensor.is_floating_point() or tensor.dtype == dtype)
        for tensor in tensors
    )


def _own_tensors(named: list[tuple[str, torch.Tensor, bool]], recorder: _Recorder):
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


def _first_floating_dtype(tensors: list[torch.Tensor]) -> torch.dtype:
    for tensor in tensors:
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


def _stand_ins(
    named: list[tuple[str, torch.Tensor, bool]], dtype: torch.dtype | None, recorder: _Recorder, requires_grad=False
):
    """Empty meta tensors, one per parameter and buffer of `named` (tied ones once); with
    `requires_grad`, those of trainable parameters require grad, as in training."""
    stand_ins: dict[str, torch.Tensor] = {}
    parameters: list[ParameterInfo] = []
    for name, tensor, is_buffer in named:
        if isinstance(tensor, _Uninitialised):
            raise ArchprofError(f"'{name}' is a lazy parameter not yet initialised: run one forward pass first")
        target = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        stand_in = torch.empty(tensor.shape, dtype=target, device="meta")
        if requires_grad and not is_buffer and tensor.requires_grad and stand_in.is_floating_point():
            stand_in.requires_grad_(True)
        stand_ins[name] = stand_in
        meta = recorder.register(stand_in, "buffer" if is_buffer else "parameter", name)
        parameters.append(_parameter_info(meta, tensor, is_buffer))
    return stand_ins, parameters


def _attach_hooks(
    modules: list[tuple[str, torch.nn.Module]],
    module_types: dict[str, str],
    recorder: _Recorder,
    shortcuts: bool,
    replays: Replays | None,
):
    """Run the recorder's `enter` and `post_hook` around every module's forward, until the
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
        originals.append((module, module.__dict__.get("forward")))
        post_hook = recorder.post_hook
        if module._forward_hooks:
            handles.append(module.register_forward_hook(post_hook))
            post_hook = None
        shortcut = shortcut_for(module) if shortcuts else None
        # The model's own call is never repeated; a lone layer is as quick to run as to copy.
        watched = replays if path and module._modules else None
        module.__dict__["forward"] = _recorded(
            module, path, module_types[path], module.forward, post_hook, recorder, shortcut, watched
        )
    return [_Restore(originals), *handles]


def _recorded(
    module: torch.nn.Module,
    path: str,
    type_name: str,
    forward: Callable,
    post_hook: Callable | None,
    recorder: _Recorder,
    shortcut: Shortcut | None,
    replays: Replays | None,
) -> Callable:
    def recorded_forward(*args, **kwargs):
        recorder.enter(path, type_name, args)
        output = start = None
        if shortcut is not None and len(args) == 1 and not kwargs:
            output = recorder.answer_directly(module, args[0], shortcut)
        elif replays is not None:
            output, start = replays.answer(module, path, args, kwargs)
        if output is None:
            output = forward(*args, **kwargs)
            if start is not None:
                replays.learn(start, args, output)
        if post_hook is not None:
            post_hook(module, args, output)
        return output

    recorded_forward.__wrapped__ = forward  # inspect.signature(module.forward) as before
    return recorded_forward


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


# Assertions an exported program makes about its inputs: no data, no arithmetic, not a layer.
# Operators returning views of their input whose schemas carry no alias annotation.
_UNANNOTATED_VIEWS = frozenset({"aten.unsafe_split", "aten.unsafe_split_with_sizes", "aten.unsafe_chunk"})
_RUNTIME_CHECKS = frozenset(
    {"aten._assert_tensor_metadata", "aten._assert_async", "aten._assert_scalar", "aten.sym_constrain_range_for_size"}
)


class _Recorder(TorchDispatchMode):
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
        self._alive: list[torch.Tensor] = []  # keeps ids unique; meta tensors cost nothing
        self._next_storage = 0
        self._count = 0  # TensorMeta ids
        self.saved: list[TensorMeta] = []  # what autograd saved (training traces)
        self._real = real  # real tensors (the CPU fallback): no fast path, not kept alive
        # Without hooks (TorchScript): every module's type, ops attributed by parameters.
        self._by_parameters = module_types

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Otherwise torch wraps __torch_dispatch__ in dynamo.disable, whose first call
        # imports torch._dynamo: 1.1 s of the CLI's start-up for nothing (no compilation
        # ever happens inside the trace).
        return False

    # -- tensors -------------------------------------------------------------------------

    def register(self, tensor: torch.Tensor, kind: TensorKind, name: str = "", storage: int | None = None):
        if storage is None:
            storage = self.new_storage()
        meta = TensorMeta(self._count, tuple(tensor.shape), tensor.dtype, storage, kind, name)
        self._count += 1
        if name:
            self._named[name] = meta
        self.bind(tensor, meta)
        return meta

    def bind(self, tensor: torch.Tensor, meta: TensorMeta) -> None:
        """`meta` is now what the recorder knows `tensor` as (its latest version)."""
        key = id(tensor)
        self._metas[key] = meta
        if self._real:
            # Keeping real tensors alive would hold every activation of the forward at once:
            # an id leaves the table when its tensor dies instead, before Python reuses it.
            weakref.finalize(tensor, self._forget, key, meta)
        else:
            self._alive.append(tensor)

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

    def _forget(self, key: int, meta: TensorMeta) -> None:
        if self._metas.get(key) is meta:
            del self._metas[key]

    def lookup(self, tensor: torch.Tensor) -> TensorMeta:
        meta = self._metas.get(id(tensor))
        # A tensor made outside the trace (a plain tensor attribute of a module).
        return meta if meta is not None else self.register(tensor, "constant")

    def pack_saved(self, tensor: torch.Tensor) -> torch.Tensor:
        """saved_tensors_hooks' pack hook: note what autograd keeps for the backward pass."""
        meta = self._metas.get(id(tensor))
        if meta is None:  # not seen by the recorder: a view made above the dispatch mode?
            base = self._metas.get(id(tensor._base)) if tensor._base is not None else None
            meta = self.register(tensor, "constant", storage=base.storage if base is not None else None)
        self.saved.append(meta)
        return tensor

    # -- modules -------------------------------------------------------------------------

    def enter(self, path: str, type_name: str, args) -> None:
        """A call of the module at `path` begins (the pre hook)."""
        self._stack.append((self.open_call(path, type_name, len(self.ops)), args))

    def open_call(self, path: str, type_name: str, first_op: int) -> ModuleCall:
        """Record a call of the module at `path` (its stack entry is the caller's to make)."""
        count = self._call_counts.get(path, 0)
        self._call_counts[path] = count + 1
        call = ModuleCall(path, type_name, count, len(self.calls), first_op)
        self.calls.append(call)
        return call

    def start_root(self, model: torch.nn.Module, args) -> None:
        """Without hooks: the model's call, for errors; its ops get calls of their own."""
        call = ModuleCall("", _type_name(model), 0, -1, 0)
        self._stack.append((call, args))

    def post_hook(self, module, args, output):
        call, _ = self._stack.pop()
        if isinstance(output, torch.Tensor):
            self.call_outputs[call.index] = (self.lookup(output),)
        else:
            self.call_outputs[call.index] = tuple(map(self.lookup, tensors_in(output)))

    def describe_failure(self, exc: Exception, input_shapes) -> str:
        reason = _reason(exc)
        if not self._stack:
            return f"the model's forward failed on input {_shapes_text(input_shapes)}: {reason}"
        call, args = self._stack[-1]
        shapes = tuple(tuple(a.shape) for a in tensors_in(args))
        where = self.inner_module() or f"the model ({call.type})"
        return f"the forward pass failed in {where} on input {_shapes_text(shapes)}: {reason}"

    def inner_module(self) -> str:
        """The submodule call running now, "module 'layer1.0' (BasicBlock)"; "" in the model's own code."""
        call = self._stack[-1][0] if self._stack else None
        return f"module '{call.path}' ({call.type})" if call is not None and call.path else ""

    # -- operators -----------------------------------------------------------------------

    def answer_directly(self, module: torch.nn.Module, x, shortcut: Shortcut) -> torch.Tensor | None:
        """The module's output, its operator recorded as its forward would have reached it;
        None where the shortcut does not know the call (the forward runs instead)."""
        if not may_shortcut(x):
            return None
        call = shortcut(module, x)
        if call is None:
            return None
        func, args = call
        out = self._dispatched(func, args)
        self.answered_directly += 1
        return out[0] if isinstance(out, tuple) else out

    def answer_call(self, func, args: tuple):
        """What `func(*args)` returns, recorded as the dispatcher would hand it to this mode,
        without the round trip through it; None where the call may not skip the dispatcher
        (as `may_shortcut` says of its first argument)."""
        return self._dispatched(func, args) if may_shortcut(args[0]) else None

    def _dispatched(self, func, args: tuple):
        with torch._C._DisableTorchDispatch():  # as inside a dispatch: its tensors made untraced
            return self.__torch_dispatch__(func, (), args, {})

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        info = _OP_INFO.get(func)
        if info is None:
            info = _OP_INFO[func] = _OpInfo.of(func)
        if info.name in _RUNTIME_CHECKS:
            return func(*args, **kwargs)
        tensors = info.slots.tensors(args, kwargs)
        if info.same_dtype and tensors:
            dtype = tensors[0].dtype
            for tensor in tensors:  # a loop, not a set: most operators of a trace come here
                if tensor.dtype != dtype:
                    dtypes = ", ".join(sorted({str(t.dtype).removeprefix("torch.") for t in tensors}))
                    raise RuntimeError(f"{info.name} expects its tensors in one dtype, got {dtypes}")
        out = None
        if info.shape is not None and not self._real:
            out = _answer_from_formula(func, info, args, kwargs, tensors)
        if out is None:
            out = func(*args, **kwargs)
        self._record(info, args, kwargs, tensors, out)
        return out

    def _record(self, info: _OpInfo, args, kwargs, tensors: list[torch.Tensor], out) -> None:
        inputs = tuple(map(self.lookup, tensors))
        # Before the outputs: an in-place op's output is a new version of its input tensor.
        node_args, node_kwargs = info.slots.map(self.lookup, args, kwargs)
        # In-place ops and views live in their first input's storage.
        storage = inputs[0].storage if (info.writes_input or info.is_view) and inputs else None
        if isinstance(out, torch.Tensor):
            outputs = (self.register(out, "activation", storage=storage),)
        else:
            outputs = tuple([self.register(t, "activation", storage=storage) for t in tensors_in(out)])
        module = self._stack[-1][0] if self._stack else None
        if self._by_parameters is not None and module is not None and not module.path:
            module = self._owner_call(inputs, module)
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
            )
        )

    def _owner_call(self, inputs: tuple[TensorMeta, ...], root: ModuleCall) -> ModuleCall:
        """Without hooks: the module whose parameter or buffer the op reads first (one call
        for a run of its ops); else the model itself, one row per op (its output counted, as
        nothing says which ops a parameter-free module such as ReLU grouped)."""
        owner = next((t.name.rpartition(".")[0] for t in inputs if t.kind in ("parameter", "buffer")), "")
        last = self.ops[-1].module if self.ops else None
        if owner and last is not None and last.path == owner:
            return last
        count = self._call_counts.get(owner, 0) if owner else 0
        if owner:
            self._call_counts[owner] = count + 1
        kind = self._by_parameters.get(owner, "") if owner else root.type
        call = ModuleCall(owner, kind, count, len(self.calls), len(self.ops))
        self.calls.append(call)
        return call


def _unpack_saved(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


class _ForwardThenBackward(torch.nn.Module):
    """The model's forward, then the backward pass from its output, in one call: a block
    that activation checkpointing recomputes in the backward must still run on the
    stand-ins that `functional_call` puts in place for the call only."""

    def __init__(self, model: torch.nn.Module, recorder: _TrainingRecorder) -> None:
        super().__init__()
        self.model = model
        self.recorder = recorder

    def forward(self, *args, **kwargs):
        output = self.model(*args, **kwargs)
        self.recorder.run_backward(output)
        return output


# The key of autograd node metadata naming the forward op (its index) that made the node.
_ORIGIN = "archprof_origin"


class _TrainingRecorder(_Recorder):
    """The recorder of a training step: the forward as `_Recorder` records it, then the
    backward pass (`run_backward`) into `backward_ops`, each op attributed to a forward op.

    The autograd node an op creates exists only once the op has returned through the
    autograd layer, above this dispatch mode: so each op's outputs are tagged with its index
    (their `grad_fn.metadata`) when the next op is recorded. In the backward pass, an op
    belongs to the forward op of the autograd node running it
    (`torch._C._current_autograd_node`); an op of a node no forward op made (AccumulateGrad,
    which moves a gradient into `.grad`) to the forward op of the op before it.

    Activation checkpointing runs forward ops again inside the backward, with grad enabled
    (backward ops run without): those are recorded as "recompute". Their module calls
    fire the forward hooks again: each is taken for the same module's forward call (its
    first, then its next on a module recomputed again), and its ops, in order, for that
    call's own ops, in order (the same code runs again). Their outputs are tagged as the
    forward's are: reentrant checkpointing runs a backward pass through them."""

    def __init__(self, real: bool = False, module_types: dict[str, str] | None = None) -> None:
        super().__init__(real, module_types)
        self.backward_ops: list[OpNode] = []
        self._phase = "forward"
        self._last_made: tuple[list[torch.Tensor], int] = ([], -1)  # the forward op whose outputs await a tag
        self._forward_ops: list[OpNode] = []
        self._origin = -1  # the forward op of the backward op recorded last
        self._own_ops: dict[int, list[OpNode]] = {}  # forward call index -> the ops it ran itself
        self._replayed: dict[int, int] = {}  # recomputed call index -> its ops recorded so far
        self._calls_of: dict[str, list[ModuleCall]] = {}  # module path -> its forward calls
        self._recomputed_calls: dict[str, int] = {}  # module path -> its calls recomputed so far

    def run_backward(self, output) -> None:
        """The backward pass from the floating outputs that require grad, with gradients of ones."""
        self._tag_last_made()
        self._forward_ops = self.ops
        self.ops = self.backward_ops  # _record appends to self.ops
        self._phase = "backward"
        self._by_parameters = None  # backward ops are attributed through their forward op
        self._origin = len(self._forward_ops) - 1
        for op in self._forward_ops:
            self._own_ops.setdefault(op.module.index, []).append(op)
        for call in self.calls:
            self._calls_of.setdefault(call.path, []).append(call)
        roots = [t for t in tensors_in(output) if t.is_floating_point() and t.requires_grad]
        if roots:
            with torch.no_grad():  # not a recomputed forward op
                seeds = [torch.ones_like(t) for t in roots]
            torch.autograd.backward(roots, seeds)
        self.ops = self._forward_ops

    def _record(self, info: _OpInfo, args, kwargs, tensors: list[torch.Tensor], out) -> None:
        if self._phase == "forward":
            self._tag_last_made()
            super()._record(info, args, kwargs, tensors, out)
            self._last_made = (tensors_in(out), len(self.ops) - 1)
            return
        self._tag_last_made()  # before reading the node running: it may be the one just tagged
        phase, origin = self._backward_origin()
        super()._record(info, args, kwargs, tensors, out)
        module = self._forward_ops[origin].module if origin >= 0 else None
        self.ops[-1] = dataclasses.replace(self.ops[-1], module=module, phase=phase, origin=origin)
        if phase == "recompute":  # reentrant checkpointing runs a backward through these
            self._last_made = (tensors_in(out), origin)

    def _tag_last_made(self) -> None:
        made, index = self._last_made
        for tensor in made:
            node = tensor.grad_fn
            if node is not None and _ORIGIN not in node.metadata:
                node.metadata[_ORIGIN] = index
        self._last_made = ([], -1)

    def _backward_origin(self) -> tuple[str, int]:
        """The phase of the backward-pass op being recorded, and its forward op."""
        if torch.is_grad_enabled():  # a checkpointed forward op run again
            if self._stack:
                call = self._stack[-1][0]
                done = self._replayed.get(call.index, 0)
                self._replayed[call.index] = done + 1
                own = self._own_ops.get(call.index)
                if own:
                    return "recompute", own[min(done, len(own) - 1)].index
            return "recompute", self._node_origin()
        return "backward", self._node_origin()

    def _node_origin(self) -> int:
        node = torch._C._current_autograd_node()
        origin = node.metadata.get(_ORIGIN) if node is not None else None
        if origin is not None:
            self._origin = origin
        return self._origin

    def enter(self, path: str, type_name: str, args) -> None:
        if self._phase == "forward":
            super().enter(path, type_name, args)
        else:
            self._stack.append((self._recomputed_call(path, type_name), ()))

    def post_hook(self, module, args, output):
        if self._phase == "forward":
            return super().post_hook(module, args, output)
        self._stack.pop()
        return None

    def _recomputed_call(self, path: str, type_name: str) -> ModuleCall:
        calls = self._calls_of.get(path)
        if not calls:  # not called by the forward: its ops go by their autograd node
            return ModuleCall(path, type_name, -1, -1, 0)
        count = self._recomputed_calls.get(path, 0)
        self._recomputed_calls[path] = count + 1
        call = calls[count % len(calls)]
        self._replayed[call.index] = 0
        return call

    def describe_failure(self, exc: Exception, input_shapes) -> str:
        if self._phase == "forward":
            return super().describe_failure(exc, input_shapes)
        call = self._forward_ops[self._origin].module if self._origin >= 0 else None
        where = f" in the gradient of module '{call.path}' ({call.type})" if call is not None and call.path else ""
        return f"the backward pass failed{where}: {_reason(exc)}"


def _answer_from_formula(func, info: _OpInfo, args, kwargs, tensors: list[torch.Tensor]) -> Any:
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
    destination. A formula's Refused is final: the real kernel refuses the call even where
    the meta kernel would answer it."""
    # Plain loops below, not any() and all() over generators: this runs for every operator.
    if not tensors or not tensors[0].is_floating_point():
        return None
    first = tensors[0]
    dtype = first.dtype
    contiguous = True
    for tensor in tensors:
        if tensor.dtype != dtype or not tensor.is_meta:
            return None  # a CPU tensor the forward made itself (a position table) is computed for real
        contiguous = contiguous and tensor.is_contiguous()
    as_input = not info.writes_input and info.layout is Layout.AS_INPUT
    follows_layout = as_input and not contiguous
    if as_input and not info.elementwise:
        if follows_layout:
            return None
        for tensor in tensors:
            if _taken_for_channels_last(tensor):
                return None
    if follows_layout and dtype in _HALF:
        # Half-precision meta kernels lay a non-contiguous elementwise output out by a rule of
        # their own (an expanded times a transposed 2x2: (2, 1); TensorIterator, float32's
        # meta kernel and the CPU say (1, 2)): the trace records what the meta kernel says.
        return None
    shape_args, shape_kwargs = info.slots.map(_shape, args, kwargs)
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
        return args[0] if shapes[0] == tuple(args[0].shape) else None
    if follows_layout:  # an elementwise op lays its output out as its inputs are
        strides = elementwise_strides(shapes[0], [(tuple(t.shape), t.stride()) for t in tensors])
        return torch.empty_strided(shapes[0], strides, dtype=dtype, device=_META)
    outputs = [_empty(shape, dtype) for shape in shapes]
    if info.layout is Layout.SUGGESTED and _taken_for_channels_last(first):
        outputs[0] = outputs[0].contiguous(memory_format=_CHANNELS_LAST[first.dim()])
    return outputs[0] if info.returns == 1 else tuple(outputs)


_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def _taken_for_channels_last(tensor: torch.Tensor) -> bool:
    """`suggests_channels_last`, at once False for a contiguous tensor without a dimension of one."""
    shape = tensor.shape
    if len(shape) not in (4, 5) or (1 not in shape[1:] and tensor.is_contiguous()):
        return False
    return suggests_channels_last(tuple(shape), tensor.stride())


@dataclass(frozen=True, slots=True)
class _OpInfo:
    """What the recorder needs of an operator's schema, read once per operator."""

    name: str  # "aten.convolution"
    slots: TensorSlots
    returns: int
    writes_input: bool  # in place: returns its first input, written over
    is_view: bool  # returns an alias of an input without writing it
    # From the operator catalogue: its output-shape formula (the fast path) and whether
    # its real kernels refuse mixed dtypes.
    shape: Callable[..., Any] | None
    same_dtype: bool
    layout: Layout
    elementwise: bool  # pointwise: its output laid out as its inputs are

    @staticmethod
    def of(func) -> _OpInfo:
        returns = func._schema.returns
        alias = returns[0].alias_info if len(returns) == 1 else None
        operator = find_operator(func.overloadpacket)
        return _OpInfo(
            name=str(func.overloadpacket),
            slots=TensorSlots.of(func._schema),
            returns=len(returns),
            writes_input=alias is not None and alias.is_write,
            is_view=(alias is not None and not alias.is_write) or str(func.overloadpacket) in _UNANNOTATED_VIEWS,
            shape=operator.shape if operator is not None else None,
            same_dtype=operator is not None and operator.same_dtype,
            layout=operator.layout if operator is not None else Layout.AS_INPUT,
            elementwise=operator is not None and operator.family is Family.POINTWISE,
        )


_HALF = (torch.float16, torch.bfloat16)

# Per operator overload, read once per process: the schema and the catalogue do not change.
_OP_INFO: dict[Any, _OpInfo] = {}


def _empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """An empty contiguous meta tensor of `shape` (or `(shape, dtype)`, the dtype maybe COMPUTATION)."""
    if len(shape) == 2 and not isinstance(shape[1], int):
        shape, dtype = shape[0], output_dtype(shape[1], dtype)
    return torch.empty(shape, dtype=dtype, device=_META)


_META = torch.device("meta")


def _shapes_text(shapes) -> str:
    return shapes_text(shapes) or "(no tensor)"
