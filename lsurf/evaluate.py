"""Evaluating one grid point: move the model to θ* + a·d1 + b·d2 in place, measure each metric.

Input: a model already holding θ*, the directions, the data splits (cached on the device or
streamed, see lsurf.data.splits), the loss and a device. Output: for each column of the surface
file (a metric on a split: `train_loss`, `test_acc`, ...) its value at (a, b). No I/O and no
MPI here: the same evaluator serves the serial sweep and every MPI worker.

The model is never deep-copied: θ* and the directions live once on the device and each point
writes θ* + a·d1 + b·d2 straight into the model's tensors (θ* itself, bit for bit, at (0, 0)).
With an end point (an interpolation) the point is lerp(θ*, end, a) (+ b·d2), exactly θ* at
a = 0 and exactly the end at a = 1; through three checkpoints it is (1 − a − b)·θ* + a·end +
b·y_end, exactly each checkpoint at (0, 0), (1, 0) and (0, 1). Which tensors move (BN running
statistics too, or not) is the directions' to say. The evaluator never asks what kind of
directions it holds.

Metrics follow lsurf.metrics' table: each row that combines by "mean" is a sum and a count per
batch (the loss's own, or correct answers over examples for accuracy), accumulated in float64
on the device and divided once per split. Which columns a sweep has is decided by a probe:
one small batch of each split through the model at θ*, before anything is written, which is
also where a model that cannot take the data, or a loss that returns the wrong shape, is
caught as one line of bad input.

With `Curvature` settings the rows that combine by "solver" join them: at every point, after
the losses, Lanczos on exact Hessian-vector products over one split (lsurf.hessian) gives
λmax and λmin of the Hessian of that split's mean loss, the residual each reached and the
products spent. The probe checks first that the loss is twice differentiable in the weights.
A point whose loss is NaN or inf gets NaN eigenvalues without a solve (its map is masked
there, as the loss map is).

With `StandardErrors` settings (`evaluation.standard_errors`, `evaluation.rel_error`) each
split's loss also gets its standard error (`{split}_loss_se`, lsurf.losses.Moments): the
error of the point's value as an estimate of the split's mean (what a pass over every
example gives), whichever estimator made it: 0 for a point that used every example, and
with the finite-population factor √(1 − n/N) for one that used n of N. With a relative
target each point visits the split in a seeded order (lsurf.data.splits.seeded_order) and stops
after the first batch at which it has used at least `min_examples` examples and SE ≤
rel_error·|mean| (or its mean is already inf/NaN: more examples cannot make it finite), the
SE of that test taken without the finite-population factor while examples remain (so points
stop where they stopped before the factor was stored, and within the target); the loss, its
SE and the accuracy are then over the examples used, and `{split}_examples` says how many.
The check runs on the host in float64 after each batch from the device's sums (one sync per
batch, only once `min_examples` are in), so where a point stops depends only on its values:
the same on any rank. With `control_variate` (opt-in, with a target) the estimate leans on
one pass over the whole split at θ* at set-up (`Baseline`): stratified by class with θ*'s
loss of the same examples as covariate where the targets are class labels
(lsurf.losses.stratified_mean_and_error), θ*'s loss alone otherwise
(controlled_mean_and_error). A point that stops early stores that estimate and its SE; one
that uses every example keeps the loss's usual bits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from torch import nn

from lsurf import compilation, hessian, params
from lsurf.config import ParamsSelection
from lsurf.data.cifar import Split
from lsurf.data.splits import CachedSplit, SplitData
from lsurf.directions import Directions
from lsurf.errors import ConfigError, DataError, LsurfError
from lsurf.folding import Folded, fold_batch_norm, fuse_activations, with_moved_norms
from lsurf.losses import (
    Baseline,
    Loss,
    Moments,
    Population,
    build_loss,
    classifies,
    outputs_of,
)
from lsurf.metrics import ACCURACY, CURVATURE, EXAMPLES, LOSS, LOSS_SE, Column

PROBE_EXAMPLES = 4  # a probe batch: enough to see shapes, too small to cost anything
# The largest difference between folded and unfolded outputs on a probe batch, relative to the
# largest output, that is fp32 rounding (seen: 1e-7 to 2e-6 on the model zoo); beyond it the
# folded graph is not the model (a module tracing changed), and the model is evaluated.
FOLDING_TOLERANCE = 1e-4
# The same for the compiled network against the eager one (other kernels, other sums), by
# whether autocast rounds to bf16 (8 bits: compiled and eager round differently).
COMPILE_TOLERANCE = {False: 1e-3, True: 5e-2}


@dataclass(frozen=True)
class SplitResult:
    loss: float  # the mean loss (inf/NaN when the perturbed model overflows)
    accuracy: float  # percent correct


@dataclass(frozen=True)
class Curvature:
    """How the eigenvalue columns are computed (the sweep's `hessian:` settings)."""

    split: str  # whose mean loss the Hessian is of
    params: str  # 'weights' (tensors with more than one dimension) or 'all'
    tol: float  # relative residual each extreme Ritz pair must reach
    max_products: int  # Hessian-vector products per point at most
    seed: int  # the Lanczos start vector, the same at every point
    batch_size: int  # examples per double-backprop batch
    names: ParamsSelection = ParamsSelection()  # hessian.names: the parameters, by name


@dataclass(frozen=True)
class NormStatistics:
    """BatchNorm running statistics re-estimated at every point (`evaluation.bn_recompute`;
    REPAIR, Jordan et al. 2022, and dnn-mode-connectivity's `update_bn` do the same): each
    BatchNorm's statistics reset, then train-mode forward passes without gradients over the
    first `examples` examples of `split` in the seeded order `seed` gives
    (lsurf.data.splits.seeded_order), in batches of the sweep's batch size, each BatchNorm
    averaging the batches' statistics with equal weight (momentum None); then eval mode."""

    split: SplitData  # the examples' split (train)
    name: str  # its name, for messages
    examples: int
    seed: int


@dataclass(frozen=True)
class StandardErrors:
    """How precisely each point's loss is measured (the evaluation's standard_errors,
    rel_error and min_examples; data.subset_seed for the order)."""

    rel_error: float | None  # stop once SE ≤ rel_error·|mean|; None: every example, in order
    min_examples: int  # examples a point uses at least before it may stop
    order_seed: int  # the seeded order early stopping visits examples in
    # Early stopping only: estimate each point's loss with control variates from one pass
    # over every example at θ* at set-up (class strata and θ*'s loss; lsurf.losses).
    control_variate: bool = False

    def stops(self, examples: int, moments: Moments) -> bool:
        """Whether a point may stop after `examples` examples whose loss units `moments` sums:
        the test reads the standard error without the finite-population factor (which would
        only let a point stop sooner), so the stored one is within the target too."""
        if self.rel_error is None or examples < self.min_examples:
            return False
        mean, error = moments.estimate(corrected=False)
        return not math.isfinite(mean) or error <= self.rel_error * abs(mean)


def error_columns(found: list[Column], errors: StandardErrors) -> list[Column]:
    """`found` with each split's loss standard error after its loss, and its examples used
    after that when points stop early."""
    added = [LOSS_SE] if errors.rel_error is None else [LOSS_SE, EXAMPLES]
    widened = []
    for column in found:
        widened.append(column)
        if column.metric is LOSS:
            widened += [Column(column.split, metric) for metric in added]
    return widened


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


def configure_backends(precision: str) -> None:
    """fp32 means fp32, and the same point gives the same bits on every rank."""
    # PyTorch lets cuDNN convolutions use TF32 by default on Ampere and newer GPUs, which
    # keeps 10 mantissa bits: enough to blur the small perturbations of a fine grid.
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    # cuDNN may only use its deterministic algorithms, chosen the same way in every process.
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


class Evaluator:
    """Holds θ*, the directions and the data on one device; evaluates points by coordinates."""

    # Standard errors and early stopping: off unless `estimate_errors` turns them on.
    errors: StandardErrors | None = None
    # What evaluation.compile: auto chose for this evaluator (None: compile was forced), which
    # rank 0 records in the surface file's config.
    compile_choice: bool | None = None

    def __init__(
        self,
        model: nn.Module,
        directions: Directions,
        splits: Mapping[str, SplitData | Split | tuple[torch.Tensor, torch.Tensor]],
        batch_size: int,
        device: torch.device,
        channels_last: bool = True,
        precision: str = "fp32",
        loss: Loss | None = None,
        curvature: Curvature | None = None,
        fold_bn: bool = False,
        compile: bool = False,
        norm_statistics: NormStatistics | None = None,
        compile_cache: Path | None = None,
    ) -> None:
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # torch's overloads of Module.to lack (device=, memory_format=), which it takes
        self.model = model.to(device=device, memory_format=memory_format).eval()  # type: ignore[call-overload]
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        self.loss = loss or build_loss("cross_entropy")
        configure_backends(precision)
        # The live tensors the directions move, and θ* (the checkpoint's values) beside them.
        # Only the tensors with a direction: a directions.params selection leaves the others
        # out, so they are never written and stay θ*'s, bit for bit.
        movable = params.movable(self.model, include_buffers=directions.moves_buffers)
        self.live = {key: tensor for key, tensor in movable.items() if key in directions.x}
        self.origin = params.snapshot(self.live)
        self.x = {key: directions.x[key].to(device) for key in self.live}
        self.y = (
            None if directions.y is None else {k: directions.y[k].to(device) for k in self.live}
        )
        self.end, self.y_end = (
            None if end is None else {k: end[k].to(device, torch.float32) for k in self.live}
            for end in (directions.end, directions.y_end)
        )
        self.splits = {
            name: split
            if isinstance(split, SplitData)
            else _cached(name, split, device, memory_format)
            for name, split in splits.items()
        }
        self.curvature = curvature
        self.norm_statistics = norm_statistics
        self._norms = [
            m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]
        if norm_statistics is not None:
            _check_norm_statistics(norm_statistics)
        self.columns = self._probe()
        # What each point runs: the model, or the model with BN folded into its convolutions
        # (lsurf.folding; refolded after every move). The Hessian always takes the model.
        self.notes: list[str] = []  # what the sweep's log should say about this evaluator
        if norm_statistics is not None:
            statistics = norm_statistics
            self.notes.append(
                f"BN statistics recomputed at every point over {statistics.examples} "
                f"{statistics.name} examples (seed {statistics.seed})"
                if self._norms
                else "no BatchNorm in the model: evaluation.bn_recompute changes nothing"
            )
        # Per split, θ*'s loss units in the order points visit them (early stopping's control
        # variate); empty unless `estimate_errors` asks for it.
        self.baselines: dict[str, Baseline] = {}
        self._compiled: nn.Module | None = None
        self._fused: nn.Module | None = None  # lsurf.folding.fuse_activations' network
        self.folded = Folded(self.model)
        if fold_bn:
            self._fold()
        self._fold_bn = fold_bn
        if compile:
            self.compile_network(compile_cache)
        # Per split, whether it has an accuracy column: decided once, not at every point.
        self._accuracy = {column.split for column in self.columns if column.metric is ACCURACY}
        self.hessian = None if curvature is None else self._hessian_operator(curvature)

    def _hessian_operator(self, curvature: Curvature) -> hessian.HessianOperator:
        """The Hessian of the curvature split's mean loss w.r.t. the live parameters, checked
        on the probe batch for a second derivative (one line of bad input if there is none)."""
        if curvature.split not in self.splits:
            raise ConfigError(
                f"hessian.split is {curvature.split!r} but the sweep evaluates "
                f"{', '.join(self.splits)}; add it to data.splits"
            )
        return curvature_operator(self.model, self.splits[curvature.split], curvature, self.loss)

    @property
    def network(self) -> nn.Module:
        """The module each point's forward passes run: compiled, where it was; else the folded
        network with its convolutions fused with their ReLUs, where they were; else the
        folded network (the model itself where nothing folded)."""
        if self._compiled is not None:
            return self._compiled
        return self.folded.network if self._fused is None else self._fused

    @torch.inference_mode()
    def compile_network(self, cache: Path | None = None) -> None:
        """torch.compile of the network, paid now: a pass over a whole batch and the last
        (shorter) batch of each split compiles every shape a point meets, and checks the
        compiled outputs against the eager ones. Any failure (an operation the compiler does
        not support, no C++ compiler for the CPU backend) or a disagreement leaves the eager
        network in place, with a note saying why: a slower sweep, never a wrong value. With a
        `cache` folder, inductor keeps its kernels there (lsurf.compilation), and a network
        compiled there once is marked, so the next process finds it warm."""
        if cache is not None:
            compilation.use_cache(cache)
        hits_before = _cache_hits()
        started = time.perf_counter()
        try:
            # A module compiles to a module (OptimizedModule); torch.compile's stub says Callable.
            compiled = cast(nn.Module, torch.compile(self.folded.network))
            for name, split in self.splits.items():
                sizes = {min(self.batch_size, len(split)), len(split) % self.batch_size} - {0}
                for size in sorted(sizes, reverse=True):
                    inputs, _ = split.first(size)
                    with torch.autocast(self.device.type, torch.bfloat16, enabled=self._bf16):
                        expected = _tensor(self.folded.network(inputs)).float()
                        found = _tensor(compiled(inputs)).float()
                    apart = _apart(found, expected)
                    if not apart <= COMPILE_TOLERANCE[self._bf16]:
                        self.notes.append(
                            f"not compiled: the compiled network's outputs on a {name} batch "
                            f"differ from the eager ones by {apart:.2g} of their largest"
                        )
                        return
        except Exception as error:  # noqa: BLE001 - any compiler failure: evaluate eagerly
            self.notes.append(f"not compiled: torch.compile failed ({_reason(error)})")
            return
        self._compiled = compiled
        seconds = time.perf_counter() - started
        hits = _cache_hits() - hits_before
        where = "" if cache is None else f", cache {cache}"
        self.notes.append(
            f"compiled with torch.compile in {seconds:.0f} s ({hits} graphs from the cache{where})"
        )
        if cache is not None:
            key = compilation.graph_key(
                self.model, self.batch_size, self.precision, self._fold_bn, self.device.type
            )
            compilation.mark_compiled(cache, key)

    @torch.inference_mode()
    def flops_per_example(self) -> float:
        """Floating-point operations per example of the model's convolutions and linear
        layers (2 per multiply-add), counted by forward hooks on the first split's probe
        batch: the same count on every worker, and what torch's FlopCounterMode gives for
        the zoo's networks, without the seconds of imports its first use costs every sweep.
        Work outside such modules (attention's matmuls, a transformers Conv1D) is left out,
        which errs toward eager; 0 where the forward fails."""
        split = next(iter(self.splits.values()))
        inputs, _ = split.first(min(PROBE_EXAMPLES, len(split)))
        total = 0

        def count(module: nn.Module, _: object, output: object) -> None:
            nonlocal total
            if not isinstance(output, torch.Tensor):
                return
            if isinstance(module, nn.Linear):
                fan_in = module.in_features
            elif isinstance(module, nn.modules.conv._ConvNd):
                fan_in = module.in_channels // module.groups * math.prod(module.kernel_size)
            total += 2 * output.numel() * fan_in

        hooks = [
            module.register_forward_hook(count)
            for module in self.model.modules()
            if isinstance(module, nn.modules.conv._ConvNd | nn.Linear)
        ]
        try:
            self.model(inputs)
        except Exception:  # noqa: BLE001 - no count: auto stays eager
            return 0.0
        finally:
            for hook in hooks:
                hook.remove()
        return total / max(len(inputs), 1)

    @property
    def _bf16(self) -> bool:
        return self.precision == "bf16"

    def _fold(self) -> None:
        """BN folded into the convolutions (lsurf.folding), with a note saying what folded."""
        probes = {
            name: split.first(min(PROBE_EXAMPLES, len(split)))[0]
            for name, split in self.splits.items()
        }
        self.folded = self._checked_fold(probes)
        if self.folded.count:
            self.notes.append(f"BN folded into {self.folded.count} convolutions")
        elif not self.folded.skipped:
            self.notes.append(f"BN not folded: {self.folded.reason}")
        # Each pair the probe batches' shapes leave unfolded, by name.
        self.notes += [f"BN not folded: {skipped}" for skipped in self.folded.skipped]
        if self.folded.count and self.device.type == "cpu" and self.precision == "fp32":
            self._fuse(probes)

    def _fuse(self, probes: dict[str, torch.Tensor]) -> None:
        """The folded convolutions fused with the ReLUs after them (lsurf.folding), where the
        fused network gives the model's outputs on every probe batch; a note either way."""
        try:
            fused, count = fuse_activations(self.folded)
            differs = _disagreement(self.model, fused, probes, "") if count else ""
        except Exception as error:  # noqa: BLE001 - a oneDNN call that refuses: unfused
            self.notes.append(f"ReLU not fused: {_reason(error)}")
            return
        if differs:
            self.notes.append(f"ReLU not fused: {differs.replace('folded', 'fused', 1)}")
        elif count:
            self._fused = fused
            self.notes.append(f"{count} convolutions fused with the ReLU after them (oneDNN)")

    def _checked_fold(self, probes: dict[str, torch.Tensor]) -> Folded:
        """The folded network, if it gives the model's outputs on every probe batch (to fp32
        rounding) at θ* and again on a copy whose BNs are moved off their values: a BN at its
        initial values is the identity, which hides a wrong fold at θ* (and an interpolation
        moves it). Where either differs, the model is evaluated as it is."""
        folded = fold_batch_norm(self.model, probes.values())
        if not folded.count:
            return folded
        differs = _disagreement(self.model, folded.network, probes, "")
        if differs:
            return Folded(self.model, reason=differs)
        try:
            moved = with_moved_norms(self.model)
        except Exception as error:  # noqa: BLE001 - a model deepcopy refuses: unfolded
            reason = f"the model cannot be copied to check the fold on ({_reason(error)})"
            return Folded(self.model, reason=reason)
        moved_fold = fold_batch_norm(moved, probes.values())
        assert moved_fold.count == folded.count, "the copy has the model's graph and shapes"
        differs = _disagreement(moved, moved_fold.network, probes, " with its BNs moved")
        return Folded(self.model, reason=differs) if differs else folded

    @torch.inference_mode()
    def _probe(self) -> list[Column]:
        """The columns this data and loss give, checking on a small batch that they fit."""
        found = []
        for name, split in self.splits.items():
            inputs, targets = split.first(min(PROBE_EXAMPLES, len(split)))
            try:
                outputs = outputs_of(self.model(inputs))
            except Exception as error:  # noqa: BLE001 - any failure here is a data/model mismatch
                if self.loss.name == "causal_lm" and not inputs.is_floating_point():
                    # Most often an id beyond the embedding: say which id the data holds.
                    raise DataError(
                        f"the model cannot take the {name} split's token ids (largest token id "
                        f"{int(inputs.max())}, batch {tuple(inputs.shape)}): {_reason(error)}; "
                        "set the model's vocab_size above the largest id, or check the token file"
                    ) from None
                raise DataError(
                    f"the model cannot take the {name} split's inputs (a batch of shape "
                    f"{tuple(inputs.shape)}, {inputs.dtype}): {_reason(error)}; check that "
                    "data.dataset yields what model.name expects"
                ) from None
            if not isinstance(outputs, torch.Tensor):
                raise DataError(
                    f"the model returned a {type(outputs).__name__}, with neither a tensor nor a "
                    "tensor .logits; a sweep needs a model whose forward returns the outputs the "
                    "loss takes (logits, or an object with .logits as Hugging Face models give)"
                )
            if self.loss.name == "causal_lm":
                _check_vocabulary(name, split, inputs, outputs)
            if classifies(outputs, targets):
                # All of a cached split's labels (cheap); a streamed one shows its first batch.
                labels = split.targets if isinstance(split, CachedSplit) else targets
                _check_classes(name, split, outputs.shape[1], labels)
            try:
                self.loss.batch(outputs.float(), targets)
            except LsurfError:
                raise
            except Exception as error:  # noqa: BLE001 - user code, reported as one line
                raise ConfigError(
                    f"evaluation.loss {self.loss.name} failed on the {name} split's first batch "
                    f"(outputs {tuple(outputs.shape)}, targets {tuple(targets.shape)}): "
                    f"{_reason(error)}"
                ) from None
            found.append(Column(name, LOSS))
            if classifies(outputs, targets):
                found.append(Column(name, ACCURACY))
        if self.curvature is not None:
            found += [Column(self.curvature.split, metric) for metric in CURVATURE]
        return found

    @torch.inference_mode()
    def move_to(self, a: float, b: float) -> None:
        """Write θ* + a·d1 + b·d2 into the model's tensors; toward end points, in forms exact
        at them: lerp(θ*, end, a) (+ b·d2), or (1 − a − b)·θ* + a·end + b·y_end."""
        for key, tensor in self.live.items():
            if self.y_end is not None:
                assert self.end is not None  # a third checkpoint comes with a second
                torch.mul(self.origin[key], 1.0 - a - b, out=tensor)
                tensor.add_(self.end[key], alpha=a).add_(self.y_end[key], alpha=b)
                continue
            if self.end is not None:
                torch.lerp(self.origin[key], self.end[key], a, out=tensor)
            else:
                torch.add(self.origin[key], self.x[key], alpha=a, out=tensor)
            if self.y is not None:
                tensor.add_(self.y[key], alpha=b)

    @torch.no_grad()
    def recompute_norm_statistics(self) -> None:
        """With `NormStatistics`: every BatchNorm's running statistics re-estimated at the
        weights the model holds (see NormStatistics); the model is left in eval mode."""
        statistics = self.norm_statistics
        if statistics is None or not self._norms:
            return
        momenta = [norm.momentum for norm in self._norms]
        for norm in self._norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average: each batch weighs the same
        self.model.train()
        try:
            left = statistics.examples
            for inputs, _ in statistics.split.batches(self.batch_size, statistics.seed):
                if left <= 0:
                    break
                with torch.autocast(self.device.type, torch.bfloat16, enabled=self._bf16):
                    self.model(inputs[:left])
                left -= len(inputs)
        finally:
            self.model.eval()
            for norm, momentum in zip(self._norms, momenta, strict=True):
                norm.momentum = momentum

    def evaluate(self, a: float, b: float) -> dict[str, float]:
        """Every column's value at (a, b), by dataset name (`train_loss`, ...)."""
        self.move_to(a, b)
        self.recompute_norm_statistics()
        self.folded.refold()
        values: dict[str, float] = {}
        for name, split in self.splits.items():
            measured = measure_batches(
                self.network,
                split.batches(self.batch_size, self.order_seed),
                self.loss,
                name in self._accuracy,
                self.device.type,
                self.precision,
                self.errors,
                self.baselines.get(name),
                Population(len(split), math.ceil(len(split) / self.batch_size)),
            )
            values |= {f"{name}_{metric}": value for metric, value in measured.items()}
        if self.curvature is not None:
            values |= self._eigenvalues(values[f"{self.curvature.split}_loss"])
        return values

    def _eigenvalues(self, loss: float) -> dict[str, float]:
        """The curvature columns at the point the model holds (NaN where the loss is not
        finite: no solve, and no products spent, on an overflowed model)."""
        assert self.curvature is not None and self.hessian is not None
        if not math.isfinite(loss):
            return {metric.name: math.nan for metric in CURVATURE} | {"eig_products": 0.0}
        found = hessian.extreme_eigenpairs(
            self.hessian, self.curvature.tol, self.curvature.max_products, self.curvature.seed
        )
        return {
            "max_eig": found.max_eig,
            "min_eig": found.min_eig,
            "max_eig_residual": found.max_residual,
            "min_eig_residual": found.min_residual,
            "eig_products": float(found.products),
        }

    @property
    def order_seed(self) -> int | None:
        """The order points visit each split in (`SplitData.batches`): seeded when they stop
        early, else the split's own (so standard errors alone leave the loss's bits as
        they were)."""
        if self.errors is None or self.errors.rel_error is None:
            return None
        return self.errors.order_seed

    def estimate_errors(self, errors: StandardErrors) -> None:
        """From now on, measure each split's loss standard error (and stop points early when
        `errors` has a relative target), with the columns that adds."""
        self.errors = errors
        self.columns = error_columns(self.columns, errors)
        if errors.rel_error is not None and errors.control_variate:
            self.baselines = {name: self._baseline(split) for name, split in self.splits.items()}
            examples = ", ".join(f"{len(split)} {name}" for name, split in self.splits.items())
            kinds = {
                "by class and θ*'s loss" if baseline.class_counts else "θ*'s loss"
                for baseline in self.baselines.values()
            }
            self.notes.append(
                f"control variates ({', '.join(sorted(kinds))}) from θ* on all {examples} examples"
            )

    @torch.inference_mode()
    def _baseline(self, split: SplitData) -> Baseline:
        """θ*'s loss units over all of `split`, batch by batch in the order points visit it,
        measured as the points are (the same network, precision and batches)."""
        self.move_to(0.0, 0.0)  # θ* itself, bit for bit, whatever the directions
        self.recompute_norm_statistics()
        self.folded.refold()
        units: list[torch.Tensor] = []
        totals: list[torch.Tensor] = []
        counts: list[torch.Tensor | int] = []
        # Per class (where each unit is an example with a class label): examples, Σ loss.
        by_class: torch.Tensor | None = None
        stratify = True
        for inputs, targets in split.batches(self.batch_size, self.order_seed):
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self._bf16):
                outputs = _tensor(self.network(inputs)).float()
            terms = self.loss.terms(outputs, targets)
            assert terms.unit_sums is not None
            x = terms.unit_sums.detach().double().reshape(-1)
            units.append(x)
            totals.append(terms.total)
            counts.append(terms.count)
            stratify = stratify and terms.unit_counts is None and classifies(outputs, targets)
            if stratify:
                if by_class is None:
                    by_class = torch.zeros(
                        2, outputs.shape[1], dtype=torch.float64, device=x.device
                    )
                by_class.index_add_(1, targets.to(x.device), torch.stack([torch.ones_like(x), x]))
        mean = float(torch.stack(totals).sum().item()) / _total(counts)
        size = len(split)
        if not stratify or by_class is None:
            return Baseline(units, mean, size)
        examples, sums = by_class.tolist()
        means = tuple(
            total / count if count else 0.0 for total, count in zip(sums, examples, strict=True)
        )
        return Baseline(units, mean, size, tuple(round(count) for count in examples), means)


