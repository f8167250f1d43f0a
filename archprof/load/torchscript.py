"""TorchScript archives read before they load: an allowlist of what their code may call.

torch.jit.load compiles the archive's code (`code/**/*.py`, Python syntax) and runs some of
it at once: a scripted class's or module's `__setstate__`, for each object of it the
pickled attributes (`data.pkl`) hold. archprof then runs `forward`. So the code is read here
first, as text (Python's `ast`, nothing compiled or run), and the archive is refused unless
every name it calls is one archprof's analysis needs: torch's own operators (`torch.X`,
which TorchScript resolves to `aten::X`; `ops.aten`, `ops.prim`, `ops.quantized`) but those
that reach outside the model, TorchScript's pure builtins, and the archive's own classes
and functions (themselves read here). The pickles are read by `script_pickles` (their
opcodes, never unpickled): TorchScript's unpickler builds torch's tensors and containers and
the archive's own classes, and torch's C++ classes, of `CLASS_NAMESPACES`. What
runs while the archive loads (a `__setstate__`, and the dunders TorchScript may call from it
unnamed) must besides be straight-line: no loop, and no call but to operators, pure builtins
and methods of its own class that are straight-line too (`_load_time_problems`)."""

from __future__ import annotations

import ast
import functools
import io
import re
import tokenize
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import torch

from archprof.errors import ArchprofError
from archprof.load.common import REACHING_OUT, shorten, unreadable
from archprof.load.script_pickles import CLASS_NAMESPACES, pickle_problem
from archprof.load.zip_archive import checked_archive, folded

_BARE_OPERATORS = {"print": "prim::Print"}  # TorchScript's builtins that are operators of these
# Operator namespaces of torch's own whose operators are tensor operators (`quantized`: torch.ao's
# quantized layers).
_OPERATOR_NAMESPACES = ("aten", "prim", "quantized")
# The builtins TorchScript code may call by a bare name, other than `print`: casts, containers,
# arithmetic and TorchScript's own special forms (annotate, unchecked_cast, uninitialized, fork).
_BUILTINS = frozenset(
    {
        "abs", "all", "annotate", "any", "awaitable", "bin", "bool", "chr", "complex", "dict", "divmod", "enumerate",
        "float", "fork", "getattr", "hasattr", "hex", "int", "isinstance", "iter", "len", "list", "max", "min", "oct",
        "ord", "range", "round", "sorted", "str", "sum", "tuple", "unchecked_cast", "uninitialized", "zip",
    }
)  # fmt: skip


