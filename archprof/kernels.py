"""The kernels a CPU would run where a composite PyTorch function takes another road on
the meta device, or under the trace's dispatch mode.

A composite function picks its kernel above the dispatcher, from the device of its inputs:
on meta, `F.scaled_dot_product_attention` falls to its math decomposition (bmm, softmax,
bmm, saving the L x L attention matrix) and `nn.LSTM` to its Python-free cell loop, while
a CPU runs a fused kernel that saves far less (flash attention: the output and a
log-sum-exp) or more (oneDNN's LSTM: a workspace). `DeviceKernels`, active around the
traced forward, sends these calls to the aten kernel the CPU would choose, under the
conditions PyTorch's own selection uses, so that the trace records what the CPU computes
and autograd saves. Where the CPU would take the composite road too, the call goes on
unchanged.

It replaces, while active, the names through which models reach these functions:
`torch.nn.functional.scaled_dot_product_attention` (what `F.scaled_dot_product_attention`
and `nn.MultiheadAttention` call), `torch._VF.lstm`, `gru`, `rnn_tanh` and `rnn_relu` (what
`nn.LSTM`, `nn.GRU` and `nn.RNN` call),
`torch.batch_norm` (what `F.batch_norm` calls), `torch.group_norm` (what
`F.group_norm` calls), `torch.nn.functional.linear` (what `nn.Linear` calls),
`torch.nn.functional.one_hot` (`F.one_hot`), `torch.nn.functional.gaussian_nll_loss`; and,
below every Python name, the kernels of the aten operators `linalg_svdvals`, `linalg_eigvalsh` and `linalg_eigvals`. A
TorchFunctionMode would see every call however made, but costs every torch call of every
model a Python round trip (3 ms of resnet50's 20 ms trace); a call through another name
(`torch._C._nn.scaled_dot_product_attention`, a name imported before the trace) keeps the
composite road: the figures of its math decomposition, as PyTorch's meta device gives.

Modelled (PyTorch 2.x, CPU):

- attention: `_scaled_dot_product_flash_attention_for_cpu` wherever `sdp_utils_cpp`'s
  `use_flash_attention_cpp` accepts the call (`flash_attention_kernel`), else the math
  decomposition; either noted as the one operator `scaled_dot_product_attention` a CPU runs
  (its scores and softmax, flash's float mask and log-sum-exp, let go of inside: workspace).
  `Graph.kernels` says which, per call. On CUDA (not modelled) PyTorch's
  sdp_utils tries flash attention (float16/bfloat16, no explicit mask, head size up to
  256, recent GPUs), then memory-efficient attention (float32 too, and masks), then math;
  both fused CUDA kernels save the output and a float32 log-sum-exp as the CPU's does (the
  memory-efficient one pads its length to a multiple of 32), so the figures hold there
  but for that padding; where CUDA falls back to math, the L x L matrix is saved.
- batch norm: `native_batch_norm`, called directly, on meta and CPU tensors alike (so a
  real CPU trace records the same ops). The composite `torch.batch_norm` takes that kernel
  on a CPU but first makes an empty "reserve" tensor for cuDNN's sake, an operator of its
  own that holds no byte, computes nothing and costs the trace a fifth of a BatchNorm's
  time. An empty input keeps the composite road (it returns early, without the kernel), as
  does any other device (CUDA picks cuDNN there). In an inference trace on meta the call
  is handed to the recorder at once (`DeviceKernels`' `answer`).
- group norm: on a CPU the composite keeps a channels-last input as it is and hands it to
  `native_group_norm`, which writes its output channels last too; anywhere else it makes
  the input contiguous first (group_norm.cpp: `input.device().is_cpu() ?
  input.contiguous(memory_format) : input.contiguous()`). On meta that is a copy a CPU
  never makes, which a training step keeps for the backward (PoolFormerV2's GroupNorm
  after a LayerNorm over permuted channels). A channels-last input on meta goes straight to
  `native_group_norm`, after the composite's checks; any other call keeps the composite
  road, where the CPU's takes the same ops.
- linear layers: on an input of other than two dimensions that is not contiguous, the
  composite multiplies (matmul) and then adds the bias in place (linear.cpp), but out of
  place for a tensor that looks like a subclass, as every tensor does under a dispatch
  mode: a copy of the output that a real run never makes. Such a call on meta is run as
  the real one runs; any other keeps the composite road, the same there as anywhere.
- one-hot encoding: on meta (and under fake tensors) `F.one_hot` compares its indices with
  `arange(num_classes)` (`eq`, then a copy to int64: N x C comparisons and a boolean N x C
  tensor); a CPU checks the indices' minimum and maximum (`aminmax`, read back with
  `item()`), then scatters a 1 per index into zeros (Onehot.cpp): no arithmetic but the
  check's. A call on meta with `num_classes` given is run as the CPU runs it, the `item()`
  reads and the checks on their values left out (meta holds no values); without
  `num_classes` the class count is a value, and the composite road raises on meta.
- Gaussian negative log-likelihood: `F.gaussian_nll_loss` checks that no variance is negative
  (`torch.any(var < 0)`, read back with `item()`) and raises if one is. Meta holds no
  values: a call with a meta `var` runs the function itself, its `lt` and `any` recorded as
  a CPU runs them, that one read answered "none negative" (a Meta kernel for
  `_local_scalar_dense`, registered for the call alone, answers a boolean False); the
  variances are the model's, which a real forward checks.
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
- isfinite: a composite operator on every device (`(self == self) * (self.abs() != inf)` for
  a floating tensor), which a CPU runs as one operator, its masks workspace; on meta four
  operators, their masks held through the product reading its result (nan_to_num's gradient
  `grad * at::isfinite(self)`: 24,576 B over for 2 x 8 16x16 maps). Its result has no
  gradient, so it is handed down whole as mish's gradient, forward and backward alike, and
  counted as its composite's four operations an element; integer and complex tensors keep the
  composite road (`ones_like`; the isfinite of their magnitudes).
- a user's own copy (`Tensor.clone`, `resolve_conj`, `resolve_neg` and their `torch` functions,
  wrapped while active): noted as the user's (the recorder's `users_copy`), as a dispatch mode
  cannot tell its `clone` of a conjugate view from the one PyTorch's math-bit fallback makes
  inside the operator reading the view, that operator's workspace.
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
  three 16x16 matrices 1,024 B over) and `rms_norm` (the mean of the squares and its reciprocal
  root: 2,048 B over for those maps, a training forward 1,024 B) are composite operators on
  every device, which the trace sees as the operators they call, where a CPU step's allocator
  sees one operator, the temporaries it makes and frees inside (`x1 - x2`) its workspace.
  They cannot be handed down whole as mish's gradient is: autograd must record their
  operators, whose nodes a CPU step runs and whose saved tensors it keeps (a `bmm`'s copies of
  its operands, in training). So while active their autograd kernels (AutogradMeta,
  AutogradCPU: every name, C++ callers too) run the composite as on any device, inside the
  recorder's `one_cpu_operator`, which notes what it made and let go of before returning
  (`OpNode.workspace`, not counted), in inference (autograd's key runs under no_grad too) and
  training alike. The operators, and so the counts, are the composite's as before. The batch
  and group norms routed here to their native operator are noted the same way.
- the gradients of the CTC, multi-class and multi-label margin losses, which have no meta
  kernel (a training step through them failed): meta kernels, while active, making each a new
  contiguous tensor like the loss's input, as their CPU kernels do.
- recurrent layers: `nn.LSTM` runs `mkldnn_rnn_layer` per layer and direction where
  RNN.cpp's `use_mkldnn` takes it (oneDNN enabled; float32, bfloat16 where the processor
  has oneDNN's bfloat16 instructions, float16 likewise and only without autograd; no
  projection); its workspace is sized by `onednn_lstm_workspace_bytes`. Every other LSTM,
  and GRU and plain RNN layers (`torch._VF.gru`, `rnn_tanh`, `rnn_relu`), run RNN.cpp's own
  layers, which on a CPU project the whole sequence's input in one product and then run
  the cell per step on the hidden state alone; on meta they project each step apart, so
  they are run here as the CPU runs them (`_cpu_lstm`, `_cpu_one_hidden_rnn`). Packed
  sequences keep the composite road (a projection per step).
- eigenvalues and singular values: `linalg_svdvals`, `linalg_eigvalsh` and `linalg_eigvals`
  compute the vectors too only where autograd may need them (linalg's
  `_may_require_fw_or_bw_grad`: grad mode on and an input that requires grad, or a tensor
  that looks like a subclass), which under any dispatch mode they always take for granted
  (every tensor looks like a subclass there, grad mode or not): a full SVD or
  eigendecomposition where a CPU computes the values alone. While active, their autograd
  kernels on meta and CPU tensors (AutogradMeta, AutogradCPU) are replaced by ones that run
  the composite's operators, the vectors asked for by that test on the tensor itself:
  `_linalg_svd` with `compute_uv`, `_linalg_eigh` with `compute_v`, `linalg_eig` or else
  `_linalg_eigvals`; a tensor subclass of its own (a Python dispatch key) takes the
  composite. That serves every road to them: `torch.linalg.svdvals`, `eigvalsh` and
  `eigvals` under any name, and the C++ functions that call them (matrix_norm's 2, -2 and
  nuclear norms, `linalg.norm`'s and `torch.norm`'s, `cond`'s 2-norms, `matrix_rank`). (Forward-mode
  AD's tangents, which the test counts too, are not looked at: a trace makes none; an `out=`
  call is another operator, whose composite computes the vectors.)
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND, elementwise_dtypes, suggest_memory_format
from torch.utils._python_dispatch import _disable_current_modes, _get_current_dispatch_mode

ATTENTION = "scaled_dot_product_attention"
LSTM = "lstm"
FLASH_CPU = "CPU flash attention (aten._scaled_dot_product_flash_attention_for_cpu)"
MATH = "math decomposition (bmm, softmax, bmm)"
ONEDNN_LSTM = "oneDNN LSTM (aten.mkldnn_rnn_layer)"
CELL_LOOP = "cell loop (addmm per step)"

_FLASH_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_ONEDNN_LSTM_MODE = 2  # ideep::rnn_kind::LSTM
_NATIVE_BATCH_NORM = torch.ops.aten.native_batch_norm.default
_NATIVE_GROUP_NORM = torch.ops.aten.native_group_norm.default
_SVD = torch.ops.aten._linalg_svd.default
_SYMMETRIC_EIGEN = torch.ops.aten._linalg_eigh.default
_EIGEN = torch.ops.aten.linalg_eig.default
_EIGENVALUES = torch.ops.aten._linalg_eigvals.default
_SVDVALS = torch.ops.aten.linalg_svdvals.default
_SYMMETRIC_EIGENVALUES = torch.ops.aten.linalg_eigvalsh.default
_GENERAL_EIGENVALUES = torch.ops.aten.linalg_eigvals.default
_MISH_BACKWARD = torch.ops.aten.mish_backward.default
_CUMPROD_BACKWARD = torch.ops.aten.cumprod_backward.default
_ISFINITE = torch.ops.aten.isfinite.default


# The Python names `DeviceKernels` routes while active: (the object holding it, its name, the
# attribute keeping its function, the method standing in for it).
_ROUTED = (
    (torch.nn.functional, "scaled_dot_product_attention", "_attention_function", "_routed_attention"),
    (torch, "batch_norm", "_batch_norm_function", "_routed_batch_norm"),
    (torch, "group_norm", "_group_norm_function", "_routed_group_norm"),
    (torch.nn.functional, "linear", "_linear_function", "_routed_linear"),
    (torch.nn.functional, "one_hot", "_one_hot_function", "_routed_one_hot"),
    (torch.nn.functional, "gaussian_nll_loss", "_gaussian_nll_loss_function", "_routed_gaussian_nll_loss"),
)


# The Python names of a user's own copy of a tensor (`x.conj().resolve_conj()`), which
# `DeviceKernels` wraps while active: the trace tells such a copy of a conjugate view from the
# one PyTorch's math-bit fallback makes inside the operator reading the view (its workspace),
# the same `clone` to a dispatch mode (`_noted_as_the_users_copy`).
_USERS_COPIES = tuple(
    (owner, name) for owner in (torch.Tensor, torch) for name in ("clone", "resolve_conj", "resolve_neg")
)


class DeviceKernels:
    """Routes attention, recurrent, batch-norm, group-norm, linear and eigenvalue calls to the
    kernels a CPU would run, while active (a context manager); counts each attention and LSTM choice in
    `chosen` ("scaled_dot_product_attention: CPU flash attention (...)" -> calls).
    Attention, LSTM, group-norm and linear calls on tensors off the meta device, and batch
    norms off meta and the CPU, go on unchanged.

    `answer`, where given, takes (operator, arguments) and returns what the dispatch mode
    would make of the call, or None where it cannot skip the dispatcher (the trace's
    recorder in an inference trace): a batch norm goes to it straight, not down through
    the C++ dispatcher and back up into Python, a quarter of the call's cost."""

    def __init__(self, answer: Callable[[Any, tuple], Any] | None = None) -> None:
        self.chosen: Counter[str] = Counter()
        self._answer = answer
        self._library = None  # while active: the dispatcher's kernels of `_DISPATCHER_KERNELS` (`_registered`)
        self._own_copies: dict[tuple, Any] = {}  # while active: `_USERS_COPIES`' own attributes (None: inherited)

    def _take_the_functions(self) -> None:
        """Each routed Python name's function as it is now (`_ROUTED`), which a call the route
        does not take goes on to, and `__exit__` puts back."""
        for owner, name, original, _ in _ROUTED:
            setattr(self, original, getattr(owner, name))

    def __enter__(self) -> DeviceKernels:
        # First, as the one step that may fail (a kernel the dispatcher refuses): nothing else is changed yet.
        with warnings.catch_warnings():  # that the ZeroTensor kernels override PyTorch's, which __exit__ puts back
            warnings.simplefilter("ignore", UserWarning)
            self._library = _registered(_DISPATCHER_KERNELS)
        self._take_the_functions()
        for owner, name, _, routed in _ROUTED:
            setattr(owner, name, getattr(self, routed))
        torch._VF.lstm = self._routed_lstm  # over VFModule's __getattr__, until deleted
        self._own_copies = {(owner, name): vars(owner).get(name) for owner, name in _USERS_COPIES}
        for owner, name in _USERS_COPIES:
            setattr(owner, name, _noted_as_the_users_copy(getattr(owner, name)))
        for name, routed in _ONE_HIDDEN_ROUTES.items():
            setattr(torch._VF, name, routed)
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, original, _ in _ROUTED:
            setattr(owner, name, getattr(self, original))
        for name in (LSTM, *_ONE_HIDDEN_CELLS):
            delattr(torch._VF, name)
        for (owner, name), own in self._own_copies.items():
            if own is None:  # Tensor's, inherited from TensorBase
                delattr(owner, name)
            else:
                setattr(owner, name, own)
        self._library.reset()  # PyTorch's kernels again where these stood in for them

    def _routed_batch_norm(self, input, weight, bias, running_mean, running_var, training, momentum, eps, *cudnn):
        if input.device.type not in ("meta", "cpu") or input.numel() == 0:
            return self._batch_norm_function(
                input, weight, bias, running_mean, running_var, training, momentum, eps, *cudnn
            )
        _check_batch_norm_features(input, weight, bias, running_mean, running_var, training)
        args = (input, weight, bias, running_mean, running_var, bool(training), float(momentum), float(eps))
        with _noted_as_one_cpu_operator():  # the statistics not saved let go of inside, as by the CPU's batch_norm
            return self._native_batch_norm(args)[0]

    def _native_batch_norm(self, args: tuple):
        """`native_batch_norm`'s three outputs, answered by the trace where it can."""
        answered = self._answer(_NATIVE_BATCH_NORM, args) if self._answer is not None else None
        return answered if answered is not None else _NATIVE_BATCH_NORM(*args)

    def _routed_group_norm(self, input, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
        memory_format = suggest_memory_format(input)  # group_norm.cpp's, on a CPU
        if (
            input.device.type != "meta"
            or memory_format == torch.contiguous_format
            or not _group_norm_fits(input, num_groups, weight, bias)
        ):
            return self._group_norm_function(input, num_groups, weight, bias, eps, cudnn_enabled)
        batch, channels, *spatial = input.shape
        with _noted_as_one_cpu_operator():  # mean and rstd let go of inside, as by the CPU's group_norm
            return _NATIVE_GROUP_NORM(
                input.contiguous(memory_format=memory_format),
                None if weight is None else weight.contiguous(),
                None if bias is None else bias.contiguous(),
                batch,
                channels,
                math.prod(spatial),
                num_groups,
                float(eps),
            )[0]

    def _routed_linear(self, input, weight, bias=None):
        if input.device.type != "meta":
            return self._linear_function(input, weight, bias)
        return _cpu_linear(input, weight, bias)

    def _routed_one_hot(self, input, num_classes=-1):
        if input.device.type != "meta" or num_classes < 0 or input.dtype != torch.long or input.numel() == 0:
            return self._one_hot_function(input, num_classes)
        return _cpu_one_hot(input, num_classes)

    def _routed_gaussian_nll_loss(self, input, target, var, *args, **kwargs):
        if not isinstance(var, torch.Tensor) or var.device.type != "meta":
            return self._gaussian_nll_loss_function(input, target, var, *args, **kwargs)
        with _no_value_negative():
            return self._gaussian_nll_loss_function(input, target, var, *args, **kwargs)

    def _routed_attention(self, query, *args, **kwargs):
        if query.device.type != "meta":
            return self._attention_function(query, *args, **kwargs)
        return self._attention(query, *args, **kwargs)

    def _routed_lstm(self, *args, **kwargs):
        if kwargs or not _is_lstm_on_input(args) or args[0].device.type != "meta":
            return torch._C._VariableFunctions.lstm(*args, **kwargs)
        return self._lstm(*args)

    def _attention(
        self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
    ):
        if not flash_attention_kernel(query, key, value, attn_mask, dropout_p, enable_gqa):
            self.chosen[f"{ATTENTION}: {MATH}"] += 1
            return self._attention_function(
                query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa
            )
        self.chosen[f"{ATTENTION}: {FLASH_CPU}"] += 1
        # One operator on a CPU (scaled_dot_product_attention): the float mask it makes of a
        # boolean one, and the log-sum-exp, let go of inside (in inference), are its workspace.
        with _noted_as_one_cpu_operator():
            return _flash_attention(query, key, value, attn_mask, dropout_p, is_causal, scale)

    def _lstm(self, input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
        if not onednn_lstm_kernel(input, hx):
            self.chosen[f"{LSTM}: {CELL_LOOP}"] += 1
            if not _has_steps(input, batch_first):  # the composite refuses it, as on a CPU
                return torch.lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
            return _cpu_lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
        self.chosen[f"{LSTM}: {ONEDNN_LSTM}"] += 1
        return _onednn_lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)


def _flash_attention(query, key, value, attn_mask, dropout_p, is_causal, scale):
    """The output of `_scaled_dot_product_flash_attention_for_cpu`, its temporaries let go of
    on return."""
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        # As attention.cpp's convert_boolean_attn_mask: True keeps a score, False masks it.
        keep = torch.scalar_tensor(0.0, dtype=query.dtype, device=query.device)
        drop = torch.scalar_tensor(-math.inf, dtype=query.dtype, device=query.device)
        attn_mask = torch.where(attn_mask, keep, drop)
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale
    )[0]


