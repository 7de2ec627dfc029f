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
# each held to 1e-5 against the reference: fp32, whatever the way
EXACT = [
    "bare eager forward",
    "lsurf default (folded)",
    "lsurf folded, one batch",
    "2 points per pass (vmap)",
    "reference emulation",
]
OUTSIDE_LSURF = ["2 points per pass (vmap)", "reference emulation"]  # no peak-RSS process


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
        timeout=600,  # minutes on a loaded 2-core machine (the reference emulation forks loaders)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout

    speed = rows(out, "\nconvnet_small (")
    assert list(speed) == [
        "bare eager forward",
        "lsurf unfolded eager",
        "lsurf default (folded)",
        "lsurf folded, one batch",
        "lsurf bf16 (folded)",
        *OUTSIDE_LSURF,
    ], out
    assert speed["lsurf unfolded eager"][4] == "reference", out
    emulation_best = float(speed["reference emulation"][0])
    for label, figures in speed.items():
        best, median, ratio, to_reference, _, *peak = figures
        # (the emulation's bare/variant may round to 0.00x: its loader forks per point)
        assert 0 < float(best) <= float(median) and float(ratio.removesuffix("x")) >= 0, out
        # ref/variant is the emulation's best over this one's, each printed to 4 decimals.
        found = float(to_reference.removesuffix("x"))
        low = (emulation_best - 5e-5) / (float(best) + 5e-5) - 0.005
        high = (emulation_best + 5e-5) / (float(best) - 5e-5) + 0.005
        assert low <= found <= high, out
        if label in OUTSIDE_LSURF:
            assert peak == ["-"], out
        else:
            assert float(peak[0]) > 0 and peak[1] == "MiB", out  # each variant's fresh process
    for label in EXACT:
        assert float(speed[label][4]) <= 1e-5, out
    # bf16 keeps 8 bits: its error is visible, and far below the loss itself.
    assert 1e-8 < float(speed["lsurf bf16 (folded)"][4]) < 0.05, out
    assert "error <= 1e-05: met" in out, out
    # The default against the targets, from the same table's figures.
    default = speed["lsurf default (folded)"]
    to_bare, to_reference = (float(figure.removesuffix("x")) for figure in default[2:4])
    assert (
        f"default vs target: 1.5x bare -> {to_bare:.2f}x "
        f"({'met' if to_bare >= 1.5 else 'missed'}); 3x reference -> {to_reference:.2f}x "
        f"({'met' if to_reference >= 3 else 'missed'})"
    ) in out, out
    # What evaluation.compile: auto chooses on this grid, said in the table's header.
    assert "lsurf's default here: compile auto: eager (9 points per worker x 64 examples" in out

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
