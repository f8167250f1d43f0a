"""The model's modules as a trace sees them: one walk of the module tree (`walked`: the
modules, their parameters and buffers, whether any is tied, the modules' modes and own
forwards), the class name shown for each (`type_name`), and which submodules hold each
parameter and buffer (`owners`, `canonical_paths`), by which the ops of a TorchScript module
are attributed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import torch

from archprof.errors import ArchprofError, shown
from archprof.tracing.model_tensors import traced
from archprof.tracing.recorder import Recorder


def type_name(module: torch.nn.Module) -> str:
    """The class name to show: a ScriptModule's original class, an unflattened exported
    program's original module class (set by archprof.load), else the class itself."""
    label = module.__dict__.get("_archprof_type")
    if isinstance(label, str):
        return label
    if isinstance(module, torch.jit.ScriptModule):
        with suppress(Exception):
            return module.original_name
    return type(module).__name__


@dataclass(slots=True)  # never changed once made, but not frozen: its fields through object.__setattr__
class _ModuleTree:  # cost a small model's trace a hundredth
    """What the trace asks of the model's modules, from one walk of them (`walked`)."""

    modules: list[tuple[str, torch.nn.Module]]  # as `named_modules()`: each once, under its first path
    # Each module's attributes (its `__dict__`), in the order of `modules`: read once for every
    # step of the trace that asks them. nn.Module has a `__getattr__`, which makes each of
    # Python's reads of a module's attribute cost a few hundred machine instructions, and of its
    # `__dict__` about a thousand: four reads of it and eight of attributes a module before.
    attributes: list[dict[str, Any]]
    types: dict[str, str]  # path -> `type_name`, every path a module is reached under (its first, then the others)
    tensors: list[tuple[str, torch.Tensor, bool]]  # `named_parameters()`, `named_buffers()`: name, tensor, is a buffer
    tied: bool  # a parameter or buffer met twice (tied weights)
    own_forwards: set[int]  # the ids of the modules with a `forward` attribute of their own
    modes: dict[torch.nn.Module, bool]  # each module's `training` flag
    classes: set[type]  # the modules' classes (a few dozen: most repeat)
    # A module reached under more than one name (`self.stage = nn.Sequential(self.conv, ...)`),
    # and those under it: each other path -> its module's first path (`reached_under`)...
    aliases: dict[str, str]
    # ...and the id of each such module -> all its paths, its first first.
    paths: dict[int, tuple[str, ...]]
    depth: int  # the most levels of modules below the model (0: none)


def walked(model: torch.nn.Module) -> _ModuleTree:
    """The model's modules in `named_modules()` order, and their parameters and buffers in
    `named_parameters()` and `named_buffers()` order, from one walk of the tree (from a
    stack: `named_modules()` makes a generator per level, which every module found deeper
    passes through). Refused in one line: a model nested past the depth at which
    `named_modules()` would exceed Python's recursion limit (the forward, `train()` and
    `parameters()` recurse once a level too), and a submodule whose name holds a '.' (set
    through `_modules`: `add_module` refuses it), whose path would read as a module nested in
    another (a direct child 'a.b' and the child 'b' of 'a' would be one row)."""
    deepest = sys.getrecursionlimit() - _frames_below()
    modules: list[tuple[str, torch.nn.Module]] = []
    attributes: list[dict[str, Any]] = []
    parameters: list[tuple[str, torch.Tensor, bool]] = []
    buffers: list[tuple[str, torch.Tensor, bool]] = []
    seen: set[torch.nn.Module] = set()
    seen_parameters: set[int] = set()  # ids; apart from the buffers', as in their own walks
    seen_buffers: set[int] = set()
    own_forwards: set[int] = set()  # ids of the modules with a `forward` of their own
    tied = shared = False
    deepest_found = 1
    to_visit = [("", model, 1)]  # path, module, depth; the next to visit last
    while to_visit:
        path, module, depth = to_visit.pop()
        if depth > deepest_found:
            deepest_found = depth
        if module in seen:  # `named_modules()`'s memo: a module reached under two names is listed once
            shared = True
            continue
        seen.add(module)
        modules.append((path, module))
        own = module.__dict__
        attributes.append(own)
        if "forward" in own:
            own_forwards.add(id(module))
        prefix = f"{path}." if path else ""
        try:
            held_parameters, held_buffers, children = own["_parameters"], own["_buffers"], own["_modules"]
        except KeyError:  # not among its attributes: read as Python reads them, else refused
            held_parameters, held_buffers, children = _tables(path, module)
        if held_parameters:
            tied |= _listed(held_parameters, prefix, False, parameters, seen_parameters)
        if held_buffers:
            tied |= _listed(held_buffers, prefix, True, buffers, seen_buffers)
        if children:
            _check_children(path, children, depth, deepest)
            # The first on top.
            to_visit += [
                (prefix + name, child, depth + 1) for name, child in reversed(children.items()) if child is not None
            ]
    types, classes = _type_names(modules, attributes)
    aliases: dict[str, str] = {}
    paths: dict[int, tuple[str, ...]] = {}
    if shared:
        firsts, paths = reached_under(model, modules)
        types = {path: types[first] for path, first in firsts.items()}  # in the order the tree lists them
        aliases = {path: first for path, first in firsts.items() if path != first}
    return _ModuleTree(
        modules,
        attributes,
        types,
        parameters + buffers,
        tied,
        own_forwards,
        {module: module.training for _, module in modules},
        classes,
        aliases,
        paths,
        deepest_found - 1,
    )


