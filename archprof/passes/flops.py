"""MACs, FLOPs and elementwise FLOPs per row, from the operator catalogue.

An op without a formula is never a silent zero: it is listed in the row's `not_counted`."""

from __future__ import annotations

from collections import Counter

from archprof.graph import OpNode, TensorMeta
from archprof.operators import Cost, operator_named
from archprof.passes.layers import LayerGroup
from archprof.structure import map_op_args


def op_cost(op: OpNode) -> Cost | None:
    """The op's cost, or None when the catalogue does not know the operator."""
    operator = operator_named(op.op)
    if operator is None:
        return None
    args, kwargs = map_op_args(lambda t: t.shape, TensorMeta, op.args, op.kwargs)
    return operator.cost(*args, out=op.outputs[0].shape if op.outputs else (), **kwargs)


def cost_columns(groups: list[LayerGroup]) -> dict[str, list]:
    macs, elementwise, not_counted = [], [], []
    for group in groups:
        row_macs = row_elementwise = 0
        missing: Counter[str] = Counter()
        for op in group.ops:
            cost = op_cost(op)
            if cost is None:
                missing[op.op] += 1
                continue
            row_macs += cost.macs
            row_elementwise += cost.elementwise_flops
        macs.append(row_macs)
        elementwise.append(row_elementwise)
        not_counted.append(dict(missing))
    return {
        "macs": macs,
        "flops": [2 * m for m in macs],  # one MAC = one multiply + one add
        "elementwise_flops": elementwise,
        "not_counted": not_counted,
    }
