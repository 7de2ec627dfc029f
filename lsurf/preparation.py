"""Preparing a sweep: every check on user input, made before the first byte is written.

Owns what a sweep needs before it may touch its output: the model holding θ* (and θ2 of an
interpolation), the directions (reusing the direction file when it fits this sweep,
recomputing it when there is none or --force owns it, refusing one made for another sweep),
the grid with its 'auto' axes fitted to a PCA path, the attributes that tell this sweep from
any other, and the decision about the output (create it, resume it, or leave it alone
because it is complete; a file holding a different sweep is refused). It also opens the
output, and builds an evaluator from a `WorkerSetup` for the serial run and every worker.

Input: a validated `SweepConfig`. Output: `Prepared` (whose `worker_setup()` is what rank 0
sends to each worker), the output decision from `check_output`, the data splits from
`load_splits`, and the open surface file from `open_output`.

Bad input never touches existing output: `prepare`, `check_output`, `load_splits` and
`build_evaluator` write nothing to the output or the direction file, and raise `LsurfError` on
anything wrong with the user's input (model, checkpoints, direction file, the output's
identity, the data, the device). `open_output` is the only function here that writes (new
directions, then the surface file), and `sweep` calls it only after the others have passed —
on every worker for the data and the device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import yaml

from lsurf import checkpoint, models, params, store
from lsurf.config import GridConfig, SweepConfig
from lsurf.data import Split, load_split
from lsurf.directions import Directions, random_directions, target_direction
from lsurf.errors import OutputError
from lsurf.evaluate import Evaluator
from lsurf.grid import AutoAxis, Axis, Grid, fit_axis
from lsurf.pca import principal_plane, trajectory_files
from lsurf.schema import differences, to_plain, to_yaml
from lsurf.weights import weight_statistics

# Keys that do not change a single result value, so resuming with them changed is fine.
OPERATIONAL_KEYS = {"data.download"}


@dataclass(frozen=True)
class Prepared:
    """Everything a sweep needs before any output is written (all user input checked)."""

    config: SweepConfig
    model: torch.nn.Module  # holding θ*
    directions: Directions
    directions_are_new: bool  # computed now, to be saved once the output is accepted
    end: dict[str, torch.Tensor] | None  # θ2 of an interpolation
    grid: Grid
    identity: dict[str, Any]  # attributes that tell this sweep from any other

    def worker_setup(self) -> WorkerSetup:
        state = {key: value.detach().clone() for key, value in self.model.state_dict().items()}
        return WorkerSetup(self.config, state, self.directions, self.end, self.grid)


@dataclass(frozen=True)
class WorkerSetup:
    """What an evaluator is built from; sent from rank 0 to every worker (no shared disk)."""

    config: SweepConfig
    state: dict[str, torch.Tensor]  # θ*: the checkpoint's full state dict
    directions: Directions
    end: dict[str, torch.Tensor] | None
    grid: Grid


def prepare(config: SweepConfig, force: bool = False) -> Prepared:
    """Load and check everything; `force` lets new directions replace the output's own file."""
    model = models.build(config.model.name, config.model.num_classes)
    assert config.model.checkpoint is not None  # the config requires it for sweeps
    checkpoint.load_weights(model, config.model.checkpoint)
    identity: dict[str, Any] = {
        "checkpoint_sha256": checkpoint.file_digest(config.model.checkpoint),
        "direction_file": str(config.direction_file),
    }
    end = None
    if config.directions.kind == "target":
        assert config.directions.target is not None  # the config requires it for targets
        second = models.build(config.model.name, config.model.num_classes)
        checkpoint.load_weights(second, config.directions.target)
        identity["target_sha256"] = checkpoint.file_digest(config.directions.target)
        end = params.snapshot(params.movable(second, include_buffers=True))
    directions, is_new = _obtain_directions(config, model, end, identity, force)
    identity["directions_sha256"] = directions.digest()
    config = replace(config, grid=resolve_grid(config.grid, directions))
    identity["config"] = to_yaml(config)
    assert isinstance(config.grid.x, Axis) and not isinstance(config.grid.y, AutoAxis)
    grid = Grid.from_axes(config.grid.x, config.grid.y)
    return Prepared(config, model, directions, is_new, end, grid, identity)


def resolve_grid(grid: GridConfig, directions: Directions) -> GridConfig:
    """Replace 'auto:num' axes by ranges fitted to the PCA path (config checks the kind)."""
    path = None if directions.trajectory is None else directions.trajectory.coordinates
    axes = []
    for column, axis in enumerate((grid.x, grid.y)):
        if isinstance(axis, AutoAxis):
            assert path is not None  # config allows auto axes only for kind: pca
            axis = fit_axis(path[:, column], axis.num)
        axes.append(axis)
    return GridConfig(*axes)


