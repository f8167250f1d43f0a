"""Limits relative to a baseline report, a CI's ratchet: `archprof check model.py:net
--baseline main.csv --max-increase macs=5%` holds the model to at most its baseline's MACs
grown by 5%, for the figures a report's rows add up to (parameters, MACs, FLOPs, activation
bytes). Each is an ordinary maximum (`Limit`), its threshold the baseline's total times
(100 + percent) / 100 rounded down, its text saying where it comes from: "+5% of
main.csv's 4.09 G". Each carries what its baseline was made at (`MadeAt`): the check of a
report made at another input, batch or dtype is refused, not judged against totals that
differ for that alone."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from archprof.budget import Limit
from archprof.errors import ArchprofError, shown, warn
from archprof.metrics import METRICS
from archprof.report import Report
from archprof.units import human_value, shapes_text

# The figures a growth limits: the metric's key (as --max-<key> names it), each a sum of a report's rows.
GROWN = ("params", "macs", "flops", "activation")
# A percentage as --max-increase takes it: a plain decimal, signed or not (5, 0.5, -10, +2.25).
_PERCENTAGE = re.compile(r"[+-]?\d{1,9}(\.\d{1,9})?")
_MOST_PERCENT = 10**6


def growth_limits(baseline: str | Path, increases: Sequence[str]) -> list[Limit]:
    """A maximum per "KEY=PERCENT" of `increases` (macs=5%, params=0, activation=-10%: a
    required shrinking) over the totals of `baseline`, a CSV or JSON report
    (`archprof summary MODEL -o main.csv`)."""
    from archprof.diff import read_csv_report, read_json_report

    path = Path(baseline)
    readers = {".csv": read_csv_report, ".json": read_json_report}
    read = readers.get(path.suffix.lower())
    if read is None:
        raise ArchprofError(
            f"--baseline {shown(str(baseline))}: give a report, CSV or JSON (archprof summary MODEL -o main.csv)"
        )
    if not path.exists():
        raise ArchprofError(f"--baseline: file {shown(str(baseline))} does not exist")
    if not path.is_file():
        raise ArchprofError(f"--baseline: {shown(str(baseline))} is not a file")
    side = read(path)
    made_at = _made_at(path)
    limits: dict[str, Limit] = {}
    for increase in increases:
        key, percent = _parsed(increase)
        if f"max-{key}" in limits:
            raise ArchprofError(f"--max-increase {key} is given twice: which is the limit?")
        metric = METRICS[key]
        total = side.total(metric.column)
        threshold = math.floor(Fraction(total) * (100 + percent) / 100)
        sign = "+" if percent >= 0 else ""
        text = f"{sign}{_percent_text(percent)}% of {path.name}'s {human_value(metric.unit, total)}"
        limits[f"max-{key}"] = Limit(f"max-{key}", metric, "max", threshold, text, made_at)
    return list(limits.values())


def _parsed(increase: str) -> tuple[str, Fraction]:
    """("macs", 5) of "macs=5%" (the % optional; a fraction of a percent, 0.5%, taken exactly)."""
    key, equals, value = increase.partition("=")
    key = key.strip().lower()
    if not equals or key not in GROWN:
        raise ArchprofError(
            f"--max-increase {shown(increase)}: give KEY=PERCENT, KEY one of {', '.join(GROWN)} (e.g. macs=5%)"
        )
    number = value.strip().removesuffix("%").strip()
    # A plain decimal, not Fraction's every form: 1e99999999 would be built digit by digit.
    if not _PERCENTAGE.fullmatch(number):
        raise ArchprofError(f"--max-increase {shown(increase)}: {shown(value)} is not a percentage (e.g. 5%)")
    percent = Fraction(number)
    if percent > _MOST_PERCENT:
        raise ArchprofError(f"--max-increase {shown(increase)}: more than {_MOST_PERCENT:,}% is no limit")
    if percent <= -100:
        raise ArchprofError(f"--max-increase {shown(increase)}: a decrease of 100% or more leaves no room at all")
    return key, percent


def _percent_text(percent: Fraction) -> str:
    """5, 0.5, -10: the percentage in its exact decimal form (a plain decimal's always ends)."""
    if percent.denominator == 1:
        return str(percent.numerator)
    return str(Decimal(percent.numerator) / Decimal(percent.denominator))  # at most 18 digits: exact


@dataclass(frozen=True)
class MadeAt:
    """What a baseline report was made at, called with the report a limit relative to it
    judges (`archprof.budget.evaluate`): one made at another input (batch included) or dtype
    is refused, one of another model warned of (a model renamed keeps its ratchet). A JSON
    report records its model, inputs and dtype; a CSV one none of them, only its rows: its
    first row's layer, input and bytes per output element (its dtype's size) are held to the
    same row of the report checked, where that row is of the same layer (another first layer
    is warned of: another model's, maybe)."""

    report: str  # the baseline's file name, "main.json"
    model: str = ""  # a JSON report's
    inputs: str = ""  # a JSON report's, batch included: "4x1x32x32"
    dtype: str = ""  # a JSON report's
    first_row: tuple[str, str, str, int] | None = None  # a CSV's: layer, module type, input shape, element bytes

    def __call__(self, report: Report, model: str) -> None:
        fix = "make the baseline at the same input and dtype"
        if self.inputs:
            if (self.inputs, self.dtype) != (shapes_text(report.input_shapes), report.dtype):
                raise ArchprofError(
                    f"baseline {self.report} was made at input {self.inputs}, {self.dtype}; this check runs"
                    f" {model} at {shapes_text(report.input_shapes)}, {report.dtype}: {fix}"
                )
            if self.model not in (model, report.model):
                warn(f"baseline {self.report} is a report of '{self.model}', not of '{model}': is it this model's?")
            return
        ours = _first_row(report.columns)
        if self.first_row is None or ours is None:
            return  # a report of no rows: nothing to hold it to
        if ours[:2] != self.first_row[:2]:  # another model's, maybe: its model is not recorded (as a JSON's is)
            warn(
                f"baseline {self.report} begins with layer {self.first_row[0]} ({self.first_row[1]}), {model} with"
                f" {ours[0]} ({ours[1]}): is it this model's report?"
            )
            return
        layer = f"its first layer, {self.first_row[0]} ({self.first_row[1]}),"
        if ours[2] != self.first_row[2]:
            raise ArchprofError(
                f"baseline {self.report} was made at another input: {layer} takes {self.first_row[2]},"
                f" in this check of {model} {ours[2]}: {fix}"
            )
        if ours[3] and self.first_row[3] and ours[3] != self.first_row[3]:
            raise ArchprofError(
                f"baseline {self.report} was made at another dtype: {layer} outputs {self.first_row[3]}-byte elements,"
                f" in this check of {model} ({report.dtype}) {ours[3]}-byte: {fix}"
            )


def _made_at(path: Path) -> MadeAt:
    """What the report at `path` (read already: a report) was made at."""
    from archprof.diff import read_csv_layers, read_report_json

    if path.suffix.lower() == ".csv":
        return MadeAt(path.name, first_row=_first_row({k: [v] for k, v in read_csv_layers(path)[0].items()}))
    document = read_report_json(path)  # read as a report already: an object
    totals, model = document.get("totals"), document.get("model")
    shapes = totals.get("input_shapes") if isinstance(totals, dict) else None
    dtype = totals.get("dtype") if isinstance(totals, dict) else None
    if not _is_shapes(shapes) or not isinstance(dtype, str):
        raise ArchprofError(
            f"--baseline {shown(str(path))} records no input (totals.input_shapes and dtype), which a check must"
            " match: write it again with archprof summary MODEL -o FILE.json"
        )
    return MadeAt(path.name, model if isinstance(model, str) else "", shapes_text(shapes), dtype)


def _is_shapes(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(shape, list) and shape and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
            for shape in value
        )
    )


def _first_row(columns: dict[str, list[Any]]) -> tuple[str, str, str, int] | None:
    """The first row's layer, module type, input shape and bytes per output element (0 where
    its output is not one shape, or holds no bytes), of a report's columns; None where it
    has no row or lacks a column (a CSV written without it)."""
    try:
        layer, kind, shape = (columns[name][0] for name in ("layer", "module_type", "input_shape"))
        output, size = columns["output_shape"][0], columns["activation_bytes"][0]
    except (KeyError, IndexError):
        return None
    dims = str(output).split("x")
    elements = math.prod(int(d) for d in dims) if all(d.isascii() and d.isdigit() and len(d) < 20 for d in dims) else 0
    bytes_each = size // elements if elements and isinstance(size, int) and size % elements == 0 else 0
    return str(layer), str(kind), str(shape), bytes_each
