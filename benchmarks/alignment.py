"""Benchmark: the seconds weight matching takes to align two networks (lsurf.align).

For each model, two randomly initialised copies (seeds 1 and 2) are aligned with
`match_weights`, on the CPU, a few times over; printed are the unit spaces, the passes to
convergence, the median seconds to read the graph (torch.fx tracing and the shape probe) and
of the whole alignment, and the aligned B's output error against B's on a
batch of 8 images, relative to B's largest output.

Run: .venv/bin/python benchmarks/alignment.py [--models mlp_small resnet20] [--repeats 3]
(the default takes a few seconds on 2 cores; densenet121 about 5 s an alignment)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lsurf import models
from lsurf.align import find_unit_spaces, match_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp_small", "resnet20"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models:
        torch.manual_seed(1)
        first = models.build(name).eval()
        torch.manual_seed(2)
        second = models.build(name).eval()
        parameters = sum(parameter.numel() for parameter in first.parameters())
        state_a, state_b = first.state_dict(), second.state_dict()

        find_unit_spaces(first)  # once untimed: torch.fx's lazy imports on the first call
        readings, seconds = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            spaces = find_unit_spaces(first)
            readings.append(time.perf_counter() - started)
            started = time.perf_counter()
            alignment = match_weights(first, state_a, state_b)
            seconds.append(time.perf_counter() - started)

        aligned = models.build(name).eval()
        aligned.load_state_dict(alignment.state_dict)
        inputs = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = second(inputs)
            error = float((aligned(inputs) - expected).abs().max() / expected.abs().max())
        print(
            f"{name}: {parameters / 1e6:.2f}M parameters, {len(spaces.sizes)} unit spaces; "
            f"{alignment.iterations} passes (converged: {alignment.converged}); graph read in "
            f"{statistics.median(readings):.3f}s, aligned in {statistics.median(seconds):.3f}s "
            f"(the graph included; medians of {args.repeats}); output error {error:.1e}"
        )


if __name__ == "__main__":
    main()
