"""Figures of 1D surfaces: loss and accuracy along a line, as the paper's interpolation plots.

Input: `Panel`s of 1D surface files and the `PlotOptions`. Output: a matplotlib `Figure`
with a panel per file; in each, loss on the left axis (blue) and accuracy on a twin right
axis (red), train solid and test dashed (Li et al., Figs. 2-3). Side-by-side panels share
their y-limits, so a wider or flatter curve is really wider or flatter.

Which columns are drawn comes from the file's column list, not from dataset names: on the
left, every split's column of the panel's metric (`--metric`; loss by default, and loss
also when the metric asked for is accuracy); on the right, every split's accuracy column
(no right axis when no file holds one, as the reference's eigenvalue files).

Standard errors: where the file stores a split's `loss_se` (`evaluation.standard_errors` or
`rel_error`), its loss curve carries error bars of ±1 standard error at every point shown
below --zmax.

Curvature: `--metric eig_ratio` draws |λmin/λmax| from 0 to at least 0.5 (the 2D maps'
scale); a point whose solver did not converge is marked with an 'x' on its curve.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.typing import LineStyleType

from lsurf.files.curvature import default_range
from lsurf.files.labels import completeness, titles
from lsurf.metrics import ACCURACY, LOSS, LOSS_SE, Column, Metric
from lsurf.plot.options import PlotOptions
from lsurf.plot.planes import (
    DPI,
    NOT_COMPUTED_COLOR,
    NOT_FINITE_COLOR,
    PANEL_SIZE,
    UNCONVERGED_STYLE,
    unconverged_label,
    unconverged_note,
)
from lsurf.plot.view import NOT_COMPUTED, NOT_FINITE, SHOWN, Panel, mask_hidden

LOSS_COLOR = "#1f77b4"  # blue loss, red accuracy, as in the paper
ACCURACY_COLOR = "#d62728"
SPLIT_STYLES: dict[str, LineStyleType] = {"train": "-", "test": "--"}  # any other: dotted
ACCURACY_LIMITS = (0.0, 100.0)  # percent; a fixed range compares across files by itself


def draw_curves(panels: Sequence[Panel], options: PlotOptions) -> Figure:
    count = len(panels)
    width, height = PANEL_SIZE
    figure = Figure(figsize=(width * count + 0.8, height + 0.9), dpi=DPI, layout="constrained")
    loss_axes = list(figure.subplots(1, count, squeeze=False)[0])
    left = primary_metric(panels[0])  # load_panels gave every panel the same metric
    curves = [_curves(panel, options) for panel in panels]
    losses = [loss for panel in curves for loss, _ in panel.values()]
    loss_limits = _loss_limits(losses, options, default_range(left))
    with_accuracy = any(accuracy is not None for panel in curves for _, accuracy in panel.values())
    for ax, panel, panel_curves in zip(loss_axes, panels, curves, strict=True):
        accuracy_ax = ax.twinx() if with_accuracy else None
        x = panel.surface.x
        for split, (loss, accuracy) in panel_curves.items():
            style = SPLIT_STYLES.get(split, ":")
            ax.plot(x, loss, color=LOSS_COLOR, linestyle=style, label=f"{split} {left.label}")
            _draw_standard_errors(ax, panel, split, loss, LOSS_COLOR)
            if accuracy is not None and accuracy_ax is not None:
                accuracy_ax.plot(
                    x,
                    accuracy,
                    color=ACCURACY_COLOR,
                    linestyle=style,
                    label=f"{split} {ACCURACY.label}",
                )
        _shade_hidden(ax, x, _status(panel, panel_curves))
        _mark_unconverged(ax, panel)
        if options.log:
            ax.set_yscale("log")
        ax.set_ylim(*loss_limits)
        if len(x) > 1:
            ax.set_xlim(x[0], x[-1])
        ax.set_xlabel(panel.description.x_label)
        ax.set_ylabel(axis_label(left) + (" (log scale)" if options.log else ""), color=LOSS_COLOR)
        if accuracy_ax is not None:
            accuracy_ax.set_ylim(*ACCURACY_LIMITS)
            accuracy_ax.set_ylabel(axis_label(ACCURACY), color=ACCURACY_COLOR)
    heading = left.label
    if with_accuracy and left.name != ACCURACY.name:
        heading = f"{left.label} and {ACCURACY.label}"
    heading += f" (log-scale {left.label})" if options.log else ""
    heading, panel_titles = titles(
        heading,
        [panel.label for panel in panels],
        [panel.description.subject for panel in panels],
        [_note(panel, options) for panel in panels],
    )
    figure.suptitle(heading, fontsize=10)
    for ax, title in zip(loss_axes, panel_titles, strict=True):
        ax.set_title(title, fontsize=8)
    handles = _legend_handles(panels, curves, left)
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    return figure


def _mark_unconverged(ax: Axes, panel: Panel) -> None:
    """An 'x' on the panel's curve at each point whose solver did not converge.

    The curve of the panel's own column: `panel.values` are its values as drawn (masked,
    clipped at zmax), and only points it shows can carry a mark.
    """
    if panel.convergence is None or primary_metric(panel) != panel.column.metric:
        return
    marked = panel.convergence.flagged & ~np.ma.getmaskarray(panel.values)
    if not marked.any():
        return
    x, values = panel.surface.x[marked], panel.values.data[marked]
    ax.plot(x, values, linestyle="", zorder=4, gid="unconverged", **UNCONVERGED_STYLE)


def standard_errors(panel: Panel, split: str) -> np.ndarray | None:
    """The stored standard errors of `split`'s loss, when the left axis is the loss and the
    file holds them."""
    if primary_metric(panel).name != LOSS.name:
        return None
    for column in panel.surface.columns.values():
        if column.split == split and column.metric.name == LOSS_SE.name:
            return panel.surface.metrics[column.name]
    return None


def _draw_standard_errors(
    ax: Axes, panel: Panel, split: str, drawn: np.ma.MaskedArray, color: str
) -> None:
    """±1 standard error bars on a split's loss curve, at the points it shows unclipped."""
    errors = standard_errors(panel, split)
    if errors is None:
        return
    stored = panel.surface.metrics[f"{split}_{LOSS.name}"]
    with np.errstate(invalid="ignore"):
        # Not at a hidden point, nor where --zmax drew the value lower than it is.
        shown = ~np.ma.getmaskarray(drawn) & (drawn.filled(np.nan) == stored)
    if not shown.any():
        return
    ax.errorbar(
        panel.surface.x[shown],
        stored[shown],
        yerr=np.nan_to_num(errors[shown], nan=0.0),
        fmt="none",
        ecolor=color,
        elinewidth=0.8,
        capsize=0,
        gid="standard_error",
    )


