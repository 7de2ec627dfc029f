"""The config tree: lsurf's options as frozen dataclasses, and the rules across their fields.

Input: a YAML file and `key.path=value` overrides, read and type-checked by lsurf.schema
against the dataclasses here; this module supplies the converters for the grid's axis specs.
Output: a `SweepConfig` or `TrainConfig` whose every field is typed and has a value, with
relative paths resolved against the current directory, the direction kind's defaults filled
in (each kind checks its own settings: lsurf.kinds), a registry model's num_classes taken from
a CIFAR dataset, and the rules no single field can check (a step schedule needs milestones,
a built-in dataset needs data.root, ...) enforced with a `ConfigError`. Import paths
(`package.module:callable` for model.name, data.dataset, evaluation.loss) are checked for
their spelling only: they are imported later, on every rank. This module imports no torch.
`lsurf.schema.to_yaml` writes the resolved tree back, which is what the surface file stores.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lsurf import kinds
from lsurf.data.layouts import REFERENCE_MEAN, REFERENCE_STD
from lsurf.errors import ConfigError
from lsurf.grid import AXIS_HINT, AutoAxis, Axis, parse_auto_axis, parse_axis
from lsurf.imports import check_import_path, is_import_path
from lsurf.schema import LeafConverter, describe, parse, read_yaml

SplitName = Literal["train", "test"]
Norm = Literal["filter", "layer", "weight", "dfilter", "dlayer", "none"]
Ignore = Literal["biasbn", "none"]
Space = Literal["weights", "states"]
Device = Literal["auto", "cpu", "cuda"]
GridPath = Literal["line", "bezier", "polychain"]
Precision = Literal["fp32", "tf32", "bf16"]

# Datasets lsurf reads itself; any other value of data.dataset is an import path.
BUILT_IN_DATASETS = ("cifar10", "cifar100", "imagefolder", "tokens")
# Registry models built from model.kwargs (a language model's sizes), not num_classes: the
# table of lsurf.models.language, named here so the config stays torch-free.
KEYWORD_MODELS = ("gpt2", "tiny_transformer")
# Losses lsurf knows by name; any other value of evaluation.loss is an import path.
BUILT_IN_LOSSES = ("cross_entropy", "mse", "causal_lm")


@dataclass(frozen=True)
class ModelConfig:
    # A registry name (resnet56, vgg9, ...) or 'package.module:callable' returning an nn.Module.
    name: str
    checkpoint: Path | None = None  # required by `sweep`; optional initial weights for `train`
    # Registry models: left out, the dataset's class count (10 for cifar10). An import-path
    # callable receives it as the keyword num_classes when it is given.
    num_classes: int | None = None
    # keywords for an import-path callable, or a language model's sizes (gpt2: GPT2Config's
    # keys; tiny_transformer: vocab_size, d_model, layers, heads, context)
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    # cifar10, cifar100 (python-pickle layouts), imagefolder (a torchvision ImageFolder tree
    # with ROOT/train and ROOT/test), tokens (ROOT/<split>.npy or .bin token ids, kwargs
    # sequence_length, dtype, pad_id: lsurf.data.tokens), or 'package.module:callable'
    # called with the split name and `kwargs`, returning a map-style Dataset of (input,
    # target) or a pair of tensors.
    root: Path | None = None  # required by the built-in datasets
    dataset: str = "cifar10"
    kwargs: dict[str, Any] = field(default_factory=dict)  # keywords for a dataset callable
    splits: tuple[SplitName, ...] = ("train",)
    batch_size: int = 256
    subset: int | None = None  # evaluate on this many examples of each split (None: all)
    subset_seed: int = 0
    # The reference's --data_split k: the train split's len//k examples that NumPy's
    # np.random.seed(0) choice picks (its --split_idx changes nothing there); test stays whole.
    reference_split: int | None = None
    # Normalization the checkpoint was trained with (built-in datasets); published
    # checkpoints differ.
    mean: tuple[float, float, float] = REFERENCE_MEAN
    std: tuple[float, float, float] = REFERENCE_STD
    download: bool = False  # fetch real CIFAR with torchvision where a network exists
    image_size: int = 32  # imagefolder: resize the short side to size/0.875, centre-crop size
    # A split up to this many MiB is held as one tensor on the device; a larger one streams
    # through a DataLoader (same values, fixed order).
    cache_mb: int = 4096
    workers: int = 2  # DataLoader worker processes for a streamed split


@dataclass(frozen=True)
class TrajectoryRun:
    """One training run of `directions.trajectories`: its checkpoint folder and its name on
    figures and in `lsurf info`. Written as a bare path or as {path: ..., label: ...}."""

    path: Path
    label: str | None = None  # None: the folder's name (filled when the kind resolves)


@dataclass(frozen=True)
class ParamsSelection:
    """Which tensors move, by name: fnmatch globs (case-sensitive) over the names of the
    tensors a direction, the Hessian or a sharpness perturbation may move (every name of a
    tied parameter; a floating buffer's state_dict key where buffers move). A tensor is
    selected when one of its names matches `include` and none matches `exclude`
    (lsurf.params.select); the others stay at θ*, bit for bit."""

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()

    @property
    def everything(self) -> bool:
        """The default: every tensor, so nothing is recorded and nothing changes."""
        return self.include == ("*",) and not self.exclude

    def describe(self) -> str:
        return f"include {list(self.include)} exclude {list(self.exclude)}"

    def report(
        self, tensors: int, values: int, total: int, names: Sequence[str] | None
    ) -> list[str]:
        """What `--plan`, the sweep's log and `lsurf info` say of what it picked: one line,
        and the names (where known) when there are at most `NAMES_SHOWN` of them."""
        lines = [
            f"parameters: {tensors} tensors ({values:,} values) of {total} match " + self.describe()
        ]
        if names is not None and len(names) <= NAMES_SHOWN:
            lines.append("  " + ", ".join(names))
        return lines


# A selection's report lists the selected names up to this many (a big model's are too many).
NAMES_SHOWN = 8


@dataclass(frozen=True)
class DirectionsConfig:
    kind: str = "random"  # a name of lsurf.kinds.KINDS: random, target, pca, hessian, reference
    # norm applies to random directions; target (θ2 − θ1) and pca (unit principal
    # components) are used as they are. Left out, norm/ignore resolve to filter/biasbn
    # (random), none/none (target) or none/biasbn (pca).
    norm: Norm | None = None
    ignore: Ignore | None = None
    seed: int = 0
    file: Path | None = None  # None: <output>.directions.h5 beside the surface file
    target: Path | None = None  # the second checkpoint, for kind: target
    trajectory: Path | None = None  # kind: pca — the training run's checkpoint folder
    pattern: str = "model_*.pt"  # which files of `trajectory`, ordered by their number
    # Several training runs on one plane (SGD vs Adam from one initialisation): with kind pca
    # the plane is the PCA of all their checkpoints together; with any other kind each run
    # is projected onto the sweep's plane. Instead of `trajectory`, never with it.
    trajectories: tuple[TrajectoryRun, ...] = ()
    center: bool = True  # pca rows mean-centred before the SVD, as the reference (sklearn)
    # kind: hessian — top: eigenvectors of the two largest eigenvalues; extremes: of the
    # largest and the smallest (most negative) one. The Hessian is the `hessian:` section's.
    eigenvectors: Literal["top", "extremes"] = "top"
    # What the directions span (the reference's --dir_type): weights, the parameters; states,
    # the state_dict with BN's running mean/var as well. Left out: states for target (as the
    # paper's interpolations), weights for the others.
    space: Space | None = None
    # The y direction of a random plane (the reference's --ynorm/--yignore, --same_dir):
    # left out, y_norm/y_ignore are norm/ignore; same_dir makes y = x.
    y_norm: Norm | None = None
    y_ignore: Ignore | None = None
    same_dir: bool = False
    y_target: Path | None = None  # kind: target — a third checkpoint: y = θ3 − θ1
    reference: Path | None = None  # kind: reference — a direction file the reference wrote
    # kinds random, target, pca: the tensors the directions move, by name (LoRA adapters:
    # include ['*lora_*']); the others get no direction and stay at θ*.
    params: ParamsSelection = field(default_factory=ParamsSelection)


@dataclass(frozen=True)
class GridConfig:
    # 'auto:num' (AutoAxis) fits the range to a PCA path; the sweep resolves it to an Axis
    # before anything is stored, so the surface file records the concrete range.
    x: Axis | AutoAxis
    y: Axis | AutoAxis | None = None
    # A 1D sweep's points along the x axis (line), or along a curve through the plane of a
    # target with a y_target (bezier, polychain: lsurf.grid.PATHS), t being x.
    path: GridPath = "line"


@dataclass(frozen=True)
class EvaluationConfig:
    device: Device = "auto"  # auto: CUDA when present, else CPU
    # fp32 by default. tf32 (GPU convolutions/matmuls with 10-bit mantissas) and bf16
    # (autocast: weights and activations rounded to 8 bits) are faster opt-ins whose error
    # benchmarks/sweep_overhead.py --precision measures.
    precision: Precision = "fp32"
    channels_last: bool = True
    # cross_entropy, mse (the reference's: softmax outputs against one-hot targets for class
    # labels), causal_lm (next-token cross-entropy per real token, docs/language-models.md),
    # or 'package.module:callable(outputs, targets)' returning per-example losses or a
    # (sum, count) pair (token-weighted losses stay exact means).
    loss: str = "cross_entropy"
    # Store each split's loss standard error at every point ({split}_loss_se): from the
    # per-example losses (a (sum, count) callable: its batches as clusters, lsurf.losses),
    # as an estimate of the split's mean, so 0 at a point that used every example.
    standard_errors: bool = False
    # Early stopping: each point visits the examples in a seeded order (data.subset_seed) and
    # stops once SE ≤ rel_error·|loss|, after min_examples at least; it stores the standard
    # errors (whatever standard_errors says) and {split}_examples, the examples it used.
    rel_error: float | None = None
    min_examples: int = 1000
    # With rel_error: estimate each point's loss stratified by class with θ*'s loss on the
    # same examples as control variate (one pass over every example at θ* at set-up): 2-14x
    # fewer examples for the same error, but every point leans on the same first examples,
    # so an unrepresentative start shifts the whole surface at once (docs/precision.md).
    # Opt-in for that reason.
    control_variate: bool = False
    # Each BatchNorm folded into the convolution before it (lsurf.folding), refolded after
    # every move: the same outputs to fp32 rounding (~1e-7 relative), one pass less over the
    # activations. Files written before this key existed were evaluated unfolded.
    fold_bn: bool = True
    # torch.compile of the network (lsurf.evaluate), paid once per process and model at set-up
    # (~30 s for a ResNet-20 on a 2-core CPU, less with the cache warm); the same values to
    # fp32 rounding. auto: compile where the points each worker evaluates save more than the
    # compile costs (lsurf.compilation.decide; the choice is recorded in the surface file, so a
    # resume makes the same one); true/false force it. A failure leaves the eager network,
    # with a note in the log.
    compile: bool | Literal["auto"] = "auto"
    # Where inductor keeps compiled kernels for the next process (None: TORCHINDUCTOR_CACHE_DIR
    # where set, else $XDG_CACHE_HOME/lsurf/inductor, ~/.cache/lsurf/inductor by default).
    compile_cache: Path | None = None
    # At every point, reset each BatchNorm's running statistics and re-estimate them in train
    # mode, without gradients, over this many examples of the train split in the seeded order
    # of bn_seed, then evaluate in eval mode (lsurf.evaluate.NormStatistics). None: the
    # statistics are the checkpoint's (or move with the directions, space: states).
    bn_recompute: int | None = None
    bn_seed: int = 0


HessianParams = Literal["weights", "all"]


@dataclass(frozen=True)
class HessianConfig:
    """Curvature: the Hessian of the mean loss on `split` w.r.t. the moved parameters.

    Products H·v are exact (double backprop over the whole split in a fixed batch order, eval
    mode, fp32 with float64 accumulation); eigenvalues come from Lanczos (lsurf.hessian).
    `eigenvalues` adds max_eig/min_eig (and their residuals) to every point of a sweep;
    `lsurf hessian CONFIG` analyses θ* with the rest of these settings.
    """

    eigenvalues: bool = False  # a sweep also maps λmax and λmin at every point
    split: SplitName = "train"  # must be one of data.splits
    # weights: tensors with more than one dimension, as the reference; all: every parameter
    params: HessianParams = "weights"
    # The parameters by name, within `params` (hessian.params: weights still drops ≤ 1-dim
    # tensors): the Hessian is the block over the selected ones (`names: {include: [...]}`).
    names: ParamsSelection = field(default_factory=ParamsSelection)
    # A Ritz pair is converged when ‖Hv − λv‖ ≤ tol·|λ|max (the reference: ARPACK at 1e-2).
    tol: float = 1e-3
    max_products: int = 200  # Hessian-vector products per point at most (the Krylov space)
    seed: int = 0  # the Lanczos start vector and the analysis's random probes
    batch_size: int | None = None  # None: data.batch_size (double backprop needs more memory)
    # `lsurf hessian` (θ* only)
    top_k: int = 5  # the largest eigenvalues reported
    trace_samples: int = 100  # Hutchinson probes for the trace and its standard error
    density_runs: int = 4  # stochastic Lanczos quadrature: random start vectors
    density_steps: int = 80  # Lanczos steps per run
    per_layer: bool = True  # λmax of each parameter tensor's own block of the Hessian
    output: Path | None = None  # None: <output>.hessian.h5 beside the surface file


@dataclass(frozen=True)
class SweepConfig:
    model: ModelConfig
    data: DataConfig
    grid: GridConfig
    output: Path
    directions: DirectionsConfig = field(default_factory=DirectionsConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    hessian: HessianConfig = field(default_factory=HessianConfig)

    @property
    def hessian_file(self) -> Path:
        """Where `lsurf hessian` writes its analysis of θ*."""
        if self.hessian.output is not None:
            return self.hessian.output
        return self.output.with_name(self.output.stem + ".hessian.h5")

    @property
    def direction_file(self) -> Path:
        if self.directions.file is not None:
            return self.directions.file
        return self.output.with_name(self.output.stem + ".directions.h5")


Optimizer = Literal["sgd", "adam"]
Schedule = Literal["constant", "step", "cosine"]


@dataclass(frozen=True)
class TrainingConfig:
    """How `lsurf train` optimizes; the learning rate of epoch e follows `schedule`:
    constant: lr; step: lr times gamma once per milestone m < e (milestone 150 means from
    epoch 151 on, as the reference decays after epoch 150); cosine: lr·(1 + cos(π(e−1)/epochs))/2,
    reaching 0 at the end of the run."""

    epochs: int = 10
    optimizer: Optimizer = "sgd"
    lr: float = 0.1
    momentum: float = 0.9  # sgd only; adam uses torch's betas (0.9, 0.999)
    nesterov: bool = False  # sgd only; the reference trains with nesterov: true
    weight_decay: float = 5e-4  # L2 added to the gradient, as torch's SGD and Adam do
    schedule: Schedule = "constant"
    milestones: tuple[int, ...] = ()  # schedule: step only, increasing epoch numbers
    gamma: float = 0.1  # schedule: step, the factor applied at each milestone
    augment: bool = True  # random 4-pixel-padded crop and horizontal flip of training images
    seed: int = 0  # model initialization, shuffling and augmentation
    save_every: int = 1  # write a checkpoint every k epochs (plus the initial and final ones)


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig
    data: DataConfig
    output: Path  # folder for the checkpoints, log.csv, config.yaml and resume.pt
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)


BatchNormMode = Literal["keep", "interpolate", "recompute"]
Alignment = Literal["none", "weights"]
CurveKind = Literal["none", "bezier", "polychain"]
BendDecay = Literal["point", "bend"]


@dataclass(frozen=True)
class ConnectSection:
    """`lsurf connect`: the paths between checkpoints (lsurf.run.connect).

    Every pair of `checkpoints` (A, B) gets the linear path (1 − t)·A + t·B at `points` values
    of t from 0 to 1; with `align: weights` also the path to B with its units permuted to match
    A's (lsurf.align); with `curve` also a trained curve through a bend. `bn` says what the
    BatchNorm running statistics are at each point: keep, A's (only the weights move);
    interpolate, (1 − t)·A's + t·B's (as the weights); recompute, re-estimated at each point in
    train mode over `bn_examples` examples of the train split (seeded by `bn_seed`), then
    evaluated in eval mode (REPAIR; dnn-mode-connectivity's update_bn).
    """

    checkpoints: tuple[Path, ...]
    points: int = 31
    bn: BatchNormMode = "recompute"
    bn_examples: int = 2000
    bn_seed: int = 0
    align: Alignment = "none"
    align_seed: int = 0  # the order weight matching visits the layers in
    curve: CurveKind = "none"
    # Where the bend's training applies training.weight_decay: point, ½·wd·‖θ(t)‖² of the
    # batch's point on the curve added to its loss (Garipov et al.'s dnn-mode-connectivity);
    # bend, the optimizer's decay on θ_bend itself (as lsurf train decays a model).
    bend_decay: BendDecay = "point"
    # The plane through A, B and a curve's bend (a: toward B, b: toward the bend), swept on
    # this axis for a and `plane_y` (default: the same) for b, the curve drawn over it.
    plane: Axis | None = None
    plane_y: Axis | None = None


@dataclass(frozen=True)
class ConnectConfig:
    model: ModelConfig  # the architecture; its weights come from connect.checkpoints
    data: DataConfig
    connect: ConnectSection
    output: Path  # the connect file (.h5); aligned checkpoints and the bend's run beside it
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    # How a curve's bend is trained (lsurf.train.curve), as `lsurf train` trains a model.
    training: TrainingConfig = field(default_factory=TrainingConfig)


SharpnessMeasure = Literal["average", "worst", "m"]
BallNorm = Literal["l2", "linf"]


@dataclass(frozen=True)
class SharpnessSection:
    """`lsurf sharpness`: sharpness measures at θ* (lsurf.sharpness, lsurf.run.sharpness).

    For each radius of `rho` and each of `measures`: `average`, E[L(θ + δ)] − L(θ) over
    `samples` Gaussian draws of scale ρ; `worst`, max over the `norm` ball of radius ρ of
    L(θ + δ) − L(θ) by `steps` steps of projected gradient ascent of `step_size` (default
    2ρ/steps), from 0 or a `random_start`; `m`, the worst case on each batch of `m` examples,
    averaged (SAM's m-sharpness). `adaptive` scales the noise and the ball by |θ| element by
    element. The loss is measured in eval mode on a fixed subset of `examples` examples of
    `split` drawn by `seed`; the tensors that move are the model's parameters, without those
    of ≤ 1 dimension (biases, BatchNorm) under `ignore: biasbn`, and only those `params`
    selects by name.
    """

    measures: tuple[SharpnessMeasure, ...] = ("average", "worst", "m")
    rho: tuple[float, ...] = (0.05,)
    adaptive: bool = False
    norm: BallNorm = "l2"
    samples: int = 20
    steps: int = 20
    step_size: float | None = None
    random_start: bool = False
    m: int = 128
    examples: int = 1024
    split: SplitName = "train"
    ignore: Ignore = "biasbn"
    seed: int = 0
    # The parameters that move, by name (as directions.params): the others stay at θ*.
    params: ParamsSelection = field(default_factory=ParamsSelection)


@dataclass(frozen=True)
class SharpnessConfig:
    model: ModelConfig  # with its checkpoint: θ*
    data: DataConfig
    output: Path  # the sharpness file (.h5)
    sharpness: SharpnessSection = field(default_factory=SharpnessSection)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)


# ---------------------------------------------------------------------------- parsing


def _axis_text(value: Any, key: str) -> str:
    """A grid spec as the text the user wrote; a number (`x: 5`) is no spec."""
    if not isinstance(value, str):
        raise ConfigError(f"{AXIS_HINT.format(key=key)}; got {describe(value)}")
    return value


def _trajectory_run(value: Any, key: str) -> TrajectoryRun:
    """A `directions.trajectories` entry: a folder's path, or a mapping {path, label}."""
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict):
        raise ConfigError(
            f"{key} entries must be a folder's path or {{path: ..., label: ...}}; "
            f"got {describe(value)}"
        )
    return parse(TrajectoryRun, value, prefix=key + ".")


# The leaf types lsurf.schema does not know: the grid's axes, each parsed from its spec text,
# and the entries of directions.trajectories (a path or a mapping).
_AXIS_CONVERTERS: Mapping[type, LeafConverter] = {
    Axis: lambda value, key: parse_axis(_axis_text(value, key), key),
    AutoAxis: lambda value, key: parse_auto_axis(_axis_text(value, key), key),
    TrajectoryRun: _trajectory_run,
}


def load_sweep_config(path: Path, overrides: Sequence[str] = ()) -> SweepConfig:
    return _check_sweep(parse(SweepConfig, read_yaml(path, overrides), _AXIS_CONVERTERS))


# How the Python API names what it was handed as objects (model, data, loss) in the config it
# stores; such names are labels, never resolved, and only `objects_sweep_config` accepts them.
OBJECT_LABEL = "python object"


def stored_sweep_config(raw: dict[str, Any]) -> SweepConfig:
    """A config a surface file stores, as this version reads it: keys added since it was
    written take their defaults, so a sweep started by an older lsurf resumes unchanged;
    except where the old behaviour is not the new default: a file without
    `evaluation.fold_bn` was evaluated unfolded."""
    name = str((raw.get("model") or {}).get("name", ""))
    evaluation = raw.get("evaluation") or {}
    if isinstance(evaluation, dict) and "fold_bn" not in evaluation:
        raw = {**raw, "evaluation": {**evaluation, "fold_bn": False}}
    config = parse(SweepConfig, raw, _AXIS_CONVERTERS)
    return _check_sweep(config, objects=name.startswith(OBJECT_LABEL))


def objects_sweep_config(raw: dict[str, Any]) -> SweepConfig:
    """The config of a sweep whose model, data and (possibly) loss are Python objects.

    Every rule of a YAML sweep applies, except that model.name, data.dataset and an
    evaluation.loss starting with OBJECT_LABEL name objects, and θ* needs no checkpoint file.
    """
    return _check_sweep(parse(SweepConfig, raw, _AXIS_CONVERTERS), objects=True)


def load_train_config(path: Path, overrides: Sequence[str] = ()) -> TrainConfig:
    config = parse(TrainConfig, read_yaml(path, overrides), _AXIS_CONVERTERS)
    check_training(config.training)
    data = _check_data(config.data)
    check_trainable_data(data)
    return dataclasses.replace(config, data=data, model=_check_model(config.model, data))


def check_training(training: TrainingConfig) -> None:
    """The training section's rules, for `lsurf train` and for a curve's bend alike."""
    _check_positive(training.epochs, "training.epochs")
    _check_positive(training.save_every, "training.save_every")
    # `not 0 < x < inf` also catches NaN, which YAML spells .nan.
    for key, value in (("training.lr", training.lr), ("training.gamma", training.gamma)):
        if not 0 < value < float("inf"):
            raise ConfigError(f"{key} must be a positive number, got {value}")
    if not 0 <= training.momentum < 1:
        raise ConfigError(f"training.momentum must be in [0, 1), got {training.momentum}")
    if not 0 <= training.weight_decay < float("inf"):
        raise ConfigError(f"training.weight_decay must be 0 or more, got {training.weight_decay}")
    if training.seed < 0:
        raise ConfigError(f"training.seed must be 0 or more, got {training.seed}")
    if training.nesterov and (training.optimizer != "sgd" or training.momentum == 0):
        raise ConfigError("training.nesterov needs optimizer: sgd and a momentum above 0")
    milestones = list(training.milestones)
    if training.schedule == "step" and not milestones:
        raise ConfigError("training.schedule: step needs training.milestones, e.g. [150, 225]")
    if training.schedule != "step" and milestones:
        raise ConfigError("training.milestones is only used with training.schedule: step")
    if milestones != sorted(set(milestones)) or any(epoch < 1 for epoch in milestones):
        raise ConfigError(
            f"training.milestones must be increasing epoch numbers of at least 1, got {milestones}"
        )


def check_trainable_data(data: DataConfig) -> None:
    """Training reads CIFAR: its augmentation crops and flips 32x32 images."""
    if data.dataset not in ("cifar10", "cifar100"):
        raise ConfigError(
            f"lsurf train reads cifar10 or cifar100 (augmented 32x32 images); got data.dataset "
            f"{data.dataset!r}"
        )


def _check_positive(value: int, key: str) -> None:
    if value < 1:
        raise ConfigError(f"{key} must be at least 1, got {value}")


def _check_data(data: DataConfig) -> DataConfig:
    _check_positive(data.batch_size, "data.batch_size")
    _check_positive(data.image_size, "data.image_size")
    if data.subset is not None:
        _check_positive(data.subset, "data.subset")
    if data.reference_split is not None:
        _check_positive(data.reference_split, "data.reference_split")
        if data.subset is not None:
            raise ConfigError(
                "data.subset and data.reference_split both choose the examples: keep one "
                "(reference_split reproduces the reference's --data_split)"
            )
    if data.cache_mb < 0 or data.workers < 0:
        raise ConfigError("data.cache_mb and data.workers must be 0 or more")
    if not data.splits:
        raise ConfigError("data.splits must name at least one split: train, test")
    if len(set(data.splits)) != len(data.splits):
        raise ConfigError(f"data.splits names a split twice: {list(data.splits)}")
    if any(value <= 0 for value in data.std):
        raise ConfigError(f"data.std must be positive, got {list(data.std)}")
    if is_import_path(data.dataset):
        check_import_path(data.dataset, "data.dataset")
    elif data.dataset not in BUILT_IN_DATASETS:
        raise ConfigError(
            f"data.dataset must be one of {', '.join(BUILT_IN_DATASETS)} or an import path "
            f"package.module:callable; got {data.dataset!r}"
        )
    elif data.root is None:
        raise ConfigError(f"missing required key data.root (the folder holding {data.dataset})")
    if data.kwargs and not (is_import_path(data.dataset) or data.dataset == "tokens"):
        raise ConfigError(
            "data.kwargs is only used with data.dataset: tokens or a dataset given as an "
            "import path"
        )
    return data


def _check_model(model: ModelConfig, data: DataConfig) -> ModelConfig:
    """The model's import path spelled right; num_classes filled in and checked on CIFAR."""
    if model.num_classes is not None and model.num_classes < 1:
        raise ConfigError(f"model.num_classes must be at least 1, got {model.num_classes}")
    known = classes_of(data.dataset)
    if known is not None and model.num_classes not in (None, known):
        raise ConfigError(
            f"model.num_classes is {model.num_classes} but {data.dataset} has {known} classes; "
            f"set model.num_classes: {known} (or leave it out)"
        )
    if is_import_path(model.name):
        check_import_path(model.name, "model.name")
        given = model.kwargs.get("num_classes")
        if given is not None and model.num_classes is not None and given != model.num_classes:
            raise ConfigError(
                f"model.kwargs.num_classes ({given}) and model.num_classes "
                f"({model.num_classes}) disagree; give it once"
            )
        return model
    if model.name in KEYWORD_MODELS:
        return model  # built from model.kwargs; num_classes means nothing to it
    if model.kwargs:
        raise ConfigError(
            "model.kwargs is only used with a model given as an import path "
            "(package.module:callable); registry models take model.num_classes"
        )
    return dataclasses.replace(model, num_classes=model.num_classes or known)


def _check_loss(loss: str) -> None:
    if is_import_path(loss):
        check_import_path(loss, "evaluation.loss")
    elif loss not in BUILT_IN_LOSSES:
        raise ConfigError(
            f"evaluation.loss must be one of {', '.join(BUILT_IN_LOSSES)} or an import path "
            f"package.module:callable; got {loss!r}"
        )


def _check_errors(evaluation: EvaluationConfig) -> None:
    # `not 0 < x < 1` also catches NaN, which YAML spells .nan.
    if evaluation.rel_error is not None and not 0 < evaluation.rel_error < 1:
        raise ConfigError(
            f"evaluation.rel_error must be between 0 and 1 (e.g. 0.01 for 1%), got "
            f"{evaluation.rel_error}; leave it out to use every example"
        )
    _check_positive(evaluation.min_examples, "evaluation.min_examples")
    if evaluation.bn_recompute is not None:
        _check_positive(evaluation.bn_recompute, "evaluation.bn_recompute")


def check_selection(selection: ParamsSelection, key: str) -> None:
    """A selection's globs as written: at least one include, none empty. Whether each
    matches a name of the model is checked once the model is built (lsurf.params.select)."""
    if not selection.include:
        raise ConfigError(f"{key}.include is empty; give at least one glob, e.g. ['*lora_*']")
    for which in ("include", "exclude"):
        for glob in getattr(selection, which):
            if not glob.strip():
                raise ConfigError(f"{key}.{which} holds an empty glob; remove it")


def _check_hessian(hessian: HessianConfig) -> None:
    """The section's own values; none of them depends on another section."""
    check_selection(hessian.names, "hessian.names")
    if not 0 < hessian.tol < 1:
        raise ConfigError(f"hessian.tol must be between 0 and 1 (e.g. 1e-3), got {hessian.tol}")
    if hessian.max_products < 2:
        raise ConfigError(f"hessian.max_products must be at least 2, got {hessian.max_products}")
    for key in ("top_k", "trace_samples", "density_runs", "density_steps"):
        _check_positive(getattr(hessian, key), f"hessian.{key}")
    if hessian.batch_size is not None:
        _check_positive(hessian.batch_size, "hessian.batch_size")
    if hessian.seed < 0:
        raise ConfigError(f"hessian.seed must be 0 or more, got {hessian.seed}")
    if hessian.output is not None and hessian.output.suffix not in (".h5", ".hdf5"):
        raise ConfigError(
            f"hessian.output must be an HDF5 file ending in .h5, got {hessian.output}"
        )


def on_plane(grid: GridConfig) -> bool:
    """Whether the sweep's points use a y direction: a 2D grid, or a 1D curve through it."""
    return grid.y is not None or grid.path != "line"


def asks_for_hessian(config: SweepConfig) -> bool:
    """Whether a sweep computes a Hessian: eigenvalue maps, or directions made from one."""
    return config.hessian.eigenvalues or kinds.get(config.directions.kind).uses_hessian


def check_hessian_split(config: SweepConfig) -> None:
    """The Hessian's split must be one the config evaluates.

    Checked by a sweep only when it asks for a Hessian (`asks_for_hessian`), and by
    `lsurf hessian` (lsurf.run.hessian) always: the section's default split, train, must not
    refuse a sweep of the test split that computes no Hessian at all.
    """
    hessian, data = config.hessian, config.data
    if hessian.split not in data.splits:
        raise ConfigError(
            f"hessian.split is {hessian.split!r} but data.splits is {list(data.splits)}; "
            f"add {hessian.split} to data.splits, or set hessian.split to one of them"
        )


def replace_dataset(data: DataConfig, dataset: str) -> DataConfig:
    """`data` with another dataset name and a root, so its numeric fields can be checked."""
    return dataclasses.replace(data, dataset=dataset, root=data.root or Path("."), kwargs={})


def classes_of(dataset: str) -> int | None:
    """How many classes a built-in dataset has (None: known only once it is read)."""
    return {"cifar10": 10, "cifar100": 100}.get(dataset)


def _check_sweep(config: SweepConfig, objects: bool = False) -> SweepConfig:
    """Cross-field rules, and the kind-dependent defaults of directions.norm/ignore."""
    data, model, loss = config.data, config.model, config.evaluation.loss
    if objects:  # the API's objects: only the numbers are checked
        _check_data(replace_dataset(data, "cifar10"))
    else:
        data = _check_data(data)
        model = _check_model(model, data)
        if model.checkpoint is None:
            raise ConfigError(
                "missing required key model.checkpoint (the trained weights to sweep)"
            )
    if not (objects and loss.startswith(OBJECT_LABEL)):
        _check_loss(loss)
    automatic = [
        f"grid.{name}" for name in ("x", "y") if isinstance(getattr(config.grid, name), AutoAxis)
    ]
    if config.grid.path != "line" and (
        config.grid.y is not None
        or config.directions.kind != "target"
        or config.directions.y_target is None
    ):
        raise ConfigError(
            f"grid.path {config.grid.path} is a curve through three checkpoints: it needs a 1D "
            "grid (no grid.y), directions.kind: target and directions.y_target (the bend)"
        )
    check_selection(config.directions.params, "directions.params")
    resolved = kinds.resolve(config.directions, on_plane(config.grid), automatic)
    _check_hessian(config.hessian)
    if asks_for_hessian(config):
        check_hessian_split(config)
    _check_errors(config.evaluation)
    if config.output.suffix not in (".h5", ".hdf5"):
        raise ConfigError(f"output must be an HDF5 file ending in .h5, got {config.output}")
    return dataclasses.replace(config, model=model, data=data, directions=resolved)


def load_connect_config(path: Path, overrides: Sequence[str] = ()) -> ConnectConfig:
    return check_connect(parse(ConnectConfig, read_yaml(path, overrides), _AXIS_CONVERTERS))


def check_connect(config: ConnectConfig) -> ConnectConfig:
    """The connect section's own rules, and the data and model rules of a sweep."""
    section = config.connect
    if len(section.checkpoints) < 2:
        raise ConfigError(
            f"connect.checkpoints must list at least two checkpoints (A and B), got "
            f"{len(section.checkpoints)}"
        )
    if len(set(section.checkpoints)) != len(section.checkpoints):
        raise ConfigError("connect.checkpoints names a checkpoint twice; list each once")
    if section.points < 2:
        raise ConfigError(
            f"connect.points must be at least 2 (t = 0 and t = 1 are always points), got "
            f"{section.points}"
        )
    _check_positive(section.bn_examples, "connect.bn_examples")
    if config.model.checkpoint is not None:
        raise ConfigError(
            "model.checkpoint is not read by lsurf connect: list the checkpoints in "
            "connect.checkpoints"
        )
    if config.evaluation.bn_recompute is not None:
        raise ConfigError(
            "evaluation.bn_recompute is set by connect.bn: recompute (and connect.bn_examples); "
            "remove it"
        )
    if config.output.suffix not in (".h5", ".hdf5"):
        raise ConfigError(f"output must be an HDF5 file ending in .h5, got {config.output}")
    data = _check_data(config.data)
    _check_loss(config.evaluation.loss)
    _check_errors(config.evaluation)
    if section.plane_y is not None and section.plane is None:
        raise ConfigError(
            "connect.plane_y is the plane's b axis; set connect.plane (its a axis) too"
        )
    if section.plane is not None and section.curve == "none":
        raise ConfigError(
            "connect.plane sweeps the plane through A, B and a curve's bend; set "
            "connect.curve (bezier or polychain, or --curve) or remove connect.plane"
        )
    if section.curve != "none":  # the bend's recipe, refused before any work
        check_training(config.training)
    return dataclasses.replace(config, data=data, model=_check_model(config.model, data))


def stored_sharpness_config(raw: dict[str, Any]) -> SharpnessConfig:
    """A config a sharpness file stores, as this version reads it: keys added since it was
    written (sharpness.params) take their defaults, so an older lsurf's job resumes."""
    return parse(SharpnessConfig, raw, _AXIS_CONVERTERS)


def load_sharpness_config(path: Path, overrides: Sequence[str] = ()) -> SharpnessConfig:
    return check_sharpness(parse(SharpnessConfig, read_yaml(path, overrides), _AXIS_CONVERTERS))


def check_sharpness(config: SharpnessConfig) -> SharpnessConfig:
    """The sharpness section's own rules, and the data and model rules of a sweep."""
    section = config.sharpness
    if not section.measures:
        raise ConfigError("sharpness.measures is empty; list average, worst and/or m")
    if len(set(section.measures)) < len(section.measures):
        raise ConfigError("sharpness.measures names a measure twice; list each once")
    if not section.rho:
        raise ConfigError("sharpness.rho is empty; give one radius or more, e.g. [0.05]")
    for rho in section.rho:
        if not (rho > 0 and math.isfinite(rho)):
            raise ConfigError(f"sharpness.rho must be radii above 0, got {rho}")
    if len(set(section.rho)) < len(section.rho):
        raise ConfigError("sharpness.rho lists a radius twice; list each once")
    for key in ("samples", "steps", "m", "examples"):
        _check_positive(getattr(section, key), f"sharpness.{key}")
    if section.m > section.examples:
        raise ConfigError(
            f"sharpness.m ({section.m}) is more than sharpness.examples ({section.examples}): "
            "m-sharpness needs at least one batch of m examples; lower m"
        )
    if section.step_size is not None and not section.step_size > 0:
        raise ConfigError(f"sharpness.step_size must be above 0, got {section.step_size}")
    check_selection(section.params, "sharpness.params")
    if config.model.checkpoint is None:
        raise ConfigError("model.checkpoint is required: the sharpness of which weights?")
    if config.output.suffix not in (".h5", ".hdf5"):
        raise ConfigError(f"output must be an HDF5 file ending in .h5, got {config.output}")
    if config.evaluation.rel_error is not None:
        raise ConfigError(
            "evaluation.rel_error (early stopping) does not apply to sharpness: every unit "
            "measures its whole subset; remove it"
        )
    data = _check_data(dataclasses.replace(config.data, splits=(section.split,)))
    _check_loss(config.evaluation.loss)
    return dataclasses.replace(config, data=data, model=_check_model(config.model, data))


def check_sweep(config: SweepConfig) -> SweepConfig:
    """A sweep config built in code (lsurf connect's paths) under every rule of a YAML one."""
    return _check_sweep(config)
