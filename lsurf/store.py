"""The HDF5 files: the surface file (one per sweep) and the direction file. The only writer.

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
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

import lsurf
import lsurf.metrics
from lsurf.atomic import atomic_path, remove_stale_temporaries
from lsurf.errors import OutputError
from lsurf.metrics import Column, decode, encode, legacy_columns
from lsurf.reference import is_reference_surface, read_reference_surface
from lsurf.trajectory import Trajectory
from lsurf.weights import WeightStatistics

if TYPE_CHECKING:  # plotting reads surface files without importing torch
    import torch

    from lsurf.directions import Directions
    from lsurf.grid import Grid

FORMAT_VERSION = 2  # 2: the attribute `metrics` lists the columns


def _open(path: Path, mode: str, what: str, locking: bool = True) -> h5py.File:
    """h5py.File with the failures users meet turned into one-line errors: no such file, a
    file another process holds open (HDF5's lock), a file that is corrupt or not HDF5.

    HDF5 says which in its message: "unable to lock file, errno = 11" (EAGAIN: h5py raises
    BlockingIOError) for a lock another process holds; another errno there for a file system
    without locks; "file signature not found" for bytes that are not HDF5; "truncated file:
    eof = N, ..., stored_eof = M" for a file cut short. A corrupt output is never replaced
    without --force (lsurf.preparation.check_output reads it first).
    """
    try:
        return h5py.File(path, mode, locking=locking)
    except FileNotFoundError:
        raise OutputError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise OutputError(f"{what} {path} is a folder, not a file") from None
    except OSError as error:
        text = str(error)
        if isinstance(error, BlockingIOError):
            # Also the ranks of a job killed as a whole: MPICH's launcher starts each rank
            # in its own session, so a kill of the launcher's process group leaves them
            # running (and holding the lock) until they notice.
            raise OutputError(
                f"{what} {path} is open for writing in another process: a sweep still "
                "running, or the ranks of a killed job that have not exited yet (look with "
                "`pgrep -af 'lsurf sweep'`; wait a few seconds, or kill them), then run the "
                "same command again"
            ) from None
        if "unable to lock file" in text:
            reason = re.search(r"error message = '([^']*)'", text)
            raise OutputError(
                f"{what} {path} cannot be locked ({reason.group(1) if reason else 'no lock'}); "
                "on a file system without file locks (some NFS or Lustre mounts) set "
                "HDF5_USE_FILE_LOCKING=FALSE, and let one sweep at a time write an output"
            ) from None
        truncated = re.search(r"truncated file: eof = (\d+),.*stored_eof = (\d+)", text)
        if truncated:
            found, expected = (int(size) for size in truncated.groups())
            damage = (
                f"corrupt: it ends at byte {found:,} of {expected:,}, as after a copy cut "
                "short or a full disk"
            )
        elif "file signature not found" in text:
            damage = "no HDF5 signature: empty, corrupt, or another format"
        else:
            damage = f"corrupt: {text.splitlines()[0] if text else type(error).__name__}"
        if what == "direction file":
            hint = "move it aside or delete it, and the sweep computes new directions"
        elif what == "output file" or mode != "r":
            hint = (
                "choose another output path, or pass --force to replace it (move it aside "
                "first to keep it)"
            )
        else:
            hint = (
                "if a sweep wrote it, run that sweep again with --force to replace it (move "
                "it aside first to keep it)"
            )
        raise OutputError(f"{what} {path} is not a readable HDF5 file ({damage}); {hint}") from None


def _atomic_create(path: Path, build: Any) -> None:
    """Write a new HDF5 file with `build(h5file)` under a temporary name, then rename it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)  # from a run killed mid-creation
        with atomic_path(path) as temporary, h5py.File(temporary, "w") as h5file:
            build(h5file)
    except OSError as error:
        reason = error.strerror or str(error).split("\n")[0]
        raise OutputError(
            f"cannot write {path} ({reason}); choose an output folder you can write to"
        ) from None


# ---------------------------------------------------------------------------- surface file


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


