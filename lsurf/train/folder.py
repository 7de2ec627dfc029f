"""A training run's folder on disk: its files, written so that any crash leaves a resumable run.

Owns the files `lsurf train` writes in `config.output`, and only those (the folder may also
hold surfaces computed from the run, which are never touched):
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

The training of a curve's bend (`lsurf.train.curve`) is a run of the same kind in a folder of
its own: its config.yaml holds what it trains (settings given as a plain dict), its weights
after the last epoch are `bend.pt` instead of final.pt, and it writes no trajectory.

Every file is replaced atomically (lsurf.atomic: written beside its place, then renamed). The caller
writes `resume.pt` (`commit`) last in each epoch, so it is the commit point: after kill -9
at any moment, `committed_state` reads it back and `discard_uncommitted` removes the files
of the epoch that did not commit and rewrites log.csv from the committed rows.

Input: the output folder, a `TrainConfig` (or a run's settings), the model, optimizer and log
rows to store. Output: the files above; `committed_state` (`committed_run`) returns resume.pt's
{'state_dict', 'optimizer', 'epoch', 'rows'}, or None where there is nothing to resume.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from lsurf import checkpoint
from lsurf.atomic import temporary_target, write_atomically
from lsurf.config import TrainConfig
from lsurf.errors import CheckpointError, ConfigError
from lsurf.schema import differences, to_plain, to_yaml

CONFIG_FILE = "config.yaml"
LOG_FILE = "log.csv"
FINAL_FILE = "final.pt"
BEND_FILE = "bend.pt"  # a curve run's final weights (lsurf.train.curve)
RESUME_FILE = "resume.pt"
# Written only with a run's last epoch, so a resumed run removes them.
_LAST_EPOCH_FILES = (FINAL_FILE, BEND_FILE)
_TRAJECTORY_FILE = re.compile(r"model_(\d+)\.pt")


def trajectory_file(out: Path, epoch: int) -> Path:
    """Where the weights after `epoch` go in the run folder `out` (epoch 0: the initial ones)."""
    return out / f"model_{epoch}.pt"


def committed_state(config: TrainConfig, force: bool) -> dict[str, Any] | None:
    """resume.pt of the run in config.output when that run has this config; None when the
    folder holds no run yet or `force` starts over. Raises ConfigError for a run with another
    config or files that are not a resumable run."""
    return committed_run(config.output, to_plain(config), force)


def committed_run(out: Path, settings: dict[str, Any], force: bool) -> dict[str, Any] | None:
    """`committed_state` for a run described by `settings`, the plain dict its config.yaml
    holds (`write_settings`)."""
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
    changed = differences(old, yaml.safe_load(to_yaml(settings)))
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
    names = (CONFIG_FILE, LOG_FILE, RESUME_FILE, *_LAST_EPOCH_FILES)
    return name in names or _TRAJECTORY_FILE.fullmatch(name) is not None


def _training_files(out: Path) -> list[Path]:
    return sorted(path for path in out.iterdir() if path.is_file() and _is_training_file(path.name))


def remove_training_files(out: Path) -> None:
    # Only the run's own files: the folder may hold surfaces computed from it.
    if out.is_dir():
        for path in _training_files(out):
            path.unlink()
        _remove_temporaries(out)


def _remove_temporaries(out: Path) -> None:
    # What an atomic write killed between open and rename left (lsurf.atomic's naming).
    for path in out.iterdir():
        target = temporary_target(path.name)
        if target is not None and _is_training_file(target) and path.is_file():
            path.unlink()


def resume_committed(
    out: Path,
    committed: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    what: str,
) -> tuple[int, list[dict[str, float]]]:
    """Load a committed epoch's state into `model` and `optimizer`, drop the files of the
    epoch that did not commit, and return (the next epoch, the log rows so far). A state
    that no longer fits (`what`, the model as it is built now: a renamed or reshaped layer)
    is one CheckpointError line."""
    try:
        model.load_state_dict(committed["state_dict"])
        optimizer.load_state_dict(committed["optimizer"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{out / RESUME_FILE} does not fit {what} as it is built now "
            f"({type(error).__name__}); rerun with --force to start over"
        ) from error
    rows = committed["rows"]
    discard_uncommitted(out, committed["epoch"], rows)
    return committed["epoch"] + 1, rows


def discard_uncommitted(out: Path, epoch: int, rows: list[dict[str, float]]) -> None:
    """Remove what a crashed epoch after `epoch` wrote, and rewrite log.csv from `rows`."""
    for path in out.iterdir():
        match = _TRAJECTORY_FILE.fullmatch(path.name)
        if match is not None and int(match.group(1)) > epoch:
            path.unlink()
    for name in _LAST_EPOCH_FILES:
        (out / name).unlink(missing_ok=True)
    _remove_temporaries(out)
    if rows:
        write_log(out / LOG_FILE, rows)
    else:
        (out / LOG_FILE).unlink(missing_ok=True)


def write_config(out: Path, config: TrainConfig) -> None:
    """Write config.yaml: the resolved config, which a rerun must match."""
    write_settings(out, to_plain(config))


def write_settings(out: Path, settings: dict[str, Any]) -> None:
    """Write config.yaml from a run's settings (plain data), which a rerun must match."""
    text = to_yaml(settings)
    write_atomically(out / CONFIG_FILE, lambda handle: handle.write(text.encode()))


def save_weights(path: Path, model: nn.Module, epoch: int, **extra: object) -> None:
    """A checkpoint of the model's state dict, with `extra` plain entries beside it."""
    # CPU tensors in the default layout: files that load anywhere and flatten with .view.
    checkpoint.save_checkpoint(path, _cpu_copy(model.state_dict()), epoch=epoch, **extra)


def commit(
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
    write_atomically(out / RESUME_FILE, lambda handle: torch.save(state, handle))


def _cpu_copy(value: Any) -> Any:
    """`value` with every tensor as a contiguous CPU tensor (plain containers kept)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu").contiguous()
    if isinstance(value, dict):
        return {key: _cpu_copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cpu_copy(item) for item in value)
    return value


def write_log(path: Path, rows: list[dict[str, float]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, lambda handle: handle.write(text.getvalue().encode()))
