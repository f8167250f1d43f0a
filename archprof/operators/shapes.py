"""Output-shape formulas for the trace's fast path: the shapes an operator's outputs will
have, computed without running its meta kernel. Arguments as for cost formulas (tensors
replaced by their shapes); a formula returns one shape per output (or `(shape, dtype)`
where that output's dtype is not the input's, or None for an output the kernel leaves
out, as a norm's gradient leaves out the weight's where its mask says so) and raises
RuntimeError where the real kernel would refuse the call: the meta kernel then decides,
unless the formula raises Refused (it knows the real kernel refuses, whatever the meta
kernel would answer).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from archprof.graph import OpNode
from archprof.operators.costs import Shape, batch_norm_training, expand
from archprof.units import shape_text


class Refused(RuntimeError):
    """The real kernel refuses this call, even where the meta kernel would answer it."""


def same_shape(x: Shape, *args, **kwargs) -> list[Shape]:
    return [x]


def broadcast_shape(a, b, *args, **kwargs) -> list[Shape]:
    """NumPy broadcasting; a Python number counts as a 0-d tensor, first (`torch.sub(1.0, x)`) or second."""
    return [broadcast(a if isinstance(a, tuple) else (), b if isinstance(b, tuple) else ())]


def bounded_shape(x: Shape, *bounds, **named_bounds) -> list[Shape]:
    """clamp, clamp_min: the input's shape, broadcast with any bound that is a tensor
    (`torch.clamp(x[:, :1], min=x)` has the shape of x). A clamp without bounds is refused
    by the CPU's kernel (the meta kernel raises a ValueError of its own)."""
    shape = x
    bounded = False
    for bound in (*bounds, *named_bounds.values()):
        if bound is not None:
            bounded = True
            if isinstance(bound, tuple):
                shape = broadcast(shape, bound)
    if not bounded:
        raise Refused("torch.clamp: At least one of 'min' or 'max' must not be None")
    return [shape]


def broadcast(a: Shape, b: Shape) -> Shape:
    """NumPy broadcasting of two shapes (torch.broadcast_shapes imports the symbolic-shape
    machinery on first use: 0.4 s)."""
    if a == b:  # a residual sum, a gate of the same shape: most calls
        return a
    result = []
    for x, y in zip(reversed((1,) * (len(b) - len(a)) + a), reversed((1,) * (len(a) - len(b)) + b), strict=True):
        if x != y and 1 not in (x, y):
            raise RuntimeError(f"shapes {a} and {b} do not broadcast")
        result.append(y if x == 1 else x)
    return tuple(reversed(result))


def batch_norm_shape(x: Shape, weight, bias, running_mean, running_var, *rest, **kwargs) -> list[Shape]:
    # -> (out, save_mean, save_invstd): the saved statistics one value per channel in
    # training; empty in evaluation, as the CPU kernel returns them (the meta kernel's are
    # one value per channel either way)
    statistics = (x[1],) if batch_norm_training(rest, kwargs) else (0,)
    return [x, statistics, statistics]


def layer_norm_shape(x: Shape, normalized_shape, weight=None, bias=None, eps=None) -> list:
    # -> (out, mean, rstd): out contiguous whatever the input's layout; the statistics one
    # value per normalised slice, kept as size-1 dimensions, in the input's dtype, as a CPU
    # makes them where the weight and bias share it (the formula's one case: the meta kernel,
    # as CUDA, makes them float32 for a half input; with a float32 weight so does a CPU)
    normalized = tuple(normalized_shape)
    if not normalized or len(normalized) > len(x) or tuple(x[len(x) - len(normalized) :]) != normalized:
        raise RuntimeError(f"normalized_shape {list(normalized)} does not match the input's last dimensions")
    if any(p is not None and tuple(p) != normalized for p in (weight, bias)):
        raise RuntimeError(f"weight and bias must be of shape {list(normalized)}")
    stats = (*x[: len(x) - len(normalized)], *(1 for _ in normalized))
    return [x, stats, stats]


