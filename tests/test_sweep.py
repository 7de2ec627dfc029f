import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lsurf import checkpoint, models
from lsurf.checkpoint import save_checkpoint
from lsurf.config import load_sweep_config
from lsurf.data.cifar import load_split
from lsurf.data.layouts import REFERENCE_MEAN, REFERENCE_STD
from lsurf.errors import OutputError
from lsurf.evaluate import measure
from lsurf.files.directions import read_directions
from lsurf.files.surface import read_surface
from lsurf.run.sweep import run_sweep


def quiet(_message: str) -> None:
    pass


def sweep(path, force=False, overrides=()):
    return run_sweep(load_sweep_config(path, list(overrides)), force=force, log=quiet)


def direct_loss(checkpoint_path, state_changes, split):
    """The loss recomputed from scratch: fresh model, weights set by hand, one big batch."""
    model = models.build("convnet_small")
    checkpoint.load_weights(model, checkpoint_path)
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            tensor.add_(state_changes.get(name, torch.zeros_like(tensor)))
    model.eval()
    with torch.no_grad():
        logits = model(split.images)
    accuracy = 100.0 * int((logits.argmax(1) == split.labels).sum()) / len(split)
    return F.cross_entropy(logits, split.labels).item(), accuracy


def test_non_square_surface_lands_every_value_at_its_index(
    sweep_yaml, cifar_root, small_checkpoint
):
    config_path = sweep_yaml({"grid": {"x": "-1:1:4", "y": "-0.5:0.5:3"}})
    outcome = sweep(config_path)
    assert (outcome.total, outcome.computed, outcome.already_complete) == (12, 12, False)
    surface = read_surface(outcome.path)
    assert surface.metrics["train_loss"].shape == (4, 3)
    np.testing.assert_array_equal(surface.x, np.linspace(-1, 1, 4))
    np.testing.assert_array_equal(surface.y, np.linspace(-0.5, 0.5, 3))
    assert surface.done.all()
    directions, _ = read_directions(outcome.path.with_name("surface.directions.h5"))
    splits = {
        name: load_split(cifar_root, name, REFERENCE_MEAN, REFERENCE_STD)
        for name in ("train", "test")
    }
    for i, a in enumerate(surface.x):
        for j, b in enumerate(surface.y):
            change = {k: a * directions.x[k] + b * directions.y[k] for k in directions.x}
            for name, split in splits.items():
                loss, accuracy = direct_loss(small_checkpoint, change, split)
                assert surface.metrics[f"{name}_loss"][i, j] == pytest.approx(loss, rel=1e-5)
                assert surface.metrics[f"{name}_acc"][i, j] == pytest.approx(accuracy, abs=1e-9)


def test_surface_at_origin_is_the_unperturbed_models_loss(sweep_yaml, cifar_root, small_checkpoint):
    outcome = sweep(sweep_yaml({"grid": {"x": "-1:1:3", "y": "-2:2:5"}}))
    surface = read_surface(outcome.path)
    assert (surface.x[1], surface.y[2]) == (0.0, 0.0)
    split = load_split(cifar_root, "train", REFERENCE_MEAN, REFERENCE_STD)
    loss, accuracy = direct_loss(small_checkpoint, {}, split)
    assert surface.metrics["train_loss"][1, 2] == pytest.approx(loss, rel=1e-6)
    assert surface.metrics["train_acc"][1, 2] == pytest.approx(accuracy)
    # Moving away from θ* changes the loss (the directions are not zero).
    assert surface.metrics["train_loss"][0, 0] != surface.metrics["train_loss"][1, 2]


def test_one_dimensional_sweep(sweep_yaml):
    outcome = sweep(sweep_yaml({"grid": {"x": "-1:1:5"}}))
    surface = read_surface(outcome.path)
    assert surface.y is None and surface.metrics["test_acc"].shape == (5,)
    assert np.isfinite(surface.metrics["test_loss"]).all()


