"""Benchmark: the sweep's cost per point against a plain PyTorch forward loop, in one run.

Prints seconds per point for (a) `lsurf sweep`'s serial path — moving the weights, evaluating,
writing and flushing the surface file — and (b) a bare loop that evaluates the same model on the
same cached data with the same settings; their ratio is lsurf's overhead (target ≤ 1.05 on CPU).
Both are medians over single points, measured in alternating blocks (bare, sweep, bare, sweep),
so a burst of load from elsewhere on a shared machine moves neither figure much. The sweep's
per-point time is the gap between consecutive progress callbacks, which fire after each point
is written and flushed: start-up (imports, data loading, directions) is not counted.
It also prints resident memory after each block and the peak, to show that memory does not
grow from point to point.

With --precision bf16 (or tf32 on a GPU) it also sweeps the same points in that precision
and prints its speed-up and its largest relative loss error against fp32.

Run: .venv/bin/python benchmarks/sweep_overhead.py [--model resnet20] [--subset 2000]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from lsurf import models
from lsurf.checkpoint import save_checkpoint
from lsurf.config import load_sweep_config
from lsurf.data import REFERENCE_MEAN, REFERENCE_STD, load_split
from lsurf.store import read_surface
from lsurf.sweep import run_sweep
from lsurf.synth import write_synthetic


def resident_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sweep_point_times(
    folder: Path,
    checkpoint: Path,
    args: argparse.Namespace,
    block: int | str,
    precision: str = "fp32",
) -> list[float]:
    """Run a 1 x points sweep; return the seconds each point took (evaluate + write + flush)."""
    config = {
        "model": {"name": args.model, "checkpoint": str(checkpoint)},
        "data": {
            "root": str(folder),
            "splits": ["train"],
            "batch_size": args.batch_size,
            "subset": args.subset,
        },
        "grid": {"x": f"-1:1:{args.points + 1}"},
        "evaluation": {"precision": precision},
        "output": str(folder / f"surface{block}.h5"),
    }
    path = folder / f"sweep{block}.yaml"
    path.write_text(yaml.safe_dump(config))
    stamps: list[float] = []
    # log_every=1: the callback runs after every point; the first call is the
    # "starting" line, after set-up, so gaps between calls are whole points.
    run_sweep(
        load_sweep_config(path),
        log=lambda _: stamps.append(time.perf_counter()),
        log_every=1,
    )
    # stamps: start line, one per point, then "surface written"; drop the first point (warm-up).
    points = stamps[1:-1]
    return [later - earlier for earlier, later in zip(points[:-1], points[1:], strict=True)]


@torch.inference_mode()
def bare_point_times(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    alphas: list[float],
) -> list[float]:
    """Seconds per point of the plainest code: set θ* + a·d, forward, cross-entropy, argmax."""
    parameters = dict(model.named_parameters())
    origin = {name: tensor.clone() for name, tensor in parameters.items()}
    torch.manual_seed(1)
    direction = {
        name: torch.randn_like(tensor) * 0.1 * (tensor.dim() > 1)
        for name, tensor in parameters.items()
    }
    times = []
    for alpha in alphas:
        started = time.perf_counter()
        for name, tensor in parameters.items():
            tensor.copy_(origin[name] + alpha * direction[name])
        loss, correct = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.int64)
        for start in range(0, len(labels), batch_size):
            logits = model(images[start : start + batch_size])
            target = labels[start : start + batch_size]
            loss += F.cross_entropy(logits, target, reduction="sum")
            correct += (logits.argmax(1) == target).sum()
        loss.item(), correct.item()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--subset", type=int, default=2000, help="images evaluated per point")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--points", type=int, default=5, help="points per block")
    parser.add_argument("--blocks", type=int, default=4, help="alternating blocks of each")
    parser.add_argument(
        "--precision", choices=["bf16", "tf32"], help="also measure this opt-in's speed and error"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        write_synthetic(folder, train_size=args.subset, test_size=10)
        torch.manual_seed(0)
        model = models.build(args.model)
        checkpoint = folder / "model.pt"
        save_checkpoint(checkpoint, model.state_dict())

        # The bare loop: same model, same cached data, same layout and batch size.
        split = load_split(folder, "train", REFERENCE_MEAN, REFERENCE_STD, args.subset)
        model = model.to(memory_format=torch.channels_last).eval()
        images = split.images.contiguous(memory_format=torch.channels_last)
        alphas = [float(a) for a in torch.linspace(-1, 1, args.points + 1)[1:]]
        bare_point_times(model, images, split.labels, args.batch_size, [0.0])  # warm-up
        bare: list[float] = []
        swept: list[float] = []
        memory = []
        for block in range(args.blocks):
            bare += bare_point_times(model, images, split.labels, args.batch_size, alphas)
            swept += sweep_point_times(folder, checkpoint, args, block)
            memory.append(resident_mib())
        if args.precision:
            lower = sweep_point_times(folder, checkpoint, args, "lower", args.precision)
            reference = read_surface(folder / "surface0.h5").metrics["train_loss"]
            rounded = read_surface(folder / "surfacelower.h5").metrics["train_loss"]
            error = float(np.max(np.abs(rounded - reference) / np.abs(reference)))

    bare_median, sweep_median = statistics.median(bare), statistics.median(swept)
    print(
        f"model {args.model}, {args.subset} images per point, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, device cpu"
    )
    print(
        f"bare forward loop   {bare_median:.4f} s/point median of {len(bare)} "
        f"({args.subset / bare_median:.0f} images/s)"
    )
    print(
        f"lsurf sweep         {sweep_median:.4f} s/point median of {len(swept)} "
        f"({args.subset / sweep_median:.0f} images/s)"
    )
    print(f"ratio sweep/bare    {sweep_median / bare_median:.3f}  (target <= 1.05)")
    if args.precision:
        median = statistics.median(lower)
        print(
            f"{args.precision:18s}  {median:.4f} s/point ({sweep_median / median:.2f}x fp32), "
            f"largest relative loss error vs fp32 {error:.2e}"
        )
    blocks = ", ".join(f"{value:.0f}" for value in memory)
    print(
        f"resident memory     {blocks} MiB after each block of {args.points} points; "
        f"peak {peak_mib():.0f} MiB"
    )


if __name__ == "__main__":
    main()
