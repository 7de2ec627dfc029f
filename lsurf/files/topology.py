"""The topology group of a surface file: what `lsurf topology` found in one column.

Layout (HDF5), one group per analysed column, `topology/<column>` (e.g. `topology/train_loss`):
- attributes: `topology_format` (1), `neighbours` (4 or 8), `threshold` (τ, the column's
  units), `relative_threshold` (τ as a share of the value range, where it was given so),
  `points` (the points analysed: done and finite), `smad`, `smad_normalized`, `smad_weighted`,
  `total_variation`, `statistics` (JSON: the other columns summarised per basin);
- `pairs`: float64 (k, 4), one row per local minimum by birth (the oldest first): birth
  point, death point (−1: never), birth value, death value (NaN: never); points are flat
  indices into the grid (C order);
- `tree`: float64 (m, 3), the merge tree's nodes: point, value, parent node (−1: a root);
  nodes 0..k−1 are the minima in `pairs`' order;
- `basin`: int32, the grid's shape: each point's basin, as the row of its minimum in `pairs`
  (−1: a point not analysed);
- `basins`: float64 (b, 3), one row per basin: its minimum's row in `pairs`, its share of the
  grid's points, its depth (persistence; NaN for a part's oldest minimum); `stats/<column>`:
  float64 (b, 3), each other column's (attribute `statistics`) mean, min and max over it.

It is written into a copy of the file which then replaces it (lsurf.atomic), while a read lock
on the original keeps a sweep from writing it meanwhile: the surface's values are never
touched, and a crash leaves the old file or the new one.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lsurf.atomic import atomic_path
from lsurf.files.hdf5 import open_file
from lsurf.topology import Topology

FORMAT_VERSION = 1
GROUP = "topology"


@dataclass(frozen=True)
class BasinTable:
    """Each basin of a topology, and other columns summarised over it."""

    minimum: np.ndarray  # (b,) int64: the basin's minimum, a row of the pairs
    share: np.ndarray  # (b,) float64: its points over the grid's
    depth: np.ndarray  # (b,) float64: the persistence of its minimum (NaN: never dies)
    statistics: dict[str, np.ndarray]  # column -> (b, 3): mean, min, max over the basin


def basin_table(topology: Topology, others: dict[str, np.ndarray]) -> BasinTable:
    """The basins of `topology` and the mean, min and max of each of `others` (grid-shaped
    columns, NaN where not done) over each basin's points."""
    minima = topology.basins
    labels = topology.basin
    share = np.array([(labels == m).sum() for m in minima], dtype=np.float64) / labels.size
    statistics = {}
    for name, values in others.items():
        rows = []
        for m in minima:
            inside = values[(labels == m) & np.isfinite(values)]
            rows.append(
                [inside.mean(), inside.min(), inside.max()] if inside.size else [np.nan] * 3
            )
        statistics[name] = np.asarray(rows, dtype=np.float64).reshape(len(minima), 3)
    return BasinTable(minima, share, topology.persistence[minima], statistics)


@dataclass(frozen=True)
class StoredTopology:
    """A `topology/<column>` group read back."""

    column: str
    attributes: dict[str, Any]
    pairs: np.ndarray  # (k, 4)
    tree: np.ndarray  # (m, 3)
    basin: np.ndarray  # grid-shaped
    basins: BasinTable


def write_topology(
    path: Path,
    column: str,
    topology: Topology,
    table: BasinTable,
    relative: float | None,
    points: int,
) -> None:
    """Put `topology` of `column` into the surface file at `path` (replacing that column's
    earlier one), atomically, the values untouched; another process writing the file is an
    OutputError (one line), raised before anything is written."""
    with open_file(path, "r", "surface file"):  # the read lock: no writer until the rename
        with atomic_path(path) as temporary:
            shutil.copyfile(path, temporary)
            with h5py.File(temporary, "r+", locking=False) as h5file:
                root = h5file.require_group(GROUP)
                if column in root:
                    del root[column]
                _write_group(root.create_group(column), topology, table, relative, points)


