"""The side-by-side evaluation benchmark (benchmarks/evaluation_speed.py) at CI size: a tiny
network, a few examples, no compile. Its speed figures mean nothing here; its structure and
its accuracy figures must hold: the exact fp32 variants agree with the unfolded eager loss to
1e-5 at every point, and early stopping reports examples and coverage that can be true."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "evaluation_speed.py"
LABEL_WIDTH = 28  # the script's label column
EXAMPLES, STOPPING_EXAMPLES, MIN_EXAMPLES, GRID = 64, 256, 64, 3
EXACT = ["bare eager forward", "lsurf folded"]  # each held to 1e-5 against the reference


def rows(text: str, header: str) -> dict[str, list[str]]:
    """The table under the line starting with `header`: label -> the figures after it."""
    lines = text.split(header, 1)[1].splitlines()[2:]  # past the header and column names
    table = {}
    for line in lines:
        if not line[:LABEL_WIDTH].strip():
            break  # the table's closing note
        table[line[:LABEL_WIDTH].strip()] = line[LABEL_WIDTH:].split()
    return table


def test_exact_variants_match_and_early_stopping_reports_what_it_used():
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--models",
            "convnet_small",
            "--stopping-model",
            "convnet_small",
            "--examples",
            str(EXAMPLES),
            "--batch-size",
            "32",
            "--grid",
            str(GRID),
            "--stopping-grid",
            str(GRID),
            "--stopping-examples",
            str(STOPPING_EXAMPLES),
            "--min-examples",
            str(MIN_EXAMPLES),
            "--train-epochs",
            "1",
            "--train-examples",
            "128",
            "--min-train-accuracy",
            "0",  # one epoch of a tiny net learns next to nothing; the figures still hold
            "--no-compile",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout

    speed = rows(out, "\nconvnet_small (")
    assert list(speed) == [
        "bare eager forward",
        "lsurf unfolded eager",
        "lsurf folded",
        "lsurf bf16 (folded)",
    ], out
    assert speed["lsurf unfolded eager"][3] == "reference", out
    for figures in speed.values():
        best, median, ratio, _, peak, unit = figures
        assert 0 < float(best) <= float(median) and float(ratio.removesuffix("x")) > 0, out
        assert float(peak) > 0 and unit == "MiB", out  # each variant's fresh process
    for label in EXACT:
        assert float(speed[label][3]) <= 1e-5, out
    # bf16 keeps 8 bits: its error is visible, and far below the loss itself.
    assert 1e-8 < float(speed["lsurf bf16 (folded)"][3]) < 0.05, out
    assert "error <= 1e-05: met" in out, out

    stopping = rows(out, "\nearly stopping:")
    targets = ["rel_error 1% (target)", "rel_error 1% plain", "rel_error 2%", "rel_error 2% plain"]
    assert list(stopping) == ["lsurf folded, all examples", *targets], out
    assert stopping["lsurf folded, all examples"][3:5] == [str(STOPPING_EXAMPLES), "1.00x"], out
    for label in targets:
        mean, spread, fewer, within, share = stopping[label][3:8]
        low, high = (int(value) for value in spread.strip("()").split("-"))
        # A point stops after whole batches, at min_examples at the earliest.
        assert MIN_EXAMPLES <= low <= float(mean) <= high <= STOPPING_EXAMPLES, out
        # fewer = split size / mean, each printed rounded (the mean to 1, the ratio to 0.01).
        slack = 0.5 * float(fewer[:-1]) + 0.005 * float(mean) + 1e-9
        assert abs(float(fewer[:-1]) * float(mean) - STOPPING_EXAMPLES) <= slack, out
        inside, points = (int(value) for value in within.split("/"))
        assert points == GRID * GRID and 0 <= inside <= points, out
        assert share == f"({100 * inside / points:.0f}%)", out