def read_surface(path: Path) -> Surface:
    """Read a surface file without locking it, so a running sweep's file can be inspected.

    Surface files of the reference code are read too, converted to lsurf's layout.
    """
    with _open(path, "r", "surface file", locking=False) as h5file:
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
        stored = _stored_columns(h5file, path)
        # `done` before the values: the writer sets values before flags, so every point read
        # as done here already had its values when they are read next.
        done = h5file["done"][()]
        x = h5file["xcoordinates"][()]
        y = h5file["ycoordinates"][()] if "ycoordinates" in h5file else None
        return Surface(
            path,
            x,
            y,
            {column.name: h5file[column.name][()] for column in stored},
            {column.name: column for column in stored},
            done,
            _attributes(h5file),
            _read_trajectory(h5file),
            read_weight_statistics(h5file["weights"]) if "weights" in h5file else None,
        )


def read_surface_attributes(path: Path) -> dict[str, Any]:
    with _open(path, "r", "output file") as h5file:
        if "format_version" not in h5file.attrs:
            raise OutputError(
                f"output {path} exists and is not an lsurf surface file; "
                "choose another output path or pass --force to overwrite it"
            )
        return _attributes(h5file)


def read_surface_columns(path: Path) -> list[Column]:
    """The columns an lsurf surface file holds (without reading their values)."""
    with _open(path, "r", "output file") as h5file:
        return _stored_columns(h5file, path)


def _stored_columns(h5file: h5py.File, path: Path) -> list[Column]:
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


