"""`--preset paper`: the defaults of the reference's plotting scripts, so figures look like
the paper's (Li et al. 2018; tomgoldstein/loss-landscape's plot_2D.py, plot_1D.py, h52vtp.py).

Input: `PlotOptions` as parsed and the metric the figures draw. Output: the same options with
every field the preset sets and the user left unset (None) filled in; a flag given
explicitly always wins.

What the paper preset sets, and where each value comes from:
- contour levels 0.1, 0.6, ..., 9.6 (plot_2D.py's vmin 0.1, vmax 10, vlevel 0.5): a fixed
  scale, so every figure drawn with it compares with every other;
- on planes that carry a training path, extra contour lines at 10, 100, ..., 1e8
  (plot_contour_trajectory's log-spaced levels: the walls far from the path are high);
- 1D: the loss axis from 0 to 5 (plot_1D.py's loss_max), accuracy from 0 to 100 (lsurf's
  own default already); the |λmin/λmax| curve from 0 to 1 (plot_1d_eig_ratio's ymax);
- colormaps: summer for contour lines and filled contours, viridis for the heatmap,
  coolwarm for the 3D surface (plot_2D.py's choices);
- VTK with --log: heights log10(value + 0.1) (h52vtp.py's log offset; its natural log
  differs from log10 by a constant factor of 2.303, ParaView's Scale undoes it).

Levels and axis ranges are set for loss columns only (the reference applies its 0.1 to 10
to any column, which fits no accuracy and no eigenvalue); the colormaps for every column.
The 3D view is left to lsurf (one that shows the minimum; the reference's matplotlib default
of 30° elevation, -60° azimuth is the first it tries).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict

import numpy as np

from lsurf.files.curvature import EIG_RATIO
from lsurf.metrics import LOSS, Metric
from lsurf.plot.options import Colormaps, PlotOptions

PAPER_LEVELS = tuple(float(level) for level in 0.1 + 0.5 * np.arange(20))  # 0.1 ... 9.6
PAPER_PATH_LEVELS = tuple(float(level) for level in np.logspace(1, 8, num=8))  # 10 ... 1e8
PAPER_LOSS_MAX = 5.0
PAPER_RATIO_MAX = 1.0
PAPER_COLORMAPS = Colormaps(
    contour="summer", filled="summer", heatmap="viridis", surface3d="coolwarm"
)
PAPER_LOG_OFFSET = 0.1


class _Chosen(TypedDict, total=False):
    """The `PlotOptions` fields a preset sets."""

    colormaps: Colormaps
    log_offset: float
    levels: tuple[float, ...]
    path_levels: tuple[float, ...]
    ymax: float


def apply_preset(options: PlotOptions, metric: Metric, is_2d: bool) -> PlotOptions:
    """`options` with the preset's values wherever no flag set one; unchanged without one.

    `metric`: what the figures' value axis shows (a 1D figure's left axis); `is_2d`: planes
    get levels, curves an axis range.
    """
    if options.preset is None:
        return options
    assert options.preset == "paper", options.preset  # Literal: the parser checked it
    chosen: _Chosen = {
        "colormaps": PAPER_COLORMAPS,
        "log_offset": PAPER_LOG_OFFSET,
    }
    if metric.name == LOSS.name and is_2d:
        chosen |= {"levels": PAPER_LEVELS, "path_levels": PAPER_PATH_LEVELS}
    elif metric.name == LOSS.name:
        chosen["ymax"] = PAPER_LOSS_MAX
    elif metric.name == EIG_RATIO.name and not is_2d:
        chosen["ymax"] = PAPER_RATIO_MAX
    unset: dict[str, Any] = {
        name: value for name, value in chosen.items() if getattr(options, name) is None
    }
    return dataclasses.replace(options, **unset)
