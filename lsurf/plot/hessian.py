"""The figure of a Hessian analysis file (`lsurf hessian`, `lsurf plot FILE.hessian.h5`).

Input: a `lsurf.files.hessian.HessianFile` (read without torch or MPI). Output: a matplotlib
`Figure`, and the file it is saved to. Left: the eigenvalue density of stochastic Lanczos
quadrature on a log scale (it spans many decades: a bulk near zero and a few outliers), with
the top-k eigenvalues as red lines and the mean eigenvalue trace/n as a green one (the trace itself,
a sum over all n eigenvalues, lies off this axis; its value ± standard error is in the
legend). Right, when the file has them: λmax of each parameter tensor's diagonal block, as
horizontal bars in the model's order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lsurf.atomic import atomic_path
from lsurf.errors import LsurfError
from lsurf.files.hessian import HessianFile
from lsurf.plot.options import FIGURE_FORMATS, PlotOptions

DPI = 150
DENSITY_COLOR = "#1f77b4"
TOP_COLOR = "#d62728"
TRACE_COLOR = "#2ca02c"
LAYER_COLOR = "#9467bd"
DECADES = 8  # the density's log axis shows this many decades below its peak


def draw_spectrum(hessian: HessianFile) -> Figure:
    analysis = hessian.analysis
    layers = len(analysis.layer_names) > 0
    width = 11.0 if layers else 6.4
    height = max(4.4, 1.2 + 0.22 * len(analysis.layer_names)) if layers else 4.4
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    if layers:
        density_ax, layer_ax = figure.subplots(1, 2, width_ratios=(3, 2))
        _draw_layers(layer_ax, hessian)
    else:
        density_ax = figure.subplots(1, 1)
    _draw_density(density_ax, hessian)
    attributes = hessian.attributes
    figure.suptitle(
        f"Hessian of the mean loss on {attributes.get('split')} at θ* "
        f"({attributes.get('examples')} examples, {attributes.get('parameters')} parameters: "
        f"{attributes.get('params')})",
        fontsize=10,
    )
    return figure


def _draw_density(ax: Axes, hessian: HessianFile) -> None:
    analysis = hessian.analysis
    curve = analysis.density_curve
    peak = float(curve.max()) if curve.size and curve.max() > 0 else 1.0
    floor = peak * 10.0**-DECADES
    ax.semilogy(analysis.density_grid, np.maximum(curve, floor), color=DENSITY_COLOR)
    ax.set_ylim(floor, peak * 3)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)")
    ax.set_title(
        f"spectral density (SLQ: {analysis.density_nodes.shape[0]} runs x "
        f"{analysis.density_nodes.shape[1]} steps, σ = {analysis.density_sigma:.3g})",
        fontsize=8,
    )
    k = len(analysis.top_eigenvalues)
    for index, value in enumerate(analysis.top_eigenvalues):
        ax.axvline(
            value,
            color=TOP_COLOR,
            linestyle="--",
            linewidth=0.9,
            label=f"top-{k} eigenvalues (λ1 = {value:.4g})" if index == 0 else None,
        )
    parameters = int(hessian.attributes.get("parameters", 0) or 0)
    if parameters > 0:
        ax.axvline(
            analysis.trace / parameters,
            color=TRACE_COLOR,
            linestyle=":",
            linewidth=1.2,
            label=(
                f"trace/n = {analysis.trace / parameters:.3g}  "
                f"(trace {analysis.trace:.4g} ± {analysis.trace_standard_error:.2g})"
            ),
        )
    ax.legend(fontsize=7, loc="best")


def _draw_layers(ax: Axes, hessian: HessianFile) -> None:
    analysis = hessian.analysis
    names = analysis.layer_names
    positions = np.arange(len(names))
    ax.barh(positions, analysis.layer_max_eigenvalues, color=LAYER_COLOR)
    ax.set_yticks(positions, names, fontsize=7)
    ax.invert_yaxis()  # the model's first tensor on top
    ax.axvline(0.0, color="black", linewidth=0.6)
    ax.set_xlabel("λmax of the tensor's diagonal block")
    ax.set_title("per-layer sharpness", fontsize=8)


def write_spectrum_figure(hessian: HessianFile, path: Path) -> Path:
    """Draw the figure and save it atomically at `path` (its suffix picks png, pdf or svg)."""
    file_format = path.suffix.lstrip(".")
    assert file_format in FIGURE_FORMATS, path
    figure = draw_spectrum(hessian)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format=file_format)
    return path


def plot_hessian_files(paths: list[Path], options: PlotOptions) -> list[Path]:
    """`lsurf plot` on Hessian analysis files: one figure per file and format, named
    <stem>.<format> in `options.out` (default: beside each file). Returns the paths written."""
    from lsurf.files.hessian import is_hessian_file, read_hessian_file

    others = [path for path in paths if not is_hessian_file(path)]
    if others:
        raise LsurfError(
            f"{others[0]} is not a Hessian analysis file; lsurf plot draws surface files or "
            "Hessian analysis files (lsurf hessian), one kind at a time"
        )
    exports = [name for name in options.formats if name not in FIGURE_FORMATS]
    if exports:
        raise LsurfError(
            f"--format {exports[0]} exports surfaces; a Hessian analysis is drawn as "
            f"{', '.join(FIGURE_FORMATS)}"
        )
    surface_flags = {
        "--metric": options.metric is not None,
        "--kinds": options.kinds is not None,
        "--log": options.log,
        "--zmax": options.zmax is not None,
        "--levels": options.levels is not None,
    }
    given = [flag for flag, used in surface_flags.items() if used]
    if given:
        raise LsurfError(
            f"{', '.join(given)} shape surface figures; a Hessian analysis figure takes only "
            "--out and --format"
        )
    written = []
    for path in paths:
        hessian = read_hessian_file(path)
        folder = options.out if options.out is not None else path.parent
        for name in options.formats:
            written.append(write_spectrum_figure(hessian, folder / f"{path.stem}.{name}"))
    return written
