"""Rich tables. Rendering knows nothing of torch: it takes a Report (or plain rows)."""

from __future__ import annotations

import io

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from archprof.report import Report, shapes_text
from archprof.units import human_bytes, human_count

# Per-layer columns of the summary, most important first: on a narrow terminal the last
# ones are left out (their figures stay in the totals and in every file format) rather
# than cutting numbers short.
_SUMMARY_COLUMNS = ("Layer", "Output shape", "Params", "MACs", "Activations", "FLOPs", "Type")


def summary_table(report: Report, width: int = 160) -> Group:
    """Per-layer rows grouped by top-level module, then the totals and what was not counted."""
    cells = {name: [] for name in _SUMMARY_COLUMNS}
    rules = []
    previous_group, previous_depth = None, 0
    for row in report.rows():
        # A rule between top-level modules, where one of them has sub-modules.
        group = row["layer"].split(".")[0]
        rules.append(previous_group is not None and group != previous_group and max(row["depth"], previous_depth) > 1)
        previous_group, previous_depth = group, row["depth"]
        cells["Layer"].append("  " * max(row["depth"] - 1, 0) + _layer_name(row))
        cells["Type"].append(row["module_type"])
        cells["Output shape"].append(row["output_shape"])
        cells["Params"].append(_count(row["param_count"]))
        cells["MACs"].append(_count(row["macs"]))
        cells["FLOPs"].append(_count(row["flops"]))
        cells["Activations"].append(human_bytes(row["activation_bytes"]) if row["activation_bytes"] else "-")

    widths = {name: max(len(name), *(len(str(c)) for c in column)) for name, column in cells.items()}
    shown = list(_SUMMARY_COLUMNS)
    while len(shown) > 4 and sum(widths[n] + 2 for n in shown) > width:
        shown.pop()
    table = Table(
        title=f"{report.model}  ·  input {shapes_text(report.input_shapes)}  ·  {report.dtype}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    order = [n for n in ("Layer", "Type", "Output shape", "Params", "MACs", "FLOPs", "Activations") if n in shown]
    for name in order:
        justify = "left" if name in ("Layer", "Type", "Output shape") else "right"
        table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis")
    for index, rule in enumerate(rules):
        if rule:
            table.add_section()
        table.add_row(*(cells[name][index] for name in order))
    parts = [table, totals_table(report)]
    if report.totals.not_counted:
        parts.append(not_counted_table(report.totals.not_counted))
    return Group(*parts)


def _layer_name(row: dict) -> str:
    name = row["layer"] or "(model)"
    if row["call"] > 0:
        return f"{name} (call {row['call'] + 1})"
    if row["call"] < 0:
        return f"{name} (not called)"
    return name


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
    )
    for label, value in sizes:
        table.add_row(label, human_bytes(value), f"{value:,} B")
    table.add_row("Input", shapes_text(totals.input_shapes), totals.dtype)
    return table


def not_counted_table(not_counted: dict[str, int]) -> Table:
    table = Table(title="Operators without a formula (not counted in MACs or FLOPs)", title_justify="left")
    table.add_column("Operator")
    table.add_column("Calls", justify="right")
    for op, count in sorted(not_counted.items(), key=lambda item: -item[1]):
        table.add_row(op, str(count))
    return table


def zoo_table(rows: list[tuple[str, int, str, str]]) -> Table:
    table = Table(title="Built-in models", title_justify="left")
    table.add_column("Name", no_wrap=True)
    table.add_column("Params", justify="right")
    table.add_column("Default input")
    table.add_column("Description")
    for name, params, size, description in rows:
        table.add_row(name, human_count(params), size, description)
    return table


def to_text(renderable, width: int = 160) -> str:
    """Render to plain text (for --output with the table format)."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def _count(value: int) -> Text | str:
    return human_count(value) if value else Text("-", style="dim")
