"""The figure of a connect file (`lsurf connect`, `lsurf plot FILE` on a connect file).

Input: a `lsurf.files.connect.Connection` (read without torch or MPI). Output: one figure per
pair of checkpoints: left, the loss against t; right, the error rate (100 − accuracy, %)
against t; on each, every path of the pair (linear, aligned, curve: one colour each), the
train split solid and the test split dashed, ±1 standard error as bars where a point's is
above 0 (points that stopped early), and each path's barrier in the legend. Saved as PNG, PDF
or SVG through matplotlib, or as an interactive HTML page through plotly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lsurf.atomic import atomic_path
from lsurf.errors import LsurfError
from lsurf.files.connect import Connection, ConnectPath, read_connect
from lsurf.plot.options import FIGURE_FORMATS, PlotOptions

DPI = 150
PATH_COLORS = {"linear": "#1f77b4", "aligned": "#2ca02c", "curve": "#d62728"}
SPLIT_STYLES = {"train": "-", "test": "--"}
DRAWN_FORMATS = (*FIGURE_FORMATS, "html")


def pairs_of(connection: Connection) -> dict[str, list[ConnectPath]]:
    """The paths of each pair (`0-1`), in the file's order."""
    pairs: dict[str, list[ConnectPath]] = {}
    for name, part in connection.paths.items():
        pairs.setdefault(name.split("/")[0], []).append(part)
    return pairs


def _series(part: ConnectPath, split: str, quantity: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A path's values of `quantity` (loss or error) on `split`, NaN where not yet done, and
    their standard errors where any is above 0."""
    metrics, done = part.surface.metrics, part.surface.done
    if quantity == "loss":
        values = metrics.get(f"{split}_loss")
        errors = metrics.get(f"{split}_loss_se")
    else:
        accuracy = metrics.get(f"{split}_acc")
        values = None if accuracy is None else 100.0 - accuracy
        errors = None
    if values is None:
        return np.array([]), None
    values = np.where(done, values, np.nan)
    if errors is not None and not np.nanmax(np.where(done, errors, 0.0), initial=0.0) > 0:
        errors = None
    return values, errors


def _label(part: ConnectPath, split: str, quantity: str) -> str:
    kind = part.name.split("/")[1]
    found = part.barriers.get(f"{split}_{quantity}")
    text = f"{kind}, {split}"
    if found is not None and np.isfinite(found.height):
        error = f" ± {found.error:.2g}" if np.isfinite(found.error) and found.error > 0 else ""
        text += f" (barrier {found.height:.3g}{error})"
    return text


def draw_pair(connection: Connection, pair: str) -> Figure:
    checkpoints = connection.checkpoints
    first, second = (int(place) for place in pair.split("-"))
    figure = Figure(figsize=(11.0, 4.4), dpi=DPI, layout="constrained")
    loss_ax, error_ax = figure.subplots(1, 2)
    parts = pairs_of(connection)[pair]
    for ax, quantity, label in ((loss_ax, "loss", "loss"), (error_ax, "error", "error (%)")):
        _draw(ax, parts, quantity)
        ax.set_xlabel(
            f"t  (0: {Path(checkpoints[first]).name}, 1: {Path(checkpoints[second]).name})"
        )
        ax.set_ylabel(label)
        ax.set_xlim(0.0, 1.0)
        ax.legend(fontsize=7)
    bn = (connection.config.get("connect") or {}).get("bn")
    figure.suptitle(f"paths between checkpoints {first} and {second} (BN: {bn})", fontsize=10)
    return figure


@dataclass(frozen=True)
class _Trace:
    """One line of a figure: a path's `quantity` on one split, drawn the same in every format."""

    t: np.ndarray
    values: np.ndarray
    errors: np.ndarray | None
    color: str
    style: str  # matplotlib's: "-" (train) or "--" (test)
    label: str


def _traces(parts: list[ConnectPath], quantity: str) -> list[_Trace]:
    traces = []
    for part in parts:
        color = PATH_COLORS.get(part.name.split("/")[1], "#555555")
        for split, style in SPLIT_STYLES.items():
            values, errors = _series(part, split, quantity)
            if values.size:
                label = _label(part, split, quantity)
                traces.append(_Trace(part.surface.x, values, errors, color, style, label))
    return traces


def _draw(ax: Axes, parts: list[ConnectPath], quantity: str) -> None:
    for trace in _traces(parts, quantity):
        ax.errorbar(
            trace.t,
            trace.values,
            yerr=trace.errors,
            color=trace.color,
            linestyle=trace.style,
            marker="o",
            markersize=2.5,
            capsize=2 if trace.errors is not None else 0,
            label=trace.label,
        )


def write_pair_html(connection: Connection, pair: str, path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=2, subplot_titles=("loss", "error (%)"))
    parts = pairs_of(connection)[pair]
    for column, quantity in enumerate(("loss", "error"), start=1):
        for trace in _traces(parts, quantity):
            errors = trace.errors
            figure.add_trace(
                go.Scatter(
                    x=trace.t,
                    y=trace.values,
                    name=trace.label,
                    line={"color": trace.color, "dash": "solid" if trace.style == "-" else "dash"},
                    error_y=None if errors is None else {"type": "data", "array": errors},
                ),
                row=1,
                col=column,
            )
        figure.update_xaxes(title_text="t", row=1, col=column)
    figure.update_layout(title={"text": f"paths between checkpoints {pair}"})
    figure.write_html(path, include_plotlyjs=True, full_html=True)


def write_connect_figures(
    connection: Connection, folder: Path, formats: tuple[str, ...]
) -> list[Path]:
    """Each pair's figure in each format, named <stem>.<pair>.<format> in `folder`."""
    written = []
    folder.mkdir(parents=True, exist_ok=True)
    for pair in pairs_of(connection):
        for name in formats:
            path = folder / f"{connection.path.stem}.{pair}.{name}"
            with atomic_path(path) as temporary:
                if name == "html":
                    write_pair_html(connection, pair, temporary)
                else:
                    draw_pair(connection, pair).savefig(temporary, format=name)
            written.append(path)
    return written


def plot_connect_files(paths: list[Path], options: PlotOptions) -> list[Path]:
    """`lsurf plot` on connect files: their figures beside each file (or in --out)."""
    from lsurf.files.connect import is_connect_path

    others = [path for path in paths if not is_connect_path(path)]
    if others:
        raise LsurfError(
            f"{others[0]} is not a connect file; lsurf plot draws surface files, Hessian "
            "analysis files or connect files, one kind at a time"
        )
    unknown = [name for name in options.formats if name not in DRAWN_FORMATS]
    if unknown:
        raise LsurfError(
            f"--format {unknown[0]} exports surfaces; a connect file is drawn as "
            f"{', '.join(DRAWN_FORMATS)}"
        )
    written = []
    for path in paths:
        folder = options.out if options.out is not None else path.parent
        written += write_connect_figures(read_connect(path), folder, options.formats)
    return written
