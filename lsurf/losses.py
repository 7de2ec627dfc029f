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

Standard errors (`evaluation.standard_errors`, `evaluation.rel_error`): `Loss.terms` also
hands out the batch's sampling units, which `Moments` sums. Every standard error here is of
a point's value as an estimate of the split's mean (the value a pass over every example of
the split, or of its subset, gives): the units a point used are drawn without replacement
from the split's N, so each estimator carries the finite-population factor √(1 − n/N), and a
point that used every unit has SE 0. For a per-example loss (the built-ins, a callable
returning (B,) losses) each example is a unit: its loss in fp32, summed in float64, and the
standard error of the mean is the textbook √(1 − n/N) · s/√n. A callable returning its own
(sum, count) pair shows no per-example values, so each batch is one unit (a cluster of
tokens) and the mean Σy/Σn is a ratio estimator, whose standard error is
sqrt((1 − k/K) · k/(k−1) · Σ(y − r·n)²) / Σn over k of the split's K batches (Cochran,
Sampling Techniques, §6.3). The sum and count of the loss column are computed exactly as
without standard errors, so the column keeps its bits whichever option is on.

- causal_lm: a language model's next-token cross-entropy. Inputs are token ids (B, T); the
  targets are the same ids with every padded position set to `IGNORED` (-100, lsurf.data.tokens
  builds them); the outputs are logits (B, T, V) (a Hugging Face output's `.logits`, unwrapped
  by `outputs_of`). Position t's logits score token t + 1: logits[:, :-1] against
  targets[:, 1:], padded targets left out, so the count is the split's real next tokens and
  the mean is per token however sequences are padded or batched. Log-softmax in fp32 (bf16
  logits are widened first), summed in fp32 per batch, accumulated in float64. Its sampling
  units are the sequences (each one's token-loss sum and token count): a ratio estimator.

Accuracy is measured where it means something: outputs (B, C) and class-index targets (B,);
a language model's loss has no accuracy column.
Whether a batch fits is checked once, on a probe batch, before anything is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lsurf.errors import ConfigError
from lsurf.imports import is_import_path, resolve


@dataclass(frozen=True)
class BatchTerms:
    """One batch's loss: its sum and count, and (when asked) its sampling units."""

    total: torch.Tensor  # float64 scalar: the batch's loss sum, as the loss column sums it
    count: torch.Tensor | int  # examples, or what a callable counts itself (tokens)
    # The units the standard error is estimated from, float64 (U,): each example's loss
    # (unit_counts None: one example per unit), or the batch as one unit (its sum and count).
    unit_sums: torch.Tensor | None = None
    unit_counts: torch.Tensor | None = None
    # Whether the units are the split's examples (sequences, for causal_lm) or its batches
    # (a callable's own (sum, count)): which population a standard error is of.
    units_are_examples: bool = True


# (outputs, targets, units) -> BatchTerms; units=False may leave the units out (saves work).
MeasureBatch = Callable[[torch.Tensor, torch.Tensor, bool], BatchTerms]


@dataclass(frozen=True)
class Loss:
    name: str  # as the config gives it
    measure: MeasureBatch

    def batch(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | int]:
        """(float64 sum, count) of the batch's loss."""
        terms = self.measure(outputs, targets, False)
        return terms.total, terms.count

    def terms(self, outputs: torch.Tensor, targets: torch.Tensor) -> BatchTerms:
        """The batch's sum and count, and its sampling units for a standard error."""
        return self.measure(outputs, targets, True)


def classifies(outputs: torch.Tensor, targets: torch.Tensor) -> bool:
    """Whether accuracy means something: one score per class, one class index per example."""
    return (
        outputs.dim() == 2
        and targets.dim() == 1
        and not targets.is_floating_point()
        and not targets.is_complex()
        and targets.shape[0] == outputs.shape[0]
    )


# The target id of a padded position: no next token to score (torch's ignore_index default).
IGNORED = -100


def outputs_of(raw: object) -> object:
    """A model's outputs as the loss takes them: a tensor as it is, a Hugging Face output
    (CausalLMOutput, ...) as its `.logits`; anything else is returned for the probe to refuse."""
    if isinstance(raw, torch.Tensor):
        return raw
    logits = getattr(raw, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else raw


def _causal_lm(outputs: torch.Tensor, targets: torch.Tensor, units: bool) -> BatchTerms:
    if outputs.dim() != 3 or targets.dim() != 2 or tuple(outputs.shape[:2]) != tuple(targets.shape):
        raise ConfigError(
            f"evaluation.loss: causal_lm needs logits (batch, tokens, vocab) and token ids "
            f"(batch, tokens); got outputs {tuple(outputs.shape)} and targets "
            f"{tuple(targets.shape)}; use data.dataset: tokens or give (T,) token-id examples"
        )
    # Position t predicts token t + 1: (B, T-1, V) against (B, T-1).
    logits = outputs[:, :-1].float()
    following = targets[:, 1:]
    flat_logits, flat_targets = logits.reshape(-1, logits.shape[-1]), following.reshape(-1)
    scored = following != IGNORED  # (B, T-1): the real next tokens
    total = F.cross_entropy(
        flat_logits, flat_targets, reduction="sum", ignore_index=IGNORED
    ).double()
    count = scored.sum()
    if not units:
        return BatchTerms(total, count)
    # Per sequence: its tokens' loss sum (0 at ignored positions) and its token count.
    per_token = F.cross_entropy(
        flat_logits, flat_targets, reduction="none", ignore_index=IGNORED
    ).reshape(following.shape)
    return BatchTerms(total, count, per_token.double().sum(dim=1), scored.sum(dim=1).double())


def _cross_entropy(outputs: torch.Tensor, targets: torch.Tensor, units: bool) -> BatchTerms:
    if not classifies(outputs, targets):
        raise ConfigError(
            f"evaluation.loss: cross_entropy needs outputs (batch, classes) and class-index "
            f"targets (batch,); got outputs {tuple(outputs.shape)} and targets "
            f"{tuple(targets.shape)} {targets.dtype}; give a loss callable for other shapes"
        )
    total = F.cross_entropy(outputs.float(), targets, reduction="sum").double()
    if not units:
        return BatchTerms(total, outputs.shape[0])
    # A second, per-example pass for the units: torch's fp32 'sum' reduction need not equal
    # the sum of these bit for bit, and the loss column keeps the 'sum' it always had.
    per_example = F.cross_entropy(outputs.float(), targets, reduction="none").double()
    return BatchTerms(total, outputs.shape[0], per_example)


def _mse(outputs: torch.Tensor, targets: torch.Tensor, units: bool) -> BatchTerms:
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
    per_example = errors.reshape(errors.shape[0], -1).mean(dim=1).double()
    return BatchTerms(per_example.sum(), outputs.shape[0], per_example if units else None)


def _from_callable(name: str, function: Callable) -> MeasureBatch:
    def measure(outputs: torch.Tensor, targets: torch.Tensor, units: bool) -> BatchTerms:
        result = function(outputs, targets)
        if isinstance(result, (tuple, list)) and len(result) == 2:
            total, count = result
            total = torch.as_tensor(total).double().reshape(())
            if not units:
                return BatchTerms(total, count)
            # No per-example values: the batch is one unit of the ratio estimator.
            weight = torch.as_tensor(count, device=total.device).double().reshape(1)
            return BatchTerms(total, count, total.detach().reshape(1), weight, False)
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
        per_example = result.double()
        return BatchTerms(per_example.sum(), outputs.shape[0], per_example if units else None)

    return measure


_BUILT_IN: dict[str, MeasureBatch] = {
    "cross_entropy": _cross_entropy,
    "mse": _mse,
    "causal_lm": _causal_lm,
}


def build_loss(name: str, function: Callable | None = None) -> Loss:
    """The loss named by `evaluation.loss`, or `function` itself (the Python API's door)."""
    if function is not None:
        return Loss(name, _from_callable(name, function))
    if is_import_path(name):
        return Loss(name, _from_callable(name, resolve(name, "evaluation.loss")))
    return Loss(name, _BUILT_IN[name])  # the config accepts only these names


# ------------------------------------------------------------------ standard errors

# The sums `Moments` keeps, in this order: units k, Σy, Σn, Σy², Σy·n, Σn²; with a baseline
# also Σx, Σx², Σx·n, Σx·y, x the unit's loss sum at θ*.
_SUMS = 6
_BASELINE_SUMS = 4
# Per class, with a baseline over class labels: examples k, Σy, Σx, Σy², Σx², Σx·y.
_CLASS_SUMS = 6


@dataclass(frozen=True)
class Population:
    """The split a point's estimate is of, as a sweep batches it: `examples` examples in
    `batches` batches. Its sampling units are the examples, or the batches for a loss that
    returns its own (sum, count); a point that has used them all has the split's mean."""

    examples: int
    batches: int

    def units(self, per_example: bool) -> int:
        return self.examples if per_example else self.batches


def unseen_share(seen: float, whole: int, corrected: bool = True) -> float:
    """The finite-population factor 1 − n/N on the variance of a mean of n of N units drawn
    without replacement: 0 once every unit is in. `corrected` False leaves it out (1) while
    units remain unseen, the with-replacement variance, which only the stop test reads."""
    if seen >= whole:
        return 0.0
    return 1.0 - seen / whole if corrected else 1.0


@dataclass(frozen=True)
class Baseline:
    """θ*'s loss over a whole split, unit by unit in the order early-stopped points visit it:
    the control variates those points' estimates lean on. Where each unit is one example
    with a class label, also each class's share of the split and θ*'s mean loss on it: the
    point's estimate is then stratified by class (`stratified_mean_and_error`); else it uses
    θ*'s loss alone (`controlled_mean_and_error`)."""

    units: list[torch.Tensor]  # per batch, the loss sum of each of its units at θ*, float64
    mean: float  # the split's loss at θ*: Σ unit sums / Σ unit counts over every batch
    examples: int  # the split's examples
    class_counts: tuple[int, ...] | None = None  # N_h: the split's examples of class h
    class_means: tuple[float, ...] | None = None  # θ*'s mean loss over class h's examples


class Moments:
    """Running float64 sums of a split's loss units, kept on the device (no host sync until
    `estimate`): the units' count k, Σy, Σn, Σy², Σy·n and Σn², y a unit's loss sum and n its
    count (1 for an example); with a `Baseline`, also the sums of x (the same unit's loss at
    θ*) that the control variate needs, per class where it has classes. `population` is the
    whole split the units are drawn from, which every standard error is relative to."""

    def __init__(
        self, device: torch.device, population: Population, baseline: Baseline | None = None
    ) -> None:
        self.population = population
        self.baseline = baseline
        self.per_example = True  # each unit one example or sequence (else each batch one unit)
        size = _SUMS + (_BASELINE_SUMS if baseline is not None else 0)
        self.sums = torch.zeros(size, dtype=torch.float64, device=device)
        self.by_class = None
        if baseline is not None and baseline.class_counts is not None:
            classes = len(baseline.class_counts)
            self.by_class = torch.zeros(_CLASS_SUMS, classes, dtype=torch.float64, device=device)

    def add(self, terms: BatchTerms, batch: int = 0, targets: torch.Tensor | None = None) -> None:
        """Add the units of the `batch`-th batch of the split (its index picks θ*'s units; its
        class labels `targets` sort them where the baseline has classes)."""
        assert terms.unit_sums is not None, "the batch was measured without its units"
        y = terms.unit_sums.detach().double().reshape(-1)
        self.per_example = terms.units_are_examples
        n = torch.ones_like(y) if terms.unit_counts is None else terms.unit_counts.double()
        n = n.to(y.device).reshape(-1)
        k = torch.tensor(float(y.numel()), dtype=torch.float64, device=y.device)
        sums = [k, y.sum(), n.sum(), (y * y).sum(), (y * n).sum(), (n * n).sum()]
        if self.baseline is not None:
            x = self.baseline.units[batch].to(y.device).reshape(-1)
            sums += [x.sum(), (x * x).sum(), (x * n).sum(), (x * y).sum()]
            if self.by_class is not None:
                assert targets is not None, "a baseline with classes needs the batch's labels"
                terms_by_class = torch.stack([torch.ones_like(y), y, x, y * y, x * x, x * y])
                self.by_class.index_add_(1, targets.to(y.device).reshape(-1), terms_by_class)
        self.sums += torch.stack(sums)

    def estimate(self, corrected: bool = True) -> tuple[float, float]:
        """(mean, its standard error as an estimate of the whole split's mean) of the units
        so far (one host sync): 0 once every unit is in. `corrected` False: the stop test's
        error, without the finite-population factor while units remain (`unseen_share`)."""
        whole = self.population.units(self.per_example)
        if self.baseline is None:
            return mean_and_error(self.sums.tolist(), whole, corrected)
        if self.by_class is not None:
            mean, _ = mean_and_error(self.sums.tolist(), whole, corrected)
            if not math.isfinite(mean):
                return mean, math.nan  # an overflowed point: nothing to stratify
            stratified = stratified_mean_and_error(self.by_class.tolist(), self.baseline, corrected)
            return (mean, math.nan) if stratified is None else stratified
        return controlled_mean_and_error(self.sums.tolist(), self.baseline.mean, whole, corrected)


def mean_and_error(sums: list[float], whole: int, corrected: bool = True) -> tuple[float, float]:
    """The ratio estimator r = Σy/Σn of the mean over `whole` units, and its standard error,
    from `Moments`' six sums over the k units seen.

    SE² = (1 − k/N) · k/(k−1) · Σ(y − r·n)² / (Σn)², with Σ(y − r·n)² = Σy² − 2r·Σyn +
    r²·Σn²; for units of one example each that is (1 − n/N) · s²/n, s² the sample variance
    (Cochran, Sampling Techniques, §2.4 and §6.3). 0 with every unit in; NaN below two units
    otherwise, or for a non-finite mean; a tiny negative residual sum (rounding, when every
    unit has the same loss) counts as 0.
    """
    units, y, n, yy, yn, nn = sums[:_SUMS]
    mean = y / n if n else math.nan
    if not math.isfinite(mean):
        return mean, math.nan
    share = unseen_share(units, whole, corrected)
    if share == 0.0:
        return mean, 0.0
    if units < 2:
        return mean, math.nan
    residual = max(yy - 2 * mean * yn + mean * mean * nn, 0.0)
    return mean, math.sqrt(share * units / (units - 1) * residual) / abs(n)


def controlled_mean_and_error(
    sums: list[float], baseline: float, whole: int, corrected: bool = True
) -> tuple[float, float]:
    """The regression estimator of the split's mean loss with θ*'s loss as control variate.

    The units seen so far give the ratio r = Σy/Σn at the point and r₀ = Σx/Σn at θ*, whose
    whole-split value R₀ (`baseline`) is known exactly. With u = y − r·n and v = x − r₀·n,
    the estimate is r − c·(r₀ − R₀), c = Σuv/Σv² (the least-squares slope of u on v), and its
    standard error sqrt((1 − k/N) · k/(k−2) · Σ(u − c·v)²) / Σn over k of the split's N
    (`whole`) units (one degree of freedom more for c). Where the point's per-example losses
    follow θ*'s (near θ*) the residuals, and so the examples a point needs, shrink by 1 − ρ²,
    ρ their correlation; where they do not, c ≈ 0 and this is the plain estimate. Its bias
    is of order 1/k, far below its standard error at the min_examples a point uses at least
    (Cochran, Sampling Techniques, §7.1-7.3). 0 with every unit in; NaN below three units
    otherwise; without spread at θ* (Σv² = 0) c is 0.
    """
    units, y, n, yy, yn, nn, x, xx, xn, xy = sums
    if not n:
        return math.nan, math.nan
    mean, control = y / n, x / n
    if not math.isfinite(mean):
        return mean, math.nan
    uu = max(yy - 2 * mean * yn + mean * mean * nn, 0.0)
    vv = max(xx - 2 * control * xn + control * control * nn, 0.0)
    uv = xy - control * yn - mean * xn + mean * control * nn
    slope = uv / vv if vv > 0 else 0.0
    estimate = mean - slope * (control - baseline)
    share = unseen_share(units, whole, corrected)
    if share == 0.0:
        return estimate, 0.0
    if units < 3:
        return mean, math.nan
    residual = max(uu - slope * uv, 0.0)
    return estimate, math.sqrt(share * units / (units - 2) * residual) / abs(n)


def stratified_mean_and_error(
    by_class: list[list[float]], baseline: Baseline, corrected: bool = True
) -> tuple[float, float] | None:
    """The mean loss stratified by class, with θ*'s loss as control variate inside each class.

    Far from θ* a network tends to answer one class for everything, so an example's loss
    depends mostly on its label: the spread between classes, which a plain mean pays for, is
    known exactly once each class's share W_h of the split is. With k_h of class h's N_h
    examples seen, ȳ_h and x̄_h their means at the point and at θ*, X̄_h θ*'s mean over all of
    class h, and c = Σ_h S_xy,h / Σ_h S_xx,h the pooled within-class slope (S: sums of
    products of deviations from the class means), the estimate is Σ_h W_h·(ȳ_h − c·(x̄_h −
    X̄_h)) and its standard error sqrt(Σ_h W_h² · (1 − k_h/N_h) · RSS_h / ((k_h − 1)·k_h)),
    RSS_h = S_yy,h − 2c·S_xy,h + c²·S_xx,h (post-stratification with a common slope and each
    stratum's finite-population factor: Cochran §5.3, §5A.9 and §7.10); a class seen whole
    has no sampling error, so neither has a point that used every example. At θ* itself the
    residuals vanish and the estimate is θ*'s whole-split loss. None until every class of
    the split has two examples in (or all it has): the point cannot stop yet.
    """
    assert baseline.class_counts is not None and baseline.class_means is not None
    counts, ys, xs, yys, xxs, xys = by_class
    whole = sum(baseline.class_counts)
    present = [h for h, count in enumerate(baseline.class_counts) if count > 0]
    sxy = sxx = 0.0
    deviations = {}
    for h in present:
        k = counts[h]
        if k < min(2, baseline.class_counts[h]):
            return None
        ybar, xbar = ys[h] / k, xs[h] / k
        deviation = (yys[h] - k * ybar * ybar, xxs[h] - k * xbar * xbar, xys[h] - k * xbar * ybar)
        deviations[h] = (ybar, xbar, deviation)
        sxy += deviation[2]
        sxx += max(deviation[1], 0.0)
    slope = sxy / sxx if sxx > 0 else 0.0
    estimate = variance = 0.0
    for h in present:
        ybar, xbar, (syy, sxx_h, sxy_h) = deviations[h]
        share, k = baseline.class_counts[h] / whole, counts[h]
        estimate += share * (ybar - slope * (xbar - baseline.class_means[h]))
        unseen = unseen_share(k, baseline.class_counts[h], corrected)
        if unseen > 0.0:
            residual = max(syy - 2 * slope * sxy_h + slope * slope * sxx_h, 0.0)
            variance += share * share * unseen * residual / ((k - 1) * k)
    return estimate, math.sqrt(variance)
