"""`lsurf connect`: the paths between checkpoints and their barriers, checked by hand; the same
bits under mpiexec and after a kill; bad input in one line with nothing written."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from lsurf import models
from lsurf.barrier import barrier, error_rate_errors
from lsurf.checkpoint import save_checkpoint
from lsurf.cli import main
from lsurf.config import DataConfig
from lsurf.data.splits import open_split, seeded_order
from lsurf.files.connect import read_connect
from lsurf.grid import path_point
from lsurf.plot.connect import write_connect_figures

INJECT = Path(__file__).resolve().parent / "inject"
BN_EXAMPLES = 150  # of the 200 the session's synthetic train split holds
BATCH = 64


def convnet(seed, path):
    """A convnet_small of its own seed, with BN statistics that are not the initial ones."""
    torch.manual_seed(seed)
    model = models.build("convnet_small")
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
    save_checkpoint(path, model.state_dict())
    return path


@pytest.fixture
def pair(tmp_path):
    return convnet(0, tmp_path / "a.pt"), convnet(1, tmp_path / "b.pt")


@pytest.fixture
def connect_yaml(tmp_path, cifar_root, pair):
    def write(connect=None, name="connect.yaml", **top):
        config = {
            "model": {"name": "convnet_small"},
            "data": {"root": str(cifar_root), "splits": ["train", "test"], "batch_size": BATCH},
            "connect": {
                "checkpoints": [str(path) for path in pair],
                "points": 5,
                "bn_examples": BN_EXAMPLES,
                **(connect or {}),
            },
            "output": str(tmp_path / "out" / "connect.h5"),
            **top,
        }
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config))
        return path

    return write


def run(config, *extra):
    return subprocess.run(
        [sys.executable, "-m", "lsurf", "connect", str(config), *extra],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )


# ---------------------------------------------------------------------------- barriers


def test_a_barrier_is_the_rise_above_the_line_between_the_ends():
    t = np.linspace(0.0, 1.0, 5)
    values = np.array([1.0, 2.5, 3.0, 2.0, 2.0])  # line: 1, 1.25, 1.5, 1.75, 2
    found = barrier(t, values, np.array([0.1, 0.2, 0.3, 0.2, 0.2]))
    assert found.height == pytest.approx(1.5) and found.t == 0.5
    assert (found.start, found.end) == (1.0, 2.0)
    assert found.error == pytest.approx(math.sqrt(0.3**2 + 0.25 * 0.1**2 + 0.25 * 0.2**2))
    convex = barrier(t, (t - 0.5) ** 2)  # under its chord everywhere: no barrier
    assert convex.height == 0.0 and math.isnan(convex.error)
    assert barrier(t, np.full(5, 0.7)).height == 0.0  # flat, exactly
    assert math.isnan(barrier(t, np.array([1.0, np.nan, 1.0, 1.0, 1.0])).height)


def test_the_error_rates_error_is_zero_on_a_census_and_binomial_on_a_sample():
    accuracy = np.array([90.0, 75.0])
    assert error_rate_errors(accuracy, None, None).tolist() == [0.0, 0.0]
    found = error_rate_errors(accuracy, np.array([101.0, 200.0]), 200)
    assert found[0] == pytest.approx(100 * math.sqrt(0.1 * 0.9 / 100)) and found[1] == 0.0


# ---------------------------------------------------------------------------- by hand


def by_hand(config_path, t, mode):
    """The train loss at t on the linear path, recomputed without lsurf's evaluator: the
    weights (and, for interpolate, the BN statistics) lerped; for recompute, every BN reset
    and re-estimated in train mode over the same examples in the same batches, then eval."""
    config = yaml.safe_load(Path(config_path).read_text())
    start, end = (
        torch.load(path, weights_only=True)["state_dict"]
        for path in config["connect"]["checkpoints"]
    )
    model = models.build("convnet_small")
    parameters = {name for name, _ in model.named_parameters()}
    state = {}
    for key, value in start.items():
        moves = key in parameters or (mode == "interpolate" and value.is_floating_point())
        state[key] = torch.lerp(value, end[key], t) if moves else value.clone()
    model.load_state_dict(state)
    data = DataConfig(root=Path(config["data"]["root"]), splits=("train",), batch_size=BATCH)
    split = open_split(data, "train", torch.device("cpu"), channels_last=False)
    inputs, targets = split.inputs, split.targets
    if mode == "recompute":
        chosen = seeded_order(len(targets), 0)[:BN_EXAMPLES]
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None
        model.train()
        with torch.no_grad():
            for first in range(0, BN_EXAMPLES, BATCH):
                model(inputs[chosen[first : first + BATCH]])
    model.eval()
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(inputs), targets).item()


@pytest.mark.parametrize("mode", ["recompute", "keep", "interpolate"])
def test_each_bn_mode_equals_a_recomputation_by_hand(connect_yaml, tmp_path, mode):
    config = connect_yaml({"bn": mode}, output=str(tmp_path / f"{mode}.h5"))
    result = run(config)
    assert result.returncode == 0, result.stderr
    linear = read_connect(tmp_path / f"{mode}.h5").paths["0-1/linear"]
    assert linear.surface.x.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    stored = linear.surface.metrics["train_loss"]
    for index in (0, 2):
        expected = by_hand(config, float(linear.surface.x[index]), mode)
        assert stored[index] == pytest.approx(expected, rel=1e-5), (mode, index)
    assert "0-1/linear" in result.stdout and "train_loss   barrier" in result.stdout


def test_a_checkpoint_with_its_copy_has_no_barrier_exactly(connect_yaml, tmp_path, pair):
    copy = tmp_path / "a-copy.pt"
    shutil.copyfile(pair[0], copy)
    config = connect_yaml({"checkpoints": [str(pair[0]), str(copy)], "bn": "interpolate"})
    result = run(config)
    assert result.returncode == 0, result.stderr
    linear = read_connect(tmp_path / "out" / "connect.h5").paths["0-1/linear"]
    for row, found in linear.barriers.items():
        assert found.height == 0.0 and found.start == found.end, row
    assert np.all(linear.surface.metrics["test_loss"] == linear.surface.metrics["test_loss"][0])


def test_three_checkpoints_give_every_pair_and_a_rerun_is_complete(connect_yaml, tmp_path, pair):
    third = convnet(2, tmp_path / "c.pt")
    config = connect_yaml({"checkpoints": [*map(str, pair), str(third)], "points": 3})
    assert run(config).returncode == 0
    output = tmp_path / "out" / "connect.h5"
    connection = read_connect(output)
    assert list(connection.paths) == ["0-1/linear", "0-2/linear", "1-2/linear"]
    with h5py.File(output, "r") as h5file:
        assert json.loads(h5file.attrs["checkpoints"])[2] == str(third)
        assert json.loads(h5file["0-2/linear/barriers"].attrs["rows"]) == [
            "train_loss", "train_error", "test_loss", "test_error",
        ]  # fmt: skip
    before = output.read_bytes()
    again = run(config)
    assert again.returncode == 0 and "already complete" in again.stderr
    assert output.read_bytes() == before


# ---------------------------------------------------------------------------- ranks, kills


def assert_same_paths(found, expected):
    assert list(found.paths) == list(expected.paths)
    for name, part in expected.paths.items():
        other = found.paths[name]
        assert other.surface.done.all()
        for column, values in part.surface.metrics.items():
            np.testing.assert_array_equal(other.surface.metrics[column], values, err_msg=column)
        for row, value in part.barriers.items():
            assert other.barriers[row] == value or math.isnan(value.error)


def test_three_ranks_and_a_killed_run_give_the_serial_file_bit_for_bit(
    mpi_run, connect_yaml, tmp_path
):
    serial = connect_yaml({"points": 9}, output=str(tmp_path / "serial.h5"), name="serial.yaml")
    assert run(serial).returncode == 0
    expected = read_connect(tmp_path / "serial.h5")

    ranks = connect_yaml({"points": 9}, output=str(tmp_path / "ranks.h5"), name="ranks.yaml")
    job = mpi_run(3, "-m", "lsurf", "connect", str(ranks))
    assert job.returncode == 0, job.stderr
    assert "on 2 workers" in job.stderr
    assert_same_paths(read_connect(tmp_path / "ranks.h5"), expected)

    killed = connect_yaml({"points": 9}, output=str(tmp_path / "killed.h5"), name="killed.yaml")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(INJECT))
    env["LSURF_TEST_SLOW_SECONDS"] = "0.3"
    process = subprocess.Popen(
        [sys.executable, "-m", "lsurf", "connect", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while done_points(tmp_path / "killed.h5") < 3:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = read_connect(tmp_path / "killed.h5").paths["0-1/linear"]  # readable
    assert 3 <= int(partial.surface.done.sum()) < 9
    assert math.isnan(partial.barriers["train_loss"].height)  # no barrier before the last point
    rerun = run(killed)
    assert rerun.returncode == 0 and "resuming" in rerun.stderr, rerun.stderr
    assert_same_paths(read_connect(tmp_path / "killed.h5"), expected)


def done_points(path):
    if not path.exists():
        return 0
    try:
        with h5py.File(path, "r", locking=False) as h5file:
            return int(h5file["0-1/linear/done"][()].sum())
    except (OSError, KeyError):
        return 0


# ---------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line_exit_2_and_nothing_written(connect_yaml, tmp_path, pair, capsys):
    other = tmp_path / "resnet.pt"
    torch.manual_seed(0)
    save_checkpoint(other, models.build("resnet20").state_dict())
    output = tmp_path / "out" / "connect.h5"
    cases = [
        ({"checkpoints": [str(pair[0]), str(other)]}, "resnet.pt"),
        ({"points": 1}, "connect.points must be at least 2"),
        ({"bn_examples": 5000}, "bn_recompute is 5000 but the train split has 200 examples"),
        ({"checkpoints": [str(pair[0])]}, "at least two checkpoints"),
        ({"plane": "0:1:3"}, "connect.plane sweeps the plane through A, B and a curve's bend"),
        ({"curve": "bezier", "plane_y": "0:1:3"}, "set connect.plane (its a axis) too"),
        ({"curve": "bezier", "plane": "0:1"}, "connect.plane"),
        ({"curve": "bezier", "bend_decay": "both"}, "connect.bend_decay"),
    ]
    for connect, message in cases:
        capsys.readouterr()
        assert main(["connect", str(connect_yaml(connect))]) == 2
        error = capsys.readouterr().err
        assert error.startswith("lsurf: error: ") and message in error, error
        assert error.count("\n") == 1 and not output.exists()
    # A file made for another pair is refused, and left as it was.
    assert main(["connect", str(connect_yaml())]) == 0
    before = output.read_bytes()
    third = convnet(2, tmp_path / "c.pt")
    capsys.readouterr()
    assert main(["connect", str(connect_yaml({"checkpoints": [str(pair[0]), str(third)]}))]) == 2
    error = capsys.readouterr().err
    assert "holds another connect job (differs in: connect.checkpoints" in error, error
    assert output.read_bytes() == before


def test_lsurf_plot_draws_each_pair_as_png_and_html(connect_yaml, tmp_path, capsys):
    assert main(["connect", str(connect_yaml({"points": 3}))]) == 0
    output = tmp_path / "out" / "connect.h5"
    capsys.readouterr()
    assert main(["plot", str(output), "--format", "png,html", "--out", str(tmp_path / "fig")]) == 0
    written = capsys.readouterr().out.split()
    assert written == [str(tmp_path / "fig" / f"connect.0-1.{name}") for name in ("png", "html")]
    assert (tmp_path / "fig" / "connect.0-1.png").read_bytes()[:4] == b"\x89PNG"
    assert "linear, train (barrier" in (tmp_path / "fig" / "connect.0-1.html").read_text()
    assert main(["plot", str(output), "--format", "vtk"]) == 2


# ---------------------------------------------------------------------------- alignment


def trained(model, seed, tmp_path, cifar_root, epochs):
    """`model` trained by lsurf train from its own seed on the session's synthetic data."""
    config = {
        "model": {"name": model},
        "data": {"root": str(cifar_root), "splits": ["train"], "batch_size": 32},
        "training": {"epochs": epochs, "lr": 0.05, "seed": seed, "augment": False},
        "output": str(tmp_path / f"{model}-{seed}"),
    }
    path = tmp_path / f"train-{model}-{seed}.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    return tmp_path / f"{model}-{seed}" / "final.pt"


