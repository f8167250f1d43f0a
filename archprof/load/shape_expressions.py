"""Whether a shape expression from an exported program (`.pt2`) is safe to hand to
`sympy.sympify`, which evaluates its string as Python and then computes its arithmetic
exactly. torch writes sympy's printing of an expression in sizes and ranges:
`Mul(Integer(2), Symbol('s0', integer=True))`, `s0**2`, `Max(1, s0)`, and its own functions,
which it names in `given` (FloorDiv, ModularIndexing...). Anything else is refused: attribute
access, indexing, builtins, a function sympy computes from a small argument a huge result
with (`factorial(Integer(10**10))`), and powers that grow without bound (`10**10**10`)."""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from typing import Any

# sympy's names a shape expression may call: numbers, symbols, arithmetic, comparisons and
# logic, as sympy prints them.
_CALLED = frozenset(
    [
        "Symbol",
        "Integer",
        "Rational",
        "Float",
        "Add",
        "Mul",
        "Pow",
        "Mod",
        "Max",
        "Min",
        "Abs",
        "floor",
        "ceiling",
        "sqrt",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "Equality",
        "Unequality",
        "StrictLessThan",
        "StrictGreaterThan",
        "LessThan",
        "GreaterThan",
        "And",
        "Or",
        "Not",
    ]
)
# sympy's constants a shape expression may name; any other plain name becomes a symbol.
_CONSTANTS = frozenset(["oo", "zoo", "nan", "true", "false", "pi", "E", "I", "S"])
# Calls whose second argument makes the result grow exponentially, or its work (torch's too).
_POWERS = frozenset(["Pow", "PowByNatural", "FloatPow", "LShift", "RoundDecimal"])
_NUMBERS = frozenset(("Integer", "Rational", "Float"))
_LARGEST_NUMBER = 2**64
_LARGEST_EXPONENT = 64
_NODES = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.Call,
    ast.Name,
    ast.Constant,
    ast.keyword,
    ast.Load,
    ast.operator,
    ast.unaryop,
    ast.boolop,
    ast.cmpop,
)


def is_sympy_arithmetic(expression: str, given: Mapping[str, Any]) -> bool:
    """Whether `expression` is numbers of at most 64 bits, symbols, sympy's arithmetic and
    comparisons, and the functions torch names in `given`; a power's exponent (a shift's, a
    rounding's digits) a number of at most 64 or an expression without numbers, and no power
    within another."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    try:
        return all(_allowed(node, given) for node in ast.walk(tree))
    except RecursionError:
        return False


def _allowed(node: ast.AST, given: Mapping[str, Any]) -> bool:
    if not isinstance(node, _NODES):
        return False
    if isinstance(node, ast.Constant):
        return _allowed_constant(node.value, given)
    if isinstance(node, ast.Name):
        return node.id in given or node.id in _CALLED or node.id in _CONSTANTS or _is_symbol_name(node.id)
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or not (node.func.id in given or node.func.id in _CALLED):
            return False
        if any(k.arg is None or not isinstance(k.value, ast.Constant) for k in node.keywords):
            return False
        if node.func.id in _POWERS:
            return len(node.args) == 2 and _bounded_power(*node.args)
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _bounded_power(node.left, node.right)
    return True


def _allowed_constant(value: Any, given: Mapping[str, Any]) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return True
    if isinstance(value, int):
        return abs(value) <= _LARGEST_NUMBER
    if isinstance(value, str):  # a symbol's name, or Float('1.5'), Integer('3')
        if re.fullmatch(r"[\d.e+-]{1,40}", value):
            return True
        return value in given or _is_symbol_name(value)
    return False


def _is_symbol_name(name: str) -> bool:
    """A name sympify makes a symbol of (torch's `s0`, `u1`): no dunders, no sympy function."""
    import sympy

    return name.isidentifier() and not name.startswith("_") and getattr(sympy, name, None) is None


def _bounded_power(base: ast.AST, exponent: ast.AST) -> bool:
    """A power sympy computes in bounded time: its exponent a number of at most
    `_LARGEST_EXPONENT` (`Integer(3)` too) or free of numbers (`s0**s1`), and neither side
    holding another power (`(2**64)**64**...` would grow past any bound)."""
    for side in (base, exponent):
        if any(_is_power(inner) for inner in ast.walk(side)):
            return False
    number = _number(exponent)
    if number is not None:
        return abs(number) <= _LARGEST_EXPONENT
    # Else no number in it (a symbol's name and its assumptions are no number).
    return all(_is_not_a_number(inner) for inner in ast.walk(exponent))


def _is_not_a_number(node: ast.AST) -> bool:
    if not isinstance(node, ast.Constant):
        return True
    return isinstance(node.value, bool) or (isinstance(node.value, str) and _is_symbol_name(node.value))


def _is_power(node: ast.AST) -> bool:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _POWERS


def _number(node: ast.AST) -> float | None:
    """The value of a plain number, -number, or Integer/Rational/Float of plain numbers."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        return _number(node.operand)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _NUMBERS:
        values = [_number(arg) for arg in node.args]
        if values and all(value is not None for value in values):
            return values[0] / (values[1] if len(values) > 1 and values[1] else 1)  # type: ignore[operator]
    return None
