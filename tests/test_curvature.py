"""Curvature over a grid: eigenvalue maps (hessian.eigenvalues) and Hessian directions
(directions.kind: hessian), checked against the dense Hessian of a model small enough to have
one, serial against mpiexec, killed against uninterrupted, and the hard cases.

The model is tests/fixtures/toylab's BlobNet (448 weights in matrices), reached by import path
as a researcher's own model is; the dense reference is torch.autograd.functional.hessian of the
same mean loss, in float64.
"""

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from surface_helpers import done_count
from test_open_engine import FIXTURES, blob_config, run_cli, user_environment

from lsurf.checkpoint import load_weights
from lsurf.cli import main
from lsurf.evaluate import Curvature, Evaluator
from lsurf.files.directions import read_directions
from lsurf.files.info import describe_directions
from lsurf.files.surface import read_surface
from lsurf.losses import build_loss

if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))

import toylab  # noqa: E402 - needs the fixtures folder on the path

EXACT = {"tol": 1e-7, "max_products": 448}  # a Krylov space as large as the Hessian: exact


def curvature_config(folder: Path, checkpoint: Path, hessian: dict | None = None, **changes):
    path = blob_config(folder, checkpoint, **changes)
    text = path.read_text() + "hessian:\n"
    for key, value in {"eigenvalues": True, **(hessian or {})}.items():
        text += f"  {key}: {value}\n"
    path.write_text(text)
    return path


