"""Benchmark: the sweep's cost per point against a plain PyTorch forward loop, in one run.

Prints seconds per point for (a) a bare loop that evaluates the model on cached tensors, (b)
`lsurf sweep`'s serial path on the same data held as one tensor on the device (the cached path,
`data.cache_mb` at its default) — moving the weights, evaluating, writing and flushing the
surface file — and (c) the same sweep with the split streamed through a DataLoader at every
point (`data.cache_mb: 0`), once per `--workers` count. Their ratios to (a) are lsurf's overhead
(target ≤ 1.05 on CPU for the cached path; the "lsurf sweep" and "ratio sweep/bare" lines are
that path). All are medians over single points, measured in alternating blocks (bare, cached,
streamed, bare, cached, streamed, ...), so a burst of load from elsewhere on a shared machine
moves no figure much. A sweep's per-point time is the gap between consecutive progress
callbacks, which fire after each point is written and flushed: start-up (imports, data loading,
directions, forking DataLoader workers) and the first point of each sweep are not counted.

Cached and streamed sweeps evaluate the same grid with the same directions, so their surface
files must hold the same bits; the script compares every column at every point, prints the
result and exits with status 1 if they differ. It also prints resident memory after each block
and the peak, to show that memory does not grow from point to point.

With --precision bf16 (or tf32 on a GPU) it also sweeps the same points in that precision
(cached) and prints its speed-up and its largest relative loss error against fp32.

Run: .venv/bin/python benchmarks/sweep_overhead.py [--model resnet20] [--subset 2000]
     [--workers 0 2] [--device auto]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from lsurf import models
from lsurf.checkpoint import save_checkpoint
from lsurf.config import load_sweep_config
from lsurf.data.cifar import load_split
from lsurf.data.layouts import REFERENCE_MEAN, REFERENCE_STD
from lsurf.data.synthetic import write_synthetic
from lsurf.evaluate import configure_backends, pick_device
from lsurf.files.surface import read_surface
from lsurf.run.sweep import run_sweep

LABEL_WIDTH = 20  # the column where figures start, as in the lines docs/benchmarks.md quotes


def resident_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sweep_point_times(
    folder: Path,
    checkpoint: Path,
    args: argparse.Namespace,
    name: str,
    precision: str = "fp32",
    data: dict[str, Any] | None = None,
) -> list[float]:
    """Run a 1 x points sweep into surface{name}.h5; return the seconds each point took
    (evaluate + write + flush). `data` adds keys to the data section (cache_mb, workers)."""
    config = {
        "model": {"name": args.model, "checkpoint": str(checkpoint)},
        "data": {
            "root": str(folder),
            "splits": ["train"],
            "batch_size": args.batch_size,
            "subset": args.subset,
            **(data or {}),
        },
        "grid": {"x": f"-1:1:{args.points + 1}"},
        "evaluation": {"device": args.device, "precision": precision},
        "output": str(folder / f"surface{name}.h5"),
    }
    path = folder / f"sweep{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    stamps: list[float] = []
    # log_every=1: the callback runs after every point; the first call is the
    # "starting" line, after set-up, so gaps between calls are whole points.
    run_sweep(
        load_sweep_config(path),
        log=lambda _: stamps.append(time.perf_counter()),
        log_every=1,
    )
    # stamps: start line, one per point, then "surface written"; drop the first point (warm-up:
    # for a streamed split it also starts the DataLoader's worker processes).
    points = stamps[1:-1]
    return [later - earlier for earlier, later in zip(points[:-1], points[1:], strict=True)]


@torch.inference_mode()
def bare_forward(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> float:
    """The mean cross-entropy of `model` as it is, by the plainest loop (and the argmax, the
    accuracy lsurf measures beside the loss); benchmarks/evaluation_speed.py uses it too."""
    loss = torch.zeros((), dtype=torch.float64, device=images.device)
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    for start in range(0, len(labels), batch_size):
        logits = model(images[start : start + batch_size])
        targets = labels[start : start + batch_size]
        loss += F.cross_entropy(logits, targets, reduction="sum")
        correct += (logits.argmax(1) == targets).sum()
    correct.item()  # waits for the device: the point is finished
    return loss.item() / len(labels)


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
        bare_forward(model, images, labels, batch_size)
        times.append(time.perf_counter() - started)
    return times


def largest_difference(reference: Path, other: Path) -> float:
    """The largest relative difference between two surface files' values, over every column
    and point (0.0: the same bits; NaN and inf must sit at the same points)."""
    expected = read_surface(reference).metrics
    found = read_surface(other).metrics
    assert expected.keys() == found.keys(), "both sweeps measure the same columns"
    largest = 0.0
    for column, values in expected.items():
        if np.array_equal(values, found[column], equal_nan=True):
            continue
        difference = np.abs(found[column] - values) / np.maximum(np.abs(values), 1e-30)
        largest = max(largest, float(np.nanmax(difference)))
    return largest


def speed_line(label: str, times: list[float], subset: int) -> str:
    median = statistics.median(times)
    return (
        f"{label:{LABEL_WIDTH}s}{median:.4f} s/point median of {len(times)} "
        f"({subset / median:.0f} images/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--subset", type=int, default=2000, help="images evaluated per point")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--points", type=int, default=5, help="points per block")
    parser.add_argument("--blocks", type=int, default=4, help="alternating blocks of each")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="*",
        default=[0, 2],
        help="data.workers of each streamed sweep (none: measure the cached path only)",
    )
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="as evaluation.device"
    )
    parser.add_argument(
        "--precision", choices=["bf16", "tf32"], help="also measure this opt-in's speed and error"
    )
    args = parser.parse_args()
    device = pick_device(args.device)

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        write_synthetic(folder, train_size=args.subset, test_size=10)
        torch.manual_seed(0)
        model = models.build(args.model)
        checkpoint = folder / "model.pt"
        save_checkpoint(checkpoint, model.state_dict())

        # The bare loop: same model, same cached data, same layout, batch size and backend
        # settings as the sweep's evaluator (fp32 convolutions, deterministic cuDNN).
        configure_backends("fp32")
        split = load_split(folder, "train", REFERENCE_MEAN, REFERENCE_STD, args.subset)
        model = model.to(device=device, memory_format=torch.channels_last).eval()
        images = split.images.to(device).contiguous(memory_format=torch.channels_last)
        labels = split.labels.to(device)
        alphas = [float(a) for a in torch.linspace(-1, 1, args.points + 1)[1:]]
        bare_point_times(model, images, labels, args.batch_size, [0.0])  # warm-up
        bare: list[float] = []
        cached: list[float] = []
        streamed: dict[int, list[float]] = {workers: [] for workers in args.workers}
        differences: dict[int, float] = {workers: 0.0 for workers in args.workers}
        memory = []
        for block in range(args.blocks):
            bare += bare_point_times(model, images, labels, args.batch_size, alphas)
            cached += sweep_point_times(folder, checkpoint, args, str(block))
            for workers in args.workers:
                name = f"{block}-streamed{workers}"
                streamed[workers] += sweep_point_times(
                    folder, checkpoint, args, name, data={"cache_mb": 0, "workers": workers}
                )
                difference = largest_difference(
                    folder / f"surface{block}.h5", folder / f"surface{name}.h5"
                )
                differences[workers] = max(differences[workers], difference)
            memory.append(resident_mib())
        if args.precision:
            lower = sweep_point_times(folder, checkpoint, args, "lower", args.precision)
            reference = read_surface(folder / "surface0.h5").metrics["train_loss"]
            rounded = read_surface(folder / "surfacelower.h5").metrics["train_loss"]
            error = float(np.max(np.abs(rounded - reference) / np.abs(reference)))

    bare_median, cached_median = statistics.median(bare), statistics.median(cached)
    print(
        f"model {args.model}, {args.subset} images per point, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, device {device.type}"
    )
    print(speed_line("bare forward loop", bare, args.subset))
    print(speed_line("lsurf sweep", cached, args.subset))  # the cached path
    print(f"ratio sweep/bare    {cached_median / bare_median:.3f}  (target <= 1.05)")
    for workers, times in streamed.items():
        print(speed_line(f"streamed, {workers} workers", times, args.subset))
        print(
            f"ratio streamed/bare {statistics.median(times) / bare_median:.3f}  ({workers} workers)"
        )
    differing = {workers: value for workers, value in differences.items() if value}
    if args.workers:
        points = args.blocks * (args.points + 1)
        if not differing:
            counts = " and ".join(str(workers) for workers in args.workers)
            print(
                f"streamed vs cached  identical values (every column) at all {points} points "
                f"of {args.blocks} blocks, {counts} workers"
            )
        for workers, value in differing.items():
            print(
                f"streamed vs cached  DIFFER with {workers} workers: largest relative "
                f"difference {value:.2e} over {points} points"
            )
    if args.precision:
        median = statistics.median(lower)
        print(
            f"{args.precision:18s}  {median:.4f} s/point ({cached_median / median:.2f}x fp32), "
            f"largest relative loss error vs fp32 {error:.2e}"
        )
    blocks = ", ".join(f"{value:.0f}" for value in memory)
    print(
        f"resident memory     {blocks} MiB after each block of {args.points} points; "
        f"peak {peak_mib():.0f} MiB"
    )
    if differing:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
