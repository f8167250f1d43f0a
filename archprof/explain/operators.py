"""One operator explained: its formulas with its own arguments put in, the section chosen by
the operator's name: convolution and pooling (`windows`), matrix product (`matrix_products`),
BatchNorm (`batch_norm`), interpolation, its mode named (`resampling`), concatenation, and any
other operator of the catalogue by its cost formula (`catalogue`). The values are the
catalogue's and the receptive-field pass's; only the layout is this package's."""

from __future__ import annotations

from dataclasses import replace

from archprof.explain.batch_norm import batch_norm
from archprof.explain.catalogue import catalogue_section
from archprof.explain.document import Section, Step
from archprof.explain.matrix_products import (
    encoder_layer,
    fused_attention,
    lstm_layer,
    matrix_product,
    multi_head_attention,
)
from archprof.explain.receptive_fields import Fields
from archprof.explain.resampling import resampling, resampling_mode
from archprof.explain.sources import Sources, own_parameters
from archprof.explain.windows import adaptive_pool, convolution, pool
from archprof.graph import OpNode, TensorMeta
from archprof.passes.fold_bn import BATCH_NORMS
from archprof.text import counted


def operator_section(op: OpNode, fields: Fields, sources: Sources) -> Section | None:
    """The operator's own formulas, or None for a free one (data movement, creation)."""
    if op.op in ("aten.convolution", "aten._convolution"):
        return convolution(op, fields, sources)
    if op.op in ("aten.addmm", "aten.mm", "aten._addmm_activation"):
        return matrix_product(op, sources)
    if op.op in BATCH_NORMS:
        return batch_norm(op, sources)
    if op.op in (
        "aten.max_pool2d_with_indices",
        "aten.max_pool3d_with_indices",
        "aten.avg_pool2d",
        "aten.avg_pool3d",
    ):
        return pool(op, fields)
    if op.op.startswith(("aten._adaptive_avg_pool", "aten.adaptive_max_pool")) and not op.op.endswith("_backward"):
        return adaptive_pool(op)
    if op.op == "aten.mkldnn_rnn_layer":
        return lstm_layer(op)
    if resampling_mode(op) is not None:
        return resampling(op)
    if op.op == "aten.cat":
        return _cat(op, fields)
    if op.op == "aten._scaled_dot_product_flash_attention_for_cpu":
        return fused_attention(op)
    if op.op == "aten._native_multi_head_attention":
        return multi_head_attention(op)
    if op.op == "aten._transformer_encoder_layer_fwd":
        return encoder_layer(op)
    section = catalogue_section(op, fields)
    if section is not None and op.op in ("aten.add", "aten.add_"):
        return _with_added_parameters(op, section, sources)
    return section


def _with_added_parameters(op: OpNode, section: Section, sources: Sources) -> Section:
    """An add whose operand is a parameter its row counts (a linear layer's bias, added as an
    operator of its own after a matmul of a non-contiguous input) names it among the
    section's parameters; one it reads but does not count (counted on another row, or at
    another operator of this one), why not."""
    operands = [("bias", t) for t in op.args[:2] if isinstance(t, TensorMeta) and sources.origin(t).kind == "parameter"]
    if not operands:
        return section
    _, why_not = own_parameters(op, sources, operands)
    notes = (*section.notes, *why_not)
    added = [sources.origin(t) for _, t in operands if sources.not_counted_here(op, "", t) is None]
    if not added:
        return replace(section, notes=notes)
    sizes = [t.numel for t in added]
    step = Step("parameters", "the parameters added", " + ".join(f"{n:,}" for n in sizes), sum(sizes))
    names = ", ".join(t.name for t in added)
    note = f"adds {names}: 1 FLOP per element, as any add is counted (a bias a kernel adds itself is not)"
    return replace(section, steps=(*section.steps, step), notes=(*notes, note))


def _cat(op: OpNode, fields: Fields) -> Section:
    tensors = [t for t in op.args[0] if isinstance(t, TensorMeta)]
    out = op.outputs[0].shape
    dim = op.argument(1, "dim", 0) % len(out)
    sizes = " + ".join(str(t.shape[dim]) for t in tensors)
    steps = (
        Step(f"size along dimension {dim}", "sum of the inputs' sizes", sizes, out[dim]),
        Step("output shape", "", "", tuple(out)),
    )
    return Section(
        f"{op.op}: a concatenation of {counted(len(tensors), 'tensor')} along dimension {dim}",
        steps,
        ("data movement: no arithmetic",),
    )
