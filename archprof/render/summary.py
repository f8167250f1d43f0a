"""The summary: per-layer rows, totals, operators not counted; and the zoo's list."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich import box
from rich.console import Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from archprof.render.base import (
    Layout,
    Prose,
    bytes_cell,
    count_cell,
    dash,
    fits,
    fitted_table,
    label_value_table,
    layer_name,
    share_cell,
    stacked_rows,
    subtotal_cell,
    tree_label,
)
from archprof.render.tree import top_level_rules, tree_rows, without_idle
from archprof.text import field_text, totals_rows, visible_text
from archprof.units import human_count, shape_text

if TYPE_CHECKING:
    from archprof.zoo import ZooModel

# Per-layer columns of the summary, most important first: on a narrow terminal the last
# ones are left out (their figures stay in the totals and in every file format).
# The type comes right after the figures kept always: a Sequential's rows are named 0, 1, 2.
_SUMMARY_PRIORITY = ("Layer", "Output shape", "Params", "MACs", "Type", "% MACs", "Activations", "Receptive field")
_SUMMARY_PRIORITY += ("Live after", "% Params", "FLOPs", "Input shape", "Kernel", "Elementwise FLOPs")
# A training report's gradient MACs, shown after the forward's.
_TRAINING_HEADINGS = ("Bwd input MACs", "Bwd weight MACs")


def summary_table(report, layout: Layout = Layout(), hide_idle: bool | None = None) -> Group:
    """Per-layer rows of a Report as a tree (`render.tree`: each module first, its subtotals
    in dim parentheses), then the totals and what was not counted. `hide_idle` leaves out the
    rows that ran no operation and hold no parameters (`render.tree.without_idle`, which says
    under the table how many there are)."""
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
        "Elementwise FLOPs",  # activations, pooling, norms: what FLOPs (2 x MACs) leaves out
        "Activations",
    )
    cells: dict[str, list] = {heading: [] for heading in (*headings, "Live after", "Receptive field")}
    totals = report.totals
    nodes, idle_line = without_idle(tree_rows(report), hide_idle)
    for node in nodes:
        row = node.row
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
        cells["Elementwise FLOPs"].append(subtotal_cell(node, "elementwise_flops", count_cell))
        cells["Activations"].append(subtotal_cell(node, "activation_bytes", bytes_cell))
        cells["Live after"].append(bytes_cell(row["live_bytes"]))
        cells["Receptive field"].append(field_text(row["receptive_field"]) or dash())
    title = f"{visible_text(report.model)}  ·  input {report.input_text}  ·  {report.dtype}"
    if report.training:  # as memory's title says which pass it shows
        title += "  ·  training step"
    if report.batch_norm_folding is not None:  # --fold-bn: not the model's own figures
        title += "  ·  BatchNorms folded"
    if report.traced_on != "meta":
        title += f"  ·  traced by a real forward on the {report.traced_on}"
    at = _SUMMARY_PRIORITY.index("% MACs") + 1
    priority = (*_SUMMARY_PRIORITY[:at], *training, *_SUMMARY_PRIORITY[at:])
    table = fitted_table(title, cells, priority, layout, keep=4, rules=top_level_rules(nodes))
    parts = [table, totals_table(report, layout.width)]
    if idle_line is not None:
        parts[1:1] = [Text(idle_line), Text("")]
    if report.totals.not_counted:
        parts.append(not_counted_table(report.totals.not_counted))
    return Group(*parts)


# What `summary --top` ranks rows by: key -> (column, heading, what it counts); the row's own.
RANKED_BY = {
    "macs": ("macs", "MACs", "MACs"),
    "params": ("param_count", "Params", "parameters"),
    "flops": ("flops", "FLOPs", "FLOPs"),
    "elementwise-flops": ("elementwise_flops", "Elementwise FLOPs", "elementwise FLOPs"),
    "activation": ("activation_bytes", "Activations", "activation bytes"),
}
# The ranked table's figures: (column, heading, cell writer), each beside its share of the
# total; the ranked one among them (FLOPs, 2 x MACs, only where ranked by).
_RANKED_FIGURES = (
    ("param_count", "Params", count_cell),
    ("macs", "MACs", count_cell),
    ("flops", "FLOPs", count_cell),
    ("elementwise_flops", "Elementwise FLOPs", count_cell),
    ("activation_bytes", "Activations", bytes_cell),
)
_RANKED_ALWAYS = ("param_count", "macs", "activation_bytes")


def ranked_table(report, by: str, count: int, layout: Layout = Layout()) -> Group:
    """The `count` rows with the most of `by` (a key of `RANKED_BY`), largest first (rows
    alike in it in the order they ran), those without any left out (an `idle` row, an
    Identity's, has none of any figure ranked: `--hide-idle` changes nothing here): each
    row's own figures, not its subtree's, as the summary's first figures; each beside its
    share of the model's total; then what the rows shown hold together, and the totals."""
    column, heading, what = RANKED_BY[by]
    values = report.columns[column]
    having_any = [i for i, value in enumerate(values) if value]
    ranked = sorted(having_any, key=lambda i: -values[i])[:count]
    figures = [figure for figure in _RANKED_FIGURES if figure[0] in (*_RANKED_ALWAYS, column)]
    totals = report.totals  # the shares the summary gives, of the model's totals
    cells: dict[str, list] = {"Rank": [], "Layer": [], "Type": [], "Output shape": []}
    for place, index in enumerate(ranked, start=1):
        row = report.row(index)
        cells["Rank"].append(str(place))
        cells["Layer"].append(layer_name(row))
        cells["Type"].append(visible_text(row["module_type"]))
        cells["Output shape"].append(row["output_shape"])
        for name, title, cell in figures:
            cells.setdefault(title, []).append(cell(row[name]))
            cells.setdefault(f"% {title}", []).append(share_cell(getattr(totals, name))(row[name]))
    others = [title for name, title, _ in figures if name != column]
    priority = ("Rank", "Layer", heading, f"% {heading}", "Type", "Output shape")
    priority += (*others, *(f"% {title}" for title in others))  # on a narrow terminal the shares go first
    title = (
        f"{visible_text(report.model)}  ·  input {report.input_text}  ·  the {len(ranked)} rows with the most {what}"
    )
    table = fitted_table(title, cells, priority, layout, keep=4, labels=2)
    held = sum(values[i] for i in ranked)
    share = share_cell(getattr(totals, column))(held)
    line = f"these {len(ranked)} rows hold {share} of the model's {what} ({len(having_any)} rows have any)"
    return Group(table, Text(line), Text(""), totals_table(report, layout.width))


def totals_table(report, width: int | None = None) -> Table | Group:
    """Every total, its human and exact figures; where the table does not fit `width` (None:
    any), each figure under its label (Rich cut them: '11,68…', '46.76' over 'MB')."""
    totals = report.totals
    rows = [(Text(label), value, Prose(exact, style="dim")) for label, value, exact in totals_rows(totals)]
    rows.append((Text("Input"), report.input_text, Prose(f"model in {totals.dtype}", style="dim")))
    # a long layer name wraps whole, never cut; the exact figures right-aligned
    return label_value_table("Totals", rows, width, label_overflow="fold", detail_justify="right")


def not_counted_table(not_counted: dict[str, int]) -> Table:
    table = Table(title="Operators without a formula (not counted in MACs or FLOPs)", title_justify="left")
    table.add_column("Operator")
    table.add_column("Calls", justify="right")
    for op, count in sorted(not_counted.items(), key=lambda item: -item[1]):
        table.add_row(Text(visible_text(op)), str(count))  # a custom operator's namespace is the user's text
    return table


def zoo_table(models: Iterable[ZooModel], width: int | None = None) -> Table | Group:
    """The built-in models, a row each; where the table does not fit `width` unwrapped (None:
    any width), each model's description on the lines under its name, parameters and input,
    not wrapped a word a line in a narrow column."""
    rows = [
        (model.name, human_count(model.param_count()), shape_text(model.input_size), model.description)
        for model in models
    ]
    table = Table(title="Built-in models", title_justify="left")
    table.add_column("Name", no_wrap=True)
    table.add_column("Params", justify="right", no_wrap=True)
    table.add_column("Default input")
    table.add_column("Description")
    for row in rows:
        table.add_row(*row)
    if fits(table, width, wrapping=False):
        return table
    headings = [column.header for column in table.columns]
    name, params = (max(len(text) for text in column) for column in zip(headings[:2], *rows, strict=False))
    if name + params + max(len(row[2]) for row in rows) + 6 + 2 <= width:  # a model's line and the table's edges
        return _zoo_list(rows, width, name, params)
    # Narrower still (its input wrapped under its name, "Default" cut to "…"): a model's figures under its name.
    cells = dict(zip(headings, ([row[i] for row in rows] for i in range(len(headings))), strict=True))
    return stacked_rows(Text("Built-in models"), cells, width=width)


def _zoo_list(rows: list[tuple[str, str, str, str]], width: int, name: int, params: int) -> Table:
    """The zoo with each description under its model's line (the names, figures and shapes,
    ASCII all, aligned as a table's columns, `name` and `params` wide), a line's worth of room
    for it. The last heading takes two lines where the headings do not fit on one, as a table's heading wraps."""
    headings = ("Name", "Params", "Default input")

    def line(cells) -> str:
        return f"{cells[0]:<{name}}   {cells[1]:>{params}}   {cells[2]}"

    heading = line(headings)
    if len(heading) + 2 > width:  # the table's edges take a character each side
        over, _, under = headings[2].partition(" ")
        heading = line(("", "", over)) + "\n" + line((*headings[:2], under))
    table = Table(title="Built-in models", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column(heading)
    for row in rows:
        table.add_row(Group(Text(line(row)), Padding(Text(row[3], style="dim"), (0, 0, 0, 2))))
    return table
