"""The receptive-field rules of the operators of the catalogue, and their tables: by family
(pointwise, normalisation, reduction, creation) and by operator (positions picked or
written by an index's values, mixing along whole axes); the layout rules are in reshape.py
(permutes, reshapes) and layout.py (slices, concatenation, padding), the window rules
(convolution, pooling and resampling) in windows.py, all registered here by `operator_rule`. A rule says, for each
tensor dimension along an input axis, which units of its input unit u reads (an `AxisMap`
derived from the input's)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import torch

from archprof.graph import OpNode, TensorMeta
from archprof.operators import OPERATORS, Family, operator_named
from archprof.passes.receptive_field.dims import (
    WHOLE,
    Field,
    State,
    Undefined,
    Uneven,
    along_no_axis,
    grids_mixed_alike,
    read_whole,
)
from archprof.passes.receptive_field.walk import KNOW_PARTS, Rule, Walk


@cache
def rule_for(name: str) -> Rule | None:
    """The rule of an operator of the catalogue: its own, else its family's (in-place forms
    share their operator's); None for an operator the catalogue does not know. The layout
    and window rules are reshape.py's, layout.py's and windows.py's, which the package
    imports, registering them, before this module is used."""
    operator = operator_named(name)
    if operator is None:
        return None
    return _OPERATOR_RULES.get(operator.name) or _FAMILY_RULES.get(operator.family)


# -- rules, by family and by operator of the catalogue -------------------------------------

_FAMILY_RULES: dict[Family, Rule] = {}
_OPERATOR_RULES: dict[str, Rule] = {}  # "aten.cat" -> its rule, over its family's


def operator_rule(*names: str):
    """The rule of the catalogue's aten operators `names` (refused if it does not know one)."""

    def register(fn: Rule) -> Rule:
        for name in names:
            packet = getattr(torch.ops.aten, name)
            if packet not in OPERATORS or str(packet) in _OPERATOR_RULES:
                raise ValueError(f"{packet}: not in the operator catalogue, or given two rules")
            _OPERATOR_RULES[str(packet)] = fn
        return fn

    return register


def dims_of(name: str) -> int:
    """1, 2 or 3: how many trailing dimensions a pooling / resampling op works on."""
    for m in (1, 2, 3):
        if f"{m}d" in name:
            return m
    raise ValueError(name)


def last_dims(x: TensorMeta, m: int) -> range:
    return range(len(x.shape) - m, len(x.shape))


def _pointwise(walk: Walk, op: OpNode) -> State:
    """Elementwise: output unit u reads unit u of every input (after broadcasting)."""
    return walk.merge_inputs(op, op.outputs[0].shape)


_FAMILY_RULES[Family.POINTWISE] = _pointwise
# Copies keep every unit where it was.
operator_rule("alias", "detach", "clone", "_to_copy", "lift_fresh", "lift_fresh_copy")(_pointwise)


@operator_rule("channel_shuffle")
def _channel_shuffle(walk: Walk, op: OpNode) -> State:
    """Moves channels, each spatial unit where it was (concatenated parts, interleaved, read as one)."""
    return _pointwise(walk, op)


@operator_rule("native_dropout")
def _native_dropout(walk: Walk, op: OpNode) -> list[State]:
    return [walk.state(op.args[0]), None]  # (output, random mask)


@operator_rule("copy")
def _copy(walk: Walk, op: OpNode) -> State:
    """copy_(dst, src): dst's old contents are overwritten by src, broadcast."""
    src = op.args[1]
    return walk.merge(op, [(walk.state(src), src.shape)], op.outputs[0].shape)


def _no_data(walk: Walk, op: OpNode) -> State:
    """Reads its input's shape only (or overwrites it with constants or noise)."""
    return None


_FAMILY_RULES[Family.CREATION] = _no_data


def _normalisation(walk: Walk, op: OpNode) -> list[State]:
    """Pointwise by convention: the statistics are not part of the field."""
    out = walk.merge_inputs(op, op.outputs[0].shape)
    stats = walk.undefined(op, "normalisation statistics") if out is not None else None
    return [out] + [stats] * (len(op.outputs) - 1)


