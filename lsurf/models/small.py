"""Two tiny networks for tests and smoke runs: `convnet_small` and `mlp_small`.

`convnet_small` is a network small enough that a forward pass over a few hundred 32x32 images takes
milliseconds on a CPU, yet holding every kind of tensor the direction code must handle:
4D conv weights, BN weights/biases (1D parameters) with running-statistics buffers, a 2D
linear weight and a 1D linear bias. `mlp_small` is a plain multilayer perceptron on the
flattened image, two hidden layers of 64 units: the smallest network whose hidden units can
be permuted (weight matching, `lsurf.align`). Input (N, 3, 32, 32), output (N, num_classes)
logits.

Exports `MODELS` for the registry in `lsurf.models`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class ConvNetSmall(nn.Module):
    """conv(3->8) + BN + ReLU, conv(8->16, stride 2) + BN + ReLU, global pool, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.linear = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (N, 8, 32, 32)
        out = F.relu(self.bn2(self.conv2(out)))  # (N, 16, 16, 16)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (N, 16)
        return self.linear(out)


class MLPSmall(nn.Module):
    """flatten, linear(3072->64) + ReLU, linear(64->64) + ReLU, linear(64->num_classes)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3 * 32 * 32, 64)
        self.fc2 = nn.Linear(64, 64)
        # Named `linear` like the other registry heads, so a checkpoint hint reads its rows.
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.flatten(1)  # (N, 3072), channel-major
        out = F.relu(self.fc1(out))  # (N, 64)
        out = F.relu(self.fc2(out))  # (N, 64)
        return self.linear(out)


MODELS: dict[str, Callable[[int], nn.Module]] = {
    "convnet_small": ConvNetSmall,
    "mlp_small": MLPSmall,
}
