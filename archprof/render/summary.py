"""The summary: per-layer rows, totals, operators not counted; and the zoo's list."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text

from archprof.render.base import bytes_cell, count_cell, dash, fitted_table, indented_layer_name
from archprof.report import Report, dims_text, visible_text
from archprof.units import human_bytes, human_count, shape_text, shapes_text

if TYPE_CHECKING:
    from archprof.zoo import ZooModel

# Per-layer columns of the summary, most important first: on a narrow terminal the last
# ones are left out (their figures stay in the totals and in every file format).
_SUMMARY_PRIORITY = ("Layer", "Output shape", "Params", "MACs", "Activations", "Receptive field", "Live after")
_SUMMARY_PRIORITY += ("FLOPs", "Type")


def summary_table(report: Report, width: int = 160) -> Group:
    """Per-layer rows grouped by top-level module, then the totals and what was not counted."""
    headings = ("Layer", "Type", "Output shape", "Params", "MACs", "FLOPs", "Activations", "Live after")
    cells: dict[str, list] = {heading: [] for heading in (*headings, "Receptive field")}
    rules = []
    previous_group, previous_depth = None, 0
    for row in report.rows():
        # A rule between top-level modules, where one of them has sub-modules.
        group = row["layer"].split(".")[0]
        rules.append(previous_group is not None and group != previous_group and max(row["depth"], previous_depth) > 1)
        previous_group, previous_depth = group, row["depth"]
        cells["Layer"].append(indented_layer_name(row))
        cells["Type"].append(visible_text(row["module_type"]))
        cells["Output shape"].append(row["output_shape"])
        cells["Params"].append(count_cell(row["param_count"]))
        cells["MACs"].append(count_cell(row["macs"]))
        cells["FLOPs"].append(count_cell(row["flops"]))
        cells["Activations"].append(bytes_cell(row["activation_bytes"]))
        cells["Live after"].append(bytes_cell(row["live_bytes"]))
        cells["Receptive field"].append(dims_text(row["receptive_field"]) or dash())
    title = f"{visible_text(report.model)}  ·  input {shapes_text(report.input_shapes)}  ·  {report.dtype}"
    if report.traced_on != "meta":
        title += f"  ·  traced by a real forward on the {report.traced_on}"
    table = fitted_table(title, cells, _SUMMARY_PRIORITY, width, keep=4, rules=rules)
    parts = [table, totals_table(report)]
    if report.totals.not_counted:
        parts.append(not_counted_table(report.totals.not_counted))
    return Group(*parts)


def totals_table(report: Report) -> Table:
    totals = report.totals
    table = Table(title="Totals", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_column("exact", justify="right", style="dim")
    counts = (
        ("Total parameters", totals.param_count),
        ("Trainable parameters", totals.trainable_param_count),
        ("Non-trainable parameters", totals.non_trainable_param_count),
        ("MACs (multiply-accumulates)", totals.macs),
        ("FLOPs (2 x MACs)", totals.flops),
        ("Elementwise FLOPs", totals.elementwise_flops),
    )
    for label, value in counts:
        table.add_row(label, human_count(value), f"{value:,}")
    sizes = (
        ("Parameter memory", totals.param_bytes),
        ("Buffer memory", totals.buffer_bytes),
        ("Activation memory (sum of layer outputs)", totals.activation_bytes),
        (f"Peak inference memory (at {visible_text(totals.peak_layer) or '(model)'})", totals.peak_memory_bytes),
    )
    for label, value in sizes:
        table.add_row(Text(label), human_bytes(value), f"{value:,} B")  # Text: the layer's name is no markup
    table.add_row("Input", shapes_text(totals.input_shapes), totals.dtype)
    return table


def not_counted_table(not_counted: dict[str, int]) -> Table:
    table = Table(title="Operators without a formula (not counted in MACs or FLOPs)", title_justify="left")
    table.add_column("Operator")
    table.add_column("Calls", justify="right")
    for op, count in sorted(not_counted.items(), key=lambda item: -item[1]):
        table.add_row(op, str(count))
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
