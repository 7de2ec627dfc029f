"""lsurf.run.phases and lsurf.run.identity: every check on user input, made before a sweep
writes anything, and what a resume or a reused direction file must match."""

import hashlib
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch
import yaml

from lsurf import models
from lsurf.checkpoint import read_state_dict, save_checkpoint
from lsurf.config import GridConfig, load_sweep_config
from lsurf.directions import Directions
from lsurf.errors import OutputError
from lsurf.files import directions as direction_file
from lsurf.files import surface as surface_file
from lsurf.files.trajectory import Trajectory
from lsurf.grid import AutoAxis, Axis
from lsurf.metrics import columns
from lsurf.run.identity import OPERATIONAL_KEYS, direction_settings
from lsurf.run.phases import check_output, open_output, prepare, resolve_grid
from lsurf.schema import to_plain


def files_under(root):
    """Every file and folder below `root`, with its contents and modification time."""
    return {
        path: (path.read_bytes() if path.is_file() else None, path.stat().st_mtime_ns)
        for path in root.rglob("*")
    }


@pytest.fixture
def second_checkpoint(tmp_path):
    """Another convnet_small, with BN statistics of its own."""
    torch.manual_seed(5)
    model = models.build("convnet_small")
    model.bn1.running_mean.uniform_(-0.3, 0.3)
    path = tmp_path / "second.pt"
    save_checkpoint(path, model.state_dict())
    return path


def create_output(config):
    """What a sweep does once the checks pass: save the directions, create the surface."""
    with open_output(prepare(config), resume=False, columns=columns(config.data.splits)):
        pass


def test_prepare_writes_nothing_and_its_identity_names_checkpoint_and_resolved_config(
    sweep_yaml, small_checkpoint, tmp_path
):
    config = load_sweep_config(sweep_yaml({"directions.norm": None}))
    before = files_under(tmp_path)
    prepared = prepare(config)
    assert files_under(tmp_path) == before  # no output, no direction file, no folder
    assert not config.direction_file.exists() and prepared.directions_are_new
    identity = prepared.identity
    digest = hashlib.sha256(small_checkpoint.read_bytes()).hexdigest()
    assert identity["checkpoint_sha256"] == digest
    assert identity["direction_file"] == str(tmp_path / "out" / "surface.directions.h5")
    assert identity["directions_sha256"] == prepared.directions.digest()
    assert "target_sha256" not in identity
    stored = yaml.safe_load(identity["config"])
    assert stored == to_plain(prepared.config)
    assert stored["directions"]["norm"] == "filter"  # the default, spelled out
    assert stored["grid"] == {"x": "-1:1:4", "y": "-0.5:0.5:3", "path": "line"}
    # The model holds θ*, and the grid is the configured one.
    state = read_state_dict(small_checkpoint)
    for key, tensor in prepared.model.state_dict().items():
        assert torch.equal(tensor, state[key]), key
    np.testing.assert_array_equal(prepared.grid.x, np.linspace(-1, 1, 4))
    np.testing.assert_array_equal(prepared.grid.y, np.linspace(-0.5, 0.5, 3))


def test_prepare_for_an_interpolation_holds_theta2_with_its_bn_statistics(
    sweep_yaml, small_checkpoint, second_checkpoint, tmp_path
):
    changes = {"directions": {"kind": "target", "target": str(second_checkpoint)}}
    config = load_sweep_config(sweep_yaml(changes | {"grid": {"x": "0:1:3"}}))
    before = files_under(tmp_path)
    prepared = prepare(config)
    assert files_under(tmp_path) == before
    digest = hashlib.sha256(second_checkpoint.read_bytes()).hexdigest()
    assert prepared.identity["target_sha256"] == digest
    second = read_state_dict(second_checkpoint)
    first = read_state_dict(small_checkpoint)
    expected_keys = [key for key in second if "num_batches_tracked" not in key]
    end = prepared.directions.end
    assert list(end) == expected_keys and "bn1.running_mean" in expected_keys
    assert prepared.directions.moves_buffers
    for key in expected_keys:
        assert torch.equal(end[key], second[key]), key
        assert torch.equal(prepared.directions.x[key], second[key] - first[key]), key


def test_worker_setup_is_a_copy_of_the_full_state(sweep_yaml):
    prepared = prepare(load_sweep_config(sweep_yaml()))
    setup = prepared.worker_setup()
    state = prepared.model.state_dict()
    assert list(setup.state) == list(state) and "bn1.num_batches_tracked" in setup.state
    with torch.no_grad():
        prepared.model.conv1.weight.add_(1.0)
        prepared.model.bn1.running_var.mul_(2.0)
    assert torch.equal(setup.state["conv1.weight"] + 1.0, state["conv1.weight"])
    assert not torch.equal(setup.state["bn1.running_var"], state["bn1.running_var"])


