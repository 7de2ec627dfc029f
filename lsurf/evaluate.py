"""Evaluating one grid point: move the model to θ* + a·d1 + b·d2 in place, measure loss/accuracy.

Input: a model already holding θ*, the directions, the cached data splits and a device.
Output: for each split, the mean cross-entropy and the accuracy in percent at (a, b).
No I/O and no MPI here: the same evaluator serves the serial sweep and every MPI worker.

The model is never deep-copied: θ* and the directions live once on the device and each point
writes θ* + a·d1 + b·d2 straight into the model's tensors (θ* itself, bit for bit, at (0, 0)).
For an interpolation the point is lerp(θ1, θ2, a), which is exactly θ1 at a = 0 and exactly θ2
at a = 1; the BN running statistics move with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lsurf import params
from lsurf.data import Split
from lsurf.directions import Directions
from lsurf.errors import ConfigError


@dataclass(frozen=True)
class SplitResult:
    loss: float  # mean cross-entropy (inf/NaN when the perturbed model overflows)
    accuracy: float  # percent correct


def pick_device(requested: str) -> torch.device:
    """The device for `evaluation.device`: auto picks CUDA when present."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "evaluation.device is cuda but this machine has no usable CUDA device; "
            "set evaluation.device: auto (or cpu)"
        )
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


class Evaluator:
    """Holds θ*, the directions and the data on one device; evaluates points by coordinates."""

    def __init__(
        self,
        model: nn.Module,
        directions: Directions,
        splits: dict[str, Split],
        batch_size: int,
        device: torch.device,
        channels_last: bool = True,
        precision: str = "fp32",
        end: dict[str, torch.Tensor] | None = None,
    ) -> None:
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(device=device, memory_format=memory_format).eval()
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        # PyTorch lets cuDNN convolutions use TF32 by default on Ampere and newer GPUs, which
        # keeps 10 mantissa bits: enough to blur the small perturbations of a fine grid.
        # fp32 means fp32 here; TF32 is an explicit opt-in (evaluation.precision: tf32).
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        # The same point must give the same bits on every rank (and serially): cuDNN may only
        # use its deterministic algorithms, chosen the same way in every process (no autotuning).
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        # The live tensors the directions move, and θ* (the checkpoint's values) beside them.
        self.live = params.movable(self.model, include_buffers=directions.kind == "target")
        self.origin = params.snapshot(self.live)
        self.x = {key: directions.x[key].to(device) for key in self.live}
        self.y = (
            None if directions.y is None else {k: directions.y[k].to(device) for k in self.live}
        )
        self.end = None if end is None else {k: end[k].to(device, torch.float32) for k in self.live}
        # Each split once on the device, already in the layout the convolutions want.
        self.splits = {
            name: Split(
                split.images.to(device).contiguous(memory_format=memory_format),
                split.labels.to(device),
            )
            for name, split in splits.items()
        }

    @torch.inference_mode()
    def move_to(self, a: float, b: float) -> None:
        """Write θ* + a·d1 + b·d2 (or lerp(θ1, θ2, a)) into the model's tensors."""
        for key, tensor in self.live.items():
            if self.end is not None:
                torch.lerp(self.origin[key], self.end[key], a, out=tensor)
                continue
            torch.add(self.origin[key], self.x[key], alpha=a, out=tensor)
            if self.y is not None:
                tensor.add_(self.y[key], alpha=b)

    def evaluate(self, a: float, b: float) -> dict[str, SplitResult]:
        self.move_to(a, b)
        return {
            name: measure(self.model, split, self.batch_size, self.device.type, self.precision)
            for name, split in self.splits.items()
        }


@torch.inference_mode()
def measure(
    model: nn.Module, split: Split, batch_size: int, device_type: str, precision: str = "fp32"
) -> SplitResult:
    """Mean cross-entropy and accuracy of `model` (in its current mode) on a cached split."""
    # Sums stay on the device until the end: one host sync per split, not per batch.
    loss_sums, correct_counts = [], []
    for start in range(0, len(split), batch_size):
        images = split.images[start : start + batch_size]
        labels = split.labels[start : start + batch_size]
        with torch.autocast(device_type, torch.bfloat16, enabled=precision == "bf16"):
            logits = model(images)
        logits = logits.float()
        loss_sums.append(F.cross_entropy(logits, labels, reduction="sum").double())
        correct_counts.append((logits.argmax(dim=1) == labels).sum())
    loss = torch.stack(loss_sums).sum().item() / len(split)
    correct = int(torch.stack(correct_counts).sum().item())
    return SplitResult(loss=loss, accuracy=100.0 * correct / len(split))
