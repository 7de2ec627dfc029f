"""hessian: exact Hessian-vector products and the Lanczos solvers, against dense Hessians.

Every reference is the Hessian of the same mean loss as a function of the flat parameter
vector, computed densely in float64 (torch.autograd.functional.hessian over
torch.func.functional_call on a float64 copy of the model, with the loss written out here,
over all examples at once) and diagonalized with eigvalsh. The operator under test runs the
fp32 model batch by batch over unequal batches (7, 7, 3), so agreement also checks that the
mean weights each batch by its count.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.func import functional_call

from lsurf import hessian
from lsurf.data.splits import CachedSplit
from lsurf.errors import ConfigError
from lsurf.losses import Loss, build_loss

SIZES = (7, 7, 3)  # unequal batches: a plain mean of batch means would be wrong
EXAMPLES = sum(SIZES)
AGREE = 1e-4  # eigenvalues agree with eigvalsh to this, relative to max |λ|
TOL = 1e-6  # the solvers' tolerance in these tests


@dataclass
class Case:
    """A tiny model, its data, the lsurf loss, and the same loss written out in float64."""

    model: nn.Module
    loss: Loss
    inputs: torch.Tensor
    targets: torch.Tensor
    reference_sum: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        found, start = [], 0
        for size in SIZES:
            found.append((self.inputs[start : start + size], self.targets[start : start + size]))
            start += size
        return found

    def operator(self, which: str) -> hessian.HessianOperator:
        parameters = hessian.curvature_parameters(self.model, which)
        return hessian.HessianOperator(self.model, parameters, self.batches, self.loss)


def cross_entropy_sum(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, reduction="sum")


def squared_error_sum(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (outputs - targets.to(outputs.dtype)).pow(2).mean(dim=1).sum()


def classifier_case(model: nn.Module, input_shape: tuple[int, ...]) -> Case:
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn((EXAMPLES, *input_shape), generator=generator)
    targets = torch.randint(0, 3, (EXAMPLES,), generator=generator)
    return Case(model.eval(), build_loss("cross_entropy"), inputs, targets, cross_entropy_sum)


def tanh_mlp() -> Case:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))  # 67 parameters
    return classifier_case(model, (4,))


def relu_mlp() -> Case:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 3))  # 83 parameters
    return classifier_case(model, (4,))


class ConvBatchNorm(nn.Module):
    """conv(2->3) + BN (eval mode, non-trivial statistics) + tanh, pooled, linear: 75 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)
        self.linear = nn.Linear(3, 3)
        with torch.no_grad():
            self.norm.running_mean.uniform_(-0.3, 0.3)
            self.norm.running_var.uniform_(0.5, 1.5)
            self.norm.weight.uniform_(0.5, 1.5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = torch.tanh(self.norm(self.conv(images)))  # (N, 3, 4, 4)
        return self.linear(features.mean(dim=(2, 3)))


def conv_batch_norm() -> Case:
    torch.manual_seed(0)
    return classifier_case(ConvBatchNorm(), (2, 4, 4))


def linear_regression() -> Case:
    """mse on float targets: H = 2·X̃ᵀX̃/N with X̃ = [X, 1], positive definite."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn((EXAMPLES, 8), generator=generator)
    targets = torch.randn((EXAMPLES, 1), generator=generator)
    model = nn.Linear(8, 1).eval()
    return Case(model, build_loss("mse"), inputs, targets, squared_error_sum)


CLASSIFIERS = {"tanh_mlp": tanh_mlp, "relu_mlp": relu_mlp, "conv_batch_norm": conv_batch_norm}


def perturb(model: nn.Module, seed: int, scale: float) -> None:
    """Move every parameter by scale·N(0, 1): a point away from initialization."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.parameters():
            tensor.add_(scale * torch.randn(tensor.shape, generator=generator))


def dense_hessian(case: Case, operator: hessian.HessianOperator) -> torch.Tensor:
    """(n, n) float64 Hessian of the mean loss over all examples at once, in the operator's
    flat order."""
    reference = copy.deepcopy(case.model).double()
    state = dict(reference.named_parameters())
    start = torch.cat([state[name].detach().reshape(-1) for name in operator.names])
    inputs = case.inputs.double()

    def mean_loss(flat: torch.Tensor) -> torch.Tensor:
        tensors = {}
        for name, shape in zip(operator.names, operator.shapes, strict=True):
            tensors[name] = flat[operator.block(name)].view(shape)
        outputs = functional_call(reference, tensors, (inputs,))
        return case.reference_sum(outputs, case.targets) / EXAMPLES

    return torch.autograd.functional.hessian(mean_loss, start)


def start_vector(size: int, seed: int) -> torch.Tensor:
    """The documented Lanczos start: N(0, 1) from a CPU generator seeded with `seed`, unit."""
    vector = torch.randn(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return vector / vector.norm()


# --- parameters and products ----------------------------------------------------------------


def test_curvature_parameters_are_the_live_weights_or_all_in_state_dict_order():
    model = conv_batch_norm().model
    weights = hessian.curvature_parameters(model, "weights")
    assert list(weights) == ["conv.weight", "linear.weight"]
    assert weights["conv.weight"] is model.conv.weight  # live: a move reaches the Hessian
    everything = hessian.curvature_parameters(model, "all")
    assert list(everything) == [name for name, _ in model.named_parameters()]
    with pytest.raises(ValueError, match="weights, all"):
        hessian.curvature_parameters(model, "biases")


def test_tied_tensors_count_once_and_a_model_without_matrices_is_refused_for_weights():
    tied = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    tied[1].weight = tied[0].weight
    assert list(hessian.curvature_parameters(tied, "weights")) == ["0.weight"]
    scales = nn.BatchNorm1d(4)
    with pytest.raises(ConfigError, match="hessian.params: all") as caught:
        hessian.curvature_parameters(scales, "weights")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("make", [*CLASSIFIERS.values(), linear_regression])
def test_matvec_is_the_dense_hessian_of_the_mean_over_unequal_batches(make):
    case = make()
    operator = case.operator("all")
    dense = dense_hessian(case, operator)
    vector = torch.randn(operator.size, generator=torch.Generator().manual_seed(3)).double()
    product = operator.matvec(vector)
    assert product.dtype == torch.float64 and product.shape == (operator.size,)
    expected = dense @ vector
    # fp32 forward and backward: agreement to a few fp32 roundings of the largest entry.
    assert torch.allclose(product, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))
    assert operator.products == 1
    operator.matvec(vector)
    assert operator.products == 2


def test_a_batch_cached_under_inference_mode_and_a_caller_in_inference_mode_work():
    case = tanh_mlp()
    with torch.inference_mode():
        split = CachedSplit("train", 3, case.inputs.clone(), case.targets.clone())
        vector = torch.randn(67, generator=torch.Generator().manual_seed(0)).double()
    assert split.inputs.is_inference() and vector.is_inference()
    parameters = hessian.curvature_parameters(case.model, "all")
    operator = hessian.HessianOperator(case.model, parameters, lambda: split.batches(7), case.loss)
    with torch.inference_mode():
        inside = operator.matvec(vector)
    with torch.no_grad():
        under_no_grad = operator.matvec(vector)
    expected = dense_hessian(case, operator) @ vector.clone()
    assert torch.equal(inside, under_no_grad)
    assert torch.allclose(inside, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


def test_a_frozen_parameter_still_has_curvature_and_stays_frozen():
    case = tanh_mlp()
    case.model[0].weight.requires_grad_(False)
    operator = case.operator("weights")
    vector = torch.randn(operator.size, generator=torch.Generator().manual_seed(0)).double()
    product = operator.matvec(vector)
    expected = dense_hessian(case, operator) @ vector
    assert torch.allclose(product, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))
    assert not case.model[0].weight.requires_grad and case.model[2].weight.requires_grad


def test_reduce_combines_ranks_sums_and_counts_into_the_serial_product():
    """Two 'ranks' holding batches {1} and {2, 3}: summing their (sum, count) pairs before
    the one division gives the serial product, as MPI's allreduce will."""
    case = tanh_mlp()
    parameters = hessian.curvature_parameters(case.model, "all")
    batches = case.batches()
    vector = torch.randn(67, generator=torch.Generator().manual_seed(0)).double()
    captured: list[tuple[torch.Tensor, float]] = []

    def capture(total: torch.Tensor, count: float) -> tuple[torch.Tensor, float]:
        captured.append((total.clone(), count))
        return total, count

    other = hessian.HessianOperator(
        case.model, parameters, lambda: batches[1:], case.loss, reduce=capture
    )
    other.matvec(vector)
    (other_total, other_count) = captured[0]
    assert other_count == 10

    def allreduce(total: torch.Tensor, count: float) -> tuple[torch.Tensor, float]:
        return total + other_total, count + other_count

    first = hessian.HessianOperator(
        case.model, parameters, lambda: batches[:1], case.loss, reduce=allreduce
    )
    serial = case.operator("all").matvec(vector)
    assert torch.allclose(first.matvec(vector), serial, rtol=1e-12, atol=1e-15)


# --- extreme eigenvalues --------------------------------------------------------------------


@pytest.mark.parametrize("which", ["weights", "all"])
@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_extremes_match_eigvalsh_at_perturbed_points_with_negative_curvature(name, which):
    case = CLASSIFIERS[name]()
    smallest = []
    for point in range(3):
        perturb(case.model, seed=10 + point, scale=0.4)
        operator = case.operator(which)
        exact = torch.linalg.eigvalsh(dense_hessian(case, operator))
        scale = float(exact.abs().max())
        found = hessian.extreme_eigenpairs(operator, TOL, operator.size, seed=0)
        assert found.converged
        assert abs(found.max_eig - float(exact[-1])) <= AGREE * scale
        assert abs(found.min_eig - float(exact[0])) <= AGREE * scale
        assert found.max_residual <= TOL and found.min_residual <= TOL
        smallest.append(found.min_eig)
    # A cross-entropy surface away from a minimum curves down somewhere: λmin < 0 was found.
    assert min(smallest) < -AGREE


@pytest.mark.parametrize("which", ["weights", "all"])
def test_extremes_of_a_positive_definite_hessian_find_the_positive_minimum(which):
    case = linear_regression()
    operator = case.operator(which)
    exact = torch.linalg.eigvalsh(dense_hessian(case, operator))
    found = hessian.extreme_eigenpairs(operator, TOL, operator.size, seed=0)
    assert exact[0] > 0.05 * exact[-1]  # positive definite, well away from 0
    assert found.min_eig > 0
    assert abs(found.min_eig - float(exact[0])) <= AGREE * float(exact[-1])
    assert abs(found.max_eig - float(exact[-1])) <= AGREE * float(exact[-1])


def test_eigenvectors_of_the_extremes_are_unit_and_satisfy_the_dense_eigen_equation():
    case = tanh_mlp()
    perturb(case.model, seed=10, scale=0.4)
    operator = case.operator("all")
    dense = dense_hessian(case, operator)
    found = hessian.extreme_eigenpairs(operator, TOL, operator.size, seed=0, vectors=True)
    scale = max(abs(found.max_eig), abs(found.min_eig))
    for value, vector in ((found.max_eig, found.max_vector), (found.min_eig, found.min_vector)):
        assert vector.shape == (operator.size,) and vector.dtype == torch.float64
        assert abs(float(vector.norm()) - 1) < 1e-12
        assert float((dense @ vector - value * vector).norm()) <= AGREE * scale


def test_a_tiny_budget_is_not_converged_and_gives_the_ritz_values_of_its_krylov_space():
    case = tanh_mlp()
    perturb(case.model, seed=10, scale=0.4)
    operator = case.operator("all")
    dense = dense_hessian(case, operator)
    found = hessian.extreme_eigenpairs(operator, 1e-3, max_products=3, seed=5, vectors=True)
    assert found.products == 3 and not found.converged
    assert max(found.max_residual, found.min_residual) > 1e-3
    # The Ritz values of K_3 = span{v, Hv, H²v} from the documented start, computed densely.
    krylov = [start_vector(operator.size, seed=5)]
    for _ in range(2):
        krylov.append(dense @ krylov[-1])
    basis, _ = torch.linalg.qr(torch.stack(krylov, dim=1))
    ritz = torch.linalg.eigvalsh(basis.T @ dense @ basis)
    scale = max(abs(float(ritz[0])), abs(float(ritz[-1])))
    assert abs(found.max_eig - float(ritz[-1])) <= 1e-5 * scale
    assert abs(found.min_eig - float(ritz[0])) <= 1e-5 * scale
    # Inside the spectrum, and the reported residuals are the true ones of the Ritz vectors.
    exact = torch.linalg.eigvalsh(dense)
    assert float(exact[0]) <= found.min_eig <= found.max_eig <= float(exact[-1])
    for value, vector, residual in (
        (found.max_eig, found.max_vector, found.max_residual),
        (found.min_eig, found.min_vector, found.min_residual),
    ):
        true = float((dense @ vector - value * vector).norm()) / scale
        assert true == pytest.approx(residual, rel=1e-3)


def test_two_identical_calls_give_identical_bits_and_count_their_products():
    case = conv_batch_norm()
    perturb(case.model, seed=10, scale=0.4)
    operator = case.operator("all")
    first = hessian.extreme_eigenpairs(operator, 1e-4, 40, seed=7, vectors=True)
    spent = operator.products
    second = hessian.extreme_eigenpairs(operator, 1e-4, 40, seed=7, vectors=True)
    assert spent == first.products and operator.products == 2 * first.products
    assert (first.max_eig, first.min_eig) == (second.max_eig, second.min_eig)
    assert (first.max_residual, first.min_residual) == (second.max_residual, second.min_residual)
    assert torch.equal(first.max_vector, second.max_vector)
    assert torch.equal(first.min_vector, second.min_vector)


def test_an_exactly_invariant_krylov_space_stops_early_with_exact_values():
    """Only one scalar weight moves the loss; a head the forward never uses adds a zero block.
    H = diag(h, 0, ..., 0) has two distinct eigenvalues, so two products find both exactly."""

    class OneScale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.full((1, 1), 0.7))
            self.unused = nn.Linear(3, 4)

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return inputs * self.scale

    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn((EXAMPLES, 1), generator=generator)
    targets = torch.randn((EXAMPLES, 1), generator=generator)
    case = Case(OneScale().eval(), build_loss("mse"), inputs, targets, squared_error_sum)
    operator = case.operator("all")  # n = 1 + 16
    curvature = 2 * float(inputs.double().pow(2).mean())
    found = hessian.extreme_eigenpairs(operator, 0.0, 50, seed=0)
    assert found.products == 2 and found.converged
    assert found.max_eig == pytest.approx(curvature, rel=1e-6)
    assert abs(found.min_eig) <= 1e-6 * curvature  # 0, up to the fp32 products' rounding
    # k = 3 > the two distinct eigenvalues: the run restarts from a fresh vector.
    top = hessian.top_eigenpairs(operator, 3, 0.0, 50, seed=0)
    assert top.converged
    np.testing.assert_allclose(top.values, [curvature, 0, 0], rtol=0, atol=1e-6 * curvature)
    # Stochastic Lanczos quadrature: nodes {0, h}, weights the start's squared components.
    density = hessian.spectral_density(operator, runs=2, steps=10, seed=0)
    assert density.nodes.shape == (2, 10)
    assert np.all(density.weights[:, 2:] == 0) and np.all(density.nodes[:, 2:] == 0)
    start = start_vector(operator.size, seed=0)
    along = float(start[operator.block("scale")][0] ** 2)
    np.testing.assert_allclose(density.nodes[0, :2], [0, curvature], rtol=0, atol=1e-6 * curvature)
    np.testing.assert_allclose(density.weights[0, :2], [1 - along, along], rtol=0, atol=1e-7)


