"""The Wide-ResNets of Li et al. 2018, figure 6: `wrn56_2`, `wrn56_4_noshort`, ...

Owns the registry names and one generic builder, `wide_resnet(depth, width, shortcut)`. The
networks themselves are `lsurf.models.cifar_resnet.CifarResNet` with every channel count
multiplied by the width factor k (stem and stages 16k, 32k, 64k), exactly as
tomgoldstein/loss-landscape's cifar10/models/resnet.py builds them (`WResNet_cifar`). That is
a He et al. CIFAR ResNet made wider, not Zagoruyko & Komodakis' pre-activation WRN with
dropout: the paper cites them for the idea of widening only.

Names follow the reference's model_loader: `wrn{depth}_{k}` has its projection shortcuts
(option B, where the shape changes), `wrn{depth}_{k}_noshort` has no skip connection at all.
Their state_dict keys equal the reference's, so its checkpoints load as they are. Figure 6's
k = 1 row gets no wrn name, as in the reference: it is `resnet56_b` (the reference's
`resnet56`) and `resnet56_noshort`. An alias would also make every checkpoint-mismatch hint
name two models for one network. Input (N, 3, 32, 32), output (N, num_classes) logits.

Exports `MODELS`, the name -> builder table that `lsurf.models` merges into its registry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

from lsurf.models.cifar_resnet import CifarResNet, ShortcutKind

# The registry suffix per shortcut kind, as in the reference's model_loader. Option A (zero
# padding) works at any width too, but nothing published uses it, so it gets no names.
_SUFFIXES: dict[ShortcutKind, str] = {"B": "", "none": "_noshort"}

# The reference's model_loader list: WRN-56 at k = 2, 4, 8 with and without shortcuts (the
# paper's figure 6; its k = 1 column is ResNet-56), plus two deeper no-shortcut nets.
_PAPER_NETS: tuple[tuple[int, int, ShortcutKind], ...] = (
    *((56, width, kind) for width in (2, 4, 8) for kind in ("B", "none")),
    (110, 2, "none"),
    (110, 4, "none"),
)


def wide_resnet(depth: int, width: int, shortcut: ShortcutKind = "B") -> Callable[[int], nn.Module]:
    """Return a builder (num_classes -> model) for the CIFAR ResNet-`depth` k=`width` times wider.

    `shortcut` is "B" (1x1 projection where the shape changes, the reference's choice), "none"
    (no skip path) or "A" (zero padding). Raises ValueError at once, not when the builder is
    first called, if depth is not 6n + 2 or width is below 1.
    """
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"Wide-ResNet depth must be 6n + 2 with n >= 1, got {depth}")
    if width < 1:
        raise ValueError(f"Wide-ResNet width must be a positive integer, got {width}")
    return functools.partial(_build, depth, width, shortcut)


def _build(depth: int, width: int, shortcut: ShortcutKind, num_classes: int) -> nn.Module:
    return CifarResNet(depth, shortcut, num_classes, width=width)


def _registry_name(depth: int, width: int, shortcut: ShortcutKind) -> str:
    # (56, 2, "none") -> "wrn56_2_noshort"
    return f"wrn{depth}_{width}{_SUFFIXES[shortcut]}"


MODELS: dict[str, Callable[[int], nn.Module]] = {
    _registry_name(depth, width, kind): wide_resnet(depth, width, kind)
    for depth, width, kind in _PAPER_NETS
}
