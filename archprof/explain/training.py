"""A training report's row explained: each backward-pass operator its forward ops made,
worked out (a convolution's input and weight gradients, a linear layer's two products, an
activation's or a norm's gradient, a forward op run again by activation checkpointing), then
the row's training columns as the report counts them, and what autograd saved for the row
and its parameters' gradients.

The figures are the passes' own: each op's share of the columns from
`passes.backward.backward_share`, saved storages from `passes.memory.saved_rows`, gradients
from `passes.params.gradient_rows`; a gradient product's formula is its forward op's, as
`explain.operators` writes it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from archprof.explain.catalogue import catalogue_section, is_free
from archprof.explain.document import Section, Step, sum_step
from archprof.explain.matrix_products import fused_attention_gradient
from archprof.explain.notation import product_text
from archprof.explain.resampling import antialiased_window_sums, resampling_mode, taps_product
from archprof.graph import Graph, OpNode, ParameterInfo
from archprof.passes.backward import BackwardShare, backward_share, weight_storages
from archprof.passes.layers import LayerGroup
from archprof.passes.memory import SavedStorage, saved_rows
from archprof.passes.params import gradient_rows, parameter_rows
from archprof.units import shape_text

ForwardSection = Callable[[OpNode], Section | None]  # a forward op's own section (`operator_section`)

_FIRST_LAYER = "nothing before this layer needs a gradient (the model's input, or frozen layers only)"


@dataclass(frozen=True, slots=True)
class Training:
    """What the training sections of every row read, worked out once per report."""

    graph: Graph
    groups: Sequence[LayerGroup]
    labels: Sequence[str]
    weights: set[int]  # `weight_storages`
    saved: dict[int, SavedStorage]  # storage -> as `saved_activation_bytes` counts it
    gradients: list[tuple[ParameterInfo, int]]  # `gradient_rows`

    @classmethod
    def of(cls, graph: Graph, groups: Sequence[LayerGroup], labels: Sequence[str]) -> Training:
        listed = list(groups)
        gradients = gradient_rows(graph, parameter_rows(graph, listed))
        return cls(graph, groups, labels, weight_storages(graph), saved_rows(graph, listed), gradients)

    def sections(self, index: int, forward_section: ForwardSection, columns: dict) -> list[Section]:
        """Row `index`'s backward operators, one section each, then its training figures;
        `columns`: the report's, whose training cells the figures are."""
        mine = {op.index for op in self.groups[index].ops}
        sections: list[Section] = []
        free: list[str] = []
        shares: list[tuple[OpNode, BackwardShare]] = []
        for op in self.graph.backward_ops:
            if op.origin not in mine:
                continue
            forward = self.graph.ops[op.origin]
            share = backward_share(op, self.graph, self.weights)
            if share is None:
                sections.append(Section(f"{op.op}: not in the catalogue (backward)", notes=("not counted",)))
                continue
            shares.append((op, share))
            if op.phase != "recompute" and is_free(op):
                free.append(op.op)
                continue
            sections.append(_operator(op, forward, share, forward_section))
        if free:
            moved = ", ".join(dict.fromkeys(free))
            note = f"{moved}: data movement and creation (saved tensors unpacked, gradients into .grad), no arithmetic"
            sections.append(Section("free backward operations", notes=(note,)))
        sections.append(self._figures(index, shares, columns))
        sections.append(self._saved(index))
        return sections

    # -- the row's figures -----------------------------------------------------------------------

    def _figures(self, index: int, shares: list[tuple[OpNode, BackwardShare]], columns: dict) -> Section:
        steps = []
        totals = {}
        for name, field in (
            ("backward input MACs", "input_macs"),
            ("backward weight MACs", "weight_macs"),
            ("recomputed MACs", "recomputed_macs"),
        ):
            terms = [(op.op, getattr(share, field)) for op, share in shares if getattr(share, field)]
            totals[field] = sum(value for _, value in terms)
            steps.append(sum_step(name, terms, totals[field]))
        macs = tuple(totals.values())
        backward = 2 * sum(macs)
        worked = "2 · (" + " + ".join(f"{m:,}" for m in macs) + ")"
        steps.append(Step("backward FLOPs", "2 · (input + weight + recomputed MACs)", worked, backward))
        elementwise = [(op.op, share.elementwise_flops) for op, share in shares if share.elementwise_flops]
        steps.append(sum_step("backward elementwise FLOPs", elementwise, sum(v for _, v in elementwise)))
        forward = columns["flops"][index]
        worked = f"{forward:,} + {backward:,}"
        steps.append(Step("training FLOPs", "FLOPs + backward FLOPs", worked, forward + backward))
        gradients = [p for p, row in self.gradients if row == index]
        worked = " + ".join(f"{product_text(p.shape)} · {p.dtype.itemsize} ({p.name})" for p in gradients)
        steps.append(
            Step("gradient bytes", "numel · bytes per element, per parameter", worked, sum(p.nbytes for p in gradients))
        )
        notes = self._why_none(index, totals, gradients, columns)
        return Section("this row's training step, as the report counts it", tuple(steps), tuple(notes))

    def _why_none(self, index: int, totals: dict, gradients: list[ParameterInfo], columns: dict) -> list[str]:
        """Why a row with MACs computes no input or no weight gradient, and which of its
        parameters get no gradient."""
        notes = []
        if columns["macs"][index] and not totals["input_macs"]:
            notes.append(f"no input gradient: {_FIRST_LAYER}")
        given = {p.name for p in gradients}
        counted = {t.name for op in self.groups[index].ops for t in op.inputs if t.kind == "parameter"}
        rows = dict((p.name, row) for p, row in self.gradients)
        for parameter in self.graph.parameters:
            if parameter.name not in counted or parameter.name in given or parameter.is_buffer:
                continue
            if rows.get(parameter.name, index) != index:
                continue
            why = "frozen (requires_grad False)" if not parameter.trainable else "not reached by the backward pass"
            notes.append(f"{parameter.name}: {why}, no gradient")
        return notes

    # -- saved tensors ---------------------------------------------------------------------------

    def _saved(self, index: int) -> Section:
        """What autograd saved that this row made (the model's input: its first reader's)."""
        storages = [s for s, saved in self.saved.items() if saved.row == index]
        shown = {t.storage: t for t in sorted(self.graph.saved, key=lambda t: t.nbytes)}  # its largest view saved
        table = [("saved tensor", "shape", "bytes", "read in the backward by")]
        terms = []
        for storage in storages:
            saved, tensor = self.saved[storage], shown[storage]
            size = f"{product_text(tensor.shape)} · {tensor.dtype.itemsize}"
            if saved.nbytes != tensor.nbytes:  # a view saved: its whole storage is held
                size = f"{saved.nbytes:,} (the storage of a {shape_text(tensor.shape)} view)"
            terms.append(size)
            readers = _readers(self.graph, storage, self.groups, self.labels)
            table.append((_made_by(self.graph, saved, storage), shape_text(tensor.shape), f"{saved.nbytes:,}", readers))
        total = sum(self.saved[s].nbytes for s in storages)
        step = Step("saved activation bytes", "numel · bytes per element, per storage saved", " + ".join(terms), total)
        notes = (
            "what autograd saved for the backward pass that this row made, each storage once; parameters and buffers"
            " saved are counted as parameters",
        )
        return Section("saved for the backward pass", (step,), notes, tuple(table) if storages else ())


