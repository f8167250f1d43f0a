"""Receptive fields of every tensor and every row, in one walk over the graph's ops.

For each tensor archprof tracks, per spatial dimension of the network input (N, C, *spatial),
the field of its output unit 0: the first and the last input coordinate that can reach it
(`start` may be negative, inside the padding; `end` may pass the image's last pixel) and the
jump, the effective stride between neighbouring units (the product of the strides so far).
Unit `o` then sees `[start + o * jump, end + o * jump]`. The field's size is `end - start + 1`,
padding positions included [FORMULAS.md, "Receptive field"]:

    convolution / pooling, kernel K, stride S, padding P, dilation D:
        start' = start - P * jump,  end' = end + (D (K - 1) - P) * jump,  jump' = jump * S
    a merge of paths (add, mul, cat along channels, any multi-input op):
        start = min of the starts,  end = max of the ends  (per dimension)

A tensor's state is one of:

- no field (None): parameters, buffers, constants and whatever is computed from them only;
- `Field`: one `Span(start, end, jump)` per spatial dimension. `jump` is None where unit 0's
  field is exact but its neighbours' fields are not shifts of it (after a transposed
  convolution with stride, upsampling, a merge of paths with different strides, a broadcast
  along a spatial dimension): a later layer that needs the neighbours is then undefined;
- `WHOLE`: every unit sees the whole input (global pooling, a mean over the spatial
  dimensions, a linear layer over a flattened image);
- `FLAT`: the spatial dimensions were merged into one axis (flatten). Reported as the whole
  input by the convention of FORMULAS.md; the linear layer that follows makes it `WHOLE`, and
  anything that reads it back as an image is undefined (never a guessed number);
- `Undefined(reason)`: an operator archprof has no rule for consumed a tensor with a field, or
  its rule cannot give an exact answer (the reason says which and where).

Conventions: normalisation layers count as pointwise (their statistics are not part of the
field, as in Araujo et al., "Computing Receptive Fields of CNNs", Distill 2019); a dilated
kernel spans D (K - 1) + 1 pixels; `ceil_mode` changes how many units there are, never where
unit 0's window lies. Transposed convolution and upsampling give unit 0's exact field
(stride 1 transposed convolutions and integer-factor nearest / linear resampling keep a jump;
otherwise the jump is undefined). Reflection / replication padding, bicubic and anti-aliased
resampling and unknown operators are undefined.
"""

from __future__ import annotations

from enum import StrEnum

from archprof.graph import Graph
from archprof.passes.layers import LayerGroup
from archprof.passes.receptive_field.rules import rule_for
from archprof.passes.receptive_field.walk import Extent, Field, Span, State, Undefined, Walk
from archprof.units import shape_text

# -- columns -------------------------------------------------------------------------------


class FieldMark(StrEnum):
    """A receptive-field cell that is not a tuple of numbers: a str equal to its CSV text."""

    INPUT = "input"  # every output unit sees the whole input (global pooling, a linear layer)
    UNDEFINED = "undefined"  # not computable exactly: `receptive_field_note` says why


Dims = tuple[int, ...] | FieldMark | None  # a receptive_field, effective_stride or start cell


def receptive_field_columns(graph: Graph, groups: list[LayerGroup]) -> dict[str, list]:
    """Per row, the field of the row's output tensor (its unit 0), as typed values.

    `receptive_field` is the size per spatial dimension, a tuple of ints ((212, 212));
    FieldMark.INPUT for the whole input; FieldMark.UNDEFINED where it cannot be computed
    exactly; None where the row's output has no spatial field (a row of parameters only, a
    network without spatial input dimensions). `effective_stride` and `receptive_field_start`
    are tuples the same way (None for the whole input, UNDEFINED where the field or the stride
    is); `covers_input` says whether unit 0's field spans the whole input in every dimension
    (None where undefined); `receptive_field_note` says why a field is undefined.
    """
    fields, spatial = tensor_fields(graph)
    columns: dict[str, list] = {
        "receptive_field": [],
        "effective_stride": [],
        "receptive_field_start": [],
        "covers_input": [],
        "receptive_field_note": [],
    }
    written: dict[State, tuple] = {}  # rows often share one state (an activation after a conv)
    for group in groups:
        state = fields.get(group.outputs[0].id) if group.outputs else None
        cells = written.get(state)
        if cells is None:
            cells = written[state] = _cells(state, spatial)
        for column, value in zip(columns.values(), cells, strict=True):
            column.append(value)
    return columns


def _cells(state: State, spatial: tuple[int, ...]) -> tuple[Dims, Dims, Dims, bool | None, str]:
    if state is None:
        return None, None, None, False, ""
    if isinstance(state, Extent):
        return FieldMark.INPUT, None, None, True, ""
    if isinstance(state, Undefined):
        return FieldMark.UNDEFINED, FieldMark.UNDEFINED, FieldMark.UNDEFINED, None, state.reason
    spans = state.spans
    jumps = tuple(s.jump for s in spans)
    stride = FieldMark.UNDEFINED if None in jumps else jumps
    covers = all(s.start <= 0 and s.end >= size - 1 for s, size in zip(spans, spatial, strict=True))
    return tuple(s.size for s in spans), stride, tuple(s.start for s in spans), covers, state.note


# -- the walk ------------------------------------------------------------------------------


def tensor_fields(graph: Graph) -> tuple[dict[int, State], tuple[int, ...]]:
    """The state of every tensor (TensorMeta.id -> State; absent = no field), and the
    spatial size of the network input the fields refer to."""
    first = graph.inputs[0].shape if graph.inputs else ()
    spatial = tuple(first[2:]) if len(first) >= 3 else ()
    if not spatial:
        return {}, ()
    walk = Walk(len(spatial), graph)
    identity = Field(tuple(Span(0, 0, 1) for _ in spatial))
    for index, tensor in enumerate(graph.inputs):
        if tensor.shape[2:] == spatial and len(tensor.shape) == len(first):
            walk.fields[tensor.id] = identity
        elif len(tensor.shape) >= 3:
            walk.fields[tensor.id] = Undefined(f"input {index + 1} is not the size of input 1 ({shape_text(spatial)})")
    for op in graph.ops:
        walk.step(op, rule_for(op.op))
    return walk.fields, spatial
