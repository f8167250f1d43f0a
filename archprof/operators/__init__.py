"""One operator catalogue: every aten operator archprof knows, keyed by its overload packet
(`torch.ops.aten.relu`), with its family and, from the family or the operator itself, its
cost (MACs, elementwise FLOPs) and, for the trace's fast path, its output shapes. The
receptive-field pass gives each family, or a single operator, its rule over this catalogue.

In-place forms (`relu_`) share their operator's entry. Operators PyTorch tags pointwise
(`torch.Tag.pointwise`) are pointwise unless catalogued otherwise. An operator the
catalogue does not know is listed as "not counted", never silently zero. Only operators a
dispatch trace can see are catalogued: composite ones (`matmul`, `flatten`, `dropout`,
`max_pool2d`) reach it decomposed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cache

import torch

from archprof.kernels.recurrent import onednn_lstm_layer_shapes
from archprof.operators import costs, shapes
from archprof.operators.costs import FREE, Cost, Shape

__all__ = ["FREE", "OPERATORS", "Cost", "Family", "Layout", "Operator", "find_operator", "operator_named"]

aten = torch.ops.aten
Packet = torch._ops.OpOverloadPacket


class Family(Enum):
    POINTWISE = "pointwise"  # one FLOP per output element
    DATA_MOVEMENT = "data movement"  # views, copies, indexing, padding: free
    CREATION = "creation"  # new tensors from sizes or constants: free
    WINDOW = "window"  # pooling and interpolation
    REDUCTION = "reduction"
    NORMALISATION = "normalisation"  # batch / layer / group norm, softmax
    MATRIX_PRODUCT = "matrix product"  # convolution, mm, bmm, ... : MACs
    # An operator of the user's own (torch.library) that archprof does not know, counted by
    # formulas the user gave it (`archprof.count_operator`); no receptive-field rule.
    GIVEN = "counted by formulas given to archprof.count_operator"


_DEFAULT_COSTS: dict[Family, Callable[..., Cost]] = {
    Family.POINTWISE: costs.pointwise_cost,
    Family.DATA_MOVEMENT: costs.free,
    Family.CREATION: costs.free,
}


class Layout(Enum):
    """How an operator lays its first output out, which the trace's fast path must match."""

    AS_INPUT = "as its input"  # answered for plain contiguous inputs only (pointwise: TensorIterator's rule)
    # A new contiguous tensor whatever its inputs: matrix products, layer norm, and a layer
    # norm's gradient (the CPU kernel's is; the meta kernel's follows a non-contiguous
    # incoming gradient, ConvNeXt's or PVT's channels-last view of a map).
    CONTIGUOUS = "contiguous"
    SUGGESTED = "suggested"  # dense, channels last where the input's strides suggest it (resampling, norms)
    # Pointwise, laid out by TensorIterator's rule over its operands in the order its CPU
    # kernel iterates them: the forward's input before the incoming gradient (ReLU's and
    # leaky ReLU's gradients; other gradients put the incoming gradient first, AS_INPUT).
    INPUT_FIRST = "as its inputs, the forward's input first"
    # Channels last where its second operand, the forward's input, suggests it, else
    # contiguous, whatever the incoming gradient's layout: batch norm's and group norm's
    # gradients as a CPU writes them (batch norm's meta kernel follows the gradient instead).
    SUGGESTED_BY_INPUT = "suggested by its forward input"
    # As SUGGESTED and SUGGESTED_BY_INPUT, but contiguous wherever that input is contiguous, as
    # a CPU's batch norm and its gradient are written (ATen's `suggest_memory_format_contig`):
    # an (N, 1, H, W) or (N, C, 1, 1) map made channels last, whose strides say both, comes out
    # contiguous (a group norm, a resampling or a pad keeps it channels last).
    SUGGESTED_UNLESS_CONTIGUOUS = "suggested, unless its input is contiguous"
    SUGGESTED_BY_INPUT_UNLESS_CONTIGUOUS = "suggested by its forward input, unless it is contiguous"
    # As a CPU's convolution backend writes it, whatever the input's layout: channels last
    # where the input or weight suggests it (`cpu_convolution.cpu_convolution_format`),
    # which the meta kernel, contiguous always, does not know.
    CPU_CONVOLUTION = "as a CPU's convolution"
    # Channels last where every operand's strides suggest the same channels-last format,
    # else contiguous: a concatenation (ATen's cat_compute_output_memory_format, its CPU
    # and meta kernels alike), whose meta kernel is a Python decomposition of 0.7 ms a call.
    SUGGESTED_BY_ALL = "suggested by all its inputs"
    # As `torch.empty_like` lays its input out (torch.preserve_format): the input's strides
    # where it is dense, else the memory format it suggests. Hardtanh (ReLU6) writes into such
    # a tensor where TensorIterator would lay it out by its own rule: an (N, 1, H, W) map made
    # channels last keeps its strides, a sliced one comes out contiguous.
    LIKE_INPUT = "as empty_like lays its input out"
    # As a CPU's roll lays it out: one concatenation of two parts per rolled dimension, channels
    # last only where every part suggests it (`strides.rolled_channels_last`): a shift by a
    # multiple of the size, an empty part, makes it contiguous.
    ROLLED = "as a CPU's roll"


