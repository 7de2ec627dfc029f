"""The (alpha, beta) grid: axis specs, coordinates, and which points are still to do.

Input: 'min:max:num' specs for x and optionally y ('auto:num' on a PCA plane: the range is
fitted to the training path once it is known, see `fit_axis`). Output: coordinates (float64, as
np.linspace gives them) and flat point indices. A point's flat index k is row-major over the
surface arrays, so k ↔ [i, j] with i = k // ny, j = k % ny: element [i, j] of every surface
array is the point (x[i], y[j]), on square and non-square grids alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lsurf.errors import ConfigError


@dataclass(frozen=True)
class Axis:
    """One grid axis: `num` evenly spaced values from `start` to `stop` inclusive."""

    start: float
    stop: float
    num: int

    @property
    def spec(self) -> str:
        return f"{_shortest(self.start)}:{_shortest(self.stop)}:{self.num}"

    def coordinates(self) -> np.ndarray:
        return np.linspace(self.start, self.stop, self.num, dtype=np.float64)


@dataclass(frozen=True)
class AutoAxis:
    """'auto:num': `num` points over a range fitted to a PCA trajectory's path (`fit_axis`)."""

    num: int

    @property
    def spec(self) -> str:
        return f"auto:{self.num}"


AUTO_MARGIN = 0.1  # of the path's extent, added on each side of a fitted axis


def fit_axis(values: np.ndarray, num: int) -> Axis:
    """An axis over `values` and 0 (the swept model) with a margin, rounded outward.

    The bounds are multiples of a tenth of the range's order of magnitude, so they read
    well in titles and configs: a path from -2.3 to 35 gives '-7:39'.
    """
    low = min(float(np.min(values)), 0.0)
    high = max(float(np.max(values)), 0.0)
    extent = high - low
    if not extent > 0:
        extent = 1.0  # a path that never leaves the origin: a small window around it
    low -= AUTO_MARGIN * extent
    high += AUTO_MARGIN * extent
    exponent = math.floor(math.log10(high - low)) - 1
    step = 10.0**exponent
    digits = max(0, -exponent)
    # Rounded before floor/ceil so that float noise (0.30000000000000004) adds no step.
    start = round(math.floor(round(low / step, 6)) * step, digits)
    stop = round(math.ceil(round(high / step, 6)) * step, digits)
    return Axis(start, stop, num)


def _shortest(value: float) -> str:
    """The shortest text that reads back as exactly `value` ('-1', '0.1', '1e-05')."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


AXIS_HINT = (
    "{key} must be 'min:max:num' with min < max and num >= 2 (e.g. '-1:1:51'), or 'auto:num' "
    "on a PCA plane"
)


def parse_axis(spec: str, key: str = "axis") -> Axis:
    """Parse 'min:max:num' (e.g. '-1:1:51') into an Axis; malformed specs raise ConfigError."""
    hint = AXIS_HINT.format(key=key)
    parts = spec.split(":")
    if len(parts) != 3:
        raise ConfigError(f"{hint}; got {spec!r}")
    try:
        start, stop = float(parts[0]), float(parts[1])
        num = int(parts[2])
    except ValueError:
        raise ConfigError(f"{hint}; got {spec!r}") from None
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise ConfigError(f"{hint}; got {spec!r} (bounds must be finite)")
    if num == 1 and start == stop:
        return Axis(start, stop, 1)  # a single point, e.g. a slice at alpha = 0
    if num < 2 or not start < stop:
        raise ConfigError(f"{hint}; got {spec!r}")
    return Axis(start, stop, num)


def parse_auto_axis(spec: str, key: str = "axis") -> AutoAxis:
    """Parse 'auto:num' (e.g. 'auto:51'); anything else raises ConfigError."""
    hint = AXIS_HINT.format(key=key)
    parts = spec.split(":")
    if len(parts) != 2 or parts[0] != "auto":
        raise ConfigError(f"{hint}; got {spec!r}")
    try:
        num = int(parts[1])
    except ValueError:
        raise ConfigError(f"{hint}; got {spec!r}") from None
    if num < 2:
        raise ConfigError(f"{hint}; got {spec!r}")
    return AutoAxis(num)


# The shapes a 1D sweep's points can follow through the plane of its directions, t being its
# x coordinate: "line", the point (t, 0); and the two curves of mode connectivity (Garipov et
# al. 2018) through a bend C on the three-checkpoint plane (1 − a − b)·A + a·B + b·C:
# "bezier", (1 − t)²·A + 2t(1 − t)·C + t²·B, the point (t², 2t(1 − t)); "polychain", A → C for
# t ≤ 1/2 and C → B after, the point (0, 2t), then (2t − 1, 2 − 2t). Both are A at t = 0 and
# B at t = 1 exactly.
PATHS = ("line", "bezier", "polychain")


def path_point(path: str, t: float) -> tuple[float, float]:
    """The plane coordinates (a, b) of the point at t along `path` (one of PATHS)."""
    if path == "line":
        return t, 0.0
    if path == "bezier":
        return t * t, 2.0 * t * (1.0 - t)
    if path == "polychain":
        return (0.0, 2.0 * t) if t <= 0.5 else (2.0 * t - 1.0, 2.0 - 2.0 * t)
    raise ValueError(f"unknown path {path!r}; valid: {', '.join(PATHS)}")


@dataclass(frozen=True)
class Grid:
    """The sweep's points: x coordinates, and y coordinates for a 2D surface. A 1D grid's
    points may follow a curve through the plane (`path`, see PATHS) rather than the x axis."""

    x: np.ndarray  # (nx,) float64
    y: np.ndarray | None  # (ny,) float64, or None for a 1D curve
    path: str = "line"  # 1D only: what t = x[i] means on the plane

    @classmethod
    def from_axes(cls, x: Axis, y: Axis | None, path: str = "line") -> Grid:
        assert path == "line" or y is None, "a path is a 1D sweep's"
        return cls(x.coordinates(), None if y is None else y.coordinates(), path)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.x),) if self.y is None else (len(self.x), len(self.y))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def coordinates(self, index: int) -> tuple[float, float]:
        """(a, b) of flat point `index`; b is 0.0 on a 1D grid."""
        if self.y is None:
            return path_point(self.path, float(self.x[index]))
        i, j = divmod(index, len(self.y))
        return float(self.x[i]), float(self.y[j])


def pending(done: np.ndarray) -> np.ndarray:
    """Flat indices (int64, ascending) of the points whose `done` flag is still false."""
    return np.flatnonzero(~done.reshape(-1)).astype(np.int64)
