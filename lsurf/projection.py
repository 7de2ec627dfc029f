"""A training trajectory's path on any plane of directions, in the surface's own coordinates.

Owns the projection of a training run's checkpoints θ_0 … θ_{k-1} onto the plane
{θ* + a·x + b·y} that a sweep evaluates, whatever made x and y (random, target, Hessian or
PCA directions). `lsurf.pca` computes its own path while it builds its plane; on a PCA plane
this gives the same numbers.

Input: θ* (named tensors, the sweep's origin), the plane's directions x and y (named tensors
shaped like θ*'s), the checkpoint files in trajectory order, and `keys`, the tensors that
take part (those the directions move, less those held at θ*). Output: a `Trajectory` with
each checkpoint's (a_i, b_i), its epoch (the number in its file name) and the share of the
path's variance that each axis captures.

The math, in float64 over `keys`: d_i = θ_i − θ*, and (a_i, b_i) is the least-squares
solution of a·x + b·y ≈ d_i, from the normal equations G [a_i, b_i]ᵀ = [⟨d_i, x⟩, ⟨d_i, y⟩]
with G the Gram matrix [[⟨x, x⟩, ⟨x, y⟩], [⟨x, y⟩, ⟨y, y⟩]]. So θ* + a_i·x + b_i·y is the
point of the plane nearest θ_i, and the path is drawn where the sweep evaluated that point.
The variance captured by axis j, with u_j the unit vector of its direction, is
Σ_i ⟨d_i − d̄, u_j⟩² / Σ_i ‖d_i − d̄‖²: mean-centred like PCA's explained variance ratio,
which it equals on a PCA plane. When x and y are not orthogonal the two shares count their
common part twice, so their sum can exceed 1.

Streaming: one memory-mapped checkpoint is read at a time, and memory holds θ*'s size in
float64 for the running mean d̄ plus two dot products per checkpoint, never the k × n matrix.
The mean is updated as Welford does, which keeps Σ‖d_i − d̄‖² free of the cancellation in
Σ‖d_i‖² − k‖d̄‖² (the path's spread is small next to its distance from θ*).

Several runs (`directions.trajectories`): each is projected on its own by the same rule,
so a run's path and its variance shares are what it would get alone on that plane.

Units, against the reference (tomgoldstein/loss-landscape, projection.py): its default
proj_method 'cos' takes x_i = ⟨d_i, dx⟩ / ‖dx‖, the length of d_i along the unit vector of
dx. That is the surface's α only when ‖dx‖ = 1 and dx ⊥ dy, as for PCA directions. A
filter-normalized random direction has the norm of the weights it moves (each filter is
rescaled to its own), far from 1, so its 'cos' paths over random planes are ‖dx‖ times too
long for the surface they are drawn on. Its 'lstsq' method solves the problem solved here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from lsurf import params
from lsurf.checkpoint import read_state_dict
from lsurf.directions import Directions
from lsurf.errors import ConfigError
from lsurf.files.trajectory import RunPath, Runs, Trajectory
from lsurf.pca import check_fits, checkpoint_epoch, trajectory_files

if TYPE_CHECKING:
    from lsurf.config import TrajectoryRun

# 1 − cos²(x, y) at or below this and G is singular in float64 for any purpose here: the two
# directions span a line (same_dir gives exactly 0, two independent random directions ~1).
PARALLEL_TOLERANCE = 1e-10


def project_trajectory(
    origin: dict[str, torch.Tensor],
    x: dict[str, torch.Tensor],
    y: dict[str, torch.Tensor],
    files: Sequence[Path],
    keys: Sequence[str],
) -> Trajectory:
    """The path of the checkpoints `files` on the plane θ* + a·x + b·y (see the module docstring).

    Raises ConfigError when x and y are parallel or zero over `keys`, when a checkpoint does
    not hold `keys` shaped as θ*'s (naming the file), or when the checkpoints do not differ.
    """
    if not files:
        raise ConfigError("no trajectory checkpoints to project onto the plane")
    gram = _gram_matrix(x, y, keys)
    dots = np.zeros((len(files), 2))  # row i: ⟨d_i, x⟩, ⟨d_i, y⟩
    mean: dict[str, torch.Tensor] = {}  # d̄ over the checkpoints read so far, per key
    spread = 0.0  # Σ_i ‖d_i − d̄‖² over the checkpoints read so far
    for index, path in enumerate(files):
        state = read_state_dict(path, mmap=True)
        check_fits(state, origin, keys, path)
        for key in keys:
            difference = _flat64(state[key]) - _flat64(origin[key])  # d_i restricted to key
            dots[index, 0] += float(difference @ _flat64(x[key]))
            dots[index, 1] += float(difference @ _flat64(y[key]))
            if index == 0:
                mean[key] = difference  # the mean of one checkpoint; its spread is 0
                continue
            # Welford: δ = d_i − d̄_old, d̄ += δ / (i+1), spread += ⟨δ, d_i − d̄_new⟩.
            delta = difference - mean[key]
            mean[key] += delta / (index + 1)
            spread += float(delta @ (difference - mean[key]))
        del state  # drop the mapping before the next file: one checkpoint resident at a time
    if spread <= 0.0:
        raise ConfigError(
            f"the {len(files)} trajectory checkpoint(s) do not differ from each other over the "
            "tensors the plane moves; there is no path to project"
        )
    coordinates = np.linalg.solve(gram, dots.T).T  # (k, 2): the normal equations per row
    # ⟨d_i − d̄, u_j⟩ = ⟨d_i, u_j⟩ − mean_i ⟨d_i, u_j⟩: centring the k projections is exact.
    along_units = dots / np.sqrt(np.diag(gram))
    centred = along_units - along_units.mean(axis=0)
    captured = (centred**2).sum(axis=0) / spread
    return Trajectory(
        coordinates=coordinates,
        epochs=tuple(checkpoint_epoch(Path(path)) for path in files),
        explained_variance_ratio=(float(captured[0]), float(captured[1])),
    )


def _gram_matrix(
    x: dict[str, torch.Tensor], y: dict[str, torch.Tensor], keys: Sequence[str]
) -> np.ndarray:
    """G = [[⟨x, x⟩, ⟨x, y⟩], [⟨x, y⟩, ⟨y, y⟩]] over `keys` in float64, checked invertible."""
    xx = xy = yy = 0.0
    for key in keys:
        flat_x, flat_y = _flat64(x[key]), _flat64(y[key])
        xx += float(flat_x @ flat_x)
        xy += float(flat_x @ flat_y)
        yy += float(flat_y @ flat_y)
    for name, squared_norm in (("x", xx), ("y", yy)):
        if squared_norm == 0.0:
            raise ConfigError(
                f"a training path cannot be projected onto a plane whose {name} direction is "
                "zero on every tensor it moves; check directions.ignore and the model"
            )
    if 1.0 - xy * xy / (xx * yy) <= PARALLEL_TOLERANCE:
        raise ConfigError(
            "a training path cannot be projected onto a plane whose two directions are "
            "parallel (directions.same_dir); draw y independently (same_dir: false) or drop "
            "the path"
        )
    return np.array([[xx, xy], [xy, yy]])


def _flat64(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` as a flat float64 CPU vector (converted per use: no float64 θ* is kept)."""
    return tensor.detach().to("cpu", torch.float64).reshape(-1)


