"""Reading a report's CSV cells back: the inverse of `Report.to_csv`'s text, the one place
text becomes values (whole numbers, booleans, fields and strides, operator names and
counts)."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

from archprof.passes.receptive_field import FieldMark
from archprof.report.formats import counts_text, csv_cell_text, operators_text
from archprof.text import dims_text


def cell_reader(column) -> Callable[[str], Any]:

    if column.name in SHAPE_COLUMNS:
        return _shapes
    if column.text is not None:  # before user_text: operators' and not_counted's cells are both
        return _TEXT_READERS[column.text]
    if column.user_text:
        return csv_cell_text
    if column.dtype == "int64":
        return functools.partial(_whole_number, lowest=lowest(column.name))
    if column.dtype == "boolean":
        return _boolean
    return str


# The columns of shapes as `units.shapes_text` writes them: '1x64x56x56', '1x3x32x32, 1x10', a
# scalar's '()'; empty where a row has none.
SHAPE_COLUMNS = ("input_shape", "output_shape")
_SHAPES = re.compile(r"(?:\(\)|\d+(?:x\d+)*)(?:, (?:\(\)|\d+(?:x\d+)*))*")


def is_shapes_text(text: str) -> bool:
    """Whether `text` is shapes as a report writes them (`SHAPE_COLUMNS`), or empty."""
    return not text or _SHAPES.fullmatch(text) is not None


def _shapes(cell: str) -> str:
    text = csv_cell_text(cell)
    if not is_shapes_text(text):
        raise ValueError("not shapes as a report writes them (1x64x56x56; several: 1x3x32x32, 1x10)")
    return text


# No model's count or size comes near 10**60 (a batch of 2**62 samples, each as large as
# int64 allows, through a layer as large: about 10**40). A longer number is no report's, and
# the human units and percentages a diff shows, floats, could not hold it.
LARGEST = 10**60


def lowest(name: str) -> int:
    """The least value a report writes in the whole-number column `name`: -1 for `call` (a
    module never called), 0 for every count and size."""
    return -1 if name == "call" else 0


def _whole_number(cell: str, lowest: int | None = None) -> int:
    try:
        number = int(cell)
    except ValueError:
        if re.fullmatch(r"\s*[+-]?\d+\s*", cell):  # digits past int()'s limit (sys.get_int_max_str_digits)
            raise ValueError("larger than any model's figure") from None
        raise ValueError("not a whole number") from None
    if abs(number) >= LARGEST:
        raise ValueError("larger than any model's figure")
    if lowest is not None and number < lowest:
        raise ValueError(f"below {lowest}, which no report writes there")
    return number


def _boolean(cell: str) -> bool | None:
    values = {"True": True, "False": False, "": None}
    if cell not in values:
        raise ValueError("not True, False or empty")
    return values[cell]


def dims(cell: str):
    """'212x212' -> (212, 212); '1/2x1/2' -> (Fraction(1, 2), ...); 'input', 'undefined' ->
    FieldMark; '' -> None."""

    if not cell:
        return None
    if cell in tuple(FieldMark):
        return FieldMark(cell)
    try:
        parts = tuple(Fraction(part) if "/" in part else int(part) for part in cell.split("x"))
    except (ValueError, ZeroDivisionError):
        raise ValueError("not numbers joined by x ('212x212', '1/2x1/2'), 'input', 'undefined' or empty") from None
    for part in parts:  # the ratios and percentages of a diff are floats
        if abs(part) >= LARGEST or Fraction(part).denominator >= LARGEST:
            raise ValueError("larger than any model's figure")
    return parts


def _named_items(cell: str, separator: str) -> Iterator[tuple[str | None, str]]:
    """The items of a cell of operator names (`csv_cell` undone), parted by `separator`: each
    a name written as a JSON string (`report.operator_text`) and the text after it up to the
    separator, or None and the whole item."""
    text = csv_cell_text(cell)
    position = 0
    while position < len(text):
        quoted = None
        if text.startswith('"', position):
            try:
                quoted, position = _JSON.raw_decode(text, position)
            except ValueError:
                raise ValueError("a name opened by '\"' is not a JSON string") from None
        end = text.find(separator, position)
        end = len(text) if end < 0 else end
        yield quoted, text[position:end]
        position = end + len(separator)


_JSON = json.JSONDecoder()


def _operators(cell: str) -> tuple[str, ...]:
    """'convolution "my lib.f"' -> ('convolution', 'my lib.f'); `csv_cell` undone."""
    names = []
    for quoted, rest in _named_items(cell, " "):
        if quoted is None and rest:
            names.append(rest)
        elif quoted is not None and not rest:
            names.append(quoted)
        else:
            raise ValueError("not operator names ('convolution relu_', a name with a space as a JSON string)")
    return tuple(names)


def _counts(cell: str) -> dict[str, int]:
    """'aten.cumsum x1; "my lib.f" x2' -> {'aten.cumsum': 1, 'my lib.f': 2}; `csv_cell` undone."""
    counts = {}
    for quoted, rest in _named_items(cell, "; "):
        bare, times, calls = rest.rpartition(" x")
        operator = bare if quoted is None else quoted
        if not times or not operator or (quoted is not None and bare):
            raise ValueError("not operator counts ('aten.cumsum x1; ...')")
        counts[operator] = _whole_number(calls)
    return counts


# The reader of each `Column.text`'s cells.
_TEXT_READERS: dict[Callable[[Any], str], Callable[[str], Any]] = {
    counts_text: _counts,
    operators_text: _operators,
    dims_text: dims,
}
