"""Several training runs on one plane (`directions.trajectories`): the union PCA plane, each
run projected on its own, the runs in the direction and surface files, `lsurf info` and the
figures' legends, and the one-line refusals of a bad folder or a checkpoint that does not fit.

The runs are real: convnet_small trained from one initialisation for a few steps with SGD and
with Adam on a fixed batch of random images, a checkpoint after every step.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from doc_commands import ROOT, blocks, documented

from lsurf import checkpoint, models
from lsurf.checkpoint import save_checkpoint
from lsurf.cli import main
from lsurf.data.synthetic import write_synthetic
from lsurf.files.directions import read_directions
from lsurf.files.surface import read_surface
from lsurf.projection import project_trajectory

STEPS = 3  # model_0.pt (the shared initialisation) … model_3.pt per run
OPTIMIZERS = {
    "sgd": lambda parameters: torch.optim.SGD(parameters, lr=0.05, momentum=0.9),
    "adam": lambda parameters: torch.optim.Adam(parameters, lr=0.003),
}


def train_run(folder: Path, initial: dict[str, torch.Tensor], optimizer_name: str) -> None:
    """A few real optimizer steps from `initial`, a checkpoint model_<step>.pt after each."""
    model = models.build("convnet_small")
    model.load_state_dict(initial)
    optimizer = OPTIMIZERS[optimizer_name](model.parameters())
    generator = torch.Generator().manual_seed(7)  # the same batch for every optimizer
    images = torch.randn(32, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (32,), generator=generator)
    save_checkpoint(folder / "model_0.pt", model.state_dict(), epoch=0)
    model.train()
    for step in range(1, STEPS + 1):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
        save_checkpoint(folder / f"model_{step}.pt", model.state_dict(), epoch=step)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two runs from one initialisation, and θ* (SGD's last checkpoint, trained further)."""
    folder = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    initial = models.build("convnet_small").state_dict()
    for name in OPTIMIZERS:
        train_run(folder / name, initial, name)
    return {name: folder / name for name in OPTIMIZERS}


def theta_star(runs: dict[str, Path]) -> Path:
    return runs["sgd"] / f"model_{STEPS}.pt"


def write_config(
    folder: Path, cifar_root: Path, runs: dict[str, Path], directions: dict, **changes
) -> Path:
    config = {
        "model": {"name": "convnet_small", "checkpoint": str(theta_star(runs))},
        "data": {"root": str(cifar_root), "splits": ["train"], "subset": 32},
        "grid": {"x": "-1:1:5", "y": "-1:1:5"},
        "directions": directions,
        "output": str(folder / "surface.h5"),
    } | changes
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def labelled(runs: dict[str, Path]) -> list:
    # One entry as a bare path (labelled by its folder's name), one with its own label.
    return [str(runs["sgd"]), {"path": str(runs["adam"]), "label": "Adam"}]


def flat(state: dict[str, torch.Tensor], keys: list[str]) -> np.ndarray:
    return np.concatenate([state[key].detach().double().reshape(-1).numpy() for key in keys])