_FAMILY_RULES[Family.NORMALISATION] = _normalisation


# -- positions picked or written by an index's values --------------------------------------


@operator_rule("index_select")
def _index_select(walk: Walk, op: OpNode) -> State:
    """Positions chosen by a tensor's values: fine along any dimension but a spatial one."""
    x = op.args[0]
    axis = op.argument(1, "dim", 0) % len(x.shape)
    state = walk.state(x)
    if isinstance(state, Field) and not along_no_axis(state.dims[axis]):
        return walk.undefined(op, "it picks positions along a spatial dimension by value")
    return walk.bounded(op, state) if isinstance(state, Field) and isinstance(state.dims[axis], Uneven) else state


@operator_rule("index_add", "index_copy")
def _index_written(walk: Walk, op: OpNode) -> State:
    """source written (or added) into self at positions along `dim` that an index's values
    name: fine along any dimension but a spatial one, where a unit reads its unit of self
    and the source's line along `dim` at its position."""
    x, dim, index, source = op.args[0], op.args[1], op.args[2], op.args[3]
    ndim = len(x.shape)
    axis = dim % ndim if ndim else 0
    states = [walk.state(x), walk.state(source)]
    if ndim and any(isinstance(s, Field) and not along_no_axis(s.dims[axis]) for s in states):
        return walk.undefined(op, "it writes positions along a spatial dimension by value")
    line = (*source.shape[:axis], 1, *source.shape[axis + 1 :]) if ndim else ()
    items = [(states[0], x.shape), (walk.reduce(op, states[1], len(line), {axis} if ndim else None), line)]
    items.append((walk.reduce(op, walk.state(index), 0, None), ()))
    return walk.merge(op, items, op.outputs[0].shape)


@operator_rule("index_fill")
def _index_fill(walk: Walk, op: OpNode) -> State:
    """Units an index names set to a value, the others kept: a unit reads its own unit of
    self (or the value), and the index."""
    x, index, value = op.args[0], op.args[2], op.argument(3, "value")
    items = [(walk.state(x), x.shape), (walk.reduce(op, walk.state(index), 0, None), ())]
    if isinstance(value, TensorMeta):
        items.append((walk.state(value), value.shape))
    return walk.merge(op, items, op.outputs[0].shape)


@operator_rule("masked_scatter")
def _masked_scatter(walk: Walk, op: OpNode) -> State:
    """Where the mask is set, the next unit of source in order: which one, the mask's values
    before it say. Defined only for a source without a field (a unit reads self and mask)."""
    x, mask, source = op.args[0], op.args[1], op.args[2]
    if isinstance(walk.state(source), (Field, Undefined)) or walk.state(source) is WHOLE:
        return walk.undefined(op, "the unit of source each unit reads is counted from the mask's values")
    return walk.merge(op, [(walk.state(x), x.shape), (walk.state(mask), mask.shape)], op.outputs[0].shape)


# -- mixing along whole axes ---------------------------------------------------------------


def _reduction(walk: Walk, op: OpNode) -> State:
    x = op.args[0]
    ndim = len(x.shape)
    dims = op.argument(2 if op.op == "aten.linalg_vector_norm" else 1, "dim", None)
    if isinstance(dims, TensorMeta):  # max(a, b), min(a, b): elementwise
        return _pointwise(walk, op)
    if isinstance(dims, int) and not isinstance(dims, bool):
        axes: set[int] | None = {dims % ndim} if ndim else None
    elif isinstance(dims, (list, tuple)) and dims:
        axes = {d % ndim for d in dims}
    else:  # no dims, [] or a dtype / flag in that position: everything is reduced
        axes = None
    return walk.reduce(op, walk.state(x), len(op.outputs[0].shape), axes)


_FAMILY_RULES[Family.REDUCTION] = _reduction


