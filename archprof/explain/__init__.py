"""`archprof explain`: every figure of a layer worked out with the layer's own numbers.

Nothing here computes a figure of its own: output sizes come from the operator catalogue's
shape formulas (`operators.shapes`), MACs and elementwise FLOPs from its cost formulas
(`passes.flops.op_cost`), parameters from the parameters pass, receptive fields from the
receptive-field pass. This module lays each formula out with the layer's values put in,
reading the hyper-parameters (kernel, stride, padding, dilation, groups) from the traced
operators' arguments, so that a functional convolution is explained as a module is.

`explanation(report, layer)` gives an `Explanation` (`document`: sections of `Step`s, a
figure, its formula, the formula with the values put in, the result), `.text()` and
`.markdown()` write it; `operators` explains one operator. Here: finding the layer, and the
views of a row, a container and the whole network (the receptive-field table down it and
each stage's share of the parameters and MACs)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

from archprof.errors import ArchprofError, check_flag, shown
from archprof.explain.document import Explanation, Section, Step, flops_step, sum_step
from archprof.explain.notation import product_text
from archprof.explain.operators import operator_section
from archprof.explain.receptive_fields import field_cells, field_note
from archprof.explain.sources import Sources, first_readers
from archprof.explain.training import Training
from archprof.explain.windows import kernel_and_stride
from archprof.graph import OpNode
from archprof.passes.flops import op_cost
from archprof.passes.layers import LayerGroup, consecutive_runs, group_layers, window_lead
from archprof.passes.params import parameter_columns
from archprof.text import NARROWEST_WIDTH, counted, dims_text, field_text, layer_label, visible_text
from archprof.units import checked_count, shape_text, share_text

# A row number: ASCII digits only (str.isdigit takes '²', which int() refuses), and few of
# them (int() refuses past 4,300 digits; no report has a billion rows).
_ROW_NUMBER = re.compile(r"[0-9]{1,9}")

# -- entry points --------------------------------------------------------------------------


def explain(report: Any, layer: str | int | None = None, markdown: bool = False, width: int | None = None) -> str:
    """`explanation(report, layer)` as text (wrapped to `width`, a terminal's: under
    NARROWEST_WIDTH laid out for that width, as a table is), or as Markdown."""
    check_flag("markdown", markdown)
    if width is not None:
        width = max(checked_count("width", width, 1), NARROWEST_WIDTH)
    found = explanation(report, layer)
    return found.markdown() if markdown else found.text(width)


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
        self.fields = field_cells(graph)
        self.parameter_row: dict[str, int] = {}  # parameter name -> the row that counts it
        for index, group in enumerate(groups):
            for op in group.ops:
                for tensor in op.inputs:
                    if tensor.kind == "parameter":
                        self.parameter_row.setdefault(tensor.name, index)
        made_by = {t.id: op for op in graph.ops for t in op.outputs}
        self.sources = Sources(
            made_by=made_by,
            row_of={op.index: index for index, group in enumerate(groups) for op in group.ops},
            counted_on=self.parameter_row,
            labels=self.labels,
            first_reader=first_readers(graph.ops, made_by),
        )
        # A training report's rows: their backward pass too (`explain.training`).
        self.training = Training.of(graph, groups, self.labels) if report.training else None

    # -- finding the layer -----------------------------------------------------------------

    def find(self, layer: str | int) -> tuple[list[int], str | None]:
        """The rows named `layer`, or the container it names."""
        if isinstance(layer, int) and not isinstance(layer, bool):
            return [self._row_number(layer)], None
        try:
            text = str(layer).strip()
        except Exception:  # an object whose __str__ raises names no layer
            raise ArchprofError(
                f"layer must be a layer's name or a row number, got {shown(layer)} ({type(layer).__name__})"
            ) from None
        if text.startswith("#") and _ROW_NUMBER.fullmatch(text[1:]):
            return [self._row_number(int(text[1:]))], None
        # '' as `Report.layers` names the model's own row (its first call: '(model)' in a table).
        text = self._as_named(text) if text else layer_label("", 0)
        self._refuse_a_name_never_run(text)
        children = [p for p in self.graph.module_types if p.startswith(f"{text}.")]
        if children and text in self.graph.module_types:
            return [], text
        rows = [index for index, label in enumerate(self.labels) if label == text]
        if rows:
            return rows, None
        folding = self.report.batch_norm_folding
        into = next((f.into for f in folding.folded if f.norm == text), None) if folding is not None else None
        if into is not None:  # its row is gone: its scale and shift are the layer's weights now
            raise ArchprofError(
                f"'{visible_text(text)}' is folded into '{visible_text(into)}' (--fold-bn): explain"
                f" '{visible_text(into)}', or drop --fold-bn"
            )
        if _ROW_NUMBER.fullmatch(text):
            return [self._row_number(int(text))], None
        close = self._closest(text)
        example = f"did you mean '{visible_text(close)}'?" if close else f"e.g. '{visible_text(self.labels[0])}'"
        raise ArchprofError(
            f"no layer '{visible_text(text)}' in {visible_text(self.report.model)} ({example}): give a layer as the"
            f" summary names it or a row number, 1 to {len(self.labels)}"
        )

    def _refuse_a_name_never_run(self, text: str) -> None:
        """Refuse a name of a module held under two (`Graph.aliases`) that ran under the other
        alone: its first name, saying the rows it ran as; another, saying its first name."""
        aliases = self.graph.aliases
        if not aliases or any(g.path == text or g.path.startswith(f"{text}.") for g in self.groups):
            return
        first = aliases.get(text)
        if first is not None:
            raise ArchprofError(
                f"'{visible_text(text)}' is '{visible_text(first)}' under another name, and never ran under it:"
                f" explain '{visible_text(first)}'"
            )
        rows = zip(self.labels, self.groups, strict=True)
        ran_as = [label for label, group in rows if aliases.get(group.path) == text]
        if ran_as:
            named = ", ".join(f"'{visible_text(label)}'" for label in ran_as)
            raise ArchprofError(f"'{visible_text(text)}' ran under another name, as {named}: explain that")

    def _as_named(self, text: str) -> str:
        """The layer or container `text` names as the summary shows it, where that differs
        from its name: a control or format character as its escape ('a\\nb' for a module
        named 'a', newline, 'b'), which a shell cannot easily type, or a name's trailing
        space, which `find` strips. `text` itself where it is a name, or names none."""
        names = [*self.labels, *self.graph.module_types]
        if text in names:
            return text
        return next((name for name in names if visible_text(name) == text and name != text), text)

    def _closest(self, text: str) -> str | None:
        """The row label or container a misspelt `text` most likely meant: its own row's label
        where it names a module by its path alone ('spare' of 'spare (not called)'); else the
        closest name (difflib's ratio, at least 0.8), the first in row order on a tie."""
        own = next((label for label in self.labels if label.startswith(f"{text} (")), None)
        if own is not None:
            return own
        names = [n for n in dict.fromkeys([*self.labels, *self.graph.module_types]) if n and n != text]
        scored = [(difflib.SequenceMatcher(None, text, name).ratio(), -order, name) for order, name in enumerate(names)]
        best = max(scored, default=None)
        return best[2] if best is not None and best[0] >= 0.8 else None

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
                explained = operator_section(op, self.fields, self.sources)
                if explained is None:
                    free.append(op.op)
                else:
                    sections.append(explained)
            if free:
                free_ops = ", ".join(dict.fromkeys(free))
                sections.append(
                    Section("free operations", notes=(f"{free_ops}: data movement and creation, no arithmetic",))
                )
            sections += self._folded_into(group)
            sections.append(self._row_figures(index))
            if self.training is not None:
                sections += self.training.sections(index, self._operator_section, self.report.columns)
        first = indices[0]
        group = self.groups[first]
        rows = ", ".join(str(i + 1) for i in indices)
        plural = "s" if len(indices) > 1 else ""
        title = f"{self.labels[first]} ({group.module_type or 'functional'}), row{plural} {rows} of {len(self.groups)}"
        if len(indices) == 1:
            title += f": {self._operators(group)}"
        return Explanation(title, tuple(sections))

    def _operator_section(self, op: OpNode) -> Section | None:
        return operator_section(op, self.fields, self.sources)

    def _folded_into(self, group: LayerGroup) -> list[Section]:
        """What --fold-bn folded into this layer: its weights and bias are those of both."""
        folding = self.report.batch_norm_folding
        here = (group.path, group.call)
        norms = [f.norm for f in (folding.folded if folding else ()) if (f.into, f.into_call) == here]
        if not norms:
            return []
        rule = (
            "W' = W · gamma / sqrt(var + eps) per output channel, b' = (b - mean) · gamma / sqrt(var + eps) + beta:"
            " the norm's parameters, statistics and FLOPs are gone, the layer keeps its MACs"
        )
        return [Section(f"BatchNorm {', '.join(norms)} folded in (--fold-bn)", notes=(rule,))]

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
        terms = [(t.name, t.numel) for t in dict.fromkeys(parameters)]
        elsewhere = []  # a module never called whose parameters another row reads (an attention's out_proj)
        if not terms and group.call < 0:  # a module never called: its own parameters, as the report counts them
            own = [p for p in self.graph.parameters if p.module_path == group.path and not p.is_buffer]
            terms = [(p.name, p.numel) for p in own if p.name not in self.parameter_row]
            elsewhere = [p.name for p in own if p.name in self.parameter_row]
        steps.append(sum_step("parameters", terms, self.params["param_count"][index]))
        macs = sum(cost.macs for _, cost in costs)
        steps.append(sum_step("MACs", [(op.op, cost.macs) for op, cost in costs if cost.macs], macs))
        steps.append(flops_step(macs))
        elementwise = [(op.op, cost.elementwise_flops) for op, cost in costs if cost.elementwise_flops]
        steps.append(sum_step("elementwise FLOPs", elementwise, sum(cost.elementwise_flops for _, cost in costs)))
        outputs = group.made_outputs
        worked = " + ".join(f"{product_text(t.shape)} · {t.dtype.itemsize}" for t in outputs)
        formula = "numel · bytes per element" if outputs else ""  # no output made: no formula to fill
        steps.append(Step("activation bytes", formula, worked, sum(t.nbytes for t in outputs)))
        notes = [
            f"{name}: counted on row {self.parameter_row[name] + 1} ({self.labels[self.parameter_row[name]]}),"
            " the first to use it"
            for name in elsewhere
        ]
        if group.outputs and not outputs:
            notes.append("activation bytes: none of its own, its output being a tensor it was handed")
        not_counted = self.report.columns["not_counted"][index]
        if not_counted:
            notes.append("not counted (no formula): " + ", ".join(f"{op} x{n}" for op, n in not_counted.items()))
        field = field_note(self.fields, group.outputs[0] if group.outputs else None)
        before = next((t for op in group.ops for t in op.inputs if t.id in self.fields), None)
        if before is not None:
            notes.append(f"receptive field from the layer before: {field_note(self.fields, before)} -> {field}")
        else:
            notes.append(f"receptive field of the row's output: {field}")
        return Section("this row, as the report counts it", tuple(steps), tuple(notes))

    # -- a container -------------------------------------------------------------------------

    def container(self, path: str) -> Explanation:
        rows = self.report.columns["layer"]
        inside = [i for i, p in enumerate(rows) if p == path or p.startswith(f"{path}.")]
        parts: dict[str, list[int]] = {}
        depth = path.count(".") + 1
        for i in inside:
            child = rows[i] if rows[i] == path else ".".join(rows[i].split(".")[: depth + 1])
            parts.setdefault(child, []).append(i)
        own = [i for i in inside if rows[i] == path]
        formula = "Σ children + own operations" if own else "Σ children"
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
            steps.append(sum_step(name, terms, sum(values[i] for i in inside), formula))
        module_type = self.graph.module_types.get(path, "")
        children = [c for c in parts if c != path]
        own_text = f"{counted(len(own), 'row')} of its own operations" if own else "no operations of its own"
        notes = [f"{len(children)} child{'ren' * (len(children) != 1)}; {own_text}"]
        if self.training is not None:  # the backward is explained per row, where its operators are
            notes.append("a training step: these sums are the forward's; explain a child for its backward pass")
        summed = "its children and its own operations" if own else "its children"
        sections = [Section(f"totals: the sum of {summed}", tuple(steps), tuple(notes))]
        for index in own:
            for op in self.groups[index].ops:
                explained = operator_section(op, self.fields, self.sources)
                if explained is not None:
                    sections.append(explained)
        return Explanation(f"{path} ({module_type}), a container of rows {_row_runs(inside)}", tuple(sections))

    # -- the network ---------------------------------------------------------------------------

    def network(self) -> Explanation:
        report = self.report
        table = [("row", "layer", "kernel", "stride", "field", "jump", "start")]
        shown = None
        for index, group in enumerate(self.groups):
            windows = (kernel_and_stride(op, window_lead(op, group.ops)) for op in group.ops)
            window = next((w for w in windows if w is not None), None)
            field, stride, start = (
                report.columns[c][index] for c in ("receptive_field", "effective_stride", "receptive_field_start")
            )
            cells = (field_text(field), dims_text(stride), dims_text(start))
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
        whole = ("100%" if totals.param_count else "-", "100%" if totals.macs else "-")  # of 0: as each stage's
        stages.append(("total", "", f"{totals.param_count:,}", whole[0], f"{totals.macs:,}", whole[1]))
        sections.append(Section("share of each stage", table=tuple(stages)))
        title = f"{report.model}: input {', '.join(shape_text(s) for s in report.input_shapes)}, {report.dtype}"
        return Explanation(title, tuple(sections))


# -- helpers -----------------------------------------------------------------------------------


def _child_name(child: str, path: str) -> str:
    """A child as a term of its container's sum names it: "conv1"; "[0]" for a child of a
    Sequential, as Python indexes it (a bare "864 (0)" read as a product)."""
    if child == path:
        return "own operations"
    name = child.removeprefix(f"{path}.")
    return f"[{name}]" if name.isdigit() else name


def _share(part: int, whole: int) -> str:
    return share_text(part / whole) if whole else "-"


def _row_runs(indices: list[int]) -> str:
    """Row numbers (from 1) as runs: "1 to 4", or "1, 4 to 6" where other rows come between
    (a layer its container's forward calls between the container's own children)."""
    return ", ".join(
        f"{run[0] + 1}" if len(run) == 1 else f"{run[0] + 1} to {run[-1] + 1}" for run in consecutive_runs(indices)
    )
