"""lsurf.files.directions: a direction file holds its tensors bit for bit, with its settings."""

import h5py
import pytest
import torch
from test_surface_file import TRAJECTORY, assert_same_trajectory

import lsurf
from lsurf.directions import Directions
from lsurf.files import directions as direction_file


@pytest.mark.parametrize("two_dimensional", [True, False], ids=["2d", "1d"])
def test_direction_files_round_trip_tensors_exactly(tmp_path, two_dimensional):
    generator = torch.Generator().manual_seed(0)

    def direction():  # not in alphabetical order; a 0-dim tensor too
        shapes = {"layer2.conv.weight": (4, 3, 3, 3), "fc.bias": (10,), "scale": ()}
        return {key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}

    y = direction() if two_dimensional else None
    written = Directions("pca", "filter", "biasbn", 7, direction(), y, TRAJECTORY)
    settings = {"kind": "pca", "norm": "filter", "ignore": "biasbn", "seed": 7, "x_spec": "a"}
    direction_file.write_directions(tmp_path / "d.h5", written, settings)
    found, attributes = direction_file.read_directions(tmp_path / "d.h5")
    for found_tensors, written_tensors in ((found.x, written.x), (found.y, written.y)):
        if written_tensors is None:
            assert found_tensors is None
            continue
        assert found_tensors.keys() == written_tensors.keys()
        for key, tensor in written_tensors.items():
            assert found_tensors[key].dtype == torch.float32
            assert torch.equal(found_tensors[key], tensor)  # bit for bit, shape included
    assert (found.kind, found.norm, found.ignore, found.seed) == ("pca", "filter", "biasbn", 7)
    assert {key: attributes[key] for key in settings} == settings
    assert attributes["directions_sha256"] == written.digest() == found.digest()
    assert attributes["lsurf_version"] == lsurf.__version__
    assert_same_trajectory(found.trajectory, TRAJECTORY)
    with h5py.File(tmp_path / "d.h5", "r") as h5file:
        assert ("ydirection" in h5file) is two_dimensional
