"""Weight statistics of checkpoints: per-layer norms and a histogram of the weights.

The paper's argument about batch size and weight decay (Li et al., section 5) rests on
them: without weight decay, small-batch training ends with larger weights, and the
sharpness seen on unnormalized plots follows the scale of the weights, not the geometry.

Input: state dicts. Output: `WeightStatistics` (numpy), written into a surface file by
the sweep (for θ*) or into a stats file and a figure by `lsurf weights`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # surface files (and plots) read these statistics without torch
    import torch

BINS = 100


@dataclass(frozen=True)
class WeightStatistics:
    names: tuple[str, ...]  # multi-dimensional weights (conv, linear), in state_dict order
    norms: np.ndarray  # (layers,) Frobenius norm of each
    sizes: np.ndarray  # (layers,) entries of each
    bin_edges: np.ndarray  # (BINS + 1,)
    counts: np.ndarray  # (BINS,) how many weights fall in each bin, all layers together


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


def plot_weight_statistics(statistics: dict[str, WeightStatistics], out: Path) -> Path:
    """Histograms (overlaid, log counts) and per-layer norms of labelled checkpoints."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (histogram, norms) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, stats in statistics.items():
        centres = (stats.bin_edges[:-1] + stats.bin_edges[1:]) / 2
        histogram.plot(centres, np.maximum(stats.counts, 0.5), label=label, drawstyle="steps-mid")
        norms.plot(np.arange(len(stats.norms)), stats.norms, marker=".", label=label)
    histogram.set_yscale("log")
    histogram.set_xlabel("weight value")
    histogram.set_ylabel("count")
    histogram.set_title("weights of conv and linear layers")
    norms.set_xlabel("layer (state_dict order)")
    norms.set_ylabel("Frobenius norm")
    norms.set_title("per-layer weight norms")
    for axes in (histogram, norms):
        axes.legend(fontsize=8)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out
