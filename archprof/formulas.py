"""Per-operator formulas: cost (MACs, elementwise FLOPs) and, for the trace's fast path,
output shapes. One registry keyed by aten operator; every function is integer math on
shapes, written as in FORMULAS.md.

Formulas receive the operator's arguments with every tensor replaced by its shape tuple,
and the shape of the operator's first output as `out`.

Conventions (documented in README.md):
- One MAC is one multiply-accumulate; `flops = 2 * macs`. Bias additions of convolution
  and linear layers are not counted (as in the lecture's worked example and in PyTorch's
  FlopCounterMode).
- Elementwise work is not a MAC; it is counted in `elementwise_flops`: one FLOP per output
  element for activations and arithmetic, 2 per element for an inference BatchNorm (scale
  and shift), 5 per element for a normalisation that computes its statistics (mean 1,
  variance 2, normalise and affine 2), `K - 1` comparisons per output of a max-pool
  window of `K` elements, `K` per output of an average-pool window (`K - 1` additions and
  one division).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import prod

import torch

aten = torch.ops.aten
Shape = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Cost:
    macs: int = 0
    elementwise_flops: int = 0


FREE = Cost()


@dataclass(slots=True)
class Formula:
    cost: Callable[..., Cost] | None = None
    # Output shapes computed without running the meta kernel (the trace's fast path).
    shape: Callable[..., Sequence[Shape]] | None = None


FORMULAS: dict[str, Formula] = {}

# Real kernels refuse mixed dtypes for these; meta kernels do not check, so the trace does.
SAME_DTYPE_OPS = frozenset({"aten.convolution", "aten.mm", "aten.addmm", "aten.bmm", "aten.baddbmm"})


def _register(slot: str, ops: Sequence[torch._ops.OpOverloadPacket]):
    def decorate(fn):
        for op in ops:
            entry = FORMULAS.setdefault(str(op), Formula())
            if getattr(entry, slot) is not None:
                raise ValueError(f"two {slot} formulas for {op}")
            setattr(entry, slot, fn)
        return fn

    return decorate


def cost(*ops):
    """Register the cost formula of one or more operators."""
    return _register("cost", ops)


def shape(*ops):
    """Register the output-shape formula of one or more operators."""
    return _register("shape", ops)


# --- Convolution and matrix products: MACs ------------------------------------------------


@cost(aten.convolution, aten._convolution, aten.cudnn_convolution, aten.convolution_overrideable)
def conv_cost(x: Shape, w: Shape, bias, stride, padding, dilation, transposed, *rest, out: Shape) -> Cost:
    """MACs = C_out * H_out * W_out * (C_in / G) * H_K * W_K per sample [000]."""
    # x:[n, c_in, *in]  w:[c_out, c_in/g, *k] -> out:[n, c_out, *out]
    # transposed w:[c_in, c_out/g, *k]: every input element meets (c_out/g) * k weights
    if transposed:
        return Cost(macs=prod(x) * prod(w[1:]))
    return Cost(macs=prod(out) * prod(w[1:]))


@cost(aten.mm)
def mm_cost(a: Shape, b: Shape, *, out: Shape) -> Cost:
    """MACs = n * k * m for [n, k] @ [k, m]."""
    return Cost(macs=a[0] * a[1] * b[1])


@cost(aten.addmm)
def addmm_cost(bias: Shape, a: Shape, b: Shape, *rest, out: Shape, **kwargs) -> Cost:
    """Linear `in -> out`: MACs = in * out per sample; the bias add is not counted."""
    return mm_cost(a, b, out=out)


@cost(aten.bmm)
def bmm_cost(a: Shape, b: Shape, *, out: Shape) -> Cost:
    """MACs = batch * n * k * m for [batch, n, k] @ [batch, k, m]."""
    return Cost(macs=a[0] * a[1] * a[2] * b[2])


@cost(aten.baddbmm)
def baddbmm_cost(bias: Shape, a: Shape, b: Shape, *rest, out: Shape, **kwargs) -> Cost:
    return bmm_cost(a, b, out=out)


# --- Elementwise work: FLOPs --------------------------------------------------------------


def _per_output_element(flops_per_element: int) -> Callable[..., Cost]:
    def per_element(*args, out: Shape, **kwargs) -> Cost:
        return Cost(elementwise_flops=flops_per_element * prod(out))

    return per_element


_ACTIVATIONS = (
    aten.relu,
    aten.relu_,
    aten.hardtanh,
    aten.hardtanh_,
    aten.leaky_relu,
    aten.leaky_relu_,
    aten.elu,
    aten.elu_,
    aten.gelu,
    aten.gelu_,
    aten.silu,
    aten.silu_,
    aten.sigmoid,
    aten.sigmoid_,
    aten.tanh,
    aten.tanh_,
    aten.hardswish,
    aten.hardswish_,
    aten.hardsigmoid,
    aten.hardsigmoid_,
    aten.clamp,
    aten.clamp_,
    aten.clamp_min,
    aten.clamp_min_,
    aten.mish,
    aten.mish_,
    aten.softplus,
    aten.prelu,
    aten._prelu_kernel,
    aten.exp,
    aten.sqrt,
    aten.rsqrt,
    aten.neg,
)
_ARITHMETIC = (
    aten.add,
    aten.add_,
    aten.sub,
    aten.sub_,
    aten.mul,
    aten.mul_,
    aten.div,
    aten.div_,
    aten.maximum,
    aten.minimum,
    aten.where,
)
cost(*_ACTIVATIONS, *_ARITHMETIC)(_per_output_element(1))
# Dropout in training multiplies by a mask (and scales).
cost(aten.native_dropout)(_per_output_element(1))
cost(aten._softmax, aten._log_softmax)(_per_output_element(3))


@cost(
    aten.native_batch_norm,
    aten._native_batch_norm_legit,
    aten._native_batch_norm_legit_no_training,
    aten.cudnn_batch_norm,
    aten.miopen_batch_norm,
)
def batch_norm_cost(x: Shape, weight, bias, running_mean, running_var, *rest, out: Shape, **kwargs) -> Cost:
    """Inference: a fixed per-channel affine map, 2 FLOPs per element; training computes
    the batch statistics too, 5 per element."""
    training = _batch_norm_training(rest, kwargs)
    return Cost(elementwise_flops=(5 if training else 2) * prod(x))


def _batch_norm_training(rest: tuple, kwargs: dict) -> bool:
    if "training" in kwargs:
        return bool(kwargs["training"])
    # native_batch_norm(..., training, momentum, eps); the *_no_training variant has
    # (momentum, eps) only, the *_legit variant without running stats has no flag at all.
    return bool(rest[0]) if len(rest) == 3 else len(rest) != 2


@cost(aten.native_layer_norm, aten.native_group_norm)
def norm_with_statistics_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """Layer / group / instance norm compute their statistics: 5 FLOPs per element."""
    return Cost(elementwise_flops=5 * prod(x))


@cost(aten.mean, aten.sum)
def reduction_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """A mean is a window of all reduced elements: one FLOP per input element."""
    return Cost(elementwise_flops=prod(x))


# --- Pooling ------------------------------------------------------------------------------


@cost(
    aten.max_pool1d,
    aten.max_pool2d,
    aten.max_pool3d,
    aten.max_pool1d_with_indices,
    aten.max_pool2d_with_indices,
    aten.max_pool3d_with_indices,
)
def max_pool_cost(x: Shape, kernel_size, *args, out: Shape, **kwargs) -> Cost:
    """`K - 1` comparisons per output element for a window of K elements."""
    window = prod(_expand(kernel_size, len(x) - 2))
    return Cost(elementwise_flops=(window - 1) * prod(out))


@cost(aten.avg_pool1d, aten.avg_pool2d, aten.avg_pool3d)
def avg_pool_cost(x: Shape, kernel_size, *args, out: Shape, **kwargs) -> Cost:
    """`K` FLOPs per output element: K - 1 additions and one division."""
    window = prod(_expand(kernel_size, len(x) - 2))
    return Cost(elementwise_flops=window * prod(out))


def _adaptive_window_sum(x: Shape, out: Shape, spatial: int) -> int:
    """Sum over all output elements of their window size, exactly.

    Output i of a dimension pools input [floor(i * In / Out), ceil((i + 1) * In / Out)),
    so the sum over all outputs is the product over dimensions of per-dimension sums."""
    total = prod(out[: len(out) - spatial])
    for size_in, size_out in zip(x[-spatial:], out[-spatial:], strict=True):
        total *= sum(-((-(i + 1) * size_in) // size_out) - (i * size_in) // size_out for i in range(size_out))
    return total


@cost(aten._adaptive_avg_pool2d, aten._adaptive_avg_pool3d, aten.adaptive_avg_pool1d)
def adaptive_avg_pool_cost(x: Shape, output_size, *, out: Shape) -> Cost:
    return Cost(elementwise_flops=_adaptive_window_sum(x, out, len(output_size)))


@cost(aten.adaptive_max_pool1d, aten.adaptive_max_pool2d, aten.adaptive_max_pool3d)
def adaptive_max_pool_cost(x: Shape, output_size, *, out: Shape) -> Cost:
    return Cost(elementwise_flops=_adaptive_window_sum(x, out, len(output_size)) - prod(out))


def _expand(value, dims: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    return tuple(value) * dims if len(value) == 1 else tuple(value)


# --- Operators that do no arithmetic ------------------------------------------------------

_free = (
    # views and layout
    aten.view,
    aten._unsafe_view,
    aten.reshape,
    aten.t,
    aten.transpose,
    aten.permute,
    aten.expand,
    aten.squeeze,
    aten.unsqueeze,
    aten.flatten,
    aten.unflatten,
    aten.alias,
    aten.detach,
    aten.slice,
    aten.select,
    aten.split,
    aten.split_with_sizes,
    aten.chunk,
    aten.unbind,
    aten.as_strided,
    aten.contiguous,
    aten.clone,
    aten._to_copy,
    aten.copy_,
    aten.lift_fresh,
    aten.lift_fresh_copy,
    # copies and creation
    aten.cat,
    aten.stack,
    aten.constant_pad_nd,
    aten.empty,
    aten.empty_like,
    aten.zeros,
    aten.zeros_like,
    aten.ones,
    aten.ones_like,
    aten.full,
    aten.fill_,
    aten.zero_,
    aten.scalar_tensor,
    aten.upsample_nearest1d,
    aten.upsample_nearest2d,
    aten.upsample_nearest3d,
    aten.dropout,
)
cost(*_free)(lambda *args, out, **kwargs: FREE)
cost(aten.embedding)(lambda *args, out, **kwargs: FREE)  # a table lookup (token ids -> rows): no arithmetic


# --- Output shapes for the fast path ------------------------------------------------------


@shape(*_ACTIVATIONS)
def same_shape(x: Shape, *args, **kwargs) -> list[Shape]:
    return [x]


@shape(*_ARITHMETIC[:8])  # add, sub, mul, div and their in-place forms
def broadcast_shape(a: Shape, b, *args, **kwargs) -> list[Shape]:
    """NumPy broadcasting; a Python number counts as a 0-d tensor."""
    return [broadcast(a, b if isinstance(b, tuple) else ())]


def broadcast(a: Shape, b: Shape) -> Shape:
    """NumPy broadcasting of two shapes (torch.broadcast_shapes imports the symbolic-shape
    machinery on first use: 0.4 s)."""
    result = []
    for x, y in zip(reversed((1,) * (len(b) - len(a)) + a), reversed((1,) * (len(a) - len(b)) + b), strict=True):
        if x != y and 1 not in (x, y):
            raise RuntimeError(f"shapes {a} and {b} do not broadcast")
        result.append(y if x == 1 else x)
    return tuple(reversed(result))


@shape(aten.native_batch_norm, aten._native_batch_norm_legit_no_training)
def batch_norm_shape(x: Shape, *args, **kwargs) -> list[Shape]:
    # -> (out, save_mean, save_invstd), the saved statistics one value per channel
    return [x, (x[1],), (x[1],)]


@shape(aten.mm)
def mm_shape(a: Shape, b: Shape, **kwargs) -> list[Shape]:
    # a:[n, k] @ b:[k, m] -> [n, m]
    if a[1] != b[0]:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    return [(a[0], b[1])]


@shape(aten.addmm)
def addmm_shape(bias: Shape, a: Shape, b: Shape, *rest, **kwargs) -> list[Shape]:
    (out,) = mm_shape(a, b)
    if broadcast(bias if isinstance(bias, tuple) else (), out) != out:
        raise RuntimeError("bias does not broadcast to the product")
    return [out]


@shape(aten.bmm)
def bmm_shape(a: Shape, b: Shape, **kwargs) -> list[Shape]:
    # a:[batch, n, k] @ b:[batch, k, m] -> [batch, n, m]
    if a[0] != b[0] or a[2] != b[1]:
        raise RuntimeError("batch1 and batch2 shapes cannot be multiplied")
    return [(a[0], a[1], b[2])]


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """H_out = floor((H_in + 2P - D(H_K - 1) - 1) / S) + 1 [000, 001]."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """As for convolution; `ceil_mode` rounds up, but no window may start in the right padding."""
    if not ceil_mode:
        return conv_output_size(size, kernel, stride, padding, dilation)
    out = -(-(size + 2 * padding - dilation * (kernel - 1) - 1) // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def transposed_conv_output_size(size, kernel, stride, padding, dilation, output_padding) -> int:
    """H_out = (H_in - 1) S - 2P + D (H_K - 1) + output_padding + 1."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def _checked(shape: Shape) -> list[Shape]:
    if any(size <= 0 for size in shape):
        raise RuntimeError(f"the input is too small: the output would be {_text(shape)}")
    return [shape]