@dataclass(slots=True)
class Operator:
    name: str  # "aten.relu"
    family: Family
    cost: Callable[..., Cost]
    # Output shapes computed without running the meta kernel (the trace's fast path).
    shape: Callable[..., Sequence[Shape]] | None = None
    # Real kernels refuse mixed dtypes; meta kernels do not check, so the trace does.
    same_dtype: bool = False
    # How its first output is laid out: the fast path answers any input strides unless AS_INPUT.
    layout: Layout = Layout.AS_INPUT
    # The shape formula takes the inputs' dtype (keyword `dtype`): a size in bytes that
    # depends on the element size (oneDNN's LSTM workspace).
    shape_by_dtype: bool = False
    # The cost formula takes the output's dtype (keyword `dtype`): a count that depends on
    # the kernel's floating-point arithmetic (where a rounded coordinate falls).
    cost_by_dtype: bool = False
    # The cost formula reads the output's shape alone (`costs.per_output_element`'s: every
    # pointwise operator's, a third of a CNN's ops): its caller need not shape the arguments.
    output_shape_only: bool = field(init=False)

    def __post_init__(self) -> None:
        self.output_shape_only = getattr(self.cost, "output_shape_only", False)


OPERATORS: dict[Packet, Operator] = {}
# The operators of a library that registers its own when it is imported (torchvision's C++
# operators), perhaps after archprof: by name ("torchvision.nms"), found when a trace meets them.
LOADED_LATER: dict[str, Operator] = {}
# Operators the catalogue does not know, counted by formulas the user gave
# (`operators.given.count_operator`), by name ("mylib.fused_conv").
GIVEN_FORMULAS: dict[str, Operator] = {}


def _add(
    family: Family,
    names: str,
    cost=None,
    shape=None,
    same_dtype: bool = False,
    layout: Layout = Layout.AS_INPUT,
    namespace=aten,
    shape_by_dtype: bool = False,
    cost_by_dtype: bool = False,
) -> None:
    """Catalogue the operators `names` (separated by spaces) of `namespace` in `family`; one
    outside aten that this build of torch lacks is left out. A namespace given by its name
    ("torchvision") is a library's that may load after archprof: catalogued by name."""
    cost = cost or _DEFAULT_COSTS.get(family)
    if cost is None:
        raise ValueError(f"the {family.value} family has no default cost: give one for {names}")
    for name in names.split():
        if isinstance(namespace, str):
            table, key = LOADED_LATER, f"{namespace}.{name}"
        else:
            packet = getattr(aten, name) if namespace is aten else getattr(namespace, name, None)
            if packet is None:
                continue
            table, key = OPERATORS, packet
        if key in table:
            raise ValueError(f"{key} catalogued twice")
        table[key] = Operator(str(key), family, cost, shape, same_dtype, layout, shape_by_dtype, cost_by_dtype)


# --- pointwise ----------------------------------------------------------------------------

_add(
    Family.POINTWISE,
    "relu leaky_relu elu gelu silu sigmoid tanh hardswish hardsigmoid mish softplus exp sqrt rsqrt neg",
    shape=shapes.same_shape,
)
_add(Family.POINTWISE, "hardtanh", shape=shapes.same_shape, layout=Layout.LIKE_INPUT)
_add(Family.POINTWISE, "clamp clamp_min", shape=shapes.bounded_shape)
_add(Family.POINTWISE, "add sub mul div", shape=shapes.broadcast_shape)
_add(Family.POINTWISE, "floor_divide glu polar")
# isfinite of a floating tensor, handed down whole as a CPU runs it (`kernels`): its composite's
# `(self == self) * (self.abs() != inf)`, four operations an element.
_add(Family.POINTWISE, "isfinite", costs.per_output_element(4))
_add(Family.POINTWISE, "addr", costs.addr_cost)
# Not tagged pointwise by PyTorch, pointwise all the same; dropout in training multiplies
# by a mask (and scales), the mask its second output.
_add(Family.POINTWISE, "_prelu_kernel rrelu_with_noise log_sigmoid_forward native_dropout")

# --- data movement and creation: free -----------------------------------------------------

