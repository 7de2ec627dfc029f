"""What `lsurf plot` is asked to draw: the options, parsed once from the command line's text.

Input: the strings of `--format`, `--kinds`, `--levels` and the other flags.
Output: a frozen `PlotOptions` whose every field is typed and checked; a malformed value
raises `LsurfError` with one line naming the flag and what it accepts.

Fields a preset may fill (`--preset paper`, lsurf.plot.preset) are None when not given, so
a flag given explicitly always wins over the preset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar, cast, get_args

import numpy as np

from lsurf.errors import LsurfError

Kind = Literal["contour", "filled", "heatmap", "surface3d", "curve"]
Format = Literal["png", "pdf", "svg", "vtk", "html"]
Preset = Literal["paper"]
# files: several surfaces side by side; seeds: one checkpoint swept along several random
# seeds (the paper's repeatability appendix): checked to be comparable, curves overlaid.
Compare = Literal["files", "seeds"]

KINDS_2D: tuple[Kind, ...] = ("contour", "filled", "heatmap", "surface3d")
KINDS_1D: tuple[Kind, ...] = ("curve",)
FIGURE_FORMATS: tuple[Format, ...] = ("png", "pdf", "svg")  # matplotlib's; the rest are exports
DEFAULT_COLORMAP = "viridis"

# Above this many contour levels a typo in --levels (a step of 0.001 instead of 0.1) would
# freeze the renderer for minutes; no readable figure has that many lines.
MAX_LEVELS = 500
# --interp: a 4001×4001 mesh is 16 million points (about 1 GB of VTK); the reference
# recommends 1000.
MAX_INTERP = 4001


@dataclass(frozen=True)
class Colormaps:
    """A matplotlib colormap name for each 2D kind (one colorbar per figure uses it too)."""

    contour: str = DEFAULT_COLORMAP
    filled: str = DEFAULT_COLORMAP
    heatmap: str = DEFAULT_COLORMAP
    surface3d: str = DEFAULT_COLORMAP

    def of(self, kind: Kind) -> str:
        return str(getattr(self, kind, DEFAULT_COLORMAP))

    @classmethod
    def every(cls, name: str) -> Colormaps:
        return cls(name, name, name, name)


@dataclass(frozen=True)
class PlotOptions:
    """Everything that shapes the figures; the defaults give the standard set as PNG."""

    metric: str | None = None  # None: train_loss, else the file's first lower-is-better column
    out: Path | None = None  # folder; None: beside the (first) surface file
    formats: tuple[Format, ...] = ("png",)
    kinds: tuple[Kind, ...] | None = None  # None: all 2D kinds, or the curve for 1D files
    log: bool = False  # log color scale / log10 heights; values <= 0 are then not shown
    zmax: float | None = None  # values above are clipped to zmax for display
    levels: tuple[float, ...] | None = None  # contour levels, ascending; None: from the data
    preset: Preset | None = None  # fills the fields below left None (lsurf.plot.preset)
    # Extra contour lines on planes that carry a training path, beyond the color scale.
    path_levels: tuple[float, ...] | None = None
    ymax: float | None = None  # top of a 1D figure's left (loss) axis; None: from the data
    colormaps: Colormaps | None = None  # None: viridis for every kind
    view: tuple[float, float] | None = None  # 3D (elevation, azimuth); None: shows the minimum
    interp: int | None = None  # VTK: points per axis after upsampling; None: the grid as is
    log_offset: float | None = None  # VTK with --log: heights log10(value + offset); None: 0
    compare: Compare = "files"

    def __post_init__(self) -> None:
        if self.zmax is not None and not math.isfinite(self.zmax):
            raise LsurfError(f"--zmax must be a finite number; got {self.zmax}")
        if self.log and self.zmax is not None and self.zmax <= 0:
            raise LsurfError(f"--zmax must be positive with --log; got {self.zmax:g}")
        if self.log and self.levels is not None and self.levels[0] <= 0:
            raise LsurfError("--levels must all be positive with --log")
        if self.out is not None and self.out.is_file():
            raise LsurfError(f"--out names a folder for the figures, but {self.out} is a file")
        if self.ymax is not None and not (math.isfinite(self.ymax) and self.ymax > 0):
            raise LsurfError(
                f"--ymax must be a positive number (the axis starts at 0); got {self.ymax}"
            )
        if self.interp is not None:
            if not 2 <= self.interp <= MAX_INTERP:
                raise LsurfError(
                    f"--interp must be from 2 to {MAX_INTERP} points; got {self.interp}"
                )
            if "vtk" not in self.formats:
                raise LsurfError("--interp upsamples the VTK export: add --format vtk")
        if self.log_offset is not None and not (
            math.isfinite(self.log_offset) and self.log_offset >= 0
        ):
            raise LsurfError(f"--log-offset must be 0 or more; got {self.log_offset}")
        if self.view is not None and not -90 <= self.view[0] <= 90:
            raise LsurfError(f"--view: the elevation must be from -90 to 90; got {self.view[0]:g}")


def refuse_other_files(paths: Sequence[Path], belongs: Callable[[Path], bool], what: str) -> None:
    """`lsurf plot` draws one kind of file at a time: the first path not of `what` is refused."""
    others = [path for path in paths if not belongs(path)]
    if others:
        raise LsurfError(
            f"{others[0]} is not a {what}; lsurf plot draws one kind of file at a time"
        )


def refuse_exports(
    formats: Sequence[str], what: str, drawn: Sequence[str] = FIGURE_FORMATS
) -> None:
    """The exports (vtk, html) are of surfaces: a `what` is drawn only as `drawn`."""
    unknown = [name for name in formats if name not in drawn]
    if unknown:
        raise LsurfError(
            f"--format {unknown[0]} exports surfaces; a {what} is drawn as {', '.join(drawn)}"
        )


def parse_options(
    metric: str | None = None,
    out: Path | None = None,
    formats: str = "png",
    kinds: str | None = None,
    log: bool = False,
    zmax: float | None = None,
    levels: str | None = None,
    preset: str | None = None,
    path_levels: str | None = None,
    ymax: float | None = None,
    colormap: str | None = None,
    view: str | None = None,
    interp: int | None = None,
    log_offset: float | None = None,
    compare: str = "files",
) -> PlotOptions:
    """Build `PlotOptions` from the command line's text (comma lists, a levels spec)."""
    return PlotOptions(
        metric=metric,
        out=out,
        formats=_parse_choices(formats, "--format", get_args(Format)),
        kinds=None if kinds is None else _parse_choices(kinds, "--kinds", get_args(Kind)),
        log=log,
        zmax=zmax,
        levels=None if levels is None else parse_levels(levels),
        preset=None if preset is None else _parse_choice(preset, "--preset", get_args(Preset)),
        path_levels=None if path_levels is None else parse_levels(path_levels, "--path-levels"),
        ymax=ymax,
        colormaps=None if colormap is None else Colormaps.every(parse_colormap(colormap)),
        view=None if view is None else parse_view(view),
        interp=interp,
        log_offset=log_offset,
        compare=_parse_choice(compare, "--compare", get_args(Compare)),
    )


