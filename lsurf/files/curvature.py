"""The curvature columns of a surface, as the figures and `lsurf info` read them.

A sweep with `hessian.eigenvalues: true` stores at every point λmax and λmin of the Hessian
(`max_eig`, `min_eig`), the relative residual each reached and the Hessian-vector products
spent (lsurf.metrics.CURVATURE); the reference code's files hold `max_eig`/`min_eig` alone.
This module owns what is read from those columns rather than stored in them:

- `eig_ratio` = |λmin / λmax|, the reference's map of where convexity is real: near 0 the
  negative curvature is negligible beside the positive one (the reference draws it on a
  fixed 0 to 0.5 scale, `RATIO_RANGE`); a derived column, added when a file is read;
- the solver's settings, from the `hessian:` section of the config the surface stores;
- which done points did not converge: a residual above that section's `tol` means the
  solver stopped on its product budget, so λ there is only an estimate and is flagged.

Input: a `Surface` (lsurf.files.surface). Output: plain values (numpy arrays, frozen dataclasses);
no matplotlib and no torch, so `lsurf info` uses it as the plots do.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lsurf.files.surface import Surface
from lsurf.metrics import (
    EIG_PRODUCTS,
    MAX_EIG,
    MAX_EIG_RESIDUAL,
    MIN_EIG,
    MIN_EIG_RESIDUAL,
    Column,
    Metric,
)

# "derived": computed from other columns when a file is read, never stored. Not ranked: a
# lowest ratio is no best point, only a place where the surface looks convex.
EIG_RATIO = Metric("eig_ratio", "|λmin/λmax|", "", "derived", ranked=False, per_split=False)
RATIO_RANGE = (0.0, 0.5)  # the reference's color scale for the ratio (vmin, vmax)
RATIO_LEVELS = 21  # levels over RATIO_RANGE: steps of 0.025

BOTH_RESIDUALS = (MAX_EIG_RESIDUAL, MIN_EIG_RESIDUAL)
# Which residuals vouch for a column's value: each eigenvalue its own; the ratio and the
# product count both (products run out exactly when either Ritz value has not converged).
_RESIDUALS: dict[str, tuple[Metric, ...]] = {
    MAX_EIG.name: (MAX_EIG_RESIDUAL,),
    MAX_EIG_RESIDUAL.name: (MAX_EIG_RESIDUAL,),
    MIN_EIG.name: (MIN_EIG_RESIDUAL,),
    MIN_EIG_RESIDUAL.name: (MIN_EIG_RESIDUAL,),
    EIG_RATIO.name: BOTH_RESIDUALS,
    EIG_PRODUCTS.name: BOTH_RESIDUALS,
}


@dataclass(frozen=True)
class SolverSettings:
    """The stored config's `hessian:` section, as far as the surface's values depend on it."""

    split: str
    params: str  # 'weights' (tensors of more than one dimension) or 'all'
    tol: float  # a point converged when its relative residual is at most this
    max_products: int

    def describe(self) -> str:
        return (
            f"Hessian of the mean {self.split} loss ({self.params}), Lanczos tol {self.tol:g}, "
            f"at most {self.max_products} products per point"
        )


@dataclass(frozen=True, eq=False)
class Convergence:
    """Which points of a surface did not converge, judged against the stored tol."""

    flagged: np.ndarray  # bool, the grid's shape: done points with a residual above tol
    tol: float

    @property
    def count(self) -> int:
        return int(self.flagged.sum())


def column_of(surface: Surface, metric: Metric) -> Column | None:
    """The surface's column of `metric` (found by its row's name, not the dataset's), if any."""
    return next(
        (column for column in surface.columns.values() if column.metric.name == metric.name),
        None,
    )


def eig_ratio(largest: np.ndarray, smallest: np.ndarray) -> np.ndarray:
    """|λmin / λmax| elementwise; NaN where either is NaN, inf where λmax is 0 (both hidden
    by the plots as not finite)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(smallest / largest)


def with_ratio(surface: Surface) -> Surface:
    """The surface with the derived `eig_ratio` column when it holds λmax and λmin.

    A stored column named `eig_ratio` (a later lsurf's) is left as it is.
    """
    largest, smallest = column_of(surface, MAX_EIG), column_of(surface, MIN_EIG)
    if largest is None or smallest is None or EIG_RATIO.name in surface.metrics:
        return surface
    column = Column(largest.split, EIG_RATIO)
    values = eig_ratio(surface.metrics[largest.name], surface.metrics[smallest.name])
    return dataclasses.replace(
        surface,
        metrics={**surface.metrics, column.name: values},
        columns={**surface.columns, column.name: column},
    )


def derived_names(surface: Surface) -> list[str]:
    """The names of the columns `with_ratio` would add to this surface."""
    return [name for name in with_ratio(surface).metrics if name not in surface.metrics]


def default_range(metric: Metric) -> tuple[float, float] | None:
    """The fixed value range a metric is drawn on by default (the ratio's), else None."""
    return RATIO_RANGE if metric.name == EIG_RATIO.name else None


def solver_settings(surface: Surface) -> SolverSettings | None:
    """The solver settings of the stored config; None when it has no usable `hessian:`
    section (the reference code's files, files from before curvature existed)."""
    section = surface.config.get("hessian")
    if not isinstance(section, dict):
        return None
    tol, products = section.get("tol"), section.get("max_products")
    # YAML gives bool for `yes`, and bool is an int: neither setting can be one.
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not math.isfinite(tol):
        return None
    if isinstance(products, bool) or not isinstance(products, int):
        return None
    return SolverSettings(
        split=str(section.get("split", "train")),
        params=str(section.get("params", "weights")),
        tol=float(tol),
        max_products=products,
    )


def residuals_of(surface: Surface, metric_name: str) -> tuple[Metric, ...]:
    """The residual rows that vouch for the column `metric_name` of the surface (none for a
    column that no solver produced)."""
    column = surface.columns.get(metric_name)
    return () if column is None else _RESIDUALS.get(column.metric.name, ())


def unconverged(surface: Surface, residuals: Sequence[Metric]) -> Convergence | None:
    """The done points where any of the `residuals` exceeds the stored tol.

    None when there is nothing to judge by: no tol stored, or none of those residual columns
    (the reference's files have neither). A NaN residual (a point whose loss was not finite)
    is not flagged: its eigenvalues are NaN and shown as such.
    """
    settings = solver_settings(surface)
    found = [column for metric in residuals if (column := column_of(surface, metric))]
    if settings is None or not found:
        return None
    flagged = np.zeros(surface.done.shape, bool)
    for column in found:
        flagged |= surface.metrics[column.name] > settings.tol  # NaN compares False
    return Convergence(flagged & surface.done.astype(bool), settings.tol)
