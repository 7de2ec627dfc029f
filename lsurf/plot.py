"""Minimal figures of a surface file: labelled contours for 2D, a curve for 1D.

Input: a surface file (read without torch or MPI, also while a sweep still writes it).
Output: a PNG path. Points not yet computed, inf and NaN are masked, never drawn as zeros,
and the title says how complete the surface is. The full plotting module comes later.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lsurf.errors import LsurfError
from lsurf.store import read_surface


def plot_surface(path: Path, metric: str = "train_loss", out: Path | None = None) -> Path:
    import matplotlib
    import matplotlib.colors

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    surface = read_surface(path)
    if metric not in surface.metrics:
        available = ", ".join(sorted(surface.metrics))
        raise LsurfError(f"{path} has no metric {metric!r}; available: {available}")
    values = np.ma.masked_where(
        ~surface.done | ~np.isfinite(surface.metrics[metric]), surface.metrics[metric]
    )
    done, total = int(surface.done.sum()), surface.done.size
    out = out or path.with_name(f"{path.stem}_{metric}.png")
    out.parent.mkdir(parents=True, exist_ok=True)

    figure, axes = plt.subplots(figsize=(6, 5))
    if surface.y is None:
        axes.plot(surface.x, values, marker=".")
        axes.set_xlabel("alpha")
        axes.set_ylabel(metric)
    elif values.count() == 0 or len(surface.x) < 2 or len(surface.y) < 2:
        raise LsurfError(f"{path}: too few finished points to draw contours of {metric}")
    else:
        # contour wants Z[row=y, col=x]; the file stores [i=x, j=y].
        grid_x, grid_y = np.meshgrid(surface.x, surface.y, indexing="ij")
        low, high = float(values.min()), float(values.max())
        norm = None
        if metric.endswith("_loss") and low > 0 and high > 10 * low:
            # Losses span decades away from the minimum: log-spaced levels show the basin.
            levels = np.geomspace(low, high, 21)
            norm = matplotlib.colors.LogNorm(low, high)
        else:
            levels = np.linspace(low, high, 21) if high > low else 1
        filled = axes.contourf(grid_x, grid_y, values, levels=levels, norm=norm, cmap="viridis")
        lines = axes.contour(
            grid_x, grid_y, values, levels=filled.levels[::2], colors="k", linewidths=0.6
        )
        axes.clabel(lines, fontsize=7, fmt="%.3g")
        figure.colorbar(filled, ax=axes, label=metric, ticks=filled.levels[::4], format="%.3g")
        axes.set_xlabel("x (direction 1)")
        axes.set_ylabel("y (direction 2)")
    status = "" if done == total else f" — {done}/{total} points done"
    axes.set_title(f"{_subject(surface.attributes)}\n{metric}{status}", fontsize=10)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def _subject(attributes: dict) -> str:
    """'resnet20, random filter-normalized directions' from the stored config."""
    import yaml

    config = yaml.safe_load(str(attributes.get("config", ""))) or {}
    model = config.get("model", {}).get("name", "?")
    directions = config.get("directions", {})
    if directions.get("kind") == "target":
        return f"{model}, interpolation between two checkpoints"
    return f"{model}, {directions.get('kind')} directions, {directions.get('norm')} norm"
