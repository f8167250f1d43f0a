"""What PyTorch's gradient formulas (derivatives.yaml, FunctionsManual.cpp) and autograd's
engine do in a real backward pass that the ops a trace records do not show, for the training
recorder: the nodes and operators that keep a number, fill zeros or work in place on a CPU,
hold locals or call functions inside a statement, and the tests that tell such ops apart."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from archprof.graph import OpNode
from archprof.structure import tensors_in
from archprof.tracing.op_info import OpInfo

# Operators whose autograd node keeps their second operand for the first's gradient
# (derivatives.yaml: `self: mul_tensor_backward(grad, other, ...)`, `div_tensor_self_backward`):
# a Python number there is a tensor the argument parser made (`EngineNotes.saved_numbers`).
_aten = torch.ops.aten
KEEPS_ITS_NUMBER = frozenset({_aten.mul.Tensor, _aten.mul_.Tensor, _aten.div.Tensor, _aten.div_.Tensor})
# The node of group norm's gradient, whose formula (derivatives.yaml, native_group_norm) makes
# the gradient and the saved input contiguous in the layout the input suggests on a CPU and
# plainly contiguous anywhere else: on meta, a copy of each channels-last one a CPU never makes.
_GROUP_NORM_NODE = "NativeGroupNormBackward0"
# Gradient formulas that fill a tensor of zeros in place on a CPU or GPU (index_select's,
# indexing's, gather's, max(dim)'s, sort's, cummax's: `zeros.index_add_(...)`), but out of
# place for a tensor that looks like a subclass, as every tensor does under a dispatch mode
# (FunctionsManual.cpp's isTensorSubclassLike branches): a second tensor a real step never makes.
ZEROS = frozenset({"aten.new_zeros", "aten.zeros", "aten.zeros_like"})
FILLS_ZEROS = frozenset({"aten.index_add", "aten.index_put", "aten.scatter", "aten.scatter_add"})
# Gradient formulas that work in place on a tensor they made where nothing looks like a
# subclass (and grad mode is off), as in a real backward pass, but out of place under a dispatch
# mode: the node -> the operators it runs so. binary_cross_entropy_with_logits's, each `sub` and
# `mul` (`t.add(1).sub_(y).mul_(x.sigmoid()).sub_(t).mul_(grad)`, or `x.sigmoid().sub_(y).mul_(grad)`,
# then `.mul_(weight)`). Up to PyTorch 2.13, clamp's between tensor bounds, the masks it combines
# (`self_ge_min.logical_and_(self_le_max)`, `self_gt_max.logical_or_(max_lt_min)`). From 2.14 the
# gradients of maximum, minimum, fmax, fmin and clamp's between tensor bounds split ties, each
# `masked_fill_inplace_if_safe(at::where(self == other, grad / 2, grad), mask, 0)`: the fill in
# place (a CPU's profile shows `masked_fill_`), clamp's masks now combined out of place.
_SPLITS_TIES = torch.__version__ >= (2, 14)
_FILLS_THE_SPLIT_IN_PLACE = frozenset({"aten.masked_fill"})
IN_PLACE_ON_A_CPU = {
    "BinaryCrossEntropyWithLogitsBackward0": frozenset({"aten.sub", "aten.mul"}),
    **(
        dict.fromkeys(
            ("MaximumBackward0", "MinimumBackward0", "FmaxBackward0", "FminBackward0", "ClampBackward0"),
            _FILLS_THE_SPLIT_IN_PLACE,
        )
        if _SPLITS_TIES
        else {"ClampBackward0": frozenset({"aten.logical_and", "aten.logical_or"})}
    ),
}
# Nodes whose gradient formula returns all of its gradients from one C++ statement
# (FunctionsManual.cpp's atan2_backward, `return {grad * other * recip, grad * -self * recip}`;
# _euclidean_dist_backward, cdist's): the first gradient's temporaries live until the last is made.
ONE_STATEMENT_NODES = frozenset({"Atan2Backward0", "EuclideanDistBackward0", "LinalgInvExBackward0"})


@dataclass(frozen=True, slots=True)
class Read:
    """Where a gradient formula reads a local it names (`LOCALS_READ_ONCE`): as the argument at
    `position` of `operator`; with `of`, only a local made from a tensor that operator made (one
    of the arguments of the op making the local), where the same read names other tensors too."""

    operator: str
    position: int
    of: str | None = None


# Nodes whose gradient formula (FunctionsManual.cpp) stores in a local variable a tensor it reads
# once, which the ops cannot tell from a temporary of the statement that reads it: the node -> the
# reads (`Read`). An argument its node did not make names nothing (logcumsumexp's
# `log_grad_positive - result`: `result`, the forward's). A local passed as `local.to(dtype)` is
# read there through the cast, a copy where the dtype changes.
# sinc_backward's `out = grad * (... / self_squared_pi)`, read by its `return
# at::where(self_squared_pi == 0.0, zeros, out)`: its temporaries are freed when `out` is made; a
# formula with the same ops in one statement holds them to its end (pow_backward_self's
# `at::where(exponent == 0.0, zeros, grad * (exponent * self.pow(exponent - 1)))`), so this is the
# formula's, not the ops', to say. renorm_backward's `grad_norm = maxnorm * invnorm * (grad -
# invnorm * nb)`, read by `where(norm > maxnorm, grad_norm.to(grad.scalar_type()), grad)`;
# logcumsumexp_backward's `log_grad_positive`, `log_grad_negative`, each read by a `sub` as its
# first argument, and `output_pos - output_neg`. The masks and zeros the `where`s read are
# temporaries. norm_backward's (dist's, linalg.vector_norm's, aten.norm's: p other than 0, 1, 2,
# inf) `self_scaled = self.sgn() * self.abs().pow_(p - 1)` (`self * self.abs().pow_(p - 2)` for
# p > 2, the power masked where `self == 0` for p < 1), read as the first factor of `self_scaled
# * scale_v` (`self_scaled * grad * norm.pow(1 - p)` for p < 1); and, for p > 1, `scale_v = grad
# / norm.pow(p - 1)`, then `scale_v.masked_fill_(norm == 0, 0)`, the second factor. The other
# products of those formulas read temporaries in those places (`self.sgn()`, the product
# `self_scaled * grad`), made of no `abs` or `pow`.
_NORM_BACKWARD_LOCALS = frozenset({Read("aten.mul", 0, of="aten.abs"), Read("aten.mul", 1, of="aten.pow")})
LOCALS_READ_ONCE = {
    "SincBackward0": frozenset({Read("aten.where", 2)}),
    "RenormBackward0": frozenset({Read("aten.where", 1)}),
    "LogcumsumexpBackward0": frozenset({Read("aten.sub", 0), Read("aten.sub", 1)}),
    "DistBackward0": _NORM_BACKWARD_LOCALS,
    "LinalgVectorNormBackward0": _NORM_BACKWARD_LOCALS,
    **dict.fromkeys(("NormBackward0", "NormBackward1", "NormBackward2", "NormBackward3"), _NORM_BACKWARD_LOCALS),
    # i1_backward's (i1e_backward's) `gradx = (safe_self.i0() - (result * safe_self.reciprocal()))`,
    # read by `grad * at::where(self_is_not_tiny, gradx, at::full({}, 0.5, ...))` (from PyTorch 2.15
    # `where(self_is_tiny, at::full(...), gradx)`): the argument made of a product, not the 0-dim
    # half, nor the forward's `self`, which the first `where` reads in the same places
    **dict.fromkeys(
        ("SpecialI1Backward0", "SpecialI1EBackward0"),
        frozenset({Read("aten.where", 1, of="aten.mul"), Read("aten.where", 2, of="aten.mul")}),
    ),
    # copysign_tensor_self_backward's `ratio = result / self`, masked in place where `self == 0` (its
    # own statement), read by `grad * ratio`
    **dict.fromkeys(("CopysignBackward0", "CopysignBackward1"), frozenset({Read("aten.mul", 1)})),
    # mvlgamma_backward's `args = args.add(self.unsqueeze(-1))` (the first `args`, an arange, freed as
    # it is reassigned), read by `grad * args.digamma_().sum(-1)`
    "MvlgammaBackward0": frozenset({Read("aten.sum", 0)}),
    # prod_backward's (along a dim) `zero_mask = (input == 0)` and `slice_zero_count =
    # zero_mask.sum(dim, true)`, each read by a `sum` (`autograd_hooks.CpuRoads`)
    "ProdBackward1": frozenset({Read("aten.sum", 0)}),
    # From PyTorch 2.14, clamp's between tensor bounds: each gradient's masks made as locals (a
    # CPU's allocator frees the comparisons they are made of as each is made), the ties read by
    # `where(ties, grad / 2, grad)`, the outside by the in-place fill that follows
    **(
        {"ClampBackward0": frozenset({Read("aten.logical_and", 1), Read("aten.where", 0), Read("aten.masked_fill", 1)})}
        if _SPLITS_TIES
        else {}
    ),
}


@dataclass(frozen=True, slots=True)
class CallInAStatement:
    """How the ops of a function a gradient formula calls inside a statement are found: after
    the last op making its argument (`argument`, the statement's first op), up to the ops the
    statement runs on what the function returned (`after`, ending the statement)."""

    argument: str
    after: tuple[str, ...]


# Gradient formulas that call a function (FunctionsManual.cpp's, or a lambda) inside a statement,
# whose return the ops do not show: the node -> how the function's ops are found. It frees its
# temporaries and locals as it returns; the statement its argument and what it returned as the
# statement ends. DistBackward0's `-norm_backward(grad, self - other, p, result)`: norm_backward's
# quotient and mask freed before the negation, `self - other` held through it.
# logcumsumexp_backward's `(reverse_logcumsumexp(log_grad_positive - result) + self).exp()`, its
# lambda `at::flip(at::logcumsumexp(at::flip(x, {dim}), dim), {dim})` freeing its two temporaries
# before the add.
CALLS_IN_A_STATEMENT = {
    "DistBackward0": CallInAStatement("aten.sub", ("aten.neg",)),
    "LogcumsumexpBackward0": CallInAStatement("aten.sub", ("aten.add", "aten.exp")),
}


def materialises_a_zero(zeros: OpNode, expand: OpNode) -> bool:
    """Whether two ops are the ZeroTensor fallback's `at::zeros({}, options).expand(sizes)`."""
    return (
        zeros.op == "aten.zeros"
        and zeros.outputs[0].shape == ()
        and expand.op == "aten.expand"
        and expand.inputs[0].storage == zeros.outputs[0].storage
    )


def tensors_with_new_nodes(info: OpInfo, out) -> list[torch.Tensor]:
    """The tensors whose autograd nodes an op makes: its outputs; for an op writing in place
    into a view (`attn[:, :, 1:, 1:] = ...`, MViTv2), the view's base too, whose new node
    (CopySlices) runs the op's gradient. Untagged, that node's ops would be taken for the
    node before it, whose saved tensors would seem held until they end."""
    made = tensors_in(out)
    if info.writes_input:
        made += [tensor._base for tensor in made if tensor._base is not None]
    return made


def reduces_to_an_input(node, args: tuple, kwargs: dict) -> bool:
    """Whether a sum `node` runs is the engine's reduction of a gradient its formula returned in
    another shape than the input it goes to (validate_outputs' sum_to: `grad.sum(dims, keepdim=True)`
    over the leading dims that input lacks and those it has one element along; `grad.sum()` for a
    0-dim input), as the engine runs it after the formula has returned. A formula's own sum_to
    reads the same (expand's, the one op of its node), and ends its statement as the engine's does."""
    tensor, dims = args[0], args[1] if len(args) > 1 else kwargs.get("dim")
    keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    whole = dims is None and not keepdim  # all of it, to a 0-dim input (a 0-dim clamp bound)
    if not whole and (not keepdim or dims is None):
        return False
    sizes = tuple(tensor.shape)
    shapes = [tuple(edge._input_metadata[number].shape) for edge, number in node.next_functions if edge is not None]
    if whole:
        return bool(sizes) and () in shapes
    for shape in shapes:
        if shape == sizes or len(shape) > len(sizes):
            continue
        leading = len(sizes) - len(shape)
        summed = [*range(leading), *(i for i in range(leading, len(sizes)) if shape[i - leading] == 1 != sizes[i])]
        if sorted(d % len(sizes) for d in dims) == summed:
            return True
    return False


def group_norm_gradient_running() -> bool:
    node = torch._C._current_autograd_node()
    return node is not None and node.name() == _GROUP_NORM_NODE


def same_layout(tensor: torch.Tensor, sizes, strides) -> bool:
    """Whether `tensor` has `sizes` and is laid out with `strides` (a dimension of size 1
    has any stride): autograd's layout contract, under which AccumulateGrad takes a
    gradient over."""
    if tuple(tensor.shape) != tuple(sizes):
        return False
    return all(n == 1 or mine == other for n, mine, other in zip(sizes, tensor.stride(), strides, strict=True))


def wrapped_bytes(number) -> int:
    """The bytes of the 0-dim tensor PyTorch wraps a Python number in: bool, int64, float64
    or complex128."""
    if isinstance(number, bool):
        return 1
    return 16 if isinstance(number, complex) else 8
