"""Building on meta through archprof's shortcuts (`archprof.meta.on_meta`) makes the model
torch makes under a plain `torch.device("meta")`: the same modules, attributes, parameters
and buffers, down to their strides. Torch's own build is the oracle."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from archprof.meta import on_meta
from archprof.zoo import MODELS
from tests.operator_names import OperatorNames


def _described(value):
    """What a build decides about a value, comparable with ==: a tensor's class, shape,
    dtype, strides, need of a gradient and device; plain data as it is; a module or any
    other object by its class (modules are compared one by one through `_state`)."""
    if isinstance(value, torch.Tensor):
        return (type(value), value.shape, value.dtype, value.stride(), value.requires_grad, value.device.type)
    if value is None or isinstance(value, (bool, int, float, complex, str, torch.dtype)):
        return value
    if isinstance(value, (tuple, list)):
        return type(value), [_described(item) for item in value]
    if isinstance(value, dict):
        return type(value), [(key, _described(item)) for key, item in value.items()]
    if isinstance(value, (set, frozenset)):
        return type(value), sorted(map(repr, value))
    return type(value)


def _state(model: nn.Module) -> list:
    """Every module's path, class and attributes, in the order they were set."""
    return [
        (path, type(module), [(name, _described(value)) for name, value in vars(module).items()])
        for path, module in model.named_modules()
    ]


def _hub_factories(hub_packages):
    torchvision, timm = hub_packages
    factories = {
        f"torchvision:{name}": getattr(torchvision.models, name)
        for name in ("resnet50", "efficientnet_b0", "convnext_tiny", "vit_b_16", "mobilenet_v3_large")
    }
    for name in ("mobilenetv3_large_100", "regnety_016", "efficientnet_b0", "convnext_atto"):
        factories[f"timm:{name}"] = lambda name=name: timm.create_model(name)
    return factories


def _assert_built_alike(build) -> None:
    torch.manual_seed(0)
    with torch.device("meta"):
        expected = _state(build())
    torch.manual_seed(0)
    with on_meta():
        built = _state(build())
    assert built == expected


@pytest.mark.parametrize("name", sorted(MODELS))
def test_builtin_models_are_built_as_torch_builds_them_on_meta(name):
    _assert_built_alike(MODELS[name].build)


def test_torchvision_and_timm_models_are_built_as_torch_builds_them_on_meta(hub_packages):
    for spec, build in _hub_factories(hub_packages).items():
        try:
            _assert_built_alike(build)
        except AssertionError as failure:
            raise AssertionError(f"{spec}: built otherwise than torch builds it") from failure


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def default_dtype(request):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(request.param)
    yield request.param
    torch.set_default_dtype(previous)


CONSTRUCTOR_CALLS = {
    "zeros(3, 4)": lambda: torch.zeros(3, 4),
    "zeros((3, 4))": lambda: torch.zeros((3, 4)),
    "zeros(Size)": lambda: torch.zeros(torch.Size([2, 5]), dtype=torch.float16),
    "zeros(())": lambda: torch.zeros(()),
    "zeros(None kwargs)": lambda: torch.zeros(2, 3, device=None, dtype=None),
    "zeros(strided)": lambda: torch.zeros(2, layout=torch.strided),
    "ones([2])": lambda: torch.ones([2]),
    "ones(int64)": lambda: torch.ones(4, dtype=torch.int64),
    "ones(requires_grad)": lambda: torch.ones(3, requires_grad=True),
    "tensor(0, long)": lambda: torch.tensor(0, dtype=torch.long),
    "tensor(7)": lambda: torch.tensor(7),
    "tensor(True)": lambda: torch.tensor(True),
    "tensor(1.5)": lambda: torch.tensor(1.5),
    "tensor(1.5, bfloat16)": lambda: torch.tensor(1.5, dtype=torch.bfloat16),
    "tensor(300, uint8)": lambda: torch.tensor(300, dtype=torch.uint8),
    "tensor([1, 2])": lambda: torch.tensor([1, 2]),  # not a number: the constructor runs
    "tensor(2.0, requires_grad)": lambda: torch.tensor(2.0, requires_grad=True),
}


@pytest.mark.parametrize("call", list(CONSTRUCTOR_CALLS))
def test_constructors_answered_by_an_empty_tensor_make_what_torch_makes(call, default_dtype):
    make = CONSTRUCTOR_CALLS[call]
    with torch.device("meta"):
        expected = make()
    with on_meta():
        made = make()
    assert _described(made) == _described(expected)


def test_a_batch_norm_is_built_on_meta_without_filling_a_tensor():
    """Its running statistics come from `torch.empty`, not zeros' and ones' Python meta
    kernels; `num_batches_tracked` without a CPU tensor copied to meta."""
    with on_meta(), OperatorNames() as operators:
        norm = nn.BatchNorm2d(8)
    assert norm.running_var.is_meta and norm.num_batches_tracked.dtype == torch.int64
    assert set(operators.names) == {"aten.empty"}


def test_the_collector_is_held_off_during_a_build_and_then_as_it_was():
    import gc

    assert gc.isenabled()
    with on_meta():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError, match="the factory failed"), on_meta():
        raise RuntimeError("the factory failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with on_meta():
            pass
        assert not gc.isenabled()  # the caller's choice stands
    finally:
        gc.enable()