def _svdvals(A, *, driver=None):
    """aten.linalg_svdvals: the thin SVD's singular values, U and V^H only for autograd."""
    if _subclass_like(A):
        return _SVDVALS.decompose(A, driver=driver)
    return _SVD(A, False, _recorded_by_autograd(A), driver=driver)[1]


def _eigvalsh(A, UPLO="L"):
    """aten.linalg_eigvalsh: the symmetric eigenvalues, the eigenvectors only for autograd."""
    if _subclass_like(A):
        return _SYMMETRIC_EIGENVALUES.decompose(A, UPLO)
    return _SYMMETRIC_EIGEN(A, UPLO, _recorded_by_autograd(A))[0]


def _eigvals(A):
    """aten.linalg_eigvals: the eigenvalues alone, or of the whole eigendecomposition for autograd."""
    if _subclass_like(A):
        return _GENERAL_EIGENVALUES.decompose(A)
    return _EIGEN(A)[0] if _recorded_by_autograd(A) else _EIGENVALUES(A)


def _subclass_like(A) -> bool:
    """Whether a tensor is one PyTorch takes for a subclass itself (a Python dispatch key of its
    own: a tensor subclass), where the composites compute the vectors on any device."""
    return torch._C._dispatch_keys(A).has(torch._C.DispatchKey.Python)


