"""`directions.kind: reference`: a direction file the reference code wrote, swept as lsurf's.

The files are written here exactly as the reference's h5_util.write_list writes them
(tests/reference_layout.py), from directions lsurf computed itself, so a reference plane and
lsurf's own must give the same values bit for bit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference_layout import write_reference_directions

from lsurf import kinds, models
from lsurf.checkpoint import load_weights
from lsurf.cli import main
from lsurf.config import load_sweep_config
from lsurf.data.splits import open_split
from lsurf.files.directions import read_directions
from lsurf.files.info import describe
from lsurf.files.surface import read_surface
from lsurf.kinds.reference import ordinal

GRID = {"grid": {"x": "-1:1:3", "y": "-0.5:0.5:2"}}  # 6 points, none at θ* itself


def model_at(checkpoint: Path) -> torch.nn.Module:
    model = models.build("convnet_small")
    load_weights(model, checkpoint)
    return model


def reference_config(sweep_yaml, folder: Path, reference: Path, **directions) -> Path:
    """A sweep of `reference` into `folder`; `directions` adds keys (space, ...)."""
    return sweep_yaml(
        GRID
        | {
            "directions": {"kind": "reference", "reference": str(reference), **directions},
            "output": str(folder / "surface.h5"),
        },
        name=f"{folder.name}.yaml",
    )


def assert_same_values(first: Path, second: Path) -> None:
    a, b = read_surface(first), read_surface(second)
    assert a.done.all() and b.done.all()
    assert (
        sorted(a.metrics)
        == sorted(b.metrics)
        == [
            "test_acc",
            "test_loss",
            "train_acc",
            "train_loss",
        ]
    )
    for name in a.metrics:
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name], err_msg=name)


def test_lsurfs_own_random_plane_in_the_references_layout_gives_the_same_values_bit_for_bit(
    sweep_yaml, small_checkpoint, tmp_path
):
    own = sweep_yaml(GRID | {"output": str(tmp_path / "own" / "surface.h5")}, name="own.yaml")
    assert main(["sweep", str(own)]) == 0
    directions, _ = read_directions(tmp_path / "own" / "surface.directions.h5")
    assert directions.norm == "filter" and directions.ignore == "biasbn"
    model = model_at(small_checkpoint)
    reference = write_reference_directions(
        tmp_path / "ref.h5", model, directions.x, directions.y, "weights"
    )

    config = reference_config(sweep_yaml, tmp_path / "ref", reference)
    assert main(["sweep", str(config)]) == 0
    assert_same_values(tmp_path / "own" / "surface.h5", tmp_path / "ref" / "surface.h5")
    # lsurf's own direction file for it holds the same tensors, and records the file's digest.
    again, attributes = read_directions(tmp_path / "ref" / "surface.directions.h5")
    for key, tensor in directions.x.items():
        assert torch.equal(again.x[key], tensor) and torch.equal(again.y[key], directions.y[key])
    assert sorted(again.x) == sorted(directions.x)
    assert (attributes["kind"], attributes["space"]) == ("reference", "weights")
    surface = read_surface(tmp_path / "ref" / "surface.h5")
    assert surface.attributes["reference_sha256"] == attributes["reference_sha256"]
    # Run again: the sweep is complete and its direction file fits, so nothing changes.
    before = (tmp_path / "ref" / "surface.h5").read_bytes()
    assert main(["sweep", str(config)]) == 0
    assert (tmp_path / "ref" / "surface.h5").read_bytes() == before


def state_directions(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A direction over every floating state entry, BN running statistics nonzero; running
    variances stay positive at every grid point (|a|, |b| ≤ 1 and at least 0.5 to start)."""
    generator = torch.Generator().manual_seed(seed)
    direction = {}
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            drawn = torch.randn(tuple(tensor.shape), generator=generator)
            scale = 0.05 if key.endswith("running_var") else 0.1
            direction[key] = drawn * scale
    return direction


def test_states_move_the_bn_statistics_as_an_independent_computation_does(
    sweep_yaml, small_checkpoint, tmp_path
):
    model = model_at(small_checkpoint)
    x, y = state_directions(model, 1), state_directions(model, 2)
    states = write_reference_directions(tmp_path / "states.h5", model, x, y, "states")
    weights_only = {key: x[key] for key, _ in model.named_parameters()}
    weights = write_reference_directions(
        tmp_path / "weights.h5",
        model,
        weights_only,
        {key: y[key] for key in weights_only},
        "weights",
    )
    moved = reference_config(sweep_yaml, tmp_path / "states", states, space="states")
    fixed = reference_config(sweep_yaml, tmp_path / "weights", weights)
    assert main(["sweep", str(moved)]) == 0 and main(["sweep", str(fixed)]) == 0
    with_statistics = read_surface(tmp_path / "states" / "surface.h5")
    without = read_surface(tmp_path / "weights" / "surface.h5")
    # Off θ* the moved running statistics make a difference at every point.
    assert not np.any(with_statistics.metrics["test_loss"] == without.metrics["test_loss"])

    # θ* + a·dx + b·dy on a copy, by hand, and the test loss measured with torch alone.
    a, b = -1.0, 0.5
    state = {key: tensor.clone() for key, tensor in model.state_dict().items()}
    for key in x:
        state[key] = state[key] + a * x[key] + b * y[key]
    by_hand = models.build("convnet_small")
    by_hand.load_state_dict(state)
    by_hand.eval()
    split = open_split(load_sweep_config(moved).data, "test", torch.device("cpu"), False)
    inputs, targets = split.first(len(split))
    with torch.no_grad():
        expected = F.cross_entropy(by_hand(inputs), targets).item()
    found = with_statistics.metrics["test_loss"][0, 1]  # x = -1, y = 0.5
    assert (with_statistics.x[0], with_statistics.y[1]) == (a, b)
    assert found == pytest.approx(expected, rel=1e-5)


