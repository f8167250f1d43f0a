"""The Python that torch.fx writes for an exported program's graphs, read before it runs.

`torch.export.load`, `ExportedProgram.module()` and `torch.export.unflatten` write each graph
as the source of a function and run it (`exec`). Names from the file go into that source
unescaped: a subgraph's or a parameter's as `getattr(self, "NAME")`, a keyword argument's
as `NAME = value`. A name holding `")` and a carriage return (a line break to Python, which
FX's indenting does not see) writes statements of its own, at the top level (run as the
file loads) or inside the function (run as it is traced). So the source is parsed as Python
parses it and refused unless it is what FX writes for a graph of allowed calls: one
undecorated function whose statements assign to names, return and delete; whose names are
its arguments, its own variables, the globals FX gave it, `getattr` and `slice`; that
reaches no dunder attribute and none of the module's own (`_is_internal`: its methods, as
`to_folder`, which writes files, and its tables, as `_modules`, a store into which would
make anything a submodule); and that calls only a submodule, `getattr` of a name of the
module's, `slice`, FX's pytree helpers, or what `allowed` accepts of a graph's call target
(`exported._why_not_data`), passing no function and calling none inside an argument but a
device's or a slice's (a control-flow operator calls what it is given). What FX never writes
and would hide a path from those checks is refused too (`_alias_problem`: `m = torch`, then
`m.os.system`). `module()` also writes the program's shape guards into a function it runs
with plain `exec`: each must be a test of the inputs' sizes (`_guard_problem`).
"""

from __future__ import annotations

import ast
import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import torch
import torch.fx._pytree as fx_pytree
import torch.fx.graph_module as graph_module
import torch.utils._pytree as pytree

from archprof.load.common import shorten

# The calling convention's flattening of inputs and outputs, in `module()`'s code, and a
# device argument (`device(type='cpu')`).
_HELPERS = frozenset(
    {pytree.tree_flatten, pytree.tree_unflatten, pytree.tree_leaves, fx_pytree.tree_flatten_spec, torch.device}
)
_BUILTINS = {"getattr": getattr, "slice": slice}
_CONSTRUCTORS = frozenset({torch.device})  # what FX writes as a call inside an argument: device(type='cpu')
_MODULE_STATE = frozenset(vars(torch.nn.Module()))  # `_modules`, `_parameters`, `training`, the hooks'
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A shape guard: a test of the inputs' sizes (`L['x'].size()[0] >= 2`), sympy's functions
# (`SYMPY_INTERP`, read as a guard is: its module imports sympy, 0.5 s of a CLI call).
_GUARD_NAMES = frozenset({"L", "inf"})
_SIZE_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
_GUARD_SYNTAX = (
    ast.Expression,
    ast.Compare,
    ast.cmpop,
    ast.BoolOp,
    ast.boolop,
    ast.BinOp,
    ast.operator,
    ast.UnaryOp,
    ast.unaryop,
    ast.Constant,
    ast.Subscript,
    ast.Name,
    ast.Attribute,
    ast.Call,
    ast.Tuple,
    ast.expr_context,
)
_SYNTAX = (
    ast.Module,
    ast.FunctionDef,
    ast.arguments,
    ast.arg,
    ast.Assign,
    ast.AnnAssign,
    ast.Return,
    ast.Expr,
    ast.Delete,
    ast.Name,
    ast.Attribute,
    ast.Call,
    ast.keyword,
    ast.Constant,
    ast.Tuple,
    ast.List,
    ast.Dict,
    ast.Subscript,
    ast.Slice,
    ast.Starred,
    ast.expr_context,
    ast.UnaryOp,
    ast.unaryop,
    ast.BinOp,
    ast.operator,
    ast.Compare,
    ast.cmpop,
    ast.BoolOp,
    ast.boolop,
)


@contextlib.contextmanager
def generated_code_checked(refused: list[str], allowed: Callable[[Any], str | None]) -> Iterator[None]:
    """While active, the source FX writes is read (`code_problem`) before it runs; one that
    is refused is noted in `refused` and raises (torch may replace the exception on its way out)."""
    run = graph_module._exec_with_source

    def checked(source: str, given: dict[str, Any], co_fields: dict[str, Any] | None = None) -> None:
        problem = code_problem(source, given, allowed)
        if problem:
            refused.append(problem)
            raise ValueError(problem)
        run(source, given, co_fields)

    from torch.export import _unlift

    guards_to_code = _unlift._convert_guards_code_to_fn

    def guards_checked(guards: list[str], *args, **kwargs):
        problem = next(filter(None, map(_guard_problem, guards)), None)
        if problem:
            refused.append(f"shape guard {problem}")
            raise ValueError(problem)
        return guards_to_code(guards, *args, **kwargs)

    with (
        mock.patch.object(graph_module, "_exec_with_source", checked),
        mock.patch.object(_unlift, "_convert_guards_code_to_fn", guards_checked),
    ):
        yield