def direction_settings(config: SweepConfig, identity: dict[str, Any]) -> dict[str, Any]:
    """What a direction file records of how it was made; reuse requires all of it to match."""
    settings = config.directions
    recorded = {
        "kind": settings.kind,
        "norm": settings.norm,
        "ignore": settings.ignore,
        "seed": settings.seed if settings.kind == "random" else 0,
        "checkpoint_sha256": identity["checkpoint_sha256"],
        "target_sha256": identity.get("target_sha256", ""),
    }
    if settings.kind == "pca":
        recorded |= {
            "trajectory": str(settings.trajectory),
            "pattern": settings.pattern,
            "center": settings.center,
        }
    return recorded


def _compute_directions(
    config: SweepConfig, weights: dict[str, torch.Tensor], end: dict[str, torch.Tensor] | None
) -> Directions:
    settings = config.directions
    assert settings.norm is not None and settings.ignore is not None  # resolved by config
    if settings.kind == "target":
        assert end is not None  # prepare loads θ2 for targets
        return target_direction(weights, end)
    if settings.kind == "pca":
        assert settings.trajectory is not None  # the config requires it for pca
        files = trajectory_files(settings.trajectory, settings.pattern)
        plane = principal_plane(weights, files, settings.ignore, settings.center)
        directions = plane.directions(settings.ignore)
        # A 1D sweep along the first principal component only.
        return directions if config.grid.y is not None else replace(directions, y=None)
    plane_wanted = config.grid.y is not None
    return random_directions(weights, settings.norm, settings.ignore, settings.seed, plane_wanted)


def _obtain_directions(
    config: SweepConfig,
    model: torch.nn.Module,
    end: dict[str, torch.Tensor] | None,
    identity: dict[str, Any],
    force: bool,
) -> tuple[Directions, bool]:
    """Reuse the direction file when it exists and fits this sweep; else compute anew.

    With --force the default direction file (the one beside the output, owned by it) is
    recomputed; a file named in directions.file may serve other sweeps and is never replaced.
    """
    weights = params.movable(model, include_buffers=config.directions.kind == "target")
    path = config.direction_file
    if not path.exists() or (force and config.directions.file is None):
        return _compute_directions(config, weights, end), True

    directions, attributes = store.read_directions(path)
    expected = direction_settings(config, identity)
    found = {key: attributes.get(key, "") for key in expected}
    mismatched = [key for key in expected if found[key] != expected[key]]
    shapes = {key: tuple(tensor.shape) for key, tensor in weights.items()}
    if {key: tuple(t.shape) for key, t in directions.x.items()} != shapes:
        mismatched.append("parameter names/shapes")
    if (directions.y is None) != (config.grid.y is None):
        mismatched.append("dimensions (1D vs 2D)")
    if mismatched:
        detail = ", ".join(
            f"{key} {found[key]!r} vs {expected[key]!r}" if key in found else key
            for key in mismatched
        )
        raise OutputError(
            f"direction file {path} was made for another sweep (differs in: {detail}); "
            "delete it, point directions.file elsewhere, or match its settings"
        )
    return directions, False


def check_output(prepared: Prepared, force: bool) -> bool | None:
    """None: create the output; False: resume it; True: it is already complete."""
    path = prepared.config.output
    if force or not path.exists():
        return None
    found = store.read_surface_attributes(path)
    old_config = yaml.safe_load(str(found.get("config", ""))) or {}
    new_config = to_plain(prepared.config)
    changed = [key for key in differences(old_config, new_config) if key not in OPERATIONAL_KEYS]
    for key in ("checkpoint_sha256", "target_sha256", "directions_sha256"):
        if found.get(key, "") != prepared.identity.get(key, ""):
            changed.append(key.removesuffix("_sha256") + " contents")
    if changed:
        raise OutputError(
            f"output {path} holds a different sweep (differs in: {', '.join(changed)}); "
            "choose another output path, or pass --force to start over"
        )
    return bool(store.read_surface(path).done.all())


def load_splits(config: SweepConfig) -> dict[str, Split]:
    data = config.data
    return {
        name: load_split(
            data.root, name, data.mean, data.std, data.subset, data.subset_seed, data.download
        )
        for name in data.splits
    }


def open_output(prepared: Prepared, resume: bool) -> store.SurfaceWriter:
    """Save new directions, then create or reopen the surface file."""
    config = prepared.config
    if prepared.directions_are_new:
        store.write_directions(
            config.direction_file,
            prepared.directions,
            direction_settings(config, prepared.identity),
        )
    if resume:
        return store.SurfaceWriter(config.output)
    metrics = store.metric_names(config.data.splits)
    return store.create_surface(
        config.output,
        prepared.grid,
        metrics,
        prepared.identity,
        prepared.directions.trajectory,
        weight_statistics(prepared.model.state_dict()),
    )


def build_evaluator(
    setup: WorkerSetup, splits: dict[str, Split], device: torch.device
) -> Evaluator:
    """A fresh model holding θ*, with the directions and data on `device`."""
    config = setup.config
    model = models.build(config.model.name, config.model.num_classes)
    model.load_state_dict(setup.state)
    return Evaluator(
        model,
        setup.directions,
        splits,
        config.data.batch_size,
        device,
        config.evaluation.channels_last,
        config.evaluation.precision,
        setup.end,
    )
