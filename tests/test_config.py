from pathlib import Path

import pytest
import yaml

from lsurf.config import load_sweep_config, load_train_config
from lsurf.data.layouts import REFERENCE_MEAN, REFERENCE_STD
from lsurf.errors import ConfigError
from lsurf.grid import Axis
from lsurf.schema import to_plain

MINIMAL = """\
model: {name: resnet20, checkpoint: ckpt.pt}
data: {root: data/, splits: [train], batch_size: 256}
directions: {kind: random, norm: filter, ignore: biasbn, seed: 0}
grid: {x: "-1:1:5", y: "-0.5:0.5:3"}
output: runs/demo/surface.h5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_the_minimal_form_from_the_issue_parses_with_every_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_sweep_config(write(tmp_path, MINIMAL))
    assert config.model.checkpoint == tmp_path / "ckpt.pt"  # relative to the current directory
    assert config.data.root == tmp_path / "data"
    assert config.output == tmp_path / "runs/demo/surface.h5"
    assert config.grid.x == Axis(-1.0, 1.0, 5) and config.grid.y == Axis(-0.5, 0.5, 3)
    assert config.direction_file == tmp_path / "runs/demo/surface.directions.h5"
    plain = to_plain(config)
    assert plain["data"]["mean"] == list(REFERENCE_MEAN)
    assert plain["data"]["std"] == list(REFERENCE_STD)
    assert plain["evaluation"] == {
        "device": "auto",
        "precision": "fp32",
        "channels_last": True,
        "loss": "cross_entropy",
        "standard_errors": False,
        "rel_error": None,
        "min_examples": 1000,
        "control_variate": False,
        "fold_bn": True,
        "compile": False,
    }
    assert plain["grid"] == {"x": "-1:1:5", "y": "-0.5:0.5:3"}
    # The resolved YAML reads back to the same tree (it is what the surface file stores).
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain


def test_unquoted_grid_specs_are_not_read_as_base_60_numbers(tmp_path):
    config = load_sweep_config(write(tmp_path, MINIMAL.replace('"-1:1:5"', "-1:1:5")))
    assert config.grid.x == Axis(-1.0, 1.0, 5)


def test_set_overrides_are_type_checked(tmp_path):
    path = write(tmp_path, MINIMAL)
    config = load_sweep_config(
        path,
        ["grid.x=-2:2:9", "data.batch_size=64", "data.splits=[train, test]", "data.subset=100"],
    )
    assert config.grid.x == Axis(-2.0, 2.0, 9)
    assert config.data.batch_size == 64 and config.data.splits == ("train", "test")
    with pytest.raises(ConfigError, match="data.batch_size must be an integer"):
        load_sweep_config(path, ["data.batch_size=big"])
    with pytest.raises(ConfigError, match="expects key.path=value"):
        load_sweep_config(path, ["data.batch_size"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            "model: {name: resnet20, checkpoint: c.pt, depth: 3}",
            "unknown key model.depth in model; valid keys: name, checkpoint, num_classes",
        ),
        ("colour: red", "unknown key colour in the config; valid keys: model, data, grid, output"),
        ("grid: {x: '1:2'}", "grid.x must be 'min:max:num'"),
        ("grid: {x: 5}", "grid.x must be 'min:max:num' with min < max"),
        ("grid: {x: 'auto:1'}", "or 'auto:num' on a PCA plane; got 'auto:1'"),
        ("grid: {x: 'auto:11'}", "grid.x: 'auto:num' fits the range to a training path"),
        ("grid: {x: '-1:1:3', y: 'auto:5'}", "grid.y: 'auto:num' fits the range"),
        (
            "directions: {kind: sharpness}",
            "directions.kind must be one of random, target, pca, hessian",
        ),
        ("directions: {kind: pca}", "directions.kind: pca needs directions.trajectory"),
        ("directions: {kind: pca, trajectory: t, norm: filter}", "principal components"),
        ("directions: {center: false}", "directions.center is only used with"),
        ("directions: {norm: filtre}", "directions.norm must be one of filter, layer, weight"),
        ("data: {root: d, splits: [val]}", "data.splits must be one of train, test"),
        ("data: {root: d, batch_size: 0}", "data.batch_size must be at least 1"),
        ("data: {root: d, mean: [0.5, 0.5]}", "data.mean must be a list of 3 values"),
        ("data: {root: d, subset: yes}", "data.subset must be an integer"),
        ("output: out.txt", "output must be an HDF5 file ending in .h5"),
        ("model: {name: resnet20}", "missing required key model.checkpoint"),
        ("directions: {kind: target}", "needs directions.target"),
        (
            "directions: {kind: target, target: b.pt, norm: filter}",
            "apply to random directions only",
        ),
    ],
)
def test_bad_configs_name_the_key_and_what_is_valid(tmp_path, change, message):
    base = yaml.safe_load(MINIMAL)
    base.update(yaml.safe_load(change))
    with pytest.raises(ConfigError) as error:
        load_sweep_config(write(tmp_path, yaml.safe_dump(base)))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_target_kind_resolves_norm_and_spans_a_plane_with_a_random_or_third_y(tmp_path):
    base = yaml.safe_load(MINIMAL)
    base["directions"] = {"kind": "target", "target": "b.pt"}
    base["grid"] = {"x": "-0.5:1.5:21"}
    config = load_sweep_config(write(tmp_path, yaml.safe_dump(base)))
    assert (config.directions.norm, config.directions.ignore) == ("none", "none")
    assert (config.directions.y_norm, config.directions.space) == (None, "states")
    base["grid"]["y"] = "0:1:3"
    config = load_sweep_config(write(tmp_path, yaml.safe_dump(base)))
    assert (config.directions.y_norm, config.directions.y_ignore) == ("filter", "biasbn")
    base["directions"]["y_target"] = "c.pt"
    config = load_sweep_config(write(tmp_path, yaml.safe_dump(base)))
    assert config.directions.y_norm is None and config.directions.y_target.name == "c.pt"
    del base["grid"]["y"]
    with pytest.raises(ConfigError, match="directions.y_target shapes the y direction"):
        load_sweep_config(write(tmp_path, yaml.safe_dump(base)))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_sweep_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sweep_config(write(tmp_path, "model: [unclosed"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_sweep_config(write(tmp_path, "- a\n- b\n"))


def test_train_config_defaults(tmp_path):
    path = write(tmp_path, "model: {name: resnet20}\ndata: {root: d}\noutput: runs/t\n")
    config = load_train_config(path, ["training.epochs=2"])
    assert config.training.epochs == 2 and config.training.save_every == 1
    assert config.model.checkpoint is None
