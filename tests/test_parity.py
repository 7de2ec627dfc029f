"""The reference's direction options in lsurf: planes through three checkpoints, a target with
a random or the same y, per-axis normalization, and directions over BN running statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lsurf import models, params
from lsurf.checkpoint import load_weights, save_checkpoint
from lsurf.cli import main
from lsurf.config import load_sweep_config
from lsurf.directions import random_directions
from lsurf.files.directions import read_directions
from lsurf.files.surface import read_surface
from lsurf.run.sweep import run_sweep


def sweep(tmp_path: Path, name: str, checkpoint: Path, cifar_root: Path, **settings) -> Path:
    """Run a sweep of convnet_small in process; `settings` are dotted keys (grid.x=...)."""
    config: dict = {
        "model": {"name": "convnet_small", "checkpoint": str(checkpoint)},
        "data": {"root": str(cifar_root), "splits": ["train", "test"], "batch_size": 64},
        "directions": {},
        "grid": {"x": "0:1:2"},
        "output": str(tmp_path / f"{name}.h5"),
    }
    for key, value in settings.items():
        section, field = key.split("__")
        config[section][field] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return run_sweep(load_sweep_config(path), log=lambda _: None).path


def moved_checkpoint(origin: Path, path: Path, seed: int) -> Path:
    """θ* with every weight and BN running statistic moved: another checkpoint to aim at."""
    model = models.build("convnet_small")
    load_weights(model, origin)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in params.movable(model, include_buffers=True).values():
            noise = torch.rand(tensor.shape, generator=generator)
            tensor.mul_(0.8 + 0.4 * noise)  # running_var stays positive
    save_checkpoint(path, model.state_dict(), epoch=2)
    return path


@pytest.fixture(scope="module")
def three(tmp_path_factory, small_checkpoint) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("three")
    return (
        small_checkpoint,
        moved_checkpoint(small_checkpoint, folder / "second.pt", 1),
        moved_checkpoint(small_checkpoint, folder / "third.pt", 2),
    )


def values_at(path: Path, i: int, j: int | None = None) -> dict[str, float]:
    surface = read_surface(path)
    index = (i,) if j is None else (i, j)
    return {name: float(values[index]) for name, values in surface.metrics.items()}


def test_a_plane_through_three_checkpoints_is_exactly_each_at_its_corner(
    tmp_path, cifar_root, three
):
    first, second, third = three
    plane = sweep(
        tmp_path,
        "plane",
        first,
        cifar_root,
        directions__kind="target",
        directions__target=str(second),
        directions__y_target=str(third),
        grid__y="0:1:2",
    )
    # Each checkpoint on its own: θ* is its own bits at a = 0 of any sweep.
    alone = [
        values_at(sweep(tmp_path, f"alone{k}", path, cifar_root, directions__seed=k), 0)
        for k, path in enumerate(three)
    ]
    assert values_at(plane, 0, 0) == alone[0]
    assert values_at(plane, 1, 0) == alone[1]
    assert values_at(plane, 0, 1) == alone[2]
    assert len({values["train_loss"] for values in alone}) == 3  # the corners do differ
    directions, attributes = read_directions(plane.with_name("plane.directions.h5"))
    assert "y_target_sha256" in attributes
    start = models.build("convnet_small")
    load_weights(start, first)
    end = models.build("convnet_small")
    load_weights(end, third)
    key = "bn1.running_var"  # space: states (the default of a target) moves the buffers
    assert torch.equal(directions.y[key], end.state_dict()[key] - start.state_dict()[key])
    # A third checkpoint whose contents changed does not resume the old sweep.
    moved_checkpoint(first, third, 3)
    code = main(["sweep", str(tmp_path / "plane.yaml")])
    assert code == 2


def test_a_target_with_a_random_y_keeps_the_line_and_draws_y_as_a_random_plane_would(
    tmp_path, cifar_root, three
):
    first, second, _ = three
    line = sweep(
        tmp_path,
        "line",
        first,
        cifar_root,
        directions__kind="target",
        directions__target=str(second),
        grid__x="-0.5:1:4",
    )
    plane = sweep(
        tmp_path,
        "plane",
        first,
        cifar_root,
        directions__kind="target",
        directions__target=str(second),
        directions__seed=5,
        directions__y_norm="layer",
        grid__x="-0.5:1:4",
        grid__y="0:0.5:2",
    )
    for i in range(4):  # β = 0: lerp(θ1, θ2, α) + 0·y, the same bits as the line
        assert values_at(plane, i, 0) == values_at(line, i)
    assert values_at(plane, 1, 1) != values_at(plane, 1, 0)
    directions, attributes = read_directions(plane.with_name("plane.directions.h5"))
    model = models.build("convnet_small")
    load_weights(model, first)
    expected = random_directions(params.movable(model, False), "layer", "biasbn", 5, False).x
    for key, tensor in expected.items():
        assert torch.equal(directions.y[key], tensor), key
    assert directions.y["bn1.running_mean"].abs().sum() == 0  # states, ignore biasbn: held
    assert (attributes["y_norm"], attributes["y_ignore"], int(attributes["seed"])) == (
        "layer",
        "biasbn",
        5,
    )


def test_same_dir_and_per_axis_normalization(tmp_path, cifar_root, small_checkpoint):
    same = sweep(
        tmp_path,
        "same",
        small_checkpoint,
        cifar_root,
        directions__same_dir=True,
        grid__x="-1:1:3",
        grid__y="-1:1:3",
    )
    directions, _ = read_directions(same.with_name("same.directions.h5"))
    assert all(torch.equal(directions.x[key], directions.y[key]) for key in directions.x)
    surface = read_surface(same)
    loss = surface.metrics["train_loss"]
    np.testing.assert_allclose(loss, loss.T, rtol=1e-5)  # f(a, b) = f(b, a) when y = x
    mixed = sweep(
        tmp_path,
        "mixed",
        small_checkpoint,
        cifar_root,
        directions__y_norm="layer",
        grid__y="0:1:2",
    )
    directions, _ = read_directions(mixed.with_name("mixed.directions.h5"))
    model = models.build("convnet_small")
    load_weights(model, small_checkpoint)
    for key in ("conv1.weight", "linear.weight"):  # y has θ*'s norm per tensor, x per filter
        weight = model.state_dict()[key]
        assert torch.isclose(directions.y[key].norm(), weight.norm(), rtol=1e-5)
        rows = directions.x[key].reshape(len(weight), -1).norm(dim=1)
        torch.testing.assert_close(rows, weight.reshape(len(weight), -1).norm(dim=1))


def test_states_directions_move_bn_running_statistics_as_the_reference(
    tmp_path, cifar_root, small_checkpoint
):
    weights = sweep(tmp_path, "weights", small_checkpoint, cifar_root, grid__y="0:0.5:2")
    held = sweep(
        tmp_path,
        "held",
        small_checkpoint,
        cifar_root,
        directions__space="states",
        grid__y="0:0.5:2",
    )
    # Under ignore: biasbn the running statistics' directions are 0: the weights' surface.
    for name, values in read_surface(weights).metrics.items():
        np.testing.assert_array_equal(read_surface(held).metrics[name], values)
    moved = sweep(
        tmp_path,
        "moved",
        small_checkpoint,
        cifar_root,
        directions__space="states",
        directions__ignore="none",
        grid__x="0:0.5:2",
        grid__y="0:0.5:2",
    )
    directions, attributes = read_directions(moved.with_name("moved.directions.h5"))
    assert attributes["space"] == "states"
    model = models.build("convnet_small")
    load_weights(model, small_checkpoint)
    state = model.state_dict()
    # The reference's rule for 1-D tensors without biasbn: the direction is the value itself.
    for key in ("bn1.running_mean", "bn1.running_var", "bn2.weight"):
        assert torch.equal(directions.x[key], state[key])
    # The point (0.5, 0.5) by hand: θ* + a·dx + b·dy over the whole state, evaluated at a = 0
    # of a sweep of that state.
    by_hand = {
        key: state[key] + 0.5 * directions.x[key] + 0.5 * directions.y[key]
        if key in directions.x
        else state[key]
        for key in state
    }
    point = tmp_path / "point.pt"
    save_checkpoint(point, by_hand, epoch=0)
    alone = values_at(sweep(tmp_path, "alone", point, cifar_root), 0)
    for name, value in values_at(moved, 1, 1).items():
        assert value == pytest.approx(alone[name], rel=1e-5), name
    assert (
        values_at(moved, 1, 1)["train_loss"]
        != values_at(
            sweep(
                tmp_path,
                "weights_only",
                small_checkpoint,
                cifar_root,
                directions__ignore="none",
                grid__x="0:0.5:2",
                grid__y="0:0.5:2",
            ),
            1,
            1,
        )["train_loss"]
    )


def test_a_direction_file_made_with_states_is_not_reused_for_weights(
    tmp_path, cifar_root, small_checkpoint, capsys
):
    states = sweep(tmp_path, "states", small_checkpoint, cifar_root, directions__space="states")
    config = tmp_path / "weights.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"name": "convnet_small", "checkpoint": str(small_checkpoint)},
                "data": {"root": str(cifar_root), "batch_size": 64},
                "directions": {"file": str(states.with_name("states.directions.h5"))},
                "grid": {"x": "0:1:2"},
                "output": str(tmp_path / "weights.h5"),
            }
        )
    )
    assert main(["sweep", str(config)]) == 2
    error = capsys.readouterr().err
    assert "differs in: space 'states' vs '(not set)'" in error
    assert not (tmp_path / "weights.h5").exists()


@pytest.fixture(scope="module")
def training_run(tmp_path_factory, cifar_root) -> Path:
    """A real 6-epoch SGD run of convnet_small: model_0.pt … model_6.pt."""
    folder = tmp_path_factory.mktemp("run")
    config = {
        "model": {"name": "convnet_small"},
        "data": {"root": str(cifar_root), "batch_size": 32},
        "training": {"epochs": 6, "lr": 0.05},
        "output": str(folder / "run"),
    }
    (folder / "train.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(folder / "train.yaml")]) == 0
    return folder / "run"


def test_a_training_path_on_a_random_plane_is_stored_with_its_captured_variance(
    tmp_path, cifar_root, training_run, capsys
):
    final = training_run / "final.pt"
    plane = sweep(
        tmp_path,
        "plane",
        final,
        cifar_root,
        directions__trajectory=str(training_run),
        grid__x="-1:1:3",
        grid__y="-1:1:3",
    )
    surface = read_surface(plane)
    path = surface.trajectory
    assert path is not None and path.epochs == tuple(range(7))
    # Independently: flatten the moved tensors (ignore: biasbn, so weights of dim > 1) and
    # solve the least-squares coordinates with numpy.
    directions, _ = read_directions(plane.with_name("plane.directions.h5"))
    keys = [key for key, tensor in directions.x.items() if tensor.dim() > 1]

    def flat(state: dict) -> np.ndarray:
        return np.concatenate([state[key].double().reshape(-1).numpy() for key in keys])

    model = models.build("convnet_small")
    load_weights(model, final)
    origin = flat(model.state_dict())
    basis = np.stack([flat(directions.x), flat(directions.y)], axis=1)
    for epoch, coordinates in zip(path.epochs, path.coordinates, strict=True):
        load_weights(model, training_run / f"model_{epoch}.pt")
        expected = np.linalg.lstsq(basis, flat(model.state_dict()) - origin, rcond=None)[0]
        np.testing.assert_allclose(coordinates, expected, rtol=1e-8, atol=1e-10)
    # The paper's point: random directions capture almost none of the path's motion.
    assert max(path.explained_variance_ratio) < 0.05
    assert main(["info", str(plane)]) == 0
    assert "plane    captures of the path's variance x" in capsys.readouterr().out


def reference_crunch(
    model: torch.nn.Module, xs, ys, x: list, y: list, images, labels, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """An independent transcription of the reference's sweep (plot_surface.crunch with
    --dir_type weights, evaluation.eval_loss with CrossEntropyLoss): each point k of
    np.meshgrid(xs, ys) raveled sets every parameter to w + (dx·a + dy·b) and stores the
    loss (Σ batch mean × batch size / total) and accuracy (%) at flat index k of an
    (nx, ny) array filled with -1."""
    weights = [parameter.data.clone() for parameter in model.parameters()]
    losses, accuracies = -np.ones((len(xs), len(ys))), -np.ones((len(xs), len(ys)))
    mesh_x, mesh_y = np.meshgrid(xs, ys)
    criterion = torch.nn.CrossEntropyLoss()
    model.eval()
    for index, (a, b) in enumerate(zip(mesh_x.ravel(), mesh_y.ravel(), strict=True)):
        for parameter, w, dx, dy in zip(model.parameters(), weights, x, y, strict=True):
            parameter.data = w + (dx * float(a) + dy * float(b))
        total_loss, correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(labels), batch_size):
                inputs, targets = (
                    images[start : start + batch_size],
                    labels[start : start + batch_size],
                )
                outputs = model(inputs)
                total_loss += criterion(outputs, targets).item() * len(targets)
                correct += outputs.max(1)[1].eq(targets).sum().item()
        losses.ravel()[index] = total_loss / len(labels)
        accuracies.ravel()[index] = 100.0 * correct / len(labels)
    return losses, accuracies


def test_a_reference_surface_is_reproduced_from_its_direction_file_and_data_split(
    tmp_path, cifar_root, small_checkpoint, capsys
):
    import h5py
    from reference_layout import reference_entries, write_reference_directions

    from lsurf.data.cifar import load_split
    from lsurf.data.layouts import REFERENCE_MEAN, REFERENCE_STD

    model = models.build("convnet_small")
    load_weights(model, small_checkpoint)
    drawn = random_directions(params.movable(model, False), "filter", "biasbn", 11, True)
    direction_file = write_reference_directions(
        tmp_path / "dirs.h5", model, drawn.x, drawn.y, "weights"
    )
    xs, ys = np.linspace(-1, 1, 3), np.linspace(-0.5, 0.5, 4)  # non-square, as the files are
    # What the reference computed, on the train split's --data_split 3 examples.
    split = load_split(cifar_root, "train", REFERENCE_MEAN, REFERENCE_STD, reference_split=3)
    entries = [name for name, _ in reference_entries(model, "weights")]
    losses, accuracies = reference_crunch(
        model,
        xs,
        ys,
        [drawn.x[name] for name in entries],
        [drawn.y[name] for name in entries],
        split.images,
        split.labels,
        batch_size=128,
    )
    published = tmp_path / "published.h5"
    with h5py.File(published, "w") as h5file:
        h5file["dir_file"] = str(direction_file)
        h5file["xcoordinates"], h5file["ycoordinates"] = xs, ys
        h5file["train_loss"], h5file["train_acc"] = losses, accuracies
    ours = sweep(
        tmp_path,
        "ours",
        small_checkpoint,
        cifar_root,
        directions__kind="reference",
        directions__reference=str(direction_file),
        data__reference_split=3,
        data__splits=["train"],
        data__batch_size=128,
        grid__x="-1:1:3",
        grid__y="-0.5:0.5:4",
    )
    theirs, mine = read_surface(published), read_surface(ours)
    assert theirs.done.all() and mine.done.all()
    np.testing.assert_allclose(mine.metrics["train_loss"], theirs.metrics["train_loss"], rtol=1e-5)
    # An argmax may flip on a rounding difference: at most one example of 66 per point.
    np.testing.assert_allclose(mine.metrics["train_acc"], theirs.metrics["train_acc"], atol=1.6)
    assert np.abs(mine.metrics["train_acc"] - theirs.metrics["train_acc"]).mean() < 0.5
    # What a researcher runs to check: lsurf compare against the published file.
    assert main(["compare", str(ours), str(published)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["train_loss"][1] == "12" and float(rows["train_loss"][3]) < 1e-5
