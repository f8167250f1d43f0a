"""Operators that multiply matrices explained: a matrix product as a linear layer (or as a
product of activations, with no weights), the CPU's fused attention and oneDNN's LSTM layer,
each counted as the products and the elementwise arithmetic it stands for."""

from __future__ import annotations

from math import prod

from archprof.explain.document import Section, Step, flops_step
from archprof.explain.notation import product_text
from archprof.explain.sources import RESHAPES, Sources, layer_parameters, own_parameters
from archprof.graph import OpNode, TensorMeta
from archprof.passes.flops import op_cost


def fused_attention(op: OpNode) -> Section:
    """The CPU's fused attention, counted as the math it replaces (`flash_attention_cost`):
    softmax(Q K^T · scale + mask) V over B batches of Hq heads, L queries and S keys."""
    q, k, v = op.args[:3]
    batch, heads, length, width = q.shape
    keys, value_width = k.shape[-2], v.shape[-1]
    masked = isinstance(op.kwargs.get("attn_mask"), TensorMeta)
    cost = op_cost(op)
    scores = batch * heads * length * keys
    per_score = 3 + masked
    steps = (
        Step("scores", "B · Hq · L · S", f"{batch} · {heads} · {length} · {keys}", scores),
        Step(
            "MACs",
            "scores · (E + Ev): Q K^T, then the probabilities times V",
            f"{scores:,} · ({width} + {value_width})",
            cost.macs,
        ),
        flops_step(cost.macs),
        Step(
            "elementwise FLOPs",
            f"numel(Q) + numel(K) (each scaled) + {per_score} · scores (softmax 3{', mask 1' if masked else ''})",
            f"{product_text(q.shape)} + {product_text(k.shape)} + {per_score} · {scores:,}",
            cost.elementwise_flops,
        ),
    )
    notes = (
        "one fused kernel (flash attention on the CPU): the L x S scores are never stored whole,"
        " but their arithmetic is counted as the math decomposition's",
    )
    title = f"{op.op}: attention of {length} queries over {keys} keys, {heads} heads of {width}"
    return Section(title, steps, notes)


def fused_attention_gradient(op: OpNode, input_macs: int) -> Section:
    """The fused attention's gradient (`flash_attention_backward_cost`), from the output's
    gradient, Q, K, V, the output and the log-sum-exp: the scores again, then four products,
    the probabilities again and the softmax's gradient. Its MACs are the gradients of Q, K
    and V, which it computes whole: an input gradient's where `input_macs` holds them."""
    _, q, k, v = op.args[:4]
    batch, heads, length, width = q.shape
    keys, value_width = k.shape[-2], v.shape[-1]
    cost = op_cost(op)
    scores = batch * heads * length * keys
    kind = "input gradient" if input_macs else "weight gradient"
    steps = (
        Step("scores", "B · Hq · L · S", f"{batch} · {heads} · {length} · {keys}", scores),
        Step(
            f"{kind} MACs",
            "scores · (3E + 2Ev): Q K^T again, dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q",
            f"{scores:,} · (3 · {width} + 2 · {value_width})",
            cost.macs,
        ),
        Step(
            "elementwise FLOPs",
            "6 · scores (the probabilities again from the log-sum-exp 2, the softmax's gradient 4)",
            f"6 · {scores:,}",
            cost.elementwise_flops,
        ),
    )
    title = f"{op.op}: the {kind} of attention of {length} queries over {keys} keys, {heads} heads of {width}"
    return Section(title, steps)


