"""Binary operators on a zero tensor as a CPU runs them: the ZeroTensor kernels
`DeviceKernels` registers while active (`ZERO_TENSOR_KERNELS`).

Modelled (PyTorch 2.x, CPU):

- an add, subtraction, product or quotient with a zero tensor (`_efficientzerotensor`, sgn's
  gradient of a real tensor, which the engine adds to another gradient of the same tensor and
  the gradient formulas before it multiply, divide and negate): PyTorch's ZeroTensor kernels
  work the result's shape and dtype out by a redispatch to the meta device, then copy the other
  operand (an add or subtraction, BinaryOps.cpp's maybe_add_maybe_sub) or make a zero tensor
  (a product, 0 / x) or a map full of inf or NaN (x / 0, 0 / 0). A CPU allocates nothing for the
  working out; the trace records it (a 0-dim zero expanded, `prims.add` or `prims.mul` making a
  whole map). While active, ZeroTensor kernels of the process's dispatcher work it out in
  Python, recording nothing, and run the rest as a CPU does, on every device; but an add on meta
  is handed below that key as one `aten.add` (a copy's shape and dtype), which the timeline then
  takes as any add of two gradients.
"""

from __future__ import annotations

import math

import torch
from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND, elementwise_dtypes
from torch.utils._python_dispatch import _disable_current_modes


def _zero_tensor_add(self, other, *, alpha=1):
    """aten.add where an operand is a zero tensor (its ZeroTensor kernel, BinaryOps.cpp's
    add_zerotensor) as a CPU runs it: the result's shape and dtype worked out on the meta device,
    allocating nothing, then a copy of the other operand, or a zero tensor where both are. On meta
    the trace records that working out as operators of its own (a 0-dim zero expanded, the meta
    kernel's `prims.add` making a whole map: 16,388 B for a float32 16 KiB gradient), which a CPU
    never allocates; so there the add is handed on below the ZeroTensor key, one `aten.add` whose
    result has the copy's shape and dtype: where it sums two gradients of one tensor (the engine's
    accumulation of sgn's zero gradient and another), the timeline's rule for the engine's adds
    applies to it, as to any."""
    source = other if _is_zero_tensor(self) else self
    if isinstance(source, torch.Tensor) and source.is_meta and not source._is_zerotensor():
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.ZeroTensor)):
            return torch.ops.aten.add.Tensor(self, other, alpha=alpha)
    return _zero_tensor_sum(self, other, alpha)


def _zero_tensor_sub(self, other, *, alpha=1):
    """aten.sub where an operand is a zero tensor (sub_zerotensor) as a CPU runs it on every
    device: the add's road with `-alpha`, a copy of `self`, or of `other` times `-alpha` (a copy,
    then its product: two maps while the product is made), or a zero tensor where both are. (The
    meta device's working out, recorded, made a map minus its signs 16,388 B over.)"""
    return _zero_tensor_sum(self, other, -alpha)


def _zero_tensor_sum(self, other, alpha):
    """BinaryOps.cpp's maybe_add_maybe_sub, its meta working out of the result's shape and dtype
    done without operators (`_zero_tensor_result`)."""
    shape, dtype, device = _zero_tensor_result(self, other, ELEMENTWISE_TYPE_PROMOTION_KIND.DEFAULT)
    source = other if _is_zero_tensor(self) else self
    if _is_zero_tensor(source):
        return torch._efficientzerotensor(shape, dtype=dtype, device=device)
    if isinstance(source, torch.Tensor):
        copy = torch.ops.aten._to_copy(source.expand(shape), dtype=dtype, device=device)
    else:  # a number (`grad + 2`), which C++ wraps as a 0-dim tensor: its copy, a map full of it
        copy = torch.full(shape, source, dtype=dtype, device=device)
    return copy.mul(alpha) if source is other and alpha != 1 else copy


def _zero_tensor_mul(self, other):
    """aten.mul where an operand is a zero tensor (mul_zerotensor) as a CPU runs it: a zero tensor
    of the product's shape and dtype, which holds no byte. On meta the working out recorded (a
    0-dim zero expanded, `prims.mul` making a whole map) made a map of signs times a weight 4 B
    over a CPU step's peak."""
    shape, dtype, device = _zero_tensor_result(self, other, ELEMENTWISE_TYPE_PROMOTION_KIND.DEFAULT)
    return torch._efficientzerotensor(shape, dtype=dtype, device=device)


def _zero_tensor_div(self, other):
    """aten.div where an operand is a zero tensor (div_zerotensor) as a CPU runs it: 0 / x a zero
    tensor, x / 0 a map full of inf, 0 / 0 one full of NaN. On meta the working out recorded
    (`prims.div` making a whole map) made a map of signs divided by a weight 16,380 B short of a
    CPU step's peak."""
    shape, dtype, device = _zero_tensor_result(self, other, ELEMENTWISE_TYPE_PROMOTION_KIND.INT_TO_FLOAT)
    if not _is_zero_tensor(self):
        return torch.full(shape, math.inf, dtype=dtype, device=device)
    if _is_zero_tensor(other):
        return torch.full(shape, math.nan, dtype=dtype, device=device)
    return torch._efficientzerotensor(shape, dtype=dtype, device=device)


def _zero_tensor_result(self, other, promotion) -> tuple[torch.Size, torch.dtype, torch.device]:
    """The shape, dtype and device of a binary operator's result on a zero tensor, which its
    ZeroTensor kernel works out by a redispatch to the meta device (TensorIterator's broadcast
    and promotion) and `correct_out_device` (a CPU scalar's partner's device): here in Python,
    without operators a dispatch mode would record (torch.result_type is one)."""
    number = not isinstance(other, torch.Tensor)
    if number:  # `grad * 2`: the redispatch's `.to(meta)` promotes it as a 0-dim tensor of its type's dtype
        with _disable_current_modes():
            other = torch.tensor(other, dtype=_NUMBER_DTYPES[type(other)], device="meta")
    _, dtype = elementwise_dtypes(self, other, type_promotion_kind=promotion)
    device = other.device if self.device.type == "cpu" and not number else self.device
    return torch.broadcast_shapes(self.shape, other.shape), dtype, device


# The dtype of the 0-dim tensor C++ wraps a number in (wrapped_scalar_tensor).
_NUMBER_DTYPES = {bool: torch.bool, int: torch.int64, float: torch.float64, complex: torch.complex128}


def _is_zero_tensor(operand) -> bool:
    """Whether a binary operator's operand (a tensor, or a number the dispatcher hands over as one) is a zero tensor."""
    return isinstance(operand, torch.Tensor) and operand._is_zerotensor()


# The ZeroTensor kernels `DeviceKernels` replaces while active (BinaryOps.cpp's).
ZERO_TENSOR_KERNELS = {
    "add.Tensor": _zero_tensor_add,
    "sub.Tensor": _zero_tensor_sub,
    "mul.Tensor": _zero_tensor_mul,
    "div.Tensor": _zero_tensor_div,
}