@operator_rule("_softmax", "_log_softmax", "_safe_softmax")
def _softmax(walk: Walk, op: OpNode) -> State:
    """Each output reads every unit along one axis (the normaliser), unless a mask may weigh
    some of them 0 (`_MASKED`)."""
    x = op.args[0]
    if x.id in walk.masked:
        return walk.undefined(op, _MASKED)
    ndim = len(x.shape)
    return walk.reduce(op, walk.state(x), ndim, {op.argument(1, "dim", -1) % ndim})


# A key masked by -inf gets weight 0: each query reads the keys the mask's values keep,
# which the trace does not hold (on meta there are none).
_MASKED = "its scores may be masked (-inf, a causal mask): the keys each unit reads are in the mask's values"
_MASKED_WEIGHTS = "it contracts weights a mask may have set to 0: the units each output reads are in the mask's values"


@operator_rule("sort", "topk")
def _sorted(walk: Walk, op: OpNode) -> State:
    """Values and indices ordered along one axis: each output reads every unit along it."""
    x = op.args[0]
    ndim = len(x.shape)
    axis = op.argument(2 if op.op == "aten.topk" else 1, "dim", -1)
    return walk.reduce(op, walk.state(x), ndim, {axis % ndim} if ndim else None)


@operator_rule("kthvalue", "mode")
def _selected(walk: Walk, op: OpNode) -> State:
    """A k-th value or a mode along one axis (its default the last): each output reads every
    unit along it."""
    x = op.args[0]
    ndim = len(x.shape)
    axis = op.argument(2 if op.op == "aten.kthvalue" else 1, "dim", -1)
    return walk.reduce(op, walk.state(x), len(op.outputs[0].shape), {axis % ndim} if ndim else None)


@operator_rule("searchsorted", "bucketize")
def _searched(walk: Walk, op: OpNode) -> State:
    """Each value's position among the boundaries of its row: it reads its own unit and every
    boundary of that row."""
    boundaries, values = op.args[0], op.args[1]
    if op.op == "aten.bucketize":
        boundaries, values = values, boundaries
    items = []
    if isinstance(values, TensorMeta):
        items.append((walk.state(values), values.shape))
    if isinstance(boundaries, TensorMeta) and boundaries.shape:
        row = (*boundaries.shape[:-1], 1) if len(boundaries.shape) > 1 else ()
        searched = walk.reduce(op, walk.state(boundaries), len(row), {len(boundaries.shape) - 1})
        items.append((searched, row))
    return walk.merge(op, items, op.outputs[0].shape)


@operator_rule("renorm")
def _renorm(walk: Walk, op: OpNode) -> State:
    """Each slice along `dim` scaled by its own norm: a unit reads its whole slice, every
    unit along every other axis."""
    x = op.args[0]
    ndim = len(x.shape)
    axis = op.argument(2, "dim", 0) % ndim
    return walk.reduce(op, walk.state(x), ndim, set(range(ndim)) - {axis})


@operator_rule("_pdist_forward")
def _pdist(walk: Walk, op: OpNode) -> State:
    """Each distance reads two rows; the pairs index no input axis: every unit of the input."""
    x = op.args[0]
    reduced = walk.reduce(op, walk.state(x), len(x.shape), None)
    return reduced.with_dims([None]) if isinstance(reduced, Field) else reduced


@operator_rule("_pdist_backward")
def _pdist_gradient(walk: Walk, op: OpNode) -> State:
    """Each row's gradient reads every distance's gradient and every row (the pairs index no
    input axis)."""
    merged = walk.merge(op, [(walk.reduce(op, walk.state(t), 0, None), ()) for t in op.inputs], ())
    return merged.with_dims([None] * len(op.outputs[0].shape)) if isinstance(merged, Field) else merged


@operator_rule("dist")
def _dist(walk: Walk, op: OpNode) -> State:
    """The norm of a difference: every unit of both inputs."""
    merged = walk.merge_inputs(op, torch.broadcast_shapes(*(t.shape for t in op.inputs)))
    return walk.reduce(op, merged, 0, None)


