"""The model registry: every network lsurf can build, by name.

Owns the mapping from a registry name (the config's model name) to a builder that returns a
fresh, randomly initialized `nn.Module` taking (N, 3, 32, 32) images to (N, num_classes)
logits. Initialization draws from torch's global generator, so `torch.manual_seed` before
`build` fixes the weights. Loading trained weights is `lsurf.checkpoint`'s job.

Each model family lives in its own module and exports `MODELS: dict[str, builder]`; a new
family (VGG, DenseNet, Wide-ResNet, ...) joins the registry by adding its table to
`_FAMILIES` below, one line. Tables are plain data, so there are no import-time side effects
and no import cycles.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import nn

from lsurf.errors import ConfigError
from lsurf.models import cifar_resnet, densenet, small, vgg, wide_resnet

# A builder takes num_classes and returns a freshly initialized model.
ModelBuilder = Callable[[int], nn.Module]

_FAMILIES: tuple[Mapping[str, ModelBuilder], ...] = (
    cifar_resnet.MODELS,
    small.MODELS,
    vgg.MODELS,
    densenet.MODELS,
    wide_resnet.MODELS,
)


def _merge(families: tuple[Mapping[str, ModelBuilder], ...]) -> dict[str, ModelBuilder]:
    registry: dict[str, ModelBuilder] = {}
    for family in families:
        for name, builder in family.items():
            # Two families claiming one name is a programming error: fail at import.
            if name in registry:
                raise RuntimeError(f"model name {name!r} is registered twice")
            registry[name] = builder
    return registry


_REGISTRY: dict[str, ModelBuilder] = _merge(_FAMILIES)


def available() -> list[str]:
    """Return every registry name, sorted."""
    return sorted(_REGISTRY)


def build(name: str, num_classes: int = 10) -> nn.Module:
    """Build a fresh model by registry name; raise ConfigError for an unknown name."""
    builder = _REGISTRY.get(name)
    if builder is None:
        raise ConfigError(f"unknown model {name!r}; valid names: {', '.join(available())}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    return builder(num_classes)


__all__ = ["ModelBuilder", "available", "build"]
