"""Composite operators a CPU runs as one operator, which the trace sees otherwise: the
AutogradMeta kernels that hand mish's and cumprod's gradients and isfinite down whole
(`WHOLE_ON_META`), and the autograd kernels that run a forward's composites as on any device,
noted as one CPU operator (`ONE_CPU_OPERATOR`), which `DeviceKernels` registers while active.

Modelled (PyTorch 2.x, CPU):

- mish's gradient: a CPU runs `mish_backward` as one fused kernel, its gradient its only
  tensor; the meta device has no kernel of its own for it, so autograd's key runs its
  CompositeImplicitAutograd formula above the dispatch mode (softplus, tanh, sigmoid and six
  more operators, four maps held at once: 65,536 B over a CPU step's peak for a mish of an
  8-channel 16x16 map at batch 2). While active, mish_backward on meta is handed down whole
  (an AutogradMeta kernel of the process's dispatcher, registered on entry and removed on
  exit), and the catalogue's shape formula answers it as its CPU kernel lays it out; where
  autograd records it (a double backward), the composite runs as on any device.
- cumprod's gradient: `cumprod_backward` is a composite operator on every device, which a
  CPU step runs as one operator of its own (its products, masks and running sums freed inside
  it: workspace, whichever road the input's zeros take), and which on meta runs above the
  dispatch mode, and down the road of a tensor that looks like a subclass (a product and a
  cumprod per element along the dimension, 38 operators for 8 channels: 155,648 B over for
  2 x 8 16x16 maps). Handed down whole as mish's, where it computes anything (more than one
  element along the dimension, a real input; else the composite returns the gradient itself).
- isfinite: a composite operator on every device (`(self == self) * (self.abs() != inf)` for
  a floating tensor), which a CPU runs as one operator, its masks workspace; on meta four
  operators, their masks held through the product reading its result (nan_to_num's gradient
  `grad * at::isfinite(self)`: 24,576 B over for 2 x 8 16x16 maps). Its result has no
  gradient, so it is handed down whole as mish's gradient, forward and backward alike, and
  counted as its composite's four operations an element; integer and complex tensors keep the
  composite road (`ones_like`; the isfinite of their magnitudes).
- composites of a forward a CPU runs as one operator: `pairwise_distance` (`norm(x1 - x2 +
  eps)`), `triplet_margin_loss` (two of them), `margin_ranking_loss`,
  `hinge_embedding_loss`, `l1_loss` (`(input - target).abs()`, reduced),
  `poisson_nll_loss`, `ctc_loss` (`_ctc_loss`, then its mean over the target lengths),
  `cosine_similarity`, `cosine_embedding_loss`, `cross_entropy_loss` (`log_softmax`, then
  `nll_loss` or the probabilities' product), `kl_div`, `nll_loss_nd` (nll_loss's total weight),
  `log_sigmoid` (`log_sigmoid_forward`'s buffer), `layer_norm`, `group_norm` and
  `instance_norm` (the mean and rstd, let go of in inference), `max_pool1d`, `max_pool2d` and
  `max_pool3d` (`max_pool2d_with_indices`' argmax indices, let go of in inference: 131,072 B over
  for a 16-channel 64x64 map), `matmul` (its copy of each operand whose batch it folds into
  one `bmm` or `mm`, let go of in inference: torchvision's swin_v2_t 1,254,528 B over, its cosine
  attention's normalized queries and keys over permuted heads copied), `einsum` (its permuted
  copy of each operand its one `bmm` cannot read as it is, let go of in inference: 32,768 B over
  for scores over 2 x 16 permuted heads of 8 tokens), `tensordot` (likewise for its one `mm`:
  16,384 B over for 2 x 8 16x16 maps times an 8 x 24 matrix), `bilinear` (its copy of each
  operand it cannot flatten into rows as it is, and `_trilinear`'s product before the bias is
  added: 32,768 B over for two channels-last views of those maps), `linalg_matrix_power` (its
  intermediate powers: the maps' cube 16,384 B over), `cov` (its means and centred copy of the
  observations: 16 rows of 256 16,488 B over), `linalg_multi_dot` (its products but the last:
  three 16x16 matrices 1,024 B over), `rms_norm` (the mean of the squares and its reciprocal
  root: 2,048 B over for those maps, a training forward 1,024 B), `linalg_inv` (the `info`
  of `linalg_inv_ex`, checked and let go of: 64 B for 2 x 8 matrices) and `dropout`,
  `feature_dropout`, `alpha_dropout` and `feature_alpha_dropout`, in place too, in train mode (the random
  mask, let go of where no gradient is recorded: Monte Carlo dropout, a block under no_grad in
  a training step; 10,240 B over for 20 x 128 features) are composite operators on
  every device, which the trace sees as the operators they call, where a CPU step's allocator
  sees one operator, the temporaries it makes and frees inside (`x1 - x2`) its workspace.
  They cannot be handed down whole as mish's gradient is: autograd must record their
  operators, whose nodes a CPU step runs and whose saved tensors it keeps (a `bmm`'s copies of
  its operands, in training). So while active their autograd kernels (AutogradMeta,
  AutogradCPU: every name, C++ callers too) run the composite as on any device, inside the
  recorder's `one_cpu_operator`, which notes what it made and let go of before returning
  (`OpNode.workspace`, not counted), in inference (autograd's key runs under no_grad too) and
  training alike. The operators, and so the counts, are the composite's as before. The batch
  and group norms `DeviceKernels` routes to their native operator are noted the same way.

Where a forward runs below autograd's keys (an inference trace on meta: `DeviceKernels`'
`below_autograd`), no autograd kernel is reached: these operators reach the recorder whole,
which runs the same kernels itself (`kernels.AUTOGRAD_KERNELS`), and hands the three above down
whole unless their test says the composite road (`STAYS_COMPOSITE`).
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from archprof.kernels.linalg_values import recorded_by_autograd


def aten_overload(name: str):
    """The aten operator overload `name` names ("ctc_loss.IntList"; "l1_loss": its default)."""
    packet, _, overload = name.partition(".")
    return getattr(getattr(torch.ops.aten, packet), overload or "default")


def _mish_backward_stays_composite(grad_output, input) -> bool:
    """aten.mish_backward takes its composite formula where autograd would record the call (a
    gradient of the gradient), as on any device; a CPU runs any other whole, its kernel its own."""
    return recorded_by_autograd(grad_output, input)


def _cumprod_backward_stays_composite(grad, input, dim: int, output) -> bool:
    """aten.cumprod_backward takes its composite off meta (a composite operator on every device),
    as mish's gradient does, and where it returns the gradient itself or works on complex numbers."""
    on_meta = grad.is_meta or input.is_meta or output.is_meta
    return (
        not on_meta
        or recorded_by_autograd(grad, input, output)
        or input.is_complex()
        or input.numel() <= 1
        or input.size(dim) == 1
    )


