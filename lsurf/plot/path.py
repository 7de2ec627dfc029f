"""A PCA sweep's optimizer path drawn on a plane figure: line, start and end, some epochs;
and the paths of several runs (`directions.trajectories`), each in its own colour and marker.

Input: a matplotlib Axes (2D, or 3D with the height of the box's floor) and the `Panel` whose
surface holds the trajectory or the runs. Output: the paths drawn over what is there, with
epochs named where their labels cannot collide (on a single path; several runs' epoch labels
would crowd each other, so their legend names them instead).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np
from matplotlib.axes import Axes

from lsurf.files.surface import Surface
from lsurf.plot.view import Panel

if TYPE_CHECKING:
    from mpl_toolkits.mplot3d import Axes3D

PATH_COLOR = "#e41a1c"
# The runs of directions.trajectories, in order (colorbrewer Set1, then repeating with other
# markers): colours that stand out on viridis, markers that tell runs apart in grey print.
RUN_COLORS = ("#e41a1c", "#377eb8", "#ff7f00", "#984ea3", "#f781bf", "#a65628", "#999999")
RUN_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")


def run_style(index: int) -> tuple[str, str]:
    """(colour, marker) of the run at `index`: no two of the first 56 runs look alike."""
    return RUN_COLORS[index % len(RUN_COLORS)], RUN_MARKERS[index % len(RUN_MARKERS)]


def draw_runs(ax: Axes, panel: Panel, floor: float | None = None) -> None:
    """Each run's path: line and markers in its own style, labelled for the legend, its start
    and end marked as a single path's are. On a 3D axes they lie on the box's floor."""
    runs = panel.surface.runs
    if runs is None:
        return
    for index, run in enumerate(runs.paths):
        a, b = run.trajectory.coordinates[:, 0], run.trajectory.coordinates[:, 1]
        heights = () if floor is None else (np.full(len(a), floor),)
        color, marker = run_style(index)
        ax.plot(
            a, b, *heights, "-", marker=marker, color=color, markersize=3, linewidth=1.2,
            zorder=4, gid="run", label=run.label,
        )  # fmt: skip
        for point_index, end_marker, size in ((0, "o", 7), (len(a) - 1, "*", 11)):
            point: tuple[np.ndarray, ...] = (a[point_index : point_index + 1],)
            point += (b[point_index : point_index + 1],)
            point += () if floor is None else (np.array([floor]),)
            ax.plot(
                *point, end_marker, color="white", markeredgecolor=color, markersize=size, zorder=5
            )


LABEL_GAP = 0.06  # fraction of the plot's width/height kept between two named epochs
MOST_LABELS = 8  # epochs named on a path at most


def draw_path(ax: Axes, panel: Panel, floor: float | None = None) -> None:
    """A PCA sweep's optimizer path: line and markers, a few epochs named, start and end.

    On a 3D axes (`floor` given) the path lies on the floor of the box, under the surface.
    """
    trajectory = panel.surface.trajectory
    if trajectory is None:
        return
    a, b = trajectory.coordinates[:, 0], trajectory.coordinates[:, 1]
    heights = () if floor is None else (np.full(len(a), floor),)
    ends = [(0, "o", 7), (len(a) - 1, "*", 11)]
    ax.plot(
        a, b, *heights, "-o", color=PATH_COLOR, markersize=2.5, linewidth=1.2, zorder=4, gid="path"
    )
    for index, marker, size in ends:
        point: tuple[np.ndarray, ...] = (a[index : index + 1], b[index : index + 1])
        point += () if floor is None else (np.array([floor]),)
        ax.plot(*point, marker, color="white", markeredgecolor="k", markersize=size, zorder=5)
    for index in _epochs_to_name(_plot_fractions(panel.surface, a, b)):
        label = str(trajectory.epochs[index])
        if floor is None:
            ax.annotate(
                label,
                (a[index], b[index]),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=7,
                zorder=6,
            )
        else:  # a floor is given with a 3D axes only: Axes3D.text(x, y, z, s)
            cast("Axes3D", ax).text(a[index], b[index], floor, label, fontsize=7)


def _plot_fractions(surface: Surface, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Path points over the extent of grid and path, so distances along x and y compare."""
    assert surface.y is not None  # paths are drawn on planes only
    spans = [np.ptp(np.r_[a, surface.x]), np.ptp(np.r_[b, surface.y])]
    return np.column_stack([a, b]) / np.maximum(spans, 1e-12)


def _epochs_to_name(points: np.ndarray) -> list[int]:
    """Which path points get their epoch written: the first and the last, and others spread
    evenly along the path, none closer than LABEL_GAP to another (points in plot fractions).

    Training paths crawl at the end, so evenly spaced epochs would pile their labels up there.
    """
    steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    along = np.r_[0.0, np.cumsum(steps)]  # arc length at each point
    targets = np.linspace(0.0, along[-1], MOST_LABELS)
    named = sorted({0, len(points) - 1})  # always, however close they are
    for target in targets[1:-1]:
        index = int(np.argmin(np.abs(along - target)))
        if all(np.linalg.norm(points[index] - points[other]) >= LABEL_GAP for other in named):
            named.append(index)
    return sorted(named)
