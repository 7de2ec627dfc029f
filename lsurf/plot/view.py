"""What is shown of each surface, and the one color scale that all compared panels share.

Input: surface files and `PlotOptions`. Output: one `Panel` per file (the metric's display
values as a masked array, plus a status array saying why each hidden point is hidden) and a
`Scale` (contour levels = color range) computed over all panels together, so side-by-side
figures compare sharpness honestly (same colors for the same loss, same contour levels).

Hidden points are never filled in: a point not yet computed, a computed inf or NaN, and on a
log scale a value <= 0 are masked, and the figures paint them in a "not shown" color.

Curvature (lsurf.files.curvature): a file holding λmax and λmin also offers the derived
`eig_ratio` (|λmin/λmax|, drawn on the reference's 0 to 0.5 scale unless --levels says
otherwise), and a panel of a solver's column knows which of its points did not converge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from lsurf.errors import LsurfError
from lsurf.files.curvature import (
    RATIO_LEVELS,
    Convergence,
    default_range,
    residuals_of,
    unconverged,
    with_ratio,
)
from lsurf.files.labels import Description, describe
from lsurf.files.surface import Surface, default_metric, read_surface
from lsurf.metrics import Column
from lsurf.plot.options import PlotOptions

# Status codes of the points of a panel (int8 array of the grid's shape).
SHOWN, NOT_COMPUTED, NOT_FINITE = 0, 1, 2

Extend = Literal["neither", "min", "max", "both"]


@dataclass(frozen=True, eq=False)
class Panel:
    """One surface file's metric, ready to draw."""

    label: str  # names the file in comparisons ('surface', or 'run_a/surface' when stems clash)
    surface: Surface
    metric: str
    values: np.ma.MaskedArray  # (nx,) or (nx, ny): stored values, clipped at zmax; masked = hidden
    status: np.ndarray  # int8, the grid's shape: SHOWN, NOT_COMPUTED or NOT_FINITE
    clipped: int  # how many shown points were above zmax and are drawn at zmax
    description: Description
    # A solver's column (λmax, λmin, their ratio...): the points whose residual exceeds the
    # stored tol, drawn flagged. None: nothing to judge (not a solver's column, no tol stored).
    convergence: Convergence | None = None

    @property
    def is_2d(self) -> bool:
        return self.surface.y is not None

    @property
    def column(self) -> Column:
        """What `metric` holds: its metric row (label, unit, direction) and split."""
        return self.surface.columns[self.metric]


@dataclass(frozen=True, eq=False)
class Scale:
    """The color range and contour levels shared by every panel of a figure."""

    levels: np.ndarray  # ascending; levels[0] and levels[-1] are the color range's ends
    log: bool
    extend: Extend  # which ends have data beyond the levels (colorbar arrows, contourf)
    zmax: float | None

    @property
    def vmin(self) -> float:
        return float(self.levels[0])

    @property
    def vmax(self) -> float:
        return float(self.levels[-1])


def load_panels(paths: Sequence[Path], options: PlotOptions) -> list[Panel]:
    """Read every surface and prepare its metric; all must be 1D or all 2D."""
    return panels_of([read_surface(path) for path in paths], panel_labels(paths), options)


def panels_of(
    surfaces: Sequence[Surface], labels: Sequence[str], options: PlotOptions
) -> list[Panel]:
    """The surfaces' panels, labelled; all must be 1D or all 2D."""
    surfaces = [with_ratio(surface) for surface in surfaces]
    metric = options.metric or default_metric(surfaces[0])
    for surface in surfaces:
        if metric not in surface.metrics:
            available = ", ".join(sorted(surface.metrics))
            raise LsurfError(f"{surface.path} has no metric {metric!r}; available: {available}")
    if len({surface.y is None for surface in surfaces}) > 1:
        raise LsurfError("cannot compare 1D curves with 2D surfaces; plot them separately")
    return [
        _panel(surface, metric, label, options)
        for surface, label in zip(surfaces, labels, strict=True)
    ]


def panel_labels(paths: Sequence[Path]) -> list[str]:
    """File stems, or 'folder/stem' where two stems are equal (run_a/surface, run_b/surface)."""
    labels = [path.stem for path in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{path.resolve().parent.name}/{path.stem}" for path in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{index + 1}:{label}" for index, label in enumerate(labels)]
    return labels


def _panel(surface: Surface, metric: str, label: str, options: PlotOptions) -> Panel:
    values, status, clipped = mask_hidden(
        surface.metrics[metric], surface.done, options.log, options.zmax
    )
    convergence = unconverged(surface, residuals_of(surface, metric))
    return Panel(label, surface, metric, values, status, clipped, describe(surface), convergence)


def mask_hidden(
    stored: np.ndarray, done: np.ndarray, log: bool, zmax: float | None
) -> tuple[np.ma.MaskedArray, np.ndarray, int]:
    """Mask what cannot be shown and clip at zmax: (values, status, number clipped)."""
    done = done.astype(bool)
    finite = np.isfinite(stored)
    if log:
        with np.errstate(invalid="ignore"):
            finite &= stored > 0  # a log scale cannot place 0 or negative values
    status = np.full(stored.shape, SHOWN, np.int8)
    status[~done] = NOT_COMPUTED
    status[done & ~finite] = NOT_FINITE
    shown = status == SHOWN
    display = np.where(shown, stored, np.nan)
    clipped = 0
    if zmax is not None:
        above = shown & (display > zmax)
        clipped = int(above.sum())
        display[above] = zmax
    return np.ma.masked_array(display, mask=~shown), status, clipped


def shared_scale(panels: Sequence[Panel], options: PlotOptions) -> Scale:
    """One scale for all panels: the given levels, the metric's own range (the ratio's 0 to
    0.5, on a linear scale), or levels spanning every shown value."""
    shown = np.concatenate([panel.values.compressed() for panel in panels])
    low = float(shown.min()) if shown.size else None
    high = float(shown.max()) if shown.size else None
    fixed = default_range(panels[0].column.metric)
    if options.levels is not None:
        levels = np.asarray(options.levels, dtype=np.float64)
    elif fixed is not None and not options.log:  # a log scale cannot start at 0
        levels = np.linspace(*fixed, RATIO_LEVELS)
    else:
        levels = _automatic_levels(low, high, options.log)
    below = low is not None and low < levels[0]
    above = high is not None and high > levels[-1]
    extends: dict[tuple[bool, bool], Extend] = {
        (False, False): "neither",
        (True, False): "min",
        (False, True): "max",
        (True, True): "both",
    }
    return Scale(levels, options.log, extends[(below, above)], options.zmax)


def _automatic_levels(low: float | None, high: float | None, log: bool) -> np.ndarray:
    """About 20 levels over [low, high]: round numbers on a linear scale, even ratios on log."""
    from matplotlib.ticker import MaxNLocator

    if low is None or high is None:  # nothing computed yet: any range, the panel is all grey
        return np.geomspace(1.0, 10.0, 11) if log else np.linspace(0.0, 1.0, 11)
    if log:
        if high <= low * (1 + 1e-9):  # one value: widen it so the color range is not empty
            low, high = low / 1.1, high * 1.1
        return np.geomspace(low, high, 21)
    if high - low <= 1e-12 * max(abs(low), 1.0):
        pad = 0.05 * max(abs(low), 1.0)
        low, high = low - pad, high + pad
    # Round levels (0.5, 1, 1.5, ...) label well; the locator's ends cover [low, high].
    levels = MaxNLocator(nbins=20, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
    return np.asarray(levels, dtype=np.float64)
