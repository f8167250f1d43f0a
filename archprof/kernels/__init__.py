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
`torch.nn.functional.one_hot` (`F.one_hot`), `torch.nn.functional.gaussian_nll_loss`,
`torch._native_multi_head_attention` and `torch._transformer_encoder_layer_fwd` (the fast
paths of nn.MultiheadAttention and nn.TransformerEncoderLayer: on meta, with the checks a
CPU makes first, `attention.check_fused_attention`) and the name of
PyTorch's private-use device (`torch.utils.backend_registration._privateuse1_backend_name`); and,
below every Python name, the kernels of the aten operators `linalg_svdvals`, `linalg_eigvalsh` and `linalg_eigvals`. A
TorchFunctionMode would see every call however made, but costs every torch call of every
model a Python round trip (3 ms of resnet50's 20 ms trace); a call through another name
(`torch._C._nn.scaled_dot_product_attention`, a name imported before the trace) keeps the
composite road: the figures of its math decomposition, as PyTorch's meta device gives.

Modelled (PyTorch 2.x, CPU):

- batch norm: `native_batch_norm`, called directly, on meta and CPU tensors alike (so a
  real CPU trace records the same ops). The composite `torch.batch_norm` takes that kernel
  on a CPU but first makes an empty "reserve" tensor for cuDNN's sake, an operator of its
  own that holds no byte, computes nothing and costs the trace a fifth of a BatchNorm's
  time. An empty input keeps the composite road (it returns early, without the kernel), as
  does any other device (CUDA picks cuDNN there). In an inference trace on meta the call
  is handed to the recorder at once (`DeviceKernels`' `answering`).
- group norm: on a CPU the composite keeps a channels-last input as it is and hands it to
  `native_group_norm`, which writes its output channels last too; anywhere else it makes
  the input contiguous first (group_norm.cpp: `input.device().is_cpu() ?
  input.contiguous(memory_format) : input.contiguous()`). On meta that is a copy a CPU
  never makes, which a training step keeps for the backward (PoolFormerV2's GroupNorm
  after a LayerNorm over permuted channels). A channels-last input on meta goes straight to
  `native_group_norm`, after the composite's checks; any other call keeps the composite
  road, where the CPU's takes the same ops.
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
- inference fast paths: in inference (evaluation without grad), nn.MultiheadAttention's
  forward runs one fused CPU kernel, `_native_multi_head_attention` (the projections, the
  scores, the softmax and the product with the values, its B x heads x L x S scores freed
  inside: workspace), and nn.TransformerEncoderLayer's runs its whole layer as one,
  `_transformer_encoder_layer_fwd` (that attention, the residual adds, both layer norms and
  the feed-forward block), where their checks pass (self-attention, `batch_first`, an even
  head count, ...), among them that every tensor is on a CPU, CUDA, XPU or the private-use
  device, which they name by `_privateuse1_backend_name`, read on each call. While active
  that name is "meta": a meta tensor passes as a CPU one, and the forward takes the road a
  CPU's takes, by PyTorch's own checks (a real trace turns the fast paths off:
  `trace.native_attention_off`). The attention's weights, where none were asked for, are
  None, as a CPU's (the meta kernel's are an empty tensor).
- a user's own copy (`Tensor.clone`, `resolve_conj`, `resolve_neg` and their `torch` functions,
  wrapped while active): noted as the user's (the recorder's `users_copy`), as a dispatch mode
  cannot tell its `clone` of a conjugate view from the one PyTorch's math-bit fallback makes
  inside the operator reading the view, that operator's workspace.

The rest in the package's modules, one job each: `attention`, `linear`, `recurrent`,
`linalg_values`, `one_cpu_operator` (mish's and cumprod's gradients, isfinite, and the
composites of a forward), `loss_gradients` and `zero_tensor`.
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
from torch._C import DispatchKey
from torch._prims_common import suggest_memory_format
from torch.utils import backend_registration
from torch.utils._python_dispatch import _get_current_dispatch_mode