def _made_by(graph: Graph, saved: SavedStorage, storage: int) -> str:
    """A saved storage in words: the model's input, or the output of the op that made it."""
    if saved.op < 0:
        return f"storage {storage}"
    op = graph.ops[saved.op]
    made = [i for i, t in enumerate(op.outputs) if t.storage == storage]
    if not made:
        return f"the model's input (read by {op.op})"
    return f"{op.op}'s output" + (f" {made[0]} (of {len(op.outputs)})" if len(op.outputs) > 1 else "")


def _readers(graph: Graph, storage: int, groups: Sequence[LayerGroup], labels: Sequence[str]) -> str:
    """The backward ops with arithmetic that read `storage`, and the rows they count on."""
    row_of = {op.index: row for row, group in enumerate(groups) for op in group.ops}
    readers = [
        f"{op.op} in {labels[row_of[op.origin]]}"
        for op in graph.backward_ops
        if any(t.storage == storage for t in op.inputs) and not is_free(op)
    ]
    return ", ".join(dict.fromkeys(readers)) or "-"


# -- one backward operator -------------------------------------------------------------------------


def _operator(op: OpNode, forward: OpNode, share: BackwardShare, forward_section: ForwardSection) -> Section:
    if op.phase == "recompute":
        return _recomputed(op, forward, share, forward_section)
    if op.op == "aten.convolution_backward":
        return _convolution_gradient(op, forward, share, forward_section)
    if op.op in _NORM_GRADIENTS:
        return _norm_gradient(op, forward, share)
    if op.op == "aten.mkldnn_rnn_layer_backward":
        return _lstm_layer_gradient(op, forward, share)
    if op.op == "aten._scaled_dot_product_flash_attention_for_cpu_backward":
        return fused_attention_gradient(op, share.input_macs)
    if op.op == f"{forward.op}_backward" and resampling_mode(forward) is not None:
        return _resampling_gradient(op, forward, share)
    section = catalogue_section(op, {})
    if share.input_macs or share.weight_macs:
        kind = "input gradient" if share.input_macs else "weight gradient"
        steps = tuple(
            Step(f"{kind} MACs", s.formula, s.worked, s.value) for s in section.steps if s.name == "MACs"
        ) + tuple(s for s in section.steps if s.name not in ("MACs", "FLOPs"))
        # A product's two operands; another operator's inputs, listed.
        operands = (" @ " if len(op.inputs) == 2 else ", ").join(shape_text(t.shape) for t in op.inputs)
        return Section(f"{op.op}: the {kind} of {forward.op}, {operands}", steps, section.notes)
    title = f"{section.title}, in the gradient of {forward.op}"
    if op.op in ("aten.add", "aten.add_") and len(op.inputs) == 2:  # not the forward's residual merge
        title = f"{op.op}: two gradients of one tensor summed (it fed two operators), in the gradient of {forward.op}"
    return Section(title, section.steps, section.notes)


