"""lsurf.projection: a training path on any plane, in the surface's coordinates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lsurf import checkpoint, models, params
from lsurf.checkpoint import save_checkpoint
from lsurf.cli import main
from lsurf.directions import random_directions
from lsurf.errors import ConfigError
from lsurf.pca import principal_plane, trajectory_files
from lsurf.projection import project_trajectory

RANDOM_SEEDS = range(5)


def flat(tensors: dict[str, torch.Tensor], keys: list[str]) -> np.ndarray:
    return np.concatenate([tensors[key].detach().double().reshape(-1).numpy() for key in keys])


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return checkpoint.read_state_dict(path)


@pytest.fixture
def wandering_trajectory(tmp_path):
    """θ*, 6 checkpoints scattered around it (the last is θ*), and a skewed plane x, y.

    y = 0.6·x + noise: ⟨x, y⟩ ≠ 0 and ‖x‖, ‖y‖ ≠ 1, so only the least-squares solution, not
    the reference's 'cos' lengths, gives the right coordinates.
    """
    torch.manual_seed(0)
    model = models.build("convnet_small")
    origin = params.snapshot(params.movable(model, include_buffers=False))
    keys = list(origin)  # ignore=none: biases and BN parameters take part too
    generator = torch.Generator().manual_seed(3)

    def noise(scale: float) -> dict[str, torch.Tensor]:
        return {key: scale * torch.randn(origin[key].shape, generator=generator) for key in keys}

    x = noise(0.3)
    y = {key: 0.6 * x[key] + value for key, value in noise(0.2).items()}
    files = []
    for epoch, scale in enumerate([2.0, 1.0, 0.5, 0.3, 0.1, 0.0]):
        moved = model.state_dict() | {
            key: origin[key] + value for key, value in noise(scale).items()
        }
        files.append(tmp_path / f"model_{epoch}.pt")
        save_checkpoint(files[-1], moved, epoch=epoch)
    return origin, keys, x, y, files


@pytest.fixture(scope="module")
def trained_trajectory(tmp_path_factory, cifar_root):
    """A real 10-epoch SGD run of convnet_small with lsurf train: θ*, its weights, the files."""
    folder = tmp_path_factory.mktemp("trained")
    config = {
        "model": {"name": "convnet_small"},
        "data": {"root": str(cifar_root), "splits": ["train", "test"], "batch_size": 32},
        "training": {"epochs": 10, "lr": 0.05},
        "output": str(folder / "run"),
    }
    (folder / "train.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(folder / "train.yaml")]) == 0
    files = trajectory_files(folder / "run")
    model = models.build("convnet_small")
    checkpoint.load_weights(model, files[-1])
    origin = params.snapshot(params.movable(model, include_buffers=False))
    keys = [key for key in origin if origin[key].dim() > 1]  # ignore=biasbn
    return origin, keys, files


def test_coordinates_are_the_least_squares_point_of_the_plane(wandering_trajectory):
    origin, keys, x, y, files = wandering_trajectory
    trajectory = project_trajectory(origin, x, y, files, keys)

    plane = np.stack([flat(x, keys), flat(y, keys)], axis=1)  # (n, 2)
    rows = np.stack([flat(weights_of(path), keys) - flat(origin, keys) for path in files])
    expected = np.stack([np.linalg.lstsq(plane, row, rcond=None)[0] for row in rows])
    scale = np.abs(expected).max()
    np.testing.assert_allclose(trajectory.coordinates, expected, rtol=1e-10, atol=1e-10 * scale)
    assert trajectory.coordinates.dtype == np.float64 and trajectory.coordinates.shape == (6, 2)
    assert trajectory.coordinates[-1] == pytest.approx([0.0, 0.0], abs=1e-12)  # θ* itself
    # Not the reference's 'cos' lengths ⟨d, x⟩/‖x‖, which a skewed, non-unit plane breaks.
    cosine = rows @ plane / np.linalg.norm(plane, axis=0)
    assert np.abs(cosine - expected).max() > 0.1 * scale

    centred = rows - rows.mean(axis=0)
    units = plane / np.linalg.norm(plane, axis=0)
    captured = ((centred @ units) ** 2).sum(axis=0) / (centred**2).sum()
    np.testing.assert_allclose(trajectory.explained_variance_ratio, captured, rtol=1e-10)
    assert trajectory.epochs == tuple(range(6))


def test_on_a_pca_plane_it_is_pcas_path_and_explained_variance(trained_trajectory):
    origin, keys, files = trained_trajectory
    plane = principal_plane(origin, files, ignore="biasbn")
    trajectory = project_trajectory(origin, plane.x, plane.y, files, keys)
    # pca's path comes from its float64 components, the plane it returns is float32: the
    # rounding of the directions (relative 2⁻²⁴ per entry, averaging out over the weights)
    # leaves ~1e-9 of the path's size.
    scale = np.abs(plane.path).max()
    np.testing.assert_allclose(trajectory.coordinates, plane.path, rtol=0, atol=1e-8 * scale)
    np.testing.assert_allclose(
        trajectory.explained_variance_ratio, plane.explained_variance_ratio, rtol=1e-9
    )
    assert list(trajectory.epochs) == plane.epochs == list(range(11))


def test_random_planes_miss_the_path_that_the_pca_plane_captures(trained_trajectory):
    """The paper's §7: random directions are nearly orthogonal to the optimization path.

    Seen on this run (≈1.5k weights): PCA 93.2% + 5.5%; five filter-normalized random planes
    at most 1.3% per axis, mostly under 1%. A random direction in n dimensions captures
    ~1/n of an isotropic spread; the path is far from isotropic, but 5% is still 4× the
    worst seen, and 90% for PCA leaves room for another torch's training numerics.
    """
    origin, keys, files = trained_trajectory
    pca = principal_plane(origin, files, ignore="biasbn").explained_variance_ratio
    randoms = []
    for seed in RANDOM_SEEDS:
        directions = random_directions(origin, "filter", "biasbn", seed, plane=True)
        assert directions.y is not None
        trajectory = project_trajectory(origin, directions.x, directions.y, files, keys)
        randoms.append(trajectory.explained_variance_ratio)
    assert sum(pca) > 0.9
    assert all(0 <= share < 0.05 for shares in randoms for share in shares)


def test_parallel_directions_are_a_one_line_config_error(wandering_trajectory):
    origin, keys, x, _, files = wandering_trajectory
    for y in (x, {key: -2.5 * value for key, value in x.items()}):
        with pytest.raises(ConfigError) as error:
            project_trajectory(origin, x, y, files, keys)
        message = str(error.value)
        assert "\n" not in message
        assert message.startswith(
            "a training path cannot be projected onto a plane whose two directions are "
            "parallel (directions.same_dir)"
        )


def test_a_checkpoint_of_another_model_is_named(wandering_trajectory):
    origin, keys, x, y, files = wandering_trajectory
    torch.manual_seed(0)
    stranger = files[0].with_name("model_9.pt")
    save_checkpoint(stranger, models.build("convnet_small", num_classes=100).state_dict())
    with pytest.raises(ConfigError) as error:
        project_trajectory(origin, x, y, [*files[:3], stranger, *files[3:]], keys)
    message = str(error.value)
    assert "\n" not in message
    assert str(stranger) in message and "linear.weight" in message