def path_on_plane(
    model: torch.nn.Module, directions: Directions, folder: Path, pattern: str
) -> Trajectory:
    """The checkpoints `pattern` matches in `folder` projected onto any plane (the reference's
    plot_trajectory.py --dir_file), over the tensors the plane moves; computed afresh on
    every run, as the path is not part of what a direction file records."""
    assert directions.y is not None  # a plane
    origin = params.movable(model, include_buffers=directions.moves_buffers)
    # The tensors the plane moves: those with a direction (directions.params may leave some
    # out) that is not zero.
    keys = [
        key
        for key in origin
        if key in directions.x and (bool(directions.x[key].any()) or bool(directions.y[key].any()))
    ]
    files = trajectory_files(folder, pattern)
    return project_trajectory(origin, directions.x, directions.y, files, keys)


def run_files(
    run: TrajectoryRun, pattern: str, origin: dict[str, torch.Tensor], keys: Sequence[str]
) -> list[Path]:
    """The checkpoints of one run of `directions.trajectories`, in epoch order, each checked
    against θ* over `keys`: one line naming the run (and the first key that does not fit)."""
    name = f"directions.trajectories run {run.label!r}"
    if not run.path.is_dir():
        raise ConfigError(f"{name}: {run.path} is not a folder of checkpoints")
    files = sorted(run.path.glob(pattern), key=lambda path: (checkpoint_epoch(path), path.name))
    if len(files) < 2:
        raise ConfigError(
            f"{name}: {run.path} holds {len(files)} checkpoint(s) matching {pattern!r}; a path "
            "needs at least 2 (lsurf train writes model_<epoch>.pt; directions.pattern picks)"
        )
    for path in files:
        state = read_state_dict(path, mmap=True)
        for key in keys:
            if key not in state or state[key].shape != origin[key].shape:
                found = "missing" if key not in state else f"shaped {tuple(state[key].shape)}"
                raise ConfigError(
                    f"{name}: checkpoint {path.name} does not fit model.checkpoint's model "
                    f"({key} {found}, θ* has {tuple(origin[key].shape)}); is it the same "
                    "architecture?"
                )
        del state
    return files


def runs_on_plane(
    model: torch.nn.Module,
    directions: Directions,
    runs: Sequence[TrajectoryRun],
    pattern: str,
) -> Runs:
    """Each run of `directions.trajectories` projected onto the sweep's plane on its own,
    as `path_on_plane` projects one (the plane's own variance ratios, a PCA kind's over all
    the runs, are kept from `directions.runs`)."""
    assert directions.y is not None  # a plane: config refuses trajectories on a line
    origin = params.movable(model, include_buffers=directions.moves_buffers)
    keys = [key for key in origin if bool(directions.x[key].any()) or bool(directions.y[key].any())]
    paths = []
    for run in runs:
        assert run.label is not None  # kinds.resolve labels every run
        files = run_files(run, pattern, origin, keys)
        path = project_trajectory(origin, directions.x, directions.y, files, keys)
        paths.append(RunPath(run.label, str(run.path), path))
    plane_ratio = None if directions.runs is None else directions.runs.explained_variance_ratio
    return Runs(tuple(paths), plane_ratio)