# --- top k, per layer -----------------------------------------------------------------------


def test_top_k_values_match_eigvalsh_with_orthonormal_eigenvectors():
    case = tanh_mlp()
    perturb(case.model, seed=11, scale=0.4)
    operator = case.operator("all")
    dense = dense_hessian(case, operator)
    exact = torch.linalg.eigvalsh(dense)
    scale = float(exact.abs().max())
    top = hessian.top_eigenpairs(operator, 4, TOL, operator.size, seed=0, vectors=True)
    assert top.converged and top.values.shape == (4,) and np.all(top.residuals <= TOL)
    np.testing.assert_allclose(top.values, exact.flip(0)[:4].numpy(), rtol=0, atol=AGREE * scale)
    assert np.all(np.diff(top.values) <= 0)
    gram = top.vectors @ top.vectors.T
    assert torch.allclose(gram, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-10)
    for value, vector in zip(top.values, top.vectors, strict=True):
        assert float((dense @ vector - value * vector).norm()) <= AGREE * scale
    with pytest.raises(ValueError, match="k must be between 1 and n = 67"):
        hessian.top_eigenpairs(operator, 68, TOL, 100, seed=0)


def test_layer_max_eigenvalues_are_those_of_the_dense_diagonal_blocks():
    case = conv_batch_norm()
    perturb(case.model, seed=12, scale=0.4)
    operator = case.operator("all")
    dense = dense_hessian(case, operator)
    before = operator.products
    layers = hessian.layer_max_eigenvalues(operator, TOL, 100, seed=0)
    assert [name for name, *_ in layers] == operator.names
    assert sum(products for *_, products in layers) == operator.products - before
    for name, value, residual, products in layers:
        block = operator.block(name)
        exact = torch.linalg.eigvalsh(dense[block, block])
        scale = float(exact.abs().max())
        assert abs(value - float(exact[-1])) <= AGREE * scale, name
        assert residual <= TOL and 1 <= products <= block.stop - block.start


