"""The summary: per-layer rows, totals, operators not counted; and the zoo's list."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text

from archprof.render.base import (
    Layout,
    bytes_cell,
    count_cell,
    dash,
    fitted_table,
    share_cell,
    subtotal_cell,
    tree_label,
)
from archprof.render.tree import tree_rows
from archprof.text import dims_text, totals_rows, visible_text
from archprof.units import human_count, shape_text

if TYPE_CHECKING:
    from archprof.zoo import ZooModel

# Per-layer columns of the summary, most important first: on a narrow terminal the last
# ones are left out (their figures stay in the totals and in every file format).
_SUMMARY_PRIORITY = ("Layer", "Output shape", "Params", "MACs", "% MACs", "Activations", "Receptive field")
_SUMMARY_PRIORITY += ("Live after", "% Params", "FLOPs", "Type", "Input shape", "Kernel")
# A training report's gradient MACs, shown after the forward's.
_TRAINING_HEADINGS = ("Bwd input MACs", "Bwd weight MACs")


def summary_table(report, layout: Layout = Layout()) -> Group:
    """Per-layer rows of a Report as a tree (`render.tree`: each module first, its subtotals
    in dim parentheses), then the totals and what was not counted."""
    training = _TRAINING_HEADINGS if report.training else ()
    headings = (
        "Layer",
        "Type",
        "Input shape",
        "Kernel",
        "Output shape",
        "Params",
        "% Params",
        "MACs",
        "% MACs",
        *training,
        "FLOPs",
        "Activations",
    )
    cells: dict[str, list] = {heading: [] for heading in (*headings, "Live after", "Receptive field")}
    totals = report.totals
    rules = []
    previous = None
    for node in tree_rows(report):
        row = node.row
        # A rule around each top-level module that has sub-modules.
        rules.append(previous is not None and node.level == 0 and (node.is_container or previous.is_container))
        if node.level == 0:
            previous = node
        cells["Layer"].append(tree_label(node))
        cells["Type"].append(visible_text(row["module_type"]))
        cells["Input shape"].append(row["input_shape"] or dash())
        cells["Kernel"].append(row["kernel"] or dash())
        cells["Output shape"].append(row["output_shape"])
        cells["Params"].append(subtotal_cell(node, "param_count", count_cell))
        cells["% Params"].append(subtotal_cell(node, "param_count", share_cell(totals.param_count)))
        cells["MACs"].append(subtotal_cell(node, "macs", count_cell))
        cells["% MACs"].append(subtotal_cell(node, "macs", share_cell(totals.macs)))
        if report.training:
            cells["Bwd input MACs"].append(subtotal_cell(node, "backward_input_macs", count_cell))
            cells["Bwd weight MACs"].append(subtotal_cell(node, "backward_weight_macs", count_cell))
        cells["FLOPs"].append(subtotal_cell(node, "flops", count_cell))
        cells["Activations"].append(subtotal_cell(node, "activation_bytes", bytes_cell))
        cells["Live after"].append(bytes_cell(row["live_bytes"]))
        cells["Receptive field"].append(dims_text(row["receptive_field"]) or dash())
    title = f"{visible_text(report.model)}  ·  input {report.input_text}  ·  {report.dtype}"
    if report.training:  # as memory's title says which pass it shows
        title += "  ·  training step"
    if report.batch_norm_folding is not None:  # --fold-bn: not the model's own figures
        title += "  ·  BatchNorms folded"
    if report.traced_on != "meta":
        title += f"  ·  traced by a real forward on the {report.traced_on}"
    at = _SUMMARY_PRIORITY.index("% MACs") + 1
    priority = (*_SUMMARY_PRIORITY[:at], *training, *_SUMMARY_PRIORITY[at:])
    table = fitted_table(title, cells, priority, layout, keep=4, rules=rules)
    parts = [table, totals_table(report)]
    if report.totals.not_counted:
        parts.append(not_counted_table(report.totals.not_counted))
    return Group(*parts)


def totals_table(report) -> Table:
    totals = report.totals
    table = Table(title="Totals", title_justify="left", show_header=False)
    table.add_column("what", overflow="fold")  # a long layer name wraps whole, never cut
    table.add_column("value", justify="right")
    table.add_column("exact", justify="right", style="dim")
    for label, value, exact in totals_rows(totals):
        table.add_row(Text(label), value, exact)  # Text: a layer's name in a label is no markup
    table.add_row("Input", report.input_text, f"model in {totals.dtype}")
    return table


def not_counted_table(not_counted: dict[str, int]) -> Table:
    table = Table(title="Operators without a formula (not counted in MACs or FLOPs)", title_justify="left")
    table.add_column("Operator")
    table.add_column("Calls", justify="right")
    for op, count in sorted(not_counted.items(), key=lambda item: -item[1]):
        table.add_row(Text(visible_text(op)), str(count))  # a custom operator's namespace is the user's text
    return table


def zoo_table(models: Iterable[ZooModel]) -> Table:
    table = Table(title="Built-in models", title_justify="left")
    table.add_column("Name", no_wrap=True)
    table.add_column("Params", justify="right")
    table.add_column("Default input")
    table.add_column("Description")
    for model in models:
        table.add_row(model.name, human_count(model.param_count()), shape_text(model.input_size), model.description)
    return table
