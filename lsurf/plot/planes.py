"""Figures of 2D surfaces: contour lines, filled contours, a heatmap and a 3D surface.

Input: `Panel`s (one per surface file) and the `Scale` they share. Output: a matplotlib
`Figure` (object-oriented, no pyplot: no global state, no display needed) with the panels
side by side, ONE colorbar, the same norm and the same contour levels in every panel.

Array orientation: a panel's values[i, j] is the point (x[i], y[j]); matplotlib's 2D
functions want rows along y, so they get values.T.

Colormaps come from `PlotOptions.colormaps` (viridis unless a preset or --colormap says
otherwise); a plane carrying a training path gets `PlotOptions.path_levels` as extra grey
contour lines. The 3D view is `PlotOptions.view`, else one that shows every panel's minimum
(lsurf.plot.camera).

Points a solver did not converge at (a curvature panel's `convergence`) carry an 'x' over
every kind, named in the legend and counted in the panel's title.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.patheffects import AbstractPathEffect, withStroke
from matplotlib.ticker import FuncFormatter
from matplotlib.typing import ColorType, MarkerType

from lsurf.files.labels import completeness, titles
from lsurf.metrics import Column
from lsurf.plot.camera import BOX_ASPECT, Box, choose_view
from lsurf.plot.options import Colormaps, Kind, PlotOptions
from lsurf.plot.path import PATH_COLOR, draw_path, draw_runs, run_style
from lsurf.plot.view import NOT_COMPUTED, NOT_FINITE, SHOWN, Panel, Scale

if TYPE_CHECKING:
    from mpl_toolkits.mplot3d import Axes3D  # untyped: Any to mypy

NOT_COMPUTED_COLOR = "#c8c8c8"  # grey: no colormap color, so a hole never reads as a value
NOT_FINITE_COLOR = "#f781bf"  # pink: computed, but inf or NaN (or <= 0 on a log scale)
DPI = 150
PANEL_SIZE = (5.4, 4.4)  # inches per panel; the colorbar and legend add to it
SURFACE_SAMPLES = 120  # 3D: at most this many rows/columns of facets (matplotlib samples)


class MarkerKeywords(TypedDict):
    """Keyword arguments of `Axes.plot` and `Line2D` that style a marker."""

    marker: MarkerType
    color: ColorType
    markersize: float
    markeredgewidth: float
    path_effects: list[AbstractPathEffect]


# A black 'x' in a white halo reads on viridis' dark and light ends alike (and on white).
UNCONVERGED_STYLE: MarkerKeywords = {
    "marker": "x",
    "color": "black",
    "markersize": 5,
    "markeredgewidth": 1.2,
    "path_effects": [withStroke(linewidth=2.8, foreground="white")],
}


def color_norm(scale: Scale) -> Normalize:
    return LogNorm(scale.vmin, scale.vmax) if scale.log else Normalize(scale.vmin, scale.vmax)


def draw_plane(
    kind: Kind, panels: Sequence[Panel], scale: Scale, options: PlotOptions | None = None
) -> Figure:
    """One figure of `kind` with a panel per surface, on one shared color scale."""
    options = PlotOptions() if options is None else options
    colormap = (options.colormaps or Colormaps()).of(kind)
    count = len(panels)
    width, height = PANEL_SIZE
    figure = Figure(figsize=(width * count + 1.2, height + 0.9), dpi=DPI, layout="constrained")
    if kind == "surface3d":
        axes = [figure.add_subplot(1, count, i + 1, projection="3d") for i in range(count)]
    else:
        axes = list(figure.subplots(1, count, sharex=True, sharey=True, squeeze=False)[0])
    norm = color_norm(scale)
    draw: Callable[[Axes, Panel, Scale, Normalize, str], None] = {
        "contour": _draw_contour,
        "filled": _draw_filled,
        "heatmap": _draw_heatmap,
        "surface3d": _draw_surface3d,
    }[kind]
    for ax, panel in zip(axes, panels, strict=True):
        draw(ax, panel, scale, norm, colormap)
        if kind in ("contour", "filled") and options.path_levels is not None:
            _draw_path_levels(ax, panel, options.path_levels)
        x_label, y_label = panel.description.x_label, panel.description.y_label
        if kind == "surface3d":  # 3D axis labels run along slanted axes: a line per part
            x_label, y_label = x_label.replace(" · ", "\n"), y_label.replace(" · ", "\n")
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
    heading, panel_titles = titles(
        _scale_label(panels[0].column, scale),
        [panel.label for panel in panels],
        [panel.description.subject for panel in panels],
        [_panel_note(panel, scale) for panel in panels],
    )
    figure.suptitle(heading, fontsize=10)
    for ax, title in zip(axes, panel_titles, strict=True):
        ax.set_title(title, fontsize=8)
    _share_limits(axes, panels, kind)
    if kind == "surface3d":
        _look_at_minimum(axes, panels, scale, options.view)
    mappable = ScalarMappable(norm=norm, cmap=colormap)
    colorbar = figure.colorbar(
        mappable, ax=axes, extend=scale.extend, shrink=0.8 if kind == "surface3d" else 1.0
    )
    colorbar.set_label(_scale_label(panels[0].column, scale))
    if scale.log:  # ticks at 1, 2, 5 × 10^k read better than the levels' ratios
        colorbar.set_ticks(round_log_ticks(scale.vmin, scale.vmax).tolist())
    elif kind != "heatmap":  # ticks on contour levels, so a line's label is on the bar
        colorbar.set_ticks(scale.levels[:: math.ceil(len(scale.levels) / 12)].tolist())
    colorbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    colorbar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
    handles = _legend_handles(panels, scale)
    if handles:
        figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    return figure


# ---------------------------------------------------------------------------- the four kinds


def _draw_contour(ax: Axes, panel: Panel, scale: Scale, norm: Normalize, colormap: str) -> None:
    _draw_status(ax, panel, per_cell=True)
    if _can_contour(panel):
        x, y = _coordinates(panel)
        lines = ax.contour(
            x,
            y,
            panel.values.T,
            levels=scale.levels,
            cmap=colormap,
            norm=norm,
            linewidths=0.9,
            corner_mask=False,
        )
        # Label every other level: all twenty crowd the lines they name.
        ax.clabel(lines, np.asarray(lines.levels)[::2], fontsize=6, fmt="%.3g", inline=True)
    _draw_unconverged(ax, panel)
    draw_path(ax, panel)
    draw_runs(ax, panel)


def _draw_filled(ax: Axes, panel: Panel, scale: Scale, norm: Normalize, colormap: str) -> None:
    _draw_status(ax, panel, per_cell=True)
    if _can_contour(panel):
        x, y = _coordinates(panel)
        # corner_mask=False: a cell with any hidden corner is left out whole, and painted.
        style: dict[str, Any] = {"levels": scale.levels, "corner_mask": False}
        ax.contourf(x, y, panel.values.T, cmap=colormap, norm=norm, extend=scale.extend, **style)
        ax.contour(x, y, panel.values.T, colors="k", linewidths=0.3, alpha=0.6, **style)
    _draw_unconverged(ax, panel)
    draw_path(ax, panel)
    draw_runs(ax, panel)


def _draw_heatmap(ax: Axes, panel: Panel, scale: Scale, norm: Normalize, colormap: str) -> None:
    _draw_status(ax, panel, per_cell=False)
    # Masked points are transparent here, so the status layer beneath shows through.
    x, y = _coordinates(panel)
    x_edges, y_edges = cell_edges(x), cell_edges(y)
    _cells(ax, x_edges, y_edges, panel.values.T, cmap=colormap, norm=norm, zorder=1)
    _draw_unconverged(ax, panel)
    draw_path(ax, panel)
    draw_runs(ax, panel)


def _draw_surface3d(ax: Axes3D, panel: Panel, scale: Scale, norm: Normalize, colormap: str) -> None:
    # The reference's Axes3D(fig) draws nothing on matplotlib >= 3.4 (the axes is never added
    # to the figure); add_subplot(projection="3d"), NaN for hidden points (plot_surface leaves
    # those facets out) and explicit limits give a surface on every current version.
    x, y = _coordinates(panel)
    grid_x, grid_y = np.meshgrid(x, y, indexing="ij")  # [i, j] = (x[i], y[j]), as stored
    heights, (low, high) = surface_heights(panel, scale), height_range(scale)
    height_norm = Normalize(low, high) if scale.log else norm
    if scale.log:  # 3D axes have no log scale: draw log10 heights, label ticks with values
        ax.set_zticks(np.log10(round_log_ticks(scale.vmin, scale.vmax)))
        ax.zaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{10**value:.3g}"))
    # Orthographic: equal heights look equal anywhere in the box, and lsurf.plot.camera's
    # test of what hides the minimum is exact. The box keeps matplotlib's proportions.
    ax.set_proj_type("ortho")
    ax.set_box_aspect(BOX_ASPECT)
    samples = {"rcount": min(len(x), SURFACE_SAMPLES), "ccount": min(len(y), SURFACE_SAMPLES)}
    if panel.values.count():
        ax.plot_surface(
            grid_x,
            grid_y,
            heights,
            cmap=colormap,
            norm=height_norm,
            linewidth=0,
            antialiased=False,
            **samples,
        )
    # Hidden points as flat grey/pink patches on the floor, where the surface has holes.
    for status, color in ((NOT_COMPUTED, NOT_COMPUTED_COLOR), (NOT_FINITE, NOT_FINITE_COLOR)):
        if np.any(panel.status == status):
            # A facet needs four defined corners: widen each hidden point to its neighbours.
            hidden = np.pad(panel.status == status, 1)
            near = np.zeros_like(panel.status, bool)
            for di in range(3):
                for dj in range(3):
                    near |= hidden[di : di + near.shape[0], dj : dj + near.shape[1]]
            floor = np.where(near, low, np.nan)
            ax.plot_surface(grid_x, grid_y, floor, color=color, linewidth=0, shade=False, **samples)
    # On the surface where it is drawn, on the floor where the point is hidden.
    _draw_unconverged(ax, panel, np.where(np.isnan(heights), low, heights))
    draw_path(ax, panel, floor=low)
    draw_runs(ax, panel, floor=low)
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(y[0], y[-1])
    ax.set_zlim(low, high)
    ax.tick_params(labelsize=7)


def surface_heights(panel: Panel, scale: Scale) -> np.ndarray:
    """The 3D surface's heights: values as shown (log10 on a log scale), inside the box
    (values beyond the levels at its floor or ceiling); NaN where a point is hidden."""
    heights = panel.values.filled(np.nan)
    if scale.log:
        heights = np.log10(heights)
    return np.clip(heights, *height_range(scale))


def height_range(scale: Scale) -> tuple[float, float]:
    """The 3D box's floor and ceiling: the color range, in log10 on a log scale."""
    if scale.log:
        return float(np.log10(scale.vmin)), float(np.log10(scale.vmax))
    return scale.vmin, scale.vmax


