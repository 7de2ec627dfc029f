"""The loss: cross-entropy against label-smoothed targets, one value per example."""

from __future__ import annotations

import torch

SMOOTHING = 0.1  # the share of each target's probability spread evenly over all classes


def smoothed_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example losses (N,) of logits `outputs` (N, C) against class indices `targets` (N,).

    The target distribution is (1 - ε)·one_hot + ε/C, so the loss is
    (1 - ε)·(−log p_target) + ε·mean over classes of (−log p_c).
    """
    log_probabilities = torch.log_softmax(outputs.float(), dim=1)  # (N, C)
    true_class = -log_probabilities.gather(1, targets[:, None])[:, 0]  # (N,)
    uniform = -log_probabilities.mean(dim=1)  # (N,)
    return (1 - SMOOTHING) * true_class + SMOOTHING * uniform
