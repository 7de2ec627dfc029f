"""`directions.kind: random` — seeded Gaussian directions, normalized against θ* (the paper's
filter-normalized random plane, or a line along d1 alone)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lsurf.errors import ConfigError
from lsurf.kinds import Context, Inputs, Kind

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lsurf.config import DirectionsConfig, ParamsSelection
    from lsurf.directions import Directions


class RandomPlane(Kind):
    name = "random"
    keys = (
        "norm", "ignore", "seed", "space", "y_norm", "y_ignore", "same_dir", "trajectory",
        "pattern", "trajectories", "params",
    )  # fmt: skip

    def resolve(self, settings: DirectionsConfig, plane: bool) -> DirectionsConfig:
        norm, ignore = settings.norm or "filter", settings.ignore or "biasbn"
        if settings.same_dir and (settings.y_norm or settings.y_ignore):
            raise ConfigError(
                "directions.same_dir makes y the same direction as x: remove y_norm/y_ignore"
            )
        # space, y_norm and y_ignore stay unset when left out (weights; y as x), so the
        # stored config of a plain random plane reads as it did before they existed.
        return dataclasses.replace(settings, norm=norm, ignore=ignore)

    def compute(self, settings: DirectionsConfig, context: Context, inputs: Inputs) -> Directions:
        from lsurf import params
        from lsurf.directions import random_directions

        assert settings.norm is not None and settings.ignore is not None  # resolved
        # Only the tensors directions.params selects get a direction (drawn in key order over
        # them alone); the others are left out of the Directions, so the evaluator never moves them.
        weights = params.movable(context.model, include_buffers=False, selection=settings.params)
        return random_directions(
            weights,
            settings.norm,
            settings.ignore,
            settings.seed,
            context.plane,
            y_norm=settings.y_norm,
            y_ignore=settings.y_ignore,
            same_dir=settings.same_dir,
            buffers=buffers_of(context.model, settings.params)
            if self.moves_buffers(settings)
            else None,
        )

    def record(self, settings: DirectionsConfig) -> dict[str, Any]:
        recorded = {"norm": settings.norm, "ignore": settings.ignore, "seed": settings.seed}
        return recorded | y_settings(settings)

    def describe(self, settings: Mapping[str, Any]) -> str:
        text = (
            f"norm={settings.get('norm')}  ignore={settings.get('ignore')}  "
            f"seed={settings.get('seed')}"
        )
        return text + describe_y(settings)

    def subject(self, settings: Mapping[str, Any]) -> str:
        text = "random directions"
        norm = settings.get("norm")
        if norm and norm != "none":
            text += f", {norm}-normalized"
        elif norm == "none":
            text += ", unnormalized"
        if settings.get("ignore") == "biasbn":
            text += ", biases/BN fixed"
        return text


def buffers_of(model: nn.Module, selection: ParamsSelection) -> dict[str, torch.Tensor]:
    """The floating buffers (BN running mean/var) that `space: states` moves, by key: those
    whose state_dict key `selection` picks (the same globs as the parameters')."""
    from lsurf import params

    everything = params.movable(model, include_buffers=True, selection=selection)
    weights = params.movable(model, include_buffers=False)
    return {key: tensor for key, tensor in everything.items() if key not in weights}


def y_settings(settings: DirectionsConfig) -> dict[str, Any]:
    """What a direction file records of the reference-parity settings, each only where it
    says more than files written before they existed (reuse compares these too)."""
    recorded: dict[str, Any] = {}
    if settings.space == "states":
        recorded["space"] = "states"
    if settings.same_dir:
        recorded["same_dir"] = True
    else:
        y_norm, y_ignore = settings.y_norm or settings.norm, settings.y_ignore or settings.ignore
        if (y_norm, y_ignore) != (settings.norm, settings.ignore):
            recorded["y_norm"], recorded["y_ignore"] = y_norm, y_ignore
    return recorded


def describe_y(settings: Mapping[str, Any]) -> str:
    """The y direction's settings, where they are not x's, and the space, if states."""
    text = "  space=states" if settings.get("space") == "states" else ""
    if settings.get("same_dir"):
        return text + "  y=x (same_dir)"
    y_norm, y_ignore = settings.get("y_norm"), settings.get("y_ignore")
    if (y_norm and y_norm != settings.get("norm")) or (
        y_ignore and y_ignore != settings.get("ignore")
    ):
        text += f"  y: norm={y_norm} ignore={y_ignore}"
    return text
