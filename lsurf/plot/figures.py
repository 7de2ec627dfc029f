"""Figures for Python callers: `lsurf.plot(...)` and `lsurf.plot_html(...)` in a notebook.

Input: a `Surface` (what `lsurf.sweep` returns) or a surface file's path, the figure's kind,
the metric, and the keywords of `lsurf plot`'s flags. Output: the figure itself (matplotlib
or plotly), drawn by the very functions that draw `lsurf plot`'s files; a file only when
`save=` names one. A bad kind or metric raises `LsurfError` naming the valid ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from lsurf.atomic import atomic_path
from lsurf.errors import LsurfError
from lsurf.files.surface import Surface, read_surface
from lsurf.plot.options import (
    FIGURE_FORMATS,
    KINDS_1D,
    KINDS_2D,
    Colormaps,
    Kind,
    PlotOptions,
    Preset,
    parse_colormap,
    parse_levels,
)
from lsurf.plot.view import panels_of

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

    from lsurf.plot import Prepared

SurfaceLike = Surface | str | Path
# The plotly figures: the 3D page of a plane, the two-axes curve of a line (lsurf.plot.export).
HTML_KINDS_2D: tuple[Kind, ...] = ("surface3d",)


def figure(
    surface: SurfaceLike,
    kind: str | None = None,
    metric: str | None = None,
    save: str | Path | None = None,
    *,
    log: bool = False,
    zmax: float | None = None,
    levels: str | Sequence[float] | None = None,
    path_levels: str | Sequence[float] | None = None,
    ymax: float | None = None,
    colormap: str | None = None,
    view: tuple[float, float] | None = None,
    preset: Preset | None = None,
) -> Figure:
    """The matplotlib figure `lsurf plot --kinds KIND` would write, returned (and written to
    `save`, e.g. "contour.png", when given). `kind` None: contour for 2D, curve for 1D."""
    loaded = _surface(surface)
    chosen = _kind(loaded, kind, KINDS_2D)
    options = _options(chosen, metric, log, zmax, levels, path_levels, ymax, colormap, view, preset)
    drawn = _draw(loaded, options)
    if save is not None:
        path = Path(save)
        suffix = path.suffix.lstrip(".").lower()
        if suffix not in FIGURE_FORMATS:
            raise LsurfError(
                f"save={str(save)!r}: name a {', '.join(FIGURE_FORMATS)} file (html: plot_html)"
            )
        with atomic_path(path) as temporary:
            drawn.savefig(temporary, format=suffix)
    return drawn


def html_figure(
    surface: SurfaceLike,
    kind: str | None = None,
    metric: str | None = None,
    save: str | Path | None = None,
    *,
    log: bool = False,
    zmax: float | None = None,
    levels: str | Sequence[float] | None = None,
    preset: Preset | None = None,
) -> go.Figure:
    """The interactive plotly figure of `lsurf plot --format html`: a 3D surface for 2D,
    the curves for 1D; written as a self-contained page to `save` when given."""
    from lsurf.plot import prepare
    from lsurf.plot.export import curve_html_figure, surface_html_figure

    loaded = _surface(surface)
    chosen = _kind(loaded, kind, HTML_KINDS_2D)
    options = _options(chosen, metric, log, zmax, levels, None, None, None, None, preset)
    prepared = prepare(panels_of([loaded], [loaded.path.stem], options), options)
    panel = prepared.panels[0]
    if prepared.scale is None:
        result = curve_html_figure(panel, prepared.options)
    else:
        result = surface_html_figure(panel, prepared.scale)
    if save is not None:
        with atomic_path(Path(save)) as temporary:
            result.write_html(temporary, include_plotlyjs=True, full_html=True)
    return result


def _surface(surface: SurfaceLike) -> Surface:
    if isinstance(surface, Surface):
        return surface
    path = Path(surface)
    if not path.is_file():
        raise LsurfError(f"{path} is no surface file: pass a Surface or a surface file's path")
    return read_surface(path)


def _kind(surface: Surface, kind: str | None, kinds_2d: tuple[Kind, ...]) -> Kind:
    """The kind asked for, checked against the surface's dimension; None: the natural one."""
    valid = (*kinds_2d, *KINDS_1D)
    is_2d = surface.y is not None
    if kind is None:
        return kinds_2d[0] if is_2d else KINDS_1D[0]
    if kind not in valid:
        raise LsurfError(f"kind={kind!r} is not a figure lsurf draws; valid: {', '.join(valid)}")
    if is_2d and kind in KINDS_1D:
        raise LsurfError(f"kind={kind!r} draws 1D surfaces; this one is 2D: {', '.join(kinds_2d)}")
    if not is_2d and kind not in KINDS_1D:
        raise LsurfError(f"kind={kind!r} needs a 2D surface; this one is 1D: use kind='curve'")
    return cast(Kind, kind)  # one of `valid`: checked above


def _options(
    kind: Kind,
    metric: str | None,
    log: bool,
    zmax: float | None,
    levels: str | Sequence[float] | None,
    path_levels: str | Sequence[float] | None,
    ymax: float | None,
    colormap: str | None,
    view: tuple[float, float] | None,
    preset: Preset | None,
) -> PlotOptions:
    """The `PlotOptions` the CLI's flags would give (and checks as it checks them)."""
    return PlotOptions(
        metric=metric,
        kinds=(kind,),
        log=log,
        zmax=zmax,
        levels=_levels(levels, "--levels"),
        path_levels=_levels(path_levels, "--path-levels"),
        ymax=ymax,
        colormaps=None if colormap is None else Colormaps.every(parse_colormap(colormap)),
        view=None if view is None else (float(view[0]), float(view[1])),
        preset=preset,
    )


def _levels(levels: str | Sequence[float] | None, flag: str) -> tuple[float, ...] | None:
    """'MIN:MAX:STEP', 'a,b,c' or a list of numbers, checked as the flag checks its text."""
    if levels is None:
        return None
    if isinstance(levels, str):
        return parse_levels(levels, flag)
    return parse_levels(",".join(str(float(level)) for level in levels), flag)


def _draw(surface: Surface, options: PlotOptions) -> Figure:
    from lsurf.plot import draw_figure, prepare

    prepared: Prepared = prepare(panels_of([surface], [surface.path.stem], options), options)
    assert prepared.kinds == options.kinds, "one kind asked, one drawn"
    return draw_figure(prepared.kinds[0], prepared)