_NORM_GRADIENTS = frozenset(
    {"aten.native_batch_norm_backward", "aten.native_layer_norm_backward", "aten.native_group_norm_backward"}
)


def _norm_gradient(op: OpNode, forward: OpNode, share: BackwardShare) -> Section:
    """A norm's gradient (`costs.norm_backward_cost`, `costs.batch_norm_backward_cost`): 4 FLOPs
    per element for the input gradient (1 for a batch norm on its running statistics), 5 for
    the parameter gradients (the input normalised again, times the output gradient, the two
    sums), each where the output mask asks for it."""
    grad, mask = op.args[0], op.args[-1]
    trained = op.args[7] if op.op == "aten.native_batch_norm_backward" else True
    input_gradient = (4, "input gradient") if trained else (1, "input gradient on running statistics")
    # only the parts the mask asks for, so that the formula's constants are the worked line's
    parts = [
        (n, words)
        for (n, words), wanted in ((input_gradient, mask[0]), ((5, "statistics and parameter gradients"), any(mask)))
        if wanted
    ]
    flags = ", ".join(f"{n} {'yes' if w else 'no'}" for n, w in zip(("input", "scale", "shift"), mask, strict=True))
    step = Step(
        "elementwise FLOPs",
        f"({' + '.join(f'{n} {words}' for n, words in parts)}) per element · numel(grad_out)",
        f"({' + '.join(str(n) for n, _ in parts)}) · {product_text(grad.shape)}",
        share.elementwise_flops,
    )
    notes = (
        "input gradient: gamma / sigma · (grad - mean(grad) - x_hat · mean(grad · x_hat)) per channel"
        if trained
        else "input gradient: grad · gamma / sigma, sigma from the running variance (a constant)",
    )
    return Section(f"{op.op}: the gradient of {forward.op}; output mask: {flags}", (step,), notes)


def _lstm_layer_gradient(op: OpNode, forward: OpNode, share: BackwardShare) -> Section:
    """oneDNN's LSTM layer gradient (`costs.onednn_lstm_layer_backward_cost`), product by
    product: the gates' gradients dG (T x B x 4H) times W_ih and W_hh give the input's and the
    previous hidden state's gradients, dG's transpose times the inputs and the hidden states
    the two weights'; `backward_share` counts the first two as input MACs, the others as
    weight MACs."""
    x, w_hh = op.args[0], op.args[2]
    steps_in_time, batch, width = x.shape
    hidden = w_hh.shape[1]
    gates = f"{steps_in_time} · {batch} · 4 · {hidden}"
    steps = (
        Step(
            "input and hidden-state gradient MACs",
            "T · B · 4H · I + T · B · 4H · H",
            f"{gates} · {width} + {gates} · {hidden}",
            share.input_macs,
        ),
        Step(
            "weight gradient MACs",
            "4H · I · T · B + 4H · H · T · B",
            f"4 · {hidden} · {width} · {steps_in_time} · {batch} + 4 · {hidden} · {hidden} · {steps_in_time} · {batch}",
            share.weight_macs,
        ),
        Step(
            "elementwise FLOPs",
            "13 · T · B · H",
            f"13 · {steps_in_time} · {batch} · {hidden}",
            share.elementwise_flops,
        ),
    )
    notes = (
        "dX = dG · W_ih (T · B · 4H · I) and dh_prev = dG · W_hh (T · B · 4H · H, the first step's too: the kernel"
        " returns the initial state's gradient) are the backward input MACs; dW_ih = dG^T · X (4H · I · T · B) and"
        " dW_hh = dG^T · h_prev (4H · H · T · B) the backward weight MACs: twice the forward's products",
        "the gates' gradients dG and the biases' (dG summed over T and B) counted, by convention, as the forward"
        " cell's 13 FLOPs per hidden unit and step",
    )
    title = (
        f"{op.op}: the gradients of {forward.op}, an LSTM layer of H = {hidden} hidden units over"
        f" T = {steps_in_time} steps, B = {batch}, I = {width}"
    )
    return Section(title, steps, notes)