@operator_rule("linalg_cross")
def _cross(walk: Walk, op: OpNode) -> State:
    """Each component reads the other two of its vector (the whole size-3 axis) in both
    inputs, broadcast."""
    out = op.outputs[0].shape
    axis = op.argument(2, "dim", -1) % len(out)
    items = []
    for t in op.inputs:
        offset = len(out) - len(t.shape)
        axes = {axis - offset} if axis >= offset else set()
        items.append((walk.reduce(op, walk.state(t), len(t.shape), axes), t.shape))
    return walk.merge(op, items, out)


@operator_rule(
    "linalg_lu_factor_ex",
    "linalg_lu",
    "_linalg_det",
    "_linalg_slogdet",
    "_linalg_solve_ex",
    "linalg_inv_ex",
    "linalg_lu_solve",
    "linalg_cholesky_ex",
    "linalg_ldl_factor_ex",
    "cholesky_solve",
    "cholesky_inverse",
    "linalg_solve_triangular",
    "triangular_solve",
    "linalg_qr",
    "linalg_householder_product",
    "_linalg_svd",
    "_linalg_eigh",
    "linalg_eig",
    "_linalg_eigvals",
    "linalg_matrix_exp",
    "linalg_pinv",
    "linalg_lstsq",
)
def _linear_algebra(walk: Walk, op: OpNode) -> list[State]:
    """A factorisation, solve or decomposition of each matrix of a batch (its first input's
    last two axes): each output unit of a batch element reads every unit of that element's
    matrices and vectors (pivots, right-hand sides); the batch axes carry through."""
    first = op.inputs[0].shape
    items = []
    for t in op.inputs:
        # a vector per matrix as torch.linalg tells one (pivots too); any other input (a
        # Householder product's scales) is read whole by every matrix
        vector = len(t.shape) == 1 or t.shape == first[:-1]
        core = min(len(t.shape), 1 if vector else 2)
        batch = t.shape[: len(t.shape) - core]
        items.append((walk.reduce(op, walk.state(t), len(batch), set(range(len(batch), len(t.shape)))), batch))
    try:
        batch = torch.broadcast_shapes(*(shape for _, shape in items))
    except RuntimeError:
        return [walk.undefined(op, "its batch dimensions were not understood")] * len(op.outputs)
    merged = walk.merge(op, items, batch)
    return [_batched_output(walk, op, merged, batch, out.shape) for out in op.outputs]


def _batched_output(walk: Walk, op: OpNode, merged: State, batch: tuple[int, ...], out: tuple[int, ...]) -> State:
    """An output of `_linear_algebra`: the batch axes' fields, its own matrix axes none (each
    reads the whole matrix); an output without the batch in front (an empty placeholder,
    `linalg_qr`'s Q in mode "r") reads everything."""
    if not isinstance(merged, Field):
        return merged
    if out[: len(batch)] == batch:
        return merged.with_dims([*merged.dims, *[None] * (len(out) - len(batch))])
    everything = walk.reduce(op, merged, 0, None)
    return everything.with_dims([None] * len(out)) if isinstance(everything, Field) else everything


@operator_rule("segment_reduce")
def _segment_reduce(walk: Walk, op: OpNode) -> State:
    """Each output reads a segment of its input along `axis`, bounded by the lengths' (or
    offsets') values: pointwise unless that axis is spatial."""
    x = op.args[0]
    axis = op.kwargs.get("axis", 0) % max(len(x.shape), 1)
    state = walk.state(x)
    if isinstance(state, Field) and not along_no_axis(state.dims[axis]):
        return walk.undefined(op, "it reduces segments along a spatial dimension, which the lengths' values bound")
    return state


@operator_rule(
    "mse_loss",
    "smooth_l1_loss",
    "huber_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "soft_margin_loss",
)
def _loss(walk: Walk, op: OpNode) -> State:
    """Elementwise over input, target and weights, then (unless reduction="none") a mean or
    a sum of every element."""
    x = op.args[0]
    index = {"aten.binary_cross_entropy": 3, "aten.binary_cross_entropy_with_logits": 4}.get(op.op, 2)
    per_element = walk.merge_inputs(op, x.shape)
    return per_element if op.argument(index, "reduction", 1) == 0 else walk.reduce(op, per_element, 0, None)


