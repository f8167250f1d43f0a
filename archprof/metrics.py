"""The figures a budget can limit and a comparison sets side by side, read from a Report
through one registry (`METRICS`): a metric whose analysis pass this archprof does not have
(peak memory, receptive field) says so (`MetricUnavailable`) instead of reading as zero; and
the final receptive field, the network's, with its notes."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from archprof.errors import ArchprofError
from archprof.operators import Family, operator_named
from archprof.passes.receptive_field import FieldMark
from archprof.passes.receptive_field.walk import UPPER_BOUND
from archprof.report import Report


class MetricUnavailable(ArchprofError):
    """The metric cannot be read from this report (its analysis pass is missing, or the model has none)."""


@dataclass(frozen=True)
class Metric:
    key: str  # the name in budgets: --max-<key>, max-<key> = ...
    column: str  # the column of the comparison DataFrame
    label: str  # for tables
    unit: str  # "count", "bytes" or "pixels": how limits are parsed and values shown
    read: Callable[[Report], int]  # raises MetricUnavailable
    training: bool = False  # read from a training analysis (analyze(..., training=True))

    def __reduce__(self):  # by key: `read` may be a closure, and a budget entry goes to worker processes
        return _metric, (self.key,)


def _metric(key: str) -> Metric:
    return METRICS[key]


def _total(name: str, what: str, training: bool = False) -> Callable[[Report], int]:
    """The report's total `name`; `training`: a figure only a training step's report has."""

    def read(report: Report) -> int:
        value = getattr(report.totals, name, None)
        if value is None and training:
            raise MetricUnavailable(
                f"{what} is not available: the report is of inference; analyse a training step"
                " (training=True; --train on the command line)"
            )
        if value is None:
            raise MetricUnavailable(f"{what} is not available in this report")
        return int(value)

    return read


def final_receptive_field(report: Report) -> int:
    """The receptive field of the last feature map (`final_field_row`): the last row with a
    spatial field, or a later map whose every unit sees the whole input (after a
    squeeze-excitation gate), which reads as the input's size. Rows after global pooling or
    flattening, which see the whole input at one position (FieldMark.INPUT), and rows without
    a spatial output (None) are passed over. A field given per spatial dimension ((212, 212))
    reads as its smallest side, what every dimension at least sees.
    `final_receptive_field_bound` says whether it is only an upper bound."""
    dims = _final_field(report)[0]
    return min(_input_extents(report) if dims == FieldMark.INPUT else dims)


def final_receptive_field_dims(report: Report) -> tuple[int, ...] | FieldMark:
    """That field per spatial dimension, (212, 212), as `archprof summary` and `rf` show it, or
    FieldMark.INPUT where every unit of the last map sees the whole input ("global");
    `final_receptive_field` is its smallest side. Raises as `final_receptive_field`."""
    return _final_field(report)[0]


def _input_extents(report: Report) -> tuple[int, ...]:
    """The sizes of the input's spatial dimensions (its first input's, past batch and channels)."""
    extents = report.input_shapes[0][2:] if report.input_shapes else ()
    if not extents:
        raise MetricUnavailable(f"model '{report.model}' has no spatial input to read the whole of")
    return extents


def final_receptive_field_bound(report: Report) -> str:
    """Why the final receptive field is only an upper bound, as its row's note says it
    ("an upper bound: ..."), or "" where it is exact. Raises as `final_receptive_field`."""
    return _final_field(report)[1]


def _final_field(report: Report) -> tuple[tuple[int, ...] | FieldMark, str]:
    """The last spatial row's field and, where that field is an upper bound, its note."""
    row = _final_row(report)
    if row is None:
        raise MetricUnavailable(f"model '{report.model}' has no layer with a spatial receptive field")
    layer, note = row["layer"] or "(model)", row["receptive_field_note"]
    if row["receptive_field"] == FieldMark.UNDEFINED:
        raise MetricUnavailable(f"the receptive field of {layer} in {report.model} is {undefined_note(note)}")
    return row["receptive_field"], bound_note(note)


def _final_row(report: Report) -> Mapping[str, Any] | None:
    """`final_field_row` of the report's rows."""
    values = report.columns.get("receptive_field")
    if values is None:
        raise MetricUnavailable("receptive field is not available in this report")
    notes = report.columns.get("receptive_field_note") or [""] * len(values)
    columns = (report.columns["layer"], report.columns["output_shape"], report.columns["operators"], values, notes)
    rows = [
        {
            "layer": layer,
            "output_shape": shape,
            "operators": ops,
            "receptive_field": value,
            "receptive_field_note": note,
        }
        for layer, shape, ops, value, note in zip(*columns, strict=True)
    ]
    return final_field_row(rows)


