"""The barrier of a path between two minima (Frankle et al. 2020, "Linear Mode Connectivity and
the Lottery Ticket Hypothesis"): how far a metric along the path rises above the straight
line between its two end values.

For values v(t) at t_0 = 0 < ... < t_n = 1 (a path's points, ends included), the barrier is

    max_i  v(t_i) − ((1 − t_i)·v(0) + t_i·v(1)),

attained at t* (the first such t_i); it is 0 at both ends, so a barrier is never negative, and
exactly 0 for a path whose values lie on or under that line (A to A: every value is v(0)).

Its standard error, where the values have one (a loss's `{split}_loss_se`), is
√(se(t*)² + (1 − t*)²·se(0)² + t*²·se(1)²): the error of that difference taken as if the
three estimates were independent. Points of one split that stop early share their first
examples, so their errors are positively correlated and the true error of the difference is
smaller: this one is an upper bound. A point that used every example has SE 0 (it is the
split's mean), so without early stopping every barrier's SE is 0.

The error rate (100 − accuracy, in percent) has no stored SE; where a point used n of N
examples (`{split}_examples`) its SE is the binomial 100·√(p(1 − p)/(n − 1)) of its error
rate p without the finite-population factor (again an upper bound), 0 where n = N.

Plain numpy: `lsurf info` reads barriers without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# A barrier's fields, in the order a connect file stores them (lsurf.files.connect).
FIELDS = ("barrier", "se", "t", "start", "end")


@dataclass(frozen=True)
class Barrier:
    height: float  # max over t of v(t) − the line between v(0) and v(1); NaN if any v is NaN
    error: float  # its standard error (see the module docstring); NaN where none is known
    t: float  # where the maximum is reached (the first t where it is)
    start: float  # v(0)
    end: float  # v(1)

    def as_row(self) -> list[float]:
        return [self.height, self.error, self.t, self.start, self.end]

    @classmethod
    def from_row(cls, row: np.ndarray) -> Barrier:
        return cls(*(float(value) for value in row))


def barrier(t: np.ndarray, values: np.ndarray, errors: np.ndarray | None = None) -> Barrier:
    """The barrier of `values` at points `t` (increasing, from exactly 0 to exactly 1) and,
    with the values' standard `errors`, its standard error."""
    t = np.asarray(t, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    assert t.ndim == 1 and len(t) >= 2 and t[0] == 0.0 and t[-1] == 1.0, "ends included"
    start, end = float(values[0]), float(values[-1])
    if not np.all(np.isfinite(values)):
        return Barrier(math.nan, math.nan, math.nan, start, end)
    above = values - ((1.0 - t) * start + t * end)
    above[0] = above[-1] = 0.0  # exactly: (1 − 0)·v(0) is v(0), but 0·v(0) + 1·v(1) rounds
    peak = int(np.argmax(above))
    height = float(above[peak])
    error = math.nan
    if errors is not None:
        errors = np.asarray(errors, dtype=np.float64)
        at = float(t[peak])
        variance = errors[peak] ** 2 + (1 - at) ** 2 * errors[0] ** 2 + at**2 * errors[-1] ** 2
        error = math.sqrt(variance) if peak not in (0, len(t) - 1) else 0.0
        if not math.isfinite(variance):
            error = math.nan
    return Barrier(height, error, float(t[peak]), start, end)


def error_rate_errors(
    accuracy: np.ndarray, examples: np.ndarray | None, size: int | None
) -> np.ndarray:
    """The standard errors of the error rates 100 − accuracy (percent): 0 where a point used
    the whole split (no `examples`, or n = `size`), else binomial over the n it used."""
    accuracy = np.asarray(accuracy, dtype=np.float64)
    if examples is None:
        return np.zeros_like(accuracy)
    n = np.asarray(examples, dtype=np.float64)
    p = 1.0 - accuracy / 100.0
    with np.errstate(divide="ignore", invalid="ignore"):
        error = 100.0 * np.sqrt(p * (1.0 - p) / (n - 1.0))
    error = np.where(n <= 1, math.nan, error)
    if size is not None:
        error = np.where(n >= size, 0.0, error)
    return error
