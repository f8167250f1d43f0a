"""Run a model once on meta tensors and capture every aten operation it performs.

No weight and no activation is allocated: a model's parameters and buffers are replaced by
empty meta stand-ins in its tables for the call only (`model_state.swap_in`, then `put_back`), so the
caller's model is never touched. Each operation is attributed to the innermost module call
running when it ran.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch

from archprof.errors import (
    ArchprofError,
    failure_reason,
    first_line,
    is_meta_limitation,
    short_reason,
    warn,
)
from archprof.graph import EngineNotes, Graph, OpNode
from archprof.kernels import DeviceKernels
from archprof.load.inputs import check_fits
from archprof.native_memory import MOST_FILE_MEMORY, native_memory_bounded
from archprof.random_state import real_input
from archprof.recursion import recursion_room
from archprof.structure import tensors_in
from archprof.torch_patches import PATCHING_TORCH
from archprof.tracing.autocast_regions import autocast_regions, cpu_region_refused
from archprof.tracing.call_words import input_shapes_text
from archprof.tracing.model_state import Attributes, modes_put_back, put_back, set_mode, swap_in, tables
from archprof.tracing.model_tensors import (
    buffer_minima,
    dtypes_after_cast,
    first_floating_dtype,
    given_gradients,
    meta_copy,
    meta_stand_ins,
    own_tensors,
    packed_parameters,
    stands_for_itself,
)
from archprof.tracing.module_calls import attach_hooks, model_called
from archprof.tracing.module_tree import canonical_paths, owners, type_name, walked
from archprof.tracing.parameter_attribution import ParameterOwners
from archprof.tracing.recorder import BeyondBounds, Recorder
from archprof.tracing.replay import Replays
from archprof.tracing.script_calls import ScriptCode
from archprof.tracing.script_copies import saved_and_loaded
from archprof.tracing.script_loops import counted_loop_steps
from archprof.tracing.training_recorder import TrainingRecorder
from archprof.units import human_bytes, tensor_text


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
    most_ops: int | None = None,
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
    from the outputs that require grad (gradients of ones), on meta too, into `Graph.backward_ops`
    (`archprof.tracing.training_recorder.TrainingRecorder` says how each is attributed).

    `most_ops`, where given, bounds the operators the forward may run (ArchprofError past it):
    a model file's code is data, and a loop in it must not run for hours.

    `real` runs the model as it is, with its own weights, on real inputs on its device (the
    CPU fallback: the caller hands over a module it may run, in the dtype it wants); ops
    are recorded the same way, from real tensors. A forward that fails on meta for want of
    data (`.item()`, an op without a meta kernel) raises MetaUnsupported.

    The caller's model is as it was afterwards: its weights, buffers, modes and gradients,
    and, unless `owned` says the model is archprof's own (built by it, or a copy), what its
    forward changed of the modules' plain attributes (`model_state.Attributes`: a call counter, a
    cache filled on the first call, now holding a meta tensor; a list appended to; a
    submodule made on the first call).

    A TorchScript module runs no Python hooks: a copy of it saved and loaded again runs
    under torch's profiler, and its ops are attributed to the module calls their TorchScript
    call stacks name (`archprof.tracing.script_calls`); where a stack cannot be read, to the module
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
    with PATCHING_TORCH:  # one thread at a time (`archprof.torch_patches`)
        once = {"dtype": dtype, "training": training, "real": real, "most_ops": most_ops}
        graph, grew = _traced(model, input_shapes, owned, once)
        if grew:  # once: a forward that registers something on every call is taken as it is then
            # A real trace runs on archprof's own copy, which its first call has grown already;
            # on meta, the caller's model was put back: a meta copy is grown by one forward.
            grown = model if real else _lazy_layers_initialised(model, _trace_inputs(input_shapes), real)
            owned = owned or not real
            graph, _ = _traced(grown, input_shapes, owned, once)
    return graph


class _FailedBelowAutograd(Exception):
    """A forward run below autograd's keys raised: traced again above them (`_traced`)."""