def test_resolve_grid_fits_auto_axes_to_their_own_column_of_the_path():
    path = np.array([[3.0, -1.0], [1.5, 0.5], [0.0, 0.0]])  # different ranges for a and b
    trajectory = Trajectory(path, (0, 1, 2), (0.7, 0.2))
    pca = Directions("pca", "none", "biasbn", 0, {}, {}, trajectory)
    fitted = resolve_grid(GridConfig(AutoAxis(5), AutoAxis(3)), pca)
    assert fitted == GridConfig(Axis(-0.3, 3.3, 5), Axis(-1.2, 0.7, 3))
    mixed = GridConfig(Axis(-1.0, 1.0, 7), AutoAxis(4))
    assert resolve_grid(mixed, pca) == GridConfig(Axis(-1.0, 1.0, 7), Axis(-1.2, 0.7, 4))
    # Concrete axes stay as given, with or without a path.
    random = Directions("random", "filter", "biasbn", 0, {}, None)
    for grid in (GridConfig(Axis(-2.0, 2.0, 3), Axis(0.0, 1.0, 2)), GridConfig(Axis(0.0, 1.0, 2))):
        assert resolve_grid(grid, pca) == grid and resolve_grid(grid, random) == grid


def test_direction_settings_record_what_made_the_directions_and_read_back_equal(
    sweep_yaml, tmp_path
):
    identity = {"checkpoint_sha256": "c" * 64}
    random = load_sweep_config(sweep_yaml({"directions.seed": 7}))
    assert direction_settings(random, identity) == {
        "kind": "random",
        "norm": "filter",
        "ignore": "biasbn",
        "seed": 7,
        "checkpoint_sha256": "c" * 64,
        "target_sha256": "",
    }
    run = tmp_path / "run"
    pca = load_sweep_config(sweep_yaml({"directions": {"kind": "pca", "trajectory": str(run)}}))
    settings = direction_settings(pca, identity | {"target_sha256": "t"})
    # The seed draws nothing for a PCA (or target) direction: recorded as 0, whatever it was.
    assert (settings["seed"], settings["target_sha256"]) == (0, "t")
    assert (settings["trajectory"], settings["pattern"], settings["center"]) == (
        str(run),
        "model_*.pt",
        True,
    )
    # Reuse compares them with what the file holds: they must survive the round trip.
    directions = Directions("pca", "none", "biasbn", 0, {"w": torch.ones(2, 2)}, None)
    direction_file.write_directions(tmp_path / "d.h5", directions, settings)
    _, attributes = direction_file.read_directions(tmp_path / "d.h5")
    assert {key: attributes[key] for key in settings} == settings


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"directions.seed": 1}, ["seed 0 vs 1"]),
        ({"directions.norm": "layer"}, ["norm 'filter' vs 'layer'"]),
        ({"directions.ignore": "none"}, ["ignore 'biasbn' vs 'none'"]),
        ({"grid": {"x": "-1:1:4"}}, ["dimensions (1D vs 2D)"]),
        ("other checkpoint", ["checkpoint_sha256 '"]),
        ("target", ["kind 'random' vs 'target'", "target_sha256 '' vs", "parameter names/shapes"]),
    ],
)
def test_a_direction_file_made_for_another_sweep_is_refused_and_left_unchanged(
    changes, expected, sweep_yaml, second_checkpoint
):
    original = load_sweep_config(sweep_yaml())
    create_output(original)
    direction_file = original.direction_file
    before = direction_file.read_bytes(), direction_file.stat().st_mtime_ns
    if changes == "other checkpoint":
        changes = {"model.checkpoint": str(second_checkpoint)}
    elif changes == "target":
        target = {"kind": "target", "target": str(second_checkpoint)}
        changes = {"directions": target, "grid": {"x": "0:1:3"}}
    config = load_sweep_config(sweep_yaml(changes, name="other.yaml"))
    with pytest.raises(OutputError, match="was made for another sweep") as refused:
        prepare(config)
    for text in expected:
        assert text in str(refused.value)
    assert (direction_file.read_bytes(), direction_file.stat().st_mtime_ns) == before
    # --force recomputes the output's own file (once the output is accepted), but never a
    # file named in directions.file, which may serve other sweeps.
    assert prepare(config, force=True).directions_are_new
    named = replace(config, directions=replace(config.directions, file=direction_file))
    with pytest.raises(OutputError, match="was made for another sweep"):
        prepare(named, force=True)
    assert (direction_file.read_bytes(), direction_file.stat().st_mtime_ns) == before


