"""PCA directions from a training trajectory, and the trajectory's path on their plane.

Input: θ* (the final model's parameters, the sweep's origin) and the trajectory's checkpoint
files θ_0 … θ_{k-1}. Output: two orthonormal directions (named tensors), their explained
variance ratios, and each checkpoint's coordinates (a_i, b_i) on the plane through θ*.

The math, as the reference computes it with scikit-learn: rows x_i = θ_i − θ* (with biases
and BN parameters zeroed when ignore=biasbn), **mean-centred** as sklearn's PCA does before
its SVD (`center=False` skips that), top two principal components v1, v2 (unit vectors in
weight space), explained variance ratio λ_j / Σλ. The path is a_i = ⟨x_i, v1⟩, b_i = ⟨x_i, v2⟩,
projecting the *uncentred* rows, so θ* sits at (0, 0) as on the surface.

It never holds the k × n matrix (300 checkpoints of an 11M-parameter model are 13 GB in
float32): the k × k Gram matrix G = X Xᵀ is accumulated in float64 over blocks of parameters
read from memory-mapped checkpoints, its eigenvectors u_j give v_j = Xcᵀ u_j / √λ_j, and a
second pass over the blocks builds v_j and the path. Memory is k × block + the two
directions; `memory_bytes` bounds the block.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lsurf.checkpoint import read_state_dict
from lsurf.directions import Directions
from lsurf.errors import ConfigError
from lsurf.files.trajectory import Trajectory

DEFAULT_MEMORY_BYTES = 1 << 30  # for one block of all k rows, in float64


@dataclass(frozen=True)
class Plane:
    x: dict[str, torch.Tensor]  # v1, float32, keyed like θ*
    y: dict[str, torch.Tensor]  # v2
    explained_variance_ratio: tuple[float, float]
    path: np.ndarray  # (k, 2) float64: (a_i, b_i) of each trajectory checkpoint
    epochs: list[int]  # the integer in each checkpoint's name (its epoch), in order
    files: list[str]

    def directions(self, ignore: str) -> Directions:
        """As sweep directions: d1 = v1, d2 = v2, with the path stored alongside."""
        trajectory = Trajectory(self.path, tuple(self.epochs), self.explained_variance_ratio)
        return Directions("pca", "none", ignore, 0, self.x, self.y, trajectory)


def trajectory_files(folder: Path, pattern: str = "model_*.pt") -> list[Path]:
    """The checkpoints of a training run, ordered by the number in their names."""
    if not folder.is_dir():
        raise ConfigError(f"directions.trajectory {folder} is not a folder of checkpoints")
    files = sorted(folder.glob(pattern), key=lambda path: (checkpoint_epoch(path), path.name))
    if len(files) < 3:
        raise ConfigError(
            f"directions.trajectory {folder} holds {len(files)} checkpoint(s) matching "
            f"{pattern!r}; PCA needs at least 3 (lsurf train writes model_<epoch>.pt)"
        )
    return files


def checkpoint_epoch(path: Path) -> int:
    """The last integer in a checkpoint's file name (model_12.pt: 12), or -1 if none."""
    found = re.findall(r"\d+", path.stem)
    return int(found[-1]) if found else -1


