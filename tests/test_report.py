"""`lsurf info`'s reports on surface files and direction files (lsurf.report)."""

from dataclasses import asdict

import h5py
import numpy as np
from surface_helpers import MAX_EIGENVALUE_ROW, write_surface_by_hand

from lsurf.cli import main
from lsurf.metrics import ACCURACY, LOSS
from lsurf.report import describe_surface


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

    from lsurf.store import read_directions

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
