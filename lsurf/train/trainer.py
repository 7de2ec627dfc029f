"""Training a CIFAR-10 classifier into a checkpoint trajectory, resumable after any crash.

Owns `lsurf train` from start to end: deciding between a fresh start, a resume, a refusal
and --force; loading the splits once onto the device; building the model; the epoch loop
(training, evaluation on the test split, the log line); and the order in which each epoch's
files are written. The recipe each epoch follows (optimizer, learning-rate schedule,
shuffling and augmentation) is `lsurf.train.recipe`'s; the files and how they are written are
`lsurf.train.folder`'s.

Input: a `TrainConfig`. Output, in `config.output`: config.yaml, the trajectory model_E.pt,
final.pt, log.csv and resume.pt (see `lsurf.train.folder`); `train` returns final.pt's path.

Resume: `resume.pt` is written last in each epoch, so it is the commit point. A rerun after
kill -9 at any moment loads it, removes the files of the epoch that did not commit, rewrites
log.csv from its rows and trains on. Nothing random is carried between epochs: epoch E's
shuffling and augmentation come from a generator seeded by (seed, E), and the learning rate
is a pure function of E. So on CPU a resumed run ends with the same weights, bit for bit, as
one that was never interrupted (on a GPU as far as its kernels are deterministic).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lsurf import checkpoint, models
from lsurf.config import DataConfig, TrainConfig
from lsurf.data.cifar import Split, load_configured
from lsurf.errors import ConfigError
from lsurf.evaluate import measure, pick_device
from lsurf.run.progress import Log, to_stderr
from lsurf.train import folder
from lsurf.train.recipe import (
    EpochDraw,
    augment,
    build_optimizer,
    draw_epoch,
    epoch_seed,
    learning_rate,
    padding_fill,
)

# ---------------------------------------------------------------------------- the run


def train(config: TrainConfig, force: bool = False, log: Log = to_stderr) -> Path:
    """Train (or resume, or report as complete) the run in `config.output`; return final.pt.

    Raises ConfigError, before touching the folder, when it holds a run with another config
    or foreign training files (unless `force`, which starts over), and the usual
    Data/Checkpoint/ConfigErrors for missing data, unknown models and bad initial weights.
    Its lines (start, one per epoch, end) go to `log`, as a sweep's do.
    """
    training = config.training
    out = config.output
    committed = folder.committed_state(config, force)
    if committed is not None and committed["epoch"] == training.epochs:
        log(
            f"lsurf: training in {out} is already complete ({training.epochs} epochs); "
            f"trained weights: {out / folder.FINAL_FILE} (--force trains again)"
        )
        return out / folder.FINAL_FILE

    # Everything that can fail on bad input happens before the folder is touched.
    device = pick_device(config.evaluation.device)
    memory_format = (
        torch.channels_last if config.evaluation.channels_last else torch.contiguous_format
    )
    train_split, test_split = _load_splits(config, device, memory_format)
    # torch's overloads of Module.to lack (device=, memory_format=), which it takes
    model = _build_model(config).to(device=device, memory_format=memory_format)  # type: ignore[call-overload]
    optimizer = build_optimizer(model, training)
    # fp32 means fp32 (PyTorch lets cuDNN use TF32 by default); tf32 is an explicit opt-in.
    precision = config.evaluation.precision
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"

    first, rows = _start_or_resume(config, committed, model, optimizer)
    log(
        f"lsurf: training {config.model.name} on {device.type}, epochs {first}-{training.epochs} "
        f"of {training.epochs}, into {out}"
    )

    fill = padding_fill(config.data.mean, config.data.std).to(device)
    for epoch in range(first, training.epochs + 1):
        started = time.perf_counter()
        rate = learning_rate(training, epoch)
        for group in optimizer.param_groups:
            group["lr"] = rate
        # Nothing in the registry draws random numbers while training (no dropout), but a
        # model that did would stay reproducible across a resume with this seed.
        torch.manual_seed(epoch_seed(training.seed, epoch))
        draw = draw_epoch(len(train_split), training.seed, epoch).to(device)
        train_loss, train_acc = _train_epoch(
            model,
            optimizer,
            train_split,
            draw,
            config.data.batch_size,
            fill if training.augment else None,
            memory_format,
            precision,
        )
        row: dict[str, float] = {
            "epoch": epoch,
            "lr": rate,
            "train_loss": train_loss,
            "train_acc": train_acc,
        }
        if test_split is not None:
            model.eval()
            result = measure(model, test_split, config.data.batch_size, device.type, precision)
            row["test_loss"], row["test_acc"] = result.loss, result.accuracy
        row["seconds"] = round(time.perf_counter() - started, 3)
        rows.append(row)
        log(describe_epoch(row, training.epochs))

        # Commit order: the epoch's files first, resume.pt last. A crash in between leaves
        # files the next run discards and redoes; resume.pt never runs ahead of them.
        if epoch % training.save_every == 0 or epoch == training.epochs:
            folder.save_weights(folder.trajectory_file(out, epoch), model, epoch)
        if epoch == training.epochs:
            folder.save_weights(out / folder.FINAL_FILE, model, epoch)
        folder.write_log(out / folder.LOG_FILE, rows)
        folder.commit(out, model, optimizer, epoch, rows)

    log(
        f"lsurf: trajectory (model_*.pt), log.csv and config.yaml in {out}; "
        f"trained weights: {out / folder.FINAL_FILE}"
    )
    return out / folder.FINAL_FILE


def _start_or_resume(
    config: TrainConfig,
    committed: dict[str, Any] | None,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
) -> tuple[int, list[dict[str, float]]]:
    """The folder made ready for the first epoch to run: a fresh start writes the config,
    model_0.pt and the first commit; a resume loads the committed weights and optimizer and
    drops what the interrupted epoch left. Returns that epoch and the log rows so far."""
    out = config.output
    if committed is None:
        # A fresh start: --force, or a run of this config that never committed epoch 0.
        folder.remove_training_files(out)
        out.mkdir(parents=True, exist_ok=True)
        folder.write_config(out, config)
        rows: list[dict[str, float]] = []
        folder.save_weights(folder.trajectory_file(out, 0), model, 0)
        folder.commit(out, model, optimizer, 0, rows)
        first = 1
    else:
        first, rows = folder.resume_committed(out, committed, model, optimizer, config.model.name)
    return first, rows


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    split: Split,
    draw: EpochDraw,
    batch_size: int,
    fill: torch.Tensor | None,
    memory_format: torch.memory_format,
    precision: str,
) -> tuple[float, float]:
    """One pass over `split` in `draw.order`; the mean loss and the accuracy in percent."""
    model.train()
    return train_batches(
        lambda images, _: model(images),
        optimizer,
        split,
        draw,
        batch_size,
        fill,
        memory_format,
        precision,
    )


# The logits of a training batch: (images (B, C, H, W), the batch's number in the epoch).
Forward = Callable[[torch.Tensor, int], torch.Tensor]
# A term added to batch k's loss before the step (a curve's weight decay on its point), after
# forward(images, k) has run; what the epoch reports stays the cross-entropy.
Penalty = Callable[[int], torch.Tensor]


def train_batches(
    forward: Forward,
    optimizer: torch.optim.Optimizer,
    split: Split,
    draw: EpochDraw,
    batch_size: int,
    fill: torch.Tensor | None,
    memory_format: torch.memory_format,
    precision: str,
    penalty: Penalty | None = None,
) -> tuple[float, float]:
    """One pass over `split` in `draw.order`, one optimizer step per batch: the batch
    augmented with `fill` (None: as it is), its logits from `forward`, its loss the
    cross-entropy (plus `penalty`'s term in what is differentiated). Returns the mean
    cross-entropy and the accuracy in percent; the caller puts the model in train mode."""
    device = split.images.device
    # Sums stay on the device: one host sync per epoch, not per batch.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    size = len(split)
    for batch, start in enumerate(range(0, size, batch_size)):
        stop = min(start + batch_size, size)
        if stop - start == 1:
            # BatchNorm cannot normalize a single example in training mode; skip a last
            # batch of one (the split has at least two examples, see load_training_split).
            break
        picked = draw.order[start:stop]
        images = split.images[picked]
        if fill is not None:
            images = augment(images, draw.offsets[start:stop], draw.flips[start:stop], fill)
        images = images.contiguous(memory_format=memory_format)
        labels = split.labels[picked]
        with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
            logits = forward(images, batch)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        (loss if penalty is None else loss + penalty(batch)).backward()
        optimizer.step()
        loss_sum += loss.detach().double() * (stop - start)
        correct += (logits.argmax(dim=1) == labels).sum()
        seen += stop - start
    return loss_sum.item() / seen, 100.0 * correct.item() / seen


def describe_epoch(row: dict[str, float], epochs: int) -> str:
    """An epoch's log line: its number, learning rate, losses, accuracies and seconds."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"lr {row['lr']:.4g}"]
    parts += [f"train_loss {row['train_loss']:.4f}", f"train_acc {row['train_acc']:.2f}"]
    if "test_loss" in row:
        parts += [f"test_loss {row['test_loss']:.4f}", f"test_acc {row['test_acc']:.2f}"]
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)


