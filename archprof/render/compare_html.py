"""`archprof compare` as a self-contained HTML page, in the HTML report's frame
(`html.page_html`): the models side by side, every column, in a table that sorts by a
clicked heading (a figure by its exact value, not its rounded text) and filters by the
model's name (`html.sortable_table`); under it, why a model's field is only an upper bound.
Every name is escaped."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from archprof.comparison import (
    bound_notes,
    comparison_cells,
    comparison_columns,
    comparison_records,
    ratio_notes,
    training_optimizer,
)
from archprof.lazy_modules import LazyModule
from archprof.render.html import page_html, sort_heading, sort_value, sortable_table
from archprof.text import visible_text

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = LazyModule("pandas")  # for typing.get_type_hints: pandas imported only when an annotation is read

_TEXT = ("model", "input_shape")  # the columns of text; the others are figures


def comparison_html(frame: pd.DataFrame) -> str:
    """The page of a comparison (`archprof.comparison.compare`'s frame, sorted or not)."""
    names = " vs ".join(visible_text(model) for model in frame["model"])
    baseline, optimizer = frame.attrs.get("baseline"), training_optimizer(frame)
    step = f"<p>Training step peak: one training step with optimizer {escape(optimizer)}.</p>" if optimizer else ""
    ratios = f"<p>x Params and x MACs: ratios against {escape(visible_text(baseline))}.</p>" if baseline else ""
    notes = "".join(f'<p class="note">{escape(note)}</p>' for note in ratio_notes(frame)) + "".join(
        f'<p class="note">{escape(visible_text(model))}: receptive field is {escape(visible_text(note))}</p>'
        for model, note in bound_notes(frame)
    )
    section = f"<section><h2>Comparison</h2>{step}{ratios}{_table(frame)}{notes}</section>"
    return page_html(names, names, [section], view="compare")


def _table(frame: pd.DataFrame) -> str:
    columns = [column for _, column in comparison_columns(frame)]
    headings, texts = comparison_cells(frame)
    head = [
        sort_heading(heading, numeric=column not in _TEXT, filtered=column == "model")
        for heading, column in zip(headings, columns, strict=True)
    ]
    rows = []
    for record, cells in zip(comparison_records(frame), texts, strict=True):
        tds = [_cell(text, column, record[column]) for text, column in zip(cells, columns, strict=True)]
        rows.append(f"<tr>{''.join(tds)}</tr>")
    return sortable_table("models", head, rows, "models by name")


def _cell(text: str, column: str, value) -> str:
    if column in _TEXT:
        kind = "text name" if column == "model" else "text"  # a name: its width capped, wrapped past it
        return f'<td class="{kind}">{escape(visible_text(text))}</td>'
    return f'<td data-v="{sort_value(value)}">{escape(text)}</td>'