def _traced(model: torch.nn.Module, input_shapes, owned: bool, once: dict) -> tuple[Graph, bool]:
    """`_traced_once`, an inference trace on meta below autograd's keys; one whose forward
    raises there traced again with them, as eager PyTorch runs it (a forward that asks autograd
    for a gradient finds no graph below them), its error, if it raises again, the one said."""
    if not (once["real"] or once["training"]):
        try:
            return _traced_once(model, input_shapes, owned=owned, below_autograd=True, **once)
        except _FailedBelowAutograd:
            pass
    return _traced_once(model, input_shapes, owned=owned, below_autograd=False, **once)


# Python frames a level of modules adds under the trace, over a plain forward's four (measured:
# about six for a module's wrapped forward and hooks, and two for block copying's comparison of
# its subtree), with room to spare; the real trace's copy of the model takes about five.
_FRAMES_PER_LEVEL = 6


def room_to_trace(depth: int):
    """Room on the stack for tracing a model nested `depth` levels deep (`recursion_room`): each
    level takes more frames under the trace, and in the copy a real trace makes, than in a plain
    forward, so that a model nested as deep as PyTorch's own forward runs it is analysed."""
    return recursion_room(sys.getrecursionlimit() + _FRAMES_PER_LEVEL * depth)


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
    most_ops: int | None,
    below_autograd: bool,
) -> tuple[Graph, bool]:
    """`trace`'s graph of one forward, and whether that forward registered a submodule or a
    parameter on one of the model's modules. `below_autograd`: the forward runs below
    autograd's keys, as in inference mode (an inference trace on meta, its modules called
    through their hooks), where no autograd kernel splits a composite operator into the ones it
    calls: each reaches the recorder whole, which runs it as a CPU's autograd kernel would
    (`OpInfo.decomposed`). That spares registering those kernels on the dispatcher for the
    trace and taking them back (`DeviceKernels`), 85 of them: half of what an analysis costs
    where the model is a layer or two."""
    by_parameters = isinstance(model, torch.jit.ScriptModule) or (
        getattr(model, "_archprof_attribution", "hooks") == "parameters"
    )
    # Not a ScriptModule's, or one attributed by its parameters: its ops are attributed by their call stacks.
    below_autograd = below_autograd and not by_parameters
    # A ScriptModule's code files, whose lines its call stacks name: given where `model` is now
    # archprof's copy of it, saved and loaded again, not yet run.
    script_code = None
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
    tree = walked(model)
    if _lazy_layers_waiting(tree.classes, tree.modules):
        model = _lazy_layers_initialised(model, specs, real)
        tree = walked(model)
    modules, module_types, named = tree.modules, tree.types, tree.tensors
    code = ScriptCode(script_code, modules, canonical_paths(modules)) if script_code is not None else None
    # After any lazy initialisation, which works on a meta copy (archprof's own).
    attributes = Attributes.of(modules, tree.attributes) if not owned and model is original else None
    tensors = [t for _, t, _ in named]
    shapes = [s.shape for s in specs]
    recorder_type = TrainingRecorder if training else Recorder
    recorder = recorder_type(real=real, most_ops=most_ops)
    if real or isinstance(model, torch.jit.ScriptModule) or stands_for_itself(tensors, dtype):
        # Its own tensors: on meta already (a ScriptModule's put there by `_script_copy`), or real ones.
        stand_ins, parameters = own_tensors(named, recorder)
    else:
        # Each in the dtype `model.to(dtype)` leaves it (a module may keep one as it is).
        cast = dtypes_after_cast(model, modules, dtype) if dtype is not None else {}
        stand_ins, parameters = meta_stand_ins(named, dtype, recorder, cast)
    if real:  # quantized layers, which only a real trace can run
        parameters += packed_parameters(modules)
    input_dtype = dtype or first_floating_dtype(tensors)
    inputs, args, kwargs = _inputs(specs, input_dtype, _input_device(tensors, real), real)
    input_metas = [recorder.register(x, "input") for x in inputs]

    training_modes = tree.modes
    if model.training != training:  # as `in_traced_mode`, each flag written directly
        set_mode(model, training_modes, tree.classes, training)
    # A training step on the model's own tensors writes their .grad: the caller's are put
    # back afterwards (and a later trace starts from none, as a step after zero_grad does).
    own_gradients = {t: t.grad for _, t, is_buffer in named if not is_buffer} if training and stand_ins is None else {}
    for parameter in own_gradients:
        parameter.grad = None
    # Module calls answered by `archprof.tracing.shortcuts`, and batch norms and linear layers
    # handed straight to the recorder: on meta tensors, in inference (a training step's
    # autograd must see the forward's own torch calls).
    shortcuts = not (real or training)
    kernels = DeviceKernels(answering=recorder.answering if shortcuts else None, below_autograd=below_autograd)
    backward_ran = True  # no backward pass asked for, or one that ran
    try:
        # Those entered in every trace by a `with` of their own: ExitStack's entry and exit of one
        # are a few Python calls (`room_to_trace`'s depth: one torch's walks reach, from `walked`).
        with room_to_trace(tree.depth), _registrations_noted() as registered_on, ExitStack() as stack:
            if not by_parameters:
                replays = None
                if shortcuts and not tree.tied:  # a copy renames a block's parameters: untied ones
                    replays = Replays(modules, tree.own_forwards, recorder, kernels.chosen)
                for handle in attach_hooks(
                    modules, tree.attributes, module_types, tree.paths, recorder, shortcuts, replays
                ):
                    stack.callback(handle.remove)
            if training:
                stack.enter_context(torch.enable_grad())
                # The caller's anomaly mode adds a NaN check after each backward node (a
                # real step's too, but a debugging aid, not the step's cost).
                stack.enter_context(torch.autograd.set_detect_anomaly(False))
                stack.enter_context(recorder.saved_tensors_hooks())
                stack.enter_context(recorder.checkpoints_noted())
            else:
                stack.enter_context(torch.no_grad())
            stack.enter_context(recorder.random_states_noted())  # checkpointing takes them in inference too
            if real:
                stack.enter_context(native_attention_off())
            else:  # a CPU autocast region runs for real (NotImplementedError); another device's is noted
                stack.enter_context(autocast_regions(recorder.note_autocast))
            stack.enter_context(recorder)
            stack.enter_context(kernels)  # on meta, composite calls would not pick the CPU's kernels
            if script_code is not None and most_ops is not None:  # a file's loops, lists and strings reach no operator
                stack.enter_context(counted_loop_steps(model, recorder, most_ops))
                stack.enter_context(native_memory_bounded(MOST_FILE_MEMORY, _memory_refused))
            if by_parameters:
                attribution = ParameterOwners(module_types, owners(modules, stand_ins, recorder))
                recorder.start_root(type_name(model), args, attribution)
            if stand_ins is not None or attributes is not None:
                # The parameter, buffer and submodule tables as they were: stand-ins swapped
                # back, a buffer or a submodule the caller's forward made on its first call gone.
                stack.callback(put_back, tables(tree.attributes))
            if stand_ins is not None:
                swap_in(tree.attributes, stand_ins)
            if below_autograd:
                stack.enter_context(torch._C._AutoDispatchBelowAutograd())
            recorder.forward_starts(below_autograd)
            output = model_called(model, args, kwargs, recorder, by_parameters, code)
            if recorder.grad_mode_met:  # `torch.enable_grad()` in the forward: autograd's graph wanted
                raise _FailedBelowAutograd
            if recorder.cpu_autocast is not None:  # a region the forward's own `try` caught the refusal of
                raise cpu_region_refused(recorder.cpu_autocast)
            if training:  # the stand-ins still in place: checkpointing recomputes blocks on them
                backward_ran = recorder.run_backward(output)
                recorder.engine.given_gradients = given_gradients(named, stand_ins)
            # Before the caller's attributes are put back, which lets go of what the forward kept there.
            kept = _kept_by_the_model(modules, recorder.still_alive(), output, training)
    except BeyondBounds as exc:  # its first line: torch.fx adds the graph's node to the message
        raise BeyondBounds(first_line(exc, bare=True)) from None
    except ArchprofError:
        raise
    except Exception as raised:  # the user's forward failed: say where and on what
        if isinstance(recorder.failure, BeyondBounds):  # passed on by TorchScript's interpreter
            raise BeyondBounds(first_line(recorder.failure, bare=True)) from None
        if below_autograd:
            raise _FailedBelowAutograd from raised
        # A ScriptModule's interpreter (which has no try/except to catch one with) hands an
        # operator's exception on bare: the one the recorder saw is the reason.
        script_failure = isinstance(model, torch.jit.ScriptModule) and recorder.failure is not None
        exc = recorder.failure if script_failure else raised
        hint = _one_value_per_channel_hint(exc, training)
        message = recorder.describe_failure(exc, shapes) + (hint or _input_dtype_hint(exc, specs, input_dtype))
        if not real and is_meta_limitation(exc):
            raise MetaUnsupported(message, short_reason(exc)) from exc
        raise (NeedsTwoSamples if hint else ArchprofError)(message) from exc
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit and kin: the caller's process must go on
        raise forward_exit_error(type_name(model), exc, recorder.inner_module(exc)) from None
    finally:
        modes_put_back(training_modes)
        for parameter, gradient in own_gradients.items():
            parameter.grad = gradient
        if attributes is not None:
            attributes.put_back()
        recorder.stop_watching()  # last: putting the attributes back let go of what they kept

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
        aliases=tree.aliases,
        training=training,
        saved=recorder.saved,
        kernels=dict(kernels.chosen),
        backward_ops=recorder.backward_ops if training else [],
        engine=recorder.engine if training else EngineNotes(random_states=recorder.random_states.noted),
        released=recorder.releases(kept),
        kept_by_the_model=kept,
        # A trace on the model's own tensors without a real forward: all on meta, no values.
        buffer_minima=buffer_minima(named, recorder) if real or stand_ins is not None else {},
        state_storages=recorder.state_memory.storages,
    )
    if recorder.ignored_autocast is not None:
        _warn_autocast_ignored(*recorder.ignored_autocast)
    if training and not backward_ran:
        warn(
            "no output of the forward requires grad (none is computed from a trainable parameter, or all are under"
            " no_grad or inference_mode): the training step has no backward pass, where a real loss.backward() raises"
        )
    return graph, _any_of(registered_on, modules)