@pytest.fixture(scope="module")
def pca_sweep(runs, cifar_root, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pca_sweep")
    config = write_config(folder, cifar_root, runs, {"kind": "pca", "trajectories": labelled(runs)})
    assert main(["sweep", str(config)]) == 0
    return folder / "surface.h5"


def test_the_union_pca_plane_is_the_svd_of_all_runs_checkpoints(runs, pca_sweep):
    directions, attributes = read_directions(pca_sweep.with_name("surface.directions.h5"))
    origin = checkpoint.read_state_dict(theta_star(runs))
    keys = [key for key in directions.x if origin[key].dim() > 1]  # ignore=biasbn default
    files = [runs[name] / f"model_{step}.pt" for name in OPTIMIZERS for step in range(STEPS + 1)]
    rows = np.stack([flat(checkpoint.read_state_dict(file), keys) for file in files])
    rows -= flat(origin, keys)
    centred = rows - rows.mean(axis=0)  # one mean over every run's checkpoints
    _, singular, right = np.linalg.svd(centred, full_matrices=False)
    for component, found in zip(right[:2], (directions.x, directions.y), strict=True):
        assert found is not None
        vector = flat(found, keys)
        assert abs(vector @ component) == pytest.approx(1.0, abs=1e-5)  # the same, up to sign
    variance = singular**2
    assert directions.runs is not None
    np.testing.assert_allclose(
        directions.runs.explained_variance_ratio, variance[:2] / variance.sum(), rtol=1e-6
    )
    # Biases and BN parameters held at θ*; a single-run record absent, the runs recorded.
    assert all(not directions.x[key].any() for key in directions.x if key not in keys)
    assert "Adam=" in attributes["trajectories"] and attributes["kind"] == "pca"


def test_each_run_is_stored_as_its_own_projection_onto_the_plane(runs, pca_sweep):
    surface = read_surface(pca_sweep)
    directions, _ = read_directions(pca_sweep.with_name("surface.directions.h5"))
    assert surface.trajectory is None and surface.runs is not None and directions.runs is not None
    assert [run.label for run in surface.runs.paths] == ["sgd", "Adam"]
    origin = checkpoint.read_state_dict(theta_star(runs))
    keys = [key for key in directions.x if directions.x[key].any() or directions.y[key].any()]
    assert directions.y is not None
    for run, stored, name in zip(
        surface.runs.paths, directions.runs.paths, OPTIMIZERS, strict=True
    ):
        files = [runs[name] / f"model_{step}.pt" for step in range(STEPS + 1)]
        alone = project_trajectory(origin, directions.x, directions.y, files, keys)
        # Least squares by numpy, independently of lsurf's normal equations.
        plane = np.stack([flat(directions.x, keys), flat(directions.y, keys)], axis=1)
        differences = [
            flat(checkpoint.read_state_dict(f), keys) - flat(origin, keys) for f in files
        ]
        expected = np.stack([np.linalg.lstsq(plane, d, rcond=None)[0] for d in differences])
        scale = np.abs(expected).max()
        np.testing.assert_allclose(run.trajectory.coordinates, expected, atol=1e-9 * scale)
        np.testing.assert_array_equal(run.trajectory.coordinates, alone.coordinates)
        assert run.trajectory.explained_variance_ratio == alone.explained_variance_ratio
        assert run.trajectory.epochs == tuple(range(STEPS + 1)) and run.folder == str(runs[name])
        np.testing.assert_array_equal(stored.trajectory.coordinates, run.trajectory.coordinates)
    # The runs started together: both paths begin at the shared initialisation's point.
    starts = [run.trajectory.coordinates[0] for run in surface.runs.paths]
    np.testing.assert_allclose(starts[0], starts[1], atol=1e-9 * scale)
    with h5py.File(pca_sweep) as h5file:  # no single path's datasets beside the runs
        assert "proj_xcoord" not in h5file and sorted(h5file["trajectories"]) == ["run_0", "run_1"]


def test_info_lists_the_runs_with_their_point_counts(pca_sweep, capsys):
    capsys.readouterr()
    assert main(["info", str(pca_sweep)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for label in ("sgd", "Adam"):
        listed = [line for line in lines if line.startswith(f"run      {label}: ")]
        assert len(listed) == 1 and f": {STEPS + 1} checkpoints, epochs 0-{STEPS};" in listed[0]
    assert any(line.startswith("plane    explained variance of all 2 runs x ") for line in lines)
    # The direction file says the same of its plane and runs.
    assert main(["info", str(pca_sweep.with_name("surface.directions.h5"))]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "kind     pca  2 runs' checkpoints together  ignore=biasbn  centred"
    assert sum(line.startswith(("run      sgd: ", "run      Adam: ")) for line in lines) == 2


def test_the_figures_have_one_legend_entry_per_run(pca_sweep, tmp_path):
    from lsurf.plot import PlotOptions
    from lsurf.plot.export import write_surface_html
    from lsurf.plot.planes import draw_plane
    from lsurf.plot.view import load_panels, shared_scale

    panels = load_panels([pca_sweep], PlotOptions())
    scale = shared_scale(panels, PlotOptions())
    for kind in ("contour", "filled", "heatmap", "surface3d"):
        figure = draw_plane(kind, panels, scale)
        texts = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
        assert texts.count("sgd") == 1 and texts.count("Adam") == 1, (kind, texts)
        assert texts.count("start") == 1 and texts.count("end") == 1
        assert "optimizer path" not in texts  # the runs' own names stand for the path
        drawn = [line for ax in figure.axes for line in ax.get_lines() if line.get_gid() == "run"]
        assert [line.get_label() for line in drawn] == ["sgd", "Adam"]
        assert drawn[0].get_color() != drawn[1].get_color()
        assert drawn[0].get_marker() != drawn[1].get_marker()
    html = tmp_path / "surface.html"
    write_surface_html(panels[0], scale, html)
    text = html.read_text()
    assert '"name":"sgd"' in text and '"name":"Adam"' in text


def test_on_a_random_plane_each_run_is_projected(runs, cifar_root, tmp_path):
    config = write_config(tmp_path, cifar_root, runs, {"trajectories": labelled(runs)})
    assert main(["sweep", str(config)]) == 0
    surface = read_surface(tmp_path / "surface.h5")
    directions, _ = read_directions(tmp_path / "surface.directions.h5")
    assert surface.runs is not None and directions.y is not None
    assert surface.runs.explained_variance_ratio is None  # a random plane is not the runs'
    origin = checkpoint.read_state_dict(theta_star(runs))
    keys = [key for key in directions.x if directions.x[key].any() or directions.y[key].any()]
    for run, name in zip(surface.runs.paths, OPTIMIZERS, strict=True):
        files = [runs[name] / f"model_{step}.pt" for step in range(STEPS + 1)]
        alone = project_trajectory(origin, directions.x, directions.y, files, keys)
        np.testing.assert_array_equal(run.trajectory.coordinates, alone.coordinates)
    # Resuming with other runs is another sweep: refused, the file left as it was.
    before = (tmp_path / "surface.h5").read_bytes()
    changed = write_config(tmp_path, cifar_root, runs, {"trajectories": [str(runs["sgd"])]})
    assert main(["sweep", str(changed)]) == 2
    assert (tmp_path / "surface.h5").read_bytes() == before


def bad_cases(runs: dict[str, Path], tmp_path: Path) -> dict[str, tuple[dict, str]]:
    empty = tmp_path / "empty"
    empty.mkdir()
    stranger = tmp_path / "stranger"
    torch.manual_seed(1)
    for step in range(2):
        save_checkpoint(
            stranger / f"model_{step}.pt",
            models.build("convnet_small", num_classes=100).state_dict(),
        )
    return {
        "empty": (
            {"kind": "pca", "trajectories": [str(runs["sgd"]), str(empty)]},
            f"directions.trajectories run 'empty': {empty} holds 0 checkpoint(s)",
        ),
        "missing": (
            {"trajectories": [str(tmp_path / "nowhere")]},
            f"directions.trajectories run 'nowhere': {tmp_path / 'nowhere'} is not a folder",
        ),
        "stranger": (
            {"trajectories": [str(runs["sgd"]), {"path": str(stranger), "label": "other"}]},
            "directions.trajectories run 'other': checkpoint model_0.pt does not fit "
            "model.checkpoint's model (linear.weight shaped (100, ",
        ),
        "both": (
            {"kind": "pca", "trajectory": str(runs["sgd"]), "trajectories": [str(runs["adam"])]},
            "directions.trajectory and directions.trajectories both give training paths",
        ),
        "twice": (
            {"trajectories": [str(runs["sgd"]), str(runs["sgd"])]},
            "directions.trajectories names two runs 'sgd'",
        ),
        "unknown key": (
            {"trajectories": [{"path": str(runs["sgd"]), "colour": "red"}]},
            "unknown key directions.trajectories.colour",
        ),
    }


@pytest.mark.parametrize("case", ["empty", "missing", "stranger", "both", "twice", "unknown key"])
def test_bad_runs_are_one_line_exit_2_and_nothing_written(case, runs, cifar_root, tmp_path, capsys):
    directions, expected = bad_cases(runs, tmp_path)[case]
    config = write_config(tmp_path, cifar_root, runs, directions)
    capsys.readouterr()
    assert main(["sweep", str(config)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and expected in error, error
    assert not (tmp_path / "surface.h5").exists()
    assert not (tmp_path / "surface.directions.h5").exists()


def test_the_documented_comparison_runs_as_shown(tmp_path, monkeypatch, capsys):
    """docs/training.md's runs.yaml and its commands, in a scratch folder holding the two runs
    it names and synthetic data where it looks for them."""
    page = ROOT / "docs" / "training.md"
    (config,) = [block for block in blocks(page) if block.lines[0].startswith("# runs.yaml")]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs.yaml").write_text("\n".join(config.lines) + "\n")
    write_synthetic(tmp_path / "data" / "cifar10", train_size=64, test_size=32, seed=0)
    torch.manual_seed(0)
    initial = models.build("convnet_small").state_dict()
    for name in OPTIMIZERS:
        train_run(tmp_path / "runs" / name, initial, name)
    commands = (  # documented(...) with the text itself: tests/test_docs.py reads the calls
        documented(".venv/bin/lsurf sweep runs.yaml"),
        documented(".venv/bin/lsurf info runs/compare.h5"),
        documented(".venv/bin/lsurf plot runs/compare.h5 --format png,html"),
    )
    for command in commands:
        capsys.readouterr()
        assert main(shlex.split(command.text)[1:]) == 0, command.text
        printed = capsys.readouterr().out.splitlines()
        for shown in command.shown:  # each shown line printed, in order; … matches anything
            pattern = re.compile(".*".join(re.escape(part) for part in shown.split("…")))
            matching = [index for index, line in enumerate(printed) if pattern.fullmatch(line)]
            assert matching, (command.text, shown, printed)
            printed = printed[matching[0] + 1 :]
    assert all(
        (tmp_path / "runs" / f"compare_train_loss_{kind}.png").stat().st_size > 0
        for kind in ("contour", "filled", "heatmap", "surface3d")
    )


def test_a_pca_direction_file_of_other_runs_is_not_reused(
    runs, pca_sweep, cifar_root, tmp_path, capsys
):
    """The union plane depends on the runs: a direction file made for other runs (or for one
    run's `trajectory`) is refused by name, not silently reused."""
    shared = str(pca_sweep.with_name("surface.directions.h5"))
    before = Path(shared).read_bytes()
    for directions in (
        {"kind": "pca", "trajectories": [str(runs["sgd"])], "file": shared},
        {"kind": "pca", "trajectory": str(runs["sgd"]), "file": shared},
    ):
        config = write_config(tmp_path, cifar_root, runs, directions)
        capsys.readouterr()
        assert main(["sweep", str(config)]) == 2
        error = capsys.readouterr().err.strip()
        assert "\n" not in error, error
        assert "was made for another sweep (differs in: " in error and "trajectories " in error
        assert not (tmp_path / "surface.h5").exists()
    assert Path(shared).read_bytes() == before


@pytest.mark.parametrize("kind", ["pca", "random"])
def test_runs_on_a_line_are_refused(kind, runs, cifar_root, tmp_path, capsys):
    directions = {"kind": kind, "trajectories": [str(runs["sgd"])]}
    config = write_config(tmp_path, cifar_root, runs, directions, grid={"x": "-1:1:3"})
    capsys.readouterr()
    assert main(["sweep", str(config)]) == 2
    assert capsys.readouterr().err.strip() == (
        "lsurf: error: directions.trajectories draws training paths on a plane: give grid.y, "
        "or remove it"
    )
    assert not (tmp_path / "surface.h5").exists()
