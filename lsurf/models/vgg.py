"""VGG networks with batch norm for CIFAR: the paper's `vgg9`, plus `vgg16` and `vgg19`.

Owns the architecture of tomgoldstein/loss-landscape's cifar10/models/vgg.py. Li et al. 2018
(appendix) describe VGG-9 as VGG-16 cropped to its first 7 conv layers and 2 fully connected
layers, with a BN layer after every conv layer and after the first fully connected layer:

    features:   [conv3x3 (with bias) + BN + ReLU] per width, 2x2 max pool at each "M"
    fc:         linear (C * s * s -> C) + BN + ReLU, C = last conv width, s = side after pooling
    classifier: linear (C -> num_classes)

VGG-9 is 64, 64, M, 128, 128, M, 256, 256, 256, M, so s = 4 and fc is 4096 -> 256; VGG-16/19
pool five times (s = 1, fc 512 -> 512). Input (N, 3, 32, 32), output (N, num_classes) logits.

The module tree mirrors the reference's (`features` and `fc` are Sequentials indexed in the
same order, `classifier` a Linear), so its checkpoints load without renaming, e.g.
'features.0.weight', 'features.1.running_mean', 'fc.0.weight', 'fc.1.weight',
'classifier.bias'. The reference's model_loader registers only `vgg9`; its vgg.py defines
VGG16 and VGG19 the same way, and they cost one table line each here.

Exports `MODELS`, the name -> builder table that `lsurf.models` merges into its registry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Final, Literal

import torch
from torch import nn

Pool = Literal["M"]
POOL: Final[Pool] = "M"
LayerSpec = int | Pool

# Conv widths in order; POOL marks a 2x2 max pool. Taken from the reference's cfg table.
LAYOUTS: dict[str, tuple[LayerSpec, ...]] = {
    "vgg9": (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL),
    "vgg16": (
        *(64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL),
        *(512, 512, 512, POOL, 512, 512, 512, POOL),
    ),
    "vgg19": (
        *(64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL),
        *(512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL),
    ),
}

_INPUT_SIDE = 32  # CIFAR images are 32x32; the first fc layer's width depends on it.


class VGG(nn.Module):
    """Conv/BN/ReLU feature stack from `layout`, one hidden fc + BN layer, a linear classifier."""

    def __init__(self, layout: Sequence[LayerSpec], num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        side = _INPUT_SIDE
        for spec in layout:
            if spec == POOL:
                # ceil_mode as in the reference; it only matters for odd sides, which 32x32
                # inputs never reach before the last pool.
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
                side = (side + 1) // 2
            else:
                # Conv, BN, ReLU as three separate entries: the Sequential indices are part of
                # the reference's key names ('features.0.weight' conv, 'features.1.*' BN).
                layers += [
                    nn.Conv2d(in_channels, spec, kernel_size=3, padding=1),
                    nn.BatchNorm2d(spec),
                    nn.ReLU(inplace=True),
                ]
                in_channels = spec
        self.features = nn.Sequential(*layers)
        maps = in_channels  # the last conv width; the reference calls it n_maps
        self.fc = nn.Sequential(
            nn.Linear(maps * side * side, maps),
            nn.BatchNorm1d(maps),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(maps, num_classes)
        self._initialize()

    def _initialize(self) -> None:
        # He (fan-in) init for convs with zero biases, as the reference's trainer does; BN
        # starts at weight 1 / bias 0 and the linear layers keep PyTorch's default, like
        # lsurf's CIFAR ResNets. Draws come from torch's global generator.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x)  # VGG-9: (N, 256, 4, 4)
        # Channel-major flatten, as the reference's view(N, -1), so fc.0's columns line up.
        out = out.flatten(1)  # VGG-9: (N, 4096)
        out = self.fc(out)  # VGG-9: (N, 256)
        return self.classifier(out)


def _builder(layout: tuple[LayerSpec, ...]) -> Callable[[int], nn.Module]:
    return functools.partial(VGG, layout)


MODELS: dict[str, Callable[[int], nn.Module]] = {
    name: _builder(layout) for name, layout in LAYOUTS.items()
}