def _check_norm_statistics(statistics: NormStatistics) -> None:
    size = len(statistics.split)
    if not 1 <= statistics.examples <= size:
        raise ConfigError(
            f"evaluation.bn_recompute is {statistics.examples} but the {statistics.name} split "
            f"has {size} examples; give at most {size} (and at least 1)"
        )


def curvature_operator(
    model: nn.Module, split: SplitData, curvature: Curvature, loss: Loss
) -> hessian.HessianOperator:
    """The Hessian of `split`'s mean loss w.r.t. `model`'s curvature parameters, once a probe
    batch has shown it has a second derivative (one line of bad input if it has not)."""
    weights = hessian.curvature_parameters(model, curvature.params, curvature.names)
    check_second_derivatives(model, split, weights, loss)
    batches = lambda: split.batches(curvature.batch_size)  # noqa: E731 - a one-line factory
    return hessian.HessianOperator(model, weights, batches, loss)


def check_second_derivatives(
    model: nn.Module, split: SplitData, weights: dict[str, torch.Tensor], loss: Loss
) -> None:
    """One line of bad input unless the loss on `split`'s probe batch is twice differentiable
    in `weights` (lsurf.hessian.check_twice_differentiable)."""
    inputs, targets = split.first(min(PROBE_EXAMPLES, len(split)))
    hessian.check_twice_differentiable(model, weights, inputs, targets, loss)


