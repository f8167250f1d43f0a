"""A build on meta returns at once from the layers' own initialisers
(`archprof.meta._LAYER_INITIALISERS`) where their module's tensors are all on meta, and runs
them as before anywhere else: a CPU module, one partly on meta, a module built in another
thread meanwhile, a subclass's override. It registers a plain parameter past its mode, and
any other parameter, or one with a registration hook, as before. The oracles: torch's own
build on the CPU (the values it draws from one seed) and under `torch.device("meta")`."""

from __future__ import annotations

import operator
import threading
from typing import ClassVar

import pytest
import torch
from torch import nn

from archprof.meta import _LAYER_INITIALISERS, _LAYERS_SETTING_PLAIN_VALUES, on_meta, weights_on_meta
from tests.test_meta_build import _assert_built_alike, _state


class _TorchCalls(torch.overrides.TorchFunctionMode):
    """The torch functions called while active, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


def _layers():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))


def test_on_meta_the_layers_initialisers_and_their_parameters_registration_call_no_torch_function():
    """Only the constructors: no `no_grad`, `is_contiguous`, fan or fill, and no read of a
    new parameter's `grad_fn` as it is registered."""
    with on_meta(), _TorchCalls() as calls:
        _layers()
    assert set(calls.names) == {"empty", "zeros", "ones", "tensor"}


def test_layers_built_on_the_cpu_during_a_build_on_meta_are_initialised_as_torch_initialises_them():
    torch.manual_seed(0)
    expected = _layers()
    torch.manual_seed(0)
    with on_meta(), torch.device("cpu"):
        built = _layers()
    _assert_same_values(built, expected)


def test_a_layer_built_on_the_cpu_in_another_thread_during_a_build_on_meta_is_initialised_as_before():
    torch.manual_seed(0)
    expected = _layers()
    built = []
    with on_meta():
        torch.manual_seed(0)
        thread = threading.Thread(target=lambda: built.append(_layers()))
        thread.start()
        thread.join()
    _assert_same_values(built[0], expected)


def test_a_layer_partly_on_meta_is_initialised_as_torch_initialises_it():
    """A convolution's meta weight and CPU bias: its bias drawn as torch draws it; a batch
    norm's CPU running mean set to zeros."""
    layers = []
    for build_on_meta in (False, True):
        conv = nn.Conv2d(3, 4, 3, device="meta")
        conv.bias = nn.Parameter(torch.full((4,), 5.0))
        norm = nn.BatchNorm2d(4)
        norm.running_mean.fill_(5.0)
        norm.weight = nn.Parameter(torch.empty(4, device="meta"))
        torch.manual_seed(0)
        with on_meta() if build_on_meta else torch.device("cpu"):
            conv.reset_parameters()
            norm.reset_running_stats()
        layers.append((conv, norm))
    (expected_conv, expected_norm), (conv, norm) = layers
    assert torch.equal(conv.bias, expected_conv.bias) and not torch.equal(conv.bias, torch.full((4,), 5.0))
    assert torch.equal(norm.running_mean, expected_norm.running_mean) and not norm.running_mean.any()


class _MarkedConv(nn.Conv2d):
    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.initialised = True


class _MarkedNorm(nn.BatchNorm2d):
    def reset_running_stats(self) -> None:
        super().reset_running_stats()
        self.statistics_reset = getattr(self, "statistics_reset", 0) + 1


def test_a_subclass_overriding_a_layers_initialiser_is_built_as_torch_builds_it_on_meta():
    """What the override does beside calling torch's method is done; a batch norm's
    `reset_parameters` still calls the subclass's `reset_running_stats`."""
    _assert_built_alike(lambda: nn.Sequential(_MarkedConv(3, 4, 3), _MarkedNorm(4)))
    with on_meta():
        conv, norm = _MarkedConv(3, 4, 3), _MarkedNorm(4)
    assert conv.initialised and norm.statistics_reset == 1


def _replaced_methods() -> list:
    setters = [layer.__setattr__ for layer in _LAYERS_SETTING_PLAIN_VALUES]
    return [layer.__dict__[name] for layer, name in _LAYER_INITIALISERS] + [nn.Module.register_parameter, *setters]


def test_the_layers_initialisers_setters_and_register_parameter_are_torchs_own_again_after_a_build_even_a_failed_one():
    originals = _replaced_methods()
    assert all(layer.__setattr__ is nn.Module.__setattr__ for layer in _LAYERS_SETTING_PLAIN_VALUES)
    with on_meta():
        assert all(map(operator.is_not, _replaced_methods(), originals))
    with pytest.raises(RuntimeError, match="the factory failed"), on_meta():
        raise RuntimeError("the factory failed")
    assert _replaced_methods() == originals


class _Noting:
    """A tensor class whose own `__torch_function__` notes the torch functions it meets."""

    seen: ClassVar[list[str]] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(func.__name__)
        with torch._C.DisableTorchFunction():
            return func(*args, **(kwargs or {}))


class _Traced(_Noting, nn.Parameter):
    pass


