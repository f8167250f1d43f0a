"""Cost formulas: MACs and elementwise FLOPs of one operator call, integer math on shapes
written as in docs/formulas.md.

A formula receives the operator's arguments with every tensor replaced by its shape tuple,
and the shape of the operator's first output as `out`.

Conventions (documented in README.md):
- One MAC is one multiply-accumulate; `flops = 2 * macs`. Bias additions of convolution
  and linear layers are not counted (as in docs/formulas.md's worked examples and in PyTorch's
  FlopCounterMode).
- Elementwise work is not a MAC; it is counted in `elementwise_flops`:
  - pointwise operators (activations, arithmetic, comparisons, pow, trigonometry): one FLOP
    per output element;
  - softmax: 3 per element (exponential, sum, division);
  - BatchNorm at inference: 2 per element (scale and shift); a normalisation that computes
    its statistics: 5 per element (mean 1, variance 2, normalise and affine 2);
  - pooling: `K - 1` comparisons per output of a max-pool window of `K` elements, `K` per
    output of an average-pool window (`K - 1` additions and one division);
  - reductions: a mean or a sum one FLOP per input element; a maximum or minimum one
    comparison per input element beyond the first of each output; a variance 3 per input
    element (mean 1, centre and square 2), a standard deviation that and a square root per
    output; a vector norm 2 per input element (power and accumulate) and a root per output;
  - interpolation: a weighted sum of `T` taps, `2T - 1` per output (T multiplies, T - 1
    additions): linear 3, bilinear 7 (4 multiplies + 3 adds), trilinear 15, bicubic 31;
    with antialias, T is the product of the filter's windows along H and W, which
    downsampling widens (`antialiased_windows`); nearest-neighbour resampling copies (free).
- Data movement (views, copies, concatenation, indexing, padding) and creation cost nothing.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from math import prod

import torch

from archprof.graph import value_record

Shape = tuple[int, ...]


@value_record
class Cost:
    macs: int = 0
    elementwise_flops: int = 0


FREE = Cost()


def free(*args, out: Shape, **kwargs) -> Cost:
    """Data movement and creation: no arithmetic."""
    return FREE


def per_output_element(flops_per_element: int) -> Callable[..., Cost]:
    def per_element(*args, out: Shape, **kwargs) -> Cost:
        return Cost(elementwise_flops=flops_per_element * prod(out))

    per_element.__doc__ = f"{flops_per_element} FLOP(s) per output element."
    per_element.output_shape_only = True  # `Operator.output_shape_only`: its arguments' shapes go unmade
    return per_element


pointwise_cost = per_output_element(1)
softmax_cost = per_output_element(3)


# --- Convolution and matrix products: MACs ------------------------------------------------


def conv_cost(x: Shape, w: Shape, bias, stride, padding, dilation, transposed, *rest, out: Shape) -> Cost:
    """MACs = C_out * H_out * W_out * (C_in / G) * H_K * W_K per sample [000]."""
    # x:[n, c_in, *in]  w:[c_out, c_in/g, *k] -> out:[n, c_out, *out]
    # transposed w:[c_in, c_out/g, *k]: every input element meets (c_out/g) * k weights;
    # an empty output (torch's oneDNN kernel allows one) computes nothing
    if transposed:
        return Cost(macs=prod(x) * prod(w[1:]) if prod(out) else 0)
    return Cost(macs=prod(out) * prod(w[1:]))


def mm_cost(a: Shape, b: Shape, *, out: Shape) -> Cost:
    """MACs = n * k * m for [n, k] @ [k, m]."""
    return Cost(macs=a[0] * a[1] * b[1])


def addmm_cost(bias: Shape, a: Shape, b: Shape, *rest, out: Shape, **kwargs) -> Cost:
    """Linear `in -> out`: MACs = in * out per sample; the bias add is not counted."""
    return mm_cost(a, b, out=out)


def addmm_activation_cost(bias: Shape, a: Shape, b: Shape, *rest, out: Shape, **kwargs) -> Cost:
    """A linear layer fused with its activation: the product's MACs, one FLOP per output."""
    return Cost(macs=mm_cost(a, b, out=out).macs, elementwise_flops=prod(out))


def bmm_cost(a: Shape, b: Shape, *, out: Shape) -> Cost:
    """MACs = batch * n * k * m for [batch, n, k] @ [batch, k, m]."""
    return Cost(macs=a[0] * a[1] * a[2] * b[2])


def baddbmm_cost(bias: Shape, a: Shape, b: Shape, *rest, out: Shape, **kwargs) -> Cost:
    """baddbmm, and addbmm, which sums the batch's products too: batch * n * k * m MACs."""
    return bmm_cost(a, b, out=out)


def addr_cost(bias: Shape, u: Shape, v: Shape, *rest, out: Shape, **kwargs) -> Cost:
    """`self + outer(u, v)`: an outer product sums nothing (torch.outer is a broadcast
    multiply, pointwise), so a multiply and an add per output element, elementwise."""
    return Cost(elementwise_flops=2 * prod(out))


def mv_cost(a: Shape, v: Shape, *, out: Shape) -> Cost:
    """MACs = n * k for [n, k] @ [k]."""
    return Cost(macs=a[0] * a[1])


def addmv_cost(bias: Shape, a: Shape, v: Shape, *rest, out: Shape, **kwargs) -> Cost:
    return mv_cost(a, v, out=out)


def quantized_conv_cost(x: Shape, packed, *args, out: Shape, **kwargs) -> Cost:
    """A quantized convolution (torch.ao): as `conv_cost`, its weight's shape unpacked."""
    weight = tuple(packed.unpack()[0].shape)
    return Cost(macs=prod(out) * prod(weight[1:]))


def quantized_linear_cost(x: Shape, packed, *args, out: Shape, **kwargs) -> Cost:
    """A quantized linear layer (torch.ao, static or dynamic): in * out MACs per row."""
    out_features, in_features = packed.unpack()[0].shape
    return Cost(macs=prod(x[:-1]) * in_features * out_features)


def conv_tbc_cost(x: Shape, w: Shape, bias, pad: int = 0, *, out: Shape) -> Cost:
    """`conv_tbc`, a 1-d convolution over time of a [T, B, C_in] input with a [K, C_in, C_out]
    weight: C_in * K MACs per output element, as `conv_cost`."""
    return Cost(macs=prod(out) * w[0] * w[1])


def dot_cost(a: Shape, b: Shape, *, out: Shape) -> Cost:
    """MACs = n for [n] . [n]."""
    return Cost(macs=a[0])


def trilinear_cost(i1: Shape, i2: Shape, i3: Shape, expand1, expand2, expand3, sumdim, *rest, out: Shape) -> Cost:
    """sum over `sumdim` of i1 * i2 * i3 (nn.Bilinear): one MAC and one more multiply per
    term, a term per element of the three inputs broadcast together."""
    # each input is unsqueezed at its `expand` dims, then the three broadcast
    inputs = (_unsqueezed(i1, expand1), _unsqueezed(i2, expand2), _unsqueezed(i3, expand3))
    terms = prod(max(sizes) for sizes in zip(*inputs, strict=True))
    return Cost(macs=terms, elementwise_flops=terms)


def _unsqueezed(shape: Shape, dims) -> list[int]:
    sizes = list(shape)
    for dim in sorted(dims):
        sizes.insert(dim, 1)
    return sizes


# --- Normalisation ------------------------------------------------------------------------


def batch_norm_cost(x: Shape, weight, bias, running_mean, running_var, *rest, out: Shape, **kwargs) -> Cost:
    """Inference: a fixed per-channel affine map, 2 FLOPs per element; training computes
    the batch statistics too, 5 per element."""
    training = batch_norm_training(rest, kwargs)
    return Cost(elementwise_flops=(5 if training else 2) * prod(x))


def batch_norm_training(rest: tuple, kwargs: dict) -> bool:
    if "training" in kwargs:
        return bool(kwargs["training"])
    # native_batch_norm(..., training, momentum, eps); the *_no_training variant has
    # (momentum, eps) only, the *_legit variant without running stats has no flag at all.
    return bool(rest[0]) if len(rest) == 3 else len(rest) != 2


batch_norm_inference_cost = per_output_element(2)


def norm_with_statistics_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """Layer / group / instance norm compute their statistics: 5 FLOPs per element."""
    return Cost(elementwise_flops=5 * prod(x))


# --- Reductions ---------------------------------------------------------------------------


def fold_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """col2im (F.fold): every element of every window is added into the map, one FLOP per
    input element (its N x C*K x L columns)."""
    return Cost(elementwise_flops=prod(x))


