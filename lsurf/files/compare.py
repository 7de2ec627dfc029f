"""`lsurf compare`: how far two surfaces of the same grid are apart, metric by metric.

Made for checking lsurf's numbers against a surface the reference code wrote (read through
`lsurf.files.reference`, reordered into lsurf's layout) or against another lsurf run (a different
rank count, precision or version). Input: two `Surface` values. Output: a few lines of
text — per metric present in both, the points done in both, the largest absolute and
relative difference and where it is — and the largest relative difference, which the CLI
can hold against a tolerance. A point is compared where both files have it done; NaN/inf
compare equal when both are the same non-finite value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsurf.errors import LsurfError
from lsurf.files.surface import Surface, read_surface

# Below this magnitude a reference value is treated as 0 for the relative difference.
TINY = 1e-12


@dataclass(frozen=True)
class MetricDifference:
    name: str
    points: int  # done in both files
    largest: float  # max |a − b|
    relative: float  # max |a − b| / max(|b|, TINY)
    where: tuple[float, ...] | None  # the coordinates of the largest relative difference


def compare_surfaces(first: Surface, second: Surface) -> list[MetricDifference]:
    """Per metric in both, the differences of `first` from `second` where both are done."""
    _check_same_grid(first, second)
    names = [name for name in first.metrics if name in second.metrics]
    if not names:
        raise LsurfError(
            f"{first.path} and {second.path} share no metric "
            f"({', '.join(first.metrics)} vs {', '.join(second.metrics)})"
        )
    both = first.done & second.done
    found = []
    for name in names:
        a, b = first.metrics[name][both], second.metrics[name][both]
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        gap = np.where(same, 0.0, np.abs(a - b))
        gap = np.where(np.isnan(gap), np.inf, gap)  # one NaN, the other not: as far as can be
        relative = gap / np.maximum(np.abs(np.nan_to_num(b, nan=0.0, posinf=0.0)), TINY)
        relative = np.where(gap == 0, 0.0, relative)
        where = None
        if gap.size and relative.max() > 0:
            flat = np.flatnonzero(both)[int(np.argmax(relative))]
            where = _coordinates(first, flat)
        found.append(
            MetricDifference(
                name,
                int(both.sum()),
                float(gap.max()) if gap.size else 0.0,
                float(relative.max()) if gap.size else 0.0,
                where,
            )
        )
    return found


def describe_comparison(first_path: Path, second_path: Path) -> tuple[str, float]:
    """The report of `lsurf compare`, and the largest relative difference of any metric."""
    first, second = read_surface(first_path), read_surface(second_path)
    differences = compare_surfaces(first, second)
    shape = "×".join(str(size) for size in first.done.shape)
    both = int((first.done & second.done).sum())
    lines = [
        f"comparing {first_path} with {second_path}: grid {shape}, {both} points done in both",
        f"{'metric':<16}{'points':>8}{'max |a-b|':>14}{'max rel':>12}  at",
    ]
    for difference in differences:
        where = (
            ""
            if difference.where is None
            else "(" + ", ".join(f"{value:g}" for value in difference.where) + ")"
        )
        lines.append(
            f"{difference.name:<16}{difference.points:>8}{difference.largest:>14.3g}"
            f"{difference.relative:>12.3g}  {where}"
        )
    worst = max((difference.relative for difference in differences), default=0.0)
    return "\n".join(lines), worst


def _check_same_grid(first: Surface, second: Surface) -> None:
    for axis in ("x", "y"):
        a, b = getattr(first, axis), getattr(second, axis)
        if (a is None) != (b is None) or (
            a is not None and (a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=1e-9))
        ):
            raise LsurfError(
                f"{first.path} and {second.path} are not on the same grid ({axis}: "
                f"{_describe_axis(a)} vs {_describe_axis(b)}); compare surfaces of one grid"
            )


def _describe_axis(values: np.ndarray | None) -> str:
    if values is None:
        return "none"
    return f"{len(values)} points {values[0]:g}..{values[-1]:g}"


def _coordinates(surface: Surface, flat: int) -> tuple[float, ...]:
    if surface.y is None:
        return (float(surface.x[flat]),)
    i, j = np.unravel_index(flat, surface.done.shape)
    return float(surface.x[i]), float(surface.y[j])
