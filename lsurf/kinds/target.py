"""`directions.kind: target` — the line from θ* to a second checkpoint θ2 (the paper's 1D
interpolations between small- and large-batch minima).

d = θ2 − θ1 over the parameters and the floating BN buffers, unnormalized; the evaluator
moves to lerp(θ1, θ2, a), which is exactly θ1 at a = 0 and exactly θ2 at a = 1, so θ2 travels
inside the directions as their end point.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsurf.errors import ConfigError
from lsurf.kinds import Context, Inputs, Kind

if TYPE_CHECKING:
    from lsurf.config import DirectionsConfig
    from lsurf.directions import Directions


class Interpolation(Kind):
    name = "target"
    keys = ("target", "norm", "ignore")
    moves_buffers = True
    line_only = True

    def resolve(self, settings: DirectionsConfig) -> DirectionsConfig:
        if settings.target is None:
            raise ConfigError("directions.kind: target needs directions.target (second checkpoint)")
        if settings.norm not in (None, "none") or settings.ignore not in (None, "none"):
            raise ConfigError(
                "directions.norm and directions.ignore apply to random directions only; "
                "a target direction is θ2 − θ1 unnormalized: remove them"
            )
        return dataclasses.replace(settings, norm="none", ignore="none")

    def load(self, settings: DirectionsConfig, context: Context) -> Inputs:
        from lsurf import checkpoint, params

        assert settings.target is not None  # resolve requires it
        second = context.build_model()
        checkpoint.load_weights(second, settings.target)
        end = params.snapshot(params.movable(second, include_buffers=True))
        return Inputs({"target_sha256": checkpoint.file_digest(settings.target)}, end)

    def compute(self, settings: DirectionsConfig, context: Context, inputs: Inputs) -> Directions:
        from lsurf import params
        from lsurf.directions import target_direction

        start = params.movable(context.model, include_buffers=True)
        return target_direction(start, inputs.end)

    def record(self, settings: DirectionsConfig) -> dict[str, Any]:
        return {"norm": "none", "ignore": "none", "seed": 0}

    def describe(self, settings: Mapping[str, Any]) -> str:
        target = settings.get("target")  # a direction file records the digest, not the path
        return f"to {target}" if target else "θ2 − θ1, unnormalized"

    def subject(self, settings: Mapping[str, Any]) -> str:
        target = settings.get("target")
        return f"interpolation to {Path(str(target)).name if target else 'a target'}"

    def axis_labels(self, settings: Mapping[str, Any], checkpoint: str) -> tuple[str, str]:
        start, end = _short_names(checkpoint or "θ1", settings.get("target") or "θ2")
        return f"α  (0: {start}, 1: {end})", "β (direction 2)"


def _short_names(first: str, second: str) -> tuple[str, str]:
    """File names, with their folder when both are called the same (run_a/final.pt)."""
    paths = Path(str(first)), Path(str(second))
    if paths[0].name != paths[1].name:
        return paths[0].name, paths[1].name
    return f"{paths[0].parent.name}/{paths[0].name}", f"{paths[1].parent.name}/{paths[1].name}"