def primary_metric(panel: Panel) -> Metric:
    """The metric on the left axis: the panel's own, but loss when that is accuracy (which
    has the right axis), so `--metric test_acc` still draws the standard figure."""
    metric = panel.column.metric
    if metric.name != ACCURACY.name:
        return metric
    stored = panel.surface.columns.values()
    return next((column.metric for column in stored if column.metric.name == LOSS.name), metric)


def curve_columns(panel: Panel) -> dict[str, tuple[Column, Column | None]]:
    """{split: (left-axis column, accuracy column or None)}, splits train, test, then others."""
    left = primary_metric(panel)
    stored = panel.surface.columns.values()
    on_left = {column.split: column for column in stored if column.metric.name == left.name}
    accuracy = {
        column.split: column
        for column in stored
        if column.metric.name == ACCURACY.name and left.name != ACCURACY.name
    }
    order = {split: rank for rank, split in enumerate(SPLIT_STYLES)}  # train, then test
    splits = sorted(on_left, key=lambda split: (order.get(split, len(order)), split))
    return {split: (on_left[split], accuracy.get(split)) for split in splits}


def _curves(
    panel: Panel, options: PlotOptions
) -> dict[str, tuple[np.ma.MaskedArray, np.ma.MaskedArray | None]]:
    """{split: (left-axis values, accuracy)} with hidden points masked (gaps in the lines)."""
    metrics, done = panel.surface.metrics, panel.surface.done
    found = {}
    for split, (left, accuracy) in curve_columns(panel).items():
        values, _, _ = mask_hidden(metrics[left.name], done, options.log, options.zmax)
        found[split] = (
            values,
            None if accuracy is None else mask_hidden(metrics[accuracy.name], done, False, None)[0],
        )
    return found


def axis_label(metric: Metric) -> str:
    """'loss', 'accuracy (%)': a value axis's title."""
    return f"{metric.label} ({metric.unit})" if metric.unit else metric.label


