"""Reading and writing model checkpoints, safely.

Owns the checkpoint file: finding the state dict inside whatever layout a trainer wrote,
loading it into a registry model with one clear error when it does not fit, writing
checkpoints atomically (a weight-matched one with a record of how it was made), and hashing
checkpoint files (the surface file records the hash so a resumed sweep can tell that the
weights did not change).

A checkpoint is untrusted input: it is always read with `torch.load(weights_only=True)`,
which rebuilds tensors and plain containers but never runs pickled code.

Layouts read (all seen in the wild):
- a raw state dict `{name: tensor}`;
- `{'state_dict': ..., ...}`: akamaster/pytorch_resnet_cifar10 (plus 'best_prec1', 'epoch'),
  tomgoldstein/loss-landscape's cifar10/main.py (plus 'acc', 'epoch'), and lsurf itself;
- `{'model': ..., ...}`: common in other trainers.
Keys saved from `nn.DataParallel` / DDP carry a leading 'module.', which is stripped.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from lsurf import models
from lsurf.atomic import write_atomically
from lsurf.errors import CheckpointError

if TYPE_CHECKING:
    from lsurf.align import Alignment

# Keys under which trainers nest the state dict, in the order they are tried.
_NESTED_KEYS = ("state_dict", "model")
_PARALLEL_PREFIX = "module."
# BatchNorm's batch counter, added in torch 0.4.1: checkpoints saved before (akamaster's
# pretrained models) lack it, and evaluation never reads it.
_BATCH_COUNTER = "num_batches_tracked"
# How many names of each kind of mismatch the error message lists before "and N more".
_LISTED_PER_KIND = 8
_SAVE_HINT = "torch.save({'state_dict': model.state_dict()}, path)"


def read_state_dict(path: Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Return the state dict stored in the checkpoint at `path`, keys without 'module.'.

    With `mmap`, tensors are memory-mapped from the file (read from disk only where touched,
    as PCA over hundreds of checkpoints needs); files in torch's old format load normally.
    Raises CheckpointError when the file is missing, is not a PyTorch checkpoint, holds
    pickled objects other than tensors and plain containers, or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise CheckpointError(
            f"checkpoint {path} {what}; set model.checkpoint to a checkpoint file"
        )
    loaded = _load_untrusted(path, mmap)
    state = _find_state_dict(loaded, path)
    return _as_tensor_dict(state, path)


def _load_untrusted(path: Path, mmap: bool = False) -> object:
    if mmap and zipfile.is_zipfile(path):  # only torch's zip format can be memory-mapped
        return _load_untrusted_as(path, mmap=True)
    return _load_untrusted_as(path, mmap=False)


def _load_untrusted_as(path: Path, mmap: bool) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error.strerror}") from error
    except pickle.UnpicklingError as error:
        # weights_only refuses any pickled global outside its allowlist (a custom class, a
        # function); torch's message names it as "GLOBAL module.name". Without such a name
        # the pickle stream itself was not one torch.save writes.
        refused = re.search(r"GLOBAL (\S+)", str(error))
        if refused is None:
            raise CheckpointError(
                f"checkpoint {path} is not a PyTorch checkpoint that torch.save wrote"
            ) from error
        raise CheckpointError(
            f"checkpoint {path} holds non-tensor objects ({refused.group(1)}), which lsurf "
            f"refuses to unpickle because that could run code; if you trust it, re-save "
            f"the weights alone with {_SAVE_HINT}"
        ) from error
    except Exception as error:
        # A corrupt or foreign file makes torch.load fail in many ways (EOFError for an empty
        # file, RuntimeError for a truncated zip, KeyError for random bytes, ...). Whatever
        # it raises, the cause is the file, so it becomes one user-facing line.
        raise CheckpointError(
            f"checkpoint {path} is not a readable PyTorch checkpoint ({_first_sentence(error)})"
        ) from error


def _first_sentence(error: Exception) -> str:
    # torch's messages run to several sentences and lines; the first names the problem.
    text = str(error).strip().split("\n")[0].split(". ")[0]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _find_state_dict(loaded: object, path: Path) -> Mapping[object, object]:
    if not isinstance(loaded, Mapping):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(loaded).__name__}, not a state dict; "
            f"save one with {_SAVE_HINT}"
        )
    for key in _NESTED_KEYS:
        nested = loaded.get(key)
        if isinstance(nested, Mapping):
            return nested
    return loaded


def _as_tensor_dict(state: Mapping[object, object], path: Path) -> dict[str, torch.Tensor]:
    """Check that `state` maps names to tensors; drop DataParallel's 'module.' prefix."""
    if not state:
        raise CheckpointError(f"checkpoint {path} holds an empty state dict")
    not_tensors = [
        f"{key!s} ({type(value).__name__})"
        for key, value in state.items()
        if not isinstance(key, str) or not isinstance(value, torch.Tensor)
    ]
    if not_tensors:
        raise CheckpointError(
            f"checkpoint {path} is not a state dict: entries that are not tensors: "
            f"{_listed(not_tensors)}; expected {{name: tensor}}, possibly under "
            f"'state_dict' or 'model'"
        )
    # Every value is a tensor (checked above): the test only tells the type checker so.
    tensors = {str(key): value for key, value in state.items() if isinstance(value, torch.Tensor)}
    # Strip only when every key has the prefix (as DataParallel writes them), so that a
    # model with a submodule genuinely called "module" keeps its names.
    if all(key.startswith(_PARALLEL_PREFIX) for key in tensors):
        return {key[len(_PARALLEL_PREFIX) :]: value for key, value in tensors.items()}
    return tensors


