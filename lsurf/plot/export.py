"""Exports for other viewers: a ParaView file (meshio, VTK XML .vtu) and an interactive HTML page.

Input: a `Panel`, its `Scale` and the `PlotOptions`. Output: files written to the paths given.

VTK: an unstructured grid of quads, one point per shown grid point at (x, y, height) where
the height is the displayed value (clipped at --zmax; with --log, log10(value + --log-offset)),
carried again as point data, and each quad's mean height as cell data (the reference's
"averaged zvalue"); hidden points (not computed, inf/NaN) are left out with every quad
touching them, so holes stay holes. .vtu (XML, zlib-compressed) is VTK's own format and opens
in every ParaView version; meshio writes it with numpy alone. A curvature panel adds the point
data `unconverged` (1 where the solver did not reach the stored tol), to threshold on.

`--interp N` (the reference h52vtp.py's interp) resamples the heights onto N×N evenly spaced
points with bicubic convolution (Keys' cubic, a = -1/2; numpy only, lsurf does not depend on
scipy): it passes through every grid point and reproduces linear and quadratic surfaces
exactly. The heights are resampled after clipping and the log, so a log surface has no
undershoot below its lowest value; a hidden point hides every resampled point whose 4×4
neighbourhood it is in.

h52vtp.py's other options: surf_name is --metric, zmax --zmax, log --log (its ln(z + 0.1)
is --log-offset 0.1 up to the factor ln 10, which `--preset paper` sets); show_polys is
always on (quads), show_points is ParaView's "Points" representation of the same file.

HTML: plotly with its JavaScript embedded, so the page opens offline. Hidden points are NaN,
which plotly leaves as gaps. Large grids are thinned to at most HTML_SAMPLES per axis (the
title says so), since a browser turns a million-vertex surface slow.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lsurf.files.labels import completeness
from lsurf.metrics import ACCURACY
from lsurf.plot.curves import (
    ACCURACY_COLOR,
    LOSS_COLOR,
    axis_label,
    curve_columns,
    primary_metric,
)
from lsurf.plot.options import PlotOptions
from lsurf.plot.path import run_style
from lsurf.plot.view import SHOWN, Panel, Scale, mask_hidden

if TYPE_CHECKING:
    import plotly.graph_objects as go

HTML_SAMPLES = 501


def display_heights(panel: Panel, scale: Scale) -> np.ndarray:
    """The values as drawn (clipped; log10 on a log scale); NaN where hidden."""
    heights = panel.values.filled(np.nan)
    return np.log10(heights) if scale.log else heights


def height_name(panel: Panel, scale: Scale, log_offset: float = 0.0) -> str:
    """'train_loss', 'log10_train_loss', or 'log10_train_loss_plus_0.1' with an offset."""
    if not scale.log:
        return panel.metric
    return f"log10_{panel.metric}" + (f"_plus_{log_offset:g}" if log_offset else "")


def write_vtk(panel: Panel, scale: Scale, path: Path, options: PlotOptions | None = None) -> None:
    import meshio

    options = PlotOptions() if options is None else options
    x, y = panel.surface.x, panel.surface.y
    assert y is not None, "VTK export is for 2D surfaces; the caller checks"
    heights = vtk_heights(panel, scale, options.log_offset or 0.0)
    stored = panel.surface.metrics[panel.metric]
    flags = None if panel.convergence is None else panel.convergence.flagged
    if options.interp is not None:
        fine_x = np.linspace(x[0], x[-1], options.interp)
        fine_y = np.linspace(y[0], y[-1], options.interp)
        heights = upsample(x, y, heights, fine_x, fine_y)
        if scale.log or panel.clipped:  # the stored values, resampled the same way
            stored = upsample(x, y, np.where(panel.status == SHOWN, stored, np.nan), fine_x, fine_y)
        if flags is not None:  # each new point takes the flag of its nearest grid point
            flags = flags[np.ix_(_nearest(x, fine_x), _nearest(y, fine_y))]
        x, y = fine_x, fine_y
    shown = ~np.isnan(heights)
    grid_x, grid_y = np.meshgrid(x, y, indexing="ij")  # [i, j] = (x[i], y[j]), as stored
    points = np.stack([grid_x[shown], grid_y[shown], heights[shown]], axis=1)
    # Number the shown points in row-major order; -1 marks hidden ones.
    numbers = np.full(heights.shape, -1, np.int64)
    numbers[shown] = np.arange(int(shown.sum()))
    corners = np.stack(
        [numbers[:-1, :-1], numbers[1:, :-1], numbers[1:, 1:], numbers[:-1, 1:]], axis=-1
    ).reshape(-1, 4)  # counter-clockwise in (x, y)
    quads = corners[np.all(corners >= 0, axis=1)]
    name = height_name(panel, scale, options.log_offset or 0.0)
    point_data = {name: heights[shown]}
    if scale.log or panel.clipped:  # the stored values too, when the drawn ones differ
        point_data[f"{panel.metric}_stored"] = stored[shown]
    if flags is not None:
        point_data["unconverged"] = flags[shown].astype(np.uint8)
    # Each quad's mean height, as the reference's "averaged zvalue": flat-shaded cells.
    cell_data = {f"{name}_mean": [points[quads, 2].mean(axis=1)]}
    mesh = meshio.Mesh(points, [("quad", quads)], point_data=point_data, cell_data=cell_data)
    meshio.write(path, mesh, file_format="vtu")


def vtk_heights(panel: Panel, scale: Scale, log_offset: float) -> np.ndarray:
    """The VTK heights: values clipped at zmax, then log10(value + log_offset) on a log
    scale; NaN where hidden (and where value + log_offset is not positive)."""
    if not scale.log:
        return panel.values.filled(np.nan)
    stored = panel.surface.metrics[panel.metric]
    # Values <= 0 that the offset lifts above 0 can be shown; the panel hid them.
    values, _, _ = mask_hidden(stored + log_offset, panel.surface.done, True, None)
    heights = values.filled(np.nan)
    if scale.zmax is not None:
        heights = np.minimum(heights, scale.zmax + log_offset)
    return np.log10(heights)


def upsample(
    x: np.ndarray, y: np.ndarray, values: np.ndarray, fine_x: np.ndarray, fine_y: np.ndarray
) -> np.ndarray:
    """values[i, j] at (x[i], y[j]) resampled at (fine_x[k], fine_y[l]), bicubic: one cubic
    convolution pass along each axis. NaN spreads to every point whose stencil it is in."""
    along_x = _cubic_pass(values, x, fine_x)  # (len(fine_x), len(y))
    return _cubic_pass(along_x.T, y, fine_y).T


def _cubic_pass(values: np.ndarray, nodes: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution along axis 0 of `values` (nodes evenly spaced or nearly: the
    position between two nodes is measured in grid steps)."""
    count = len(nodes)
    if count == 1:
        return np.repeat(values, len(at), axis=0)
    if count == 2:  # no curvature to fit: straight lines (cubic through 2 points is linear)
        ghosts = 2 * values[:1] - values[1:2], 2 * values[1:2] - values[:1]
    else:
        # Keys' end conditions: ghost nodes on the quadratic through the last three nodes,
        # so quadratics stay exact up to the edges.
        ghosts = (
            3 * values[0:1] - 3 * values[1:2] + values[2:3],
            3 * values[-1:] - 3 * values[-2:-1] + values[-3:-2],
        )
    padded = np.concatenate([ghosts[0], values, ghosts[1]])  # padded[k + 1] = values[k]
    position = np.interp(at, nodes, np.arange(count))
    left = np.clip(np.floor(position).astype(int), 0, count - 2)
    weights = _keys_weights(position - left)  # (len(at), 4): nodes left - 1 ... left + 2
    stencil = np.stack([padded[left + offset] for offset in range(4)])  # (4, len(at), ...)
    shape = (4, len(at)) + (1,) * (values.ndim - 1)
    return np.sum(weights.T.reshape(shape) * stencil, axis=0)