def _write_group(
    group: h5py.Group, topology: Topology, table: BasinTable, relative: float | None, points: int
) -> None:
    group.attrs["topology_format"] = FORMAT_VERSION
    group.attrs["neighbours"] = topology.neighbours
    group.attrs["threshold"] = topology.threshold
    if relative is not None:
        group.attrs["relative_threshold"] = relative
    group.attrs["points"] = points
    for name in ("smad", "smad_normalized", "smad_weighted", "total_variation"):
        group.attrs[name] = float(getattr(topology, name))
    group.attrs["statistics"] = json.dumps(list(table.statistics))
    pairs = np.column_stack(
        [topology.birth, topology.death, topology.birth_value, topology.death_value]
    ).astype(np.float64)
    group.create_dataset("pairs", data=pairs.reshape(-1, 4))
    tree = np.column_stack([topology.node_point, topology.node_value, topology.node_parent])
    group.create_dataset("tree", data=tree.astype(np.float64).reshape(-1, 3))
    group.create_dataset("basin", data=topology.basin.astype(np.int32), compression="gzip")
    rows = np.column_stack([table.minimum, table.share, table.depth]).astype(np.float64)
    group.create_dataset("basins", data=rows.reshape(-1, 3))
    statistics = group.create_group("stats")
    for name, values in table.statistics.items():
        statistics.create_dataset(name, data=values)


def read_topologies(h5file: h5py.File) -> dict[str, StoredTopology]:
    """Every analysed column's topology in an open surface file ({} when none)."""
    if GROUP not in h5file:
        return {}
    found = {}
    for column, group in h5file[GROUP].items():
        rows = group["basins"][()]
        statistics = {name: group["stats"][name][()] for name in group["stats"]}
        table = BasinTable(rows[:, 0].astype(np.int64), rows[:, 1], rows[:, 2], statistics)
        attributes = {key: _plain(value) for key, value in group.attrs.items()}
        found[column] = StoredTopology(
            column, attributes, group["pairs"][()], group["tree"][()], group["basin"][()], table
        )
    return found


def read_topology_file(path: Path) -> dict[str, StoredTopology]:
    with open_file(path, "r", "surface file", locking=False) as h5file:
        return read_topologies(h5file)


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------------------- analysing a file

DEFAULT_RELATIVE = 0.05  # τ as a share of the value range when none is given


@dataclass(frozen=True)
class Analysis:
    """`lsurf topology` on one file: what was analysed and what was found."""

    path: Path
    column: str
    topology: Topology
    table: BasinTable
    relative: float | None
    points: int  # done and finite
    total: int  # the grid's points
    x: np.ndarray
    y: np.ndarray | None
    values: np.ndarray  # grid-shaped, NaN where not analysed


def analyse_file(
    path: Path,
    column: str | None,
    threshold: float | None,
    relative: float | None,
    neighbours: int,
    statistics: list[str] | None,
) -> Analysis:
    """The topology of `column` (default: the first loss column) of the surface file at
    `path`, not-done and non-finite points left out; τ = `threshold`, or `relative` (default
    DEFAULT_RELATIVE) times the value range. `statistics`: the columns summarised per basin
    (default: every other column). Raises ConfigError on bad input, before anything is
    written; writes nothing itself."""
    from lsurf.errors import ConfigError
    from lsurf.files.surface import read_surface
    from lsurf.topology import analyse

    surface = read_surface(path)
    names = list(surface.metrics)
    if column is None:
        losses = [name for name in names if name.endswith("_loss")]
        column = losses[0] if losses else names[0]
    for name in [column, *(statistics or [])]:
        if name not in surface.metrics:
            raise ConfigError(f"{path} has no column {name!r}; its columns: {', '.join(names)}")
    if threshold is not None and relative is not None:
        raise ConfigError("give --threshold or --relative, not both")
    for value, flag in ((threshold, "--threshold"), (relative, "--relative")):
        if value is not None and not (value >= 0 and np.isfinite(value)):
            raise ConfigError(f"{flag} must be a number of 0 or more, got {value}")
    values = np.where(surface.done, surface.metrics[column], np.nan).astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        raise ConfigError(f"{path}: no point of {column} is done and finite; nothing to analyse")
    if threshold is None:
        relative = DEFAULT_RELATIVE if relative is None else relative
        threshold = relative * float(np.ptp(values[finite]))
    topology = analyse(values, threshold, 8 if neighbours == 8 else 4)
    others = statistics if statistics is not None else [n for n in names if n != column]
    done = {name: np.where(surface.done, surface.metrics[name], np.nan) for name in others}
    table = basin_table(topology, done)
    return Analysis(
        path,
        column,
        topology,
        table,
        relative,
        int(finite.sum()),
        int(values.size),
        surface.x,
        surface.y,
        values,
    )


