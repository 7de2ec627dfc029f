"""A training run's path on a plane: its value type and the datasets that hold it.

A PCA sweep (or any plane a trajectory is projected onto) stores where each checkpoint of
the run lies: `proj_xcoord`, `proj_ycoord` (the reference's names), `proj_epoch`, and the
attribute `explained_variance_ratio`, in the surface file and in the direction file alike.
numpy and h5py only, so plotting reads it without torch.
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


def write_trajectory(h5file: h5py.File, trajectory: Trajectory | None) -> None:
    if trajectory is None:
        return
    h5file.create_dataset("proj_xcoord", data=trajectory.coordinates[:, 0])
    h5file.create_dataset("proj_ycoord", data=trajectory.coordinates[:, 1])
    h5file.create_dataset("proj_epoch", data=np.asarray(trajectory.epochs, dtype=np.int64))
    h5file.attrs["explained_variance_ratio"] = np.asarray(trajectory.explained_variance_ratio)


def read_trajectory(h5file: h5py.File) -> Trajectory | None:
    if any(name not in h5file for name in TRAJECTORY_DATASETS):
        return None
    coordinates = np.stack([h5file["proj_xcoord"][()], h5file["proj_ycoord"][()]], axis=1)
    ratio = [float(value) for value in h5file.attrs.get("explained_variance_ratio", [0.0, 0.0])]
    epochs = tuple(int(epoch) for epoch in h5file["proj_epoch"][()])
    return Trajectory(coordinates, epochs, (ratio[0], ratio[1]))
