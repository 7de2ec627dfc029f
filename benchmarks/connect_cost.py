"""Benchmark: what a point on a connect path costs under each `connect.bn` mode.

On two ResNet-20s (seeds 0 and 1, random initialization with BN statistics moved off their
initial values) and synthetic CIFAR-shaped data (`--train` train images, `--test` test images,
N(0, 1) pixels, random labels, fixed seeds), it builds the evaluator a connect path uses
(lsurf.run.connect: θ* = A, the end point B in the directions) once per mode and times
`evaluate(t, 0)` at `--points` values of t: keep (the weights move, BN statistics stay A's),
interpolate (the statistics move with the weights) and recompute (every point re-estimates
them in train mode over `--bn-examples` train examples before evaluating). Modes alternate
point by point (keep, interpolate, recompute, keep, ...) so a burst of load from elsewhere
moves no ratio much; it prints the median seconds per point of each mode and the ratios to
keep. recompute's extra cost is about bn_examples / (examples evaluated) forward passes in
train mode.

Run: .venv/bin/python benchmarks/connect_cost.py [--train 2000] [--test 1000]
     [--bn-examples 2000] [--points 5] [--batch-size 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch

from lsurf import models, params
from lsurf.data.splits import CachedSplit
from lsurf.directions import target_direction
from lsurf.evaluate import Evaluator, NormStatistics

MODES = ("keep", "interpolate", "recompute")


def model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    network = models.build("resnet20")
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return network.eval()


def split(name: str, images: int, seed: int) -> CachedSplit:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(images, 3, 32, 32, generator=generator)
    targets = torch.randint(0, 10, (images,), generator=generator)
    return CachedSplit(name, 10, inputs.contiguous(memory_format=torch.channels_last), targets)


def evaluator(
    mode: str, args: argparse.Namespace, train: CachedSplit, test: CachedSplit
) -> Evaluator:
    start_model, end_model = model(0), model(1)
    moves_buffers = mode == "interpolate"
    start = params.movable(start_model, include_buffers=moves_buffers)
    directions = target_direction(start, end_model.state_dict())
    directions = dataclasses.replace(directions, moves_buffers=moves_buffers)
    statistics_ = None
    if mode == "recompute":
        statistics_ = NormStatistics(train, "train", args.bn_examples, 0)
    return Evaluator(
        start_model,
        directions,
        {"train": train, "test": test},
        args.batch_size,
        torch.device("cpu"),
        norm_statistics=statistics_,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--bn-examples", type=int, default=2000)
    parser.add_argument("--points", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = split("train", args.train, 1), split("test", args.test, 2)
    evaluators = {mode: evaluator(mode, args, train, test) for mode in MODES}
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    for t in np.linspace(0.0, 1.0, args.points):
        for mode in MODES:
            started = time.perf_counter()
            evaluators[mode].evaluate(float(t), 0.0)
            seconds[mode].append(time.perf_counter() - started)
    print(
        f"ResNet-20, {args.train} train + {args.test} test images, batch {args.batch_size}, "
        f"{args.threads} threads, bn_examples {args.bn_examples}, {args.points} points"
    )
    keep = statistics.median(seconds["keep"])
    for mode in MODES:
        median = statistics.median(seconds[mode])
        print(f"  bn: {mode:<12} {median:7.3f} s per point   {median / keep:5.2f}x keep")


if __name__ == "__main__":
    main()
