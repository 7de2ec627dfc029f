"""Every shipped config parses: sweeps as sweeps, training runs as training runs."""

from pathlib import Path

import pytest
import yaml

from lsurf.config import load_sweep_config, load_train_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ALL = sorted(CONFIGS.rglob("*.yaml"))


def test_there_is_a_config_for_each_kind_of_sweep():
    kinds = {
        load_sweep_config(path).directions.kind
        for path in ALL
        if "grid" in yaml.safe_load(path.read_text())
    }
    assert kinds == {"random", "target", "pca"}


@pytest.mark.parametrize("path", ALL, ids=[str(path.relative_to(CONFIGS)) for path in ALL])
def test_shipped_config_is_valid(path):
    raw = yaml.safe_load(path.read_text())
    if "grid" in raw:
        config = load_sweep_config(path)
        assert config.output.suffix == ".h5"
        if config.directions.kind == "target":
            assert config.grid.y is None and config.grid.x.start < 0 < 1 < config.grid.x.stop
    else:
        config = load_train_config(path)
        assert config.training.epochs >= 1