# --- trace and density ----------------------------------------------------------------------


def test_hutchinson_samples_are_rademacher_quadratic_forms_and_the_trace_is_within_3_se():
    case = relu_mlp()
    perturb(case.model, seed=13, scale=0.4)
    operator = case.operator("all")
    dense = dense_hessian(case, operator)
    trace = hessian.hutchinson_trace(operator, samples=60, seed=4)
    generator = torch.Generator().manual_seed(4)
    expected = []
    for _ in range(60):
        probe = (torch.randint(0, 2, (operator.size,), generator=generator) * 2 - 1).double()
        expected.append(float(probe @ dense @ probe))
    largest = float(np.abs(expected).max())
    np.testing.assert_allclose(trace.samples, expected, rtol=0, atol=1e-5 * largest)
    assert trace.estimate == pytest.approx(float(np.mean(trace.samples)), rel=1e-12)
    assert trace.standard_error == pytest.approx(np.std(trace.samples, ddof=1) / math.sqrt(60))
    assert trace.standard_error > 0
    assert abs(trace.estimate - float(dense.trace())) <= 3 * trace.standard_error
    assert hessian.hutchinson_trace(operator, samples=1, seed=4).standard_error == 0.0


def test_density_is_gauss_quadrature_of_each_start_and_its_moments_estimate_traces():
    case = tanh_mlp()
    perturb(case.model, seed=14, scale=0.4)
    operator = case.operator("weights")
    size = operator.size
    dense = dense_hessian(case, operator)
    runs, steps = 120, 4
    density = hessian.spectral_density(operator, runs=runs, steps=steps, seed=2)
    assert density.nodes.shape == density.weights.shape == (runs, steps)
    np.testing.assert_allclose(density.weights.sum(axis=1), 1, rtol=0, atol=1e-12)
    # Each run: Σ τ θ^p = vᵀH^p v exactly for p ≤ 2·steps − 1, v the run's documented start.
    generator = torch.Generator().manual_seed(2)
    scale = float(torch.linalg.eigvalsh(dense).abs().max())
    for run in range(runs):
        start = torch.randn(size, generator=generator, dtype=torch.float64)
        start = start / start.norm()
        for power in range(4):
            exact = float(start @ torch.linalg.matrix_power(dense, power) @ start)
            found = float(np.sum(density.weights[run] * density.nodes[run] ** power))
            assert found == pytest.approx(exact, abs=1e-5 * scale**power)
    # Over runs: (1/n) tr(H^p) within 4 standard errors. For v uniform on the unit sphere,
    # Var(vᵀAv) = 2/(n + 2)·(tr(A²)/n − (tr(A)/n)²), here with A = H and A = H².
    moments = hessian.density_moments(density, order=2)
    assert moments[0] == pytest.approx(1, abs=1e-12)
    for power in (1, 2):
        matrix = torch.linalg.matrix_power(dense, power)
        mean = float(matrix.trace()) / size
        variance = 2 / (size + 2) * (float((matrix @ matrix).trace()) / size - mean**2)
        assert abs(moments[power] - mean) <= 4 * math.sqrt(variance / runs)


