"""Building a model on the meta device: no storage allocated, and weight initialisers
skipped (a meta tensor has no values to fill). The loader and the zoo both build this way.

`on_meta` puts every tensor the constructor makes on meta (zeros, ones and a number's
tensor made as the empty tensors they are there), with the garbage collector paused. A
constructor that reads values it computes (torchvision's RegNets: `.tolist()` of a width
schedule) fails there; `weights_on_meta` lets it compute on the CPU and moves only
parameters and buffers to meta as they are registered, before any initialiser reaches them."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch
from torch.nn.modules.module import _global_buffer_registration_hooks, _global_parameter_registration_hooks
from torch.utils._device import DeviceContext, _device_constructors

from archprof.collector import collector_paused
from archprof.torch_patches import PATCHING_TORCH

_INITIALISERS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)  # torch.nn.init's

# What weight initialisers call: tensor methods that only fill a tensor with values, and
# torch.nn.init's functions (some dispatch as torch functions themselves). On meta there
# are no values, and PyTorch's meta kernels for the random fills are Python decompositions.
_FILLS = frozenset(
    [
        getattr(torch.Tensor, name)
        for name in (
            "normal_",
            "uniform_",
            "zero_",
            "fill_",
            "erfinv_",
            "random_",
            "exponential_",
            "log_normal_",
            "cauchy_",
            "geometric_",
            "bernoulli_",
        )
    ]
    + [getattr(torch.nn.init, name) for name in _INITIALISERS]
)


# In-place arithmetic with numbers, which initialisers apply to the values they drew (timm's
# trunc_normal_: erfinv_, mul_, add_, clamp_): on a meta tensor it changes nothing, and its
# meta kernels are Python references (half of building a timm FocalNet).
_SCALAR_UPDATES = frozenset(
    getattr(torch.Tensor, name) for name in ("add_", "sub_", "mul_", "div_", "clamp_", "clamp_min_", "clamp_max_")
)


def _skipped(func, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The meta tensor a fill, or an in-place update by numbers alone, would change: it is
    the answer, untouched; None for any other call."""
    if func in _FILLS:
        # torch.nn.init's functions hand their tensor over by keyword.
        tensor = args[0] if args else kwargs.get("tensor")
        if isinstance(tensor, torch.Tensor) and tensor.is_meta:
            return tensor
    elif func in _SCALAR_UPDATES and _meta_updated_by_numbers(args, kwargs):
        return args[0]
    return None


def _meta_updated_by_numbers(args: tuple, kwargs: dict) -> bool:
    """Whether an in-place update's target is a meta tensor and nothing else is a tensor."""
    target_on_meta = bool(args) and isinstance(args[0], torch.Tensor) and args[0].is_meta
    return target_on_meta and not any(isinstance(value, torch.Tensor) for value in (*args[1:], *kwargs.values()))