def refuse_unsafe_torchscript(path: Path, spec: str) -> None:
    """Refuse, before it loads, a TorchScript archive whose code or pickles name anything
    outside the allowlist, or whose code run while it loads is more than straight-line, with
    the entry and what it names; one torch could read otherwise too (`checked_archive`)."""
    classes: list[tuple[str, ast.ClassDef]] = []
    functions: list[tuple[str, ast.FunctionDef]] = []  # the archive's free functions
    with checked_archive(path, spec) as archive:
        for member in archive.infolist():
            entry = member.filename.split("/", 1)[-1]  # without the archive's root folder
            # Tensor data, the format's version, extra files: never run. Named as torch finds
            # them, case ignored (`code/__torch__.PY` is the code it runs).
            if not (_is_code(entry) or _is_pickle(entry)):
                continue
            try:
                data = archive.read(member)
            except Exception as exc:  # a bad CRC, a deflate stream cut short, an encrypted or unknown method
                raise unreadable(spec, exc) from None
            if _is_pickle(entry):
                _refuse(spec, entry, pickle_problem(data))
                continue
            tree = parsed_code(data)
            try:
                _refuse(spec, entry, "holds code archprof cannot read" if tree is None else _code_problem(tree))
            except RecursionError:  # an expression nested past Python's stack, which torch never writes
                _refuse(spec, entry, "nests its code too deeply for archprof to read")
            classes += [(entry, node) for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
            functions += [(entry, node) for node in tree.body if isinstance(node, ast.FunctionDef)]
    for entry, problem in _load_time_problems(classes):
        _refuse(spec, entry, problem)
    for entry, problem in _depth_problems(classes, functions):
        _refuse(spec, entry, problem)


# Modules nested, and methods calling methods, deeper than this are refused: torch.jit.load
# crashed (SIGSEGV) on 20,000 nested modules, on a chain of 3,000 methods and on one of 1,500
# free functions (it compiles what a definition names as it compiles the definition), took
# 37 s on 1,000 nested, and the attribution of a 1,000-method chain's operators (each op's
# call stack 1,000 frames) ran for minutes. torchvision's and timm's models nest a few dozen levels.
MOST_DEPTH = 128


def _depth_problems(
    classes: list[tuple[str, ast.ClassDef]], functions: list[tuple[str, ast.FunctionDef]]
) -> Iterator[tuple[str, str]]:
    """Where the archive's classes nest modules (an attribute typed as another of its classes),
    its classes and free functions name each other (`__torch__.f1(x)` in `f0`) or a class's
    methods chain their calls (`self.m(...)`) deeper than MOST_DEPTH: the entry, what."""
    # Every name lower-cased: torch finds a code file whatever its case (`F.PY` is `f.py`).
    named = {f"{_module_of(entry)}.{node.name}".lower(): (entry, node) for entry, node in classes}
    held = {
        name: [held for held in map(str.lower, _attribute_types(node)) if held in named]
        for name, (_, node) in named.items()
    }
    depth, start = _longest_chain(held)
    if depth > MOST_DEPTH:
        yield (
            named[start][0],
            f"nests modules {depth} deep, more than {MOST_DEPTH} (torch's loader crashes on deep ones)",
        )
    defined = {**named, **{f"{_module_of(entry)}.{node.name}".lower(): (entry, node) for entry, node in functions}}
    naming = {
        name: [n for n in map(str.lower, _names_in(node)) if n in defined and n != name]
        for name, (_, node) in defined.items()
    }
    depth, start = _longest_chain(naming)
    if depth > MOST_DEPTH:
        yield (
            defined[start][0],
            (
                f"chains {depth} of its classes and functions, each naming the next, more than {MOST_DEPTH}"
                " (torch's loader crashes on long chains)"
            ),
        )
    for entry, node in classes:
        methods = {f.name: f for f in node.body if isinstance(f, ast.FunctionDef)}
        calls = {name: [m for m in _self_calls(f) if m in methods] for name, f in methods.items()}
        depth, start = _longest_chain(calls)
        if depth > MOST_DEPTH:
            yield (
                entry,
                (
                    f"chains {depth} calls of the methods of class {shorten(node.name)}, more than {MOST_DEPTH}"
                    " (torch's loader crashes on long chains)"
                ),
            )


def _module_of(entry: str) -> str:
    """The qualified module of a code file: 'code/__torch__/torch/nn/modules/conv.py' ->
    '__torch__.torch.nn.modules.conv', its folder and suffix in any case ('CODE/', '.PY')."""
    return entry[len("code/") : -len(".py")].replace("/", ".")


def _attribute_types(node: ast.ClassDef) -> list[str]:
    """The dotted types of a class's annotated attributes (`child : __torch__.deep.C1`)."""
    found = [_dotted(item.annotation) for item in node.body if isinstance(item, ast.AnnAssign)]
    return [".".join(parts) for parts in found if parts]


def _names_in(node: ast.AST) -> set[str]:
    """Every dotted name `node` holds (`__torch__.models.f1`, `self.conv`), whole."""
    inner = {id(n.value) for n in ast.walk(node) if isinstance(n, ast.Attribute)}
    found = (_dotted(n) for n in ast.walk(node) if isinstance(n, ast.Attribute | ast.Name) and id(n) not in inner)
    return {".".join(parts) for parts in found if parts}


def _self_calls(function: ast.FunctionDef) -> list[str]:
    """The methods a method calls on `self` (`(self).m(x, )`)."""
    return [
        call.func.attr
        for call in ast.walk(function)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and isinstance(call.func.value, ast.Name)
        and call.func.value.id == "self"
    ]


def _longest_chain(edges: dict[str, list[str]]) -> tuple[int, str | None]:
    """The most nodes on a path through `edges` (node -> the nodes it leads to), and its first;
    iteratively (a chain may be thousands long), a cycle followed once round."""
    depth: dict[str, int] = {}
    for root in edges:
        stack, entered = [root], set()
        while stack:
            node = stack[-1]
            if node in depth:
                stack.pop()
                continue
            if node not in entered:
                entered.add(node)
                pending = [child for child in edges.get(node, ()) if child not in depth and child not in entered]
                if pending:
                    stack.extend(pending)
                    continue
            depth[node] = 1 + max((depth.get(child, 0) for child in edges.get(node, ())), default=0)
            stack.pop()
    start = max(depth, key=depth.__getitem__, default=None)
    return (depth[start] if start is not None else 0), start


def code_files(archive: BinaryIO) -> dict[str, bytes]:
    """The code files of a TorchScript archive (one `torch.jit.save` wrote) by their names
    as TorchScript's call stacks give them ('code/__torch__/torch/nn/modules/conv.py')."""
    with zipfile.ZipFile(archive) as opened:
        members = [(member.filename.split("/", 1)[-1], member) for member in opened.infolist()]
        return {entry: opened.read(member) for entry, member in members if _is_code(entry)}


def _refuse(spec: str, entry: str, problem: str | None) -> None:
    if problem:
        raise ArchprofError(
            f"refusing to load {spec}: its TorchScript {shorten(entry, 120)} {problem}; if you trust it, pass"
            " --trust-pickle (Python: trust_pickle=True)"
        )


def _is_code(entry: str) -> bool:
    entry = folded(entry)
    return entry.startswith("code/") and entry.endswith(".py")


def _is_pickle(entry: str) -> bool:
    return folded(entry).endswith((".pkl", ".debug_pkl"))


# -- code ----------------------------------------------------------------------------------


_CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]")  # every control character but the newline