def load_weights(model: nn.Module, path: Path) -> None:
    """Load the checkpoint at `path` into `model`, requiring an exact fit.

    Every key and shape must match; the only tolerated gap is BatchNorm's
    `num_batches_tracked` missing from old checkpoints, which keeps the model's value.
    Any mismatch raises one single-line CheckpointError listing missing keys, unexpected
    keys and shape mismatches, with a hint when another registry model fits the file; so do
    weights holding NaN or inf (`require_finite`).
    """
    path = Path(path)
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = [
        key for key in expected if key not in state and not key.endswith("." + _BATCH_COUNTER)
    ]
    unexpected = [key for key in state if key not in expected]
    mis_shaped = [
        f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
        for key, value in state.items()
        if key in expected and value.shape != expected[key].shape
    ]
    if missing or unexpected or mis_shaped:
        parts = [f"checkpoint {path} does not fit the model"]
        for label, names in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mis_shaped),
        ):
            if names:
                parts.append(f"{label} ({len(names)}): {_listed(names)}")
        parts.extend(_registry_hint(state))
        raise CheckpointError("; ".join(parts))
    # The tolerated gaps: fill them with the model's own values so the strict load passes.
    complete = dict(state)
    for key, value in expected.items():
        complete.setdefault(key, value)
    model.load_state_dict(complete, strict=True)
    require_finite(model, f"checkpoint {path}")


def require_finite(model: nn.Module, source: str) -> None:
    """Refuse weights holding NaN or inf, naming the first tensor that does.

    A diverged run's checkpoint is worth a look, but not through its weights once they are
    NaN: the model's outputs are NaN whatever the inputs, so every loss is NaN, at θ* and at
    every point of a surface (NaN·0 is NaN: no direction moves a point off it, and filter
    normalization spreads the NaN to the directions themselves), while accuracy sits at a
    constant chance value. A sweep would spend its whole cost on that; refused up front, the
    researcher picks an earlier checkpoint. Parameters may hold neither NaN nor inf; buffers
    may hold inf (an attention mask of -inf is common), never NaN.
    """
    broken: list[tuple[str, int, int]] = []  # (name, values not finite, values)
    tensors: list[tuple[str, torch.Tensor, bool]] = [
        (name, tensor, True) for name, tensor in model.named_parameters()
    ]
    tensors += [(name, tensor, False) for name, tensor in model.named_buffers()]
    for name, tensor, is_parameter in tensors:
        if not tensor.is_floating_point():
            continue
        bad = ~torch.isfinite(tensor) if is_parameter else torch.isnan(tensor)
        count = int(bad.sum())
        if count:
            broken.append((name, count, tensor.numel()))
    if not broken:
        return
    name, count, size = broken[0]
    others = len(broken) - 1
    more = f"; {others} more tensor{'s' if others > 1 else ''} too" if others else ""
    raise CheckpointError(
        f"{source} holds NaN or inf in {name} ({count:,} of its {size:,} values{more}): every "
        "loss computed with these weights would be NaN, at every point of a surface (had the "
        "training diverged when it was saved?); use an earlier checkpoint of the run"
    )


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED_PER_KIND])
    hidden = len(names) - _LISTED_PER_KIND
    return f"{shown} and {hidden} more" if hidden > 0 else shown


