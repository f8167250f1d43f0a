"""What every table shares: cells, layer names, and fitting a table to the terminal."""

from __future__ import annotations

import io
from collections.abc import Collection, Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from archprof.report import layer_label, visible_text
from archprof.units import human_bytes, human_count

TEXT_COLUMNS = frozenset({"", "Layer", "Type", "Output shape", "Model", "Input", "Bound"})


def fitted_table(
    title,
    columns: dict[str, list],
    priority: Sequence[str],
    width: int,
    *,
    keep: int = 3,
    rules: Sequence[bool] = (),
    left: Collection[str] = TEXT_COLUMNS,
    **options,
) -> Table:
    """`columns` (heading -> cells, in display order) as a table no wider than `width`.

    On a narrow terminal the columns last in `priority` (and those not in it) are left out,
    down to `keep`, rather than cutting cells short: every file format keeps them all.
    `rules[i]` draws a rule above row i. Text cells and the title are shown as they are, never
    read as Rich markup (a module may be named "[/x]")."""
    widths = {heading: max(len(heading), *(len(str(cell)) for cell in cells)) for heading, cells in columns.items()}
    shown = [h for h in priority if h in columns] + [h for h in columns if h not in priority]
    while len(shown) > keep and sum(widths[h] + 3 for h in shown) > width:  # padding and divider
        shown.pop()
    title = Text(title) if isinstance(title, str) else title
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, **options)
    order = [heading for heading in columns if heading in shown]
    for heading in order:
        table.add_column(heading, justify="left" if heading in left else "right", no_wrap=True, overflow="ellipsis")
    for index in range(len(next(iter(columns.values()), []))):
        if index < len(rules) and rules[index]:
            table.add_section()
        table.add_row(*(_no_markup(columns[heading][index]) for heading in order))
    return table


def _no_markup(cell):
    return Text(cell) if isinstance(cell, str) else cell


def layer_name(row: dict) -> str:
    return layer_label(visible_text(row["layer"]), row["call"])


def indented_layer_name(row: dict) -> str:
    """The layer's name, indented by its depth below the top-level modules."""
    return "  " * max(row["depth"] - 1, 0) + layer_name(row)


def dash() -> Text:
    return Text("-", style="dim")


def count_cell(value: int) -> Text | str:
    return human_count(value) if value else dash()


def bytes_cell(value: int) -> Text | str:
    return human_bytes(value) if value else dash()


def to_text(renderable, width: int = 160) -> str:
    """Render to plain text (for --output with the table format)."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()