def _text(shape: Shape) -> str:
    return "x".join(map(str, shape))


@shape(aten.convolution)
def conv_shape(x: Shape, w: Shape, bias, stride, padding, dilation, transposed, output_padding, groups) -> list[Shape]:
    # x:[n, c_in, *in] w:[c_out, c_in/g, *k] -> [n, c_out, *out]; transposed w:[c_in, c_out/g, *k]
    dims = len(w) - 2
    stride, padding, dilation = (_expand(v, dims) for v in (stride, padding, dilation))
    if len(x) != dims + 2:
        raise RuntimeError("unbatched or mismatched input")
    if transposed:
        if x[1] != w[0]:
            raise RuntimeError(
                f"the weight {_text(w)} of this transposed convolution expects {w[0]} input channels, got {x[1]}"
            )
        output_padding = _expand(output_padding, dims)
        spatial = tuple(map(transposed_conv_output_size, x[2:], w[2:], stride, padding, dilation, output_padding))
        return _checked((x[0], w[1] * groups, *spatial))
    if x[1] != w[1] * groups:
        raise RuntimeError(
            f"the weight {_text(w)} (groups={groups}) expects {w[1] * groups} input channels, got {x[1]}"
        )
    if w[0] % groups:
        raise RuntimeError(f"{w[0]} output channels do not divide into {groups} groups")
    spatial = tuple(map(conv_output_size, x[2:], w[2:], stride, padding, dilation))
    return _checked((x[0], w[0], *spatial))


