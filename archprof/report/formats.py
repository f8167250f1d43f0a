"""The text of a report's files, shared by every writer (the Report's, `diff`'s, `comparison`'s):
operator names and counts as cells, CSV whose cells from the user's model are neutralised
against formula injection, fractions in JSON, and the atomic write to a path."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

from archprof.errors import ArchprofError, shown
from archprof.output import write_atomically

# An operator name written as it is in a cell of names: none of the separators (a space, "; "),
# nor a double quote, which opens a name written as a JSON string.
_BARE_NAME = re.compile(r'[^\s;"]+')


def operator_text(name: str) -> str:
    """An operator's name as a cell of names writes it: as it is ('aten.cumsum'), or, where it
    holds a space, a ';' or a '"' (a custom library's namespace may be any text), as a JSON
    string ('"my lib.f"'), so that `archprof.diff` reads every name back exactly."""
    return name if _BARE_NAME.fullmatch(name) else json.dumps(name, ensure_ascii=False)


def operators_text(names: tuple[str, ...]) -> str:
    """A row's operators as the CSV and JSON write them: 'convolution relu_'."""
    return " ".join(map(operator_text, names))


def counts_text(counts: dict[str, int]) -> str:
    """Operator counts as the CSV writes them: 'aten.cumsum x1; aten.sort x2'."""
    return "; ".join(f"{operator_text(op)} x{n}" for op, n in counts.items())


# -- text from the user's model (module names, class names, the model's name) ------------

# OWASP's list of the first characters that make a spreadsheet read a cell as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"


def csv_cell(value):
    """A cell for a CSV file: text starting with = + - @, a tab or a carriage return gets a
    leading ' (OWASP's defence against formula injection), and so does text already starting
    with ', so that `csv_cell_text` gives every text back exactly. A lone surrogate, which
    UTF-8 has no code for (a name made from a file name that is not UTF-8: Python reads its
    byte 0xff as U+DCFF), is written as its escape, `\\udcff`, as the tables show it.
    Numbers pass unchanged."""
    if not isinstance(value, str):
        return value
    value = utf8_text(value)
    return _QUOTE + value if value.startswith((*_FORMULA_STARTS, _QUOTE)) else value


def utf8_text(text: str) -> str:
    """`text` with each lone surrogate (UTF-8 has no code for one) as its escape, `\\udcff`:
    what a CSV report holds of it, and what `archprof.diff` matches a model's names by."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def csv_cell_text(cell: str) -> str:
    """The text `csv_cell` wrote."""
    return cell.removeprefix(_QUOTE)


def csv_text(header: Sequence[str], rows: Iterable[Sequence], user_text: Sequence[bool]) -> str:
    """CSV with a header; the cells where `user_text` is true go through `csv_cell`."""
    buffer = io.StringIO()
    plain = csv.writer(buffer, lineterminator="\n")
    # The csv module quotes a cell holding "\n" but not one holding "\r", which a reader
    # takes for the end of the line: a row with one is written with every cell quoted.
    quoted = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    plain.writerow(header)
    for row in rows:
        cells = [csv_cell(cell) if is_user_text else cell for cell, is_user_text in zip(row, user_text, strict=True)]
        has_return = any(isinstance(cell, str) and "\r" in cell for cell in cells)
        (quoted if has_return else plain).writerow(cells)
    return buffer.getvalue()


def json_fraction(value: Any) -> str:
    """JSON for a fractional effective stride: '1/2', as the CSV writes it."""
    if isinstance(value, Fraction):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write(text: str, path) -> str:
    """`text`, written to `path` (a str or os.PathLike) where given."""
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise ArchprofError(
                f"path must be a file name (a str or a Path), got {shown(path)} ({type(path).__name__})"
            )
        if not os.fspath(path):  # Path('') is '.', a directory: said as the empty name it is
            raise ArchprofError("path is empty: give a file name, or None for the text alone")
        write_atomically(path, text)
    return text
