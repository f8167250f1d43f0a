"""A model of your own, for the budget file: archprof loads it as "my_models:small_cnn".

archprof calls the factory under `torch.device("meta")`, so no weights are allocated."""

import torch
from torch import nn


def small_cnn(num_classes: int = 10) -> nn.Module:
    """A small image classifier for 3x64x64 inputs."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )


if __name__ == "__main__":
    print(small_cnn()(torch.zeros(1, 3, 64, 64)).shape)
