"""Attention as a CPU runs it: whether `sdp_utils_cpp` takes CPU flash attention for a call
(`flash_attention_kernel`), and the flash kernel's call (`flash_attention`), for
`DeviceKernels`.

Modelled (PyTorch 2.x, CPU):

- attention: `_scaled_dot_product_flash_attention_for_cpu` wherever `sdp_utils_cpp`'s
  `use_flash_attention_cpp` accepts the call (`flash_attention_kernel`), else the math
  decomposition; either noted as the one operator `scaled_dot_product_attention` a CPU runs
  (its scores and softmax, flash's float mask and log-sum-exp, let go of inside: workspace).
  From PyTorch 2.14 a query, key and value of three dimensions each are one batch of heads:
  each unsqueezed to four dimensions (a mask until it has four), chosen for and run so, the
  output squeezed back (`_batches_unbatched_attention` asks this PyTorch whether it does).
  `Graph.kernels` says which, per call. On CUDA (not modelled) PyTorch's
  sdp_utils tries flash attention (float16/bfloat16, no explicit mask, head size up to
  256, recent GPUs), then memory-efficient attention (float32 too, and masks), then math;
  both fused CUDA kernels save the output and a float32 log-sum-exp as the CPU's does (the
  memory-efficient one pads its length to a multiple of 32), so the figures hold there
  but for that padding; where CUDA falls back to math, the L x L matrix is saved.
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import _disable_current_modes

ATTENTION = "scaled_dot_product_attention"
FLASH_CPU = "CPU flash attention (aten._scaled_dot_product_flash_attention_for_cpu)"
MATH = "math decomposition (bmm, softmax, bmm)"

_FLASH_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def flash_attention(query, key, value, attn_mask, dropout_p, is_causal, scale):
    """The output of `_scaled_dot_product_flash_attention_for_cpu`, its temporaries let go of
    on return; a call of three dimensions run as one batch, as attention.cpp runs it."""
    unbatched = query.dim() == 3
    if unbatched:
        query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
        while attn_mask is not None and attn_mask.dim() < 4:
            attn_mask = attn_mask.unsqueeze(0)
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        # As attention.cpp's convert_boolean_attn_mask: True keeps a score, False masks it.
        keep = torch.scalar_tensor(0.0, dtype=query.dtype, device=query.device)
        drop = torch.scalar_tensor(-math.inf, dtype=query.dtype, device=query.device)
        attn_mask = torch.where(attn_mask, keep, drop)
    output = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale
    )[0]
    return output.squeeze(0) if unbatched else output


def flash_attention_kernel(query, key, value, attn_mask, dropout_p: float, enable_gqa: bool) -> bool:
    """Whether a CPU runs this call as flash attention: `use_flash_attention_cpp` of
    PyTorch's sdp_utils_cpp, check by check (else it falls back to math), on the sizes of
    four dimensions it checks (a call of three taken as one batch where PyTorch does)."""
    if not torch.backends.cuda.flash_sdp_enabled():  # one switch for CUDA and CPU flash alike
        return False
    tensors = (query, key, value)
    if any(t.is_nested for t in tensors) or dropout_p > 0.0:
        return False
    unbatched = all(t.dim() == 3 for t in tensors) and _batches_unbatched_attention()
    if not unbatched and any(t.dim() != 4 for t in tensors):
        return False
    sizes = [(1, *t.shape) if unbatched else tuple(t.shape) for t in tensors]
    if not _batch_and_heads_fit(*sizes, enable_gqa):
        return False
    if attn_mask is not None and not _mask_fits(attn_mask, unbatched, *sizes[:2]):
        return False
    if not query.size(-1) == key.size(-1) == value.size(-1):
        return False
    if query.size(-2) == 0 or key.size(-2) == 0:
        return False
    if any(t.stride(-1) != 1 for t in tensors) or (attn_mask is not None and attn_mask.stride(-1) != 1):
        return False
    return query.dtype == key.dtype == value.dtype and query.dtype in _FLASH_DTYPES


@functools.cache
def _batches_unbatched_attention() -> bool:
    """Whether this PyTorch's CPU attention takes a query, key and value of three dimensions
    each as one batch (from 2.14): its own choice for a small such call, flash attention
    enabled (math the fallback), asked once, outside the trace's modes; the warnings of a
    PyTorch that refuses ("requires query, key and value to be 4 dimensional") kept back."""
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]
    with _disable_current_modes(), sdpa_kernel(backends), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sample = torch.zeros(1, 1, 8)
        return torch._fused_sdp_choice(sample, sample, sample, None, 0.0, False) == SDPBackend.FLASH_ATTENTION.value


def _batch_and_heads_fit(query, key, value, enable_gqa: bool) -> bool:
    """check_batch_size_and_num_heads_dense on the three sizes, grouped-query attention supported."""
    if not query[0] == key[0] == value[0]:
        return False
    heads, key_heads, value_heads = query[1], key[1], value[1]
    if enable_gqa:
        return key_heads == value_heads and heads % key_heads == 0
    return heads == key_heads == value_heads


def _mask_fits(mask, unbatched: bool, query, key) -> bool:
    """check_attn_mask_shape: a grad-free mask broadcastable as (L, S) or (B, H, L, S), the
    query's and key's sizes given; the mask of an unbatched call unsqueezed to four dimensions."""
    if mask.requires_grad:
        return False
    sizes = (1,) * (4 - mask.dim()) + tuple(mask.shape) if unbatched else tuple(mask.shape)
    if sizes[-2] not in (query[2], 1) or sizes[-1] not in (key[2], 1):
        return False
    if len(sizes) == 2:
        return True
    return len(sizes) == 4 and sizes[0] in (1, query[0]) and sizes[1] in (1, query[1])


def check_fused_attention(query, key, value, embed_dim: int, num_heads: int, qkv_weight, qkv_bias) -> None:
    """The checks a CPU's fused attention makes first (native_multi_head_attention_cpu, in
    its words), which the meta kernels of `_native_multi_head_attention` and
    `_transformer_encoder_layer_fwd` leave out: on meta a query of the wrong width would run."""
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        if tensor.dim() != 3:
            raise RuntimeError(f"expected 3-D `{name}`, got {tensor.dim()}-D tensor")
    if query.size(2) != embed_dim:
        raise RuntimeError(f"passed-in embed_dim {embed_dim} didn't match last dim of query {query.size(2)}")
    if not query.shape == key.shape == value.shape:
        raise RuntimeError("expected `query`/`key`/`value` shapes to match")
    if qkv_weight.dim() != 2:
        raise RuntimeError(f"expected 2-D `qkv_weight`, got {qkv_weight.dim()}-D tensor")
    if qkv_weight.size(0) != 3 * embed_dim:
        raise RuntimeError("expected `qkv_weight` first dim to be 3x embed_dim")
    if qkv_weight.size(1) != embed_dim:
        raise RuntimeError("expected `qkv_weight` second dim to be embed_Dim")
    if qkv_bias.dim() != 1:
        raise RuntimeError(f"expected 1-D `qkv_bias`, got {qkv_bias.dim()}-D tensor")
    if qkv_bias.size(0) != 3 * embed_dim:
        raise RuntimeError("expected `qkv_bias` first dim and first dim of query to be equal")
    if embed_dim % num_heads != 0:
        raise RuntimeError("`embed_dim` must divide evenly by `num_heads`")
