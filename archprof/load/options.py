"""Keyword arguments for a model factory, read from `--arg key=value`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from archprof.errors import ArchprofError
from archprof.load.common import printable_errors

# -- factory arguments ---------------------------------------------------------------------


def parse_arg_value(text: str) -> Any:
    """'10' -> 10, '0.5' -> 0.5, 'true' -> True, 'none' -> None, anything else a string
    (quotes keep it one: "'10'" -> '10')."""
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\"":
        return stripped[1:-1]
    for kind in (int, float):
        try:
            return kind(stripped)
        except ValueError:
            pass
    return text


@printable_errors
def parse_args(items: Sequence[str] | None) -> dict[str, Any]:
    """['num_classes=10', 'width=0.5'] -> {'num_classes': 10, 'width': 0.5}."""
    args: dict[str, Any] = {}
    for item in items or ():
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key.isidentifier():
            raise ArchprofError(f"malformed --arg '{item}': expected key=value, e.g. num_classes=10")
        if key in args:
            raise ArchprofError(f"--arg {key} is given twice")
        args[key] = parse_arg_value(value)
    return args