# views
_add(
    Family.DATA_MOVEMENT,
    "view _unsafe_view _reshape_alias t transpose permute expand squeeze unsqueeze alias detach slice select"
    " split split_with_sizes unsafe_split unsafe_split_with_sizes unbind as_strided unfold diagonal"
    " view_as_real view_as_complex _conj _neg_view",
)
_add(Family.DATA_MOVEMENT, "cat", shape=shapes.cat_shape, layout=Layout.SUGGESTED_BY_ALL)
# copies, indexing and padding
_add(
    Family.DATA_MOVEMENT,
    "clone _to_copy copy lift_fresh lift_fresh_copy stack repeat flip index index_select gather scatter embedding"
    " constant_pad_nd reflection_pad1d replication_pad1d max_unpool2d max_unpool3d triu tril complex",
)
# F.unfold's windows, copied out of a plainly contiguous input (others are the meta
# kernel's, a Python decomposition: 1.2 ms a call; RAFT upsamples its flow with it).
_add(Family.DATA_MOVEMENT, "im2col", shape=shapes.im2col_shape)
# Written at positions an index or a mask names: copies and fills (free); index_add adds.
_add(Family.DATA_MOVEMENT, "index_copy index_fill masked_scatter masked_scatter_backward diag_embed")
_add(Family.DATA_MOVEMENT, "index_add", costs.index_add_cost)
_add(Family.DATA_MOVEMENT, "index_reduce", costs.index_reduce_cost)
_add(Family.DATA_MOVEMENT, "masked_select block_diag")  # the units a mask names; blocks into zeros
# nn.EmbeddingBag: a lookup, as an embedding is, and the rows looked up reduced per bag.
_add(Family.DATA_MOVEMENT, "_embedding_bag _embedding_bag_forward_only", costs.embedding_bag_cost)
# Copies a CPU writes channels last wherever the input suggests it (its kernels size the
# output in the input's suggested memory format), which their meta kernels do not: a
# ConvNeXt-style channels-last map stays channels last through them.
_add(Family.DATA_MOVEMENT, "pixel_shuffle", shape=shapes.pixel_shuffle_shape, layout=Layout.SUGGESTED)
_add(Family.DATA_MOVEMENT, "pixel_unshuffle", shape=shapes.pixel_unshuffle_shape, layout=Layout.SUGGESTED)
_add(Family.DATA_MOVEMENT, "channel_shuffle", shape=shapes.channel_shuffle_shape, layout=Layout.SUGGESTED)
_add(Family.DATA_MOVEMENT, "roll", shape=shapes.rolled_shape, layout=Layout.ROLLED)
_add(Family.DATA_MOVEMENT, "rot90")  # a flip and a transpose, copied
for _dims in (2, 3):
    _add(
        Family.DATA_MOVEMENT,
        f"reflection_pad{_dims}d",
        shape=shapes.padded_shape(_dims, reflect=True),
        layout=Layout.SUGGESTED,
    )
    _add(
        Family.DATA_MOVEMENT,
        f"replication_pad{_dims}d",
        shape=shapes.padded_shape(_dims, reflect=False),
        layout=Layout.SUGGESTED,
    )
# nearest-neighbour resampling copies one input per output
for _dims in (1, 2, 3):
    _add(
        Family.DATA_MOVEMENT,
        f"upsample_nearest{_dims}d _upsample_nearest_exact{_dims}d",
        shape=shapes.resampled_shape(_dims),
        layout=Layout.SUGGESTED,
    )
_add(
    Family.CREATION,
    "empty empty_like empty_strided zeros zeros_like ones ones_like full full_like fill zero scalar_tensor"
    " arange linspace eye new_empty new_empty_strided new_zeros new_ones new_full"
    " rand randn randint randperm rand_like randn_like randint_like bernoulli uniform normal random"
    " exponential geometric cauchy log_normal _efficientzerotensor"
    " hann_window hamming_window blackman_window bartlett_window kaiser_window triu_indices tril_indices",
)

# --- windows: pooling and interpolation ---------------------------------------------------

_add(Family.WINDOW, "max_pool2d_with_indices", costs.max_pool_cost(2), shapes.max_pool_shape(2))
_add(Family.WINDOW, "max_pool3d_with_indices", costs.max_pool_cost(3), shapes.max_pool_shape(3))
# windows of a fixed size at pseudo-random positions
_add(Family.WINDOW, "fractional_max_pool2d", costs.max_pool_cost(2))
_add(Family.WINDOW, "fractional_max_pool3d", costs.max_pool_cost(3))
_add(Family.WINDOW, "avg_pool2d", costs.avg_pool_cost(2), shapes.avg_pool2d_shape)
# avg_pool3d's kernel also refuses inputs smaller than the kernel: left to the meta kernel.
_add(Family.WINDOW, "avg_pool3d", costs.avg_pool_cost(3))
_add(Family.WINDOW, "_adaptive_avg_pool2d", costs.adaptive_avg_pool_cost, shapes.adaptive_pool_shape(2))
_add(Family.WINDOW, "_adaptive_avg_pool3d", costs.adaptive_avg_pool_cost, shapes.adaptive_pool_shape(3))
_add(Family.WINDOW, "adaptive_max_pool2d adaptive_max_pool3d", costs.adaptive_max_pool_cost)
# (name, inputs per output, resampled dimensions)
for _name, _inputs, _dims in (
    ("upsample_linear1d", 2, 1),
    ("upsample_bilinear2d", 4, 2),
    ("upsample_trilinear3d", 8, 3),
    ("upsample_bicubic2d", 16, 2),
):
    _add(
        Family.WINDOW,
        _name,
        costs.interpolation_cost(_inputs),
        shapes.resampled_shape(_dims),
        layout=Layout.SUGGESTED,
    )
