"""The walk's state and toolbox: a field per tensor (`Span`, `Field`, `Extent`,
`Undefined`), and `Walk`, which steps through the graph's ops applying each op's rule and
offers the rules what they share (merging paths, windows, reductions)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from archprof.graph import Graph, OpNode, TensorMeta


@dataclass(frozen=True, slots=True)
class Span:
    """Unit 0's field along one spatial dimension, in input coordinates (both ends included)."""

    start: int
    end: int
    jump: int | None  # None: unit 0 is exact, its neighbours are not shifts of it

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    def shift(self, units: int) -> Span | None:
        """The field of unit `units` of the same tensor (None when that needs the jump)."""
        if units == 0:
            return self
        if self.jump is None:
            return None
        return Span(self.start + units * self.jump, self.end + units * self.jump, self.jump)


@dataclass(frozen=True, slots=True)
class Field:
    spans: tuple[Span, ...]
    note: str = ""  # why the jump is undefined, when it is


@dataclass(frozen=True, slots=True)
class Extent:
    """A field that is not a number: the whole input, or a flattened image."""

    name: str


@dataclass(frozen=True, slots=True)
class Undefined:
    reason: str


WHOLE = Extent("whole input")
FLAT = Extent("flattened")
State = Field | Extent | Undefined | None


class Walk:
    def __init__(self, nd: int, graph: Graph) -> None:
        self.nd = nd
        self.graph = graph
        self.fields: dict[int, State] = {}
        # storage -> tensors seen in it, built only when an in-place write needs it
        self._members: dict[int, list[TensorMeta]] = {}
        self._indexed = -1  # ops indexed so far (-1: not even the inputs)

    def state(self, value) -> State:
        return self.fields.get(value.id) if isinstance(value, TensorMeta) else None

    def step(self, op: OpNode, rule: Rule | None) -> None:
        fields = self.fields
        for tensor in op.inputs:
            if fields.get(tensor.id) is not None:
                break
        else:
            return  # computed from parameters and constants only (or nothing): no field
        if not op.outputs:
            return
        try:
            result = rule(self, op) if rule is not None else self.undefined(op, "archprof has no rule for it")
        except (IndexError, TypeError, ValueError, ZeroDivisionError):  # arguments in a form not foreseen
            result = self.undefined(op, "its arguments were not understood")
        results = result if isinstance(result, list) else [result] * len(op.outputs)
        if len(results) != len(op.outputs):  # an overload with other outputs than foreseen
            results = [self.undefined(op, "its outputs were not understood")] * len(op.outputs)
        for tensor, state in zip(op.outputs, results, strict=True):
            if state is not None:
                self.fields[tensor.id] = state
        if op.writes_input and op.inputs:
            self._written(op, op.inputs[0], op.outputs[0])

    def _written(self, op: OpNode, before: TensorMeta, after: TensorMeta) -> None:
        """An in-place write changed what a storage holds: any other view of it now holds
        data archprof cannot place (it knows shapes, not offsets)."""
        if self.fields.get(before.id) == self.fields.get(after.id):
            return
        members = self._members
        if self._indexed < 0:
            for tensor in self.graph.inputs:
                members.setdefault(tensor.storage, []).append(tensor)
            self._indexed = 0
        for earlier in self.graph.ops[self._indexed : op.index]:
            for tensor in (*earlier.inputs, *earlier.outputs):
                members.setdefault(tensor.storage, []).append(tensor)
        self._indexed = max(self._indexed, op.index)
        undefined = Undefined("written in place through another view of its storage")
        for tensor in members.get(before.storage, ()):
            if tensor.id not in (before.id, after.id):
                self.fields[tensor.id] = undefined

    def undefined(self, op: OpNode, why: str) -> Undefined:
        where = op.module.path if op.module is not None and op.module.path else "(model)"
        return Undefined(f"{op.op} in {where}: {why}")

    # -- shared pieces -------------------------------------------------------------------

    def spatial_axes(self, ndim: int) -> range:
        return range(ndim - self.nd, ndim)

    def merge(self, op: OpNode, items: Sequence[tuple[State, tuple[int, ...]]], out: tuple[int, ...]) -> State:
        """Union of the fields of several inputs of an op whose output has shape `out`
        (broadcasting as NumPy does)."""
        whole = flat = False
        undefined: Undefined | None = None
        fields: list[Field] = []
        for state, shape in items:
            if state is None:
                continue
            if state is WHOLE:
                whole = True
            elif state is FLAT:
                flat = True
            elif isinstance(state, Undefined):
                undefined = undefined or state
            else:
                fields.append(self._broadcast(state, shape, out))
        if whole:  # every output unit depends on the whole input, whatever else it reads
            return WHOLE
        if undefined is not None:
            return undefined
        if flat:
            return self.undefined(op, "it mixes a flattened tensor with an image") if fields else FLAT
        if not fields:
            return None
        if len(fields) == 1:
            return fields[0]
        spans, note = [], next((f.note for f in fields if f.note), "")
        for dim in zip(*(f.spans for f in fields), strict=True):
            jumps = {s.jump for s in dim}
            jump = jumps.pop() if len(jumps) == 1 else None
            if jump is None and None not in jumps and not note:
                note = "paths with different strides merged"
            spans.append(Span(min(s.start for s in dim), max(s.end for s in dim), jump))
        return Field(tuple(spans), note)

    def _broadcast(self, field: Field, shape: tuple[int, ...], out: tuple[int, ...]) -> Field:
        sizes_in, sizes_out = shape[len(shape) - self.nd :], out[len(out) - self.nd :]
        if sizes_in == sizes_out:
            return field
        # size 1 broadcast along a spatial dimension: unit 0 is exact, its neighbours repeat it
        pairs = zip(field.spans, sizes_in, sizes_out, strict=True)
        spans = tuple(s if a == b else Span(s.start, s.end, None) for s, a, b in pairs)
        return Field(spans, field.note or "broadcast along a spatial dimension")

    def windowed(
        self, op: OpNode, state: State, ndim: int, m: int, window: Callable[[Span, int], Span | None], what: str
    ) -> State:
        """Apply `window(span, j)` to every spatial dimension the op works on: the op's `m`
        dimensions are the input's trailing `m` axes, j indexes them."""
        if not isinstance(state, Field):
            if state is FLAT:
                return self.undefined(op, f"{what} of a flattened tensor")
            return state
        spans = list(state.spans)
        for d in range(self.nd):
            j = d - (self.nd - m)
            if j < 0:
                continue
            span = window(spans[d], j)
            if span is None:
                return self.undefined(op, f"{what} after a layer whose effective stride is undefined ({state.note})")
            spans[d] = span
        return Field(tuple(spans), state.note)

    def reduce(self, op: OpNode, state: State, ndim: int, axes: set[int] | None, what: str) -> State:
        """An op that mixes every unit along `axes` (None: along all axes)."""
        if state is None or state is WHOLE or isinstance(state, Undefined):
            return state
        if state is FLAT:
            return WHOLE if axes is None or ndim - 1 in axes else FLAT
        spatial = set(self.spatial_axes(ndim))
        if axes is None or spatial <= axes:
            return WHOLE
        if spatial.isdisjoint(axes):
            return state
        return self.undefined(op, f"{what} over some of the spatial dimensions only")


# A rule: an op's output state(s) from its inputs' (archprof.passes.receptive_field.rules).
Rule = Callable[[Walk, OpNode], State | list[State]]
