"""The receptive field in an explanation: each tensor's cells as the receptive-field pass
gives them, a tensor's field in words, the recurrence of a window (convolution, pooling)
worked with the field before it, and the union a merge of branches takes. The values are the
receptive-field pass's; only the layout is this module's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archprof.explain.document import Step
from archprof.explain.notation import window_symbols
from archprof.graph import Graph, OpNode, TensorMeta
from archprof.passes.layers import LayerGroup
from archprof.passes.receptive_field import FieldMark, receptive_field_columns
from archprof.passes.receptive_field.walk import UPPER_BOUND
from archprof.text import dims_text, spatial_names


@dataclass(frozen=True, slots=True)
class FieldCells:
    """A tensor's receptive field as the report's columns hold a row's: the size, effective
    stride and start per spatial dimension (tuples), or a FieldMark, or None; and why."""

    field: Any
    stride: Any
    start: Any
    note: str

    def windowed(self) -> bool:
        """Whether the recurrence of a window can start from it: numbers in every cell, whole
        strides (after upsampling, a fraction, unit 0's field is not the recurrence's)."""
        cells = (self.field, self.stride, self.start)
        return all(isinstance(cell, tuple) for cell in cells) and all(isinstance(j, int) for j in self.stride)


Fields = dict[int, FieldCells]  # TensorMeta.id -> its cells (absent: no field)


def field_cells(graph: Graph) -> Fields:
    """The receptive-field cells of every tensor the ops read or write: the pass's
    `receptive_field_columns`, asked of one tensor at a time (a group per tensor)."""
    tensors = list({t.id: t for op in graph.ops for t in (*op.inputs, *op.outputs)}.values())
    columns = receptive_field_columns(graph, [LayerGroup("", "", 0, (), (t,)) for t in tensors])
    cells = zip(*(columns[name] for name in _FIELD_COLUMNS), strict=True)
    return {t.id: FieldCells(*row) for t, row in zip(tensors, cells, strict=True) if row[0] is not None}


_FIELD_COLUMNS = ("receptive_field", "effective_stride", "receptive_field_start", "receptive_field_note")


def field_note(fields: Fields, tensor: TensorMeta | None) -> str:
    """A tensor's receptive field in words."""
    cells = fields.get(tensor.id) if tensor is not None else None
    if cells is None:
        return "none (no spatial field)"
    if cells.field == FieldMark.INPUT:
        return "the whole input"
    if cells.field == FieldMark.UNDEFINED:
        return f"undefined ({cells.note})"
    words = f"field {dims_text(cells.field)}, jump {dims_text(cells.stride)}, start {dims_text(cells.start)}"
    return f"{words} ({cells.note})" if cells.note.startswith(UPPER_BOUND) else words


def window_field(fields: Fields, op: OpNode, x: TensorMeta, kernel, stride, padding, dilation) -> list[Step]:
    """The receptive-field step of a window (convolution, pooling): the recurrence worked
    with the field before it, the results the receptive-field pass's."""
    before, after = fields.get(x.id), fields.get(op.outputs[0].id)
    transposed = op.args[6:7] == (True,)
    if before is None or after is None or not before.windowed() or not after.windowed() or transposed:
        return [Step("receptive field", "", "", field_note(fields, op.outputs[0]))]
    # A 1-d pooling runs as a 2-d one on its input unsqueezed before the length: the window's
    # first dimension is that one of size 1, the fields' dimensions are its last ones.
    lead = len(kernel) - len(before.field)
    if lead < 0:
        return [Step("receptive field", "", "", field_note(fields, op.outputs[0]))]
    steps = []
    names = spatial_names(len(before.field))
    for d, name in enumerate(names):
        tag = f"_{name.lower()}"
        w = lead + d
        k, s, p, dl, j = kernel[w], stride[w], padding[w], dilation[w], before.stride[d]
        size, start = before.field[d], before.start[d]
        recurrence = (size + dl * (k - 1) * j, j * s, start - p * j)
        if recurrence != (after.field[d], after.stride[d], after.start[d]):
            return [Step("receptive field", "", "", f"{field_note(fields, op.outputs[0])} ({_UNEVEN})")]
        K, S, P, D = window_symbols(names, d)
        worked = f"{size} + {dl} · ({k} - 1) · {j}"
        steps.append(Step(f"r{tag}", f"r_prev + {D} ({K} - 1) j_prev", worked, after.field[d]))
        steps.append(Step(f"j{tag}", f"j_prev · {S}", f"{j} · {s}", str(after.stride[d])))
        steps.append(Step(f"start{tag}", f"start_prev - {P} · j_prev", f"{start} - {p} · {j}", after.start[d]))
    return steps


# Why a window's field is the pass's alone: unit 0's field is not the recurrence's.
_UNEVEN = (
    "unit 0's field as the receptive-field pass follows it, not the recurrence's: the input's units do not"
    " step evenly through the image there, as after reflect or replicate padding"
)


def merge_note(fields: Fields, op: OpNode) -> list[str]:
    fielded = [t for t in dict.fromkeys(op.inputs) if t.id in fields]
    if len(fielded) < 2 or not op.outputs:
        return []
    parts = "; ".join(field_note(fields, t) for t in fielded)
    merged = field_note(fields, op.outputs[0])
    return [f"receptive field: the union of its inputs' ({parts}): smallest start, largest end -> {merged}"]