def _pool_shape(x: Shape, dims: int, kernel_size, stride, padding, dilation, ceil_mode) -> Shape:
    # x:[(n,) c, *in] -> [(n,) c, *out]
    kernel = _expand(kernel_size, dims)
    stride = _expand(stride, dims) if stride else kernel
    padding, dilation = _expand(padding, dims), _expand(dilation, dims)
    if any(2 * p > k for p, k in zip(padding, kernel, strict=True)):
        raise RuntimeError("pad should be at most half of the kernel size")
    windows = zip(x[-dims:], kernel, stride, padding, dilation, strict=True)
    return _checked((*x[:-dims], *(pool_output_size(*window, ceil_mode) for window in windows)))[0]


def _max_pool_shape(dims: int):
    def max_pool_shape(x: Shape, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False) -> list:
        out = _pool_shape(x, dims, kernel_size, stride, padding, dilation, ceil_mode)
        return [out, (out, torch.int64)]  # values and their argmax indices

    return max_pool_shape


@shape(aten.avg_pool2d)
def avg_pool2d_shape(x: Shape, kernel_size, stride=(), padding=0, ceil_mode=False, *rest) -> list[Shape]:
    return [_pool_shape(x, 2, kernel_size, stride, padding, 1, ceil_mode)]


shape(aten.max_pool2d_with_indices)(_max_pool_shape(2))
shape(aten.max_pool3d_with_indices)(_max_pool_shape(3))
# avg_pool3d's kernel also refuses inputs smaller than the kernel: left to the meta kernel.


