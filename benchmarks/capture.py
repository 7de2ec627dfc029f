"""Benchmark: what lsurf.Capture costs a training run.

The setting of the issue: ResNet-20 on CIFAR-10 (50,000 training images, batches of 128, SGD
with momentum), a capture of an 11 × 11 plane on 1,000 examples every 5 epochs. Both sides are
measured in this run on the same machine: the seconds of a training step (timed over a
number of steps, after a warm-up) times the steps of an epoch, and one whole capture, timed.
The overhead is capture / (every × epoch). Images are random tensors of CIFAR's shape: the
cost of a forward pass does not depend on the pixels.

Run: .venv/bin/python benchmarks/capture.py [--grid 11] [--examples 1000] [--every 5]
     [--steps 20] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lsurf import models
from lsurf.capture import Capture

TRAIN_IMAGES = 50_000


def step_seconds(model: torch.nn.Module, batch: int, steps: int) -> float:
    """Mean seconds of an SGD step on one batch, after two warm-up steps."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    inputs, targets = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    model.train()

    def one() -> None:
        loss = F.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(2):
        one()
    start = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--grid", type=int, default=11, help="points per axis of the plane")
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="training steps timed")
    parser.add_argument("--quick", action="store_true", help="a 3x3 plane on 200 examples")
    args = parser.parse_args()
    if args.quick:
        args.grid, args.examples, args.steps = 3, 200, 3
    torch.manual_seed(0)
    model = models.build(args.model)
    per_step = step_seconds(model, args.batch, args.steps)
    steps_per_epoch = -(-TRAIN_IMAGES // args.batch)
    epoch = per_step * steps_per_epoch
    generator = torch.Generator().manual_seed(1)
    data = (
        torch.randn(args.examples, 3, 32, 32, generator=generator),
        torch.randint(0, 10, (args.examples,), generator=generator),
    )
    axis = f"-1:1:{args.grid}"
    with tempfile.TemporaryDirectory() as folder:
        capture = Capture(
            Path(folder) / "run.h5", data, every=args.every, x=axis, y=axis, examples=None
        )
        start = time.perf_counter()
        capture(model, args.every)
        seconds = time.perf_counter() - start
    points = args.grid * args.grid
    overhead = seconds / (args.every * epoch)
    print(f"lsurf.Capture on {args.model}, {torch.get_num_threads()} threads")
    print(
        f"  training   {per_step * 1000:8.1f} ms a step of {args.batch}  x {steps_per_epoch} "
        f"steps = {epoch:7.1f} s an epoch of {TRAIN_IMAGES:,} images"
    )
    print(
        f"  capture    {seconds:8.1f} s for {args.grid}x{args.grid} points on {args.examples:,} "
        f"examples ({seconds / points * 1000:.0f} ms a point, "
        f"{points * args.examples / seconds:,.0f} images/s)"
    )
    print(
        f"  overhead   {100 * overhead:8.1f} % of training with a capture every {args.every} "
        f"epochs (target 5 %); every {max(1, round(args.every * overhead / 0.05))} epochs "
        "keeps it at 5 %"
    )


if __name__ == "__main__":
    main()