# The composite operators of values only, whose kernels `DeviceKernels` replaces while active,
# on meta and CPU tensors, below every Python name torch.linalg reaches them by.
_VALUES_ONLY = {"linalg_svdvals": _svdvals, "linalg_eigvalsh": _eigvalsh, "linalg_eigvals": _eigvals}


def _check_batch_norm_features(input, weight, bias, running_mean, running_var, training: bool) -> None:
    """The composite's checks before its kernel (Normalization.cpp, _batch_norm_impl_index),
    in its words: one statistic, weight and bias per channel; statistics in evaluation."""
    features = input.size(1) if input.dim() > 1 else 1
    for name, tensor in (("running_mean", running_mean), ("running_var", running_var)):
        if tensor is None and not training:
            raise RuntimeError(f"{name} must be defined in evaluation mode")
    named = (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias))
    for name, tensor in named:
        if tensor is not None and tensor.numel() != features:
            raise RuntimeError(f"{name} should contain {features} elements not {tensor.numel()}")


def _whole_mish_backward(grad_output, input):
    """aten.mish_backward on meta as a CPU runs it: one operator, handed below autograd to the
    dispatch mode (the trace's recorder) whole, not decomposed there by its composite formula;
    where autograd would record the call (a gradient of the gradient), the composite formula,
    as on any device."""
    if _recorded_by_autograd(grad_output, input):
        return _MISH_BACKWARD.decompose(grad_output, input)
    with torch._C._AutoDispatchBelowAutograd():
        return _MISH_BACKWARD(grad_output, input)


