"""The loss a sweep measures, as a sum and a count per batch, so every mean is exact.

Input: `evaluation.loss` — `cross_entropy`, `mse`, or `package.module:callable(outputs,
targets)` — and, per batch, the model's outputs and the targets. Output: (sum, count) of the
batch's loss: the split's loss is Σ sums / Σ counts. A per-example loss counts examples; a
callable returning its own (sum, count) pair counts what it likes (tokens, for a language
model with padding), so the mean over the split is exact however batches fall.

- cross_entropy: outputs (B, C) logits, targets (B,) class indices; summed in fp32 per batch
  as torch computes it, accumulated in float64 across batches (bit for bit what lsurf always
  measured).
- mse: with class targets, the reference code's rule — mean over classes of
  (softmax(outputs) − one_hot(targets))²; with targets shaped like the outputs, the mean
  squared error over each example's entries.
- a callable's per-example result must have shape (B,); a scalar is refused (a mean over the
  batch cannot be recombined exactly when the last batch is shorter).

Accuracy is measured where it means something: outputs (B, C) and class-index targets (B,).
Whether a batch fits is checked once, on a probe batch, before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lsurf.errors import ConfigError
from lsurf.imports import is_import_path, resolve

BatchLoss = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | int]]


@dataclass(frozen=True)
class Loss:
    name: str  # as the config gives it
    batch: BatchLoss  # (outputs, targets) -> (float64 sum, count)


def classifies(outputs: torch.Tensor, targets: torch.Tensor) -> bool:
    """Whether accuracy means something: one score per class, one class index per example."""
    return (
        outputs.dim() == 2
        and targets.dim() == 1
        and not targets.is_floating_point()
        and not targets.is_complex()
        and targets.shape[0] == outputs.shape[0]
    )


def _cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    if not classifies(outputs, targets):
        raise ConfigError(
            f"evaluation.loss: cross_entropy needs outputs (batch, classes) and class-index "
            f"targets (batch,); got outputs {tuple(outputs.shape)} and targets "
            f"{tuple(targets.shape)} {targets.dtype}; give a loss callable for other shapes"
        )
    total = F.cross_entropy(outputs.float(), targets, reduction="sum").double()
    return total, outputs.shape[0]


def _mse(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    outputs = outputs.float()
    if classifies(outputs, targets):
        # The reference's MSE for classifiers: probabilities against one-hot labels.
        one_hot = F.one_hot(targets, outputs.shape[1]).to(outputs.dtype)
        errors = (F.softmax(outputs, dim=1) - one_hot).pow(2)
    elif targets.shape == outputs.shape and targets.is_floating_point():
        errors = (outputs - targets.to(outputs.dtype)).pow(2)
    else:
        raise ConfigError(
            f"evaluation.loss: mse needs class-index targets (batch,) with outputs (batch, "
            f"classes), or float targets shaped like the outputs {tuple(outputs.shape)}; "
            f"got targets {tuple(targets.shape)} {targets.dtype}"
        )
    per_example = errors.reshape(errors.shape[0], -1).mean(dim=1)
    return per_example.double().sum(), outputs.shape[0]


def _from_callable(name: str, function: Callable) -> BatchLoss:
    def batch(
        outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | int]:
        result = function(outputs, targets)
        if isinstance(result, (tuple, list)) and len(result) == 2:
            total, count = result
            return torch.as_tensor(total).double().reshape(()), count
        if not isinstance(result, torch.Tensor):
            raise ConfigError(
                f"evaluation.loss: {name} returned a {type(result).__name__}; return a tensor "
                "of per-example losses (batch,) or a (sum, count) pair"
            )
        if result.dim() == 0:
            raise ConfigError(
                f"evaluation.loss: {name} returned a scalar; return per-example losses of shape "
                f"({outputs.shape[0]},) (e.g. reduction='none'), or a (sum, count) pair, so the "
                "mean over the split is exact"
            )
        if tuple(result.shape) != (outputs.shape[0],):
            raise ConfigError(
                f"evaluation.loss: {name} returned shape {tuple(result.shape)}; per-example "
                f"losses must have shape ({outputs.shape[0]},), one per example of the batch"
            )
        return result.double().sum(), outputs.shape[0]

    return batch


_BUILT_IN: dict[str, BatchLoss] = {"cross_entropy": _cross_entropy, "mse": _mse}


def build_loss(name: str, function: Callable | None = None) -> Loss:
    """The loss named by `evaluation.loss`, or `function` itself (the Python API's door)."""
    if function is not None:
        return Loss(name, _from_callable(name, function))
    if is_import_path(name):
        return Loss(name, _from_callable(name, resolve(name, "evaluation.loss")))
    return Loss(name, _BUILT_IN[name])  # the config accepts only these names