def reduction_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """A mean is a window of all reduced elements: one FLOP per input element."""
    return Cost(elementwise_flops=prod(x))


def extremum_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """max / min / argmax over a window of K elements: K - 1 comparisons per output; the
    binary form max(a, b) is pointwise, one per output element."""
    if args and isinstance(args[0], tuple):  # max(a, b)
        return pointwise_cost(out=out)
    return Cost(elementwise_flops=prod(x) - prod(out))


def minimum_and_maximum_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """aminmax: a minimum and a maximum, each K - 1 comparisons per output over K elements."""
    return Cost(elementwise_flops=2 * (prod(x) - prod(out)))


def variance_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """Mean 1 + centre and square 2 per input element."""
    return Cost(elementwise_flops=3 * prod(x))


def standard_deviation_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """The variance, then a square root per output."""
    return Cost(elementwise_flops=3 * prod(x) + prod(out))


def vector_norm_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """|x|^p and accumulate, 2 per input element; the p-th root, 1 per output."""
    return Cost(elementwise_flops=2 * prod(x) + prod(out))


def weight_norm_cost(v: Shape, g: Shape, *args, out: Shape, **kwargs) -> Cost:
    """w = v * (g / |v|), |v| per slice along `dim` (nn.utils.weight_norm): the norm 2 per
    element of v and a root per slice, a division per slice and a multiply per element."""
    return Cost(elementwise_flops=3 * prod(v) + 2 * prod(g))


def weight_norm_backward_cost(grad_w: Shape, v: Shape, g: Shape, *args, out: Shape, **kwargs) -> Cost:
    """The gradients of g and v, per slice as ATen's CPU kernel computes them: s = sum(grad_w
    * v), grad_g = s / |v|, a = g / |v|, b = a * grad_g / |v|, grad_v = a * grad_w - b * v: 5
    per element of v (the sum's product and add, two products and a difference), 4 per slice."""
    return Cost(elementwise_flops=5 * prod(v) + 4 * prod(g))


def logsumexp_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """exp and accumulate, 2 per input element; the log, 1 per output."""
    return Cost(elementwise_flops=2 * prod(x) + prod(out))


def embedding_bag_cost(
    weight: Shape,
    indices: Shape,
    offsets,
    scale_grad_by_freq=False,
    mode=0,
    sparse=False,
    per_sample_weights=None,
    *args,
    out: Shape,
    **kwargs,
) -> Cost:
    """nn.EmbeddingBag: each bag reduces the rows its indices look up, a sum or a mean (mode 0,
    1) one FLOP per element looked up, a maximum (mode 2) one comparison per element beyond
    each bag's first; weights per index (sum only) multiply each element, 1 more."""
    looked_up = prod(indices) * weight[-1]
    reduced = looked_up - prod(out) if mode == 2 else looked_up
    return Cost(elementwise_flops=reduced + (looked_up if per_sample_weights is not None else 0))


def embedding_bag_backward_cost(
    grad: Shape,
    indices: Shape,
    offsets,
    offset2bag,
    bag_size,
    maximum_indices,
    num_weights: int,
    scale_grad_by_freq: bool,
    mode: int,
    *args,
    out: Shape,
    **kwargs,
) -> Cost:
    """nn.EmbeddingBag's weight gradient: a sum's (mode 0) bag gradient added into the row of
    each index, 1 per element looked up; a mean's (1) divided by the bag's size too, 1 more;
    weights per index (sum only) multiply, 1 more; a maximum's (2) each element of the bags'
    gradient added into the row its maximum came from, 1; with `scale_grad_by_freq`, each
    divided by its row's count of lookups, 1 more per element."""
    per_sample_weights = args[1] if len(args) > 1 else kwargs.get("per_sample_weights")
    if mode == 2:
        return Cost(elementwise_flops=(1 + scale_grad_by_freq) * prod(grad))
    per_element = 1 + (mode == 1) + (per_sample_weights is not None) + scale_grad_by_freq
    return Cost(elementwise_flops=per_element * prod(indices) * grad[-1])


def embedding_bag_weights_backward_cost(
    grad: Shape, weight: Shape, indices: Shape, *args, out: Shape, **kwargs
) -> Cost:
    """The gradient of nn.EmbeddingBag's weights per index: the dot product of the row it
    looked up with its bag's gradient, D MACs per index (as `dot`)."""
    return Cost(macs=prod(indices) * weight[-1])


def cdist_cost(x1: Shape, x2: Shape, *args, out: Shape, **kwargs) -> Cost:
    """3 FLOPs per term of each distance's sum and 1 per distance: torch.cdist pair by pair,
    per term a difference (1) and the p-norm's power and accumulation (2), then its root."""
    distances = prod(out)
    return Cost(elementwise_flops=3 * distances * x1[-1] + distances)


def euclidean_dist_cost(x1: Shape, x2: Shape, *, out: Shape) -> Cost:
    """MACs = B * r1 * r2 * (m + 2) for [B, r1, m] against [B, r2, m]: torch.cdist with p = 2
    as PyTorch's _euclidean_dist computes it, [-2 a, |a|^2, 1] times [b, 1, |b|^2]^T; and
    elementwise, the squares and their sums 2 per element of both inputs, -2 a 1 per
    element of a, a clamp at zero and a root per distance."""
    distances = prod(out)
    return Cost(macs=distances * (x1[-1] + 2), elementwise_flops=3 * prod(x1) + 2 * prod(x2) + 2 * distances)


# --- Pooling and interpolation ------------------------------------------------------------


def max_pool_cost(spatial: int) -> Callable[..., Cost]:
    """`K - 1` comparisons per output element for a window of K elements, over the pool's
    `spatial` dimensions (a one-element `kernel_size` along each: an unbatched input has
    one dimension fewer in front, not one fewer window dimension)."""

    def cost(x: Shape, kernel_size, *args, out: Shape, **kwargs) -> Cost:
        return Cost(elementwise_flops=(prod(expand(kernel_size, spatial)) - 1) * prod(out))

    return cost


def avg_pool_cost(spatial: int) -> Callable[..., Cost]:
    """`K` FLOPs per output element: K - 1 additions and one division (K over `spatial`
    dimensions, as for `max_pool_cost`)."""

    def cost(x: Shape, kernel_size, *args, out: Shape, **kwargs) -> Cost:
        return Cost(elementwise_flops=prod(expand(kernel_size, spatial)) * prod(out))

    return cost