def _note(panel: Panel, options: PlotOptions) -> str:
    """How complete the curve is, whether --zmax clipped any left-axis value, and how many
    points did not converge."""
    notes = [completeness(panel.surface)]
    done = panel.surface.done.astype(bool)
    drawn = [panel.surface.metrics[left.name] for left, _ in curve_columns(panel).values()]
    if options.zmax is not None and any(np.any(values[done] > options.zmax) for values in drawn):
        label = primary_metric(panel).label
        notes.append(f"{label} above {options.zmax:g} drawn at {options.zmax:g}")
    notes.append(unconverged_note(panel))
    return "; ".join(note for note in notes if note)


def _status(panel: Panel, curves: dict) -> np.ndarray:
    """Not computed where not done; not finite where any drawn line has a gap at a done point."""
    status = np.where(panel.surface.done, SHOWN, NOT_COMPUTED).astype(np.int8)
    for line in (line for pair in curves.values() for line in pair if line is not None):
        status[(status == SHOWN) & np.ma.getmaskarray(line)] = NOT_FINITE
    return status


def _shade_hidden(ax: Axes, x: np.ndarray, status: np.ndarray) -> None:
    """Grey (not computed) and pink (inf/NaN) bands over each run of hidden points."""
    if len(x) < 2:
        return
    # Each point owns the interval between the midpoints to its neighbours.
    middles = (x[1:] + x[:-1]) / 2
    edges = np.concatenate([[x[0]], middles, [x[-1]]])
    for code, color in ((NOT_COMPUTED, NOT_COMPUTED_COLOR), (NOT_FINITE, NOT_FINITE_COLOR)):
        hidden = np.concatenate([[False], status == code, [False]]).astype(np.int8)
        starts = np.flatnonzero(np.diff(hidden) == 1)
        stops = np.flatnonzero(np.diff(hidden) == -1)
        for start, stop in zip(starts, stops, strict=True):
            ax.axvspan(edges[start], edges[stop], color=color, alpha=0.6, linewidth=0, zorder=0)


