"""Module calls the trace hands straight to the recorder, without running their forward.

A convolution, a batch norm in evaluation, a layer norm or an activation of torch.nn
reaches exactly one aten operator, its arguments read off the module. Getting there
through the forward (the module's Python, the functional API's, the C++ dispatcher and back
into Python for the recorder) costs a ResNet-50 analysis a tenth of its time. For these
classes exactly (not a subclass, not a class whose forward was replaced since archprof was
imported, not a module with a forward of its own), `shortcut_for` gives a function naming
the operator and its arguments as the dispatcher would pass them (trailing defaults left
out), and the recorder records that: the same graph (tests/test_shortcuts.py traces each
one beside the forward it stands for).

timm's `BatchNormAct2d` (a batch norm whose forward then calls its `drop` and `act`
children) is answered as its batch norm, and its children are then called as the forward
calls them: hooked, recorded and answered as any module call. archprof never imports timm:
such a class is known by where it is defined (`_DEFINED_ELSEWHERE`), on the first module of
it a trace meets, and only if its forward is the one defined there beside it.

For a call outside what it knows the function returns None, and the forward runs: another
input rank (an unbatched input, which the forward reshapes), a string padding or another
padding mode, a convolution's input of another dtype than its weight or bias (whose error
is then PyTorch's own), a batch norm in training or without running statistics, statistics of
another size than the channels or a layer norm's shape not the input's last dimensions (the
forward's error says so), an empty input.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

aten = torch.ops.aten

# A module and its one input -> (operator, arguments, *the modules the forward then calls on
# the operator's output, in turn), or None: run the forward.
Shortcut = Callable[[nn.Module, torch.Tensor], tuple | None]


def _convolution(dims: int) -> Shortcut:
    def call(module: nn.Module, x: torch.Tensor):
        if x.dim() != dims + 2 or module.padding_mode != "zeros" or isinstance(module.padding, str):
            return None
        weight, bias = module.weight, module.bias  # each read once: nn.Module's __getattr__ searches
        if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
            return None  # the forward raises, in PyTorch's words
        return aten.convolution.default, (
            x,
            weight,
            bias,
            list(module.stride),
            list(module.padding),
            list(module.dilation),
            False,
            [0] * dims,
            module.groups,
        )

    return call


def _batch_norm(ranks: tuple[int, ...]) -> Shortcut:
    """Evaluation with running statistics: `native_batch_norm`, as `kernels.DeviceKernels`
    routes it (its three outputs; the module returns the first)."""

    def call(module: nn.Module, x: torch.Tensor):
        mean, var = module.running_mean, module.running_var
        if module.training or mean is None or var is None or x.dim() not in ranks or x.numel() == 0:
            return None
        weight, bias = module.weight, module.bias  # each read once: nn.Module's __getattr__ searches
        channels = x.shape[1]
        for tensor in (mean, var, weight, bias):
            if tensor is not None and tensor.numel() != channels:
                return None
        momentum = 0.0 if module.momentum is None else float(module.momentum)
        # Floats, as the dispatcher hands them to the mode whatever number the module holds.
        return aten.native_batch_norm.default, (x, weight, bias, mean, var, False, momentum, float(module.eps))

    return call


def _then_children(shortcut: Shortcut, *names: str) -> Shortcut:
    """`shortcut`'s operator, then the children `names` called in turn on its output."""

    def call(module: nn.Module, x: torch.Tensor):
        children = [module._modules.get(name) for name in names]
        if None in children:  # one deleted or set to None: the forward's own error
            return None
        answer = shortcut(module, x)
        return None if answer is None else (*answer, *children)

    return call


def _layer_norm(module: nn.Module, x: torch.Tensor):
    normalized = list(module.normalized_shape)
    if x.dim() < len(normalized) or list(x.shape[x.dim() - len(normalized) :]) != normalized:
        return None
    return aten.native_layer_norm.default, (x, normalized, module.weight, module.bias, module.eps)


