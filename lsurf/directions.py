"""Directions in weight space: seeded random ones with their normalizations, and the target.

Input: θ* (named weight tensors) and the direction settings. Output: a `Directions` value
holding d1 (and d2 for a plane) as named float32 tensors. Pure functions: no files, no MPI.

The math (see DESIGN.md): entries of a random direction ~ N(0, 1) from a seeded generator,
drawn for every parameter in state_dict order (x first, then y), so the stream does not
depend on the normalization. Then, per tensor W with direction D:
- filter: each slice D[i] along dim 0 is rescaled to ‖W[i]‖ (Frobenius norms, +1e-10);
- layer: D rescaled to ‖W‖; weight: D ⊙ W; dfilter/dlayer: unit norm per filter/tensor;
- tensors with ≤ 1 dimension (biases, BN γ/β): 0 with ignore=biasbn, else D = W (the
  reference's rule, kept so surfaces are comparable with it).
A target direction is θ2 − θ1 over the parameters and floating buffers, unnormalized.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from lsurf import params
from lsurf.files.trajectory import Runs, Trajectory

EPSILON = 1e-10


@dataclass(frozen=True)
class Directions:
    kind: str  # the name of its kind (lsurf.kinds)
    norm: str
    ignore: str
    seed: int
    x: dict[str, torch.Tensor]  # d1, keyed by state_dict key, float32
    y: dict[str, torch.Tensor] | None  # d2 for a 2D surface
    trajectory: Trajectory | None = None  # pca: the training run's path on the plane
    runs: Runs | None = None  # directions.trajectories: several runs' paths on the plane
    # What the evaluator needs, whatever the kind: whether BN running statistics move with
    # the point, and the end point of an interpolation (the point is then lerp(θ*, end, a),
    # exact at both ends). Neither is part of the digest: they come with the kind's inputs.
    moves_buffers: bool = False
    end: dict[str, torch.Tensor] | None = None
    # A plane through three checkpoints: the point is (1 − a − b)·θ* + a·end + b·y_end.
    y_end: dict[str, torch.Tensor] | None = None
    eigenvalues: tuple[float, ...] = ()  # kind hessian: the Hessian's eigenvalue along d1 (, d2)

    def digest(self) -> str:
        tensors = {f"x/{key}": value for key, value in self.x.items()}
        if self.y is not None:
            tensors |= {f"y/{key}": value for key, value in self.y.items()}
        settings = f"{self.kind}|{self.norm}|{self.ignore}|{self.seed}|{params.digest(tensors)}"
        return hashlib.sha256(settings.encode()).hexdigest()


def normalize(
    direction: torch.Tensor, weight: torch.Tensor, norm: str, ignore: str
) -> torch.Tensor:
    """The normalized copy of `direction` for parameter `weight` (see the module docstring)."""
    if direction.dim() <= 1:
        return torch.zeros_like(direction) if ignore == "biasbn" else weight.detach().clone()
    if norm == "none":
        return direction.clone()
    if norm == "weight":
        return direction * weight
    if norm in ("layer", "dlayer"):
        target = weight.norm() if norm == "layer" else 1.0
        return direction * (target / (direction.norm() + EPSILON))
    if norm in ("filter", "dfilter"):
        rows = direction.reshape(direction.shape[0], -1)
        row_norms = rows.norm(dim=1, keepdim=True)
        if norm == "filter":
            target = weight.detach().reshape(weight.shape[0], -1).norm(dim=1, keepdim=True)
        else:
            target = torch.ones_like(row_norms)
        return (rows * (target / (row_norms + EPSILON))).reshape(direction.shape)
    raise ValueError(f"unknown normalization {norm!r}")  # the config validates it


def random_direction(
    weights: dict[str, torch.Tensor], generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """One Gaussian direction shaped like `weights`, drawn on the CPU in key order."""
    return {
        key: torch.randn(tuple(weight.shape), generator=generator, dtype=torch.float32)
        for key, weight in weights.items()
    }


def random_directions(
    weights: dict[str, torch.Tensor],
    norm: str,
    ignore: str,
    seed: int,
    plane: bool,
    *,
    y_norm: str | None = None,
    y_ignore: str | None = None,
    same_dir: bool = False,
    buffers: dict[str, torch.Tensor] | None = None,
) -> Directions:
    """d1 (and d2 when `plane`) for the parameters `weights`, normalized against them.

    `y_norm`/`y_ignore` normalize d2 differently (None: as d1); `same_dir` makes d2 = d1.
    `buffers` (BN running statistics: the reference's --dir_type states) get directions too,
    drawn after every parameter's, so the parameters' stream is the same with or without
    them; being 1-D they follow the rule for such tensors (0 under biasbn, else their value).
    """
    cpu_weights = {key: weight.detach().to("cpu", torch.float32) for key, weight in weights.items()}
    cpu_buffers = {
        key: buffer.detach().to("cpu", torch.float32) for key, buffer in (buffers or {}).items()
    }
    generator = torch.Generator().manual_seed(seed)
    count = 2 if plane and not same_dir else 1
    drawn = [random_direction(cpu_weights, generator) for _ in range(count)]
    drawn_buffers = [random_direction(cpu_buffers, generator) for _ in range(count)]
    values = cpu_weights | cpu_buffers
    rules = [(norm, ignore), (y_norm or norm, y_ignore or ignore)]
    normalized = [
        {
            key: normalize(draw[key] if key in draw else buffer_draw[key], values[key], *rule)
            for key in values
        }
        for draw, buffer_draw, rule in zip(drawn, drawn_buffers, rules, strict=False)
    ]
    y = None if not plane else normalized[0] if same_dir else normalized[1]
    return Directions(kind="random", norm=norm, ignore=ignore, seed=seed, x=normalized[0], y=y)


def target_direction(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor]) -> Directions:
    """θ2 − θ1 for every tensor in `start` (parameters and floating buffers)."""
    difference = {
        key: (end[key].detach().to("cpu", torch.float32) - value.detach().to("cpu", torch.float32))
        for key, value in start.items()
    }
    return Directions(
        kind="target",
        norm="none",
        ignore="none",
        seed=0,
        x=difference,
        y=None,
        moves_buffers=True,
        end={key: end[key].detach().to("cpu", torch.float32) for key in start},
    )
