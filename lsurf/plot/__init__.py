"""Figures and exports of surface files: what `lsurf plot` does.

Input: one or more surface files (read without torch or MPI, without locking, so a file a
sweep is still writing can be drawn) and `PlotOptions`. Output: the files written, in order.

- 2D: contour lines with labelled levels, filled contours, a heatmap and a 3D surface; a
  PCA sweep's optimizer path is drawn over the 2D kinds, axes labelled with the explained
  variance. 1D: loss and accuracy on twin axes, train solid, test dashed.
- Several files: one figure per kind with the panels side by side on ONE color scale and the
  SAME contour levels (1D: the same y-limits), so sharpness compares honestly.
  `--compare seeds`: one checkpoint along several random seeds (checked: same checkpoint,
  same grid, distinct seeds), panels named 'seed N', 1D curves overlaid on one axes.
- `--preset paper`: the reference scripts' levels, axis ranges and colormaps (preset).
- Points not computed, inf and NaN are masked and painted as such, never drawn as values.
- Curvature: max_eig and min_eig plot like any column; `--metric eig_ratio` draws the
  reference's |λmin/λmax| map (viridis, 0 to 0.5 unless --levels); points where the solver
  did not reach the stored tol are marked with an 'x'.
- `--format vtk` / `html`: a ParaView .vtu and a self-contained interactive 3D page.

`lsurf.plot(surface, kind=...)` returns the matplotlib figure and `lsurf.plot_html(...)` the
plotly one, for notebooks (figures): the same drawing functions, no file unless asked.

Modules: options (flags → PlotOptions), preset (the paper's defaults), view (masking, the
shared scale), labels (words from the stored config), curvature (the ratio, the solver's
settings and convergence), seeds (the seed comparison's checks), planes (2D figures), camera
(the 3D view), path (the optimizer path on them), curves (1D figures), export (VTK, HTML),
figures (the figures returned to Python callers).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsurf.atomic import atomic_path
from lsurf.errors import LsurfError
from lsurf.metrics import LOSS
from lsurf.plot.options import (
    FIGURE_FORMATS,
    KINDS_1D,
    KINDS_2D,
    Kind,
    PlotOptions,
    parse_levels,
    parse_options,
)
from lsurf.plot.view import Panel, Scale, load_panels, shared_scale

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

    from lsurf.plot.figures import SurfaceLike

__all__ = [
    "PlotOptions",
    "parse_levels",
    "parse_options",
    "plot_any_files",
    "plot_files",
    "plot_html",
]

# Above three files, names like a_vs_b_vs_c_vs_d get unwieldy; the first one and a count say it.
_MAX_NAMED = 3


def plot_any_files(paths: list[Path], options: PlotOptions) -> list[Path]:
    """What `lsurf plot` draws for these files, whatever lsurf wrote them: connect paths,
    sharpness measures, a run's captures, a Hessian analysis, else surfaces; the paths written.
    """
    from lsurf.files.captures import is_captures_path
    from lsurf.files.connect import is_connect_path
    from lsurf.files.hessian import is_hessian_file
    from lsurf.files.sharpness import is_sharpness_path

    if any(is_connect_path(path) for path in paths):
        from lsurf.plot.connect import plot_connect_files

        return plot_connect_files(paths, options)
    if any(is_sharpness_path(path) for path in paths):
        from lsurf.plot.sharpness import plot_sharpness_files

        return plot_sharpness_files(paths, options)
    if any(is_captures_path(path) for path in paths):
        from lsurf.plot.captures import plot_capture_files

        return plot_capture_files(paths, options)
    if any(is_hessian_file(path) for path in paths):
        from lsurf.plot.hessian import plot_hessian_files

        return plot_hessian_files(paths, options)
    return plot_files(paths, options)


@dataclass(frozen=True, eq=False)
class Prepared:
    """Panels ready to draw: what `lsurf plot` and `lsurf.plot(...)` both start from."""

    panels: list[Panel]
    file_labels: list[str]  # the files' names (seed panels are titled by their seed instead)
    kinds: tuple[Kind, ...]
    scale: Scale | None  # None: 1D
    options: PlotOptions  # with the preset applied
    seeds: bool


def prepare(panels: list[Panel], options: PlotOptions) -> Prepared:
    """Check the options against the panels' dimension, apply the preset, share the scale."""
    from lsurf.plot.curves import primary_metric
    from lsurf.plot.preset import apply_preset
    from lsurf.plot.seeds import label_by_seed

    is_2d = panels[0].is_2d
    kinds = _kinds(panels, options)
    _check_dimension(is_2d, options)
    # Exports and figure names keep the files' names; seed panels are titled by their seed.
    file_labels = [panel.label for panel in panels]
    seeds = options.compare == "seeds"
    if seeds:
        panels = label_by_seed(panels)
    left = panels[0].column.metric if is_2d else primary_metric(panels[0])
    options = apply_preset(options, left, is_2d)
    scale = shared_scale(panels, options) if is_2d else None
    return Prepared(panels, file_labels, kinds, scale, options, seeds)


def draw_figure(kind: Kind, prepared: Prepared) -> Figure:
    """The one matplotlib figure of `kind` (the files' panels side by side)."""
    from lsurf.plot.curves import draw_curves, draw_overlaid_curves
    from lsurf.plot.planes import draw_plane

    if prepared.scale is not None:
        return draw_plane(kind, prepared.panels, prepared.scale, prepared.options)
    if prepared.seeds:
        return draw_overlaid_curves(prepared.panels, prepared.options)
    return draw_curves(prepared.panels, prepared.options)


