"""The figure of `lsurf topology`: basins on the plane, the persistence diagram, the merge tree.

Input: a `lsurf.files.topology.Analysis`. Output: one figure of three panels, saved as PNG, PDF
or SVG: left, the basins coloured on the plane (a 1D curve: the curve, each basin's stretch in
its colour) with the column's contour lines, each basin's minimum (star) and saddle (cross);
middle, the persistence diagram (birth against death of every minimum; the oldest of each
part, which never dies, drawn at the top as a triangle; the dashed line is birth + τ: the
pairs above it head basins); right, the merge tree pruned to the basins' minima (each leaf a
basin's minimum at its value, each join the saddle where two of them meet).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from lsurf.atomic import atomic_path
from lsurf.files.topology import Analysis
from lsurf.topology import NO_POINT, Topology

DPI = 150
BASIN_COLORS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]  # fmt: skip


def write_topology_figure(found: Analysis, path: Path, format: str = "png") -> Path:
    figure = Figure(figsize=(15.0, 4.6), dpi=DPI, layout="constrained")
    plane, diagram, tree = figure.subplots(1, 3)
    _draw_basins(plane, found)
    _draw_diagram(diagram, found.topology)
    _draw_tree(tree, found.topology)
    figure.suptitle(f"{found.path.name}: topology of {found.column}", fontsize=10)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format=format)
    return path


def _colour_index(found: Analysis) -> np.ndarray:
    """Each point's basin as 0..b-1 (NaN where not analysed), basins by birth."""
    labels = found.topology.basin
    index = np.full(labels.shape, np.nan)
    for row, minimum in enumerate(found.table.minimum.tolist()):
        index[labels == minimum] = row % len(BASIN_COLORS)
    return index


def _draw_basins(ax: Axes, found: Analysis) -> None:
    topology, colours = found.topology, _colour_index(found)
    kept = found.table.minimum
    if found.y is None:
        for row in range(len(kept)):
            inside = colours == row % len(BASIN_COLORS)
            ax.plot(found.x, np.where(inside, found.values, np.nan), color=BASIN_COLORS[row % 10])
        ax.plot(found.x[topology.birth[kept]], topology.birth_value[kept], "k*", markersize=8)
        ax.set_xlabel("x")
        ax.set_ylabel(found.column)
        ax.set_title(f"{len(kept)} basins", fontsize=9)
        return
    cmap = ListedColormap(BASIN_COLORS)
    ax.pcolormesh(
        found.x, found.y, colours.T, cmap=cmap, vmin=-0.5, vmax=len(BASIN_COLORS) - 0.5, alpha=0.55
    )
    values = found.values
    if np.isfinite(values).sum() > 3 and np.nanmax(values) > np.nanmin(values):
        ax.contour(found.x, found.y, values.T, levels=12, colors="k", linewidths=0.5)
    ny = len(found.y)
    for minimum in kept.tolist():
        i, j = divmod(int(topology.birth[minimum]), ny)
        ax.plot(found.x[i], found.y[j], "*", color="white", markeredgecolor="k", markersize=10)
        if topology.death[minimum] != NO_POINT:
            i, j = divmod(int(topology.death[minimum]), ny)
            ax.plot(found.x[i], found.y[j], "x", color="k", markersize=7)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"{len(kept)} basins of {found.column}", fontsize=9)


def _draw_diagram(ax: Axes, topology: Topology) -> None:
    births, deaths = topology.birth_value, topology.death_value
    finite = np.isfinite(deaths)
    top = float(np.nanmax(topology.node_value))
    low = float(births.min())
    ax.plot(births[finite], deaths[finite], "o", markersize=3, color="#1f77b4", label="pairs")
    ax.plot(
        births[~finite], np.full((~finite).sum(), top), "^", color="#d62728", label="never dies"
    )
    ax.plot([low, top], [low, top], "-", color="0.5", linewidth=0.8)
    ax.plot([low, top], [low + topology.threshold, top + topology.threshold], "--", color="0.3")
    ax.set_xlabel("birth (a minimum's value)")
    ax.set_ylabel("death (its saddle's value)")
    ax.set_title(f"persistence diagram, threshold {topology.threshold:.3g}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")


def _draw_tree(ax: Axes, topology: Topology) -> None:
    """The merge tree with only the basins' minima as leaves, drawn bottom-up."""
    kept = set(topology.basins.tolist())
    children: dict[int, list[int]] = {}
    for node, parent in enumerate(topology.node_parent.tolist()):
        if parent != NO_POINT:
            children.setdefault(parent, []).append(node)
    value = topology.node_value
    placed: dict[int, tuple[float, float] | None] = {}  # node -> (x, value) of what rises
    leaves = 0
    roots = np.flatnonzero(topology.node_parent == NO_POINT).tolist()
    for root in roots:  # iterative post-order, so deep trees need no recursion
        stack: list[tuple[int, bool]] = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            below = children.get(node, [])
            if not expanded and below:
                stack.append((node, True))
                stack.extend((child, False) for child in reversed(below))
                continue
            if not below:
                if node < len(topology.birth) and node in kept:
                    placed[node] = (float(leaves), float(value[node]))
                    leaves += 1
                else:
                    placed[node] = None
                continue
            rising = [point for child in below if (point := placed[child]) is not None]
            if len(rising) < 2 and node not in roots:
                placed[node] = rising[0] if rising else None
                continue
            level = float(value[node])
            for x, start in rising:
                ax.plot([x, x], [start, level], color="k", linewidth=0.9)
            xs = [x for x, _ in rising]
            if len(xs) > 1:
                ax.plot([min(xs), max(xs)], [level, level], color="k", linewidth=0.9)
            placed[node] = (float(np.mean(xs)), level) if xs else None
    ax.set_xticks([])
    ax.set_ylabel("value")
    ax.set_title(f"merge tree ({leaves} basins' minima)", fontsize=9)
