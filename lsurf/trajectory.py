"""A training trajectory's path on a PCA plane (numpy only, so plotting needs no torch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Trajectory:
    """Where each checkpoint of a training run lies on the plane of a PCA sweep."""

    coordinates: np.ndarray  # (k, 2) float64: (a_i, b_i), the final model at (0, 0)
    epochs: tuple[int, ...]  # each checkpoint's epoch (the number in its file name)
    explained_variance_ratio: tuple[float, float]  # of the plane's two axes