def _look_at_minimum(
    axes: Sequence[Axes3D], panels: Sequence[Panel], scale: Scale, view: tuple[float, float] | None
) -> None:
    """One view for every 3D panel (so they compare): the one asked for, or the first from
    which each panel's lowest point is seen (lsurf.plot.camera)."""
    if view is None:
        box = Box(axes[0].get_xlim(), axes[0].get_ylim(), height_range(scale))
        surfaces = [(*_coordinates(panel), surface_heights(panel, scale)) for panel in panels]
        view = choose_view(surfaces, box)
    for ax in axes:
        ax.view_init(elev=view[0], azim=view[1])


def _draw_path_levels(ax: Axes, panel: Panel, levels: Sequence[float]) -> None:
    """Extra contour lines on a plane that carries a training path (the reference's 10, 100,
    ..., 1e8 on its trajectory plots): grey, outside the color scale, labelled."""
    if (panel.surface.trajectory is None and panel.surface.runs is None) or not _can_contour(panel):
        return
    shown = panel.values.compressed()
    drawn = [level for level in levels if shown.min() < level < shown.max()]
    if not drawn:  # contour() would warn about levels the values never cross
        return
    x, y = _coordinates(panel)
    lines = ax.contour(
        x, y, panel.values.T, levels=drawn, colors="0.35", linewidths=0.7, corner_mask=False
    )
    lines.set_gid("path_levels")
    ax.clabel(lines, fontsize=6, fmt="%.3g", inline=True)


