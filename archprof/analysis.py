"""The analysis pipeline: a loaded model and its inputs, traced once, through every pass,
into a Report. The public entry points (`archprof.api`) and the commands that combine
analyses (profile, fit, compare, check, diff) build on it; nothing here imports them."""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

import torch

from archprof.collector import collector_paused
from archprof.errors import ArchprofError, check_flag, short_reason, shown, warn
from archprof.graph import Graph
from archprof.load import (
    DTYPES,
    InputsLike,
    InputSpec,
    LoadedModel,
    check_static_shapes,
    device_of,
    load_model,
    nested_hint,
    normalize_inputs,
    parse_input_size,
)
from archprof.meta import is_uninitialised
from archprof.passes.backward import backward_columns
from archprof.passes.flops import cost_columns
from archprof.passes.fold_bn import Folding, fold_batch_norms
from archprof.passes.layers import LayerGroup, group_layers, interface_columns
from archprof.passes.memory import memory_columns
from archprof.passes.optimizer_state import optimizer_state_copies
from archprof.passes.params import parameter_columns
from archprof.passes.receptive_field import receptive_field_columns
from archprof.random_state import REAL_TRACE_SEED, random_state_kept
from archprof.report import Report, layer_label
from archprof.report.columns import COLUMNS, TRAINING_COLUMNS
from archprof.text import counted
from archprof.torch_patches import PATCHING_TORCH
from archprof.tracing.module_tree import modules_from_a_stack, nesting_depth
from archprof.tracing.trace import MetaUnsupported, TraceInput, room_to_trace, trace
from archprof.units import checked_count, shape_text, shapes_text

ModelSpec = str | os.PathLike | torch.nn.Module | Callable[..., torch.nn.Module] | LoadedModel


def model_label(model: ModelSpec) -> str:
    """How an error names a model among several: its spec or path as given, a module's class,
    a factory's name."""
    if isinstance(model, str | os.PathLike):
        return os.fspath(model)
    if isinstance(model, LoadedModel):
        return model.name
    if isinstance(model, torch.nn.Module):
        return type(model).__name__
    return getattr(model, "__name__", type(model).__name__)


def checked_batch_and_dtype(batch: Any, dtype: Any) -> tuple[int | None, torch.dtype | None]:
    """The `batch` and `dtype` a public entry point was given, checked before any work:
    batch None or an int of at least 1 (not a bool, a float or a string), dtype None, a
    floating torch.dtype of DTYPES or its name ("float16", "torch.float16")."""
    if batch is not None:
        batch = checked_count("batch", batch, 1)
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in DTYPES.values()):
        return batch, dtype
    name = dtype.strip().lower().removeprefix("torch.") if isinstance(dtype, str) else None
    if name not in DTYPES:
        choices = ", ".join(DTYPES)
        raise ArchprofError(f"dtype must be one of {choices} (a torch.dtype or its name), got {shown(dtype)}")
    return batch, DTYPES[name]


