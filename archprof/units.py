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


_SIZE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
_SIZE_PATTERN = r"(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgtp])(i)?b?|b)?"


def parse_size(text: str) -> int:
    """A memory size in bytes: '16GB' = 16e9, '16GiB' = 16 * 2**30, '512MB', '512MiB',
    '1.5GB', '1000000' (plain bytes). Decimal units are powers of 1000, binary ones (`KiB`,
    `MiB`, `GiB`, `TiB`) of 1024; case and a space before the unit do not matter. Raises
    ArchprofError for anything else, or for a size that is not a positive whole number of bytes."""
    import re
    from decimal import Decimal

    from archprof.errors import ArchprofError

    match = re.fullmatch(_SIZE_PATTERN, text.strip(), re.IGNORECASE)
    hint = "expected a number with an optional unit, e.g. 16GB, 16GiB, 512MB, 1.5GB or 1000000 (bytes)"
    if match is None:
        raise ArchprofError(f"cannot read the size '{text}': {hint}")
    number, prefix, binary = match.groups()
    prefix = (prefix or "").lower()
    scale = 1024 ** " kmgtp".index(prefix) if binary else _SIZE_UNITS[prefix]
    value = Decimal(number) * scale
    if value != value.to_integral_value():
        raise ArchprofError(f"the size '{text}' is not a whole number of bytes ({value} B)")
    if value <= 0:
        raise ArchprofError(f"the size '{text}' must be more than 0 bytes")
    return int(value)