from archprof.kernels.attention import (
    ATTENTION,
    FLASH_CPU,
    MATH,
    check_fused_attention,
    flash_attention,
    flash_attention_kernel,
)
from archprof.kernels.linalg_values import VALUES_ONLY
from archprof.kernels.linear import cpu_linear
from archprof.kernels.loss_gradients import META_KERNELS
from archprof.kernels.one_cpu_operator import (
    ONE_CPU_OPERATOR,
    WHOLE_ON_META,
    aten_overload,
    noted_as_one_cpu_operator,
)
from archprof.kernels.recurrent import (
    CELL_LOOP,
    LSTM,
    ONE_HIDDEN_CELLS,
    ONE_HIDDEN_ROUTES,
    ONEDNN_LSTM,
    cpu_lstm,
    cpu_packed_lstm,
    has_packed_steps,
    has_steps,
    is_lstm_on_input,
    is_packed_lstm,
    one_batch_size,
    onednn_lstm,
    onednn_lstm_kernel,
    onednn_packed_lstm,
)
from archprof.kernels.zero_tensor import ZERO_TENSOR_KERNELS

_NATIVE_BATCH_NORM = torch.ops.aten.native_batch_norm.default
_NATIVE_GROUP_NORM = torch.ops.aten.native_group_norm.default


