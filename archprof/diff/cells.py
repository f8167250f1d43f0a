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


def cell_reader(column) -> Callable[[str], Any]:

    if column.name in SHAPE_COLUMNS:
        return _shapes
    if column.name in _DIMS_PARTS:
        return functools.partial(dims, column=column.name)
    if column.text is not None:  # before user_text: operators' and not_counted's cells are both
        return _TEXT_READERS[column.text]
    if column.user_text:
        return csv_cell_text
    if column.dtype == "int64":
        return functools.partial(_whole_number, lowest=lowest(column.name))
    if column.dtype == "boolean":
        return _boolean
    return str


# A number as `str(int)` writes it. Only ASCII digits, no leading zero: int() also reads '1_000',
# ' +5 ' and other scripts' digits ('٥'), and \d matches those; none is in a report, and a shape,
# compared as text, written so ('٥', '05') would show as changed beside the same shape.
_NUMBER = "(?:0|[1-9][0-9]*)"
_WHOLE = re.compile("0|-?[1-9][0-9]*")  # signed: `call` and a field's start can be negative

# The columns of shapes as `units.shapes_text` writes them: '1x64x56x56', '1x3x32x32, 1x10', a
# scalar's '()'; empty where a row has none.
SHAPE_COLUMNS = ("input_shape", "output_shape")
_SHAPE = rf"(?:\(\)|{_NUMBER}(?:x{_NUMBER})*)"
_SHAPES = re.compile(f"{_SHAPE}(?:, {_SHAPE})*")


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


def _whole_number(cell: str, lowest: int = 0) -> int:
    # A '-' is read whatever `lowest`, so that a count of -5 is said to be below 0.
    if _WHOLE.fullmatch(cell) is None:
        raise ValueError("not a whole number as a report writes one ('117600': digits 0-9, no space, _ or +)")
    # Longer than any figure under LARGEST: refused before int(), which refuses over 4,300 digits.
    if len(cell) > len(str(LARGEST)):
        raise ValueError("larger than any model's figure")
    number = int(cell)
    if abs(number) >= LARGEST:
        raise ValueError("larger than any model's figure")
    if number < lowest:
        raise ValueError(f"below {lowest}, which no report writes there")
    return number


def _boolean(cell: str) -> bool | None:
    values = {"True": True, "False": False, "": None}
    if cell not in values:
        raise ValueError("not True, False or empty")
    return values[cell]


# One spatial dimension's entry of each field column, as `str` of its int or Fraction writes it.
_DIMS_PARTS = {
    "receptive_field": re.compile(_NUMBER),
    "effective_stride": re.compile(f"{_NUMBER}(?:/{_NUMBER})?"),  # a Fraction after upsampling: '1/2'
    "receptive_field_start": _WHOLE,  # '-1': padding puts the field's first pixel before the input
}
_NOT_DIMS = "not numbers joined by x ('212x212', '1/2x1/2'), 'input', 'undefined' or empty"


def dims(cell: str, *, column: str):
    """'212x212' -> (212, 212); '1/2x1/2' -> (Fraction(1, 2), ...); 'input', 'undefined' ->
    FieldMark; '' -> None. Each entry as a report writes it in `column` (`_DIMS_PARTS`)."""

    if not cell:
        return None
    if cell in tuple(FieldMark):
        return FieldMark(cell)
    texts = cell.split("x")
    if not all(_DIMS_PARTS[column].fullmatch(text) for text in texts):
        raise ValueError(_NOT_DIMS)
    if any(len(number) > len(str(LARGEST)) for text in texts for number in text.split("/")):
        raise ValueError("larger than any model's figure")  # checked before int(), which refuses 4,300 digits
    try:
        parts = tuple(Fraction(text) if "/" in text else int(text) for text in texts)
    except ZeroDivisionError:
        raise ValueError(_NOT_DIMS) from None
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
}