def describe_analysis(found: Analysis) -> list[str]:
    """The lines `lsurf topology` prints (and `lsurf info`, from the stored group)."""
    return describe_stored(
        found.column,
        {
            "neighbours": found.topology.neighbours,
            "threshold": found.topology.threshold,
            "relative_threshold": found.relative,
            "points": found.points,
            "smad": found.topology.smad,
            "smad_normalized": found.topology.smad_normalized,
            "smad_weighted": found.topology.smad_weighted,
            "total_variation": found.topology.total_variation,
        },
        _pairs_of(found.topology),
        found.table,
        found.x,
        found.y,
        found.total,
    )


def _pairs_of(topology: Topology) -> np.ndarray:
    return np.column_stack(
        [topology.birth, topology.death, topology.birth_value, topology.death_value]
    ).astype(np.float64)


def describe_stored(
    column: str,
    attributes: dict[str, Any],
    pairs: np.ndarray,
    table: BasinTable,
    x: np.ndarray,
    y: np.ndarray | None,
    total: int,
) -> list[str]:
    """A topology's report: its settings, counts, smoothness, then one line per basin."""
    relative = attributes.get("relative_threshold")
    tau = f"{float(attributes['threshold']):.4g}"
    if relative is not None:
        tau += f" ({100 * float(relative):g}% of the range)"
    finite = int(np.isfinite(pairs[:, 3]).sum())
    smad, normalized = float(attributes["smad"]), float(attributes["smad_normalized"])
    weighted, variation = float(attributes["smad_weighted"]), float(attributes["total_variation"])
    lines = [
        f"topology {column}: {len(table.minimum)} basins at threshold {tau}, "
        f"{len(pairs)} local minima, {finite} saddles ({attributes['neighbours']}-neighbour "
        f"grid, {attributes['points']}/{total} points)",
        f"  SMAD {smad:.4g} (normalized {normalized:.4g}, weighted {weighted:.4g})  "
        f"total variation {variation:.4g}",
    ]
    for row, minimum in enumerate(table.minimum.tolist()):
        point, value = int(pairs[minimum, 0]), pairs[minimum, 2]
        where = _coordinates(point, x, y)
        depth = table.depth[row]
        deep = "no saddle (the lowest of its part)" if np.isnan(depth) else f"depth {depth:.4g}"
        if not np.isnan(depth):
            saddle = _coordinates(int(pairs[minimum, 1]), x, y)
            deep += f" to the saddle at {saddle}"
        lines.append(
            f"  basin {row + 1}: minimum {value:.4g} at {where}, {100 * table.share[row]:.1f}% "
            f"of the grid, {deep}"
        )
        for name, values in table.statistics.items():
            mean, low, high = values[row]
            lines.append(f"    {name:<14} mean {mean:.4g}  min {low:.4g}  max {high:.4g}")
    return lines


def _coordinates(point: int, x: np.ndarray, y: np.ndarray | None) -> str:
    if y is None:
        return f"x={x[point]:.3g}"
    i, j = divmod(point, len(y))
    return f"({x[i]:.3g}, {y[j]:.3g})"
