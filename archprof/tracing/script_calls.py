"""Which module calls each operator of a TorchScript forward ran in, from the interpreter's
call stack.

A ScriptModule runs no Python hooks, but its interpreter keeps a call stack, which torch's
profiler records with each event when asked for stacks (`script_stacks.stacks_of_marks`): frames such as
'code/__torch__/torch/nn/modules/conv.py(23): forward', innermost first, each a line of the
serialized code `torch.jit.save` wrote for a module's class. The recorder opens an empty
profiler range named after each op it records (`script_stacks.mark`), so that range's stack is the op's.
The code says which submodule a line calls (`_0 = getattr(self, "0")`, then
`(_0).forward(x)`): from the model down, a stack names the chain of module calls the op ran
in (`ScriptCode.chain`), each with its site, the frames down to the line that called it,
which tells apart two calls of one module from two lines (`Sequential(conv, conv)`).
"""

from __future__ import annotations

import ast
import functools
import itertools
import re
from dataclasses import dataclass, replace

import torch

from archprof.load.torchscript import parsed_code
from archprof.tracing.script_statements import Statements, assigned_once, in_evaluation_order

_FRAME = re.compile(r"(.+)\((\d+)\): (\w+)$")
_FREE_FUNCTION = re.compile(r"^def (\w+)", re.MULTILINE)
_FORWARD = re.compile(r"forward(\d*|__\d+)")

# A module call in an op's chain: the module's path and the frames down to its call site.
Link = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class _Frame:
    file: str
    line: int
    function: str

    def __str__(self) -> str:  # as the profiler writes it
        return f"{self.file}({self.line}): {self.function}"