def _whole_cumprod_backward(grad, input, dim: int, output):
    """aten.cumprod_backward on meta as a CPU runs it: one operator, as `_whole_mish_backward`;
    the composite where it returns the gradient itself or works on complex numbers."""
    if _recorded_by_autograd(grad, input, output) or input.is_complex() or input.numel() <= 1 or input.size(dim) == 1:
        return _CUMPROD_BACKWARD.decompose(grad, input, dim, output)
    with torch._C._AutoDispatchBelowAutograd():
        return _CUMPROD_BACKWARD(grad, input, dim, output)


def _whole_isfinite(input):
    """aten.isfinite of a real floating tensor on meta as a CPU runs it: one operator (its
    `(self == self) * (self.abs() != inf)` the operator's workspace), as `_whole_mish_backward`;
    its boolean result has no gradient. The composite for integers (`ones_like`) and complex
    numbers (the isfinite of their magnitudes)."""
    if not input.is_floating_point():
        return _ISFINITE.decompose(input)
    with torch._C._AutoDispatchBelowAutograd():
        return _ISFINITE(input)


def _recorded_by_autograd(*tensors) -> bool:
    """Whether autograd records a call on `tensors`, tested on the tensors themselves (under a
    dispatch mode PyTorch takes every tensor for a subclass that may need gradients): linalg's
    `_may_require_fw_or_bw_grad` outside a mode, forward-mode tangents aside."""
    return torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors)


