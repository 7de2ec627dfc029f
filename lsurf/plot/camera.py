"""Where the 3D surface figure is looked at from: a view in which each panel's minimum shows.

Input: the heights drawn (the grid's values after clipping, log10 on a log scale; NaN where
hidden), the axes' limits and box aspect. Output: an (elevation, azimuth) in degrees.

Why: seen from matplotlib's default 30° elevation, a loss surface's rim (steep, or flat at
the clip height, as real losses are) stands between the camera and the basin, so the very
minimum the figure is about is hidden. The view is chosen by casting the sight line from the
minimum towards the camera through the surface (bilinear between grid points, as the facets
are drawn): the first candidate view from which nothing blocks it, lowest elevation first,
matplotlib's own azimuth first. The figure uses an orthographic projection, where every
sight line is parallel to the view direction, so this test is exact, and equal heights look
equal anywhere in the box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOX_ASPECT = (4.0, 4.0, 3.0)  # matplotlib's default proportions of the 3D box (x, y, z)
# The first candidate, (30, -60), is matplotlib's default view (the reference's 3D figure).
ELEVATIONS = (30.0, 40.0, 50.0, 60.0, 70.0, 80.0)
AZIMUTHS = (-60.0, 30.0, 120.0, -150.0)  # the default, then the other three quarters
TOP_VIEW = (90.0, -90.0)  # straight down: nothing can hide the minimum
# A sight line grazing a facet (within this fraction of the box height) still sees past it.
GRAZE = 1e-3
SAMPLES_PER_CELL = 4  # points tested along the sight line per grid cell it crosses


@dataclass(frozen=True)
class Box:
    """The 3D axes' data limits: what maps onto the box of BOX_ASPECT."""

    x: tuple[float, float]
    y: tuple[float, float]
    z: tuple[float, float]


def choose_view(
    surfaces: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], box: Box
) -> tuple[float, float]:
    """The first view from which every surface's minimum is seen.

    `surfaces`: (x, y, heights[i, j] at (x[i], y[j])) per panel, all drawn in `box`.
    """
    candidates = [(elevation, azimuth) for elevation in ELEVATIONS for azimuth in AZIMUTHS]
    for view in candidates:
        if all(minimum_visible(x, y, heights, box, view) for x, y, heights in surfaces):
            return view
    return TOP_VIEW


def minimum_visible(
    x: np.ndarray, y: np.ndarray, heights: np.ndarray, box: Box, view: tuple[float, float]
) -> bool:
    """Whether the lowest drawn point of the surface is seen from `view` (orthographic).

    True when nothing is drawn (no minimum to hide).
    """
    if np.all(np.isnan(heights)):
        return True
    i, j = np.unravel_index(np.nanargmin(heights), heights.shape)
    # Box coordinates: each axis's limits onto [0, its aspect], as matplotlib maps them.
    node_x = _to_box(x, box.x, BOX_ASPECT[0])
    node_y = _to_box(y, box.y, BOX_ASPECT[1])
    surface = _to_box(heights, box.z, BOX_ASPECT[2])
    start = np.array([node_x[i], node_y[j], surface[i, j]])
    elevation, azimuth = np.deg2rad(view)
    toward_camera = np.array(
        [
            np.cos(elevation) * np.cos(azimuth),
            np.cos(elevation) * np.sin(azimuth),
            np.sin(elevation),
        ]
    )
    if toward_camera[2] <= 0:  # from below or level, the surface's underside: not the basin
        return False
    # Past the box's top nothing can block; beyond the grid there is no surface either.
    length = (BOX_ASPECT[2] - start[2]) / toward_camera[2]
    cell = min(
        np.min(np.abs(np.diff(node_x)), initial=np.inf),
        np.min(np.abs(np.diff(node_y)), initial=np.inf),
    )
    count = int(np.ceil(length / cell * SAMPLES_PER_CELL)) if np.isfinite(cell) else 2
    steps = np.linspace(0.0, length, max(count, 2) + 1)[1:]
    points = start + steps[:, None] * toward_camera
    inside = _within(points[:, 0], node_x) & _within(points[:, 1], node_y)
    # The minimum's own facets (the cells around it) do not hide it: where one is seen from
    # the camera, the minimum's pixel shows that facet, colored by the mean of its corners.
    # Only what lies further away counts, as a rim does.
    own_x = _neighbours(node_x, int(i))
    own_y = _neighbours(node_y, int(j))
    inside &= ~(
        (points[:, 0] >= own_x[0])
        & (points[:, 0] <= own_x[1])
        & (points[:, 1] >= own_y[0])
        & (points[:, 1] <= own_y[1])
    )
    points = points[inside]
    below = _bilinear(node_x, node_y, surface, points[:, 0], points[:, 1])
    blocked = below > points[:, 2] + GRAZE * BOX_ASPECT[2]  # NaN (a hole) blocks nothing
    return not bool(np.any(blocked))


def _to_box(values: np.ndarray, limits: tuple[float, float], aspect: float) -> np.ndarray:
    low, high = limits
    return (np.asarray(values, dtype=np.float64) - low) / (high - low) * aspect


def _neighbours(nodes: np.ndarray, index: int) -> tuple[float, float]:
    """The span of the grid cells on either side of node `index`."""
    return float(nodes[max(index - 1, 0)]), float(nodes[min(index + 1, len(nodes) - 1)])


def _within(values: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    return (values >= nodes.min()) & (values <= nodes.max())


def _bilinear(
    node_x: np.ndarray, node_y: np.ndarray, surface: np.ndarray, at_x: np.ndarray, at_y: np.ndarray
) -> np.ndarray:
    """The surface's height at (at_x, at_y), bilinear in the grid cell holding each point."""
    # Fractional grid indices; a single row or column has no cells: its own values.
    u = np.interp(at_x, node_x, np.arange(len(node_x))) if len(node_x) > 1 else np.zeros_like(at_x)
    v = np.interp(at_y, node_y, np.arange(len(node_y))) if len(node_y) > 1 else np.zeros_like(at_y)
    i = np.clip(np.floor(u).astype(int), 0, max(len(node_x) - 2, 0))
    j = np.clip(np.floor(v).astype(int), 0, max(len(node_y) - 2, 0))
    s, t = u - i, v - j
    i1, j1 = np.minimum(i + 1, len(node_x) - 1), np.minimum(j + 1, len(node_y) - 1)
    return (
        (1 - s) * (1 - t) * surface[i, j]
        + s * (1 - t) * surface[i1, j]
        + (1 - s) * t * surface[i, j1]
        + s * t * surface[i1, j1]
    )