# The Python names `DeviceKernels` routes while active: (the object holding it, its name, the
# attribute keeping its function, the method standing in for it).
_ROUTED = (
    (torch.nn.functional, "scaled_dot_product_attention", "_attention_function", "_routed_attention"),
    (torch, "batch_norm", "_batch_norm_function", "_routed_batch_norm"),
    (torch, "group_norm", "_group_norm_function", "_routed_group_norm"),
    (torch.nn.functional, "linear", "_linear_function", "_routed_linear"),
    (torch.nn.functional, "one_hot", "_one_hot_function", "_routed_one_hot"),
    (torch.nn.functional, "gaussian_nll_loss", "_gaussian_nll_loss_function", "_routed_gaussian_nll_loss"),
    (torch, "_native_multi_head_attention", "_multi_head_attention_function", "_routed_multi_head_attention"),
    (torch, "_transformer_encoder_layer_fwd", "_encoder_layer_function", "_routed_encoder_layer"),
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

    `answering`, where given (the trace's recorder in an inference trace), takes a call's
    input and returns what records an operator as the dispatch mode would (operator,
    arguments -> what it returns), or None where calls on that input cannot skip the
    dispatcher: a batch norm, and the operators of a linear layer's one addmm
    (`cpu_linear`), go to it straight, not down through the C++ dispatcher and back up into
    Python (a quarter of a batch norm's cost, a sixth of a linear layer's).

    `below_autograd`: the forward runs below autograd's keys (an inference trace on meta),
    where none of the autograd kernels would be reached: only the Meta and ZeroTensor ones are
    registered, 8 of 93. The composite operators those autograd kernels stand in for reach the
    trace's recorder whole there, which runs the same kernels (`AUTOGRAD_KERNELS`)."""

    def __init__(
        self,
        answering: Callable[[torch.Tensor], Callable[[Any, tuple], Any] | None] | None = None,
        below_autograd: bool = False,
    ) -> None:
        self.chosen: Counter[str] = Counter()
        self._answering = answering or _no_answer
        # Where the forward runs below autograd's keys, no autograd kernel is reached: the
        # composites reach the recorder whole, which runs `AUTOGRAD_KERNELS` itself.
        self._kernels = _BELOW_AUTOGRAD_KERNELS if below_autograd else _DISPATCHER_KERNELS
        self._library = None  # while active: the dispatcher's kernels of `self._kernels` (`_registered`)
        self._own_copies: dict[tuple, Any] = {}  # while active: `_USERS_COPIES`' own attributes (None: inherited)
        # While active: torch._VF's own attributes of the recurrent names (None: VFModule's
        # __getattr__ answers), a caller's or an outer trace's (a trace inside a forward).
        self._own_recurrent: dict[str, Any] = {}
        self._private_use_name: str | None = None  # while active: the private-use device's name, "meta" meanwhile

    def _take_the_functions(self) -> None:
        """Each routed Python name's function as it is now (`_ROUTED`), which a call the route
        does not take goes on to, and `__exit__` puts back."""
        for owner, name, original, _ in _ROUTED:
            setattr(self, original, getattr(owner, name))

    def __enter__(self) -> DeviceKernels:
        # First, as the one step that may fail (a kernel the dispatcher refuses): nothing else is changed yet.
        with warnings.catch_warnings():  # that the ZeroTensor kernels override PyTorch's, which __exit__ puts back
            warnings.simplefilter("ignore", UserWarning)
            self._library = _registered(self._kernels)
        self._take_the_functions()
        for owner, name, _, routed in _ROUTED:
            setattr(owner, name, getattr(self, routed))
        self._own_recurrent = {name: vars(torch._VF).get(name) for name in (LSTM, *ONE_HIDDEN_CELLS)}
        torch._VF.lstm = self._routed_lstm  # over VFModule's __getattr__, until deleted
        self._own_copies = {(owner, name): vars(owner).get(name) for owner, name in _USERS_COPIES}
        for owner, name in _USERS_COPIES:
            setattr(owner, name, _noted_as_the_users_copy(getattr(owner, name)))
        for name, routed in ONE_HIDDEN_ROUTES.items():
            setattr(torch._VF, name, routed)
        self._private_use_name = backend_registration._privateuse1_backend_name
        backend_registration._privateuse1_backend_name = "meta"  # the inference fast paths' device checks
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._private_use_name is not None:
                backend_registration._privateuse1_backend_name = self._private_use_name
                self._private_use_name = None
            for owner, name, original, _ in _ROUTED:
                setattr(owner, name, getattr(self, original))
            _put_back(torch._VF, self._own_recurrent)
            _put_back(None, self._own_copies)
        finally:  # whatever failed above, the process's dispatcher is PyTorch's again
            self._library.reset()  # PyTorch's kernels again where these stood in for them

    def _routed_batch_norm(self, input, weight, bias, running_mean, running_var, training, momentum, eps, *cudnn):
        if input.device.type not in ("meta", "cpu") or input.numel() == 0:
            return self._batch_norm_function(
                input, weight, bias, running_mean, running_var, training, momentum, eps, *cudnn
            )
        _check_batch_norm_features(input, weight, bias, running_mean, running_var, training)
        args = (input, weight, bias, running_mean, running_var, bool(training), float(momentum), float(eps))
        with noted_as_one_cpu_operator():  # the statistics not saved let go of inside, as by the CPU's batch_norm
            return self._native_batch_norm(args)[0]

    def _native_batch_norm(self, args: tuple):
        """`native_batch_norm`'s three outputs, answered by the trace where it can."""
        answer = self._answering(args[0])
        return answer(_NATIVE_BATCH_NORM, args) if answer is not None else _NATIVE_BATCH_NORM(*args)

    def _routed_group_norm(self, input, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
        memory_format = suggest_memory_format(input)  # group_norm.cpp's, on a CPU
        if (
            input.device.type != "meta"
            or memory_format == torch.contiguous_format
            or not _group_norm_fits(input, num_groups, weight, bias)
        ):
            return self._group_norm_function(input, num_groups, weight, bias, eps, cudnn_enabled)
        batch, channels, *spatial = input.shape
        with noted_as_one_cpu_operator():  # mean and rstd let go of inside, as by the CPU's group_norm
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
        return cpu_linear(input, weight, bias, self._answering(input))

    def _routed_one_hot(self, input, num_classes=-1):
        on_meta = input.device.type == "meta" and input.dtype == torch.long
        if on_meta and (num_classes == 0 or num_classes < -1 or (num_classes == -1 and input.numel() == 0)):
            # Refused by a CPU whatever the values (Onehot.cpp: every index is at least 0, or
            # none to count the classes of), where meta answers: the CPU's own error, raised
            # by a stand-in of zeros, empty where the input is.
            self._one_hot_function(torch.zeros(min(input.numel(), 1), dtype=torch.long), num_classes)
        if not on_meta or num_classes < 0 or input.numel() == 0:
            return self._one_hot_function(input, num_classes)
        return _cpu_one_hot(input, num_classes)

    def _routed_gaussian_nll_loss(self, input, target, var, *args, **kwargs):
        if not isinstance(var, torch.Tensor) or var.device.type != "meta":
            return self._gaussian_nll_loss_function(input, target, var, *args, **kwargs)
        with _no_value_negative():
            return self._gaussian_nll_loss_function(input, target, var, *args, **kwargs)

    def _routed_multi_head_attention(self, *args, **kwargs):
        if args[0].device.type == "meta":
            check_fused_attention(*args[:7])  # query, key, value, embed_dim, num_head, qkv_weight, qkv_bias
        output, weights = self._multi_head_attention_function(*args, **kwargs)
        if output.device.type != "meta":  # a CPU's or a GPU's call: its answer as it is (weights None or not)
            return output, weights
        asked = kwargs.get("need_weights", args[10] if len(args) > 10 else True)
        # No weights asked for: a CPU returns none (None), the meta kernel an empty tensor.
        return output, (weights if asked else None)

    def _routed_encoder_layer(self, src, embed_dim, num_heads, qkv_weight, qkv_bias, *args, **kwargs):
        if src.device.type == "meta":  # its attention's checks, on src as query, key and value
            check_fused_attention(src, src, src, embed_dim, num_heads, qkv_weight, qkv_bias)
        return self._encoder_layer_function(src, embed_dim, num_heads, qkv_weight, qkv_bias, *args, **kwargs)

    def _routed_attention(self, query, *args, **kwargs):
        if query.device.type != "meta":
            return self._attention_function(query, *args, **kwargs)
        return self._attention(query, *args, **kwargs)

    def _routed_lstm(self, *args, **kwargs):
        if not kwargs and args[0].device.type == "meta":
            if is_lstm_on_input(args):
                return self._lstm(*args)
            if is_packed_lstm(args) and has_packed_steps(args[1]):
                return self._packed_lstm(*args)
        return torch._C._VariableFunctions.lstm(*args, **kwargs)

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
        with noted_as_one_cpu_operator():
            return flash_attention(query, key, value, attn_mask, dropout_p, is_causal, scale)

    def _lstm(self, input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
        onednn = onednn_lstm_kernel(input, hx)
        lstm = self._lstm_road(onednn, onednn_lstm, cpu_lstm)
        if not onednn and not has_steps(input, batch_first):  # the composite refuses it, as on a CPU
            return torch.lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
        # One operator on a CPU (aten::lstm): the time-major copy, the projected input, each
        # step's gates, let go of inside (all of them in inference), are its workspace.
        with noted_as_one_cpu_operator():
            return lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)

    def _packed_lstm(self, data, batch_sizes, hx, params, has_biases, num_layers, dropout, train, bidirectional):
        # A packed sequence: RNN.cpp's packed lstm, oneDNN's where every step has as many rows
        # and the padded lstm would take it, else the cell loop; one operator on a CPU too.
        onednn = onednn_lstm_kernel(data, hx) and one_batch_size(batch_sizes)
        lstm = self._lstm_road(onednn, onednn_packed_lstm, cpu_packed_lstm)
        with noted_as_one_cpu_operator():
            return lstm(data, batch_sizes, hx, params, has_biases, num_layers, dropout, train, bidirectional)

    def _lstm_road(self, onednn: bool, onednn_road, cell_loop_road):
        """The road of an LSTM a CPU runs with oneDNN or with its cell loop, counted in `chosen`."""
        self.chosen[f"{LSTM}: {ONEDNN_LSTM if onednn else CELL_LOOP}"] += 1
        return onednn_road if onednn else cell_loop_road


def _no_answer(input) -> None:
    """`DeviceKernels`' `answering` where none is given: every call goes through the dispatcher."""
    return None


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


def _put_back(owner: Any, attributes: dict) -> None:
    """Each attribute of `owner` as it was: set again, or deleted where it had none of its own
    (None: a class's inherited one, torch._VF's answered by its __getattr__). Keys are names, or
    (owner, name) where `owner` is None."""
    for key, own in attributes.items():
        holder, name = (owner, key) if owner is not None else key
        if own is not None:
            setattr(holder, name, own)
        elif name in vars(holder):
            delattr(holder, name)


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


# The autograd kernels of composite operators, by operator name ("ctc_loss.IntList").
_COMPOSITES_KERNELS = {**VALUES_ONLY, **ONE_CPU_OPERATOR}

# The kernels `DeviceKernels` registers on the process's dispatcher while active: (aten
# operator, dispatch key, kernel). Keys as torch's enum, not their names: pybind11 converts a
# name to the enum only after failing to take it for one, four tenths of each registration.
# Those of keys a forward run below autograd's keys (`below_autograd`) still reaches...
_BELOW_AUTOGRAD_KERNELS = (
    *[(name, DispatchKey.Meta, kernel) for name, kernel in META_KERNELS.items()],
    *[(name, DispatchKey.ZeroTensor, kernel) for name, kernel in ZERO_TENSOR_KERNELS.items()],
)
# ...and every one, autograd's too.
_DISPATCHER_KERNELS = (
    *[(name.removeprefix("aten."), DispatchKey.AutogradMeta, kernel) for name, kernel in WHOLE_ON_META.items()],
    *[
        (name, key, kernel)
        for name, kernel in _COMPOSITES_KERNELS.items()
        for key in (DispatchKey.AutogradMeta, DispatchKey.AutogradCPU)
    ],
    *_BELOW_AUTOGRAD_KERNELS,
)

# The same by operator overload: what the trace's recorder runs for such an operator where it
# reaches the recorder whole, autograd's keys skipped (a forward run below them, an inference
# mode), as the autograd key on a CPU would run it.
AUTOGRAD_KERNELS = {aten_overload(name): kernel for name, kernel in _COMPOSITES_KERNELS.items()}


def _registered(kernels) -> Any:
    """`kernels` ((aten operator, `DispatchKey`, kernel)) registered on the process's dispatcher,
    each in the place of the key's kernel until the returned library's `reset()` (or its end),
    which puts PyTorch's back; none left registered where one fails. torch's own library object
    (what torch.library.Library wraps), not that wrapper, whose bookkeeping for checks of its own
    (a set of names, a lookup per Meta kernel, a finaliser) was a quarter of each registration's
    cost: the 59 of a trace then took 1.4 ms through it, 1.0 without (medians of 200, a busy machine)."""
    library = torch._C._dispatch_library("IMPL", "aten", "", __file__, 0)
    try:
        for name, key, kernel in kernels:
            library.impl(name, key, kernel, False)  # False: the kernel is not handed the dispatch key set
    except BaseException:
        library.reset()
        raise
    return library


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
    library = _registered([("_local_scalar_dense", DispatchKey.Meta, _false_on_meta)])
    try:
        yield
    finally:
        library.reset()


def _false_on_meta(tensor):
    if tensor.dtype != torch.bool or tensor.numel() != 1:
        raise RuntimeError("Tensor.item() cannot be called on meta tensors")
    return False


def _group_norm_fits(input, num_groups: int, weight, bias) -> bool:
    """The composite's checks (check_group_norm_inputs) pass, and no mixed dtypes: where
    they do not, the composite raises its own error or takes its own road."""
    channels = input.size(1)
    if num_groups <= 0 or channels % num_groups != 0:
        return False
    return all(t is None or (t.dim() == 1 and t.numel() == channels and t.dtype == input.dtype) for t in (weight, bias))
