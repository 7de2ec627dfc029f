"""`lsurf info`'s reports on surface files and direction files (lsurf.files.info)."""

import html
from dataclasses import asdict

import h5py
import numpy as np
import yaml
from surface_helpers import (
    HESSIAN_SECTION,
    MAX_EIGENVALUE_ROW,
    curvature_values,
    write_curvature_surface,
    write_surface_by_hand,
)

from lsurf.cli import main
from lsurf.files.info import describe_surface
from lsurf.files.surface import read_surface
from lsurf.grid import Axis, Grid
from lsurf.metrics import ACCURACY, LOSS


def test_info_reports_completeness_and_the_best_point(existing_output, capsys):
    output = existing_output[0]
    with h5py.File(output, "r+") as h5file:
        h5file["done"][0, :] = False
    capsys.readouterr()
    assert main(["info", str(output)]) == 0
    text = capsys.readouterr().out
    assert "model    convnet_small" in text
    assert "grid     x=-1:1:4  y=-0.5:0.5:3  (4x3 points)" in text
    assert "done     9/12 points (75.0%), incomplete: rerun the same sweep to resume" in text
    assert "min train_loss" in text and "min test_loss" in text


def test_info_on_a_direction_file_says_how_it_was_made(existing_output, capsys):
    import torch

    from lsurf.files.directions import read_directions

    path = existing_output[0].with_name("surface.directions.h5")
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    directions, attributes = read_directions(path)
    x = torch.cat([t.reshape(-1).double() for t in directions.x.values()])
    y = torch.cat([directions.y[key].reshape(-1).double() for key in directions.x])
    assert lines[:4] == [
        f"directions  {path}",
        "kind     random  norm=filter  ignore=biasbn  seed=0",
        f"size     2 directions (a plane), each {x.numel()} values in {len(directions.x)} tensors",
        f"angle    cos(d1, d2) = {float(x @ y / (x.norm() * y.norm())):.4g}",
    ]
    assert lines[4].startswith(f"made for checkpoint sha256 {attributes['checkpoint_sha256'][:16]}")


CONFIG = """model: {name: resnet56, checkpoint: /runs/a/final.pt}
directions: {kind: random, norm: filter, ignore: biasbn, seed: 3}
grid: {x: '-1:1:3', y: '0:1:2'}
"""


def test_info_lists_every_stored_column_and_the_best_point_of_a_metric_it_does_not_know(
    tmp_path,
):
    x, y = np.linspace(-1, 1, 3), np.linspace(0, 1, 2)
    loss = np.array([[3.0, 2.0], [0.5, 1.0], [4.0, 5.0]])
    eigenvalue = np.array([[9.0, 8.0], [7.0, 6.5], [np.nan, 30.0]])  # NaN: a failed solve
    more_is_better = {**MAX_EIGENVALUE_ROW, "name": "margin", "lower_is_better": False}
    columns = {
        "train_loss": ("train", asdict(LOSS), loss),
        "train_acc": ("train", asdict(ACCURACY), 100 - loss),
        "train_top_eig": ("train", MAX_EIGENVALUE_ROW, eigenvalue),
        "train_margin": ("train", more_is_better, -loss),
    }
    done = np.array([[True, True], [True, True], [True, False]])
    path = write_surface_by_hand(tmp_path / "s.h5", x, y, columns, done, CONFIG)
    assert describe_surface(path).splitlines()[1:] == [
        "model    resnet56  checkpoint /runs/a/final.pt",
        "directions  random  norm=filter  ignore=biasbn  seed=3  file directions.h5",
        "grid     x=-1:1:3  y=0:1:2  (3x2 points)",
        "metrics  train_acc, train_loss, train_margin, train_top_eig",
        "done     5/6 points (83.3%), incomplete: rerun the same sweep to resume",
        "min train_loss  0.5 at x=0, y=0",
        "min train_top_eig  6.5 at x=0, y=1",
        "written by lsurf 9.9.9 (format 2), created 2025-01-02T03:04:05+00:00",
    ]


