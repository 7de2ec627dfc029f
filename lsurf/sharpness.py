"""Sharpness at θ: average-case, worst-case and m-sharpness, as work units and their combination.

Input: a model holding θ, the live tensors that move (keyed by state_dict key; e.g.
lsurf.params.movable without the tensors of ≤ 1 dimension, as `ignore: biasbn` leaves biases
and BatchNorm parameters out), batches of (inputs, targets) and an lsurf `Loss`. Output: one
float per work unit (a noise draw, or an ascent on one unit of batches) and the functions that
combine units into an `Estimate` (value, standard error). A unit's random numbers come from a
CPU generator seeded by (seed, index) alone, so a queue handing units to any number of ranks
gets the serial bits. The model runs in eval mode throughout (BatchNorm on its running
statistics) and is left as it was: θ written back bit for bit, every module's mode restored.

The definitions follow tml-epfl/sharpness-vs-generalization (Andriushchenko et al. 2023), where
their docstrings say so; SAM (Foret et al. 2021) for m-sharpness, ASAM (Kwon et al. 2021) for
the adaptive L2 ascent step. Pure functions: no files, no MPI.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, cast, get_args

import numpy as np
import torch
from torch import nn

from lsurf import params
from lsurf.directions import random_direction
from lsurf.errors import ConfigError, LsurfError
from lsurf.estimates import Estimate, average_case_estimate, m_sharpness_estimate
from lsurf.evaluate import measure_batches
from lsurf.losses import Loss, outputs_of
from lsurf.metrics import LOSS

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]
Norm = Literal["l2", "linf"]
NORMS: tuple[str, ...] = get_args(Norm)
# The reference's guard in the L2 step: a zero gradient moves nothing instead of dividing 0/0.
GRADIENT_EPSILON = 1e-12


@dataclass(frozen=True)
class AverageCase:
    """Average-case sharpness E_δ[L(θ + δ)] − L(θ), δ = ρ·s⊙z, z ~ N(0, I), estimated from
    `samples` draws; s = |θ| element-wise when `adaptive`, else 1 (so plain δ ~ N(0, ρ²I)).

    As the reference's `eval_average_sharpness` (norm 'l2'): Gaussian noise of standard
    deviation ρ per entry (not ρ/√n), scaled by |θ| entry by entry when adaptive. Unlike it, one
    draw perturbs every batch of the subset (the reference draws afresh per batch): the
    expectation is the same, and a draw is then one unit whose loss is the subset's exact mean
    (Σ batch sums / Σ counts), equal to the reference's mean of batch means when the batches
    are equal in size, as the reference requires."""

    rho: float
    samples: int
    seed: int
    adaptive: bool

    def __post_init__(self) -> None:
        _check_settings("average-case", self.rho, self.seed)
        if self.samples < 1:
            raise ConfigError(f"average-case sharpness: samples is {self.samples}; give ≥ 1")


@dataclass(frozen=True)
class WorstCase:
    """Worst-case sharpness max over ‖δ/s‖ ≤ ρ of L(θ + δ) − L(θ), s = |θ| element-wise when
    `adaptive`, else 1; the norm is L2 over all moved tensors together, or L∞ entry by entry.

    Projected gradient ascent in the normalized coordinates u = δ/s, from u = 0 or, with
    `random_start`, a random point of the ball; then `steps` steps of
    u ← P(u + step_size·d), d = s⊙∇L/(‖s⊙∇L‖ + 1e-12) (L2) or sign(s⊙∇L) (L∞), P the
    projection onto the ball (L2: radial scaling when ‖u‖ > ρ; L∞: clipping to [−ρ, ρ]).
    The value is the largest loss visited (θ itself included, so it is ≥ 0) minus L(θ).

    From the reference's `weight_ascent_step_momentum`: the normalized L2 step, the sign step
    scaled by |θ| for L∞, the projections, the L∞ random start ρ·|θ|⊙U(−1, 1) and the
    running maximum over iterates; non-adaptive, and adaptive L∞, steps are the reference's.
    Where this differs: (1) a fixed step size, without the reference's Auto-PGD momentum
    (0.75) and step-halving schedule; (2) adaptive L2 steps by ASAM's s²⊙∇L/‖s⊙∇L‖ and
    scales δ back radially in u, where the reference steps by s⊙∇L/‖∇L‖ and projects onto
    the ellipsoid in Euclidean distance: the same maximum, but every iterate (not only the
    limit) is then unchanged by rescaling a ReLU layer pair (c, 1/c); (3) the L2 random start
    is uniform on the sphere ‖u‖ = ρ, where the reference's ρ·s⊙N(0, I) starts outside the
    ball. An entry with θ = 0 under `adaptive` cannot move (its ball has no width there)."""

    rho: float
    steps: int
    step_size: float
    norm: Norm
    adaptive: bool
    random_start: bool
    seed: int

    def __post_init__(self) -> None:
        _check_settings("worst-case", self.rho, self.seed)
        if self.steps < 1:
            raise ConfigError(f"worst-case sharpness: steps is {self.steps}; give ≥ 1")
        if not self.step_size > 0:
            raise ConfigError(f"worst-case sharpness: step_size is {self.step_size}; give > 0")
        if self.norm not in NORMS:
            raise ConfigError(
                f"worst-case sharpness: norm is {self.norm!r}; give one of {', '.join(NORMS)}"
            )


def _check_settings(measure: str, rho: float, seed: int) -> None:
    if not rho > 0:
        raise ConfigError(f"{measure} sharpness: rho is {rho}; give a radius ρ > 0")
    if seed < 0:
        raise ConfigError(f"{measure} sharpness: seed is {seed}; give a seed ≥ 0")


# ------------------------------------------------------------------ the measures, serially


def average_case(
    model: nn.Module,
    parameters: dict[str, torch.Tensor],
    batches: Batches,
    loss: Loss,
    settings: AverageCase,
) -> Estimate:
    """Average-case sharpness over `batches` (AverageCase): draws 0 .. samples − 1."""
    draws = [
        average_case_draw(model, parameters, batches, loss, settings, index)
        for index in range(settings.samples)
    ]
    return average_case_estimate(draws, origin_loss(model, batches, loss))


def worst_case(
    model: nn.Module,
    parameters: dict[str, torch.Tensor],
    batches: Batches,
    loss: Loss,
    settings: WorstCase,
) -> float:
    """Worst-case sharpness of the mean loss over all of `batches` together (m-sharpness with
    m = every example): one unit, index 0."""
    return worst_case_on(model, parameters, batches, loss, settings, 0)


def m_sharpness(
    model: nn.Module,
    parameters: dict[str, torch.Tensor],
    batches: Batches,
    loss: Loss,
    settings: WorstCase,
) -> Estimate:
    """m-sharpness (SAM's; the reference's `eval_APGD_sharpness`): worst-case sharpness of
    each batch (of m examples) on its own, unit index = the batch's position, averaged over
    batches with equal weights, with the standard error over batches."""
    return m_sharpness_estimate(
        [
            worst_case_on(model, parameters, [batch], loss, settings, index)
            for index, batch in enumerate(batches)
        ]
    )


# ------------------------------------------------------------------ work units


def origin_loss(model: nn.Module, batches: Batches, loss: Loss) -> float:
    """L(θ): the mean loss over `batches` in eval mode (Σ batch sums / Σ counts, float64)."""
    _check_batches(batches)
    with _held_at_origin(model, {}):
        return _mean_loss(model, batches, loss)


def average_case_draw(
    model: nn.Module,
    parameters: dict[str, torch.Tensor],
    batches: Batches,
    loss: Loss,
    settings: AverageCase,
    index: int,
) -> float:
    """L(θ + δ) over all of `batches` for draw `index`: δ = ρ·s⊙z, z drawn as N(0, 1) float32
    on the CPU from unit_generator(seed, index), tensor by tensor in the order of `parameters`."""
    _check_unit(model, parameters, batches, index)
    with _held_at_origin(model, parameters) as origin:
        noise = random_direction(parameters, unit_generator(settings.seed, index))
        scale = _scales(origin, settings.adaptive)
        delta = {key: settings.rho * scale[key] * noise[key].to(origin[key]) for key in origin}
        _move(parameters, origin, delta)
        return _mean_loss(model, batches, loss)


def worst_case_on(
    model: nn.Module,
    parameters: dict[str, torch.Tensor],
    batches: Batches,
    loss: Loss,
    settings: WorstCase,
    index: int,
) -> float:
    """Worst-case sharpness (WorstCase) of the mean loss over all of `batches`, unit `index`:
    its random start comes from unit_generator(seed, index)."""
    _check_unit(model, parameters, batches, index)
    _check_differentiable(parameters)
    with _held_at_origin(model, parameters) as origin:
        at_origin = _mean_loss(model, batches, loss)
        scale = _scales(origin, settings.adaptive)
        position = _start(origin, settings, index)  # u = δ/s
        worst = at_origin
        for _ in range(settings.steps):
            _move(parameters, origin, _times(scale, position))
            visited, gradient = _loss_and_gradient(model, parameters, batches, loss)
            worst = max(worst, visited)  # as the reference's `>`: a NaN loss is passed over
            position = _ascend(position, _times(scale, gradient), settings)
        _move(parameters, origin, _times(scale, position))
        return max(worst, _mean_loss(model, batches, loss)) - at_origin


def unit_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator of unit `index` of a measure seeded `seed`. SeedSequence hashes the
    pair, so units are unrelated streams, each fixed by (seed, index) alone."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


# ------------------------------------------------------------------ the ascent


def _start(
    origin: dict[str, torch.Tensor], settings: WorstCase, index: int
) -> dict[str, torch.Tensor]:
    """The ascent's first u: 0, or a random point of the ball (uniform on the L2 sphere of
    radius ρ; ρ·U(−1, 1) per entry for L∞), drawn on the CPU in the order of `origin`."""
    if not settings.random_start:
        return {key: torch.zeros_like(tensor) for key, tensor in origin.items()}
    generator = unit_generator(settings.seed, index)
    if settings.norm == "l2":
        noise = random_direction(origin, generator)
        radius = settings.rho / _norm(noise)
        return {key: (radius * noise[key]).to(origin[key]) for key in origin}
    return {
        key: (settings.rho * (2 * torch.rand(tuple(tensor.shape), generator=generator) - 1)).to(
            tensor
        )
        for key, tensor in origin.items()
    }


def _ascend(
    position: dict[str, torch.Tensor], gradient: dict[str, torch.Tensor], settings: WorstCase
) -> dict[str, torch.Tensor]:
    """One projected ascent step of u along the gradient in u (s⊙∇L); see WorstCase."""
    if settings.norm == "l2":
        scale = settings.step_size / (_norm(gradient) + GRADIENT_EPSILON)
        stepped = {key: position[key] + scale * gradient[key] for key in position}
        length = _norm(stepped)
        if length <= settings.rho:
            return stepped
        return {key: value * (settings.rho / length) for key, value in stepped.items()}
    return {
        key: (position[key] + settings.step_size * gradient[key].sign()).clamp(
            -settings.rho, settings.rho
        )
        for key in position
    }


def _loss_and_gradient(
    model: nn.Module, parameters: dict[str, torch.Tensor], batches: Batches, loss: Loss
) -> tuple[float, dict[str, torch.Tensor]]:
    """The mean loss over `batches` at the weights the model holds, and its gradient in
    `parameters`; one batch's graph alive at a time, gradients of the batch sums added up."""
    tensors = list(parameters.values())
    summed = [torch.zeros_like(tensor) for tensor in tensors]
    totals: list[torch.Tensor] = []
    count = 0.0
    for inputs, targets in batches:
        outputs = cast(torch.Tensor, outputs_of(model(inputs)))
        total, batch_count = loss.batch(outputs.float(), targets)
        parts = torch.autograd.grad(total, tensors, allow_unused=True)
        for running, part in zip(summed, parts, strict=True):
            if part is not None:  # None: the loss does not reach this tensor, its gradient is 0
                running.add_(part)
        totals.append(total.detach())
        count += float(batch_count)
    mean = LOSS.mean(torch.stack(totals).sum().item(), count)
    return mean, {key: running / count for key, running in zip(parameters, summed, strict=True)}


