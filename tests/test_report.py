"""`lsurf info`'s reports on surface files and direction files (lsurf.report)."""

import h5py

from lsurf.cli import main


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