def softmax_shape(x: Shape, dim: int, half_to_float: bool | None = None, dtype=None) -> list[Shape]:
    """_softmax, _log_softmax (x, dim, half_to_float) and _safe_softmax (x, dim, dtype):
    a contiguous output of the input's shape; a dtype-changing call is left to the meta kernel."""
    if half_to_float or dtype is not None:  # True, or _safe_softmax's dtype given by position
        raise RuntimeError("a dtype-changing softmax: leave it to the meta kernel")
    if not -max(len(x), 1) <= dim < max(len(x), 1):
        raise RuntimeError(f"dimension {dim} out of range for a {len(x)}-d input")
    return [x]


def batch_norm_backward_shape(grad: Shape, x: Shape, *args) -> list[Shape | None]:
    # -> (grad_input, grad_weight, grad_bias), each where the output mask asks for it, as the
    # CPU kernel makes them (the meta kernel, PyTorch's decomposition, makes the input's
    # whatever the mask says), the parameters' one value per channel (args: weight, 4
    # statistics, train, eps, output_mask)
    mask = args[-1]
    if grad != x or len(x) < 2:
        raise RuntimeError("the gradient and the input of a batch norm differ in shape")
    return [x if mask[0] else None, (x[1],) if mask[1] else None, (x[1],) if mask[2] else None]


def layer_norm_backward_shape(grad: Shape, x: Shape, normalized, mean, rstd, weight, bias, mask) -> list:
    # -> (grad_input, grad_weight, grad_bias), each where the mask asks for it; a parameter's
    # only where the layer has that parameter
    normalized = tuple(normalized)
    if grad != x or len(normalized) > len(x) or tuple(x[len(x) - len(normalized) :]) != normalized:
        raise RuntimeError("the gradient, input and normalized shape of a layer norm do not agree")
    return [
        x if mask[0] else None,
        normalized if mask[1] and weight is not None else None,
        normalized if mask[2] and bias is not None else None,
    ]


def group_norm_backward_shape(grad: Shape, x: Shape, mean, rstd, weight, n, c, hxw, group, mask) -> list:
    # -> (grad_input, grad_weight, grad_bias), each where the mask asks for it, the
    # parameters' one value per channel (with or without a weight)
    if grad != x or len(x) < 2 or x[1] != c:
        raise RuntimeError("the gradient and the input of a group norm differ in shape")
    return [x if mask[0] else None, (c,) if mask[1] else None, (c,) if mask[2] else None]


def softmax_backward_shape(grad: Shape, output: Shape, dim: int, input_dtype) -> list:
    # -> the gradient of the softmax's input, in the dtype of that input
    if grad != output or not -max(len(output), 1) <= dim < max(len(output), 1):
        raise RuntimeError("the gradient and the output of a softmax differ in shape")
    return [(output, input_dtype)]


def scattered_gradient_shape(grad: Shape, input_sizes, dim: int, *args) -> list[Shape]:
    # select_backward / slice_backward: the gradient written into zeros of the input's sizes
    sizes = tuple(input_sizes)
    if len(sizes) not in (len(grad), len(grad) + 1) or not -len(sizes) <= dim < len(sizes):
        raise RuntimeError(f"a gradient of shape {grad} does not come from an input of sizes {list(sizes)}")
    return [sizes]


def mm_shape(a: Shape, b: Shape, **kwargs) -> list[Shape]:
    # a:[n, k] @ b:[k, m] -> [n, m]
    if len(a) != 2 or len(b) != 2:
        raise RuntimeError(f"mat1 and mat2 must be matrices, got {shape_text(a)} and {shape_text(b)}")
    if a[1] != b[0]:
        raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({shape_text(a)} and {shape_text(b)})")
    return [(a[0], b[1])]


def addmm_shape(bias: Shape, a: Shape, b: Shape, *rest, **kwargs) -> list[Shape]:
    (out,) = mm_shape(a, b)
    if broadcast(bias if isinstance(bias, tuple) else (), out) != out:
        raise RuntimeError("bias does not broadcast to the product")
    return [out]