def test_density_curve_integrates_to_one_and_full_runs_place_nodes_on_the_spectrum():
    case = linear_regression()
    operator = case.operator("all")  # n = 9: steps are capped at n
    dense = dense_hessian(case, operator)
    exact, vectors = torch.linalg.eigh(dense)
    density = hessian.spectral_density(operator, runs=3, steps=50, seed=0)
    assert density.nodes.shape == (3, operator.size)
    scale = float(exact[-1])
    # n steps: every node is an eigenvalue, weighted by the start's squared component along it.
    start = start_vector(operator.size, seed=0)
    np.testing.assert_allclose(density.nodes[0], exact.numpy(), rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(density.weights[0], (vectors.T @ start).pow(2).numpy(), atol=1e-6)
    sigma = 0.05 * scale
    grid = np.linspace(float(exact[0]) - 10 * sigma, scale + 10 * sigma, 4001)
    curve = hessian.density_curve(density, grid, sigma)
    assert curve.shape == grid.shape and np.all(curve >= 0)
    assert np.trapezoid(curve, grid) == pytest.approx(1, abs=1e-6)


# --- bad input and bad points ---------------------------------------------------------------


class Cube(torch.autograd.Function):
    """x³ whose backward autograd cannot differentiate again."""

    @staticmethod
    def forward(context, inputs: torch.Tensor) -> torch.Tensor:
        context.save_for_backward(inputs)
        return inputs**3

    @staticmethod
    @once_differentiable
    def backward(context, upstream: torch.Tensor) -> torch.Tensor:
        (inputs,) = context.saved_tensors
        return upstream * 3 * inputs**2


class CubeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(4, 5)
        self.second = nn.Linear(5, 3)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.second(Cube.apply(self.first(inputs)))


def check(case: Case) -> None:
    parameters = hessian.curvature_parameters(case.model, "weights")
    hessian.check_twice_differentiable(
        case.model, parameters, case.inputs[:4], case.targets[:4], case.loss
    )


def test_check_refuses_a_once_differentiable_function_in_one_line():
    torch.manual_seed(0)
    case = classifier_case(CubeNet(), (4,))
    with pytest.raises(ConfigError) as caught:
        check(case)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("the Hessian needs a loss twice differentiable in the weights")
    assert "once_differentiable" in message
    assert message.endswith("(or, in a sweep, turn hessian.eigenvalues off)")


def test_check_refuses_a_once_differentiable_op_in_the_loss_itself():
    # The loss's own op is the first node of the backward: autograd hands it a gradient
    # without a graph and keeps no error node, so its second derivative would vanish silently.
    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, inputs):  # noqa: ANN001, ANN205 - torch's signature
            ctx.save_for_backward(inputs)
            return inputs.square()

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad):  # noqa: ANN001, ANN205
            (inputs,) = ctx.saved_tensors
            return 2 * inputs * grad

    case = tanh_mlp()
    case.loss = build_loss("squares", function=lambda out, targets: Square.apply(out).sum(dim=1))
    with pytest.raises(ConfigError, match="once_differentiable") as caught:
        check(case)
    assert "\n" not in str(caught.value)


