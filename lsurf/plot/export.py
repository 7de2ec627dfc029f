"""Exports for other viewers: a ParaView file (meshio, VTK XML .vtu) and an interactive HTML page.

Input: a `Panel` and its `Scale`. Output: files written to the paths given.

VTK: an unstructured grid of quads, one point per shown grid point at (x, y, height) where
the height is the displayed value (clipped at --zmax, log10 with --log), carried again as
point data; hidden points (not computed, inf/NaN) are left out with every quad touching
them, so holes stay holes. .vtu (XML, zlib-compressed) is VTK's own format and opens in
every ParaView version; meshio writes it with numpy alone. A curvature panel adds the point
data `unconverged` (1 where the solver did not reach the stored tol), to threshold on.

HTML: plotly with its JavaScript embedded, so the page opens offline. Hidden points are NaN,
which plotly leaves as gaps. Large grids are thinned to at most HTML_SAMPLES per axis (the
title says so), since a browser turns a million-vertex surface slow.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lsurf.metrics import ACCURACY
from lsurf.plot.curves import (
    ACCURACY_COLOR,
    LOSS_COLOR,
    axis_label,
    curve_columns,
    primary_metric,
)
from lsurf.plot.labels import completeness
from lsurf.plot.options import PlotOptions
from lsurf.plot.view import Panel, Scale, mask_hidden

HTML_SAMPLES = 501


def display_heights(panel: Panel, scale: Scale) -> np.ndarray:
    """The values as drawn (clipped; log10 on a log scale); NaN where hidden."""
    heights = panel.values.filled(np.nan)
    return np.log10(heights) if scale.log else heights


def height_name(panel: Panel, scale: Scale) -> str:
    return f"log10_{panel.metric}" if scale.log else panel.metric


def write_vtk(panel: Panel, scale: Scale, path: Path) -> None:
    import meshio

    x, y = panel.surface.x, panel.surface.y
    assert y is not None, "VTK export is for 2D surfaces; the caller checks"
    heights = display_heights(panel, scale)
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
    point_data = {height_name(panel, scale): heights[shown]}
    if scale.log or panel.clipped:  # the stored values too, when the drawn ones differ
        point_data[f"{panel.metric}_stored"] = panel.surface.metrics[panel.metric][shown]
    if panel.convergence is not None:
        point_data["unconverged"] = panel.convergence.flagged[shown].astype(np.uint8)
    mesh = meshio.Mesh(points, [("quad", quads)], point_data=point_data)
    meshio.write(path, mesh, file_format="vtu")


def write_surface_html(panel: Panel, scale: Scale, path: Path) -> None:
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
    figure.update_layout(
        title={"text": "<br>".join(note for note in notes if note), "font": {"size": 13}},
        scene={
            "xaxis": {"title": {"text": panel.description.x_label}},
            "yaxis": {"title": {"text": panel.description.y_label}},
            "zaxis": {"title": {"text": name}, "range": [low, high]},
        },
    )
    figure.write_html(path, include_plotlyjs=True, full_html=True)


def write_curve_html(panel: Panel, options: PlotOptions, path: Path) -> None:
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
    figure.write_html(path, include_plotlyjs=True, full_html=True)
