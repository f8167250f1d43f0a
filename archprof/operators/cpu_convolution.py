"""The memory format a CPU lays a convolution's output out in, asked of PyTorch itself.

The meta kernel of `aten.convolution` always answers a contiguous tensor: a meta tensor
carries no device, so it cannot pick the backend the format depends on. A CPU picks
oneDNN or its own slow kernels, and both write channels last wherever the input or the
weight is laid out so (ConvUtils.h, `_determine_backend_memory_format`): a permuted
LayerNorm2d in front of a convolution (ConvNeXt, GCViT) makes every map after it channels
last on a CPU. The layout decides whether a later `view` copies, and whether autograd's
AccumulateGrad copies a weight's gradient into its parameter's layout: GCViT-XTiny's
training step holds 3 MB more at its peak for one such copy.

`torch._C._select_conv_backend` and `torch._C._conv_determine_backend_memory_format` are
the functions the CPU kernel calls. They read sizes, strides, dtypes and flags only; they
are handed shells (tensor subclasses with metadata and no storage) reporting the CPU, as
torch's FakeTensor does for `torch.compile`.
"""

from __future__ import annotations

import torch


def cpu_convolution_format(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride,
    padding,
    dilation,
    transposed: bool,
    output_padding,
    groups: int,
) -> torch.memory_format:
    """The memory format of a CPU's `aten.convolution` output for these arguments (their
    sizes, strides, dtypes; the process's threads and oneDNN flags), for 2-d and 3-d
    convolutions; 1-d convolutions (3-d inputs) are answered contiguous, as the meta kernel
    answers. No CPU backend writes channels last where neither the input nor the weight
    suggests it: the trace asks only where one does."""
    # A torch without the format function keeps the meta kernel's answer too.
    if input.dim() not in (4, 5) or _DETERMINE_FORMAT is None:
        return torch.contiguous_format
    x, w, b = (_Shell.of(t) if t is not None else None for t in (input, weight, bias))
    parameters = (list(stride), list(padding), list(dilation), transposed, list(output_padding), groups)
    return _DETERMINE_FORMAT(x, w, torch._C._select_conv_backend(x, w, b, *parameters))


_DETERMINE_FORMAT = getattr(torch._C, "_conv_determine_backend_memory_format", None)


class _Shell(torch.Tensor):
    """A CPU tensor's sizes, strides and dtype without its storage: for the questions the
    backend selection asks of it. Any operator run on it is a bug of this module."""

    @staticmethod
    def of(tensor: torch.Tensor) -> _Shell:
        return torch.Tensor._make_wrapper_subclass(
            _Shell,
            tuple(tensor.shape),
            strides=tensor.stride(),
            dtype=tensor.dtype,
            device="cpu",
            requires_grad=tensor.requires_grad,
        )

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"a shell of a CPU tensor ran {func}: its backend was asked for more than metadata")
