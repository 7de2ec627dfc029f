"""The trainer: `python -m mylab.train OUT.pt [--steps N] [--size N]`.

Trains SignalNet on the train split of the synthetic signals with Adam and the smoothed
cross-entropy, for a fixed number of steps on the CPU (a few seconds), from a fixed seed, and
saves {'state_dict': ..., 'steps': ..., 'test_accuracy': ...} with torch.save: the layout
lsurf's `model.checkpoint` reads.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from mylab.data import signals
from mylab.losses import smoothed_cross_entropy
from mylab.models import SignalNet

BATCH_SIZE = 64
LEARNING_RATE = 0.01
SEED = 0


def train(steps: int, size: int) -> tuple[SignalNet, float]:
    """A model trained for `steps` batches of the train split (`size` examples), and its
    accuracy on the test split."""
    torch.manual_seed(SEED)  # the initial weights
    model = SignalNet()
    train_split = signals("train", size=size)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    order = torch.Generator().manual_seed(SEED)  # which examples form each batch
    model.train()
    for step in range(1, steps + 1):
        chosen = torch.randint(0, len(train_split), (BATCH_SIZE,), generator=order)
        loss = smoothed_cross_entropy(
            model(train_split.signals[chosen]), train_split.labels[chosen]
        ).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps:
            print(f"step {step:4d}  train loss {loss.item():.4f}")
    model.eval()
    test_split = signals("test", size=size)
    with torch.no_grad():
        predicted = model(test_split.signals).argmax(dim=1)
    return model, (predicted == test_split.labels).float().mean().item()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mylab.train", description=__doc__)
    parser.add_argument("output", type=Path, help="the checkpoint to write, e.g. model.pt")
    parser.add_argument("--steps", type=int, default=300, help="training batches (default 300)")
    parser.add_argument("--size", type=int, default=1000, help="examples per split")
    args = parser.parse_args(argv)

    # One thread: a model this small trains fastest on one, and the run then repeats bit
    # for bit whatever the machine's core count (threads change the order of float sums).
    torch.set_num_threads(1)
    model, accuracy = train(args.steps, args.size)
    print(f"test accuracy {accuracy:.3f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target, then renamed: an interrupted save leaves no half a file.
    partial = args.output.with_name(args.output.name + ".partial")
    torch.save(
        {"state_dict": model.state_dict(), "steps": args.steps, "test_accuracy": accuracy},
        partial,
    )
    os.replace(partial, args.output)
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
