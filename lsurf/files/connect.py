"""The connect file: every path of an `lsurf connect` job, each with its barriers, in one file.

Layout (HDF5):
- root attributes: `connect_format` (1), lsurf_version, created, `config` (the resolved connect
  config, YAML), `checkpoints` (JSON: their paths, in the config's order),
  `checkpoint_sha256s` (JSON: their digests, same order) and `paths` (JSON: the group names
  below, in the order the job runs them);
- one group per path, named `{i}-{j}/{path}` (`0-1/linear`, `0-1/aligned`, `0-1/curve`: the
  checkpoints' places in `checkpoints` and the path's kind), holding a 1D surface in exactly
  the surface file's layout (lsurf.files.surface: `xcoordinates` are the path's t, one dataset
  per column, `done`, and the attributes of the sweep the path is, its `config` among them),
  plus `barriers`: float64 (rows, 5), NaN until the path's last point is in, one row per
  measured quantity (attribute `rows`, JSON: `train_loss`, `train_error`, ...), the fields
  of attribute `fields` (lsurf.barrier.FIELDS: barrier, se, t, start, end);
- with `connect.plane`, one more group per pair, `{i}-{j}/plane`: a 2D surface in the same
  layout (`xcoordinates` a, toward B; `ycoordinates` b, toward the bend) of the plane the
  curve lies in, its `barriers` table empty (0 rows): the curve's points on the plane are
  lsurf.grid.path_point(curve, t).

Crash safety is the surface file's: the whole file is built under a temporary name and
renamed into place, every dataset (the barriers too) allocated then; running writes only
overwrite raw values, values before the `done` flags that vouch for them, and a path's
barriers once its last flag is on disk. So a kill at any moment leaves a readable file, and
a rerun resumes every path where its `done` mask stops.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

import lsurf
from lsurf.barrier import FIELDS, Barrier, barrier, error_rate_errors
from lsurf.errors import OutputError
from lsurf.files.hdf5 import (
    GroupedJobFile,
    attributes_of,
    create_atomically,
    file_has_attribute,
    open_file,
    stored_config,
)
from lsurf.files.surface import Surface, SurfaceWriter, lay_out_surface, read_surface_in
from lsurf.metrics import Column

if TYPE_CHECKING:
    from lsurf.grid import Grid

FORMAT_VERSION = 1


@dataclass(frozen=True)
class PathLayout:
    """One path's group, as the job creates it."""

    name: str  # `0-1/linear`
    grid: Grid
    columns: list[Column]
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ConnectPath:
    """One path read back: its surface (t is `surface.x`) and its barriers by row."""

    name: str
    surface: Surface
    barriers: dict[str, Barrier]

    @property
    def complete(self) -> bool:
        return bool(self.surface.done.all())


@dataclass(frozen=True)
class Connection:
    """A connect file read into memory."""

    path: Path
    attributes: dict[str, Any]
    paths: dict[str, ConnectPath] = field(default_factory=dict)

    @cached_property
    def config(self) -> dict[str, Any]:
        return stored_config(self.attributes)

    @property
    def checkpoints(self) -> list[str]:
        return list(json.loads(str(self.attributes["checkpoints"])))


def is_connect_file(h5file: h5py.File) -> bool:
    return "connect_format" in h5file.attrs


def is_connect_path(path: Path) -> bool:
    """Whether `path` is an existing connect file (False for anything else)."""
    return file_has_attribute(path, "connect_format")


def barrier_rows(columns: list[Column]) -> list[str]:
    """The quantities a path's barriers are of: each split's loss, and its error rate where
    it has an accuracy."""
    names = {column.name for column in columns}
    rows = []
    for column in columns:
        if column.metric.name == "loss":
            rows.append(column.name)
            if f"{column.split}_acc" in names:
                rows.append(f"{column.split}_error")
    return rows


def path_barriers(surface: Surface, rows: list[str]) -> dict[str, Barrier]:
    """Each row's barrier along a complete path (lsurf.barrier)."""
    found = {}
    for row in rows:
        split, _, quantity = row.rpartition("_")
        if quantity == "loss":
            errors = surface.metrics.get(f"{split}_loss_se")
            found[row] = barrier(surface.x, surface.metrics[row], errors)
        else:
            accuracy = surface.metrics[f"{split}_acc"]
            examples = surface.metrics.get(f"{split}_examples")
            errors = error_rate_errors(accuracy, examples, None)
            found[row] = barrier(surface.x, 100.0 - accuracy, errors)
    return found


