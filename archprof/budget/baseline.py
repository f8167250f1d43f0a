"""Limits relative to a baseline report, a CI's ratchet: `archprof check model.py:net
--baseline main.csv --max-increase macs=5%` holds the model to at most its baseline's MACs
grown by 5%, for the figures a report's rows add up to (parameters, MACs, FLOPs, activation
bytes). Each is an ordinary maximum (`Limit`), its threshold the baseline's total times
(100 + percent) / 100 rounded down, its text saying where it comes from: "+5% of
main.csv's 4.09 G"."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from archprof.budget import Limit
from archprof.errors import ArchprofError, shown
from archprof.metrics import METRICS
from archprof.units import human_value

# The figures a growth limits: the metric's key (as --max-<key> names it), each a sum of a report's rows.
GROWN = ("params", "macs", "flops", "activation")


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
    if not path.is_file():
        raise ArchprofError(f"--baseline: file {baseline} does not exist")
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
    try:
        percent = Fraction(value.strip().removesuffix("%").strip())
    except (ValueError, ZeroDivisionError):
        raise ArchprofError(f"--max-increase {shown(increase)}: {shown(value)} is not a percentage (e.g. 5%)") from None
    if percent <= -100:
        raise ArchprofError(f"--max-increase {shown(increase)}: a decrease of 100% or more leaves no room at all")
    return key, percent


def _percent_text(percent: Fraction) -> str:
    """5, 0.5, -10: the percentage as written in its shortest decimal form."""
    return str(percent.numerator) if percent.denominator == 1 else f"{float(percent):g}"