def _memory_refused(most: int) -> BeyondBounds:
    return BeyondBounds(
        f"the forward took more than {human_bytes(most)} of memory (its lists and strings, its tensors on the CPU,"
        " the trace's records), more than a model file's may: a list or string that grows without end?"
    )


def _warn_autocast_ignored(device: str, dtype: torch.dtype) -> None:
    """Say that an autocast region of another device than the CPU was traced in its tensors'
    dtypes (autocast acts on a device's own tensors, never on meta ones): its convolutions,
    matrix products and float32 operators, and the activation memory after them, are not
    the region's."""
    warn(
        f'the forward runs in torch.autocast("{device}", dtype={dtype}), which the meta device ignores: that region'
        f" was traced in its tensors' own dtypes (its activations and peak memory there are not those a {device}"
        f" computes in {str(dtype).removeprefix('torch.')})"
    )


_LazyModule = torch.nn.modules.lazy.LazyModuleMixin


def _lazy_layers_waiting(classes: set[type], modules: list[tuple[str, torch.nn.Module]]) -> bool:
    """Whether a lazy layer of `modules` has not made its parameters yet, asked of each module
    only where one of their `classes` is lazy (nearly never)."""
    if not any(issubclass(cls, _LazyModule) for cls in classes):
        return False
    return any(isinstance(module, _LazyModule) and module.has_uninitialized_params() for _, module in modules)


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


