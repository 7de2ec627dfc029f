import numpy as np
import pytest
import torch

from lsurf import models, params
from lsurf.checkpoint import save_checkpoint
from lsurf.errors import ConfigError
from lsurf.pca import principal_plane, trajectory_files


def flat(tensors, keys):
    return torch.cat([tensors[key].reshape(-1).double() for key in keys])


@pytest.fixture
def planar_trajectory(tmp_path):
    """Checkpoints θ_i = θ* + α_i·u + β_i·w with u, w orthonormal over the weights."""
    torch.manual_seed(0)
    model = models.build("convnet_small")
    origin = params.snapshot(params.movable(model, include_buffers=False))
    keys = [key for key in origin if origin[key].dim() > 1]  # biasbn stays at θ*
    generator = torch.Generator().manual_seed(1)
    raw_u = {key: torch.randn(origin[key].shape, generator=generator) for key in keys}
    raw_w = {key: torch.randn(origin[key].shape, generator=generator) for key in keys}
    u_flat = flat(raw_u, keys)
    u_flat /= u_flat.norm()
    w_flat = flat(raw_w, keys)
    w_flat -= (w_flat @ u_flat) * u_flat
    w_flat /= w_flat.norm()
    alphas = np.array([3.0, 2.2, 1.5, 0.9, 0.4, 0.1, 0.0])
    betas = np.array([-1.0, 0.8, -0.5, 0.6, -0.2, 0.1, 0.0])
    state = model.state_dict()
    files = []
    for epoch, (alpha, beta) in enumerate(zip(alphas, betas, strict=True)):
        offset = 0
        moved = dict(state)
        for key in keys:
            size = origin[key].numel()
            step = alpha * u_flat[offset : offset + size] + beta * w_flat[offset : offset + size]
            moved[key] = origin[key] + step.reshape(origin[key].shape).float()
            offset += size
        files.append(tmp_path / f"model_{epoch}.pt")
        save_checkpoint(files[-1], moved, epoch=epoch)
    return origin, keys, u_flat, w_flat, alphas, betas, files


def test_plane_of_a_planar_trajectory_spans_it_and_explains_everything(planar_trajectory):
    origin, keys, u, w, alphas, betas, files = planar_trajectory
    plane = principal_plane(origin, files, ignore="biasbn")
    v1, v2 = flat(plane.x, keys), flat(plane.y, keys)
    # Orthonormal, inside span{u, w}.
    assert float(v1 @ v1) == pytest.approx(1.0, abs=1e-6)
    assert float(v2 @ v2) == pytest.approx(1.0, abs=1e-6)
    assert float(v1 @ v2) == pytest.approx(0.0, abs=1e-6)
    for v in (v1, v2):
        inside = (v @ u) * u + (v @ w) * w
        assert float((v - inside).norm()) < 1e-5
    assert sum(plane.explained_variance_ratio) == pytest.approx(1.0, abs=1e-6)
    assert plane.explained_variance_ratio[0] >= plane.explained_variance_ratio[1] > 0
    # The path is the known coordinates, rotated within the plane: an isometry, mapping
    # back onto every checkpoint.
    rotation = np.array([[float(v1 @ u), float(v1 @ w)], [float(v2 @ u), float(v2 @ w)]])
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(2), atol=1e-5)
    expected = (rotation @ np.stack([alphas, betas])).T
    np.testing.assert_allclose(plane.path, expected, atol=1e-5)
    assert plane.path[-1] == pytest.approx([0.0, 0.0], abs=1e-9)  # θ* itself is the origin
    assert (plane.path[0] >= 0).all()  # the sign convention
    assert plane.epochs == list(range(7))
    # Biases and BN parameters stay at θ* under ignore=biasbn.
    assert all(torch.count_nonzero(plane.x[k]) == 0 for k in origin if origin[k].dim() <= 1)


def test_rows_are_mean_centred_like_sklearn(planar_trajectory):
    """Centred: PC1 is the top eigenvector of the covariance of the rows, not of X Xᵀ."""
    origin, keys, u, w, alphas, betas, files = planar_trajectory
    coordinates = np.stack([alphas, betas], axis=1)
    for center in (True, False):
        plane = principal_plane(origin, files, ignore="biasbn", center=center)
        rows = coordinates - coordinates.mean(0) if center else coordinates
        values, vectors = np.linalg.eigh(rows.T @ rows)
        # Expected PC1 in (u, w) coordinates vs the one found, up to sign.
        found = np.array([float(flat(plane.x, keys) @ u), float(flat(plane.x, keys) @ w)])
        assert abs(found @ vectors[:, -1]) == pytest.approx(1.0, abs=1e-5)
        assert plane.explained_variance_ratio[0] == pytest.approx(values[-1] / values.sum(), 1e-6)


def test_small_memory_budget_gives_the_same_plane(planar_trajectory):
    origin, keys, *_, files = planar_trajectory
    whole = principal_plane(origin, files, ignore="biasbn")
    blocked = principal_plane(origin, files, ignore="biasbn", memory_bytes=8 * 7 * 100)
    np.testing.assert_allclose(blocked.path, whole.path, atol=1e-9)
    for key in whole.x:
        torch.testing.assert_close(blocked.x[key], whole.x[key])