def parsed_code(data: bytes) -> ast.Module | None:
    """TorchScript code (Python syntax) parsed, or None where Python cannot parse it, or
    might parse it otherwise than TorchScript. `torch.jit.save` writes neither of these:
    - a control character but the newline: TorchScript's lexer takes a carriage return for
      a blank and a comment to run to the newline, where Python ends a line there (a
      comment, a carriage return and an assignment opening a triple-quoted string hid from
      the check the lines TorchScript then ran);
    - a comment: TorchScript reads `# type:` as a token, and after a `def` line's colon the
      rest of the line as the function's one statement (`torch.save(...)`, `while True:`),
      where Python reads the lines below, which a string opened there hides from TorchScript."""
    if _CONTROL.search(data):
        return None
    try:
        text = data.decode("utf-8")
        tree = ast.parse(text)
    except (UnicodeDecodeError, SyntaxError, ValueError, RecursionError):
        return None
    if b"#" in data and _has_comment(text):
        return None
    return tree


def _has_comment(text: str) -> bool:
    try:
        return any(token.type == tokenize.COMMENT for token in tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):  # (what ast parsed, tokenize reads too)
        return True


def _code_problem(tree: ast.Module) -> str | None:
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    for scope in _scopes(tree):
        local = _local_names(scope)
        for node in _own_nodes(scope):
            problem = _node_problem(node, local, inner)
            if problem:
                return problem
    return None


def _scopes(tree: ast.Module) -> Iterator[ast.AST]:
    """The module, then each function: a bare name is looked up in its own function."""
    yield tree
    yield from (node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))


def _own_nodes(scope: ast.AST) -> Iterator[ast.AST]:
    """The nodes of `scope` outside the functions defined in it (each is a scope of its own)."""
    for child in ast.iter_child_nodes(scope):
        if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield child
            yield from _own_nodes(child)


def _node_problem(node: ast.AST, local: set[str], inner: set[int]) -> str | None:
    """What is wrong with `node`, in a scope whose own names are `local`; `inner`: the nodes
    that are the head of a longer dotted name, checked as part of it."""
    if isinstance(node, ast.Attribute | ast.Name) and id(node) not in inner:
        return _name_problem(node)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        called = node.func.id
        if called in _BARE_OPERATORS:
            return f"calls {called}, which {REACHING_OUT[_BARE_OPERATORS[called]]}"
        if called not in _BUILTINS and called not in local and called not in _ROOTS:
            return f"calls {shorten(called)}, which is neither TorchScript's builtin nor its own code"
    return None


_ROOTS = ("torch", "ops", "__torch__")


