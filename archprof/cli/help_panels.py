"""A help page's Arguments and Options panels, whose names and metavars are never cut.

Typer's own panel is a table whose every column may shrink: on 60 columns and under, Rich
cut `--min-receptive-field` to `--min-r…`, split the metavar KEY=VALUE over two lines and
ellipsised long words of the help (`weights_only=Tr…`). Here the names and the metavar
keep their width and only the help column wraps (a word too long for it folds, whole);
where that would leave the help too narrow to read, each option takes a line of its own
and its help goes under it, indented."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from typer import rich_utils
from typer.core import TyperArgument

# Narrower than this, the help column reads three words a line or fewer: stack instead. On
# 80 columns every command keeps its table.
MIN_HELP_WIDTH = 24
_PANEL_EDGES = 4  # a border and a space of padding on each side
_COLUMN_GAP = 2  # the table's padding: a space each side of a column, none at its edges
_STACKED_INDENT = 4


# The name-side cells, in Typer's order, and their styles: the required mark red, the metavar as a type.
_NAMED_STYLES = (rich_utils.STYLE_REQUIRED_SHORT, "", "", rich_utils.STYLE_TYPES)


@dataclass(frozen=True)
class _Row:
    """One parameter's cells: what the user types (names, metavar) and what it does (help)."""

    required: str
    long_names: str
    short_names: str
    metavar: str
    help: RenderableType

    def named_cells(self) -> tuple[str, ...]:
        return (self.required, self.long_names, self.short_names, self.metavar)

    def heading(self) -> Text:
        """The stacked layout's line: `--weights, -w FILE`."""
        names = ", ".join(name for name in (self.long_names, self.short_names) if name)
        parts = [(self.required, _NAMED_STYLES[0]), (names, ""), (self.metavar, _NAMED_STYLES[3])]
        return Text(" ", overflow="fold").join(_styled(text, style) for text, style in parts if text)


def _styled(text: str, style: str) -> Text:
    return rich_utils.highlighter(Text(text, style=style))


def _row(param, ctx, markup_mode) -> _Row:
    """As Typer builds its row (an argument shows its display name), the help's words folding
    where one is wider than the column, not cut."""
    if isinstance(param, TyperArgument):
        display_name = param.display_name_raw + ("..." if param.metavar is None and param.nargs != 1 else "")
        long_names, short_names = "", display_name
    else:
        options = [*param.opts, *param.secondary_opts]
        long_names = ",".join(name for name in options if name.startswith("--"))
        short_names = ",".join(name for name in options if not name.startswith("--"))
    metavar = param.display_type_rich(ctx=ctx) or ""
    number_range = param._get_number_range_help_str()
    if number_range:
        metavar += rich_utils.RANGE_STRING.format(number_range)
    help = rich_utils._get_parameter_help(param=param, ctx=ctx, markup_mode=markup_mode)
    for item in help.renderables:
        if isinstance(item, Text):
            item.overflow = "fold"
    return _Row(rich_utils.REQUIRED_SHORT_STRING if param.required else "", long_names, short_names, metavar, help)


def _named_columns(rows: list[_Row]) -> list[int]:
    """The name-side columns that hold something (Typer keeps empty ones, as gaps)."""
    return [index for index in range(len(_NAMED_STYLES)) if any(row.named_cells()[index] for row in rows)]


def _help_width(rows: list[_Row], columns: list[int], width: int) -> int:
    """What the table leaves its help column, every name-side column as wide as its widest cell."""
    widest = [max(Text(row.named_cells()[index]).cell_len for row in rows) for index in columns]
    return width - _PANEL_EDGES - sum(cells + _COLUMN_GAP for cells in widest)


def _table(rows: list[_Row], columns: list[int]) -> Table:
    table = Table(highlight=True, show_header=False, expand=True, box=None, padding=(0, 1), pad_edge=False)
    for _ in columns:
        table.add_column(no_wrap=True)  # never shrunk: the help column gives way
    table.add_column(ratio=1)
    for row in rows:
        cells = row.named_cells()
        table.add_row(*(_styled(cells[index], _NAMED_STYLES[index]) for index in columns), row.help)
    return table


def _stacked(rows: list[_Row]) -> Group:
    return Group(*(part for row in rows for part in (row.heading(), Padding(row.help, (0, 0, 0, _STACKED_INDENT)))))


def print_options_panel(*, name, params, ctx, markup_mode, console) -> None:
    """Typer's `_print_options_panel`, in the table while its help column stays readable, else stacked."""
    if not params:
        return
    rows = [_row(param, ctx, markup_mode) for param in params]
    columns = _named_columns(rows)
    fits = _help_width(rows, columns, console.width) >= MIN_HELP_WIDTH
    body = _table(rows, columns) if fits else _stacked(rows)
    console.print(
        Panel(
            body,
            border_style=rich_utils.STYLE_OPTIONS_PANEL_BORDER,
            title=name,
            title_align=rich_utils.ALIGN_OPTIONS_PANEL,
        )
    )


@contextmanager
def names_kept_whole():
    """Typer's help formatter with `print_options_panel` for its panels, for one help page:
    Typer offers no hook for the panel, and other apps in the process keep Typer's own.
    The panel reads Typer's internals (pyproject allows Typer from 0.12): a Typer without
    them prints its own panel, names cut on a narrow terminal, rather than no help."""
    typer_panel = getattr(rich_utils, "_print_options_panel", None)
    if typer_panel is None:
        yield
        return

    def panel(**arguments) -> None:
        try:
            print_options_panel(**arguments)
        except (AttributeError, TypeError):  # internals this Typer names otherwise
            typer_panel(**arguments)

    rich_utils._print_options_panel = panel
    try:
        yield
    finally:
        rich_utils._print_options_panel = typer_panel