# antialias=True: the filter's window, per axis 2 (bilinear) or 4 (bicubic) taps wide,
# widens with a downsampling's scale
_add(Family.WINDOW, "_upsample_bilinear2d_aa", costs.antialiased_cost(2), cost_by_dtype=True)
_add(Family.WINDOW, "_upsample_bicubic2d_aa", costs.antialiased_cost(4), cost_by_dtype=True)
# A spatial transformer: the sampling grid, a matrix product per location (F.affine_grid),
# then each output sampled from it as an interpolation is (F.grid_sample).
_add(Family.WINDOW, "affine_grid_generator", costs.affine_grid_cost)
_add(Family.WINDOW, "grid_sampler_2d grid_sampler_3d", costs.grid_sample_cost)
# F.fold: sliding windows added back into a map, one addition per window element.
_add(Family.WINDOW, "col2im", costs.fold_cost)

# --- reductions ---------------------------------------------------------------------------

_add(Family.REDUCTION, "mean sum", costs.reduction_cost, shapes.reduction_shape)
_add(Family.REDUCTION, "nansum prod any all", costs.reduction_cost)
_add(Family.REDUCTION, "amax amin max min argmax argmin", costs.extremum_cost)
_add(Family.REDUCTION, "aminmax", costs.minimum_and_maximum_cost)
_add(Family.REDUCTION, "var var_mean", costs.variance_cost)
_add(Family.REDUCTION, "std std_mean", costs.standard_deviation_cost)
_add(Family.REDUCTION, "linalg_vector_norm norm", costs.vector_norm_cost)
_add(Family.REDUCTION, "logsumexp", costs.logsumexp_cost)
# running sums, products, maxima and minima: one addition, multiply or comparison per element
_add(Family.REDUCTION, "cumsum cumprod cummax cummin", costs.reduction_cost)
# log(exp(running) + exp(x)) per element: exp, accumulate and log, 3 per element (logsumexp's 2 and its log)
_add(Family.REDUCTION, "logcumsumexp", costs.per_output_element(3))
# cumprod's gradient, handed down whole as a CPU runs it (`kernels`): on an input without a
# zero, a product, a running sum and a quotient per element (`reversed_cumsum(output * grad,
# dim).div(input)`).
_add(Family.REDUCTION, "cumprod_backward", costs.per_output_element(3), shapes.broadcast_shape)
_add(Family.REDUCTION, "count_nonzero", costs.reduction_cost)  # a comparison and a count per input element
_add(Family.REDUCTION, "histc", costs.histogram_cost)
_add(Family.REDUCTION, "bincount", costs.reduction_cost)  # a count (or a weight) added per input element
# each element reduced into its segment along one axis, segments the lengths' values bound
_add(Family.REDUCTION, "segment_reduce", costs.segment_reduce_cost)
_add(Family.REDUCTION, "_segment_reduce_backward", costs.segment_reduce_backward_cost)
# The indices of the elements not zero (a detector picks its boxes with it): a comparison per input element.
_add(Family.DATA_MOVEMENT, "nonzero", costs.reduction_cost)
# The distinct values (a detector's classes, each suppressed apart): see unique_cost.
_add(Family.DATA_MOVEMENT, "_unique2", costs.unique_cost)
_add(Family.DATA_MOVEMENT, "unique_consecutive", costs.unique_consecutive_cost)
# torch.fft: every output reads every unit along the transformed dimensions.
_add(Family.REDUCTION, "_fft_c2c", costs.fft_cost(complex_input=True, complex_output=True))
_add(Family.REDUCTION, "_fft_r2c", costs.fft_cost(complex_input=False, complex_output=True))
_add(Family.REDUCTION, "_fft_c2r", costs.fft_cost(complex_input=True, complex_output=False))
# comparison sorts along one dimension (argsort, torch.quantile and msort sort too)
_add(Family.REDUCTION, "sort", costs.sort_cost)
_add(Family.REDUCTION, "topk", costs.topk_cost)
# selections along one dimension (or over every element: median, nanmedian without dim)
_add(Family.REDUCTION, "kthvalue", costs.kth_value_cost)
_add(Family.REDUCTION, "median", costs.selection_cost)
_add(Family.REDUCTION, "nanmedian", costs.nan_selection_cost)
_add(Family.REDUCTION, "mode", costs.mode_cost)
# binary searches among sorted boundaries, per value
_add(Family.REDUCTION, "searchsorted", costs.searchsorted_cost)
_add(Family.REDUCTION, "bucketize", costs.bucketize_cost)
# a slice's p-norm, then the slice rescaled where it exceeds maxnorm
_add(Family.REDUCTION, "renorm", costs.renorm_cost)
_add(Family.REDUCTION, "dist", costs.dist_cost)
_add(Family.REDUCTION, "_pdist_forward", costs.pdist_cost)
_add(Family.REDUCTION, "trace", costs.trace_cost)
_add(Family.REDUCTION, "linalg_cross", costs.cross_product_cost)
# torch.linalg as it reaches aten: factorisations, solves, eigenvalues, each output reading
# every unit of its matrices (docs/formulas.md: Golub & Van Loan's counts, FLOPs).
_add(Family.REDUCTION, "linalg_lu_factor_ex linalg_lu _linalg_det _linalg_slogdet", costs.lu_factor_cost)
_add(Family.REDUCTION, "_linalg_solve_ex", costs.solve_cost)
_add(Family.REDUCTION, "linalg_inv_ex", costs.inverse_cost)
_add(Family.REDUCTION, "linalg_lu_solve", costs.lu_solve_cost)
_add(Family.REDUCTION, "linalg_cholesky_ex linalg_ldl_factor_ex", costs.cholesky_cost)
_add(Family.REDUCTION, "cholesky_solve", costs.cholesky_solve_cost)
_add(Family.REDUCTION, "cholesky_inverse", costs.cholesky_inverse_cost)
_add(Family.REDUCTION, "linalg_solve_triangular", costs.triangular_solve_cost)
_add(Family.REDUCTION, "triangular_solve", costs.legacy_triangular_solve_cost)
_add(Family.REDUCTION, "linalg_qr", costs.qr_cost)
_add(Family.REDUCTION, "linalg_householder_product", costs.householder_product_cost)
_add(Family.REDUCTION, "_linalg_svd", costs.svd_cost)
_add(Family.REDUCTION, "_linalg_eigh", costs.symmetric_eigen_cost)
_add(Family.REDUCTION, "linalg_eig", costs.eigen_cost)
_add(Family.REDUCTION, "_linalg_eigvals", costs.eigenvalues_cost)
_add(Family.REDUCTION, "linalg_matrix_exp", costs.matrix_exp_cost)
_add(Family.REDUCTION, "linalg_pinv", costs.pinv_cost)
_add(Family.REDUCTION, "linalg_lstsq", costs.lstsq_cost)
# The checks after a factorisation read its `info` and raise: no arithmetic.
_add(Family.DATA_MOVEMENT, "_linalg_check_errors")