def analyze(
    model: ModelSpec,
    input_size: Sequence[int] | str | None = None,
    batch: int | None = None,
    dtype: torch.dtype | str | None = None,
    training: bool = False,
    optimizer: str = "sgd",
    *,
    inputs: InputsLike | None = None,
    args: Mapping[str, Any] | None = None,
    weights: str | Path | None = None,
    trust_pickle: bool = False,
    fold_bn: bool = False,
) -> Report:
    """Analyse a model without running it for real.

    `model` is a built-in name (`archprof zoo`), a spec string (`'torchvision:resnet50'`,
    `'timm:convnext_tiny'`, `'package.module:factory'`, `'path/to/file.py:factory'`, a
    TorchScript file `'model.pt'`, an exported program `'model.pt2'`), a module (its
    weights are not copied, and it is left as it was: what its forward sets on its modules,
    a counter or a cache, is put back), a factory returning one (a function or class,
    called on the meta device with `args` as keyword arguments) or a LoadedModel.

    Inputs: `input_size` is one sample's shape, e.g. (3, 224, 224) or "3x224x224", for a
    model with one input. `inputs` gives several, or their dtypes, or keywords (not both):

        inputs=(3, 32, 32)                              one input, as input_size
        inputs=[(3, 224, 224), "10"]                    two positional inputs
        inputs=["77:int64"]                             token ids (a name of archprof.load.INPUT_DTYPES)
        inputs=((77,), torch.int64)                     the same, one (shape, dtype) pair
        inputs={"x": (3, 32, 32), "ids": ((77,), torch.int64)}   keyword inputs
        inputs=[InputSpec((77,), torch.int64, name="ids")]      archprof.load.InputSpec

    Shapes leave the batch out; `batch` (default 1, or an exported program's own) is put in
    front of every input. They default to the model's usual input (built-ins, timm and
    torchvision models, an exported program's example inputs).

    `batch` is an int of at least 1 (a string such as "2" is refused: the CLI parses its
    own). `dtype` (torch.float32, float16, bfloat16 or float64, or its name: "float16",
    "torch.float16") casts floating parameters and the inputs without a dtype of their own;
    None keeps the model's own (a built-in's is torch's default dtype, float32 unless
    `torch.set_default_dtype` changed it, as for any model built then). `weights`: a checkpoint (state dict,
    loaded with weights_only=True) for a built-in or a factory, checked against the model's
    parameter names and shapes; the figures do not depend on it. `trust_pickle=True` lets
    a file that needs code to unpickle (a whole pickled module) load.

    `training` analyses one training step: a training forward (train mode, what autograd
    saves for backward), filling the training memory estimate with the state of `optimizer`
    (one of `archprof.optimizers.OPTIMIZERS`: sgd, momentum, adam, adamw, rmsprop, ...; any
    but the default sgd is refused without `training`), and its backward pass, traced on meta too, filling
    `archprof.report.columns.TRAINING_COLUMNS` (gradient MACs per row, input and weight gradients
    apart, forward ops recomputed by checkpointing) and `totals.training_flops`; without
    it, the memory figures are those of inference and there are no training columns.

    A forward that cannot run on the meta device (it reads tensor values: `.item()`,
    data-dependent control flow; an op without a meta kernel) is run for real on the CPU
    instead, with random weights for a model archprof built and with its own for a module
    you pass (on a copy: yours is not changed): an ArchprofWarning says so, and
    `Report.traced_on` is "cpu". A forward that raises SystemExit (or another
    BaseException but KeyboardInterrupt) raises ArchprofError instead.

    `fold_bn=True` gives the inference view with every BatchNorm that directly follows a
    convolution or linear layer folded into it (`archprof.passes.fold_bn`): its parameters,
    buffers and FLOPs go, the layer gains a bias if it had none. `Report.batch_norm_folding`
    lists which folded and which stayed, with the reason (an ArchprofWarning names those).

    Example (torchvision's ResNet-50 has 25,557,032 parameters and 4.09 G multiply-adds at
    224x224, its usual input):

        >>> import archprof
        >>> report = archprof.analyze("resnet50")
        >>> report.totals.param_count, report.totals.macs
        (25557032, 4089184256)
        >>> archprof.analyze("resnet50", batch=8).totals.macs == 8 * 4089184256
        True
    """
    batch, dtype = checked_batch_and_dtype(batch, dtype)
    check_optimizer(optimizer, training)
    loaded = load(model, args=args, weights=weights, trust_pickle=trust_pickle)
    analysed = analysis(loaded, input_size, batch, dtype, training, inputs=inputs, optimizer=optimizer, fold_bn=fold_bn)
    return analysed.report


def check_optimizer(optimizer: str, training: bool) -> None:
    """An unknown optimizer fails before any tracing; so does one but the default sgd (which
    goes unsaid) without a training step: an inference report has no optimizer state."""
    optimizer_state_copies(optimizer)
    if optimizer.lower() != "sgd" and training is False:  # a training flag that is no bool is refused later
        raise ArchprofError(
            f"optimizer {optimizer!r} applies to a training step: add --train (Python: training=True); an"
            " inference report has no optimizer state"
        )


def load(
    model: ModelSpec,
    args: Mapping[str, Any] | None = None,
    weights: str | Path | None = None,
    trust_pickle: bool = False,
) -> LoadedModel:
    """`model` loaded (`archprof.load.load_model`), or itself when it is loaded already."""
    if not isinstance(model, LoadedModel):
        return load_model(model, args=args, weights=weights, trust_pickle=trust_pickle)
    if args or weights is not None:
        raise ArchprofError("args and weights apply when a model is loaded: pass them to load_model")
    return model


