"""What changed between two reports: per layer (matched by layer and call) and in total.

Each side is a CSV report written by `archprof summary -f csv` (or `Report.to_csv`), a model
spec (analysed here), or a Report."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archprof.analysis import analyze
from archprof.comparison import METRICS as COMPARED_METRICS
from archprof.comparison import bound_note, final_field_row
from archprof.errors import ArchprofError, first_line
from archprof.load.common import shorten
from archprof.output import json_text, read_text
from archprof.passes.receptive_field import FieldMark, Stride
from archprof.report import (
    COLUMNS,
    TRAINING_COLUMNS,
    Report,
    counts_text,
    csv_cell_text,
    csv_text,
    dims_text,
    json_fraction,
    operators_text,
)
from archprof.units import human_value, percent_change_text, ratio_text

if TYPE_CHECKING:
    import torch


# The figures compared, per layer and in total.
# The per-layer metrics a diff compares: (column, label, unit), as `comparison.METRICS` has them.
METRICS: tuple[tuple[str, str, str], ...] = tuple(
    (metric.column, metric.label, metric.unit)
    for metric in (COMPARED_METRICS[key] for key in ("params", "macs", "flops", "activation"))
)
_TEXT = ("module_type", "output_shape")  # also compared per layer
# Neutralised against formula injection in diff's CSV: names from the model, output shapes,
# which a CSV read from elsewhere may hold any text in, and field notes, which name modules.
_USER_TEXT = ("layer", "module_type", "output_shape", "receptive_field_note")
_REQUIRED = ("layer", "call", *_TEXT, *(name for name, _, _ in METRICS))
# The receptive-field columns a side has where its report recorded them (a report written
# before archprof had them, or cut down by hand, has none: its field is "not recorded").
_FIELDS = ("receptive_field", "effective_stride", "receptive_field_note")
_SIZES = _FIELDS[:2]  # the field and the stride: one size per spatial dimension
# The most of a report file read: a report has a row of a few hundred bytes per layer, so
# this is a million layers with long names; a larger file (or /dev/zero) is refused unread.
REPORT_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Side:
    """One side of a diff: a name and its rows (layer, call, module_type, output_shape, metrics)."""

    name: str
    rows: list[dict[str, Any]]

    def total(self, metric: str) -> int:
        return sum(row[metric] for row in self.rows)

    @property
    def has_fields(self) -> bool:
        """Whether its report recorded receptive fields (one of no rows has nothing to miss)."""
        return not self.rows or "receptive_field" in self.rows[0]


@dataclass(frozen=True)
class FinalField:
    """A side's final receptive field, read as `archprof compare` reads it: that of its last
    row with a spatial one (`comparison.final_field_row`), its smallest side in pixels, and
    the effective stride there (smallest side; None where undefined). `bound`: why the field
    is only an upper bound ("an upper bound: ..."), else "". Where there is no field,
    `missing` says which case ("not recorded", "undefined", "none") and `note` why; a field
    whose stride alone is undefined has its row's note there. `size_dims` and `stride_dims`:
    the field and stride per spatial dimension, as the tables show them (`final_field_text`)."""

    layer: str | None = None
    size: int | None = None
    stride: Stride | None = None
    bound: str = ""
    missing: str = ""
    note: str = ""
    size_dims: tuple[int, ...] = ()
    stride_dims: tuple[Stride, ...] = ()

    @property
    def reason(self) -> str:
        """Why the field is a bound, undefined or not recorded, or its stride undefined; '' if none."""
        return self.bound or self.note

    def as_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "receptive_field": self.size,
            "effective_stride": self.stride,
            "receptive_field_note": self.reason,
        }


@dataclass(frozen=True)
class FieldChange:
    """The final receptive field and effective stride of both sides."""

    old: FinalField
    new: FinalField

    def change(self, figure: str) -> int | Fraction | None:
        """new - old of "size" or "stride"; None where a side has none."""
        old, new = getattr(self.old, figure), getattr(self.new, figure)
        return None if old is None or new is None else new - old

    def percent(self, figure: str) -> float | None:
        change, old = self.change(figure), getattr(self.old, figure)
        return None if change is None else float(100 * change / old)

    def ratio(self, figure: str) -> float | None:
        """new / old of "size" or "stride"; None where a side has none."""
        return ratio(getattr(self.old, figure), getattr(self.new, figure))

    def texts(self, figure: str, exact: bool = False) -> tuple[str, str]:
        """Old and new "size" or "stride" as `final_field_text` writes them."""
        return final_field_text(self.old, figure, exact), final_field_text(self.new, figure, exact)

    def csv_cells(self, figure: str) -> list:
        """Old, new ("212", "1/2", "undefined", "not recorded"; '' for no spatial layer) and
        change ('' where a side has none) of "size" or "stride", as diff's CSV writes them."""
        change = self.change(figure)
        return [*self.texts(figure, exact=True), "" if change is None else str(change)]