def create_connect_file(
    path: Path, attributes: dict[str, Any], layouts: list[PathLayout]
) -> ConnectFile:
    """Create (or atomically replace) the connect file with every path's group, all NaN and
    nothing done; open it for the job."""

    def build(h5file: h5py.File) -> None:
        h5file.attrs["connect_format"] = FORMAT_VERSION
        h5file.attrs["lsurf_version"] = lsurf.__version__
        h5file.attrs["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        for key, value in attributes.items():
            h5file.attrs[key] = value
        h5file.attrs["paths"] = json.dumps([layout.name for layout in layouts])
        for layout in layouts:
            group = h5file.create_group(layout.name)
            lay_out_surface(group, layout.grid, layout.columns, layout.attributes)
            rows = barrier_rows(layout.columns) if layout.grid.y is None else []
            table = group.create_dataset(
                "barriers", data=np.full((len(rows), len(FIELDS)), np.nan), track_times=False
            )
            table.attrs["rows"] = json.dumps(rows)
            table.attrs["fields"] = json.dumps(list(FIELDS))

    create_atomically(path, build)
    return ConnectFile(path)


class ConnectFile(GroupedJobFile):
    """The open connect file of a running job (rank 0 its only writer): one `PathWriter` per
    path, sharing this one handle."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "connect_format", "paths", "connect file")

    def writer(self, name: str) -> PathWriter:
        return PathWriter(self.path, self._file[name], name)


class PathWriter(SurfaceWriter):
    """A path's surface in the connect file; once every point is in, its barriers are
    computed from the values and written (after the last flags are on disk)."""

    def __init__(self, path: Path, group: h5py.Group, name: str) -> None:
        super().__init__(path, group)
        self.name = name
        self._group = group
        self.barriers: dict[str, Barrier] = {}

    def close(self) -> None:
        if not self._file.id.valid:
            return
        self.flush()
        if self.complete and not self.barriers:
            self.write_barriers()

    def write_barriers(self) -> None:
        table = self._group["barriers"]
        rows = list(json.loads(str(table.attrs["rows"])))
        surface = read_surface_in(self._group, self.path)
        self.barriers = path_barriers(surface, rows)
        table[...] = np.array([self.barriers[row].as_row() for row in rows]).reshape(table.shape)
        self._file.flush()

    def written(self) -> str:
        summary = "; ".join(
            f"{row} barrier {found.height:.4g}" for row, found in self.barriers.items()
        )
        return f"{self.name} written to {self.path}" + (f": {summary}" if summary else "")


def read_connect_attributes(path: Path) -> dict[str, Any]:
    with open_file(path, "r", "output file") as h5file:
        if not is_connect_file(h5file):
            raise OutputError(
                f"output {path} exists and is not an lsurf connect file; choose another "
                "output path or pass --force to overwrite it"
            )
        return attributes_of(h5file)


def read_connect(path: Path) -> Connection:
    """Read a connect file whole, without locking it (a running job's file may be read).
    A complete path's barriers are the stored ones, or computed from its values where the
    job stopped between its last point and writing them."""
    with open_file(path, "r", "connect file", locking=False) as h5file:
        if not is_connect_file(h5file):
            raise OutputError(f"{path} is an HDF5 file but not a connect file")
        connection = Connection(path, attributes_of(h5file))
        for name in json.loads(str(h5file.attrs["paths"])):
            group = h5file[name]
            surface = read_surface_in(group, path)
            table = group["barriers"]
            rows = list(json.loads(str(table.attrs["rows"])))
            stored = table[()]
            if surface.done.all() and np.isnan(stored[:, 0]).all() and rows:
                barriers = path_barriers(surface, rows)
            else:
                barriers = {row: Barrier.from_row(stored[k]) for k, row in enumerate(rows)}
            connection.paths[name] = ConnectPath(name, surface, barriers)
        return connection
