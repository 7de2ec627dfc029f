"""`lsurf sweep --plan`: the same checks as the sweep, the points left, a timing; no writes."""

import re

import h5py
import pytest

from lsurf.cli import main
from lsurf.config import load_sweep_config
from lsurf.run.plan import _duration, plan_sweep
from lsurf.run.sweep import run_sweep


def files_under(folder):
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


def test_a_new_sweep_is_planned_without_writing_anything(sweep_yaml, tmp_path):
    config = load_sweep_config(sweep_yaml())
    before = files_under(tmp_path)
    lines = plan_sweep(config)
    assert files_under(tmp_path) == before  # no surface, no direction file, nothing touched
    assert lines[:4] == [
        f"plan for {config.output} (nothing written)",
        "output   new",
        f"directions  computed now: {config.direction_file}",
        "grid     x=-1:1:4  y=-0.5:0.5:3  (4x3 points), 12 to evaluate",
    ]
    assert lines[4] == "data     train 200 examples, test 100 examples"
    assert lines[5] == "metrics  train_loss, train_acc, test_loss, test_acc"
    # 12 points × (4 columns × 8 bytes + done flag + queue index) in memory, 12 × 33 on disk
    assert re.fullmatch(
        r"size     588 B in rank 0's memory \(\S+ \S+ available\), 396 B on disk \(\S+ \S+ free\)",
        lines[6],
    )
    assert lines[7].startswith("model    convnet_small, 1586 parameters, on cpu, ")
    assert lines[8] == "network  BN folded into 2 convolutions"
    assert lines[9] == "network  2 convolutions fused with the ReLU after them (oneDNN)"
    # evaluation.compile: auto, what it chose for one worker and why (tests/test_compilation.py)
    assert lines[10].startswith("network  compile auto: eager (12 points per worker x 300 ")
    seconds = float(re.fullmatch(r"timing   (\S+) s per point here .*", lines[11]).group(1))
    assert seconds > 0
    assert re.fullmatch(r"         12 points on  1 worker  ≈ \d+ s", lines[12])


def test_a_partial_sweep_is_planned_as_a_resume_and_left_untouched(sweep_yaml, tmp_path):
    path = sweep_yaml()
    output = run_sweep(load_sweep_config(path), log=lambda _: None).path
    with h5py.File(output, "r+") as h5file:
        h5file["done"][1:, :] = False  # 3 of 12 points stay done
    before = files_under(tmp_path)
    lines = plan_sweep(load_sweep_config(path))
    assert files_under(tmp_path) == before
    assert lines[1] == "output   resumed: 3 of 12 points done"
    assert lines[2].startswith("directions  reused: ")
    assert lines[3].endswith("(4x3 points), 9 to evaluate")
    assert lines[6].endswith(", 396 B on disk (the file exists)")


def test_a_complete_sweep_plans_nothing_and_bad_input_is_refused_as_by_the_sweep(
    sweep_yaml, capsys
):
    path = sweep_yaml()
    run_sweep(load_sweep_config(path), log=lambda _: None)
    assert plan_sweep(load_sweep_config(path))[1] == (
        "output   complete (12 points): the sweep would exit at once"
    )
    capsys.readouterr()
    assert main(["sweep", str(path), "--plan", "--set", "grid.x=-2:2:4"]) == 2
    assert "holds a different sweep (differs in: grid.x)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("seconds", "text"), [(42.4, "42 s"), (119, "119 s"), (600, "10 min"), (3 * 3600, "3.0 h")]
)
def test_durations_read_in_sensible_units(seconds, text):
    assert _duration(seconds) == text
