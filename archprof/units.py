"""Human-readable numbers for rendering (counts stay exact integers everywhere else)."""

from __future__ import annotations

_COUNT_STEPS = ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "K"))
_BYTE_STEPS = ((10**12, "TB"), (10**9, "GB"), (10**6, "MB"), (10**3, "kB"))


def human_count(value: int) -> str:
    """138357544 -> '138.36 M' (decimal prefixes)."""
    for step, prefix in _COUNT_STEPS:
        if abs(value) >= step:
            return f"{value / step:.2f} {prefix}"
    return str(value)


def human_bytes(value: int) -> str:
    """6115328 -> '6.12 MB' (decimal units, as disk and GPU vendors use)."""
    for step, unit in _BYTE_STEPS:
        if abs(value) >= step:
            return f"{value / step:.2f} {unit}"
    return f"{value} B"
