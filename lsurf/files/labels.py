"""The words on a figure: what was plotted, read from the resolved config a surface stores.

Input: a `Surface` (its `attributes["config"]` YAML and its projected training path, if
any). Output: a `Description` with the subject line (model, directions, normalization,
split, grid) and the axis labels, so every figure says what it shows without the file name.
A plane carrying a path says on each axis the share of the path's variance that axis
captures: "1st PC: 84.3 %" on a PCA plane, "α (direction 1) · 0.21 % of the path's
variance" on any other kind (directions not chosen to follow the path capture little).
What a value axis shows is its column's own label (`lsurf.metrics.Column.label`: 'train
loss', 'test accuracy (%)', or the stored label and unit of a metric lsurf does not know).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from lsurf import kinds
from lsurf.files.surface import Surface

_ORDINALS = ("1st", "2nd")
PCA_KIND = "pca"  # lsurf.kinds.pca's name: its axes are the path's principal components


@dataclass(frozen=True)
class Description:
    subject: str  # 'resnet56 · random directions, filter-normalized, biases/BN fixed'
    x_label: str
    y_label: str  # '' for 1D surfaces


def describe(surface: Surface) -> Description:
    config = surface.config
    model = config.get("model") or {}
    directions = config.get("directions") or {}
    kind = directions.get("kind")
    parts = [str(model.get("name", "unknown model"))]
    if surface.attributes.get("written_by"):
        parts = [f"{surface.path.name} (written by {surface.attributes['written_by']})"]
    else:
        parts.append(kinds.described(kind).subject(directions))
    subset = (config.get("data") or {}).get("subset")
    if subset:
        parts.append(f"{subset} examples per split")
    shape = "×".join(str(n) for n in surface.done.shape)
    parts.append(f"{shape} points")
    subject = " · ".join(parts)

    checkpoint = str(model.get("checkpoint") or "")
    x_label, y_label = kinds.described(kind).axis_labels(directions, checkpoint)
    if surface.trajectory is not None:
        ratios = surface.trajectory.explained_variance_ratio
        if kind in (None, PCA_KIND):
            # Each PCA axis says how much of the path's variance it captures (the paper's
            # Fig. 9); files from before stored configs carried a path on PCA planes only.
            x_label, y_label = (
                f"{_ORDINALS[axis]} PC: {100 * ratios[axis]:.1f} %" for axis in range(2)
            )
        else:
            # Any other plane: the path projected onto directions not chosen to follow it;
            # its share of the path's variance says how much of the path the plane shows
            # (for random directions, a fraction of a percent).
            x_label, y_label = (
                f"{label} · {variance_share(ratio)} of the path's variance"
                for label, ratio in zip((x_label, y_label), ratios, strict=True)
            )
    runs = surface.runs
    if runs is not None and runs.explained_variance_ratio is not None:
        # The PCA plane of several runs: its axes' share of all their checkpoints' variance
        # (each run's own share is in `lsurf info`).
        x_label, y_label = (
            f"{_ORDINALS[axis]} PC: {100 * runs.explained_variance_ratio[axis]:.1f} % (all runs)"
            for axis in range(2)
        )
    return Description(subject, x_label, y_label if surface.y is not None else "")


def variance_share(ratio: float) -> str:
    """A fraction as a percentage readable at any size: '12.3 %', '0.21 %', '0.0042 %'."""
    percent = 100 * ratio
    if percent >= 1 or percent == 0:
        return f"{percent:.1f} %"
    return f"{percent:.2g} %"


def completeness(surface: Surface) -> str:
    """'1234/2601 points done' for a partial surface, '' for a complete one."""
    done, total = int(surface.done.sum()), int(surface.done.size)
    return "" if done == total else f"{done}/{total} points done"


def titles(
    heading: str, labels: Sequence[str], subjects: Sequence[str], notes: Sequence[str]
) -> tuple[str, list[str]]:
    """The figure's title and each panel's: what all panels share is said once, on top.

    `labels` name the files (shown only when there are several), `subjects` say what was
    swept, `notes` say how complete each panel is and what was clipped.
    """
    shared = len(set(subjects)) == 1
    # About 65 characters of 9-point text fit a panel's width; wrap rather than crop.
    figure_title = (
        "\n".join([heading, *textwrap.wrap(subjects[0], 65 * len(labels))]) if shared else heading
    )
    panel_titles = []
    for label, subject, note in zip(labels, subjects, notes, strict=True):
        lines = [label] if len(labels) > 1 else []
        if not shared:
            lines += textwrap.wrap(subject, 65)
        lines.append(note)
        panel_titles.append("\n".join(line for line in lines if line))
    return figure_title, panel_titles
