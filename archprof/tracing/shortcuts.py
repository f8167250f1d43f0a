"""Module calls the trace hands straight to the recorder, without running their forward.

A convolution, a batch norm in evaluation, a layer norm or an activation of torch.nn
reaches exactly one aten operator, its arguments read off the module. Getting there
through the forward (the module's Python, the functional API's, the C++ dispatcher and back
into Python for the recorder) costs a ResNet-50 analysis a tenth of its time. For these
classes exactly (not a subclass), and only while what their forward reaches is what torch
defines (`_REACHES`: the class's methods, none replaced nor one of the module's own, such as
a `forward` or `_conv_forward` set on it; the functions of torch.nn.functional and torch it
calls, none patched: `reaches_as_defined`, asked at each call), the class's shortcut
(`class_shortcut`) gives a function naming the operator and its arguments as the
dispatcher would pass them (trailing defaults left out), and the recorder records that:
the same graph (tests/test_shortcuts.py traces each one beside the forward it stands
for, tests/test_shortcut_overrides.py a forward reaching a replacement).

timm's `BatchNormAct2d` (a batch norm whose forward then calls its `drop` and `act`
children) is answered as its batch norm, and its children are then called as the forward
calls them: hooked, recorded and answered as any module call. archprof never imports timm:
such a class is known by where it is defined (`_DEFINED_ELSEWHERE`), on the first module of
it a trace meets, and answered as torch's classes are: while its forward (the one defined
there beside it) and what that reaches are as defined.

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
from types import BuiltinFunctionType
from typing import Any

import torch

# Names read once, as `from` imports: see archprof.structure's (each `torch.<name>` read costs ~300 instructions).
from torch import Tensor, is_grad_enabled, nn
from torch._C import _len_torch_dispatch_stack, _len_torch_function_stack

from archprof.operators.strides import suggests_channels_last

aten = torch.ops.aten

# A module's attributes (its `__dict__`) and its one input -> (operator, arguments, *the modules
# the forward then calls on the operator's output, in turn), or None: run the forward. Read
# from the dict: nn.Module has a `__getattr__`, which makes each of Python's reads of a
# module's attribute cost a few hundred machine instructions, and of its `__dict__` about a
# thousand (a convolution's shortcut read eight). One its class's `__init__` sets that the
# module does not hold itself (deleted) raises KeyError: the forward runs, and reads or raises
# as it does.
Shortcut = Callable[[dict[str, Any], torch.Tensor], tuple | None]


# What `_held` gives for a tensor the module does not hold in the table its class keeps it in.
_ELSEWHERE = object()


def _held(own: dict[str, Any], table: str, first: str, second: str) -> tuple:
    """`module.<first>` and `module.<second>`, each read from the module's `table` (`_parameters`
    or `_buffers`) among its attributes `own`, where its class keeps it: the value the
    forward's `self.<name>` reads. Python calls nn.Module's `__getattr__`, which searches the
    tables, only after its own lookup has failed and made an AttributeError with its message:
    a batch norm's four reads took 11.6 µs that way, 4.5 from the tables. A name set on the instance itself (the old
    `nn.utils.weight_norm` sets the weight it computes there) is read there, as Python's
    lookup finds it first (these classes define none of these names); `_ELSEWHERE` for one
    in neither (deleted, or registered in another table): the forward then runs, and reads
    or raises as it does."""
    held = own[table]
    # Two names, not a list of any number: no comprehension and its frame, at every call answered.
    return (
        own[first] if first in own else held.get(first, _ELSEWHERE),
        own[second] if second in own else held.get(second, _ELSEWHERE),
    )


def _convolution(dims: int) -> Shortcut:
    def call(own: dict[str, Any], x: torch.Tensor):
        padding = own["padding"]
        if x.dim() != dims + 2 or own["padding_mode"] != "zeros" or isinstance(padding, str):
            return None
        weight, bias = _held(own, "_parameters", "weight", "bias")
        if weight is _ELSEWHERE or bias is _ELSEWHERE:
            return None
        if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
            return None  # the forward raises, in PyTorch's words
        return aten.convolution.default, (
            x,
            weight,
            bias,
            list(own["stride"]),
            list(padding),
            list(own["dilation"]),
            False,
            [0] * dims,
            own["groups"],
        )

    return call


def _batch_norm(ranks: tuple[int, ...]) -> Shortcut:
    """Evaluation with running statistics: `native_batch_norm`, as `kernels.DeviceKernels`
    routes it (its three outputs; the module returns the first)."""

    def call(own: dict[str, Any], x: torch.Tensor):
        mean, var = _held(own, "_buffers", "running_mean", "running_var")
        if own["training"] or mean is None or var is None or x.dim() not in ranks or x.numel() == 0:
            return None  # _ELSEWHERE is not None: its call too
        weight, bias = _held(own, "_parameters", "weight", "bias")
        if mean is _ELSEWHERE or var is _ELSEWHERE or weight is _ELSEWHERE or bias is _ELSEWHERE:
            return None
        channels = x.shape[1]
        for tensor in (mean, var, weight, bias):
            if tensor is not None and tensor.numel() != channels:
                return None
        momentum = own["momentum"]
        momentum = 0.0 if momentum is None else float(momentum)
        # Floats, as the dispatcher hands them to the mode whatever number the module holds.
        return aten.native_batch_norm.default, (x, weight, bias, mean, var, False, momentum, float(own["eps"]))

    return call


def _then_children(shortcut: Shortcut, *names: str) -> Shortcut:
    """`shortcut`'s operator, then the children `names` called in turn on its output."""

    def call(own: dict[str, Any], x: torch.Tensor):
        children, modules = [], own["_modules"]
        for name in names:  # a loop, not a comprehension: its function and frame made at every call
            children.append(modules.get(name))
        if None in children:  # one deleted or set to None: the forward's own error
            return None
        answer = shortcut(own, x)
        return None if answer is None else (*answer, *children)

    return call


