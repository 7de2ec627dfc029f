"""The training-loop callbacks in real (tiny) runs: PyTorch Lightning and the Hugging Face
Trainer capture at the right epochs, leave the training's losses bit-identical, resume into
the same file, and refuse a model that no longer fits the file before a step is taken."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lsurf.errors import ConfigError
from lsurf.files.captures import read_captures

GRID = {"x": "-1:1:5", "y": "-1:1:5", "examples": None}


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(64, 8, generator=generator), torch.randint(0, 3, (64,), generator=generator)


def network(width: int = 16) -> nn.Module:
    return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Dropout(0.2), nn.Linear(width, 3))


# ----------------------------------------------------------------------------- Lightning


def lightning_fit(tmp_path, callbacks, epochs, width=16, resume=None, logger=False):
    pl = pytest.importorskip("lightning.pytorch")

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = network(width)
            self.losses: list[float] = []

        def forward(self, inputs):
            return self.net(inputs)

        def training_step(self, batch, index):
            inputs, targets = batch
            loss = F.cross_entropy(self(inputs), targets)
            self.losses.append(loss.item())
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    pl.seed_everything(0, verbose=False)
    inputs, targets = data()
    dataset = torch.utils.data.TensorDataset(inputs, targets)
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True)
    module = Module()
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    trainer.fit(module, loader, ckpt_path=resume)
    return module, trainer


def test_lightning_captures_every_nth_epoch_without_changing_the_training(tmp_path):
    from lsurf.callbacks import LightningCapture

    plain, _ = lightning_fit(tmp_path, [], 4)
    path = tmp_path / "run.h5"
    captured, trainer = lightning_fit(
        tmp_path, [LightningCapture(path, data(), every=2, **GRID)], 4
    )
    assert captured.losses == plain.losses and len(plain.losses) == 16
    assert [(one.epoch, one.step) for one in read_captures(path)] == [(2, 8), (4, 16)]
    assert captured.training  # Lightning's module back in training mode, as it was
    # A training that goes on from its checkpoint appends to the same file.
    checkpoint = tmp_path / "epoch4.ckpt"
    trainer.save_checkpoint(checkpoint)
    before = read_captures(path)
    lightning_fit(tmp_path, [LightningCapture(path, data(), every=2, **GRID)], 6, resume=checkpoint)
    after = read_captures(path)
    assert [(one.epoch, one.step) for one in after] == [(2, 8), (4, 16), (6, 24)]
    for old, new in zip(before, after, strict=False):
        assert np.array_equal(old.surface.metrics["train_loss"], new.surface.metrics["train_loss"])


def test_lightning_refuses_a_model_that_changed_before_training(tmp_path):
    from lsurf.callbacks import LightningCapture

    path = tmp_path / "run.h5"
    lightning_fit(tmp_path, [LightningCapture(path, data(), every=1, **GRID)], 1)
    before = path.read_bytes()
    with pytest.raises(
        ConfigError,
        match=r"changed since the first capture .* net\.0\.weight was \[16, 8\], is \[24, 8\]",
    ):
        lightning_fit(tmp_path, [LightningCapture(path, data(), every=1, **GRID)], 1, width=24)
    assert path.read_bytes() == before


# ------------------------------------------------------------------ Hugging Face Trainer


class Classifier(nn.Module):
    """The Trainer's contract: the loss first when labels come, the logits alone otherwise
    (which is what lsurf evaluates)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = network()

    def forward(self, inputs, labels=None):
        logits = self.net(inputs)
        return logits if labels is None else (F.cross_entropy(logits, labels), logits)


class Examples(torch.utils.data.Dataset):
    def __init__(self, inputs, targets) -> None:
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index):
        return {"inputs": self.inputs[index], "labels": self.targets[index]}


def hugging_face_train(tmp_path, callbacks, report_to=()):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    arguments = transformers.TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        num_train_epochs=4,
        per_device_train_batch_size=16,
        logging_steps=1,
        report_to=list(report_to),
        use_cpu=True,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
        log_level="error",
    )
    trainer = transformers.Trainer(
        model=Classifier(), args=arguments, train_dataset=Examples(*data()), callbacks=callbacks
    )
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_hugging_face_trainer_captures_every_nth_epoch_without_changing_the_training(tmp_path):
    from lsurf.callbacks import HuggingFaceCapture

    plain = hugging_face_train(tmp_path, [])
    path = tmp_path / "run.h5"
    captured = hugging_face_train(tmp_path, [HuggingFaceCapture(path, data(), every=2, **GRID)])
    assert captured == plain and len(plain) == 16
    found = read_captures(path)
    assert [(one.epoch, one.step) for one in found] == [(2, 8), (4, 16)]
    assert all(one.surface.done.all() for one in found)


def test_a_missing_framework_is_one_line(monkeypatch):
    import lsurf.callbacks as callbacks

    monkeypatch.setitem(__import__("sys").modules, "lightning.pytorch", None)
    monkeypatch.delitem(callbacks.__dict__, "LightningCapture", raising=False)
    with pytest.raises(ConfigError) as caught:
        callbacks.LightningCapture  # noqa: B018 (the attribute builds the class)
    assert str(caught.value) == (
        "this callback needs lightning, which is not installed: pip install lsurf[lightning]"
    )


# ------------------------------------------------------------------------------ trackers


def captured_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every lsurf/capture scalar the event files under `folder` hold: tag → (step, value)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            if tag.startswith("lsurf/capture/"):
                found[tag] = [(event.step, event.value) for event in accumulator.Scalars(tag)]
    return found


def test_each_capture_reaches_the_trainers_tensorboard_at_its_step(tmp_path):
    pytest.importorskip("tensorboard")
    pl = pytest.importorskip("lightning.pytorch")
    from lsurf.callbacks import HuggingFaceCapture, LightningCapture

    path = tmp_path / "lightning.h5"
    logger = pl.loggers.TensorBoardLogger(save_dir=str(tmp_path / "tb"), name="run")
    lightning_fit(tmp_path, [LightningCapture(path, data(), every=2, **GRID)], 4, logger=logger)
    logged = captured_scalars(tmp_path / "tb")
    centres = [(2 * index + 2) * 4 for index in range(2)]  # the global steps of epochs 2, 4
    expected = [
        (step, float(one.surface.metrics["train_loss"][2, 2]))
        for step, one in zip(centres, read_captures(path), strict=True)
    ]
    assert [
        (step, pytest.approx(value)) for step, value in logged["lsurf/capture/train_loss_centre"]
    ] == expected

    path = tmp_path / "trainer.h5"
    hugging_face_train(
        tmp_path, [HuggingFaceCapture(path, data(), every=2, **GRID)], report_to=["tensorboard"]
    )
    logged = captured_scalars(tmp_path / "trainer")
    expected = [
        (one.step, float(one.surface.metrics["train_loss"][2, 2])) for one in read_captures(path)
    ]
    assert [step for step, _ in expected] == [8, 16]
    assert [
        (step, pytest.approx(value)) for step, value in logged["lsurf/capture/train_loss_centre"]
    ] == expected
