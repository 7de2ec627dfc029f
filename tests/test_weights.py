import h5py
import numpy as np
import torch

from lsurf import models
from lsurf.checkpoint import save_checkpoint
from lsurf.cli import main
from lsurf.config import load_sweep_config
from lsurf.files.surface import read_surface
from lsurf.files.weights import read_weight_statistics
from lsurf.run.sweep import run_sweep
from lsurf.weights import weight_statistics


def test_statistics_count_every_weight_and_measure_each_layer():
    torch.manual_seed(0)
    state = models.build("convnet_small").state_dict()
    stats = weight_statistics(state)
    multi = {key: value for key, value in state.items() if value.dim() > 1}
    assert stats.names == tuple(multi)
    assert int(stats.counts.sum()) == sum(value.numel() for value in multi.values())
    np.testing.assert_allclose(stats.norms, [float(value.norm()) for value in multi.values()])
    assert stats.bin_edges[0] == -stats.bin_edges[-1]
    doubled = weight_statistics({key: 2 * value for key, value in state.items()}, limit=10.0)
    np.testing.assert_allclose(doubled.norms, 2 * stats.norms, rtol=1e-6)


def test_sweep_stores_the_weight_statistics_of_theta_star(sweep_yaml, small_checkpoint):
    outcome = run_sweep(load_sweep_config(sweep_yaml()), log=lambda _: None)
    stored = read_surface(outcome.path).weights
    expected = weight_statistics(torch.load(small_checkpoint, weights_only=True)["state_dict"])
    assert stored is not None and stored.names == expected.names
    np.testing.assert_array_equal(stored.counts, expected.counts)


def test_weights_command_compares_checkpoints_on_one_scale(tmp_path, capsys):
    torch.manual_seed(0)
    small = models.build("convnet_small").state_dict()
    large = {key: 3 * value for key, value in small.items()}
    paths = [tmp_path / "a" / "final.pt", tmp_path / "b" / "final.pt"]
    for path, state in zip(paths, (small, large), strict=True):
        save_checkpoint(path, state)
    assert main(["weights", *map(str, paths), "--out", str(tmp_path / "stats")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "stats" / "weights.png")
    with h5py.File(tmp_path / "stats" / "weights.h5") as h5file:
        assert sorted(h5file) == ["a_final", "b_final"]
        a, b = (read_weight_statistics(h5file[name]) for name in ("a_final", "b_final"))
    np.testing.assert_array_equal(a.bin_edges, b.bin_edges)  # one shared range
    np.testing.assert_allclose(b.norms, 3 * a.norms, rtol=1e-6)
    assert (tmp_path / "stats" / "weights.png").stat().st_size > 10_000


def test_the_weights_of_a_diverged_checkpoint_are_compared_over_their_finite_values(tmp_path):
    torch.manual_seed(0)
    state = models.build("convnet_small").state_dict()
    state["conv2.weight"].view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -1000.0])
    stats = weight_statistics(state)
    multi = {key: value for key, value in state.items() if value.dim() > 1}
    finite = torch.cat([value.reshape(-1) for value in multi.values()])
    finite = finite[finite.isfinite()]
    assert stats.bin_edges[-1] == float(finite.abs().max()) == 1000.0  # not inf, not NaN
    assert int(stats.counts.sum()) == finite.numel() == sum(map(torch.numel, multi.values())) - 2
    assert np.isnan(stats.norms[stats.names.index("conv2.weight")])
    assert np.isfinite(stats.norms[stats.names.index("conv1.weight")])
    path = tmp_path / "diverged.pt"
    save_checkpoint(path, state)
    assert main(["weights", str(path), "--out", str(tmp_path / "stats")]) == 0