@torch.inference_mode()
def measure_batches(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss: Loss,
    accuracy: bool,
    device_type: str,
    precision: str = "fp32",
    errors: StandardErrors | None = None,
    baseline: Baseline | None = None,
    population: Population | None = None,
) -> dict[str, float]:
    """The mean loss (and the accuracy in percent) of `model` over `batches`; with `errors`,
    the loss's standard error too, as an estimate of the mean over the whole `population`
    the batches are of (0 when they are all of it), and when it stops early, over the
    batches until it stops (`examples`: how many examples that was); with a `baseline` (θ*'s
    units of the same batches), the error is the control-variate estimate's, and so is the
    loss of a point that stopped early (one that used every example keeps the loss's usual
    bits)."""
    # Sums stay on the device until the end: one host sync per split, not per batch (early
    # stopping: one per batch once min_examples are in).
    loss_sums: list[torch.Tensor] = []
    loss_counts: list[torch.Tensor | int] = []
    correct: list[torch.Tensor] = []
    moments: Moments | None = None
    examples = 0
    for index, (inputs, targets) in enumerate(batches):
        with torch.autocast(device_type, torch.bfloat16, enabled=precision == "bf16"):
            outputs = _tensor(model(inputs))
        outputs = outputs.float()
        if errors is None:
            total, count = loss.batch(outputs, targets)
        else:
            terms = loss.terms(outputs, targets)
            total, count = terms.total, terms.count
            if moments is None:
                assert population is not None, "a standard error is of a whole split"
                moments = Moments(total.device, population, baseline)
            moments.add(terms, index, targets)
        loss_sums.append(total)
        loss_counts.append(count)
        if accuracy:
            correct.append((outputs.argmax(dim=1) == targets).sum())
        examples += int(targets.shape[0])
        if errors is not None and moments is not None and errors.stops(examples, moments):
            break
    # Each metric row's 'mean': Σ batch sums / Σ batch counts, times its scale.
    values = {"loss": LOSS.mean(torch.stack(loss_sums).sum().item(), _total(loss_counts))}
    if errors is not None and moments is not None:
        estimate, values["loss_se"] = moments.estimate()
        if baseline is not None and examples < baseline.examples:
            values["loss"] = estimate  # else every example: the loss as it always was
        if errors.rel_error is not None:
            values["examples"] = float(examples)
    if accuracy:
        values["acc"] = ACCURACY.mean(int(torch.stack(correct).sum().item()), examples)
    return values


