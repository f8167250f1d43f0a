"""VGG (Simonyan & Zisserman 2014, "Very Deep Convolutional Networks").

Layout, module and attribute names follow torchvision's ``vgg.py``.
"""

import torch
from torch import Tensor, nn

# Layer configurations from Table 1 of the paper: an int is a 3x3 conv with that
# many output channels, "M" a 2x2 max-pool. Keyed by depth (weight layers).
CFGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [
        64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
        512, 512, 512, "M", 512, 512, 512, "M",
    ],
    19: [
        64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
    ],
}  # fmt: skip


class VGG(nn.Module):
    """VGG network: conv feature extractor, 7x7 adaptive pooling, 3-layer classifier."""

    def __init__(self, features: nn.Sequential, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def make_layers(cfg: list[int | str], batch_norm: bool = False) -> nn.Sequential:
    """Build the ``features`` stack for a configuration from ``CFGS``."""
    layers: list[nn.Module] = []
    in_channels = 3
    for v in cfg:
        if isinstance(v, str):  # "M"
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        in_channels = v
    return nn.Sequential(*layers)


def vgg(depth: int, *, batch_norm: bool = False, num_classes: int = 1000) -> VGG:
    """Build VGG-``depth`` (11, 13, 16 or 19), optionally with batch norm."""
    return VGG(make_layers(CFGS[depth], batch_norm=batch_norm), num_classes=num_classes)