def test_resume_computes_only_missing_points_and_matches(sweep_yaml):
    config_path = sweep_yaml()
    outcome = sweep(config_path)
    complete = read_surface(outcome.path)
    with h5py.File(outcome.path, "r+") as h5file:  # as if the sweep had been killed
        h5file["done"][1:3, :] = False
        for name in complete.metrics:
            h5file[name][1:3, :] = np.nan
    resumed = sweep(config_path)
    assert (resumed.computed, resumed.already_complete) == (6, False)
    again = read_surface(outcome.path)
    for name, values in complete.metrics.items():
        np.testing.assert_array_equal(again.metrics[name], values)  # bit for bit


def test_complete_output_is_left_untouched(sweep_yaml):
    config_path = sweep_yaml()
    path = sweep(config_path).path
    before = path.read_bytes(), path.stat().st_mtime_ns
    outcome = sweep(config_path)
    assert outcome.already_complete and outcome.computed == 0
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_a_different_sweep_is_refused_and_force_starts_over(sweep_yaml):
    path = sweep(sweep_yaml()).path
    before = path.read_bytes()
    with pytest.raises(OutputError, match=r"differs in: grid\.x.*--force"):
        sweep(sweep_yaml(), overrides=["grid.x=-2:2:4"])
    with pytest.raises(OutputError, match="directions.seed"):
        sweep(
            sweep_yaml({"directions.file": str(path.with_name("other.h5"))}),
            overrides=["directions.seed=5"],
        )
    assert path.read_bytes() == before
    outcome = sweep(sweep_yaml(), force=True, overrides=["grid.x=-2:2:4"])
    assert outcome.computed == 12
    assert read_surface(path).x[0] == -2.0
    # --force also replaces the output's own direction file when the directions change.
    outcome = sweep(sweep_yaml(), force=True, overrides=["directions.seed=5"])
    assert outcome.computed == 12
    assert read_directions(path.with_name("surface.directions.h5"))[1]["seed"] == 5


def test_direction_file_is_reused_and_a_mismatched_one_refused(sweep_yaml, tmp_path):
    first = sweep(sweep_yaml())
    direction_file = first.path.with_name("surface.directions.h5")
    stamp = direction_file.stat().st_mtime_ns
    # Another surface (other grid, other output) from the same direction file.
    second = sweep(
        sweep_yaml({"output": str(tmp_path / "b.h5"), "directions.file": str(direction_file)}),
        overrides=["grid.x=-0.5:0.5:2"],
    )
    assert second.computed == 6 and direction_file.stat().st_mtime_ns == stamp
    with pytest.raises(OutputError, match="seed"):
        sweep(
            sweep_yaml({"output": str(tmp_path / "c.h5"), "directions.file": str(direction_file)}),
            overrides=["directions.seed=1"],
        )
    assert not (tmp_path / "c.h5").exists()


def test_interpolation_ends_are_exactly_the_two_checkpoints(
    sweep_yaml, cifar_root, tmp_path, small_checkpoint
):
    torch.manual_seed(5)
    other = models.build("convnet_small")
    for module in other.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
    second = tmp_path / "second.pt"
    save_checkpoint(second, other.state_dict())
    config_path = sweep_yaml(
        {
            "directions": {"kind": "target", "target": str(second)},
            "grid": {"x": "-0.5:1.5:5"},
            # Unfolded, as the plain model below: a folded BN rounds differently on some
            # CPUs (test_folding holds folded = unfolded to a tolerance).
            "evaluation": {"fold_bn": False},
        }
    )
    surface = read_surface(sweep(config_path).path)
    np.testing.assert_array_equal(surface.x, [-0.5, 0.0, 0.5, 1.0, 1.5])
    for index, path in ((1, small_checkpoint), (3, second)):
        model = models.build("convnet_small")
        checkpoint.load_weights(model, path)
        model.to(memory_format=torch.channels_last).eval()
        for name in ("train", "test"):
            split = load_split(cifar_root, name, REFERENCE_MEAN, REFERENCE_STD)
            split = type(split)(
                split.images.contiguous(memory_format=torch.channels_last), split.labels
            )
            expected = measure(model, split, 64, "cpu")
            assert surface.metrics[f"{name}_loss"][index] == expected.loss
            assert surface.metrics[f"{name}_acc"][index] == expected.accuracy
    from lsurf.files.info import describe_surface

    assert f"directions  target  to {second}  file " in describe_surface(surface.path)