@shape(aten._adaptive_avg_pool2d, aten._adaptive_avg_pool3d)
def adaptive_pool_shape(x: Shape, output_size) -> list[Shape]:
    return _checked((*x[: len(x) - len(output_size)], *output_size))


@shape(aten.cat)
def cat_shape(tensors, dim=0) -> list[Shape]:
    shapes = [t for t in tensors if t != (0,)]  # legacy: 1-d empty tensors are skipped
    dim = dim % len(shapes[0])
    first = shapes[0]
    if any(len(s) != len(first) or s[:dim] + s[dim + 1 :] != first[:dim] + first[dim + 1 :] for s in shapes):
        raise RuntimeError("sizes of tensors must match except in the concatenation dimension")
    return [(*first[:dim], sum(s[dim] for s in shapes), *first[dim + 1 :])]


@shape(aten.mean, aten.sum)
def reduction_shape(x: Shape, dims=None, keepdim=False, *rest, **kwargs) -> list[Shape]:
    if rest or kwargs.get("dtype") is not None:
        raise RuntimeError("a dtype-changing reduction: leave it to the meta kernel")
    if not dims:  # reduce everything
        return [tuple(1 for _ in x) if keepdim else ()]
    reduced = {d % len(x) for d in dims}
    return [tuple(1 if i in reduced else size for i, size in enumerate(x) if keepdim or i not in reduced)]