# Composite operators handed down whole on meta while `DeviceKernels` is active, as a CPU
# runs them (an operator of its own there): their AutogradMeta kernels.
_WHOLE_ON_META = {
    "aten.mish_backward": _whole_mish_backward,
    "aten.cumprod_backward": _whole_cumprod_backward,
    "aten.isfinite": _whole_isfinite,
}
HANDED_DOWN_WHOLE = frozenset(_WHOLE_ON_META)


def _overload(name: str):
    """The aten operator overload `name` names ("ctc_loss.IntList"; "l1_loss": its default)."""
    packet, _, overload = name.partition(".")
    return getattr(getattr(torch.ops.aten, packet), overload or "default")


def _noted_as_one_cpu_operator() -> contextlib.AbstractContextManager:
    """The trace's note that a CPU runs what follows as one operator (the recorder's
    `one_cpu_operator`); nothing noted under any other mode."""
    noting = getattr(_get_current_dispatch_mode(), "one_cpu_operator", None)
    return contextlib.nullcontext() if noting is None else noting()


@functools.cache  # made once per function, not on every trace
def _noted_as_the_users_copy(function: Callable) -> Callable:
    """`function` (a Python name of `_USERS_COPIES`), its call noted as the user's own copy (the
    trace's recorder's `users_copy`); nothing noted under any other mode."""

    @functools.wraps(function)
    def call(*args, **kwargs):
        noting = getattr(_get_current_dispatch_mode(), "users_copy", None)
        if noting is None:
            return function(*args, **kwargs)
        with noting():
            return function(*args, **kwargs)

    return call


# The dispatch key of an operator's C++ composite kernel, the one eager PyTorch runs.
COMPOSITE = torch._C.DispatchKey.CompositeImplicitAutograd


def _noted_as_one_operator(operator):
    """An autograd kernel for a composite operator: its C++ composite, run as on any device
    (autograd records its operators), noted as one CPU operator (`_noted_as_one_cpu_operator`).
    Not `decompose()`, which prefers a Python decomposition where torch._decomp registered one:
    matmul's reshapes its product with `view`, not the C++ kernel's `_unsafe_view`, a view whose
    in-place write (MViTv2's `attn[:, 1:, 1:] = ...`) autograd records otherwise (2,080 B over
    a CPU training step's peak)."""

    def kernel(*args, **kwargs):
        with _noted_as_one_cpu_operator():
            return operator._op_dk(COMPOSITE, *args, **kwargs)

    return kernel


# Composite operators of a forward that a CPU runs as one operator, its temporaries that
# operator's workspace (allocated and freed inside it), which the trace sees decomposed: their
# autograd kernels, on meta and CPU tensors, while `DeviceKernels` is active. Under every name,
# a C++ caller's too (triplet_margin_loss's two pairwise distances).
_ONE_CPU_OPERATOR = {
    name: _noted_as_one_operator(_overload(name))
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
    )
}


def _laid_out_as(position: int):
    """A meta kernel whose result is a new contiguous tensor like its argument at `position`."""

    def kernel(*args, **kwargs):
        return torch.empty_like(args[position], memory_format=torch.contiguous_format)

    return kernel


# Meta kernels for operators PyTorch has none for, while `DeviceKernels` is active: the gradients
# of the CTC, multi-class and multi-label margin losses, each a new contiguous tensor like the
# loss's input, as their CPU kernels make it (`full_like(log_probs, -inf)`, an empty tensor
# resized to the input's sizes). Without, a training step through these losses failed.
_META_KERNELS = {
    "_ctc_loss_backward": _laid_out_as(1),
    "_ctc_loss_backward.Tensor": _laid_out_as(1),
    "multi_margin_loss_backward": _laid_out_as(1),
    "multilabel_margin_loss_backward": _laid_out_as(1),
}


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
_ZERO_TENSOR_KERNELS = {
    "add.Tensor": _zero_tensor_add,
    "sub.Tensor": _zero_tensor_sub,
    "mul.Tensor": _zero_tensor_mul,
    "div.Tensor": _zero_tensor_div,
}

# Every kernel `DeviceKernels` registers on the process's dispatcher while active: (aten
# operator, dispatch key, kernel).
_DISPATCHER_KERNELS = (
    *[(name.removeprefix("aten."), "AutogradMeta", kernel) for name, kernel in _WHOLE_ON_META.items()],
    *[
        (name, key, kernel)
        for name, kernel in {**_VALUES_ONLY, **_ONE_CPU_OPERATOR}.items()
        for key in ("AutogradMeta", "AutogradCPU")
    ],
    *[(name, "Meta", kernel) for name, kernel in _META_KERNELS.items()],
    *[(name, "ZeroTensor", kernel) for name, kernel in _ZERO_TENSOR_KERNELS.items()],
)


def _registered(kernels) -> Any:
    """`kernels` ((aten operator, dispatch key, kernel)) registered on the process's dispatcher,
    each in the place of the key's kernel until the returned library's `reset()` (or its end),
    which puts PyTorch's back; none left registered where one fails. torch's own library object
    (what torch.library.Library wraps), not that wrapper, whose bookkeeping for checks of its own
    (a set of names, a lookup per Meta kernel, a finaliser) was a quarter of each registration's
    cost: the 59 of a trace took 1.4 ms through it, 1.0 without (medians of 200, a busy machine)."""
    library = torch._C._dispatch_library("IMPL", "aten", "", __file__, 0)
    try:
        for name, key, kernel in kernels:
            library.impl(name, key, kernel, False)  # False: the kernel is not handed the dispatch key set
    except BaseException:
        library.reset()
        raise
    return library


def _cpu_linear(input, weight, bias=None):
    """at::linear as a real CPU run computes it: where it neither flattens the input into one
    addmm nor takes a matrix, a product and the bias added in place (out of place under a
    dispatch mode, for tensors that look like subclasses there)."""
    if bias is None or input.dim() == 2 or _flattened_by_linear(input, bias):
        return torch._C._nn.linear(input, weight, bias)
    return torch.matmul(input, weight.t()).add_(bias)


