"""`archprof explain`: every figure of a layer worked out with the layer's own numbers.

Nothing here computes a figure of its own: output sizes come from the operator catalogue's
shape formulas (`operators.shapes`), MACs and elementwise FLOPs from its cost formulas
(`passes.flops.op_cost`), parameters from the parameters pass, receptive fields from the
receptive-field pass. This module lays each formula out with the layer's values put in,
reading the hyper-parameters (kernel, stride, padding, dilation, groups) from the traced
operators' arguments, so that a functional convolution is explained as a module is.

`explanation(report, layer)` gives an `Explanation` (sections of `Step`s: a figure, its
formula, the formula with the values put in, the result); `.text()` and `.markdown()`
write it. Without a layer: the receptive-field table down the network and each stage's
share of the parameters and MACs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

from archprof.errors import ArchprofError
from archprof.graph import OpNode, TensorMeta
from archprof.operators import Family, operator_named
from archprof.operators.costs import expand
from archprof.operators.shapes import conv_output_size, pool_output_size, transposed_conv_output_size
from archprof.passes.flops import op_cost
from archprof.passes.fold_bn import BATCH_NORMS
from archprof.passes.layers import LayerGroup, group_layers
from archprof.passes.params import parameter_columns
from archprof.passes.receptive_field import tensor_fields
from archprof.passes.receptive_field.walk import Extent, Field, Undefined
from archprof.text import dims_text, layer_label, markdown_cell, visible_text
from archprof.units import shape_text

# -- what an explanation is ------------------------------------------------------------------

Value = int | tuple[int, ...] | str


@dataclass(frozen=True, slots=True)
class Step:
    """One figure: `name = formula = worked = result`; `worked` is the formula with this
    layer's values put in ("" where the formula has no letters to replace)."""

    name: str
    formula: str
    worked: str
    value: Value

    @property
    def result(self) -> str:
        return value_text(self.value)


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    steps: tuple[Step, ...] = ()
    notes: tuple[str, ...] = ()
    table: tuple[tuple[str, ...], ...] = ()  # a header row, then rows


@dataclass(frozen=True, slots=True)
class Explanation:
    title: str
    sections: tuple[Section, ...]

    def steps(self, name: str) -> list[Step]:
        """Every step named `name`, in order (tests read the figures back this way)."""
        return [step for section in self.sections for step in section.steps if step.name == name]

    def text(self) -> str:
        lines = [visible_text(self.title), ""]
        for section in self.sections:
            lines.append(visible_text(section.title))
            lines += [f"  {_step_line(step)}" for step in section.steps]
            lines += [f"  {visible_text(note)}" for note in section.notes]
            lines += [f"  {row}" for row in _aligned(section.table)]
            lines.append("")
        return "\n".join(lines).rstrip("\n") + "\n"

    def markdown(self) -> str:
        lines = [f"### {markdown_cell(self.title)}", ""]
        for section in self.sections:
            lines += [f"**{markdown_cell(section.title)}**", ""]
            if section.steps:
                lines += ["| figure | formula | with this layer's values | result |", "|---|---|---|---|"]
                for step in section.steps:
                    cells = (step.name, step.formula, step.worked, step.result)
                    lines.append("| " + " | ".join(markdown_cell(cell) for cell in cells) + " |")
                lines.append("")
            lines += [f"- {markdown_cell(note)}" for note in section.notes]
            if section.notes:
                lines.append("")
            if section.table:
                header, *rows = section.table
                lines += ["| " + " | ".join(map(markdown_cell, header)) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(map(markdown_cell, row)) + " |" for row in rows]
                lines.append("")
        return "\n".join(lines).rstrip("\n") + "\n"


def value_text(value: Value) -> str:
    """12845056 -> '12,845,056'; (1, 64, 224, 224) -> '1x64x224x224'."""
    if isinstance(value, tuple):
        return shape_text(value)
    return f"{value:,}" if isinstance(value, int) else value