def dense_hessian(checkpoint: Path, shifts: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The Hessian of the mean smooth_hinge loss on the train blobs w.r.t. BlobNet's matrices,
    at θ* + shifts, in float64."""
    model = toylab.BlobNet(hidden=16)
    load_weights(model, checkpoint)
    model = model.double()
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    for name, shift in (shifts or {}).items():
        weights[name] = weights[name] + shift.double()
    names = [name for name, tensor in weights.items() if tensor.dim() > 1]
    data = toylab.Blobs("train", 96)
    inputs, targets = data.points.double(), data.labels

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        moved, start = dict(weights), 0
        for name in names:
            size = weights[name].numel()
            moved[name] = flat[start : start + size].reshape(weights[name].shape)
            start += size
        outputs = torch.func.functional_call(model, moved, (inputs,))
        return toylab.smooth_hinge(outputs, targets).mean()

    flat = torch.cat([weights[name].reshape(-1) for name in names])
    return torch.autograd.functional.hessian(loss_of, flat, vectorize=True)


def test_the_eigenvalue_map_is_the_dense_hessians_extremes(tmp_path, blob_checkpoint):
    config = curvature_config(tmp_path, blob_checkpoint, EXACT, grid__x="-1:1:3", grid__y="-1:1:2")
    assert main(["sweep", str(config)]) == 0
    surface = read_surface(tmp_path / "surface.h5")
    assert {"max_eig", "min_eig", "max_eig_residual", "min_eig_residual", "eig_products"} <= set(
        surface.metrics
    )
    assert surface.columns["max_eig"].split == "train"
    directions, _ = read_directions(tmp_path / "surface.directions.h5")
    signs = set()
    for i, a in enumerate(surface.x):
        for j, b in enumerate(surface.y):
            shifts = {
                key: float(a) * directions.x[key] + float(b) * directions.y[key]
                for key in directions.x
            }
            exact = torch.linalg.eigvalsh(dense_hessian(blob_checkpoint, shifts))
            scale = float(exact.abs().max())
            assert abs(surface.metrics["max_eig"][i, j] - float(exact[-1])) <= 1e-4 * scale
            assert abs(surface.metrics["min_eig"][i, j] - float(exact[0])) <= 1e-4 * scale
            assert surface.metrics["max_eig_residual"][i, j] <= 1e-6
            signs.add(math.copysign(1, float(exact[0])))
    assert signs == {-1.0}  # a random plane through an untrained net: saddles everywhere


def test_the_eigenvalue_map_under_mpiexec_equals_the_serial_one_bit_for_bit(
    mpi_run, tmp_path, blob_checkpoint
):
    serial = curvature_config(tmp_path / "serial", blob_checkpoint)
    parallel = curvature_config(tmp_path / "mpi", blob_checkpoint)
    first = run_cli(serial, mpi=mpi_run)
    assert first.returncode == 0, first.stderr
    second = run_cli(parallel, 3, mpi=mpi_run)
    assert second.returncode == 0, second.stderr
    assert "on 2 workers" in second.stderr
    a, b = read_surface(tmp_path / "serial/surface.h5"), read_surface(tmp_path / "mpi/surface.h5")
    assert sorted(a.metrics) == sorted(b.metrics) and "max_eig" in a.metrics
    for name in a.metrics:
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name], err_msg=name)
    assert a.done.all() and b.done.all()
    assert (a.metrics["eig_products"] > 2).all()


def test_a_killed_eigenvalue_map_resumes_to_the_uninterrupted_one(tmp_path, blob_checkpoint):
    changes = {"grid__x": "-1:1:4", "grid__y": "-1:1:3", "data__kwargs": {"size": 480}}
    whole = curvature_config(tmp_path / "whole", blob_checkpoint, **changes)
    assert run_cli(whole).returncode == 0
    config = curvature_config(tmp_path / "killed", blob_checkpoint, **changes)
    output = tmp_path / "killed/surface.h5"
    command = [sys.executable, "-m", "lsurf", "sweep", str(config)]
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=user_environment()
    )
    deadline = time.monotonic() + 120
    while done_count(output) < 3:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the sweep made no progress"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = read_surface(output)
    assert 3 <= killed.done.sum() < killed.done.size
    rerun = run_cli(config)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming" in rerun.stderr
    a, b = read_surface(tmp_path / "whole/surface.h5"), read_surface(output)
    for name in a.metrics:
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name], err_msg=name)


def test_a_point_short_of_the_tolerance_is_recorded_with_its_residual(tmp_path, blob_checkpoint):
    config = curvature_config(
        tmp_path, blob_checkpoint, {"max_products": 3}, grid__x="-1:1:3", grid__y="-1:1:2"
    )
    assert main(["sweep", str(config)]) == 0  # the sweep goes on
    surface = read_surface(tmp_path / "surface.h5")
    assert surface.done.all()
    assert (surface.metrics["eig_products"] == 3).all()
    residuals = np.maximum(surface.metrics["max_eig_residual"], surface.metrics["min_eig_residual"])
    assert (residuals > 1e-3).all()  # flagged: above hessian.tol
    assert np.isfinite(surface.metrics["max_eig"]).all()


def test_a_loss_without_a_second_derivative_is_one_line_before_anything_is_written(
    tmp_path, blob_checkpoint, capsys
):
    config = curvature_config(
        tmp_path, blob_checkpoint, evaluation__loss="toylab.firstorder:first_order_hinge"
    )
    assert main(["sweep", str(config)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "twice differentiable" in error
    assert list(tmp_path.iterdir()) == [config]
    # The same loss draws a loss surface: only the Hessian needs the second derivative.
    assert main(["sweep", str(config), "--set", "hessian.eigenvalues=false"]) == 0


def test_the_curvature_split_must_be_evaluated(tmp_path, blob_checkpoint, capsys):
    config = curvature_config(
        tmp_path,
        blob_checkpoint,
        {"split": "test"},
        data__splits=["train"],
    )
    assert main(["sweep", str(config)]) == 2
    assert "add test to data.splits" in capsys.readouterr().err


def test_an_overflowing_point_gets_nan_eigenvalues_without_a_solve(blob_checkpoint):
    from lsurf.directions import random_directions
    from lsurf.params import movable

    model = toylab.BlobNet(hidden=16)
    load_weights(model, blob_checkpoint)
    directions = random_directions(movable(model, False), "filter", "biasbn", 0, plane=False)
    data = toylab.Blobs("train", 48)
    curvature = Curvature("train", "weights", 1e-3, 50, 0, 16)
    evaluator = Evaluator(
        model,
        directions,
        {"train": (data.points, data.labels)},
        16,
        torch.device("cpu"),
        loss=build_loss("toylab", toylab.smooth_hinge),
        curvature=curvature,
    )
    values = evaluator.evaluate(float("inf"), 0.0)
    assert not math.isfinite(values["train_loss"])
    assert math.isnan(values["max_eig"]) and math.isnan(values["min_eig"])
    assert values["eig_products"] == 0
    finite = evaluator.evaluate(0.0, 0.0)
    assert finite["max_eig"] > 0 and 2 < finite["eig_products"] <= 50


@pytest.mark.parametrize("eigenvectors", ["top", "extremes"])
def test_hessian_directions_are_orthonormal_eigenvectors_of_the_dense_hessian(
    tmp_path, blob_checkpoint, eigenvectors
):
    config = blob_config(
        tmp_path,
        blob_checkpoint,
        directions__kind="hessian",
        directions__eigenvectors=eigenvectors,
        directions__seed=0,  # the Lanczos start is hessian.seed
        grid__x="-0.5:0.5:3",
        grid__y="-0.5:0.5:3",
    )
    config.write_text(config.read_text() + "hessian: {tol: 1.0e-7, max_products: 448}\n")
    assert main(["sweep", str(config)]) == 0
    directions, attributes = read_directions(tmp_path / "surface.directions.h5")
    assert attributes["kind"] == "hessian" and attributes["eigenvectors"] == eigenvectors
    matrices = [key for key in directions.x if directions.x[key].dim() > 1]
    assert all(not directions.x[key].any() for key in directions.x if key not in matrices)
    d1 = torch.cat([directions.x[key].reshape(-1) for key in matrices]).double()
    d2 = torch.cat([directions.y[key].reshape(-1) for key in matrices]).double()
    hessian = dense_hessian(blob_checkpoint)
    exact = torch.linalg.eigvalsh(hessian)
    wanted = (exact[-1], exact[-2]) if eigenvectors == "top" else (exact[-1], exact[0])
    scale = float(exact.abs().max())
    for vector, value, stored in zip((d1, d2), wanted, attributes["eigenvalues"], strict=True):
        assert abs(float(vector.norm()) - 1) < 1e-6
        assert float((hessian @ vector - value * vector).norm()) < 1e-4 * scale
        assert abs(stored - float(value)) < 1e-4 * scale
    assert abs(float(d1 @ d2)) < 1e-5
    assert read_surface(tmp_path / "surface.h5").done.all()
    report = describe_directions(tmp_path / "surface.directions.h5").splitlines()
    assert f"kind     hessian  eigenvectors={eigenvectors}  split=train params=weights" in report[1]
    assert report[4] == "curvature  Hessian eigenvalue along each direction: " + ", ".join(
        f"{value:.6g}" for value in attributes["eigenvalues"]
    )


def test_the_plan_names_the_products_a_point_takes(tmp_path, blob_checkpoint, capsys):
    config = curvature_config(tmp_path, blob_checkpoint)
    assert main(["sweep", str(config), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "Hessian-vector products (at most 200) reached λmax" in out
    assert "max_eig, min_eig, max_eig_residual, min_eig_residual, eig_products" in out
    assert list(tmp_path.iterdir()) == [config]


def test_the_python_api_maps_curvature_too(blob_checkpoint):
    from lsurf.api import sweep

    model = toylab.BlobNet(hidden=16)
    load_weights(model, blob_checkpoint)
    data = toylab.Blobs("train", 96)
    surface = sweep(
        model,
        (data.points, data.labels),
        x="-1:1:3",
        loss=toylab.smooth_hinge,
        batch_size=40,
        hessian={"eigenvalues": True, **EXACT},
        log=None,
    )
    exact = torch.linalg.eigvalsh(dense_hessian(blob_checkpoint))
    scale = float(exact.abs().max())
    assert abs(surface.metrics["max_eig"][1] - float(exact[-1])) <= 1e-4 * scale
    assert abs(surface.metrics["min_eig"][1] - float(exact[0])) <= 1e-4 * scale


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("hessian.tol=0", "hessian.tol must be between 0 and 1"),
        ("hessian.max_products=1", "hessian.max_products must be at least 2"),
        ("hessian.top_k=0", "hessian.top_k must be at least 1"),
        ("hessian.params=biases", "hessian.params"),
        ("directions.eigenvectors=extremes", "directions.eigenvectors is only used with"),
    ],
)
def test_bad_hessian_settings_are_one_line(tmp_path, blob_checkpoint, capsys, setting, message):
    config = curvature_config(tmp_path, blob_checkpoint)
    assert main(["sweep", str(config), "--set", setting]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error