def measure(
    model: nn.Module, split: Split, batch_size: int, device_type: str, precision: str = "fp32"
) -> SplitResult:
    """Mean cross-entropy and accuracy of `model` (in its current mode) on a cached CIFAR split."""
    batches = (
        (split.images[start : start + batch_size], split.labels[start : start + batch_size])
        for start in range(0, len(split), batch_size)
    )
    values = measure_batches(
        model, batches, build_loss("cross_entropy"), True, device_type, precision
    )
    return SplitResult(values["loss"], values["acc"])


def _total(counts: list[torch.Tensor | int]) -> float | int:
    """Σ counts: ints stay exact; tensors (a loss's own counts) are summed once, at the end."""
    exact = [count for count in counts if isinstance(count, int)]
    if len(exact) == len(counts):
        return sum(exact)
    return float(sum(torch.as_tensor(count).double().cpu() for count in counts))


def _check_classes(name: str, split: SplitData, outputs: int, targets: torch.Tensor) -> None:
    """The model's class count must fit the data's, or accuracy and the loss are nonsense."""
    known = split.num_classes
    if known is None and len(targets) and int(targets.max()) >= outputs:
        raise DataError(
            f"the {name} split has class index {int(targets.max())} but the model outputs "
            f"{outputs} classes; set model.num_classes (or the model's own argument) to match"
        )
    if known is not None and known != outputs:
        raise DataError(
            f"the model outputs {outputs} classes but the {name} split has {known}; set "
            f"model.num_classes: {known} (or the model's own argument) to match the data"
        )