class ScriptCode:
    """The code of a ScriptModule saved by `script_copies.saved_and_loaded`, read for the module calls its
    lines make. `modules`: the model's (path, module), the model first; `canonical`: each
    path -> the path its rows go under (a module that is another one under a second name)."""

    def __init__(self, code: dict[str, bytes], modules: list[tuple[str, torch.nn.Module]], canonical: dict):
        self._code = code
        # (file, line) -> the calls made there: (the attributes from `self` to the object,
        # method), of the files read so far (`_calls_at`: the classes' that stacks reach)
        self._calls: dict[tuple[str, int], list[tuple[tuple[str, ...], str]]] = {}
        self._read: set[str] = set()
        self._free: dict[str, set[str]] = {}  # file -> its functions outside any class: no module call inside
        self._methods: dict[str, list[Statements]] = {}  # file -> its classes' methods' statements
        # (file, line) -> the calls of the one-line statement there, in the order they run:
        # (attributes from `self`, method) for a method call of an object reached from it, else None
        self._order: dict[tuple[str, int], list[tuple[tuple[str, ...], str] | None]] = {}
        self._files = {path: _code_file(module) for path, module in modules}
        self._modules = dict(modules)
        # id of an `if` statement's node -> its condition, where it reads only its module's
        # attributes (`_Condition`), else None
        self._conditions: dict[int, _Condition | None] = {}
        self._canonical = canonical
        # `_descend`'s answers from the model: (the chain, the path of the module the last frame runs in)
        self._descended: dict[tuple, tuple[tuple[Link, ...], str] | None] = {}

    def _calls_at(self, file: str, line: int) -> list[tuple[tuple[str, ...], str]]:
        if file not in self._read:
            self._read.add(file)
            tree = parsed_code(self._code[file]) if file in self._code else None
            for node in tree.body if tree is not None else ():
                if isinstance(node, ast.ClassDef):
                    for method in node.body:
                        if isinstance(method, ast.FunctionDef):
                            self._read_calls(file, method)
                            self._methods.setdefault(file, []).append(Statements(method))
        return self._calls.get((file, line), [])

    def _statements(self, frame: _Frame) -> Statements | None:
        """The statements of the method `frame` runs in."""
        self._calls_at(frame.file, frame.line)
        return next((method for method in self._methods.get(frame.file, ()) if frame.line in method.place), None)

    def _in_a_loop(self, frame: _Frame) -> bool:
        """Whether the frame's line may run more than once in one call of its method."""
        statements = self._statements(frame)
        return statements is None or statements.in_a_loop(frame.line)

    def _decided(self, running: str, statement: ast.If) -> bool | None:
        """Which block of the `if` the module at `running` ran: its condition read of the
        module's attributes as they are (the trace's mode; bools, None), where no line of the
        code assigns them; None where that cannot be said."""
        condition = self._conditions.get(id(statement))
        assigned = self._assigned_attributes
        if condition is None or assigned is None:
            return None
        return condition.value(self._modules.get(running), assigned)

    @functools.cached_property
    def _assigned_attributes(self) -> set[str] | None:
        """The names of the attributes some line of the code assigns (`self.flag = ...`), or
        None where a code file cannot be read."""
        trees = [parsed_code(text) for text in self._code.values()]
        if None in trees:
            return None
        return {
            node.attr
            for tree in trees
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store | ast.Del)
        }

    def _is_free(self, frame: _Frame) -> bool:
        """Whether the frame is in a function outside any class (`torch.nn.functional`'s): the
        printer starts each at the line's start, where a class's methods are indented."""
        if frame.file not in self._free:
            text = self._code.get(frame.file, b"").decode("utf-8", "replace")
            self._free[frame.file] = set(_FREE_FUNCTION.findall(text))
        return frame.function in self._free[frame.file]

    def _read_calls(self, file: str, function: ast.FunctionDef) -> None:
        """The method calls of the method `function` on objects reached from its first
        argument (its module) by attributes: the code names each submodule once
        (`_0 = getattr(self, "0")`; `_1 = self.layer1`)."""
        # A method's first argument is its module, whatever its name (`self`, most often).
        local: dict[str, tuple[str, ...]] = {function.args.args[0].arg: ()} if function.args.args else {}
        nodes = sorted(
            (n for n in ast.walk(function) if isinstance(n, ast.Assign | ast.Call | ast.If)),
            key=lambda n: (n.lineno, n.col_offset),
        )
        once = assigned_once(function)
        resolved: dict[int, tuple[tuple[str, ...], str]] = {}  # id of a Call node -> its object and method
        for node in nodes:
            if isinstance(node, ast.If):
                self._conditions[id(node)] = _Condition.read(node.test, {n: local[n] for n in once & local.keys()})
            elif isinstance(node, ast.Assign):
                reached = _reached(node.value, local)
                if reached is not None and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    local[node.targets[0].id] = reached
            elif isinstance(node.func, ast.Attribute):
                reached = _reached(node.func.value, local)
                if reached is not None:
                    self._calls.setdefault((file, node.lineno), []).append((reached, node.func.attr))
                    resolved[id(node)] = (reached, node.func.attr)
        for statement in ast.walk(function):
            if isinstance(statement, ast.stmt) and statement.lineno == statement.end_lineno:
                calls = in_evaluation_order(statement)
                self._order[(file, statement.lineno)] = [resolved.get(id(call)) for call in calls]

    def chains(
        self, events: list[tuple[int | None, list[str]]], count: int
    ) -> list[tuple[int | None, tuple[Link, ...] | None]] | None:
        """`events` (`stacks_of_marks`) each with the module calls it ran in, from the model's
        down to the innermost, each (path, its site); None where its stack does not say. A
        mark's stack may start below the model (the interpreter lost the frames above: a
        batch norm's count of batches in training): it goes on from the chain of the mark
        after it, else before it, from that chain's deepest call of its first frame's class.
        None where not each of the `count` ops has its mark."""
        if sorted(index for index, _ in events if index is not None) != list(range(count)):
            return None
        frames = [_frames(tuple(stack)) for _, stack in events]
        chains = [self._from_the_model(f) for f in frames]
        marks = [position for position, (index, _) in enumerate(events) if index is not None]
        for order, position in enumerate(marks):
            if chains[position] is None and frames[position]:
                after = next((chains[p] for p in marks[order + 1 :] if chains[p] is not None), None)
                before = next((chains[p] for p in reversed(marks[:order]) if chains[p] is not None), None)
                joined = (self._joined(frames[position], near) for near in (after, before) if near is not None)
                chains[position] = next((chain for chain in joined if chain is not None), None)
        return self._with_silent_calls(
            [(index, chain) for (index, _), chain in zip(events, chains, strict=True)], frames
        )

    def _with_silent_calls(
        self, chains: list[tuple[int | None, tuple[Link, ...] | None]], frames: list[tuple[_Frame, ...]]
    ) -> list[tuple[int | None, tuple[Link, ...] | None]]:
        """`chains`, with the submodule calls that ran no operator (`nn.Identity`), which no
        stack shows, put in where they ran, as operators that never reached the recorder.
        Outside a loop, each statement runs at most once and in order: one calling a
        submodule's forward that surely ran between the lines two events ran at in one call
        of the method (`Statements.ran_between`; before the first, after the last: at the
        call's start, end) ran between them. A call of a method ends where an event's frames
        leave it, or come back to an earlier line of it not in the same loop (a second call,
        from a loop of the caller's). Events whose stacks do not start at the model's
        forward (frames lost) are passed over."""
        result: list[tuple[int | None, tuple[Link, ...] | None]] = []
        running: tuple[_Frame, ...] = ()  # the frames of the last event read, outermost first
        for (index, chain), stack in zip(chains, frames, strict=True):
            if stack and stack[0].file == self._files[""]:
                result += self._silent_between(running, stack)
                running = stack
            result.append((index, chain))
        return result + self._silent_between(running, ())

    def _silent_between(self, running: tuple[_Frame, ...], stack: tuple[_Frame, ...]) -> list[tuple[None, tuple]]:
        """The silent calls (`_with_silent_calls`) between an event run at the frames `running`
        and the next at `stack` (none: the forward's end), in the order they ran."""
        kept = self._same_calls(running, stack)
        silent = []
        for depth in range(len(running) - 1, kept - 1, -1):  # the calls that ended, after their last line
            silent += self._silent(running[: depth + 1], self._point(running, depth), None)
        if kept:  # the deepest call going on, between its two points
            silent += self._silent(stack[:kept], self._point(running, kept - 1), self._point(stack, kept - 1))
        for depth in range(kept, len(stack)):  # the calls that began, before their first point
            silent += self._silent(stack[: depth + 1], None, self._point(stack, depth))
        return silent

    def _same_calls(self, running: tuple[_Frame, ...], stack: tuple[_Frame, ...]) -> int:
        """How many of the method calls `running` (an event's frames) are in are still going
        on at `stack` (the next event's): the same methods, each at its caller's same line, at
        a line of its own no earlier than before, or an earlier one of the same loop (its next
        round: the calls below it are new ones, as below a later line)."""
        kept = 0
        while kept < min(len(running), len(stack)):
            before, now = running[kept], stack[kept]
            if (before.file, before.function) != (now.file, now.function):
                break
            if now.line < before.line and not self._one_loop(now, before.line):
                break
            kept += 1
            if now.line != before.line:
                break
        return kept

    def _one_loop(self, frame: _Frame, line: int) -> bool:
        """Whether the frame's line and `line` of its method lie in one loop statement."""
        statements = self._statements(frame)
        return statements is not None and statements.in_a_loop(frame.line) and statements.together(frame.line, line)

    def _point(self, stack: tuple[_Frame, ...], depth: int) -> tuple[int, int | None]:
        """Where in its method the frame `stack[depth]` was: its line, and which of that
        line's calls (`_order`) it was in: the submodule method the frame below runs, else
        the line's one call of no submodule's (an operator, a function); None where the line
        has two such, or its statement is not on one line."""
        frame = stack[depth]
        order = self._order.get((frame.file, frame.line))
        if order is None or self._from_the_model(stack[: depth + 1]) is None:
            return frame.line, None
        running = self._descended[stack[: depth + 1]][1]
        callee = stack[depth + 1] if depth + 1 < len(stack) and not self._is_free(stack[depth + 1]) else None
        if callee is None:
            at = [i for i, call in enumerate(order) if call is None]
        else:
            at = [
                i
                for i, call in enumerate(order)
                if call is not None
                and call[1] == callee.function
                and self._files.get(_path_below(running, call[0])) == callee.file
            ]
        return frame.line, at[0] if len(at) == 1 else None

    def _silent(
        self, frames: tuple[_Frame, ...], after: tuple[int, int | None] | None, before: tuple[int, int | None] | None
    ) -> list[tuple[None, tuple[Link, ...]]]:
        """The submodule forwards that the method `frames[-1]` runs in surely called after
        the point `after` and before the point `before` (`_point`; None: its start, its
        end), as events of operators that never reached the recorder, with their chains;
        none where a method above it called it from a loop (which would call it again from
        the same line, which its events' frames do not tell apart). Its own loops are read
        whole, as one statement that may have run in part (`Statements`)."""
        caller = frames[-1]
        statements = self._statements(caller)
        if statements is None or self._from_the_model(frames) is None or any(map(self._in_a_loop, frames[:-1])):
            return []
        links, running = self._descended[frames]
        decide = functools.partial(self._decided, running)
        lines = statements.ran_between(after and after[0], before and before[0], decide)
        if lines is None:  # not one call's order
            return []
        silent: list[tuple[None, tuple[Link, ...]]] = []
        for line, (reached, method) in self._calls_between(caller.file, statements, after, before, lines):
            path = _path_below(running, reached)
            if _FORWARD.fullmatch(method) and path != running and path in self._files:
                site = (*links[-1][1], *map(str, frames[:-1]), str(replace(caller, line=line)))
                silent.append((None, (*links, (self._canonical[path], site))))
        return silent

    def _calls_between(
        self,
        file: str,
        statements: Statements,
        after: tuple[int, int | None] | None,
        before: tuple[int, int | None] | None,
        lines: list[int],
    ) -> list[tuple[int, tuple[tuple[str, ...], str]]]:
        """The method calls (line, (object, method)) made between the points `after` and
        `before` of a method, in the order they ran: those of its line `after` after its
        point's call, those of the statements between (`lines`), those of the line `before`
        before its point's call; of the points' lines, only where the point's call is known
        and the statement has no condition in it."""

        def part(line: int, start: int | None, stop: int | None) -> list[tuple[int, tuple[tuple[str, ...], str]]]:
            if not statements.unconditional(line):
                return []
            return [(line, call) for call in self._order[(file, line)][start:stop] if call is not None]

        known_after = after is not None and after[1] is not None
        known_before = before is not None and before[1] is not None
        if after is not None and before is not None and after[0] == before[0]:  # one line
            return part(after[0], after[1] + 1, before[1]) if known_after and known_before else []
        calls = part(after[0], after[1] + 1, None) if known_after else []
        for line in lines:
            order = self._order.get((file, line))
            calls += [(line, call) for call in (self._calls_at(file, line) if order is None else order) if call]
        return calls + (part(before[0], None, before[1]) if known_before else [])

    def _from_the_model(self, frames: tuple[_Frame, ...]) -> tuple[Link, ...] | None:
        """The chain of a stack from the model's forward down (many operators share one)."""
        if not frames or frames[0].file != self._files[""]:
            return None
        if frames not in self._descended:
            self._descended[frames] = self._descend(frames, (("", ()),))
        descended = self._descended[frames]
        return None if descended is None else descended[0]

    def _joined(self, frames: tuple[_Frame, ...], near: tuple[Link, ...]) -> tuple[Link, ...] | None:
        """`near` down to its deepest call of the class `frames` start in, then `frames` from there."""
        for depth in range(len(near) - 1, -1, -1):
            if self._files[near[depth][0]] == frames[0].file:
                descended = self._descend(frames, near[: depth + 1])
                return None if descended is None else descended[0]
        return None

    def _descend(self, frames: tuple[_Frame, ...], links: tuple[Link, ...]) -> tuple[tuple[Link, ...], str] | None:
        """`links` (the calls down to the module `frames[0]` runs in), and those `frames`
        make below it, and the path of the module the last frame runs in (a submodule's other
        method runs in it, not its caller's module); None where a line calls no submodule
        of the class its callee is from, or two alike."""
        chain = list(links)
        running = links[-1][0]
        attributes = tuple(running.split(".")) if running else ()
        for depth, (frame, callee) in enumerate(itertools.pairwise(frames)):
            if self._is_free(callee):
                break
            paths = {
                ".".join(attributes + reached)
                for reached, method in self._calls_at(frame.file, frame.line)
                if method == callee.function
            }
            called = [p for p in paths if p in self._files and self._files[p] == callee.file]
            if len(called) != 1:
                return None
            # A submodule's forward (a traced module's second call is its `forward1`, an
            # overload its `forward__0`): a call,
            # as its hooks see one; its other methods' operators are the caller's, as in Python.
            if called[0] != ".".join(attributes) and _FORWARD.fullmatch(callee.function):
                site = links[-1][1] + tuple(map(str, frames[: depth + 1]))
                chain.append((self._canonical[called[0]], site))
            attributes = tuple(called[0].split(".")) if called[0] else ()
        return tuple(chain), ".".join(attributes)


