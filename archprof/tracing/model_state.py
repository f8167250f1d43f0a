"""What a trace changes of the model it runs, and puts back after: its modules' parameter,
buffer and submodule tables (the stand-ins swapped in: `swap_in`, `put_back`), their
`training` flags (`set_mode`, `modes_put_back`; `in_traced_mode` for a real run to match) and
their plain attributes (`Attributes`).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from archprof.tracing.module_states import MODULE_INTERNALS


@dataclass(slots=True)
class Tables:
    """The modules' parameter, buffer and submodule tables as they were before a trace
    (`tables`), to `put_back` after it."""

    held: list[tuple[dict, dict]]  # each table holding something, with a copy of what it holds
    # The empty ones (most: a leaf's submodules, most modules' buffers), which the forward may fill.
    empty: list[dict]


def tables(attributes: list[dict[str, Any]]) -> Tables:
    """The parameter, buffer and submodule tables of each module (of `attributes`, each one's
    `__dict__`), with a copy of what they hold now: none for an empty one (a tenth of what each
    module's set-up cost, most of its tables)."""
    held, empty = [], []
    for own in attributes:
        for table in (own["_parameters"], own["_buffers"], own["_modules"]):
            if table or type(table) is not dict:  # a TorchScript submodule's: put back as its names say
                held.append((table, dict(table)))
            else:
                empty.append(table)
    return Tables(held, empty)


def swap_in(attributes: list[dict[str, Any]], stand_ins: dict[int, torch.Tensor]) -> None:
    """Every parameter and buffer in the tables of the modules (of `attributes`, each one's
    `__dict__`) replaced by its stand-in (keyed by the tensor's id: a tied tensor, under two
    names, by its one stand-in), as `torch.func.functional_call` swaps them, without its walk
    from the root to each name (resnet50 held on the CPU: 1 ms of its 14). `put_back` swaps the
    model's own back."""
    for own in attributes:
        for table in (own["_parameters"], own["_buffers"]):
            for name, tensor in list(table.items()):
                stand_in = stand_ins.get(id(tensor)) if tensor is not None else None
                if stand_in is not None:
                    table[name] = stand_in


def put_back(tables: Tables) -> None:
    """The tables as they were: the model's own tensors back in place of the stand-ins, and
    no tensor or submodule the forward registered (a TorchScript submodule's table, whose
    names are fixed, gets its own back)."""
    for table in tables.empty:
        if table:
            table.clear()
    for table, held in tables.held:
        if isinstance(table, dict):
            table.clear()  # refilled unasked: cheaper than asking whether it changed
            table.update(held)
        else:  # a TorchScript submodule's table: its names are fixed, and it has no clear()
            for name, value in held.items():
                if table[name] is not value:
                    table[name] = value


# An nn.Module's own registries, hooks and mode (MODULE_INTERNALS) are not put back here:
# the trace's own steps put back what it changes of them.
_CONTAINERS = (list, dict, set)
_MISSING = object()


@dataclass(frozen=True)
class Attributes:
    """Each module's attributes and the contents of its own list, dict and set attributes,
    as they were before a forward, to put back after it: a forward may count its calls, fill
    a cache (with a meta tensor, which would break the caller's next real forward) or append
    to a list on its first call (a submodule it makes is `put_back`'s). What it changes
    inside another object (an attribute's attribute, a global) is not seen. The contents
    of a torch.nn class's own lists and dicts are not copied: its forward adds to none
    (an RNN's rebinds its list of weights, which is put back as any attribute is)."""

    held: list[tuple[dict[str, Any], dict[str, Any]]]  # each module's attributes, with a copy
    # Each list, dict or set attribute of a module's own, with a copy of what it holds.
    contents: list[tuple[list | dict | set, list | dict | set]]

    @staticmethod
    def of(modules: list[tuple[str, torch.nn.Module]], attributes: list[dict[str, Any]]) -> Attributes:
        """The `modules`' attributes (`attributes`: each one's `__dict__`, in their order) as they are now."""
        held, contents = [], []
        # Each class asked once (most repeat): whether its modules' own names are looked
        # through for containers, or None for a ScriptModule's, whose attributes live in C++
        # (an isinstance through its metaclass costs about what copying a module's attributes does).
        scanned: dict[type, bool | None] = {}
        for (_, module), state in zip(modules, attributes, strict=True):
            cls = type(module)
            if cls not in scanned:
                scanned[cls] = (
                    None if issubclass(cls, torch.jit.ScriptModule) else not cls.__module__.startswith("torch.nn.")
                )
            if scanned[cls] is None:
                continue
            before = state.copy()
            if scanned[cls]:
                # The module's own names only, found at C speed: the internals are most of them.
                for name in before.keys() - MODULE_INTERNALS:
                    value = before[name]
                    if type(value) in _CONTAINERS:
                        contents.append((value, copy.copy(value)))
            held.append((state, before))
        return Attributes(held, contents)

    def put_back(self) -> None:
        for state, attributes in self.held:
            if not _same_objects(state, attributes):
                for name in [name for name in state if name not in attributes and name not in MODULE_INTERNALS]:
                    del state[name]
                for name, value in attributes.items():
                    if name not in MODULE_INTERNALS and state.get(name, _MISSING) is not value:
                        state[name] = value
        for container, held in self.contents:
            _refill(container, held)


def _same_objects(now: dict, before: dict) -> bool:
    """Whether two dicts hold the same objects under the same names: a dict comparison,
    which takes an object as equal to itself without asking it (C speed for the modules a
    forward left alone); one that asks (a tensor, which may refuse) is taken as changed."""
    try:
        return bool(now == before)
    except Exception:  # an object's own __eq__ or __bool__ refused: compared name by name then
        return False


def _refill(container: list | dict | set, held: list | dict | set) -> None:
    """`container` holding what `held` holds, in place (the caller may hold it too)."""
    if isinstance(container, list):
        container[:] = held
    else:
        container.clear()
        container.update(held)


def in_traced_mode(model: torch.nn.Module, training: bool) -> torch.nn.Module:
    """The model in the mode a trace runs it in, for a real run to match: `model.train(training)`,
    unless the model is in that mode already; then its modules keep their own (train() then a
    BatchNorm frozen by its own eval(), or eval() then Monte Carlo dropout's train()), as
    the user's own step or forward has them."""
    if model.training != training:
        model.train(training)
    return model


def set_mode(model: torch.nn.Module, modes: dict[torch.nn.Module, bool], classes: set[type], training: bool) -> None:
    """`model.train(training)`, writing each module's flag directly where no module (of its
    `modes`, whose `classes` these are) has a `train` of its own (which may keep some modules
    as they were: frozen norms)."""
    train = torch.nn.Module.train  # read once: each read looks up torch's `nn`, then its `Module`
    if any(cls.train is not train for cls in classes):
        model.train(training)
        return
    _set_flags(zip(modes, itertools.repeat(training)))


def modes_put_back(modes: dict[torch.nn.Module, bool]) -> None:
    """Each module's `training` flag as `modes` holds it, where the trace or its forward changed it
    (each asked once the module before it is put back, which its own `__setattr__` may reach)."""
    _set_flags((module, training) for module, training in modes.items() if module.training != training)


def _set_flags(flags: Iterable[tuple[torch.nn.Module, bool]]) -> None:
    """Each module's `training` flag written, directly into its attributes where its class
    keeps nn.Module's `__setattr__`, which looks through parameters, buffers and submodules
    first: a tenth of a small network's trace, for a plain attribute. Only where the flag is
    one of its attributes: a class that makes `training` a property keeps it elsewhere, and
    its setter is what Python's assignment reaches."""
    module_setattr = torch.nn.Module.__setattr__  # read once, as `train` above
    for module, training in flags:
        state = module.__dict__
        if type(module).__setattr__ is module_setattr and "training" in state:
            state["training"] = training
        else:
            module.training = training