def _name_problem(node: ast.Attribute | ast.Name) -> str | None:
    """A whole dotted name (`torch.conv2d`, `ops.quantized.linear`, `self.conv`): what it
    resolves to where it starts with one of TorchScript's roots. Each must name one thing in
    full: TorchScript lets a prefix (`ops.image`) be bound to a variable and called through."""
    parts = _dotted(node)
    if parts and len(parts) == 1 and parts[0] in _BARE_OPERATORS:  # `_p = print`, then `_p(...)`
        return f"uses {parts[0]}, which {REACHING_OUT[_BARE_OPERATORS[parts[0]]]}"
    if not parts or parts[0] not in _ROOTS:
        return None
    name = ".".join(parts)
    if len(parts) == 1:  # `getattr(torch, "save")`, `t = torch`
        return f"uses {shorten(name)} other than to name one operator or class"
    if parts[0] == "torch":
        return _operator_problem(name, "aten", parts[1:])
    if parts[0] == "ops":
        if len(parts) == 3 and parts[1] not in _OPERATOR_NAMESPACES:
            return f"calls {shorten(name)}, an operator outside torch's own ({', '.join(_OPERATOR_NAMESPACES)})"
        return _operator_problem(name, parts[1] if len(parts) == 3 else "", parts[2:])
    if parts[1] == "torch" and (len(parts) == 2 or parts[2] == "classes"):  # torch's C++ classes
        if len(parts) < 5:  # a prefix (`_c = __torch__.torch`), through which `_c.classes.c10d.Work` is reached
            return f"uses {shorten(name)}, which names no one class (torch's C++ classes are named in full)"
        if parts[3] not in CLASS_NAMESPACES:
            return f"uses {shorten(name)}, a class outside torch's own ({', '.join(CLASS_NAMESPACES)})"
    return None


def _operator_problem(name: str, namespace: str, rest: list[str]) -> str | None:
    if len(rest) != 1 or not namespace:
        return f"uses {shorten(name)}, which names no one operator"
    qualified = f"{namespace}::{rest[0]}"
    if qualified in REACHING_OUT:
        return f"calls {name}, which {REACHING_OUT[qualified]}"
    if not _is_operator(qualified):
        return f"calls {shorten(name)}, which is not one of torch's operators"
    return None


@functools.cache
def _is_operator(qualified: str) -> bool:
    return bool(torch._C._jit_get_schemas_for_operator(qualified))


def _dotted(node: ast.AST) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None


