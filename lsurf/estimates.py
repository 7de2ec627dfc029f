"""The mean of a measure's unit results and its standard error (lsurf sharpness).

Standard library only, so the job (lsurf.sharpness, with torch) and the file's readers
(lsurf.files.sharpness, `lsurf info`, without) combine units with the same code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lsurf.errors import LsurfError


@dataclass(frozen=True)
class Estimate:
    """A measure's value over its units and the standard error of that mean."""

    value: float
    standard_error: float  # sample std (n − 1) / √n; NaN from one unit: no spread to read


def mean_and_error(values: Sequence[float]) -> Estimate:
    """The mean of `values` and its standard error, sample std (n − 1) / √n, NaN for n = 1.
    Sums are exactly rounded (fsum), so the result does not depend on how values were summed."""
    if not values:
        raise LsurfError("no unit results to combine; compute at least one unit first")
    count = len(values)
    mean = math.fsum(values) / count
    if count == 1:
        return Estimate(mean, math.nan)
    variance = math.fsum((value - mean) ** 2 for value in values) / (count - 1)
    return Estimate(mean, math.sqrt(variance / count))


def average_case_estimate(draw_losses: Sequence[float], at_origin: float) -> Estimate:
    """Average-case sharpness from each draw's L(θ + δ) and L(θ): the mean of the differences,
    and their sample standard deviation over √samples."""
    return mean_and_error([draw - at_origin for draw in draw_losses])


def m_sharpness_estimate(unit_sharpness: Sequence[float]) -> Estimate:
    """m-sharpness from each batch's worst-case sharpness: their mean, and its standard error."""
    return mean_and_error(unit_sharpness)
