"""Benchmark: a causal language model's sweep in fp32 and in bf16 (autocast), side by side in
one run on the same tokens and grid: the bf16 forward's speed and the error it costs.

The tiny plain-torch transformer (lsurf.models.language; `--vocab`, `--d-model`, `--layers`,
`--heads`, context `--tokens`) evaluates `--sequences` random token sequences of `--tokens`
ids, some padded at their end (a quarter of the sequences cut to half length), with the
`causal_lm` loss, at `--points` points of a filter-normalized random line over [-1, 1]
(biases and norms fixed), `--batch-size` sequences at a time in `--threads` threads. Two
`Evaluator`s, fp32 and bf16, are warmed up at θ* and then visit each point in turn (fp32,
bf16, then the next point), so a burst of load elsewhere hits both alike.

Printed: per precision the best and median seconds per point, the per-point time ratio
fp32/bf16 of the best ones (> 1: bf16 faster), and the largest relative difference of the
bf16 loss from the fp32 one over the line. bf16 rounds the weights and activations to 8
mantissa bits while the log-softmax and the sums stay fp32/float64, so the error is the
forward's rounding, not the loss's. On CPU without bf16 matrix units the bf16 forward is
often slower: the ratio says so rather than assuming.

Run: .venv/bin/python benchmarks/causal_lm.py [--points 5] [--sequences 256] [--tokens 64]
     [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lsurf import params
from lsurf.data.tokens import with_targets
from lsurf.directions import random_directions
from lsurf.evaluate import Evaluator, pick_device
from lsurf.losses import build_loss
from lsurf.models.language import TinyTransformer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=5)
    parser.add_argument("--sequences", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    device = pick_device(arguments.device)

    torch.manual_seed(0)
    model = TinyTransformer(
        arguments.vocab, arguments.d_model, arguments.layers, arguments.heads, arguments.tokens
    )
    pad = arguments.vocab - 1
    ids = torch.randint(0, pad, (arguments.sequences, arguments.tokens))
    ids[: arguments.sequences // 4, arguments.tokens // 2 :] = pad  # a quarter padded
    split = with_targets(ids, pad, "benchmark tokens")
    weights = {key: tensor.detach() for key, tensor in params.movable(model, False).items()}
    directions = random_directions(weights, "filter", "biasbn", 0, plane=False)
    evaluators = {
        precision: Evaluator(
            model,
            directions,
            {"train": split},
            arguments.batch_size,
            device,
            precision=precision,
            loss=build_loss("causal_lm"),
        )
        for precision in ("fp32", "bf16")
    }
    for evaluator in evaluators.values():
        evaluator.evaluate(0.0, 0.0)  # warm-up
    times: dict[str, list[float]] = {precision: [] for precision in evaluators}
    losses: dict[str, list[float]] = {precision: [] for precision in evaluators}
    line = torch.linspace(-1, 1, arguments.points).tolist()
    for a in line:
        for precision, evaluator in evaluators.items():
            started = time.perf_counter()
            values = evaluator.evaluate(a, 0.0)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[precision].append(time.perf_counter() - started)
            losses[precision].append(values["train_loss"])
    print(
        f"causal LM: tiny transformer (vocab {arguments.vocab}, d_model {arguments.d_model}, "
        f"{arguments.layers} layers), {arguments.sequences} sequences x {arguments.tokens} "
        f"tokens, {arguments.points} points, {device.type}, {arguments.threads} threads"
    )
    for precision in evaluators:
        best, median = min(times[precision]), statistics.median(times[precision])
        print(f"  {precision}: best {best:.4f} s/point, median {median:.4f} s/point")
    ratio = min(times["fp32"]) / min(times["bf16"])
    error = max(
        abs(rounded - exact) / abs(exact)
        for exact, rounded in zip(losses["fp32"], losses["bf16"], strict=True)
    )
    print(f"  per-point time ratio fp32/bf16: {ratio:.2f}x")
    print(f"  bf16 loss relative error (largest over the line): {error:.2e}")


if __name__ == "__main__":
    main()
