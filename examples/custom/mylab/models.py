"""The model: a small 1-D convolutional classifier, (N, 1, length) signals -> (N, classes)."""

from __future__ import annotations

import torch
from torch import nn


class SignalNet(nn.Module):
    """Two convolution blocks over time, global average pooling, a linear head.

    Input (N, 1, L) for any length L >= 4; output (N, num_classes) logits. BatchNorm makes
    the model a fair test of `ignore: biasbn` (its affine parameters stay at θ*).
    """

    def __init__(self, channels: int = 8, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, kernel_size=5, padding=2, bias=False),  # (N, C, L)
            nn.BatchNorm1d(channels),
            nn.ReLU(),
            nn.MaxPool1d(2),  # (N, C, L/2)
            nn.Conv1d(channels, 2 * channels, kernel_size=5, padding=2, bias=False),
            nn.BatchNorm1d(2 * channels),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),  # (N, 2C, 1): the shape of a wave, wherever it starts
        )
        self.head = nn.Linear(2 * channels, num_classes)

    def forward(self, signals: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(signals).flatten(1))