def _layer_norm(own: dict[str, Any], x: torch.Tensor):
    normalized = list(own["normalized_shape"])
    if x.dim() < len(normalized) or list(x.shape[x.dim() - len(normalized) :]) != normalized:
        return None
    weight, bias = _held(own, "_parameters", "weight", "bias")
    if weight is _ELSEWHERE or bias is _ELSEWHERE:
        return None
    return aten.native_layer_norm.default, (x, normalized, weight, bias, own["eps"])


def _activation(operator, in_place=None) -> Shortcut:
    def call(own: dict[str, Any], x: torch.Tensor):
        return (in_place if in_place is not None and own["inplace"] else operator), (x,)

    return call


def _hardtanh(own: dict[str, Any], x: torch.Tensor):
    # The dispatcher leaves out trailing arguments at their defaults (max_val 1): not foreseen.
    max_val = own["max_val"]
    if max_val == 1:
        return None
    operator = aten.hardtanh_.default if own["inplace"] else aten.hardtanh.default
    return operator, (x, own["min_val"], max_val)


def _gelu(own: dict[str, Any], x: torch.Tensor):
    return (aten.gelu.default, (x,)) if own["approximate"] == "none" else None


def _adaptive_average(own: dict[str, Any], x: torch.Tensor):
    """One element a channel (a squeeze-and-excitation's pool, a classifier's): the mean over
    the last two dimensions that adaptive_avg_pool2d's composite computes then, without the
    composite's round trip through the dispatcher (in an EfficientNet, one per block). Not
    for an input that suggests channels last, whose mean the composite restrides in place."""
    if not _one_by_one(own["output_size"]) or x.dim() not in (3, 4) or not x.dtype.is_floating_point:
        return None  # a quantized input takes another kernel
    if x.dim() == 4 and suggests_channels_last(tuple(x.shape), x.stride()):
        return None
    return aten.mean.dim, (x, [-1, -2], True)