def _attributes(h5file: h5py.File) -> dict[str, Any]:
    return {
        key: value.item() if isinstance(value, np.generic) else value
        for key, value in h5file.attrs.items()
    }


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

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = _open(path, "r+", "surface file")
        try:
            self.columns = _stored_columns(self._file, path)
        except OutputError:
            self._file.close()
            raise
        self.done = self._file["done"][()]  # memory; the file's flags follow at each flush
        self._values = {name: self._file[name][()] for name in self.metrics}
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
                self._write_rows(self._file[name], self._values[name], runs)
            self._file.flush()  # values reach the OS before any flag that vouches for them
            self._write_rows(self._file["done"], self.done, runs)
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
                self._file.close()

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
) -> SurfaceWriter:
    """Create (or atomically replace) the surface file, all NaN and nothing done; open it.

    `columns` are the datasets to hold, listed in the attribute `metrics`. `trajectory`
    (PCA sweeps) and `weights` (θ*'s weight statistics) are stored beside.
    """
    stored = list(columns)
    names = [column.name for column in stored]
    reserved = {"xcoordinates", "ycoordinates", "done", "dir_file", "weights", *_PATH_NAMES}
    assert len(set(names)) == len(names) and not reserved & set(names), names
    assert "metrics" not in attributes, "the attribute `metrics` is written from `columns`"

    def build(h5file: h5py.File) -> None:
        h5file.create_dataset("xcoordinates", data=grid.x)
        if grid.y is not None:
            h5file.create_dataset("ycoordinates", data=grid.y)
        for name in names:
            h5file.create_dataset(name, data=np.full(grid.shape, np.nan), track_times=False)
        h5file.create_dataset("done", data=np.zeros(grid.shape, bool), track_times=False)
        h5file["dir_file"] = str(attributes.get("direction_file", ""))
        _write_trajectory(h5file, trajectory)
        if weights is not None:
            write_weight_statistics(h5file.create_group("weights"), weights)
        h5file.attrs["format_version"] = FORMAT_VERSION
        h5file.attrs["lsurf_version"] = lsurf.__version__
        h5file.attrs["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        for key, value in attributes.items():
            h5file.attrs[key] = value
        h5file.attrs["metrics"] = encode(stored)

    _atomic_create(path, build)
    return SurfaceWriter(path)


# ---------------------------------------------------------------------------- direction file


def write_directions(path: Path, directions: Directions, attributes: dict[str, Any]) -> None:
    """Save d1 (group `xdirection`) and d2 (`ydirection`), one float32 dataset per key.

    `attributes` records how they were made (kind, norm, ignore, seed, checkpoint digest, ...).
    """

    def build(h5file: h5py.File) -> None:
        groups = {"xdirection": directions.x, "ydirection": directions.y}
        for group_name, tensors in groups.items():
            if tensors is None:
                continue
            group = h5file.create_group(group_name)
            for key, tensor in tensors.items():
                group.create_dataset(key, data=tensor.detach().cpu().numpy())
        h5file.attrs["directions_sha256"] = directions.digest()
        h5file.attrs["lsurf_version"] = lsurf.__version__
        if directions.eigenvalues:  # kind hessian: the eigenvalue of each direction
            h5file.attrs["eigenvalues"] = np.array(directions.eigenvalues, dtype=np.float64)
        for key, value in attributes.items():
            h5file.attrs[key] = value
        _write_trajectory(h5file, directions.trajectory)

    _atomic_create(path, build)


def write_weight_statistics(group: h5py.Group, statistics: WeightStatistics) -> None:
    group.create_dataset("names", data=np.array(statistics.names, dtype=h5py.string_dtype()))
    group.create_dataset("norms", data=statistics.norms)
    group.create_dataset("sizes", data=statistics.sizes)
    group.create_dataset("histogram_edges", data=statistics.bin_edges)
    group.create_dataset("histogram_counts", data=statistics.counts)


def read_weight_statistics(group: h5py.Group) -> WeightStatistics:
    return WeightStatistics(
        names=tuple(
            name.decode() if isinstance(name, bytes) else name for name in group["names"][()]
        ),
        norms=group["norms"][()],
        sizes=group["sizes"][()],
        bin_edges=group["histogram_edges"][()],
        counts=group["histogram_counts"][()],
    )


def write_weight_file(path: Path, statistics: dict[str, WeightStatistics]) -> None:
    """A stats file: one group per labelled checkpoint (`lsurf weights`)."""

    def build(h5file: h5py.File) -> None:
        h5file.attrs["lsurf_version"] = lsurf.__version__
        for label, stats in statistics.items():
            write_weight_statistics(h5file.create_group(label.replace("/", "_")), stats)

    _atomic_create(path, build)


# The reference names the projected path's coordinates proj_xcoord/proj_ycoord.
_PATH_NAMES = ("proj_xcoord", "proj_ycoord", "proj_epoch")


def _write_trajectory(h5file: h5py.File, trajectory: Trajectory | None) -> None:
    if trajectory is None:
        return
    h5file.create_dataset("proj_xcoord", data=trajectory.coordinates[:, 0])
    h5file.create_dataset("proj_ycoord", data=trajectory.coordinates[:, 1])
    h5file.create_dataset("proj_epoch", data=np.asarray(trajectory.epochs, dtype=np.int64))
    h5file.attrs["explained_variance_ratio"] = np.asarray(trajectory.explained_variance_ratio)


def _read_trajectory(h5file: h5py.File) -> Trajectory | None:
    if any(name not in h5file for name in _PATH_NAMES):
        return None
    coordinates = np.stack([h5file["proj_xcoord"][()], h5file["proj_ycoord"][()]], axis=1)
    ratio = [float(value) for value in h5file.attrs.get("explained_variance_ratio", [0.0, 0.0])]
    epochs = tuple(int(epoch) for epoch in h5file["proj_epoch"][()])
    return Trajectory(coordinates, epochs, (ratio[0], ratio[1]))


def is_direction_file(path: Path) -> bool:
    """Whether `path` holds directions (and no surface), for `lsurf info` to tell files apart."""
    with _open(path, "r", "file", locking=False) as h5file:
        return "xdirection" in h5file and "xcoordinates" not in h5file


def read_directions(path: Path) -> tuple[Directions, dict[str, Any]]:
    """Load a direction file written by `write_directions`, with its attributes."""
    import torch

    from lsurf.directions import Directions

    with _open(path, "r", "direction file") as h5file:
        needed = ("kind", "norm", "ignore", "seed")
        if "xdirection" not in h5file or any(key not in h5file.attrs for key in needed):
            raise OutputError(
                f"direction file {path} lacks xdirection or its settings; delete it or set "
                "directions.file to another path to compute new directions"
            )

        def tensors(group_name: str) -> dict[str, torch.Tensor] | None:
            if group_name not in h5file:
                return None
            group = h5file[group_name]
            # [...] reads an ndarray even for a 0-dim tensor, where [()] gives a numpy scalar
            return {key: torch.from_numpy(group[key][...]) for key in group}

        attributes = _attributes(h5file)
        directions = Directions(
            kind=str(attributes["kind"]),
            norm=str(attributes["norm"]),
            ignore=str(attributes["ignore"]),
            seed=int(attributes["seed"]),
            x=tensors("xdirection") or {},
            y=tensors("ydirection"),
            trajectory=_read_trajectory(h5file),
        )
        return directions, attributes


# ---------------------------------------------------------------------------- hessian file

# `lsurf hessian` writes one file per analysis of θ*, told apart from surface and direction
# files by its attribute `lsurf_file`. Datasets (float64 unless said):
#   top_eigenvalues (k,) descending, top_residuals (k,) ‖Hv − λv‖ / |λ|max of each Ritz pair;
#   trace, trace_standard_error: scalars (Hutchinson), trace_probes (m,) each probe's vᵀHv;
#   density_nodes, density_weights (runs, steps): the stochastic Lanczos quadrature (a run
#   that ended early is padded with nodes of weight 0);
#   density_grid, density_curve (G,): the density smoothed by a Gaussian of width
#   `density_sigma` (an attribute), integrating to 1;
#   layer_names (L,) str, layer_max_eigenvalues (L,), layer_residuals (L,),
#   layer_products (L,) int64: λmax of each parameter tensor's diagonal block (absent when
#   hessian.per_layer is false).
# Attributes: lsurf_file, format_version, lsurf_version, created, config, checkpoint_sha256,
# split, params, parameters, examples, batch_size, ranks, top_converged, trace_samples,
# density_sigma, and the products spent per stage: top_products, trace_products,
# density_products, layer_products_total, products.
HESSIAN_FILE = "hessian"
HESSIAN_FORMAT_VERSION = 1


@dataclass(frozen=True)
class HessianAnalysis:
    """The results of `lsurf hessian` at θ* (numpy only: `info` and plots read it without torch)."""

    top_eigenvalues: np.ndarray  # (k,) descending
    top_residuals: np.ndarray  # (k,)
    top_converged: bool
    trace: float
    trace_standard_error: float
    trace_probes: np.ndarray  # (m,) each Rademacher probe's vᵀHv; the trace is their mean
    density_nodes: np.ndarray  # (runs, steps) Ritz values of each quadrature run
    density_weights: np.ndarray  # (runs, steps) their weights; each run's sum to 1
    density_grid: np.ndarray  # (G,)
    density_curve: np.ndarray  # (G,)
    density_sigma: float
    layer_names: tuple[str, ...]  # () when not computed
    layer_max_eigenvalues: np.ndarray  # (L,)
    layer_residuals: np.ndarray  # (L,)
    layer_products: np.ndarray  # (L,) int64
    products: dict[str, int]  # Hessian-vector products per stage: top, trace, density, layers

    @property
    def trace_samples(self) -> int:
        return len(self.trace_probes)

    def density_range(self) -> tuple[float, float]:
        """The smallest and largest Ritz value of the quadrature (padding left out)."""
        nodes = self.density_nodes[(self.density_weights > 0) & np.isfinite(self.density_nodes)]
        if nodes.size == 0:
            return float("nan"), float("nan")
        return float(nodes.min()), float(nodes.max())


@dataclass(frozen=True)
class HessianFile:
    path: Path
    analysis: HessianAnalysis
    attributes: dict[str, Any]


_HESSIAN_ARRAYS = (
    "top_eigenvalues",
    "top_residuals",
    "trace_probes",
    "density_nodes",
    "density_weights",
    "density_grid",
    "density_curve",
    "layer_max_eigenvalues",
    "layer_residuals",
)
_STAGE_PRODUCTS = {  # stage → attribute holding its products
    "top": "top_products",
    "trace": "trace_products",
    "density": "density_products",
    "layers": "layer_products_total",
}


def write_hessian_file(path: Path, analysis: HessianAnalysis, attributes: dict[str, Any]) -> None:
    """Create (or atomically replace) the Hessian analysis file at `path`.

    `attributes` says what was analysed (config, checkpoint_sha256, split, params, ...); the
    file's kind, format, version, creation time and the products are added here.
    """
    reserved = {"lsurf_file", "format_version", "lsurf_version", "created", "products"}
    assert not reserved & set(attributes), "these attributes are written by store"

    def build(h5file: h5py.File) -> None:
        for name in _HESSIAN_ARRAYS:
            h5file.create_dataset(name, data=np.asarray(getattr(analysis, name), np.float64))
        h5file.create_dataset("trace", data=np.float64(analysis.trace))
        h5file.create_dataset(
            "trace_standard_error", data=np.float64(analysis.trace_standard_error)
        )
        if analysis.layer_names:
            names = np.array(analysis.layer_names, dtype=h5py.string_dtype())
            h5file.create_dataset("layer_names", data=names)
            h5file.create_dataset("layer_products", data=analysis.layer_products.astype(np.int64))
        h5file.attrs["lsurf_file"] = HESSIAN_FILE
        h5file.attrs["format_version"] = HESSIAN_FORMAT_VERSION
        h5file.attrs["lsurf_version"] = lsurf.__version__
        h5file.attrs["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        h5file.attrs["top_converged"] = bool(analysis.top_converged)
        h5file.attrs["trace_samples"] = int(analysis.trace_samples)
        h5file.attrs["density_sigma"] = float(analysis.density_sigma)
        for stage, name in _STAGE_PRODUCTS.items():
            h5file.attrs[name] = int(analysis.products.get(stage, 0))
        h5file.attrs["products"] = int(sum(analysis.products.values()))
        for key, value in attributes.items():
            h5file.attrs[key] = value

    _atomic_create(path, build)


def is_hessian_file(path: Path) -> bool:
    """Whether `path` is an existing HDF5 file written by `lsurf hessian` (False otherwise,
    so that callers fall through to their own messages for missing or other files)."""
    if not Path(path).is_file():
        return False
    try:
        with h5py.File(path, "r", locking=False) as h5file:
            return str(h5file.attrs.get("lsurf_file", "")) == HESSIAN_FILE
    except OSError:
        return False


def read_hessian_file(path: Path) -> HessianFile:
    """Load what `write_hessian_file` wrote."""
    with _open(path, "r", "hessian file", locking=False) as h5file:
        if str(h5file.attrs.get("lsurf_file", "")) != HESSIAN_FILE:
            raise OutputError(f"{path} is not a Hessian analysis file of `lsurf hessian`")
        missing = [name for name in (*_HESSIAN_ARRAYS, "trace") if name not in h5file]
        if missing:
            raise OutputError(
                f"hessian file {path} is damaged: it lacks {', '.join(missing)}; rerun "
                "lsurf hessian with --force"
            )
        attributes = _attributes(h5file)
        layers = "layer_names" in h5file
        analysis = HessianAnalysis(
            top_eigenvalues=h5file["top_eigenvalues"][()],
            top_residuals=h5file["top_residuals"][()],
            top_converged=bool(attributes.get("top_converged", False)),
            trace=float(h5file["trace"][()]),
            trace_standard_error=float(h5file["trace_standard_error"][()]),
            trace_probes=h5file["trace_probes"][()],
            density_nodes=h5file["density_nodes"][()],
            density_weights=h5file["density_weights"][()],
            density_grid=h5file["density_grid"][()],
            density_curve=h5file["density_curve"][()],
            density_sigma=float(attributes.get("density_sigma", 0.0)),
            layer_names=tuple(
                name.decode() if isinstance(name, bytes) else str(name)
                for name in (h5file["layer_names"][()] if layers else ())
            ),
            layer_max_eigenvalues=h5file["layer_max_eigenvalues"][()],
            layer_residuals=h5file["layer_residuals"][()],
            layer_products=h5file["layer_products"][()] if layers else np.zeros(0, np.int64),
            products={
                stage: int(attributes.get(name, 0)) for stage, name in _STAGE_PRODUCTS.items()
            },
        )
        return HessianFile(Path(path), analysis, attributes)
