"""A diff's changes as the tables, Markdown and HTML page show them: a signed change, a
percentage, a ratio, a value before and after, and the notes on a side's final field."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

from archprof.diff.changes import LayerChange, ReportDiff, kernel_changed
from archprof.units import human_value, percent_change_text, ratio_text


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


def module_type_text(diff: ReportDiff, module: str) -> str:
    """A module's type, as a side analysed here knows it ('Sequential'; 'Sequential →
    ModuleList' where the sides' differ; '' where neither side knows it: a report read from
    a file names the types of its rows only)."""
    old, new = diff.old_types.get(module, ""), diff.new_types.get(module, "")
    return f"{old} → {new}" if old and new and old != new else new or old


def kernel_text(change: LayerChange) -> str:
    """A listed layer's window as the tables show it: '3x3 → 5x5' where it changed
    (`kernel_changed`), else the one a side recorded ('' where neither did: no None)."""
    old, new = ((side.get("kernel") or "") if side else "" for side in (change.old, change.new))
    return f"{old} → {new}" if kernel_changed(change.old, change.new) else new or old


def format_ratio(ratio: float | None) -> str:
    """'1.84x' (new / old), as `archprof compare` writes its ratios; 'n/a' where there is none
    (an old total of 0, a side without a field)."""
    return "n/a" if ratio is None else ratio_text(ratio)


# The final field's figures as a diff shows them: (label, FinalField attribute).
FIELD_FIGURES = (("Final receptive field", "size"), ("Final stride", "stride"))


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