def _one_by_one(size: Any) -> bool:
    """Whether an adaptive pool's `output_size` is 1 or two ones (ints: the argument parser refuses others)."""
    if type(size) is int:
        return size == 1
    return (
        type(size) in (tuple, list)
        and len(size) == 2
        and type(size[0]) is type(size[1]) is int
        and size[0] == size[1] == 1
    )


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
    nn.AdaptiveAvgPool2d: _adaptive_average,
}
# Classes of packages archprof does not import, by (module, class name): each is looked up
# on the first module of it a trace meets.
_DEFINED_ELSEWHERE: dict[tuple[str, str], Shortcut] = {
    # Its forward copies nn.BatchNorm2d's (F.batch_norm on the same arguments, a 4-d input
    # asserted), then calls self.drop and self.act.
    ("timm.layers.norm_act", "BatchNormAct2d"): _then_children(_batch_norm((4,)), "drop", "act"),
}

# What each class's forward reaches, besides the module's attributes: the methods of its class
# it calls on the module (the forward first), and by (module, name) the functions it calls and
# those call in turn, as far as the one operator. A shortcut stands for them as torch (or timm)
# defines them: a replacement runs (an instance's `_conv_forward`, a patched F.relu).
_Reaches = tuple[tuple[str, ...], tuple[tuple[str, str], ...]]


def _functional(name: str, *torch_functions: str, where: str = "torch._C._nn") -> tuple[tuple[str, str], ...]:
    """torch.nn.functional's `name`, and the functions of `where` it calls."""
    return (("torch.nn.functional", name), *((where, function) for function in torch_functions))


_CONVOLUTION = ("forward", "_conv_forward")
# Not torch.batch_norm, which F.batch_norm calls: a trace routes it to archprof's own
# (`kernels.DeviceKernels`), which records what the shortcut records.
_BATCH_NORM = (("forward", "_check_input_dim"), _functional("batch_norm"))
_HARDTANH = (("forward",), _functional("hardtanh", "hardtanh", "hardtanh_"))
_REACHES: dict[type[nn.Module] | tuple[str, str], _Reaches] = {
    nn.Conv1d: (_CONVOLUTION, _functional("conv1d")),
    nn.Conv2d: (_CONVOLUTION, _functional("conv2d")),
    nn.Conv3d: (_CONVOLUTION, _functional("conv3d")),
    nn.BatchNorm1d: _BATCH_NORM,
    nn.BatchNorm2d: _BATCH_NORM,
    nn.BatchNorm3d: _BATCH_NORM,
    nn.LayerNorm: (("forward",), _functional("layer_norm", "layer_norm", where="torch")),
    nn.ReLU: (("forward",), _functional("relu", "relu", "relu_", where="torch")),
    nn.ReLU6: _HARDTANH,
    nn.Hardtanh: _HARDTANH,
    nn.SiLU: (("forward",), _functional("silu", "silu", "silu_")),
    nn.Hardswish: (("forward",), _functional("hardswish", "hardswish", "hardswish_")),
    nn.Hardsigmoid: (("forward",), _functional("hardsigmoid", "hardsigmoid", "hardsigmoid_")),
    nn.Sigmoid: (("forward",), (("torch", "sigmoid"),)),
    nn.GELU: (("forward",), _functional("gelu")),
    nn.AdaptiveAvgPool2d: (
        ("forward",),
        (*_functional("adaptive_avg_pool2d", "adaptive_avg_pool2d"), ("torch.nn.functional", "_list_with_default")),
    ),
    ("timm.layers.norm_act", "BatchNormAct2d"): (
        ("forward",),
        (*_functional("batch_norm"), ("timm.layers.norm_act", "_assert")),
    ),
}
# What each class's forward reaches, as (its methods' names, (owner, name, function) for each
# method and function), entered on the first module of it a trace meets where all are as
# defined (archprof is imported at the first analysis, maybe after a patch): from then on, one
# replaced is told by identity, a few lookups a module.
_FORWARDS: dict[type, tuple[tuple[str, ...], tuple[tuple[Any, str, Any], ...]]] = {}