@dataclass(frozen=True)
class TotalChange:
    metric: str
    label: str
    unit: str
    old: int
    new: int

    @property
    def change(self) -> int:
        return self.new - self.old

    @property
    def percent(self) -> float | None:
        """Relative change in percent; None when the old total is 0."""
        return 100 * self.change / self.old if self.old else None

    @property
    def ratio(self) -> float | None:
        """new / old; None when the old total is 0."""
        return ratio(self.old, self.new)


@dataclass(frozen=True)
class LayerChange:
    status: str  # "added", "removed" or "changed"
    layer: str
    call: int
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    position: int  # its row's index in `ReportDiff.every_layer`

    def delta(self, metric: str) -> int:
        return (self.new[metric] if self.new else 0) - (self.old[metric] if self.old else 0)

    def value(self, name: str) -> Any:
        """The new value, or the old one for a removed row."""
        return (self.new or self.old or {}).get(name)

    def ratio(self, metric: str) -> float | None:
        """new / old; None for a layer added or removed, or whose old figure is 0."""
        old, new = (side[metric] if side else None for side in (self.old, self.new))
        return ratio(old, new)


def ratio(old: int | Fraction | None, new: int | Fraction | None) -> float | None:
    """new / old, the float nearest the exact quotient; None where a side has no figure or old is 0."""
    return None if old is None or new is None or old == 0 else float(Fraction(new) / Fraction(old))


@dataclass(frozen=True)
class ReportDiff:
    old: str
    new: str
    totals: list[TotalChange]
    layers: list[LayerChange]  # in the new report's order, removed rows where they were
    unchanged: int  # rows present on both sides with nothing changed
    fields: FieldChange
    # The layer of every row of both sides, unchanged ones too, in the order `layers` lists
    # them: the module tree the tables place the listed layers in (`render.compare.diff_tree`).
    every_layer: tuple[str, ...]

    def to_csv(self) -> str:
        """One line per changed layer: status, layer, call, old/new shape, old/new/change per
        metric, old/new field, stride and note; then a line of status "final": each side's
        final receptive field and stride (`FieldChange.csv_cells`), their changes and notes.
        Last (added after the others, so that a reader by position still reads them), the
        ratio new / old of each metric (the layers') and of the final field and stride (the
        final line's), empty where a side has none or old is 0. Names from the model, output
        shapes and notes (`_USER_TEXT`) are neutralised against formula injection as in
        `Report.to_csv`."""

        header = ["status", "layer", "call", "old_module_type", "new_module_type", "old_output_shape"]
        header.append("new_output_shape")
        for name, _, _ in METRICS:
            header += [f"old_{name}", f"new_{name}", f"{name}_change"]
        for name in _SIZES:
            header += [f"old_{name}", f"new_{name}", f"{name}_change"]
        header += ["old_receptive_field_note", "new_receptive_field_note"]
        header += [f"{name}_ratio" for name, _, _ in METRICS] + [f"{name}_ratio" for name in _SIZES]
        user_text = [name.removeprefix("old_").removeprefix("new_") in _USER_TEXT for name in header]
        rows = [*map(self._csv_row, self.layers), self._final_csv_row()]
        return csv_text(header, rows, user_text)

    @staticmethod
    def _csv_row(change: LayerChange) -> list:
        old, new = change.old or {}, change.new or {}
        row = [change.status, change.layer, change.call]
        row += [old.get("module_type", ""), new.get("module_type", "")]
        row += [old.get("output_shape", ""), new.get("output_shape", "")]
        for name, _, _ in METRICS:
            row += [old.get(name, ""), new.get(name, ""), change.delta(name)]
        # '' where the layer has no spatial field, or its report recorded none; no change: a
        # layer's field has a size per dimension (the final row's is its smallest side).
        for name in _SIZES:
            row += [dims_text(old.get(name)), dims_text(new.get(name)), ""]
        row += [old.get("receptive_field_note", ""), new.get("receptive_field_note", "")]
        row += [change.ratio(name) for name, _, _ in METRICS]
        return [*row, "", ""]  # the fields' ratios: the final line's alone, as their changes

    def _final_csv_row(self) -> list:
        """The "final" line: no layer, call or metrics (the layers each side's final field
        is at are in the JSON), its fields as the totals give them."""
        fields = self.fields
        # no layer, call, module types, output shapes or metrics
        row = ["final", *[""] * (6 + 3 * len(METRICS))]
        row += [*fields.csv_cells("size"), *fields.csv_cells("stride")]
        row += [fields.old.reason, fields.new.reason]
        return row + [""] * len(METRICS) + [fields.ratio("size"), fields.ratio("stride")]

    def to_json(self) -> str:
        document = {
            "old": self.old,
            "new": self.new,
            "totals": [
                {
                    "metric": t.metric,
                    "old": t.old,
                    "new": t.new,
                    "change": t.change,
                    "percent": t.percent,
                    "ratio": t.ratio,
                }
                for t in self.totals
            ],
            "layers": [
                {
                    "status": c.status,
                    "layer": c.layer,
                    "call": c.call,
                    "old": c.old,
                    "new": c.new,
                    "change": {name: c.delta(name) for name, _, _ in METRICS},
                    "ratio": {name: c.ratio(name) for name, _, _ in METRICS},
                }
                for c in self.layers
            ],
            "unchanged_layers": self.unchanged,
            "final_receptive_field": {
                "old": self.fields.old.as_dict(),
                "new": self.fields.new.as_dict(),
                "receptive_field_change": self.fields.change("size"),
                "effective_stride_change": self.fields.change("stride"),
                "receptive_field_ratio": self.fields.ratio("size"),
                "effective_stride_ratio": self.fields.ratio("stride"),
            },
        }
        return json_text(document, default=json_fraction)


