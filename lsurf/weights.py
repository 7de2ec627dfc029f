"""Weight statistics of checkpoints: per-layer norms and a histogram of the weights.

The paper's argument about batch size and weight decay (Li et al., section 5) rests on
them: without weight decay, small-batch training ends with larger weights, and the
sharpness seen on unnormalized plots follows the scale of the weights, not the geometry.

Input: state dicts. Output: `lsurf.files.weights.WeightStatistics` (numpy), written into a
surface file by the sweep (for θ*) or into a stats file (`lsurf.files.weights`) and a figure
(`lsurf.plot.weights`) by `lsurf weights`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from lsurf.files.weights import BINS, WeightStatistics

if TYPE_CHECKING:
    import torch


def weight_statistics(
    state: dict[str, torch.Tensor], limit: float | None = None
) -> WeightStatistics:
    """Norms of the conv/linear weights and their histogram over [-limit, limit].

    Biases and BN parameters (≤ 1 dimension) and buffers are left out, as the paper's
    histograms are of the weights that filter normalization acts on. `limit` defaults to
    the largest |w|, so several checkpoints compared side by side should share one.
    NaN and inf (a diverged run, which `lsurf weights` may still compare) fall outside every
    bin and the limit; the norm of a tensor holding them is NaN or inf.
    """
    import torch

    weights = {
        key: value.detach().float().reshape(-1)
        for key, value in state.items()
        if value.is_floating_point() and value.dim() > 1
    }
    everything = torch.cat(list(weights.values()))
    bound = _largest_finite(everything) if limit is None else limit
    finite = everything[everything.isfinite()]  # histc reads NaN into its range when it is 0
    counts = torch.histc(finite, bins=BINS, min=-bound, max=bound)
    return WeightStatistics(
        names=tuple(weights),
        norms=np.array([float(value.norm()) for value in weights.values()]),
        sizes=np.array([value.numel() for value in weights.values()], dtype=np.int64),
        bin_edges=np.linspace(-bound, bound, BINS + 1),
        counts=counts.numpy().astype(np.int64),
    )


def shared_limit(states: Sequence[dict[str, torch.Tensor]]) -> float:
    """The largest |w| over several checkpoints: one histogram range for all of them."""
    return max(
        _largest_finite(value.detach())
        for state in states
        for value in state.values()
        if value.is_floating_point() and value.dim() > 1
    )


def _largest_finite(values: torch.Tensor) -> float:
    """The largest finite |w| (0 when there is none)."""
    magnitudes = values.abs()
    finite = magnitudes[magnitudes.isfinite()]
    return float(finite.max()) if finite.numel() else 0.0
