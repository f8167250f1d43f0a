"""Cost formulas: MACs and elementwise FLOPs of one operator call, integer math on shapes
written as in FORMULAS.md.

A formula receives the operator's arguments with every tensor replaced by its shape tuple,
and the shape of the operator's first output as `out`.

Conventions (documented in README.md):
- One MAC is one multiply-accumulate; `flops = 2 * macs`. Bias additions of convolution
  and linear layers are not counted (as in the lecture's worked example and in PyTorch's
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
    nearest-neighbour resampling copies (free).
- Data movement (views, copies, concatenation, indexing, padding) and creation cost nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import prod

Shape = tuple[int, ...]


@dataclass(frozen=True, slots=True)
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
    return per_element


pointwise_cost = per_output_element(1)
softmax_cost = per_output_element(3)


# --- Convolution and matrix products: MACs ------------------------------------------------


def conv_cost(x: Shape, w: Shape, bias, stride, padding, dilation, transposed, *rest, out: Shape) -> Cost:
    """MACs = C_out * H_out * W_out * (C_in / G) * H_K * W_K per sample [000]."""
    # x:[n, c_in, *in]  w:[c_out, c_in/g, *k] -> out:[n, c_out, *out]
    # transposed w:[c_in, c_out/g, *k]: every input element meets (c_out/g) * k weights
    if transposed:
        return Cost(macs=prod(x) * prod(w[1:]))
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
    return bmm_cost(a, b, out=out)


def mv_cost(a: Shape, v: Shape, *, out: Shape) -> Cost:
    """MACs = n * k for [n, k] @ [k]."""
    return Cost(macs=a[0] * a[1])


def addmv_cost(bias: Shape, a: Shape, v: Shape, *rest, out: Shape, **kwargs) -> Cost:
    return mv_cost(a, v, out=out)


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
    training = _batch_norm_training(rest, kwargs)
    return Cost(elementwise_flops=(5 if training else 2) * prod(x))


def _batch_norm_training(rest: tuple, kwargs: dict) -> bool:
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


def reduction_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """A mean is a window of all reduced elements: one FLOP per input element."""
    return Cost(elementwise_flops=prod(x))


def extremum_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """max / min / argmax over a window of K elements: K - 1 comparisons per output; the
    binary form max(a, b) is pointwise, one per output element."""
    if args and isinstance(args[0], tuple):  # max(a, b)
        return pointwise_cost(out=out)
    return Cost(elementwise_flops=prod(x) - prod(out))


def variance_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """Mean 1 + centre and square 2 per input element."""
    return Cost(elementwise_flops=3 * prod(x))


def standard_deviation_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """The variance, then a square root per output."""
    return Cost(elementwise_flops=3 * prod(x) + prod(out))


def vector_norm_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """|x|^p and accumulate, 2 per input element; the p-th root, 1 per output."""
    return Cost(elementwise_flops=2 * prod(x) + prod(out))


def logsumexp_cost(x: Shape, *args, out: Shape, **kwargs) -> Cost:
    """exp and accumulate, 2 per input element; the log, 1 per output."""
    return Cost(elementwise_flops=2 * prod(x) + prod(out))


# --- Pooling and interpolation ------------------------------------------------------------


def max_pool_cost(x: Shape, kernel_size, *args, out: Shape, **kwargs) -> Cost:
    """`K - 1` comparisons per output element for a window of K elements."""
    window = prod(expand(kernel_size, len(x) - 2))
    return Cost(elementwise_flops=(window - 1) * prod(out))


def avg_pool_cost(x: Shape, kernel_size, *args, out: Shape, **kwargs) -> Cost:
    """`K` FLOPs per output element: K - 1 additions and one division."""
    window = prod(expand(kernel_size, len(x) - 2))
    return Cost(elementwise_flops=window * prod(out))


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


def interpolation_cost(taps: int) -> Callable[..., Cost]:
    """A weighted sum of `taps` inputs per output: taps multiplies and taps - 1 additions."""
    return per_output_element(2 * taps - 1)


def expand(value, dims: int) -> tuple[int, ...]:
    """An int or a one-element list for every one of `dims` dimensions."""
    if isinstance(value, int):
        return (value,) * dims
    return tuple(value) * dims if len(value) == 1 else tuple(value)