def bmm_shape(a: Shape, b: Shape, **kwargs) -> list[Shape]:
    # a:[batch, n, k] @ b:[batch, k, m] -> [batch, n, m]
    if len(a) != 3 or len(b) != 3:
        raise RuntimeError(f"batch1 and batch2 must be 3D tensors, got {shape_text(a)} and {shape_text(b)}")
    if a[0] != b[0] or a[2] != b[1]:
        raise RuntimeError(f"batch1 and batch2 shapes cannot be multiplied ({shape_text(a)} and {shape_text(b)})")
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
    for size in shape:  # a loop, not any(): every convolution and pooling of a trace comes here
        if size <= 0:
            raise RuntimeError(f"the input is too small: the output would be {shape_text(shape)}")
    return [shape]


def conv_shape(x: Shape, w: Shape, bias, stride, padding, dilation, transposed, output_padding, groups) -> list[Shape]:
    # x:[n, c_in, *in] w:[c_out, c_in/g, *k] -> [n, c_out, *out]; transposed w:[c_in, c_out/g, *k]
    dims = len(w) - 2
    stride, padding, dilation = expand(stride, dims), expand(padding, dims), expand(dilation, dims)
    if len(x) != dims + 2:
        raise RuntimeError("unbatched or mismatched input")
    if transposed:
        if x[1] != w[0]:
            raise RuntimeError(
                f"the weight {shape_text(w)} of this transposed convolution expects {w[0]} input channels, got {x[1]}"
            )
        output_padding = expand(output_padding, dims)
        if w[0] % groups:
            raise Refused(f"{w[0]} input channels do not divide into {groups} groups")
        if any(p >= s and p >= d for p, s, d in zip(output_padding, stride, dilation, strict=True)):
            raise Refused(f"output padding {list(output_padding)} must be smaller than the stride or the dilation")
        spatial = tuple(map(transposed_conv_output_size, x[2:], w[2:], stride, padding, dilation, output_padding))
        out = (x[0], w[1] * groups, *spatial)
        if min(spatial) > 0:
            return _checked(out)
        if min(spatial) < 0 or _cpu_refuses_transposed(x, w, stride, padding, dilation, output_padding, groups):
            raise Refused(f"the input is too small: the output would be {shape_text(out)}")
        return [out]
    if x[1] != w[1] * groups:
        raise RuntimeError(
            f"the weight {shape_text(w)} (groups={groups}) expects {w[1] * groups} input channels, got {x[1]}"
        )
    if w[0] % groups:
        raise RuntimeError(f"{w[0]} output channels do not divide into {groups} groups")
    spatial = tuple(map(conv_output_size, x[2:], w[2:], stride, padding, dilation))
    return _checked((x[0], w[0], *spatial))


def _cpu_refuses_transposed(x: Shape, w: Shape, stride, padding, dilation, output_padding, groups) -> bool:
    """Whether PyTorch's CPU kernel refuses a transposed convolution with an empty output.

    Its oneDNN kernel returns the empty output, its reference kernel refuses it, and which of
    the two runs depends on the sizes, groups, dtype and thread count; so the kernel itself
    is asked, on uninitialised float32 tensors (an empty output computes nothing)."""
    try:
        torch.ops.aten.convolution(
            torch.empty(x), torch.empty(w), None, stride, padding, dilation, True, output_padding, groups
        )
    except RuntimeError:
        return True
    return False


class PoolWindow(NamedTuple):
    """A max or average pooling's window, one entry per spatial dimension."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    ceil_mode: bool


def pool_window(op: OpNode) -> PoolWindow:
    """The window of a recorded max or average pooling (aten.max_pool2d_with_indices,
    avg_pool3d, ...), read as the kernel reads its arguments: the stride the kernel's where
    none is given, an average pooling's dilation 1 (it takes none)."""
    maximum = op.op.startswith("aten.max")
    return _pool_window(
        3 if "3d" in op.op else 2,
        op.argument(1, "kernel_size"),
        op.argument(2, "stride", ()),
        op.argument(3, "padding", 0),
        op.argument(4, "dilation", 1) if maximum else 1,
        bool(op.argument(5 if maximum else 4, "ceil_mode", False)),
    )


