"""Curvature of the mean loss: exact Hessian-vector products over a split, and Lanczos on them.

This module owns the math of curvature. H is the Hessian of the mean loss over a split,

    L(θ) = (Σ_b sum_b) / (Σ_b count_b)      (the (sum, count) pairs of `lsurf.losses`),

with respect to a chosen set of parameter tensors (`curvature_parameters`: the reference's
"weights", tensors with more than one dimension, or "all"), every other tensor fixed, at the
model's current values. `HessianOperator.matvec` computes H·v exactly (up to fp32 rounding,
no finite differences) by differentiating twice through every batch in a fixed order: the
gradient g with its graph kept, then the gradient of ⟨g, v⟩. Under MPI a `reduce` hook sums
the (sum, count) pair across ranks before the one division.

On top of it, one Lanczos core with full reorthogonalization (every new vector orthogonalized
twice against all earlier ones, in float64 on the operator's device) serves every solver:

- `extreme_eigenpairs`: λmax and λmin, both from one Krylov space, whatever their signs;
- `top_eigenpairs`: the k largest eigenvalues (and vectors);
- `layer_max_eigenvalues`: λmax of each parameter tensor's own diagonal block of H;
- `spectral_density` (with `density_curve`, `density_moments`): stochastic Lanczos quadrature;
- `hutchinson_trace`: tr(H) from Rademacher probes (no Lanczos).

Inputs: a model (the caller puts it in eval mode), its parameter tensors, a callable that
yields the split's (inputs, targets) batches afresh, a `Loss`. Outputs: plain values (floats,
NumPy arrays, float64 tensors, frozen dataclasses). No files, no MPI, no config objects.

Memory: the Lanczos basis holds one float64 vector of n entries (n: the entries of the chosen
parameters) per product spent, on the device: 200 products on ResNet-20 (n ≈ 0.27 M) take
0.43 GB. A product keeps one batch's double-backward graph alive at a time.

Determinism: every random vector is drawn on the CPU from `torch.Generator().manual_seed(seed)`
(the same on every device and every rank), so the same model, data and seed give the same
bits. A non-finite loss at the point (NaN or inf products) gives NaN eigenvalues and
`converged=False`, never an exception or an endless loop.

Which solver, and why: Lanczos written in torch rather than SciPy's ARPACK (`eigsh`; SciPy is
not a dependency). One Krylov space yields both ends of the spectrum, where ARPACK needs one
run per end; the vectors stay on the device (no host round trip per product); a seeded start
makes it deterministic. benchmarks/hessian_cost.py measured it (ResNet-20, 64 images, both
ends to the same residual bound tol·max(|λmax|, |λmin|)): at tol 1e-3 this Lanczos spent 20
products at θ and 14 at a perturbed point, ARPACK's two runs 42 and 42 at scipy's default
(its 20-vector space is filled before the first test) and 42 and 26 with ncv = 8; at tol 1e-2,
12 and 10 against 42. One product cost 3.3–3.7 forward + backward passes on 2 CPU threads.

A single-vector Krylov space holds one copy of a repeated eigenvalue, so `top_eigenpairs` can
miss an exact repeat (only an exhausted space is restarted from a fresh random vector); exact
repeats among the top eigenvalues of a network's Hessian are rare.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import nn

from lsurf import params
from lsurf.config import ParamsSelection
from lsurf.errors import ConfigError, LsurfError
from lsurf.losses import Loss, outputs_of

Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]
# Under MPI: (this rank's float64 sum of H·v contributions, its count) -> the global pair.
Reduce = Callable[[torch.Tensor, float], tuple[torch.Tensor, float]]

PARAMETER_CHOICES = ("weights", "all")
# β_j at or below this times |λ|max: the Krylov space is invariant, its Ritz values are exact.
INVARIANT = 1e-12

_TWICE = (
    "the Hessian needs a loss twice differentiable in the weights, but {reason}; use ops with "
    "a second derivative (or, in a sweep, turn hessian.eigenvalues off)"
)


def curvature_parameters(
    model: nn.Module, which: str, names: ParamsSelection | None = None
) -> dict[str, torch.Tensor]:
    """The live parameter tensors the Hessian is taken over, keyed by state_dict key.

    "weights": tensors with more than one dimension (the reference's choice: conv kernels and
    linear matrices, no biases or BN γ/β); "all": every parameter. Tied tensors appear once.
    `names` (hessian.names) keeps those it selects by name: the Hessian is their block.
    """
    if which not in PARAMETER_CHOICES:
        raise ValueError(f"which must be one of {', '.join(PARAMETER_CHOICES)}; got {which!r}")
    movable = params.movable(model, include_buffers=False)
    if names is not None and not names.everything:
        picked = params.select(model, names, key="hessian.names").keys
        movable = {name: tensor for name, tensor in movable.items() if name in picked}
    chosen = {
        name: tensor for name, tensor in movable.items() if which == "all" or tensor.dim() > 1
    }
    if not chosen:
        within = "" if names is None or names.everything else " in hessian.names"
        raise ConfigError(
            f"hessian.params: {which} selects no tensor of this model (it has "
            f"{len(movable)} parameters{within}, none with more than one dimension); set "
            "hessian.params: all"
        )
    return chosen


class HessianOperator:
    """v ↦ H·v for the Hessian of the mean loss over a split, as float64 vectors of n entries.

    A flat vector lists the parameters' entries tensor after tensor in `names` order, each
    tensor in its logical (row-major) order; `block(name)` is that tensor's slice.
    """

    def __init__(
        self,
        model: nn.Module,
        parameters: dict[str, torch.Tensor],
        batches: Batches,
        loss: Loss,
        reduce: Reduce | None = None,
    ) -> None:
        if not parameters:
            raise ValueError("the Hessian needs at least one parameter tensor")
        devices = {tensor.device for tensor in parameters.values()}
        if len(devices) != 1:
            raise ValueError(
                f"the parameters must live on one device; found {sorted(map(str, devices))}"
            )
        self.model = model
        self.loss = loss
        self.names = list(parameters)
        self.shapes = [tuple(tensor.shape) for tensor in parameters.values()]
        self.offsets = [0]  # offsets[i]:offsets[i + 1] is tensor i's slice; the last is n
        for tensor in parameters.values():
            self.offsets.append(self.offsets[-1] + tensor.numel())
        self.size = self.offsets[-1]
        self.device = devices.pop()
        self.products = 0
        self._tensors = list(parameters.values())
        self._index = {name: index for index, name in enumerate(self.names)}
        self._batches = batches
        self._reduce = reduce

    def block(self, name: str) -> slice:
        """The slice of a flat vector holding tensor `name`'s entries."""
        index = self._index[name]
        return slice(self.offsets[index], self.offsets[index + 1])

    def as_tensors(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat vector as views shaped like each parameter tensor, by name."""
        return {
            name: vector[self.block(name)].view(shape)
            for name, shape in zip(self.names, self.shapes, strict=True)
        }

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """H·vector: float64 (n,) on `device` in, float64 (n,) on `device` out.

        Works inside the caller's `torch.inference_mode()` or `no_grad`: the products run with
        inference mode off and gradients on. A tensor made under inference mode (a batch
        cached there, or `vector` itself) cannot be saved for backward, so such an input or
        target is cloned for the batch, and `vector` is copied once into the parameters'
        dtypes. A frozen parameter (requires_grad False) is made differentiable for the
        product and frozen again after: the curvature along it is still defined.

        A model or loss that autograd cannot differentiate twice may raise here, or (a
        Function marked @once_differentiable) silently lose terms: `check_twice_differentiable`
        on a probe batch, before the first product, tells those apart.
        """
        if vector.shape != (self.size,) or vector.dtype != torch.float64:
            raise ValueError(
                f"matvec takes a float64 vector of shape ({self.size},); got "
                f"{vector.dtype} {tuple(vector.shape)}"
            )
        with torch.inference_mode(False), torch.enable_grad(), _differentiable(self._tensors):
            # Made here, so they are ordinary tensors even when the caller is in inference mode.
            total = torch.zeros(self.size, dtype=torch.float64, device=self.device)
            parts = [
                vector[self.offsets[index] : self.offsets[index + 1]]
                .view(tensor.shape)
                .to(device=self.device, dtype=tensor.dtype, copy=True)
                for index, tensor in enumerate(self._tensors)
            ]
            counts: list[int | torch.Tensor] = []
            for inputs, targets in self._batches():
                gradients, batch_count = _gradients(
                    self.model, self._tensors, inputs, targets, self.loss
                )
                products = _second_derivatives(gradients, self._tensors, parts) or []
                del gradients  # the graph now lives only as long as the products need it
                for index, product in enumerate(products):
                    if product is not None:  # None: this tensor's gradient is constant here
                        # reshape, not view: a channels_last kernel's product keeps its strides.
                        total[self.offsets[index] : self.offsets[index + 1]] += product.reshape(-1)
                counts.append(batch_count)
                # The batch's graph goes with `products`: one batch's graph alive at a time.
                del products
        count = _summed(counts)
        if self._reduce is not None:
            total, count = self._reduce(total, count)
        self.products += 1
        return total / count


def _gradients(
    model: nn.Module,
    tensors: list[torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss: Loss,
    traced: bool = False,
) -> tuple[tuple[torch.Tensor | None, ...], int | torch.Tensor]:
    """One batch's gradient of its loss sum w.r.t. `tensors`, with its graph kept (None for a
    tensor the loss does not use), and the batch's count. Gradients on, inference mode off.

    `traced` seeds the backward with a 1 that itself requires grad, so that every node of the
    backward receives a gradient with a graph: a Function marked @once_differentiable then
    leaves its error node in the graph even where it is the first node of the backward (the
    loss's own op), where autograd would otherwise drop its second derivative silently."""
    outputs = cast(torch.Tensor, outputs_of(model(_saveable(inputs)))).float()
    total, count = loss.batch(outputs, _saveable(targets))
    if not total.requires_grad:
        raise ConfigError(
            _TWICE.format(
                reason="the loss does not depend on them (its value has no grad_fn: a "
                ".detach() or a non-differentiable op in the model or the loss)"
            )
        )
    seed = torch.ones_like(total).requires_grad_() if traced else None
    gradients = torch.autograd.grad(
        total, tensors, grad_outputs=seed, create_graph=True, allow_unused=True
    )
    return gradients, count


def _second_derivatives(
    gradients: tuple[torch.Tensor | None, ...],
    tensors: list[torch.Tensor],
    parts: list[torch.Tensor],
) -> list[torch.Tensor | None] | None:
    """The gradient of ⟨gradients, parts⟩ w.r.t. `tensors`: the batch's H·v per tensor (None
    where it is zero), or None when no gradient depends on the parameters at all."""
    terms = [
        (gradient * part).sum()
        for gradient, part in zip(gradients, parts, strict=True)
        if gradient is not None and gradient.requires_grad
    ]
    if not terms:  # the gradient is constant in the parameters: H is zero on this batch
        return None
    # No retain_graph: this backward frees the batch's graph.
    return list(torch.autograd.grad(torch.stack(terms).sum(), tensors, allow_unused=True))


def _saveable(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor`, or an ordinary copy of it when it was made under inference mode (autograd
    refuses to save an inference tensor for backward)."""
    return tensor.clone() if tensor.is_inference() else tensor


@contextmanager
def _differentiable(tensors: list[torch.Tensor]) -> Iterator[None]:
    """Every tensor requires grad inside the block; the frozen ones are frozen again after."""
    frozen = [tensor for tensor in tensors if not tensor.requires_grad]
    for tensor in frozen:
        tensor.requires_grad_(True)
    try:
        yield
    finally:
        for tensor in frozen:
            tensor.requires_grad_(False)


def _summed(counts: list[int | torch.Tensor]) -> float:
    """Σ counts: ints stay exact; tensor counts (a loss's own) are summed in float64."""
    exact = [count for count in counts if isinstance(count, int)]
    if len(exact) == len(counts):
        return sum(exact)
    return float(sum(torch.as_tensor(count).double().cpu() for count in counts))


def check_twice_differentiable(
    model: nn.Module,
    parameters: dict[str, torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss: Loss,
) -> None:
    """Raise a one-line ConfigError unless one Hessian-vector product works on this batch.

    Catches what would otherwise fail (or silently read as zero curvature) at the first point
    of a sweep: a custom autograd Function marked @once_differentiable, an op without a
    double-backward formula, a loss or gradient that does not depend on the parameters. A
    NaN or inf product is not an error: it is the curvature's value at a diverged point.
    """
    tensors = list(parameters.values())
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode(False), torch.enable_grad(), _differentiable(tensors):
        probe = [
            torch.randn(tensor.shape, generator=generator, dtype=torch.float64).to(
                device=tensor.device, dtype=tensor.dtype
            )
            for tensor in tensors
        ]
        try:
            gradients, _ = _gradients(model, tensors, inputs, targets, loss, traced=True)
            # A Function marked @once_differentiable hands autograd a node that raises only
            # when run, and torch.autograd.grad runs only the nodes on a path to the
            # parameters: its second-derivative terms would be dropped without a word.
            blocked = _undifferentiable_node(gradients)
            products = None if blocked else _second_derivatives(gradients, tensors, probe)
        except LsurfError:
            raise
        except Exception as error:  # noqa: BLE001 - autograd or user code, reported as one line
            reason = f"a Hessian-vector product on a probe batch failed: {_reason(error)}"
            raise ConfigError(_TWICE.format(reason=reason)) from None
    if blocked:
        raise ConfigError(
            _TWICE.format(
                reason=f"its gradient passes through a node autograd cannot differentiate "
                f"again ({blocked}: e.g. a custom autograd.Function whose backward is marked "
                "@once_differentiable), whose second-derivative terms would be silently lost"
            )
        )
    # (With the traced seed a constant gradient still has a graph, through the seed alone:
    # then no product term reaches the parameters.)
    if products is None or all(product is None for product in products):
        raise ConfigError(
            _TWICE.format(
                reason="its gradient does not depend on them (no grad_fn: a .detach(), or a "
                "backward computed without a graph), so every product would read as zero"
            )
        )


# Autograd nodes that raise when run: what once_differentiable and missing formulas leave.
_ERROR_NODES = frozenset(
    {"torch::autograd::Error", "torch::autograd::DelayedError", "torch::autograd::NotImplemented"}
)


def _undifferentiable_node(gradients: tuple[torch.Tensor | None, ...]) -> str | None:
    """The name of the first node in the gradients' graph that raises when differentiated
    (an error node), or None when there is none."""
    seen: set[torch.autograd.graph.Node] = set()
    pending = [gradient.grad_fn for gradient in gradients if gradient is not None]
    while pending:
        node = pending.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node.name() in _ERROR_NODES:
            return node.name()
        pending.extend(following for following, _ in node.next_functions)
    return None


def _reason(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:240]


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Extremes:
    """The largest and smallest eigenvalues of H, from one Krylov space."""

    max_eig: float
    min_eig: float
    # Relative residual estimates ‖Hv − θv‖ / max(|θmax|, |θmin|): a λmin near zero cannot be
    # resolved relative to itself, so both are measured against the spectrum's scale.
    max_residual: float
    min_residual: float
    products: int  # Hessian-vector products spent
    converged: bool  # both residuals ≤ tol, or the Krylov space is invariant (values exact)
    max_vector: torch.Tensor | None = None  # unit float64 (n,), when asked
    min_vector: torch.Tensor | None = None


@dataclass(frozen=True)
class TopEigen:
    """The k largest eigenvalues of H."""

    values: np.ndarray  # (k,) descending
    residuals: np.ndarray  # (k,) relative, as Extremes': over max(|θmax|, |θmin|)
    products: int
    converged: bool  # every one of the k residuals ≤ tol, or the Krylov space is invariant
    vectors: torch.Tensor | None = None  # (k, n) float64 orthonormal rows, when asked


@dataclass(frozen=True)
class Trace:
    """Hutchinson's estimate of tr(H)."""

    estimate: float  # the mean of `samples`
    standard_error: float  # std(samples, ddof=1) / √m; 0 for one probe
    samples: np.ndarray  # (m,) each probe's vᵀHv


@dataclass(frozen=True)
class Density:
    """Stochastic Lanczos quadrature of H's spectral density (see `spectral_density`)."""

    nodes: np.ndarray  # (runs, steps) Ritz values of each run, ascending; padding is 0
    weights: np.ndarray  # (runs, steps) squared first components of the Ritz vectors; rows sum to 1


# --- the Lanczos core -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Krylov:
    """Where a Lanczos run ended: T_j's eigenpairs and the orthonormal basis Q_j beside them."""

    values: np.ndarray  # (j,) Ritz values θ, ascending
    coordinates: np.ndarray  # (j, j) T_j's eigenvectors s as columns: Ritz vector Q_jᵀ·s
    residuals: np.ndarray  # (j,) ‖A·y − θ·y‖ = β_j·|last entry of s|, absolute
    basis: torch.Tensor  # (j, n) orthonormal rows q_1 .. q_j
    products: int
    exact: bool  # the space is invariant (or all of R^n): its Ritz values are eigenvalues
    finite: bool  # False: a product held NaN or inf, and no other field means anything

    @property
    def scale(self) -> float:
        return _scale(self.values)

    def relative(self, index: int) -> float:
        return _relative(float(self.residuals[index]), self.scale)

    def ritz_vectors(self, indices: list[int]) -> torch.Tensor:
        """(len(indices), n) Ritz vectors, one row per Ritz value index."""
        chosen = torch.from_numpy(self.coordinates[:, indices].T.copy())
        return chosen.to(self.basis.device) @ self.basis


def _lanczos(
    apply: Callable[[torch.Tensor], torch.Tensor],
    generator: torch.Generator,
    size: int,
    device: torch.device,
    limit: int,
    done: Callable[[np.ndarray, np.ndarray], bool],
    restart: bool = False,
) -> _Krylov:
    """Lanczos on the symmetric operator `apply` over R^size, from a random unit vector.

    After each product the Ritz values of T_j and their residuals are handed to `done`; the
    run stops when it says so, after `limit` products (at most `size`), or when the space is
    invariant (β_j ≤ INVARIANT·max|θ|). With `restart`, an invariant space that is not yet
    `done` continues from a fresh random vector orthogonal to it (T_j gets a zero
    off-diagonal): a top-k search then still finds k eigenvalues.
    """
    steps = min(limit, size)
    # The basis grows by doubling: a run that converges early never holds `limit` rows.
    basis = torch.empty((min(steps, 16), size), dtype=torch.float64, device=device)
    basis[0] = _random_unit(generator, size, device)
    diagonal: list[float] = []  # α_1 .. α_j
    off_diagonal: list[float] = []  # β_1 .. β_{j-1}
    for step in range(1, steps + 1):
        span = basis[:step]
        vector = apply(basis[step - 1])
        if not bool(torch.isfinite(vector).all()):
            return _non_finite(step, size, device)
        # Classical Gram-Schmidt twice against the whole basis. The three-term recurrence
        # alone loses orthogonality once a Ritz value converges, and then ghost copies of it
        # appear; the first pass's last coefficient is α_j, the second pass corrects it.
        first = span @ vector
        vector = vector - first @ span
        second = span @ vector
        vector -= second @ span
        diagonal.append(float(first[-1] + second[-1]))
        norm = float(torch.linalg.vector_norm(vector))
        if not (math.isfinite(norm) and math.isfinite(diagonal[-1])):
            return _non_finite(step, size, device)
        values, coordinates = _tridiagonal_eigenpairs(diagonal, off_diagonal)
        residuals = norm * np.abs(coordinates[-1])
        invariant = norm <= INVARIANT * _scale(values)
        stop = (invariant and not restart) or step in (size, steps) or done(values, residuals)
        if stop:
            exact = invariant or step == size
            return _Krylov(values, coordinates, residuals, span, step, exact, True)
        if invariant:
            following, norm = _orthogonal_unit(generator, span, size, device), 0.0
        else:
            following = vector / norm
        off_diagonal.append(norm)
        if step == basis.shape[0]:
            grown = torch.empty((min(2 * step, steps), size), dtype=torch.float64, device=device)
            grown[:step] = basis
            basis = grown
        basis[step] = following
    raise AssertionError("the loop returns at its last step")


def _tridiagonal_eigenpairs(
    diagonal: list[float], off_diagonal: list[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors (columns) of the symmetric tridiagonal T_j,
    in float64 on the CPU (small, and the same bits whatever device the products ran on)."""
    matrix = torch.diag(torch.tensor(diagonal, dtype=torch.float64))
    if off_diagonal:
        beta = torch.tensor(off_diagonal, dtype=torch.float64)
        matrix += torch.diag(beta, 1) + torch.diag(beta, -1)
    values, vectors = torch.linalg.eigh(matrix)
    return values.numpy(), vectors.numpy()


def _non_finite(products: int, size: int, device: torch.device) -> _Krylov:
    empty = np.empty(0)
    basis = torch.empty((0, size), dtype=torch.float64, device=device)
    return _Krylov(empty, np.empty((0, 0)), empty, basis, products, False, False)


def _generator(seed: int) -> torch.Generator:
    """Random vectors come from the CPU: the same seed gives the same bits on any device."""
    return torch.Generator().manual_seed(seed)


def _random_unit(generator: torch.Generator, size: int, device: torch.device) -> torch.Tensor:
    vector = torch.randn(size, generator=generator, dtype=torch.float64)
    return (vector / torch.linalg.vector_norm(vector)).to(device)


def _orthogonal_unit(
    generator: torch.Generator, span: torch.Tensor, size: int, device: torch.device
) -> torch.Tensor:
    """A random unit vector orthogonal to the rows of `span` (fewer than `size` of them)."""
    vector = _random_unit(generator, size, device)
    for _ in range(2):
        vector -= (span @ vector) @ span
    return vector / torch.linalg.vector_norm(vector)


def _scale(values: np.ndarray) -> float:
    """max(|θ_largest|, |θ_smallest|): the spectrum's scale, which residuals are measured by."""
    return max(abs(float(values[0])), abs(float(values[-1])))


def _relative(residual: float, scale: float) -> float:
    if scale > 0:
        return residual / scale
    return 0.0 if residual == 0 else math.inf  # H·v = 0 on the whole space: exact


def _check_budget(tol: float, max_products: int) -> None:
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number ≥ 0, got {tol}")
    if max_products < 1:
        raise ValueError(f"max_products must be at least 1, got {max_products}")


# --- solvers --------------------------------------------------------------------------------


def extreme_eigenpairs(
    operator: HessianOperator, tol: float, max_products: int, seed: int, vectors: bool = False
) -> Extremes:
    """λmax and λmin of H (and their unit eigenvectors when `vectors`), whatever their signs.

    Lanczos from a seeded N(0, 1) start until both extreme Ritz pairs have relative residual
    ≤ tol, `max_products` products are spent (then `converged` is False and the values are
    the best Ritz values so far, inside the spectrum), or the space is invariant (exact).
    Both residuals are relative to max(|λmax|, |λmin|): a λmin small beside λmax is known to
    about tol·|λmax|, not to tol of itself (on ResNet-20 at tol 1e-2: −13.97 for −14.03).
    """
    _check_budget(tol, max_products)

    def done(values: np.ndarray, residuals: np.ndarray) -> bool:
        scale = _scale(values)
        return max(_relative(residuals[0], scale), _relative(residuals[-1], scale)) <= tol

    krylov = _lanczos(
        operator.matvec, _generator(seed), operator.size, operator.device, max_products, done
    )
    if not krylov.finite:
        nan = math.nan
        blank = _nan_rows(2, operator) if vectors else None
        return Extremes(
            nan,
            nan,
            nan,
            nan,
            krylov.products,
            False,
            None if blank is None else blank[0],
            None if blank is None else blank[1],
        )
    largest, smallest = len(krylov.values) - 1, 0
    max_residual, min_residual = krylov.relative(largest), krylov.relative(smallest)
    pair = krylov.ritz_vectors([largest, smallest]) if vectors else None
    return Extremes(
        max_eig=float(krylov.values[largest]),
        min_eig=float(krylov.values[smallest]),
        max_residual=max_residual,
        min_residual=min_residual,
        products=krylov.products,
        converged=krylov.exact or max(max_residual, min_residual) <= tol,
        max_vector=None if pair is None else pair[0],
        min_vector=None if pair is None else pair[1],
    )


def top_eigenpairs(
    operator: HessianOperator,
    k: int,
    tol: float,
    max_products: int,
    seed: int,
    vectors: bool = False,
) -> TopEigen:
    """The k largest eigenvalues of H, descending (and orthonormal eigenvectors when asked).

    The same Lanczos as `extreme_eigenpairs`, run until the k largest Ritz pairs each have
    relative residual ≤ tol.
    """
    _check_budget(tol, max_products)
    if not 1 <= k <= operator.size:
        raise ValueError(f"k must be between 1 and n = {operator.size}, got {k}")
    if max_products < k:
        raise ValueError(f"k = {k} eigenvalues need max_products ≥ k, got {max_products}")

    def done(values: np.ndarray, residuals: np.ndarray) -> bool:
        if len(values) < k:
            return False
        scale = _scale(values)
        return all(_relative(residual, scale) <= tol for residual in residuals[-k:])

    krylov = _lanczos(
        operator.matvec,
        _generator(seed),
        operator.size,
        operator.device,
        max_products,
        done,
        restart=True,
    )
    if not krylov.finite:
        blank = np.full(k, math.nan)
        rows = _nan_rows(k, operator) if vectors else None
        return TopEigen(blank, blank.copy(), krylov.products, False, rows)
    chosen = list(range(len(krylov.values) - 1, len(krylov.values) - 1 - k, -1))
    residuals = np.array([krylov.relative(index) for index in chosen])
    return TopEigen(
        values=krylov.values[chosen].copy(),
        residuals=residuals,
        products=krylov.products,
        converged=krylov.exact or bool(np.all(residuals <= tol)),
        vectors=krylov.ritz_vectors(chosen) if vectors else None,
    )


def layer_max_eigenvalues(
    operator: HessianOperator, tol: float, max_products: int, seed: int
) -> list[tuple[str, float, float, int]]:
    """(name, λmax of H_ll, its relative residual, products) for each tensor l of `operator`.

    H_ll is the tensor's own diagonal block of H: Lanczos over vectors that are zero outside
    the tensor, keeping only the tensor's part of each product. Only λmax must reach `tol`;
    its residual is relative to the block's own scale. A non-finite loss gives NaN rows.
    """
    _check_budget(tol, max_products)

    def done(values: np.ndarray, residuals: np.ndarray) -> bool:
        return _relative(residuals[-1], _scale(values)) <= tol

    found = []
    for name in operator.names:
        block = operator.block(name)

        def block_product(part: torch.Tensor, block: slice = block) -> torch.Tensor:
            embedded = torch.zeros(operator.size, dtype=torch.float64, device=operator.device)
            embedded[block] = part
            return operator.matvec(embedded)[block]

        krylov = _lanczos(
            block_product,
            _generator(seed),
            block.stop - block.start,
            operator.device,
            max_products,
            done,
        )
        if not krylov.finite:
            found.append((name, math.nan, math.nan, krylov.products))
            continue
        largest = len(krylov.values) - 1
        found.append(
            (name, float(krylov.values[largest]), krylov.relative(largest), krylov.products)
        )
    return found


def hutchinson_trace(operator: HessianOperator, samples: int, seed: int) -> Trace:
    """tr(H) ≈ the mean of vᵀHv over m Rademacher probes v (entries ±1, E[vvᵀ] = I).

    Probe i is the i-th draw of `torch.randint(0, 2, (n,))·2 − 1` from a CPU generator seeded
    with `seed`. The standard error is std(ddof=1)/√m (0 for m = 1).
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    generator = _generator(seed)
    values = np.empty(samples)
    for index in range(samples):
        signs = torch.randint(0, 2, (operator.size,), generator=generator)
        probe = (signs * 2 - 1).to(dtype=torch.float64, device=operator.device)
        values[index] = float(probe @ operator.matvec(probe))
    error = float(values.std(ddof=1) / math.sqrt(samples)) if samples > 1 else 0.0
    return Trace(float(values.mean()), error, values)


def spectral_density(operator: HessianOperator, runs: int, steps: int, seed: int) -> Density:
    """Stochastic Lanczos quadrature: the spectral density φ(t) = (1/n) Σ_i δ(t − λ_i) of H.

    For a unit vector v uniform on the sphere, E[(u_iᵀv)²] = 1/n for every unit eigenvector
    u_i, so vᵀf(H)v = Σ_i f(λ_i)(u_iᵀv)² estimates (1/n) tr f(H) = ∫ f φ without bias. m
    Lanczos steps from v turn vᵀf(H)v into Gauss quadrature Σ_k τ_k f(θ_k): nodes θ_k (the
    Ritz values of T_m) and weights τ_k (the squared first entries of T_m's eigenvectors),
    exact for polynomials f of degree ≤ 2m − 1. Averaging over runs averages over v.

    Run r starts from the r-th draw of N(0, 1)^n from a CPU generator seeded with `seed`,
    normalized. `steps` is capped at n; a run whose space becomes invariant earlier is already
    exact, and its row is padded with node 0 and weight 0. A non-finite run is a row of NaN.
    """
    if runs < 1 or steps < 1:
        raise ValueError(f"runs and steps must be at least 1, got {runs} and {steps}")
    width = min(steps, operator.size)
    nodes = np.zeros((runs, width))
    weights = np.zeros((runs, width))
    generator = _generator(seed)
    for run in range(runs):
        krylov = _lanczos(
            operator.matvec,
            generator,
            operator.size,
            operator.device,
            width,
            lambda values, residuals: False,  # every run takes all its steps
        )
        if not krylov.finite:
            nodes[run] = weights[run] = math.nan
            continue
        used = len(krylov.values)
        nodes[run, :used] = krylov.values
        weights[run, :used] = krylov.coordinates[0] ** 2
    return Density(nodes, weights)


def density_curve(density: Density, grid: np.ndarray, sigma: float) -> np.ndarray:
    """The density broadened by Gaussians of width σ, on `grid`: (1/runs)·Σ τ·N(t; θ, σ²).

    Each run's weights sum to 1, so the curve integrates to 1 when the grid covers the
    spectrum (a few σ beyond both ends).
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    points = np.asarray(grid, dtype=np.float64)
    # (runs, steps, points): every node's Gaussian at every grid point.
    offsets = points[None, None, :] - density.nodes[:, :, None]
    gaussians = np.exp(-0.5 * (offsets / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    return (density.weights[:, :, None] * gaussians).sum(axis=(0, 1)) / density.nodes.shape[0]


def density_moments(density: Density, order: int) -> np.ndarray:
    """(order + 1,) estimates of (1/n) tr(H^p) for p = 0 .. order: the mean over runs of
    Σ τ·θ^p. p = 0 is 1; p = 1 estimates tr(H)/n; p = 2 estimates tr(H²)/n."""
    if order < 0:
        raise ValueError(f"order must be 0 or more, got {order}")
    powers = density.nodes[:, :, None] ** np.arange(order + 1)
    return (density.weights[:, :, None] * powers).sum(axis=1).mean(axis=0)


def _nan_rows(count: int, operator: HessianOperator) -> torch.Tensor:
    """(count, n) NaN: the eigenvectors of a point whose loss is not finite."""
    shape = (count, operator.size)
    return torch.full(shape, math.nan, dtype=torch.float64, device=operator.device)
