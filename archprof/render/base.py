"""What every table shares: cells, layer names, and fitting a table to the width it has."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from itertools import zip_longest

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from archprof.errors import ArchprofError
from archprof.text import JOINER, fitted_indentation, layer_label, visible_text
from archprof.units import human_bytes, human_count, share_text

TEXT_COLUMNS = frozenset({"", "Layer", "Type", "Input shape", "Kernel", "Output shape", "Model", "Input", "Bound"})
# Text a table cuts where it must, as it cuts a long layer name (a shape is a figure: never).
_CUT_TEXT = frozenset({"Type"})

# Wide enough for any table: a table printed off a terminal, or with --wide, is never cut.
UNLIMITED_WIDTH = 100_000


@dataclass(frozen=True)
class Layout:
    """Which columns a table shows: those fitting in `width` characters (None: every column),
    or the `columns` asked for by name (after the label column)."""

    width: int | None = None
    columns: tuple[str, ...] = ()


def fitted_table(
    title,
    columns: dict[str, list],
    priority: Sequence[str],
    layout: Layout,
    *,
    keep: int = 3,
    labels: int = 1,
    rules: Sequence[bool] = (),
    left: Collection[str] = TEXT_COLUMNS,
    marks: Sequence[Text | None] = (),
    **options,
) -> Table | Group:
    """`columns` (heading -> cells, in display order) as a table laid out by `layout`.

    Given a width, the columns first in `priority` that fit are shown (at least `keep`), the
    others (and those not in it) left out rather than cutting cells short, and the caption
    names them and how to show them; where even those do not fit, the rows one under another
    (`stacked_rows`, the first `labels` cells on a line, a name longer than the line folded)
    if every figure fits the width whole so, and if not, the last resort, a long class name
    (Type) cut at its end, then the labels (the first column of `priority`) in the middle;
    columns chosen by name (`layout.columns`) are all shown, stacked or cut the same way.
    A class name counts as its shortest cut when the columns are chosen.
    `marks[i]` follows row i's label, never cut ("◀ peak"). Given names, the first `labels`
    of `priority` and those columns, in that order. `rules[i]` draws a rule
    above row i. Text cells and the title are shown as they are, never read as Rich markup
    (a module may be named "[/x]")."""
    order = [h for h in priority if h in columns] + [h for h in columns if h not in priority]
    label = order[0] if order else None
    unmarked = columns[label] if label is not None else []
    if label is not None and marks:
        columns = {**columns, label: [_marked(cell, mark) for cell, mark in zip_longest(unmarked, marks)]}
    text_widths: dict[str, int] = {}  # a text column's cut width, where even the columns kept do not fit
    title = Text(title) if isinstance(title, str) else title.copy()
    natural = _widths(columns)
    # A class name (Type) counts as its shortest cut while columns are chosen: a long one is
    # cut to the room left, not the figures left out for it (nor Rich left to cut them).
    widths = {h: min(w, _SHORTEST_LABEL) if h in _CUT_TEXT else w for h, w in natural.items()}
    # The columns asked for by name, all of them, or the first of `priority` that fit.
    chosen = bool(layout.columns)
    fitting = chosen_columns(order, layout.columns, labels) if chosen else _fitting(widths, order, layout.width, keep)
    stack = False
    if layout.width is not None:
        excess = sum(widths[h] + 3 for h in fitting) - layout.width
        # Where the columns kept do not fit side by side, the rows one under another, if every
        # figure fits so; but a table a few characters too wide keeps its rows where no name
        # loses over a third of itself (resnet18's summary on 70 columns: 6 names cut by 5
        # characters, where stacking would make each of its 60 rows four lines).
        too_wide = excess > 0 and (label is None or not _cut_slightly(unmarked, marks, widths[label] - excess))
        stack = too_wide and _stacked_rows_fit({h: columns[h] for h in fitting}, labels, layout.width)
        if too_wide and not stack and not chosen:
            fitting = _fewest_columns(widths, fitting, layout.width)
    shown = fitting if chosen else [heading for heading in columns if heading in fitting]  # the table's own order
    if layout.width is not None:
        left_out = [heading for heading in order if heading not in fitting] if not chosen else []
        if left_out:
            notes = (_left_out_note(left_out, layout.width), options.get("caption"))
            # A blank line after the note: what the command prints next does not read as part of it.
            options.update(caption=Prose("\n".join(filter(None, notes)) + "\n"), caption_justify="left")
        if stack:
            caption = options.get("caption")
            kept = {heading: columns[heading] for heading in shown}
            caption = Prose(caption) if isinstance(caption, str) and caption else caption
            return stacked_rows(title, kept, labels=labels, caption=caption, width=layout.width)
        over = sum(natural[h] + 3 for h in shown) - layout.width
        if over > 0:
            # The last resort: long names are cut, never the figures beside them (Rich would
            # shrink every column): the class names first (they repeat, and read cut), then the
            # label in its middle (the row's own name).
            text_widths = _cut_text_widths(natural, [h for h in shown if h == label or h in _CUT_TEXT], label, over)
            if label in text_widths:
                columns = {**columns, label: _cut_labels(unmarked, marks, text_widths[label])}
    table = titled_table(title, layout.width, **options)
    for heading in shown:
        table.add_column(
            heading,
            justify="left" if heading in left else "right",
            no_wrap=True,
            overflow="ellipsis",
            max_width=text_widths.get(heading),
        )
    for index in range(len(next(iter(columns.values()), []))):
        if index < len(rules) and rules[index]:
            table.add_section()
        table.add_row(*(_no_markup(columns[heading][index]) for heading in shown))
    return table


def fits(table: Table, width: int | None, wrapping: bool = True) -> bool:
    """Whether `table` fits in `width` characters (None: any) with no cell cut: each cell of a
    column that wraps in its longest word's width, every other cell whole; with `wrapping`
    False, no cell wrapped. (Rich's own minimum takes a word for a cell that may not wrap;
    and Rich narrows the widest wrapping columns together, whatever their longest word.)"""
    if width is None:
        return True
    console = Console(width=UNLIMITED_WIDTH)

    def measured(renderable) -> Measurement:
        return Measurement.get(console, console.options, renderable)

    room = width - measured(table).maximum  # what the table must give up (negative)
    widest, shortest = [], []  # of each column that wraps
    for column in table.columns:
        cells = [measured(cell) for cell in (column.header, *column.cells)]
        if wrapping and not column.no_wrap:
            widest.append(max(cell.maximum for cell in cells))
            shortest.append(max(cell.minimum for cell in cells))
    if room >= 0 or not widest:
        return room >= 0
    level = _collapsed_width(widest, sum(widest) + room)
    return all(min(most, level) >= least for most, least in zip(widest, shortest, strict=True))


def _collapsed_width(widths: list[int], room: int) -> int:
    """The widest a column may stay when columns `widths` must fit `room` characters, the widest
    narrowed first, down to the next widest, then together (as Rich's table collapses them)."""
    level = max(widths)
    while level > 0 and sum(min(width, level) for width in widths) > room:
        level -= 1
    return level


def label_value_table(
    title: str | None, rows: Sequence[tuple], width: int | None, label_overflow=None, detail_justify="left"
) -> Table | Group:
    """A headless table of a label, a figure and its detail per row (a report's totals), or,
    where it does not fit `width` (None: any), each figure and detail under its label."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("what", overflow=label_overflow)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("detail", justify=detail_justify)
    for row in rows:
        table.add_row(*row)
    if fits(table, width):
        return table
    return stacked_rows(Text(title or ""), columns_of(("what", "value", "detail"), rows), headed=False, width=width)


def columns_of(headings: Sequence[str], rows: Sequence[tuple]) -> dict[str, list]:
    """Rows of cells as columns, by heading (what `stacked_rows` takes)."""
    return dict(zip(headings, (list(cells) for cells in zip(*rows, strict=True)), strict=True))


def titled_table(title: Text, width: int | None, **options) -> Table:
    """A table of headed figures (`options` Table's own), its title wrapped to the width it
    has (None: on one line, as piped), not to a table its columns made narrow (rf --columns
    Coverage gave "lenet5  ·" over three lines; profile's on 80 columns took four; check's,
    piped, a long path over three at 80). `title` itself is left as it is."""
    if width is not None and title.cell_len > width:
        title = Text("\n").join(title.wrap(Console(width=width), width))
    else:
        title = title.copy()
    title.no_wrap, title.overflow = True, "ignore"
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, **options)


def stacked_rows(
    title: Text, columns: dict[str, list], headed: bool = True, caption=None, labels: int = 1, width: int | None = None
) -> Group:
    """A table too wide for the terminal, its rows one under another: each row's first `labels`
    cells on a line, then each other column's heading and cell on a line of their own, indented
    under the label's text as far as `width` allows (None: all the way), every figure whole (its
    heading says what it is, as the table's did; an empty cell, none). A cell too wide to follow
    its heading on the line (a model's description on 30 columns) goes on the lines under it,
    across the whole width. Not `headed` (a table without headings: a figure and its detail),
    the other cells on one line under the first, side by side, the last wrapping. A word longer
    than its line is folded onto the next, never cut or past the edge. `caption` follows, as a
    table's would."""
    names, others = list(columns)[:labels], list(columns)[labels:]
    blocks = []
    for index in range(len(columns[names[0]])):
        cells = [_no_markup(columns[name][index]) for name in names]
        label = Text("  ").join(cells)
        # Under the last label's text (a layer's, by its depth), past the cells before it (diff's status).
        indentation = sum(cell.cell_len + 2 for cell in cells[:-1]) + _indentation(cells[-1])
        if headed:
            cells = [(heading, _no_markup(columns[heading][index])) for heading in others]
            figures, indentation = _headed_cells([(h, cell) for h, cell in cells if cell.cell_len], indentation, width)
        else:
            figures = Table.grid(padding=(0, 3, 0, 0))
            for heading in others:
                figures.add_column(no_wrap=heading != others[-1], overflow="fold")
            figures.add_row(*(_no_markup(columns[heading][index]) for heading in others))
            if width is not None:  # a deep layer's figures, no further than fits
                indentation = fitted_indentation(indentation, 3 + _natural_width(figures), width)
        # Indented as a table's cells are (its edge is a space), the figures two further than the label's text.
        blocks += [_folded_label(label, width), Padding(figures, (0, 0, 0, 3 + indentation))]
    end = [_no_markup(caption)] if caption else []
    return Group(title, Text(), *blocks, Text(), *end)  # blank lines around, as a table's edges


def _headed_cells(cells: list[tuple[str, Text]], indentation: int, width: int | None) -> tuple[Group, int]:
    """Each (heading, cell) of a stacked row, in order: the cell beside its heading where it fits
    there whole, on the lines under it otherwise; and the indentation the row's figures get (at
    most `indentation`: a deep layer's figures no further than fits)."""
    heading_width = max((len(heading) for heading, _ in cells), default=0)
    beside = None if width is None else width - 3 - heading_width - 3  # the room after a heading, not indented
    fits_beside = [beside is None or cell.cell_len <= beside for _, cell in cells]
    widest = max((cell.cell_len for (_, cell), side in zip(cells, fits_beside, strict=True) if side), default=0)
    indentation = fitted_indentation(indentation, widest, beside)
    parts: list = []
    for (heading, cell), side in zip(cells, fits_beside, strict=True):
        if side:
            if not parts or not isinstance(parts[-1], Table):
                parts.append(Table.grid(padding=(0, 3, 0, 0)))
                parts[-1].add_column(no_wrap=True, min_width=heading_width)  # aligned as one grid
                parts[-1].add_column(overflow="fold")  # wraps where `width` is not known
            parts[-1].add_row(heading, cell)
        else:
            under = cell.copy()
            under.overflow = "fold"
            parts += [Text(heading), Padding(under, (0, 0, 0, 2))]
    return Group(*parts), indentation


def _folded_label(label: Text, width: int | None) -> Padding:
    """A stacked row's label in bold, each line of it after its indentation where its longest
    word fits so (nearer the left where not), a word longer than the line folded."""
    indentation = _indentation(label)
    text = label[indentation:]
    text.stylize("bold")
    text.overflow = "fold"
    longest = max(map(cell_len, text.plain.split()), default=0)
    indentation = fitted_indentation(indentation, 1 + longest, width)  # after the table's edge
    return Padding(text, (0, 0, 0, 1 + indentation))


class Prose(Text):
    """Text that wraps between words, never between a figure and its unit ("122.926 ms",
    "845.85 K FLOPs", "(319,912 B"): a figure is read with its unit, not at the end of one line
    and the start of the next. Where nothing would be split, it wraps as any Text. Print it in
    a Group or a table: Console.print joins bare Texts into one plain Text."""

    def wrap(self, console, width, **options):
        lines = Text.wrap(self._joined(), console, width, **options)
        for line in lines:
            line.plain = line.plain.replace(JOINER, " ")  # as long: the styles' spans stay
        return lines

    def __rich_measure__(self, console, options) -> Measurement:
        return Text.__rich_measure__(self._joined(), console, options)

    def _joined(self) -> Text:
        """A copy whose spaces inside a figure-and-unit are `JOINER`s, which Rich never breaks at."""
        joined = self.copy()
        joined.plain = _FIGURE_AND_UNIT.sub(lambda match: match[0].replace(" ", JOINER), self.plain)
        return joined


def _stacked_rows_fit(columns: dict[str, list], labels: int, width: int) -> bool:
    """Whether `stacked_rows(..., columns, labels=labels)` fits `width` with every figure whole:
    each on one line, beside its heading or under it (a label's words wrap, and fold where
    one is longer than the line: none is cut)."""
    others = list(columns)[labels:]
    figure = max((_cell_width(cell) for heading in others for cell in columns[heading]), default=0)
    return 3 + 2 + figure <= width


def _natural_width(renderable) -> int:
    console = Console(width=UNLIMITED_WIDTH)
    return Measurement.get(console, console.options, renderable).maximum


def _indentation(label: Text) -> int:
    """The spaces before a label's text (a layer's depth in the tree)."""
    return len(label.plain) - len(label.plain.lstrip(" "))


_UNIT = r"(?:[kKMGTP]?(?:B|FLOPs?|FLOP/s|MACs?)(?:/s|/byte)?|[mµn]?s|h|min|days|samples/s|CPUs?|[kKMGTP])"
_FIGURE_AND_UNIT = re.compile(rf"(?<![\w.])[(<~+-]?\d[\d,]*(?:\.\d+)?(?: {_UNIT}(?![\w/]))+")


# The fewest characters a cut label column keeps (its ellipsis included).
_SHORTEST_LABEL = 12


def _marked(cell, mark: Text | None):
    return Text.assemble(_no_markup(cell), mark) if mark is not None else cell


def _cut_slightly(labels: list, marks: Sequence[Text | None], width: int) -> bool:
    """Whether `_cut_labels(labels, marks, width)` leaves each name two thirds of itself at least
    (its indentation not counted)."""
    if width < _SHORTEST_LABEL:
        return False
    for cell, mark in zip_longest(labels, marks):
        name = _no_markup(cell)
        lost = name.cell_len + (mark.cell_len if mark is not None else 0) - width
        if lost > 0 and 3 * lost > cell_len(name.plain.strip()):
            return False
    return True


def _cut_labels(labels: list, marks: Sequence[Text | None], width: int) -> list:
    """Each label cut in the middle to fit `width` with its mark after it, whole."""
    cut = []
    for cell, mark in zip_longest(labels, marks):
        room = width - (mark.cell_len if mark is not None else 0)
        cut.append(_marked(_cut_in_the_middle(_no_markup(cell), room), mark))
    return cut


def _cut_in_the_middle(text: Text, width: int) -> Text:
    """`text` in `width` cells, its middle replaced by "…": the start (the indentation) and the
    end stay, where the index is that tells `blocks.0` from `blocks.1`."""
    if text.cell_len <= width:
        return text
    plain = text.plain
    tail = _characters_within(plain[::-1], width // 2)
    head = _characters_within(plain, width - 1 - cell_len(plain[len(plain) - tail :]))
    return Text.assemble(text[:head], "…", text[len(plain) - tail :], style=text.style)


def _characters_within(text: str, width: int) -> int:
    """How many of `text`'s first characters fit in `width` cells."""
    used = 0
    for count, character in enumerate(text):
        used += cell_len(character)
        if used > width:
            return count
    return len(text)


def _widths(columns: dict[str, list]) -> dict[str, int]:
    return {heading: max([len(heading), *map(_cell_width, cells)]) for heading, cells in columns.items()}  # no rows too


def _fitting(widths: dict[str, int], order: list[str], width: int | None, keep: int) -> list[str]:
    """The first `keep` columns of `order`, then each that still fits, in order: one too wide
    is left out, not the narrower ones after it (% Params beside a left-out Activations)."""
    if width is None:
        return list(order)
    shown = order[:keep]
    used = sum(widths[h] + 3 for h in shown)  # padding and divider
    for heading in order[keep:]:
        if used + widths[heading] + 3 <= width:
            shown.append(heading)
            used += widths[heading] + 3
    return shown


def _cut_text_widths(widths: dict[str, int], texts: list[str], label: str | None, over: int) -> dict[str, int]:
    """The widths the columns `texts` (the label, `_CUT_TEXT`'s) are cut to, so that a table
    `over` characters too wide fits: the widest of the others first (a long class name in
    Type), to `_SHORTEST_LABEL` at the least, then the label, none below that either."""
    cut: dict[str, int] = {}
    for heading in sorted(texts, key=lambda h: (h == label, -widths[h])):
        if over <= 0:
            break
        if widths[heading] > _SHORTEST_LABEL:
            cut[heading] = max(widths[heading] - over, _SHORTEST_LABEL)
            over -= widths[heading] - cut[heading]
    return cut


def _fewest_columns(widths: dict[str, int], shown: list[str], width: int) -> list[str]:
    """Where even the columns kept, the label cut to its shortest, are too wide, the last of
    them left out too, down to the label and one figure: Rich would cut every cell and
    heading ('118.01…', 'Live aft…' on 40 columns)."""
    shown = list(shown)
    label_cut = max(widths[shown[0]] - _SHORTEST_LABEL, 0)
    while len(shown) > 2 and sum(widths[h] + 3 for h in shown) - label_cut > width:
        shown.pop()
    return shown


def _cell_width(cell) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(str(cell))  # 卷 takes two cells


def _left_out_note(left_out: list[str], width: int | None) -> str:
    """The caption's note of the columns left out, each heading kept on one line ('Live
    after', '% MACs': their spaces `JOINER`s, which `Prose` prints as spaces)."""
    names = ", ".join(heading.replace(" ", JOINER) for heading in left_out)
    return f"Left out to fit {width} columns: {names} (show every column with --wide, or choose with --columns)"


def chosen_columns(order: Sequence[str], names: Sequence[str], labels: int = 1) -> list[str]:
    """The first `labels` headings of `order`, then those `names` designate (any case; spaces,
    hyphens, underscores and a unit in parentheses ignored), in the order given; an unknown
    name is an error."""
    by_key = {_column_key(heading): heading for heading in order if heading}
    shown = list(order[:labels])
    for name in names:
        heading = by_key.get(_column_key(name))
        if heading is None:
            known = ", ".join(heading for heading in order if heading)
            raise ArchprofError(f"--columns: this table has no column '{name}'; its columns: {known}")
        if heading not in shown:
            shown.append(heading)
    return shown


def with_heading_renamed(layout: Layout, old: str, new: str) -> Layout:
    """`layout`, a column it asks for by `old` (as `chosen_columns` matches names) asked for
    by `new`: the heading a table shows instead (--columns written for the usual one works)."""
    columns = tuple(new if _column_key(name) == _column_key(old) else name for name in layout.columns)
    return replace(layout, columns=columns)


def _column_key(name: str) -> str:
    # A unit the heading names ("Time (ms)") is the data's, not the column's: "Time" finds it.
    return re.sub(r"[\s_-]+", "", re.sub(r"\s*\([^()]*\)$", "", name)).lower()


def _no_markup(cell):
    return Text(cell) if isinstance(cell, str) else cell


def layer_name(row: dict) -> str:
    return layer_label(visible_text(row["layer"]), row["call"])


def tree_label(node) -> Text:
    """A `render.tree.TreeRow`'s name, indented by its level; a container's in bold."""
    return Text("  " * node.level + node.label, style="bold" if node.is_container else "")


def subtotal_cell(node, name: str, cell: Callable[[int], Text | str], own: bool = True) -> Text | str:
    """Column `name` of a `render.tree.TreeRow` as `cell` writes a value: a leaf's value; a
    container's own value (when it has one and `own`), then its subtree's in dim parentheses,
    so that the plain figures of a summable column still add up to its total."""
    value = node.row[name]
    if not node.is_container:
        return cell(value)
    own_value = node.own.get(name, 0) if own else 0
    if value == own_value:
        return cell(value)
    subtotal = Text(f"({_plain(cell(value))})", style="dim")
    return Text.assemble(_plain(cell(own_value)), " ", subtotal) if own_value else subtotal


def share_cell(total: int) -> Callable[[int], Text | str]:
    """A cell writer: a value as a percentage of `total`."""

    def cell(value: int) -> Text | str:
        return share_text(value / total) if value and total else dash()

    return cell


def _plain(cell: Text | str) -> str:
    return cell.plain if isinstance(cell, Text) else cell


def dash() -> Text:
    return Text("-", style="dim")


def count_cell(value: int) -> Text | str:
    return human_count(value) if value else dash()


def bytes_cell(value: int, binary: bool = False) -> Text | str:
    return human_bytes(value, binary) if value else dash()


def to_text(renderable, width: int | None = None) -> str:
    """Render to plain text (for --output with the table format), `width` characters wide
    (None: as wide as the renderable needs)."""
    console = Console(width=width or UNLIMITED_WIDTH, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return re.sub(r" +(?=\n)", "", console.export_text())  # Rich pads each line to the table's width
