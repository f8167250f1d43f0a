"""The memory view: live and saved activations per layer, the inference peak, the
training breakdown and the training step's peak, and measured against predicted."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text

from archprof.passes.optimizer_state import optimizer_state_copies
from archprof.render.base import (
    Layout,
    Prose,
    bytes_cell,
    columns_of,
    fits,
    fitted_table,
    label_value_table,
    stacked_rows,
    subtotal_cell,
    tree_label,
)
from archprof.render.tree import tree_rows, without_idle
from archprof.text import peak_rows, visible_text
from archprof.units import human_bytes

if TYPE_CHECKING:
    from archprof.measure.peak_memory import MeasuredMemory

# Columns of the memory table, most important first (the last go on a narrow terminal).
_MEMORY_COLUMNS = ("Layer", "Peak in layer", "Live after", "Activations", "Saved for backward", "Output shape", "Type")


def memory_table(
    report, layout: Layout = Layout(), fit=None, measured=None, on_a_page: bool = False, hide_idle: bool | None = None
) -> Group:
    """Per layer of a Report, as a tree (`render.tree`): output bytes, activation bytes live
    right after it and at its peak (and, training, what autograd saves from it), then the
    memory breakdown. A module's row holds its subtree's sums and peak in dim parentheses.
    `fit` (an archprof.fit.Fit) adds the budget's lines; `measured` (an
    archprof.measure.peak_memory.MeasuredMemory), a table of measured against predicted.
    `on_a_page`: for the HTML page, whose sections head the breakdown and give the budget's
    answer: the breakdown untitled, without the budget's lines (in its units still).
    `hide_idle`: as the summary's (`render.tree.without_idle`)."""
    totals = report.totals
    peaks = report.columns["peak_live_bytes"]
    peak_row = next((i for i, value in enumerate(peaks) if value == totals.peak_activation_bytes), None)
    headings = ("Layer", "Type", "Output shape", "Activations", "Live after", "Peak in layer", "Saved for backward")
    cells: dict[str, list] = {h: [] for h in headings if report.training or h != "Saved for backward"}
    marks = []  # after the layer's name, never cut with it
    # Every size in the budget's units, as the totals: 518.82 MB beside a budget of 512.00 MiB read as over it.
    sized = partial(bytes_cell, binary=fit is not None and fit.binary)
    nodes, idle_line = without_idle(tree_rows(report), hide_idle)
    for node in nodes:
        row = node.row
        marks.append(Text("  ◀ peak", style="bold") if peak_row in node.indices else None)
        cells["Layer"].append(tree_label(node))
        cells["Type"].append(visible_text(row["module_type"]))
        cells["Output shape"].append(row["output_shape"])
        cells["Activations"].append(subtotal_cell(node, "activation_bytes", sized))
        cells["Live after"].append(sized(row["live_bytes"]))
        # A module's peak is its subtree's: the highest of its rows'.
        cells["Peak in layer"].append(subtotal_cell(node, "peak_live_bytes", sized, own=False))
        if report.training:
            cells["Saved for backward"].append(subtotal_cell(node, "saved_activation_bytes", sized))
    mode = "training forward" if report.training else "inference"
    title = f"{visible_text(report.model)}  ·  input {report.input_text}  ·  {report.dtype}  ·  {mode}"
    if report.batch_norm_folding is not None:  # --fold-bn, as summary's title says it
        title += "  ·  BatchNorms folded"
    table = fitted_table(title, cells, _MEMORY_COLUMNS, layout, marks=marks)
    parts: list = [table, memory_totals_table(report, fit, layout.width, on_a_page)]
    if idle_line is not None:
        parts[1:1] = [Text(idle_line), Text("")]
    if measured is not None:
        parts.append(measured_table(measured, layout.width))
    return Group(*parts)


def memory_totals_table(report, fit=None, width: int | None = None, on_a_page: bool = False) -> Table | Group:
    """The breakdown: parameters, buffers, peak; training adds gradients, optimizer state,
    saved activations, the forward's peak and the training step's (backward included).
    Where the table does not fit `width` (None: any), each figure under its label.
    `on_a_page`: as `memory_table` takes it."""
    rows = _totals_rows(report, fit, answer=not on_a_page)
    title = None if on_a_page else "Memory"
    # a long layer name wraps whole, never cut; the exact bytes right-aligned
    return label_value_table(title, rows, width, label_overflow="fold", detail_justify="right")


def _totals_rows(report, fit, answer: bool = True) -> list[tuple[Text, str, Prose]]:
    """The breakdown's rows, then, with `answer`, `fit`'s budget and largest batch."""
    totals = report.totals
    rows = []
    binary = fit is not None and fit.binary  # every size in the budget's units: 8.38 MB beside 8.00 MiB read as over

    def add(label: str, value: int, style: str | None = None) -> None:
        rows.append((Text(label, style=style or ""), human_bytes(value, binary), Prose(f"{value:,} B", style="dim")))

    add("Parameters", totals.param_bytes)
    add("Buffers", totals.buffer_bytes)
    if report.training:
        copies = optimizer_state_copies(totals.optimizer)
        plural = "copy" if copies == 1 else "copies"
        add("Gradients", totals.gradient_bytes)
        add(f"Optimizer state ({totals.optimizer}: {copies} {plural})", totals.optimizer_state_bytes)
        add("Saved activations (for backward)", totals.saved_activation_bytes)
        # Not an upper bound: the step's peak also holds gradients passed between nodes.
        add("Sum of the parts above (not the step's peak)", totals.training_memory_bytes)
        forward_peak, *step_peak = peak_rows(totals)  # labelled as the summary's totals label them
        add(*forward_peak)
        for label, value in step_peak:
            add(label, value, "bold")
    else:
        peak_at = visible_text(totals.peak_layer) or "(model)"
        add(f"Peak live activations (at {peak_at})", totals.peak_activation_bytes)
        add("Peak inference memory", totals.peak_memory_bytes, "bold")  # as summary's totals name it
    rows.append((Text("Input"), report.input_text, Prose(f"model in {totals.dtype}", style="dim")))
    if fit is not None and answer:
        add("Budget", fit.budget_bytes)  # in its own units: `binary` is the fit's
        rows.append(
            (
                Text("Largest batch that fits", style="bold"),
                str(fit.batch),
                Prose(fit.beyond_text, style="dim"),
            )
        )
    return rows


def measured_table(measured: MeasuredMemory, width: int | None = None) -> Table | Group:
    """Predicted memory beside what was measured (`archprof.measure.peak_memory`): on the
    CPU with operators' workspace and without, the two figures a prediction lies between.
    Where the table does not fit `width` (None: any), each step's figures under it."""
    title = f"Measured on {measured.device}"
    # Prose: a heading wraps, never a figure ("288.55" over "kB")
    rows = [
        (step.what, *(Prose(human_bytes(f)) for f in measured.figures(step)), step.ratio_text)
        for step in measured.steps
    ]
    table = Table(title=title, title_justify="left", caption=measured.note, caption_justify="left")
    table.add_column("")
    for heading in measured.headings:
        table.add_column(heading, justify="right")
    for row in rows:
        table.add_row(*row)
    if fits(table, width):
        return table
    return stacked_rows(
        Text(title), columns_of(("", *measured.headings), rows), caption=Prose(measured.note), width=width
    )