def _local_names(scope: ast.AST) -> set[str]:
    """A function's arguments and the names it assigns (a function value it calls, `_0(x)`)."""
    names = {arg.arg for arg in ast.walk(scope.args) if isinstance(arg, ast.arg)} if hasattr(scope, "args") else set()
    names.update(n.id for n in _own_nodes(scope) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
    return names - set(_ROOTS)


# -- code that runs while the archive loads -----------------------------------------------
#
# torch.jit.load calls `__setstate__` on each object the pickles restore (torch.ao's static
# quantized convolution repacks its weights in one). Its code passed the allowlist above like
# all the archive's code, so it reaches nothing past the model; it is accepted when, besides,
# it is straight-line: no loop (its time is bounded by its length), and nothing it runs is
# code not checked the same way. What it calls is an operator, one of TorchScript's builtins
# that takes no function, or a method of its own class, itself straight-line. TorchScript
# also calls a class's dunder methods unnamed (`x[0]` is `x.__getitem__(0)`, `a + b`
# `a.__add__(b)`) on whatever objects the pickles hold, so in an archive with a
# `__setstate__` those must be straight-line too.

# Loops and the statements that run other code (a `with` calls `__enter__`); comprehensions
# loop as well.
_LOOPS = (ast.For, ast.AsyncFor, ast.While, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_STRAIGHT_STATEMENTS = (
    ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Expr, ast.If, ast.Return, ast.Pass, ast.Raise, ast.Assert, ast.Delete
)  # fmt: skip
_CALLS_A_FUNCTION = frozenset({"fork", "awaitable"})  # builtins that run the function they are given
# Dunders TorchScript never calls unnamed while loading: __init__ only when code names the
# class (refused in load-time code), __getstate__ when saving.
_NOT_CALLED_UNNAMED = frozenset({"__init__", "__getstate__"})


def _load_time_problems(classes: list[tuple[str, ast.ClassDef]]) -> Iterator[tuple[str, str]]:
    """For each method that may run while the archive loads and is not straight-line, its
    code entry and why: none where no class restores itself."""
    if not any(_methods(node, "__setstate__") for _, node in classes):
        return
    checked: dict[int, str | None] = {}  # id of a method's definition -> its problem: each checked once
    counted: dict[int, int] = {}  # id of a straight-line method's definition -> the method calls it makes
    for entry, node in classes:
        for method in _methods(node):
            if method.name == "__setstate__":
                runs = "runs while the file loads"
            elif _is_dunder(method.name) and method.name not in _NOT_CALLED_UNNAMED:
                runs = "TorchScript may call unnamed while the file loads"
            else:
                continue
            try:
                problem = _straight_line_problem(node, method, (method.name,), checked)
                if not problem and (calls := _method_calls_run(node, method, counted)) > _MOST_LOAD_TIME_CALLS:
                    problem = (
                        f"makes {calls:,} calls of its methods in all (each calling others more than once), more than"
                        f" the {_MOST_LOAD_TIME_CALLS:,} archprof lets run while a file loads"
                    )
            except RecursionError:  # methods calling each other deeper than Python's stack
                problem = "calls its methods nested too deeply for archprof to follow"
            if problem:
                yield entry, f"defines {node.name}.{method.name}, which {runs}, and {problem}"


def _methods(node: ast.ClassDef, name: str | None = None) -> list[ast.FunctionDef]:
    """The class's methods, or those called `name` (every one: a name defined twice is checked twice)."""
    return [n for n in node.body if isinstance(n, ast.FunctionDef) and name in (None, n.name)]


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _straight_line_problem(
    owner: ast.ClassDef, method: ast.FunctionDef, calling: tuple[str, ...], checked: dict[int, str | None]
) -> str | None:
    """What makes `method` of `owner` more than straight-line code, if anything; `calling`:
    the methods of `owner` whose calls led here, the last `method` itself. `checked` keeps
    each method's answer: a method called twice by each of a chain of methods is checked
    once, not once per path (2**n). An answer found on one path holds on every other: one
    that calls a method already running is in a cycle, wherever the walk entered it."""
    known = checked.get(id(method), _UNCHECKED)
    if known is not _UNCHECKED:
        return known  # type: ignore[return-value]
    problem = None
    own = method.args.args[0].arg if method.args.args else None  # `self`, however it is named
    for node in (n for statement in method.body for n in ast.walk(statement)):
        if isinstance(node, _LOOPS):
            problem = f"loops (line {node.lineno})"
        elif isinstance(node, ast.stmt) and not isinstance(node, _STRAIGHT_STATEMENTS):
            problem = f"holds a {type(node).__name__.lower()} statement (line {node.lineno})"
        elif isinstance(node, ast.Call):
            problem = _load_time_call_problem(owner, node, own, calling, checked)
        if problem:
            break
    checked[id(method)] = problem
    return problem


_UNCHECKED = object()

# Straight-line methods that each call the next twice run 2**n calls from n lines: the time
# of code run while a file loads is bounded by its length only with their number bounded too.
# torch.ao's __setstate__ makes a handful.
_MOST_LOAD_TIME_CALLS = 1000


def _method_calls_run(owner: ast.ClassDef, method: ast.FunctionDef, counted: dict[int, int]) -> int:
    """How many calls of `owner`'s methods running `method` makes, theirs included (of a
    name defined twice, the definition that makes more), each method counted once in
    `counted`; `method` is straight-line (`_straight_line_problem`): no cycle."""
    known = counted.get(id(method))
    if known is None:
        own = method.args.args[0].arg if method.args.args else None
        known = 0
        for node in (n for statement in method.body for n in ast.walk(statement)):
            parts = _dotted(node.func) if isinstance(node, ast.Call) else None
            if parts and len(parts) == 2 and parts[0] == own:
                known += 1 + max(_method_calls_run(owner, m, counted) for m in _methods(owner, parts[1]))
        counted[id(method)] = known
    return known


def _load_time_call_problem(
    owner: ast.ClassDef, call: ast.Call, own: str | None, calling: tuple[str, ...], checked: dict[int, str | None]
) -> str | None:
    """What is wrong with `call` in straight-line code of `owner` (the allowlist has passed it)."""
    parts = _dotted(call.func) or []
    if parts and parts[0] in ("torch", "ops"):  # an operator
        return None
    if len(parts) == 1 and parts[0] in _BUILTINS and parts[0] not in _CALLS_A_FUNCTION:
        return None
    called = ".".join(parts) if parts else ast.unparse(call.func)
    if len(parts) != 2 or parts[0] != own or not _methods(owner, parts[1]):
        return f"calls {shorten(called)}, which is not a method of its own class (line {call.lineno})"
    if parts[1] in calling:
        return f"calls {shorten(called)} again from inside it (line {call.lineno})"
    for method in _methods(owner, parts[1]):
        problem = _straight_line_problem(owner, method, (*calling, parts[1]), checked)
        if problem:
            return f"calls {shorten(called)}, which {problem}"
    return None
