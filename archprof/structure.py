"""Walking the arguments operators take and the nested outputs modules return.

Hand-written: torch's pytree costs more than the rest of the trace together."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# torch's names on the per-operator path read once, as `from` imports: torch's module-level
# `__getattr__` keeps Python 3.11 from caching reads of `torch.<name>`, each then about 300
# machine instructions more than a global's.
from torch import Tensor


def tensors_in(structure, records: set[int] | None = None) -> list[torch.Tensor]:
    """The tensors in nested tuples, lists, dicts and dataclass instances (a module's output),
    in order. `records`: the ids of the dataclass instances being walked, each walked once (a
    record that holds itself); a field never set is read as empty."""
    if isinstance(structure, Tensor):
        return [structure]
    if isinstance(structure, (tuple, list)):
        found = []
        for item in structure:  # its tensors taken here, not by a call each: every multi-output op comes here
            if isinstance(item, Tensor):
                found.append(item)
            elif item is not None:
                found += tensors_in(item, records)
        return found
    if isinstance(structure, dict):
        return [t for item in structure.values() for t in tensors_in(item, records)]
    if dataclasses.is_dataclass(structure) and not isinstance(structure, type):  # a model's output record
        records = set() if records is None else records
        if id(structure) in records:
            return []
        records.add(id(structure))
        fields = dataclasses.fields(structure)
        return [t for field in fields for t in tensors_in(getattr(structure, field.name, None), records)]
    return []


# The types of the plain values an operator takes (strides, paddings, flags, scalars): never a
# leaf, asked first by type, since a failed isinstance looks the value's `__class__` up.
_PLAIN = frozenset({int, float, bool, str, type(None)})


def map_op_args(fn: Callable[[Any], Any], leaf: type, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """An operator's arguments with `fn` applied to every `leaf`-typed value (a tensor or a
    record of one, never a plain number or string), at the top level or inside a list (aten
    schemas nest no deeper)."""
    mapped = []
    for value in args:  # a loop with the common cases inline: every operator of every pass comes here
        kind = type(value)
        if kind in _PLAIN:
            mapped.append(value)
        elif kind is leaf or isinstance(value, leaf):
            mapped.append(fn(value))
        elif kind is list or kind is tuple or isinstance(value, (list, tuple)):
            mapped.append(_items_applied(fn, leaf, value))  # not `_applied`: asked what it is once
        else:
            mapped.append(value)
    return tuple(mapped), {key: _applied(fn, leaf, value) for key, value in kwargs.items()} if kwargs else {}


def _applied(fn: Callable[[Any], Any], leaf: type, value: Any) -> Any:
    """`value` with `fn` applied to it, or to its `leaf`-typed items (a list or tuple)."""
    if isinstance(value, leaf):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return _items_applied(fn, leaf, value)
    return value


def _items_applied(fn: Callable[[Any], Any], leaf: type, items: list | tuple) -> list | tuple:
    """`items` with `fn` applied to its `leaf`-typed items, or `items` itself where none is."""
    for item in items:  # a loop, not any(): every argument of every operator comes here
        if type(item) not in _PLAIN and isinstance(item, leaf):
            return type(items)([fn(item) if isinstance(item, leaf) else item for item in items])
    return items


@dataclass(frozen=True, slots=True)
class TensorSlots:
    """Where an operator's schema lets a tensor be (`Tensor`, `Tensor?`, `Tensor[]`): the
    positions and keyword names to look at, read once per operator. The recorder's walks
    over every argument (strides, paddings, flags) cost a third of a trace; these look at
    the few that may hold a tensor and find what a walk over all of them finds. Each
    position says whether it holds one tensor (or None) or a list of them: the recorder
    calls these for every operator, so neither asks a value what it is twice."""

    positions: tuple[tuple[int, bool], ...]  # (index, holds a list), in order
    names: frozenset[str]
    # The number of positions where they are the schema's first arguments, each of one tensor
    # (relu's input, add's two, a batch norm's five), else -1 (a list; a gap, as layer norm's):
    # a call without keywords that fills each with a tensor has them substituted by a slice.
    leading: int

    @staticmethod
    def of(schema) -> TensorSlots:
        typed = [(i, argument.name, str(argument.type)) for i, argument in enumerate(schema.arguments)]
        slots = [(i, name, kind.startswith("List")) for i, name, kind in typed if "Tensor" in kind]
        positions = tuple((i, listed) for i, _, listed in slots)
        leading = len(positions) if positions == tuple((i, False) for i in range(len(positions))) else -1
        return TensorSlots(positions, frozenset(name for _, name, _ in slots), leading)

    def tensors(self, args: tuple, kwargs: dict) -> list[torch.Tensor]:
        """The tensors of the arguments, in order (aten schemas nest no deeper than a list)."""
        found = []
        count = len(args)
        for i, listed in self.positions:
            if i < count:
                value = args[i]
                if isinstance(value, Tensor):
                    found.append(value)
                elif listed and value is not None:
                    found.extend(item for item in value if isinstance(item, Tensor))
        if kwargs:
            for name, value in kwargs.items():
                if name in self.names:
                    found.extend(tensors_in(value))
        return found

    def substituted(
        self, args: tuple, kwargs: dict, values: Sequence[Any], numbers: dict[type, Callable[[Any], Any]] | None = None
    ) -> tuple[tuple, dict]:
        """The arguments with their tensors replaced by `values`, one for each tensor in the
        order `tensors` finds them: the caller has looked at each tensor once already (the
        recorder: its TensorMeta, its shape), and is not asked again per tensor. With
        `numbers`, a Python number where one tensor goes is made `numbers[type(number)](number)`
        (the recorder's WrappedFloat: the argument parser wrapped it in a tensor)."""
        if not kwargs and len(values) == self.leading:  # every slot holds a tensor: no number, no list
            return (*values, *args[self.leading :]), {}
        mapped = list(args)
        count = len(mapped)
        taken = 0
        for i, listed in self.positions:
            if i >= count:
                break
            value = mapped[i]
            if isinstance(value, Tensor):
                mapped[i] = values[taken]
                taken += 1
            elif listed:
                if value is not None:
                    mapped[i], taken = _items_substituted(value, values, taken)
            elif numbers is not None:
                wrap = numbers.get(type(value))
                if wrap is not None:
                    mapped[i] = wrap(value)
        if not kwargs:
            return tuple(mapped), {}
        mapped_kwargs = {}
        for name, value in kwargs.items():
            if name in self.names:
                if isinstance(value, Tensor):
                    value = values[taken]
                    taken += 1
                elif isinstance(value, (list, tuple)):
                    value, taken = _items_substituted(value, values, taken)
            mapped_kwargs[name] = value
        return tuple(mapped), mapped_kwargs


def _items_substituted(items: list | tuple, values: Sequence[Any], taken: int) -> tuple[list | tuple, int]:
    """`items` (a list or tuple, kept so) with its tensors replaced by `values` from `taken`
    on; and the number of values taken after them."""
    replaced = list(items)
    for j, item in enumerate(replaced):
        if isinstance(item, Tensor):
            replaced[j] = values[taken]
            taken += 1
    return (replaced if isinstance(items, list) else type(items)(replaced)), taken