def _cpu_one_hot(input, num_classes: int):
    """F.one_hot as a CPU computes it (Onehot.cpp): the indices' minimum and maximum for its
    checks (their values, which meta does not hold, not read), then a 1 scattered at each
    index into zeros."""
    input.aminmax()
    output = torch.zeros((*input.shape, num_classes), dtype=input.dtype, device=input.device)
    return output.scatter_(-1, input.unsqueeze(-1), 1)


@contextlib.contextmanager
def _no_value_negative():
    """While active, `bool()` of a one-element boolean meta tensor, a check meta holds no value
    for (gaussian_nll_loss's `torch.any(var < 0)`), answers False: none negative."""
    library = _registered([("_local_scalar_dense", "Meta", _false_on_meta)])
    try:
        yield
    finally:
        library.reset()


def _false_on_meta(tensor):
    if tensor.dtype != torch.bool or tensor.numel() != 1:
        raise RuntimeError("Tensor.item() cannot be called on meta tensors")
    return False


def _flattened_by_linear(input, bias) -> bool:
    """Whether linear.cpp flattens the input into one matrix product with the bias (addmm):
    a contiguous input of three dimensions, or of any number with a one-dimensional bias."""
    return input.is_contiguous() and (input.dim() == 3 or bias.dim() == 1)


def _group_norm_fits(input, num_groups: int, weight, bias) -> bool:
    """The composite's checks (check_group_norm_inputs) pass, and no mixed dtypes: where
    they do not, the composite raises its own error or takes its own road."""
    channels = input.size(1)
    if num_groups <= 0 or channels % num_groups != 0:
        return False
    return all(t is None or (t.dim() == 1 and t.numel() == channels and t.dtype == input.dtype) for t in (weight, bias))


def flash_attention_kernel(query, key, value, attn_mask, dropout_p: float, enable_gqa: bool) -> bool:
    """Whether a CPU runs this call as flash attention: `use_flash_attention_cpp` of
    PyTorch's sdp_utils_cpp, check by check (else it falls back to math)."""
    if not torch.backends.cuda.flash_sdp_enabled():  # one switch for CUDA and CPU flash alike
        return False
    tensors = (query, key, value)
    if any(t.is_nested for t in tensors) or dropout_p > 0.0:
        return False
    if any(t.dim() != 4 for t in tensors):
        return False
    if not _batch_and_heads_fit(query, key, value, enable_gqa):
        return False
    if attn_mask is not None and not _mask_fits(attn_mask, query, key):
        return False
    if not query.size(-1) == key.size(-1) == value.size(-1):
        return False
    if query.size(-2) == 0 or key.size(-2) == 0:
        return False
    if any(t.stride(-1) != 1 for t in tensors) or (attn_mask is not None and attn_mask.stride(-1) != 1):
        return False
    return query.dtype == key.dtype == value.dtype and query.dtype in _FLASH_DTYPES


def _batch_and_heads_fit(query, key, value, enable_gqa: bool) -> bool:
    """check_batch_size_and_num_heads_dense, grouped-query attention supported."""
    if not query.size(0) == key.size(0) == value.size(0):
        return False
    heads, key_heads, value_heads = query.size(-3), key.size(-3), value.size(-3)
    if enable_gqa:
        return key_heads == value_heads and heads % key_heads == 0
    return heads == key_heads == value_heads


def _mask_fits(mask, query, key) -> bool:
    """check_attn_mask_shape: a mask broadcastable as (L, S) or (B, H, L, S), grad-free."""
    if mask.requires_grad:
        return False
    if mask.size(-2) not in (query.size(2), 1) or mask.size(-1) not in (key.size(2), 1):
        return False
    if mask.dim() == 2:
        return True
    return mask.dim() == 4 and mask.size(0) in (1, query.size(0)) and mask.size(1) in (1, query.size(1))


def _is_lstm_on_input(args) -> bool:
    """torch.lstm's form for padded input, (input, (h0, c0), params, ...); not the packed one."""
    return len(args) == 9 and isinstance(args[1], (list, tuple))


def onednn_lstm_kernel(input, hx) -> bool:
    """Whether a CPU runs this LSTM with oneDNN: RNN.cpp's use_mkldnn (float32; bfloat16
    where the processor has oneDNN's bfloat16 instructions; float16 likewise, and only
    without autograd) and no projection (hidden and cell states of one size)."""
    h0, c0 = hx
    return (
        torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and _onednn_takes_dtype(input.dtype)
        and input.numel() != 0
        and h0.size(-1) == c0.size(-1)
    )


def _onednn_takes_dtype(dtype: torch.dtype) -> bool:
    if dtype == torch.bfloat16:
        return _processor_supports(torch.ops.mkldnn._is_mkldnn_bf16_supported)
    if dtype == torch.float16:
        return not torch.is_grad_enabled() and _processor_supports(torch.ops.mkldnn._is_mkldnn_fp16_supported)
    return dtype == torch.float32


@functools.cache
def _processor_supports(check) -> bool:
    """One of oneDNN's processor checks, asked once, outside the trace's dispatch mode (where
    the operator would be recorded)."""
    with _disable_current_modes():
        return bool(check())