@pytest.mark.parametrize("model", ["mlp_small", "convnet_small"])
def test_aligned_paths_lower_the_barrier_and_end_at_bs_function(
    model, tmp_path, cifar_root, connect_yaml, capsys
):
    epochs = 6 if model == "mlp_small" else 4
    a, b = (trained(model, seed, tmp_path, cifar_root, epochs) for seed in (0, 1))
    config = connect_yaml(
        {"checkpoints": [str(a), str(b)], "align": "weights", "points": 5},
        model={"name": model},
    )
    assert main(["connect", str(config)]) == 0
    report = capsys.readouterr().out
    connection = read_connect(tmp_path / "out" / "connect.h5")
    linear, aligned = connection.paths["0-1/linear"], connection.paths["0-1/aligned"]
    naive, matched = linear.barriers["train_loss"].height, aligned.barriers["train_loss"].height
    with capsys.disabled():  # the numbers the note quotes
        print(f"\n{model}: train-loss barrier naive {naive:.4f}, aligned {matched:.4f}")
    assert naive > matched >= 0.0
    # The aligned B is B's function: the two paths end at the same values (A's at t = 0).
    for name in ("train_loss", "test_loss", "train_acc"):
        ends = linear.surface.metrics[name][[0, -1]]
        np.testing.assert_allclose(aligned.surface.metrics[name][[0, -1]], ends, rtol=1e-5)
    written = tmp_path / "out" / "connect.aligned-1-to-0.pt"
    record = torch.load(written, weights_only=True)["alignment"]
    assert record["source"] == str(b) and record["reference"] == str(a)
    assert aligned.surface.attributes["aligned_checkpoint"] == str(written)
    assert "path 0-1/aligned  5/5 points, complete" in report


