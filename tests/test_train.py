"""lsurf.train.trainer: the files a run writes, resume after kill -9, refusals and --force."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from lsurf import models
from lsurf.cli import main
from lsurf.config import load_train_config
from lsurf.errors import ConfigError
from lsurf.schema import to_plain
from lsurf.train import trainer as training_module
from lsurf.train.recipe import learning_rate


def write_config(folder: Path, cifar_root: Path, name: str = "train.yaml", **training) -> Path:
    """A convnet_small training config on the tiny synthetic set, output folder `folder/name`."""
    config = {
        "model": {"name": "convnet_small"},
        "data": {"root": str(cifar_root), "splits": ["train", "test"], "batch_size": 32},
        "training": {"epochs": 2, "lr": 0.05, **training},
        "output": str(folder / Path(name).stem),
    }
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    return path


def read_log(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def assert_same_weights(first: Path, second: Path) -> None:
    a, b = weights(first), weights(second)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bit for bit, not approximately


def snapshot(run: Path) -> dict[str, tuple[bytes, int]]:
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in run.iterdir()}


# ---------------------------------------------------------------------------- a run's files


def test_a_run_writes_the_trajectory_log_and_config_and_lowers_the_loss(tmp_path, cifar_root):
    config = write_config(
        tmp_path, cifar_root, epochs=3, save_every=2, schedule="step", milestones=[2], gamma=0.5
    )
    assert main(["train", str(config)]) == 0
    run = tmp_path / "train"
    assert sorted(path.name for path in run.iterdir()) == [
        "config.yaml",
        "final.pt",
        "log.csv",
        "model_0.pt",
        "model_2.pt",
        "model_3.pt",
        "resume.pt",
    ]
    for name, epoch in [("model_0.pt", 0), ("model_2.pt", 2), ("model_3.pt", 3), ("final.pt", 3)]:
        state = torch.load(run / name, weights_only=True)
        assert state["epoch"] == epoch and "conv1.weight" in state["state_dict"]
    assert_same_weights(run / "final.pt", run / "model_3.pt")
    # model_0.pt is the registry model initialized from training.seed (0).
    torch.manual_seed(0)
    initial = models.build("convnet_small").state_dict()
    assert all(
        torch.equal(initial[key], value) for key, value in weights(run / "model_0.pt").items()
    )

    header = (run / "log.csv").read_text().splitlines()[0]
    assert header == "epoch,lr,train_loss,train_acc,test_loss,test_acc,seconds"
    rows = read_log(run)
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    assert [float(row["lr"]) for row in rows] == [0.05, 0.05, 0.025]  # milestone 2: from epoch 3
    losses = [float(row["train_loss"]) for row in rows]
    assert losses[-1] < losses[0]
    assert all(0 <= float(row["test_acc"]) <= 100 for row in rows)
    # config.yaml is the resolved config, every default spelled out.
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert stored == to_plain(load_train_config(config))
    assert stored["training"]["augment"] is True and stored["training"]["optimizer"] == "sgd"


def test_the_same_config_gives_the_same_weights_and_another_seed_does_not(tmp_path, cifar_root):
    for name, seed in [("a.yaml", 0), ("b.yaml", 0), ("c.yaml", 1)]:
        assert main(["train", str(write_config(tmp_path, cifar_root, name, seed=seed))]) == 0
    assert_same_weights(tmp_path / "a" / "final.pt", tmp_path / "b" / "final.pt")
    assert not torch.equal(
        weights(tmp_path / "a" / "final.pt")["conv1.weight"],
        weights(tmp_path / "c" / "final.pt")["conv1.weight"],
    )


def test_adam_and_nesterov_train_with_their_own_state(tmp_path, cifar_root):
    adam = write_config(tmp_path, cifar_root, "adam.yaml", optimizer="adam", lr=0.01)
    nesterov = write_config(tmp_path, cifar_root, "nesterov.yaml", nesterov=True)
    plain = write_config(tmp_path, cifar_root, "plain.yaml")
    for config in (adam, nesterov, plain):
        assert main(["train", str(config), "--set", "data.splits=[train]"]) == 0
    adam_state = torch.load(tmp_path / "adam" / "resume.pt", weights_only=True)["optimizer"]
    assert {"exp_avg", "exp_avg_sq", "step"} <= set(adam_state["state"][0])
    nesterov_state = torch.load(tmp_path / "nesterov" / "resume.pt", weights_only=True)
    assert nesterov_state["optimizer"]["param_groups"][0]["nesterov"] is True
    assert "momentum_buffer" in nesterov_state["optimizer"]["state"][0]
    losses = [float(row["train_loss"]) for row in read_log(tmp_path / "adam")]
    assert losses[-1] < losses[0]
    assert not torch.equal(
        weights(tmp_path / "nesterov" / "final.pt")["conv1.weight"],
        weights(tmp_path / "plain" / "final.pt")["conv1.weight"],
    )
    # Without the test split the log has the training columns only.
    header = (tmp_path / "adam" / "log.csv").read_text().splitlines()[0]
    assert header == "epoch,lr,train_loss,train_acc,seconds"


# ---------------------------------------------------------------------------- resume


def test_kill_9_mid_run_then_rerun_ends_with_the_uninterrupted_weights(tmp_path, cifar_root):
    settings = dict(epochs=25, nesterov=True, schedule="step", milestones=[10, 20], save_every=3)
    reference = write_config(tmp_path, cifar_root, "reference.yaml", **settings)
    interrupted = write_config(tmp_path, cifar_root, "interrupted.yaml", **settings)
    # Small batches make each epoch long enough that the kill lands mid-run.
    overrides = ["--set", "data.batch_size=8"]
    assert main(["train", str(reference), *overrides]) == 0

    run = tmp_path / "interrupted"
    command = [sys.executable, "-m", "lsurf", "train", str(interrupted), *overrides]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run / "model_3.pt").exists() and process.poll() is None:
        assert time.monotonic() < deadline, "the training process made no progress"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # it was still training when killed
    # Killed at some moment after epoch 3's checkpoint was written: maybe before its commit.
    committed = torch.load(run / "resume.pt", weights_only=True)["epoch"]
    assert 2 <= committed < 25

    assert main(["train", str(interrupted), *overrides]) == 0
    assert_same_weights(run / "final.pt", tmp_path / "reference" / "final.pt")
    names = sorted(path.name for path in run.iterdir())
    assert names == sorted(path.name for path in (tmp_path / "reference").iterdir())
    for epoch in (3, 12, 24, 25):
        assert_same_weights(run / f"model_{epoch}.pt", tmp_path / "reference" / f"model_{epoch}.pt")
    rows, expected = read_log(run), read_log(tmp_path / "reference")
    assert [int(row["epoch"]) for row in rows] == list(range(1, 26))  # each epoch once
    for row, reference_row in zip(rows, expected, strict=True):
        row.pop("seconds"), reference_row.pop("seconds")
        assert row == reference_row  # same lr, losses and accuracies, to the last digit


def test_a_crashed_epochs_leftovers_are_discarded_on_resume(
    tmp_path, cifar_root, monkeypatch, capsys
):
    """Adam + cosine, stopped in epoch 3 after that epoch's files were (partly) written."""
    settings = dict(epochs=4, optimizer="adam", lr=0.01, schedule="cosine", save_every=1)
    reference = write_config(tmp_path, cifar_root, "reference.yaml", **settings)
    interrupted = write_config(tmp_path, cifar_root, "interrupted.yaml", **settings)
    assert main(["train", str(reference)]) == 0

    real_epoch = training_module._train_epoch
    calls = []

    def stop_in_the_third_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(training_module, "_train_epoch", stop_in_the_third_epoch)
    assert main(["train", str(interrupted)]) == 130
    monkeypatch.undo()
    run = tmp_path / "interrupted"
    # What a kill between epoch 3's files and its commit would leave: a model_3.pt, a final
    # log row, a half-written temporary. All must go; epoch 3 is redone.
    (run / "model_3.pt").write_bytes((run / "model_2.pt").read_bytes())
    with open(run / "log.csv", "a") as handle:
        handle.write("3,0.5,9.0,1.0,9.0,1.0,0.1\n")
    (run / ".resume.pt.999.0123abcd.tmp").write_bytes(b"partial")
    capsys.readouterr()

    assert main(["train", str(interrupted)]) == 0
    assert "epochs 3-4 of 4" in capsys.readouterr().err
    assert not (run / ".resume.pt.999.0123abcd.tmp").exists()
    assert_same_weights(run / "final.pt", tmp_path / "reference" / "final.pt")
    assert_same_weights(run / "model_3.pt", tmp_path / "reference" / "model_3.pt")
    rows = read_log(run)
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4]
    lrs = [float(row["lr"]) for row in rows]
    assert lrs == [learning_rate(load_train_config(interrupted).training, e) for e in range(1, 5)]