# --- losses -------------------------------------------------------------------------------
# Elementwise over input and target, then a mean or a sum (reduction="none": per element).
# F.l1_loss and F.kl_div reach the trace decomposed (sub, abs, mean; mul, log, sum), and a
# cross entropy as _log_softmax then nll_loss_forward.

_add(Family.REDUCTION, "mse_loss", costs.mse_loss_cost)
_add(Family.REDUCTION, "smooth_l1_loss", costs.smooth_l1_loss_cost)
_add(Family.REDUCTION, "huber_loss", costs.huber_loss_cost)
_add(Family.REDUCTION, "binary_cross_entropy", costs.binary_cross_entropy_cost)
_add(Family.REDUCTION, "binary_cross_entropy_with_logits", costs.binary_cross_entropy_with_logits_cost)
_add(Family.REDUCTION, "nll_loss_forward nll_loss2d_forward", costs.nll_loss_cost)
_add(Family.REDUCTION, "soft_margin_loss", costs.soft_margin_loss_cost)
_add(Family.REDUCTION, "multi_margin_loss", costs.multi_margin_loss_cost)
_add(Family.REDUCTION, "multilabel_margin_loss_forward", costs.multilabel_margin_loss_cost)
# F.ctc_loss reaches the trace as _ctc_loss, then its reduction's operators.
_add(Family.REDUCTION, "_ctc_loss", costs.ctc_loss_cost)

# --- normalisation ------------------------------------------------------------------------

# nn.Embedding(max_norm=...): the rows looked up rescaled in place before each lookup.
_add(Family.NORMALISATION, "embedding_renorm", costs.embedding_renorm_cost)
# A weight-normalised layer's weight, made from its direction and magnitude at every call.
_add(Family.NORMALISATION, "_weight_norm_interface", costs.weight_norm_cost)

# Dense, channels last where the input suggests it and is not contiguous, else contiguous,
# as a CPU writes it (the meta kernel keeps a transposed input's layout: a BatchNorm1d after
# a transpose; and an (N, 1, H, W) map's channels-last strides).
_add(
    Family.NORMALISATION,
    "native_batch_norm _native_batch_norm_legit_no_training",
    costs.batch_norm_cost,
    shapes.batch_norm_shape,
    layout=Layout.SUGGESTED_UNLESS_CONTIGUOUS,
)
_add(
    Family.NORMALISATION,
    "_native_batch_norm_legit _native_batch_norm_legit_functional cudnn_batch_norm miopen_batch_norm",
    costs.batch_norm_cost,
)
_add(Family.NORMALISATION, "_batch_norm_no_update", costs.batch_norm_inference_cost)
_add(
    Family.NORMALISATION,
    "native_layer_norm",
    costs.norm_with_statistics_cost,
    shapes.layer_norm_shape,
    layout=Layout.CONTIGUOUS,
)
_add(
    Family.NORMALISATION,
    "native_group_norm",
    costs.norm_with_statistics_cost,
    shapes.group_norm_shape,
    layout=Layout.SUGGESTED,
)
_add(Family.NORMALISATION, "_batch_norm_with_update", costs.norm_with_statistics_cost)
_add(
    Family.NORMALISATION,
    "_softmax _log_softmax _safe_softmax",
    costs.softmax_cost,
    shapes.softmax_shape,
    layout=Layout.CONTIGUOUS,
)

