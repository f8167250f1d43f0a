"""Any operator of the catalogue explained by its cost formula: its MACs and its elementwise
FLOPs, so many per output or input element, or in the formula's own words; and which
operators are free (data movement or creation with no arithmetic)."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from archprof.explain.document import Section, Step, flops_step
from archprof.explain.notation import product_text
from archprof.explain.receptive_fields import Fields, merge_note
from archprof.graph import OpNode, TensorMeta
from archprof.operators import Family, operator_named
from archprof.operators.costs import FREE
from archprof.passes.flops import op_cost
from archprof.structure import map_op_args
from archprof.units import shape_text


def catalogue_section(op: OpNode, fields: Fields) -> Section | None:
    operator = operator_named(op.op)
    if operator is None:
        return Section(f"{op.op}: not in the catalogue", notes=("not counted: archprof has no formula for it",))
    cost = op_cost(op)
    if is_free(op):
        return None  # a scatter_add or an accumulating index_put moves data and adds: worked out below
    out = op.outputs[0].shape if op.outputs else ()
    inputs = ", ".join(shape_text(t.shape) for t in op.inputs) or "no tensor"
    notes = [f"output {shape_text(out)} from {inputs}"]
    if operator.family is Family.GIVEN:
        return Section(f"{op.op}: {operator.family.value}", _given_steps(op, operator.cost, cost, out), tuple(notes))
    steps = []
    if cost.macs:
        formula = _formula_of(operator.cost).removeprefix("MACs = ").rstrip(".")
        steps.append(Step("MACs", formula, _batched_product(op), cost.macs))
        steps.append(flops_step(cost.macs))
    if cost.elementwise_flops or not cost.macs:
        steps.append(_elementwise_step(op, operator.cost, cost.elementwise_flops, out))
    what = operator.family.value
    if op.op in ("aten.add", "aten.add_") and sum(t.kind in ("activation", "input") for t in op.inputs) > 1:
        what = "a residual merge"
    elif op.op.endswith("_") and op.inputs and op.inputs[0].kind == "buffer":
        # a training BatchNorm's num_batches_tracked += 1: a module's state, not its output
        what = f"{operator.family.value}, updating the buffer {op.inputs[0].name} in place"
    if operator.family is Family.POINTWISE:
        notes += merge_note(fields, op)
    return Section(f"{op.op}: {what}", tuple(steps), tuple(notes))


def _given_steps(op: OpNode, formulas, cost, out: Sequence[int]) -> tuple[Step, ...]:
    """The counts of an operator the user gave formulas for (`archprof.count_operator`): each
    formula called as the cost pass calls it, each tensor written as its shape."""
    args, kwargs = map_op_args(_ShapeText, TensorMeta, op.args, op.kwargs)
    arguments = [*map(repr, args), *(f"{name}={value!r}" for name, value in kwargs.items()), f"out={shape_text(out)}"]
    called = ", ".join(arguments)
    return (
        Step("MACs", formulas.words("macs", called), "", cost.macs),
        flops_step(cost.macs),
        Step("elementwise FLOPs", formulas.words("elementwise_flops", called), "", cost.elementwise_flops),
    )


class _ShapeText:
    """A tensor argument as a formula's call in `explain` shows it: its shape, 1x3600."""

    def __init__(self, tensor: TensorMeta) -> None:
        self.text = shape_text(tensor.shape)

    def __repr__(self) -> str:
        return self.text


def is_free(op: OpNode) -> bool:
    """Whether the operator moves or makes data with no arithmetic (a view, a copy, a repeat)."""
    operator = operator_named(op.op)
    return operator is not None and operator.family in (Family.DATA_MOVEMENT, Family.CREATION) and op_cost(op) == FREE


def _batched_product(op: OpNode) -> str:
    """n · k · m of a matrix product [n, k] @ [k, m] (a gradient's: a forward mm is a linear
    layer's, explained as such), batch · n · k · m of a batched one; "" for others."""
    if op.op == "aten.mm":
        a, b = op.args[:2]
        return " · ".join(map(str, (*a.shape, b.shape[1])))
    if op.op not in ("aten.bmm", "aten.baddbmm"):
        return ""
    a, b = op.args[-2:] if op.op == "aten.bmm" else op.args[1:3]
    return " · ".join(map(str, (*a.shape, b.shape[2])))


def _elementwise_step(op: OpNode, formula, flops: int, out: Sequence[int]) -> Step:
    """An operator's elementwise FLOPs: so many per output element, or per input element
    (a reduction), as its cost formula counts them; else the formula's own words."""
    doc = _formula_of(formula)
    x = op.inputs[0].shape if op.inputs else ()
    if "adaptive" in op.op:
        counted = "the sum of every output's window size"
        return Step("elementwise FLOPs", counted + (" - numel(out)" if "max" in op.op else ""), "", flops)
    if op.op.endswith(("_aa", "_aa_backward")):
        # T varies from output to output (the antialias filter's window, clipped at the
        # borders): no one figure per element to multiply out
        return Step("elementwise FLOPs", doc.rstrip("."), "", flops)
    if doc.endswith("per output element.") and prod(out):
        per = flops // prod(out)
        worked = f"{per} · {product_text(out)}"
        return Step("elementwise FLOPs", f"{per} per output element · numel(out)", worked, flops)
    # Only where the formula is one per element (a reduction's, a norm's), not a total that happens to divide.
    if ("per input element" in doc or "per element" in doc) and x and prod(x) and flops % prod(x) == 0 and flops:
        per = flops // prod(x)
        return Step("elementwise FLOPs", f"{per} per input element · numel(in)", f"{per} · {product_text(x)}", flops)
    return Step("elementwise FLOPs", doc, "", flops)


def _formula_of(cost) -> str:
    """The first sentence of a cost formula's docstring (its lines joined): the catalogue's
    words for it."""
    text = " ".join((cost.__doc__ or "the catalogue's formula").split())
    return text.split(". ", 1)[0]
