"""lsurf.train.folder: a commit reads back exactly; crashes and failed writes leave no trace."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from lsurf.config import DataConfig, ModelConfig, TrainConfig
from lsurf.errors import CheckpointError, ConfigError
from lsurf.train import folder

ROWS = [
    {"epoch": 1, "lr": 0.1, "train_loss": 2.5, "train_acc": 10.0, "seconds": 0.5},
    {"epoch": 2, "lr": 0.1, "train_loss": 2.25, "train_acc": 12.5, "seconds": 0.25},
    {"epoch": 3, "lr": 0.01, "train_loss": 2.0, "train_acc": 15.0, "seconds": 0.75},
]
LOG_OF_TWO_ROWS = (
    "epoch,lr,train_loss,train_acc,seconds\n1,0.1,2.5,10.0,0.5\n2,0.1,2.25,12.5,0.25\n"
)


def make_config(tmp_path: Path) -> TrainConfig:
    return TrainConfig(
        ModelConfig("convnet_small"), DataConfig(tmp_path / "data"), tmp_path / "run"
    )


def trained_pair() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A small model after one SGD step, so the optimizer holds momentum buffers."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(8, 4)).square().mean().backward()
    optimizer.step()
    return model, optimizer


def crashed_run(out: Path) -> None:
    """A folder as kill -9 leaves it during epoch 3 of a run committed after epoch 2 (final.pt
    and a curve's bend.pt are written with a run's last epoch only)."""
    out.mkdir()
    for name in ("config.yaml", "log.csv", "final.pt", "bend.pt", "resume.pt", "surface.h5"):
        (out / name).write_bytes(b"x")
    for epoch in range(4):
        folder.trajectory_file(out, epoch).write_bytes(b"x")
    (out / ".resume.pt.999.0123abcd.tmp").write_bytes(b"partial")
    (out / ".surface.h5.999.0123abcd.tmp").write_bytes(b"a sweep's, not ours")


def test_a_commit_reads_back_as_the_committed_state_bit_for_bit(tmp_path):
    config = make_config(tmp_path)
    model, optimizer = trained_pair()
    config.output.mkdir()
    folder.write_config(config.output, config)
    assert folder.committed_state(config, force=False) is None  # epoch 0 never committed
    folder.commit(config.output, model, optimizer, 2, ROWS[:2])

    state = folder.committed_state(config, force=False)
    assert state is not None and state["epoch"] == 2 and state["rows"] == ROWS[:2]
    assert state["state_dict"].keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(state["state_dict"][key], value), key
    restored = torch.optim.SGD(trained_pair()[0].parameters(), lr=0.1, momentum=0.9)
    restored.load_state_dict(state["optimizer"])
    for before, after in zip(
        optimizer.state_dict()["state"].values(),
        restored.state_dict()["state"].values(),
        strict=True,
    ):
        assert torch.equal(before["momentum_buffer"], after["momentum_buffer"])
    assert folder.committed_state(config, force=True) is None  # --force starts over


def test_another_config_or_foreign_files_are_refused_with_the_fix(tmp_path):
    config = make_config(tmp_path)
    config.output.mkdir()
    folder.trajectory_file(config.output, 0).write_bytes(b"someone else's")
    with pytest.raises(ConfigError, match="holds model_0.pt but no config.yaml.*--force"):
        folder.committed_state(config, force=False)

    folder.write_config(config.output, config)
    other = dataclasses.replace(config, model=ModelConfig("convnet_small", num_classes=100))
    with pytest.raises(ConfigError, match=r"different config \(differs in model.num_classes\)"):
        folder.committed_state(other, force=False)
    (config.output / "resume.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="resume.pt is unreadable.*--force"):
        folder.committed_state(config, force=False)

    file_config = dataclasses.replace(config, output=tmp_path / "a_file")
    file_config.output.write_bytes(b"")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        folder.committed_state(file_config, force=True)


def test_discard_uncommitted_removes_the_crashed_epochs_files_and_nothing_else(tmp_path):
    out = tmp_path / "run"
    crashed_run(out)
    folder.discard_uncommitted(out, 2, ROWS[:2])
    assert sorted(path.name for path in out.iterdir()) == [
        ".surface.h5.999.0123abcd.tmp",
        "config.yaml",
        "log.csv",
        "model_0.pt",
        "model_1.pt",
        "model_2.pt",
        "resume.pt",
        "surface.h5",
    ]
    assert (out / "log.csv").read_text() == LOG_OF_TWO_ROWS  # rewritten from the rows
    folder.discard_uncommitted(out, 0, [])
    assert not (out / "log.csv").exists() and not (out / "model_1.pt").exists()


def test_remove_training_files_keeps_what_sweeps_wrote_beside_the_run(tmp_path):
    out = tmp_path / "run"
    crashed_run(out)
    folder.remove_training_files(out)
    assert sorted(path.name for path in out.iterdir()) == [
        ".surface.h5.999.0123abcd.tmp",
        "surface.h5",
    ]
    folder.remove_training_files(tmp_path / "absent")  # nothing to remove: no error


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    model, optimizer = trained_pair()
    folder.commit(out, model, optimizer, 1, ROWS[:1])
    folder.write_log(out / "log.csv", ROWS[:2])
    before = {path.name: path.read_bytes() for path in out.iterdir()}

    def crash(state: object, handle) -> None:
        handle.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        folder.commit(out, model, optimizer, 2, ROWS[:2])
    monkeypatch.undo()
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert (out / "log.csv").read_text() == LOG_OF_TWO_ROWS
    assert torch.load(out / "resume.pt", weights_only=True)["epoch"] == 1
