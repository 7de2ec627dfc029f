"""The everyday paths, end to end: each direction kind × each choice of splits, every other
setting at its default, through `lsurf sweep`, `lsurf info` and `lsurf plot`.

A config here holds only the required keys and what its kind needs, as a first-time user
writes it. Each case asserts what that user sees: the sweep exits 0; its surface file reads,
every point is done and finite, and its columns are exactly the splits' loss and accuracy; info
exits 0 naming those columns and the complete grid; plot exits 0 and writes the figures its
dimension calls for, each a non-empty PNG; the same sweep run again finds its file complete
and leaves it as it was. A sample of the cases also runs under
`mpiexec -n 3`, which must give the serial surface bit for bit, its two CPU workers holding one
copy of the data between them.

The model is convnet_small on the session's generated CIFAR-10 data (tests/conftest.py); the
second and third checkpoints, the PCA trajectory (and a second run from its start), and the
reference-layout direction file are made once per session from perturbed copies of the same θ*.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from reference_layout import write_reference_directions

from lsurf import models
from lsurf.checkpoint import read_state_dict, save_checkpoint
from lsurf.cli import main
from lsurf.files.surface import read_surface

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLANE_FIGURES = ("contour", "filled", "heatmap", "surface3d")  # what `lsurf plot` draws in 2D
X_AXIS, Y_AXIS = "-1:1:3", "-1:1:2"  # a non-square plane: 3×2 points
SPLITS = (("train",), ("test",), ("train", "test"))
TRAJECTORY_LENGTH = 4  # model_0.pt … model_3.pt, the last one θ*


@dataclass(frozen=True)
class Inputs:
    """The files the kinds read, made once per session."""

    data: Path
    checkpoint: Path  # θ*
    target: Path  # a second checkpoint (kind: target)
    y_target: Path  # a third one (a target plane's y)
    trajectory: Path  # a folder of model_<epoch>.pt ending at θ*
    second_run: Path  # another run from the trajectory's model_0.pt, by another way
    reference: Path  # a 2D direction file in the reference code's layout


def perturbed(state: dict[str, torch.Tensor], seed: int, scale: float) -> dict[str, torch.Tensor]:
    """`state` with every float tensor moved by scale-sized noise; BN's running variances
    scaled instead, so they stay positive."""
    generator = torch.Generator().manual_seed(seed)
    moved = {}
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            moved[key] = tensor.clone()
            continue
        noise = torch.randn(tensor.shape, generator=generator) * scale
        moved[key] = tensor * (1 + noise).abs() if key.endswith("running_var") else tensor + noise
    return moved


@pytest.fixture(scope="session")
def inputs(tmp_path_factory, cifar_root, small_checkpoint) -> Inputs:
    folder = tmp_path_factory.mktemp("everyday")
    state = read_state_dict(small_checkpoint)
    target, y_target = folder / "second.pt", folder / "third.pt"
    save_checkpoint(target, perturbed(state, seed=1, scale=0.05), epoch=2)
    save_checkpoint(y_target, perturbed(state, seed=2, scale=0.05), epoch=3)
    # A training run's checkpoints: ever closer to θ*, which is the last one.
    trajectory = folder / "trajectory"
    trajectory.mkdir()
    last = TRAJECTORY_LENGTH - 1
    for epoch in range(TRAJECTORY_LENGTH):
        moved = perturbed(state, seed=10 + epoch, scale=0.02 * (last - epoch))
        save_checkpoint(trajectory / f"model_{epoch}.pt", moved, epoch=epoch)
    # A second run (directions.trajectories) from the same start, wandering elsewhere.
    second_run = folder / "second_run"
    second_run.mkdir()
    for epoch in range(TRAJECTORY_LENGTH):
        moved = perturbed(state, seed=20 + epoch, scale=0.02 * (last - epoch))
        start = read_state_dict(trajectory / "model_0.pt")
        save_checkpoint(second_run / f"model_{epoch}.pt", start if epoch == 0 else moved)
    model = models.build("convnet_small")
    model.load_state_dict(state)
    generator = torch.Generator().manual_seed(3)
    x, y = (
        {
            name: torch.randn(parameter.shape, generator=generator) * 0.1
            for name, parameter in model.named_parameters()
        }
        for _ in range(2)
    )
    reference = write_reference_directions(folder / "reference.h5", model, x, y)
    return Inputs(cifar_root, small_checkpoint, target, y_target, trajectory, second_run, reference)


# The cases' direction kinds, as minimal_config spells each; LINES are the 1D ones.
KIND_NAMES = (
    "random-1d",
    "random-2d",
    "target",
    "target-plane",
    "pca",
    "pca-runs",
    "hessian",
    "reference",
)
LINES = ("random-1d", "target")


def minimal_config(kind: str, splits: tuple[str, ...], inputs: Inputs, folder: Path) -> Path:
    """The smallest config a user writes for `kind` on `splits`, saved as folder/sweep.yaml."""
    checkpoint = inputs.checkpoint
    grid: dict[str, str] = {"x": X_AXIS, "y": Y_AXIS}
    directions: dict[str, str | list[str]] | None = None
    hessian: dict[str, str] | None = None
    if kind == "random-1d":
        grid = {"x": X_AXIS}
    elif kind == "random-2d":
        pass  # random is the default kind
    elif kind == "target":
        directions = {"kind": "target", "target": str(inputs.target)}
        grid = {"x": "0:1:3"}
    elif kind == "target-plane":
        directions = {
            "kind": "target",
            "target": str(inputs.target),
            "y_target": str(inputs.y_target),
        }
        grid = {"x": "0:1:3", "y": "0:1:2"}
    elif kind == "pca":
        directions = {"kind": "pca", "trajectory": str(inputs.trajectory)}
        grid = {"x": "auto:3", "y": "auto:2"}  # fitted to the path
        checkpoint = inputs.trajectory / f"model_{TRAJECTORY_LENGTH - 1}.pt"
    elif kind == "pca-runs":  # two runs' paths on the PCA plane of both
        runs = [str(inputs.trajectory), str(inputs.second_run)]
        directions = {"kind": "pca", "trajectories": runs}
        grid = {"x": "auto:3", "y": "auto:2"}
        checkpoint = inputs.trajectory / f"model_{TRAJECTORY_LENGTH - 1}.pt"
    elif kind == "hessian":
        directions = {"kind": "hessian"}
        if "train" not in splits:  # the Hessian's split (default train) must be evaluated
            hessian = {"split": splits[0]}
    elif kind == "reference":
        directions = {"kind": "reference", "reference": str(inputs.reference)}
    elif kind == "random-params":  # a plane in the classifier's weights alone, by name
        directions = {"params": {"include": ["linear.*"]}}
    else:
        raise AssertionError(kind)
    config = {
        "model": {"name": "convnet_small", "checkpoint": str(checkpoint)},
        "data": {"root": str(inputs.data), "splits": list(splits)},
        "grid": grid,
        "output": str(folder / "surface.h5"),
    }
    if directions is not None:
        config["directions"] = directions
    if hessian is not None:
        config["hessian"] = hessian
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def expected_columns(splits: tuple[str, ...]) -> list[str]:
    return sorted(f"{split}_{metric}" for split in splits for metric in ("loss", "acc"))


def check_surface(path: Path, splits: tuple[str, ...], plane: bool) -> None:
    surface = read_surface(path)
    shape = (3, 2) if plane else (3,)
    assert surface.done.shape == shape and surface.done.all()
    assert len(surface.x) == 3 and (len(surface.y) == 2 if plane else surface.y is None)
    assert sorted(surface.metrics) == sorted(surface.columns) == expected_columns(splits)
    for name, values in surface.metrics.items():
        assert values.shape == shape and np.isfinite(values).all(), name
        if name.endswith("_acc"):
            assert ((0 <= values) & (values <= 100)).all(), name


def check_info(path: Path, splits: tuple[str, ...], points: int, capsys) -> None:
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = [line for line in lines if line.startswith("metrics ")]
    assert len(listed) == 1
    assert sorted(listed[0].split(maxsplit=1)[1].split(", ")) == expected_columns(splits)
    assert f"done     {points}/{points} points (100.0%), complete" in lines


def check_plot(path: Path, splits: tuple[str, ...], plane: bool, capsys) -> None:
    capsys.readouterr()
    assert main(["plot", str(path)]) == 0
    written = [Path(line) for line in capsys.readouterr().out.splitlines()]
    if plane:
        metric = "train_loss" if "train" in splits else "test_loss"
        names = [f"{path.stem}_{metric}_{kind}.png" for kind in PLANE_FIGURES]
    else:
        names = [f"{path.stem}_curve.png"]  # loss and accuracy of every split on one figure
    assert [figure.name for figure in written] == names
    for figure in written:
        assert figure.parent == path.parent
        content = figure.read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > len(PNG_SIGNATURE)


@pytest.mark.parametrize("splits", SPLITS, ids=["+".join(splits) for splits in SPLITS])
@pytest.mark.parametrize("kind", KIND_NAMES)
def test_a_default_sweep_runs_reads_describes_and_plots(kind, splits, inputs, tmp_path, capsys):
    config = minimal_config(kind, splits, inputs, tmp_path)
    assert main(["sweep", str(config)]) == 0
    output = tmp_path / "surface.h5"
    plane = kind not in LINES
    check_surface(output, splits, plane)
    check_info(output, splits, 6 if plane else 3, capsys)
    check_plot(output, splits, plane, capsys)
    check_topology(output, splits, 6 if plane else 3, capsys)
    # The same command again finds its sweep (the stored config, checkpoint and directions
    # match) complete: the resume check accepts what the sweep itself stored.
    before = output.read_bytes()
    assert main(["sweep", str(config)]) == 0
    assert "is already complete" in capsys.readouterr().err
    assert output.read_bytes() == before


def test_a_default_sweep_says_what_compile_auto_chose_and_records_it(inputs, tmp_path, capsys):
    # evaluation.compile: auto, the default: a 3x2 plane saves far less than any compile costs
    # (tests/test_compilation.py holds the rule choosing compile, which the suite never pays).
    config = minimal_config("random-2d", ("train",), inputs, tmp_path)
    capsys.readouterr()
    assert main(["sweep", str(config)]) == 0
    log = capsys.readouterr().err
    chose = [line.strip() for line in log.splitlines() if "compile auto" in line]
    assert len(chose) == 1 and chose[0].startswith("compile auto: eager (6 points per worker x ")
    stored = yaml.safe_load(read_surface(tmp_path / "surface.h5").attributes["config"])
    assert stored["evaluation"]["compile"] is False  # the choice, which a resume keeps


def test_a_plane_in_parameters_chosen_by_name_runs_describes_and_plots(inputs, tmp_path, capsys):
    # directions.params, every other setting at its default: the other tensors stay at θ*.
    splits = ("train", "test")
    config = minimal_config("random-params", splits, inputs, tmp_path)
    assert main(["sweep", str(config)]) == 0
    output = tmp_path / "surface.h5"
    check_surface(output, splits, plane=True)
    check_info(output, splits, 6, capsys)
    assert main(["info", str(output)]) == 0
    lines = capsys.readouterr().out.splitlines()
    summary = "parameters: 2 tensors (170 values) of 8 match include ['linear.*'] exclude []"
    assert lines[lines.index(summary) + 1] == "  linear.weight, linear.bias"
    check_plot(output, splits, True, capsys)
    before = output.read_bytes()
    assert main(["sweep", str(config)]) == 0
    assert "is already complete" in capsys.readouterr().err
    assert output.read_bytes() == before


def check_topology(output, splits, points, capsys):
    """`lsurf topology` on the surface at its defaults: its first loss column's basins, a
    figure, and `lsurf info` showing them; the values as they were."""
    with h5py.File(output, "r") as h5file:
        before = {name: h5file[name][()].tobytes() for name in h5file if name.endswith("_loss")}
    assert main(["topology", str(output)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"topology {splits[0]}_loss: ")
    assert lines[0].endswith(f"4-neighbour grid, {points}/{points} points)")
    figure = output.with_name(f"surface.topology.{splits[0]}_loss.png")
    assert figure.read_bytes().startswith(PNG_SIGNATURE)
    assert main(["info", str(output)]) == 0
    assert lines[0] in capsys.readouterr().out.splitlines()
    with h5py.File(output, "r") as h5file:
        assert {name: h5file[name][()].tobytes() for name in before} == before


# ------------------------------------------------------------- lsurf plot --log-to (trackers)


@pytest.mark.parametrize("kind", ["random-2d", "random-1d"])
def test_a_default_surface_is_plotted_and_logged_to_tensorboard(kind, inputs, tmp_path, capsys):
    """`lsurf plot --log-to tensorboard` on a default sweep's file: the figures plot writes,
    and in the event files the same figures, the file's centre values and the file itself."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["sweep", str(minimal_config(kind, ("train", "test"), inputs, tmp_path))]) == 0
    output, logs = tmp_path / "surface.h5", tmp_path / "tb"
    capsys.readouterr()
    assert main(["plot", str(output), "--log-to", "tensorboard", "--log-dir", str(logs)]) == 0
    printed = capsys.readouterr().out.splitlines()
    figures = [f"train_loss_{name}" for name in PLANE_FIGURES] if kind not in LINES else ["curve"]
    assert [Path(line).name for line in printed[:-1]] == [f"surface_{key}.png" for key in figures]
    assert printed[-1].startswith(f"logged to tensorboard: {len(figures)} figures, ")
    events = EventAccumulator(str(logs), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == sorted(f"lsurf/figures/{key}" for key in figures)
    surface = read_surface(output)
    centre = tuple(
        int(np.argmin(np.abs(axis))) for axis in (surface.x, surface.y) if axis is not None
    )
    for name in expected_columns(("train", "test")):
        [event] = events.Scalars(f"lsurf/{name}_centre")
        assert event.value == pytest.approx(float(surface.metrics[name][centre]), rel=1e-6)
    assert (logs / "surface.h5").read_bytes() == output.read_bytes()


# ---------------------------------------------------------------------------- under mpiexec


MPI_CASES = [("random-2d", ("train", "test")), ("target", ("test",)), ("pca", ("train",))]


@pytest.mark.parametrize(
    ("kind", "splits"), MPI_CASES, ids=[f"{kind}-{'+'.join(s)}" for kind, s in MPI_CASES]
)
def test_three_ranks_give_the_serial_surface_bit_for_bit(mpi_run, kind, splits, inputs, tmp_path):
    serial_folder, mpi_folder = tmp_path / "serial", tmp_path / "mpi"
    serial_folder.mkdir()
    mpi_folder.mkdir()
    assert main(["sweep", str(minimal_config(kind, splits, inputs, serial_folder))]) == 0
    config = minimal_config(kind, splits, inputs, mpi_folder)
    done = mpi_run(3, "-m", "lsurf", "sweep", config, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "on 2 workers" in done.stdout + done.stderr
    if not torch.cuda.is_available():  # the default device is then the CPU: one copy per node
        shared = f"  data: {', '.join(splits)} held once per node, in MPI shared memory"
        assert shared in (done.stdout + done.stderr).splitlines()
    serial = read_surface(serial_folder / "surface.h5")
    parallel = read_surface(mpi_folder / "surface.h5")
    assert parallel.done.all()
    np.testing.assert_array_equal(parallel.x, serial.x)
    if serial.y is not None:
        np.testing.assert_array_equal(parallel.y, serial.y)
    assert list(parallel.metrics) == list(serial.metrics)
    for name, values in serial.metrics.items():
        np.testing.assert_array_equal(parallel.metrics[name], values, err_msg=name)


# ---------------------------------------------------------------------------- lsurf connect


@pytest.mark.parametrize("splits", SPLITS, ids=["+".join(splits) for splits in SPLITS])
@pytest.mark.parametrize("bn", ["recompute", "keep", "interpolate"])
def test_a_default_connect_runs_describes_and_plots(bn, splits, inputs, tmp_path, capsys):
    config = {
        "model": {"name": "convnet_small"},
        "data": {"root": str(inputs.data), "splits": list(splits)},
        # bn_examples: the session's data hold 200 train examples, under the default 2,000
        "connect": {"checkpoints": [str(inputs.checkpoint), str(inputs.target)], "bn": bn,
                    "bn_examples": 100},
        "output": str(tmp_path / "connect.h5"),
    }  # fmt: skip
    path = tmp_path / "connect.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["connect", str(path)]) == 0
    report = capsys.readouterr().out.splitlines()
    assert "path 0-1/linear  31/31 points, complete" in report
    rows = [line.split()[0] for line in report if line.startswith("  ") and "barrier" in line]
    assert rows == [f"{split}_{quantity}" for split in splits for quantity in ("loss", "error")]
    assert main(["info", str(tmp_path / "connect.h5")]) == 0
    assert capsys.readouterr().out.splitlines() == report
    assert main(["plot", str(tmp_path / "connect.h5")]) == 0
    [figure] = [Path(line) for line in capsys.readouterr().out.splitlines()]
    assert figure.name == "connect.0-1.png" and figure.read_bytes().startswith(PNG_SIGNATURE)
    before = (tmp_path / "connect.h5").read_bytes()
    assert main(["connect", str(path)]) == 0
    assert "is already complete" in capsys.readouterr().err
    assert (tmp_path / "connect.h5").read_bytes() == before


@pytest.mark.parametrize("splits", SPLITS, ids=["+".join(splits) for splits in SPLITS])
def test_every_connect_path_with_its_plane_runs_describes_and_plots(
    splits, inputs, tmp_path, capsys
):
    # All of connect's paths at their defaults: linear, aligned (weight matching), a Bezier
    # curve through a bend trained by the default recipe, and the plane the curve lies in.
    config = {
        "model": {"name": "convnet_small"},
        "data": {"root": str(inputs.data), "splits": list(splits)},
        "connect": {"checkpoints": [str(inputs.checkpoint), str(inputs.target)],
                    "bn_examples": 100, "align": "weights", "curve": "bezier", "plane": X_AXIS,
                    "plane_y": Y_AXIS},
        "output": str(tmp_path / "connect.h5"),
    }  # fmt: skip
    path = tmp_path / "connect.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["connect", str(path)]) == 0
    report = capsys.readouterr().out.splitlines()
    for name in ("linear", "aligned", "curve"):
        assert f"path 0-1/{name}  31/31 points, complete" in report
    assert "path 0-1/plane  6/6 points, complete" in report
    rows = [line.split()[0] for line in report if line.startswith("  ") and "barrier" in line]
    per_path = [f"{split}_{quantity}" for split in splits for quantity in ("loss", "error")]
    assert rows == per_path * 3
    lowest = [line for line in report if line.startswith("  lowest ")]
    assert len(lowest) == 1 and f"lowest {splits[0]}_loss" in lowest[0]
    assert main(["info", str(tmp_path / "connect.h5")]) == 0
    assert capsys.readouterr().out.splitlines() == report
    assert main(["plot", str(tmp_path / "connect.h5")]) == 0
    [figure] = [Path(line) for line in capsys.readouterr().out.splitlines()]
    assert figure.name == "connect.0-1.png" and figure.read_bytes().startswith(PNG_SIGNATURE)
    before = (tmp_path / "connect.h5").read_bytes()
    assert main(["connect", str(path)]) == 0
    assert "is already complete" in capsys.readouterr().err
    assert (tmp_path / "connect.h5").read_bytes() == before


# ---------------------------------------------------------------------------- lsurf sharpness


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_default_sharpness_runs_describes_and_plots(split, inputs, tmp_path, capsys):
    config = {
        "model": {"name": "convnet_small", "checkpoint": str(inputs.checkpoint)},
        "data": {"root": str(inputs.data)},
        # the session's data hold 100 test examples, under the default 1,024 (and m 128)
        "sharpness": {"split": split, "examples": 100, "m": 50},
        "output": str(tmp_path / "sharpness.h5"),
    }
    path = tmp_path / "sharpness.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["sharpness", str(path)]) == 0
    report = capsys.readouterr().out.splitlines()
    assert "done     24/24 units, complete" in report  # 1 + 20 draws + 1 + 2 batches of 50
    assert [line.split()[0] for line in report if line.startswith("  ") and "0.05" in line] == [
        "average-case",
        "worst-case",
        "m-sharpness",
    ]
    assert main(["info", str(tmp_path / "sharpness.h5")]) == 0
    assert capsys.readouterr().out.splitlines() == report
    assert main(["plot", str(tmp_path / "sharpness.h5")]) == 0
    [figure] = [Path(line) for line in capsys.readouterr().out.splitlines()]
    assert figure.read_bytes().startswith(PNG_SIGNATURE)
    before = (tmp_path / "sharpness.h5").read_bytes()
    assert main(["sharpness", str(path)]) == 0
    assert "is already complete" in capsys.readouterr().err
    assert (tmp_path / "sharpness.h5").read_bytes() == before


def test_a_default_sharpness_file_is_logged_to_tensorboard(inputs, tmp_path, capsys):
    """`lsurf plot --log-to tensorboard` on a sharpness file: its figure, L(θ*) and each
    measure as the file's `results` rows hold them, and the file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = {
        "model": {"name": "convnet_small", "checkpoint": str(inputs.checkpoint)},
        "data": {"root": str(inputs.data)},
        "sharpness": {"split": "test", "examples": 100, "m": 50},
        "output": str(tmp_path / "sharpness.h5"),
    }
    path = tmp_path / "sharpness.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["sharpness", str(path)]) == 0
    output, logs = tmp_path / "sharpness.h5", tmp_path / "tb"
    capsys.readouterr()
    assert main(["plot", str(output), "--log-to", "tensorboard", "--log-dir", str(logs)]) == 0
    [figure, line] = capsys.readouterr().out.splitlines()
    assert line.startswith("logged to tensorboard: 1 figures, ")
    events = EventAccumulator(str(logs), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    # the figure is named as the file is, so its key is the file's name
    assert Path(figure).name == "sharpness.png"
    assert events.Tags()["images"] == ["lsurf/figures/sharpness"]
    with h5py.File(output, "r") as h5file:
        rows = json.loads(h5file["results"].attrs["rows"])
        results = h5file["results"][()]
        origin = float(h5file["origin/value"][0])
    [event] = events.Scalars("lsurf/sharpness_origin_loss")
    assert event.value == pytest.approx(origin, rel=1e-6)
    for measure, (rho, value, _, _) in zip(rows, results, strict=True):
        [event] = events.Scalars(f"lsurf/sharpness_{measure}_rho{rho:g}")
        assert event.value == pytest.approx(value, rel=1e-6), measure
    assert (logs / "sharpness.h5").read_bytes() == output.read_bytes()


# ------------------------------------------------------------------- lsurf.Capture (training)


@pytest.mark.parametrize("splits", SPLITS, ids="+".join)
def test_a_default_capture_records_describes_and_plots(splits, inputs, tmp_path, capsys):
    """lsurf.Capture with its defaults (11×11, every 5 epochs, 1,000 examples: here every
    example of the small splits) on the splits a training loop hands it."""
    from lsurf.capture import Capture

    model = models.build("convnet_small")
    model.load_state_dict(read_state_dict(inputs.checkpoint))
    generator = torch.Generator().manual_seed(4)
    data = {
        split: (torch.randn(40, 3, 32, 32, generator=generator), torch.randint(0, 10, (40,)))
        for split in splits
    }
    path = tmp_path / "run.h5"
    capture = Capture(path, data)
    assert [capture(model, epoch) is not None for epoch in range(1, 11)] == [False] * 4 + [True] + [
        False
    ] * 4 + [True]
    assert main(["info", str(path)]) == 0
    report = capsys.readouterr().out.splitlines()
    assert report[3:5] == [
        "grid     x=-1:1:11  y=-1:1:11  (11x11 points per capture)",
        f"2 captures of {splits[0]}_loss:",
    ]
    assert [line.split()[0] for line in report[6:]] == ["5", "10"]
    assert main(["plot", str(path)]) == 0
    [figure] = [Path(line) for line in capsys.readouterr().out.splitlines()]
    assert figure.name == f"run_epochs_5-10_{splits[0]}_loss_contour.png"
    assert figure.read_bytes().startswith(PNG_SIGNATURE)


# ------------------------------------------------------- the notebook door (lsurf.plot, repr)


@pytest.mark.parametrize("plane", [False, True], ids=["line", "plane"])
def test_a_default_notebook_sweep_describes_itself_and_returns_its_figures(plane, inputs, tmp_path):
    """lsurf.sweep at its defaults (a line of 11 points; with y, a plane), then what a
    notebook cell shows: the surface's repr, lsurf.plot's default figure and lsurf.plot_html's,
    and no file written."""
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

    import lsurf

    model = models.build("convnet_small")
    model.load_state_dict(read_state_dict(inputs.checkpoint))
    generator = torch.Generator().manual_seed(5)
    data = {
        split: (torch.randn(20, 3, 32, 32, generator=generator), torch.randint(0, 10, (20,)))
        for split in ("train", "test")
    }
    axes = {"x": X_AXIS, "y": Y_AXIS} if plane else {}
    surface = lsurf.sweep(model, data, log=None, **axes)
    shape = "3x2" if plane else "11"
    grid = f"x={X_AXIS}  y={Y_AXIS}" if plane else "x=-1:1:11"
    text = repr(surface)
    assert f"grid     {grid}  ({shape} points)" in text
    assert "metrics  test_acc, test_loss, train_acc, train_loss" in text
    assert "complete" in text.splitlines()[-3]
    before = set(tmp_path.iterdir())
    figure = lsurf.plot(surface)
    assert isinstance(figure, Figure) and figure.axes
    assert isinstance(lsurf.plot_html(surface), go.Figure)
    assert set(tmp_path.iterdir()) == before


# ------------------------------------------------------------ a causal language model


def test_a_default_language_model_sweep_runs_reads_describes_and_plots(tmp_path, capsys):
    """A causal LM on token files, as a first-time user writes it: the tiny transformer at
    its default sizes, train.npy and test.npy, evaluation.loss causal_lm; loss columns only
    (a language model has no accuracy column)."""
    generator = torch.Generator().manual_seed(0)
    root = tmp_path / "tokens"
    root.mkdir()
    for split in ("train", "test"):
        np.save(root / f"{split}.npy", torch.randint(0, 64, (12, 8), generator=generator).numpy())
    torch.manual_seed(0)
    checkpoint = tmp_path / "lm.pt"
    save_checkpoint(checkpoint, models.build_named("tiny_transformer", None, {}).state_dict())
    config = tmp_path / "lm.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"name": "tiny_transformer", "checkpoint": str(checkpoint)},
                "data": {"dataset": "tokens", "root": str(root), "splits": ["train", "test"]},
                "grid": {"x": X_AXIS, "y": Y_AXIS},
                "evaluation": {"loss": "causal_lm"},
                "output": str(tmp_path / "surface.h5"),
            }
        )
    )
    assert main(["sweep", str(config)]) == 0
    output = tmp_path / "surface.h5"
    surface = read_surface(output)
    assert surface.done.shape == (3, 2) and surface.done.all()
    assert sorted(surface.metrics) == ["test_loss", "train_loss"]
    assert all(np.isfinite(values).all() for values in surface.metrics.values())
    capsys.readouterr()
    assert main(["info", str(output)]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = [line for line in lines if line.startswith("metrics ")]
    assert len(listed) == 1
    assert sorted(listed[0].split(maxsplit=1)[1].split(", ")) == ["test_loss", "train_loss"]
    assert "done     6/6 points (100.0%), complete" in lines
    check_plot(output, ("train", "test"), True, capsys)
