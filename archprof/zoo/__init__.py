"""Built-in model zoo: the classic convolutional networks, from the worked edge detector
and LeNet-5 on, in historical order.

Every architecture follows torchvision's layout and module names, so parameter counts
match torchvision's published figures and module paths read like ``layer1.0.conv1``.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from archprof.meta import on_meta
from archprof.zoo import (
    alexnet,
    densenet,
    edge,
    googlenet,
    lenet,
    mobilenet,
    resnet,
    vgg,
)


@dataclass(frozen=True)
class ZooModel:
    """A registry entry: how to build a model and the shape of one input sample."""

    name: str
    build: Callable[[], torch.nn.Module]
    input_size: tuple[int, ...]
    description: str

    def param_count(self) -> int:
        """Parameters of the model, built on the meta device (nothing allocated)."""
        with on_meta():
            return sum(p.numel() for p in self.build().parameters())


_IMAGENET = (3, 224, 224)
_TV = "torchvision layout"

_ENTRIES: list[ZooModel] = [
    ZooModel(
        "edge_fc",
        edge.edge_fc,
        (1, 224, 224),
        "Vertical edge detector as a fully connected layer (worked example)",
    ),
    ZooModel(
        "edge_conv",
        edge.edge_conv,
        (1, 224, 224),
        "Vertical edge detector as a 1x2 convolution (worked example, 2 params)",
    ),
    ZooModel(
        "lenet5",
        lenet.lenet5,
        (1, 32, 32),
        "LeNet-5 (LeCun et al. 1998), tanh + average pooling",
    ),
    ZooModel(
        "alexnet",
        alexnet.alexnet,
        _IMAGENET,
        f"AlexNet (Krizhevsky et al. 2012), {_TV}",
    ),
    *(
        ZooModel(
            f"vgg{depth}{'_bn' if bn else ''}",
            partial(vgg.vgg, depth, batch_norm=bn),
            _IMAGENET,
            f"VGG-{depth}{' with batch norm' if bn else ''} (Simonyan & Zisserman 2014), {_TV}",
        )
        for depth in vgg.CFGS
        for bn in (False, True)
    ),
    *(
        ZooModel(
            f"resnet{depth}",
            partial(resnet.resnet, depth),
            _IMAGENET,
            f"ResNet-{depth} (He et al. 2015), {_TV}",
        )
        for depth in resnet.SPECS
    ),
    ZooModel(
        "resnext50_32x4d",
        partial(resnet.resnet, 50, groups=32, width_per_group=4),
        _IMAGENET,
        f"ResNeXt-50 32x4d (Xie et al. 2016), {_TV}",
    ),
    ZooModel(
        "wide_resnet50_2",
        partial(resnet.resnet, 50, width_per_group=128),
        _IMAGENET,
        f"Wide ResNet-50-2 (Zagoruyko & Komodakis 2016), {_TV}",
    ),
    ZooModel(
        "googlenet",
        googlenet.googlenet,
        _IMAGENET,
        f"GoogLeNet / Inception v1 (Szegedy et al. 2014), {_TV}",
    ),
    ZooModel(
        "densenet121",
        partial(densenet.densenet, 121),
        _IMAGENET,
        f"DenseNet-121 (Huang et al. 2016), {_TV}",
    ),
    ZooModel(
        "mobilenet_v2",
        mobilenet.mobilenet_v2,
        _IMAGENET,
        f"MobileNetV2 (Sandler et al. 2018), {_TV}",
    ),
]

MODELS: dict[str, ZooModel] = {m.name: m for m in _ENTRIES}
