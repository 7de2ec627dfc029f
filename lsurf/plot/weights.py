"""The figure of `lsurf weights`: weight histograms and per-layer norms of checkpoints.

Input: `WeightStatistics` per label (lsurf.files.weights). Output: one PNG, saved atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lsurf.atomic import atomic_path
from lsurf.files.weights import WeightStatistics


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
    with atomic_path(out) as temporary:
        figure.savefig(temporary, dpi=120, format=out.suffix.lstrip(".") or "png")
    plt.close(figure)
    return out
