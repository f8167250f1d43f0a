"""LeNet-5 (LeCun et al. 1998).

From "Gradient-based learning applied to document recognition"; every op is a module.
"""

from torch import Tensor, nn


class LeNet5(nn.Module):
    """Classic LeNet-5 for 1x32x32 inputs: tanh activations and average pooling."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5),
            nn.Tanh(),
            nn.AvgPool2d(kernel_size=2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.Tanh(),
            nn.AvgPool2d(kernel_size=2),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120),
            nn.Tanh(),
            nn.Linear(120, 84),
            nn.Tanh(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.features(x)))


def lenet5(num_classes: int = 10) -> LeNet5:
    """Build LeNet-5."""
    return LeNet5(num_classes=num_classes)
