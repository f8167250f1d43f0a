"""Limits relative to a baseline report, a CI's ratchet: `archprof check model.py:net
--baseline main.csv --max-increase macs=5%` holds the model to at most its baseline's MACs
grown by 5%, for the figures a report's rows add up to (parameters, MACs, FLOPs, activation
bytes). Each is an ordinary maximum (`Limit`), its threshold the baseline's total times
(100 + percent) / 100 rounded down, its text saying where it comes from: "+5% of
main.csv's 4.09 G"."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

from archprof.budget import Limit
from archprof.errors import ArchprofError, shown
from archprof.metrics import METRICS
from archprof.units import human_value

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
        limits[f"max-{key}"] = Limit(f"max-{key}", metric, "max", threshold, text)
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
