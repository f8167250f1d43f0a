"""The human tables in files and notebooks: a Rich renderable (a table, a line of text, a
group of them, as `render` draws them) as Markdown or as HTML, cell for cell as the
terminal shows it (units, totals tables, notes), whatever the width."""

from __future__ import annotations

import html
from dataclasses import dataclass

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from archprof.text import JOINER, markdown_literal, visible_text

NBSP = "\u00a0"
_CONSOLE = Console(color_system=None)  # resolves a cell's styles into runs; prints nothing
MARKDOWN_NBSP = "&nbsp;"  # an entity: Markdown parsers trim a cell's leading no-break spaces


@dataclass(frozen=True)
class _Table:
    title: str
    headers: list[str]
    right: list[bool]  # right-aligned columns
    rows: list[list[Text]]
    caption: str
    show_header: bool


def markdown_text(renderable) -> str:
    """Each table as a GFM table under its title in bold, each line of text as a paragraph."""
    blocks = []
    for part in _parts(renderable):
        if isinstance(part, str):
            blocks.append(markdown_literal(part))
            continue
        lines = [f"**{markdown_literal(part.title)}**", ""] if part.title else []
        headers = part.headers if part.show_header else [""] * len(part.headers)
        lines.append("| " + " | ".join(markdown_literal(h) for h in headers) + " |")
        lines.append("|" + "|".join("---:" if right else "---" for right in part.right) + "|")
        lines += ["| " + " | ".join(_markdown_cell(cell.plain) for cell in row) + " |" for row in part.rows]
        if part.caption:
            lines += ["", *(markdown_literal(line) + "  " for line in part.caption.splitlines())]
        blocks.append("\n".join(lines).rstrip())
    return "\n\n".join(blocks) + "\n"


def html_text(renderable) -> str:
    """Each table as an HTML table with its title as caption, each line of text as a paragraph."""
    blocks = ['<div class="archprof">']
    for part in _parts(renderable):
        if isinstance(part, str):
            blocks.append(f"<p>{html.escape(visible_text(part))}</p>")
            continue
        align = ['style="text-align:right"' if right else 'style="text-align:left"' for right in part.right]
        lines = ["<table>"]
        if part.title:
            lines.append(f'<caption style="text-align:left"><b>{html.escape(visible_text(part.title))}</b></caption>')
        if part.show_header:
            header = "".join(f"<th {a}>{html.escape(h)}</th>" for a, h in zip(align, part.headers, strict=True))
            lines.append(f"<thead><tr>{header}</tr></thead>")
        lines.append("<tbody>")
        for row in part.rows:
            cells = "".join(f"<td {a}>{_html_cell(cell)}</td>" for a, cell in zip(align, row, strict=True))
            lines.append(f"<tr>{cells}</tr>")
        lines.append("</tbody></table>")
        lines += [f"<p><small>{html.escape(visible_text(line))}</small></p>" for line in part.caption.splitlines()]
        blocks.append("\n".join(lines))
    blocks.append("</div>")
    return "\n".join(blocks) + "\n"


def _parts(renderable) -> list[_Table | str]:
    """The tables and lines of text of `renderable`, in order."""
    if isinstance(renderable, Group):
        return [part for inner in renderable.renderables for part in _parts(inner)]
    if isinstance(renderable, Table):
        return [_table(renderable)]
    return [_plain(renderable)]


def _table(table: Table) -> _Table:
    columns = table.columns
    rows = [list(cells) for cells in zip(*(column.cells for column in columns), strict=True)]
    return _Table(
        title=_plain(table.title or ""),
        headers=[_plain(column.header) for column in columns],
        right=[column.justify == "right" for column in columns],
        rows=[[_indented(cell if isinstance(cell, Text) else Text(str(cell))) for cell in row] for row in rows],
        caption=_plain(table.caption or ""),
        show_header=table.show_header,
    )


def _plain(cell) -> str:
    """A cell's text; a `Prose` caption's `JOINER`s spaces, as printed."""
    return cell.plain.replace(JOINER, " ") if isinstance(cell, Text) else str(cell)


def _indented(cell: Text) -> Text:
    """Leading spaces (a tree's indentation) kept: Markdown and HTML collapse plain ones."""
    indent = len(cell.plain) - len(cell.plain.lstrip(" "))
    return Text(NBSP * indent).append_text(cell[indent:]) if indent else cell


def _html_cell(cell: Text) -> str:
    """The cell's text, its dim, bold and coloured runs (a subtotal, a verdict) styled alike."""
    base = _CONSOLE.get_style(cell.style)  # the whole cell's; segments carry their runs' only
    shown = []
    for segment in cell.render(_CONSOLE):
        text, style = html.escape(visible_text(segment.text)), base + segment.style
        css = ["opacity:0.6"] if style.dim else []
        css += ["font-weight:bold"] if style.bold else []
        css += [f"color:{style.color.name}"] if style.color is not None else []
        shown.append(f'<span style="{";".join(css)}">{text}</span>' if css else text)
    return "".join(shown)


def _markdown_cell(cell: str) -> str:
    text = cell.lstrip(NBSP)
    return MARKDOWN_NBSP * (len(cell) - len(text)) + markdown_literal(text)
