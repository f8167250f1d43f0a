"""MACs, FLOPs and elementwise FLOPs per row and per operator, from the operator catalogue.

An op without a formula is never a silent zero: it is listed in the row's `not_counted`."""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter

from archprof.graph import OpNode, TensorMeta, value_record
from archprof.operators import FREE, Cost, operator_named
from archprof.operators.costs import free
from archprof.passes.layers import LayerGroup
from archprof.structure import map_op_args


@value_record
class OperatorCost:
    """What one aten operator with a formula cost in one row: how often it ran, its MACs and
    elementwise FLOPs over those calls (`Report.by_operator` sums them over the rows)."""

    operator: str  # e.g. "aten.convolution"
    calls: int
    macs: int
    elementwise_flops: int

    @property
    def flops(self) -> int:
        return 2 * self.macs  # one MAC = one multiply + one add


def merged_costs(rows: Iterable[Iterable[OperatorCost]]) -> tuple[OperatorCost, ...]:
    """One record per operator over `rows`, in the order the operators first ran."""
    merged: dict[str, OperatorCost] = {}
    for row in rows:
        for cost in row:
            earlier = merged.get(cost.operator)
            if earlier is not None:
                cost = OperatorCost(
                    cost.operator,
                    earlier.calls + cost.calls,
                    earlier.macs + cost.macs,
                    earlier.elementwise_flops + cost.elementwise_flops,
                )
            merged[cost.operator] = cost
    return tuple(merged.values())


def op_cost(op: OpNode) -> Cost | None:
    """The op's cost, or None when the catalogue does not know the operator."""
    operator = operator_named(op.op)
    if operator is None:
        return None
    cost = operator.cost
    if cost is free:  # data movement and creation: no argument to read
        return FREE
    out = op.outputs[0].shape if op.outputs else ()
    if operator.output_shape_only:
        return cost(out=out)
    args, kwargs = shaped_arguments(op)
    if operator.cost_by_dtype and op.outputs:
        kwargs["dtype"] = op.outputs[0].dtype
    return cost(*args, out=out, **kwargs)


def shaped_arguments(op: OpNode) -> tuple[tuple, dict]:
    """The op's arguments and keyword arguments, each tensor replaced by its shape, as a formula takes them."""
    args, inputs = op.args, op.inputs
    count = len(inputs)
    # `inputs` are the arguments' tensors, in order: where they are the first arguments, one
    # each (a convolution's input, weight and bias; an add's two), the rest holds none, and
    # the walk over every argument and list (`map_op_args`) is not needed.
    if not op.kwargs and args[:count] == inputs:
        shapes = []  # a loop: a third fewer instructions than unpacking a map and a slice into one tuple
        for tensor in inputs:
            shapes.append(tensor.shape)
        return tuple(shapes) + args[count:], {}
    return map_op_args(_shape_of, TensorMeta, args, op.kwargs)


_shape_of = attrgetter("shape")  # called per tensor argument by map_op_args: no Python frame


def cost_columns(groups: list[LayerGroup]) -> dict[str, list]:
    """Per row: macs, flops, elementwise_flops, not_counted (operator -> calls without a
    formula) and operator_costs (one OperatorCost per operator with one, in order)."""
    operator_costs, not_counted, macs, elementwise_flops = [], [], [], []
    for group in groups:
        if not group.ops:  # a call that ran no op (timm's Identity: a third of some models' rows)
            operator_costs.append(())
            not_counted.append({})
            macs.append(0)
            elementwise_flops.append(0)
            continue
        records: list[OperatorCost] = []  # one per op with a formula
        missing: dict[str, int] = {}
        row_macs = row_elementwise = 0  # summed here, not over the records after: a row per module call
        for op in group.ops:
            cost = op_cost(op)
            if cost is None:
                missing[op.op] = missing.get(op.op, 0) + 1
                continue
            records.append(OperatorCost(op.op, 1, cost.macs, cost.elementwise_flops))
            row_macs += cost.macs
            row_elementwise += cost.elementwise_flops
        # Most rows run one op: a record with nothing to merge it with.
        operator_costs.append(merged_costs([records]) if len(records) > 1 else tuple(records))
        not_counted.append(missing)
        macs.append(row_macs)
        elementwise_flops.append(row_elementwise)
    return {
        "macs": macs,
        "flops": [2 * m for m in macs],
        "elementwise_flops": elementwise_flops,
        "not_counted": not_counted,
        "operator_costs": operator_costs,
    }