# --- matrix products and convolution ------------------------------------------------------

_add(
    Family.MATRIX_PRODUCT,
    "convolution",
    costs.conv_cost,
    shapes.conv_shape,
    same_dtype=True,
    layout=Layout.CPU_CONVOLUTION,
)
_add(Family.MATRIX_PRODUCT, "_convolution cudnn_convolution convolution_overrideable", costs.conv_cost)
_add(Family.MATRIX_PRODUCT, "mm", costs.mm_cost, shapes.mm_shape, same_dtype=True, layout=Layout.CONTIGUOUS)
_add(Family.MATRIX_PRODUCT, "addmm", costs.addmm_cost, shapes.addmm_shape, same_dtype=True, layout=Layout.CONTIGUOUS)
_add(Family.MATRIX_PRODUCT, "_addmm_activation", costs.addmm_activation_cost, same_dtype=True)
_add(Family.MATRIX_PRODUCT, "bmm", costs.bmm_cost, shapes.bmm_shape, same_dtype=True, layout=Layout.CONTIGUOUS)
_add(Family.MATRIX_PRODUCT, "baddbmm addbmm", costs.baddbmm_cost, same_dtype=True)
_add(Family.MATRIX_PRODUCT, "mv", costs.mv_cost, same_dtype=True)
_add(Family.MATRIX_PRODUCT, "addmv", costs.addmv_cost, same_dtype=True)
_add(Family.MATRIX_PRODUCT, "dot vdot", costs.dot_cost, same_dtype=True)
_add(Family.MATRIX_PRODUCT, "_trilinear", costs.trilinear_cost)
_add(Family.MATRIX_PRODUCT, "conv_tbc", costs.conv_tbc_cost)  # time-first 1-d convolution (fairseq)
# torch.cdist, every row of one input against every row of the other: pair by pair, or for
# p = 2 and more than 25 rows a matrix product (_euclidean_dist).
_add(Family.MATRIX_PRODUCT, "_cdist_forward", costs.cdist_cost)
_add(Family.MATRIX_PRODUCT, "_euclidean_dist", costs.euclidean_dist_cost)

# --- backward -----------------------------------------------------------------------------
# Run by the backward pass of a training trace (`Graph.backward_ops`); the passes split a
# convolution's gradient products with `costs.convolution_backward_parts`.