@operator_rule("nll_loss_forward", "nll_loss2d_forward")
def _nll_loss(walk: Walk, op: OpNode) -> list[State]:
    """Each target reads its unit's class scores (the class axis whole) and itself; reduced,
    every one. The total weight counts targets and weights: no field of the input."""
    x, target = op.args[0], op.args[1]
    picked = walk.reduce(op, walk.state(x), len(x.shape) - 1, {1 if len(x.shape) > 1 else 0})
    per_target = walk.merge(op, [(picked, target.shape), (walk.state(target), target.shape)], target.shape)
    reduced = per_target if op.argument(3, "reduction", 1) == 0 else walk.reduce(op, per_target, 0, None)
    return [reduced, None]


@operator_rule("multi_margin_loss", "multilabel_margin_loss_forward")
def _margin_loss(walk: Walk, op: OpNode) -> State | list[State]:
    """Each sample's loss reads its whole row of class scores and its target(s); reduced,
    every sample. The multi-label loss also marks each sample's targets, read from them alone."""
    x, target = op.args[0], op.args[1]
    rows, classes = x.shape[:-1], ({len(x.shape) - 1} if x.shape else None)
    scored = [(walk.state(x), x.shape)]
    if target.shape == x.shape:  # the multi-label loss's targets, a row per sample
        scored.append((walk.state(target), target.shape))
    per_sample = walk.reduce(op, walk.merge(op, scored, x.shape), len(rows), classes)
    if target.shape == rows:  # the multi-class loss's, one per sample
        per_sample = walk.merge(op, [(per_sample, rows), (walk.state(target), rows)], rows)
    multilabel = op.op == "aten.multilabel_margin_loss_forward"
    reduction = op.argument(2 if multilabel else 5, "reduction", 1)
    reduced = per_sample if reduction == 0 else walk.reduce(op, per_sample, 0, None)
    return [reduced, walk.state(target)] if multilabel else reduced


@operator_rule("_ctc_loss")
def _ctc_loss(walk: Walk, op: OpNode) -> list[State]:
    """Each sequence's loss reads its whole sequence of log-probabilities (every step and
    class) and every target and length (which of them are its, their values say). Its
    second output, the forward variables, is read by its gradient alone."""
    log_probs, out = op.args[0], op.outputs[0].shape
    batched = len(log_probs.shape) == 3
    per_sequence = walk.reduce(op, walk.state(log_probs), len(out) if batched else 0, {0, 2} if batched else None)
    values = [(walk.reduce(op, walk.state(t), 0, None), ()) for t in op.args[1:4] if isinstance(t, TensorMeta)]
    return [walk.merge(op, [(per_sequence, out if batched else ()), *values], out), None]


@operator_rule("histc", "bincount")
def _counted_by_value(walk: Walk, op: OpNode) -> State:
    return walk.undefined(op, "each bin counts the units whose values fall in it")


@operator_rule("scatter")
def _scatter(walk: Walk, op: OpNode) -> State:
    """scatter(self, dim, index, src or value): a unit of the output reads its unit of self
    and, where index (and src) match the output's shape but along `dim`, the whole line of
    index and src along `dim` at its position (F.one_hot's 1 per index, scattered into
    zeros); a smaller index, or a `dim` along which index or src runs over the input, leaves
    the positions written in its values (a line mirrored by scatter reads one unit of it,
    not the whole line)."""
    x, dim, index = op.args[0], op.args[1], op.args[2]
    ndim = len(x.shape)
    axis = dim % ndim
    items = [(walk.state(x), x.shape)]
    line = (*x.shape[:axis], 1, *x.shape[axis + 1 :])  # the output's shape, one unit along `dim`
    for operand in (index, *op.args[3:4]):
        if not isinstance(operand, TensorMeta):
            continue
        shape = (*operand.shape[:axis], 1, *operand.shape[axis + 1 :])
        if shape != line:
            return walk.undefined(op, "its index is smaller than its output: the positions written are in its values")
        state = walk.state(operand)
        if isinstance(state, Field) and not along_no_axis(state.dims[axis]):
            reason = "it writes along a spatial dimension: the positions written are in its index's values"
            return walk.undefined(op, reason)
        items.append((walk.reduce(op, state, ndim, {axis}), shape))
    return walk.merge(op, items, op.outputs[0].shape)


