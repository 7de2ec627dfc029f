"""lsurf.files.weights: the weight-statistics file, one group per label."""

import h5py
from test_surface_file import WEIGHTS, assert_same_weights

import lsurf
from lsurf.files import weights as weight_file


def test_a_weight_file_holds_one_group_per_label(tmp_path):
    weight_file.write_weight_file(tmp_path / "w.h5", {"runs/small": WEIGHTS, "large": WEIGHTS})
    with h5py.File(tmp_path / "w.h5", "r") as h5file:
        assert set(h5file) == {"runs_small", "large"}
        assert h5file.attrs["lsurf_version"] == lsurf.__version__
        assert_same_weights(weight_file.read_weight_statistics(h5file["runs_small"]), WEIGHTS)