def _guard_problem(guard: str) -> str | None:
    """Why a program's shape guard (`L['x'].size()[0] >= 2`), which `module()` writes into the
    source of a function and runs, is more than a test of its inputs' sizes (None: it is
    not). A line break or a quote in it would end the expression or the message beside it."""
    from torch.fx.experimental.symbolic_shapes import SYMPY_INTERP

    if _CONTROL.search(guard):
        return f"{shorten(guard)} holds a control character"
    try:
        tree = ast.parse(guard, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return f"{shorten(guard)} is no expression"
    for node in ast.walk(tree):
        if not isinstance(node, _GUARD_SYNTAX):
            return f"{shorten(guard)} holds a {type(node).__name__.lower()}"
        if isinstance(node, ast.Name) and node.id not in _GUARD_NAMES and node.id not in SYMPY_INTERP:
            return f"{shorten(guard)} names {shorten(node.id)}"
        if isinstance(node, ast.Attribute) and node.attr not in _SIZE_METHODS:
            return f"{shorten(guard)} reads {shorten(node.attr)}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search(r"[\\\"']", node.value):
            return f"{shorten(guard)} quotes a quote"
    return None


def code_problem(source: str, given: dict[str, Any], allowed: Callable[[Any], str | None]) -> str | None:
    """Why `source` is not code FX writes for a graph of allowed calls, as the refusal names
    it after "its" ("graph calls ...", as a graph's node is refused; "graph's code ... holds
    ..."); None where it is. `given`: the globals it runs with."""
    problem = _problem(source, given, allowed)
    if problem is None or problem.startswith("calls "):
        return problem and f"graph {problem}"
    return f"graph's code, which torch.fx writes with names from the file, holds {problem},"


def _problem(source: str, given: dict[str, Any], allowed: Callable[[Any], str | None]) -> str | None:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return "code Python cannot parse (a name of the file's that ends a line, or is a keyword)"
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef) or tree.body[0].decorator_list:
        return "statements beside its function"
    function = tree.body[0]
    arguments = function.args
    named = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs, arguments.vararg, arguments.kwarg]
    argument_names = {argument.arg for argument in named if argument is not None}
    own = set(argument_names)
    for node in ast.walk(tree):
        if not isinstance(node, _SYNTAX):
            return f"a {type(node).__name__.lower()}"
        if isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            return f"the attribute {shorten(node.attr)}"
        if isinstance(node, ast.Subscript | ast.Attribute | ast.Starred) and not isinstance(node.ctx, ast.Load):
            return "a store into an object"  # FX assigns to names only
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
    first = arguments.args[0].arg if arguments.args else None
    # FX names arguments apart from its globals and builtins too: one named `torch` would
    # stand where the checks below read the global.
    shadowing = next((name for name in argument_names - {first} if name in given or name in _BUILTINS), None)
    if shadowing:
        return f"an argument named {shorten(shadowing)}, as a global"
    for node in ast.walk(function):
        problem = _store_problem(node, own, first, given) or _alias_problem(node, own, first, given)
        if problem:
            return problem
        if isinstance(node, ast.Name) and node.id not in own and node.id not in given and node.id not in _BUILTINS:
            return f"the name {shorten(node.id)}"
        path = _path(node) if isinstance(node, ast.Attribute | ast.Call) else None
        if path and path[0] == first:  # what FX reads of the module: its submodules, parameters, constants
            internal = next((name for name in path[1:] if _is_internal(name)), None)
            if internal:
                return f"the module's {shorten(internal)}"
        if isinstance(node, ast.Call):
            problem = _call_problem(node, first, given, allowed) or _arguments_problem(node, own, given)
            if problem:
                return problem
    return None


def _store_problem(node: ast.AST, own: set[str], first: str | None, given: dict[str, Any]) -> str | None:
    """What FX never writes, which would stand a value where the checks read another: a
    store to the module's name or a global's (FX names a node's variable apart from them:
    `self = torch.os.sys.modules['os']` made `self.mkdir(...)` read as a submodule's call),
    and an index into anything but its own variables (`getitem = add[0]`)."""
    stored = isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load)
    if stored and (node.id == first or node.id in given or node.id in _BUILTINS):
        return f"a store to the name {shorten(node.id)}"
    path = _path(node.value) if isinstance(node, ast.Subscript) else None
    if path and path[0] not in own:
        return f"an index into {shorten('.'.join(path))}"
    return None


