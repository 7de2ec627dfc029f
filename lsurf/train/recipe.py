"""The training recipe: what each epoch of `lsurf train` does to the numbers, as pure functions.

Owns the optimizer (SGD with momentum, optionally Nesterov, or Adam), the per-epoch
learning-rate schedule, the per-epoch seeds, and the standard CIFAR augmentation (random crop
with padding, horizontal flip) done on tensors already on the device.

Input: a `TrainingConfig`, the epoch number, the normalization constants. Output: a learning
rate, an optimizer, an epoch's generator and its `EpochDraw` (shuffling and augmentation),
augmented batches. Nothing here reads or writes files or keeps state between epochs: epoch E's
draws come from a generator seeded by (seed, E) and its learning rate is a function of E alone,
which is what lets a resumed run match an uninterrupted one bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lsurf.config import TrainingConfig
from lsurf.data.layouts import Channels

PADDING = 4  # pixels added on each side before the 32x32 random crop (torchvision's padding=4)


def learning_rate(training: TrainingConfig, epoch: int) -> float:
    """The learning rate of epoch `epoch` (1-based) under `training.schedule`."""
    if training.schedule == "step":
        # Repeated multiplication, as the reference decays its param groups in place, so
        # the values match it to the last bit (0.1 * 0.1 is 0.010000000000000002).
        rate = training.lr
        for milestone in training.milestones:
            if milestone < epoch:
                rate *= training.gamma
        return rate
    if training.schedule == "cosine":
        return training.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / training.epochs))
    return training.lr


def build_optimizer(model: nn.Module, training: TrainingConfig) -> torch.optim.Optimizer:
    if training.optimizer == "adam":
        return torch.optim.Adam(
            model.parameters(), lr=training.lr, weight_decay=training.weight_decay
        )
    return torch.optim.SGD(
        model.parameters(),
        lr=training.lr,
        momentum=training.momentum,
        nesterov=training.nesterov,
        weight_decay=training.weight_decay,
    )


def epoch_seed(seed: int, epoch: int) -> int:
    """A 64-bit seed for epoch `epoch` of a run seeded with `seed`.

    SeedSequence hashes the pair, so neighbouring seeds or epochs give unrelated streams
    (seed + epoch would make run 0's epoch 2 repeat run 1's epoch 1).
    """
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])


@dataclass(frozen=True)
class EpochDraw:
    """Everything random about one epoch; position i describes the i-th example visited."""

    order: torch.Tensor  # (N,) int64: the permutation of the training split
    offsets: torch.Tensor  # (N, 2) int64: crop corner (row, column) in the padded image, 0..8
    flips: torch.Tensor  # (N,) bool: mirror left-right

    def to(self, device: torch.device) -> EpochDraw:
        return EpochDraw(self.order.to(device), self.offsets.to(device), self.flips.to(device))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator behind everything random in epoch `epoch` of a run seeded `seed`."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch))


def draw_epoch(size: int, seed: int, epoch: int) -> EpochDraw:
    """The shuffling and augmentation of one epoch over `size` examples.

    Drawn on the CPU, so they are the same whatever device trains, and always all three, so
    the order does not depend on whether augmentation is on.
    """
    return draw_epoch_with(epoch_generator(seed, epoch), size)


def draw_epoch_with(generator: torch.Generator, size: int) -> EpochDraw:
    """`draw_epoch` from the epoch's generator, which a caller may go on drawing from (a
    curve's bend draws each batch's position along the curve after these)."""
    order = torch.randperm(size, generator=generator)
    offsets = torch.randint(0, 2 * PADDING + 1, (size, 2), generator=generator)
    flips = torch.rand(size, generator=generator) < 0.5
    return EpochDraw(order, offsets, flips)


def padding_fill(mean: Channels, std: Channels) -> torch.Tensor:
    """(3,) float32: what a raw black pixel (0) becomes after normalization, per channel.

    The reference pads the raw image with 0 and normalizes afterwards; our splits are
    normalized already, so padding them with the normalized zero gives the same tensor. Plain
    0 would be the mean colour instead: a grey frame the reference never showed the network.
    The float32 operations are `lsurf.data.cifar`'s, in its order, so the value is bit-identical to
    a normalized black pixel.
    """
    zero = torch.zeros(len(mean), dtype=torch.float32)
    zero.div_(255).sub_(torch.tensor(mean, dtype=torch.float32))
    return zero.div_(torch.tensor(std, dtype=torch.float32))


def augment(
    images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, fill: torch.Tensor
) -> torch.Tensor:
    """Random crop with PADDING-pixel padding, then horizontal flip, for a whole batch at once.

    images (B, C, H, W); offsets (B, 2) crop corners in 0..2·PADDING; flips (B,) bool;
    fill (C,) the padding value per channel. Returns a new (B, C, H, W) tensor: the same as
    torchvision's RandomCrop(padding=PADDING) and RandomHorizontalFlip image by image.
    """
    batch, channels, height, width = images.shape
    padded = images.new_empty((batch, channels, height + 2 * PADDING, width + 2 * PADDING))
    padded.copy_(fill.to(images).view(1, channels, 1, 1).expand_as(padded))
    padded[:, :, PADDING : PADDING + height, PADDING : PADDING + width] = images
    # Each image's source rows and columns in the padded frame: (B, H) and (B, W); a flip
    # reads the columns right to left.
    rows = offsets[:, :1] + torch.arange(height, device=images.device)
    columns = offsets[:, 1:] + torch.arange(width, device=images.device)
    columns = torch.where(flips[:, None], columns.flip(1), columns)
    return padded[
        torch.arange(batch, device=images.device)[:, None, None, None],
        torch.arange(channels, device=images.device)[None, :, None, None],
        rows[:, None, :, None],
        columns[:, None, None, :],
    ]