def _pool_window(dims: int, kernel_size, stride, padding, dilation, ceil_mode) -> PoolWindow:
    kernel = expand(kernel_size, dims)
    stride = expand(stride, dims) if stride else kernel
    return PoolWindow(kernel, stride, expand(padding, dims), expand(dilation, dims), bool(ceil_mode))


def _pool_shape(x: Shape, dims: int, kernel_size, stride, padding, dilation, ceil_mode) -> Shape:
    # x:[(n,) c, *in] -> [(n,) c, *out]
    if len(x) != dims + 1 and len(x) != dims + 2:
        raise RuntimeError(f"{dims + 1}D or {dims + 2}D (batch mode) tensor expected for input, got {shape_text(x)}")
    kernel, stride, padding, dilation, _ = _pool_window(dims, kernel_size, stride, padding, dilation, ceil_mode)
    if len(kernel) != dims or len(stride) != dims or len(padding) != dims or len(dilation) != dims:
        raise RuntimeError(f"kernel_size, stride, padding and dilation must each be a single int or {dims} ints")
    for k, s, p, d in zip(kernel, stride, padding, dilation, strict=True):  # a loop, not any(): every pooling
        if k <= 0 or s <= 0 or d <= 0:
            raise RuntimeError(f"kernel size, stride and dilation should be greater than zero, got {k}, {s}, {d}")
        if p < 0 or 2 * p > k:
            raise RuntimeError("pad should be non-negative and at most half of the kernel size")
    windows = zip(x[-dims:], kernel, stride, padding, dilation, strict=True)
    return _checked((*x[:-dims], *(pool_output_size(*window, ceil_mode) for window in windows)))[0]


def max_pool_shape(dims: int):
    """The shape formula of a `dims`-d max-pool: values and their argmax indices."""

    def values_and_indices(x: Shape, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False) -> list:
        out = _pool_shape(x, dims, kernel_size, stride, padding, dilation, ceil_mode)
        return [out, (out, torch.int64)]

    return values_and_indices


def avg_pool2d_shape(x: Shape, kernel_size, stride=(), padding=0, ceil_mode=False, *rest) -> list[Shape]:
    # rest: (count_include_pad, divisor_override)
    if len(rest) > 1 and rest[1] == 0:
        raise RuntimeError("divisor must be not zero")
    return [_pool_shape(x, 2, kernel_size, stride, padding, 1, ceil_mode)]


def adaptive_pool_shape(dims: int):
    """_adaptive_avg_pool2d / 3d(x, output_size): x:[(n,) c, *in] -> [(n,) c, *output_size],
    with the CPU's checks (AdaptiveAveragePooling.cpp, AdaptiveAveragePooling3d.cpp): one output
    size per pooled dimension; no pooled dimension of size 0, nor, in 3-d, the channels of a
    batched input (the meta kernel answers both)."""

    def shape(x: Shape, output_size) -> list[Shape]:
        if len(output_size) != dims:
            raise Refused(f"adaptive_avg_pool{dims}d: output_size must be {dims}")
        if len(x) != dims + 1 and len(x) != dims + 2:
            raise RuntimeError(
                f"adaptive_avg_pool{dims}d(): Expected {dims + 1}D or {dims + 2}D tensor, got {shape_text(x)}"
            )
        checked = x[-dims:] if dims == 2 else x[1:]
        if 0 in checked:
            raise Refused(
                f"adaptive_avg_pool{dims}d(): Expected input to have non-zero size for non-batch dimensions,"
                f" got {shape_text(x)}"
            )
        return _checked((*x[: len(x) - dims], *output_size))

    return shape


def resampled_shape(dims: int):
    """upsample_*.default(input, output_size, ...): the last `dims` dimensions become output_size."""

    def shape(x: Shape, output_size, *rest, **kwargs) -> list[Shape]:
        if output_size is None or len(output_size) != dims or len(x) != dims + 2:
            raise RuntimeError("an output size for each resampled dimension")
        return _checked((*x[:2], *output_size))

    return shape