def multi_head_attention(op: OpNode) -> Section:
    """nn.MultiheadAttention's fused inference kernel (`native_multi_head_attention_cost`): the
    four projections and the attention over B batches of H heads, L queries and S keys."""
    q, k = op.args[:2]
    batch, length, dim = q.shape
    keys, heads = k.shape[1], op.argument(4, "num_head", 1)
    masked = isinstance(op.argument(9, "mask", None), TensorMeta)
    averaged = op.argument(10, "need_weights", True) and op.argument(11, "average_attn_weights", True)
    cost = op_cost(op)
    projections = batch * (2 * length + 2 * keys) * dim * dim
    attention = 2 * batch * length * keys * dim
    scores = batch * heads * length * keys
    per_score = 3 + masked + averaged
    parts = "softmax 3" + (", mask 1" if masked else "") + (", the weights summed over the heads 1" if averaged else "")
    steps = (
        Step(
            "projections",
            "B · (2L + 2S) · D · D: the query's and the output's over L positions, the key's and value's over S",
            f"{batch} · (2 · {length} + 2 · {keys}) · {dim} · {dim}",
            projections,
        ),
        Step(
            "attention",
            "2 · B · L · S · D: Q K^T, then the probabilities times V",
            f"2 · {batch} · {length} · {keys} · {dim}",
            attention,
        ),
        Step("MACs", "projections + attention", f"{projections:,} + {attention:,}", cost.macs),
        flops_step(cost.macs),
        Step("scores", "B · H · L · S", f"{batch} · {heads} · {length} · {keys}", scores),
        Step(
            "elementwise FLOPs",
            f"numel(Q) (scaled) + {per_score} · scores ({parts})"
            + (" + B · L · S (each averaged weight divided)" if averaged else ""),
            f"{product_text(q.shape)} + {per_score} · {scores:,}"
            + (f" + {batch} · {length} · {keys}" if averaged else ""),
            cost.elementwise_flops,
        ),
    )
    notes = (
        "nn.MultiheadAttention's inference fast path, one CPU kernel: its projections and the B x H x L x S"
        " scores are freed inside it (its workspace); its products are its composite road's",
        "the biases added are not counted, as a linear layer's",
    )
    title = f"{op.op}: attention of {length} queries over {keys} keys, {heads} heads of {dim // heads}"
    return Section(title, steps, notes)


def encoder_layer(op: OpNode) -> Section:
    """nn.TransformerEncoderLayer's fused inference kernel (`transformer_encoder_layer_cost`):
    its self-attention, feed-forward block, residual adds and layer norms over B batches of L
    tokens of D channels, H heads, a feed-forward F wide."""
    src = op.args[0]
    batch, length, dim = src.shape
    heads, width = op.argument(2, "num_heads", 1), op.args[14].shape[0]
    masked = isinstance(op.argument(18, "mask", None), TensorMeta)
    cost = op_cost(op)
    attention = batch * 4 * length * dim * dim + 2 * batch * length * length * dim
    feed_forward = 2 * batch * length * dim * width
    scores = batch * heads * length * length
    per_score = 3 + masked
    steps = (
        Step(
            "attention MACs",
            "B · 4L · D · D + 2 · B · L · L · D: its four projections, Q K^T and the probabilities times V",
            f"{batch} · 4 · {length} · {dim} · {dim} + 2 · {batch} · {length} · {length} · {dim}",
            attention,
        ),
        Step("feed-forward MACs", "2 · B · L · D · F", f"2 · {batch} · {length} · {dim} · {width}", feed_forward),
        Step("MACs", "attention + feed-forward", f"{attention:,} + {feed_forward:,}", cost.macs),
        flops_step(cost.macs),
        Step("scores", "B · H · L · L", f"{batch} · {heads} · {length} · {length}", scores),
        Step(
            "elementwise FLOPs",
            f"13 · B · L · D (queries scaled 1, two adds 2, two layer norms 10) + B · L · F (the activation)"
            f" + {per_score} · scores (softmax 3{', mask 1' if masked else ''})",
            f"13 · {product_text(src.shape)} + {batch} · {length} · {width} + {per_score} · {scores:,}",
            cost.elementwise_flops,
        ),
    )
    notes = (
        "nn.TransformerEncoderLayer's inference fast path, one CPU kernel: everything it makes but its output"
        " is freed inside it (its workspace); its products are its composite road's",
        "the biases added are not counted, as a linear layer's",
    )
    title = f"{op.op}: an encoder layer over {length} tokens of {dim}, {heads} heads, a feed-forward of {width}"
    return Section(title, steps, notes)


