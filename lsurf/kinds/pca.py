"""`directions.kind: pca` — the plane of a training trajectory's top two principal
components, with the optimizer's path projected onto it (the paper's Fig. 9). The math and
the streaming over checkpoints are `lsurf.pca`'s; this is the kind's face to the pipeline."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lsurf.errors import ConfigError
from lsurf.kinds import Context, Inputs, Kind

if TYPE_CHECKING:
    from lsurf.config import DirectionsConfig
    from lsurf.directions import Directions


class PrincipalPlane(Kind):
    name = "pca"
    keys = ("trajectory", "pattern", "center", "norm", "ignore")
    fits_auto_axes = True
    computes_trajectory = True
    plane_keys = ()  # a line runs along the first principal component

    def resolve(self, settings: DirectionsConfig, plane: bool) -> DirectionsConfig:
        if settings.trajectory is None:
            raise ConfigError(
                "directions.kind: pca needs directions.trajectory (the folder of the training "
                "run's checkpoints)"
            )
        if settings.norm not in (None, "none"):
            raise ConfigError(
                "directions.norm applies to random directions only; principal components "
                "are unit vectors: remove it"
            )
        return dataclasses.replace(settings, norm="none", ignore=settings.ignore or "biasbn")

    def compute(self, settings: DirectionsConfig, context: Context, inputs: Inputs) -> Directions:
        from lsurf import params
        from lsurf.pca import principal_plane, trajectory_files

        assert settings.trajectory is not None and settings.ignore is not None  # resolved
        weights = params.movable(context.model, include_buffers=False)
        files = trajectory_files(settings.trajectory, settings.pattern)
        plane = principal_plane(weights, files, settings.ignore, settings.center)
        directions = plane.directions(settings.ignore)
        # A 1D sweep runs along the first principal component only.
        return directions if context.plane else dataclasses.replace(directions, y=None)

    def record(self, settings: DirectionsConfig) -> dict[str, Any]:
        return {
            "norm": settings.norm,
            "ignore": settings.ignore,
            "seed": 0,
            "trajectory": str(settings.trajectory),
            "pattern": settings.pattern,
            "center": settings.center,
        }

    def describe(self, settings: Mapping[str, Any]) -> str:
        centred = "centred" if settings.get("center", True) else "not centred"
        trajectory, ignore = settings.get("trajectory"), settings.get("ignore")
        return f"trajectory {trajectory}  ignore={ignore}  {centred}"

    def subject(self, settings: Mapping[str, Any]) -> str:
        return "PCA plane of the training path"