def _adaptive_window_sum(x: Shape, out: Shape, spatial: int) -> int:
    """Sum over all output elements of their window size, exactly.

    Output i of a dimension pools input [floor(i * In / Out), ceil((i + 1) * In / Out)),
    so the sum over all outputs is the product over dimensions of per-dimension sums."""
    total = prod(out[: len(out) - spatial])
    for size_in, size_out in zip(x[-spatial:], out[-spatial:], strict=True):
        total *= sum(-((-(i + 1) * size_in) // size_out) - (i * size_in) // size_out for i in range(size_out))
    return total


def adaptive_avg_pool_cost(x: Shape, output_size, *, out: Shape) -> Cost:
    return Cost(elementwise_flops=_adaptive_window_sum(x, out, len(output_size)))


def adaptive_max_pool_cost(x: Shape, output_size, *, out: Shape) -> Cost:
    return Cost(elementwise_flops=_adaptive_window_sum(x, out, len(output_size)) - prod(out))


def affine_grid_cost(theta: Shape, size, align_corners, *, out: Shape) -> Cost:
    """Each output location's homogeneous coordinates (d + 1 of them) times theta^T, d x (d + 1)."""
    dims = len(size) - 2
    return Cost(macs=size[0] * prod(size[2:]) * (dims + 1) * dims)


# grid_sampler's interpolation_mode -> the inputs one output reads: bilinear (trilinear in
# 3-d), nearest (a copy), bicubic.
_GRID_SAMPLE_TAPS = {0: 4, 1: 1, 2: 16}


def _grid_sample_taps(x: Shape, interpolation_mode: int) -> int:
    return _GRID_SAMPLE_TAPS[interpolation_mode] * (2 if len(x) == 5 and interpolation_mode == 0 else 1)


def grid_sample_cost(x: Shape, grid: Shape, interpolation_mode: int, *args, out: Shape) -> Cost:
    """Each output element interpolated from the input at its grid location, as an
    interpolation over T inputs: 2T - 1 (bilinear 7, bicubic 31, trilinear 15); nearest copies."""
    taps = _grid_sample_taps(x, interpolation_mode)
    return Cost(elementwise_flops=(2 * taps - 1) * prod(out) if taps > 1 else 0)


def grid_sample_backward_cost(
    grad: Shape, x: Shape, grid: Shape, interpolation_mode: int, *args, out: Shape, **kwargs
) -> Cost:
    """Per output-gradient element: into the input's gradient, the gradient times each of
    its T taps' weights, added in (2T; a nearest sample's added into the one input read, 1);
    per coordinate of the grid (d), each tap's value times its weight's derivative,
    accumulated (2T), times the gradient (1), and per grid element the coordinate's gradient
    scaled back from pixels (1); a nearest sample's grid gets none. Each only where
    `output_mask` asks for it."""
    wants_input, wants_grid = args[-1] if args else kwargs["output_mask"]
    taps = _grid_sample_taps(x, interpolation_mode)
    nearest = taps == 1
    coordinates = grid[-1]
    per_element = (1 if nearest else 2 * taps) * wants_input + coordinates * (2 * taps + 1) * (
        wants_grid and not nearest
    )
    return Cost(elementwise_flops=per_element * prod(grad) + prod(grid) * (wants_grid and not nearest))


def interpolation_cost(taps: int) -> Callable[..., Cost]:
    """A weighted sum of `taps` inputs per output: taps multiplies and taps - 1 additions."""
    return per_output_element(2 * taps - 1)


# --- Anti-aliased interpolation (F.interpolate(..., antialias=True)) ----------------------
# PyTorch's CPU kernel (UpSampleKernel.cpp, `_compute_indices_min_size_weights_aa`) reads,
# for output i along an axis, the inputs xmin .. xmin + xsize - 1 around its centre
# scale * (i + 0.5), where scale = inputs per output: a filter of `filter_taps / 2` input
# units either side (the plain kernel's 2 or 4 taps), widened by the scale when downsampling
# so that every input is seen, clipped at the borders. Each output is a weighted sum over
# the rows' and columns' windows: T = xsize * ysize inputs.


def antialiased_cost(filter_taps: int) -> Callable[..., Cost]:
    """`_upsample_bilinear2d_aa` (filter_taps 2) and `_upsample_bicubic2d_aa` (4)."""

    def cost(x: Shape, output_size, align_corners, *scales, out: Shape, dtype=torch.float32, **kwargs) -> Cost:
        if tuple(x[-2:]) == tuple(out[-2:]):
            return FREE  # the kernel copies its input
        # An axis whose size does not change the forward kernel copies, not filters: one
        # input per output along it.
        reads = _total_reads(x, out, filter_taps, _scale_factors(scales, kwargs), align_corners, dtype, True)
        return Cost(elementwise_flops=2 * reads - prod(out))

    cost.__doc__ = (
        f"2T - 1 summed over the outputs, T = the antialias filter's rows x columns ({filter_taps} taps each way,"
        " widened by a downsampling)."
    )
    return cost


def antialiased_backward_cost(filter_taps: int) -> Callable[..., Cost]:
    """The gradient of an anti-aliased interpolation: each output gradient, times each of
    its T inputs' weights, added into their gradients."""

    def cost(grad: Shape, output_size, input_size, align_corners, *scales, out: Shape, dtype=torch.float32, **kwargs):
        # the backward kernel filters every axis, even one whose size does not change
        reads = _total_reads(input_size, grad, filter_taps, _scale_factors(scales, kwargs), align_corners, dtype, False)
        return Cost(elementwise_flops=2 * reads)

    cost.__doc__ = (
        f"2T summed over the output gradient's elements, T = the antialias filter's rows x columns"
        f" ({filter_taps} taps each way, widened by a downsampling)."
    )
    return cost


def _total_reads(x: Shape, out: Shape, filter_taps: int, factors, align_corners, dtype, copies_unchanged: bool) -> int:
    """The sum over all outputs of T = rows x columns read: separable, the product of the
    sums along H and along W, for every batch element and channel."""
    total = prod(out[:-2])
    for size_in, size_out, factor in zip(x[-2:], out[-2:], factors, strict=True):
        if copies_unchanged and size_in == size_out:
            total *= size_out
        else:
            total *= sum(antialiased_windows(size_in, size_out, filter_taps, factor, align_corners, dtype))
    return total


def antialiased_windows(
    size_in: int, size_out: int, filter_taps: int, factor: float | None, align_corners: bool, dtype: torch.dtype
) -> list[int]:
    """How many inputs each output reads along one axis (xsize), as PyTorch computes it, in
    its arithmetic: float64 for a float64 tensor, float32 otherwise (a centre that lands on
    a whole number after rounding moves a window's edge)."""
    real = float if dtype == torch.float64 else float32_rounded
    scale = _inputs_per_output(size_in, size_out, factor, align_corners, real)
    support = real(filter_taps / 2 * scale) if scale >= 1 else filter_taps / 2
    widest = math.ceil(support) * 2 + 1
    sizes = []
    for i in range(size_out):
        centre = real(scale * (i + 0.5))
        # int() truncates toward zero, as the kernel's static_cast<int64_t> does
        first = max(int(real(centre - support) + 0.5), 0)
        end = min(int(real(centre + support) + 0.5), size_in)
        sizes.append(min(max(end - first, 0), widest))
    return sizes


def _inputs_per_output(size_in: int, size_out: int, factor: float | None, align_corners: bool, real) -> float:
    """PyTorch's `area_pixel_compute_scale`: (n - 1) / (o - 1) with align_corners, else
    1 / the user's scale factor, else n / o."""
    if align_corners:
        return real((size_in - 1) / (size_out - 1)) if size_out > 1 else 0.0
    if factor is not None and factor > 0:
        return real(1.0 / factor)
    return real(size_in / size_out)


def _scale_factors(scales: Sequence, kwargs: dict) -> tuple[float | None, float | None]:
    """The user's (H, W) scale factors, None where the sizes decide: positional
    (scales_h, scales_w), keywords, or the .vec overload's one list."""
    if scales and isinstance(scales[0], (list, tuple)):
        return tuple(scales[0])
    if "scale_factors" in kwargs and kwargs["scale_factors"] is not None:
        return tuple(kwargs["scale_factors"])
    positional = [*scales[:2], None, None][:2]
    return kwargs.get("scales_h", positional[0]), kwargs.get("scales_w", positional[1])


def float32_rounded(value: float) -> float:
    """`value` rounded to float32 (a product or quotient of float32 numbers rounded once to
    double, then to float32, is the float32 result): a CPU kernel's arithmetic in float."""
    return struct.unpack("f", struct.pack("f", value))[0]


def expand(value, dims: int) -> tuple[int, ...]:
    """An int or a one-element list for every one of `dims` dimensions."""
    if isinstance(value, int):
        return (value,) * dims
    return tuple(value) * dims if len(value) == 1 else tuple(value)


# --- Backward operators -------------------------------------------------------------------
# The gradients of a training step [docs/formulas.md]: a matrix product's backward is two
# products the size of its forward (input gradient, weight gradient), each computed only
# when the output mask asks for it; elementwise backward ops count as their forward does.


def convolution_backward_parts(
    grad_output: Shape, x: Shape, w: Shape, bias_sizes, stride, padding, dilation, transposed, *rest, output_mask
) -> tuple[int, int, int]:
    """(input-gradient MACs, weight-gradient MACs, bias-gradient FLOPs) of one
    convolution_backward: each gradient product has the forward's MACs (every output
    gradient meets every weight of its window once); the bias gradient sums the output
    gradient, one FLOP per element."""
    per_product = prod(x if transposed else grad_output) * prod(w[1:])
    wants_input, wants_weight, wants_bias = output_mask
    return (
        per_product if wants_input else 0,
        per_product if wants_weight else 0,
        prod(grad_output) if wants_bias else 0,
    )


def convolution_backward_cost(*args, out: Shape, **kwargs) -> Cost:
    input_macs, weight_macs, bias_flops = convolution_backward_parts(*args[:-1], output_mask=args[-1])
    return Cost(macs=input_macs + weight_macs, elementwise_flops=bias_flops)


def norm_backward_cost(grad_output: Shape, *args, out: Shape) -> Cost:
    """Batch, layer and group norm backward (output mask last): 5 FLOPs per element for the
    parameter gradients (normalising the input again 2, grad * x_hat 1, the two sums 2) and 4
    more for the input gradient (gamma / sigma * (grad - mean(grad) - x_hat * mean(grad *
    x_hat))), where the forward computed its statistics."""
    return Cost(elementwise_flops=norm_gradient_flops_per_element(args[-1], True) * prod(grad_output))


def batch_norm_backward_cost(grad_output: Shape, *args, out: Shape) -> Cost:
    """As `norm_backward_cost`, but a batch norm evaluated on its running statistics (frozen
    by `eval()` in a training step: `train` False) has an input gradient of 1 FLOP per
    element, grad * (gamma / sigma), the statistics being constants (the CPU kernel's
    `dy * invstd * w`)."""
    trained = args[6]  # (input, weight, running_mean, running_var, save_mean, save_invstd, train, eps, mask)
    return Cost(elementwise_flops=norm_gradient_flops_per_element(args[-1], trained) * prod(grad_output))


def norm_gradient_flops_per_element(mask: Sequence[bool], trained: bool) -> int:
    """A norm gradient's FLOPs per element, for its output mask (input, weight, bias): the
    input gradient's 4 (1 where the statistics were constants), and 5 for the statistics and
    parameter gradients, made where any gradient is asked for."""
    wants_input = mask[0]
    return ((4 if trained else 1) if wants_input else 0) + (5 if any(mask) else 0)


def max_pool_backward_cost(grad_output: Shape, *args, out: Shape) -> Cost:
    """Each output gradient is added into the input its window's maximum came from: 1 FLOP."""
    return Cost(elementwise_flops=prod(grad_output))


def avg_pool_backward_cost(spatial: int) -> Callable[..., Cost]:
    """Each output gradient is divided by its window's size once and added into its K inputs."""

    def cost(grad_output: Shape, x: Shape, kernel_size, *args, out: Shape) -> Cost:
        return Cost(elementwise_flops=(prod(expand(kernel_size, spatial)) + 1) * prod(grad_output))

    return cost


def adaptive_avg_pool_backward_cost(spatial: int) -> Callable[..., Cost]:
    """As its forward: each output gradient is spread over its window."""

    def cost(grad_output: Shape, x: Shape, *, out: Shape) -> Cost:
        return Cost(elementwise_flops=_adaptive_window_sum(x, grad_output, spatial))

    return cost


def scatter_backward_cost(grad_output: Shape, *args, out: Shape, **kwargs) -> Cost:
    """The backward of a gather (embedding, nearest-neighbour resampling): each output
    gradient is added into the input it was read from, 1 FLOP."""
    return Cost(elementwise_flops=prod(grad_output))


def spread_backward_cost(taps: int) -> Callable[..., Cost]:
    """The backward of an interpolation over `taps` inputs: each output gradient, times each
    tap's weight, added into that input's gradient: 2 * taps FLOPs per output gradient."""

    def spread(grad_output: Shape, *args, out: Shape, **kwargs) -> Cost:
        return Cost(elementwise_flops=2 * taps * prod(grad_output))

    spread.__doc__ = f"{2 * taps} FLOPs per output gradient element ({taps} taps)."
    return spread


def scatter_add_cost(x: Shape, dim, index: Shape, src: Shape, *args, out: Shape, **kwargs) -> Cost:
    """`src` added (or reduced) into `x` at `index`: one FLOP per element of `src`."""
    return Cost(elementwise_flops=prod(src))


def index_put_cost(x: Shape, indices, values: Shape, accumulate: bool = False, *, out: Shape) -> Cost:
    """Writing `values` at indices: a copy (free), or with `accumulate` one addition per value."""
    return Cost(elementwise_flops=prod(values) if accumulate else 0)


# --- Attention and recurrent kernels (archprof.kernels) -----------------------------------


def flash_attention_cost(q: Shape, k: Shape, v: Shape, *args, out: Shape, attn_mask=None, **kwargs) -> Cost:
    """Fused attention, counted as the math decomposition it replaces: the scores Q K^T and
    their product with V, `B * Hq * L * S * (E + Ev)` MACs (grouped key heads are shared,
    not fewer products); Q and K each scaled (one FLOP per element), a softmax over the
    scores (3 per score) and a mask added to them (1 per score)."""
    batch, heads, length, _ = q
    scores = batch * heads * length * k[-2]
    return Cost(
        macs=scores * (q[-1] + v[-1]),
        elementwise_flops=prod(q) + prod(k) + (3 + (attn_mask is not None)) * scores,
    )


def native_multi_head_attention_cost(
    q: Shape,
    k: Shape,
    v: Shape,
    embed_dim: int,
    heads: int,
    qkv_weight: Shape,
    qkv_bias,
    proj_weight: Shape,
    proj_bias,
    mask=None,
    need_weights: bool = True,
    average_attn_weights: bool = True,
    *rest,
    out: Shape,
    **kwargs,
) -> Cost:
    """nn.MultiheadAttention's inference fast path, one CPU kernel
    (native_multi_head_attention_cpu), query (B, L, D), key and value (B, S, D): the query,
    key and value projections and the output's (`B * (2L + 2S) * D * D` MACs), the scores and
    their product with the values (`B * L * S * D` each, over all heads); the queries scaled
    (one FLOP per element; the biases added, as a linear layer's, not counted), a softmax
    over the scores (3 per score), a mask added to them (1 per score), and, for the weights
    it returns averaged, their sum over the heads (1 per score) and its division (1 per
    weight). The fast path is self-attention (S = L): a CPU's kernel refuses keys of another
    length. Elementwise, what the kernel computes: its composite road counts more (the
    in-projection's bias added on its own, the keys scaled too)."""
    return _attention_cost(q, k, heads, mask is not None, need_weights and average_attn_weights)


def transformer_encoder_layer_cost(src: Shape, embed_dim: int, heads: int, *args, out: Shape, **kwargs) -> Cost:
    """nn.TransformerEncoderLayer's inference fast path, one CPU kernel
    (transformer_encoder_layer_forward) over src (B, L, D): its self-attention
    (`native_multi_head_attention_cost`, no weights returned), the feed-forward block's two
    products (`2 * B * L * D * F` MACs, F its width) and activation (one FLOP per element, as
    any), two residual adds (one per element) and two layer norms (5 per element), by the
    conventions of those operations."""
    # After `heads`, in the schema's order: the attention's projections (4), use_gelu,
    # norm_first, eps, the norms' weights and biases (4), the feed-forward's (4), the mask.
    ffn_weight_1 = args[11]
    mask = args[15] if len(args) > 15 else kwargs.get("mask")
    attention = _attention_cost(src, src, heads, mask is not None, averaged=False)
    tokens, width = prod(src[:-1]), ffn_weight_1[0]
    return Cost(
        macs=attention.macs + 2 * tokens * src[-1] * width,
        elementwise_flops=attention.elementwise_flops + tokens * width + (2 + 2 * 5) * prod(src),
    )


def _attention_cost(q: Shape, k: Shape, heads: int, masked: bool, averaged: bool) -> Cost:
    """`native_multi_head_attention_cost` of a query (B, L, D) over keys (B, S, D)."""
    batch, length, dim = q
    keys = k[1]
    scores = batch * heads * length * keys
    return Cost(
        macs=batch * dim * dim * (2 * length + 2 * keys) + 2 * batch * length * keys * dim,
        elementwise_flops=prod(q) + (3 + masked) * scores + averaged * (scores + scores // heads),
    )


def onednn_lstm_layer_cost(x: Shape, w_ih: Shape, w_hh: Shape, *args, out: Shape, **kwargs) -> Cost:
    """One LSTM layer and direction over a (T, B, I) input, as the cell loop it replaces:
    per step and batch element, the gates' products with the input and the hidden state
    (`4H * (I + H)` MACs), and 13 FLOPs per hidden unit: 5 additions (the two products'
    gates, the new cell state), 3 sigmoids, 3 multiplications, 2 tanh."""
    steps, batch = x[0], x[1]
    hidden = w_hh[1]
    return Cost(
        macs=steps * batch * (prod(w_ih) + prod(w_hh)),
        elementwise_flops=13 * steps * batch * hidden,
    )


def flash_attention_backward_cost(grad: Shape, q: Shape, k: Shape, v: Shape, *args, out: Shape, **kwargs) -> Cost:
    """The fused attention's gradient, as the kernel computes it: the scores Q K^T again
    (no attention matrix was kept), then dP = dO V^T, dV = P^T dO, dQ = dS K and
    dK = dS^T Q, `B * Hq * L * S * (3E + 2Ev)` MACs (PyTorch's FlopCounterMode counts fused
    attention's backward so); the probabilities again from the log-sum-exp (2 FLOPs per
    score) and the softmax's gradient (4 per score, as `_softmax_backward_data`)."""
    batch, heads, length, _ = q
    scores = batch * heads * length * k[-2]
    return Cost(macs=scores * (3 * q[-1] + 2 * v[-1]), elementwise_flops=6 * scores)


def onednn_lstm_layer_backward_cost(x: Shape, w_ih: Shape, w_hh: Shape, *args, out: Shape, **kwargs) -> Cost:
    """One LSTM layer and direction's gradient: the kernel computes every gradient, of the
    input and hidden states and of both weights, twice the forward's products; and, by
    convention, as many elementwise FLOPs as the forward cell (13 per hidden unit and step)."""
    forward = onednn_lstm_layer_cost(x, w_ih, w_hh, out=out)
    return Cost(macs=2 * forward.macs, elementwise_flops=forward.elementwise_flops)


# --- Transforms, sorting and running products ---------------------------------------------


def _levels(n: int) -> int:
    """ceil(log2 n): the halvings of a radix-2 transform or a merge sort of n elements (0 for 1)."""
    return max(n - 1, 0).bit_length()


def fft_cost(complex_input: bool, complex_output: bool) -> Callable[..., Cost]:
    """A fast Fourier transform (`_fft_c2c`, `_fft_r2c`, `_fft_c2r`) over the dimensions
    `dim`: 5 N ceil(log2 N) real FLOPs per complex transform of length N (the radix-2
    Cooley-Tukey count, FFTW's convention), half that where the signal is real (r2c, c2r),
    applied per transformed dimension to every line along it; a normalised transform
    (`normalization` 1 or 2) scales each output, 1 more per output element."""

    def cost(x: Shape, dim, normalization, *args, out: Shape, **kwargs) -> Cost:
        signal = out if complex_input and not complex_output else x  # the real side, or either
        per_level = 5 * prod(signal) * sum(_levels(signal[d]) for d in dim)
        transform = per_level if complex_input and complex_output else per_level // 2
        return Cost(elementwise_flops=transform + (prod(out) if normalization else 0))

    return cost


def sort_cost(x: Shape, dim: int = -1, *args, out: Shape, **kwargs) -> Cost:
    """N ceil(log2 N) comparisons per row of N elements sorted along `dim` (a merge sort's
    bound, in whole levels)."""
    return Cost(elementwise_flops=prod(x) * _levels(x[dim] if x else 1))


def unique_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """`torch.unique` over all N elements (`_unique2`): a CPU sorts them, whether or not a
    sorted result is asked for (ATen's Unique.cpp: faster than a hash table), N ceil(log2 N),
    then compares neighbours, N - 1."""
    n = prod(x)
    return Cost(elementwise_flops=n * _levels(n) + max(n - 1, 0))


def unique_consecutive_cost(x: Shape, return_inverse=False, return_counts=False, dim=None, *, out: Shape) -> Cost:
    """`unique_consecutive`: each element compared with the one before it, N - 1; along `dim`,
    each slice with the one before it, element by element."""
    if dim is None:
        return Cost(elementwise_flops=max(prod(x) - 1, 0))
    n = x[dim]
    return Cost(elementwise_flops=prod(x) // n * (n - 1) if n else 0)


def topk_cost(x: Shape, k: int, dim: int = -1, *args, out: Shape, **kwargs) -> Cost:
    """N - 1 + N ceil(log2 k) comparisons per row of N elements: a maximum's N - 1 for k = 1,
    and for every element ceil(log2 k) more to keep the k best in a heap (a partial sort)."""
    n = x[dim] if x else 1
    rows = prod(x) // n if n else 0
    return Cost(elementwise_flops=rows * (n - 1 + n * _levels(k)))


# --- torchvision's detection operators ------------------------------------------------------


def roi_align_cost(
    x: Shape, rois: Shape, spatial_scale, pooled_height, pooled_width, sampling_ratio: int, *args, out: Shape
) -> Cost:
    """Per output element (box, channel, bin): S = sampling_ratio² samples, each a bilinear
    interpolation of 4 inputs accumulated into the bin (4 multiplies, 4 additions), and the
    sum divided by S: 8S + 1. An adaptive grid (sampling_ratio <= 0) takes ceil(box side /
    bins) samples along each side, the boxes' values: counted as its least, one sample."""
    samples = sampling_ratio**2 if sampling_ratio > 0 else 1
    return Cost(elementwise_flops=(8 * samples + 1) * prod(out))


# One IoU test: the intersection's corners (4 max / min), sides (2 differences clamped at 0:
# 4), area (1), the union (area + area - intersection: 2), the ratio (1), the threshold (1).
_IOU_TEST_FLOPS = 13


def nms_cost(boxes: Shape, scores: Shape, iou_threshold, *, out: Shape) -> Cost:
    """Greedy non-maximum suppression of N boxes keeping K (torchvision's CPU kernel): each
    box's area (3), the scores sorted (N ceil(log2 N), as `sort_cost`), then IoU tests, as
    many as the boxes' overlaps make: counted are those every run makes, each pair of kept
    boxes once (a kept box is tested against every box after it still standing) and each
    suppressed box once at least: K (K - 1) / 2 + N - K."""
    n, kept = boxes[0], out[0]
    iou_tests = kept * (kept - 1) // 2 + n - kept
    return Cost(elementwise_flops=3 * n + n * _levels(n) + _IOU_TEST_FLOPS * iou_tests)


# --- Losses -------------------------------------------------------------------------------
# A loss counts the pointwise operations its CPU kernel runs per element, then its reduction
# (`reduction` 1 mean, 2 sum: one FLOP per element, as `mean` and `sum` count; 0 none).


def loss_cost(per_element: int) -> Callable[..., Cost]:
    """`per_element` FLOPs per element of the input, 1 more where the loss is reduced."""

    def cost(x: Shape, target: Shape, reduction: int = 1, *args, out: Shape, **kwargs) -> Cost:
        return Cost(elementwise_flops=(per_element + (reduction != 0)) * prod(x))

    cost.__doc__ = f"{per_element} FLOPs per element, 1 more where reduced (mean or sum)."
    return cost


# (x - y)^2: a difference and a square
mse_loss_cost = loss_cost(2)
# z = |x - y|, z < beta ? 0.5 z z / beta : z - 0.5 beta; the quadratic branch counted for every
# element (which one an element takes depends on its value)
smooth_l1_loss_cost = loss_cost(6)
# z = |x - y|, z < delta ? 0.5 z z : delta (z - 0.5 delta)
huber_loss_cost = loss_cost(5)


def binary_cross_entropy_cost(x: Shape, target: Shape, weight=None, reduction: int = 1, *, out: Shape) -> Cost:
    """(y - 1) max(log1p(-x), -100) - y max(log x, -100), as the CPU kernel computes it: 9
    per element; a weight multiplies each, 1 more; reduced, 1 more."""
    return Cost(elementwise_flops=(9 + (weight is not None) + (reduction != 0)) * prod(x))


def binary_cross_entropy_with_logits_cost(
    x: Shape, target: Shape, weight=None, pos_weight=None, reduction: int = 1, *, out: Shape
) -> Cost:
    """(1 - y) x - log_sigmoid(x): 4 per element; with `pos_weight` the log-sigmoid scaled by
    (pos_weight - 1) y + 1, 3 more per element and 1 per element of pos_weight; a weight 1
    more; reduced, 1 more."""
    per_element = 4 + 3 * (pos_weight is not None) + (weight is not None) + (reduction != 0)
    return Cost(elementwise_flops=per_element * prod(x) + (prod(pos_weight) if pos_weight is not None else 0))


def nll_loss_cost(x: Shape, target: Shape, weight, reduction: int, *args, out: Shape, **kwargs) -> Cost:
    """Per target element, the log-probability of its class picked and negated (1), times its
    class's weight (1); reduced, accumulated (1), a weighted mean summing the weights too (1),
    and a mean's one division."""
    weighted = weight is not None
    per_target = 1 + weighted + (reduction != 0) + (weighted and reduction == 1)
    return Cost(elementwise_flops=per_target * prod(target) + (reduction == 1))


def nll_loss_backward_cost(
    grad: Shape, x: Shape, target: Shape, weight, reduction: int, *args, out: Shape, **kwargs
) -> Cost:
    """The gradient, negated, written into zeros at each target's class: 1 per target
    element, times its class's weight 1 more; a mean's gradient divided by the total weight
    once, 1."""
    return Cost(elementwise_flops=(1 + (weight is not None)) * prod(target) + (reduction == 1))


def mse_loss_backward_cost(grad: Shape, x: Shape, target: Shape, *args, out: Shape, **kwargs) -> Cost:
    """(x - y) * norm * grad, norm 2 (2 / N for a mean): 3 per element."""
    return Cost(elementwise_flops=3 * prod(out))


def binary_cross_entropy_backward_cost(
    grad: Shape, x: Shape, target: Shape, weight=None, reduction: int = 1, *, out: Shape
) -> Cost:
    """grad (x - y) / max((1 - x) x, eps): 6 per element; a weight 1 more, a mean's division 1 more."""
    return Cost(elementwise_flops=(6 + (weight is not None) + (reduction == 1)) * prod(out))


def embedding_renorm_cost(weight: Shape, indices: Shape, max_norm, norm_type, *, out: Shape) -> Cost:
    """nn.Embedding(max_norm=...) renormalises, before each lookup, the rows its indices name:
    the indices sorted (I ceil(log2 I) comparisons, to visit each row once), then per row its
    p-norm (2 per element and a root), a comparison with max_norm, and where above it a scale
    (a division, and a multiply per element). On the meta device the indices' values are
    unknown: every index counts as a distinct row over max_norm, 3D + 3 per index, a bound
    reached when no index repeats and every row named is too long."""
    count = prod(indices)
    return Cost(elementwise_flops=count * _levels(count) + count * (3 * weight[-1] + 3))


# --- Selection, search and more reductions ------------------------------------------------


def _rows(x: Shape, dim) -> tuple[int, int]:
    """(rows, N): the lines of N elements along `dim` (None: the whole tensor, one row)."""
    if dim is None or not x:
        return 1, prod(x)
    n = x[dim]
    return (prod(x) // n if n else 0), n


def selection_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """`median` (over every element, or along `dim`): a selection, N comparisons per row of N
    (the pass of a partition around a pivot, each element compared once; PyTorch's CPU
    kernel runs std::nth_element, a selection in linear expected time)."""
    dim = args[0] if args else kwargs.get("dim")
    rows, n = _rows(x, dim if isinstance(dim, int) else None)
    return Cost(elementwise_flops=rows * n)


def kth_value_cost(x: Shape, k: int, dim: int = -1, *args, out: Shape, **kwargs) -> Cost:
    """`kthvalue`: a selection (a quickselect on the CPU), N comparisons per row of N."""
    rows, n = _rows(x, dim)
    return Cost(elementwise_flops=rows * n)


def nan_selection_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """`nanmedian`: the NaNs of each row counted (1 per element), then a selection among
    the rest (N, as `median`): 2N per row of N."""
    return Cost(elementwise_flops=2 * selection_cost(x, *args, out=out).elementwise_flops)


def mode_cost(x: Shape, dim: int = -1, *args, out: Shape, **kwargs) -> Cost:
    """`mode`: each row sorted (N ceil(log2 N), as `sort`), then scanned for its longest run
    of equal values, one comparison per element: N ceil(log2 N) + N per row of N."""
    rows, n = _rows(x, dim)
    return Cost(elementwise_flops=rows * (n * _levels(n) + n))


def _binary_search(boundaries: int) -> int:
    """ceil(log2 (N + 1)): the comparisons of a binary search (lower or upper bound) among N
    sorted boundaries in the worst case, floor(log2 N) + 1 halvings (0 for none)."""
    return boundaries.bit_length()


def histogram_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """`histc`, per input element: its range check lo <= x <= hi 2, its bin (x - lo) n / (hi -
    lo) 3 (the width once per call), its bin's count incremented 1: 6."""
    return Cost(elementwise_flops=6 * prod(x))


def searchsorted_cost(sorted_sequence: Shape, values, *args, out: Shape, **kwargs) -> Cost:
    """`searchsorted`: a binary search per value among the N boundaries of its row, ceil(log2
    (N + 1)) comparisons each (a `sorter` only reorders where it looks)."""
    queries = prod(values) if isinstance(values, tuple) else 1
    return Cost(elementwise_flops=queries * _binary_search(sorted_sequence[-1] if sorted_sequence else 1))


def bucketize_cost(values, boundaries: Shape, *args, out: Shape, **kwargs) -> Cost:
    """`bucketize`: `searchsorted` with its arguments swapped (1-d boundaries)."""
    return searchsorted_cost(boundaries, values, out=out)


def index_add_cost(x: Shape, dim: int, index: Shape, source: Shape, *args, out: Shape, **kwargs) -> Cost:
    """`index_add`: `source` added into `x` at `index` along `dim`, one FLOP per element of
    `source` (as `scatter_add`; `alpha` scales in that addition, as `add`'s does)."""
    return Cost(elementwise_flops=prod(source))


def index_reduce_cost(
    x: Shape, dim: int, index: Shape, source: Shape, reduce: str, *args, out: Shape, **kwargs
) -> Cost:
    """`index_reduce`: each element of `source` reduced into `x` at its index (a product, a
    maximum or minimum, or a sum for "mean"), 1; a mean then divides every element of `x` by
    its count, 1 more per element."""
    return Cost(elementwise_flops=prod(source) + (prod(x) if reduce == "mean" else 0))


def segment_reduce_cost(data: Shape, reduce: str, *args, out: Shape, **kwargs) -> Cost:
    """`segment_reduce`: each element of `data` reduced into its segment's output from the
    reduction's initial value (an addition, a product, or a comparison for "max" and "min"), 1;
    a mean then divides each output by its segment's length, 1 more per output (an empty
    segment's, NaN, is not divided: the lengths are values, taken as none empty)."""
    return Cost(elementwise_flops=prod(data) + (prod(out) if reduce == "mean" else 0))


def segment_reduce_backward_cost(
    grad: Shape, output: Shape, data: Shape, reduce: str, *args, out: Shape, **kwargs
) -> Cost:
    """`segment_reduce`'s gradient, per segment as its CPU kernel runs it: a sum's copied to each
    element, free; a mean's divided by the length once per output, 1; a maximum's or minimum's
    compared with each element (`x == max`), 1 per element (the quotient among tied elements
    not counted: a value, none where each segment's extremum is unique); a product's `grad * prod`
    once per output and divided by each element, 1 + 1 (a zero element's product of the others
    not counted: none without zeros)."""
    per_output = {"mean": 1, "prod": 1}.get(reduce, 0)
    per_element = 1 if reduce in ("max", "min", "prod") else 0
    return Cost(elementwise_flops=per_output * prod(grad) + per_element * prod(data))


def soft_margin_loss_cost(x: Shape, target: Shape, reduction: int = 1, *args, out: Shape, **kwargs) -> Cost:
    """log(1 + exp(-x y)), as the CPU kernel computes it (neg, mul, exp, log1p): 4 per
    element; reduced, 1 more."""
    return Cost(elementwise_flops=(4 + (reduction != 0)) * prod(x))


def soft_margin_loss_backward_cost(grad: Shape, x: Shape, target: Shape, *args, out: Shape, **kwargs) -> Cost:
    """z = exp(-y x); -norm y z / (1 + z) grad: 8 per element (neg, mul, exp, mul, the norm's
    mul, add, div, the gradient's mul)."""
    return Cost(elementwise_flops=8 * prod(out))


def _samples_and_classes(x: Shape) -> tuple[int, int]:
    """A margin loss's input, [N, C] or one sample's [C] scores: (N, C)."""
    return (x[0], x[1]) if len(x) == 2 else (1, x[0] if x else 1)


def multi_margin_loss_cost(
    x: Shape, target: Shape, p: int = 1, margin=1, weight=None, reduction: int = 1, *, out: Shape
) -> Cost:
    """Per sample, sum over the classes j other than its target y of w_y max(0, margin - x_y +
    x_j)^p, over C: per term the hinge's argument 2, its comparison with 0 1, the square (p = 2)
    1, the weight 1, the accumulation 1, each term counted as above zero (which are depends on
    the values); the division by C 1 per sample; reduced, 1 per sample and a mean's division."""
    samples, classes = _samples_and_classes(x)
    per_term = 4 + (p == 2) + (weight is not None)
    reduced = (reduction != 0) * samples + (reduction == 1)
    return Cost(elementwise_flops=samples * ((classes - 1) * per_term + 1) + reduced)


def multi_margin_loss_backward_cost(
    grad: Shape, x: Shape, target: Shape, p: int = 1, margin=1, weight=None, reduction: int = 1, *, out: Shape
) -> Cost:
    """Per term of the forward (each above zero): the argument 2 and comparison 1, the
    derivative g (p = 1) or 2 g z (p = 2, 2), the weight 1, taken from the target's gradient 1;
    then every element of the gradient times the incoming one, 1."""
    samples, classes = _samples_and_classes(x)
    per_term = 4 + 2 * (p == 2) + (weight is not None)
    return Cost(elementwise_flops=samples * (classes - 1) * per_term + prod(x))


def _label_pairs(classes: int) -> int:
    """The (target, other class) pairs of a multi-label sample, at most: k targets among C pair
    with the C - k others, k (C - k), largest at k = C // 2 (k is a value: the targets' count)."""
    return (classes // 2) * (classes - classes // 2)


def multilabel_margin_loss_cost(x: Shape, target: Shape, reduction: int = 1, *, out: Shape) -> Cost:
    """Per sample, sum over its target classes j and other classes i of max(0, 1 - x_j + x_i),
    over C: per pair the argument 2, the comparison 1, the accumulation 1, as many pairs as
    C classes can make (`_label_pairs`); the division by C 1 per sample; reduced, 1 per sample
    and a mean's division."""
    samples, classes = _samples_and_classes(x)
    reduced = (reduction != 0) * samples + (reduction == 1)
    return Cost(elementwise_flops=samples * (4 * _label_pairs(classes) + 1) + reduced)


def multilabel_margin_loss_backward_cost(grad: Shape, x: Shape, target: Shape, *args, out: Shape) -> Cost:
    """Per pair of the forward (`_label_pairs`, each above zero): the argument 2, the comparison
    1, g added to the other class's gradient and taken from the target's 2; then every element
    times the incoming gradient, 1."""
    samples, classes = _samples_and_classes(x)
    return Cost(elementwise_flops=samples * 5 * _label_pairs(classes) + prod(x))


def _ctc_lattices(log_probs: Shape, targets: Shape, input_lengths, target_lengths) -> tuple[int, int, int, int]:
    """The CTC alignment lattices of a batch, T_b steps by R_b = 2 L_b + 1 states (L_b labels,
    a blank before, between and after them): (sequences, sum of T_b R_b, sum of R_b, sum of
    T_b), a sequence of no steps left out (its likelihood is a constant). Lengths as lists
    are exact; as tensors their values are unknown (meta): each input as long as log_probs
    (T), the targets together as long as `targets` holds (N x S padded, or concatenated), a bound."""
    if isinstance(input_lengths, list) and isinstance(target_lengths, list):
        pairs = [(steps, 2 * labels + 1) for steps, labels in zip(input_lengths, target_lengths, strict=True) if steps]
        return len(pairs), sum(t * r for t, r in pairs), sum(r for _, r in pairs), sum(t for t, _ in pairs)
    steps, sequences = log_probs[0], (log_probs[1] if len(log_probs) == 3 else 1)
    states = 2 * prod(targets) + sequences
    return sequences, steps * states, states, steps * sequences


def ctc_loss_cost(log_probs: Shape, targets: Shape, input_lengths, target_lengths, *args, out: Shape) -> Cost:
    """The forward variables alpha_t(s) of each sequence: every state after the first step a
    log-sum-exp of its three predecessors (as `logsumexp` counts, 2 per term and the log: 7)
    plus the log-probability of its label 1: 8 per state; the negative log-likelihood, a
    log-sum-exp of the last two states and a negation, 6 per sequence."""
    sequences, states, rows, _ = _ctc_lattices(log_probs, targets, input_lengths, target_lengths)
    return Cost(elementwise_flops=8 * (states - rows) + 6 * sequences)


def ctc_loss_backward_cost(
    grad: Shape, log_probs: Shape, targets: Shape, input_lengths, target_lengths, *args, out: Shape
) -> Cost:
    """The backward variables beta_t(s), as the forward's alpha: 8 per state after the last
    step; alpha + beta added into its label's gradient as a log-sum-exp of two, 6 per state;
    then per step and class exp(lp) - exp(g + nll - lp), times the incoming gradient: 6."""
    _, states, rows, steps = _ctc_lattices(log_probs, targets, input_lengths, target_lengths)
    return Cost(elementwise_flops=8 * (states - rows) + 6 * states + 6 * steps * log_probs[-1])


def renorm_cost(x: Shape, p, dim: int, maxnorm, *, out: Shape) -> Cost:
    """`renorm`: each of the S slices along `dim` rescaled where its p-norm exceeds `maxnorm`:
    the norm (2 per element and a root per slice, as `linalg_vector_norm`), the factor
    norm > maxnorm ? maxnorm / (norm + 1e-7) : 1 (3 per slice), a multiply per element:
    3 per element and 4 per slice."""
    return Cost(elementwise_flops=3 * prod(x) + 4 * x[dim])


def dist_cost(x: Shape, other: Shape, *args, out: Shape, **kwargs) -> Cost:
    """`torch.dist`: ||x - y||_p over the broadcast of both, a difference (1) and the norm's
    power and accumulation (2) per element, and one root: 3 per element + 1."""
    broadcast = torch.broadcast_shapes(x, other)
    return Cost(elementwise_flops=3 * prod(broadcast) + 1)


def pdist_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """`F.pdist` (`_pdist_forward`), the N (N - 1) / 2 distances between the rows of an
    [N, M] input: as `torch.cdist` pair by pair, 3 per term and 1 per distance."""
    distances = prod(out)
    return Cost(elementwise_flops=3 * distances * x[-1] + distances)


def cdist_backward_cost(grad: Shape, x1: Shape, x2: Shape, p: float, *args, out: Shape, **kwargs) -> Cost:
    """`_cdist_backward`, torch.cdist's gradient of x1 pair by pair: per term of each distance
    the difference again (1), the norm's gradient of it (grad * diff / dist for p = 2, 2),
    added into the row's gradient (1): 4 per term; p = 0's gradient is zero (a fill)."""
    return Cost(elementwise_flops=4 * prod(grad) * x1[-1] if p != 0 else 0)


def trace_cost(x: Shape, *, out: Shape) -> Cost:
    """`trace`: the sum of the diagonal of an [n, m] matrix, one FLOP per diagonal element
    (min(n, m)), as a sum counts its inputs."""
    return Cost(elementwise_flops=min(x))


# `linalg_cross`: each component a product difference, a_i b_j - a_j b_i: 3 per output element
cross_product_cost = per_output_element(3)


def pdist_backward_cost(grad: Shape, x: Shape, p: float, *args, out: Shape, **kwargs) -> Cost:
    """`_pdist_backward`, F.pdist's gradient, as its CPU kernel runs it: per pair and per
    feature the difference again (1), the norm's gradient of it, grad * diff / dist for
    p = 2 (2), added into one row's gradient and taken from the other's (2): 5 per term of
    each of the N (N - 1) / 2 distances; p = 0's gradient is zero (a fill)."""
    return Cost(elementwise_flops=5 * prod(grad) * x[-1] if p != 0 else 0)


# --- Linear algebra (torch.linalg) --------------------------------------------------------
# Golub & Van Loan's leading-order FLOP counts (Matrix Computations, 4th ed.) per matrix,
# rounded down to a whole FLOP, times the matrices of the (broadcast) batch; n^2 and lower
# terms (divisions, roots, pivot searches) left out, as they leave them. Iterative methods
# (eigenvalues, SVD) count as their convention does: the iterations depend on the values.
# FLOPs, not MACs (as a Fourier transform's): `elementwise_flops`.


def _matrices(*batches: Shape) -> int:
    """How many matrices a batched call works on: its inputs' batch dimensions, broadcast."""
    return prod(torch.broadcast_shapes(*batches))


def _is_vector(a: Shape, b: Shape) -> bool:
    """Whether torch.linalg takes B as one vector per matrix of A: 1-d, or A's shape without
    its last dimension (a batch of vectors)."""
    return len(b) == 1 or b == a[:-1]


def _rhs_columns(a: Shape, b: Shape, left: bool = True) -> int:
    """The right-hand sides of A X = B (X A = B where not `left`): B's columns (rows), one
    where B is a vector."""
    if _is_vector(a, b):
        return 1
    return b[-1] if left else b[-2]


def _rhs_batch(a: Shape, b: Shape) -> Shape:
    return b[:-1] if _is_vector(a, b) else b[:-2]


def _lu_flops(m: int, n: int) -> int:
    """Gaussian elimination with partial pivoting of an m x n matrix: 2n^3/3 square, mn^2 -
    n^3/3 for m >= n."""
    long, short = max(m, n), min(m, n)
    return (3 * long * short * short - short**3) // 3


def _reflector_flops(m: int, columns: int, reflectors: int) -> int:
    """`reflectors` Householder reflections of length up to m applied to `columns` columns,
    each shorter by one than the last: 4 m q k - 2 (m + q) k^2 + 4 k^3 / 3, the sum GVL
    counts (QR's R: q = n, k = n, 2mn^2 - 2n^3/3; its full Q: q = m)."""
    q, k = columns, reflectors
    return (12 * m * q * k - 6 * (m + q) * k * k + 4 * k**3) // 3


def lu_factor_cost(a: Shape, *args, out: Shape, **kwargs) -> Cost:
    """`linalg_lu_factor_ex`, `linalg_lu`, and a determinant (`_linalg_det`,
    `_linalg_slogdet`: the LU, then the product of its diagonal): 2n^3/3 per matrix."""
    return Cost(elementwise_flops=prod(a[:-2]) * _lu_flops(a[-2], a[-1]))


def solve_cost(a: Shape, b: Shape, *args, out: Shape, left: bool = True, **kwargs) -> Cost:
    """`_linalg_solve_ex`: A = PLU (2n^3/3), then a forward and a back substitution per
    right-hand side (2n^2 each)."""
    n, k = a[-1], _rhs_columns(a, b, left)
    return Cost(elementwise_flops=_matrices(a[:-2], _rhs_batch(a, b)) * (_lu_flops(n, n) + 2 * n * n * k))


def inverse_cost(a: Shape, *args, out: Shape, **kwargs) -> Cost:
    """`linalg_inv_ex`, as PyTorch computes it: A X = I solved (`linalg_solve_ex` against
    the identity, n right-hand sides), 2n^3/3 + 2n^3."""
    n = a[-1]
    return Cost(elementwise_flops=prod(a[:-2]) * (_lu_flops(n, n) + 2 * n**3))


def lu_solve_cost(lu: Shape, pivots: Shape, b: Shape, *args, out: Shape, left: bool = True, **kwargs) -> Cost:
    """`linalg_lu_solve`: a forward and a back substitution per right-hand side, 2n^2."""
    n, k = lu[-1], _rhs_columns(lu, b, left)
    return Cost(elementwise_flops=_matrices(lu[:-2], _rhs_batch(lu, b)) * 2 * n * n * k)


def cholesky_cost(a: Shape, *args, out: Shape, **kwargs) -> Cost:
    """`linalg_cholesky_ex`, and `linalg_ldl_factor_ex` (symmetric indefinite, Bunch-Kaufman):
    n^3/3 per matrix."""
    return Cost(elementwise_flops=prod(a[:-2]) * (a[-1] ** 3 // 3))


def cholesky_solve_cost(b: Shape, factor: Shape, *args, out: Shape, **kwargs) -> Cost:
    """`cholesky_solve(B, L)`: L and L^H substitutions per right-hand side, 2n^2."""
    n = factor[-1]
    return Cost(elementwise_flops=_matrices(b[:-2], factor[:-2]) * 2 * n * n * b[-1])


def cholesky_inverse_cost(factor: Shape, *args, out: Shape, **kwargs) -> Cost:
    """`cholesky_inverse(L)`: L inverted (n^3/3), then L^-H L^-1 (n^3/3), LAPACK's potri."""
    return Cost(elementwise_flops=prod(factor[:-2]) * (2 * factor[-1] ** 3 // 3))


def triangular_solve_cost(a: Shape, b: Shape, *args, out: Shape, left: bool = True, **kwargs) -> Cost:
    """`linalg_solve_triangular(A, B)`: a substitution per right-hand side, n^2."""
    n, k = a[-1], _rhs_columns(a, b, left)
    return Cost(elementwise_flops=_matrices(a[:-2], _rhs_batch(a, b)) * n * n * k)


def legacy_triangular_solve_cost(b: Shape, a: Shape, *args, out: Shape, **kwargs) -> Cost:
    """`triangular_solve(B, A)`, the right-hand sides first: as `linalg_solve_triangular`."""
    return triangular_solve_cost(a, b, out=out)


def qr_cost(a: Shape, mode: str = "reduced", *, out: Shape) -> Cost:
    """`linalg_qr`, Householder QR: R, 2mn^2 - 2n^3/3 for m >= n; then Q
    accumulated from its min(m, n) reflectors, the first min(m, n) columns ("reduced",
    as much again) or all m ("complete", 4(m^2 n - m n^2 + n^3/3)); "r": none."""
    m, n = a[-2], a[-1]
    k = min(m, n)
    q_columns = {"reduced": k, "complete": m}.get(mode)
    q_flops = _reflector_flops(m, q_columns, k) if q_columns else 0
    return Cost(elementwise_flops=prod(a[:-2]) * (_reflector_flops(m, n, k) + q_flops))


def householder_product_cost(a: Shape, tau: Shape, *, out: Shape) -> Cost:
    """`linalg_householder_product`: the m x n Q of k reflectors, accumulated as `linalg_qr`'s."""
    return Cost(elementwise_flops=prod(a[:-2]) * _reflector_flops(a[-2], a[-1], tau[-1]))


def _svd_flops(m: int, n: int, full_matrices: bool, compute_uv: bool) -> int:
    """The Golub-Reinsch SVD of an m x n matrix, m >= n (else of its transpose), GVL's
    table: singular values only 4mn^2 - 4n^3/3; with the thin U and V 14mn^2 + 8n^3; with
    the full U and V 4m^2 n + 8mn^2 + 9n^3."""
    m, n = max(m, n), min(m, n)
    if not compute_uv:
        return (12 * m * n * n - 4 * n**3) // 3
    return 4 * m * m * n + 8 * m * n * n + 9 * n**3 if full_matrices else 14 * m * n * n + 8 * n**3


def svd_cost(a: Shape, full_matrices: bool = False, compute_uv: bool = True, *, out: Shape, **kwargs) -> Cost:
    """`_linalg_svd` (torch.linalg.svd, svdvals, matrix_norm's nuclear and 2-norms)."""
    return Cost(elementwise_flops=prod(a[:-2]) * _svd_flops(a[-2], a[-1], full_matrices, compute_uv))


def symmetric_eigen_cost(a: Shape, uplo: str = "L", compute_v: bool = True, *, out: Shape) -> Cost:
    """`_linalg_eigh`, the symmetric QR algorithm: eigenvalues 4n^3/3, with the
    eigenvectors 9n^3."""
    n = a[-1]
    return Cost(elementwise_flops=prod(a[:-2]) * (9 * n**3 if compute_v else 4 * n**3 // 3))


def eigen_cost(a: Shape, *, out: Shape) -> Cost:
    """`linalg_eig`: Francis's QR algorithm for the Schur form T and its vectors Q (GVL),
    25n^3, which the eigenvectors come from."""
    return Cost(elementwise_flops=prod(a[:-2]) * 25 * a[-1] ** 3)


def eigenvalues_cost(a: Shape, *, out: Shape) -> Cost:
    """`_linalg_eigvals`: the same algorithm for T alone, 10n^3."""
    return Cost(elementwise_flops=prod(a[:-2]) * 10 * a[-1] ** 3)


def matrix_exp_cost(a: Shape, *, out: Shape) -> Cost:
    """`linalg_matrix_exp`: the degree-18 Taylor approximant PyTorch's kernel evaluates in 5
    matrix products (Bader, Blanes and Casas 2019), 2n^3 each: 10n^3. By convention: a
    smaller norm takes a lower degree (fewer products) and a larger one 2^-s scaling and s
    squarings, both set by the norm, a value the meta device does not hold."""
    return Cost(elementwise_flops=prod(a[:-2]) * 10 * a[-1] ** 3)


def pinv_cost(a: Shape, *args, out: Shape, hermitian: bool = False, **kwargs) -> Cost:
    """`linalg_pinv`: the thin SVD (`svd_cost`) then V diag(1/s) U^H, 2mn min(m, n); with
    `hermitian`, A = Q diag(w) Q^H (`symmetric_eigen_cost`, 9n^3) then Q diag(1/w) Q^H, 2n^3."""
    hermitian = args[1] if len(args) > 1 else hermitian  # (rcond, hermitian) positionally
    m, n = a[-2], a[-1]
    per_matrix = 11 * n**3 if hermitian else _svd_flops(m, n, False, True) + 2 * m * n * min(m, n)
    return Cost(elementwise_flops=prod(a[:-2]) * per_matrix)


def lstsq_cost(a: Shape, b: Shape, *args, out: Shape, **kwargs) -> Cost:
    """`linalg_lstsq`, a Householder least-squares solution: A's QR, 2mn^2 -
    2n^3/3 (m >= n; else of the transpose), then per right-hand side Q^H b (4mn - 2n^2) and
    a back substitution (n^2). A convention: the CPU's default driver, gelsy, pivots its
    columns too."""
    m, n = max(a[-2], a[-1]), min(a[-2], a[-1])
    k = _rhs_columns(a, b)
    per_matrix = _reflector_flops(m, n, n) + k * (4 * m * n - n * n)
    return Cost(elementwise_flops=_matrices(a[:-2], _rhs_batch(a, b)) * per_matrix)