def _registry_hint(state: Mapping[str, torch.Tensor]) -> list[str]:
    """A question naming the registry models (at most 3) whose keys and shapes fit `state`.

    Catches the common mix-ups: the reference's 'resnet56' is lsurf's 'resnet56_b', and a
    checkpoint trained with another depth or class count.
    """
    wanted = {
        key: tuple(value.shape)
        for key, value in state.items()
        if not key.endswith("." + _BATCH_COUNTER)
    }
    # Registry models end in a `linear` (ResNets, DenseNet) or `classifier` (VGG) layer;
    # its rows give the class count.
    head = state.get("linear.weight", state.get("classifier.weight"))
    num_classes = int(head.shape[0]) if head is not None and head.dim() == 2 else 10
    num_classes = max(num_classes, 1)
    fitting: list[str] = []
    for name in models.available():
        # Built on the meta device: shapes without memory or initialization (a WRN-56-8 is
        # 54M parameters); the generator is forked anyway so a caller's seeded sequence stays
        # the same whether or not this hint ran.
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            candidate = models.build(name, num_classes)
        shapes = {
            key: tuple(value.shape)
            for key, value in candidate.state_dict().items()
            if not key.endswith("." + _BATCH_COUNTER)
        }
        if shapes == wanted:
            fitting.append(name)
        if len(fitting) == 3:
            break
    if not fitting:
        return []
    classes = "" if num_classes == 10 else f" with {num_classes} classes"
    return [f"is this a {' or '.join(repr(name) for name in fitting)} checkpoint{classes}?"]


def save_checkpoint(path: Path, state_dict: Mapping[str, torch.Tensor], **extra: object) -> None:
    """Write `{'state_dict': state_dict, **extra}` to `path` atomically.

    The file appears complete or not at all (a temporary file in the same folder is renamed
    over `path`), so a crash never leaves a half-written checkpoint. Parent folders are
    created. `extra` values must be plain Python data (None, bool, int, float, str, and
    lists/tuples/dicts of those), so `weights_only` loading accepts the file.
    """
    path = Path(path)
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict[{key!r}] is a {type(value).__name__}, not a tensor")
    for key, entry in extra.items():
        if not _is_plain(entry):
            raise TypeError(
                f"checkpoint entry {key!r} must be plain Python data, got {type(entry).__name__}"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    contents = {"state_dict": dict(state_dict), **extra}
    write_atomically(path, lambda handle: torch.save(contents, handle))


def save_aligned_checkpoint(
    path: Path, alignment: Alignment, *, reference: Path | None, source: Path | None
) -> None:
    """Write a weight-matched B (`lsurf.align.match_weights`) as an ordinary checkpoint.

    The file is the one `save_checkpoint` writes, `{'state_dict': ...}`, so `load_weights`,
    sweeps and interpolations read it like any other checkpoint; its extra entry
    'alignment' records how it was made: the method, the checkpoints of A (`reference`) and
    B (`source`) with their SHA-256 (None for states that came from no file), the seed, the
    passes and whether they converged, and each unit space's permutation (aligned unit i is
    B's unit permutations[space][i]), which `lsurf.align.permute_units` applies again.
    """
    record = {
        "method": "weight matching (Ainsworth et al. 2022)",
        "reference": None if reference is None else str(reference),
        "reference_sha256": None if reference is None else file_digest(reference),
        "source": None if source is None else str(source),
        "source_sha256": None if source is None else file_digest(source),
        "seed": alignment.seed,
        "iterations": alignment.iterations,
        "converged": alignment.converged,
        "permutations": {
            name: [int(unit) for unit in order] for name, order in alignment.permutations.items()
        },
    }
    state = {key: value.detach().cpu() for key, value in alignment.state_dict.items()}
    save_checkpoint(path, state, alignment=record)


def _is_plain(value: object) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_plain(item) for key, item in value.items())
    return False


def file_digest(path: Path) -> str:
    """Return the SHA-256 hex digest of the file at `path`, read in chunks."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError as error:
        raise CheckpointError(
            f"checkpoint {path} not found; set model.checkpoint to a checkpoint file"
        ) from error