@dataclass(frozen=True)
class Analysis:
    """A report with what it was made from: the loaded model, the traced inputs, the graph."""

    loaded: LoadedModel
    batch: int
    inputs: list[TraceInput]
    graph: Graph
    report: Report


def analysis(
    loaded: LoadedModel,
    input_size: Sequence[int] | str | None,
    batch: int | None,
    dtype: torch.dtype | None,
    training: bool = False,
    *,
    inputs: InputsLike | None = None,
    optimizer: str = "sgd",
    fold_bn: bool = False,
) -> Analysis:
    """Trace a loaded model at its inputs (as `analyze` describes) and build the report;
    with `fold_bn`, of the graph with its BatchNorms folded (`Analysis.graph` is that one)."""
    batch, dtype = checked_batch_and_dtype(batch, dtype)
    check_flag("training", training)
    check_flag("fold_bn", fold_bn)
    specs = _input_specs(loaded, input_size, inputs)
    if batch not in (None, 1) and not any(spec.batched for spec in specs):
        raise ArchprofError(
            f"batch {batch} applies to no input of {loaded.name}: each is taken whole (batched=False; an exported"
            " program's inputs that share no first size), so give the full shapes instead"
        )
    batch = batch if batch is not None else (loaded.batch or 1)
    traced = [TraceInput(spec.full_shape(batch), spec.dtype, spec.name) for spec in specs]
    check_static_shapes(loaded, traced)
    with collector_paused():
        try:
            graph, traced_on = trace_loaded(loaded, traced, dtype=dtype, training=training)
        except ArchprofError as exc:
            if input_size is not None or inputs is not None:  # the shape the caller gave, not the model's own
                hint = _layout_hint(loaded, specs, batch, dtype, training)
                exc.args = (f"{exc.args[0] if exc.args else exc}{hint}", *exc.args[1:])
            raise
        folding = None
        if fold_bn:
            graph, folding = folded_graph(graph)
        report = build_report(graph, loaded.name, optimizer=optimizer, traced_on=traced_on)
    report.batch_norm_folding = folding
    return Analysis(loaded, batch, traced, graph, report)


def folded_graph(graph: Graph) -> tuple[Graph, Folding]:
    """`fold_batch_norms`, with a warning naming the BatchNorms that could not fold (the
    first three; `Report.batch_norm_folding` has them all)."""
    graph, folding = fold_batch_norms(graph)
    if folding.kept:
        named = "; ".join(f"{layer_label(k.norm, k.norm_call)} ({k.reason})" for k in folding.kept[:3])
        more = f"; and {len(folding.kept) - 3} more" if len(folding.kept) > 3 else ""
        warn(f"{len(folding.kept)} BatchNorm(s) not folded: {named}{more}")
    return graph, folding


def _input_specs(loaded: LoadedModel, input_size, inputs) -> tuple[InputSpec, ...]:
    if input_size is not None and inputs is not None:
        raise ArchprofError("give input_size or inputs, not both")
    usual = loaded.default_inputs  # made anew at each read: read once
    if inputs is not None:
        specs = normalize_inputs(inputs)
    elif input_size is not None:
        specs = (InputSpec(_sample_shape(input_size)),)
    else:
        specs = usual
        if specs is None:
            raise ArchprofError(
                f"model '{loaded.name}' has no default input size: give one, e.g. --input 3x224x224"
                " (Python: input_size=(3, 224, 224))"  # the CLI first, as --trust-pickle's hint is worded
            )
    if usual is not None and len(specs) == 1 == len(usual) and len(specs[0].shape) != len(usual[0].shape):
        size, expected = specs[0].shape, usual[0].shape
        # One too many: most likely the batch, which the report's header shows in front.
        batch_hint = ": leave the batch out (--batch sets it; Python: batch=)" if len(size) == len(expected) + 1 else ""
        raise ArchprofError(
            f"input {shape_text(size)} has {counted(len(size), 'dimension')}; {loaded.name} takes {len(expected)}"
            f" (e.g. {shape_text(expected)}){batch_hint}"
        )
    return specs


