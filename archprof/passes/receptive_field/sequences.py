"""Receptive-field rules of the operators that read along a dimension from one end: a
running sum (cumsum and its kin) and oneDNN's LSTM layer. Registered in rules.py's tables
(`rules.operator_rule`) when the package imports this module."""

from __future__ import annotations

from archprof.graph import OpNode
from archprof.passes.receptive_field.dims import Field, State, along_no_axis
from archprof.passes.receptive_field.maps import AxisMap
from archprof.passes.receptive_field.rules import operator_rule
from archprof.passes.receptive_field.walk import Walk


@operator_rule("cumsum", "cumprod", "cummax", "cummin", "logcumsumexp")
def _running_sum(walk: Walk, op: OpNode) -> State:
    """Unit i of the summed axis reads units 0 to i (a running sum, product, maximum or
    minimum): pointwise unless that axis is spatial, where each unit's field reaches back to
    the first unit's (no stride: the fields grow, their starts stay)."""
    x = op.args[0]
    axis = op.argument(1, "dim", 0) % max(len(x.shape), 1)
    state = walk.state(x)
    if not isinstance(state, Field) or along_no_axis(state.dims[axis]):
        return state
    return _from_one_end(walk, op, state, axis, "a running sum")


def _from_one_end(walk: Walk, op: OpNode, state: State, axis: int, what: str, reverse: bool = False) -> State:
    """`state` with each unit along tensor dimension `axis` reading units 0 to itself (with
    `reverse`, itself to the last). No stride: the fields grow from a start they share."""

    def reading(i: int, parent: AxisMap) -> AxisMap:
        last = parent.size - 1
        reads = (lambda u: ((u, last),)) if reverse else (lambda u: ((0, u),))
        return parent.derive(parent.size, reads, None, monotone=False, why=_FROM_ONE_END)

    return walk.along(op, state, (axis,), reading, what)


_FROM_ONE_END = "its units read from one end of a dimension (a running sum, a recurrent layer)"


@operator_rule("mkldnn_rnn_layer")
def _recurrent_layer(walk: Walk, op: OpNode) -> list[State]:
    """One LSTM layer and direction (oneDNN's) over a time-major (T, B, I) input: step t's
    output reads every feature of steps 0 to t (t to T - 1 reversed) of its own sequence, as
    a running sum does; the final hidden and cell states, and the workspace, read every step
    (an LSTM along a spatial dimension: Sequencer2D's rows and columns)."""
    x, reverse = op.args[0], op.args[7]
    if any(isinstance(walk.state(t), Field) for t in op.args[5:7]):  # a state carried in from earlier steps
        return [walk.undefined(op, "its initial states have a field of their own")] * len(op.outputs)
    mixed = walk.reduce(op, walk.state(x), 3, {2})  # every feature of a step
    output = _from_one_end(walk, op, mixed, 0, "a recurrent layer", reverse)
    final = walk.reduce(op, mixed, 2, {0})
    workspace = walk.reduce(op, mixed, 0, None)
    if isinstance(workspace, Field):
        workspace = workspace.with_dims([None] * len(op.outputs[3].shape))
    return [output, final, final, workspace]
