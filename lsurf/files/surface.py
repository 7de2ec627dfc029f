"""The surface file, one per sweep: its layout, reading it back, and the writer of a running sweep.

Surface file layout (names follow the reference implementation so its tools read ours):
- `xcoordinates` (nx,) and, for 2D, `ycoordinates` (ny,), float64;
- one float64 dataset per column (a metric on a split, see lsurf.metrics), named
  `{split}_{metric}` (`train_loss`, `test_acc` in percent), shape (nx,) or (nx, ny),
  element [i, j] at (x[i], y[j]); NaN where not yet computed;
- `done`, bool, the grid's shape: which points are finished (a loss may be inf or NaN);
- `dir_file`, the direction file's path (as the reference writes it);
- attributes: format_version, lsurf_version, config (resolved YAML), checkpoint_sha256,
  target_sha256 (interpolations), directions_sha256, direction_file, created, and `metrics`:
  the columns with their metric rows (JSON, `lsurf.metrics.encode`), the only place readers
  learn which datasets are metrics. Format 1 files lack it: their metrics are recognised by
  the suffixes `_loss`/`_acc`, as are those of the reference code's files.

Crash safety: the file is built completely under a temporary name and renamed into place, so
it exists only in a whole state. After that, writing results never changes HDF5 metadata:
every dataset is contiguous and allocated at creation, attributes are never rewritten, and a
write only overwrites raw values. Values are flushed before their `done` flags, so a kill -9
at any moment leaves a readable file in which every `done` point holds its real values.
"""

from __future__ import annotations

import datetime
import html
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

import lsurf
from lsurf.errors import LsurfError, OutputError
from lsurf.files.hdf5 import attributes_of, create_atomically, open_file, stored_config
from lsurf.files.reference import is_reference_surface, read_reference_surface
from lsurf.files.trajectory import (
    RUNS_GROUP,
    TRAJECTORY_DATASETS,
    Runs,
    Trajectory,
    read_runs,
    read_trajectory,
    write_runs,
    write_trajectory,
)
from lsurf.files.weights import WeightStatistics, read_weight_statistics, write_weight_statistics
from lsurf.metrics import Column, decode, encode, legacy_columns

if TYPE_CHECKING:
    from lsurf.grid import Grid

FORMAT_VERSION = 2  # 2: the attribute `metrics` lists the columns


@dataclass(frozen=True)
class Surface:
    """Everything a surface file holds, read into memory (for `info` and plotting)."""

    path: Path
    x: np.ndarray
    y: np.ndarray | None
    metrics: dict[str, np.ndarray]  # dataset name → values, in the file's column order
    columns: dict[str, Column]  # dataset name → what it holds (metric row and split)
    done: np.ndarray
    attributes: dict[str, Any]
    trajectory: Trajectory | None = None  # a PCA sweep's training path on the plane
    weights: WeightStatistics | None = None  # θ*'s weight norms and histogram
    runs: Runs | None = None  # directions.trajectories: several training runs' paths

    @cached_property
    def config(self) -> dict[str, Any]:
        """The sweep config the file stores, parsed once; {} for files without one."""
        return stored_config(self.attributes)

    def __repr__(self) -> str:
        """What `lsurf info` says first (lsurf.files.info): a notebook cell showing a surface
        reads like the terminal's report, not like arrays of numbers."""
        from lsurf.files.info import surface_summary  # info reads surfaces: imported late

        return "\n".join(surface_summary(self))

    def _repr_html_(self) -> str:
        """Jupyter's rich display: the same text, kept preformatted (its columns line up)."""
        return f"<pre>{html.escape(repr(self))}</pre>"


def read_surface(path: Path) -> Surface:
    """Read a surface file without locking it, so a running sweep's file can be inspected.

    Surface files of the reference code are read too, converted to lsurf's layout.
    """
    with open_file(path, "r", "surface file", locking=False) as h5file:
        if is_reference_surface(h5file):
            try:
                old = read_reference_surface(h5file)
            except OutputError as error:
                raise OutputError(f"{path}: {error}") from None
            columns = {column.name: column for column in old.columns}
            return Surface(path, old.x, old.y, old.metrics, columns, old.done, old.attributes)
        if "format_version" not in h5file.attrs or "done" not in h5file:
            raise OutputError(
                f"{path} is an HDF5 file but not a surface file (of lsurf or of "
                "tomgoldstein/loss-landscape)"
            )
        return read_surface_in(h5file, path)


