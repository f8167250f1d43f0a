"""Tests for the built-in model zoo (archprof.zoo)."""

import pytest
import torch

from archprof.zoo import MODELS

# Source of truth: torchvision's published parameter counts; lenet5/edge_* worked by hand
# (docs/formulas.md).
PUBLISHED_PARAMS: dict[str, int] = {
    "edge_fc": 2_506_391_552,
    "edge_conv": 2,
    "lenet5": 61_706,
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "wide_resnet50_2": 68_883_240,
    "densenet121": 7_978_856,
    "googlenet": 6_624_904,
    "mobilenet_v2": 3_504_872,
}

# Output shapes at batch 1 that are not ImageNet's (1, 1000).
EXPECTED_OUTPUT = {"lenet5": (1, 10), "edge_conv": (1, 1, 224, 223), "edge_fc": (1, 1, 224, 223)}

# One torchvision-style module path per family.
MODULE_PATHS = {
    "lenet5": "features.0",
    "alexnet": "features.0",
    "vgg16": "features.0",
    "resnet50": "layer1.0.downsample.0",
    "resnet18": "layer1.0.conv1",
    "densenet121": "features.denseblock1.denselayer1.conv1",
    "googlenet": "inception3a.branch1.conv",
    "mobilenet_v2": "features.1.conv.0.0",
    "edge_conv": "conv",
}


def test_registry_covers_published_models() -> None:
    assert set(MODELS) == set(PUBLISHED_PARAMS)


def test_registry_order_starts_with_the_worked_examples() -> None:
    assert list(MODELS)[:6] == [
        "edge_fc",
        "edge_conv",
        "lenet5",
        "alexnet",
        "vgg11",
        "vgg11_bn",
    ]


@pytest.mark.parametrize("name", list(MODELS))
def test_entry_metadata(name: str) -> None:
    entry = MODELS[name]
    assert entry.name == name
    assert entry.input_size and all(d > 0 for d in entry.input_size)
    assert entry.description.strip() and "\n" not in entry.description


@pytest.mark.parametrize("name", list(MODELS))
def test_parameter_count(name: str) -> None:
    with torch.device("meta"):
        model = MODELS[name].build()
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMS[name]


@pytest.mark.parametrize("name", list(MODULE_PATHS))
def test_torchvision_module_paths(name: str) -> None:
    with torch.device("meta"):
        model = MODELS[name].build()
    assert MODULE_PATHS[name] in dict(model.named_modules())


def test_edge_fc_output_shape_on_meta() -> None:
    with torch.device("meta"):
        model = MODELS["edge_fc"].build()
        out = model(torch.empty(1, *MODELS["edge_fc"].input_size))
    assert tuple(out.shape) == (1, 1, 224, 223)