def _cached(
    name: str,
    split: Split | tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    memory_format: torch.memory_format,
) -> CachedSplit:
    """Tensors in memory (a CIFAR `Split`, or (inputs, targets)) as a split on `device`,
    images in the layout the convolutions want."""
    inputs, targets = (split.images, split.labels) if isinstance(split, Split) else split
    inputs = inputs.to(device)
    if inputs.dim() == 4 and inputs.is_floating_point():
        inputs = inputs.contiguous(memory_format=memory_format)
    return CachedSplit(name, None, inputs, targets.to(device))


@torch.inference_mode()
def _disagreement(
    model: nn.Module, folded: nn.Module, probes: dict[str, torch.Tensor], moved: str
) -> str:
    """'' where `folded` gives `model`'s outputs on every probe batch to fp32 rounding; else
    which batch differs, and by how much (`moved` says how the model was set)."""
    for name, inputs in probes.items():
        apart = _apart(_tensor(folded(inputs)).float(), _tensor(model(inputs)).float())
        if not apart <= FOLDING_TOLERANCE:
            return (
                f"the folded network's outputs on the {name} probe batch{moved} differ from "
                f"the model's by {apart:.2g} of their largest"
            )
    return ""


def _tensor(raw: object) -> torch.Tensor:
    """A model's outputs as a tensor (`outputs_of`); the probe has checked that they are one."""
    return cast(torch.Tensor, outputs_of(raw))


def _check_vocabulary(
    name: str, split: SplitData, inputs: torch.Tensor, outputs: torch.Tensor
) -> None:
    """A language model's token ids must be below its vocabulary (the logits' last size):
    all of a cached split's ids, the probe batch of a streamed one."""
    ids = split.inputs if isinstance(split, CachedSplit) else inputs
    vocabulary = outputs.shape[-1]
    if outputs.dim() == 3 and ids.numel() and int(ids.max()) >= vocabulary:
        raise DataError(
            f"the {name} split has token id {int(ids.max())} but the model's vocabulary has "
            f"{vocabulary} ids; set the model's vocab_size above it, or check the token file"
        )


def _apart(found: torch.Tensor, expected: torch.Tensor) -> float:
    """How far two networks' outputs are apart: the largest difference over the largest
    output (the folding and compile checks)."""
    scale = float(expected.abs().max()) or 1.0
    return float((found - expected).abs().max()) / scale


def _cache_hits() -> int:
    """Graphs inductor has loaded from its FX graph cache in this process so far (its own
    counter; 0 where this torch keeps none)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - torch without dynamo
        return 0
    return int(counters["inductor"]["fxgraph_cache_hit"])


def _reason(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:240]
