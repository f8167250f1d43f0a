"""A TorchScript method's statements, read with ast: which lines may run more than once in a
call and which surely ran between two lines of one call (`Statements`), the names a method
binds once (`assigned_once`), and a statement's calls in the order they run
(`in_evaluation_order`)."""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Callable, Iterator

# Statements that may run their lines other than once each, in order: each is read whole
# (`Statements`), its lines' calls never inferred. (`with` runs its body once, but is rare
# enough in TorchScript's code to be left whole too.)
_LOOPS = (ast.For, ast.While, ast.With, ast.Try)
# What makes a statement run in part, or its calls more than once.
_CONDITIONAL = (ast.If, ast.IfExp, ast.BoolOp, ast.comprehension, *_LOOPS)


class Statements:
    """A method's statements, each by its place: its index in its block, after its
    enclosing statements' (an `if`'s, and which of its two blocks): (2,), (2, "body", 0).
    A loop is one statement, its lines its own: each other one runs at most once, in order."""

    def __init__(self, method: ast.FunctionDef) -> None:
        self.place: dict[int, tuple] = {}  # line -> the place of the innermost statement on it
        self._blocks: dict[tuple, list[ast.stmt]] = {}
        self._read(method.body, ())

    def _read(self, body: list[ast.stmt], block: tuple) -> None:
        self._blocks[block] = body
        for index, statement in enumerate(body):
            place = (*block, index)
            self.place.update(dict.fromkeys(range(statement.lineno, statement.end_lineno + 1), place))
            if isinstance(statement, ast.If):
                self._read(statement.body, (*place, "body"))
                self._read(statement.orelse, (*place, "orelse"))

    def _statement(self, place: tuple) -> ast.stmt:
        return self._blocks[place[:-1]][place[-1]]

    def in_a_loop(self, line: int) -> bool:
        """Whether `line` may run more than once in one call: in a loop, a comprehension."""
        place = self.place.get(line)
        return place is not None and any(
            isinstance(node, (*_LOOPS, ast.comprehension)) for node in ast.walk(self._statement(place))
        )

    def together(self, line: int, other: int) -> bool:
        """Whether the two lines are of one statement (a loop's)."""
        return line in self.place and self.place[line] == self.place.get(other)

    def ran_between(
        self, after: int | None, before: int | None, decided: Callable[[ast.If], bool | None]
    ) -> list[int] | None:
        """The lines, in the order they ran, of the statements that surely ran after the
        line `after` ran and before the line `before` did (None: the method's start, end),
        in one call: those after `after`'s statement in its blocks out to the block both
        share, those between in that block, those before `before`'s in its blocks from
        there in. Only statements with no `if`, loop or conditional expression in them: those
        that may have run in part are left out; but an `if` whose block ran is known
        (`decided`: True, False, else None) is that block's statements. None where `after`
        cannot have run before `before` in one call."""
        one = self.place.get(after, ()) if after is not None else None
        two = self.place.get(before, ()) if before is not None else None
        if one == () or two == ():  # a line of no statement (the signature's)
            return []
        shared = 0  # the deepest block both are in
        if one is not None and two is not None:
            while 2 * shared + 2 < min(len(one), len(two)) and one[: 2 * shared + 2] == two[: 2 * shared + 2]:
                shared += 1
            if one[2 * shared] > two[2 * shared] or (one[2 * shared] == two[2 * shared] and len(one) > 2 * shared + 1):
                return None  # not one call's order: an else after an if's body
        ran = []
        for depth in range(len(one) - 1, 2 * shared if two is not None else -1, -2) if one is not None else ():
            ran += self._blocks[one[:depth]][one[depth] + 1 :]
        if one is not None and two is not None:
            ran += self._blocks[one[: 2 * shared]][one[2 * shared] + 1 : two[2 * shared]]
        for depth in range(2 * shared + 2 if one is not None else 0, len(two), 2) if two is not None else ():
            ran += self._blocks[two[:depth]][: two[depth]]
        return [
            line
            for statement in _surely_run(ran, decided)
            for line in range(statement.lineno, statement.end_lineno + 1)
        ]

    def unconditional(self, line: int) -> bool:
        """Whether the statement on `line` runs whole once begun: no `if`, loop or conditional in it."""
        place = self.place.get(line)
        return place is not None and _unconditional(self._statement(place))


def assigned_once(function: ast.FunctionDef) -> set[str]:
    """The names the function binds exactly once (its arguments included): a condition may
    read them as bound (`_Condition`)."""
    bound = Counter(argument.arg for argument in function.args.args)
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound[node.id] += 1
    return {name for name, times in bound.items() if times == 1}


def _surely_run(statements: list[ast.stmt], decided: Callable[[ast.If], bool | None]) -> Iterator[ast.stmt]:
    """The statements of `statements` that run whole when it runs, in order: an `if` whose
    block is `decided` gives that block's."""
    for statement in statements:
        taken = decided(statement) if isinstance(statement, ast.If) else None
        if taken is not None:
            yield from _surely_run(statement.body if taken else statement.orelse, decided)
        elif _unconditional(statement):
            yield statement


def _unconditional(statement: ast.stmt) -> bool:
    return not any(isinstance(node, _CONDITIONAL) for node in ast.walk(statement))


def in_evaluation_order(node: ast.AST) -> list[ast.Call]:
    """The calls in `node` in the order Python and TorchScript run them: a call after its
    callee's object and its arguments, left to right."""
    calls = [call for child in ast.iter_child_nodes(node) for call in in_evaluation_order(child)]
    return [*calls, node] if isinstance(node, ast.Call) else calls
