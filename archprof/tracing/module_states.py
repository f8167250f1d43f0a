"""The state of a module and of every module under it, taken as it is at one moment, that
`archprof.tracing.replay` compares with other modules' and states: whether they run alike
on alike inputs.

Modules run alike where they are of one class, their attributes are the same plain data (of
the same types: 1, 1.0 and True are equal, and make tensors of three dtypes) or the same
function or class, their parameters and buffers are of one class, shape, dtype, strides and
need of a gradient, and the same holds of every module under them, by name. A module with a
hook or a forward of its own, a submodule also reached under another name, or an attribute
that is anything else (a tensor, an object whose attributes may change, a callable
instance) is alike no other: nothing says it runs alike.

A state (`ModuleState`) is taken as a call begins and as it returns: the recording was made
under the first, so a later module is compared with it, not with the module as a parent may
have set it since; and a call that changed it (a counter, a lazy set-up, an output appended
to a list) is seen to have. It holds no tensor: a parameter or buffer is kept as its class,
shape, dtype, strides and need of a gradient, and an attribute alike no other (a tensor, a
list of them) as `_UNLIKE`. The trace keeps its states to its end, and a tensor the model lets
go of (a cache it replaces at its next call, a pruned weight made again) must die then, as
in the forward.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# What every nn.Module holds of its own (its registries, hooks and mode) and the trace's
# wrapper "forward". `archprof.tracing.trace` leaves them to its own steps; here the registries
# and hooks are read apart and "training" is compared as the module's own attributes are.
MODULE_INTERNALS = frozenset(vars(nn.Module())) | {"forward"}
_READ_APART = MODULE_INTERNALS - {"training"}
PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.memory_format})
# Values compared by identity: the same function or class acts alike; a partial's function
# and arguments are fixed once made. Not an instance with a __call__, whose attributes may change.
_BY_IDENTITY = (types.FunctionType, types.BuiltinFunctionType, type, functools.partial)
_MISSING = object()
_UNLIKE = object()  # an attribute's value a state does not keep: one alike no other (`_same_value`)


@dataclass(slots=True)  # not frozen: made for every module under a call watched, and frozen ones are slower to make
class ModuleState:
    """A module's attributes, parameters and buffers as they were when taken (`state_of`), and
    its submodules' states: copies of its attributes but the registries and hooks (of every
    list and tuple among them too), and of its parameters and buffers what is compared of them."""

    module: nn.Module
    attributes: dict[str, Any]
    parameters: dict[str, tuple | None]  # `_described`
    buffers: dict[str, tuple | None]
    children: dict[str, ModuleState | None]


def _copied(value: Any) -> Any:
    """A list or tuple copied, and any list or tuple in it; plain data, a function or a class
    itself; anything else (a tensor, an object that may hold one) `_UNLIKE`."""
    kind = type(value)
    if kind in PLAIN:
        return value
    if kind is list or kind is tuple:
        return kind(map(_copied, value))
    return value if isinstance(value, _BY_IDENTITY) else _UNLIKE


def _described(tensors: dict[str, torch.Tensor | None]) -> dict[str, tuple | None]:
    """Each parameter's (or buffer's) class, shape, dtype, strides and need of a gradient: what
    says whether two modules run alike, and keeps no tensor alive."""
    return {
        name: None if x is None else (type(x), x.shape, x.dtype, x.stride(), x.requires_grad)
        for name, x in tensors.items()
    }


def state_of(module: nn.Module) -> ModuleState:
    """The state of `module` and of every module under it, as they are now."""
    own = vars(module)
    children = own["_modules"]
    return ModuleState(
        module,
        {key: _copied(own[key]) for key in own.keys() - _READ_APART},
        _described(own["_parameters"]),
        _described(own["_buffers"]),
        {name: None if child is None else state_of(child) for name, child in children.items()},
    )


def _same_value(a: Any, b: Any) -> bool:
    """Whether two attribute values are the same plain data (maybe nested in tuples and
    lists), of the same types throughout (1, 1.0 and True are equal, and make tensors of three
    dtypes), or the same function or class."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind in PLAIN:
        return a == b
    if kind is tuple or kind is list:
        return len(a) == len(b) and all(map(_same_value, a, b))
    return a is b and isinstance(a, _BY_IDENTITY)


def _hooked(own: dict) -> bool:
    hooks = own["_forward_hooks"] or own["_forward_pre_hooks"]
    return bool(hooks or own["_backward_hooks"] or own["_backward_pre_hooks"])


def _reached_twice(modules: list[tuple[str, nn.Module]]) -> set[int]:
    """The ids of the modules that are a submodule under more than one name."""
    seen: set[int] = set()
    twice: set[int] = set()
    for _, module in modules:
        for child in module._modules.values():
            if child is not None:
                (twice if id(child) in seen else seen).add(id(child))
    return twice


def _live(module: nn.Module) -> ModuleState:
    """A module's state for one comparison: its attributes read where they lie, not copied."""
    own = vars(module)
    return ModuleState(
        module,
        {key: own[key] for key in own.keys() - _READ_APART},
        _described(own["_parameters"]),
        _described(own["_buffers"]),
        own["_modules"],
    )


class ModuleStates:
    """States of the modules of one model (`modules`, as the trace walked them), and whether
    two are alike. `own_forwards`: the ids of the modules with a forward of their own."""

    def __init__(self, modules: list[tuple[str, nn.Module]], own_forwards: set[int]) -> None:
        self._modules = modules
        self._own_forwards = own_forwards
        self._shared: set[int] | None = None  # `_reached_twice`, on first need

    def alike(self, state: ModuleState, other: ModuleState | nn.Module) -> bool:
        """Whether two modules (or states taken of them) run alike on alike inputs (see the
        module docstring)."""
        if self._shared is None:
            self._shared = _reached_twice(self._modules)
        # Level by level, not depth first: blocks that differ mostly differ near the top (a
        # stochastic depth rate, a stride) and are told apart before their layers are read.
        pairs = [(state, other if type(other) is ModuleState else _live(other))]
        for a, b in pairs:  # grows while read
            children = self._own_state_alike(a, b)
            if children is None:
                return False
            pairs += children
        return True

    def _own_state_alike(self, a: ModuleState, b: ModuleState) -> list[tuple[ModuleState, ModuleState]] | None:
        """The pairs of their submodules' states, if the modules' own states are alike; else None."""
        own_forwards, shared = self._own_forwards, self._shared
        if (
            type(a.module) is not type(b.module)
            or id(a.module) in own_forwards
            or id(b.module) in own_forwards
            or _hooked(vars(a.module))
            or _hooked(vars(b.module))
        ):
            return None
        attributes = b.attributes
        if len(a.attributes) != len(attributes):
            return None
        for key, value in a.attributes.items():
            other = attributes.get(key, _MISSING)
            if not (value is other and type(value) in PLAIN) and not _same_value(value, other):
                return None
        if a.parameters != b.parameters or a.buffers != b.buffers:  # the same names, each described alike
            return None
        if len(a.children) != len(b.children):
            return None
        pairs = []
        for (name, child_a), (other_name, child_b) in zip(a.children.items(), b.children.items(), strict=True):
            if name != other_name:
                return None
            if child_a is None or child_b is None:
                if child_a is not child_b:
                    return None
                continue
            if type(child_b) is not ModuleState:
                child_b = _live(child_b)
            if id(child_a.module) in shared or id(child_b.module) in shared:
                return None  # a submodule reached under another name too: its calls carry that name
            pairs.append((child_a, child_b))
        return pairs
