"""A training run's path on a plane: its value type and the datasets that hold it.

A PCA sweep (or any plane a trajectory is projected onto) stores where each checkpoint of
the run lies: `proj_xcoord`, `proj_ycoord` (the reference's names), `proj_epoch`, and the
attribute `explained_variance_ratio`, in the surface file and in the direction file alike.
Several runs on one plane (`directions.trajectories`) are a group `trajectories` beside them,
one subgroup `run_<i>` per run in the config's order, each holding the same three datasets
and attributes `label`, `folder` and `explained_variance_ratio` (the share of that run's own
variance each axis captures); on a PCA plane the group's `explained_variance_ratio` is the
plane's over all runs' checkpoints together. A file without runs has no such group, so a
single path's layout is unchanged. numpy and h5py only, so plotting reads it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np


@dataclass(frozen=True)
class Trajectory:
    """Where each checkpoint of a training run lies on the plane of a PCA sweep."""

    coordinates: np.ndarray  # (k, 2) float64: (a_i, b_i), the final model at (0, 0)
    epochs: tuple[int, ...]  # each checkpoint's epoch (the number in its file name)
    explained_variance_ratio: tuple[float, float]  # of the plane's two axes


# The reference names the projected path's coordinates proj_xcoord/proj_ycoord.
TRAJECTORY_DATASETS = ("proj_xcoord", "proj_ycoord", "proj_epoch")


def write_trajectory(h5file: h5py.File | h5py.Group, trajectory: Trajectory | None) -> None:
    if trajectory is None:
        return
    h5file.create_dataset("proj_xcoord", data=trajectory.coordinates[:, 0])
    h5file.create_dataset("proj_ycoord", data=trajectory.coordinates[:, 1])
    h5file.create_dataset("proj_epoch", data=np.asarray(trajectory.epochs, dtype=np.int64))
    h5file.attrs["explained_variance_ratio"] = np.asarray(trajectory.explained_variance_ratio)


def read_trajectory(h5file: h5py.File | h5py.Group) -> Trajectory | None:
    if any(name not in h5file for name in TRAJECTORY_DATASETS):
        return None
    coordinates = np.stack([h5file["proj_xcoord"][()], h5file["proj_ycoord"][()]], axis=1)
    ratio = [float(value) for value in h5file.attrs.get("explained_variance_ratio", [0.0, 0.0])]
    epochs = tuple(int(epoch) for epoch in h5file["proj_epoch"][()])
    return Trajectory(coordinates, epochs, (ratio[0], ratio[1]))


@dataclass(frozen=True)
class RunPath:
    """One training run of several on a plane: its name, its folder and its path."""

    label: str
    folder: str
    trajectory: Trajectory


@dataclass(frozen=True)
class Runs:
    """The training runs of `directions.trajectories` on one plane, in the config's order."""

    paths: tuple[RunPath, ...]
    # kind pca: the explained variance ratios of the plane over all runs' checkpoints
    # together; None on planes not computed from the runs.
    explained_variance_ratio: tuple[float, float] | None = None


RUNS_GROUP = "trajectories"


def write_runs(h5file: h5py.File, runs: Runs | None) -> None:
    if runs is None:
        return
    group = h5file.create_group(RUNS_GROUP)
    if runs.explained_variance_ratio is not None:
        group.attrs["explained_variance_ratio"] = np.asarray(runs.explained_variance_ratio)
    for index, run in enumerate(runs.paths):
        member = group.create_group(f"run_{index}")
        write_trajectory(member, run.trajectory)
        member.attrs["label"] = run.label
        member.attrs["folder"] = run.folder


def read_runs(h5file: h5py.File) -> Runs | None:
    if RUNS_GROUP not in h5file:
        return None
    group = h5file[RUNS_GROUP]
    paths = []
    # run_<i> in numeric order: h5py lists names alphabetically (run_10 before run_2)
    for name in sorted(group, key=lambda name: int(name.removeprefix("run_"))):
        trajectory = read_trajectory(group[name])
        if trajectory is not None:
            attributes = group[name].attrs
            paths.append(RunPath(str(attributes["label"]), str(attributes["folder"]), trajectory))
    ratio = group.attrs.get("explained_variance_ratio")
    plane_ratio = None if ratio is None else (float(ratio[0]), float(ratio[1]))
    return Runs(tuple(paths), plane_ratio)
