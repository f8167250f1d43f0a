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
and `nn.MultiheadAttention` call), `torch._VF.lstm` (what `nn.LSTM` calls),
`torch.batch_norm` (what `F.batch_norm` calls), `torch.group_norm` (what
`F.group_norm` calls) and `torch.nn.functional.linear` (what `nn.Linear` calls). A
TorchFunctionMode would see every call however made, but costs every torch call of every
model a Python round trip (3 ms of resnet50's 20 ms trace); a call through another name
(`torch._C._nn.scaled_dot_product_attention`, a name imported before the trace) keeps the
composite road: the figures of its math decomposition, as PyTorch's meta device gives.

Modelled (PyTorch 2.x, CPU):

- attention: `_scaled_dot_product_flash_attention_for_cpu` wherever `sdp_utils_cpp`'s
  `use_flash_attention_cpp` accepts the call (`flash_attention_kernel`), else the math
  decomposition. `Graph.kernels` says which, per call. On CUDA (not modelled) PyTorch's
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
- recurrent layers: `nn.LSTM` in float32 with oneDNN enabled runs `mkldnn_rnn_layer` per
  layer and direction (RNN.cpp's `use_mkldnn`); its workspace is sized by
  `onednn_lstm_workspace_bytes`. GRU and plain RNN layers run the cell loop on the CPU too
  (no oneDNN path), as do bfloat16 and float16 LSTMs (oneDNN's choice depends on the
  processor's instructions there), LSTMs with projections and packed sequences.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch._prims_common import suggest_memory_format

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


class DeviceKernels:
    """Routes attention, LSTM, batch-norm, group-norm and linear calls to the kernels a CPU
    would run, while active (a context manager); counts each attention and LSTM choice in
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
        self._attention_function = torch.nn.functional.scaled_dot_product_attention
        self._batch_norm_function = torch.batch_norm
        self._group_norm_function = torch.group_norm
        self._linear_function = torch.nn.functional.linear

    def __enter__(self) -> DeviceKernels:
        self._attention_function = torch.nn.functional.scaled_dot_product_attention
        self._batch_norm_function = torch.batch_norm
        self._group_norm_function = torch.group_norm
        self._linear_function = torch.nn.functional.linear
        torch.nn.functional.scaled_dot_product_attention = self._routed_attention
        torch._VF.lstm = self._routed_lstm  # over VFModule's __getattr__, until deleted
        torch.batch_norm = self._routed_batch_norm
        torch.group_norm = self._routed_group_norm
        torch.nn.functional.linear = self._routed_linear
        return self

    def __exit__(self, *exc) -> None:
        torch.nn.functional.scaled_dot_product_attention = self._attention_function
        del torch._VF.lstm
        torch.batch_norm = self._batch_norm_function
        torch.group_norm = self._group_norm_function
        torch.nn.functional.linear = self._linear_function

    def _routed_batch_norm(self, input, weight, bias, running_mean, running_var, training, momentum, eps, *cudnn):
        if input.device.type not in ("meta", "cpu") or input.numel() == 0:
            return self._batch_norm_function(
                input, weight, bias, running_mean, running_var, training, momentum, eps, *cudnn
            )
        _check_batch_norm_features(input, weight, bias, running_mean, running_var, training)
        args = (input, weight, bias, running_mean, running_var, bool(training), float(momentum), float(eps))
        answered = self._answer(_NATIVE_BATCH_NORM, args) if self._answer is not None else None
        output, _, _ = answered if answered is not None else _NATIVE_BATCH_NORM(*args)
        return output

    def _routed_group_norm(self, input, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
        memory_format = suggest_memory_format(input)  # group_norm.cpp's, on a CPU
        if (
            input.device.type != "meta"
            or memory_format == torch.contiguous_format
            or not _group_norm_fits(input, num_groups, weight, bias)
        ):
            return self._group_norm_function(input, num_groups, weight, bias, eps, cudnn_enabled)
        batch, channels, *spatial = input.shape
        output, _, _ = _NATIVE_GROUP_NORM(
            input.contiguous(memory_format=memory_format),
            None if weight is None else weight.contiguous(),
            None if bias is None else bias.contiguous(),
            batch,
            channels,
            math.prod(spatial),
            num_groups,
            float(eps),
        )
        return output

    def _routed_linear(self, input, weight, bias=None):
        if bias is None or input.device.type != "meta" or input.dim() == 2 or _flattened_by_linear(input, bias):
            return self._linear_function(input, weight, bias)
        return torch.matmul(input, weight.t()).add_(bias)

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
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            # As attention.cpp's convert_boolean_attn_mask: True keeps a score, False masks it.
            keep = torch.scalar_tensor(0.0, dtype=query.dtype, device=query.device)
            drop = torch.scalar_tensor(-math.inf, dtype=query.dtype, device=query.device)
            attn_mask = torch.where(attn_mask, keep, drop)
        output, _ = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale
        )
        return output

    def _lstm(self, input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
        if not onednn_lstm_kernel(input, hx, params, has_biases, num_layers, bidirectional):
            self.chosen[f"{LSTM}: {CELL_LOOP}"] += 1
            return torch.lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
        self.chosen[f"{LSTM}: {ONEDNN_LSTM}"] += 1
        return _onednn_lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)


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


def onednn_lstm_kernel(input, hx, params, has_biases: bool, num_layers: int, bidirectional: bool) -> bool:
    """Whether a CPU runs this LSTM with oneDNN (RNN.cpp's use_mkldnn, float32 only, and
    no projection: four or two weights per layer and direction)."""
    directions = 2 if bidirectional else 1
    per_layer = 4 if has_biases else 2
    return (
        torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and input.dtype == torch.float32
        and input.numel() != 0
        and len(params) == num_layers * directions * per_layer
    )


def _onednn_lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    """mkldnn/RNN.cpp's mkldnn_rnn, op for op: a contiguous time-major input, one
    mkldnn_rnn_layer per layer and direction, directions concatenated, dropout between
    layers in training, the final states stacked."""
    h0, c0 = hx
    directions = 2 if bidirectional else 1
    per_layer = 4 if has_biases else 2
    hidden_size = h0.size(2)
    layer_input = (input.transpose(0, 1) if batch_first else input).contiguous()
    h0, c0 = h0.contiguous(), c0.contiguous()
    last_h, last_c = [], []
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            weights = params[index * per_layer : (index + 1) * per_layer]
            if has_biases:
                bias_ih, bias_hh = weights[2], weights[3]
            else:  # RNN.cpp passes zeros the shapes of the weights as biases
                bias_hh = torch.zeros(weights[1].shape, dtype=weights[1].dtype, device=weights[1].device)
                bias_ih = torch.zeros(weights[0].shape, dtype=weights[0].dtype, device=weights[0].device)
            output, hy, cy, _ = torch.ops.aten.mkldnn_rnn_layer(
                layer_input, weights[0], weights[1], bias_ih, bias_hh, h0[index], c0[index], direction > 0, [],
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


def onednn_lstm_workspace_bytes(steps: int, batch: int, input_size: int, hidden_size: int) -> int:
    """Bytes of the workspace oneDNN's float32 LSTM returns for one layer and direction
    (oneDNN's rnn_utils set_workspace_sizes / set_offsets): gates, hidden states, three
    copies of the layer states (the iteration states are registered twice), the cell states
    and their gradient, each region starting on a 4 KiB page. Measured on the CPU kernel
    over a grid of sizes (tests/test_memory_kernels.py)."""
    size = 4  # float32
    states_ld = _good_leading_dimension(max(input_size, hidden_size))
    regions = (
        steps * batch * _good_leading_dimension(4 * hidden_size) * size,  # gates
        steps * batch * _good_leading_dimension(hidden_size) * size,  # hidden states
        *[2 * (steps + 1) * batch * states_ld * size] * 3,  # layer and iteration states
        *[2 * (steps + 1) * batch * hidden_size * size] * 2,  # cell states and their gradient
    )
    offset = 0
    for region in regions:
        offset = _round_up(offset, _PAGE) + region
    return _round_up(offset, _PAGE)


_PAGE = 4096


def _good_leading_dimension(dim: int) -> int:
    """oneDNN's get_good_ld for float32: a multiple of 64 bytes, never of 1 KiB (4K aliasing)."""
    ld = _round_up(dim, 16)
    return ld + 16 if ld % 256 == 0 else ld


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def onednn_lstm_layer_shapes(input, w0, w1, w2, w3, hx, cx, reverse, batch_sizes, mode, hidden_size, *rest):
    """Output shapes of aten.mkldnn_rnn_layer (time-major input, as mkldnn_rnn passes it):
    output, last hidden and cell states, and the uint8 workspace its meta kernel leaves
    empty. The CPU kernel returns a workspace only while autograd records (grad enabled,
    whatever its `train` flag); without, its scratch buffers live inside the call and are
    not counted, like every kernel's."""
    steps, batch, input_size = input
    workspace = onednn_lstm_workspace_bytes(steps, batch, input_size, hidden_size) if torch.is_grad_enabled() else 0
    return [(steps, batch, hidden_size), hx, cx, ((workspace,), torch.uint8)]