def test_a_model_alignment_cannot_trace_is_one_line_and_nothing_written(
    tmp_path, monkeypatch, capsys
):
    fixtures = Path(__file__).resolve().parent / "fixtures"
    monkeypatch.syspath_prepend(str(fixtures))
    import toylab

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"lm{seed}.pt")
        save_checkpoint(paths[-1], toylab.TinyLM().state_dict())
    config = {
        "model": {"name": "toylab:TinyLM"},
        "data": {"dataset": "toylab:tokens", "splits": ["train"]},
        "evaluation": {"loss": "toylab:token_loss"},
        "connect": {"checkpoints": [str(path) for path in paths], "align": "weights"},
        "output": str(tmp_path / "out" / "lm.h5"),
    }
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["connect", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("lsurf: error: cannot align TinyLM: torch.fx cannot trace it"), error
    assert error.count("\n") == 1 and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- curves


@pytest.mark.parametrize("curve", ["bezier", "polychain"])
def test_a_trained_curve_is_no_higher_than_the_line_and_its_ends_are_a_and_b(
    curve, tmp_path, cifar_root, connect_yaml, capsys
):
    a, b = (trained("mlp_small", seed, tmp_path, cifar_root, 6) for seed in (0, 1))
    config = connect_yaml(
        {"checkpoints": [str(a), str(b)], "points": 5, "plane": "0:1:5"},
        model={"name": "mlp_small"},
        training={"epochs": 4, "lr": 0.05, "augment": False},
    )
    assert main(["connect", str(config), "--curve", curve]) == 0
    report = capsys.readouterr().out
    connection = read_connect(tmp_path / "out" / "connect.h5")
    assert list(connection.paths) == ["0-1/linear", "0-1/curve", "0-1/plane"]
    # The plane A + a·(B − A) + b·(bend − A): where a point of the curve (or A, or B) is one
    # of its grid points, it holds the curve's values there bit for bit.
    plane = connection.paths["0-1/plane"].surface
    assert plane.done.all() and plane.metrics["train_loss"].shape == (5, 5)
    on_plane = 0
    for k, t in enumerate(connection.paths["0-1/curve"].surface.x):
        a, b = path_point(curve, float(t))
        if a in plane.x and b in plane.y:
            i, j = int(np.flatnonzero(plane.x == a)[0]), int(np.flatnonzero(plane.y == b)[0])
            for name in ("train_loss", "test_loss", "test_acc"):
                curve_value = connection.paths["0-1/curve"].surface.metrics[name][k]
                assert plane.metrics[name][i, j] == curve_value, (name, t)
            on_plane += 1
    assert on_plane == {"bezier": 3, "polychain": 5}[curve]
    assert "the plane through A (0, 0), B (1, 0) and the bend (0, 1): a 0:1:5, b 0:1:5" in report
    assert "lowest train_loss" in report
    figures = write_connect_figures(connection, tmp_path / "figures", ("png", "html"))
    assert len(figures) == 2 and all(path.stat().st_size > 0 for path in figures)
    assert "the plane through A, B" in figures[1].read_text()
    linear, bent = connection.paths["0-1/linear"], connection.paths["0-1/curve"]
    line, along = linear.barriers["train_loss"].height, bent.barriers["train_loss"].height
    with capsys.disabled():
        print(f"\n{curve}: train-loss barrier linear {line:.4f}, curve {along:.4f}")
    assert along <= line and along < line / 2
    for name in ("train_loss", "test_acc"):  # the curve starts at A and ends at B exactly
        ends = linear.surface.metrics[name][[0, -1]]
        np.testing.assert_array_equal(bent.surface.metrics[name][[0, -1]], ends)
    bend = tmp_path / "out" / "connect.curve-0-1" / "bend.pt"
    assert bent.surface.attributes["bend_checkpoint"] == str(bend) and bend.exists()
    assert f"a {curve} curve through the trained bend {bend}" in report
    # The bend and the paths resume as they are: a rerun is complete at once.
    assert main(["connect", str(config), "--curve", curve]) == 0
    assert "already complete" in capsys.readouterr().err