# ---------------------------------------------------------------------------- shared pieces


def round_log_ticks(low: float, high: float) -> np.ndarray:
    """1, 2, 5 × 10^k within [low, high] (at least the two ends when the range is narrow)."""
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    ticks = np.array([m * 10.0**k for k in decades for m in (1, 2, 5)])
    ticks = ticks[(ticks >= low * (1 - 1e-9)) & (ticks <= high * (1 + 1e-9))]
    return ticks if len(ticks) >= 3 else np.geomspace(low, high, 5)


def _coordinates(panel: Panel) -> tuple[np.ndarray, np.ndarray]:
    """A plane's x and y coordinates."""
    assert panel.surface.y is not None, "planes are 2D"
    return panel.surface.x, panel.surface.y


def _can_contour(panel: Panel) -> bool:
    return panel.values.count() >= 4  # contour needs a cell; fewer points draw nothing


def _cells(
    ax: Axes, x_edges: np.ndarray, y_edges: np.ndarray, array: np.ndarray, **style: Any
) -> Artist:
    """Draw array[row = y, column = x] as cells between the given edges.

    imshow when the edges are evenly spaced (fast at 1001×1001), else pcolormesh.
    """
    if _uniform(x_edges) and _uniform(y_edges):
        extent = (x_edges[0], x_edges[-1], y_edges[0], y_edges[-1])
        return ax.imshow(
            array, origin="lower", extent=extent, aspect="auto", interpolation="nearest", **style
        )
    return ax.pcolormesh(x_edges, y_edges, array, **style)


