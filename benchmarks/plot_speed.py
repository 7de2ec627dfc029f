"""Benchmark: `lsurf plot` draws the standard set of a 1001×1001 surface in under a minute.

Writes a fake surface file of `--size`² points (default 1001: a million points) with the
lsurf.files.surface's own `create_surface`, fills it with a rough landscape (a bowl with ripples and
noise, so the contours are long and tangled, the costly case) whose far corner is still to
do and a few points inf, as a partial sweep's file is; then times the real command,
`python -m lsurf plot FILE` (the four 2D figures as PNG), end to end in a fresh process, and
the exports (`--format vtk,html`) separately. Target: the standard set under 60 s on 2 cores.

Run: .venv/bin/python benchmarks/plot_speed.py [--size 1001] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import yaml

from lsurf.files.surface import create_surface
from lsurf.grid import Axis, Grid
from lsurf.metrics import columns

TARGET_SECONDS = 60.0


def write_fake_surface(path: Path, size: int) -> None:
    axis = Axis(-1.0, 1.0, size)
    grid = Grid.from_axes(axis, axis)
    config = {
        "model": {"name": "resnet56", "checkpoint": "/bench/final.pt", "num_classes": 10},
        "data": {"root": "/bench/data", "splits": ["train", "test"], "subset": None},
        "grid": {"x": axis.spec, "y": axis.spec},
        "directions": {"kind": "random", "norm": "filter", "ignore": "biasbn", "seed": 0},
    }
    attributes = {"config": yaml.safe_dump(config, sort_keys=False), "direction_file": ""}
    create_surface(path, grid, columns(["train", "test"]), attributes).close()

    a, b = np.meshgrid(grid.x, grid.y, indexing="ij")
    noise = np.random.default_rng(0).normal(0.0, 0.05, a.shape)
    loss = 0.1 + 3 * a**2 + 5 * b**2 + 0.4 * np.sin(9 * a) * np.cos(7 * b) ** 2 + noise
    done = np.ones(grid.shape, bool)
    done[int(0.8 * size) :, int(0.7 * size) :] = False  # the corner a running sweep has not done
    loss[5, 5] = np.inf  # a diverged point
    # Direct writes into the file create_surface made (record() goes point by point).
    with h5py.File(path, "r+") as h5file:
        for name, values in {
            "train_loss": loss,
            "test_loss": 1.1 * loss,
            "train_acc": 100 * np.exp(-loss),
            "test_acc": 90 * np.exp(-loss),
        }.items():
            h5file[name][...] = np.where(done, values, np.nan)
        h5file["done"][...] = done


def time_command(arguments: list[str], repeats: int) -> tuple[float, str]:
    """Median wall-clock seconds of `python -m lsurf ...` in a fresh process, and its output."""
    times, output = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "lsurf", *arguments], capture_output=True, text=True
        )
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"lsurf {' '.join(arguments)} failed:\n{result.stderr}")
        output = result.stdout
    return statistics.median(times), output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1001, help="points per axis")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as temporary:
        surface = Path(temporary) / "surface.h5"
        start = time.perf_counter()
        write_fake_surface(surface, args.size)
        print(
            f"fake surface {args.size}x{args.size} written in {time.perf_counter() - start:.1f} s"
        )
        seconds, output = time_command(["plot", str(surface)], args.repeats)
        sizes = ", ".join(
            f"{Path(line).name} {Path(line).stat().st_size // 1024} KiB" for line in output.split()
        )
        verdict = "ok" if seconds < TARGET_SECONDS else "TOO SLOW"
        print(
            f"standard set (4 PNG)   {seconds:6.1f} s median of {args.repeats} on {cores} cores "
            f"(target < {TARGET_SECONDS:.0f} s: {verdict})\n  {sizes}"
        )
        seconds, output = time_command(["plot", str(surface), "--format", "vtk,html"], args.repeats)
        sizes = ", ".join(
            f"{Path(line).name} {Path(line).stat().st_size // 2**20} MiB" for line in output.split()
        )
        print(f"exports (vtu + html)   {seconds:6.1f} s median of {args.repeats}\n  {sizes}")


if __name__ == "__main__":
    main()