def test_trajectory_listing_orders_by_epoch_and_needs_three(tmp_path):
    for epoch in (10, 2, 0, 1):
        (tmp_path / f"model_{epoch}.pt").write_bytes(b"")
    assert [p.name for p in trajectory_files(tmp_path)] == [
        "model_0.pt",
        "model_1.pt",
        "model_2.pt",
        "model_10.pt",
    ]
    with pytest.raises(ConfigError, match="at least 3"):
        trajectory_files(tmp_path, "model_1*.pt")
    with pytest.raises(ConfigError, match="not a folder"):
        trajectory_files(tmp_path / "missing")


def pca_sweep(files, sweep_yaml, grid):
    """Sweep the plane of the trajectory `files` (the last one is θ*): config, outcome, surface."""
    from lsurf.config import load_sweep_config
    from lsurf.files.surface import read_surface
    from lsurf.run.sweep import run_sweep

    config = sweep_yaml(
        {
            "model.checkpoint": str(files[-1]),
            "directions": {"kind": "pca", "trajectory": str(files[0].parent)},
            "grid": grid,
        }
    )
    outcome = run_sweep(load_sweep_config(config), log=lambda _: None)
    return config, outcome, read_surface(outcome.path)


def test_pca_sweep_stores_the_path_and_the_plane_passes_through_every_checkpoint(
    planar_trajectory, sweep_yaml, cifar_root, tmp_path
):
    from lsurf import checkpoint
    from lsurf.data.cifar import load_split
    from lsurf.data.layouts import REFERENCE_MEAN, REFERENCE_STD
    from lsurf.evaluate import Evaluator
    from lsurf.files.directions import read_directions

    *_, files = planar_trajectory
    _, outcome, surface = pca_sweep(files, sweep_yaml, {"x": "-1:4:6", "y": "-2:2:5"})
    assert surface.done.all() and surface.trajectory is not None
    assert surface.trajectory.epochs == tuple(range(7))
    assert sum(surface.trajectory.explained_variance_ratio) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(surface.trajectory.coordinates[-1], [0.0, 0.0], atol=1e-9)
    directions, attributes = read_directions(outcome.path.with_name("surface.directions.h5"))
    assert attributes["kind"] == "pca" and attributes["center"]
    np.testing.assert_array_equal(directions.trajectory.coordinates, surface.trajectory.coordinates)
    # θ* + a_i·v1 + b_i·v2 is checkpoint i: the surface's plane really holds the path.
    split = load_split(cifar_root, "train", REFERENCE_MEAN, REFERENCE_STD)
    model = models.build("convnet_small")
    checkpoint.load_weights(model, files[-1])
    evaluator = Evaluator(model, directions, {"train": split}, 64, torch.device("cpu"))
    for index in (0, 3):
        other = models.build("convnet_small")
        checkpoint.load_weights(other, files[index])
        direct = Evaluator(other, directions, {"train": split}, 64, torch.device("cpu"))
        a, b = surface.trajectory.coordinates[index]
        on_plane = evaluator.evaluate(float(a), float(b))["train_loss"]
        assert on_plane == pytest.approx(direct.evaluate(0.0, 0.0)["train_loss"], rel=1e-4)


def test_auto_axes_fit_the_path_and_the_file_records_the_concrete_range(
    planar_trajectory, sweep_yaml
):
    import yaml

    from lsurf.config import load_sweep_config
    from lsurf.files.surface import read_surface_attributes
    from lsurf.grid import fit_axis
    from lsurf.run.sweep import run_sweep

    *_, files = planar_trajectory
    config, outcome, surface = pca_sweep(files, sweep_yaml, {"x": "auto:4", "y": "auto:3"})
    path = surface.trajectory.coordinates
    assert surface.done.all() and surface.metrics["train_loss"].shape == (4, 3)
    # Every checkpoint of the path lies inside the swept window, with a margin.
    assert surface.x[0] < path[:, 0].min() and surface.x[-1] > path[:, 0].max()
    assert surface.y[0] < path[:, 1].min() and surface.y[-1] > path[:, 1].max()
    stored = yaml.safe_load(read_surface_attributes(outcome.path)["config"])
    assert stored["grid"] == {
        "x": fit_axis(path[:, 0], 4).spec,
        "y": fit_axis(path[:, 1], 3).spec,
        "path": "line",
    }
    assert "auto" not in stored["grid"]["x"] + stored["grid"]["y"]
    from lsurf.files.info import describe_surface

    report = describe_surface(outcome.path)
    first, second = (100 * ratio for ratio in surface.trajectory.explained_variance_ratio)
    assert f"plane    explained variance x {first:.1f}%, y {second:.1f}%" in report
    assert "path of 7 checkpoints, epochs 0-6" in report and "seed=" not in report
    assert f"grid     x={stored['grid']['x']}  y={stored['grid']['y']}  (4x3 points)" in report
    from lsurf.run.plan import plan_sweep

    planned = plan_sweep(load_sweep_config(config), force=True)  # as if new: nothing written
    assert f"grid     x={stored['grid']['x']}  y={stored['grid']['y']}  (4x3 points)" in planned[3]
    # The same config (still 'auto') finds its surface complete: same directions, same range.
    again = run_sweep(load_sweep_config(config), log=lambda _: None)
    assert again.already_complete and again.computed == 0
