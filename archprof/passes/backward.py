"""The backward pass of a training step per row: gradient MACs (input and weight gradients
apart), MACs of forward ops recomputed by activation checkpointing, elementwise FLOPs, and
the training step's FLOPs. Costs come from the operator catalogue, as for the forward.

A backward op counts in the row of the forward op it belongs to (`OpNode.origin`). A
matrix product's gradient is a weight gradient when it is the gradient of a trainable
parameter (a convolution_backward says so in its output mask; an mm or bmm when its result
has the shape of a forward input that is a parameter or a view of one), else an input
gradient: the gradient flowing back to the layer before. Nothing is a multiple of the
forward: a first layer computes no input gradient, a frozen layer no weight gradient."""

from __future__ import annotations

from collections import Counter

from archprof.graph import Graph, OpNode, TensorMeta
from archprof.operators.costs import convolution_backward_parts
from archprof.passes.flops import op_cost
from archprof.passes.layers import LayerGroup
from archprof.structure import map_op_args

# oneDNN's LSTM layer gradient (`costs.onednn_lstm_layer_backward_cost`): one operator whose
# first output is the input's gradient, though it computes the weights' too.
_LSTM_LAYER_BACKWARD = "aten.mkldnn_rnn_layer_backward"

# The columns this pass fills, in report order (None per row in a report with no backward pass).
BACKWARD_COLUMNS = (
    "backward_input_macs",
    "backward_weight_macs",
    "recomputed_macs",
    "backward_flops",
    "backward_elementwise_flops",
    "training_flops",
)


def backward_columns(graph: Graph, groups: list[LayerGroup], forward_flops: list[int]) -> dict[str, list]:
    """The BACKWARD_COLUMNS per row, and `backward_not_counted` (operator -> calls without a
    formula) per row; `forward_flops` is the rows' `flops` column."""
    row_of = {op.index: row for row, group in enumerate(groups) for op in group.ops}
    parameters = {t.storage for op in graph.ops for t in op.inputs if t.kind == "parameter"}
    rows = len(groups)
    input_macs, weight_macs, recomputed = [0] * rows, [0] * rows, [0] * rows
    elementwise = [0] * rows
    missing = [Counter() for _ in range(rows)]
    for op in graph.backward_ops:
        row = row_of[op.origin]
        cost = op_cost(op)
        if cost is None:
            missing[row][op.op] += 1
            continue
        elementwise[row] += cost.elementwise_flops
        if op.phase == "recompute":
            recomputed[row] += cost.macs
        elif op.op == "aten.convolution_backward":
            for_input, for_weight, _ = _convolution_parts(op)
            input_macs[row] += for_input
            weight_macs[row] += for_weight
        elif op.op == _LSTM_LAYER_BACKWARD:
            # One kernel makes every gradient, each of its two halves one forward's products:
            # the input's and the hidden states' (`mkldnn_rnn_layer_backward`'s first outputs), both weights'.
            input_macs[row] += cost.macs // 2
            weight_macs[row] += cost.macs - cost.macs // 2
        elif cost.macs and _is_weight_gradient(op, graph.ops[op.origin], parameters):
            weight_macs[row] += cost.macs
        else:
            input_macs[row] += cost.macs
    backward_flops = [2 * sum(macs) for macs in zip(input_macs, weight_macs, recomputed, strict=True)]
    return {
        "backward_input_macs": input_macs,
        "backward_weight_macs": weight_macs,
        "recomputed_macs": recomputed,
        "backward_flops": backward_flops,
        "backward_elementwise_flops": elementwise,
        "training_flops": [f + b for f, b in zip(forward_flops, backward_flops, strict=True)],
        "backward_not_counted": [dict(counts) for counts in missing],
    }


def _convolution_parts(op: OpNode) -> tuple[int, int, int]:
    args, _ = map_op_args(lambda t: t.shape, TensorMeta, op.args, op.kwargs)
    return convolution_backward_parts(*args[:-1], output_mask=args[-1])


def _is_weight_gradient(op: OpNode, forward: OpNode, parameters: set[int]) -> bool:
    """Whether a gradient product computes a parameter's gradient: its result has the shape
    (or, for a matrix, the transposed shape: PyTorch may compute W^T's gradient as W's) of
    a forward input living in a parameter's storage. An input gradient has its activation's
    shape; where both shapes agree, both products cost the same."""
    shape = op.outputs[0].shape
    shapes = {shape, shape[::-1]} if len(shape) == 2 else {shape}
    return any(t.storage in parameters and t.shape in shapes for t in forward.inputs)