def matrix_product(op: OpNode, sources: Sources) -> Section:
    """A linear layer where the second operand is a weight (read from a parameter or a
    buffer), else a product of activations: no weights."""
    has_bias = op.op != "aten.mm"
    bias = op.args[0] if has_bias else None
    a, b = op.args[1:3] if has_bias else op.args[0:2]
    n, k, m = a.shape[0], a.shape[1], b.shape[1]
    cost = op_cost(op)
    leading = _flattened_leading(a, sources)
    if leading:  # a linear layer on N x L x in: its rows are every position of every sample
        steps = [
            Step("rows", "the product of the leading dimensions", " · ".join(map(str, leading)), n),
            Step("output shape", "leading dimensions x out", " x ".join(map(str, (*leading, m))), (*leading, m)),
        ]
    else:
        steps = [Step("output shape", "rows x out", f"{n} x {m}", tuple(op.outputs[0].shape))]
    bias_count = bias.numel if isinstance(bias, TensorMeta) else 0
    if sources.origin(b).kind in ("parameter", "buffer"):
        title = f"{op.op}: a matrix product [{n}, {k}] @ [{k}, {m}], a linear layer {k} -> {m} over {n} row(s)"
        steps.append(Step("weights", "in · out", f"{k} · {m}", k * m))
        steps.append(Step("bias", "out" if bias_count else "none", "", bias_count))
        parameters, notes = layer_parameters(op, sources, b, bias)
        steps.append(parameters)
    else:
        title = f"{op.op}: a matrix product [{n}, {k}] @ [{k}, {m}] of activations (no weights)"
        own, notes = own_parameters(op, sources, (("bias", bias),))
        steps += [Step("parameters", "bias", f"{size:,}", size) for _, size in own]
    steps.append(Step("MACs", "rows · in · out", f"{n} · {k} · {m}", cost.macs))
    steps.append(flops_step(cost.macs))
    if cost.elementwise_flops:
        steps.append(
            Step(
                "elementwise FLOPs",
                "1 · numel(out) (the fused activation)",
                product_text(op.outputs[0].shape),
                cost.elementwise_flops,
            )
        )
    if bias_count:
        notes += ("the bias addition is not counted, as in PyTorch's FlopCounterMode",)
    return Section(title, tuple(steps), notes)


def _flattened_leading(a: TensorMeta, sources: Sources) -> tuple[int, ...]:
    """The leading dimensions (N, L, ...) a matrix product's rows were flattened from (a
    linear layer on a 3-d or larger input: a view to [N · L, in]); () where none were."""
    reshape = sources.made_by.get(a.id)
    if reshape is None or reshape.op not in RESHAPES or not reshape.inputs:
        return ()
    leading = tuple(reshape.inputs[0].shape[:-1])
    return leading if len(leading) > 1 and prod(leading) == a.shape[0] else ()


def lstm_layer(op: OpNode) -> Section:
    """oneDNN's LSTM layer (one layer, one direction), counted as the cell loop it replaces
    (`costs.onednn_lstm_layer_cost`)."""
    x, w_hh = op.args[0], op.args[2]
    steps_in_time, batch, width = x.shape
    hidden = w_hh.shape[1]
    cost = op_cost(op)
    steps = (
        Step(
            "MACs",
            "T · B · 4H · (I + H)",
            f"{steps_in_time} · {batch} · 4 · {hidden} · ({width} + {hidden})",
            cost.macs,
        ),
        flops_step(cost.macs),
        Step(
            "elementwise FLOPs", "13 · T · B · H", f"13 · {steps_in_time} · {batch} · {hidden}", cost.elementwise_flops
        ),
    )
    notes = (
        "per step and sequence: the 4 gates' products with the input and the hidden state; per hidden unit 13 FLOPs:"
        " 5 additions (the two products' gates, the new cell state), 3 sigmoids, 3 multiplications, 2 tanh",
    )
    title = f"{op.op}: an LSTM layer of {hidden} hidden units over T = {steps_in_time} steps, B = {batch}, I = {width}"
    return Section(title, steps, notes)
