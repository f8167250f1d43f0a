"""Walking the arguments operators take and the nested outputs modules return.

Hand-written: torch's pytree costs more than the rest of the trace together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


def map_op_args(fn: Callable[[Any], Any], leaf: type, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """An operator's arguments with `fn` applied to every `leaf`-typed value, at the top
    level or inside a list (aten schemas nest no deeper)."""
    return (
        tuple(_applied(fn, leaf, value) for value in args),
        {key: _applied(fn, leaf, value) for key, value in kwargs.items()},
    )


def _applied(fn: Callable[[Any], Any], leaf: type, value: Any) -> Any:
    """`value` with `fn` applied to it, or to its `leaf`-typed items (a list or tuple)."""
    if isinstance(value, leaf):
        return fn(value)
    if isinstance(value, (list, tuple)) and any(isinstance(item, leaf) for item in value):
        return type(value)(fn(item) if isinstance(item, leaf) else item for item in value)
    return value


@dataclass(frozen=True, slots=True)
class TensorSlots:
    """Where an operator's schema lets a tensor be (`Tensor`, `Tensor?`, `Tensor[]`): the
    positions and keyword names to look at, read once per operator. The recorder's walks
    over every argument (strides, paddings, flags) cost a third of a trace; these look at
    the few that may hold a tensor and find what a walk over all of them finds."""

    positions: tuple[int, ...]
    names: frozenset[str]

    @staticmethod
    def of(schema) -> TensorSlots:
        slots = [(i, a.name) for i, a in enumerate(schema.arguments) if "Tensor" in str(a.type)]
        return TensorSlots(tuple(i for i, _ in slots), frozenset(name for _, name in slots))

    def tensors(self, args: tuple, kwargs: dict) -> list[torch.Tensor]:
        """The tensors of the arguments, in order (aten schemas nest no deeper than a list)."""
        found = []
        values = [args[i] for i in self.positions if i < len(args)]
        values += [value for name, value in kwargs.items() if name in self.names]
        for value in values:
            if isinstance(value, torch.Tensor):
                found.append(value)
            elif isinstance(value, (list, tuple)):
                found.extend(item for item in value if isinstance(item, torch.Tensor))
        return found

    def map(self, fn: Callable[[torch.Tensor], Any], args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """The arguments with `fn` applied to every tensor."""
        mapped = list(args)
        for i in self.positions:
            if i < len(mapped):
                mapped[i] = _applied(fn, torch.Tensor, mapped[i])
        return tuple(mapped), {
            key: _applied(fn, torch.Tensor, value) if key in self.names else value for key, value in kwargs.items()
        }
