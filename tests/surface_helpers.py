"""Small helpers shared by the tests that read surface files from outside lsurf's writer:
watching a sweep's file from another process, and writing a file the way the format says."""

import json

import h5py
import numpy as np


def done_count(path):
    """Points marked done in a surface file another process may be writing (0 if none yet)."""
    if not path.exists():
        return 0
    with h5py.File(path, "r", locking=False) as h5file:
        return int(h5file["done"][()].sum())


# The row a later lsurf may store for a metric this version's table does not know.
MAX_EIGENVALUE_ROW = {
    "name": "top_eig",
    "label": "largest Hessian eigenvalue",
    "unit": "",
    "combine": "solver",
    "scale": 1.0,
    "lower_is_better": True,
}


def write_surface_by_hand(path, x, y, columns, done=None, config=""):
    """A surface file written with h5py alone, as the format describes it (no lsurf code):
    `columns` maps a dataset name to (split, metric row, values of the grid's shape)."""
    shape = (len(x),) if y is None else (len(x), len(y))
    done = np.ones(shape, bool) if done is None else done
    with h5py.File(path, "w") as h5file:
        h5file["xcoordinates"] = np.asarray(x, dtype=np.float64)
        if y is not None:
            h5file["ycoordinates"] = np.asarray(y, dtype=np.float64)
        listed = []
        for name, (split, row, values) in columns.items():
            h5file[name] = np.where(done, values, np.nan)
            listed.append({"dataset": name, "split": split, "metric": row})
        h5file["done"] = done
        h5file["dir_file"] = "directions.h5"
        h5file.attrs["direction_file"] = "directions.h5"
        h5file.attrs["format_version"] = 2
        h5file.attrs["lsurf_version"] = "9.9.9"
        h5file.attrs["created"] = "2025-01-02T03:04:05+00:00"
        h5file.attrs["config"] = config
        h5file.attrs["metrics"] = json.dumps(listed)
    return path


# The resolved `hessian:` section of a sweep that maps curvature (lsurf.config.HessianConfig).
HESSIAN_SECTION = {
    "eigenvalues": True,
    "split": "train",
    "params": "weights",
    "tol": 0.001,
    "max_products": 200,
    "seed": 0,
    "batch_size": None,
}


def curvature_values(shape, unconverged=None, nan_at=()):
    """Known values of a curvature sweep's columns, by grid index (i, j) (j = 0 in 1D):
    λmax = 2 + i + 2j and λmin = ∓0.1(i + j)·λmax (the sign alternates), so |λmin/λmax| is
    0.1(i + j); residuals 1e-5·(1 + i + j) for λmax and 2e-5·(1 + i + j) for λmin, all below
    tol 0.001; 20 + 3i + j products; train loss 1 + 0.1(i + j), train accuracy 90 − i − j.

    `unconverged` maps a grid index to (residual column, value): the solver stopped there.
    At each index of `nan_at` the loss diverged, and the sweep records what it records then:
    NaN loss, eigenvalues and residuals, and no products spent.
    """
    index = np.indices(shape)
    i, j = index[0], (index[1] if len(shape) == 2 else np.zeros(shape, int))
    largest = 2.0 + i + 2.0 * j
    sign = np.where((i + j) % 2 == 0, -1.0, 1.0)
    values = {
        "train_loss": 1.0 + 0.1 * (i + j),
        "train_acc": 90.0 - i - j,
        "max_eig": largest,
        "min_eig": sign * 0.1 * (i + j) * largest,
        "max_eig_residual": 1e-5 * (1 + i + j),
        "min_eig_residual": 2e-5 * (1 + i + j),
        "eig_products": 20.0 + 3 * i + j,
    }
    for position, (name, value) in (unconverged or {}).items():
        values[name][position] = value
    for position in nan_at:
        for name in ("train_loss", "max_eig", "min_eig", "max_eig_residual", "min_eig_residual"):
            values[name][position] = np.nan
        values["eig_products"][position] = 0.0
    return values


def write_curvature_surface(path, grid, config, values, done=None):
    """A surface file of a curvature sweep on `grid` (lsurf.grid.Grid), made by the store as
    a sweep makes it: its columns train_loss, train_acc and the curvature rows, `values` as
    from `curvature_values`, recorded through the writer where `done` (default: everywhere)."""
    from lsurf.files.surface import create_surface
    from lsurf.metrics import CURVATURE, columns

    names = ["loss", "acc", *(metric.name for metric in CURVATURE)]
    done = np.ones(grid.shape, bool) if done is None else done
    indices = np.flatnonzero(done.reshape(-1))
    attributes = {"config": config, "direction_file": "/runs/a/d.h5"}
    with create_surface(path, grid, columns(["train"], names), attributes) as out:
        out.record(indices, {name: v.reshape(-1)[indices] for name, v in values.items()})
    return path