@operator_rule("embedding_renorm")
def _embedding_renorm(walk: Walk, op: OpNode) -> State:
    """Rescales in place the rows the indices name: the row a lookup then reads was named by
    that lookup's own index, so each output still reads its own index alone."""
    return walk.state(op.args[0])


@operator_rule("glu")
def _glu(walk: Walk, op: OpNode) -> State:
    """a * sigmoid(b) for the two halves along one axis: pointwise unless that axis is spatial."""
    x = op.args[0]
    axis = op.argument(1, "dim", -1) % len(x.shape)
    state = walk.state(x)
    if isinstance(state, Field) and not along_no_axis(state.dims[axis]):
        return walk.undefined(op, "it pairs units half a dimension apart")
    return walk.bounded(op, state) if isinstance(state, Field) and isinstance(state.dims[axis], Uneven) else state


def contracted_operand(state: State, keep: Sequence[int | None], contracted: Sequence[int]) -> State:
    """A matrix-product operand in the output's dimensions: keep[j] is the operand dimension
    output dimension j takes (None: none); the contracted dimensions are read whole."""
    if not isinstance(state, Field):
        return state
    dims, laid = state.dims, []
    for d in keep:  # a loop, not a generator: every product's operands come here
        laid.append(None if d is None else dims[d])
    return read_whole(state, contracted, tuple(laid))


@operator_rule("mm", "addmm", "bmm", "baddbmm", "_addmm_activation", "mv", "addmv", "dot")
def _matmul(walk: Walk, op: OpNode) -> State:
    """a @ b contracts a's last dimension with b's first (of its matrix): units along a
    contracted dimension are all read (a linear layer over a flattened map, attention over
    the positions); a's rows and b's columns carry through."""
    name = op.op.removeprefix("aten.")
    has_bias = name in ("addmm", "baddbmm", "_addmm_activation", "addmv")
    bias = op.args[0] if has_bias else None
    a, b = op.args[1:3] if has_bias else op.args[0:2]
    for operand in (a, b):
        if operand.id in walk.masked:  # undefined: the softmax's reason first, where it made the weights
            state = walk.state(operand)
            return state if isinstance(state, Undefined) else walk.undefined(op, _MASKED_WEIGHTS)
    out = op.outputs[0].shape
    batched = len(a.shape) == 3
    lead = [0] if batched else []
    if len(b.shape) == 1:  # mv, dot
        keep_a, keep_b = ([*lead, 0] if len(a.shape) == 2 else []), [None] * len(out)
        contracted_b = 0
    else:
        keep_a, keep_b = [*lead, len(a.shape) - 2, None], [*lead, None, len(b.shape) - 1]
        contracted_b = len(b.shape) - 2
    operands = [(a, keep_a, [len(a.shape) - 1]), (b, keep_b, [contracted_b])]
    added = [(walk.state(bias), bias.shape)] if isinstance(bias, TensorMeta) else []
    return _contracted_merge(walk, op, operands, out, added)


@operator_rule("_scaled_dot_product_flash_attention_for_cpu")
def _fused_attention(walk: Walk, op: OpNode) -> list[State]:
    """softmax(q k^T + mask) v in one kernel, q (N, heads, L, E), k (N, heads, S, E), v (N,
    heads, S, Ev): query position l reads q's row l and every key and value (its bmm,
    softmax and bmm, as `_matmul` and `_softmax` take them); the second output, each query's
    log-sum-exp (N, heads, L), reads q's row and every key. A mask that may drop keys
    (`_MASKED`, is_causal) leaves the keys each query reads in its values."""
    q, k, v = op.args[:3]
    mask = op.kwargs.get("attn_mask")
    if op.argument(4, "is_causal", False) or (isinstance(mask, TensorMeta) and mask.id in walk.masked):
        return [walk.undefined(op, _MASKED)] * 2
    if walk.state(mask) is not None:
        return [walk.undefined(op, "its mask is computed from the input")] * 2
    output, log_sum_exp = (o.shape for o in op.outputs)
    scores = [(q, [0, 1, 2], [3]), (k, [0, 1, None], [2, 3])]  # per query: its row, every key
    values = (v, [0, 1, None, 3], [2])
    return [
        _contracted_merge(walk, op, [(t, [*keep, None], c) for t, keep, c in scores] + [values], output),
        _contracted_merge(walk, op, scores, log_sum_exp),
    ]


