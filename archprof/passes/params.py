"""Parameters and buffers per row, and the gradients of the parameters that get one.

A parameter belongs to the row whose op reads it first, so weights used functionally or
shared between layers are counted once, where they are used. One that no op reads (the
`num_batches_tracked` of an inference BatchNorm) belongs to its module's first row, under
whichever name the module ran (`Graph.aliases`), else its nearest ancestor's."""

from __future__ import annotations

from math import prod

from archprof.graph import Graph, ParameterInfo
from archprof.passes.layers import LayerGroup
from archprof.passes.optimizer_state import names_given_gradients, parameters_given_gradients


def parameter_rows(graph: Graph, groups: list[LayerGroup]) -> dict[str, int]:
    """Each parameter's and buffer's name -> the row it belongs to."""
    owner: dict[str, int] = {}
    first_row_of: dict[str, int] = {}  # by the module's first path
    aliases = graph.aliases
    for index, group in enumerate(groups):
        first_row_of.setdefault(aliases.get(group.path, group.path), index)
        for op in group.ops:
            for tensor in op.inputs:
                if tensor.kind in ("parameter", "buffer"):
                    owner.setdefault(tensor.name, index)
    rows = {}
    for parameter in graph.parameters:
        row = owner.get(parameter.name)
        rows[parameter.name] = row if row is not None else _nearest_row(parameter.module_path, first_row_of)
    return rows


def gradient_rows(graph: Graph, rows: dict[str, int]) -> list[tuple[ParameterInfo, int]]:
    """Each parameter that gets a gradient (`parameters_given_gradients`) and its row (`rows`:
    `parameter_rows`), where its gradient is counted as its parameter is."""
    return [(parameter, rows[parameter.name]) for parameter in parameters_given_gradients(graph)]


def parameter_columns(graph: Graph, groups: list[LayerGroup]) -> dict[str, list[int]]:
    """`param_count`, `trainable_param_count`, `param_bytes`, `buffer_bytes` and
    `gradient_bytes` (one gradient per parameter that gets one, in its dtype) per row."""
    rows = parameter_rows(graph, groups)
    # One list per column, filled through locals: a parameter per weight and bias of the model.
    param_count, trainable_param_count, param_bytes, buffer_bytes, gradient_bytes = (
        [0] * len(groups) for _ in range(5)
    )
    given = names_given_gradients(graph)  # `gradient_rows`' parameters, found in this one walk
    for parameter in graph.parameters:
        row = rows[parameter.name]
        numel = prod(parameter.shape)  # not its numel and nbytes: the shape's product taken once, without their calls
        nbytes = numel * parameter.dtype.itemsize
        if parameter.is_buffer:
            buffer_bytes[row] += nbytes
            continue
        param_count[row] += numel
        param_bytes[row] += nbytes
        if parameter.trainable:
            trainable_param_count[row] += numel
            if given is None or parameter.name in given:  # as `explain` counts them
                gradient_bytes[row] += nbytes
    return {
        "param_count": param_count,
        "trainable_param_count": trainable_param_count,
        "param_bytes": param_bytes,
        "buffer_bytes": buffer_bytes,
        "gradient_bytes": gradient_bytes,
    }


def _nearest_row(path: str, first_row_of: dict[str, int]) -> int:
    """The first row of the module or of its nearest ancestor that has one."""
    while path not in first_row_of and path:
        path = path.rpartition(".")[0]
    return first_row_of.get(path, 0)