class ModuleNeverInitialised(ArchprofError, AttributeError):
    """A module whose nn.Module `__init__` never ran (its class's `__init__` did not call
    `super().__init__()`): it has no tables. An AttributeError too, as Python's own lookup of
    them raises, said in one line where archprof's errors are."""


def _tables(path: str, module: torch.nn.Module) -> tuple[dict, dict, dict]:
    """A module's parameter, buffer and submodule tables where its `__dict__` holds none of
    them: as Python's lookup finds them (a class's own), or `ModuleNeverInitialised`."""
    try:
        return module._parameters, module._buffers, module._modules
    except AttributeError as missing:
        where = f"module '{path}'" if path else "the model"
        raise ModuleNeverInitialised(
            f"{where}: {missing}: its class's __init__ must call super().__init__() before setting anything"
        ) from None


def _type_names(
    modules: list[tuple[str, torch.nn.Module]], attributes: list[dict[str, Any]]
) -> tuple[dict[str, str], set[type]]:
    """Each module's `type_name`, by path, and the modules' classes. A module's name is its
    class's but for a module labelled by archprof.load or a ScriptModule, whose class is asked
    once: `isinstance` through ScriptModule's metaclass costs about what the rest of
    `type_name` does."""
    scripted: dict[type, bool] = {}  # class -> whether it is a ScriptModule's
    names: dict[str, str] = {}
    for (path, module), own in zip(modules, attributes, strict=True):
        cls = type(module)
        if cls not in scripted:
            scripted[cls] = issubclass(cls, torch.jit.ScriptModule)
        names[path] = type_name(module) if scripted[cls] or "_archprof_type" in own else cls.__name__
    return names, set(scripted)


def modules_from_a_stack(model: torch.nn.Module) -> Iterator[tuple[torch.nn.Module, int]]:
    """Each module of `model` once, with its level below it (the model's own 0), in `modules()`'s
    order, walked from a stack: a tree too deep for `modules()`'s recursion, or holding a child
    named by no string, is walked all the same. A module whose nn.Module `__init__` never ran
    has no children to walk (the trace refuses it: `ModuleNeverInitialised`)."""
    seen: set[int] = set()
    to_visit = [(model, 0)]  # the next to visit last
    while to_visit:
        module, depth = to_visit.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        yield module, depth
        children = getattr(module, "_modules", None) or {}
        to_visit += reversed([(child, depth + 1) for child in children.values() if child is not None])


def nesting_depth(model: torch.nn.Module) -> int:
    """The most levels of modules below `model` (0: none)."""
    return max(depth for _, depth in modules_from_a_stack(model))


# The most paths `reached_under` lists: modules shared level after level could have more
# paths than the model has modules by far; past this, the later calls carry the first path.
_MOST_PATHS = 100_000


def reached_under(
    model: torch.nn.Module, modules: list[tuple[str, torch.nn.Module]]
) -> tuple[dict[str, str], dict[int, tuple[str, ...]]]:
    """Every path a module of the model is reached under, as `named_modules(remove_duplicate=False)`
    lists them (a module is not reached again inside itself), each -> its module's first path
    (the first met: both walks go depth first, in the same order, as `modules`, `walked`'s,
    does); and the id of each module reached under several -> all of them, its first first."""
    firsts: dict[str, str] = {}
    found: dict[int, list[str]] = {}
    to_visit = [("", model, ())]  # path, module, the ids of the modules above it
    while to_visit and len(firsts) < _MOST_PATHS:
        path, module, above = to_visit.pop()
        listed = found.setdefault(id(module), [])
        listed.append(path)
        firsts[path] = listed[0]
        inside = (*above, id(module))
        prefix = f"{path}." if path else ""
        children = [(prefix + name, child) for name, child in module._modules.items() if child is not None]
        to_visit += [(name, child, inside) for name, child in reversed(children) if id(child) not in inside]
    for path, _ in modules:  # past `_MOST_PATHS`, the first paths all the same
        firsts.setdefault(path, path)
    return firsts, {key: tuple(listed) for key, listed in found.items() if len(listed) > 1}


