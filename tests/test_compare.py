"""`lsurf compare`: the differences of two surfaces of one grid, also against the reference's
own layout (its (nx, ny) array filled in meshgrid order, -1 where not computed)."""

from __future__ import annotations

from dataclasses import asdict

import h5py
import numpy as np
import pytest
from surface_helpers import write_surface_by_hand

from lsurf.cli import main
from lsurf.metrics import LOSS

LOSS_ROW = asdict(LOSS)

X, Y = np.linspace(-1, 1, 3), np.linspace(-0.5, 0.5, 4)  # non-square


def loss(a, b):
    return 1.0 + a**2 + 2.0 * b**2


def lsurf_file(path, scale=1.0, done=None):
    values = scale * loss(X[:, None], Y[None, :])
    return write_surface_by_hand(path, X, Y, {"train_loss": ("train", LOSS_ROW, values)}, done)


def reference_file(path):
    """The same surface as the reference writes it: flat index k at meshgrid's k-th point."""
    mesh_x, mesh_y = np.meshgrid(X, Y)
    values = -np.ones((len(X), len(Y)))
    for index, (a, b) in enumerate(zip(mesh_x.ravel(), mesh_y.ravel(), strict=True)):
        values.ravel()[index] = loss(a, b)
    with h5py.File(path, "w") as h5file:
        h5file["xcoordinates"], h5file["ycoordinates"] = X, Y
        h5file["train_loss"] = values
    return path


def test_equal_surfaces_in_both_layouts_compare_as_equal(tmp_path, capsys):
    ours, theirs = lsurf_file(tmp_path / "ours.h5"), reference_file(tmp_path / "theirs.h5")
    assert main(["compare", str(ours), str(theirs), "--rtol", "0"]) == 0
    out = capsys.readouterr().out
    assert "grid 3×4, 12 points done in both" in out
    assert out.splitlines()[2].split() == ["train_loss", "12", "0", "0"]


def test_differences_are_measured_where_both_are_done_and_held_against_rtol(tmp_path, capsys):
    done = np.ones((3, 4), bool)
    done[2, 3] = False  # the largest values: not compared
    ours = lsurf_file(tmp_path / "ours.h5", scale=1.001, done=done)
    theirs = reference_file(tmp_path / "theirs.h5")
    assert main(["compare", str(ours), str(theirs)]) == 0
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row[:2] == ["train_loss", "11"]
    assert float(row[3]) == pytest.approx(1e-3, rel=1e-6)
    largest = 0.001 * loss(1.0, 0.5)  # (1, 0.5) is done; (1, 1/6) and others are smaller
    assert float(row[2]) == pytest.approx(largest, rel=1e-2)
    assert main(["compare", str(ours), str(theirs), "--rtol", "1e-4"]) == 1
    assert "differences above --rtol 0.0001" in capsys.readouterr().err


def test_surfaces_of_different_grids_are_one_line(tmp_path, capsys):
    ours = lsurf_file(tmp_path / "ours.h5")
    other = write_surface_by_hand(
        tmp_path / "other.h5",
        X,
        np.linspace(-1, 1, 4),
        {"train_loss": ("train", LOSS_ROW, np.ones((3, 4)))},
    )
    assert main(["compare", str(ours), str(other)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "are not on the same grid (y: 4 points -0.5..0.5" in error
