"""The figure of a connect file (`lsurf connect`, `lsurf plot FILE` on a connect file).

Input: a `lsurf.files.connect.Connection` (read without torch or MPI). Output: one figure per
pair of checkpoints: left, the loss against t; middle, the error rate (100 − accuracy, %)
against t; on each, every path of the pair (linear, aligned, curve: one colour each), the
train split solid and the test split dashed, ±1 standard error as bars where a point's is
above 0 (points that stopped early), and each path's barrier in the legend. Where the job
swept the plane through A, B and the bend (`connect.plane`), a third panel: its train loss
as filled contours (log-spaced levels where the values span more than a decade), the
straight path from A to B and the curve's points drawn over it, A, B and the bend marked.
Saved as PNG, PDF or SVG through matplotlib, or as an interactive HTML page through plotly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from lsurf.atomic import atomic_path
from lsurf.errors import LsurfError
from lsurf.files.connect import Connection, ConnectPath, read_connect
from lsurf.grid import path_point
from lsurf.plot.options import FIGURE_FORMATS, PlotOptions, refuse_exports

DPI = 150
PATH_COLORS = {"linear": "#1f77b4", "aligned": "#2ca02c", "curve": "#d62728"}
SPLIT_STYLES = {"train": "-", "test": "--"}
DRAWN_FORMATS = (*FIGURE_FORMATS, "html")
PLANE_LEVELS = 21


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


def _split_parts(connection: Connection, pair: str) -> tuple[list[ConnectPath], _Plane | None]:
    """A pair's paths along t, and what its plane panel draws (None: no plane, or none of its
    points done yet)."""
    parts = pairs_of(connection)[pair]
    paths = [part for part in parts if part.surface.y is None]
    planes = [part for part in parts if part.surface.y is not None]
    if not planes:
        return paths, None
    curves = [part for part in paths if part.name.endswith("/curve")]
    aligned = any(part.name.endswith("/aligned") for part in paths)
    return paths, _plane(planes[0], curves[0] if curves else None, aligned)


@dataclass(frozen=True)
class _Plane:
    """What the plane panel draws, in every format: the loss over (a, b) (NaN where not
    done), its contour levels, and the curve's points on the plane."""

    a: np.ndarray
    b: np.ndarray
    values: np.ndarray  # (len(a), len(b))
    name: str  # the column drawn
    levels: np.ndarray
    log: bool
    curve: str
    curve_a: np.ndarray
    curve_b: np.ndarray
    aligned: bool  # B is the aligned B (the job aligned, so the curve joins A to it)


def _plane(plane: ConnectPath, curve: ConnectPath | None, aligned: bool) -> _Plane | None:
    surface = plane.surface
    assert surface.y is not None
    losses = [name for name in surface.metrics if name.endswith("_loss")]
    if not losses or not surface.done.any():
        return None
    name = "train_loss" if "train_loss" in losses else losses[0]
    values = np.where(surface.done, surface.metrics[name], np.nan)
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    log = low > 0 and high > 10 * low
    if log:
        levels = np.geomspace(low, high, PLANE_LEVELS)
    else:
        levels = np.linspace(low, high if high > low else low + 1.0, PLANE_LEVELS)
    kind = str(surface.attributes.get("curve", "bezier"))
    t = curve.surface.x if curve is not None else np.linspace(0.0, 1.0, 31)
    points = np.array([path_point(kind, float(value)) for value in t])
    curve_a, curve_b = points[:, 0], points[:, 1]
    return _Plane(surface.x, surface.y, values, name, levels, log, kind, curve_a, curve_b, aligned)


def _draw_plane(ax: Axes, found: _Plane, figure: Figure) -> None:
    norm = LogNorm(found.levels[0], found.levels[-1]) if found.log else None
    filled = ax.contourf(
        found.a, found.b, found.values.T, levels=found.levels, norm=norm, cmap="viridis"
    )
    figure.colorbar(filled, ax=ax, label=found.name + (" (log levels)" if found.log else ""))
    end = "aligned B" if found.aligned else "B"
    ax.plot([0.0, 1.0], [0.0, 0.0], "--", color="white", linewidth=1.0, label=f"A → {end}")
    ax.plot(
        found.curve_a,
        found.curve_b,
        "-o",
        color=PATH_COLORS["curve"],
        markersize=2.5,
        linewidth=1.2,
        label=found.curve,
    )
    for (a, b), text in (((0.0, 0.0), "A"), ((1.0, 0.0), end), ((0.0, 1.0), "bend")):
        ax.plot(a, b, "o", color="white", markeredgecolor="k", markersize=6, zorder=5)
        ax.annotate(text, (a, b), xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel(f"a (toward {end})")
    ax.set_ylabel("b (toward the bend)")
    ax.set_title("the plane through A, B and the bend", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")


def _short(path: str, other: str) -> str:
    """A checkpoint's file name, with its folder where the other's name is the same (two
    runs' final.pt)."""
    name = Path(path).name
    return f"{Path(path).parent.name}/{name}" if name == Path(other).name else name


def draw_pair(connection: Connection, pair: str) -> Figure:
    checkpoints = connection.checkpoints
    first, second = (int(place) for place in pair.split("-"))
    parts, shown = _split_parts(connection, pair)
    width = 11.0 if shown is None else 16.0
    figure = Figure(figsize=(width, 4.4), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, 2 if shown is None else 3)
    loss_ax, error_ax = axes[0], axes[1]
    if shown is not None:
        _draw_plane(axes[2], shown, figure)
    for ax, quantity, label in ((loss_ax, "loss", "loss"), (error_ax, "error", "error (%)")):
        _draw(ax, parts, quantity)
        ax.set_xlabel(
            f"t  (0: {_short(checkpoints[first], checkpoints[second])}, "
            f"1: {_short(checkpoints[second], checkpoints[first])})"
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

    parts, shown = _split_parts(connection, pair)
    titles = ("loss", "error (%)") + (() if shown is None else ("the plane through A, B, bend",))
    figure = make_subplots(rows=1, cols=len(titles), subplot_titles=titles)
    if shown is not None:
        values = np.log10(shown.values) if shown.log else shown.values
        label = f"log10 {shown.name}" if shown.log else shown.name
        figure.add_trace(
            go.Contour(
                x=shown.a,
                y=shown.b,
                z=values.T,
                colorscale="Viridis",
                name=shown.name,
                colorbar={"title": {"text": label}, "x": 1.02},
            ),
            row=1,
            col=3,
        )
        figure.add_trace(
            go.Scatter(
                x=shown.curve_a,
                y=shown.curve_b,
                name=f"{shown.curve} on the plane",
                mode="lines+markers",
                line={"color": PATH_COLORS["curve"]},
            ),
            row=1,
            col=3,
        )
        figure.add_trace(
            go.Scatter(
                x=[0.0, 1.0, 0.0],
                y=[0.0, 0.0, 1.0],
                text=["A", "aligned B" if shown.aligned else "B", "bend"],
                mode="markers+text",
                textposition="top right",
                name="A, B, bend",
                marker={"color": "white", "line": {"color": "black", "width": 1}},
            ),
            row=1,
            col=3,
        )
        toward = "aligned B" if shown.aligned else "B"
        figure.update_xaxes(title_text=f"a (toward {toward})", row=1, col=3)
        figure.update_yaxes(title_text="b (toward the bend)", row=1, col=3)
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
    refuse_exports(options.formats, "connect file", DRAWN_FORMATS)
    written = []
    for path in paths:
        folder = options.out if options.out is not None else path.parent
        written += write_connect_figures(read_connect(path), folder, options.formats)
    return written
