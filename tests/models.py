"""Tiny models for the tests: each exercises one thing the engine must get right."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class FunctionalOps(nn.Module):
    """Functional calls no hook-based counter sees: F.relu, a residual +, torch.cat,
    torch.flatten and @."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.weight = nn.Parameter(torch.randn(8 * 4 * 4, 5))

    def forward(self, x):
        y = F.relu(self.conv(x))
        y = y + self.conv(x)  # second call of the same module
        y = torch.cat([y, y], dim=1)
        y = F.max_pool2d(y, 2)
        return torch.flatten(y, 1) @ self.weight


class Residual(nn.Module):
    def __init__(self, channels=4):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        out = self.relu(self.bn(self.conv1(x)))
        out = self.conv2(out)
        out += x
        return self.relu(out)


class Uncounted(nn.Module):
    """Uses an operator archprof has no formula for (cumprod)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        return torch.cumprod(self.fc(x), dim=1)


class WithUnusedHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.aux = nn.Linear(4, 2)  # never called in forward

    def forward(self, x):
        return self.body(x)


class Checkpointed(nn.Module):
    """A convolution block run under activation checkpointing (non-reentrant): the backward
    runs its forward again."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(checkpoint(self.block, self.stem(x), use_reentrant=False))