def _layout_hint(loaded: LoadedModel, specs: Sequence[InputSpec], batch: int, dtype, training: bool) -> str:
    """What the one input given likely meant, where the forward failed on it: a shape with the
    batch put in (1x3x32x32 or 2x3x32x32 where the model's first convolution takes 3x32x32: that
    first size is the batch), or with the channels last (224x224x3 where it takes 3 channels),
    named only where the model traces at it (the forward may have failed for another reason,
    past the convolution); "" else."""
    first = _first_convolution(loaded.module) if len(specs) == 1 and specs[0].batched else None
    if first is None:
        return ""
    shape, (channels, dimensions) = specs[0].shape, first
    if len(shape) == dimensions + 1:  # the built-in's hint (`_input_specs`), in its words
        meant, batch_option = _channels_first(shape[1:], channels), ""
        if shape[0] != 1:  # the batch meant (1 is --batch's default: it goes unsaid)
            batch, batch_option = shape[0], f" --batch {shape[0]}"
        hint = (
            ": the --input shape leaves the batch out (--batch sets it; Python: batch=):"
            f" did you mean --input {shape_text(meant)}{batch_option}?"
        )
    elif len(shape) == dimensions and shape != _channels_first(shape, channels):
        meant = _channels_first(shape, channels)
        hint = f" (channels come first: {shape_text(meant)}?)"
    else:
        return ""
    meant_input = TraceInput((batch, *meant), specs[0].dtype, specs[0].name)
    return hint if _traces_at(loaded, meant_input, dtype, training) else ""


def _traces_at(loaded: LoadedModel, traced: TraceInput, dtype, training: bool) -> bool:
    """Whether the model traces at input `traced` (its warnings unsaid)."""
    with PATCHING_TORCH, warnings.catch_warnings():  # the filters are the process's: one thread at a time
        warnings.simplefilter("ignore")
        try:
            trace_loaded(loaded, [traced], dtype=dtype, training=training)
        except Exception:
            return False
    return True


def _first_convolution(module: torch.nn.Module) -> tuple[int, int] | None:
    """The input channels of the first convolution among the model's modules, and the
    dimensions of the sample it takes (3 for a Conv2d: channels, height, width); None where
    there is none. Read from its attributes: a TorchScript module's convolutions keep them too.
    Walked from a stack: the error this hints at may be that the tree is too deep, or holds a
    child whose name is no string, for `modules()` to walk."""
    for submodule, _ in modules_from_a_stack(module):
        channels, weight = getattr(submodule, "in_channels", None), getattr(submodule, "weight", None)
        if isinstance(weight, torch.Tensor) and not is_uninitialised(weight) and weight.dim() >= 3:
            return (channels, weight.dim() - 1) if isinstance(channels, int) and channels > 0 else None
    return None


def _channels_first(shape: tuple[int, ...], channels: int) -> tuple[int, ...]:
    """`shape` with its last size put first where that one is the channels and its first is not."""
    if len(shape) > 1 and shape[-1] == channels != shape[0]:
        return (shape[-1], *shape[:-1])
    return shape


def _sample_shape(input_size) -> tuple[int, ...]:
    """`input_size` as a shape: a sequence of ints (a NumPy array of them too), or the CLI's
    text ("3x224x224")."""
    if isinstance(input_size, str):
        if ":" in input_size or "=" in input_size:  # the CLI's --input text, which inputs= takes
            raise ArchprofError(
                f"input_size is a shape alone, got {input_size!r}: give a dtype or a name with inputs="
                f" (inputs=[{input_size!r}])"
            )
        return parse_input_size(input_size)
    if isinstance(input_size, torch.Tensor):  # an example input (or token ids), where its shape was meant
        raise ArchprofError(
            f"input_size must be a shape such as (3, 224, 224) or '3x224x224', got a tensor of shape"
            f" {shape_text(input_size.shape)}: give a shape (an example input's without the batch: x.shape[1:])"
        )
    if isinstance(input_size, (Mapping, Set, bytes)) or not hasattr(input_size, "__iter__"):  # a set has no order
        raise ArchprofError(f"input_size must be a shape such as (3, 224, 224) or '3x224x224', got {shown(input_size)}")
    shape = tuple(input_size)
    if len(shape) > 1 and all(isinstance(size, (tuple, list)) for size in shape):  # several shapes
        raise ArchprofError(
            f"input_size is one input's shape, got {len(shape)} shapes: give them as inputs={list(shape)!r}"
            f"{nested_hint(shape)}"
        )
    return shape


