"""The worked example's vertical edge detector on a 1x224x224 grayscale image (output 224x223).

Each output pixel is ``x[i, j + 1] - x[i, j]``. As a fully connected layer this needs
a dense (224*223) x (224*224) weight matrix (~2.5 G parameters, 10 GB in float32:
build it only on the ``meta`` device); as a convolution, one 1x2 kernel (2 parameters).
"""

from collections import OrderedDict

from torch import nn

HEIGHT = WIDTH = 224


def edge_fc() -> nn.Sequential:
    """Edge detector as one bias-free linear layer over the flattened image."""
    return nn.Sequential(
        OrderedDict(
            [
                ("flatten", nn.Flatten()),
                ("fc", nn.Linear(HEIGHT * WIDTH, HEIGHT * (WIDTH - 1), bias=False)),
                ("unflatten", nn.Unflatten(1, (1, HEIGHT, WIDTH - 1))),
            ]
        )
    )


def edge_conv() -> nn.Sequential:
    """Edge detector as one bias-free 1x2 convolution (kernel [-1, 1] once trained)."""
    return nn.Sequential(OrderedDict([("conv", nn.Conv2d(1, 1, kernel_size=(1, 2), bias=False))]))
