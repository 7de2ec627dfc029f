"""Training a CIFAR-10 classifier into a checkpoint trajectory, resumable after any crash.

Owns `lsurf train`: the optimizer (SGD with momentum, optionally Nesterov, or Adam), the
per-epoch learning-rate schedule, the standard CIFAR augmentation done on tensors already on
the device, and the output folder's life cycle (fresh start, resume, refusal, --force).

Input: a `TrainConfig`. Output, in `config.output`:
- `config.yaml`  the resolved config; a rerun must match it, or pass --force to start over;
- `model_0.pt`   the initial weights; `model_E.pt` every `save_every` epochs and after the
                 last epoch; `final.pt` the last epoch's weights again. Each holds
                 {'state_dict', 'epoch'} written by `checkpoint.save_checkpoint`: `lsurf
                 sweep` reads any of them, PCA globs `model_*.pt` and orders them by E;
- `log.csv`      one row per finished epoch: epoch, lr, train_loss, train_acc (running means
                 over the epoch's augmented batches in training mode, as the reference
                 logs them), test_loss, test_acc (only when `test` is in data.splits; eval
                 mode, no augmentation), seconds;
- `resume.pt`    the committed state after the last finished epoch: weights, optimizer state
                 (momentum buffers, Adam moments and step counts), the epoch and the log rows.

Resume: every file is replaced atomically (written beside its place, then renamed), and
`resume.pt` is written last in each epoch, so it is the commit point. A rerun after kill -9
at any moment loads it, removes the files of the epoch that did not commit, rewrites log.csv
from its rows and trains on. Nothing random is carried between epochs: epoch E's shuffling
and augmentation come from a generator seeded by (seed, E), and the learning rate is a pure
function of E. So on CPU a resumed run ends with the same weights, bit for bit, as one that
was never interrupted (on a GPU as far as its kernels are deterministic).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import re
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from lsurf import checkpoint, models
from lsurf.config import TrainConfig, TrainingConfig, differences, to_yaml
from lsurf.data import Channels, Split, load_split
from lsurf.errors import CheckpointError, ConfigError
from lsurf.evaluate import measure, pick_device

PADDING = 4  # pixels added on each side before the 32x32 random crop (torchvision's padding=4)

CONFIG_FILE = "config.yaml"
LOG_FILE = "log.csv"
FINAL_FILE = "final.pt"
RESUME_FILE = "resume.pt"
_TRAJECTORY_FILE = re.compile(r"model_(\d+)\.pt")
# What an atomic write killed between open and rename leaves: .NAME.PID.HEX.tmp
_TEMPORARY_FILE = re.compile(r"\.(.+)\.\d+\.[0-9a-f]{8}\.tmp")


# ---------------------------------------------------------------------------- pure parts


def learning_rate(training: TrainingConfig, epoch: int) -> float:
    """The learning rate of epoch `epoch` (1-based) under `training.schedule`."""
    if training.schedule == "step":
        # Repeated multiplication, as the reference decays its param groups in place, so
        # the values match it to the last bit (0.1 * 0.1 is 0.010000000000000002).
        rate = training.lr
        for milestone in training.milestones:
            if milestone < epoch:
                rate *= training.gamma
        return rate
    if training.schedule == "cosine":
        return training.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / training.epochs))
    return training.lr


def epoch_seed(seed: int, epoch: int) -> int:
    """A 64-bit seed for epoch `epoch` of a run seeded with `seed`.

    SeedSequence hashes the pair, so neighbouring seeds or epochs give unrelated streams
    (seed + epoch would make run 0's epoch 2 repeat run 1's epoch 1).
    """
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])


@dataclass(frozen=True)
class EpochDraw:
    """Everything random about one epoch; position i describes the i-th example visited."""

    order: torch.Tensor  # (N,) int64: the permutation of the training split
    offsets: torch.Tensor  # (N, 2) int64: crop corner (row, column) in the padded image, 0..8
    flips: torch.Tensor  # (N,) bool: mirror left-right

    def to(self, device: torch.device) -> EpochDraw:
        return EpochDraw(self.order.to(device), self.offsets.to(device), self.flips.to(device))


def draw_epoch(size: int, seed: int, epoch: int) -> EpochDraw:
    """The shuffling and augmentation of one epoch over `size` examples.

    Drawn on the CPU, so they are the same whatever device trains, and always all three, so
    the order does not depend on whether augmentation is on.
    """
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    order = torch.randperm(size, generator=generator)
    offsets = torch.randint(0, 2 * PADDING + 1, (size, 2), generator=generator)
    flips = torch.rand(size, generator=generator) < 0.5
    return EpochDraw(order, offsets, flips)


def padding_fill(mean: Channels, std: Channels) -> torch.Tensor:
    """(3,) float32: what a raw black pixel (0) becomes after normalization, per channel.

    The reference pads the raw image with 0 and normalizes afterwards; our splits are
    normalized already, so padding them with the normalized zero gives the same tensor. Plain
    0 would be the mean colour instead: a grey frame the reference never showed the network.
    The float32 operations are `lsurf.data`'s, in its order, so the value is bit-identical to
    a normalized black pixel.
    """
    zero = torch.zeros(len(mean), dtype=torch.float32)
    zero.div_(255).sub_(torch.tensor(mean, dtype=torch.float32))
    return zero.div_(torch.tensor(std, dtype=torch.float32))


def augment(
    images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, fill: torch.Tensor
) -> torch.Tensor:
    """Random crop with PADDING-pixel padding, then horizontal flip, for a whole batch at once.

    images (B, C, H, W); offsets (B, 2) crop corners in 0..2·PADDING; flips (B,) bool;
    fill (C,) the padding value per channel. Returns a new (B, C, H, W) tensor: the same as
    torchvision's RandomCrop(padding=PADDING) and RandomHorizontalFlip image by image.
    """
    batch, channels, height, width = images.shape
    padded = images.new_empty((batch, channels, height + 2 * PADDING, width + 2 * PADDING))
    padded.copy_(fill.to(images).view(1, channels, 1, 1).expand_as(padded))
    padded[:, :, PADDING : PADDING + height, PADDING : PADDING + width] = images
    # Each image's source rows and columns in the padded frame: (B, H) and (B, W); a flip
    # reads the columns right to left.
    rows = offsets[:, :1] + torch.arange(height, device=images.device)
    columns = offsets[:, 1:] + torch.arange(width, device=images.device)
    columns = torch.where(flips[:, None], columns.flip(1), columns)
    return padded[
        torch.arange(batch, device=images.device)[:, None, None, None],
        torch.arange(channels, device=images.device)[None, :, None, None],
        rows[:, None, :, None],
        columns[:, None, None, :],
    ]


# ---------------------------------------------------------------------------- the run


def train(config: TrainConfig, force: bool = False) -> Path:
    """Train (or resume, or report as complete) the run in `config.output`; return final.pt.

    Raises ConfigError, before touching the folder, when it holds a run with another config
    or foreign training files (unless `force`, which starts over), and the usual
    Data/Checkpoint/ConfigErrors for missing data, unknown models and bad initial weights.
    """
    training = config.training
    out = config.output
    committed = _committed_state(config, force)
    if committed is not None and committed["epoch"] == training.epochs:
        print(
            f"lsurf: training in {out} is already complete ({training.epochs} epochs); "
            f"trained weights: {out / FINAL_FILE} (--force trains again)",
            file=sys.stderr,
            flush=True,
        )
        return out / FINAL_FILE

    # Everything that can fail on bad input happens before the folder is touched.
    device = pick_device(config.evaluation.device)
    memory_format = (
        torch.channels_last if config.evaluation.channels_last else torch.contiguous_format
    )
    train_split, test_split = _load_splits(config, device, memory_format)
    model = _build_model(config).to(device=device, memory_format=memory_format)
    optimizer = _build_optimizer(model, training)
    # fp32 means fp32 (PyTorch lets cuDNN use TF32 by default); tf32 is an explicit opt-in.
    precision = config.evaluation.precision
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"

    if committed is None:
        # A fresh start: --force, or a run of this config that never committed epoch 0.
        _remove_training_files(out)
        out.mkdir(parents=True, exist_ok=True)
        _write_atomically(out / CONFIG_FILE, lambda handle: handle.write(to_yaml(config).encode()))
        rows: list[dict[str, float]] = []
        _save_weights(out / "model_0.pt", model, 0)
        _commit(out, model, optimizer, 0, rows)
        first = 1
    else:
        try:
            model.load_state_dict(committed["state_dict"])
            optimizer.load_state_dict(committed["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            # The model's code changed since the run started (a renamed or reshaped layer).
            raise CheckpointError(
                f"{out / RESUME_FILE} does not fit {config.model.name} as it is built now "
                f"({type(error).__name__}); rerun with --force to start over"
            ) from error
        rows = committed["rows"]
        _discard_uncommitted(out, committed["epoch"], rows)
        first = committed["epoch"] + 1
    print(
        f"lsurf: training {config.model.name} on {device.type}, epochs {first}-{training.epochs} "
        f"of {training.epochs}, into {out}",
        file=sys.stderr,
        flush=True,
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
        print(_describe_epoch(row, training.epochs), file=sys.stderr, flush=True)

        # Commit order: the epoch's files first, resume.pt last. A crash in between leaves
        # files the next run discards and redoes; resume.pt never runs ahead of them.
        if epoch % training.save_every == 0 or epoch == training.epochs:
            _save_weights(out / f"model_{epoch}.pt", model, epoch)
        if epoch == training.epochs:
            _save_weights(out / FINAL_FILE, model, epoch)
        _write_log(out / LOG_FILE, rows)
        _commit(out, model, optimizer, epoch, rows)

    print(
        f"lsurf: trajectory (model_*.pt), log.csv and config.yaml in {out}; "
        f"trained weights: {out / FINAL_FILE}",
        file=sys.stderr,
        flush=True,
    )
    return out / FINAL_FILE


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
    device = split.images.device
    # Sums stay on the device: one host sync per epoch, not per batch.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    size = len(split)
    for start in range(0, size, batch_size):
        stop = min(start + batch_size, size)
        if stop - start == 1:
            # BatchNorm cannot normalize a single example in training mode; skip a last
            # batch of one (the split has at least two examples, see _load_splits).
            break
        picked = draw.order[start:stop]
        images = split.images[picked]
        if fill is not None:
            images = augment(images, draw.offsets[start:stop], draw.flips[start:stop], fill)
        images = images.contiguous(memory_format=memory_format)
        labels = split.labels[picked]
        with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach().double() * (stop - start)
        correct += (logits.argmax(dim=1) == labels).sum()
        seen += stop - start
    return loss_sum.item() / seen, 100.0 * correct.item() / seen


def _describe_epoch(row: dict[str, float], epochs: int) -> str:
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

    def load(name: str) -> Split:
        return load_split(
            data.root, name, data.mean, data.std, data.subset, data.subset_seed, data.download
        )

    train_split = load("train")
    if len(train_split) < 2:
        raise ConfigError("training needs at least 2 training examples; raise data.subset")
    # Training batches are gathered (and augmented) into new tensors, so the split stays in
    # the default layout; the test split is read in slices, so it gets the model's layout.
    train_split = Split(train_split.images.to(device), train_split.labels.to(device))
    test_split = None
    if "test" in data.splits:
        test = load("test")
        test_split = Split(
            test.images.to(device).contiguous(memory_format=memory_format),
            test.labels.to(device),
        )
    return train_split, test_split


def _build_model(config: TrainConfig) -> nn.Module:
    """A registry model initialized from training.seed (or from model.checkpoint)."""
    # Forked, so seeding here leaves the caller's global generator where it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.training.seed)
        model = models.build(config.model.name, config.model.num_classes)
    if config.model.checkpoint is not None:
        checkpoint.load_weights(model, config.model.checkpoint)
    return model


def _build_optimizer(model: nn.Module, training: TrainingConfig) -> torch.optim.Optimizer:
    if training.optimizer == "adam":
        return torch.optim.Adam(
            model.parameters(), lr=training.lr, weight_decay=training.weight_decay
        )
    return torch.optim.SGD(
        model.parameters(),
        lr=training.lr,
        momentum=training.momentum,
        nesterov=training.nesterov,
        weight_decay=training.weight_decay,
    )


# ---------------------------------------------------------------------------- the folder


def _committed_state(config: TrainConfig, force: bool) -> dict[str, Any] | None:
    """resume.pt of the run in config.output when that run has this config; None when the
    folder holds no run yet or `force` starts over. Raises ConfigError for a run with another
    config or files that are not a resumable run."""
    out = config.output
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} is a file, not a folder; set output to a folder")
    if force or not out.exists():
        return None
    config_file = out / CONFIG_FILE
    if not config_file.is_file():
        leftovers = _training_files(out)
        if leftovers:
            raise ConfigError(
                f"{out} holds {leftovers[0].name} but no {CONFIG_FILE}, so it is not a run "
                "lsurf can resume; rerun with --force to replace it, or set another output"
            )
        return None
    try:
        old = yaml.safe_load(config_file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        old = None
    if not isinstance(old, dict):
        raise ConfigError(f"{config_file} is unreadable; rerun with --force to start over")
    # Compare as the file stores it (a YAML round trip), so tuples, paths and floats agree.
    changed = differences(old, yaml.safe_load(to_yaml(config)))
    if changed:
        raise ConfigError(
            f"{out} holds a training run with a different config (differs in "
            f"{', '.join(changed)}); rerun with --force to start over, or set another output"
        )
    if not (out / RESUME_FILE).is_file():
        return None  # stopped before epoch 0 was committed: start afresh
    return _read_resume(out / RESUME_FILE)


def _read_resume(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means the same: the file is bad
        raise CheckpointError(
            f"{path} is unreadable ({type(error).__name__}); rerun with --force to start over"
        ) from error
    needed = ("state_dict", "optimizer", "epoch", "rows")
    if not isinstance(state, dict) or any(key not in state for key in needed):
        raise CheckpointError(f"{path} is not an lsurf resume file; rerun with --force")
    return state


def _is_training_file(name: str) -> bool:
    """Whether `name` is one of the files a training run writes (nothing else is touched)."""
    names = (CONFIG_FILE, LOG_FILE, FINAL_FILE, RESUME_FILE)
    return name in names or _TRAJECTORY_FILE.fullmatch(name) is not None


def _training_files(out: Path) -> list[Path]:
    return sorted(path for path in out.iterdir() if path.is_file() and _is_training_file(path.name))


def _remove_training_files(out: Path) -> None:
    # Only the run's own files: the folder may hold surfaces computed from it.
    if out.is_dir():
        for path in _training_files(out):
            path.unlink()
        _remove_temporaries(out)


def _remove_temporaries(out: Path) -> None:
    for path in out.iterdir():
        match = _TEMPORARY_FILE.fullmatch(path.name)
        if match is not None and _is_training_file(match.group(1)) and path.is_file():
            path.unlink()


def _discard_uncommitted(out: Path, epoch: int, rows: list[dict[str, float]]) -> None:
    """Remove what a crashed epoch after `epoch` wrote, and rewrite log.csv from `rows`."""
    for path in out.iterdir():
        match = _TRAJECTORY_FILE.fullmatch(path.name)
        if match is not None and int(match.group(1)) > epoch:
            path.unlink()
    (out / FINAL_FILE).unlink(missing_ok=True)  # written only with the last epoch
    _remove_temporaries(out)
    if rows:
        _write_log(out / LOG_FILE, rows)
    else:
        (out / LOG_FILE).unlink(missing_ok=True)


def _save_weights(path: Path, model: nn.Module, epoch: int) -> None:
    # CPU tensors in the default layout: files that load anywhere and flatten with .view.
    checkpoint.save_checkpoint(path, _cpu_copy(model.state_dict()), epoch=epoch)


def _commit(
    out: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    rows: list[dict[str, float]],
) -> None:
    """Write resume.pt: everything a rerun needs to continue after `epoch`."""
    state = {
        "state_dict": _cpu_copy(model.state_dict()),
        "optimizer": _cpu_copy(optimizer.state_dict()),
        "epoch": epoch,
        "rows": rows,
    }
    _write_atomically(out / RESUME_FILE, lambda handle: torch.save(state, handle))


def _cpu_copy(value: Any) -> Any:
    """`value` with every tensor as a contiguous CPU tensor (plain containers kept)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu").contiguous()
    if isinstance(value, dict):
        return {key: _cpu_copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cpu_copy(item) for item in value)
    return value


def _write_log(path: Path, rows: list[dict[str, float]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write_atomically(path, lambda handle: handle.write(text.getvalue().encode()))


def _write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Replace `path` by what `write` puts in a file: the old or the new file, never half.

    The same scheme as `checkpoint.save_checkpoint`: a unique temporary name in the same
    folder (a rename is atomic only within one file system), fsync, rename, fsync the folder.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # some file systems cannot fsync a folder
        descriptor = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
