"""`archprof diff` as a self-contained HTML page, in the HTML report's frame (`html.page_html`):
the totals and the final receptive field and stride with old, new, signed change, % and ratio,
each change marked as grown (▲) or shrunk (▼); why a final field is a bound or undefined; and
the layers added, removed or changed as the module tree (`render.compare.diff_tree`), a table
that sorts and filters as the report's does (`html.sortable_table`).
Every name is escaped."""

from __future__ import annotations

from functools import partial
from html import escape

from archprof.diff.change_text import (
    FIELD_FIGURES,
    final_field_notes,
    format_change,
    format_percent,
    format_ratio,
    kernel_text,
    value_change,
)
from archprof.diff.changes import METRICS, ReportDiff
from archprof.render.html import (
    field_area,
    own_and_subtree,
    page_html,
    sort_heading,
    sort_value,
    sortable_table,
    tree_indent,
)
from archprof.render.tree import TreeRow
from archprof.text import field_text, visible_text
from archprof.units import human_value


def diff_html(diff: ReportDiff) -> str:
    old, new = visible_text(diff.old), visible_text(diff.new)
    sections = (_totals(diff), _layers(diff))
    heading = f"What changed: {old} → {new}"
    return page_html(f"{old} → {new}", heading, sections, sortable=bool(diff.layers), view="diff")


def _totals(diff: ReportDiff) -> str:
    head = "".join(f"<th>{heading}</th>" for heading in ("Total", "Old", "New", "Change", "%", "Ratio"))
    rows = []
    for t in diff.totals:
        old, new = human_value(t.unit, t.old), human_value(t.unit, t.new)
        rows.append(_total_row(t.label, old, new, t.change, t.unit, t.percent, t.ratio))
    fields = diff.fields
    for label, figure in FIELD_FIGURES:
        old, new = fields.texts(figure)
        change, percent, ratio = fields.change(figure), fields.percent(figure), fields.ratio(figure)
        rows.append(_total_row(label, old, new, change, "pixels", percent, ratio))
    notes = "".join(
        f'<p class="note">{escape(visible_text(name))}: {escape(visible_text(note))}</p>'
        for name, note in final_field_notes(diff)
    )
    return f'<section><h2>Totals</h2><table id="diff-totals"><tr>{head}</tr>{"".join(rows)}</table>{notes}</section>'


def _total_row(label: str, old: str, new: str, change, unit: str, percent, ratio) -> str:
    """A total's row: old and new as the table shows them, the signed change, % and ratio."""
    cells = (old, new, format_change(unit, change), format_percent(percent), format_ratio(ratio))
    tds = "".join(f"<td>{escape(cell)}</td>" for cell in cells)
    return f'<tr{_direction(change)}><th scope="row">{escape(label)}</th>{tds}</tr>'


def _direction(change) -> str:
    """The class of a row or cell whose figure grew or shrank ("" where it did neither, or a side has none)."""
    if not change:
        return ""
    return ' class="grew"' if change > 0 else ' class="shrank"'


def _layers(diff: ReportDiff) -> str:
    from archprof.render.compare import diff_tree

    summary = escape(diff.layers_text())
    if not diff.layers:
        return f"<section><h2>Layers</h2><p>{summary}</p></section>"
    head = [sort_heading("#", numeric=True, title="the module tree's order, as the summary lists the layers")]
    # The filter reads a layer's name and type.
    head += [sort_heading(heading, numeric=False, filtered=True) for heading in ("Layer", "Type")]
    head += [sort_heading(heading, numeric=False) for heading in ("Kernel", "Status", "Output shape")]
    head += [sort_heading(label, numeric=True) for _, label, _ in METRICS]
    head.append(sort_heading("Receptive field", numeric=True))
    body = [_layer_row(index, node, diff) for index, node in enumerate(diff_tree(diff))]
    table = sortable_table("layers", head, body, "layers by name or type", ", # for the module tree's order")
    return f"<section><h2>Layers</h2><p>{summary}</p>{table}</section>"


# The classes of a layer row's text cells (type, kernel, status, output shape): the status is
# coloured by its row's (added, removed, changed) through its own class, not its place.
_TEXT_CELLS = ("text", "text", "text status", "text")


def _layer_row(index: int, node: TreeRow, diff: ReportDiff) -> str:
    """A line of `diff_tree`: a layer's change, or a module's, its own change then its
    subtree's in parentheses, sorted by its own."""
    from archprof.render.compare import line_change, line_status, line_type

    change, status = line_change(diff, node), line_status(diff, node)
    texts = (
        visible_text(line_type(diff, node)),
        visible_text(kernel_text(change)) if change else "",
        status,
        visible_text(value_change(change, "output_shape")) if change else "",
    )
    tds = [f'<td data-v="{index}">{index}</td>']
    tds.append(f'<td class="layer" style="{tree_indent(node.level)}">{escape(node.label or "(model)")}</td>')
    tds += [f'<td class="{kind}">{escape(text)}</td>' for kind, text in zip(_TEXT_CELLS, texts, strict=True)]
    for metric, _, unit in METRICS:
        subtree = node.row[metric]
        own = node.own.get(metric, 0) if node.is_container else subtree
        exact = f"{own:+,}" if own else "0"
        if subtree != own:
            exact += f", its subtree {subtree:+,}"
        cell = own_and_subtree(own, subtree, partial(format_change, unit))
        tds.append(f'<td data-v="{own}" title="{exact}"{_direction(subtree)}>{cell}</td>')
    field = visible_text(value_change(change, "receptive_field", field_text)) if change else ""
    side = (change.new or change.old).get("receptive_field") if change else None  # sorted by the new field's area
    tds.append(f'<td data-v="{sort_value(field_area(side))}">{escape(field)}</td>')
    classes = " ".join(name for name in ("module" if node.is_container else "", status) if name)
    return f'<tr class="{classes}">{"".join(tds)}</tr>'