# ------------------------------------------------------------------ the model at θ + δ


@contextmanager
def _held_at_origin(
    model: nn.Module, parameters: dict[str, torch.Tensor]
) -> Iterator[dict[str, torch.Tensor]]:
    """The model in eval mode, with a snapshot of θ to perturb from; on leaving, θ is written
    back bit for bit and every module's mode is what it was."""
    modes = [(module, module.training) for module in model.modules()]
    origin = params.snapshot(parameters)
    model.eval()
    try:
        yield origin
    finally:
        with torch.no_grad():
            for key, tensor in parameters.items():
                tensor.copy_(origin[key])
        for module, training in modes:
            module.training = training


def _move(
    parameters: dict[str, torch.Tensor],
    origin: dict[str, torch.Tensor],
    delta: dict[str, torch.Tensor],
) -> None:
    """Write θ + δ into the model's tensors."""
    with torch.no_grad():
        for key, tensor in parameters.items():
            torch.add(origin[key], delta[key], out=tensor)


def _mean_loss(model: nn.Module, batches: Batches, loss: Loss) -> float:
    """The mean loss over `batches` at the weights the model holds, as a sweep measures it."""
    return measure_batches(model, batches, loss, False, batches[0][0].device.type)["loss"]


def _scales(origin: dict[str, torch.Tensor], adaptive: bool) -> dict[str, torch.Tensor]:
    """s: |θ| element-wise (adaptive), else 1."""
    return {
        key: tensor.abs() if adaptive else torch.ones_like(tensor) for key, tensor in origin.items()
    }


