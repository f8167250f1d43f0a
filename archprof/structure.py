"""Walking the arguments operators take and the nested outputs modules return.

Hand-written: torch's pytree costs more than the rest of the trace together."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def tensors_in(structure) -> list[torch.Tensor]:
    """The tensors in nested tuples, lists and dicts (a module's output), in order."""
    if isinstance(structure, torch.Tensor):
        return [structure]
    if isinstance(structure, (tuple, list)):
        return [t for item in structure for t in tensors_in(item)]
    if isinstance(structure, dict):
        return [t for item in structure.values() for t in tensors_in(item)]
    return []


def op_tensors(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The tensors of an operator's arguments, in order. aten schemas nest no deeper than a
    list (`Tensor[]`), so this is one level, not a walk."""
    found = []
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(item for item in value if isinstance(item, torch.Tensor))
    return found


def map_op_args(fn: Callable[[Any], Any], leaf: type, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """An operator's arguments with `fn` applied to every `leaf`-typed value, at the top
    level or inside a list (aten schemas nest no deeper)."""

    def convert(value):
        if isinstance(value, leaf):
            return fn(value)
        if isinstance(value, (list, tuple)) and any(isinstance(item, leaf) for item in value):
            return type(value)(fn(item) if isinstance(item, leaf) else item for item in value)
        return value

    return tuple(map(convert, args)), {key: convert(value) for key, value in kwargs.items()}
