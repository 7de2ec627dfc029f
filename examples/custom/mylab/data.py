"""The data: noisy sine, square and sawtooth waves (classes 0, 1, 2), made, not downloaded.

`signals(split, size)` returns a map-style Dataset of (signal (1, length) float32, class int)
pairs. Every example is fixed by the split and its size: the train and test splits are drawn
from different seeds, and the same call gives the same tensors on every machine and rank.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

CLASSES = ("sine", "square", "sawtooth")
_SEEDS = {"train": 0, "test": 1}


def _waves(kind: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Unit-amplitude waves of each example's kind at phases `phase` (cycles), (N, length)."""
    fraction = phase - torch.floor(phase)  # position within the cycle, [0, 1)
    sine = torch.sin(2 * math.pi * phase)
    square = torch.where(fraction < 0.5, 1.0, -1.0)
    sawtooth = 2 * fraction - 1
    return torch.stack([sine, square, sawtooth])[kind, torch.arange(len(kind))]


class Signals(Dataset):
    """`size` waves of `length` samples: random class, frequency, phase, amplitude and noise."""

    def __init__(self, split: str, size: int = 1000, length: int = 64, noise: float = 0.5) -> None:
        if split not in _SEEDS:
            raise ValueError(f"split must be one of {', '.join(_SEEDS)}, got {split!r}")
        generator = torch.Generator().manual_seed(_SEEDS[split])

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(size, 1, generator=generator)

        self.labels = torch.randint(0, len(CLASSES), (size,), generator=generator)
        cycles = uniform(1.5, 4.0)  # cycles per window
        start = uniform(0.0, 1.0)  # random phase: the class is in the shape, not the timing
        amplitude = uniform(0.5, 1.5)
        phase = start + cycles * torch.arange(length) / length  # (size, length)
        clean = amplitude * _waves(self.labels, phase)
        noisy = clean + noise * torch.randn(size, length, generator=generator)
        self.signals = noisy[:, None, :].float()  # (size, 1, length)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.signals[index], int(self.labels[index])


def signals(split: str, size: int = 1000, length: int = 64, noise: float = 0.5) -> Signals:
    """The `split` ('train' or 'test') of the synthetic signals; see the module docstring."""
    return Signals(split, size, length, noise)
