"""What the recorder reads once of an operator: its schema's tensor slots, results and
aliasing, and its catalogue entry's shape formula and layout (`OpInfo`), kept per operator
overload for the process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from archprof.cpu_allocation import schema_aliasing
from archprof.kernels import AUTOGRAD_KERNELS
from archprof.kernels.one_cpu_operator import COMPOSITE, STAYS_COMPOSITE
from archprof.operators import Family, Layout, find_operator
from archprof.structure import TensorSlots

# The operand whose strides decide a suggested layout: the input, or a gradient's forward input.
_DECIDING_OPERAND = {
    Layout.SUGGESTED: 0,
    Layout.SUGGESTED_BY_INPUT: 1,
    Layout.SUGGESTED_UNLESS_CONTIGUOUS: 0,
    Layout.SUGGESTED_BY_INPUT_UNLESS_CONTIGUOUS: 1,
}
_UNLESS_CONTIGUOUS = (Layout.SUGGESTED_UNLESS_CONTIGUOUS, Layout.SUGGESTED_BY_INPUT_UNLESS_CONTIGUOUS)


# Operators without a shape formula whose meta kernels are slow Python decompositions, their
# answers kept all the same: a 2-d grid sample's (9 ms a call; RAFT's 48 correlation lookups
# at 4 shapes) lays out an output dimension of size 1 by strides no formula here models.
_META_ANSWERS_KEPT = frozenset({"aten.grid_sampler_2d"})
_ELEMENTWISE = (Layout.AS_INPUT, Layout.INPUT_FIRST)  # laid out as their inputs are


@dataclass(frozen=True, slots=True)
class OpInfo:
    """What the recorder needs of an operator's schema, read once per operator."""

    name: str  # "aten.convolution"
    slots: TensorSlots
    returns: int
    writes_input: bool  # in place: returns its first input, written over
    # An out= overload's keyword arguments that it writes its results into (`torch.add(x, 1,
    # out=z)`: "out"), in the order of its results; () for any other.
    out_names: tuple[str, ...]
    is_view: bool  # returns an alias of an input without writing it
    # From the operator catalogue: its output-shape formula (the fast path) and whether
    # its real kernels refuse mixed dtypes.
    shape: Callable[..., Any] | None
    same_dtype: bool
    layout: Layout
    shape_by_dtype: bool
    elementwise: bool  # pointwise, its output laid out as its inputs are (TensorIterator's rule)
    # What runs the operator where it reaches the recorder whole, autograd's keys skipped (a
    # forward run below them, an inference mode), whose kernel would run it as the operators it
    # calls; None for one that runs as itself. A composite (aten.linear, aten.flatten: a C++
    # CompositeImplicitAutograd kernel, not a Python decomposition, which native_batch_norm
    # has too, and no meta or CPU kernel of its own: silu_backward's composite serves other
    # devices) runs its autograd kernel on a CPU (`kernels.AUTOGRAD_KERNELS`: one CPU operator,
    # values only), else its C++ composite; one a CPU runs whole
    # (`kernels.one_cpu_operator.STAYS_COMPOSITE`), its composite where the test beside it says so.
    decomposed: Callable[..., Any] | None
    stays_composite: Callable[..., bool] | None  # that test; None: `decomposed` runs every call
    # Read from `layout` once (an Enum's hash and == run Python): an op laid out by
    # TensorIterator's rule over its inputs, not in place; the operand whose strides decide
    # a suggested layout (`_DECIDING_OPERAND`), None for other layouts.
    laid_out_as_inputs: bool
    deciding_operand: int | None
    contiguous_decides: bool  # a contiguous deciding operand makes the output contiguous, whatever it suggests
    # The meta kernel's answers are kept (`meta_outputs.MetaAnswers`): where the fast path declines an
    # operator with a formula, or one of `_META_ANSWERS_KEPT`; never an in-place op's or a view's.
    meta_answer_kept: bool

    @staticmethod
    def of(func) -> OpInfo:
        returns = func._schema.returns
        operator = find_operator(func.overloadpacket)
        writes_input, out_names, is_view = schema_aliasing(func)
        if out_names:  # the meta kernel sizes the results and resizes `out` as the real one does
            operator = None
        name = str(func.overloadpacket)
        shape = operator.shape if operator is not None else None
        layout = operator.layout if operator is not None else Layout.AS_INPUT
        return OpInfo(
            name=name,
            slots=TensorSlots.of(func._schema),
            returns=len(returns),
            writes_input=writes_input,
            out_names=out_names,
            is_view=is_view,
            shape=shape,
            same_dtype=operator is not None and operator.same_dtype,
            layout=layout,
            shape_by_dtype=operator is not None and operator.shape_by_dtype,
            elementwise=operator is not None
            and operator.family is Family.POINTWISE
            and operator.layout in _ELEMENTWISE,
            decomposed=_decomposed(func, name),
            stays_composite=STAYS_COMPOSITE.get(name),
            laid_out_as_inputs=not writes_input and layout in _ELEMENTWISE,
            deciding_operand=_DECIDING_OPERAND.get(layout),
            contiguous_decides=layout in _UNLESS_CONTIGUOUS,
            meta_answer_kept=(shape is not None or name in _META_ANSWERS_KEPT) and not (writes_input or is_view),
        )


def _decomposed(func, name: str) -> Callable[..., Any] | None:
    """`OpInfo.decomposed`."""
    if name in STAYS_COMPOSITE:
        return func.decompose  # the composite its autograd kernel on meta falls back to
    if not _runs_as_composite(func.name()):
        return None
    return AUTOGRAD_KERNELS.get(func) or functools.partial(func._op_dk, COMPOSITE)


_OWN_KERNELS = (torch._C.DispatchKey.Meta, torch._C.DispatchKey.CPU)


def _runs_as_composite(name: str) -> bool:
    def has_kernel(key) -> bool:
        try:
            return torch._C._dispatch_has_kernel_for_dispatch_key(name, key)
        except RuntimeError:  # a namespace its name parser refuses (a library "=cmd|' /C calc'!A0"): the key's list
            return name in torch._C._dispatch_get_registrations_for_dispatch_key(key.name)

    return has_kernel(COMPOSITE) and not any(has_kernel(key) for key in _OWN_KERNELS)