def _times(
    scale: dict[str, torch.Tensor], values: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    return {key: scale[key] * values[key] for key in scale}


def _norm(tensors: dict[str, torch.Tensor]) -> float:
    """The L2 norm of all of `tensors` together, accumulated in float64."""
    norms = [torch.linalg.vector_norm(tensor, dtype=torch.float64) for tensor in tensors.values()]
    return float(torch.linalg.vector_norm(torch.stack(norms)))


# ------------------------------------------------------------------ checks at the edge


def _check_batches(batches: Batches) -> None:
    if not batches:
        raise LsurfError("sharpness needs at least one batch of (inputs, targets); got none")


def _check_unit(
    model: nn.Module, parameters: dict[str, torch.Tensor], batches: Batches, index: int
) -> None:
    """Refuse what would measure nothing or something else: no tensors or batches, a
    negative unit index, tensors that are copies rather than the model's own."""
    _check_batches(batches)
    if not parameters:
        raise LsurfError(
            "sharpness needs at least one tensor to move; pass e.g. "
            "lsurf.params.movable(model, include_buffers=False)"
        )
    if index < 0:
        raise LsurfError(f"unit index {index} is negative; units are numbered from 0")
    own = {id(tensor) for tensor in model.state_dict(keep_vars=True).values()}
    foreign = [key for key, tensor in parameters.items() if id(tensor) not in own]
    if foreign:
        raise LsurfError(
            f"{', '.join(foreign)}: not the model's own tensors, so moving them moves nothing; "
            "pass the live ones, e.g. from lsurf.params.movable(model, include_buffers=False)"
        )


def _check_differentiable(parameters: dict[str, torch.Tensor]) -> None:
    fixed = [key for key, tensor in parameters.items() if not tensor.requires_grad]
    if fixed:
        raise LsurfError(
            f"worst-case sharpness follows the gradient, and {', '.join(fixed)} do not require "
            "grad; move only parameters, or call requires_grad_() on them"
        )