class _SkipFillsOnMeta(torch.overrides.TorchFunctionMode):
    """Answers the calls `_skipped` names with the tensor itself."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        skipped = _skipped(func, args, kwargs)
        return skipped if skipped is not None else func(*args, **kwargs)


_SKIPPABLE = _FILLS | _SCALAR_UPDATES
_CONSTRUCTORS = _device_constructors()  # what DeviceContext sends to its device

# Constructors whose only difference from `torch.empty`, on meta, is values it has none of:
# their meta kernels are Python references (5 µs a call against empty's 1), and every
# BatchNorm calls both for its running statistics. With any keyword but these (`out`,
# `names`, `pin_memory`) or a sparse layout, the constructor itself runs.
_VALUES_ONLY = frozenset({torch.zeros, torch.ones})
_EMPTY_KEYWORDS = frozenset({"dtype", "device", "layout", "requires_grad"})
# `torch.tensor` of one Python number (BatchNorm's `num_batches_tracked`) makes a CPU
# tensor and copies it to meta: its dtype, inferred as torch infers it, is all that is kept.
_NUMBER_DTYPES = {bool: torch.bool, int: torch.int64}


def _empty_in_place_of(func, args: tuple, kwargs: dict, device: torch.device) -> torch.Tensor | None:
    """The meta tensor `func(*args, **kwargs)` would make on `device` (meta), made as an empty
    one, where only its values would differ; None where the constructor must run."""
    if func in _VALUES_ONLY:
        if kwargs.keys() <= _EMPTY_KEYWORDS and kwargs.get("layout") in (None, torch.strided):
            return torch.empty(*args, **{**kwargs, "device": device})
    elif func is torch.tensor and len(args) == 1 and kwargs.keys() <= {"dtype", "device"}:
        number_type = type(args[0])
        if number_type in (bool, int, float):
            dtype = kwargs.get("dtype") or _NUMBER_DTYPES.get(number_type) or torch.get_default_dtype()
            return torch.empty((), dtype=dtype, device=device)
    return None


class _MetaDeviceSkippingFills(DeviceContext):
    """`torch.device("meta")` and `_SkipFillsOnMeta` in one mode: each torch call during a
    build passes one Python mode, not two (a fifth of building a torchvision EfficientNet).
    Its entry and exit are DeviceContext's; its call does what DeviceContext's does, inline."""

    def __init__(self) -> None:
        super().__init__("meta")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SKIPPABLE:
            skipped = _skipped(func, args, kwargs)
            if skipped is not None:
                return skipped
        elif func in _CONSTRUCTORS and kwargs.get("device") is None:
            made = _empty_in_place_of(func, args, kwargs, self.device)
            if made is not None:
                return made
            kwargs["device"] = self.device
        return func(*args, **kwargs)


@contextlib.contextmanager
def _initialisers_return_meta_tensors() -> Iterator[None]:
    """torch.nn.init's functions, and the layers' own initialisers (`_LAYER_INITIALISERS`),
    while active, return at once on meta tensors. The modes above skip their fills too, but
    only after each initialiser has entered `no_grad` (a torch call through the mode, both
    ways) and, for some, `handle_torch_function`: a tenth of building a torchvision ResNet or
    EfficientNet. Constructors look these functions up on the module or class when they call
    them (`init.zeros_`, `nn.init.normal_`, `self.reset_parameters()`); one imported by name
    beforehand is still skipped by the modes. Any other tensor goes to the function."""
    replaced = [(torch.nn.init, name, _returning_meta_tensors) for name in _INITIALISERS]
    replaced += [(layer, name, _returning_on_meta_module) for layer, name in _LAYER_INITIALISERS]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in replaced]
    for owner, name, replacement in replaced:
        setattr(owner, name, replacement(getattr(owner, name)))
    try:
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


@functools.cache  # made once per initialiser, not on every build (a builtin's build enters this twice)
def _returning_meta_tensors(initialiser: Callable) -> Callable:
    """`initialiser` (a function of torch.nn.init), handing a meta tensor back at once."""

    @functools.wraps(initialiser)
    def initialise(*args, **kwargs):
        tensor = args[0] if args else kwargs.get("tensor")
        if isinstance(tensor, torch.Tensor):
            # Reading `is_meta` with a mode active calls the mode: 1.2 µs against 0.2 without.
            with torch._C.DisableTorchFunction():
                on_meta = tensor.is_meta
            if on_meta:
                return tensor
        return initialiser(*args, **kwargs)

    return initialise


# Layers' methods that only fill their module's own parameters and buffers (nothing else is
# set or read but their shapes), on meta all skipped by the modes, after work that passes
# the modes call by call: a convolution's `reset_parameters` enters `no_grad`, asks
# `is_contiguous` and, with a bias, the weight's fans; a batch norm's running statistics are
# three fills. A subclass's override, and what it does beside calling one of these, runs as
# before. `_NormBase.reset_parameters` is not one: it calls `reset_running_stats` as a
# subclass may define it.
_LAYER_INITIALISERS = (
    (torch.nn.modules.conv._ConvNd, "reset_parameters"),
    (torch.nn.Linear, "reset_parameters"),
    (torch.nn.modules.batchnorm._NormBase, "reset_running_stats"),
)


@functools.cache
def _returning_on_meta_module(initialiser: Callable) -> Callable:
    """`initialiser` (a method of `_LAYER_INITIALISERS`), returning at once where every
    parameter and buffer of its module is on meta: a CPU module, a build in another thread
    say, is initialised as before."""

    @functools.wraps(initialiser)
    def initialise(module: torch.nn.Module) -> None:
        return None if _tensors_on_meta(module) else initialiser(module)

    return initialise


def _tensors_on_meta(module: torch.nn.Module) -> bool:
    """Whether every parameter and buffer `module` registered itself is on meta."""
    with torch._C.DisableTorchFunction():  # see `_returning_meta_tensors`
        for tensors in (module._parameters, module._buffers):
            for tensor in tensors.values():
                if tensor is not None and not tensor.is_meta:
                    return False
    return True


def _past_the_mode(register: Callable, plain: type, hooks: dict) -> Callable:
    """`register` (a module's `register_parameter` or `register_buffer`), with torch functions
    off where nothing but a build's mode would meet them: the tensor of class `plain` exactly
    (none of its own `__torch_function__`, as a lazy layer's parameter has) and no registration
    `hooks` (they may make tensors). Registering a tensor reads it (a new parameter's
    `grad_fn`), moving it to meta (`weights_on_meta`) calls `to`: each a call of the mode."""

    @functools.wraps(register)
    def register_past_the_mode(module, name, tensor, *args, **kwargs):
        if type(tensor) is plain and not hooks:
            with torch._C.DisableTorchFunction():
                return register(module, name, tensor, *args, **kwargs)
        return register(module, name, tensor, *args, **kwargs)

    return register_past_the_mode


@contextlib.contextmanager
def _parameters_registered_past_the_mode() -> Iterator[None]:
    """`nn.Module.register_parameter`, while active, registers a plain parameter with torch
    functions off (`_past_the_mode`). Setting the method on nn.Module reaches every
    subclass's entries in Python's method cache (40 µs each way with timm imported); net, a
    build takes 1 to 2% fewer instructions (a VGG-16, of few parameters, as many)."""
    register_parameter = torch.nn.Module.register_parameter
    torch.nn.Module.register_parameter = _past_the_mode(
        register_parameter, torch.nn.Parameter, _global_parameter_registration_hooks
    )
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register_parameter


# The layers whose constructors set most of a build's attributes that are no parameter,
# buffer or submodule (a convolution eleven, a batch norm five): 848 of ResNet-50's 909.
# The classes themselves, not their bases (`_ConvNd`, `_NormBase`): setting a slot on a
# class updates every subclass's, 53 µs a build for `_ConvNd` with timm imported.
_LAYERS_SETTING_PLAIN_VALUES = (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear)
_PLAIN_VALUES = frozenset({bool, int, float, str, tuple, type(None)})


def _set_plain_value_directly(module: torch.nn.Module, name: str, value: object) -> None:
    """`nn.Module.__setattr__`, its last step taken at once where it would end there: a
    number, string, tuple or None under a name that is no parameter, buffer or submodule of
    `module`. torch's version first asks whether the value is a Parameter, a Module or a
    Buffer (two Python `__instancecheck__`s): 1.3 µs a call against 0.2."""
    if type(value) in _PLAIN_VALUES:
        tables = module.__dict__
        if not (
            name in tables.get("_parameters", ())
            or name in tables.get("_buffers", ())
            or name in tables.get("_modules", ())
        ):
            return super(torch.nn.Module, module).__setattr__(name, value)
    return torch.nn.Module.__setattr__(module, name, value)


@contextlib.contextmanager
def _plain_values_set_directly() -> Iterator[None]:
    """`_LAYERS_SETTING_PLAIN_VALUES`, while active, set attributes with
    `_set_plain_value_directly`; a layer whose `__setattr__` is not nn.Module's keeps its
    own. Set on these classes rather than on nn.Module, whose every subclass's slot Python
    would update (290 µs each way with timm imported, against 6 for these three)."""
    layers = [
        layer
        for layer in _LAYERS_SETTING_PLAIN_VALUES
        if "__setattr__" not in vars(layer) and layer.__setattr__ is torch.nn.Module.__setattr__
    ]
    for layer in layers:
        layer.__setattr__ = _set_plain_value_directly
    try:
        yield
    finally:
        for layer in layers:
            del layer.__setattr__


@contextlib.contextmanager
def on_meta() -> Iterator[None]:
    """Build on the meta device, weight initialisers skipped (their values are never read)."""
    with (
        PATCHING_TORCH,
        collector_paused(),
        _initialisers_return_meta_tensors(),
        _parameters_registered_past_the_mode(),
        _plain_values_set_directly(),
        _MetaDeviceSkippingFills(),
    ):
        yield


def is_uninitialised(tensor: torch.Tensor) -> bool:
    """A lazy layer's parameter or buffer before its first call: no shape, nothing to copy,
    move or count yet."""
    return isinstance(tensor, torch.nn.parameter.UninitializedTensorMixin)


def has_uninitialised(module: torch.nn.Module) -> bool:
    """Whether a lazy layer of `module` has not made its parameters or buffers yet: its first
    forward makes them, so a measurement is of the call after."""
    return any(is_uninitialised(t) for t in (*module.parameters(), *module.buffers()))


@contextlib.contextmanager
def weights_on_meta() -> Iterator[None]:
    """Build with the constructor's own computations on the CPU, each parameter and buffer
    moved to meta as a module registers it (its CPU tensor is never filled: initialisers
    find the meta one and are skipped)."""
    with PATCHING_TORCH:  # the methods read, replaced and put back by one thread at a time
        register_parameter = torch.nn.Module.register_parameter
        register_buffer = torch.nn.Module.register_buffer

        def register_meta_parameter(module, name, param):
            if param is not None and not param.is_meta and not is_uninitialised(param):
                param = type(param)(param.to("meta"), requires_grad=param.requires_grad)
            register_parameter(module, name, param)

        def register_meta_buffer(module, name, tensor, persistent=True):
            if tensor is not None and not is_uninitialised(tensor):
                tensor = tensor.to("meta")
            register_buffer(module, name, tensor, persistent=persistent)

        torch.nn.Module.register_parameter = _past_the_mode(
            register_meta_parameter, torch.nn.Parameter, _global_parameter_registration_hooks
        )
        torch.nn.Module.register_buffer = _past_the_mode(
            register_meta_buffer, torch.Tensor, _global_buffer_registration_hooks
        )
        try:
            with _initialisers_return_meta_tensors(), _plain_values_set_directly(), _SkipFillsOnMeta():
                yield
        finally:
            torch.nn.Module.register_parameter = register_parameter
            torch.nn.Module.register_buffer = register_buffer
