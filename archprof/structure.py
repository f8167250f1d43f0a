"""Walking the nested tuples, lists and dicts that operators take and return.

Hand-written: torch's pytree costs more than the rest of the trace together. Operator
arguments are mostly ints and lists of ints, so those leave first."""

from __future__ import annotations

import torch

_SCALARS = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.memory_format, torch.layout)


def tensors_in(structure) -> list[torch.Tensor]:
    """The tensors in nested tuples, lists and dicts, in order."""
    if isinstance(structure, torch.Tensor):
        return [structure]
    if isinstance(structure, _SCALARS):
        return []
    if isinstance(structure, (tuple, list)):
        return [t for item in structure if not isinstance(item, _SCALARS) for t in tensors_in(item)]
    if isinstance(structure, dict):
        return [t for item in structure.values() for t in tensors_in(item)]
    return []


def map_structure(fn, structure):
    """Apply `fn` to every leaf of nested tuples, lists and dicts, keeping the nesting."""
    if isinstance(structure, (tuple, list)):
        if all(isinstance(item, _SCALARS) for item in structure):
            return type(structure)(fn(item) for item in structure)
        return type(structure)(map_structure(fn, item) for item in structure)
    if isinstance(structure, dict):
        return {key: map_structure(fn, item) for key, item in structure.items()}
    return fn(structure)
