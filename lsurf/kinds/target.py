"""`directions.kind: target` — the line from θ* to a second checkpoint θ2 (the paper's 1D
interpolations between small- and large-batch minima), or a plane through it.

x = θ2 − θ1, unnormalized, over the parameters and (`space: states`, the default, as the
paper's interpolations) the floating BN buffers. A plane takes as y either θ3 − θ1 for a
third checkpoint (`y_target`, the reference's --model_file3), x itself (`same_dir`) or a
seeded random direction normalized by `y_norm`/`y_ignore` (the reference's --model_file2
with --y). The evaluator moves to lerp(θ1, θ2, a) (+ b·y), and through three checkpoints to
(1 − a − b)·θ1 + a·θ2 + b·θ3: exactly θ1, θ2 and θ3 at (0, 0), (1, 0) and (0, 1), so the end
points travel inside the directions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsurf.errors import ConfigError
from lsurf.kinds import Context, Inputs, Kind
from lsurf.kinds.random import buffers_of, describe_y

if TYPE_CHECKING:
    from lsurf.config import DirectionsConfig
    from lsurf.directions import Directions


class Interpolation(Kind):
    name = "target"
    keys = (
        "target", "y_target", "norm", "ignore", "space", "seed", "y_norm", "y_ignore", "same_dir",
        "trajectory", "pattern", "trajectories", "params",
    )  # fmt: skip
    plane_keys = (*Kind.plane_keys, "seed")  # a target line has no random part

    def resolve(self, settings: DirectionsConfig, plane: bool) -> DirectionsConfig:
        if settings.target is None:
            raise ConfigError("directions.kind: target needs directions.target (second checkpoint)")
        if settings.norm not in (None, "none") or settings.ignore not in (None, "none"):
            raise ConfigError(
                "directions.norm and directions.ignore apply to random directions only; "
                "a target direction is θ2 − θ1 unnormalized: remove them (y_norm/y_ignore "
                "normalize a random y)"
            )
        random_y = plane and settings.y_target is None and not settings.same_dir
        if not random_y and (settings.y_norm or settings.y_ignore or settings.seed):
            raise ConfigError(
                "directions.y_norm, y_ignore and seed shape a random y; with "
                f"{'y_target' if settings.y_target else 'same_dir'} y is not random: remove them"
            )
        if settings.y_target is not None and settings.same_dir:
            raise ConfigError("directions.same_dir and y_target both set y: keep one")
        return dataclasses.replace(
            settings,
            norm="none",
            ignore="none",
            space=settings.space or "states",
            y_norm=(settings.y_norm or "filter") if random_y else None,
            y_ignore=(settings.y_ignore or "biasbn") if random_y else None,
        )

    def load(self, settings: DirectionsConfig, context: Context) -> Inputs:
        from lsurf import checkpoint, params

        assert settings.target is not None  # resolve requires it

        def state_of(path: Path) -> dict:
            model = context.build_model()
            checkpoint.load_weights(model, path)
            return params.snapshot(params.movable(model, include_buffers=True))

        identity = {"target_sha256": checkpoint.file_digest(settings.target)}
        y_end = None
        if settings.y_target is not None and context.plane:
            identity["y_target_sha256"] = checkpoint.file_digest(settings.y_target)
            y_end = state_of(settings.y_target)
        return Inputs(identity, state_of(settings.target), y_end)

    def compute(self, settings: DirectionsConfig, context: Context, inputs: Inputs) -> Directions:
        from lsurf import params
        from lsurf.directions import random_directions, target_direction

        # The tensors directions.params selects (buffers by key): the others stay at θ*.
        start = params.movable(
            context.model, include_buffers=self.moves_buffers(settings), selection=settings.params
        )
        line = target_direction(start, inputs.end)
        if not context.plane:
            return line
        if inputs.y_end is not None:
            y = target_direction(start, inputs.y_end).x
        elif settings.same_dir:
            y = line.x
        else:
            assert settings.y_norm is not None and settings.y_ignore is not None  # resolved
            weights = params.movable(
                context.model, include_buffers=False, selection=settings.params
            )
            moves = self.moves_buffers(settings)
            buffers = buffers_of(context.model, settings.params) if moves else None
            y = random_directions(
                weights, settings.y_norm, settings.y_ignore, settings.seed, False, buffers=buffers
            ).x
        return dataclasses.replace(line, y=y, seed=settings.seed)

    def record(self, settings: DirectionsConfig) -> dict[str, Any]:
        recorded: dict[str, Any] = {"norm": "none", "ignore": "none", "seed": settings.seed}
        if settings.space == "weights":
            recorded["space"] = "weights"
        if settings.same_dir:
            recorded["same_dir"] = True
        elif settings.y_norm is not None:  # a random y
            recorded["y_norm"], recorded["y_ignore"] = settings.y_norm, settings.y_ignore
        return recorded

    def describe(self, settings: Mapping[str, Any]) -> str:
        target = settings.get("target")  # a direction file records the digest, not the path
        text = f"to {target}" if target else "θ2 − θ1, unnormalized"
        if settings.get("y_target"):
            text += f"; y to {settings.get('y_target')}"
        elif settings.get("y_norm"):
            text += f"; y random (seed={settings.get('seed')})"
        if settings.get("space") == "weights":
            text += "  space=weights"
        return text + (describe_y(settings) if settings.get("same_dir") else "")

    def subject(self, settings: Mapping[str, Any]) -> str:
        target = settings.get("target")
        text = f"interpolation to {Path(str(target)).name if target else 'a target'}"
        third = settings.get("y_target")
        if third:
            return f"plane through three checkpoints (to {Path(str(third)).name})"
        return text

    def axis_labels(self, settings: Mapping[str, Any], checkpoint: str) -> tuple[str, str]:
        start, end = _short_names(checkpoint or "θ1", settings.get("target") or "θ2")
        third = settings.get("y_target")
        if third:
            _, last = _short_names(checkpoint or "θ1", third)
            return f"α  (0: {start}, 1: {end})", f"β  (0: {start}, 1: {last})"
        return f"α  (0: {start}, 1: {end})", "β (direction 2)"


def _short_names(first: str, second: str) -> tuple[str, str]:
    """File names, with their folder when both are called the same (run_a/final.pt)."""
    paths = Path(str(first)), Path(str(second))
    if paths[0].name != paths[1].name:
        return paths[0].name, paths[1].name
    return f"{paths[0].parent.name}/{paths[0].name}", f"{paths[1].parent.name}/{paths[1].name}"