def test_check_refuses_a_loss_that_detaches_the_outputs():
    case = tanh_mlp()

    def detached(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.detach(), targets, reduction="none")

    case.loss = build_loss("detached", function=detached)
    with pytest.raises(ConfigError, match="has no grad_fn") as caught:
        check(case)
    assert "\n" not in str(caught.value)


def test_check_refuses_a_loss_linear_in_the_weights_whose_products_are_all_zero():
    case = tanh_mlp()
    case.model = nn.Linear(4, 3)
    case.loss = build_loss("summed", function=lambda outputs, targets: outputs.sum(dim=1))
    with pytest.raises(ConfigError, match="gradient does not depend on them"):
        check(case)


def test_check_passes_a_normal_model_and_leaves_it_as_it_was():
    case = conv_batch_norm()
    before = {name: tensor.clone() for name, tensor in case.model.state_dict().items()}
    case.model.conv.weight.requires_grad_(False)
    check(case)
    assert not case.model.conv.weight.requires_grad
    for name, tensor in case.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


@pytest.mark.parametrize("poison", [math.nan, math.inf])
def test_a_non_finite_loss_gives_nan_results_not_an_exception_or_a_hang(poison):
    case = tanh_mlp()
    with torch.no_grad():
        case.model[2].bias[0] = poison  # a logit of NaN or inf: the loss is NaN
    operator = case.operator("all")
    found = hessian.extreme_eigenpairs(operator, 1e-3, 100, seed=0, vectors=True)
    assert math.isnan(found.max_eig) and math.isnan(found.min_eig)
    assert math.isnan(found.max_residual) and math.isnan(found.min_residual)
    assert not found.converged and found.products == 1
    assert torch.isnan(found.max_vector).all() and found.max_vector.shape == (operator.size,)
    top = hessian.top_eigenpairs(operator, 2, 1e-3, 100, seed=0, vectors=True)
    assert np.isnan(top.values).all() and not top.converged and top.vectors.shape == (2, 67)
    assert all(
        math.isnan(value)
        for _, value, _, _ in hessian.layer_max_eigenvalues(operator, 1e-3, 100, seed=0)
    )
    assert np.isnan(hessian.spectral_density(operator, runs=2, steps=5, seed=0).weights).all()