def diff_reports(old: Side, new: Side) -> ReportDiff:
    """Match rows by layer, call and segment; list added, removed and changed ones, and the totals."""
    old_keyed = _keyed(old.rows)
    old_rows = dict(old_keyed)
    new_keyed = _keyed(new.rows)
    new_keys = {key for key, _ in new_keyed}
    changes: list[LayerChange] = []
    every_layer: list[str] = []
    unchanged = 0

    def listed(status: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        row = after or before
        changes.append(LayerChange(status, row["layer"], row["call"], before, after, len(every_layer)))
        every_layer.append(row["layer"])

    # Removed rows are listed just before the next row both sides share, so that the
    # listing follows the network's order.
    pending_removed = [(key, row) for key, row in old_keyed if key not in new_keys]
    old_order = {key: index for index, (key, _) in enumerate(old_keyed)}
    for key, row in new_keyed:
        before = old_rows.get(key)
        if before is not None:
            while pending_removed and old_order[pending_removed[0][0]] < old_order[key]:
                listed("removed", pending_removed.pop(0)[1], None)
        if before is None:
            listed("added", None, row)
        elif any(before[name] != row[name] for name in (*_TEXT, *(m for m, _, _ in METRICS))):
            listed("changed", before, row)
        else:
            unchanged += 1
            every_layer.append(row["layer"])
    for _, removed in pending_removed:
        listed("removed", removed, None)
    totals = [TotalChange(name, label, unit, old.total(name), new.total(name)) for name, label, unit in METRICS]
    fields = FieldChange(final_field(old), final_field(new))
    return ReportDiff(old.name, new.name, totals, changes, unchanged, fields, tuple(every_layer))


def final_field(side: Side) -> FinalField:
    """The side's final receptive field (`FinalField`)."""
    if not side.has_fields:
        return FinalField(missing="not recorded", note="not recorded: the report has no receptive_field column")
    row = final_field_row(side.rows)
    if row is None:
        return FinalField(missing="none", note="no layer with a spatial receptive field")
    note = row.get("receptive_field_note", "")
    if row["receptive_field"] == FieldMark.UNDEFINED:
        return FinalField(row["layer"], missing="undefined", note=f"undefined: {note}" if note else "undefined")
    field, stride = row["receptive_field"], row.get("effective_stride")
    strides = stride if isinstance(stride, tuple) else ()
    bound = bound_note(note)
    smallest_stride = min(strides) if strides else None
    # A defined field's other note says why its stride is undefined.
    note = "" if bound else note
    return FinalField(row["layer"], min(field), smallest_stride, bound, note=note, size_dims=field, stride_dims=strides)


def _keyed(rows: list[dict[str, Any]]) -> list[tuple[tuple[str, int, int], dict[str, Any]]]:
    """Each row with its key (layer, call, segment): a container's own operations before and
    after a child call are two rows of one layer and call, told apart by their order."""
    seen: dict[tuple[str, int], int] = {}
    keyed = []
    for row in rows:
        layer_call = (row["layer"], row["call"])
        segment = seen.get(layer_call, 0)
        seen[layer_call] = segment + 1
        keyed.append(((*layer_call, segment), row))
    return keyed


def side_from_report(report: Report, name: str | None = None) -> Side:
    kept = [*_REQUIRED, *(column for column in _FIELDS if column in report.columns)]
    rows = [{name: row[name] for name in kept} for row in report.rows()]
    return Side(name or report.model, rows)


def read_csv_report(path: str | Path) -> Side:
    """Rows of a CSV report; a file that is not one raises ArchprofError naming the problem and line.

    Names come back exactly as the model had them (`archprof.report.csv_cell` undone, line
    breaks inside quoted cells kept). A byte-order mark (Excel's "CSV UTF-8") is skipped."""
    path = Path(path)
    return Side(path.stem, _read_rows(path, _REQUIRED, optional=_FIELDS))


def read_csv_layers(path: str | Path) -> list[dict[str, Any]]:
    """Every row of a CSV report with every column of `archprof.report.COLUMNS` (and, from a
    training report, `TRAINING_COLUMNS`) it has, read
    back into the values `Report.rows()` holds: ints, (212, 212) for '212x212', FieldMark for
    'input' / 'undefined', None for '', {'aten.cumsum': 1} for 'aten.cumsum x1', True / False /
    None for covers_input. A file that is not a report, or a cell a report cannot hold, raises
    ArchprofError naming the column and line."""

    return _read_rows(Path(path))


def _read_rows(path: Path, names: Sequence[str] | None = None, optional: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The columns `names` (default every report column the file has), and those of
    `optional` it has, of every row, each cell read by its column's reader; an error names
    the row's last physical line (a quoted cell may span several)."""

    text = read_text(path, "report", REPORT_BYTES)
    with _fields_up_to(len(text)):
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        missing = [name for name in _REQUIRED if name not in header]
        if missing:
            raise ArchprofError(
                f"{path} is not an archprof CSV report (from `archprof summary -f csv`): no column {', '.join(missing)}"
            )
        # csv.DictReader would keep the last of two cells of one name, silently.
        repeated = [name for name, count in Counter(header).items() if count > 1]
        if repeated:
            raise ArchprofError(f"{path}, line 1: column {shorten(repeated[0])} appears twice: which is the report's?")
        columns = {c.name: c for c in (*COLUMNS, *TRAINING_COLUMNS)}
        names = [name for name in columns if name in header] if names is None else names
        names = [*names, *(name for name in optional if name in header)]
        readers = {name: _cell_reader(columns[name]) for name in names}
        rows = []
        for raw in reader:
            line = reader.line_num
            row: dict[str, Any] = {}
            for name, read in readers.items():
                if raw[name] is None:  # DictReader's filler for the cells a short row lacks
                    ends = f"the row ends before its {name} cell"
                    raise ArchprofError(f"{path}, line {line}: {ends}: is the file cut short?")
                try:
                    row[name] = read(raw[name])
                except ValueError as exc:
                    raise ArchprofError(f"{path}, line {line}: {name} is {shorten(raw[name])}, {exc}") from None
            rows.append(row)
    if not rows:
        raise ArchprofError(f"{path} has no rows: a report has one per layer; is the file cut short?")
    return rows


def read_json_report(path: str | Path) -> Side:
    """Rows of a JSON report (`archprof summary -f json`): its "layers", each checked to
    hold the columns a diff compares, of the types a report writes them in; a file that is
    not one raises ArchprofError naming the problem (and the layer's index)."""
    path = Path(path)
    try:
        document = json.loads(read_text(path, "report", REPORT_BYTES), object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:  # ValueError: JSONDecodeError, int()'s digit limit
        raise ArchprofError(f"{path} is not valid JSON: {first_line(exc, bare=True)}") from None
    layers = document.get("layers") if isinstance(document, dict) else None
    if not isinstance(layers, list) or not layers:
        raise ArchprofError(f"{path} is not an archprof JSON report (from `archprof summary -f json`): no layers")
    return Side(path.stem, [_json_row(path, index, layer) for index, layer in enumerate(layers)])


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused where a key repeats: json.loads would keep the last, silently."""
    repeated = [key for key, count in Counter(key for key, _ in pairs).items() if count > 1]
    if repeated:
        raise ValueError(f"key {shorten(repeated[0])} appears twice in an object")
    return dict(pairs)


def _json_row(path: Path, index: int, layer: Any) -> dict[str, Any]:
    """The columns a diff compares of one layer of a JSON report, checked."""
    if not isinstance(layer, dict):
        raise ArchprofError(f"{path}, layer {index}: not an object")
    for name in _REQUIRED:
        if name not in layer:
            raise ArchprofError(f"{path}, layer {index}: no {name}")
        if not _as_written(name, layer[name]):
            raise ArchprofError(f"{path}, layer {index}: {name} is {shorten(json.dumps(layer[name]))}, not a report's")
    row = {name: layer[name] for name in _REQUIRED}
    for name in (name for name in _FIELDS if name in layer):
        try:
            row[name] = _JSON_FIELD_READERS[name](layer[name])
        except ValueError as exc:
            raise ArchprofError(f"{path}, layer {index}: {name} is {shorten(json.dumps(layer[name]))}, {exc}") from None
    return row


def _json_dims(value: Any):
    """A JSON report's field or stride ([212, 212], ["1/2", "1/2"], "input", null) as `_dims`
    reads the CSV's text of it."""
    if value is None:
        return None
    if isinstance(value, list) and value and all(type(part) is int or _fraction_part(part) for part in value):
        return _dims("x".join(map(str, value)))
    if value in tuple(FieldMark):
        return FieldMark(value)
    raise ValueError("not a list of numbers, 'input', 'undefined' or null")


def _fraction_part(part: Any) -> bool:
    """A fractional stride's entry as JSON writes it ("1/2"): one number, never joined ones."""
    return isinstance(part, str) and "x" not in part


def _json_note(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("not text")
    return value


_JSON_FIELD_READERS = {
    "receptive_field": _json_dims,
    "effective_stride": _json_dims,
    "receptive_field_note": _json_note,
}


def _as_written(name: str, value: Any) -> bool:
    """Whether a JSON report's cell of column `name` is what a report writes there: text,
    or (call and the metrics) a whole number a report can hold."""
    if name in ("layer", *_TEXT):
        return isinstance(value, str)
    return type(value) is int and abs(value) < _LARGEST


@contextmanager
def _fields_up_to(length: int) -> Iterator[None]:
    """The csv module's limit on a cell's length (131,072 characters) raised to `length` for
    the block: a report holds a module's name whole, however long."""
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, length))
    try:
        yield
    finally:
        csv.field_size_limit(limit)


# -- reading cells back: the inverse of Report.to_csv's text, the one place text becomes values


def _cell_reader(column) -> Callable[[str], Any]:

    if column.text is not None:  # before user_text: operators' and not_counted's cells are both
        return _TEXT_READERS[column.text]
    if column.user_text:
        return csv_cell_text
    if column.dtype == "int64":
        return _whole_number
    if column.dtype == "boolean":
        return _boolean
    return str


# No model's count or size comes near 10**60 (a batch of 2**62 samples, each as large as
# int64 allows, through a layer as large: about 10**40). A longer number is no report's, and
# the human units and percentages a diff shows, floats, could not hold it.
_LARGEST = 10**60


def _whole_number(cell: str) -> int:
    try:
        number = int(cell)
    except ValueError:
        if re.fullmatch(r"\s*[+-]?\d+\s*", cell):  # digits past int()'s limit (sys.get_int_max_str_digits)
            raise ValueError("larger than any model's figure") from None
        raise ValueError("not a whole number") from None
    if abs(number) >= _LARGEST:
        raise ValueError("larger than any model's figure")
    return number


def _boolean(cell: str) -> bool | None:
    values = {"True": True, "False": False, "": None}
    if cell not in values:
        raise ValueError("not True, False or empty")
    return values[cell]


def _dims(cell: str):
    """'212x212' -> (212, 212); '1/2x1/2' -> (Fraction(1, 2), ...); 'input', 'undefined' ->
    FieldMark; '' -> None."""

    if not cell:
        return None
    if cell in tuple(FieldMark):
        return FieldMark(cell)
    try:
        return tuple(Fraction(part) if "/" in part else int(part) for part in cell.split("x"))
    except (ValueError, ZeroDivisionError):
        raise ValueError("not numbers joined by x ('212x212', '1/2x1/2'), 'input', 'undefined' or empty") from None


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
    dims_text: _dims,
}


_REPORT_READERS = {"csv": read_csv_report, "json": read_json_report}


def load_side(spec: Any, input_size: Sequence[int] | str | None = None, **options: Any) -> Side:
    """A CSV or JSON report (a path ending in .csv or .json, a string or a `pathlib.Path`),
    else a model in any form `archprof.analyze` takes (a spec, a model file, a module, a factory), analysed here
    (`options`: the keywords of `archprof.analyze`)."""
    named = isinstance(spec, str | os.PathLike)
    suffix = os.fspath(spec).lower().rpartition(".")[2] if named else ""
    if suffix in _REPORT_READERS:
        return _REPORT_READERS[suffix](os.fspath(spec))
    report = analyze(spec, input_size, **options)
    return side_from_report(report, os.fspath(spec) if named else report.model)


def diff(
    old: str | Report,
    new: str | Report,
    input_size: Sequence[int] | str | None = None,
    batch: int | None = None,
    dtype: torch.dtype | str | None = None,
    *,
    inputs: Any = None,
    args: Mapping[str, Any] | None = None,
    weights: str | Path | None = None,
    trust_pickle: bool = False,
    fold_bn: bool = False,
) -> ReportDiff:
    """Diff two reports, CSV paths or models (any form `archprof.analyze` takes); the other
    arguments, as for `archprof.analyze`, apply to the models."""
    options = {"batch": batch, "dtype": dtype, "inputs": inputs, "args": args, "weights": weights, "fold_bn": fold_bn}
    sides = [
        side_from_report(side)
        if isinstance(side, Report)
        else load_side(side, input_size, trust_pickle=trust_pickle, **options)
        for side in (old, new)
    ]
    return diff_reports(*sides)


# -- text ----------------------------------------------------------------------------------


def format_change(unit: str, change: int | Fraction | None) -> str:
    """'+1.20 M', '-4 px', '0'; 'n/a' where a side has no figure (None)."""
    if change is None:
        return "n/a"
    if change == 0:
        return "0"
    return ("+" if change > 0 else "-") + human_value(unit, abs(change))


def format_percent(percent: float | None) -> str:
    """'+86.5%', to 0.1% as check's margins and every share; 'n/a' where there is none."""
    return "n/a" if percent is None else percent_change_text(percent / 100)


def value_change(change: LayerChange, name: str, text: Callable[[Any], str] = str) -> str:
    """'1x64x112x112 → 1x64x80x80' where the sides' `name` (an output shape, a field as
    `text` writes it) differs; else the one value ('' where neither side has one)."""
    old = text(change.old.get(name)) if change.old else ""
    new = text(change.new.get(name)) if change.new else ""
    if change.old and change.new and old != new:
        return f"{old} → {new}"
    return new or old


def format_ratio(ratio: float | None) -> str:
    """'1.84x' (new / old), as `archprof compare` writes its ratios; 'n/a' where there is none
    (an old total of 0, a side without a field)."""
    return "n/a" if ratio is None else ratio_text(ratio)


# The final field's figures as a diff shows them: (label, FinalField attribute).
FIELD_FIGURES = (("Final receptive field", "size"), ("Final stride", "stride"))


def final_field_text(final: FinalField, figure: str, exact: bool = False) -> str:
    """A side's final "size" or "stride" as the tables show it: per spatial dimension, as
    summary and rf show it, '212x212'; '≤212x212' for a field that is only an upper bound,
    as `archprof compare` marks it; 'not recorded',
    'undefined' (the stride alone too), or '-' where the side has no spatial layer.
    `exact`: as diff's CSV writes it, the bare number ('212', '1/2'), '' for no spatial layer."""
    if final.missing:
        if final.missing == "none":
            return "" if exact else "-"
        return final.missing
    value = getattr(final, figure)
    if value is None:  # the stride alone undefined (the note says why)
        return "undefined"
    if exact:
        return str(value)
    return ("≤" if final.bound and figure == "size" else "") + dims_text(getattr(final, f"{figure}_dims"))


def final_field_notes(diff: ReportDiff) -> list[tuple[str, str]]:
    """(side's name, sentence) where a side's final field is an upper bound, undefined or not
    recorded, or its stride undefined: the lines under a diff's totals, a bound worded as
    `archprof compare` words it ("receptive field is an upper bound: ...")."""
    notes = []
    for name, final in ((diff.old, diff.fields.old), (diff.new, diff.fields.new)):
        if final.bound or (final.missing and final.missing != "none"):
            notes.append((name, f"receptive field is {final.bound or final.note}"))
        elif final.note and not final.missing:
            notes.append((name, f"stride is undefined: {final.note}"))
    return notes
