"""`directions.kind: random` — seeded Gaussian directions, normalized against θ* (the paper's
filter-normalized random plane, or a line along d1 alone)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lsurf.kinds import Context, Inputs, Kind

if TYPE_CHECKING:
    from lsurf.config import DirectionsConfig
    from lsurf.directions import Directions


class RandomPlane(Kind):
    name = "random"
    keys = ("norm", "ignore", "seed")

    def resolve(self, settings: DirectionsConfig) -> DirectionsConfig:
        return dataclasses.replace(
            settings, norm=settings.norm or "filter", ignore=settings.ignore or "biasbn"
        )

    def compute(self, settings: DirectionsConfig, context: Context, inputs: Inputs) -> Directions:
        from lsurf import params
        from lsurf.directions import random_directions

        assert settings.norm is not None and settings.ignore is not None  # resolved
        weights = params.movable(context.model, include_buffers=False)
        return random_directions(
            weights, settings.norm, settings.ignore, settings.seed, context.plane
        )

    def record(self, settings: DirectionsConfig) -> dict[str, Any]:
        return {"norm": settings.norm, "ignore": settings.ignore, "seed": settings.seed}

    def describe(self, settings: Mapping[str, Any]) -> str:
        return (
            f"norm={settings.get('norm')}  ignore={settings.get('ignore')}  "
            f"seed={settings.get('seed')}"
        )

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
