"""The backward pass of a training step per row: gradient MACs (input and weight gradients
apart), MACs of forward ops recomputed by activation checkpointing, elementwise FLOPs, and
the training step's FLOPs. Costs come from the operator catalogue, as for the forward.

A backward op counts in the row of the forward op it belongs to (`OpNode.origin`). A
matrix product's gradient is a weight gradient when it is the gradient of a weight: a
parameter, a view of one or a tensor made of parameters alone (a convolution_backward's
two products by what the forward's input and kernel are, whichever its output mask asks
for; an mm or bmm by the forward operand it computes the gradient of, the one it does not
read), else an input gradient: the gradient flowing back to the layer before. Nothing is a multiple of the
forward: a first layer computes no input gradient, a frozen layer no weight gradient."""

from __future__ import annotations

from archprof.graph import Graph, OpNode, TensorMeta, value_record
from archprof.operators.costs import convolution_backward_parts
from archprof.passes.flops import op_cost, shaped_arguments
from archprof.passes.layers import LayerGroup

# oneDNN's LSTM layer gradient (`costs.onednn_lstm_layer_backward_cost`): one operator whose
# first output is the input's gradient, though it computes the weights' too.
_LSTM_LAYER_BACKWARD = "aten.mkldnn_rnn_layer_backward"


@value_record  # one per backward op: not frozen, whose __init__ sets each field through object.__setattr__
class BackwardShare:
    """What one backward-pass op adds to its row's columns. `backward_share` makes one per
    backward op by position, (input, weight, recomputed MACs, elementwise FLOPs): keywords
    cost the call a dict of its own, a thousand instructions per op."""

    input_macs: int = 0
    weight_macs: int = 0
    recomputed_macs: int = 0
    elementwise_flops: int = 0


