"""`lsurf plot` on a capture file: the training run's landscapes side by side, one panel per
capture (its epoch), on one shared colour scale (2D) or as curves (1D).

Input: capture files (lsurf.files.captures) and the plot options. Output: the figures' paths.
A run with many captures is drawn at up to MAX_PANELS of them, evenly spaced from the first to
the last, and the figure's name says which epochs it shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lsurf.atomic import atomic_path
from lsurf.errors import LsurfError
from lsurf.files.captures import Captured, is_captures_path, read_captures
from lsurf.plot.curves import draw_curves
from lsurf.plot.options import KINDS_2D, PlotOptions, refuse_exports, refuse_other_files
from lsurf.plot.planes import draw_plane
from lsurf.plot.view import panels_of, shared_scale

MAX_PANELS = 6


def shown_captures(captured: list[Captured]) -> list[Captured]:
    """Every capture when few, else MAX_PANELS evenly spaced ones, the first and last kept."""
    if len(captured) <= MAX_PANELS:
        return captured
    picks = np.unique(np.round(np.linspace(0, len(captured) - 1, MAX_PANELS)).astype(int))
    return [captured[index] for index in picks]


def plot_capture_files(paths: list[Path], options: PlotOptions) -> list[Path]:
    refuse_other_files(paths, is_captures_path, "capture file")
    refuse_exports(options.formats, "capture file")
    written = []
    for path in paths:
        captured = [found for found in read_captures(path) if found.surface.done.all()]
        if not captured:
            raise LsurfError(f"{path} holds no capture yet")
        shown = shown_captures(captured)
        labels = [f"epoch {found.epoch}" for found in shown]
        panels = panels_of([found.surface for found in shown], labels, options)
        folder = options.out if options.out is not None else path.parent
        folder.mkdir(parents=True, exist_ok=True)
        figures = []
        if panels[0].is_2d:
            kinds = options.kinds or ("contour",)
            wrong = [kind for kind in kinds if kind not in KINDS_2D]
            if wrong:
                raise LsurfError(
                    f"--kinds {wrong[0]}: captures of a plane are drawn as {', '.join(KINDS_2D)}"
                )
            scale = shared_scale(panels, options)
            figures = [(kind, draw_plane(kind, panels, scale, options)) for kind in kinds]
        else:
            figures = [("curve", draw_curves(panels, options))]
        epochs = f"epochs_{shown[0].epoch}-{shown[-1].epoch}"
        for kind, figure in figures:
            for name in options.formats:
                target = folder / f"{path.stem}_{epochs}_{panels[0].metric}_{kind}.{name}"
                with atomic_path(target) as temporary:
                    figure.savefig(temporary, format=name)
                written.append(target)
    return written