def _keys_weights(fraction: np.ndarray) -> np.ndarray:
    """The four cubic convolution weights (a = -1/2) at `fraction` ∈ [0, 1] past a node."""
    t = fraction
    return np.stack(
        [
            (-(t**3) + 2 * t**2 - t) / 2,
            (3 * t**3 - 5 * t**2 + 2) / 2,
            (-3 * t**3 + 4 * t**2 + t) / 2,
            (t**3 - t**2) / 2,
        ],
        axis=1,
    )


def _nearest(nodes: np.ndarray, at: np.ndarray) -> np.ndarray:
    return np.rint(np.interp(at, nodes, np.arange(len(nodes)))).astype(int)


def write_surface_html(panel: Panel, scale: Scale, path: Path) -> None:
    surface_html_figure(panel, scale).write_html(path, include_plotlyjs=True, full_html=True)


def surface_html_figure(panel: Panel, scale: Scale) -> go.Figure:
    """The interactive 3D surface (plotly), as the HTML export and `lsurf.plot_html` show it."""
    import plotly.graph_objects as go

    x, y = panel.surface.x, panel.surface.y
    assert y is not None, "the 3D page is for 2D surfaces; 1D files get write_curve_html"
    stride_x = math.ceil(len(x) / HTML_SAMPLES)
    stride_y = math.ceil(len(y) / HTML_SAMPLES)
    heights = display_heights(panel, scale)[::stride_x, ::stride_y]
    low, high = (
        (np.log10(scale.vmin), np.log10(scale.vmax)) if scale.log else (scale.vmin, scale.vmax)
    )
    name = panel.column.label + (" (log10)" if scale.log else "")
    notes = [panel.description.subject, completeness(panel.surface)]
    if stride_x > 1 or stride_y > 1:
        notes.append(f"{heights.shape[0]}×{heights.shape[1]} of {len(x)}×{len(y)} points shown")
    if panel.clipped:
        notes.append(f"{panel.clipped} points above {scale.zmax:g} drawn at {scale.zmax:g}")
    figure = go.Figure(
        go.Surface(
            x=x[::stride_x],
            y=y[::stride_y],
            z=heights.T.astype(np.float32),  # plotly wants z[row = y][column = x]
            cmin=low,
            cmax=high,
            colorscale="Viridis",
            colorbar={"title": {"text": name}},
        )
    )
    _add_runs(figure, panel, low)
    figure.update_layout(
        title={"text": "<br>".join(note for note in notes if note), "font": {"size": 13}},
        scene={
            "xaxis": {"title": {"text": panel.description.x_label}},
            "yaxis": {"title": {"text": panel.description.y_label}},
            "zaxis": {"title": {"text": name}, "range": [low, high]},
        },
    )
    return figure


