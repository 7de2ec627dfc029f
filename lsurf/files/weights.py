"""The weight statistics of checkpoints (per-layer norms, a histogram) as HDF5.

A sweep stores θ*'s statistics in the group `weights` of its surface file; `lsurf weights`
writes a stats file, one group per labelled checkpoint. Each group holds `names`, `norms`,
`sizes`, `histogram_edges` and `histogram_counts`. numpy and h5py only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

import lsurf
from lsurf.files.hdf5 import create_atomically

BINS = 100  # histogram bins


@dataclass(frozen=True)
class WeightStatistics:
    names: tuple[str, ...]  # multi-dimensional weights (conv, linear), in state_dict order
    norms: np.ndarray  # (layers,) Frobenius norm of each
    sizes: np.ndarray  # (layers,) entries of each
    bin_edges: np.ndarray  # (BINS + 1,)
    counts: np.ndarray  # (BINS,) how many weights fall in each bin, all layers together


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

    create_atomically(path, build)