def principal_plane(
    origin: dict[str, torch.Tensor],
    files: Sequence[Path],
    ignore: str,
    center: bool = True,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> Plane:
    """The PCA plane of the trajectory `files` around `origin` (see the module docstring)."""
    keys = [key for key in origin if not (ignore == "biasbn" and origin[key].dim() <= 1)]
    for file in files:
        check_fits(read_state_dict(file, mmap=True), origin, keys, file)
    rows = len(files)
    span = max(1, memory_bytes // (8 * rows))
    flat_origin = {key: origin[key].detach().reshape(-1).to(torch.float64) for key in keys}

    def blocks() -> Iterator[tuple[list[tuple[str, int, int]], torch.Tensor]]:
        """(slices, X_block): rows x_i restricted to ≤ `span` parameters at a time."""
        for pieces in _slices(keys, flat_origin, span):
            width = sum(stop - start for _, start, stop in pieces)
            block = torch.empty(rows, width, dtype=torch.float64)
            for row, path in enumerate(files):
                # Mapped afresh per block and dropped after: only this block's pages of each
                # file are ever resident, whatever the number and size of the checkpoints.
                state = read_state_dict(path, mmap=True)
                column = 0
                for key, start, stop in pieces:
                    values = state[key].reshape(-1)[start:stop].to(torch.float64)
                    block[row, column : column + stop - start] = (
                        values - flat_origin[key][start:stop]
                    )
                    column += stop - start
                del state
            yield pieces, block

    gram = torch.zeros(rows, rows, dtype=torch.float64)
    for _, block in blocks():
        gram += block @ block.T
    # Centring the rows (x_i − mean) is H X with H = I − 11ᵀ/k, so its Gram matrix is H G H.
    centring = torch.eye(rows, dtype=torch.float64)
    if center:
        centring -= 1.0 / rows
    centred_gram = centring @ gram @ centring
    eigenvalues, eigenvectors = torch.linalg.eigh(centred_gram)  # ascending
    eigenvalues = eigenvalues.clamp(min=0.0)
    top = eigenvalues[-2:].flip(0)
    if top[1] <= 0:
        raise ConfigError(
            "the trajectory's checkpoints span fewer than 2 directions around θ*; "
            "PCA needs checkpoints that differ from each other"
        )
    # v_j = (H X)ᵀ u_j / √λ_j: unit vectors in weight space.
    coefficients = (centring @ eigenvectors[:, -2:].flip(1)) / top.sqrt()  # (k, 2)
    pieces_x: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    pieces_y: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    path = torch.zeros(rows, 2, dtype=torch.float64)
    for pieces, block in blocks():
        components = block.T @ coefficients  # (block, 2)
        path += block @ components
        column = 0
        for key, start, stop in pieces:
            width = stop - start
            pieces_x[key].append(components[column : column + width, 0])
            pieces_y[key].append(components[column : column + width, 1])
            column += width
    # A fixed sign per component, so the same trajectory gives the same plane anywhere:
    # the first checkpoint (the initial weights) gets non-negative coordinates.
    signs = torch.where(path[0] < 0, -1.0, 1.0).to(torch.float64)
    path *= signs
    x, y = {}, {}
    for key, tensor in origin.items():
        if key in pieces_x:
            x[key] = (signs[0] * torch.cat(pieces_x[key])).reshape(tensor.shape).float()
            y[key] = (signs[1] * torch.cat(pieces_y[key])).reshape(tensor.shape).float()
        else:  # held at θ*: biases and BN parameters under ignore=biasbn
            x[key] = torch.zeros(tensor.shape, dtype=torch.float32)
            y[key] = torch.zeros(tensor.shape, dtype=torch.float32)
    ratio = (top / eigenvalues.sum()).tolist()
    return Plane(
        x=x,
        y=y,
        explained_variance_ratio=(ratio[0], ratio[1]),
        path=path.numpy(),
        epochs=[checkpoint_epoch(path) for path in files],
        files=[str(path) for path in files],
    )


def check_fits(
    state: dict[str, torch.Tensor],
    origin: dict[str, torch.Tensor],
    keys: Sequence[str],
    path: Path,
) -> None:
    """Raise ConfigError naming `path` unless its `state` holds each of `keys` shaped as θ*."""
    missing = [key for key in keys if key not in state]
    misshapen = [key for key in keys if key in state and state[key].shape != origin[key].shape]
    if missing or misshapen:
        listed = ", ".join((missing + misshapen)[:5])
        raise ConfigError(
            f"trajectory checkpoint {path} does not fit model.checkpoint's model "
            f"(missing or mis-shaped: {listed}); is it from the same training run?"
        )


def _slices(
    keys: list[str], flat: dict[str, torch.Tensor], span: int
) -> Iterator[list[tuple[str, int, int]]]:
    """Group (key, start, stop) slices of the flattened tensors into blocks of ≤ span values."""
    block: list[tuple[str, int, int]] = []
    room = span
    for key in keys:
        start, size = 0, flat[key].numel()
        while start < size:
            stop = min(size, start + room)
            block.append((key, start, stop))
            room -= stop - start
            start = stop
            if room == 0:
                yield block
                block, room = [], span
    if block:
        yield block
