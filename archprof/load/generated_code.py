"""The Python that torch.fx writes for an exported program's graphs, read before it runs.

`torch.export.load`, `ExportedProgram.module()` and `torch.export.unflatten` write each graph
as the source of a function and run it (`exec`). Names from the file go into that source
unescaped: a subgraph's or a parameter's as `getattr(self, "NAME")`, a keyword argument's
as `NAME = value`. A name holding `")` and a carriage return (a line break to Python, which
FX's indenting does not see) writes statements of its own, which run as the file loads. So
the source is parsed as Python parses it and refused unless it is what FX writes for a graph
of allowed calls: one undecorated function whose statements assign, return and delete;
whose names are its arguments, its own variables, the globals FX gave it, `getattr` and
`slice`; that reaches no dunder attribute; and that calls only a submodule (a path from its
first argument that names no method of a module: `self.to_folder(...)` would write files),
`getattr` of a plain name, `slice`, FX's pytree helpers, or what `allowed` accepts of a
graph's call target (`exported._why_not_data`).
"""

from __future__ import annotations

import ast
import contextlib
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

    with mock.patch.object(graph_module, "_exec_with_source", checked):
        yield


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
        return "code Python cannot parse"
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef) or tree.body[0].decorator_list:
        return "statements beside its function"
    function = tree.body[0]
    arguments = function.args
    named = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs, arguments.vararg, arguments.kwarg]
    own = {argument.arg for argument in named if argument is not None}
    for node in ast.walk(tree):
        if not isinstance(node, _SYNTAX):
            return f"a {type(node).__name__.lower()}"
        if isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            return f"the attribute {shorten(node.attr)}"
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
    first = arguments.args[0].arg if arguments.args else None
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and node.id not in own and node.id not in given and node.id not in _BUILTINS:
            return f"the name {shorten(node.id)}"
        problem = _call_problem(node, first, given, allowed) if isinstance(node, ast.Call) else None
        if problem:
            return problem
    return None


def _call_problem(call: ast.Call, first: str | None, given: dict[str, Any], allowed) -> str | None:
    path = _path(call.func)
    if path is None:
        return f"a call of {shorten(ast.unparse(call.func))}"
    root, *attributes = path
    if root == first:  # a submodule's call: none of a module's own methods
        method = next((name for name in attributes if hasattr(torch.fx.GraphModule, name)), None)
        return f"a call of the module's {method}" if method or not attributes else None
    if root in _BUILTINS and root not in given and not attributes:
        if root == "getattr":
            return _getattr_problem(call, first)
        return None
    target = given.get(root)
    for name in attributes:
        target = getattr(target, name, None)
    if target in _HELPERS:
        return None
    if target is None:
        return f"a call of {shorten('.'.join(path))}"
    why = allowed(target)
    return why and f"calls {why}"


def _getattr_problem(call: ast.Call, first: str | None) -> str | None:
    """`getattr(PATH, "name")`, as FX writes a name that is not an identifier ("0", "a-b")."""
    if len(call.args) != 2 or call.keywords:
        return "a getattr of other arguments"
    name = call.args[1]
    if not isinstance(name, ast.Constant) or not isinstance(name.value, str) or name.value.startswith("__"):
        return "a getattr of other arguments"
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
