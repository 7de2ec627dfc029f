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
    keys = ("trajectory", "trajectories", "pattern", "center", "norm", "ignore", "params")
    fits_auto_axes = True
    computes_trajectory = True
    # A line runs along the first principal component; several runs are drawn on planes only.
    plane_keys = ("trajectories",)

    def resolve(self, settings: DirectionsConfig, plane: bool) -> DirectionsConfig:
        if settings.trajectory is None and not settings.trajectories:
            raise ConfigError(
                "directions.kind: pca needs directions.trajectory (the folder of the training "
                "run's checkpoints) or directions.trajectories (several runs' folders)"
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

        assert settings.ignore is not None  # resolved
        # The principal components of the path over the selected tensors only.
        weights = params.movable(context.model, include_buffers=False, selection=settings.params)
        if settings.trajectories:
            return self._union_plane(settings, weights)
        assert settings.trajectory is not None  # resolved
        files = trajectory_files(settings.trajectory, settings.pattern)
        plane = principal_plane(weights, files, settings.ignore, settings.center)
        directions = plane.directions(settings.ignore)
        # A 1D sweep runs along the first principal component only.
        return directions if context.plane else dataclasses.replace(directions, y=None)

    def _union_plane(self, settings: DirectionsConfig, weights: dict[str, Any]) -> Directions:
        """The plane of all runs' checkpoints together: rows θ_i − θ* of every run, centred
        on their common mean (as one run's are on its own). Each run's path on it is
        projected afterwards, as on any plane (lsurf.projection.runs_on_plane)."""
        from lsurf.files.trajectory import Runs
        from lsurf.pca import principal_plane
        from lsurf.projection import run_files

        assert settings.ignore is not None  # resolved
        keys = [
            key for key in weights if not (settings.ignore == "biasbn" and weights[key].dim() <= 1)
        ]
        files = [
            file
            for run in settings.trajectories
            for file in run_files(run, settings.pattern, weights, keys)
        ]
        plane = principal_plane(weights, files, settings.ignore, settings.center)
        directions = plane.directions(settings.ignore)
        runs = Runs((), plane.explained_variance_ratio)
        return dataclasses.replace(directions, trajectory=None, runs=runs)

    def record(self, settings: DirectionsConfig) -> dict[str, Any]:
        if settings.trajectories:  # recorded only then: single-run files stay as they were
            runs = "; ".join(f"{run.label}={run.path}" for run in settings.trajectories)
            return {
                "norm": settings.norm,
                "ignore": settings.ignore,
                "seed": 0,
                "trajectories": runs,
                "pattern": settings.pattern,
                "center": settings.center,
            }
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
        # A stored config lists the runs; a direction file records them as one
        # 'label=folder; ...' text (`record`).
        runs = settings.get("trajectories") or []
        if isinstance(runs, str):
            runs = runs.split("; ")
        if runs:
            return f"{len(runs)} runs' checkpoints together  ignore={ignore}  {centred}"
        return f"trajectory {trajectory}  ignore={ignore}  {centred}"

    def subject(self, settings: Mapping[str, Any]) -> str:
        if settings.get("trajectories"):
            return "PCA plane of the training paths"
        return "PCA plane of the training path"
