"""The model registry: every network lsurf can build, by name.

Owns the mapping from a registry name (the config's model name) to a builder that returns a
fresh, randomly initialized `nn.Module` taking (N, 3, 32, 32) images to (N, num_classes)
logits. Initialization draws from torch's global generator, so `torch.manual_seed` before
`build` fixes the weights. Loading trained weights is `lsurf.checkpoint`'s job.

Each model family lives in its own module and exports `MODELS: dict[str, builder]`; a new
family (VGG, DenseNet, Wide-ResNet, ...) joins the registry by adding its table to
`_FAMILIES` below, one line. Tables are plain data, so there are no import-time side effects
and no import cycles. Networks outside lsurf come in by import path (`build_named`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from lsurf.config import KEYWORD_MODELS
from lsurf.errors import ConfigError
from lsurf.imports import is_import_path, resolve
from lsurf.models import cifar_resnet, densenet, language, small, vgg, wide_resnet

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
# Language models take their sizes as keywords (model.kwargs), not a class count; the config
# knows their names without importing torch.
assert set(language.MODELS) == set(KEYWORD_MODELS), "lsurf.config.KEYWORD_MODELS is out of date"


def available() -> list[str]:
    """Every image classifier's registry name, sorted (the language models, built from
    model.kwargs, are `language.MODELS`)."""
    return sorted(_REGISTRY)


def build(name: str, num_classes: int = 10) -> nn.Module:
    """Build a fresh model by registry name; raise ConfigError for an unknown name."""
    if name in language.MODELS:
        return language.MODELS[name]()  # its default sizes; build_named takes model.kwargs
    builder = _REGISTRY.get(name)
    if builder is None:
        raise ConfigError(
            f"unknown model {name!r}; valid names: {', '.join(available())}; language models "
            f"(model.kwargs): {', '.join(sorted(language.MODELS))}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    return builder(num_classes)


def build_named(name: str, num_classes: int | None, kwargs: Mapping[str, Any]) -> nn.Module:
    """A fresh model from a registry name or from `package.module:callable(**kwargs)`.

    An import-path callable gets `num_classes` as a keyword when it is given (and kwargs does
    not already hold it); it must return an `nn.Module`. Every rank calls this itself.
    """
    if name in language.MODELS:
        return _called(name, language.MODELS[name], dict(kwargs))
    if not is_import_path(name):
        if num_classes is None:
            raise ConfigError(
                f"model {name!r} needs model.num_classes with this dataset (its class count "
                "is known only from the data); set model.num_classes"
            )
        return build(name, num_classes)
    factory = resolve(name, "model.name")
    arguments = dict(kwargs)
    if num_classes is not None:
        arguments.setdefault("num_classes", num_classes)
    return _called(name, factory, arguments)


def _called(name: str, factory: Callable[..., Any], arguments: dict[str, Any]) -> nn.Module:
    """factory(**arguments), its failure or a result that is no module as one line."""
    try:
        model = factory(**arguments)
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - user code; its failure is the user's to fix
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        shown = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
        raise ConfigError(
            f"model.name: {name}({shown}) raised {reason}; check model.kwargs"
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model.name: {name} returned a {type(model).__name__}, not a torch.nn.Module; "
            "point model.name at a function or class that builds the network"
        )
    return model


__all__ = ["ModelBuilder", "available", "build", "build_named"]