_add(Family.MATRIX_PRODUCT, "convolution_backward", costs.convolution_backward_cost)
_add(Family.NORMALISATION, "_weight_norm_interface_backward", costs.weight_norm_backward_cost)
# The meta kernels of the norms', the softmax's and most activations' gradients are Python
# decompositions of 1 to 17 ms a call (a training trace of ResNet-50x4: two thirds of its
# time): the fast path answers them from their shapes.
_add(
    Family.NORMALISATION,
    "native_batch_norm_backward",
    costs.batch_norm_backward_cost,
    shapes.batch_norm_backward_shape,
    layout=Layout.SUGGESTED_BY_INPUT_UNLESS_CONTIGUOUS,
)
_add(
    Family.NORMALISATION,
    "native_layer_norm_backward",
    costs.norm_backward_cost,
    shapes.layer_norm_backward_shape,
    layout=Layout.CONTIGUOUS,
)
# On a CPU its gradient and input come in the layout the input suggests (`kernels`: a
# channels-last map stays so), and it writes its input's gradient so too.
_add(
    Family.NORMALISATION,
    "native_group_norm_backward",
    costs.norm_backward_cost,
    shapes.group_norm_backward_shape,
    layout=Layout.SUGGESTED_BY_INPUT,
)
# Gradients of the form f(grad, input or output, constants...): the two tensors broadcast,
# the output laid out as a CPU's TensorIterator lays it out (their meta kernels, Python
# decompositions, may lay it out otherwise where the two differ in layout: hardswish's
# follows the input, the CPU's the gradient).
_add(
    Family.POINTWISE,
    "gelu_backward sigmoid_backward tanh_backward silu_backward hardtanh_backward hardswish_backward"
    " hardsigmoid_backward softplus_backward hardshrink_backward softshrink_backward mish_backward",
    shape=shapes.broadcast_shape,
)
_add(
    Family.POINTWISE, "threshold_backward leaky_relu_backward", shape=shapes.broadcast_shape, layout=Layout.INPUT_FIRST
)
# log_sigmoid's CPU gradient is laid out as its incoming gradient (empty_like), not by
# TensorIterator's rule: its meta kernel answers.
_add(Family.POINTWISE, "elu_backward _prelu_kernel_backward glu_backward log_sigmoid_backward")
# rrelu's gradient in training: the incoming gradient times each element's drawn slope.
_add(Family.POINTWISE, "rrelu_with_noise_backward")
# y * (g - sum(g * y)) and g - exp(y) * sum(g): 4 FLOPs per element.
_add(
    Family.NORMALISATION,
    "_softmax_backward_data _log_softmax_backward_data",
    costs.per_output_element(4),
    shapes.softmax_backward_shape,
)
_add(
    Family.WINDOW,
    "max_pool2d_with_indices_backward max_pool3d_with_indices_backward"
    " adaptive_max_pool2d_backward adaptive_max_pool3d_backward"
    " fractional_max_pool2d_backward fractional_max_pool3d_backward",
    costs.max_pool_backward_cost,
)
_add(Family.WINDOW, "avg_pool2d_backward", costs.avg_pool_backward_cost(2))
_add(Family.WINDOW, "avg_pool3d_backward", costs.avg_pool_backward_cost(3))
_add(Family.WINDOW, "_adaptive_avg_pool2d_backward", costs.adaptive_avg_pool_backward_cost(2))
_add(Family.WINDOW, "_adaptive_avg_pool3d_backward", costs.adaptive_avg_pool_backward_cost(3))
_add(
    Family.WINDOW,
    "embedding_dense_backward upsample_nearest1d_backward upsample_nearest2d_backward upsample_nearest3d_backward"
    " _upsample_nearest_exact1d_backward _upsample_nearest_exact2d_backward _upsample_nearest_exact3d_backward"
    " reflection_pad1d_backward reflection_pad2d_backward reflection_pad3d_backward replication_pad1d_backward"
    " replication_pad2d_backward replication_pad3d_backward unfold_backward",
    costs.scatter_backward_cost,
)
_add(Family.WINDOW, "_embedding_bag_backward", costs.embedding_bag_backward_cost)
_add(Family.MATRIX_PRODUCT, "_embedding_bag_per_sample_weights_backward", costs.embedding_bag_weights_backward_cost)
for _name, _taps in (
    ("upsample_linear1d_backward", 2),
    ("upsample_bilinear2d_backward", 4),
    ("upsample_trilinear3d_backward", 8),
    ("upsample_bicubic2d_backward", 16),
):
    _add(Family.WINDOW, _name, costs.spread_backward_cost(_taps))
_add(Family.WINDOW, "grid_sampler_2d_backward grid_sampler_3d_backward", costs.grid_sample_backward_cost)
_add(Family.WINDOW, "_upsample_bilinear2d_aa_backward", costs.antialiased_backward_cost(2), cost_by_dtype=True)
_add(Family.WINDOW, "_upsample_bicubic2d_aa_backward", costs.antialiased_backward_cost(4), cost_by_dtype=True)
# The gradient of a view (select, slice) written into zeros of its base's shape: a new
# contiguous tensor whatever the gradient's layout.
_add(
    Family.DATA_MOVEMENT,
    "select_backward slice_backward",
    shape=shapes.scattered_gradient_shape,
    layout=Layout.CONTIGUOUS,
)
_add(Family.DATA_MOVEMENT, "diagonal_backward")  # a diagonal's gradient written into zeros
_add(Family.DATA_MOVEMENT, "scatter_add scatter_reduce", costs.scatter_add_cost)
# The losses' gradients: elementwise over the input, and a cross entropy's written into
# zeros at each target's class.
_add(Family.POINTWISE, "mse_loss_backward", costs.mse_loss_backward_cost)
_add(Family.POINTWISE, "binary_cross_entropy_backward", costs.binary_cross_entropy_backward_cost)
# d = x - y; d <= -beta, d >= beta: +-norm grad, else norm d grad / beta: the difference, two
# comparisons and the middle branch's 3 (smooth L1); Huber's branches multiply twice.
_add(Family.POINTWISE, "smooth_l1_loss_backward", costs.per_output_element(6))
_add(Family.POINTWISE, "huber_loss_backward", costs.per_output_element(5))
# z = exp(-y x); -norm y z / (1 + z) grad: 8 per element
_add(Family.POINTWISE, "soft_margin_loss_backward", costs.soft_margin_loss_backward_cost)
_add(Family.POINTWISE, "multi_margin_loss_backward", costs.multi_margin_loss_backward_cost)
_add(Family.POINTWISE, "multilabel_margin_loss_backward", costs.multilabel_margin_loss_backward_cost)
_add(Family.REDUCTION, "_ctc_loss_backward", costs.ctc_loss_backward_cost)
_add(Family.DATA_MOVEMENT, "nll_loss_backward nll_loss2d_backward", costs.nll_loss_backward_cost)
# F.pdist's gradient, pair by pair as its forward
_add(Family.REDUCTION, "_pdist_backward", costs.pdist_backward_cost)
_add(Family.REDUCTION, "_cdist_backward", costs.cdist_backward_cost)
# The gradients of torch.linalg: an LU unpacked into P, L and U, a diagonal written into a
# matrix; copies (free).
_add(Family.DATA_MOVEMENT, "lu_unpack diagonal_scatter")
# Also the gradient of advanced indexing (x[idx]): index_put with accumulate.
_add(Family.DATA_MOVEMENT, "index_put", costs.index_put_cost)

