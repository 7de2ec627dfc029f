"""sharpness: average-case, worst-case and m-sharpness against analytic values on a quadratic,
against a plain re-implementation of the tml-epfl definitions on a small CNN, and the
properties a distributed run rests on (a unit's bits do not depend on the order units run in;
the model comes back bit for bit).

The quadratic L(θ) = ½ (θ − c)ᵀ H (θ − c), measured at its minimum θ = c, has closed forms:
with δ = ρ·s⊙z, z ~ N(0, I), E[L(c + δ)] = ρ²·tr(SHS)/2 and Var = ρ⁴·tr((SHS)²)/2; the largest
L(c + δ) over ‖δ/s‖₂ ≤ ρ is ρ²·λmax(SHS)/2; S = diag(s), s = |c| (adaptive) or 1.

The re-implementation (`reference_*`) follows tml-epfl's sharpness.py with plain loops, the
mean cross-entropy per batch and a deep copy of the model, and nothing of lsurf; it shares
only the documented random stream of each unit (SeedSequence([seed, index])).
"""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lsurf import params, sharpness
from lsurf.errors import ConfigError, LsurfError
from lsurf.losses import Loss, build_loss
from lsurf.sharpness import AverageCase, WorstCase

EXAMPLES = 64
BATCH = 16  # m of m-sharpness: four batches of the 64 examples
AGREE = 1e-4  # lsurf against the plain re-implementation, absolute


# ------------------------------------------------------------------ a quadratic