def _add_runs(figure: Any, panel: Panel, floor: float) -> None:
    """The runs of directions.trajectories on the floor of the 3D page (z = the scale's
    bottom), one named trace each in the figures' colours and markers, so the legend lists
    them and a click hides one; the start and end named on hover."""
    import plotly.graph_objects as go

    runs = panel.surface.runs
    if runs is None:
        return
    # plotly's 3D markers are few: circle, square, diamond, cross, x (and open variants)
    markers = ("circle", "square", "diamond", "cross", "x")
    for index, run in enumerate(runs.paths):
        color, _ = run_style(index)
        a, b = run.trajectory.coordinates[:, 0], run.trajectory.coordinates[:, 1]
        epochs = [f"{run.label} epoch {epoch}" for epoch in run.trajectory.epochs]
        epochs[0] += " (start)"
        epochs[-1] += " (end)"
        figure.add_trace(
            go.Scatter3d(
                x=a,
                y=b,
                z=np.full(len(a), floor),
                mode="lines+markers",
                name=run.label,
                text=epochs,
                hoverinfo="text",
                line={"color": color, "width": 4},
                marker={"color": color, "size": 3, "symbol": markers[index % len(markers)]},
            )
        )


def write_curve_html(panel: Panel, options: PlotOptions, path: Path) -> None:
    curve_html_figure(panel, options).write_html(path, include_plotlyjs=True, full_html=True)


def curve_html_figure(panel: Panel, options: PlotOptions) -> go.Figure:
    """A 1D surface's loss (left axis) and accuracy (right), train solid and test dashed:
    the columns of the PNG curve (`curves.curve_columns`)."""
    import plotly.graph_objects as go

    surface = panel.surface
    figure = go.Figure()
    pairs = curve_columns(panel).values()
    traces = [(left, True) for left, _ in pairs]
    traces += [(accuracy, False) for _, accuracy in pairs if accuracy is not None]
    for column, on_left in traces:
        values, _, _ = mask_hidden(
            surface.metrics[column.name],
            surface.done,
            options.log and on_left,
            options.zmax if on_left else None,
        )
        figure.add_trace(
            go.Scatter(
                x=surface.x,
                y=values.filled(np.nan),
                name=column.label,
                yaxis="y" if on_left else "y2",
                line={
                    "color": LOSS_COLOR if on_left else ACCURACY_COLOR,
                    "dash": "solid" if column.split == "train" else "dash",
                },
            )
        )
    left = primary_metric(panel)
    notes = [panel.description.subject, completeness(surface)]
    figure.update_layout(
        title={"text": "<br>".join(note for note in notes if note), "font": {"size": 13}},
        xaxis={"title": {"text": panel.description.x_label}},
        yaxis={"title": {"text": axis_label(left)}, "type": "log" if options.log else "linear"},
        yaxis2={
            "title": {"text": axis_label(ACCURACY)},
            "overlaying": "y",
            "side": "right",
            "range": [0, 100],
        },
    )
    return figure