def _listed(table: dict, prefix: str, is_buffer: bool, found: list, seen: set[int]) -> bool:
    """Add to `found` the tensors of a module's parameter or buffer `table` not in `seen`
    (ids), named after the module's `prefix`; whether one was (a tied tensor)."""
    tied = False
    for name, tensor in table.items():
        if tensor is None:
            continue
        if id(tensor) in seen:
            tied = True
        else:
            seen.add(id(tensor))
            found.append((prefix + name, tensor, is_buffer))
    return tied


def _check_children(path: str, table: dict[str, torch.nn.Module | None], depth: int, deepest: int) -> None:
    """Refuse the children of the module at `path` (`walked`; `table`: its `_modules`): past
    `deepest` levels, or named as torch's add_module refuses (set straight into `_modules`):
    with a '.', empty, or not a string."""
    if depth >= deepest:
        raise ArchprofError(
            f"the model nests its modules too deeply to walk (past Python's recursion limit, {sys.getrecursionlimit()}"
            " levels)"
        )
    # Every name a non-empty string without a '.', asked at C speed (a join refuses any other
    # kind of name): nearly always so, and then no child needs looking at. (A `try`, not
    # `suppress`, whose object and calls cost more than the join.)
    try:
        if "" not in table and "." not in "".join(table.keys()):
            return
    except TypeError:
        pass
    children = [(name, child) for name, child in table.items() if child is not None]
    where = f"module '{path}'" if path else "the model"
    unnamed = [name for name, _ in children if not isinstance(name, str) or not name]
    if unnamed:
        raise ArchprofError(
            f"{where} holds a submodule named {shown(unnamed[0])}: a row needs a name that is a non-empty string"
            " (the model's own row has the empty path; torch's add_module refuses such names)"
        )
    dotted = next((name for name, _ in children if "." in name), None)
    if dotted is not None:
        raise ArchprofError(
            f"{where} holds a submodule named {dotted!r}: a name with '.' reads as a path to a module nested in"
            " another, which archprof cannot tell apart (torch's add_module refuses such names)"
        )


def _frames_below() -> int:
    """How many frames the stack holds under the caller's."""
    frame, count = sys._getframe(1), 0
    while frame is not None:
        frame, count = frame.f_back, count + 1
    return count


def owners(
    modules: list[tuple[str, torch.nn.Module]], stand_ins: dict[int, torch.Tensor] | None, recorder: Recorder
) -> dict[int, tuple[str, ...]]:
    """Each parameter's and buffer's storage (the recorder's) -> the paths of the submodules
    that hold it, in the model's order: a tied weight has several (an Embedding's and a
    Linear's), which `named_parameters()` names after the first only. A submodule of the
    same class as an earlier one, holding all of its tensors under the same names, is that
    module under a second name: torch.jit.script gives a module called twice
    (`Sequential(conv, conv)`) an entry per attribute. NB: so are two modules whose tensors
    were all tied by hand, which nothing in a ScriptModule tells apart from one."""
    owners: dict[int, list[str]] = {}
    canonical = canonical_paths(modules)
    for path, module in modules:
        if not path or canonical[path] != path:  # the model's own tensors: its own rows
            continue
        for _, tensor in _held(module):
            paths = owners.setdefault(recorder.lookup(traced(tensor, stand_ins)).storage, [])
            if path not in paths:
                paths.append(path)
    return {storage: tuple(paths) for storage, paths in owners.items()}


def canonical_paths(modules: list[tuple[str, torch.nn.Module]]) -> dict[str, str]:
    """Each module's path -> the path of the first module it is alike (`owners`: of its
    class, holding all the same tensors under the same names), its own where none is."""
    canonical: dict[str, str] = {}
    first: dict[tuple, str] = {}
    for path, module in modules:
        alike = (type_name(module), tuple((name, id(tensor)) for name, tensor in _held(module)))
        canonical[path] = first.setdefault(alike, path) if alike[1] else path
    return canonical


def _held(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """A module's own parameters and buffers (not its submodules'), by name."""
    return [(name, t) for table in (module._parameters, module._buffers) for name, t in table.items() if t is not None]