def _step_line(step: Step) -> str:
    parts = [step.name]
    for part in (step.formula, step.worked):
        if part and part != parts[-1] and part != step.result:
            parts.append(part)
    parts.append(step.result)
    return visible_text(" = ".join(parts))


def _aligned(table: tuple[tuple[str, ...], ...]) -> list[str]:
    if not table:
        return []
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return [
        "  ".join(visible_text(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]


# -- entry points --------------------------------------------------------------------------


def explain(report: Any, layer: str | int | None = None, markdown: bool = False) -> str:
    """`explanation(report, layer)` as text, or as Markdown."""
    found = explanation(report, layer)
    return found.markdown() if markdown else found.text()


def explanation(report: Any, layer: str | int | None = None) -> Explanation:
    """The explanation of one layer of an archprof Report: a row (its label as the summary
    shows it, 'layer1.0.conv1' or 'relu (call 2)', or its number, 1 for the first; '#3' is
    always a row number, a plain number only where no layer has that name), or a container
    ('layer1.0': its children's totals and its own operations). None: the whole network."""
    context = _Context(report)
    if layer is None:
        return context.network()
    rows, container = context.find(layer)
    if container is not None:
        return context.container(container)
    return context.rows(rows)


class _Context:
    """A report, the graph it came from, and what every explanation reads of them."""

    def __init__(self, report: Any) -> None:
        graph = report.graph
        groups = group_layers(graph) if graph is not None else []
        if graph is None or len(groups) != len(report):
            raise ArchprofError(
                "explain needs the report archprof.analyze returned (not rolled up, not read from a file)"
            )
        self.report = report
        self.graph = graph
        self.groups = groups
        self.labels = [layer_label(g.path, g.call) for g in groups]
        self.params = parameter_columns(graph, groups)
        self.fields, _ = tensor_fields(graph)
        self.parameter_row: dict[str, int] = {}  # parameter name -> the row that counts it
        for index, group in enumerate(groups):
            for op in group.ops:
                for tensor in op.inputs:
                    if tensor.kind == "parameter":
                        self.parameter_row.setdefault(tensor.name, index)

    # -- finding the layer -----------------------------------------------------------------

    def find(self, layer: str | int) -> tuple[list[int], str | None]:
        """The rows named `layer`, or the container it names."""
        if isinstance(layer, int) and not isinstance(layer, bool):
            return [self._row_number(layer)], None
        text = str(layer).strip()
        if text.startswith("#") and text[1:].isdigit():
            return [self._row_number(int(text[1:]))], None
        children = [p for p in self.graph.module_types if p.startswith(f"{text}.")] if text else []
        if children and text in self.graph.module_types:
            return [], text
        rows = [index for index, label in enumerate(self.labels) if label == text]
        if rows:
            return rows, None
        if text.isdigit():
            return [self._row_number(int(text))], None
        raise ArchprofError(
            f"no layer '{visible_text(text)}' in {visible_text(self.report.model)}: give a layer as the summary"
            f" names it (e.g. '{visible_text(self.labels[0])}') or a row number, 1 to {len(self.labels)}"
        )

    def _row_number(self, number: int) -> int:
        if not 1 <= number <= len(self.groups):
            raise ArchprofError(f"row {number} does not exist: {self.report.model} has rows 1 to {len(self.groups)}")
        return number - 1

    # -- a row -------------------------------------------------------------------------------

    def rows(self, indices: Sequence[int]) -> Explanation:
        sections: list[Section] = []
        for index in indices:
            group = self.groups[index]
            if len(indices) > 1:
                sections.append(Section(f"row {index + 1}: {self._operators(group)}"))
            free = []
            for op in group.ops:
                explained = self._operator(op)
                if explained is None:
                    free.append(op.op)
                else:
                    sections.append(explained)
            if free:
                free_ops = ", ".join(dict.fromkeys(free))
                sections.append(
                    Section("free operations", notes=(f"{free_ops}: data movement and creation, no arithmetic",))
                )
            sections.append(self._row_figures(index))
        first = indices[0]
        group = self.groups[first]
        rows = ", ".join(str(i + 1) for i in indices)
        plural = "s" if len(indices) > 1 else ""
        title = f"{self.labels[first]} ({group.module_type or 'functional'}), row{plural} {rows} of {len(self.groups)}"
        if len(indices) == 1:
            title += f": {self._operators(group)}"
        return Explanation(title, tuple(sections))

    @staticmethod
    def _operators(group: LayerGroup) -> str:
        return " ".join(dict.fromkeys(op.op for op in group.ops)) or "no operation"

    def _row_figures(self, index: int) -> Section:
        """The row's own figures, as the report's columns hold them."""
        group = self.groups[index]
        costs = [(op, op_cost(op)) for op in group.ops]
        costs = [(op, cost) for op, cost in costs if cost is not None]
        steps = []
        parameters = [
            t for op in group.ops for t in op.inputs if t.kind == "parameter" and self.parameter_row[t.name] == index
        ]
        parameters = list(dict.fromkeys(parameters))
        steps.append(
            _sum_step("parameters", [(t.name, t.numel) for t in parameters], self.params["param_count"][index])
        )
        macs = sum(cost.macs for _, cost in costs)
        steps.append(_sum_step("MACs", [(op.op, cost.macs) for op, cost in costs if cost.macs], macs))
        steps.append(Step("FLOPs", "2 · MACs", f"2 · {macs:,}", 2 * macs))
        elementwise = [(op.op, cost.elementwise_flops) for op, cost in costs if cost.elementwise_flops]
        steps.append(_sum_step("elementwise FLOPs", elementwise, sum(cost.elementwise_flops for _, cost in costs)))
        outputs = [t for t in group.outputs]
        worked = " + ".join(f"{_product(t.shape)} · {t.dtype.itemsize}" for t in outputs)
        steps.append(
            Step("activation bytes", "numel · bytes per element", worked or "0", sum(t.nbytes for t in outputs))
        )
        notes = []
        not_counted = self.report.columns["not_counted"][index]
        if not_counted:
            notes.append("not counted (no formula): " + ", ".join(f"{op} x{n}" for op, n in not_counted.items()))
        field = self._field_note(group.outputs[0] if group.outputs else None)
        before = next((t for op in group.ops for t in op.inputs if self.fields.get(t.id) is not None), None)
        if before is not None:
            notes.append(f"receptive field from the layer before: {self._field_note(before)} -> {field}")
        else:
            notes.append(f"receptive field of the row's output: {field}")
        return Section("this row, as the report counts it", tuple(steps), tuple(notes))

    def _field_note(self, tensor: TensorMeta | None) -> str:
        state = self.fields.get(tensor.id) if tensor is not None else None
        if isinstance(state, Field):
            spans = state.spans
            jump = tuple(s.jump for s in spans)
            jump_text = "undefined" if None in jump else shape_text(jump)
            return (
                f"field {shape_text(tuple(s.size for s in spans))}, jump {jump_text},"
                f" start {dims_text(tuple(s.start for s in spans))}"
            )
        if isinstance(state, Extent):
            return "the whole input"
        if isinstance(state, Undefined):
            return f"undefined ({state.reason})"
        return "none (no spatial field)"

    # -- one operator ------------------------------------------------------------------------

    def _operator(self, op: OpNode) -> Section | None:
        """The operator's own formulas, or None for a free one (data movement, creation)."""
        if op.op in ("aten.convolution", "aten._convolution"):
            return self._convolution(op)
        if op.op in ("aten.addmm", "aten.mm", "aten._addmm_activation"):
            return self._matrix_product(op)
        if op.op in BATCH_NORMS:
            return self._batch_norm(op)
        if op.op in (
            "aten.max_pool2d_with_indices",
            "aten.max_pool3d_with_indices",
            "aten.avg_pool2d",
            "aten.avg_pool3d",
        ):
            return self._pool(op)
        if op.op == "aten.cat":
            return self._cat(op)
        return self._by_catalogue(op)

    def _convolution(self, op: OpNode) -> Section:
        x, w, bias = op.args[0], op.args[1], op.args[2]
        stride, padding, dilation, transposed, output_padding, groups = op.args[3:9]
        dims = len(w.shape) - 2
        stride, padding, dilation = (expand(v, dims) for v in (stride, padding, dilation))
        names = _spatial_names(dims)
        kernel = w.shape[2:]
        c_in = x.shape[1]
        c_out = w.shape[1] * groups if transposed else w.shape[0]
        kind = "transposed convolution" if transposed else "convolution"
        if groups > 1:
            kind = f"depthwise {kind} (G = C_in = {groups})" if groups == c_in else f"grouped {kind} (G = {groups})"
        steps = []
        sizes = []
        for d, name in enumerate(names):
            size_in, k, s, p, dl = x.shape[2 + d], kernel[d], stride[d], padding[d], dilation[d]
            if transposed:
                op_pad = expand(output_padding, dims)[d]
                size = transposed_conv_output_size(size_in, k, s, p, dl, op_pad)
                formula = f"({name}_in - 1) S - 2P + D (K - 1) + output_padding + 1"
                worked = f"({size_in} - 1) · {s} - 2 · {p} + {dl} · ({k} - 1) + {op_pad} + 1"
            else:
                size = conv_output_size(size_in, k, s, p, dl)
                formula = f"floor(({name}_in + 2P - D (K - 1) - 1) / S) + 1"
                worked = f"floor(({size_in} + 2 · {p} - {dl} · ({k} - 1) - 1) / {s}) + 1"
            steps.append(Step(f"{name}_out", formula, worked, size))
            sizes.append(size)
        spatial = " x ".join(f"{n}_out" for n in names)
        out = (x.shape[0], c_out, *sizes)
        steps.append(Step("output shape", f"N x C_out x {spatial}", " x ".join(map(str, out)), out))
        k_letters = " · ".join(f"K_{n.lower()}" for n in names)
        k_values = " · ".join(map(str, kernel))
        if transposed:
            weight_formula, weight_worked = (
                f"C_in · (C_out / G) · {k_letters}",
                f"{c_in} · ({c_out} / {groups}) · {k_values}",
            )
        else:
            weight_formula, weight_worked = (
                f"C_out · (C_in / G) · {k_letters}",
                f"{c_out} · ({c_in} / {groups}) · {k_values}",
            )
        steps.append(Step("weights", weight_formula, weight_worked, w.numel))
        bias_count = bias.numel if isinstance(bias, TensorMeta) else 0
        steps.append(Step("bias", "C_out" if bias_count else "none", "", bias_count))
        steps.append(Step("parameters", "weights + bias", f"{w.numel:,} + {bias_count:,}", w.numel + bias_count))
        macs = op_cost(op).macs
        if transposed:
            in_letters = " · ".join(f"{n}_in" for n in names)
            formula = f"N · C_in · {in_letters} · (C_out / G) · {k_letters}"
            worked = f"{x.shape[0]} · {c_in} · {' · '.join(map(str, x.shape[2:]))} · ({c_out} / {groups}) · {k_values}"
        else:
            out_letters = " · ".join(f"{n}_out" for n in names)
            formula = f"N · C_out · {out_letters} · (C_in / G) · {k_letters}"
            worked = f"{x.shape[0]} · {c_out} · {' · '.join(map(str, sizes))} · ({c_in} / {groups}) · {k_values}"
        steps.append(Step("MACs", formula, worked, macs))
        steps.append(Step("FLOPs", "2 · MACs", f"2 · {macs:,}", 2 * macs))
        setting = (
            f"input {shape_text(x.shape)}, weight {shape_text(w.shape)}, bias {'yes' if bias_count else 'no'},"
            f" stride {shape_text(stride)}, padding {shape_text(padding)}, dilation {shape_text(dilation)},"
            f" groups {groups}"
        )
        steps += self._window_field(op, x, kernel, stride, padding, dilation)
        return Section(f"{op.op}: a {kind}; {setting}", tuple(steps))

    def _matrix_product(self, op: OpNode) -> Section:
        has_bias = op.op != "aten.mm"
        bias = op.args[0] if has_bias else None
        a, b = op.args[1:3] if has_bias else op.args[0:2]
        n, k, m = a.shape[0], a.shape[1], b.shape[1]
        cost = op_cost(op)
        steps = [
            Step("output shape", "rows x out", f"{n} x {m}", tuple(op.outputs[0].shape)),
            Step("weights", "in · out", f"{k} · {m}", k * m),
        ]
        bias_count = bias.numel if isinstance(bias, TensorMeta) else 0
        steps.append(Step("bias", "out" if bias_count else "none", "", bias_count))
        steps.append(Step("parameters", "weights + bias", f"{k * m:,} + {bias_count:,}", k * m + bias_count))
        steps.append(Step("MACs", "rows · in · out", f"{n} · {k} · {m}", cost.macs))
        steps.append(Step("FLOPs", "2 · MACs", f"2 · {cost.macs:,}", 2 * cost.macs))
        if cost.elementwise_flops:
            steps.append(
                Step(
                    "elementwise FLOPs",
                    "1 · numel(out) (the fused activation)",
                    _product(op.outputs[0].shape),
                    cost.elementwise_flops,
                )
            )
        title = f"{op.op}: a matrix product [{n}, {k}] @ [{k}, {m}], a linear layer {k} -> {m} over {n} row(s)"
        notes = ("the bias addition is not counted, as in PyTorch's FlopCounterMode",) if bias_count else ()
        return Section(title, tuple(steps), notes)

    def _batch_norm(self, op: OpNode) -> Section:
        x = op.args[0]
        channels = x.shape[1]
        cost = op_cost(op)
        per_element = cost.elementwise_flops // x.numel if x.numel else 0
        state = [t for t in op.args[1:5] if isinstance(t, TensorMeta)]
        scale_shift = sum(t.numel for t in op.args[1:3] if isinstance(t, TensorMeta))
        statistics = sum(t.numel for t in op.args[3:5] if isinstance(t, TensorMeta))
        why = "scale and shift" if per_element == 2 else "mean 1, variance 2, normalise and affine 2"
        steps = [
            Step(
                "parameters",
                "2C (scale and shift)" if scale_shift else "none (affine=False)",
                f"2 · {channels}" if scale_shift else "",
                scale_shift,
            ),
            Step(
                "running statistics (buffers)",
                "2C (mean and variance)" if statistics else "none",
                f"2 · {channels}" if statistics else "",
                statistics,
            ),
            Step(
                "elementwise FLOPs",
                f"{per_element} ({why}) · numel",
                f"{per_element} · {_product(x.shape)}",
                cost.elementwise_flops,
            ),
        ]
        mode = "inference: a fixed per-channel affine map" if per_element == 2 else "computing its batch statistics"
        notes = () if state else ("computed scale and statistics",)
        return Section(f"{op.op}: BatchNorm over {channels} channels, {mode}", tuple(steps), notes)

    def _pool(self, op: OpNode) -> Section:
        x = op.args[0]
        maximum = op.op.startswith("aten.max")
        dims = 3 if "3d" in op.op else 2
        kernel = expand(_arg(op, 1, "kernel_size"), dims)
        stride = _arg(op, 2, "stride", ())
        stride = expand(stride, dims) if stride else kernel
        padding = expand(_arg(op, 3, "padding", 0), dims)
        dilation = expand(_arg(op, 4, "dilation", 1), dims) if maximum else (1,) * dims
        ceil_mode = bool(_arg(op, 5 if maximum else 4, "ceil_mode", False))
        names = _spatial_names(dims)
        steps = []
        sizes = []
        for d, name in enumerate(names):
            size_in, k, s, p, dl = x.shape[-dims + d], kernel[d], stride[d], padding[d], dilation[d]
            size = pool_output_size(size_in, k, s, p, dl, ceil_mode)
            rounding = "ceil" if ceil_mode else "floor"
            steps.append(
                Step(
                    f"{name}_out",
                    f"{rounding}(({name}_in + 2P - D (K - 1) - 1) / S) + 1",
                    f"{rounding}(({size_in} + 2 · {p} - {dl} · ({k} - 1) - 1) / {s}) + 1",
                    size,
                )
            )
            sizes.append(size)
        out = (*x.shape[:-dims], *sizes)
        steps.append(
            Step("output shape", "N x C x " + " x ".join(f"{n}_out" for n in names), " x ".join(map(str, out)), out)
        )
        window = prod(kernel)
        cost = op_cost(op)
        if maximum:
            steps.append(
                Step(
                    "elementwise FLOPs",
                    "(K - 1) comparisons · numel(out)",
                    f"({window} - 1) · {_product(out)}",
                    cost.elementwise_flops,
                )
            )
        else:
            steps.append(
                Step(
                    "elementwise FLOPs",
                    "K (K - 1 additions, a division) · numel(out)",
                    f"{window} · {_product(out)}",
                    cost.elementwise_flops,
                )
            )
        steps += self._window_field(op, x, kernel, stride, padding, dilation)
        kind = "max-pool" if maximum else "average-pool"
        setting = f"kernel {shape_text(kernel)}, stride {shape_text(stride)}, padding {shape_text(padding)}"
        return Section(f"{op.op}: a {kind} of {shape_text(x.shape)}; {setting}", tuple(steps))

    def _cat(self, op: OpNode) -> Section:
        tensors = [t for t in op.args[0] if isinstance(t, TensorMeta)]
        out = op.outputs[0].shape
        dim = _arg(op, 1, "dim", 0) % len(out)
        sizes = " + ".join(str(t.shape[dim]) for t in tensors)
        steps = (
            Step(f"size along dimension {dim}", "sum of the inputs' sizes", sizes, out[dim]),
            Step("output shape", "", "", tuple(out)),
        )
        return Section(
            f"{op.op}: a concatenation of {len(tensors)} tensors along dimension {dim}",
            steps,
            ("data movement: no arithmetic",),
        )

    def _by_catalogue(self, op: OpNode) -> Section | None:
        operator = operator_named(op.op)
        if operator is None:
            return Section(f"{op.op}: not in the catalogue", notes=("not counted: archprof has no formula for it",))
        if operator.family in (Family.DATA_MOVEMENT, Family.CREATION):
            return None
        cost = op_cost(op)
        out = op.outputs[0].shape if op.outputs else ()
        steps = []
        if cost.macs:
            steps.append(Step("MACs", _formula_of(operator.cost), "", cost.macs))
            steps.append(Step("FLOPs", "2 · MACs", f"2 · {cost.macs:,}", 2 * cost.macs))
        steps.append(_elementwise_step(op, operator.cost, cost.elementwise_flops, out))
        inputs = ", ".join(shape_text(t.shape) for t in op.inputs) or "no tensor"
        what = (
            "a residual merge"
            if op.op in ("aten.add", "aten.add_") and sum(t.kind in ("activation", "input") for t in op.inputs) > 1
            else operator.family.value
        )
        notes = [f"output {shape_text(out)} from {inputs}"]
        notes += self._merge_note(op)
        return Section(f"{op.op}: {what}", tuple(steps), tuple(notes))

    # -- receptive fields --------------------------------------------------------------------

    def _window_field(self, op: OpNode, x: TensorMeta, kernel, stride, padding, dilation) -> list[Step]:
        """The receptive-field step of a window (convolution, pooling): the recurrence worked
        with the field before it, the results the receptive-field pass's."""
        before, after = self.fields.get(x.id), self.fields.get(op.outputs[0].id)
        if not isinstance(before, Field) or not isinstance(after, Field) or op.args[6:7] == (True,):
            return [Step("receptive field", "", "", self._field_note(op.outputs[0]))]
        steps = []
        names = _spatial_names(len(kernel))
        for d, name in enumerate(names):
            span, new = before.spans[d], after.spans[d]
            tag = f"_{name.lower()}" if len(names) > 1 else ""
            k, s, p, dl, j = kernel[d], stride[d], padding[d], dilation[d], span.jump
            steps.append(
                Step(f"r{tag}", "r_prev + D (K - 1) j_prev", f"{span.size} + {dl} · ({k} - 1) · {j}", new.size)
            )
            steps.append(Step(f"j{tag}", "j_prev · S", f"{j} · {s}", new.jump if new.jump is not None else "undefined"))
            steps.append(Step(f"start{tag}", "start_prev - P · j_prev", f"{span.start} - {p} · {j}", new.start))
        return steps

    def _merge_note(self, op: OpNode) -> list[str]:
        fielded = [t for t in op.inputs if isinstance(self.fields.get(t.id), Field)]
        if len(fielded) < 2 or not op.outputs:
            return []
        parts = "; ".join(self._field_note(t) for t in fielded)
        merged = self._field_note(op.outputs[0])
        return [f"receptive field: the union of its inputs' ({parts}): smallest start, largest end -> {merged}"]

    # -- a container -------------------------------------------------------------------------

    def container(self, path: str) -> Explanation:
        rows = self.report.columns["layer"]
        inside = [i for i, p in enumerate(rows) if p == path or p.startswith(f"{path}.")]
        parts: dict[str, list[int]] = {}
        depth = path.count(".") + 1
        for i in inside:
            child = rows[i] if rows[i] == path else ".".join(rows[i].split(".")[: depth + 1])
            parts.setdefault(child, []).append(i)
        steps = []
        for column, name in (
            ("param_count", "parameters"),
            ("macs", "MACs"),
            ("flops", "FLOPs"),
            ("elementwise_flops", "elementwise FLOPs"),
            ("activation_bytes", "activation bytes"),
        ):
            values = self.report.columns[column]
            terms = [(_child_name(child, path), sum(values[i] for i in indices)) for child, indices in parts.items()]
            steps.append(_sum_step(name, terms, sum(values[i] for i in inside)))
        module_type = self.graph.module_types.get(path, "")
        children = [c for c in parts if c != path]
        own = [i for i in inside if rows[i] == path]
        notes = [f"{len(children)} children; {len(own)} row(s) of its own operations"]
        sections = [Section("totals: the sum of its children and its own operations", tuple(steps), tuple(notes))]
        for index in own:
            for op in self.groups[index].ops:
                explained = self._operator(op)
                if explained is not None:
                    sections.append(explained)
        return Explanation(
            f"{path} ({module_type}), a container of rows {inside[0] + 1} to {inside[-1] + 1}", tuple(sections)
        )

    # -- the network ---------------------------------------------------------------------------

    def network(self) -> Explanation:
        report = self.report
        table = [("row", "layer", "kernel", "stride", "field", "jump", "start")]
        shown = None
        for index, group in enumerate(self.groups):
            window = next((_window(op) for op in group.ops if _window(op) is not None), None)
            cells = tuple(
                dims_text(report.columns[c][index])
                for c in ("receptive_field", "effective_stride", "receptive_field_start")
            )
            if cells[0] and (window is not None or cells != shown):
                kernel, stride = window if window is not None else ("-", "-")
                table.append((str(index + 1), self.labels[index], kernel, stride, *cells))
                shown = cells
        sections = [
            Section(
                "receptive field down the network",
                notes=(
                    "r = r_prev + D (K - 1) j_prev, j = j_prev · S, start = start_prev - P · j_prev (per spatial"
                    " dimension); merges take the union; the rows where the field changes",
                ),
                table=tuple(table),
            )
        ]
        totals = report.totals
        stages = [("stage", "type", "parameters", "share", "MACs", "share")]
        modules = report.by_module(depth=1)
        for module, kind, params, macs in zip(
            modules["module"], modules["module_type"], modules["param_count"], modules["macs"], strict=True
        ):
            if not module:
                continue
            stages.append(
                (
                    module,
                    kind,
                    f"{params:,}",
                    _share(params, totals.param_count),
                    f"{macs:,}",
                    _share(macs, totals.macs),
                )
            )
        own_params = totals.param_count - sum(
            int(p) for m, p in zip(modules["module"], modules["param_count"], strict=True) if m
        )
        own_macs = totals.macs - sum(int(p) for m, p in zip(modules["module"], modules["macs"], strict=True) if m)
        if own_params or own_macs:
            stages.append(
                (
                    "(model)",
                    "",
                    f"{own_params:,}",
                    _share(own_params, totals.param_count),
                    f"{own_macs:,}",
                    _share(own_macs, totals.macs),
                )
            )
        stages.append(("total", "", f"{totals.param_count:,}", "100%", f"{totals.macs:,}", "100%"))
        sections.append(Section("share of each stage", table=tuple(stages)))
        title = f"{report.model}: input {', '.join(shape_text(s) for s in report.input_shapes)}, {report.dtype}"
        return Explanation(title, tuple(sections))


# -- helpers -----------------------------------------------------------------------------------


def _arg(op: OpNode, index: int, name: str, default=None):
    if len(op.args) > index:
        return op.args[index]
    return op.kwargs.get(name, default)


def _spatial_names(dims: int) -> list[str]:
    return {1: ["L"], 2: ["H", "W"], 3: ["D", "H", "W"]}.get(dims, [f"X{i + 1}" for i in range(dims)])


def _product(shape: Sequence[int]) -> str:
    return "·".join(map(str, shape)) if shape else "1"


def _sum_step(name: str, terms: list[tuple[str, int]], total: int) -> Step:
    """`name = a + b + ... = total`, each term named."""
    if not terms:
        return Step(name, "", "", total)
    worked = " + ".join(f"{value:,} ({label})" for label, value in terms)
    return Step(name, "", worked if len(terms) > 1 else f"{terms[0][1]:,} ({terms[0][0]})", total)


def _child_name(child: str, path: str) -> str:
    return "own operations" if child == path else child.removeprefix(f"{path}.")


def _elementwise_step(op: OpNode, formula, flops: int, out: Sequence[int]) -> Step:
    """An operator's elementwise FLOPs: so many per output element, or per input element
    (a reduction), as its cost formula counts them; else the formula's own words."""
    doc = _formula_of(formula)
    x = op.inputs[0].shape if op.inputs else ()
    if "adaptive" in op.op:
        counted = "the sum of every output's window size"
        return Step("elementwise FLOPs", counted + (" - numel(out)" if "max" in op.op else ""), "", flops)
    if doc.endswith("per output element.") and prod(out):
        per = flops // prod(out)
        return Step("elementwise FLOPs", f"{per} per output element · numel(out)", f"{per} · {_product(out)}", flops)
    if x and prod(x) and flops % prod(x) == 0 and flops:
        per = flops // prod(x)
        return Step("elementwise FLOPs", f"{per} per input element · numel(in)", f"{per} · {_product(x)}", flops)
    return Step("elementwise FLOPs", doc, "", flops)


def _formula_of(cost) -> str:
    """The first line of a cost formula's docstring: the catalogue's words for it."""
    return (cost.__doc__ or "the catalogue's formula").strip().splitlines()[0]


def _window(op: OpNode) -> tuple[str, str] | None:
    """(kernel, stride) of a convolution or a pooling, as text; None for other operators."""
    if op.op in ("aten.convolution", "aten._convolution"):
        w = op.args[1].shape
        dims = len(w) - 2
        kernel, stride, dilation = w[2:], expand(op.args[3], dims), expand(op.args[5], dims)
        text = shape_text(kernel) + (f" (dilation {shape_text(dilation)})" if any(d != 1 for d in dilation) else "")
        return text, shape_text(stride)
    if op.op.startswith(("aten.max_pool", "aten.avg_pool")):
        dims = 3 if "3d" in op.op else 2
        kernel = expand(_arg(op, 1, "kernel_size"), dims)
        stride = _arg(op, 2, "stride", ())
        return shape_text(kernel), shape_text(expand(stride, dims) if stride else kernel)
    return None


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"
