"""Benchmark: PCA over a long trajectory of a large model stays within its memory budget.

Writes `--checkpoints` synthetic checkpoints of a model with `--parameters` float32 weights
(default: 11M parameters, as ResNet-18/VGG-sized models, and 60 checkpoints: 2.6 GB on disk;
the paper-sized 300 checkpoints need 13 GB of disk and are only a flag away), then computes
the PCA plane with a 1 GiB block budget and prints the time, the peak resident memory of the
process, and what holding the whole k x n matrix would have taken instead.

Run: .venv/bin/python benchmarks/pca_memory.py [--parameters 11000000] [--checkpoints 60]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch

from lsurf.checkpoint import save_checkpoint
from lsurf.pca import principal_plane, trajectory_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parameters", type=int, default=11_000_000)
    parser.add_argument("--checkpoints", type=int, default=60)
    parser.add_argument("--budget-mib", type=int, default=1024)
    args = parser.parse_args()

    # A model-like layout: a few large conv-shaped tensors and some biases.
    layer = args.parameters // 8
    shapes = {f"layer{i}.weight": (layer // 576, 64, 3, 3) for i in range(8)}
    shapes |= {f"layer{i}.bias": (layer // 576,) for i in range(8)}
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        generator = torch.Generator().manual_seed(0)
        final = {key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}
        directions = [
            {key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}
            for _ in range(3)
        ]
        started = time.perf_counter()
        for index in range(args.checkpoints):
            # Points near a plane, with a little out-of-plane noise.
            t = 1.0 - index / (args.checkpoints - 1)
            state = {
                key: final[key]
                + t * directions[0][key]
                + t * t * directions[1][key]
                + 0.01 * t * directions[2][key]
                for key in shapes
            }
            save_checkpoint(folder / f"model_{index}.pt", state, epoch=index)
        written = time.perf_counter() - started
        files = trajectory_files(folder)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        plane = principal_plane(final, files, "biasbn", memory_bytes=args.budget_mib << 20)
        elapsed = time.perf_counter() - started

    parameters = sum(value.numel() for value in final.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    whole = parameters * args.checkpoints * 4 / 2**30
    print(
        f"{parameters / 1e6:.1f}M parameters x {args.checkpoints} checkpoints "
        f"(written in {written:.0f}s)"
    )
    print(
        f"PCA with a {args.budget_mib} MiB block budget: {elapsed:.0f}s, "
        f"peak resident memory {peak:.0f} MiB ({before:.0f} MiB before it, from writing the "
        f"checkpoints); the whole matrix in float32 would be {whole:.1f} GiB"
    )
    ratio = plane.explained_variance_ratio
    print(f"explained variance ratio {ratio[0]:.4f}, {ratio[1]:.4f}")


if __name__ == "__main__":
    main()