def plot_files(paths: Sequence[Path], options: PlotOptions) -> list[Path]:
    """Draw the surfaces (side by side when several) and return the paths written."""
    from lsurf.plot.curves import primary_metric
    from lsurf.plot.export import write_curve_html, write_surface_html, write_vtk

    prepared = prepare(load_panels(paths, options), options)
    panels, scale, options = prepared.panels, prepared.scale, prepared.options
    is_2d = scale is not None
    left = panels[0].column.metric if is_2d else primary_metric(panels[0])
    out = options.out if options.out is not None else paths[0].parent
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_log" if options.log else ""
    # 1D figures hold loss and accuracy; they name a metric only when it replaces the loss.
    named = is_2d or left.name != LOSS.name
    metric = f"_{panels[0].metric}" if named else ""
    seeds = "_seeds" if prepared.seeds else ""
    base = f"{_joined_name(prepared.file_labels)}{seeds}{metric}{suffix}"

    written: list[Path] = []
    figure_formats = [name for name in options.formats if name in FIGURE_FORMATS]
    for kind in prepared.kinds if figure_formats else ():
        figure = draw_figure(kind, prepared)
        for name in figure_formats:
            path = out / f"{base}_{kind}.{name}"
            with atomic_path(path) as temporary:
                figure.savefig(temporary, format=name)
            written.append(path)
    for panel, label in zip(panels, prepared.file_labels, strict=True):  # one export per file
        own = f"{file_slug(label)}{metric}{suffix}"
        if "vtk" in options.formats and scale is not None:
            path = out / f"{own}.vtu"
            with atomic_path(path) as temporary:
                write_vtk(panel, scale, temporary, options)
            written.append(path)
        if "html" in options.formats:
            path = out / (f"{own}_curve.html" if scale is None else f"{own}.html")
            with atomic_path(path) as temporary:
                if scale is None:
                    write_curve_html(panel, options, temporary)
                else:
                    write_surface_html(panel, scale, temporary)
            written.append(path)
    return written


def _check_dimension(is_2d: bool, options: PlotOptions) -> None:
    """Refuse the flags that shape only the other dimension's figures (explicit ones: the
    preset sets each for the dimension it fits)."""
    if not is_2d:
        for flag, value in (("--levels", options.levels), ("--path-levels", options.path_levels)):
            if value is not None:
                raise LsurfError(f"{flag} sets contour levels of 2D surfaces; these files are 1D")
        if "vtk" in options.formats:
            raise LsurfError("--format vtk exports 2D surfaces; these files are 1D (try html)")
        if options.view is not None:
            raise LsurfError("--view sets the 3D surface's view; these files are 1D")
    elif options.ymax is not None:
        raise LsurfError(
            "--ymax sets the loss axis of 1D curves; for 2D surfaces use --zmax or --levels"
        )


def _kinds(panels: Sequence[Panel], options: PlotOptions) -> tuple[Kind, ...]:
    """The figure kinds to draw: as asked, or the standard set for the files' dimension."""
    if not panels[0].is_2d:
        if options.kinds is not None and set(options.kinds) - set(KINDS_1D):
            raise LsurfError("1D surfaces are drawn as --kinds curve (loss and accuracy)")
        return KINDS_1D
    if options.kinds is not None and "curve" in options.kinds:
        raise LsurfError(f"--kinds curve is for 1D surfaces; 2D: {', '.join(KINDS_2D)}")
    # Contours and a 3D surface need at least two points along each axis.
    thin = [panel for panel in panels if min(panel.surface.done.shape) < 2]
    if options.kinds is None:
        return ("heatmap",) if thin else KINDS_2D
    if thin and set(options.kinds) - {"heatmap"}:
        raise LsurfError(
            f"{thin[0].surface.path} has a single row or column of points: only --kinds heatmap"
        )
    return options.kinds


def file_slug(label: str) -> str:
    """A label as it appears in a figure's file name."""
    return label.replace("/", "_").replace(":", "_")


def _joined_name(labels: Sequence[str]) -> str:
    """'surface' for one file, 'a_vs_b' for a comparison."""
    slugs = [file_slug(label) for label in labels]
    if len(slugs) > _MAX_NAMED:
        return f"{slugs[0]}_vs_{len(slugs) - 1}_more"
    return "_vs_".join(slugs)


def plot_html(
    surface: SurfaceLike, kind: str | None = None, metric: str | None = None, **keywords: Any
) -> go.Figure:
    """The interactive plotly figure (lsurf.plot.figures.html_figure); `lsurf.plot_html`."""
    from lsurf.plot.figures import html_figure

    return html_figure(surface, kind, metric, **keywords)


class _CallablePackage(types.ModuleType):
    """This package, callable: `lsurf.plot(surface, kind="contour")` returns the figure.

    Why a callable module and not a function `plot` in lsurf/__init__: `lsurf.plot` is this
    package, and importing any of its submodules sets the attribute `lsurf.plot` to the
    package module, which would shadow such a function. A module's `__class__` may be set to
    a ModuleType subclass (Python 3.5+), so the name works whichever import came first, and
    the package stays as light to import as before (no torch, matplotlib only when drawing).
    """

    def __call__(
        self,
        surface: SurfaceLike,
        kind: str | None = None,
        metric: str | None = None,
        **keywords: Any,
    ) -> Figure:
        """The matplotlib figure (lsurf.plot.figures.figure); `save=` writes it too."""
        from lsurf.plot.figures import figure

        return figure(surface, kind, metric, **keywords)


sys.modules[__name__].__class__ = _CallablePackage