# The most operators a model file's forward (TorchScript, an exported program) may run, its
# backward pass's apart: 18 times the 10,928 of the largest of torchvision's and timm's
# models (timm's mvitv2_huge_cls). A loop in its code (`for i in range(10**9)`) ran for hours,
# each operator recorded (kilobytes each): past this it is refused, at about 2 GB.
MOST_FILE_OPS = 200_000
_MODEL_FILES = ("torchscript", "exported")


def _most_ops(loaded: LoadedModel) -> int | None:
    return MOST_FILE_OPS if loaded.kind in _MODEL_FILES else None


def trace_loaded(
    loaded: LoadedModel, inputs: Sequence[TraceInput], dtype: torch.dtype | None = None, training: bool = False
) -> tuple[Graph, str]:
    """Trace on the meta device; should the forward need real data, trace a real forward on
    the CPU (or the device of the caller's module) instead. Returns the graph and where it
    was traced: "meta", "cpu", ...

    Out of the caller's inference mode, if it is in one: a training step is then analysed
    as anywhere else (as under `torch.no_grad()`, which the trace leaves too), and the
    stand-ins, inputs and copies are plain tensors that autograd may save; the forward's own
    `inference_mode` regions still apply (the recorder decomposes the composite operators
    that reach it whole there)."""
    # One thread at a time (`PATCHING_TORCH`) through the fallback too: its copy of the model
    # would read another thread's stand-ins in the model's tables, and its generators and
    # warning filters are the process's.
    most = _most_ops(loaded)
    with PATCHING_TORCH, _out_of_inference_mode():
        try:
            # A meta trace runs the forward's CPU draws for real (a stochastic depth's
            # `torch.rand(1).item()`): from the caller's generator, left as it was, seeded so
            # that the figures do not depend on the caller's seed.
            with random_state_kept(torch.device("cpu"), seed=REAL_TRACE_SEED):
                graph = trace(loaded.module, inputs, dtype=dtype, training=training, owned=loaded.owned, most_ops=most)
                return graph, "meta"
        except MetaUnsupported as exc:
            reason = exc.reason
        # Random weights, inputs, dropout: on the caller's module's GPU, else the CPU (meta too).
        with random_state_kept(device_of(loaded.module), seed=REAL_TRACE_SEED):
            return _real_trace(loaded, inputs, dtype, training, reason)


def _real_trace(
    loaded: LoadedModel, inputs: Sequence[TraceInput], dtype: torch.dtype | None, training: bool, reason: str
) -> tuple[Graph, str]:
    """The CPU fallback of `trace_loaded`: a real forward, of a copy of the model."""
    try:
        # A copy of the caller's module: a real forward may write its buffers (BatchNorm
        # statistics in training, a counter or a running statistic of its own in any mode).
        with room_to_trace(nesting_depth(loaded.module)):  # deepcopy recurses a level at a time too
            module = loaded.materialize(dtype=dtype, copy_module=True)
    except ArchprofError as exc:
        raise ArchprofError(f"the forward of {loaded.name} cannot run on the meta device ({reason}): {exc}") from None
    except Exception as exc:  # torch's own copy refusing (an exported program's symbolic sizes in its graph's notes)
        raise ArchprofError(
            f"the forward of {loaded.name} cannot run on the meta device ({reason}), and archprof cannot copy"
            f" the model to run it on the CPU: {short_reason(exc)}"
        ) from None
    device = device_of(module)
    if not loaded.owned:
        weights = "its own weights"
    elif loaded.state_dict is not None:
        weights = "the weights given"
    elif loaded.kind in ("torchscript", "exported", "pickle"):
        weights = "the file's weights"
    else:
        weights = "random weights"
    try:
        graph = trace(
            module, inputs, dtype=dtype, training=training, real=True, owned=True, most_ops=_most_ops(loaded)
        )  # a copy
    except ArchprofError as exc:
        raise ArchprofError(
            f"the forward of {loaded.name} cannot run on the meta device ({reason}), nor on {device}: {exc}"
        ) from None
    # Said as what was done, not as a failure: the figures are whole, the analysis slower.
    warn(
        f"{loaded.name}: traced with a real forward on {device} instead ({weights}; slower than a meta trace):"
        f" its forward cannot run on the meta device ({reason})"
    )
    return graph, str(device)


