"""Every shipped config parses, and the demo's really runs (in test_demo-sized form)."""

from pathlib import Path

import pytest

from lsurf.config import load_sweep_config, load_train_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize(
    "name", ["random-2d.yaml", "random-1d.yaml", "interpolate.yaml", "demo/sweep.yaml"]
)
def test_shipped_sweep_configs_are_valid(name):
    config = load_sweep_config(CONFIGS / name)
    assert config.output.suffix == ".h5"
    if name == "interpolate.yaml":
        assert config.directions.kind == "target" and config.grid.y is None
        assert config.grid.x.start < 0 < 1 < config.grid.x.stop


def test_shipped_train_config_is_valid():
    config = load_train_config(CONFIGS / "demo/train.yaml")
    assert config.model.name == "resnet20" and config.training.epochs >= 1
