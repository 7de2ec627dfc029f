"""The CIFAR ResNets of He et al. 2016, section 4.2, in three shortcut flavours.

Owns the architecture: a 3x3 stem conv to 16 channels, three stages of n BasicBlocks with
16, 32 and 64 channels (the first block of stages 2 and 3 halves the resolution), global
average pooling and a linear classifier, so depth = 6n + 2. Input (N, 3, 32, 32), output
(N, num_classes) logits. An optional `width` k multiplies every channel count (16k, 32k, 64k,
the stem included): the Wide-ResNets of `lsurf.models.wide_resnet`; k = 1 is He et al.'s net.

The shortcut kind picks which published checkpoints load without any key renaming:

- "A" (`resnet20` ... `resnet110`): parameter-free shortcut (subsample, then zero-pad the new
  channels), named like akamaster/pytorch_resnet_cifar10's resnet.py.
- "B" (`resnet20_b` ...): 1x1 conv + BN projection where the shape changes, named like
  tomgoldstein/loss-landscape's cifar10/models/resnet.py (`ResNet_cifar` + `BasicBlock`);
  that repository calls these models plain `resnet20`, `resnet56`, `resnet110`.
- "none" (`resnet20_noshort` ...): no skip connection at all, named like the same file's
  `BasicBlock_noshortcut`.

Both upstream files name every tensor the same way (conv1, bn1, layer{1,2,3}.{i}.conv1/bn1/
conv2/bn2, linear); they differ only in the shortcut, so one block class serves all three.

Exports `MODELS`, the name -> builder table that `lsurf.models` merges into its registry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

ShortcutKind = Literal["A", "B", "none"]

# Depths with published results (He et al. 2016, table 6) and the registry suffix per kind.
DEPTHS: tuple[int, ...] = (20, 32, 44, 56, 110)
_SUFFIXES: dict[ShortcutKind, str] = {"A": "", "B": "_b", "none": "_noshort"}
_STAGE_CHANNELS: tuple[int, int, int] = (16, 32, 64)


def _conv3x3(in_channels: int, out_channels: int, stride: int) -> nn.Conv2d:
    # No bias: every conv is followed by a BN, whose shift makes a conv bias redundant.
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: take every `stride`-th pixel and put the input channels between zero channels.

    The zeros go on BOTH sides ((out - in) // 2 before, the rest after), as akamaster's
    F.pad(..., (0, 0, 0, 0, planes // 4, planes // 4)) does; appending them at the end instead
    would load the published weights without error but compute a different network.
    Holds no parameters or buffers, so it adds nothing to the state dict.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_before = (out_channels - in_channels) // 2
        self.pad_after = out_channels - in_channels - self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C_in, H, W) -> (N, C_out, H / stride, W / stride)
        subsampled = x[:, :, :: self.stride, :: self.stride]
        # F.pad lists dims from the last: (W left, W right, H top, H bottom, C front, C back).
        return F.pad(subsampled, (0, 0, 0, 0, self.pad_before, self.pad_after))


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers, plus the input carried over by the chosen shortcut."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, shortcut: ShortcutKind
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels, 1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        # Attribute name `shortcut` and, for "B", the Sequential indices 0 (conv) and 1 (BN)
        # give the upstream keys 'layer2.0.shortcut.0.weight', 'layer2.0.shortcut.1.running_mean'.
        # For "none" there is no attribute at all, like the reference's BasicBlock_noshortcut.
        self.shortcut: nn.Module | None
        reshapes = stride != 1 or in_channels != out_channels
        if shortcut == "none":
            self.shortcut = None
        elif not reshapes:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images; see the module docstring for the layout."""

    def __init__(
        self, depth: int, shortcut: ShortcutKind, num_classes: int = 10, *, width: int = 1
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}")
        if width < 1:
            raise ValueError(f"CIFAR ResNet width must be a positive integer, got {width}")
        blocks_per_stage = (depth - 2) // 6
        stage_channels = [channels * width for channels in _STAGE_CHANNELS]
        self.conv1 = _conv3x3(3, stage_channels[0], 1)
        self.bn1 = nn.BatchNorm2d(stage_channels[0])
        in_channels = stage_channels[0]
        stages: list[nn.Sequential] = []
        for stage_index, channels in enumerate(stage_channels):
            # Stage 1 keeps 32x32; stages 2 and 3 halve the resolution in their first block.
            first_stride = 1 if stage_index == 0 else 2
            blocks = []
            for block_index in range(blocks_per_stage):
                stride = first_stride if block_index == 0 else 1
                blocks.append(BasicBlock(in_channels, channels, stride, shortcut))
                in_channels = channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(stage_channels[-1], num_classes)
        self._initialize()

    def _initialize(self) -> None:
        # He (fan-in, ReLU gain) init for convs, as both upstream trainers use; BN starts at
        # weight 1 / bias 0 and the linear layer keeps PyTorch's default. Draws come from
        # torch's global generator, so a seed fixes the initial weights.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Shapes for width k = 1; a wider net has k times the channels at every step.
        out = F.relu(self.bn1(self.conv1(x)))  # (N, 16, 32, 32)
        out = self.layer1(out)  # (N, 16, 32, 32)
        out = self.layer2(out)  # (N, 32, 16, 16)
        out = self.layer3(out)  # (N, 64, 8, 8)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (N, 64)
        return self.linear(out)


def _builder(depth: int, shortcut: ShortcutKind) -> Callable[[int], nn.Module]:
    return functools.partial(CifarResNet, depth, shortcut)


MODELS: dict[str, Callable[[int], nn.Module]] = {
    f"resnet{depth}{suffix}": _builder(depth, kind)
    for kind, suffix in _SUFFIXES.items()
    for depth in DEPTHS
}