def _uniform(coordinates: np.ndarray) -> bool:
    steps = np.diff(coordinates)
    return len(steps) == 0 or bool(np.allclose(steps, steps[0], rtol=1e-6, atol=0))


def cell_edges(coordinates: np.ndarray) -> np.ndarray:
    """Edges of cells centred on the coordinates: the midpoints, and as far again outside."""
    if len(coordinates) == 1:
        return np.array([coordinates[0] - 0.5, coordinates[0] + 0.5])
    middles = (coordinates[1:] + coordinates[:-1]) / 2
    first = 2 * coordinates[0] - middles[0]
    last = 2 * coordinates[-1] - middles[-1]
    return np.concatenate([[first], middles, [last]])


def _draw_status(ax: Axes, panel: Panel, per_cell: bool) -> None:
    """Paint hidden points grey (not computed) or pink (inf/NaN), under everything else.

    Contours (drawn with corner_mask=False) leave out every grid cell with a hidden corner,
    so for them (`per_cell`) the paint covers exactly those cells; the heatmap's cell around
    each point is painted for the heatmap. Either way no gap is left white.
    """
    if not np.any(panel.status != SHOWN):
        return
    x, y = _coordinates(panel)
    status = panel.status
    if per_cell and min(status.shape) >= 2:
        corners = (status[:-1, :-1], status[1:, :-1], status[:-1, 1:], status[1:, 1:])
        status, x_edges, y_edges = np.maximum.reduce(corners), x, y  # pink wins over grey
    else:
        x_edges, y_edges = cell_edges(x), cell_edges(y)
    colors = ListedColormap([NOT_COMPUTED_COLOR, NOT_FINITE_COLOR])
    masked = np.ma.masked_equal(status, SHOWN).T
    _cells(ax, x_edges, y_edges, masked, cmap=colors, norm=Normalize(0.5, 2.5), zorder=0)


def _draw_unconverged(ax: Axes, panel: Panel, heights: np.ndarray | None = None) -> None:
    """An 'x' on every point whose solver did not converge (at `heights` on a 3D axes)."""
    if panel.convergence is None or not panel.convergence.count:
        return
    assert panel.surface.y is not None, "planes are 2D"
    i, j = np.nonzero(panel.convergence.flagged)
    points = [panel.surface.x[i], panel.surface.y[j]]
    # 2D: above the values, under the path. 3D: mplot3d orders the surface's collections by
    # depth above any fixed zorder below theirs, so marks hidden behind a hill show anyway.
    # 2D marks are unclipped, so one on the grid's edge shows whole.
    style: dict[str, Any] = {"zorder": 3, "clip_on": False}
    if heights is not None:
        points.append(heights[i, j])
        style = {"zorder": 10}
    ax.plot(*points, linestyle="", gid="unconverged", **style, **UNCONVERGED_STYLE)


def unconverged_label(panels: Sequence[Panel]) -> str | None:
    """The legend's words for the 'x' markers, or None when no panel flags a point."""
    flagged = [panel.convergence for panel in panels if panel.convergence is not None]
    tolerances = sorted({flags.tol for flags in flagged if flags.count})
    if not tolerances:
        return None
    limit = f"{tolerances[0]:g}" if len(tolerances) == 1 else "hessian.tol"
    return f"did not converge (residual > {limit})"