Choice = TypeVar("Choice", bound=str)  # one of a Literal's values


def _parse_choice(text: str, flag: str, valid: tuple[Choice, ...]) -> Choice:
    item = text.strip().lower()
    if item not in valid:
        raise LsurfError(f"{flag}: unknown value {item!r}; valid: {', '.join(valid)}")
    return cast(Choice, item)  # one of `valid`: checked above


def _parse_choices(text: str, flag: str, valid: tuple[Choice, ...]) -> tuple[Choice, ...]:
    """'png,pdf' → ('png', 'pdf'), in the given order without repeats; unknown names refused."""
    chosen: list[Choice] = []
    for item in (_parse_choice(part, flag, valid) for part in text.split(",")):
        if item not in chosen:
            chosen.append(item)
    return tuple(chosen)


def parse_colormap(name: str) -> str:
    """A matplotlib colormap's name, checked (matplotlib is imported only here, when asked)."""
    from matplotlib import colormaps

    if name not in colormaps:
        raise LsurfError(
            f"--colormap: matplotlib has no colormap {name!r}; e.g. viridis, summer, coolwarm"
        )
    return name


def parse_view(text: str) -> tuple[float, float]:
    """'ELEVATION,AZIMUTH' in degrees, e.g. '30,-60' (matplotlib's own default view)."""
    hint = "--view must be ELEVATION,AZIMUTH in degrees (e.g. 30,-60)"
    try:
        elevation, azimuth = (float(part) for part in text.split(","))
    except ValueError:
        raise LsurfError(f"{hint}; got {text!r}") from None
    if not (math.isfinite(elevation) and math.isfinite(azimuth)):
        raise LsurfError(f"{hint}; got {text!r}")
    return elevation, azimuth


def parse_levels(text: str, flag: str = "--levels") -> tuple[float, ...]:
    """Contour levels from 'MIN:MAX:STEP' (the reference's vmin/vmax/vlevel) or 'a,b,c'.

    MIN:MAX:STEP gives MIN, MIN+STEP, ... up to MAX inclusive (the reference's np.arange
    stops short of vmax, which leaves the top band without a line).
    """
    hint = f"{flag} must be MIN:MAX:STEP (e.g. 0.1:10:0.5) or a comma list (e.g. 0.5,1,2,5)"
    try:
        if ":" in text:
            parts = [float(part) for part in text.split(":")]
            if len(parts) != 3:
                raise LsurfError(f"{hint}; got {text!r}")
            start, stop, step = parts
            if not (step > 0 and stop > start):
                raise LsurfError(f"{hint} with MAX > MIN and STEP > 0; got {text!r}")
            count = math.floor((stop - start) / step * (1 + 1e-12)) + 1
            if count > MAX_LEVELS:
                raise LsurfError(f"{flag} {text!r} gives {count} levels; at most {MAX_LEVELS}")
            levels = start + step * np.arange(count)
        else:
            levels = np.array([float(part) for part in text.split(",")])
    except ValueError:
        raise LsurfError(f"{hint}; got {text!r}") from None
    levels = np.unique(levels)  # sorted, each once: contour() demands increasing levels
    if len(levels) < 2 or not np.all(np.isfinite(levels)):
        raise LsurfError(f"{hint} with at least two distinct finite levels; got {text!r}")
    if len(levels) > MAX_LEVELS:
        raise LsurfError(f"{flag} gives {len(levels)} levels; at most {MAX_LEVELS}")
    return tuple(float(level) for level in levels)
