"""The library's entry points: model in, Report out."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from archprof.errors import ArchprofError
from archprof.graph import Graph
from archprof.load import LoadedModel, load_model
from archprof.passes.flops import cost_columns
from archprof.passes.layers import group_layers
from archprof.passes.memory import memory_columns
from archprof.passes.params import parameter_columns
from archprof.passes.receptive_field import receptive_field_columns
from archprof.report import Report, format_counts
from archprof.trace import trace

ModelSpec = str | torch.nn.Module | Callable[[], torch.nn.Module]


def analyze(
    model: ModelSpec,
    input_size: Sequence[int] | None = None,
    batch: int = 1,
    dtype: torch.dtype | None = None,
    training: bool = False,
    optimizer: str = "sgd",
) -> Report:
    """Analyse a model without running it for real.

    `model` is a built-in name (`archprof zoo`), a module (its weights are neither copied
    nor changed) or a factory returning one. `input_size` is one sample's shape, e.g.
    (3, 224, 224); it defaults to the built-in model's usual input. `dtype` casts floating
    parameters and inputs; None keeps the model's own (float32 for built-ins).

    `training` analyses a training forward (train mode, what autograd saves for backward)
    and fills the training memory estimate, with the state of `optimizer` (sgd, momentum,
    adam); without it, the memory figures are those of inference.
    """
    from archprof.memory import optimizer_state_copies

    if batch < 1:
        raise ArchprofError(f"batch must be at least 1, got {batch}")
    optimizer_state_copies(optimizer)  # an unknown optimizer fails before any tracing
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    size = tuple(input_size) if input_size is not None else loaded.input_size
    if size is None:
        raise ArchprofError(f"model '{loaded.name}' has no default input size: give one, e.g. input_size=(3, 224, 224)")
    if loaded.input_size is not None and len(size) != len(loaded.input_size):
        usual = "x".join(map(str, loaded.input_size))
        raise ArchprofError(
            f"input {'x'.join(map(str, size))} has {len(size)} dimensions; {loaded.name} takes {len(loaded.input_size)}"
            f" (e.g. {usual})"
        )
    graph = trace(loaded.module, [(batch, *size)], dtype=dtype, training=training)
    return build_report(graph, loaded.name, optimizer=optimizer)


def build_report(graph: Graph, model_name: str, optimizer: str = "sgd") -> Report:
    groups = group_layers(graph)
    columns: dict[str, list] = {
        "layer": [g.path for g in groups],
        "module_type": [g.module_type for g in groups],
        "call": [g.call for g in groups],
        "depth": [g.depth for g in groups],
        "operators": [" ".join(dict.fromkeys(op.op.removeprefix("aten.") for op in g.ops)) for g in groups],
        "output_shape": [", ".join("x".join(map(str, t.shape)) for t in g.outputs) for g in groups],
    }
    columns.update(parameter_columns(graph, groups))
    costs = cost_columns(groups)
    costs["not_counted"] = [format_counts(counts) for counts in costs["not_counted"]]
    columns.update(costs)
    columns["activation_bytes"] = [sum(t.nbytes for t in g.outputs) for g in groups]
    columns.update(receptive_field_columns(graph, groups))
    columns.update(memory_columns(graph, groups))
    dtype = str(graph.inputs[0].dtype).removeprefix("torch.") if graph.inputs else ""
    return Report(
        model=model_name,
        input_shapes=tuple(t.shape for t in graph.inputs),
        dtype=dtype,
        columns={name: columns[name] for name in _column_order()},
        module_types=graph.module_types,
        training=graph.training,
        optimizer=optimizer.lower(),
    )


def _column_order() -> list[str]:
    from archprof.report import COLUMNS

    return [c.name for c in COLUMNS]