def test_info_says_which_data_and_loss_the_values_measure(sweep_yaml, capsys):
    config = sweep_yaml({"data.subset": 50, "evaluation": {"loss": "mse"}})
    assert main(["sweep", str(config)]) == 0
    capsys.readouterr()
    assert main(["info", str(config.parent / "out" / "surface.h5")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "data     cifar10 (train, test), 50 examples each  loss mse"


def curvature_config(hessian: dict) -> str:
    return yaml.safe_dump(
        {
            "model": {"name": "resnet56", "checkpoint": "/runs/a/final.pt"},
            "data": {"dataset": "cifar10", "splits": ["train"], "subset": None},
            "grid": {"x": "-1:1:5", "y": "0:1:3"},
            "directions": {"kind": "random", "norm": "filter", "ignore": "biasbn", "seed": 3},
            "evaluation": {"loss": "cross_entropy"},
            "hessian": hessian,
        },
        sort_keys=False,
    )


def test_info_on_a_curvature_sweep_gives_the_solver_the_ranges_and_what_did_not_converge(
    tmp_path,
):
    # λmax = 2 + i + 2j, |λmin/λmax| = 0.1(i + j) at grid index (i, j) (curvature_values);
    # the solver stopped at (3, 0) and (0, 2), the loss diverged at (1, 1), (4, 2) is to do.
    grid = Grid.from_axes(Axis(-1, 1, 5), Axis(0, 1, 3))
    slow = {(3, 0): ("max_eig_residual", 0.02), (0, 2): ("min_eig_residual", 0.005)}
    values = curvature_values(grid.shape, slow, nan_at=[(1, 1)])
    done = np.ones(grid.shape, bool)
    done[4, 2] = False
    config = curvature_config(HESSIAN_SECTION)
    path = write_curvature_surface(tmp_path / "s.h5", grid, config, values, done)
    lines = describe_surface(path).splitlines()
    assert lines[1:-1] == [
        "model    resnet56  checkpoint /runs/a/final.pt",
        "data     cifar10 (train)  loss cross_entropy",
        "directions  random  norm=filter  ignore=biasbn  seed=3  file /runs/a/d.h5",
        "grid     x=-1:1:5  y=0:1:3  (5x3 points)",
        "metrics  eig_products, max_eig, max_eig_residual, min_eig, min_eig_residual, "
        "train_acc, train_loss; derived: eig_ratio",
        "done     14/15 points (93.3%), incomplete: rerun the same sweep to resume",
        "curvature  Hessian of the mean train loss (weights), Lanczos tol 0.001, "
        "at most 200 products per point",
        # λmax: 2 at (0, 0) to 9 at (3, 2); λmin: −0.4·8 at (2, 2) to +0.5·9 at (3, 2)
        "λmax     2 to 9 (not finite at 1 point)",
        "λmin     -3.2 to 4.5 (not finite at 1 point)",
        "|λmin/λmax|  0 to 0.5 (not finite at 1 point)",
        # 20 + 3i + j over the 13 solved points: (405 − 24 − 34) / 13; (4, 1) spent 33
        "products 26.7 per solved point on average (highest 33)",
        "residual 2 of 14 points did not reach tol 0.001 (residual up to 0.02)",
        # No best point of a residual or a product count; λmin is not lower-is-better.
        "min max_eig  2 at x=-1, y=0",
        "min train_loss  1 at x=-1, y=0",
    ]

    # Every point converged, under other solver settings.
    settings = {**HESSIAN_SECTION, "params": "all", "tol": 0.01, "max_products": 80}
    values = curvature_values(grid.shape)
    path = write_curvature_surface(
        tmp_path / "t.h5", grid, curvature_config(settings), values, done
    )
    lines = describe_surface(path).splitlines()
    assert lines[7:13] == [
        "curvature  Hessian of the mean train loss (all), Lanczos tol 0.01, "
        "at most 80 products per point",
        "λmax     2 to 9",
        "λmin     -3.2 to 4.5",
        "|λmin/λmax|  0 to 0.5",
        "products 26.5 per solved point on average (highest 33)",  # (405 − 34) / 14
        "residual all 14 points reached tol 0.01 (residual up to 0.00012)",  # 2e-5·(1 + 5)
    ]
    # Nothing done yet: the settings alone.
    path = write_curvature_surface(
        tmp_path / "u.h5", grid, config, values, np.zeros(grid.shape, bool)
    )
    lines = describe_surface(path).splitlines()
    assert lines[6:8] == [
        "done     0/15 points (0.0%), incomplete: rerun the same sweep to resume",
        "curvature  Hessian of the mean train loss (weights), Lanczos tol 0.001, "
        "at most 200 products per point",
    ]
    assert lines[8].startswith("written by lsurf")


def test_a_1d_curve_names_only_its_x_axis(tmp_path):
    x = np.linspace(-1.0, 1.0, 5)
    loss = (x - 0.5) ** 2
    columns = {"train_loss": ("train", asdict(LOSS), loss)}
    config = yaml.safe_dump({"grid": {"x": "-1:1:5", "y": None}})
    path = write_surface_by_hand(tmp_path / "c.h5", x, None, columns, config=config)
    lines = describe_surface(path).splitlines()
    assert "grid     x=-1:1:5  (5 points)" in lines
    assert "min train_loss  0 at x=0.5" in lines


def test_a_surface_describes_itself_as_info_begins(tmp_path):
    x, y = np.linspace(-1, 1, 3), np.linspace(0, 1, 2)
    loss = np.array([[3.0, 2.0], [0.5, 1.0], [4.0, 5.0]])
    columns = {
        "train_loss": ("train", asdict(LOSS), loss),
        "train_acc": ("train", asdict(ACCURACY), 100 - loss),
    }
    done = np.array([[True, True], [True, True], [False, False]])
    path = write_surface_by_hand(tmp_path / "s.h5", x, y, columns, done, CONFIG)
    surface = read_surface(path)
    assert repr(surface).splitlines() == [
        f"surface  {path}",
        "model    resnet56  checkpoint /runs/a/final.pt",
        "directions  random  norm=filter  ignore=biasbn  seed=3  file directions.h5",
        "grid     x=-1:1:3  y=0:1:2  (3x2 points)",
        "metrics  train_acc, train_loss",
        "done     4/6 points (66.7%), incomplete: rerun the same sweep to resume",
        "min train_loss  0.5 at x=0, y=0",
    ]
    # The same lines `lsurf info` starts with: one description, not two.
    assert describe_surface(path).startswith(repr(surface) + "\n")
    assert surface._repr_html_() == f"<pre>{html.escape(repr(surface))}</pre>"