def _share_limits(axes: Sequence[Axes], panels: Sequence[Panel], kind: Kind) -> None:
    """Every panel spans the union of the grids (and paths): equal distances look equal."""
    lows, highs = [], []
    for panel in panels:
        x, y = _coordinates(panel)
        if kind == "heatmap":
            (x0, x1), (y0, y1) = cell_edges(x)[[0, -1]], cell_edges(y)[[0, -1]]
        else:
            x0, x1, y0, y1 = x[0], x[-1], y[0], y[-1]
        corners = [(x0, y0), (x1, y1)]
        paths = [] if panel.surface.trajectory is None else [panel.surface.trajectory]
        if panel.surface.runs is not None:
            paths += [run.trajectory for run in panel.surface.runs.paths]
        for path in (trajectory.coordinates for trajectory in paths):
            corners += [tuple(path.min(axis=0)), tuple(path.max(axis=0))]
        lows.append(np.min(corners, axis=0))
        highs.append(np.max(corners, axis=0))
    low, high = np.min(lows, axis=0), np.max(highs, axis=0)
    for ax in axes:
        ax.set_xlim(low[0], high[0] if high[0] > low[0] else low[0] + 1)
        ax.set_ylim(low[1], high[1] if high[1] > low[1] else low[1] + 1)


def _panel_note(panel: Panel, scale: Scale) -> str:
    notes = [completeness(panel.surface)]
    invalid = int(np.sum(panel.status == NOT_FINITE))
    if invalid:  # a single pink point is invisible at 1001×1001: say it in words too
        what = "inf, NaN or ≤ 0" if scale.log else "inf or NaN"
        notes.append(f"{invalid} point{'s' if invalid > 1 else ''} {what}")
    if panel.clipped:
        notes.append(f"{panel.clipped} points above {scale.zmax:g} drawn at {scale.zmax:g}")
    notes.append(unconverged_note(panel))
    return "; ".join(note for note in notes if note)


def unconverged_note(panel: Panel) -> str:
    """'3 points did not reach tol 0.001', or '' when none is flagged."""
    if panel.convergence is None or not panel.convergence.count:
        return ""
    count = panel.convergence.count
    return f"{count} point{'s' if count > 1 else ''} did not reach tol {panel.convergence.tol:g}"


def _scale_label(column: Column, scale: Scale) -> str:
    label = column.label
    if scale.log:
        label += " (log scale)"
    if scale.zmax is not None:
        label += f", clipped at {scale.zmax:g}"
    return label


def _legend_handles(panels: Sequence[Panel], scale: Scale) -> list[Artist]:
    handles: list[Artist] = []
    if any(np.any(panel.status == NOT_COMPUTED) for panel in panels):
        handles.append(Patch(color=NOT_COMPUTED_COLOR, label="not computed"))
    if any(np.any(panel.status == NOT_FINITE) for panel in panels):
        label = "inf, NaN or ≤ 0 (log scale)" if scale.log else "inf or NaN"
        handles.append(Patch(color=NOT_FINITE_COLOR, label=label))
    flag_label = unconverged_label(panels)
    if flag_label is not None:
        handles.append(Line2D([], [], linestyle="", label=flag_label, **UNCONVERGED_STYLE))
    single = any(panel.surface.trajectory is not None for panel in panels)
    if single:
        handles.append(
            Line2D([], [], color=PATH_COLOR, marker="o", markersize=3, label="optimizer path")
        )
    # Several runs: one entry per label, in the order of the first panel that has it.
    labels: list[str] = []
    for panel in panels:
        if panel.surface.runs is not None:
            labels += [run.label for run in panel.surface.runs.paths if run.label not in labels]
    for index, label in enumerate(labels):
        color, marker = run_style(index)
        handles.append(Line2D([], [], color=color, marker=marker, markersize=3, label=label))
    if single or labels:
        handles += [
            Line2D([], [], color="white", marker="o", markeredgecolor="k", ls="", label="start"),
            Line2D(
                [], [], color="white", marker="*", markeredgecolor="k", ls="", ms=10, label="end"
            ),
        ]
    return handles