@dataclass(frozen=True)
class _Condition:
    """An `if`'s condition that reads only its module's attributes, as TorchScript's code
    writes one: `flag = self.flag` then `if flag:`; `torch.__not__(training)`;
    `torch.__isnot__(bias, None)` (an `and` or `or` it writes as an `if` of its own, whose
    value is not read). `kind`: "attribute", "is None", "not"."""

    kind: str
    attributes: tuple[str, ...] = ()  # from the module, for "attribute" and "is None"
    negated: _Condition | None = None  # for "not"

    @staticmethod
    def read(node: ast.expr, local: dict[str, tuple[str, ...]]) -> _Condition | None:
        """`node` as a condition, its names read from `local` (`_reached`), or None."""
        reached = _reached(node, local)
        if reached:
            return _Condition("attribute", reached)
        if not isinstance(node, ast.Call) or node.keywords or _dotted_name(node.func) not in _CONDITION_CALLS:
            return None
        kind, operands = _CONDITION_CALLS[_dotted_name(node.func)], node.args
        if kind == "not" and len(operands) == 1:
            negated = _Condition.read(operands[0], local)
            return None if negated is None else _Condition("not", negated=negated)
        if kind != "not" and len(operands) == 2 and _is_none(operands[1]) and _reached(operands[0], local):
            is_none = _Condition("is None", _reached(operands[0], local))
            return is_none if kind == "is" else _Condition("not", negated=is_none)
        return None

    def value(self, module: torch.nn.Module | None, assigned: set[str]) -> bool | None:
        """The condition's value for `module` now, where it reads no attribute in `assigned`
        (which a forward may change) and each attribute it tests is a bool; else None."""
        if self.negated is not None:
            negated = self.negated.value(module, assigned)
            return None if negated is None else not negated
        found = _attribute(module, self.attributes) if self.attributes[-1] not in assigned else _MISSING
        if found is _MISSING:
            return None
        if self.kind == "is None":
            return found is None
        return found if isinstance(found, bool) else None