def im2col_shape(x: Shape, kernel_size, dilation, padding, stride) -> list[Shape]:
    """F.unfold: ([N,] C, H, W) -> ([N,] C K_h K_w, L), L the windows, as many as a
    convolution's outputs. Arguments off that pattern (sizes not two each, a kernel, dilation
    or stride under 1, a negative padding, an empty input) are the meta kernel's to decide,
    and so are the windows whose meta answer is a strided view, not a contiguous copy."""
    sizes = (kernel_size, dilation, padding, stride)
    if len(x) not in (3, 4) or 0 in x or not all(isinstance(s, (list, tuple)) and len(s) == 2 for s in sizes):
        raise RuntimeError(f"im2col of {shape_text(x)}")
    if min(padding) < 0 or min(*kernel_size, *dilation, *stride) < 1:
        raise RuntimeError(f"im2col of {shape_text(x)}")
    rows, columns = (
        conv_output_size(x[axis - 2], kernel_size[axis], stride[axis], padding[axis], dilation[axis])
        for axis in range(2)
    )
    if rows < 1 or columns < 1:
        raise RuntimeError(
            f"im2col of {shape_text(x)} with kernel_size={list(kernel_size)}: the array of sliding blocks"
            f" would be {rows}x{columns}, but its components must be at least one"
        )
    # The meta kernel gathers (N, C, K_h, rows, K_w, columns), permutes it to (N, C, K_h,
    # K_w, rows, columns) and reshapes that: a copy, contiguous, only where neither pair of
    # dimensions merges into a view (a CPU's kernel writes it contiguous always).
    if not (kernel_size[1] > 1 and rows > 1 and (columns > 1 or kernel_size[0] > 1)):
        raise RuntimeError(f"im2col of {shape_text(x)}: the meta kernel's answer may be a view")
    return [(*x[:-3], x[-3] * kernel_size[0] * kernel_size[1], rows * columns)]


def group_norm_shape(x: Shape, weight, bias, n: int, c: int, hxw: int, group: int, eps=None) -> list:
    # -> (out, mean, rstd), the statistics one value per sample and group, in the input's
    # dtype (the CPU and meta kernels alike, half types included)
    if group <= 0:  # the meta kernel divides by it (a ZeroDivisionError); the CPU's refuses it
        raise Refused(f"Expected num groups to be greater than 0, got {group}")
    if len(x) < 2 or x[0] != n or x[1] != c or c % group:
        raise RuntimeError(f"group norm of {shape_text(x)} in {group} groups")
    numel = 1
    for size in x:
        numel *= size
    if numel != n * c * hxw:
        raise RuntimeError(f"group norm of {shape_text(x)}: Expected X.numel() == N * C * HxW ({n} * {c} * {hxw})")
    if weight is not None and weight != (c,):
        raise RuntimeError(f"Expected weight to be a vector of size {c}, the input's channels, got {weight}")
    if bias is not None and bias != (c,):
        raise RuntimeError(f"Expected bias to be a vector of size {c}, the input's channels, got {bias}")
    return [x, (n, group), (n, group)]


