"""Output-shape formulas for the trace's fast path: the shapes an operator's outputs will
have, computed without running its meta kernel. Arguments as for cost formulas (tensors
replaced by their shapes); a formula returns one shape per output (or `(shape, dtype)`
where that output's dtype is not the input's) and raises RuntimeError where the real
kernel would refuse the call.
"""

from __future__ import annotations

import torch

from archprof.operators.costs import Shape, expand
from archprof.units import shape_text


def same_shape(x: Shape, *args, **kwargs) -> list[Shape]:
    return [x]


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


def batch_norm_shape(x: Shape, *args, **kwargs) -> list[Shape]:
    # -> (out, save_mean, save_invstd), the saved statistics one value per channel
    return [x, (x[1],), (x[1],)]


def mm_shape(a: Shape, b: Shape, **kwargs) -> list[Shape]:
    # a:[n, k] @ b:[k, m] -> [n, m]
    if a[1] != b[0]:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    return [(a[0], b[1])]


def addmm_shape(bias: Shape, a: Shape, b: Shape, *rest, **kwargs) -> list[Shape]:
    (out,) = mm_shape(a, b)
    if broadcast(bias if isinstance(bias, tuple) else (), out) != out:
        raise RuntimeError("bias does not broadcast to the product")
    return [out]


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
        raise RuntimeError(f"the input is too small: the output would be {shape_text(shape)}")
    return [shape]


def conv_shape(x: Shape, w: Shape, bias, stride, padding, dilation, transposed, output_padding, groups) -> list[Shape]:
    # x:[n, c_in, *in] w:[c_out, c_in/g, *k] -> [n, c_out, *out]; transposed w:[c_in, c_out/g, *k]
    dims = len(w) - 2
    stride, padding, dilation = (expand(v, dims) for v in (stride, padding, dilation))
    if len(x) != dims + 2:
        raise RuntimeError("unbatched or mismatched input")
    if transposed:
        if x[1] != w[0]:
            raise RuntimeError(
                f"the weight {shape_text(w)} of this transposed convolution expects {w[0]} input channels, got {x[1]}"
            )
        output_padding = expand(output_padding, dims)
        spatial = tuple(map(transposed_conv_output_size, x[2:], w[2:], stride, padding, dilation, output_padding))
        return _checked((x[0], w[1] * groups, *spatial))
    if x[1] != w[1] * groups:
        raise RuntimeError(
            f"the weight {shape_text(w)} (groups={groups}) expects {w[1] * groups} input channels, got {x[1]}"
        )
    if w[0] % groups:
        raise RuntimeError(f"{w[0]} output channels do not divide into {groups} groups")
    spatial = tuple(map(conv_output_size, x[2:], w[2:], stride, padding, dilation))
    return _checked((x[0], w[0], *spatial))


def _pool_shape(x: Shape, dims: int, kernel_size, stride, padding, dilation, ceil_mode) -> Shape:
    # x:[(n,) c, *in] -> [(n,) c, *out]
    kernel = expand(kernel_size, dims)
    stride = expand(stride, dims) if stride else kernel
    padding, dilation = expand(padding, dims), expand(dilation, dims)
    if any(2 * p > k for p, k in zip(padding, kernel, strict=True)):
        raise RuntimeError("pad should be at most half of the kernel size")
    windows = zip(x[-dims:], kernel, stride, padding, dilation, strict=True)
    return _checked((*x[:-dims], *(pool_output_size(*window, ceil_mode) for window in windows)))[0]


def max_pool_shape(dims: int):
    """The shape formula of a `dims`-d max-pool: values and their argmax indices."""

    def values_and_indices(x: Shape, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False) -> list:
        out = _pool_shape(x, dims, kernel_size, stride, padding, dilation, ceil_mode)
        return [out, (out, torch.int64)]

    return values_and_indices


def avg_pool2d_shape(x: Shape, kernel_size, stride=(), padding=0, ceil_mode=False, *rest) -> list[Shape]:
    return [_pool_shape(x, 2, kernel_size, stride, padding, 1, ceil_mode)]


def adaptive_pool_shape(x: Shape, output_size) -> list[Shape]:
    return _checked((*x[: len(x) - len(output_size)], *output_size))


def cat_shape(tensors, dim=0) -> list[Shape]:
    shapes = [t for t in tensors if t != (0,)]  # legacy: 1-d empty tensors are skipped
    dim = dim % len(shapes[0])
    first = shapes[0]
    if any(len(s) != len(first) or s[:dim] + s[dim + 1 :] != first[:dim] + first[dim + 1 :] for s in shapes):
        raise RuntimeError("sizes of tensors must match except in the concatenation dimension")
    return [(*first[:dim], sum(s[dim] for s in shapes), *first[dim + 1 :])]


def reduction_shape(x: Shape, dims=None, keepdim=False, *rest, **kwargs) -> list[Shape]:
    if rest or kwargs.get("dtype") is not None:
        raise RuntimeError("a dtype-changing reduction: leave it to the meta kernel")
    if not dims:  # reduce everything
        return [tuple(1 for _ in x) if keepdim else ()]
    reduced = {d % len(x) for d in dims}
    return [tuple(1 if i in reduced else size for i, size in enumerate(x) if keepdim or i not in reduced)]
