"""The direction file: d1 and d2 of a sweep, reusable across sweeps.

Groups `xdirection` and `ydirection` hold one float32 dataset per moved tensor, named by its
state_dict key; attributes record how they were made (kind, norm, ignore, seed, the input
checkpoints' digests, `directions_sha256`), with the eigenvalues of a Hessian kind and the
projected path of a PCA kind (or the paths of several runs, `lsurf.files.trajectory`).
Writing takes and reading returns `lsurf.directions.Directions` (torch tensors), imported
only when called, so that `lsurf info` and plotting need no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

import lsurf
from lsurf.errors import OutputError
from lsurf.files.hdf5 import attributes_of, create_atomically, open_file
from lsurf.files.trajectory import read_runs, read_trajectory, write_runs, write_trajectory

if TYPE_CHECKING:
    import torch

    from lsurf.directions import Directions


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
        write_trajectory(h5file, directions.trajectory)
        write_runs(h5file, directions.runs)

    create_atomically(path, build)


def is_direction_file(path: Path) -> bool:
    """Whether `path` holds directions (and no surface), for `lsurf info` to tell files apart."""
    with open_file(path, "r", "file", locking=False) as h5file:
        return "xdirection" in h5file and "xcoordinates" not in h5file


def read_directions(path: Path) -> tuple[Directions, dict[str, Any]]:
    """Load a direction file written by `write_directions`, with its attributes."""
    import torch

    from lsurf.directions import Directions

    with open_file(path, "r", "direction file") as h5file:
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

        attributes = attributes_of(h5file)
        directions = Directions(
            kind=str(attributes["kind"]),
            norm=str(attributes["norm"]),
            ignore=str(attributes["ignore"]),
            seed=int(attributes["seed"]),
            x=tensors("xdirection") or {},
            y=tensors("ydirection"),
            trajectory=read_trajectory(h5file),
            runs=read_runs(h5file),
        )
        return directions, attributes