def read_surface_in(root: h5py.Group, path: Path) -> Surface:
    """The surface laid out in `root` (a surface file, or a group of a connect file)."""
    stored = _stored_columns(root, path)
    # `done` before the values: the writer sets values before flags, so every point read
    # as done here already had its values when they are read next.
    done = root["done"][()]
    x = root["xcoordinates"][()]
    y = root["ycoordinates"][()] if "ycoordinates" in root else None
    return Surface(
        path,
        x,
        y,
        {column.name: root[column.name][()] for column in stored},
        {column.name: column for column in stored},
        done,
        attributes_of(root),
        read_trajectory(root),
        read_weight_statistics(root["weights"]) if "weights" in root else None,
        read_runs(root),
    )


def default_metric(surface: Surface) -> str:
    """The metric a surface is drawn and described by (`lsurf plot`, a capture file's `lsurf
    info`): train_loss, else the file's first ranked column where lower is better (a residual
    or a product count is no landscape), else its first."""
    if "train_loss" in surface.columns:
        return "train_loss"
    stored = list(surface.columns.values())
    if not stored:
        raise LsurfError(f"{surface.path} holds no metric to plot")
    better_low = [
        column for column in stored if column.metric.lower_is_better and column.metric.ranked
    ]
    return (better_low or stored)[0].name


def read_surface_attributes(path: Path) -> dict[str, Any]:
    with open_file(path, "r", "output file") as h5file:
        if "format_version" not in h5file.attrs:
            raise OutputError(
                f"output {path} exists and is not an lsurf surface file; "
                "choose another output path or pass --force to overwrite it"
            )
        return attributes_of(h5file)


def read_surface_columns(path: Path) -> list[Column]:
    """The columns an lsurf surface file holds (without reading their values)."""
    with open_file(path, "r", "output file") as h5file:
        return _stored_columns(h5file, path)


def _stored_columns(h5file: h5py.Group, path: Path) -> list[Column]:
    """The columns a surface file lists in its `metrics` attribute (format 1: by suffix)."""
    datasets = [name for name in h5file if isinstance(h5file[name], h5py.Dataset)]
    if "metrics" not in h5file.attrs:  # format 1 wrote only these two kinds
        return legacy_columns(datasets)
    try:
        stored = decode(str(h5file.attrs["metrics"]))
    except OutputError as error:
        raise OutputError(f"surface file {path} is damaged: {error}; rerun the sweep") from None
    missing = [column.name for column in stored if column.name not in datasets]
    if missing:
        raise OutputError(
            f"surface file {path} is damaged: it lists {', '.join(missing)} but holds no such "
            "dataset; rerun the sweep"
        )
    return stored


class SurfaceWriter:
    """The open surface file of a running sweep; rank 0 / the serial sweep is its only writer.

    It keeps every column and the `done` mask in memory (a 1001×1001 grid: 8 MB a column) and
    writes them in batches: `record` only updates memory, and at most every FLUSH_SECONDS (or
    on `flush`/`close`) the rows touched since the last write go out as whole slabs, values
    first, flushed to the OS, then their `done` flags, flushed again. A kill at any moment
    leaves values on disk before any flag that vouches for them; it loses at most the last
    FLUSH_SECONDS of results, which the next run recomputes.
    """

    FLUSH_SECONDS = 0.5

    def __init__(self, path: Path, group: h5py.Group | None = None) -> None:
        """Open the surface file at `path`; or write the surface laid out in `group` of a file
        open elsewhere (lsurf.files.connect: one file, a surface per group), which `close`
        then flushes and leaves open for its owner."""
        self.path = path
        self._owns_file = group is None
        self._file = open_file(path, "r+", "surface file") if group is None else group.file
        self._root: h5py.Group = self._file if group is None else group
        try:
            self.columns = _stored_columns(self._root, path)
        except OutputError:
            if self._owns_file:
                self._file.close()
            raise
        self.done = self._root["done"][()]  # memory; the file's flags follow at each flush
        self._values = {name: self._root[name][()] for name in self.metrics}
        # A 2D grid is written in whole rows of y; a 1D one in runs of ROW_1D points.
        self._row = self.done.shape[1] if self.done.ndim == 2 else ROW_1D
        self._dirty: list[np.ndarray] = []  # flat indices recorded since the last write
        self._written = time.monotonic()

    @property
    def metrics(self) -> list[str]:
        """The dataset names of the columns, the keys `record` expects."""
        return [column.name for column in self.columns]

    def record(self, indices: Sequence[int] | np.ndarray, values: dict[str, Any]) -> None:
        """Take the metric values of the flat point indices; they reach the file (values
        before flags) at the next flush, which this starts when FLUSH_SECONDS have passed.

        `values` maps every column's dataset name to one value per index.
        """
        flat = np.asarray(indices, dtype=np.int64).reshape(-1)
        for name in self.metrics:
            column = np.asarray(values[name], dtype=np.float64).reshape(-1)
            if column.shape != flat.shape:
                raise ValueError(f"{name}: {column.size} values for {flat.size} points")
            self._values[name].reshape(-1)[flat] = column
        self.done.reshape(-1)[flat] = True
        self._dirty.append(flat)
        if time.monotonic() - self._written >= self.FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the rows recorded since the last write: values, flush, flags, flush."""
        if self._dirty:
            rows = np.unique(np.concatenate(self._dirty) // self._row)
            self._dirty = []
            runs = _runs(rows)
            for name in self.metrics:
                self._write_rows(self._root[name], self._values[name], runs)
            self._file.flush()  # values reach the OS before any flag that vouches for them
            self._write_rows(self._root["done"], self.done, runs)
            self._file.flush()
        self._written = time.monotonic()

    def _write_rows(
        self, dataset: h5py.Dataset, memory: np.ndarray, runs: list[tuple[int, int]]
    ) -> None:
        for first, last in runs:
            if memory.ndim == 2:
                dataset[first:last] = memory[first:last]
            else:
                start, stop = first * self._row, min(last * self._row, memory.size)
                dataset[start:stop] = memory[start:stop]

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def close(self) -> None:
        if self._file.id.valid:
            try:
                self.flush()
            finally:
                if self._owns_file:
                    self._file.close()

    def written(self) -> str:
        """What the sweep's log says once every point is in and the file closed."""
        return f"surface written to {self.path}"

    def __enter__(self) -> SurfaceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