@operator_rule("_native_multi_head_attention")
def _multi_head_attention(walk: Walk, op: OpNode) -> list[State]:
    """nn.MultiheadAttention's inference fast path in one kernel, query (N, L, E), key and
    value (N, S, E): projected, attended per head, projected back. Output position l reads
    every channel of query row l and every key and value; the weights returned (N, L, S),
    or (N, heads, L, S) not averaged, read query row l and every key (the softmax's
    normaliser), and none where none were asked for (an empty tensor). A boolean mask (the
    merged attention and key-padding masks) or one that may hold -inf leaves the keys each
    query reads in its values (`_MASKED`)."""
    query, key, value = op.args[:3]
    mask = op.argument(9, "mask", None)
    if isinstance(mask, TensorMeta):
        if mask.dtype == torch.bool or mask.id in walk.masked:
            return [walk.undefined(op, _MASKED)] * 2
        if walk.state(mask) is not None:
            return [walk.undefined(op, "its mask is computed from the input")] * 2
    output, weights = (o.shape for o in op.outputs)
    rows, keys = (query, [0, 1, None], [2]), (key, [0, None, None], [1, 2])
    states = [_contracted_merge(walk, op, [rows, keys, (value, [0, None, None], [1, 2])], output)]
    if len(weights) == 4:  # per head: the heads' dimension reads what every channel does
        rows, keys = (query, [0, None, 1, None], [2]), (key, [0, None, None, None], [1, 2])
    states.append(_contracted_merge(walk, op, [rows, keys], weights) if len(weights) > 1 else None)
    return states


@operator_rule("_transformer_encoder_layer_fwd")
def _encoder_layer(walk: Walk, op: OpNode) -> State:
    """nn.TransformerEncoderLayer's inference fast path in one kernel, src (N, L, E): its
    self-attention reads every token (`_multi_head_attention`); the residual adds, layer
    norms and feed-forward block after it read each token's channels, which the attention's
    output already mixes. A mask as the attention's."""
    src = op.args[0]
    mask = op.argument(18, "mask", None)
    if isinstance(mask, TensorMeta):
        if mask.dtype == torch.bool or mask.id in walk.masked:
            return walk.undefined(op, _MASKED)
        if walk.state(mask) is not None:
            return walk.undefined(op, "its mask is computed from the input")
    rows, tokens = (src, [0, 1, None], [2]), (src, [0, None, None], [1, 2])
    return _contracted_merge(walk, op, [rows, tokens], op.outputs[0].shape)


def _contracted_merge(walk: Walk, op: OpNode, operands: list, out: tuple[int, ...], added: Sequence = ()) -> State:
    """The union of matrix-product operands (tensor, keep, contracted: as `contracted_operand`) in
    an output of shape `out`, and of the `added` (state, shape) items (a bias)."""
    states = []
    for t, keep, contracted in operands:  # plain loops: every product comes here
        states.append(contracted_operand(walk.state(t), keep, contracted))
    items = [(s, out) for s in grids_mixed_alike(states)]
    items += added
    settled = []
    for s, shape in items:
        settled.append((walk.settled(s) if isinstance(s, Field) else s, shape))
    return walk.merge(op, settled, out)


# The rules that move no index of a dimension of concatenated paths without saying so:
# their outputs keep its `Parts` (every other rule's read the union of the paths; the
# layout rules that keep them are reshape.py's and layout.py's).
KNOW_PARTS.update({_pointwise, _normalisation, _native_dropout})
# A reduction keeps paths side by side along a spatial dimension it does not reduce (`Walk.reduce`).
KNOW_PARTS.update({_reduction, _softmax})
