"""The figure of a sharpness file (`lsurf plot FILE` on an `lsurf sharpness` file).

Input: a `lsurf.files.sharpness.Sharpness` (read without torch or MPI). Output: one figure:
each measure's sharpness against the radius ρ (one line per measure, ±1 standard error as
bars where the measure has one), the loss at θ* in the title. Saved as PNG, PDF or SVG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from lsurf.atomic import atomic_path
from lsurf.errors import LsurfError
from lsurf.files.sharpness import Sharpness, is_sharpness_path, read_sharpness
from lsurf.plot.options import PlotOptions, refuse_exports, refuse_other_files

DPI = 150
MEASURE_LABELS = {"average": "average-case", "worst": "worst-case", "m": "m-sharpness"}
MEASURE_COLORS = {"average": "#1f77b4", "worst": "#d62728", "m": "#2ca02c"}


def draw_sharpness(found: Sharpness) -> Figure:
    figure = Figure(figsize=(6.4, 4.4), dpi=DPI, layout="constrained")
    ax = figure.subplots()
    for measure, label in MEASURE_LABELS.items():
        rows = sorted((r for r in found.results if r.measure == measure), key=lambda r: r.rho)
        if not rows:
            continue
        rho = np.array([row.rho for row in rows])
        value = np.array([row.estimate.value for row in rows])
        error = np.array([row.estimate.standard_error for row in rows])
        bars = None if np.isnan(error).all() else np.nan_to_num(error)
        ax.errorbar(
            rho, value, yerr=bars, marker="o", capsize=3, color=MEASURE_COLORS[measure],
            label=label,
        )  # fmt: skip
    section = found.config.get("sharpness") or {}
    ball = ("adaptive " if section.get("adaptive") else "") + str(section.get("norm", ""))
    ax.set_xlabel(f"ρ (radius; {ball} ball for the worst cases)")
    ax.set_ylabel("sharpness: L(θ + δ) − L(θ)")
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    origin = found.parts.get("origin")
    at = f", L(θ*) = {origin.values[0]:.4g}" if origin is not None and origin.complete else ""
    ax.set_title(f"{found.path.name}{at}", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return figure


def plot_sharpness_files(paths: list[Path], options: PlotOptions) -> list[Path]:
    """`lsurf plot` on sharpness files: a figure beside each file (or in --out)."""
    refuse_other_files(paths, is_sharpness_path, "sharpness file")
    refuse_exports(options.formats, "sharpness file")
    written = []
    for path in paths:
        found = read_sharpness(path)
        if not found.results:
            raise LsurfError(f"{path} holds no complete measure yet; rerun its lsurf sharpness")
        folder = options.out if options.out is not None else path.parent
        folder.mkdir(parents=True, exist_ok=True)
        for name in options.formats:
            target = folder / f"{path.stem}.{name}"
            with atomic_path(target) as temporary:
                draw_sharpness(found).savefig(temporary, format=name)
            written.append(target)
    return written