_CONDITION_CALLS = {"torch.__not__": "not", "torch.__is__": "is", "torch.__isnot__": "is not"}
_MISSING = object()


def _attribute(module: torch.nn.Module | None, attributes: tuple[str, ...]) -> object:
    """The object `module.a.b` for the attributes (a, b), else `_MISSING`."""
    found: object = module
    for name in attributes:
        try:
            found = getattr(found, name) if found is not None else _MISSING
        except Exception:  # a ScriptModule raises RuntimeError, not AttributeError, for some names
            found = _MISSING
        if found is _MISSING:
            break
    return found


def _dotted_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


@functools.lru_cache(maxsize=4096)
def _frames(stack: tuple[str, ...]) -> tuple[_Frame, ...]:
    """A profiler's stack (innermost first) as the interpreter's frames, outermost first."""
    matches = [m for m in map(_FRAME.match, reversed(stack)) if m is not None]
    return tuple(_Frame(m[1], int(m[2]), m[3]) for m in matches if m[1].startswith("code/"))


def _path_below(running: str, reached: tuple[str, ...]) -> str:
    """The path of the submodule the attributes `reached` lead to from the module at `running`."""
    return ".".join((*running.split("."), *reached) if running else reached)


def _reached(node: ast.expr, local: dict[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    """The attributes from `self` to the object `node` names (`self.layer1`,
    `getattr(_0, "0")`, a local holding one), or None."""
    if isinstance(node, ast.Name):
        return local.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _reached(node.value, local)
        return None if base is None else (*base, node.attr)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "getattr"
        and len(node.args) == 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        base = _reached(node.args[0], local)
        return None if base is None else (*base, node.args[1].value)
    return None


def _code_file(module: torch.nn.Module) -> str | None:
    """The code file of a ScriptModule's class, as stacks name it: its qualified name
    '__torch__.torch.nn.modules.conv.Conv2d' is in 'code/__torch__/torch/nn/modules/conv.py'."""
    if not isinstance(module, torch.jit.ScriptModule):
        return None
    qualified = module._c._type().qualified_name()
    return "code/" + qualified.rpartition(".")[0].replace(".", "/") + ".py"