def pixel_shuffle_shape(x: Shape, factor: int) -> list[Shape]:
    """(..., C, H, W) -> (..., C / r^2, H r, W r)."""
    if len(x) < 3 or factor <= 0 or x[-3] % (factor * factor):
        raise RuntimeError(f"pixel shuffle of {shape_text(x)} by {factor}")
    return [(*x[:-3], x[-3] // (factor * factor), x[-2] * factor, x[-1] * factor)]


def pixel_unshuffle_shape(x: Shape, factor: int) -> list[Shape]:
    """(..., C, H, W) -> (..., C r^2, H / r, W / r)."""
    if len(x) < 3 or factor <= 0 or x[-2] % factor or x[-1] % factor:
        raise RuntimeError(f"pixel unshuffle of {shape_text(x)} by {factor}")
    return [(*x[:-3], x[-3] * factor * factor, x[-2] // factor, x[-1] // factor)]


def channel_shuffle_shape(x: Shape, groups: int) -> list[Shape]:
    """(N, C, *) -> the same shape, its channels in `groups` groups interleaved."""
    if len(x) <= 2:
        raise RuntimeError(f"channel_shuffle expects input with > 2 dims, but got input with sizes {list(x)}")
    if groups <= 0:
        raise RuntimeError(f"Number of groups to divide channels in must be positive. Value of groups:{groups}")
    if x[1] % groups:
        raise RuntimeError(f"Number of channels must be divisible by groups. Got {x[1]} channels and {groups} groups.")
    return [x]


def rolled_shape(x: Shape, shifts, dims=()) -> list[Shape]:
    """roll along `dims`; without dims, the CPU rolls a flattened copy (contiguous whatever
    the input's layout): left to the meta kernel, which answers so."""
    if not dims:
        raise RuntimeError("a roll of the flattened tensor")
    if len(shifts) != len(dims):
        raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, dims: {len(dims)}")
    for dim in dims:
        _wrapped_dim(dim, len(x))
    return [x]


def padded_shape(dims: int, reflect: bool):
    """reflection_padNd / replication_padNd(input, padding): the last `dims` dimensions grow by
    their pads, (left, right) of the last first; a reflection pad shorter than its dimension."""

    def shape(x: Shape, padding) -> list[Shape]:
        if len(padding) != 2 * dims or len(x) not in (dims + 1, dims + 2):
            raise RuntimeError(f"padding {list(padding)} of {shape_text(x)}")
        sizes = list(x)
        for d in range(dims):
            before, after = padding[2 * d], padding[2 * d + 1]
            size = x[-1 - d]
            if before < 0 or after < 0 or (reflect and max(before, after) >= size) or size == 0:
                raise RuntimeError(f"padding {list(padding)} of {shape_text(x)}")
            sizes[-1 - d] = size + before + after
        return [tuple(sizes)]

    return shape


def cat_shape(tensors, dim=0) -> list[Shape]:
    # `in` and a loop, not comprehensions and generators: a DenseNet's concatenations join ten maps each.
    shapes = tensors
    if (0,) in shapes:  # legacy: 1-d empty tensors are skipped
        shapes = [t for t in tensors if t != (0,)]
    if not shapes:  # all of them: an empty result, whatever the dimension
        return [(0,)]
    if () in shapes:  # the CPU's kernel refuses it; the meta kernel raises an IndexError of its own
        raise Refused(f"zero-dimensional tensor (at position {list(tensors).index(())}) cannot be concatenated")
    first = shapes[0]
    rank = len(first)
    dim = _wrapped_dim(dim, rank)
    before, after = first[:dim], first[dim + 1 :]
    joined = 0
    for s in shapes:
        if len(s) != rank or s[:dim] != before or s[dim + 1 :] != after:
            raise RuntimeError("sizes of tensors must match except in the concatenation dimension")
        joined += s[dim]
    return [(*before, joined, *after)]


def reduction_shape(x: Shape, dims=None, keepdim=False, *rest, **kwargs) -> list[Shape]:
    if rest or kwargs.get("dtype") is not None:
        raise RuntimeError("a dtype-changing reduction: leave it to the meta kernel")
    if not dims:  # reduce everything
        return [tuple(1 for _ in x) if keepdim else ()]
    bound = len(x) or 1  # a 0-dim tensor takes dimension 0 or -1
    reduced = set()
    for dim in dims:  # a loop, not a set comprehension and a count: every reduction comes here
        d = _wrapped_dim(dim, bound)
        if d in reduced:
            raise RuntimeError(f"dim {d} appears multiple times in the list of dims")
        reduced.add(d)
    return [tuple(1 if i in reduced else size for i, size in enumerate(x) if keepdim or i not in reduced)]


def _wrapped_dim(dim: int, rank: int) -> int:
    """`dim` of a tensor of `rank` dimensions counted from 0 (a negative one from the end), as
    ATen's maybe_wrap_dim; refused out of range, in PyTorch's words."""
    if not -rank <= dim < rank:
        raise RuntimeError(f"Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but got {dim})")
    return dim % rank
