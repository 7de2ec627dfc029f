"""Surface files written by the reference code (tomgoldstein/loss-landscape), read as ours.

Researchers have years of such files; `lsurf info` and `lsurf plot` read them through here.
Their layout differs from lsurf's in three ways that matter:

- no `done` mask: a point not yet computed holds -1, and the reference's scheduler treats
  any value <= 0 of the loss as not computed (so a NaN loss counts as computed);
  plot_hessian_eigen.py likewise fills `max_eig` with -1 (`min_eig` with +1) and computes
  every point whose `max_eig` is <= 0;
- no attributes: what was swept is encoded in the file name only, and the metrics are known
  by their names alone (`*_loss`, `*_acc`, `max_eig`, `min_eig`:
  `lsurf.metrics.legacy_columns`); a file may hold losses, eigenvalues or both (the two
  scripts name their files alike, so the eigenvalues often join the losses' file);
- element order: the reference fills the (nx, ny) array through its flat index k, with the
  point at k taken from `np.meshgrid(x, y)`, i.e. (x[k % nx], y[k // nx]). On a square grid
  that is element [i, j] at (x[j], y[i]) (its plots transpose it back); on a non-square grid
  the array's shape and the order of its values disagree. Read flat and reshaped to (ny, nx),
  the values are in order, and transposing gives lsurf's [i, j] at (x[i], y[j]).

Input: an open h5py.File. Output: coordinates, the metric columns and their values in
lsurf's layout (NaN where not computed), the done mask and a few descriptive attributes.
A point is done where every script that wrote the file has computed it: in a file whose
eigenvalues are still running, the points they have not reached show as not computed in
every figure, losses included, as lsurf has one done mask per file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from lsurf.errors import OutputError
from lsurf.metrics import LOSS, MAX_EIG, Column, legacy_columns

WRITTEN_BY = "tomgoldstein/loss-landscape"
NOT_COMPUTED = -1.0  # the reference's fill value


@dataclass(frozen=True)
class ReferenceSurface:
    x: np.ndarray  # (nx,) float64
    y: np.ndarray | None  # (ny,) float64
    metrics: dict[str, np.ndarray]  # lsurf layout: [i, j] at (x[i], y[j]); NaN where not done
    columns: list[Column]  # what each of `metrics` holds, in the same order
    done: np.ndarray  # bool, (nx,) or (nx, ny)
    attributes: dict[str, Any]


def is_reference_surface(h5file: h5py.File) -> bool:
    """A file with the reference's coordinates and a loss or a `max_eig` dataset (what says
    which points are done), and none of lsurf's marks."""
    if "format_version" in h5file.attrs or "done" in h5file:
        return False
    return "xcoordinates" in h5file and bool(_progress_columns(_metric_columns(h5file)))


def read_reference_surface(h5file: h5py.File) -> ReferenceSurface:
    x = np.asarray(h5file["xcoordinates"][()], dtype=np.float64)
    y = (
        np.asarray(h5file["ycoordinates"][()], dtype=np.float64)
        if "ycoordinates" in h5file
        else None
    )
    shape = (len(x),) if y is None else (len(x), len(y))
    columns = _metric_columns(h5file)
    metrics = {
        column.name: _in_lsurf_order(
            column.name, np.asarray(h5file[column.name][()], dtype=np.float64), shape
        )
        for column in columns
    }
    progress = [metrics[column.name] for column in _progress_columns(columns)]
    # As the reference decides what to compute: a point is done when its loss is not <= 0,
    # for every split it holds (one split's sweep may have run further than the other's),
    # and its max_eig is not <= 0 (plot_hessian_eigen.py's rule: a NaN counts as done).
    done = np.logical_and.reduce([~(values <= 0) for values in progress])
    metrics = {name: np.where(done, values, np.nan) for name, values in metrics.items()}
    attributes: dict[str, Any] = {"written_by": WRITTEN_BY}
    if "dir_file" in h5file:
        direction_file = h5file["dir_file"][()]
        if isinstance(direction_file, bytes):
            direction_file = direction_file.decode("utf-8", "replace")
        attributes["direction_file"] = str(direction_file)
    return ReferenceSurface(x, y, metrics, columns, done, attributes)


def _progress_columns(columns: list[Column]) -> list[Column]:
    """The columns whose fill value marks the points their script has yet to compute."""
    return [column for column in columns if column.metric in (LOSS, MAX_EIG)]


def _metric_columns(h5file: h5py.File) -> list[Column]:
    """The file's metric datasets, known by name: the reference stores nothing else about them."""
    return legacy_columns(name for name in h5file if isinstance(h5file[name], h5py.Dataset))


def _in_lsurf_order(name: str, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The reference's array with element [i, j] moved to (x[i], y[j]) (see the docstring)."""
    if values.size != int(np.prod(shape)):
        grid = "x".join(str(n) for n in shape)
        raise OutputError(f"{name} holds {values.size} values, not one per point of a {grid} grid")
    if len(shape) == 1:
        return values.reshape(shape)
    nx, ny = shape
    return values.reshape(-1).reshape(ny, nx).T.copy()
