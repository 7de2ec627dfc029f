"""Named views of a model's weights: which tensors a direction moves, copies, and digests.

Input: an nn.Module. Output: ordered dicts keyed by state_dict key. Random and PCA directions
move the parameters only; an interpolation between two checkpoints also moves the floating
BN buffers (running mean/var), whose values differ between the two models. Integer buffers
(BN's num_batches_tracked) never move.

A `ParamsSelection` (include/exclude globs, fnmatch-style and case-sensitive) narrows them by
name (`select`): a tensor is selected when one of its names matches an include glob and none
matches an exclude glob. A tied parameter (one tensor under two names, e.g. a GPT's
`lm_head.weight` and `wte.weight`) is one movable tensor, keyed by its first name, and all
its names are matched, so it moves once; a floating buffer is matched by its state_dict key.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from lsurf.config import ParamsSelection
from lsurf.errors import ConfigError


def movable(
    model: nn.Module, include_buffers: bool, selection: ParamsSelection | None = None
) -> dict[str, torch.Tensor]:
    """The model's own tensors (live, not copies) that a direction may move, in state_dict
    order; only those `selection` picks by name, when given."""
    state = model.state_dict(keep_vars=True)
    names = {name for name, _ in model.named_parameters()}
    if include_buffers:
        names |= {name for name, buffer in model.named_buffers() if buffer.is_floating_point()}
    tensors = {key: tensor for key, tensor in state.items() if key in names}
    if selection is None or selection.everything:
        return tensors
    chosen = select(model, selection, include_buffers).keys
    return {key: tensor for key, tensor in tensors.items() if key in chosen}


def aliases(model: nn.Module, include_buffers: bool) -> dict[str, tuple[str, ...]]:
    """Every name of each movable tensor, keyed as `movable` keys it (the first name)."""
    first: dict[int, str] = {}
    names: dict[str, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        key = first.setdefault(id(parameter), name)
        names.setdefault(key, []).append(name)
    keys = movable(model, include_buffers)
    return {key: tuple(names.get(key, [key])) for key in keys}


@dataclass(frozen=True)
class Selected:
    """What a `ParamsSelection` picked of a model's movable tensors."""

    selection: ParamsSelection
    keys: tuple[str, ...]  # the selected tensors' keys, in state_dict order
    tensors: int  # how many movable tensors there are in all
    values: int  # entries of the selected tensors
    note: str | None  # a remark for the log (every selected parameter frozen), if any

    def report(self) -> list[str]:
        """The lines `--plan` and the sweep's log show (lsurf.config.ParamsSelection.report),
        and the note, if any."""
        lines = self.selection.report(len(self.keys), self.values, self.tensors, self.keys)
        return lines + ([self.note] if self.note else [])


def select(
    model: nn.Module,
    selection: ParamsSelection,
    include_buffers: bool = False,
    key: str = "directions.params",
) -> Selected:
    """The tensors `selection` picks, or a ConfigError naming a glob that matches no name
    (with the closest names) or saying that include minus exclude leaves nothing."""
    every = aliases(model, include_buffers)
    all_names = [name for names in every.values() for name in names]
    for which in ("include", "exclude"):
        for glob in getattr(selection, which):
            if not fnmatch.filter(all_names, glob):
                raise ConfigError(
                    f"{key}.{which} glob {glob!r} matches no parameter name; closest: "
                    f"{', '.join(_closest(glob, all_names))}"
                )

    def matches(name: str, globs: tuple[str, ...]) -> bool:
        return any(fnmatch.fnmatchcase(name, glob) for glob in globs)

    chosen = tuple(
        tensor_key
        for tensor_key, names in every.items()
        if any(matches(name, selection.include) for name in names)
        and not any(matches(name, selection.exclude) for name in names)
    )
    if not chosen:
        raise ConfigError(
            f"{key}: every tensor that include {list(selection.include)} matches is excluded "
            f"by {list(selection.exclude)}; nothing would move: narrow exclude"
        )
    tensors = movable(model, include_buffers)
    parameters = {id(parameter) for parameter in model.parameters()}
    picked = [tensors[name] for name in chosen if id(tensors[name]) in parameters]
    note = None
    if (
        picked
        and not any(t.requires_grad for t in picked)
        and any(t.requires_grad for t in model.parameters())
    ):
        note = (
            f"note: every parameter {key} selects is frozen (requires_grad False) while "
            "others are trainable; for a LoRA fine-tune select the adapters"
        )
    values = sum(tensors[name].numel() for name in chosen)
    return Selected(selection, chosen, len(tensors), values, note)


def _closest(glob: str, names: list[str]) -> list[str]:
    """The names nearest `glob` (difflib), or the first few when none is near."""
    bare = glob.strip("*?[]")
    close = difflib.get_close_matches(bare, names, n=3, cutoff=0.3)
    return close or names[:3]


def snapshot(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached copies of `tensors` (θ*), independent of later in-place moves."""
    return {key: tensor.detach().clone() for key, tensor in tensors.items()}


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over keys, shapes, dtypes and values: equal tensors give equal digests anywhere."""
    hasher = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].detach().to("cpu").contiguous()
        hasher.update(f"{key}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        hasher.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def count(tensors: dict[str, torch.Tensor]) -> int:
    return sum(tensor.numel() for tensor in tensors.values())
