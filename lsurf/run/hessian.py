"""`lsurf hessian`: the curvature of the loss at θ*, computed by every rank of a job together.

Input: a validated `SweepConfig` (the sweep's YAML: model, data, evaluation and its `hessian:`
section; grid and directions are not used) and the `Sources` of its model, θ*, data and loss.
hessian.split must be one of data.splits; a sweep checks that only when it computes a Hessian,
so rank 0 checks it here before anything else.
Output: the Hessian analysis file at `config.hessian_file` (lsurf.files.hessian) and its figure
beside it (<stem>.png, lsurf.plot.hessian). What it holds, for the Hessian H of the mean loss
on `hessian.split` with respect to `hessian.params`, in eval mode:

- the `top_k` largest eigenvalues by Lanczos, each with its residual ‖Hv − λv‖ / |λ|max. Each
  wanted eigenvalue needs room in the Krylov space, so this stage may spend up to
  max(hessian.max_products, 20·top_k) products;
- the trace by Hutchinson's estimator (`trace_samples` Rademacher probes) with its standard
  error;
- the eigenvalue density by stochastic Lanczos quadrature (`density_runs` runs of
  `density_steps` steps), stored as nodes and weights and as a curve: each node a Gaussian of
  width σ = 1% of the span of the Ritz values found (the quadrature's nodes and the top
  eigenvalues), on a grid reaching 6σ past both ends, so the curve integrates to 1 and its
  resolution follows the spectrum whatever the loss's units;
- λmax of each parameter tensor's own diagonal block (`per_layer`), from an operator over
  that tensor alone (whose Hessian is exactly the block).

Every rank takes part, none is a master: rank 0 checks the output and loads θ*, and sends it
to the others; each rank builds the model and opens the split on its own device (a GPU by
node-local rank, or a share of the cores) and takes the batches b with b % ranks == rank of
the split's fixed order. Each Hessian-vector product's (sum, count) is summed over the ranks
(`mpi.Group.sum`) so that every rank holds the same bits and runs the same Lanczos; each
sum also carries what it is for (the stage, or the tensor), and rank 0 ends the job (exit 1)
should the ranks ever part ways (unequal hardware rounding differently) rather than hang. Bad
input anywhere — a missing checkpoint, data a rank cannot read, a loss that is not twice
differentiable — is found before any product, agreed on by all ranks, and reported by rank 0 as
one line naming the rank; nothing is written. Rank 0 alone writes the file and the figure.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

from lsurf.config import SweepConfig, check_hessian_split
from lsurf.data.splits import SplitData
from lsurf.errors import ConfigError, LsurfError, OutputError
from lsurf.evaluate import check_second_derivatives, configure_backends, pick_device
from lsurf.files import hessian as hessian_file
from lsurf.hessian import (
    HessianOperator,
    curvature_parameters,
    density_curve,
    hutchinson_trace,
    layer_max_eigenvalues,
    spectral_density,
    top_eigenpairs,
)
from lsurf.losses import Loss
from lsurf.run import mpi
from lsurf.run.phases import FROM_CONFIG, Sources
from lsurf.run.progress import Log, to_stderr
from lsurf.schema import to_yaml

TOP_K_PRODUCTS = 20  # top-k may spend up to max(hessian.max_products, 20·k) products
SIGMA_FRACTION = 0.01  # the density curve's Gaussian width, as a fraction of the spectrum's span
GRID_SIGMAS = 6.0  # the curve's grid reaches this many σ past the extreme Ritz values
GRID_POINTS = 2001
# What each `Group.sum` is for (its `step`): the same on every rank while they keep in step.
STEP_TOP, STEP_TRACE, STEP_DENSITY, STEP_END, STEP_FIRST_LAYER = 1, 2, 3, 4, 10


def _quiet(message: str) -> None:
    pass


@dataclass(frozen=True)
class HessianOutcome:
    path: Path  # the analysis file
    figure: Path
    analysis: hessian_file.HessianAnalysis


def run_hessian(
    config: SweepConfig, force: bool = False, log: Log = to_stderr, sources: Sources = FROM_CONFIG
) -> HessianOutcome | None:
    """Analyse the Hessian at θ*: serially, or with every rank of an mpiexec/srun job.

    Returns the outcome on rank 0 (None on the other ranks). Bad input raises `LsurfError` on
    rank 0, before anything is written; the other ranks leave quietly (`SystemExit(0)`), so
    that rank 0, reporting the error, is the one that ends the job with its exit code 2.
    """
    group = mpi.join(mpi.Group)
    if group is None:
        return _analyse(config, force, log, sources, None)
    try:
        return _analyse(config, force, log if group.rank == 0 else _quiet, sources, group)
    except (LsurfError, SystemExit, KeyboardInterrupt):
        raise  # every rank knows; rank 0 reports
    except mpi.OutOfStep as error:
        to_stderr(f"lsurf: error: rank 0: {error}")
        group.abort(1)
    except Exception:
        # A bug, or a crash in user code: the other ranks would wait in the next sum forever.
        to_stderr(f"{group.name_rank(group.rank)} failed:\n{traceback.format_exc().rstrip()}")
        group.abort(1)


# ---------------------------------------------------------------------------- phases


@dataclass(frozen=True)
class _Loaded:
    """What each rank holds for the run: the model at θ* on its device, its share of the
    split, the loss, and the parameters the Hessian is taken over."""

    model: torch.nn.Module
    split: SplitData
    loss: Loss
    parameters: dict[str, torch.Tensor]
    batch_size: int
    group: mpi.Group | None

    @property
    def size(self) -> int:
        return sum(tensor.numel() for tensor in self.parameters.values())

    @property
    def batches(self) -> int:
        """In the whole split (every rank's together)."""
        return math.ceil(len(self.split) / self.batch_size)

    def operator(self, step: int, names: list[str] | None = None) -> HessianOperator:
        """H over the parameters `names` (all by default): with a single name, exactly that
        tensor's diagonal block. Each product is summed over the ranks, tagged `step`."""
        chosen = self.parameters if names is None else {n: self.parameters[n] for n in names}
        group = self.group
        rank, ranks = (0, 1) if group is None else (group.rank, group.size)
        reduce = None if group is None else _summed_over(group, step)
        return HessianOperator(
            self.model,
            chosen,
            lambda: _share(self.split, self.batch_size, rank, ranks),
            self.loss,
            reduce,
        )


def _analyse(
    config: SweepConfig,
    force: bool,
    log: Log,
    sources: Sources,
    group: mpi.Group | None,
) -> HessianOutcome | None:
    rank, ranks = (0, 1) if group is None else (group.rank, group.size)
    path = config.hessian_file
    hessian = config.hessian

    # check (rank 0): the Hessian's split is evaluated, the output may be written, θ* loads
    failure, state, digest = None, None, ""
    if rank == 0:
        try:
            check_hessian_split(config)
            _check_output(config, force)
            model = sources.build_model(config.model)
            digest = sources.load_origin(model, config.model)
            state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
        except LsurfError as error:
            failure = str(error)
    if group is not None:
        failure, state, digest = group.broadcast((failure, state, digest))
    if failure is not None:
        _stop(group, [(0, failure)])
    assert state is not None

    # load (every rank): model, data, loss, and the check of second derivatives
    try:
        loaded = _load(config, state, sources, group)
        problem = None
    except LsurfError as error:
        problem = str(error)
    failures = [(rank, problem)] if problem is not None else []
    if group is not None:
        failures = group.gather_failures(problem)
    if failures:
        _stop(group, failures)
    log(
        f"hessian of the mean loss on {hessian.split} at θ* ({len(loaded.split)} examples, "
        + _batching(loaded.batches, loaded.batch_size, len(loaded.split))
        + (f", on {ranks} ranks" if ranks > 1 else "")
        + f"): {loaded.size} parameters ({hessian.params}"
        + ("" if hessian.names.everything else f", {hessian.names.describe()}")
        + ")"
    )

    # run: the same stages on every rank, in step through the sums of their products
    try:
        analysis = _run_stages(config, loaded, log)
    except LsurfError as error:  # found alike by every rank (a non-finite loss at θ*)
        _stop(group, [(rank, str(error))])
    if group is not None:  # a rank still inside a stage would meet this sum: out of step
        group.sum(np.zeros(0), 0.0, STEP_END)

    if rank != 0:
        return None
    _check_output(config, force)  # created meanwhile by someone else?
    attributes = {
        "config": to_yaml(config),
        "checkpoint_sha256": digest,
        "split": hessian.split,
        "params": hessian.params,
        **({} if hessian.names.everything else {"names": hessian.names.describe()}),
        "loss": config.evaluation.loss,
        "parameters": loaded.size,
        "examples": len(loaded.split),
        "batch_size": loaded.batch_size,
        "ranks": ranks,
        "tol": hessian.tol,
        "seed": hessian.seed,
    }
    hessian_file.write_hessian_file(path, analysis, attributes)
    from lsurf.plot.hessian import write_spectrum_figure

    figure = write_spectrum_figure(hessian_file.read_hessian_file(path), figure_path(path))
    total = sum(analysis.products.values())
    log(f"hessian analysis written to {path} and {figure} ({total} products in all)")
    return HessianOutcome(path, figure, analysis)


def figure_path(path: Path) -> Path:
    """Where the figure of the analysis file `path` goes: beside it, as <stem>.png."""
    return path.with_suffix(".png")


def _check_output(config: SweepConfig, force: bool) -> None:
    path = config.hessian_file
    if path in (config.output, config.direction_file):
        raise ConfigError(
            f"hessian.output {path} is the sweep's own output or direction file; "
            "choose another path (or leave hessian.output out)"
        )
    if path.exists() and not force:
        raise OutputError(
            f"{path} already exists; pass --force to replace it, or set hessian.output to "
            "another path"
        )


def _stop(group: mpi.Group | None, failures: list[tuple[int, str]]) -> NoReturn:
    """Bad input found (the same list on every rank): rank 0 reports the first, all stop."""
    failed_rank, message = failures[0]
    if group is None:
        raise LsurfError(message)
    if group.rank == 0:
        raise LsurfError(f"{group.name_rank(failed_rank)}: {message}")
    raise SystemExit(0)  # quietly: rank 0 reports the error and ends the job with its code


def _load(
    config: SweepConfig,
    state: dict[str, torch.Tensor],
    sources: Sources,
    group: mpi.Group | None,
) -> _Loaded:
    """This rank's model at θ*, the split on its device, the loss and the parameters,
    checked: the loss has second derivatives, top_k fits the Hessian."""
    hessian = config.hessian
    device = _device(config, group)
    configure_backends("fp32")  # fp32 means fp32: TF32 would round away small curvature
    model = sources.build_model(config.model)
    model.load_state_dict(state)
    channels_last = config.evaluation.channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    # torch's overloads of Module.to lack (device=, memory_format=), which it takes
    model = model.to(device=device, memory_format=memory_format).eval()  # type: ignore[call-overload]
    split = sources.open_split(config.data, hessian.split, device, channels_last)
    loss = sources.loss(config.evaluation.loss)
    # raises if it selects none, or if a hessian.names glob matches no name
    parameters = curvature_parameters(model, hessian.params, hessian.names)
    loaded = _Loaded(model, split, loss, parameters, _batch_size(config), group)
    if hessian.top_k > loaded.size:
        raise ConfigError(
            f"hessian.top_k is {hessian.top_k} but the Hessian has only {loaded.size} rows "
            f"(hessian.params: {hessian.params}); lower hessian.top_k"
        )
    check_second_derivatives(model, split, parameters, loss)
    return loaded


def _batch_size(config: SweepConfig) -> int:
    return config.hessian.batch_size or config.data.batch_size


def _device(config: SweepConfig, group: mpi.Group | None) -> torch.device:
    requested = config.evaluation.device
    if group is None:
        return pick_device(requested)
    cuda = requested != "cpu" and torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        pick_device("cuda")  # raises the one-line error
    placement = group.placement(torch.cuda.device_count() if cuda else 0)
    torch.set_num_threads(placement.threads)
    device = torch.device(placement.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _share(
    split: SplitData, batch_size: int, rank: int, ranks: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's batches: every `ranks`-th batch of the split's fixed order from `rank` on."""
    for index, batch in enumerate(split.batches(batch_size)):
        if index % ranks == rank:
            yield batch


def _summed_over(
    group: mpi.Group, step: int
) -> Callable[[torch.Tensor, float], tuple[torch.Tensor, float]]:
    """The operator's hook: a product's (float64 sum, count) summed over every rank."""

    def reduce(hv_sum: torch.Tensor, count: float) -> tuple[torch.Tensor, float]:
        values = hv_sum.detach().to("cpu", torch.float64).numpy()
        total, count = group.sum(values, float(count), step)
        return torch.from_numpy(total).to(hv_sum.device), count

    return reduce


# ---------------------------------------------------------------------------- stages


def _run_stages(config: SweepConfig, loaded: _Loaded, log: Log) -> hessian_file.HessianAnalysis:
    """Top-k, trace, density and per-layer λmax, one progress line each."""
    hessian = config.hessian
    spent: dict[str, int] = {}

    operator = loaded.operator(STEP_TOP)
    budget = max(hessian.max_products, TOP_K_PRODUCTS * hessian.top_k)
    top = top_eigenpairs(operator, hessian.top_k, hessian.tol, budget, hessian.seed)
    spent["top"] = operator.products
    values = np.asarray(top.values, dtype=np.float64)
    residuals = np.asarray(top.residuals, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise LsurfError(
            f"the loss on {hessian.split} or its gradient is not finite at θ* (a Hessian-vector "
            "product held NaN or inf); check the checkpoint and the data"
        )
    note = (
        ""
        if top.converged
        else f"; NOT converged to hessian.tol {hessian.tol:g} within {budget} products "
        "(raise hessian.max_products)"
    )
    log(
        f"top-{hessian.top_k} eigenvalues: {_listed(values)}; max residual "
        f"{residuals.max():.1e}, {spent['top']} products{note}"
    )

    operator = loaded.operator(STEP_TRACE)
    trace = hutchinson_trace(operator, hessian.trace_samples, hessian.seed)
    spent["trace"] = operator.products
    log(
        f"trace: {trace.estimate:.6g} ± {trace.standard_error:.2g} (Hutchinson, "
        f"{len(trace.samples)} probes), {spent['trace']} products"
    )

    operator = loaded.operator(STEP_DENSITY)
    density = spectral_density(operator, hessian.density_runs, hessian.density_steps, hessian.seed)
    spent["density"] = operator.products
    nodes = np.asarray(density.nodes, dtype=np.float64)
    weights = np.asarray(density.weights, dtype=np.float64)
    used = nodes[weights > 0]  # a run that ended early is padded with weight-0 nodes
    grid, sigma = density_grid(used, values)
    curve = np.asarray(density_curve(density, grid, sigma), dtype=np.float64)
    runs, steps = nodes.shape  # steps: at most the Hessian's size
    log(
        f"density: {runs} runs x {steps} Lanczos steps, Ritz values in "
        f"[{used.min():.4g}, {used.max():.4g}], {spent['density']} products"
    )

    layers: list[tuple[str, float, float, int]] = []
    if hessian.per_layer:
        # One operator per tensor, over that tensor alone: its Hessian is exactly the
        # tensor's diagonal block, each product differentiates once less, and each block's
        # Lanczos run has a `step` of its own, so ranks that parted ways are caught at once.
        for index, name in enumerate(loaded.parameters):
            block = loaded.operator(STEP_FIRST_LAYER + index, [name])
            layers += layer_max_eigenvalues(block, hessian.tol, hessian.max_products, hessian.seed)
        spent["layers"] = sum(count for _, _, _, count in layers)
        largest = max(layers, key=lambda row: row[1])
        log(
            f"per-layer λmax: {len(layers)} tensors, the largest {largest[1]:.6g} "
            f"({largest[0]}), {spent['layers']} products"
        )
    return hessian_file.HessianAnalysis(
        top_eigenvalues=values,
        top_residuals=residuals,
        top_converged=bool(top.converged),
        trace=float(trace.estimate),
        trace_standard_error=float(trace.standard_error),
        trace_probes=np.asarray(trace.samples, dtype=np.float64),
        density_nodes=nodes,
        density_weights=weights,
        density_grid=grid,
        density_curve=curve,
        density_sigma=sigma,
        layer_names=tuple(name for name, _, _, _ in layers),
        layer_max_eigenvalues=np.array([row[1] for row in layers], dtype=np.float64),
        layer_residuals=np.array([row[2] for row in layers], dtype=np.float64),
        layer_products=np.array([row[3] for row in layers], dtype=np.int64),
        products=spent,
    )


def density_grid(nodes: np.ndarray, top: np.ndarray) -> tuple[np.ndarray, float]:
    """The grid of the density curve and the Gaussian width σ (see the module docstring),
    from the quadrature's nodes (those of weight > 0) and the top eigenvalues."""
    found = np.concatenate([nodes.ravel(), top.ravel()])
    low, high = float(found.min()), float(found.max())
    span = high - low
    if not span > 0:  # a single eigenvalue (a multiple of the identity): a width of its own
        span = max(abs(high), 1.0)
    sigma = SIGMA_FRACTION * span
    grid = np.linspace(low - GRID_SIGMAS * sigma, high + GRID_SIGMAS * sigma, GRID_POINTS)
    return grid, sigma


def _listed(values: np.ndarray) -> str:
    return ", ".join(f"{value:.6g}" for value in values)


def _batching(batches: int, batch_size: int, examples: int) -> str:
    """How the split is batched, in words: "1 batch", "4 batches of 256" (the last smaller)."""
    if batches == 1:
        return "1 batch"
    last = examples - (batches - 1) * batch_size
    return f"{batches} batches of {batch_size}" + (
        f" (the last of {last})" if last != batch_size else ""
    )