ROW_1D = 4096  # points per write unit of a 1D surface


def _runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """Sorted row numbers as [first, last) runs of consecutive rows: one slab write each."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return [(int(run[0]), int(run[-1]) + 1) for run in np.split(rows, breaks) if run.size]


def create_surface(
    path: Path,
    grid: Grid,
    columns: Sequence[Column],
    attributes: dict[str, Any],
    trajectory: Trajectory | None = None,
    weights: WeightStatistics | None = None,
    runs: Runs | None = None,
) -> SurfaceWriter:
    """Create (or atomically replace) the surface file, all NaN and nothing done; open it.

    `columns` are the datasets to hold, listed in the attribute `metrics`. `trajectory`
    (PCA sweeps), `runs` (directions.trajectories) and `weights` (θ*'s weight statistics)
    are stored beside.
    """
    create_atomically(
        path,
        lambda h5file: lay_out_surface(
            h5file, grid, columns, attributes, trajectory, weights, runs
        ),
    )
    return SurfaceWriter(path)


def lay_out_surface(
    root: h5py.Group,
    grid: Grid,
    columns: Sequence[Column],
    attributes: dict[str, Any],
    trajectory: Trajectory | None = None,
    weights: WeightStatistics | None = None,
    runs: Runs | None = None,
) -> None:
    """Write a new surface's layout into `root` (a file being built, or one of its groups):
    every dataset allocated, all NaN and nothing done, and every attribute."""
    stored = list(columns)
    names = [column.name for column in stored]
    reserved = {"xcoordinates", "ycoordinates", "done", "dir_file", "weights", RUNS_GROUP}
    reserved |= set(TRAJECTORY_DATASETS)
    assert len(set(names)) == len(names) and not reserved & set(names), names
    assert "metrics" not in attributes, "the attribute `metrics` is written from `columns`"
    root.create_dataset("xcoordinates", data=grid.x)
    if grid.y is not None:
        root.create_dataset("ycoordinates", data=grid.y)
    for name in names:
        root.create_dataset(name, data=np.full(grid.shape, np.nan), track_times=False)
    root.create_dataset("done", data=np.zeros(grid.shape, bool), track_times=False)
    root["dir_file"] = str(attributes.get("direction_file", ""))
    write_trajectory(root, trajectory)
    write_runs(root, runs)
    if weights is not None:
        write_weight_statistics(root.create_group("weights"), weights)
    root.attrs["format_version"] = FORMAT_VERSION
    root.attrs["lsurf_version"] = lsurf.__version__
    root.attrs["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    for key, value in attributes.items():
        root.attrs[key] = value
    root.attrs["metrics"] = encode(stored)
