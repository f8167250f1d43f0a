"""Formulas the user gives for an operator of their own that the catalogue does not know (a
custom operator made with `torch.library`), so that it is counted, not listed as "not
counted": `count_operator`. Each formula is called as the catalogue's are, with every
tensor argument replaced by its shape and the first output's shape as `out`; what it returns
is checked (a whole number, not below zero) where it is used, in the cost pass.

They join the one catalogue (`operators.GIVEN_FORMULAS`), which every pass, `explain`,
`diff` and the training figures read; its lookups are cached, so a registration clears
those caches. A formula gives costs only: the receptive-field pass has no rule for such an
operator, and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Integral
from typing import Any

import torch
from torch._library.custom_ops import CustomOpDef

from archprof.errors import ArchprofError, failure_reason
from archprof.operators import GIVEN_FORMULAS, Family, Operator, find_operator, operator_named
from archprof.operators.costs import Cost

# A count given as a number, or as a function of the call's shapes and arguments.
Formula = int | Callable[..., int]


def count_operator(operator: Any, *, macs: Formula = 0, elementwise_flops: Formula = 0) -> None:
    """Count `operator`, one archprof's catalogue does not know (a custom operator of
    `torch.library`), by the formulas given, in every analysis from now on. `operator` is
    the operator (`torch.ops.mylib.scaled_mm`, its only overload, or the function
    `torch.library.custom_op` made) or its name (`"mylib::scaled_mm"`); for an operator with
    several overloads, the operator itself, whose formulas then serve every overload.
    `macs` and `elementwise_flops` are each a number per call or a function called with the
    operator's arguments as PyTorch dispatches them (each tensor replaced by its shape, a
    tuple of ints, a list of them for a list of tensors; an argument the call left out is not
    filled in) and the first output's shape as the keyword `out` (`()` where it returns nothing):

        count_operator(torch.ops.mylib.scaled_mm, macs=lambda a, b, *, out: a[0] * a[1] * b[1])

    Given neither, it costs nothing (it only moves data). Counting it again replaces its
    formulas. An operator the catalogue counts already is refused: its formula is archprof's.
    Put the call beside the operator's definition, in the model's file: the CLI and
    `compare`'s workers then count it too."""
    name = _operator_name(operator)
    known = operator_named(name)
    if known is not None and name not in GIVEN_FORMULAS:
        raise ArchprofError(f"archprof counts {name} already ({known.family.value}): its formula cannot be replaced")
    for label, formula in (("macs", macs), ("elementwise_flops", elementwise_flops)):
        if not callable(formula) and not _a_count(formula):
            raise ArchprofError(f"{label} for {name}: give a whole number or a function, not {formula!r}")
    GIVEN_FORMULAS[name] = Operator(name, Family.GIVEN, _GivenCost(name, macs, elementwise_flops))
    find_operator.cache_clear()  # both cached None for it where a trace met it before
    operator_named.cache_clear()


class _GivenCost:
    """An operator's cost from the formulas given for it, each result checked."""

    def __init__(self, name: str, macs: Formula, elementwise_flops: Formula) -> None:
        self.name, self.macs, self.elementwise_flops = name, macs, elementwise_flops

    def words(self, label: str, called: str) -> str:
        """The formula of `label` ("macs" or "elementwise_flops") in words, for `explain`:
        its number, or its function's name on the arguments `called` ("1x3600, 3600x10, out=1x10")."""
        formula = getattr(self, label)
        if not callable(formula):
            return str(formula)
        return f"{getattr(formula, '__name__', None) or repr(formula)}({called})"

    def __call__(self, *args, out: tuple[int, ...], **kwargs) -> Cost:
        return Cost(
            self._counted("macs", self.macs, args, out, kwargs),
            self._counted("elementwise_flops", self.elementwise_flops, args, out, kwargs),
        )

    def _counted(self, label: str, formula: Formula, args: tuple, out: tuple[int, ...], kwargs: dict) -> int:
        if not callable(formula):
            return int(formula)
        try:
            count = formula(*args, out=out, **kwargs)
        except Exception as exc:  # the user's code: said in one line, with what it was given
            shapes = ", ".join(map(repr, args))
            raise ArchprofError(
                f"the {label} formula given for {self.name} failed on ({shapes}, out={out!r}): {failure_reason(exc)}"
            ) from exc
        if not _a_count(count):
            raise ArchprofError(
                f"the {label} formula given for {self.name} returned {count!r}, not a whole number of at least 0"
            )
        return int(count)


def _a_count(value: Any) -> bool:
    """A whole number, not below zero: an int or another integral number (NumPy's, of
    `np.prod(shape)`), not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= 0


def _operator_name(operator: Any) -> str:
    """ "mylib.scaled_mm" (as the trace names operators) for the operator, an overload of it,
    the function `torch.library.custom_op` made of it, or "mylib::scaled_mm" / "mylib.scaled_mm"."""
    if isinstance(operator, CustomOpDef):
        operator = operator._opoverload
    if isinstance(operator, torch._ops.OpOverload):
        packet = operator.overloadpacket
        if len(packet.overloads()) > 1:  # the trace names the packet: one formula serves them all
            raise ArchprofError(
                f"{packet} has overloads {', '.join(packet.overloads())}, and its formulas count them all: give"
                f" the operator, torch.ops.{packet}, with formulas that take the arguments of each"
            )
        operator = packet
    if isinstance(operator, torch._ops.OpOverloadPacket):
        return str(operator)
    if isinstance(operator, str):
        namespace, sep, short = operator.replace("::", ".", 1).partition(".")
        if sep and namespace and short and "." not in short:
            packet = getattr(getattr(torch.ops, namespace, None), short, None) if namespace.isidentifier() else None
            if isinstance(packet, torch._ops.OpOverloadPacket):
                return str(packet)
            raise ArchprofError(f"no operator {operator!r} is registered with torch (define it before counting it)")
    raise ArchprofError(
        "count_operator takes an operator (torch.ops.mylib.scaled_mm) or its name ('mylib::scaled_mm'),"
        f" not {operator!r}"
    )