class _TracedTensor(_Noting, torch.Tensor):
    pass


_BUILDS = {"torch": lambda: torch.device("meta"), "on_meta": on_meta, "weights_on_meta": weights_on_meta}


@pytest.mark.parametrize("build", list(_BUILDS))
def test_a_parameter_of_its_own_class_meets_the_reads_of_it_as_registered(build):
    """Its `grad_fn` read, as torch registers it; `to`, as weights_on_meta moves it to meta."""
    _Traced.seen = []
    with _BUILDS[build]():
        nn.Module().register_parameter("weight", _Traced(torch.empty(2)))
    assert "__get__" in _Traced.seen
    assert ("to" in _Traced.seen) == (build == "weights_on_meta")


def test_a_buffer_of_its_own_class_meets_its_move_to_meta():
    _TracedTensor.seen = []
    with weights_on_meta():
        nn.Module().register_buffer("stats", torch.empty(2).as_subclass(_TracedTensor))
    assert "to" in _TracedTensor.seen


@pytest.mark.parametrize("build", ["on_meta", "weights_on_meta"])
def test_registration_hooks_meet_the_builds_modes(build):
    """With a parameter or buffer registration hook, torch functions stay on while a module
    registers its tensors: a hook's tensors are made on meta by `on_meta`, as by torch's own
    build."""
    seen = []

    def hook(module, name, tensor):
        seen.append((name, torch._C._is_torch_function_enabled(), torch.zeros(1).device.type))

    handles = [
        torch.nn.modules.module.register_module_parameter_registration_hook(hook),
        torch.nn.modules.module.register_module_buffer_registration_hook(hook),
    ]
    try:
        with _BUILDS[build]():
            nn.BatchNorm1d(2)
    finally:
        for handle in handles:
            handle.remove()
    device = "meta" if build == "on_meta" else "cpu"
    names = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert seen == [(name, True, device) for name in names]


def _assert_same_values(built: nn.Module, expected: nn.Module) -> None:
    got, want = built.state_dict(), expected.state_dict()
    assert list(got) == list(want)
    for name, tensor in got.items():
        assert tensor.device.type == "cpu" and torch.equal(tensor, want[name]), name


def test_a_model_built_with_its_weights_on_meta_is_its_cpu_build_moved_to_meta(hub_packages):
    """torchvision's RegNets compute their widths on the CPU (`weights_on_meta` builds them):
    every parameter and buffer registered past the mode is as torch's CPU build, moved."""
    torchvision, _ = hub_packages
    with weights_on_meta():
        built = torchvision.models.regnet_y_400mf()
    assert _state(built) == _state(torchvision.models.regnet_y_400mf().to("meta"))


class _Recording:
    """A mixin whose `__setattr__` notes each name set through it and passes it on: after
    nn.Module in a layer's method order, nn.Module's `__setattr__` hands it the attributes
    that are no parameter, buffer or submodule."""

    def __setattr__(self, name, value):
        vars(self).setdefault("recorded", []).append(name)
        super().__setattr__(name, value)


class _RecordingConv(nn.Conv2d, _Recording):
    pass


class _OwnSetterConv(nn.Conv2d):
    def __setattr__(self, name, value):
        super().__setattr__(name, "own" if name == "padding_mode" else value)


@pytest.mark.parametrize("build", list(_BUILDS))
def test_a_layer_sets_its_numbers_through_every_setter_its_class_has(build):
    with _BUILDS[build]():
        recording, own = _RecordingConv(3, 4, 3), _OwnSetterConv(3, 4, 3)
    # nn.Module's own fields reach the mixin too (its `__init__` sets them through `super()`);
    # a parameter does not.
    assert {"training", "in_channels", "kernel_size", "stride", "padding_mode"} <= set(recording.recorded)
    assert "weight" not in recording.recorded
    assert own.padding_mode == "own"


@pytest.mark.parametrize("build", list(_BUILDS))
@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("weight", 3, "cannot assign 'int' as parameter 'weight'"),
        ("running_mean", 0.5, "cannot assign 'float' as buffer 'running_mean'"),
        ("inner", "x", "cannot assign 'str' as child module 'inner'"),
    ],
)
def test_a_number_under_a_parameter_buffer_or_submodule_name_is_refused_as_torch_refuses_it(build, name, value, error):
    with _BUILDS[build]():
        norm = nn.BatchNorm2d(4)
        norm.inner = nn.ReLU()
        with pytest.raises(TypeError, match=error):
            setattr(norm, name, value)


@pytest.mark.parametrize("build", list(_BUILDS))
def test_none_under_a_parameter_buffer_or_submodule_name_empties_it_as_torch_does(build):
    with _BUILDS[build]():
        norm = nn.BatchNorm2d(4)
        norm.inner = nn.ReLU()
        norm.weight, norm.running_mean, norm.inner = None, None, None
    assert (norm._parameters["weight"], norm._buffers["running_mean"], norm._modules["inner"]) == (None, None, None)
    assert not {"weight", "running_mean", "inner"} & vars(norm).keys()