def run_cli(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lsurf", "sweep", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "written, swept, message",
    [
        (
            "states",
            "weights",
            "xdirection/3 has shape (8,) but the model's 4th parameter conv2.weight is "
            "(16, 8, 3, 3); was it made for another model, or with the reference's --dir_type "
            "states (directions.space: states)?",
        ),
        (
            "weights",
            "states",
            "xdirection/3 has shape (16, 8, 3, 3) but the model's 4th state_dict entry "
            "bn1.running_mean is (8,); was it made for another model, or with the reference's "
            "--dir_type weights (directions.space: weights)?",
        ),
        (
            "short",
            "weights",
            "xdirection has 7 entries but the model has 8 parameters: its 8th, linear.bias "
            "(10,), has none; was it made for another model, or with the reference's "
            "--dir_type states (directions.space: states)?",
        ),
    ],
)
def test_a_file_that_does_not_fit_the_model_is_one_line_exit_2_and_nothing_written(
    sweep_yaml, small_checkpoint, tmp_path, written, swept, message
):
    model = model_at(small_checkpoint)
    direction = state_directions(model, 1)
    if written == "short":  # a file for a model without the last bias
        direction.pop("linear.bias")
        model.linear.bias = None
    path = write_reference_directions(
        tmp_path / "other.h5",
        model,
        direction,
        direction,
        "states" if written == "states" else "weights",
    )
    config = reference_config(sweep_yaml, tmp_path / "out", path, space=swept)
    done = run_cli(config)
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr
        == f"lsurf: error: directions.reference {path} does not fit the model: {message}\n"
    )
    assert not (tmp_path / "out").exists()


def test_a_line_file_on_a_plane_is_one_line(sweep_yaml, small_checkpoint, tmp_path, capsys):
    model = model_at(small_checkpoint)
    direction = {key: tensor.detach() for key, tensor in model.named_parameters()}
    line = write_reference_directions(tmp_path / "line.h5", model, direction, None)
    config = reference_config(sweep_yaml, tmp_path / "out", line)
    assert main(["sweep", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"lsurf: error: directions.reference {line} holds xdirection only (a 1D direction "
        "file): remove grid.y, or give a file with ydirection\n"
    )
    assert not (tmp_path / "out").exists()
    # Without grid.y the same file sweeps a line.
    assert main(["sweep", str(config), "--set", "grid.y=null"]) == 0
    assert read_surface(tmp_path / "out" / "surface.h5").done.shape == (3,)


def test_files_not_in_the_references_layout_are_one_line(sweep_yaml, tmp_path, capsys):
    own = sweep_yaml(GRID | {"output": str(tmp_path / "own" / "surface.h5")}, name="own.yaml")
    assert main(["sweep", str(own)]) == 0
    capsys.readouterr()  # its progress lines
    lsurfs = tmp_path / "own" / "surface.directions.h5"
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5")
    cases = [
        (tmp_path / "absent.h5", "not found; give the direction file the reference code wrote"),
        (tmp_path, "is not a file; give the direction file the reference wrote"),
        (text, "is not a readable HDF5 file ("),
        (
            lsurfs,
            "is a direction file of lsurf, not of the reference code: reuse it with "
            "directions.file and directions.kind: random",
        ),
    ]
    for path, message in cases:
        config = reference_config(sweep_yaml, tmp_path / "bad", path)
        assert main(["sweep", str(config)]) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"lsurf: error: directions.reference {path} {message}"), error
        assert error.count("\n") == 1
    assert not (tmp_path / "bad").exists()


def test_info_on_a_reference_file_and_on_a_reference_sweep(sweep_yaml, small_checkpoint, tmp_path):
    model = model_at(small_checkpoint)
    direction = {key: tensor.detach() for key, tensor in model.named_parameters()}
    plane = write_reference_directions(tmp_path / "plane.h5", model, direction, direction)
    assert describe(plane) == (
        f"directions  {plane}\n"
        "direction file in the reference's layout: x and y, 8 entries\n"
        "sweep it with directions.kind: reference"
    )
    config = reference_config(sweep_yaml, tmp_path / "ref", plane, space="weights")
    assert main(["sweep", str(config)]) == 0
    report = describe(tmp_path / "ref" / "surface.h5").splitlines()
    assert f"directions  reference  file {plane}  space=weights  file " in "\n".join(report)
    own = describe(tmp_path / "ref" / "surface.directions.h5").splitlines()
    assert own[1].startswith("kind     reference  file sha256 ")
    assert own[1].endswith("…  space=weights")
    assert kinds.get("reference").subject({"reference": "/runs/plane.h5", "space": "states"}) == (
        "reference direction file plane.h5, BN statistics moved"
    )


def test_ordinals():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"
    ]  # fmt: skip
