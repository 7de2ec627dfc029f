"""The config tree: YAML + `--set` overrides, validated once, into frozen dataclasses.

Input: a YAML file (read with `yaml.safe_load`) and `key.path=value` overrides.
Output: a `SweepConfig` or `TrainConfig` whose every field is typed and has a value, with
relative paths resolved against the current directory. `to_yaml` writes the resolved tree
back (every default spelled out), which is what the surface file stores.

The dataclasses are the single source of truth for the options: the parser walks their
fields, so an unknown key is rejected with the list of valid ones and a wrong type names the
key, the value and the expected type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from lsurf.data import REFERENCE_MEAN, REFERENCE_STD
from lsurf.errors import ConfigError
from lsurf.grid import AXIS_HINT, AutoAxis, Axis, parse_auto_axis, parse_axis

SplitName = Literal["train", "test"]
DirectionKind = Literal["random", "target", "pca"]
Norm = Literal["filter", "layer", "weight", "dfilter", "dlayer", "none"]
Ignore = Literal["biasbn", "none"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["fp32", "tf32", "bf16"]


@dataclass(frozen=True)
class ModelConfig:
    name: str
    checkpoint: Path | None = None  # required by `sweep`; optional initial weights for `train`
    num_classes: int = 10


@dataclass(frozen=True)
class DataConfig:
    root: Path
    splits: tuple[SplitName, ...] = ("train",)
    batch_size: int = 256
    subset: int | None = None  # evaluate on this many examples of each split (None: all)
    subset_seed: int = 0
    # Normalization the checkpoint was trained with; published checkpoints differ.
    mean: tuple[float, float, float] = REFERENCE_MEAN
    std: tuple[float, float, float] = REFERENCE_STD
    download: bool = False  # fetch real CIFAR-10 with torchvision where a network exists


@dataclass(frozen=True)
class DirectionsConfig:
    kind: DirectionKind = "random"
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
    center: bool = True  # pca rows mean-centred before the SVD, as the reference (sklearn)


@dataclass(frozen=True)
class GridConfig:
    # 'auto:num' (AutoAxis) fits the range to a PCA path; the sweep resolves it to an Axis
    # before anything is stored, so the surface file records the concrete range.
    x: Axis | AutoAxis
    y: Axis | AutoAxis | None = None


@dataclass(frozen=True)
class EvaluationConfig:
    device: Device = "auto"  # auto: CUDA when present, else CPU
    # fp32 by default. tf32 (GPU convolutions/matmuls with 10-bit mantissas) and bf16
    # (autocast: weights and activations rounded to 8 bits) are faster opt-ins whose error
    # benchmarks/sweep_overhead.py --precision measures.
    precision: Precision = "fp32"
    channels_last: bool = True


@dataclass(frozen=True)
class SweepConfig:
    model: ModelConfig
    data: DataConfig
    grid: GridConfig
    output: Path
    directions: DirectionsConfig = field(default_factory=DirectionsConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

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


# ---------------------------------------------------------------------------- parsing


class _SafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader (no Python objects, ever) that reads '1:2:3' as text.

    YAML 1.1 reads an unquoted `-1:1:51` as a base-60 integer (-3711); a grid spec written
    without quotes must reach the spec parser as the string the user typed.
    """


def _number_or_text(loader: _SafeLoader, node: yaml.ScalarNode) -> Any:
    text = loader.construct_scalar(node)
    if ":" in text:
        return text
    if node.tag.endswith(":int"):
        return yaml.SafeLoader.construct_yaml_int(loader, node)
    return yaml.SafeLoader.construct_yaml_float(loader, node)


_SafeLoader.add_constructor("tag:yaml.org,2002:int", _number_or_text)
_SafeLoader.add_constructor("tag:yaml.org,2002:float", _number_or_text)


def safe_load(text: str) -> Any:
    """yaml.safe_load, except that sexagesimal numbers stay text (see _SafeLoader)."""
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass


def load_sweep_config(path: Path, overrides: list[str] = ()) -> SweepConfig:  # type: ignore[assignment]
    return _check_sweep(_parse(SweepConfig, _read_yaml(path, overrides), ""))


def load_train_config(path: Path, overrides: list[str] = ()) -> TrainConfig:  # type: ignore[assignment]
    config = _parse(TrainConfig, _read_yaml(path, overrides), "")
    training = config.training
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
    _check_data(config.data)
    return config


def _read_yaml(path: Path, overrides: list[str]) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = safe_load(path.read_text())
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(error, "problem", error)
        raise ConfigError(f"{path} is not valid YAML{line}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (model, data, ...)")
    for override in overrides:
        _apply_override(raw, override)
    return raw