def _as_defined(function: Any, qualname: str) -> bool:
    """Whether `function` is the one torch (or timm) defines as `qualname`: a builtin of that
    name, or a function of theirs defined in the module it names (a wrapper made elsewhere
    names the module of the function it wraps, but its globals are its own module's). Not
    its file: installed without sources, a module's `__file__` is its .pyc, its code's the
    path it was compiled from."""
    code = getattr(function, "__code__", None)
    if code is None:
        return type(function) is BuiltinFunctionType and function.__name__ == qualname
    where = getattr(function, "__module__", None) or ""
    module = sys.modules.get(where)
    return (
        code.co_qualname == qualname
        and where.partition(".")[0] in ("torch", "timm")
        and module is not None
        and getattr(function, "__globals__", None) is vars(module)
    )


def _found_as_defined(cls: type) -> tuple | None:
    """What the class's forward reaches, entered in `_FORWARDS` if all of it is as defined."""
    methods, functions = _REACHES.get(cls) or _REACHES[cls.__module__, cls.__qualname__]
    reached = []  # (owner, name, its qualname as defined)
    for name in methods:
        defining = next(base for base in cls.__mro__ if name in base.__dict__)
        reached.append((cls, name, f"{defining.__qualname__}.{name}"))
    reached += [(sys.modules.get(where), name, name) for where, name in functions]
    found = []
    for owner, name, qualname in reached:
        function = getattr(owner, name, None)
        if not _as_defined(function, qualname):
            return None
        found.append((owner, name, function))
    _FORWARDS[cls] = known = methods, tuple(found)
    return known


def _found_elsewhere(cls: type) -> Shortcut | None:
    """The shortcut of a class of `_DEFINED_ELSEWHERE`, entered in `_SHORTCUTS` on first
    sight: the class its module holds under that name."""
    shortcut = _DEFINED_ELSEWHERE.get((cls.__module__, cls.__qualname__))
    if shortcut is None or getattr(sys.modules.get(cls.__module__), cls.__qualname__, None) is not cls:
        return None
    _SHORTCUTS[cls] = shortcut
    return shortcut


def class_shortcut(cls: type) -> Shortcut | None:
    """The shortcut of a module class, if it has one. A trace gives it to each module of the
    class without a `forward` of its own, and takes it for a call where `reaches_as_defined`
    says so then: asked at the call only, not also as the trace begins (that doubled its cost
    for the layers called once, most of them)."""
    return _SHORTCUTS.get(cls) or _found_elsewhere(cls)


def reaches_as_defined(cls: type, own: dict[str, Any], set_by_the_trace: Any = None) -> bool:
    """Whether the forward of a module of class `cls`, whose class has a shortcut, and of
    attributes `own` (its `__dict__`) reaches what its class's does as defined: no method of
    the module's own (but `set_by_the_trace`, the forward the trace put on it), none replaced,
    no function patched. Asked again at each call: a forward may patch one (a lazy set-up of
    its convolution's `_conv_forward` at its first call)."""
    known = _FORWARDS.get(cls) or _found_as_defined(cls)
    if known is None:
        return False
    methods, found = known
    for owner, name, function in found:
        if getattr(owner, name, None) is not function:
            return False
    for name in methods:  # noqa: SIM110 (a loop: all() of a generator costs twice as much, at every call answered)
        if own.get(name, set_by_the_trace) is not set_by_the_trace:
            return False
    return True


def may_shortcut(x: Any) -> bool:
    """Whether a call on `x` may skip the forward now: a plain meta tensor, no gradient
    recorded, and no other mode that the forward's torch calls would pass through (the
    recorder's is the only dispatch mode, no torch-function mode is active)."""
    return (
        type(x) is Tensor
        and x.is_meta
        and not is_grad_enabled()
        and _len_torch_dispatch_stack() == 1
        and _len_torch_function_stack() == 0
    )
