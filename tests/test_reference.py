"""Surface files written by the reference code (tomgoldstein/loss-landscape) read as lsurf's.

The files are made here the way the reference lays them out: a float64 (nx, ny) array filled
with -1, each computed point k stored at flat index k, where k's coordinates are those of
`np.meshgrid(x, y)` raveled — so the tests pin the conversion, not just a transpose.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from lsurf.cli import main
from lsurf.errors import OutputError
from lsurf.report import describe_surface
from lsurf.store import read_surface


def loss_at(a, b):
    return 1.0 + (a - 0.3) ** 2 + 3.0 * (b + 0.2) ** 2


def write_reference_file(path, x, y=None, computed=None, nan_at=None):
    """A reference-layout surface; `computed` is how many flat indices were filled."""
    if y is None:
        shape, points = (len(x),), [(a, 0.0) for a in x]
    else:
        shape = (len(x), len(y))
        mesh_x, mesh_y = np.meshgrid(x, y)  # the reference's enumeration of the points
        points = list(zip(mesh_x.ravel(), mesh_y.ravel(), strict=True))
    losses, accuracies = -np.ones(shape), -np.ones(shape)
    for index, (a, b) in enumerate(points[: len(points) if computed is None else computed]):
        losses.ravel()[index] = np.nan if index == nan_at else loss_at(a, b)
        accuracies.ravel()[index] = 100.0 - 10.0 * loss_at(a, b)
    with h5py.File(path, "w") as h5file:
        h5file["dir_file"] = "resnet56.t7_weights_xnorm=filter.h5"
        h5file["xcoordinates"] = x
        if y is not None:
            h5file["ycoordinates"] = y
        h5file["train_loss"] = losses
        h5file["train_acc"] = accuracies
    return path


X = np.linspace(-1, 1, 5)
Y = np.linspace(-0.5, 0.5, 3)  # non-square, where the reference's own order is scrambled


@pytest.mark.parametrize("y", [Y, np.linspace(-1, 1, 5)], ids=["non-square", "square"])
def test_every_value_lands_at_its_point(tmp_path, y):
    surface = read_surface(write_reference_file(tmp_path / "ref.h5", X, y))
    assert surface.done.all() and surface.metrics["train_loss"].shape == (len(X), len(y))
    for i, a in enumerate(X):
        for j, b in enumerate(y):
            assert surface.metrics["train_loss"][i, j] == loss_at(a, b)
            assert surface.metrics["train_acc"][i, j] == 100.0 - 10.0 * loss_at(a, b)
    assert surface.attributes["written_by"] == "tomgoldstein/loss-landscape"
    assert surface.attributes["direction_file"] == "resnet56.t7_weights_xnorm=filter.h5"


def grid_index(k, x, y):
    """Where the reference's k-th point (from its meshgrid enumeration) lies in lsurf's layout."""
    mesh_x, mesh_y = np.meshgrid(x, y)
    return int(np.flatnonzero(x == mesh_x.ravel()[k])[0]), int(
        np.flatnonzero(y == mesh_y.ravel()[k])[0]
    )


def test_a_partial_file_marks_what_the_reference_would_still_compute(tmp_path):
    # 7 of 15 points done, and one of them diverged to NaN (the reference counts it as done).
    path = write_reference_file(tmp_path / "ref.h5", X, Y, computed=7, nan_at=2)
    surface = read_surface(path)
    assert int(surface.done.sum()) == 7
    for k in range(15):
        i, j = grid_index(k, X, Y)
        assert surface.done[i, j] == (k < 7)
        if k >= 7:
            assert np.isnan(surface.metrics["train_loss"][i, j])  # never the -1 fill value
            assert np.isnan(surface.metrics["train_acc"][i, j])
    i, j = grid_index(2, X, Y)
    assert surface.done[i, j] and np.isnan(surface.metrics["train_loss"][i, j])


def test_a_1d_file(tmp_path):
    surface = read_surface(write_reference_file(tmp_path / "ref.h5", X, computed=3))
    assert surface.y is None and surface.done.tolist() == [True, True, True, False, False]
    np.testing.assert_array_equal(surface.metrics["train_loss"][:3], loss_at(X[:3], 0.0))


def test_info_and_plot_read_reference_files(tmp_path, capsys):
    path = write_reference_file(tmp_path / "ref.h5", X, Y, computed=12)
    report = describe_surface(path)
    assert "written by tomgoldstein/loss-landscape; no sweep settings stored in it" in report
    assert "directions  file resnet56.t7_weights_xnorm=filter.h5" in report
    assert "grid     x=-1:1:5  y=-0.5:0.5:3  (5x3 points)" in report
    assert "done     12/15 points (80.0%), incomplete (the reference code resumes" in report
    done_points = [grid_index(k, X, Y) for k in range(12)]
    i, j = min(done_points, key=lambda ij: loss_at(X[ij[0]], Y[ij[1]]))
    assert f"min train_loss  {loss_at(X[i], Y[j]):.6g} at x={X[i]:g}, y={Y[j]:g}" in report
    assert main(["plot", str(path), "--out", str(tmp_path / "figs")]) == 0
    written = capsys.readouterr().out.split()
    assert len(written) == 4 and all(Path(name).stat().st_size > 0 for name in written)


def test_a_reference_file_with_the_wrong_number_of_values_is_one_line(tmp_path):
    path = write_reference_file(tmp_path / "ref.h5", X, Y)
    with h5py.File(path, "r+") as h5file:
        del h5file["train_acc"]
        h5file["train_acc"] = np.zeros((4, 3))
    with pytest.raises(OutputError) as caught:
        read_surface(path)
    assert (
        str(caught.value) == f"{path}: train_acc holds 12 values, not one per point of a 5x3 grid"
    )
