"""One Report as a self-contained HTML page: the totals, a profile's whole-model figures and
cross-check, a sortable and filterable layer table with the module tree, and charts as
inline SVG (memory over time, receptive-field growth, the roofline when profiled). `rf` and
`memory` write their own table instead (`rf_html`, `memory_html`), as the terminal and the
Markdown show it, with their chart, in the summary page's order: figures, chart, layers. Its
frame, `page_html`, is every page's (`diff`'s, `compare`'s too).

Everything the page needs is in the file: no script, style, font or image is fetched,
and its Content-Security-Policy forbids any request, so it opens offline and leaks
nothing. Every text from the model (names, class names) is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from html import escape

from rich.console import Group

from archprof.errors import ArchprofError
from archprof.render.html_assets import SCRIPT, STYLE
from archprof.render.tree import idle, tree_rows
from archprof.report import Report
from archprof.text import dims_text, field_text, totals_rows, visible_text
from archprof.units import human_bytes, human_count, share_text

_POLICY = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


@dataclass(frozen=True)
class _Cell:
    heading: str
    column: str
    shown: Callable[[object], str]
    numeric: bool = True
    filtered: bool = False  # the filter reads its text (beside the layer's name)
    # The number a numeric column sorts by, where its value is not one: a field's or a
    # stride's area, a shape's elements (as text they sorted "11x11" before "7x7").
    key: Callable[[object], float | int | None] | None = None
    # What a module's line shows: "summed", its own figure then its subtree's in parentheses
    # (a sum over rows); "own", its own rows' (a rate of what the line times, as profile's
    # table shows it); "merged", its subtree's merged (its output, field, type).
    module: str = "merged"
    left: bool | None = None  # aligned left: text (None: where it does not sort as numbers)

    @property
    def aligned_left(self) -> bool:
        return not self.numeric if self.left is None else self.left


def _count(value) -> str:
    return human_count(value) if value else "-"


def _bytes(value) -> str:
    return human_bytes(value) if value else "-"


def field_area(dims) -> float | None:
    """A field's or a stride's product over its dimensions (a stride's may be a fraction); the
    whole input above every figure; None (sorted below every figure) for none or undefined."""
    if dims == "input":  # FieldMark.INPUT, a str
        return _ABOVE_EVERY_FIGURE
    return float(math.prod(dims)) if isinstance(dims, tuple) else None


_ABOVE_EVERY_FIGURE = 1e300


def _elements(shapes: str) -> int | None:
    """The elements of a row's output shapes as the column writes them ("1x64x56x56, 1x10")."""
    if not shapes:
        return None
    sizes = [shape.split("x") for shape in shapes.split(", ") if shape != "()"]
    return shapes.split(", ").count("()") + sum(math.prod(int(size) for size in shape) for shape in sizes)  # () is 1


def _number(value, unit: str, digits: int = 3) -> str:
    """A rate or time to `digits` figures; "-" for none, 0 (a row of no work: a flatten) or NaN (not timed)."""
    return "-" if not value or value != value else f"{value:.{digits}g} {unit}"


_CELLS = (
    _Cell("Type", "module_type", visible_text, numeric=False, filtered=True),
    # A profiled report's measurements right after the type, as profile's table has them first (a
    # report not profiled has none: the cells a page shows are those its rows hold).
    _Cell("Time", "time_ms", lambda v: _number(v, "ms"), module="summed"),
    _Cell("Share of time", "time_share", lambda v: share_text(v) if v else "-", module="summed"),
    _Cell("Roofline", "roofline_time_ms", lambda v: _number(v, "ms"), module="summed"),
    _Cell("Achieved", "achieved_flops_per_s", lambda v: _number(v and v / 1e9, "GFLOP/s"), module="own"),
    _Cell("Bound", "bound", lambda v: v or "-", numeric=False, module="own"),
    _Cell("Intensity", "arithmetic_intensity", lambda v: _number(v, "FLOP/B"), module="own"),
    _Cell("Bytes moved", "bytes_moved", _bytes, module="summed"),
    _Cell("Output shape", "output_shape", str, key=_elements, left=True),
    _Cell("Params", "param_count", _count, module="summed"),
    _Cell("MACs", "macs", _count, module="summed"),
    _Cell("Share of MACs", "macs_share", lambda v: share_text(v) if v else "-", module="summed"),
    _Cell("FLOPs", "flops", _count, module="summed"),
    _Cell("Elementwise FLOPs", "elementwise_flops", _count, module="summed"),
    _Cell("Activations", "activation_bytes", _bytes, module="summed"),
    _Cell("Live after", "live_bytes", _bytes),
    _Cell("Saved for backward", "saved_activation_bytes", _bytes, module="summed"),
    _Cell("Bwd input MACs", "backward_input_macs", _count, module="summed"),
    _Cell("Bwd weight MACs", "backward_weight_macs", _count, module="summed"),
    _Cell("Receptive field", "receptive_field", lambda v: field_text(v) or "-", key=field_area),
    _Cell("Stride", "effective_stride", lambda v: dims_text(v) or "-", key=field_area),
)


def report_html(report: Report) -> str:
    """The page for `report` (charts left out, with a note, where matplotlib is missing)."""
    sections = (
        _totals(report),
        _batch_fit(report),
        _measured(report),
        _measured_memory(report),
        _charts(report),
        _layer_table(report),
    )
    view = "profile" if report.measured is not None else "summary"
    return page_html(visible_text(report.model), _heading(report), sections, view=view)


def rf_html(report: Report, spreads: Sequence | None = None) -> str:
    """`archprof rf`'s page: its verdict and notes, the field's growth against depth, then its
    table (`render.receptive_field_table`, every column; `spreads` as it takes them)."""
    from archprof.render.fields import receptive_field_table
    from archprof.render.rf_plot import fields_figure, has_fields

    table = receptive_field_table(report, spreads=spreads)
    charts = [("field", partial(fields_figure, report, spreads))] if has_fields(report) else []
    return _view_html(report, "rf", "Receptive fields", table, charts)


def memory_html(report: Report, fit=None, measured=None) -> str:
    """`archprof memory`'s page: `--fit`'s answer at its top, then its breakdown, the memory
    held over the forward (the budget drawn where `fit` gives one) and its table
    (`render.memory_table`, every column; `fit` and `measured` as it takes them)."""
    from archprof.render.memory import memory_table
    from archprof.render.memory_plot import memory_figure

    table = memory_table(report, fit=fit, measured=measured, on_a_page=True)
    return _view_html(report, "memory", "Memory", table, [("memory", partial(memory_figure, report, fit))])


def _view_html(report: Report, view: str, name: str, table: Group, charts: Sequence[tuple[str, Callable]]) -> str:
    """The page of `archprof VIEW`'s own table (its layers, then its figures and notes, as
    `export.html_text` writes the terminal's) in the summary page's order: the batch that
    fits (where the report has one), the figures and notes under `name`, `charts`, then the
    layers, in a box that scrolls with their names kept in view; the page's title names the
    view: "archprof rf: lenet5"."""
    from archprof.render.export import html_text

    layers, *figures = table.renderables
    sections = (
        _batch_fit(report),
        f'<section id="{view}" class="figures"><h2>{escape(name)}</h2>{html_text(Group(*figures))}</section>',
        _chart_section(charts) if charts else "",
        f'<section><h2>Layers</h2><div class="scroll">{html_text(layers)}</div></section>',
    )
    return page_html(visible_text(report.model), _heading(report), sections, sortable=False, view=view)


def _heading(report: Report) -> str:
    return f"{visible_text(report.model)} · input {report.input_text} · {report.dtype}"


def page_html(title: str, heading: str, sections: Sequence[str], sortable: bool = True, view: str = "") -> str:
    """A self-contained page: `title` and `heading` (text, names in it already through
    `visible_text`; escaped here), then `sections` (HTML); `sortable`: the page has a table
    from `sortable_table`, which the script sorts and filters (without, it is left out);
    `view`, the command whose page it is, in the title ("archprof rf: lenet5")."""
    command = f"archprof {view}" if view else "archprof"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{command}: {escape(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head><body>",
        f"<h1>{escape(heading)}</h1>",
        *sections,
        *([f"<script>{SCRIPT}</script>"] if sortable else []),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _totals(report: Report) -> str:
    totals = report.totals
    body = _figure_rows(totals_rows(totals))
    not_counted = ""
    if totals.not_counted:
        listed = ", ".join(f"{escape(visible_text(op))} ×{count}" for op, count in sorted(totals.not_counted.items()))
        not_counted = f'<p class="note">Operators without a formula (not counted): {listed}</p>'
    return f'<section><h2>Totals</h2><table id="totals" class="figures">{body}</table>{not_counted}</section>'


def _figure_rows(rows) -> str:
    """Table rows of (label, value as shown, exact value): the totals' and the batch fit's
    (tables of class "figures": a figure never wraps between its number and its unit)."""
    return "".join(
        f'<tr><th scope="row">{escape(label)}</th><td>{escape(value)}</td><td class="exact">{escape(exact)}</td></tr>'
        for label, value, exact in rows
    )


def _batch_fit(report: Report) -> str:
    """`memory --fit`'s answer: the budget, the largest batch that fits it and what that batch and
    the next need ("" without)."""
    fit = report.batch_fit
    if fit is None:
        return ""
    batch, binary = fit["batch"], fit.get("budget_in_binary_units", False)
    rows = [
        ("Budget", human_bytes(fit["budget_bytes"], binary), f"{fit['budget_bytes']:,} B"),
        ("Largest batch that fits", str(batch), ""),
        (f"Predicted at batch {batch}", human_bytes(fit["bytes_at_batch"], binary), f"{fit['bytes_at_batch']:,} B"),
    ]
    following = fit["bytes_at_next_batch"]  # None: the model takes no larger batch
    if following is None:
        rows.append((f"Batch {batch + 1}", "not taken by the model", ""))
    else:
        rows.append((f"Predicted at batch {batch + 1}", human_bytes(following, binary), f"{following:,} B"))
    body = _figure_rows(rows)
    return f'<section><h2>Batch that fits</h2><table id="batch-fit" class="figures">{body}</table></section>'


def _measured(report: Report) -> str:
    """A profile's whole-model figures and cross-check, the tables the terminal and Markdown
    show ("" for a report not profiled)."""
    measured = report.measured
    if measured is None:
        return ""
    from archprof.render.export import html_text
    from archprof.render.profile import measured_summary

    heading = f"Measured on {measured.device} ({measured.device_name})"
    return f'<section id="measured"><h2>{escape(heading)}</h2>{html_text(measured_summary(measured))}</section>'


def _measured_memory(report: Report) -> str:
    """`memory --measure`'s figures: each step's peak predicted beside measured ("" without)."""
    measured = report.measured_memory
    if measured is None:
        return ""
    head = "".join(f"<th>{escape(heading)}</th>" for heading in ("", *measured.headings))
    rows = []
    for step in measured.steps:
        figures = measured.figures(step)
        cells = "".join(f'<td title="{value:,} B">{escape(human_bytes(value))}</td>' for value in figures)
        rows.append(f'<tr><th scope="row">{escape(step.what)}</th>{cells}<td>{step.ratio_text}</td></tr>')
    return (
        f'<section><h2>Measured on {escape(measured.device)}</h2><table id="measured-memory"><tr>{head}</tr>'
        f'{"".join(rows)}</table><p class="note">{escape(measured.note)}</p></section>'
    )


def _charts(report: Report) -> str:
    from archprof.render.memory_plot import memory_figure
    from archprof.render.rf_plot import fields_figure, has_fields
    from archprof.render.roofline import roofline_figure

    charts: list[tuple[str, Callable]] = [("memory", partial(memory_figure, report))]
    if has_fields(report):
        charts.append(("field", partial(fields_figure, report)))
    if report.measured is not None:
        charts.append(("roofline", partial(roofline_figure, report)))
    return _chart_section(charts)


def _chart_section(charts: Sequence[tuple[str, Callable]]) -> str:
    """The charts, (name, a function drawing its matplotlib Figure), as inline SVG (left out,
    with a note, where matplotlib is missing)."""
    from archprof.render.figures import require_matplotlib, svg_text

    try:
        require_matplotlib("the report's charts")
    except ArchprofError as exc:  # the page stays useful without its charts
        return f'<section><h2>Charts</h2><p class="note">{escape(str(exc))}</p></section>'
    blocks = [f'<figure class="chart">{svg_text(draw(), name)}</figure>' for name, draw in charts]
    return '<section><h2>Charts</h2><div class="charts">' + "".join(blocks) + "</div></section>"


def sortable_table(
    table_id: str, head: Sequence[str], rows: Sequence[str], filtered: str, hint: str = "", idle_rows: int = 0
) -> str:
    """A table the page's script sorts by a clicked heading and filters, under its controls:
    `head`, its headings (`<th>`: `data-kind` "number", sorted by each cell's `data-v`, or
    "text"; `data-filter` on those whose text the filter reads); `rows`, its `<tr>`s;
    `filtered`, what the filter reads ("layers by name or type"); `hint`, after "click a
    heading to sort" (", # for the order"); `idle_rows`, how many rows are marked `data-idle`
    (`render.tree.idle`), which a box then hides, as `--hide-idle` does. It scrolls in a box
    of its own, its headings and its names (`td.layer`) kept in view: a table wider than a
    phone, or than the page at 1280 pixels, scrolled the whole page sideways, names and
    totals with it."""
    toggle = (
        f' · <label><input class="hide-idle" type="checkbox"> hide the {idle_rows} rows that ran no operation'
        " and hold no parameters</label>"
        if idle_rows
        else ""
    )
    return (
        f'<p class="controls"><input class="filter" type="search" placeholder="filter {filtered}"'
        f' aria-label="filter {filtered}"> <span class="shown"></span>{toggle} · click a heading to sort{hint}</p>'
        f'<div class="scroll"><table id="{table_id}" class="sortable"><thead><tr>{"".join(head)}</tr></thead><tbody>'
        + "\n".join(rows)
        + "</tbody></table></div>"
    )


def _layer_table(report: Report) -> str:
    """The layers as the summary lists them, the module tree (`render.tree`): each module's
    line before its layers, its own figures then its subtree's in parentheses."""
    macs = report.totals.macs
    nodes = tree_rows(report)
    rows = [_with_share(node.row, macs) for node in nodes]
    cells = [cell for cell in _CELLS if any(_shown(row.get(cell.column)) for row in rows)]
    head = [sort_heading("#", numeric=True, title="the module tree's order, as the summary lists the layers")]
    head.append(sort_heading("Layer", numeric=False, filtered=True))
    head += [sort_heading(cell.heading, cell.numeric, cell.filtered, left=cell.aligned_left) for cell in cells]
    body = []
    idle_rows = 0  # marked for the page's box that hides them
    for index, (node, row) in enumerate(zip(nodes, rows, strict=True)):
        own = _with_share(node.own, macs) if node.is_container else row
        name = escape(node.label or "(model)")
        tds = [
            f'<td data-v="{index}">{index}</td>',
            f'<td class="layer" style="{tree_indent(node.level)}">{name}</td>',
        ]
        tds += [_layer_cell(cell, row, own, node.is_container) for cell in cells]
        module = ' class="module"' if node.is_container else ""
        marked = " data-idle" if idle(node.row) else ""
        idle_rows += bool(marked)
        body.append(f"<tr{module}{marked}>{''.join(tds)}</tr>")
    hint = ", # for the module tree's order"
    table = sortable_table("layers", head, body, "layers by name or type", hint, idle_rows)
    return f"<section><h2>Layers</h2>{table}</section>"


def _with_share(row: dict, macs: int) -> dict:
    """`row` with its share of the model's MACs ({} stays {}: a module with no rows of its own)."""
    return {**row, "macs_share": row["macs"] / macs if macs else 0} if row else {}


def _layer_cell(cell: _Cell, row: dict, own: dict, module: bool) -> str:
    """A layer's cell, or a module's (`row` its subtree merged, `own` its own rows merged, {}
    for none): its own figure, sorted by, then its subtree's in parentheses where they
    differ, so that the own figures of a column still add up to its total."""
    if cell.module == "summed":
        value = own.get(cell.column, 0)  # a module with no rows of its own: 0 of its own
    else:
        value = own.get(cell.column) if cell.module == "own" else row.get(cell.column)
    sort_key = f' data-v="{sort_value(cell.key(value) if cell.key else value)}"' if cell.numeric else ""
    subtree = row[cell.column] if module and cell.module == "summed" else value
    aligned = ' class="text"' if cell.aligned_left else ""  # by its column, not its place (a profile's 4th is Time)
    return f"<td{sort_key}{aligned}>{own_and_subtree(value, subtree, cell.shown)}</td>"


def own_and_subtree(own, subtree, shown: Callable[[object], str]) -> str:
    """A cell of a module's line (a layer's: `own` is `subtree`), escaped: its own figure,
    then its subtree's, where it differs, in parentheses (dim); the subtree's alone where it
    has none of its own (0)."""
    text = escape(shown(own))
    if subtree == own or subtree != subtree:  # NaN: an untimed row, nothing to add
        return text
    subtotal = f'<span class="subtotal">({escape(shown(subtree))})</span>'
    return f"{text} {subtotal}" if own else subtotal


def tree_indent(level: int) -> str:
    """The style of a layer's name cell at `level` of the module tree."""
    return f"padding-left:{0.3 + 1.2 * level:.1f}em"


def sort_heading(text: str, numeric: bool, filtered: bool = False, title: str = "", left: bool = False) -> str:
    """A heading of a `sortable_table`: its column sorted as numbers (each cell's `data-v`) or
    as text; `filtered`: the filter reads the column's text; `title`, shown on hovering;
    `left`: aligned left as its text cells are, though it sorts as numbers (a shape)."""
    kind = "number" if numeric else "text"
    attributes = (" data-filter" if filtered else "") + (f' title="{escape(title)}"' if title else "")
    attributes += ' class="text"' if left and numeric else ""
    return f'<th data-kind="{kind}"{attributes}>{escape(text)}</th>'


def _shown(value) -> bool:
    """A column is shown when one of its cells says something: not empty, zero or NaN."""
    return bool(value) and value == value


def sort_value(value) -> str:
    """A cell's `data-v`: the number itself, exact (repr), or -1 (sorted below every figure)
    where there is none."""
    return repr(value) if isinstance(value, int | float) and value == value else "-1"
