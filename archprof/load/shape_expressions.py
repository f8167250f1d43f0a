"""Whether a shape expression from an exported program (`.pt2`) is safe to hand to
`sympy.sympify`, which evaluates its string as Python and then computes its arithmetic
exactly. torch writes sympy's printing of an expression in sizes and ranges:
`Mul(Integer(2), Symbol('s0', integer=True))`, `s0**2`, `Max(1, s0)`, and its own functions,
which it names in `given` (FloorDiv, ModularIndexing...). Anything else is refused: attribute
access, indexing, builtins, a function sympy computes from a small argument a huge result
with (`factorial(Integer(10**10))`), and powers that grow without bound (`10**10**10`)."""

from __future__ import annotations

import ast
import math
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
_MOST_DIGITS = 1024  # a Float's precision, in bits or digits
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
    rounding's digits; `^` is a power to sympify) a number of at most 64 or an expression
    without numbers, and no power within another. A string only names a symbol or spells a
    number, as an argument of `Symbol`, `Integer`, `Float` or `Rational`: any other is text
    a sympy function would sympify itself, unchecked (`Abs('exec(...)')`), or grow
    (`Symbol('a' * 10**9)`)."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    try:
        texts = _placed_strings(tree)
        return all(_allowed(node, given, texts) for node in ast.walk(tree))
    except RecursionError:
        return False


def _placed_strings(tree: ast.AST) -> set[int]:
    """The string constants where torch writes them: a symbol's name, a number's digits."""
    placed: set[int] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        if node.func.id == "Symbol" and node.args:
            name = node.args[0]
            if isinstance(name, ast.Constant) and isinstance(name.value, str) and _is_symbol_name(name.value):
                placed.add(id(name))
        elif node.func.id in _NUMBERS:
            placed.update(id(arg) for arg in node.args if isinstance(arg, ast.Constant) and _is_number_text(arg.value))
    return placed


def _allowed(node: ast.AST, given: Mapping[str, Any], texts: set[int]) -> bool:
    if not isinstance(node, _NODES):
        return False
    if isinstance(node, ast.Constant):
        return id(node) in texts if isinstance(node.value, str) else _allowed_number(node.value)
    if isinstance(node, ast.Name):
        return node.id in given or node.id in _CALLED or node.id in _CONSTANTS or _is_symbol_name(node.id)
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or not (node.func.id in given or node.func.id in _CALLED):
            return False
        # Keywords are assumptions (integer=True) or a Float's precision, bounded.
        if any(k.arg is None or not _small_keyword(k.value) for k in node.keywords):
            return False
        if node.func.id == "Float" and len(node.args) > 1:
            digits = _number(node.args[1])
            return digits is not None and 0 <= digits <= _MOST_DIGITS
        if node.func.id in _POWERS:
            return len(node.args) == 2 and _bounded_power(*node.args)
        return True
    if _is_power(node):
        return _bounded_power(node.left, node.right)  # type: ignore[attr-defined]
    return True


def _allowed_number(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int | float):
        return math.isfinite(value) and abs(value) <= _LARGEST_NUMBER
    return False


def _is_number_text(value: Any) -> bool:
    """Digits of a number of at most 64 bits (`Float('1.5')`, `Integer('3')`)."""
    if not isinstance(value, str) or not re.fullmatch(r"[\d.eE+-]{1,40}", value):
        return False
    try:
        return _allowed_number(float(value))
    except ValueError:
        return False


def _small_keyword(value: ast.AST) -> bool:
    """An assumption's True or False, or a precision of at most `_MOST_DIGITS`."""
    if not isinstance(value, ast.Constant):
        return False
    return isinstance(value.value, bool) or (isinstance(value.value, int) and 0 <= value.value <= _MOST_DIGITS)


def _is_symbol_name(name: str) -> bool:
    """A name sympify makes a symbol of (torch's `s0`, `u1`): no dunders, no sympy function."""
    import sympy

    return re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,99}", name) is not None and getattr(sympy, name, None) is None


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
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow | ast.BitXor):  # sympify: 2^3 is 2**3
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
