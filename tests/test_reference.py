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
from lsurf.files.info import describe_surface
from lsurf.files.surface import read_surface


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


# ---------------------------------------------------------------------------- eigenvalues


def max_eig_at(a, b):
    return 5.0 + a + 2.0 * b  # 3 .. 7 on the grids below: positive, as the reference needs


def min_eig_at(a, b):
    return 0.5 * a - b


def write_reference_eigen_file(path, x, y=None, computed=None, nan_at=None, losses=False):
    """What plot_hessian_eigen.py leaves: `max_eig` filled with -1 and `min_eig` with +1,
    each computed point k at flat index k (the same enumeration as the losses), and no loss
    unless the losses' sweep wrote to the same file first (`losses`)."""
    if losses:
        write_reference_file(path, x, y)
    if y is None:
        shape, points = (len(x),), [(a, 0.0) for a in x]
    else:
        shape = (len(x), len(y))
        mesh_x, mesh_y = np.meshgrid(x, y)
        points = list(zip(mesh_x.ravel(), mesh_y.ravel(), strict=True))
    largest, smallest = -np.ones(shape), np.ones(shape)
    for index, (a, b) in enumerate(points[: len(points) if computed is None else computed]):
        largest.ravel()[index] = np.nan if index == nan_at else max_eig_at(a, b)
        smallest.ravel()[index] = np.nan if index == nan_at else min_eig_at(a, b)
    with h5py.File(path, "a" if losses else "w") as h5file:
        if not losses:
            h5file["dir_file"] = "resnet56.t7_weights_xnorm=filter.h5"
            h5file["xcoordinates"] = x
            if y is not None:
                h5file["ycoordinates"] = y
        h5file["max_eig"] = largest
        h5file["min_eig"] = smallest
    return path


def test_a_reference_eigenvalue_file_is_read_with_its_points_in_place(tmp_path):
    # 9 of 15 points computed, one of them NaN (a diverged loss; the reference counts it done)
    path = write_reference_eigen_file(tmp_path / "eig.h5", X, Y, computed=9, nan_at=4)
    surface = read_surface(path)
    assert sorted(surface.metrics) == ["max_eig", "min_eig"]
    assert {column.split for column in surface.columns.values()} == {"train"}
    for k in range(15):
        i, j = grid_index(k, X, Y)
        assert surface.done[i, j] == (k < 9)
        if k < 9 and k != 4:
            assert surface.metrics["max_eig"][i, j] == max_eig_at(X[i], Y[j])
            assert surface.metrics["min_eig"][i, j] == min_eig_at(X[i], Y[j])
        else:  # never the fill values -1 and +1
            assert np.isnan(surface.metrics["max_eig"][i, j])
            assert np.isnan(surface.metrics["min_eig"][i, j])


def test_eigenvalues_beside_losses_count_a_point_done_once_both_are_computed(tmp_path):
    path = write_reference_eigen_file(tmp_path / "ref.h5", X, Y, computed=6, losses=True)
    surface = read_surface(path)
    assert sorted(surface.metrics) == ["max_eig", "min_eig", "train_acc", "train_loss"]
    assert int(surface.done.sum()) == 6  # the losses are complete, the eigenvalues not
    i, j = grid_index(5, X, Y)
    assert surface.metrics["train_loss"][i, j] == loss_at(X[i], Y[j])
    assert surface.metrics["max_eig"][i, j] == max_eig_at(X[i], Y[j])


def test_info_and_plot_of_a_reference_eigenvalue_file(tmp_path, capsys):
    from lsurf.plot import PlotOptions
    from lsurf.plot.view import load_panels

    path = write_reference_eigen_file(tmp_path / "eig.h5", X, Y, computed=9, nan_at=4)
    done = [grid_index(k, X, Y) for k in range(9) if k != 4]
    largest = [max_eig_at(X[i], Y[j]) for i, j in done]
    smallest = [min_eig_at(X[i], Y[j]) for i, j in done]
    ratio = np.abs(np.divide(smallest, largest))
    i, j = done[int(np.argmin(largest))]
    assert describe_surface(path).splitlines()[1:] == [
        "written by tomgoldstein/loss-landscape; no sweep settings stored in it",
        "directions  file resnet56.t7_weights_xnorm=filter.h5",
        "grid     x=-1:1:5  y=-0.5:0.5:3  (5x3 points)",
        "metrics  max_eig, min_eig; derived: eig_ratio",
        "done     9/15 points (60.0%), incomplete (the reference code resumes its own files, "
        "lsurf does not)",
        "curvature  Hessian eigenvalues of the train loss; no solver settings stored",
        f"λmax     {min(largest):.6g} to {max(largest):.6g} (not finite at 1 point)",
        f"λmin     {min(smallest):.6g} to {max(smallest):.6g} (not finite at 1 point)",
        f"|λmin/λmax|  {ratio.min():.6g} to {ratio.max():.6g} (not finite at 1 point)",
        f"min max_eig  {min(largest):.6g} at x={X[i]:g}, y={Y[j]:g}",
    ]

    # With no loss, λmax is drawn by default; the ratio on request; nothing to flag.
    out = tmp_path / "figures"
    assert main(["plot", str(path), "--out", str(out)]) == 0
    assert main(["plot", str(path), "--out", str(out), "--metric", "eig_ratio"]) == 0
    kinds = ("contour", "filled", "heatmap", "surface3d")
    assert capsys.readouterr().out.split() == [
        *(str(out / f"eig_max_eig_{kind}.png") for kind in kinds),
        *(str(out / f"eig_eig_ratio_{kind}.png") for kind in kinds),
    ]
    [panel] = load_panels([path], PlotOptions(metric="eig_ratio"))
    assert panel.convergence is None and panel.values.count() == 8
    for i, j in done:
        expected = abs(min_eig_at(X[i], Y[j]) / max_eig_at(X[i], Y[j]))
        assert panel.values[i, j] == expected


def test_a_1d_reference_eigenvalue_file_is_drawn_as_a_curve_without_an_accuracy_axis(tmp_path):
    from lsurf.plot import PlotOptions, plot_files
    from lsurf.plot.curves import draw_curves
    from lsurf.plot.view import load_panels

    path = write_reference_eigen_file(tmp_path / "eig.h5", X, computed=4)
    [panel] = load_panels([path], PlotOptions(metric="eig_ratio"))
    figure = draw_curves([panel], PlotOptions())
    assert len(figure.axes) == 1  # no twin: the file holds no accuracy
    [curve] = figure.axes[0].get_lines()
    expected = np.abs(min_eig_at(X[:4], 0.0) / max_eig_at(X[:4], 0.0))
    assert np.array_equal(curve.get_ydata().compressed(), expected)
    assert figure.get_suptitle().splitlines()[0] == "|λmin/λmax|"
    [written] = plot_files([path], PlotOptions(metric="eig_ratio"))
    assert written == tmp_path / "eig_eig_ratio_curve.png" and written.stat().st_size > 0