def test_a_fitting_direction_file_is_reused_and_one_of_other_shapes_refused(sweep_yaml):
    config = load_sweep_config(sweep_yaml())
    create_output(config)
    saved, _ = direction_file.read_directions(config.direction_file)
    prepared = prepare(config)
    assert not prepared.directions_are_new
    assert prepared.directions.digest() == saved.digest()
    assert prepared.identity["directions_sha256"] == saved.digest()
    # Same settings, but a tensor missing: not directions for this model.
    partial = replace(saved, x={k: v for k, v in saved.x.items() if k != "linear.weight"})
    settings = direction_settings(config, prepared.identity)
    direction_file.write_directions(config.direction_file, partial, settings)
    with pytest.raises(OutputError, match=r"differs in: parameter names/shapes\)"):
        prepare(config)


def mark_done(path, rows):
    with h5py.File(path, "r+") as h5file:
        h5file["done"][rows] = True


def test_check_output_creates_resumes_or_leaves_a_complete_output(sweep_yaml):
    config = load_sweep_config(sweep_yaml())
    assert check_output(prepare(config), force=False) is None  # absent: create it
    create_output(config)
    assert check_output(prepare(config), force=False) is False  # nothing done: resume
    mark_done(config.output, slice(0, 2))
    assert check_output(prepare(config), force=False) is False  # partial: resume
    mark_done(config.output, slice(None))
    assert check_output(prepare(config), force=False) is True  # complete: leave it
    assert check_output(prepare(config), force=True) is None  # --force: start over


def test_a_sweep_started_before_the_open_engine_resumes(sweep_yaml):
    """A file whose stored config lacks the keys added since (model.kwargs, data.dataset,
    evaluation.loss, ...) holds the same sweep when those keys are at their defaults."""
    config = load_sweep_config(sweep_yaml())
    create_output(config)
    old = yaml.safe_load(str(surface_file.read_surface_attributes(config.output)["config"]))
    del old["model"]["kwargs"], old["evaluation"]["loss"]
    for key in ("dataset", "kwargs", "image_size", "cache_mb", "workers"):
        del old["data"][key]
    with h5py.File(config.output, "r+") as h5file:
        h5file.attrs["config"] = yaml.safe_dump(old, sort_keys=False)
    assert check_output(prepare(config), force=False) is False  # resume, not refuse
    changed = load_sweep_config(sweep_yaml({"evaluation": {"loss": "mse"}}))
    with pytest.raises(OutputError, match=r"differs in: evaluation\.loss"):
        check_output(prepare(changed), force=False)


def test_check_output_names_every_differing_key_and_touches_nothing(sweep_yaml):
    config = load_sweep_config(sweep_yaml())
    create_output(config)
    before = config.output.read_bytes(), config.output.stat().st_mtime_ns
    changed = load_sweep_config(sweep_yaml(), ["grid.x=-2:2:4", "data.batch_size=32"])
    prepared = prepare(changed)  # the direction file fits: grid and batch size are not in it
    with pytest.raises(OutputError, match=r"\(differs in: data\.batch_size, grid\.x\); .*--force"):
        check_output(prepared, force=False)
    assert (config.output.read_bytes(), config.output.stat().st_mtime_ns) == before


def test_only_the_checkpoint_bytes_changed_is_still_a_different_sweep(
    sweep_yaml, small_checkpoint, tmp_path
):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(small_checkpoint.read_bytes())
    config = load_sweep_config(sweep_yaml({"model.checkpoint": str(checkpoint)}))
    create_output(config)
    # Same weights (so the same directions are recomputed), but other bytes on disk.
    save_checkpoint(checkpoint, read_state_dict(small_checkpoint), epoch=2)
    config.direction_file.unlink()
    with pytest.raises(OutputError, match=r"\(differs in: checkpoint contents\)"):
        check_output(prepare(config), force=False)


def test_a_recomputed_direction_file_does_not_extend_an_old_surface(sweep_yaml):
    config = load_sweep_config(sweep_yaml())
    create_output(config)
    saved, _ = direction_file.read_directions(config.direction_file)
    doubled = replace(saved, x={key: 2 * value for key, value in saved.x.items()})
    settings = direction_settings(config, prepare(config).identity)  # still fits this sweep
    direction_file.write_directions(config.direction_file, doubled, settings)
    with pytest.raises(OutputError, match=r"\(differs in: directions contents\)"):
        check_output(prepare(config), force=False)


def test_operational_keys_are_real_keys_and_do_not_block_a_resume(sweep_yaml):
    config = load_sweep_config(sweep_yaml())
    plain = to_plain(config)
    for key in OPERATIONAL_KEYS:
        section, field = key.split(".")
        assert field in plain[section], key
    create_output(config)
    downloading = load_sweep_config(sweep_yaml(), ["data.download=true"])
    assert check_output(prepare(downloading), force=False) is False
