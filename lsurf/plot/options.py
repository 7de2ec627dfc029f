"""What `lsurf plot` is asked to draw: the options, parsed once from the command line's text.

Input: the strings of `--format`, `--kinds`, `--levels` and the other flags.
Output: a frozen `PlotOptions` whose every field is typed and checked; a malformed value
raises `LsurfError` with one line naming the flag and what it accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from lsurf.errors import LsurfError

Kind = Literal["contour", "filled", "heatmap", "surface3d", "curve"]
Format = Literal["png", "pdf", "svg", "vtk", "html"]

KINDS_2D: tuple[Kind, ...] = ("contour", "filled", "heatmap", "surface3d")
KINDS_1D: tuple[Kind, ...] = ("curve",)
FIGURE_FORMATS: tuple[Format, ...] = ("png", "pdf", "svg")  # matplotlib's; the rest are exports

# Above this many contour levels a typo in --levels (a step of 0.001 instead of 0.1) would
# freeze the renderer for minutes; no readable figure has that many lines.
MAX_LEVELS = 500


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

    def __post_init__(self) -> None:
        if self.zmax is not None and not math.isfinite(self.zmax):
            raise LsurfError(f"--zmax must be a finite number; got {self.zmax}")
        if self.log and self.zmax is not None and self.zmax <= 0:
            raise LsurfError(f"--zmax must be positive with --log; got {self.zmax:g}")
        if self.log and self.levels is not None and self.levels[0] <= 0:
            raise LsurfError("--levels must all be positive with --log")
        if self.out is not None and self.out.is_file():
            raise LsurfError(f"--out names a folder for the figures, but {self.out} is a file")


def parse_options(
    metric: str | None = None,
    out: Path | None = None,
    formats: str = "png",
    kinds: str | None = None,
    log: bool = False,
    zmax: float | None = None,
    levels: str | None = None,
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
    )


def _parse_choices(text: str, flag: str, valid: tuple[str, ...]) -> tuple:
    """'png,pdf' → ('png', 'pdf'), in the given order without repeats; unknown names refused."""
    chosen: list[str] = []
    for item in (part.strip().lower() for part in text.split(",")):
        if item not in valid:
            raise LsurfError(f"{flag}: unknown value {item!r}; valid: {', '.join(valid)}")
        if item not in chosen:
            chosen.append(item)
    return tuple(chosen)


def parse_levels(text: str) -> tuple[float, ...]:
    """Contour levels from 'MIN:MAX:STEP' (the reference's vmin/vmax/vlevel) or 'a,b,c'.

    MIN:MAX:STEP gives MIN, MIN+STEP, ... up to MAX inclusive (the reference's np.arange
    stops short of vmax, which leaves the top band without a line).
    """
    hint = "--levels must be MIN:MAX:STEP (e.g. 0.1:10:0.5) or a comma list (e.g. 0.5,1,2,5)"
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
                raise LsurfError(f"--levels {text!r} gives {count} levels; at most {MAX_LEVELS}")
            levels = start + step * np.arange(count)
        else:
            levels = np.array([float(part) for part in text.split(",")])
    except ValueError:
        raise LsurfError(f"{hint}; got {text!r}") from None
    levels = np.unique(levels)  # sorted, each once: contour() demands increasing levels
    if len(levels) < 2 or not np.all(np.isfinite(levels)):
        raise LsurfError(f"{hint} with at least two distinct finite levels; got {text!r}")
    if len(levels) > MAX_LEVELS:
        raise LsurfError(f"--levels gives {len(levels)} levels; at most {MAX_LEVELS}")
    return tuple(float(level) for level in levels)
