"""What changed between two sides of a diff: the rows matched by layer, call and segment,
the layers added, removed and changed, the totals, and each side's final receptive field and
stride; the `ReportDiff` that holds them, and its CSV and JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from archprof.lazy_modules import LazyModule
from archprof.metrics import METRICS as COMPARED_METRICS
from archprof.metrics import bound_note, final_field_row, undefined_note
from archprof.output import json_text
from archprof.passes.receptive_field import FieldMark, Stride
from archprof.report import Report, fits_int64
from archprof.report.formats import csv_text, json_fraction, utf8_text, write
from archprof.text import dims_text, field_text, visible_text
from archprof.units import human_value, percent_change_text

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = LazyModule("pandas")  # for typing.get_type_hints: pandas imported only when an annotation is read

# The figures compared, per layer and in total.
# The per-layer metrics a diff compares: (column, label, unit), as `metrics.METRICS` has them.
METRICS: tuple[tuple[str, str, str], ...] = tuple(
    (metric.column, metric.label, metric.unit)
    for metric in (COMPARED_METRICS[key] for key in ("params", "macs", "flops", "activation"))
)


TEXT = ("module_type", "output_shape")  # also compared per layer
# Compared per layer too where both sides have it (a report written before archprof had the
# column has none): the window of the layer's convolution or pooling, 3x3 -> 5x5.
KERNEL = "kernel"
# Read where a report has it, for `metrics.final_field_row`: a row that only moves data makes no map.
OPERATORS = "operators"


# Neutralised against formula injection in diff's CSV: names from the model, output shapes,
# which a CSV read from elsewhere may hold any text in, and field notes, which name modules.
_USER_TEXT = ("layer", "module_type", "output_shape", "receptive_field_note", "kernel")


REQUIRED = ("layer", "call", *TEXT, *(name for name, _, _ in METRICS))


# The receptive-field columns a side has where its report recorded them (a report written
# before archprof had them, or cut down by hand, has none: its field is "not recorded").
FIELDS = ("receptive_field", "effective_stride", "receptive_field_note")


_SIZES = FIELDS[:2]  # the field and the stride: one size per spatial dimension


@dataclass(frozen=True)
class Side:
    """One side of a diff: a name and its rows (layer, call, module_type, output_shape, metrics),
    and the type of each of its model's modules, containers too, where it was analysed here
    ({} for a report read from a file, whose rows name only theirs)."""

    name: str
    rows: list[dict[str, Any]]
    module_types: dict[str, str] = field(default_factory=dict)

    def total(self, metric: str) -> int:
        return sum(row[metric] for row in self.rows)

    @property
    def has_fields(self) -> bool:
        """Whether its report recorded receptive fields (one of no rows has nothing to miss)."""
        return not self.rows or "receptive_field" in self.rows[0]


@dataclass(frozen=True)
class FinalField:
    """A side's final receptive field, read as `archprof compare` reads it: that of its last
    row with a spatial one (`metrics.final_field_row`), its smallest side in pixels, and
    the effective stride there (smallest side; None where undefined). `bound`: why the field
    is only an upper bound ("an upper bound: ..."), else "". Where there is no field,
    `missing` says which case ("not recorded", "undefined", "none") and `note` why; a field
    whose stride alone is undefined has its row's note there. `size_dims` and `stride_dims`:
    the field and stride per spatial dimension, as the tables show them (`final_field_text`);
    `size_dims` FieldMark.INPUT where every unit of the last map sees the whole input
    ("global": no size in pixels, and no stride, to set beside the other side's)."""

    layer: str | None = None
    size: int | None = None
    stride: Stride | None = None
    bound: str = ""
    missing: str = ""
    note: str = ""
    size_dims: tuple[int, ...] | FieldMark = ()
    stride_dims: tuple[Stride, ...] = ()

    @property
    def reason(self) -> str:
        """Why the field is a bound, undefined or not recorded, or its stride undefined; '' if none."""
        return self.bound or self.note

    @property
    def whole_input(self) -> bool:
        """Whether every unit of the last map sees the whole input."""
        return self.size_dims == FieldMark.INPUT

    def as_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "receptive_field": FieldMark.INPUT.value if self.whole_input else self.size,
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
        """The change in percent of old; None where a side has none or old is 0."""
        change, old = self.change(figure), getattr(self.old, figure)
        return None if change is None or old == 0 else float(100 * change / old)

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
    # Each side's module types (`Side.module_types`): a container's, which no row of its own names.
    old_types: dict[str, str] = field(default_factory=dict, repr=False)
    new_types: dict[str, str] = field(default_factory=dict, repr=False)

    def to_csv(self, path=None) -> str:
        """One line per changed layer: status, layer, call, old/new shape, old/new/change per
        metric, old/new field, stride and note; then a line of status "final": each side's
        final receptive field and stride (`FieldChange.csv_cells`), their changes and notes.
        Last (added after the others, so that a reader by position still reads them), the
        ratio new / old of each metric (the layers') and of the final field and stride (the
        final line's), empty where a side has none or old is 0. Names from the model, output
        shapes and notes (`_USER_TEXT`) are neutralised against formula injection as in
        `Report.to_csv`."""
        user_text = [name.removeprefix("old_").removeprefix("new_") in _USER_TEXT for name in _CSV_HEADER]
        rows = [*map(self._csv_row, self.layers), self._final_csv_row()]
        return write(csv_text(_CSV_HEADER, rows, user_text), path)

    def to_dataframe(self) -> pd.DataFrame:
        """The layers added, removed and changed, one row each, with `to_csv`'s columns (but
        the final field's and stride's changes and ratios, which its "final" line alone has:
        they are `fields`), names as the models give them ('' the model's own operations).
        <NA> where the CSV writes nothing (the side a layer is missing from, no note, no
        spatial field); counts and bytes Int64 (exact Python ints, dtype object, where one
        or their sum passes int64), ratios float64 (NaN where old is 0), the rest strings."""
        import pandas as pd

        rows = [self._csv_row(change) for change in self.layers]
        columns = {name: [row[position] for row in rows] for position, name in enumerate(_CSV_HEADER)}
        return pd.DataFrame({name: _typed(name, columns[name]) for name in _CSV_HEADER if name not in _FINAL_ONLY})

    def layers_text(self) -> str:
        """'layers: 56 added, 69 unchanged' (it said '56 layers changed' of 56 rows all 'added');
        'layers: none added, removed or changed, 12 unchanged'."""
        counts = [(sum(change.status == status for change in self.layers), status) for status in _STATUSES]
        listed = ", ".join(f"{count} {status}" for count, status in counts if count)
        return f"layers: {listed or 'none added, removed or changed'}, {self.unchanged} unchanged"

    def __repr__(self) -> str:
        totals = ", ".join(
            f"{t.label} {human_value(t.unit, t.old)} → {human_value(t.unit, t.new)}"
            + ("" if t.percent is None else f" ({percent_change_text(t.percent / 100)})")
            for t in self.totals
        )
        return (
            f"<archprof diff of {visible_text(self.old)} → {visible_text(self.new)}: {self.layers_text()}>\n"
            f"  {totals}\n"
            "  .to_dataframe() for the layers changed, .totals and .fields for the figures;"
            " archprof.render.diff_tables(diff) is the CLI's table"
        )

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
        # the fields' ratios: the final line's alone, as their changes; then the windows
        return [*row, "", "", old.get(KERNEL, ""), new.get(KERNEL, "")]

    def _final_csv_row(self) -> list:
        """The "final" line: no layer, call or metrics (the layers each side's final field
        is at are in the JSON), its fields as the totals give them."""
        fields = self.fields
        # no layer, call, module types, output shapes or metrics
        row = ["final", *[""] * (6 + 3 * len(METRICS))]
        row += [*fields.csv_cells("size"), *fields.csv_cells("stride")]
        row += [fields.old.reason, fields.new.reason]
        return row + [""] * len(METRICS) + [fields.ratio("size"), fields.ratio("stride"), "", ""]

    def to_json(self, path=None) -> str:
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
        return write(json_text(document, default=json_fraction), path)


_STATUSES = ("added", "removed", "changed")


def _compared(name: str) -> tuple[str, str, str]:
    """A figure's three columns: its old and new values and the change."""
    return f"old_{name}", f"new_{name}", f"{name}_change"


# `ReportDiff.to_csv`'s columns, and `to_dataframe`'s.
_CSV_HEADER = (
    "status",
    "layer",
    "call",
    "old_module_type",
    "new_module_type",
    "old_output_shape",
    "new_output_shape",
    *(column for name, _, _ in METRICS for column in _compared(name)),
    *(column for name in _SIZES for column in _compared(name)),
    "old_receptive_field_note",
    "new_receptive_field_note",
    *(f"{name}_ratio" for name, _, _ in METRICS),
    *(f"{name}_ratio" for name in _SIZES),
    "old_kernel",  # last: a reader by position still reads the columns before them
    "new_kernel",
)
# Its columns of counts and bytes: each metric's old, new and change, and the call.
_INTEGERS = frozenset(column for name, _, _ in METRICS for column in _compared(name)) | {"call"}
# Its columns that only its "final" line fills.
_FINAL_ONLY = frozenset(column for name in _SIZES for column in (f"{name}_change", f"{name}_ratio"))


def _typed(name: str, values: list) -> pd.Series:
    """A column of `ReportDiff.to_dataframe`, from its CSV cells ('' or None where the CSV writes nothing)."""
    import pandas as pd

    if name == "layer":  # the model's own operations' row is named ''
        return pd.Series(values, dtype="string")
    cells = [None if value in ("", None) else value for value in values]
    if name.endswith("_ratio"):
        return pd.Series([float("nan") if cell is None else cell for cell in cells], dtype="float64")
    if name in _INTEGERS:
        return pd.Series(cells, dtype="Int64" if fits_int64(cells) else "object")
    return pd.Series(cells, dtype="string")


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
        elif any(before[name] != row[name] for name in (*TEXT, *(m for m, _, _ in METRICS))) or kernel_changed(
            before, row
        ):
            listed("changed", before, row)
        else:
            unchanged += 1
            every_layer.append(row["layer"])
    for _, removed in pending_removed:
        listed("removed", removed, None)
    totals = [TotalChange(name, label, unit, old.total(name), new.total(name)) for name, label, unit in METRICS]
    fields = FieldChange(final_field(old), final_field(new))
    return ReportDiff(
        old.name, new.name, totals, changes, unchanged, fields, tuple(every_layer), old.module_types, new.module_types
    )


def kernel_changed(before: dict[str, Any] | None, after: dict[str, Any] | None) -> bool:
    """Whether a layer's window changed (3x3 -> 5x5, its parameters and MACs perhaps not), where
    both sides recorded one (not a report without the column, nor a rolled-up row's '', which
    merges several)."""
    old, new = (side.get(KERNEL) if side else None for side in (before, after))
    return bool(old) and bool(new) and old != new


def final_field(side: Side) -> FinalField:
    """The side's final receptive field (`FinalField`)."""
    if not side.has_fields:
        return FinalField(missing="not recorded", note="not recorded: the report has no receptive_field column")
    row = final_field_row(side.rows)
    if row is None:
        return FinalField(missing="none", note="no layer with a spatial receptive field")
    note = row.get("receptive_field_note", "")
    if row["receptive_field"] == FieldMark.UNDEFINED:
        return FinalField(row["layer"], missing="undefined", note=undefined_note(note))
    if row["receptive_field"] == FieldMark.INPUT:  # every unit of the last map sees the whole input
        return FinalField(row["layer"], size_dims=FieldMark.INPUT)
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
    """A report's rows as a side; its names as a CSV report writes them (`utf8_text`), so that
    a model's layers match those of its own CSV."""
    kept = [*REQUIRED, *(column for column in (*FIELDS, KERNEL, OPERATORS) if column in report.columns)]
    rows = [{name: row[name] for name in kept} for row in report.rows()]
    for row in rows:
        row["layer"], row["module_type"] = utf8_text(row["layer"]), utf8_text(row["module_type"])
    module_types = {utf8_text(path): utf8_text(module_type) for path, module_type in report.module_types.items()}
    return Side(name or report.model, rows, module_types)


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
    if final.whole_input:  # a size of the whole input, and no stride between units that each see it
        if figure == "size":
            return FieldMark.INPUT.value if exact else field_text(FieldMark.INPUT)
        return "" if exact else "-"
    value = getattr(final, figure)
    if value is None:  # the stride alone undefined (the note says why)
        return "undefined"
    if exact:
        return str(value)
    return ("≤" if final.bound and figure == "size" else "") + dims_text(getattr(final, f"{figure}_dims"))
