"""The elements a CPU kernel reads over and over: a product reads each operand once per
element of the other it meets, a window once per window that covers it, a matrix
decomposition each element once per row it eliminates. A model file's CPU work is bounded by
the elements its operators read (`cpu_allocation.cpu_elements`), and such an operator would
otherwise count its operands once: broadcast from one element, a few bytes computed for
hours. Each count is of the operands as broadcast (`numel`), and at least what the kernel
does, so that no call within the bound runs long.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

_ATEN = torch.ops.aten


def repeated_reads(func, tensors: list[torch.Tensor], args: tuple) -> int | None:
    """The elements `func` reads of `tensors` (its tensor operands, in order; `args` its
    positional arguments), each as often as its kernel reads it; None for an operator that
    reads each once."""
    count = _REPEATED_READS.get(func.overloadpacket)
    return None if count is None else count(tensors, args)


def _convolution(tensors: list[torch.Tensor], args: tuple) -> int:
    # Each input position (batch and spatial, every channel counted by the weight) against
    # every weight: the multiply-adds of an output no larger than the input, more than a
    # strided one's. A 4096 x 4096 map broadcast from one element, against a 2048 x 2048
    # kernel, read 21 million elements and ran for hours. A transposed convolution's weight
    # (in, out, kernel) makes the same count its multiply-adds.
    data, weight = tensors[0], tensors[1]
    positions = data.numel() // data.shape[1] if data.dim() > 1 and data.shape[1] else data.numel()
    return positions * weight.numel()


def _time_convolution(tensors: list[torch.Tensor], args: tuple) -> int:
    # conv_tbc: (time, batch, in) against (kernel, in, out): each input element once per
    # kernel offset and output channel.
    data, weight = tensors[0], tensors[1]
    per_input_channel = weight.numel() // weight.shape[1] if weight.dim() == 3 and weight.shape[1] else weight.numel()
    return data.numel() * per_input_channel


def _matrix_product(tensors: list[torch.Tensor], args: tuple) -> int:
    # mm, addmm, bmm, baddbmm, addbmm: each element of the left matrix once per column of the
    # right (the last two operands).
    left, right = tensors[-2], tensors[-1]
    return left.numel() * (right.shape[-1] if right.dim() else 1)


def _distances(tensors: list[torch.Tensor], args: tuple) -> int:
    # cdist: each point of the first set against every point of the second.
    first, second = tensors[0], tensors[1]
    return first.numel() * (second.shape[-2] if second.dim() > 1 else 1)


def _pairwise_distances(tensors: list[torch.Tensor], args: tuple) -> int:
    # pdist: each of the N points against every other.
    points = tensors[0]
    return points.numel() * (points.shape[0] if points.dim() else 1)


def _windows(dims: int) -> Callable[[list[torch.Tensor], tuple], int]:
    """Pooling over `dims` dimensions: each input element once per window offset (the kernel's
    size, `args[1]`: one number for every dimension, or one each), as a stride of 1 reads
    it; a map broadcast from one element and pooled by a large window read few elements and
    computed for hours."""

    def reads(tensors: list[torch.Tensor], args: tuple) -> int:
        kernel = list(args[1]) if len(args) > 1 else []
        offsets = math.prod(kernel) if len(kernel) == dims else (kernel[0] ** dims if kernel else 1)
        return tensors[0].numel() * max(offsets, 1)

    return reads


def _trilinear(tensors: list[torch.Tensor], args: tuple) -> int:
    # bilinear's kernel: its three operands, each unsqueezed at its expanded dimensions
    # (`args[3:6]`, in ascending order, as the kernel does), multiplied as broadcast and summed
    # over `sumdim`: at most each element of their broadcast product, formed in two products.
    shapes = []
    for tensor, expanded in zip(tensors[:3], args[3:6], strict=True):
        shape = list(tensor.shape)
        for dim in sorted(expanded):
            shape.insert(dim, 1)
        shapes.append(shape)
    return 2 * math.prod(torch.broadcast_shapes(*shapes))


def _recurrent_layer(tensors: list[torch.Tensor], args: tuple) -> int:
    # oneDNN's LSTM layer (what a CPU runs torch.lstm by): at every step of every sequence,
    # the input-hidden and hidden-hidden weights (the second and third operands) read whole.
    data, input_weights, hidden_weights = tensors[:3]
    features = data.shape[-1] if data.dim() and data.shape[-1] else 1
    return data.numel() // features * (input_weights.numel() + hidden_weights.numel())


def _matrix_function(tensors: list[torch.Tensor], args: tuple) -> int:
    # A decomposition, inverse or solve of (batches of) m x n matrices, the first operand:
    # about m n min(m, n) steps, each operand's element once per row or column of that
    # smaller side (a right-hand side of k columns: n^2 k).
    matrix = tensors[0]
    side = min(matrix.shape[-2:]) if matrix.dim() >= 2 else 1
    return sum(tensor.numel() for tensor in tensors) * max(side, 1)


def _matrix_exponential(tensors: list[torch.Tensor], args: tuple) -> int:
    # A few matrix products for the approximant, then one squaring per halving of the norm,
    # which the values decide: at most the exponent range of the dtype (1,024 in float64).
    matrix = tensors[0]
    exact = matrix.is_floating_point() or matrix.is_complex()
    squarings = math.frexp(torch.finfo(matrix.dtype).max)[1] if exact else 0  # float32: 128
    return _matrix_function(tensors, args) * (squarings + 16)


def _attention(tensors: list[torch.Tensor], args: tuple) -> int:
    # CPU flash attention of queries (.., L, E) on keys (.., S, E) and values (.., S, Ev).
    query, key, value = tensors[:3]
    return _attention_terms(query, key, value)


def _attention_terms(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> int:
    """Each query element once per key, each value element once per query."""
    keys = key.shape[-2] if key.dim() >= 2 else 1
    queries = query.shape[-2] if query.dim() >= 2 else 1
    return query.numel() * keys + value.numel() * queries


def _multi_head_attention(tensors: list[torch.Tensor], args: tuple) -> int:
    # nn.MultiheadAttention's fused CPU kernel: the three input projections and the output
    # one (each element once per embedding channel), and the attention between them.
    query, key, value = tensors[:3]
    embedding = query.shape[-1] if query.dim() else 1
    projections = (2 * query.numel() + key.numel() + value.numel()) * embedding
    return projections + _attention_terms(query, key, value)


def _encoder_layer(tensors: list[torch.Tensor], args: tuple) -> int:
    # nn.TransformerEncoderLayer's fused CPU kernel: self-attention as above, then the
    # feed-forward block, each element once per hidden unit on the way up and back.
    source, hidden_weight = tensors[0], tensors[9]  # src, then the weights; the first feed-forward's is 10th
    hidden = hidden_weight.shape[0] if hidden_weight.dim() else 1
    return _multi_head_attention([source, source, source], args) + 2 * source.numel() * hidden


_MATRIX_FUNCTIONS = (
    *(_ATEN._linalg_svd, _ATEN.linalg_eig, _ATEN._linalg_eigvals, _ATEN._linalg_eigh, _ATEN.linalg_qr),
    *(_ATEN.geqrf, _ATEN.ormqr, _ATEN.linalg_householder_product, _ATEN.linalg_cholesky_ex),
    *(_ATEN.cholesky_inverse, _ATEN._cholesky_solve_helper, _ATEN.linalg_inv_ex, _ATEN._linalg_solve_ex),
    *(_ATEN.linalg_lstsq, _ATEN.linalg_lu, _ATEN.linalg_lu_factor_ex, _ATEN.linalg_lu_solve),
    *(_ATEN._linalg_det, _ATEN._linalg_slogdet, _ATEN.triangular_solve, _ATEN.linalg_solve_triangular),
    *(_ATEN.linalg_ldl_factor_ex, _ATEN.linalg_ldl_solve, _ATEN.linalg_pinv),
    # torch.cholesky's operator, which torch 2.14 removed (its function calls linalg_cholesky_ex).
    *((_ATEN.cholesky,) if hasattr(_ATEN, "cholesky") else ()),
)
_CONVOLUTIONS = (
    *(_ATEN.convolution, _ATEN._convolution, _ATEN.mkldnn_convolution, _ATEN._slow_conv2d_forward),
    *(_ATEN.slow_conv3d_forward, _ATEN.slow_conv_dilated2d, _ATEN.slow_conv_dilated3d),
    *(_ATEN.slow_conv_transpose2d, _ATEN.slow_conv_transpose3d),
)

# Operators whose kernel reads its operands many times over, each with how many elements it reads.
_REPEATED_READS: dict[object, Callable[[list[torch.Tensor], tuple], int]] = {
    **dict.fromkeys(_CONVOLUTIONS, _convolution),
    _ATEN.conv_tbc: _time_convolution,
    _ATEN._trilinear: _trilinear,
    **dict.fromkeys((_ATEN.mm, _ATEN.addmm, _ATEN.bmm, _ATEN.baddbmm, _ATEN.addbmm), _matrix_product),
    _ATEN._cdist_forward: _distances,
    _ATEN._pdist_forward: _pairwise_distances,
    _ATEN.mkldnn_rnn_layer: _recurrent_layer,
    **dict.fromkeys((_ATEN.max_pool2d_with_indices, _ATEN.avg_pool2d, _ATEN.fractional_max_pool2d), _windows(2)),
    **dict.fromkeys((_ATEN.max_pool3d_with_indices, _ATEN.avg_pool3d, _ATEN.fractional_max_pool3d), _windows(3)),
    **dict.fromkeys(_MATRIX_FUNCTIONS, _matrix_function),
    _ATEN.linalg_matrix_exp: _matrix_exponential,
    _ATEN._scaled_dot_product_flash_attention_for_cpu: _attention,
    _ATEN._native_multi_head_attention: _multi_head_attention,
    _ATEN._transformer_encoder_layer_fwd: _encoder_layer,
}
