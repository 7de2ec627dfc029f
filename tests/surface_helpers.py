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