# ---------------------------------------------------------------------------- building


def _load_splits(
    config: TrainConfig, device: torch.device, memory_format: torch.memory_format
) -> tuple[Split, Split | None]:
    """The training split (always) and the test split (when listed), once, on the device."""
    data = config.data
    # Training batches are gathered (and augmented) into new tensors, so the split stays in
    # the default layout; the test split is read in slices, so it gets the model's layout.
    train_split = load_training_split(data, device)
    test_split = None
    if "test" in data.splits:
        test = load_configured(data, "test")
        test_split = Split(
            test.images.to(device).contiguous(memory_format=memory_format),
            test.labels.to(device),
        )
    return train_split, test_split


def load_training_split(data: DataConfig, device: torch.device) -> Split:
    """The train split of `data`, once, on the device, in the default layout."""
    split = load_configured(data, "train")
    if len(split) < 2:
        raise ConfigError("training needs at least 2 training examples; raise data.subset")
    return Split(split.images.to(device), split.labels.to(device))


def _build_model(config: TrainConfig) -> nn.Module:
    """A model (registry name or import path) initialized from training.seed (or from
    model.checkpoint)."""
    # Forked, so seeding here leaves the caller's global generator where it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.training.seed)
        model = models.build_named(config.model.name, config.model.num_classes, config.model.kwargs)
    if config.model.checkpoint is not None:
        checkpoint.load_weights(model, config.model.checkpoint)
    return model