def _onednn_lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    """mkldnn/RNN.cpp's mkldnn_rnn, op for op: a contiguous time-major input, one
    mkldnn_rnn_layer per layer and direction, directions concatenated, dropout between
    layers in training, the final states stacked."""
    h0, c0 = hx
    directions = 2 if bidirectional else 1
    hidden_size = h0.size(2)
    weights = _cell_weights(params, has_biases, projected=False)
    layer_input = (input.transpose(0, 1) if batch_first else input).contiguous()
    h0, c0 = h0.contiguous(), c0.contiguous()
    last_h, last_c = [], []
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            w_ih, w_hh, bias_ih, bias_hh, _ = weights[index]
            if not has_biases:  # RNN.cpp passes zeros the shapes of the weights as biases
                bias_hh = torch.zeros(w_hh.shape, dtype=w_hh.dtype, device=w_hh.device)
                bias_ih = torch.zeros(w_ih.shape, dtype=w_ih.dtype, device=w_ih.device)
            output, hy, cy, _ = torch.ops.aten.mkldnn_rnn_layer(
                layer_input, w_ih, w_hh, bias_ih, bias_hh, h0[index], c0[index], direction > 0, [],
                _ONEDNN_LSTM_MODE, hidden_size, num_layers, has_biases, bidirectional, batch_first, train,
            )  # fmt: skip
            outputs.append(output)
            last_h.append(hy)
            last_c.append(cy)
        layer_input = outputs[0] if directions == 1 else torch.cat(outputs, -1)
        if dropout != 0 and train and layer < num_layers - 1:
            layer_input = torch.dropout(layer_input, dropout, True)
    output = layer_input.transpose(0, 1) if batch_first else layer_input
    return output, torch.stack(last_h, 0), torch.stack(last_c, 0)


# --- RNN.cpp's own layers, as a CPU runs them ---------------------------------------------------
# On a CPU, FullLayer and FullBidirectionalLayer project the whole sequence's input at once
# (one product over steps x batch rows, `if (input.device().is_cpu())`), then run the cell
# per step on the hidden product alone; anywhere else, the meta device included, each step
# projects its own input. The functions below take the CPU's branch on meta tensors, issuing
# its aten ops in its order, in place where it writes in place.


def _routed_one_hidden_rnn(name: str, cell, *args, **kwargs):
    """torch._VF.gru, rnn_tanh and rnn_relu while DeviceKernels is active."""
    if (
        kwargs
        or not _is_one_hidden_rnn_on_input(args)
        or args[0].device.type != "meta"
        or not _has_steps(args[0], batch_first=args[8])
    ):
        return getattr(torch._C._VariableFunctions, name)(*args, **kwargs)
    return _cpu_one_hidden_rnn(cell, *args)


def _is_one_hidden_rnn_on_input(args) -> bool:
    """The form for padded input, (input, hx, params, ...); not the packed one, (data,
    batch_sizes, hx, params, ...), which keeps the composite road."""
    return len(args) == 9 and isinstance(args[2], (list, tuple))


def _has_steps(input, batch_first: bool) -> bool:
    return input.size(1 if batch_first else 0) > 0