def _arguments_problem(call: ast.Call, own: set[str], given: dict[str, Any]) -> str | None:
    """A call's arguments as FX writes them: its variables, constants, what it reads of the
    module (a subgraph) and of its globals that is no function (`torch.float32`), and no call
    but a device's or a slice's. A function passed is called by what takes it (a control-flow
    operator calls its subgraph: `wrap_with_set_grad_enabled(False, torch.os.system, ...)`
    ran a shell), and a call in an argument runs before the call that takes it."""
    for argument in (*call.args, *(keyword.value for keyword in call.keywords)):
        called: set[int] = set()  # the function of a call allowed there, not passed
        for node in ast.walk(argument):
            if isinstance(node, ast.Call):
                path = _path(node.func)
                constructor = path == ["slice"] or (path and _resolved(path, given) in _CONSTRUCTORS)
                if not constructor:
                    return f"a call inside an argument ({shorten(ast.unparse(node))})"
                called.update(id(part) for part in ast.walk(node.func))
            elif (
                isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Load) and id(node) not in called
            ):
                path = _path(node)
                if path and path[0] not in own and callable(_resolved(path, given)):
                    return f"a function passed as an argument ({shorten('.'.join(path))})"
    return None


def _resolved(path: list[str], given: dict[str, Any]) -> Any:
    """The object a path from the globals (or a builtin FX uses) names, None where none."""
    target = given[path[0]] if path[0] in given else _BUILTINS.get(path[0])
    for name in path[1:]:
        target = getattr(target, name, None)
    return target


def _alias_problem(node: ast.AST, own: set[str], first: str | None, given: dict[str, Any]) -> str | None:
    """What FX never writes, which would hide a path from the checks of the module's and the
    globals' paths: an attribute of a variable (`m = torch` then `m.os.system`), a variable
    set to a global or a path of one, and a keyword unpacked (`**{}`, which closed a call
    that a keyword's name then followed with statements of its own)."""
    if isinstance(node, ast.Attribute):
        path = _path(node)
        if path and path[0] in own and path[0] != first:
            return f"an attribute of a variable ({shorten('.'.join(path))})"
    if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Name | ast.Attribute):
        path = _path(node.value)
        if path and path[0] != first and (path[0] in given or path[0] in _BUILTINS):
            return f"a variable set to {shorten('.'.join(path))}"
    if isinstance(node, ast.keyword) and node.arg is None:
        return "keywords unpacked"
    return None


def _is_internal(name: str) -> bool:
    """A module's own attribute (`to_folder`, `_modules`, `training`), which no graph names."""
    return hasattr(torch.fx.GraphModule, name) or name in _MODULE_STATE


def _call_problem(call: ast.Call, first: str | None, given: dict[str, Any], allowed) -> str | None:
    path = _path(call.func)
    if path is None:
        return f"a call of {shorten(ast.unparse(call.func))}"
    root, *attributes = path
    if root == first:  # a submodule's call (its path was read: `_is_internal`)
        return None if attributes else "a call of the module itself"
    if root in _BUILTINS and root not in given and not attributes:
        return _getattr_problem(call, first) if root == "getattr" else None
    target = _resolved(path, given) if root in given else None
    if target in _HELPERS:
        return None
    if target is None:
        return f"a call of {shorten('.'.join(path))}"
    why = allowed(target)
    return why and f"calls {why}"


def _getattr_problem(call: ast.Call, first: str | None) -> str | None:
    """`getattr(PATH, "name")` of the module's own, as FX writes a name that is not an
    identifier ("0", "a-b")."""
    if len(call.args) != 2 or call.keywords:
        return "a getattr of other arguments"
    name, base = call.args[1], _path(call.args[0])
    if not isinstance(name, ast.Constant) or not isinstance(name.value, str) or name.value.startswith("__"):
        return "a getattr of other arguments"
    if first is not None and (base is None or base[0] != first):
        return "a getattr of something other than the module's"
    return None


def _path(node: ast.expr) -> list[str] | None:
    """A call's function as the names of its path (`torch.ops.aten.add.Tensor`), a getattr's
    constant name included (`getattr(self, "0")`); None where it is not a path."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        base = _path(node.value)
        return None if base is None else [*base, node.attr]
    if isinstance(node, ast.Call) and _path(node.func) == ["getattr"] and _getattr_problem(node, None) is None:
        base = _path(node.args[0])
        return None if base is None else [*base, node.args[1].value]
    return None
