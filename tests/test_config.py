from pathlib import Path

import pytest
import yaml

from lsurf.cli import main
from lsurf.config import load_sweep_config, load_train_config, stored_sweep_config
from lsurf.data.layouts import REFERENCE_MEAN, REFERENCE_STD
from lsurf.errors import ConfigError
from lsurf.files.surface import read_surface, read_surface_attributes
from lsurf.grid import Axis
from lsurf.schema import to_plain, to_yaml

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
        "compile": "auto",
        "compile_cache": None,
        "bn_recompute": None,
        "bn_seed": 0,
    }
    assert plain["grid"] == {"x": "-1:1:5", "y": "-0.5:0.5:3", "path": "line"}
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


# ---------------------------------------------------------------------------- the hessian section

# The `hessian:` section as every surface file stores it when the config leaves it out: part of
# the resume identity (the stored config is compared key by key), so it must not change.
HESSIAN_DEFAULTS = {
    "eigenvalues": False,
    "split": "train",
    "params": "weights",
    "names": {"include": ["*"], "exclude": []},  # hessian.names: every parameter
    "tol": 0.001,
    "max_products": 200,
    "seed": 0,
    "batch_size": None,
    "top_k": 5,
    "trace_samples": 100,
    "density_runs": 4,
    "density_steps": 80,
    "per_layer": True,
    "output": None,
}


def test_a_sweep_that_asks_for_no_hessian_leaves_its_split_unchecked(tmp_path):
    base = yaml.safe_load(MINIMAL)
    base["data"]["splits"] = ["test"]
    path = write(tmp_path, yaml.safe_dump(base))
    config = load_sweep_config(path)
    assert config.data.splits == ("test",)
    # Stored as before, and read back from the file (resume) to the same tree.
    plain = to_plain(config)
    assert plain["hessian"] == HESSIAN_DEFAULTS
    assert to_plain(stored_sweep_config(yaml.safe_load(to_yaml(config)))) == plain
    # A split other than the evaluated ones is no error either while nothing uses it.
    assert load_sweep_config(path, ["hessian.split=train"]).hessian.split == "train"


@pytest.mark.parametrize(
    ("splits", "overrides", "split"),
    [
        (["test"], ["hessian.eigenvalues=true"], "train"),
        (["test"], ["directions={kind: hessian}"], "train"),
        (["test"], ["directions={kind: hessian}", "grid.y=null"], "train"),
        (["train"], ["hessian.eigenvalues=true", "hessian.split=test"], "test"),
    ],
)
def test_a_sweep_that_asks_for_a_hessian_must_evaluate_its_split(
    tmp_path, splits, overrides, split
):
    base = yaml.safe_load(MINIMAL)
    base["data"]["splits"] = splits
    with pytest.raises(ConfigError) as error:
        load_sweep_config(write(tmp_path, yaml.safe_dump(base)), overrides)
    assert str(error.value) == (
        f"hessian.split is {split!r} but data.splits is {splits}; add {split} to "
        "data.splits, or set hessian.split to one of them"
    )
    # Evaluating the split too, or pointing the Hessian at an evaluated one, is accepted.
    evaluated = [*overrides, f"data.splits=[{split}, {splits[0]}]"]
    config = load_sweep_config(write(tmp_path, yaml.safe_dump(base)), evaluated)
    assert config.hessian.split == split


def test_the_hessian_sections_own_values_are_checked_whether_used_or_not(tmp_path):
    base = yaml.safe_load(MINIMAL)
    base["data"]["splits"] = ["test"]
    with pytest.raises(ConfigError, match="hessian.tol must be between 0 and 1"):
        load_sweep_config(write(tmp_path, yaml.safe_dump(base)), ["hessian.tol=0"])


def test_lsurf_hessian_refuses_a_split_the_config_does_not_name(tmp_path, capsys):
    base = yaml.safe_load(MINIMAL)
    base["data"]["splits"] = ["test"]
    base["output"] = str(tmp_path / "out" / "surface.h5")
    path = write(tmp_path, yaml.safe_dump(base))
    assert main(["hessian", str(path)]) == 2
    error = capsys.readouterr().err
    assert error == (
        "lsurf: error: hessian.split is 'train' but data.splits is ['test']; add train to "
        "data.splits, or set hessian.split to one of them\n"
    )
    assert not (tmp_path / "out").exists()


def test_a_test_only_sweep_runs_resumes_and_stores_the_default_hessian_section(
    sweep_yaml, tmp_path, capsys
):
    config = sweep_yaml({"data.splits": ["test"], "directions": None, "grid.y": None})
    assert main(["sweep", str(config)]) == 0
    surface = read_surface(tmp_path / "out" / "surface.h5")
    assert sorted(surface.metrics) == ["test_acc", "test_loss"] and surface.done.all()
    stored = yaml.safe_load(read_surface_attributes(tmp_path / "out" / "surface.h5")["config"])
    assert stored["hessian"] == HESSIAN_DEFAULTS
    capsys.readouterr()
    assert main(["sweep", str(config)]) == 0  # the same sweep: found complete, not refused
    assert "already complete" in capsys.readouterr().err


def test_a_language_model_sweep_takes_its_sizes_and_token_kwargs(tmp_path):
    base = yaml.safe_load(MINIMAL)
    base["model"] = {"name": "gpt2", "checkpoint": "lm.pt", "kwargs": {"n_layer": 2}}
    base["data"] = {"dataset": "tokens", "root": "tokens/", "kwargs": {"pad_id": 0}}
    base["evaluation"] = {"loss": "causal_lm"}
    config = load_sweep_config(write(tmp_path, yaml.safe_dump(base)))
    assert config.model.kwargs == {"n_layer": 2} and config.model.num_classes is None
    assert config.data.kwargs == {"pad_id": 0} and config.evaluation.loss == "causal_lm"
    base["model"] = {"name": "resnet20", "checkpoint": "c.pt", "kwargs": {"n_layer": 2}}
    with pytest.raises(ConfigError, match="model.kwargs is only used with"):
        load_sweep_config(write(tmp_path, yaml.safe_dump(base)))