# --- attention and recurrent kernels ------------------------------------------------------
# The fused CPU kernels `archprof.kernels` sends attention and LSTM calls to (and
# nn.MultiheadAttention's and nn.TransformerEncoderLayer's inference fast paths), and their
# gradients. Their forward MACs are
# those of the decompositions they replace (two batched products, the projections; the
# cell's two products per step); the LSTM's shapes formula sizes oneDNN's
# workspace, which its meta kernel leaves empty.

_add(Family.MATRIX_PRODUCT, "_scaled_dot_product_flash_attention_for_cpu", costs.flash_attention_cost)
_add(Family.MATRIX_PRODUCT, "_native_multi_head_attention", costs.native_multi_head_attention_cost)
_add(Family.MATRIX_PRODUCT, "_transformer_encoder_layer_fwd", costs.transformer_encoder_layer_cost)
_add(
    Family.MATRIX_PRODUCT,
    "mkldnn_rnn_layer",
    costs.onednn_lstm_layer_cost,
    onednn_lstm_layer_shapes,
    layout=Layout.CONTIGUOUS,
    shape_by_dtype=True,
)
_add(
    Family.MATRIX_PRODUCT,
    "_scaled_dot_product_flash_attention_for_cpu_backward",
    costs.flash_attention_backward_cost,
)
_add(Family.MATRIX_PRODUCT, "mkldnn_rnn_layer_backward", costs.onednn_lstm_layer_backward_cost)

# --- quantized layers (torch.ao) -----------------------------------------------------------
# Their weights are packed into TorchScript objects, which the formulas unpack for shapes.
# Quantizing and dequantizing scale each element (1 FLOP); reading a scale out (`.item()`) is free.

_QUANTIZED = torch.ops.quantized
_add(Family.POINTWISE, "quantize_per_tensor quantize_per_channel dequantize")
_add(Family.DATA_MOVEMENT, "_local_scalar_dense")
_add(Family.WINDOW, "quantized_max_pool1d", costs.max_pool_cost(1))
_add(Family.WINDOW, "quantized_max_pool2d", costs.max_pool_cost(2))
_add(Family.WINDOW, "quantized_max_pool3d", costs.max_pool_cost(3))
_add(
    Family.MATRIX_PRODUCT,
    "conv1d conv2d conv3d conv1d_relu conv2d_relu conv3d_relu",
    costs.quantized_conv_cost,
    namespace=_QUANTIZED,
)
_add(
    Family.MATRIX_PRODUCT,
    "linear linear_relu linear_dynamic linear_relu_dynamic",
    costs.quantized_linear_cost,
    namespace=_QUANTIZED,
)

# --- torchvision's detection operators -----------------------------------------------------
# A detector's RoI pooling interpolates (window); its non-maximum suppression selects box
# indices, its cost set by how many it keeps (a real trace's output size).

_add(Family.WINDOW, "roi_align", costs.roi_align_cost, namespace="torchvision")
_add(Family.DATA_MOVEMENT, "nms", costs.nms_cost, namespace="torchvision")


# --- lookup -------------------------------------------------------------------------------


@cache
def find_operator(packet: Packet) -> Operator | None:
    """The catalogue's entry for an operator (its out-of-place form's for an in-place one,
    a pointwise entry for one PyTorch tags pointwise), or None: not counted."""
    known = OPERATORS.get(packet) or LOADED_LATER.get(str(packet)) or GIVEN_FORMULAS.get(str(packet))
    if known is not None:
        return known
    base = _out_of_place(packet)
    if base is not None:
        return find_operator(base)
    if any(torch.Tag.pointwise in getattr(packet, overload).tags for overload in packet.overloads()):
        return Operator(str(packet), Family.POINTWISE, costs.pointwise_cost)
    return None


@cache
def operator_named(name: str) -> Operator | None:
    """find_operator by the operator's name, "aten.relu" (None for a name torch does not know)."""
    namespace, _, short = name.partition(".")
    try:
        packet = getattr(getattr(torch.ops, namespace), short)
    except (AttributeError, RuntimeError):
        return None
    return find_operator(packet) if isinstance(packet, Packet) else None


def _out_of_place(packet: Packet) -> Packet | None:
    """`relu` for `relu_`, when `relu_` writes over its first input (not `__and__`)."""
    name = packet.__name__
    if not name.endswith("_") or name.endswith("__"):
        return None
    base = getattr(aten, name[:-1], None) if packet._qualified_op_name.startswith("aten::") else None
    schema = getattr(packet, packet.overloads()[0])._schema
    writes = schema.arguments and schema.arguments[0].alias_info is not None and schema.arguments[0].alias_info.is_write
    return base if writes and isinstance(base, Packet) else None