class Quadratic(nn.Module):
    """L(θ) = ½ (θ − c)ᵀ H (θ − c) for every example, whatever its input: outputs (B,)."""

    def __init__(self, hessian: torch.Tensor, centre: torch.Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(centre.clone())
        self.register_buffer("hessian", hessian)
        self.register_buffer("centre", centre)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        offset = self.theta - self.centre
        return (0.5 * offset @ self.hessian @ offset).expand(inputs.shape[0])


def spread_hessian() -> torch.Tensor:
    """A 6 × 6 positive definite H with spread eigenvalues (A·Aᵀ/6 + 0.1·I)."""
    factor = torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return factor @ factor.T / 6 + 0.1 * torch.eye(6, dtype=torch.float64)


def ridge_hessian() -> torch.Tensor:
    """H = a·aᵀ + 0.1·I: its maximum over a cube is at the corner sign(a), which sign ascent
    finds from anywhere (the max over a cube of a general quadratic is NP-hard)."""
    line = torch.randn(6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return line[:, None] * line[None, :] + 0.1 * torch.eye(6, dtype=torch.float64)


def quadratic(
    hessian: torch.Tensor,
) -> tuple[Quadratic, list[tuple[torch.Tensor, torch.Tensor]], Loss]:
    """The quadratic of `hessian` at its minimum c (entries of |c| in [0.5, 1.5]), one batch
    of 4 examples, and the loss that is the model's output itself."""
    generator = torch.Generator().manual_seed(2)
    signs = torch.randint(0, 2, (6,), generator=generator).double() * 2 - 1
    centre = signs * (0.5 + torch.rand(6, generator=generator, dtype=torch.float64))
    batches = [(torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4))]
    return Quadratic(hessian, centre), batches, build_loss("quadratic", lambda out, _: out)


def scaled_hessian(model: Quadratic, adaptive: bool) -> np.ndarray:
    """SHS with s = |c| (adaptive) or 1."""
    scale = model.centre.abs() if adaptive else torch.ones_like(model.centre)
    return (scale[:, None] * model.hessian * scale[None, :]).numpy()


@pytest.mark.parametrize("adaptive", [False, True])
def test_average_case_on_a_quadratic_is_half_rho_squared_trace(adaptive):
    model, batches, loss = quadratic(spread_hessian())
    rho, samples = 0.1, 2000
    settings = AverageCase(rho=rho, samples=samples, seed=3, adaptive=adaptive)
    found = sharpness.average_case(model, {"theta": model.theta}, batches, loss, settings)
    curvature = scaled_hessian(model, adaptive)
    expected = rho**2 * np.trace(curvature) / 2
    expected_error = rho**2 * math.sqrt(np.trace(curvature @ curvature) / 2 / samples)
    print(f"average-case {found.value:.6g} ± {found.standard_error:.3g} vs ρ²tr/2 {expected:.6g}")
    print(f"standard error {found.standard_error:.4g} vs analytic {expected_error:.4g}")
    assert abs(found.value - expected) < 3 * found.standard_error
    assert found.standard_error == pytest.approx(expected_error, rel=0.1)


@pytest.mark.parametrize("adaptive", [False, True])
def test_worst_case_l2_on_a_quadratic_is_half_rho_squared_lambda_max(adaptive):
    model, batches, loss = quadratic(spread_hessian())
    rho = 0.1
    settings = WorstCase(
        rho=rho,
        steps=100,
        step_size=2 * rho,
        norm="l2",
        adaptive=adaptive,
        random_start=True,  # at the minimum the gradient is 0: the ascent needs a push
        seed=0,
    )
    found = sharpness.worst_case(model, {"theta": model.theta}, batches, loss, settings)
    expected = rho**2 * np.linalg.eigvalsh(scaled_hessian(model, adaptive))[-1] / 2
    print(f"worst-case L2 {found:.8g} vs ρ²λmax/2 {expected:.8g}")
    assert found == pytest.approx(expected, rel=1e-3)
    assert found <= expected * (1 + 1e-6)  # never outside the ball (losses are fp32)


@pytest.mark.parametrize("adaptive", [False, True])
def test_worst_case_linf_on_a_quadratic_is_its_best_corner(adaptive):
    model, batches, loss = quadratic(ridge_hessian())
    rho = 0.1
    settings = WorstCase(
        rho=rho, steps=20, step_size=rho, norm="linf", adaptive=adaptive, random_start=True, seed=0
    )
    found = sharpness.worst_case(model, {"theta": model.theta}, batches, loss, settings)
    # A convex function's maximum over the cube is at one of its 2⁶ corners.
    corners = rho * np.array(np.meshgrid(*[[-1.0, 1.0]] * 6)).reshape(6, -1)
    curvature = scaled_hessian(model, adaptive)
    expected = float((0.5 * corners * (curvature @ corners)).sum(0).max())
    print(f"worst-case L∞ {found:.8g} vs the best of 64 corners {expected:.8g}")
    assert found == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------ small networks


def cifar_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """64 random CIFAR-shaped images (3, 32, 32) and labels of 10 classes."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(EXAMPLES, 3, 32, 32, generator=generator)
    return inputs, torch.randint(0, 10, (EXAMPLES,), generator=generator)


def in_batches(
    inputs: torch.Tensor, targets: torch.Tensor, size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [
        (inputs[start : start + size], targets[start : start + size])
        for start in range(0, len(inputs), size)
    ]


def small_cnn() -> nn.Module:
    """Three convolutions with BatchNorm, random weights, BN statistics from a few train-mode
    passes (so eval mode and train mode give different outputs); left in train mode."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    with torch.no_grad():
        for seed in range(3):
            model(cifar_batch(100 + seed)[0])
    return model


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """`ignore: biasbn`: the live tensors of more than one dimension."""
    return {key: value for key, value in params.movable(model, False).items() if value.dim() > 1}


CROSS_ENTROPY = build_loss("cross_entropy")


# ------------------------------------------------------------------ the tml-epfl definitions


def reference_generator(seed: int, index: int) -> torch.Generator:
    """The documented stream of unit `index`: SeedSequence([seed, index]), 64 bits."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def reference_average_case(
    model: nn.Module, names: list[str], rho: float, samples: int, seed: int, adaptive: bool
) -> tuple[float, float]:
    """eval_average_sharpness written out: per batch, the mean over draws of the loss of a
    noisy copy minus the batch's own loss, averaged over batches; δ = ρ·(|θ| or 1)·z. Draw i's
    z is the same for every batch (lsurf's choice; the reference draws afresh per batch). Also
    the standard error over draws of each draw's difference averaged over batches."""
    inputs, targets = cifar_batch(1)
    original = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    noisy = copy.deepcopy(model)
    noisy_parameters = dict(noisy.named_parameters())
    noise = []
    for index in range(samples):
        generator = reference_generator(seed, index)
        noise.append(
            {name: torch.randn(original[name].shape, generator=generator) for name in names}
        )
    differences = np.zeros((EXAMPLES // BATCH, samples))
    with torch.no_grad():
        for batch, start in enumerate(range(0, EXAMPLES, BATCH)):
            x, y = inputs[start : start + BATCH], targets[start : start + BATCH]
            initial = F.cross_entropy(model(x), y).item()
            for index in range(samples):
                for name in names:
                    scale = original[name].abs() if adaptive else 1.0
                    noisy_parameters[name].data = original[name] + rho * scale * noise[index][name]
                differences[batch, index] = F.cross_entropy(noisy(x), y).item() - initial
    per_draw = differences.mean(axis=0)
    return float(per_draw.mean()), float(per_draw.std(ddof=1) / math.sqrt(samples))


def reference_worst_case(
    model: nn.Module,
    names: list[str],
    x: torch.Tensor,
    y: torch.Tensor,
    rho: float,
    steps: int,
    step_size: float,
    norm: str,
    adaptive: bool,
) -> float:
    """weight_ascent_step_momentum's step and projection as plain gradient ascent (no
    momentum, a fixed step) from δ = 0 on one batch: the largest loss after any step, minus
    the loss at θ."""
    model = copy.deepcopy(model)
    parameters = dict(model.named_parameters())
    original = {name: parameters[name].detach().clone() for name in names}
    scale = {
        name: original[name].abs() if adaptive else torch.ones_like(original[name])
        for name in names
    }
    delta = {name: torch.zeros_like(original[name]) for name in names}
    with torch.no_grad():
        initial = F.cross_entropy(model(x), y).item()
    worst = initial
    for _ in range(steps):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            if norm == "l2":
                grad_norm = sum(parameters[name].grad.norm() ** 2 for name in names) ** 0.5
                for name in names:
                    delta[name] += (
                        step_size / (grad_norm + 1e-12) * parameters[name].grad * scale[name]
                    )
                delta_norm = sum((delta[name] ** 2).sum() for name in names) ** 0.5
                if delta_norm > rho:
                    for name in names:
                        delta[name] *= rho / delta_norm
            else:
                for name in names:
                    delta[name] += step_size * parameters[name].grad.sign() * scale[name]
                    delta[name] = torch.max(
                        torch.min(delta[name], rho * scale[name]), -rho * scale[name]
                    )
            for name in names:
                parameters[name].data = original[name] + delta[name]
            current = F.cross_entropy(model(x), y).item()
        if current > worst:
            worst = current
    return worst - initial


@pytest.mark.parametrize(("adaptive", "rho"), [(False, 0.1), (True, 2.0)])
def test_average_case_matches_the_tml_epfl_definition(adaptive, rho):
    model = small_cnn().eval()
    moving = weights(model)
    settings = AverageCase(rho=rho, samples=6, seed=11, adaptive=adaptive)
    found = sharpness.average_case(
        model, moving, in_batches(*cifar_batch(1), BATCH), CROSS_ENTROPY, settings
    )
    expected, expected_error = reference_average_case(model, list(moving), rho, 6, 11, adaptive)
    print(f"average-case lsurf {found.value:.7f} ± {found.standard_error:.7f}")
    print(f"average-case plain {expected:.7f} ± {expected_error:.7f}")
    assert found.value == pytest.approx(expected, abs=AGREE)
    assert found.standard_error == pytest.approx(expected_error, abs=AGREE)
    assert abs(found.value) > 100 * AGREE  # a value the agreement tells something about


@pytest.mark.parametrize(
    ("norm", "adaptive", "rho"), [("l2", False, 0.5), ("linf", False, 0.01), ("linf", True, 0.2)]
)
def test_worst_case_and_m_sharpness_match_the_tml_epfl_definition(norm, adaptive, rho):
    model = small_cnn().eval()
    moving = weights(model)
    inputs, targets = cifar_batch(1)
    steps, step_size = 5, rho / 2
    settings = WorstCase(
        rho=rho,
        steps=steps,
        step_size=step_size,
        norm=norm,
        adaptive=adaptive,
        random_start=False,
        seed=0,
    )
    per_batch = [
        reference_worst_case(model, list(moving), x, y, rho, steps, step_size, norm, adaptive)
        for x, y in in_batches(inputs, targets, BATCH)
    ]
    whole = reference_worst_case(
        model, list(moving), inputs, targets, rho, steps, step_size, norm, adaptive
    )
    found_m = sharpness.m_sharpness(
        model, moving, in_batches(inputs, targets, BATCH), CROSS_ENTROPY, settings
    )
    found_whole = sharpness.worst_case(
        model, moving, in_batches(inputs, targets, BATCH), CROSS_ENTROPY, settings
    )
    expected_error = np.std(per_batch, ddof=1) / math.sqrt(len(per_batch))
    print(f"{norm} adaptive={adaptive} ρ={rho}")
    print(f"  m-sharpness lsurf {found_m.value:.7f} ± {found_m.standard_error:.7f}")
    print(f"  m-sharpness plain {np.mean(per_batch):.7f} ± {expected_error:.7f}")
    print(f"  worst-case lsurf {found_whole:.7f}, plain {whole:.7f}")
    assert found_m.value == pytest.approx(float(np.mean(per_batch)), abs=AGREE)
    assert found_m.standard_error == pytest.approx(expected_error, abs=AGREE)
    assert found_whole == pytest.approx(whole, abs=AGREE)
    assert found_whole > 100 * AGREE


# ------------------------------------------------------------------ properties


def relu_pair(scale: float) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Linear(10, 16) → ReLU → Linear(16, 3) with the first layer (weight and bias) times
    `scale` and the second's weight divided by it: the same function for any scale > 0."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():
        model[0].weight.mul_(scale)
        model[0].bias.mul_(scale)
        model[2].weight.div_(scale)
    generator = torch.Generator().manual_seed(2)
    inputs = torch.randn(32, 10, generator=generator)
    targets = torch.randint(0, 3, (32,), generator=generator)
    return model, in_batches(inputs, targets, 8)


def every_measure(model: nn.Module, batches, adaptive: bool) -> dict[str, float]:
    """Each measure on `model` over all of its movable parameters, by name."""
    moving = params.movable(model, False)
    average = AverageCase(rho=0.1, samples=4, seed=5, adaptive=adaptive)
    found = {
        "average": sharpness.average_case(model, moving, batches, CROSS_ENTROPY, average).value
    }
    for norm, rho in (("l2", 0.5), ("linf", 0.05)):
        settings = WorstCase(
            rho=rho,
            steps=5,
            step_size=rho / 2,
            norm=norm,
            adaptive=adaptive,
            random_start=True,
            seed=6,
        )
        found[f"worst {norm}"] = sharpness.worst_case(
            model, moving, batches, CROSS_ENTROPY, settings
        )
        found[f"m {norm}"] = sharpness.m_sharpness(
            model, moving, batches, CROSS_ENTROPY, settings
        ).value
    return found


def test_adaptive_sharpness_is_unchanged_by_rescaling_a_relu_layer_pair():
    original = every_measure(*relu_pair(1.0), adaptive=True)
    rescaled = every_measure(*relu_pair(3.0), adaptive=True)
    plain = every_measure(*relu_pair(1.0), adaptive=False)
    plain_rescaled = every_measure(*relu_pair(3.0), adaptive=False)
    for name in original:
        print(f"{name}: adaptive {original[name]:.8g} → {rescaled[name]:.8g}")
        print(f"{name}: plain {plain[name]:.6g} → {plain_rescaled[name]:.6g}")
        assert rescaled[name] == pytest.approx(original[name], rel=1e-5)
        assert plain_rescaled[name] != pytest.approx(plain[name], rel=1e-2)  # what adaptive fixes


def test_m_sharpness_with_m_the_whole_subset_is_worst_case_on_it():
    model = small_cnn()
    inputs, targets = cifar_batch(1)
    for norm, rho in (("l2", 5.0), ("linf", 0.2)):
        settings = WorstCase(
            rho=rho, steps=4, step_size=rho / 2, norm=norm, adaptive=True, random_start=True, seed=2
        )
        whole = sharpness.worst_case(
            model, weights(model), in_batches(inputs, targets, BATCH), CROSS_ENTROPY, settings
        )
        one_unit = sharpness.m_sharpness(
            model, weights(model), [(inputs, targets)], CROSS_ENTROPY, settings
        )
        print(
            f"{norm}: worst-case over 4 batches {whole:.8g}, one batch of 64 {one_unit.value:.8g}"
        )
        assert one_unit.value == pytest.approx(whole, rel=1e-5)
        assert whole > 0
        assert math.isnan(one_unit.standard_error)  # one unit: no spread to estimate it from


def test_m_sharpness_is_the_mean_of_its_batches_worst_cases():
    model = small_cnn()
    batches = in_batches(*cifar_batch(1), BATCH)
    settings = WorstCase(
        rho=5.0, steps=3, step_size=2.5, norm="l2", adaptive=True, random_start=True, seed=2
    )
    units = [
        sharpness.worst_case_on(model, weights(model), [batch], CROSS_ENTROPY, settings, index)
        for index, batch in enumerate(batches)
    ]
    found = sharpness.m_sharpness(model, weights(model), batches, CROSS_ENTROPY, settings)
    print(f"units {units}, m-sharpness {found}")
    assert found.value == math.fsum(units) / 4
    assert found.standard_error == pytest.approx(np.std(units, ddof=1) / 2, rel=1e-12)
    assert len(set(units)) == 4


def test_a_unit_has_the_same_bits_whatever_order_units_run_in():
    model = small_cnn()
    batches = in_batches(*cifar_batch(1), BATCH)
    average = AverageCase(rho=2.0, samples=4, seed=9, adaptive=True)
    ascent = WorstCase(
        rho=5.0, steps=3, step_size=2.5, norm="l2", adaptive=True, random_start=True, seed=9
    )

    def run(unit: tuple[str, int], on: nn.Module) -> float:
        kind, index = unit
        if kind == "draw":
            return sharpness.average_case_draw(
                on, weights(on), batches, CROSS_ENTROPY, average, index
            )
        return sharpness.worst_case_on(
            on, weights(on), [batches[index]], CROSS_ENTROPY, ascent, index
        )

    units = [(kind, index) for kind in ("draw", "ascent") for index in range(4)]
    in_order = {unit: run(unit, model) for unit in units}
    shuffled = units.copy()
    random.Random(0).shuffle(shuffled)
    out_of_order = {unit: run(unit, model) for unit in shuffled}
    alone = run(("ascent", 2), small_cnn())  # a fresh rank that runs this one unit only
    print(f"in order {in_order}")
    assert out_of_order == in_order  # float equality: the same bits
    assert alone == in_order[("ascent", 2)]
    assert len(set(in_order.values())) == len(units)  # each index its own stream


def test_every_measure_leaves_the_model_bit_identical():
    model = small_cnn()  # in train mode: a train-mode pass would move BN's running statistics
    before = params.digest(model.state_dict())
    moving = weights(model)
    batches = in_batches(*cifar_batch(1), BATCH)
    checks = {
        "origin": lambda: sharpness.origin_loss(model, batches, CROSS_ENTROPY),
        "average": lambda: sharpness.average_case(
            model,
            moving,
            batches,
            CROSS_ENTROPY,
            AverageCase(rho=0.1, samples=2, seed=0, adaptive=True),
        ),
    }
    for norm, adaptive in (("l2", False), ("l2", True), ("linf", False), ("linf", True)):
        settings = WorstCase(
            rho=0.5,
            steps=2,
            step_size=0.25,
            norm=norm,
            adaptive=adaptive,
            random_start=True,
            seed=0,
        )
        name = f"{norm} adaptive={adaptive}"
        checks[f"worst {name}"] = lambda settings=settings: sharpness.worst_case(
            model, moving, batches, CROSS_ENTROPY, settings
        )
        checks[f"m {name}"] = lambda settings=settings: sharpness.m_sharpness(
            model, moving, batches, CROSS_ENTROPY, settings
        )
    for name, measure in checks.items():
        measure()
        assert params.digest(model.state_dict()) == before, name
        assert all(module.training for module in model.modules()), name
        assert all(parameter.grad is None for parameter in model.parameters()), name


def test_bad_settings_and_copies_are_refused_with_what_to_do():
    with pytest.raises(ConfigError, match="give one of l2, linf"):
        WorstCase(
            rho=0.1, steps=1, step_size=0.1, norm="l1", adaptive=False, random_start=False, seed=0
        )
    with pytest.raises(ConfigError, match="samples is 0"):
        AverageCase(rho=0.1, samples=0, seed=0, adaptive=False)
    for rho in (0.0, -0.1):  # a ball of no radius measures nothing
        with pytest.raises(ConfigError, match=f"rho is {rho}; give a radius ρ > 0"):
            AverageCase(rho=rho, samples=1, seed=0, adaptive=False)
    with pytest.raises(ConfigError, match="steps is 0; give ≥ 1"):
        WorstCase(
            rho=0.1, steps=0, step_size=0.1, norm="l2", adaptive=False, random_start=False, seed=0
        )
    model = small_cnn()
    copies = params.snapshot(weights(model))
    with pytest.raises(LsurfError, match="not the model's own tensors"):
        sharpness.average_case_draw(
            model,
            copies,
            in_batches(*cifar_batch(1), BATCH),
            CROSS_ENTROPY,
            AverageCase(rho=0.1, samples=1, seed=0, adaptive=False),
            0,
        )