def _isfinite_stays_composite(input) -> bool:
    """aten.isfinite takes its composite off meta, for integers (`ones_like`) and for complex
    numbers (the isfinite of their magnitudes); its boolean result has no gradient."""
    return not input.is_meta or not input.is_floating_point()


# Composite operators a CPU runs as one operator of its own, handed down whole on meta (to the
# dispatch mode, the trace's recorder, which answers them as the CPU's kernel), each with the
# test of the calls that take the composite road instead, as on any device. mish_backward's
# formula has one kernel of its own only on the CPU; cumprod_backward's products, masks and
# running sums and isfinite's `(self == self) * (self.abs() != inf)` are, on a CPU, workspace
# inside one operator.
STAYS_COMPOSITE = {
    "aten.mish_backward": _mish_backward_stays_composite,
    "aten.cumprod_backward": _cumprod_backward_stays_composite,
    "aten.isfinite": _isfinite_stays_composite,
}


def _handed_down_whole(operator, stays_composite):
    """An AutogradMeta kernel for `operator`: below autograd, whole, or its composite where
    `stays_composite` says so."""

    def kernel(*args, **kwargs):
        if stays_composite(*args, **kwargs):
            return operator.decompose(*args, **kwargs)
        with torch._C._AutoDispatchBelowAutograd():
            return operator(*args, **kwargs)

    return kernel


# Their AutogradMeta kernels, registered while `DeviceKernels` is active where autograd's keys run.
WHOLE_ON_META = {
    name: _handed_down_whole(aten_overload(name.removeprefix("aten.")), stays_composite)
    for name, stays_composite in STAYS_COMPOSITE.items()
}


def noted_as_one_cpu_operator() -> contextlib.AbstractContextManager:
    """The trace's note that a CPU runs what follows as one operator (the recorder's
    `one_cpu_operator`); nothing noted under any other mode."""
    noting = getattr(_get_current_dispatch_mode(), "one_cpu_operator", None)
    return contextlib.nullcontext() if noting is None else noting()


# The dispatch key of an operator's C++ composite kernel, the one eager PyTorch runs.
COMPOSITE = torch._C.DispatchKey.CompositeImplicitAutograd


def _noted_as_one_operator(operator):
    """An autograd kernel for a composite operator: its C++ composite, run as on any device
    (autograd records its operators), noted as one CPU operator (`noted_as_one_cpu_operator`).
    Not `decompose()`, which prefers a Python decomposition where torch._decomp registered one:
    matmul's reshapes its product with `view`, not the C++ kernel's `_unsafe_view`, a view whose
    in-place write (MViTv2's `attn[:, 1:, 1:] = ...`) autograd records otherwise (2,080 B over
    a CPU training step's peak)."""

    def kernel(*args, **kwargs):
        with noted_as_one_cpu_operator():
            return operator._op_dk(COMPOSITE, *args, **kwargs)

    return kernel


# Composite operators of a forward that a CPU runs as one operator, its temporaries that
# operator's workspace (allocated and freed inside it), which the trace sees decomposed: their
# autograd kernels, on meta and CPU tensors, while `DeviceKernels` is active. Under every name,
# a C++ caller's too (triplet_margin_loss's two pairwise distances).
ONE_CPU_OPERATOR = {
    name: _noted_as_one_operator(aten_overload(name))
    for name in (
        "pairwise_distance",
        "triplet_margin_loss",
        "margin_ranking_loss",
        "hinge_embedding_loss",
        "l1_loss",
        "poisson_nll_loss",
        "ctc_loss.IntList",
        "ctc_loss.Tensor",
        "cosine_similarity",
        "cross_entropy_loss",
        "kl_div",
        "cosine_embedding_loss",
        "nll_loss_nd",
        "log_sigmoid",
        "layer_norm",
        "group_norm",
        "instance_norm",
        "max_pool1d",
        "max_pool2d",
        "max_pool3d",
        "scaled_dot_product_attention",
        "matmul",
        "einsum",
        "tensordot",
        "bilinear",
        "linalg_matrix_power",
        "cov",
        "linalg_multi_dot",
        "rms_norm",
        "linalg_inv",
        "dropout",
        "feature_dropout",
        "alpha_dropout",
        "feature_alpha_dropout",
        "dropout_",
        "feature_dropout_",
        "alpha_dropout_",
        "feature_alpha_dropout_",
    )
}
