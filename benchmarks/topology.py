"""Benchmark: the seconds `lsurf.topology.analyse` takes on large grids.

Three 1001 × 1001 surfaces (about a million points each): a smooth landscape (a bowl with
three Gaussian wells), the same with noise at 1% of its range (thousands of shallow minima),
and pure noise (a minimum every few points: the worst case, every edge between regions); for
each, the median seconds of a few analyses at the default threshold (5% of the range), the
local minima found and the basins left. The issue's target is a 1001 × 1001 grid's merge tree
in at most 5 s on a 2-core machine.

Run: .venv/bin/python benchmarks/topology.py [--side 1001] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from lsurf.topology import analyse


def surfaces(side: int) -> dict[str, np.ndarray]:
    axis = np.linspace(-3.0, 3.0, side)
    a, b = np.meshgrid(axis, axis, indexing="ij")
    smooth = 0.05 * (a**2 + b**2)
    for depth, (ca, cb) in ((1.0, (-1.0, 0.0)), (0.7, (1.2, 0.8)), (0.5, (0.5, -1.5))):
        smooth -= depth * np.exp(-((a - ca) ** 2 + (b - cb) ** 2) / 0.6)
    generator = np.random.default_rng(0)
    spread = float(np.ptp(smooth))
    return {
        "smooth": smooth,
        "smooth + 1% noise": smooth + 0.01 * spread * generator.standard_normal(smooth.shape),
        "pure noise": generator.standard_normal(smooth.shape),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=1001)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"lsurf.topology.analyse on {args.side} x {args.side} grids (4-neighbour), median of "
        f"{args.repeats}"
    )
    print(f"  {'surface':<20} {'seconds':>8} {'minima':>9} {'basins':>7}")
    for name, values in surfaces(args.side).items():
        threshold = 0.05 * float(np.ptp(values))
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            found = analyse(values, threshold)
            seconds.append(time.perf_counter() - started)
        print(
            f"  {name:<20} {statistics.median(seconds):>8.2f} {len(found.birth):>9,} "
            f"{len(found.basins):>7,}"
        )


if __name__ == "__main__":
    main()