def _activation(operator, in_place=None) -> Shortcut:
    def call(module: nn.Module, x: torch.Tensor):
        return (in_place if in_place is not None and module.inplace else operator), (x,)

    return call


def _hardtanh(module: nn.Module, x: torch.Tensor):
    # The dispatcher leaves out trailing arguments at their defaults (max_val 1): not foreseen.
    if module.max_val == 1:
        return None
    operator = aten.hardtanh_.default if module.inplace else aten.hardtanh.default
    return operator, (x, module.min_val, module.max_val)


def _gelu(module: nn.Module, x: torch.Tensor):
    return (aten.gelu.default, (x,)) if module.approximate == "none" else None


_SHORTCUTS: dict[type[nn.Module], Shortcut] = {
    nn.Conv1d: _convolution(1),
    nn.Conv2d: _convolution(2),
    nn.Conv3d: _convolution(3),
    nn.BatchNorm1d: _batch_norm((2, 3)),
    nn.BatchNorm2d: _batch_norm((4,)),
    nn.BatchNorm3d: _batch_norm((5,)),
    nn.LayerNorm: _layer_norm,
    nn.ReLU: _activation(aten.relu.default, aten.relu_.default),
    nn.ReLU6: _hardtanh,
    nn.Hardtanh: _hardtanh,
    nn.SiLU: _activation(aten.silu.default, aten.silu_.default),
    nn.Hardswish: _activation(aten.hardswish.default, aten.hardswish_.default),
    nn.Hardsigmoid: _activation(aten.hardsigmoid.default, aten.hardsigmoid_.default),
    nn.Sigmoid: _activation(aten.sigmoid.default),
    nn.GELU: _gelu,
}
# Classes of packages archprof does not import, by (module, class name): each is looked up
# on the first module of it a trace meets.
_DEFINED_ELSEWHERE: dict[tuple[str, str], Shortcut] = {
    # Its forward copies nn.BatchNorm2d's (F.batch_norm on the same arguments, a 4-d input
    # asserted), then calls self.drop and self.act.
    ("timm.layers.norm_act", "BatchNormAct2d"): _then_children(_batch_norm((4,)), "drop", "act"),
}
# Each class's forward as archprof found it: a forward patched later is not the one known.
_FORWARDS = {cls: cls.forward for cls in _SHORTCUTS}


def _found_elsewhere(cls: type) -> Shortcut | None:
    """The shortcut of a class of `_DEFINED_ELSEWHERE`, entered in `_SHORTCUTS` on first
    sight: the class its module holds under that name, with the forward defined there."""
    shortcut = _DEFINED_ELSEWHERE.get((cls.__module__, cls.__qualname__))
    if shortcut is None or getattr(sys.modules.get(cls.__module__), cls.__qualname__, None) is not cls:
        return None
    forward = cls.forward
    # A forward patched in before this first sight is defined elsewhere (a test's lambda).
    where = (getattr(forward, "__module__", None), getattr(forward, "__qualname__", None))
    if where != (cls.__module__, f"{cls.__qualname__}.forward"):
        return None
    _SHORTCUTS[cls] = shortcut
    _FORWARDS[cls] = forward
    return shortcut


def shortcut_for(module: nn.Module) -> Shortcut | None:
    """The shortcut of the module's class, if it has one and the module runs its class's
    forward as archprof knows it."""
    cls = type(module)
    shortcut = _SHORTCUTS.get(cls) or _found_elsewhere(cls)
    if shortcut is None or cls.forward is not _FORWARDS[cls] or "forward" in module.__dict__:
        return None
    return shortcut


def may_shortcut(x: Any) -> bool:
    """Whether a call on `x` may skip the forward now: a plain meta tensor, no gradient
    recorded, and no other mode that the forward's torch calls would pass through (the
    recorder's is the only dispatch mode, no torch-function mode is active)."""
    return (
        type(x) is torch.Tensor
        and x.is_meta
        and not torch.is_grad_enabled()
        and torch._C._len_torch_dispatch_stack() == 1
        and torch._C._len_torch_function_stack() == 0
    )