def _out_of_inference_mode() -> contextlib.AbstractContextManager:
    """Out of the caller's inference mode, where it is in one; else nothing changed. Entering
    `inference_mode(False)` turns grad mode on whatever it was: inside a forward an outer trace
    runs below autograd's keys, that took an inner analysis's set-up for one that wants autograd's
    graph, and traced the outer forward again."""
    return torch.inference_mode(False) if torch.is_inference_mode_enabled() else contextlib.nullcontext()


def build_report(graph: Graph, model_name: str, optimizer: str = "sgd", traced_on: str = "meta") -> Report:
    groups = group_layers(graph)
    columns = _row_columns(groups)
    columns.update(interface_columns(groups))
    columns.update(parameter_columns(graph, groups))
    columns.update(cost_columns(groups))
    columns.update(receptive_field_columns(graph, groups))
    columns.update(memory_columns(graph, groups))
    specs = COLUMNS
    if graph.training:
        specs += TRAINING_COLUMNS
        backward = backward_columns(graph, groups, columns["flops"])
        columns.update(backward)
        # A row runs its backward ops too: those without a formula are listed with the forward's.
        columns["not_counted"] = [
            _calls_added(forward, missing)
            for forward, missing in zip(columns["not_counted"], backward["backward_not_counted"], strict=True)
        ]
    dtype = _report_dtype(graph)
    return Report(
        model=model_name,
        input_shapes=tuple(t.shape for t in graph.inputs),
        input_dtypes=tuple(str(t.dtype).removeprefix("torch.") for t in graph.inputs),
        dtype=dtype,
        columns={column.name: columns[column.name] for column in specs},
        operator_costs=columns["operator_costs"],
        module_types=graph.module_types,
        training=graph.training,
        optimizer=optimizer.lower(),
        traced_on=traced_on,
        graph=graph,
    )


def _calls_added(calls: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """Operator -> calls, `more`'s added to `calls`' (a new dict: `calls`' operators first, then
    `more`'s others, in their order), as the sum of two Counters of calls gives them, without
    three Counters' Python __init__ and update per row."""
    added = dict(calls)
    for name, count in more.items():
        added[name] = added.get(name, 0) + count
    return added


def _row_columns(groups: list[LayerGroup]) -> dict[str, list]:
    """The columns each row gives of itself: its module call, its operators, its output's
    shape and the bytes of the outputs it made. One loop, its inner ones plain loops: a
    comprehension is a call of its own, per row and column."""
    layer, module_type, call, depth, operators, output_shape, activation_bytes = [], [], [], [], [], [], []
    for group in groups:
        layer.append(group.path)
        module_type.append(group.module_type)
        call.append(group.call)
        depth.append(group.depth)
        shapes = []
        for tensor in group.outputs:
            shapes.append(tensor.shape)
        output_shape.append(shapes_text(shapes))
        if not group.ops:  # an op-less row (timm's Identity: a third of some rows) runs and makes nothing
            operators.append(())
            activation_bytes.append(0)
            continue
        names = []
        for op in group.ops:
            names.append(op.op)
        operators.append(_operator_names(tuple(names)))
        made = 0
        for tensor in group.made_outputs:
            made += prod(tensor.shape) * tensor.dtype.itemsize  # their bytes, without nbytes' call each
        activation_bytes.append(made)
    return {
        "layer": layer,
        "module_type": module_type,
        "call": call,
        "depth": depth,
        "operators": operators,
        "output_shape": output_shape,
        "activation_bytes": activation_bytes,
    }


@functools.lru_cache(maxsize=1024)
def _operator_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """A row's operators, each once in the order first run, without "aten.". Rows repeat a
    few sequences of operators (a convolution; a batch norm then a ReLU): each is named once."""
    return tuple(dict.fromkeys(name.removeprefix("aten.") for name in names))


def _report_dtype(graph: Graph) -> str:
    """The dtype the model computes in: its first floating input's (token ids are int64,
    the model is not), else its first floating parameter's, else its first input's."""
    floating = (t.dtype for t in (*graph.inputs, *graph.parameters) if t.dtype.is_floating_point)
    chosen = next(floating, graph.inputs[0].dtype if graph.inputs else None)
    return str(chosen).removeprefix("torch.") if chosen is not None else ""
