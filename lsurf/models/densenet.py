"""DenseNet-BC for 32x32 images: `densenet121`, the DenseNet of Li et al. 2018's appendix.

Owns the architecture of tomgoldstein/loss-landscape's cifar10/models/densenet.py (Huang et
al. 2017's DenseNet-121 adapted to CIFAR):

    stem:        one 3x3 conv, 3 -> 2k channels (k = growth rate 32), no BN, no pooling
    dense block: b bottleneck layers, each BN-ReLU-conv1x1 (-> 4k) BN-ReLU-conv3x3 (-> k),
                 its k new channels concatenated in FRONT of its input
    transition:  BN-ReLU-conv1x1 to floor(C / 2) channels (compression 0.5), 2x2 avg pool
    head:        BN-ReLU, global average pool, linear -> num_classes

with b = 6, 12, 24, 16 and a transition after each of the first three blocks, so the 32x32
input becomes 16, 8, then 4 pixels square. Channels: 64 -> 256 -> 128 -> 512 -> 256 ->
1024 -> 512 -> 1024. Input (N, 3, 32, 32), output (N, num_classes) logits.

Module names match the reference's (conv1; dense{1..4}.{i}.bn1/conv1/bn2/conv2;
trans{1..3}.bn/conv; bn; linear), so its checkpoints load without renaming. The order in the
concatenation is part of that contract: the next layer's weights expect [new, old].

Exports `MODELS`, the name -> builder table that `lsurf.models` merges into its registry.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Bottleneck width as a multiple of the growth rate (the "B" in DenseNet-BC).
_BOTTLENECK_FACTOR = 4


class Bottleneck(nn.Module):
    """One dense layer: adds `growth_rate` channels to its input, (N, C) -> (N, C + k)."""

    def __init__(self, in_channels: int, growth_rate: int) -> None:
        super().__init__()
        inner = _BOTTLENECK_FACTOR * growth_rate
        # Pre-activation order (BN, ReLU, conv): every conv sees a normalized input; no conv
        # biases, since a BN (this layer's bn2 or the next layer's bn1) follows each conv.
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, inner, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, growth_rate, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv1(F.relu(self.bn1(x)))  # (N, 4k, H, W)
        new = self.conv2(F.relu(self.bn2(new)))  # (N, k, H, W)
        # New features first, as in the reference: swapping the order would still load its
        # weights but pair every later conv's input channels with the wrong features.
        return torch.cat([new, x], dim=1)  # (N, C + k, H, W)


class Transition(nn.Module):
    """Between dense blocks: compress the channels with a 1x1 conv, halve the resolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(F.relu(self.bn(x)))  # (N, C_out, H, W)
        return F.avg_pool2d(out, 2)  # (N, C_out, H / 2, W / 2)


def _dense_block(in_channels: int, layers: int, growth_rate: int) -> tuple[nn.Sequential, int]:
    """A Sequential of `layers` bottlenecks and the number of channels it outputs."""
    block = nn.Sequential(
        *(Bottleneck(in_channels + index * growth_rate, growth_rate) for index in range(layers))
    )
    return block, in_channels + layers * growth_rate


class DenseNet(nn.Module):
    """Four dense blocks of `block_sizes` layers; see the module docstring for the layout."""

    def __init__(
        self,
        block_sizes: Sequence[int],
        growth_rate: int,
        compression: float = 0.5,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if len(block_sizes) != 4:
            raise ValueError(f"DenseNet needs 4 dense block sizes, got {list(block_sizes)}")
        channels = 2 * growth_rate
        self.conv1 = nn.Conv2d(3, channels, kernel_size=3, padding=1, bias=False)
        # Named attributes (not a loop with setattr) so the reference's key names are visible.
        self.dense1, channels = _dense_block(channels, block_sizes[0], growth_rate)
        self.trans1, channels = self._transition(channels, compression)
        self.dense2, channels = _dense_block(channels, block_sizes[1], growth_rate)
        self.trans2, channels = self._transition(channels, compression)
        self.dense3, channels = _dense_block(channels, block_sizes[2], growth_rate)
        self.trans3, channels = self._transition(channels, compression)
        self.dense4, channels = _dense_block(channels, block_sizes[3], growth_rate)
        self.bn = nn.BatchNorm2d(channels)
        self.linear = nn.Linear(channels, num_classes)
        self._initialize()

    @staticmethod
    def _transition(in_channels: int, compression: float) -> tuple[Transition, int]:
        # floor, as the reference: with odd channel counts rounding up would change shapes.
        out_channels = math.floor(in_channels * compression)
        return Transition(in_channels, out_channels), out_channels

    def _initialize(self) -> None:
        # He (fan-in) init for convs, as the reference's trainer and lsurf's CIFAR ResNets; BN
        # starts at weight 1 / bias 0 and the linear layer keeps PyTorch's default. Draws come
        # from torch's global generator, so a seed fixes the initial weights.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Shapes for densenet121 (k = 32).
        out = self.conv1(x)  # (N, 64, 32, 32)
        out = self.trans1(self.dense1(out))  # (N, 256, 32, 32) -> (N, 128, 16, 16)
        out = self.trans2(self.dense2(out))  # (N, 512, 16, 16) -> (N, 256, 8, 8)
        out = self.trans3(self.dense3(out))  # (N, 1024, 8, 8) -> (N, 512, 4, 4)
        out = self.dense4(out)  # (N, 1024, 4, 4)
        out = F.relu(self.bn(out))
        # Global pooling; the reference's avg_pool2d(out, 4) is the same on 32x32 inputs.
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (N, 1024)
        return self.linear(out)


MODELS: dict[str, Callable[[int], nn.Module]] = {
    "densenet121": functools.partial(DenseNet, (6, 12, 24, 16), 32, 0.5),
}
