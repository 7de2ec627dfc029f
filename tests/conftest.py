"""Shared fixtures: tiny synthetic CIFAR-10 folders, a small trained-ish checkpoint, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from cifar_helpers import SMALL_TEST, SMALL_TRAIN

from lsurf import models
from lsurf.checkpoint import save_checkpoint
from lsurf.cli import main
from lsurf.data.synthetic import write_synthetic


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated data in the real CIFAR-10 python layout, read by the real loading code."""
    return write_synthetic(tmp_path_factory.mktemp("cifar"), train_size=200, test_size=100, seed=0)


@pytest.fixture
def small_root(tmp_path: Path) -> Path:
    """A fresh synthetic folder of uneven sizes, one per test: the data tests damage it."""
    return write_synthetic(tmp_path / "data", train_size=SMALL_TRAIN, test_size=SMALL_TEST)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = models.build("convnet_small")
    # Non-trivial BN statistics, so tests notice if buffers are moved or lost.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    save_checkpoint(path, model.state_dict(), epoch=1)
    return path


@pytest.fixture
def sweep_yaml(tmp_path: Path, cifar_root: Path, small_checkpoint: Path):
    """Write a sweep config (a dict, updated by `changes`) and return its path."""

    def write(changes: dict | None = None, name: str = "sweep.yaml") -> Path:
        config = {
            "model": {"name": "convnet_small", "checkpoint": str(small_checkpoint)},
            "data": {"root": str(cifar_root), "splits": ["train", "test"], "batch_size": 64},
            "directions": {"kind": "random", "norm": "filter", "ignore": "biasbn", "seed": 0},
            "grid": {"x": "-1:1:4", "y": "-0.5:0.5:3"},
            "output": str(tmp_path / "out" / "surface.h5"),
        }
        for key, value in (changes or {}).items():
            section, _, field = key.partition(".")
            if value is None:
                if field:
                    config[section].pop(field, None)
                else:
                    config.pop(section, None)
            elif field:
                config.setdefault(section, {})[field] = value
            else:
                config[section] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config))
        return path

    return write


@pytest.fixture
def existing_output(sweep_yaml):
    """A finished sweep (surface, its bytes, its mtime) that bad runs must leave untouched."""
    config = sweep_yaml()
    assert main(["sweep", str(config)]) == 0
    output = config.parent / "out" / "surface.h5"
    return output, output.read_bytes(), output.stat().st_mtime_ns


@pytest.fixture(scope="session")
def blob_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """θ* of tests/fixtures/toylab's BlobNet(hidden=16), seeded: the researcher's own model of
    the open-engine and curvature tests."""
    import sys

    fixtures = str(Path(__file__).resolve().parent / "fixtures")
    if fixtures not in sys.path:
        sys.path.insert(0, fixtures)
    import toylab

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("blob") / "blobnet.pt"
    save_checkpoint(path, toylab.BlobNet(hidden=16).state_dict())
    return path