def undefined_note(note: str) -> str:
    """An undefined field said with its row's note, why: "undefined: aten.grid_sampler_2d in ..."."""
    return f"undefined: {note}" if note else "undefined"


def final_field_note(report: Report) -> str | None:
    """What the comparison notes of the final field: why it is only an upper bound ("" where
    it is exact), or why it is undefined ("undefined: aten.grid_sampler_2d in (model): ...",
    where the field is <NA>, as a model without a spatial layer's, which has None)."""
    row = _final_row(report)
    if row is None:
        return None
    if row["receptive_field"] == FieldMark.UNDEFINED:
        return undefined_note(row["receptive_field_note"])
    return bound_note(row["receptive_field_note"])


def final_field_row(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The row whose field is the model's final one, that of its last feature map: the last
    row with a spatial field (a tuple) or an undefined one; or a later one that sees the
    whole input (FieldMark.INPUT) on a map like it, of as many dimensions and more than one
    position past batch and channels (after a squeeze-excitation gate, as EfficientNet's
    maps, or Swin's attention: "global"). Passed over: rows that see the whole input at one
    position (after global pooling), rows of other dimensions (a flatten, a vision
    transformer's tokens), rows that only move data (logits viewed as boxes, 1x100x4, where
    a 1-d map is 1xCxL too), and rows without a spatial field (None). None where no row has a
    spatial or undefined field. Rows as `Report.rows()` has them, with at least layer,
    output_shape and receptive_field."""
    last = next((i for i in reversed(range(len(rows))) if _spatial_or_undefined(rows[i]["receptive_field"])), None)
    if last is None:
        return None
    rank = len(first_output_shape(rows[last]["output_shape"]))
    for row in reversed(rows[last + 1 :]):
        shape = first_output_shape(row["output_shape"])
        on_a_map = len(shape) == rank and math.prod(shape[2:]) > 1
        operators = row.get("operators")  # None: not recorded (a side of a diff read without them)
        moves_data = operators is not None and _moves_data_only(operators)
        if row["receptive_field"] == FieldMark.INPUT and on_a_map and not moves_data:
            return row
    return rows[last]


def _moves_data_only(operators: Sequence[str]) -> bool:
    """Whether a row's operators (as the report names them: "view", "mul") only move data, or
    it has none: a reshape of what came before (logits viewed as boxes, 1x100x4, where a 1-d
    map is 1xCxL too), or an Identity, which makes no map of its own."""
    found = [operator_named(name if "." in name else f"aten.{name}") for name in operators]
    return all(op is not None and op.family is Family.DATA_MOVEMENT for op in found)  # none: an Identity's row


def _spatial_or_undefined(field: Any) -> bool:
    return isinstance(field, tuple) or field == FieldMark.UNDEFINED


def first_output_shape(shapes: str) -> tuple[int, ...]:
    """A row's first output shape, from its shapes as the report writes them ('1x1280x7x7, 1x8');
    () for a scalar ('()')."""
    first = shapes.split(",")[0].strip()
    return tuple(int(size) for size in first.split("x")) if first[:1].isdigit() else ()


def bound_note(note: str) -> str:
    """A defined field's note where it says the field is an upper bound ("an upper bound:
    ..."), else "": the note of a defined field may instead say why its stride is undefined."""
    return note if note.startswith(UPPER_BOUND) else ""


METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        Metric("params", "param_count", "Parameters", "count", _total("param_count", "parameter count")),
        Metric("macs", "macs", "MACs", "count", _total("macs", "MACs")),
        Metric("flops", "flops", "FLOPs", "count", _total("flops", "FLOPs")),
        Metric(
            "activation", "activation_bytes", "Activation memory", "bytes", _total("activation_bytes", "activation")
        ),
        Metric("peak-memory", "peak_memory_bytes", "Peak memory", "bytes", _total("peak_memory_bytes", "peak memory")),
        Metric("receptive-field", "receptive_field", "Receptive field", "pixels", final_receptive_field),
        Metric(
            "training-memory",
            "training_peak_bytes",
            "Training step peak",
            "bytes",
            _total("training_peak_bytes", "training step peak", training=True),
            training=True,
        ),
        Metric(
            "training-flops",
            "training_flops",
            "Training FLOPs",
            "count",
            _total("training_flops", "training FLOPs", training=True),
            training=True,
        ),
    )
}


def has_metric(report: Report, key: str) -> bool:
    """Whether this archprof computes the metric at all (a model without a spatial layer still has it)."""
    if key == "receptive-field":
        return "receptive_field" in report.columns
    try:
        METRICS[key].read(report)
    except MetricUnavailable:
        return False
    return True