def backward_share(op: OpNode, graph: Graph, weights: set[int]) -> BackwardShare | None:
    """The op's MACs (an input gradient's, a weight gradient's or a recomputed forward op's)
    and elementwise FLOPs; None where the catalogue has no formula for it. `op`: one of
    `graph.backward_ops`; `weights`: `weight_storages(graph)`."""
    forward = graph.ops[op.origin]  # the forward op it belongs to
    cost = op_cost(op)
    if cost is None:
        return None
    elementwise = cost.elementwise_flops
    if op.phase == "recompute":
        return BackwardShare(0, 0, cost.macs, elementwise)
    if op.op == "aten.convolution_backward":
        for_input, for_weight, _ = _convolution_parts(op)
        # By what the operands are, not their slots: a kernel made from the network input (a
        # dynamic convolution's) takes an input gradient, an input made of parameters alone a weight's.
        # The forward op's, where it is the convolution: under selective checkpointing, whose
        # recomputation hands the saved output back without running it, the node is another's.
        operand, kernel = (forward.inputs if forward.op == "aten.convolution" else op.inputs[1:3])[:2]
        input_macs = (0 if operand.storage in weights else for_input) + (0 if kernel.storage in weights else for_weight)
        return BackwardShare(input_macs, for_input + for_weight - input_macs, 0, elementwise)
    if op.op == _LSTM_LAYER_BACKWARD:
        # One kernel makes every gradient, each of its two halves one forward's products:
        # the input's and the hidden states' (`mkldnn_rnn_layer_backward`'s first outputs), both weights'.
        return BackwardShare(cost.macs // 2, cost.macs - cost.macs // 2, 0, elementwise)
    # The tensors whose gradients it computes: its forward op's inputs, or those given to a
    # custom Function, whose forward op is only the last its forward ran.
    operands = graph.engine.function_inputs.get(op.index) or forward.inputs
    if cost.macs and _is_weight_gradient(op, operands, weights):
        return BackwardShare(0, cost.macs, 0, elementwise)
    return BackwardShare(cost.macs, 0, 0, elementwise)


def backward_columns(graph: Graph, groups: list[LayerGroup], forward_flops: list[int]) -> dict[str, list]:
    """The columns of `archprof.report.columns.TRAINING_COLUMNS` per row, and
    `backward_not_counted` (operator -> calls without a formula) per row; `forward_flops` is
    the rows' `flops` column."""
    row_of = {op.index: row for row, group in enumerate(groups) for op in group.ops}
    weights = weight_storages(graph)
    rows = len(groups)
    input_macs, weight_macs, recomputed = [0] * rows, [0] * rows, [0] * rows
    elementwise = [0] * rows
    # Plain dicts, not Counters: a Counter's __init__ and update are Python, a few thousand instructions a row.
    missing: list[dict[str, int]] = [{} for _ in range(rows)]
    for op in graph.backward_ops:
        row = row_of[op.origin]
        share = backward_share(op, graph, weights)
        if share is None:
            counts = missing[row]
            counts[op.op] = counts.get(op.op, 0) + 1
            continue
        input_macs[row] += share.input_macs
        weight_macs[row] += share.weight_macs
        recomputed[row] += share.recomputed_macs
        elementwise[row] += share.elementwise_flops
    backward_flops = [2 * sum(macs) for macs in zip(input_macs, weight_macs, recomputed, strict=True)]
    return {
        "backward_input_macs": input_macs,
        "backward_weight_macs": weight_macs,
        "recomputed_macs": recomputed,
        "backward_flops": backward_flops,
        "backward_elementwise_flops": elementwise,
        "training_flops": [f + b for f, b in zip(forward_flops, backward_flops, strict=True)],
        "backward_not_counted": missing,
    }


def _convolution_parts(op: OpNode) -> tuple[int, int, int]:
    args, _ = shaped_arguments(op)
    return convolution_backward_parts(*args[:-1], output_mask=args[-1])


def weight_storages(graph: Graph) -> set[int]:
    """The storages of the forward's weights: the parameters', and those of the tensors no
    network input reaches, made of parameters, buffers and constants alone (a transposed
    weight, a weight-normalised layer's g v / |v|, a relative-position bias an MLP computes
    from fixed coordinates): their gradients go to parameters only, none on to an input."""
    weights: set[int] = set()
    for op in graph.ops:  # plain loops, not generators under update() and all(): a call each, per op
        for tensor in op.inputs:
            if tensor.kind == "parameter":
                weights.add(tensor.storage)
        if op.inputs and _made_of(op.inputs, weights):
            for tensor in op.outputs:
                weights.add(tensor.storage)
    return weights


def _made_of(inputs: tuple[TensorMeta, ...], weights: set[int]) -> bool:
    """Whether every one of `inputs` is a weight (of `weights`) or holds no activation."""
    for tensor in inputs:  # noqa: SIM110 (a loop: all() of a generator costs more, for every forward op)
        if tensor.storage not in weights and tensor.kind not in _FIXED:
            return False
    return True


_FIXED = ("buffer", "constant")  # tensors a weight may be made with that hold no activation


def _is_weight_gradient(op: OpNode, forward_operands: tuple[TensorMeta, ...], weights: set[int]) -> bool:
    """Whether a gradient product computes a weight's gradient. A product computes the
    gradient of a forward operand it does not read (the gradient of x in x @ W reads W, W's
    reads x): of those with its result's shape (or, for a matrix, the transposed shape:
    PyTorch may compute W^T's gradient as W's), a weight. Where it reads none of the forward's
    operands (a copy of them), by shape alone: an input gradient has its activation's shape,
    and where both shapes agree both products cost the same. One that returns nothing (a
    user's operator writing the gradients into tensors it is given, counted by
    `archprof.count_operator`) has no result to tell by: an input gradient's."""
    if not op.outputs:
        return False
    shape = op.outputs[0].shape
    shapes = {shape, shape[::-1]} if len(shape) == 2 else {shape}
    read = {t.storage for t in op.inputs}
    operands = [t for t in forward_operands if t.shape in shapes]
    unread = [t for t in operands if t.storage not in read]
    return any(t.storage in weights for t in (unread if len(unread) < len(operands) else operands))