def _apply_override(raw: dict[str, Any], override: str) -> None:
    """Set `a.b.c=value` in the raw tree; the value is parsed as YAML, then type-checked."""
    key, sep, text = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects key.path=value, got {override!r}")
    try:
        value = safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
    parts = key.split(".")
    node = raw
    for index, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[: index + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def _parse(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    where = prefix.rstrip(".") or "the config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {_describe(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]} in {where}; valid keys: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, spec in fields.items():
        if name in raw:
            values[name] = _convert(hints[name], raw[name], prefix + name)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {prefix}{name}")
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, key)
            except ConfigError as error:
                errors.append(error)
        raise errors[0]
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            valid = ", ".join(str(choice) for choice in choices)
            raise ConfigError(f"{key} must be one of {valid}; got {_describe(value)}")
        return value
    if origin is tuple:
        items = get_args(hint)
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            value = [value] if items[-1] is Ellipsis else value
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {_describe(value)}")
        if items[-1] is Ellipsis:
            return tuple(_convert(items[0], item, key) for item in value)
        if len(value) != len(items):
            raise ConfigError(f"{key} must be a list of {len(items)} values, got {len(value)}")
        pairs = zip(items, value, strict=True)
        return tuple(_convert(item_hint, item, key) for item_hint, item in pairs)
    if hint is Axis or hint is AutoAxis:
        if not isinstance(value, str):
            raise ConfigError(f"{AXIS_HINT.format(key=key)}; got {_describe(value)}")
        return parse_axis(value, key) if hint is Axis else parse_auto_axis(value, key)
    if dataclasses.is_dataclass(hint):
        return _parse(hint, value, key + ".")
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key} must be a path, got {_describe(value)}")
        return Path(value).expanduser().absolute()
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {_describe(value)}")
        return value
    raise TypeError(f"no converter for {hint!r} ({key})")  # a bug in the config tree


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _check_positive(value: int, key: str) -> None:
    if value < 1:
        raise ConfigError(f"{key} must be at least 1, got {value}")


def _check_data(data: DataConfig) -> None:
    _check_positive(data.batch_size, "data.batch_size")
    if data.subset is not None:
        _check_positive(data.subset, "data.subset")
    if not data.splits:
        raise ConfigError("data.splits must name at least one split: train, test")
    if len(set(data.splits)) != len(data.splits):
        raise ConfigError(f"data.splits names a split twice: {list(data.splits)}")
    if any(value <= 0 for value in data.std):
        raise ConfigError(f"data.std must be positive, got {list(data.std)}")


def _check_sweep(config: SweepConfig) -> SweepConfig:
    """Cross-field rules, and the kind-dependent defaults of directions.norm/ignore."""
    _check_data(config.data)
    if config.model.checkpoint is None:
        raise ConfigError("missing required key model.checkpoint (the trained weights to sweep)")
    directions = config.directions
    if directions.kind != "target" and directions.target is not None:
        raise ConfigError("directions.target is only used with directions.kind: target")
    if directions.kind != "pca" and directions.trajectory is not None:
        raise ConfigError("directions.trajectory is only used with directions.kind: pca")
    automatic = [
        f"grid.{name}" for name in ("x", "y") if isinstance(getattr(config.grid, name), AutoAxis)
    ]
    if automatic and directions.kind != "pca":
        raise ConfigError(
            f"{automatic[0]}: 'auto:num' fits the range to a training path, so it needs "
            "directions.kind: pca; give 'min:max:num' instead"
        )
    if directions.kind == "random":
        resolved = dataclasses.replace(
            directions,
            norm=directions.norm or "filter",
            ignore=directions.ignore or "biasbn",
        )
    elif directions.kind == "pca":
        if directions.trajectory is None:
            raise ConfigError(
                "directions.kind: pca needs directions.trajectory (the folder of the training "
                "run's checkpoints)"
            )
        if directions.norm not in (None, "none"):
            raise ConfigError(
                "directions.norm applies to random directions only; principal components "
                "are unit vectors: remove it"
            )
        resolved = dataclasses.replace(
            directions, norm="none", ignore=directions.ignore or "biasbn"
        )
    else:
        if directions.target is None:
            raise ConfigError("directions.kind: target needs directions.target (second checkpoint)")
        if directions.norm not in (None, "none") or directions.ignore not in (None, "none"):
            raise ConfigError(
                "directions.norm and directions.ignore apply to random directions only; "
                "a target direction is θ2 − θ1 unnormalized: remove them"
            )
        if config.grid.y is not None:
            raise ConfigError("directions.kind: target is a 1D interpolation: remove grid.y")
        resolved = dataclasses.replace(directions, norm="none", ignore="none")
    if config.output.suffix not in (".h5", ".hdf5"):
        raise ConfigError(f"output must be an HDF5 file ending in .h5, got {config.output}")
    return dataclasses.replace(config, directions=resolved)


# ---------------------------------------------------------------------------- writing


def to_plain(config: Any) -> Any:
    """The config tree as plain YAML-able values (paths as strings, axes as specs)."""
    if isinstance(config, (Axis, AutoAxis)):
        return config.spec
    if dataclasses.is_dataclass(config):
        return {f.name: to_plain(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Path):
        return str(config)
    if isinstance(config, tuple):
        return [to_plain(item) for item in config]
    return config


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_plain(config), sort_keys=False, allow_unicode=True)


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config trees."""
    keys = list(old) + [key for key in new if key not in old]
    found: list[str] = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}")
    return found