def _resampling_gradient(op: OpNode, forward: OpNode, share: BackwardShare) -> Section:
    """An interpolation's gradient: each output gradient, times each of the T inputs' weights
    it was read with, added into their gradients (2T per output-gradient element); a nearest
    one adds it into the one input it copied (1)."""
    mode, taps = resampling_mode(forward)
    grad = op.args[0].shape
    dims = len(forward.args[1])
    if forward.op.endswith("_aa"):
        return _antialiased_gradient(op, forward, share, mode)
    if taps is None:
        step = Step(
            "elementwise FLOPs",
            "1 per output-gradient element · numel(grad_out)",
            f"1 · {product_text(grad)}",
            share.elementwise_flops,
        )
        what = "each output gradient added into the one input it copied"
    else:
        step = Step(
            "elementwise FLOPs",
            f"2 · {taps_product(dims)} per output-gradient element · numel(grad_out)",
            f"2 · {' · '.join([str(taps)] * dims)} · {product_text(grad)}",
            share.elementwise_flops,
        )
        what = "each output gradient times each of its T inputs' weights, added into their gradients"
    return Section(f"{op.op}: the gradient of {forward.op} ({mode}): {what}", (step,))


def _antialiased_gradient(op: OpNode, forward: OpNode, share: BackwardShare, mode: str) -> Section:
    """An anti-aliased interpolation's gradient: T varies from output to output, so 2T is
    summed over them: separable, 2 · ΣT_h · ΣT_w · N · C, the windows' sums those of the
    forward's, but along an axis whose size does not change too, which its kernel filters
    (the forward copies it)."""
    steps = antialiased_window_sums(forward, copies_unchanged=False)
    grad = op.args[0].shape
    worked = " · ".join(str(step.value) for step in steps)
    steps.append(
        Step(
            "elementwise FLOPs",
            "2 · ΣT_h · ΣT_w · N · C",
            f"2 · {worked} · {grad[0]} · {grad[1]}",
            share.elementwise_flops,
        )
    )
    what = "each output gradient times each of its T inputs' weights, added into their gradients"
    return Section(f"{op.op}: the gradient of {forward.op} ({mode}, antialias=True): {what}", tuple(steps))


def _forward_macs(forward: OpNode, forward_section: ForwardSection, value: int) -> tuple[str, str]:
    """The formula and worked figures of the forward op's MACs where they are `value`."""
    section = forward_section(forward)
    step = next((s for s in section.steps if s.name == "MACs"), None) if section is not None else None
    if step is None or step.value != value:
        return "the forward's MACs", ""
    return f"the forward's MACs, {step.formula}", step.worked


def _recomputed(op: OpNode, forward: OpNode, share: BackwardShare, forward_section: ForwardSection) -> Section:
    steps = []
    if share.recomputed_macs:
        formula, worked = _forward_macs(forward, forward_section, share.recomputed_macs)
        steps.append(Step("recomputed MACs", formula, worked, share.recomputed_macs))
    if share.elementwise_flops or not steps:
        steps.append(Step("elementwise FLOPs", "the forward's", "", share.elementwise_flops))
    title = f"{op.op}: run again in the backward pass (activation checkpointing)"
    return Section(title, tuple(steps), ("recomputed: counted in recomputed_macs, and in the training FLOPs",))


def _convolution_gradient(
    op: OpNode, forward: OpNode, share: BackwardShare, forward_section: ForwardSection
) -> Section:
    """convolution_backward: the input gradient (a transposed convolution of the output
    gradient), the weight gradient (the input correlated with the output gradient), each the
    forward's MACs where its output mask asks for it, and the bias gradient's sum."""
    grad, mask = op.args[0], op.args[-1]
    wants_input, wants_weight, wants_bias = mask
    steps = []
    for name, wanted, value, why in (
        ("input gradient MACs", wants_input, share.input_macs, _FIRST_LAYER),
        ("weight gradient MACs", wants_weight, share.weight_macs, "the weights are frozen (requires_grad False)"),
    ):
        if wanted:
            steps.append(Step(name, *_forward_macs(forward, forward_section, value), value))
        else:
            steps.append(Step(name, f"none: {why}", "", 0))
    if wants_bias:
        steps.append(
            Step(
                "bias gradient elementwise FLOPs",
                "numel(grad_out) (the output gradient summed over N and space)",
                product_text(grad.shape),
                share.elementwise_flops,
            )
        )
    flags = ", ".join(f"{n} {'yes' if w else 'no'}" for n, w in zip(("input", "weight", "bias"), mask, strict=True))
    title = f"{op.op}: the gradients of {forward.op}; output mask: {flags}"
    notes = (
        "input gradient: a transposed convolution of the output gradient with the weights; weight gradient: the"
        " input correlated with the output gradient; each meets every weight of every window once, as the forward",
    )
    return Section(title, tuple(steps), notes)