@contextmanager
def native_attention_off() -> Iterator[None]:
    """nn.MultiheadAttention and nn.TransformerEncoderLayer without their inference fast
    paths (`_native_multi_head_attention`, `_transformer_encoder_layer_fwd`, which a meta
    trace in inference records): FlopCounterMode has no formula for either, and counts the
    same products on their composite roads (`profile`'s cross-check); a real trace keeps its
    operators apart there too, as FlopCounterMode sees them."""
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
        model = meta_copy(model)
    tensors = [*model.parameters(), *model.buffers()]
    _, args, kwargs = _inputs(specs, first_floating_dtype(tensors), _input_device(tensors, real), real)
    try:
        with torch.no_grad(), forward_exits_as_errors(type_name(model)):
            model(*args, **kwargs)
    except ArchprofError:
        raise
    except Exception as exc:
        shapes = input_shapes_text([s.shape for s in specs])
        message = f"initialising the lazy layers by a forward on input {shapes} failed: {failure_reason(exc)}"
        if not real and is_meta_limitation(exc):
            raise MetaUnsupported(message, short_reason(exc)) from exc
        raise ArchprofError(message) from exc
    return model


def _kept_by_the_model(
    modules: list[tuple[str, torch.nn.Module]], alive: list[tuple[torch.Tensor, int]], output, training: bool
) -> set[int]:
    """The storages of the tensors alive after the forward that the model's code keeps, which
    eager PyTorch holds until the next call replaces them. In inference, every one but the
    output's: a module's cache for its next call (timm's LeViT and TinyViT attention biases),
    a forward hook's dict of features, a list at module level. (What a decomposition's first
    import of dynamo would keep in its frames the recorder has collected already.) In a
    training step the output's autograd graph, alive until the output dies, holds what its
    nodes keep (a constant saved for a gradient, a checkpoint's inputs), which a step lets go
    of with its loss: only what a module's attributes hold, or a dict, list or tuple there."""
    returned = {id(tensor) for tensor in tensors_in(output)}
    # Nor the base a returned view keeps alive (its `_base`): the output's storage, the caller's.
    returned_storages = {storage for tensor, storage in alive if id(tensor) in returned}
    storages = {id(tensor): storage for tensor, storage in alive if storage not in returned_storages}
    if not training or not storages:  # nearly always none: nothing but the output outlives the forward
        return set(storages.values())
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


# The words of a kernel refusing tensors of two dtypes: the recorder's own
# (`meta_outputs.check_one_dtype`), a CPU convolution's, a matrix product's, an elementwise op's.
_MIXED_DTYPES = re.compile(r"in one dtype|should be the same|same dtype|expected scalar type")


def _input_dtype_hint(exc: Exception, specs: Sequence[TraceInput], model_dtype: torch.dtype | None) -> str:
    """What fixes an input given in another floating dtype than the model's ("3x224x224:float16"
    for a float32 model), which its first layer refuses: the model cast to it as well."""
    given = [spec.dtype for spec in specs if spec.dtype is not None and spec.dtype.is_floating_point]
    others = [dtype for dtype in given if dtype != model_dtype]
    if model_dtype is None or not others or not _MIXED_DTYPES.search(str(exc)):
        return ""
    name, model = (str(dtype).removeprefix("torch.") for dtype in (others[0], model_dtype))
    return f"; the input is {name}, the model {model}: cast the model too (--dtype {name}; dtype='{name}' from Python)"


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
    return real_input(shape, dtype, device)


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
