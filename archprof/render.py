"""Rich tables. Rendering knows nothing of torch: it takes a Report (or plain rows)."""

from __future__ import annotations

import io

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from archprof.report import Report, shapes_text
from archprof.units import human_bytes, human_count


def summary_table(report: Report) -> Group:
    """Per-layer rows grouped by top-level module, then the totals and what was not counted."""
    table = Table(
        title=f"{report.model}  ·  input {shapes_text(report.input_shapes)}  ·  {report.dtype}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("Layer", no_wrap=True, overflow="ellipsis")
    table.add_column("Type", no_wrap=True, overflow="ellipsis", max_width=18)
    # Numbers and shapes are never cut: the names give way on a narrow terminal.
    for heading, width in (("Output shape", 14), ("Params", 8), ("MACs", 9), ("FLOPs", 9), ("Activations", 11)):
        table.add_column(heading, justify="left" if heading == "Output shape" else "right", no_wrap=True, min_width=width)

    previous_group, previous_depth = None, 0
    for row in report.rows():
        # A rule between top-level modules, where one of them has sub-modules.
        group = row["layer"].split(".")[0]
        if previous_group is not None and group != previous_group and max(row["depth"], previous_depth) > 1:
            table.add_section()
        previous_group, previous_depth = group, row["depth"]
        indent = "  " * max(row["depth"] - 1, 0)
        name = row["layer"] or "(model)"
        if row["call"] > 0:
            name += f" (call {row['call'] + 1})"
        elif row["call"] < 0:
            name += " (not called)"
        table.add_row(
            indent + name,
            row["module_type"],
            row["output_shape"],
            _count(row["param_count"]),
            _count(row["macs"]),
            _count(row["flops"]),
            human_bytes(row["activation_bytes"]) if row["activation_bytes"] else "-",
        )
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
