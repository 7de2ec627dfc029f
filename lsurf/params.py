"""Named views of a model's weights: which tensors a direction moves, copies, and digests.

Input: an nn.Module. Output: ordered dicts keyed by state_dict key. Random and PCA directions
move the parameters only; an interpolation between two checkpoints also moves the floating
BN buffers (running mean/var), whose values differ between the two models. Integer buffers
(BN's num_batches_tracked) never move.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def movable(model: nn.Module, include_buffers: bool) -> dict[str, torch.Tensor]:
    """The model's own tensors (live, not copies) that a direction may move, in state_dict order."""
    state = model.state_dict(keep_vars=True)
    names = {name for name, _ in model.named_parameters()}
    if include_buffers:
        names |= {name for name, buffer in model.named_buffers() if buffer.is_floating_point()}
    return {key: tensor for key, tensor in state.items() if key in names}


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
