"""Parameters and buffers per row.

A parameter belongs to the row whose op reads it first, so weights used functionally or
shared between layers are counted once, where they are used. One that no op reads (the
`num_batches_tracked` of an inference BatchNorm) belongs to its module's first row."""

from __future__ import annotations

from archprof.graph import Graph
from archprof.passes.layers import LayerGroup


def parameter_columns(graph: Graph, groups: list[LayerGroup]) -> dict[str, list[int]]:
    owner: dict[str, int] = {}
    for index, group in enumerate(groups):
        for op in group.ops:
            for tensor in op.inputs:
                if tensor.kind in ("parameter", "buffer"):
                    owner.setdefault(tensor.name, index)

    first_row_of = {}
    for index, group in enumerate(groups):
        first_row_of.setdefault(group.path, index)

    columns = {
        name: [0] * len(groups) for name in ("param_count", "trainable_param_count", "param_bytes", "buffer_bytes")
    }
    for parameter in graph.parameters:
        row = owner.get(parameter.name)
        if row is None:
            row = _nearest_row(parameter.module_path, first_row_of)
        if parameter.is_buffer:
            columns["buffer_bytes"][row] += parameter.nbytes
            continue
        columns["param_count"][row] += parameter.numel
        columns["trainable_param_count"][row] += parameter.numel if parameter.trainable else 0
        columns["param_bytes"][row] += parameter.nbytes
    return columns


def _nearest_row(path: str, first_row_of: dict[str, int]) -> int:
    """The first row of the module or of its nearest ancestor that has one."""
    while path not in first_row_of and path:
        path = path.rpartition(".")[0]
    return first_row_of.get(path, 0)