# ---------------------------------------------------------------------------- the folder


def test_another_config_is_refused_force_restarts_and_a_finished_run_is_untouched(
    tmp_path, cifar_root, capsys
):
    config = write_config(tmp_path, cifar_root, save_every=1)
    run = tmp_path / "train"
    assert main(["train", str(config)]) == 0
    before = snapshot(run)
    capsys.readouterr()

    assert main(["train", str(config)]) == 0
    assert "already complete" in capsys.readouterr().err
    assert snapshot(run) == before

    assert main(["train", str(config), "--set", "training.lr=0.2"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "different config" in lines[0] and "training.lr" in lines[0]
    assert "--force" in lines[0]
    assert snapshot(run) == before

    (run / "surface.h5").write_bytes(b"a sweep's output lives beside the run")
    overrides = ["--set", "training.lr=0.2", "--set", "training.epochs=1"]
    assert main(["train", str(config), *overrides, "--force"]) == 0
    assert not (run / "model_2.pt").exists()  # the old run's files are gone ...
    assert (run / "surface.h5").exists()  # ... and nothing else
    assert [float(row["lr"]) for row in read_log(run)] == [0.2]
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["lr"] == 0.2


def test_training_files_without_a_config_are_not_overwritten(tmp_path, cifar_root, capsys):
    config = write_config(tmp_path, cifar_root)
    run = tmp_path / "train"
    run.mkdir()
    (run / "model_0.pt").write_bytes(b"someone else's")
    assert main(["train", str(config)]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    assert (run / "model_0.pt").read_bytes() == b"someone else's"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"optimizer": "rmsprop"}, "training.optimizer must be one of sgd, adam"),
        ({"schedule": "step"}, "training.schedule: step needs training.milestones"),
        ({"milestones": [5]}, "training.milestones is only used with training.schedule: step"),
        ({"schedule": "step", "milestones": [5, 3]}, "must be increasing epoch numbers"),
        ({"optimizer": "adam", "nesterov": True}, "training.nesterov needs optimizer: sgd"),
        ({"nesterov": True, "momentum": 0.0}, "a momentum above 0"),
        ({"lr": 0}, "training.lr must be a positive number"),
        ({"momentum": 1.0}, "training.momentum must be in [0, 1)"),
        ({"weight_decay": -1e-4}, "training.weight_decay must be 0 or more"),
        ({"augment": "yes"}, "training.augment must be true or false"),
        ({"warmup": 5}, "unknown key training.warmup in training; valid keys: epochs, optimizer"),
    ],
)
def test_bad_training_settings_are_one_line_errors(tmp_path, cifar_root, change, message):
    with pytest.raises(ConfigError) as error:
        load_train_config(write_config(tmp_path, cifar_root, **change))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "train").exists()


def test_cifar100_trains_a_hundred_class_head(tmp_path):
    from lsurf.data.synthetic import write_synthetic

    root = write_synthetic(tmp_path / "c100", train_size=64, test_size=16, dataset="cifar100")
    path = write_config(tmp_path, root, epochs=1)
    raw = yaml.safe_load(path.read_text())
    raw["data"]["dataset"] = "cifar100"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path)]) == 0
    final = weights(tmp_path / "train" / "final.pt")
    assert final["linear.weight"].shape[0] == 100  # num_classes from the data
    assert to_plain(load_train_config(path))["model"]["num_classes"] == 100