def _loss_limits(
    losses: Sequence[np.ma.MaskedArray],
    options: PlotOptions,
    fixed: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """One y-range for the left axes of every panel, with a little room around the data.

    `--ymax` (plot_1D.py's loss_max) fixes the top, and a linear axis starts at 0 (lower
    only for negative values, as an eigenvalue's); curves above it leave the axes.
    A metric with a `fixed` range (the ratio's 0 to 0.5) is drawn on it, on a linear scale,
    reaching further up only when the data do.
    """
    shown = np.concatenate([loss.compressed() for loss in losses]) if losses else np.array([])
    if options.ymax is not None:  # the reference's loss_max: from 0 (log: the data) up to it
        if not options.log:
            return min(0.0, float(shown.min()) if shown.size else 0.0), options.ymax
        low = float(shown.min()) if shown.size else options.ymax / 100
        return min(low, options.ymax / 10) / 1.05, options.ymax
    if fixed is not None and not options.log:
        high = float(shown.max()) if shown.size else fixed[1]
        return fixed[0], fixed[1] if high <= fixed[1] else high + 0.05 * (high - fixed[0])
    if shown.size == 0:
        return (0.1, 10.0) if options.log else (0.0, 1.0)
    low, high = float(shown.min()), float(shown.max())
    if options.log:
        ratio = max(high / low, 1.1) ** 0.05
        return low / ratio, high * ratio
    margin = 0.05 * (high - low) if high > low else 0.05 * max(abs(high), 1.0)
    return low - margin, high + margin


def _legend_handles(panels: Sequence[Panel], curves: Sequence[dict], left: Metric) -> list[Artist]:
    handles: list[Artist] = []
    splits = list(dict.fromkeys(split for panel in curves for split in panel))
    for split in splits:
        style = SPLIT_STYLES.get(split, ":")
        label = f"{split} {left.label}"
        handles.append(Line2D([], [], color=LOSS_COLOR, linestyle=style, label=label))
    if any(standard_errors(panel, split) is not None for panel in panels for split in splits):
        handles.append(
            Line2D([], [], color=LOSS_COLOR, marker="|", linestyle="", label="±1 standard error")
        )
    for split in splits:
        if any(panel[split][1] is not None for panel in curves if split in panel):
            style = SPLIT_STYLES.get(split, ":")
            label = f"{split} {ACCURACY.label}"
            handles.append(Line2D([], [], color=ACCURACY_COLOR, linestyle=style, label=label))
    statuses = [_status(panel, found) for panel, found in zip(panels, curves, strict=True)]
    if any(np.any(status == NOT_COMPUTED) for status in statuses):
        handles.append(Patch(color=NOT_COMPUTED_COLOR, alpha=0.6, label="not computed"))
    if any(np.any(status == NOT_FINITE) for status in statuses):
        handles.append(Patch(color=NOT_FINITE_COLOR, alpha=0.6, label="inf or NaN"))
    flag_label = unconverged_label(panels)
    if flag_label is not None:
        handles.append(Line2D([], [], linestyle="", label=flag_label, **UNCONVERGED_STYLE))
    return handles


def draw_overlaid_curves(panels: Sequence[Panel], options: PlotOptions) -> Figure:
    """One checkpoint's curves along several seeds' directions, overlaid: loss on top,
    accuracy below (when stored), a color per panel (named by its label, 'seed N' for
    `--compare seeds`), train solid and test dashed. One axes per quantity, so the spread
    between seeds is seen directly."""
    left = primary_metric(panels[0])
    curves = [_curves(panel, options) for panel in panels]
    with_accuracy = any(accuracy is not None for panel in curves for _, accuracy in panel.values())
    width, height = PANEL_SIZE
    figure = Figure(
        figsize=(width + 0.8, height * (1.7 if with_accuracy else 1.0) + 0.9),
        dpi=DPI,
        layout="constrained",
    )
    rows = 2 if with_accuracy else 1
    axes = list(figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0])
    loss_ax = axes[0]
    accuracy_ax = axes[1] if with_accuracy else None
    for index, (panel, panel_curves) in enumerate(zip(panels, curves, strict=True)):
        color = f"C{index % 10}"  # matplotlib's ten distinct colors
        x = panel.surface.x
        for split, (loss, accuracy) in panel_curves.items():
            style = SPLIT_STYLES.get(split, ":")
            name = f"{panel.label} {split}"
            loss_ax.plot(x, loss, color=color, linestyle=style, label=f"{name} {left.label}")
            _draw_standard_errors(loss_ax, panel, split, loss, color)
            if accuracy is not None and accuracy_ax is not None:
                accuracy_ax.plot(
                    x, accuracy, color=color, linestyle=style, label=f"{name} {ACCURACY.label}"
                )
        _mark_unconverged(loss_ax, panel)
    losses = [loss for panel in curves for loss, _ in panel.values()]
    loss_ax.set_ylim(*_loss_limits(losses, options, default_range(left)))
    if options.log:
        loss_ax.set_yscale("log")
    loss_ax.set_ylabel(axis_label(left) + (" (log scale)" if options.log else ""))
    x = panels[0].surface.x
    if len(x) > 1:
        loss_ax.set_xlim(x[0], x[-1])
    if accuracy_ax is not None:
        accuracy_ax.set_ylim(*ACCURACY_LIMITS)
        accuracy_ax.set_ylabel(axis_label(ACCURACY))
    axes[-1].set_xlabel(panels[0].description.x_label)
    subjects = [panel.description.subject for panel in panels]
    heading = left.label if accuracy_ax is None else f"{left.label} and {ACCURACY.label}"
    lines = [heading, *dict.fromkeys(subjects)]  # what they share, said once
    notes = [f"{panel.label}: {_note(panel, options)}" for panel in panels if _note(panel, options)]
    figure.suptitle("\n".join(lines + notes), fontsize=10)
    handles: list[Artist] = [
        Line2D([], [], color=f"C{index % 10}", label=panel.label)
        for index, panel in enumerate(panels)
    ]
    splits = list(dict.fromkeys(split for panel in curves for split in panel))
    handles += [
        Line2D([], [], color="black", linestyle=SPLIT_STYLES.get(split, ":"), label=split)
        for split in splits
    ]
    flag_label = unconverged_label(panels)
    if flag_label is not None:
        handles.append(Line2D([], [], linestyle="", label=flag_label, **UNCONVERGED_STYLE))
    figure.legend(
        handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8
    )
    return figure