def _cpu_one_hidden_rnn(cell, input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    """RNN.cpp's ONE_HIDDEN_RNN (gru, rnn_tanh, rnn_relu) on a CPU."""
    time_major = input.transpose(0, 1) if batch_first else input
    weights = _cell_weights(params, has_biases, projected=False)
    output, last = _cpu_layer_stack(cell, time_major, hx.unbind(0), weights, num_layers, dropout, train, bidirectional)
    last = torch.stack(last, 0)  # by _rnn_impl_with_concat, before the transposition
    if batch_first:
        output.transpose_(0, 1)
    return output, last


def _cpu_lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    """RNN.cpp's lstm where it takes neither cuDNN nor oneDNN, on a CPU."""
    h0, c0 = hx
    time_major = input.transpose(0, 1) if batch_first else input
    weights = _cell_weights(params, has_biases, projected=h0.size(2) != c0.size(2))
    hiddens = list(zip(h0.unbind(0), c0.unbind(0), strict=True))
    output, last = _cpu_layer_stack(_lstm_cell, time_major, hiddens, weights, num_layers, dropout, train, bidirectional)
    last_h, last_c = zip(*last, strict=True)
    last_c = torch.stack(last_c, 0)  # make_tuple's arguments, evaluated last first
    last_h = torch.stack(last_h, 0)
    return (output.transpose(0, 1) if batch_first else output), last_h, last_c


def _cell_weights(params, has_biases: bool, projected: bool) -> list[tuple]:
    """RNN.cpp's gather_params: per layer and direction, (w_ih, w_hh, b_ih, b_hh, w_hr),
    None for the biases and projection a layer does not have."""
    per_cell = 2 + 2 * has_biases + projected
    cells = [params[start : start + per_cell] for start in range(0, len(params), per_cell)]
    return [
        (w[0], w[1], w[2] if has_biases else None, w[3] if has_biases else None, w[-1] if projected else None)
        for w in cells
    ]


def _cpu_layer_stack(cell, input, hiddens, weights, num_layers, dropout, train, bidirectional):
    """apply_layer_stack: each layer's output the next one's input, dropout between them in
    training; returns the last output and every cell's final hidden state."""
    layer_input, last = input, []
    for layer in range(num_layers):
        if bidirectional:
            cells = slice(2 * layer, 2 * layer + 2)
            layer_input, hidden = _full_bidirectional_layer(cell, layer_input, hiddens[cells], weights[cells])
            last.extend(hidden)
        else:
            layer_input, hidden = _full_layer(cell, layer_input, hiddens[layer], weights[layer])
            last.append(hidden)
        if dropout != 0 and train and layer < num_layers - 1:
            layer_input = torch.dropout(layer_input, dropout, True)
    return layer_input, last


def _full_layer(cell, input, hidden, weights):
    """FullLayer on a CPU: the input projected for every step at once, then the cell step by
    step, the outputs stacked."""
    steps = _projected_steps(input, weights)
    outputs, hidden = _cell_loop(cell, steps, hidden, weights)
    return torch.stack(outputs, 0), hidden


def _full_bidirectional_layer(cell, input, hiddens, weights):
    """FullBidirectionalLayer on a CPU: a FullLayer forward, then one backward from the last
    step, the two outputs concatenated. Its locals hold the forward's step outputs and the
    backward's projection to the end, and the forward's projection until the backward's is
    made: so are they held here, for an inference's peak."""
    forward_steps = _projected_steps(input, weights[0])
    forward_outputs, forward_hidden = _cell_loop(cell, forward_steps, hiddens[0], weights[0])
    forward_output = torch.stack(forward_outputs, 0)
    backward_steps = _projected_steps(input, weights[1])
    del forward_steps  # C++'s step_inputs, given the backward's steps
    backward_outputs, backward_hidden = _cell_loop(cell, backward_steps[::-1], hiddens[1], weights[1])
    backward_output = torch.stack(backward_outputs[::-1], 0)
    output = torch.cat([forward_output, backward_output], forward_output.dim() - 1)
    return output, (forward_hidden, backward_hidden)


def _projected_steps(input, weights):
    """The input's projection for every step at once (one product over steps x batch rows), one view a step."""
    w_ih, _, b_ih, _, _ = weights
    return _cpu_linear(input, w_ih, b_ih).unbind(0)


def _cell_loop(cell, steps, hidden, weights):
    """The cell over the projected steps in turn: each step's output (an LSTM's hidden
    state, not its cell state) and the last hidden state."""
    outputs = []
    for step in steps:
        hidden = cell(step, hidden, weights)
        outputs.append(hidden[0] if isinstance(hidden, tuple) else hidden)
    return outputs, hidden


def _lstm_cell(step, hidden, weights):
    """LSTMCell on a CPU, its input already projected."""
    hx, cx = hidden
    _, w_hh, _, b_hh, w_hr = weights
    gates = _cpu_linear(hx, w_hh, b_hh).add_(step)
    in_gate, forget_gate, cell_gate, out_gate = gates.unsafe_chunk(4, 1)
    in_gate = in_gate.sigmoid_()
    forget_gate = forget_gate.sigmoid_()
    cell_gate = cell_gate.tanh_()
    out_gate = out_gate.sigmoid_()
    cy = (forget_gate * cx).add_(in_gate * cell_gate)
    hy = out_gate * cy.tanh()
    if w_hr is not None:
        hy = torch.matmul(hy, w_hr.t())
    return hy, cy


def _gru_cell(step, hidden, weights):
    """GRUCell on a CPU, its input already projected."""
    _, w_hh, _, b_hh, _ = weights
    input_gates = step.unsafe_chunk(3, 1)
    hidden_gates = _cpu_linear(hidden, w_hh, b_hh).unsafe_chunk(3, 1)
    reset_gate = hidden_gates[0].add_(input_gates[0]).sigmoid_()
    update_gate = hidden_gates[1].add_(input_gates[1]).sigmoid_()
    new_gate = input_gates[2].add(hidden_gates[2].mul_(reset_gate)).tanh_()
    return (hidden - new_gate).mul_(update_gate).add_(new_gate)


def _tanh_cell(step, hidden, weights):
    """SimpleCell<tanh_f> on a CPU, its input already projected."""
    _, w_hh, _, b_hh, _ = weights
    return torch.tanh(_cpu_linear(hidden, w_hh, b_hh).add_(step))


def _relu_cell(step, hidden, weights):
    """SimpleCell<relu_f> on a CPU, its input already projected."""
    _, w_hh, _, b_hh, _ = weights
    return torch.relu(_cpu_linear(hidden, w_hh, b_hh).add_(step))


_ONE_HIDDEN_CELLS = {"gru": _gru_cell, "rnn_tanh": _tanh_cell, "rnn_relu": _relu_cell}
# What `DeviceKernels` sets as torch._VF's gru, rnn_tanh and rnn_relu while active.
_ONE_HIDDEN_ROUTES = {
    name: functools.partial(_routed_one_hidden_rnn, name, cell) for name, cell in _ONE_HIDDEN_CELLS.items()
}


def onednn_lstm_workspace_bytes(
    steps: int, batch: int, input_size: int, hidden_size: int, dtype: torch.dtype = torch.float32
) -> int:
    """Bytes of the workspace oneDNN's LSTM returns for one layer and direction (oneDNN's
    rnn_utils set_workspace_sizes / set_offsets): gates, hidden states, the layer states and
    the cell states in the data type; two regions the size of the layer states and the cell
    states' gradient in float32, oneDNN's accumulation type; each region starting on a 4 KiB
    page. Measured on the CPU kernel over a grid of sizes, in float32 and bfloat16
    (tests/test_memory_kernels.py)."""
    size, accumulated = dtype.itemsize, torch.float32.itemsize
    states = 2 * (steps + 1) * batch
    widest = max(input_size, hidden_size)
    regions = (
        steps * batch * _good_leading_dimension(4 * hidden_size, size) * size,  # gates
        steps * batch * _good_leading_dimension(hidden_size, size) * size,  # hidden states
        states * _good_leading_dimension(widest, size) * size,  # layer states
        *[states * _good_leading_dimension(widest, accumulated) * accumulated] * 2,
        states * hidden_size * size,  # cell states
        states * hidden_size * accumulated,  # their gradient
    )
    offset = 0
    for region in regions:
        offset = _round_up(offset, _PAGE) + region
    return _round_up(offset, _PAGE)


_PAGE = 4096


def _good_leading_dimension(dim: int, size: int) -> int:
    """oneDNN's get_good_ld for elements of `size` bytes: a multiple of 64 bytes, never of
    256 elements (4K aliasing)."""
    multiple = 64 // size
    ld = _round_up(dim, multiple)
    return ld + multiple if ld % 256 == 0 else ld


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def onednn_lstm_layer_shapes(
    input, w0, w1, w2, w3, hx, cx, reverse, batch_sizes, mode, hidden_size, *rest, dtype: torch.dtype
):
    """Output shapes of aten.mkldnn_rnn_layer (time-major input, as mkldnn_rnn passes it,
    of `dtype`): output, last hidden and cell states, and the uint8 workspace its meta
    kernel leaves empty. The CPU kernel returns a workspace only while autograd records
    (grad enabled, whatever its `train` flag); without, its scratch buffers live inside the
    call and are not counted, like every kernel's."""
    steps, batch, input_size = input
    workspace = (
        onednn_lstm_workspace_bytes(steps, batch, input_size, hidden_size, dtype) if torch.is_grad_enabled() else 0
    )
    return [(steps, batch, hidden_size), hx, cx, ((workspace,), torch.uint8)]
