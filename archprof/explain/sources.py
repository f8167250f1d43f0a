"""Where the tensors an operator reads come from (`Sources`): back through views, copies and
repeats to a parameter, a buffer, an input or a computation; and, of a layer's weight
operands, those its row counts as parameters and why each other one is not."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from archprof.explain.catalogue import is_free
from archprof.explain.document import Step
from archprof.graph import OpNode, TensorMeta


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the tensors an operator reads come from, for the words on its weights: the op
    that made each tensor, the row of each op, and the row whose parameter count holds each
    parameter (the first row that reads it, as the parameters pass counts)."""

    made_by: dict[int, OpNode]  # TensorMeta.id -> the op that wrote it
    row_of: dict[int, int]  # OpNode.index -> its row
    counted_on: dict[str, int]  # parameter name -> the row that counts it
    labels: Sequence[str]  # the rows' labels
    # parameter name -> the first op, not a free one, that reads it (a slice of it, a view):
    # the one its row's explanation counts it at, once (`first_readers`)
    first_reader: dict[str, OpNode]

    def origin(self, tensor: TensorMeta) -> TensorMeta:
        return origin(tensor, self.made_by)

    def not_counted_here(self, op: OpNode, name: str, tensor: TensorMeta) -> str | None:
        """None where `tensor` is a parameter that `op`'s row counts; else why its `name`
        (weights, bias, scale) is not among the row's parameters."""
        source = self.origin(tensor)
        if source.kind == "parameter":
            row = self.counted_on[source.name]
            first = self.first_reader.get(source.name, op)
            if row == self.row_of[op.index] and first.index != op.index:  # the chunks of in_proj_weight
                return f"{name}: part of the parameter {source.name}, counted once on this row, at {_first_text(first)}"
            if row == self.row_of[op.index]:
                return None
            label = self.labels[row]
            return f"{name}: the parameter {source.name}, counted on row {row + 1} ({label}), the first to use it"
        if source.kind == "buffer":
            return f"{name}: the buffer {source.name}, model state counted in buffer bytes, not a parameter"
        made = "an input of the model" if source.kind == "input" else "computed in the forward pass"
        return f"{name}: {made}, not a parameter"


def origin(tensor: TensorMeta, made_by: dict[int, OpNode]) -> TensorMeta:
    """The tensor `tensor` was read from: back through views, copies and repeats (free
    operators of one tensor) to a parameter, a buffer or the output of a computation
    (`made_by`: TensorMeta.id -> the op that wrote it)."""
    while (maker := made_by.get(tensor.id)) is not None and len(maker.inputs) == 1 and is_free(maker):
        tensor = maker.inputs[0]
    return tensor


def first_readers(ops: Sequence[OpNode], made_by: dict[int, OpNode]) -> dict[str, OpNode]:
    """Parameter name -> the first of `ops`, not a free one, that reads it (`origin`)."""
    first: dict[str, OpNode] = {}
    for op in ops:
        if is_free(op):
            continue
        for tensor in op.inputs:
            source = origin(tensor, made_by)
            if source.kind == "parameter":
                first.setdefault(source.name, op)
    return first


def own_parameters(
    op: OpNode, sources: Sources, operands: Sequence[tuple[str, Any]]
) -> tuple[list[tuple[str, int]], tuple[str, ...]]:
    """Of a layer's weight operands (a name, the argument: a tensor or None), those its row
    counts as parameters (the name, the parameter's size), and why each other one is not."""
    own, notes = [], []
    for name, tensor in operands:
        if not isinstance(tensor, TensorMeta):
            continue
        note = sources.not_counted_here(op, name, tensor)
        if note is None:
            source = sources.origin(tensor)
            own.append((name, source.numel))
            if source.numel != tensor.numel:  # a slice of it: the others read it too, counted here alone
                note = (
                    f"{name}: part of the parameter {source.name} ({source.numel:,}), counted whole at its first reader"
                )
        if note is not None:
            notes.append(note)
    return own, tuple(notes)


def _first_text(op: OpNode) -> str:
    return f"its first reader, {op.op}"


def layer_parameters(op: OpNode, sources: Sources, weight: TensorMeta, bias: Any) -> tuple[Step, tuple[str, ...]]:
    """`parameters = weights + bias` of a convolution or a linear layer, of the operands its
    row counts as parameters (a missing bias adds 0), and why each other one is not."""
    own, notes = own_parameters(op, sources, (("weights", weight), ("bias", bias)))
    if not isinstance(bias, TensorMeta):
        own.append(("bias", 0))
    if notes and not any(size for _, size in own):
        return Step("parameters", "none counted on this row", "", 0), notes
    names, sizes = " + ".join(name for name, _ in own), " + ".join(f"{size:,}" for _, size in own)
    return Step("parameters", names, sizes, sum(size for _, size in own)), notes


RESHAPES = frozenset({"aten.view", "aten._unsafe_view", "aten.reshape"})
