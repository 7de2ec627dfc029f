"""Direction kinds: each kind of direction is one object, and this is their registry.

A kind (random, target, pca, ...) owns everything that depends on it, so a new kind is one
module and one line in `KINDS`:
- `resolve`: check its `directions.*` settings and fill its defaults, for a plane or a line
  (config time, no torch);
- `load`: read what it needs besides θ* (target: the second checkpoint) and the digests that
  tell its inputs apart, every time, even when the direction file is reused;
- `compute`: d1 (and d2) as a `Directions` value; what the evaluator needs (which tensors
  move, an end point to interpolate to) travels inside it, so the evaluator never reads a kind;
- `record`: the settings the direction file keeps, which reuse requires to match;
- `describe`/`subject`/`axis_labels`: its words in `lsurf info` and on figures.

Modules here import torch only inside `load`/`compute`, so the config, `lsurf info` and the
plots use the kinds without it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from lsurf.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from lsurf.config import DirectionsConfig
    from lsurf.directions import Directions

# Settings every kind shares; the others belong to the kinds that list them in `keys`.
COMMON_KEYS = ("kind", "file")


@dataclass(frozen=True)
class Context:
    """What a kind may use to load and compute: θ* and a way to build its architecture."""

    model: nn.Module  # holding θ*
    build_model: Callable[[], nn.Module]  # a fresh model of the same architecture
    plane: bool  # a 2D surface wants d2 as well
    # For kinds with `uses_hessian`: builds (on first call: the data is loaded then) the
    # Hessian operator at θ* and returns it with its `lsurf.evaluate.Curvature` settings.
    curvature: Callable[[], tuple[Any, Any]] | None = None


@dataclass(frozen=True)
class Inputs:
    """What `load` read: digests that identify the kind's inputs, and an end point, if any."""

    identity: dict[str, str] = dataclasses.field(default_factory=dict)
    end: Any = None  # dict[str, torch.Tensor] of the point to interpolate to
    y_end: Any = None  # a plane's second end point (a third checkpoint), if any


class Kind:
    """The base of every direction kind; subclasses set the class attributes and override."""

    name: ClassVar[str]
    keys: ClassVar[tuple[str, ...]]  # the directions.* settings this kind reads
    fits_auto_axes: ClassVar[bool] = False  # 'auto:num' grid axes fit to what it computes
    plane_only: ClassVar[bool] = False
    # Its directions come with the training path on them (pca); for the other kinds a
    # `directions.trajectory` is projected onto their plane (lsurf.projection).
    computes_trajectory: ClassVar[bool] = False
    # Settings that shape only a plane's y direction: refused on a line, where they would
    # silently do nothing.
    plane_keys: ClassVar[tuple[str, ...]] = (
        "y_norm", "y_ignore", "same_dir", "y_target", "trajectory", "trajectories"
    )  # fmt: skip
    # Computed from the Hessian the `hessian:` section defines, whose settings the direction
    # file then records too (reuse requires them to match).
    uses_hessian: ClassVar[bool] = False

    def resolve(self, settings: DirectionsConfig, plane: bool) -> DirectionsConfig:
        return settings

    def moves_buffers(self, settings: DirectionsConfig) -> bool:
        """Whether BN running statistics move with the point: `directions.space: states`
        (the reference's --dir_type states), whose directions cover them as well."""
        return settings.space == "states"

    def load(self, settings: DirectionsConfig, context: Context) -> Inputs:
        return Inputs()

    def compute(self, settings: DirectionsConfig, context: Context, inputs: Inputs) -> Directions:
        raise NotImplementedError

    def record(self, settings: DirectionsConfig) -> dict[str, Any]:
        return {"norm": settings.norm, "ignore": settings.ignore, "seed": 0}

    def describe(self, settings: Mapping[str, Any]) -> str:
        """The settings in a few words for `lsurf info` (`settings`: the stored YAML tree)."""
        return ""

    def subject(self, settings: Mapping[str, Any]) -> str:
        """What a figure shows, e.g. 'random directions, filter-normalized, biases/BN fixed'."""
        return f"{self.name} directions"

    def axis_labels(self, settings: Mapping[str, Any], checkpoint: str) -> tuple[str, str]:
        return "α (direction 1)", "β (direction 2)"


def _registry() -> dict[str, Kind]:
    from lsurf.kinds.hessian import HessianPlane
    from lsurf.kinds.pca import PrincipalPlane
    from lsurf.kinds.random import RandomPlane
    from lsurf.kinds.reference import ReferenceDirections
    from lsurf.kinds.target import Interpolation

    kinds = (
        RandomPlane(),
        Interpolation(),
        PrincipalPlane(),
        HessianPlane(),
        ReferenceDirections(),
    )
    return {kind.name: kind for kind in kinds}


KINDS: dict[str, Kind] = _registry()


def get(name: str) -> Kind:
    kind = KINDS.get(name)
    if kind is None:
        raise ConfigError(f"directions.kind must be one of {', '.join(KINDS)}; got {name!r}")
    return kind


class _Unknown(Kind):
    """A kind this version does not know (a file from a newer lsurf): named, not described."""

    keys = ()

    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]  # per instance here; a ClassVar on real kinds


def described(name: str | None) -> Kind:
    """The kind that describes stored settings: its own object, or a plain stand-in for a
    name this version does not know (files name no kind before lsurf stored configs: random)."""
    return KINDS.get(name or "random") or _Unknown(str(name))


def _resolve_runs(settings: DirectionsConfig) -> DirectionsConfig:
    """Check `directions.trajectories` against the other settings; label each run (its
    folder's name when none is given) so the stored config names what the figure shows."""
    if settings.trajectory is not None:
        raise ConfigError(
            "directions.trajectory and directions.trajectories both give training paths: "
            "list the single run under trajectories, or remove trajectories"
        )
    if settings.same_dir:
        raise ConfigError(
            "directions.trajectories cannot be projected onto a plane whose y is x "
            "(directions.same_dir): remove one of them"
        )
    runs = tuple(
        dataclasses.replace(run, label=run.path.name if run.label is None else run.label)
        for run in settings.trajectories
    )
    labels = [run.label for run in runs]
    repeated = next((label for label in labels if labels.count(label) > 1), None)
    if repeated is not None:
        raise ConfigError(
            f"directions.trajectories names two runs {repeated!r}: give each entry its own "
            "label ({path: ..., label: ...})"
        )
    return dataclasses.replace(settings, trajectories=runs)


def resolve(settings: DirectionsConfig, plane: bool, auto_axes: list[str]) -> DirectionsConfig:
    """Check `settings` against its kind (keys it does not read, grid shape) and fill defaults."""
    kind = get(settings.kind)
    defaults = {
        field.name: field.default
        if field.default_factory is dataclasses.MISSING
        else field.default_factory()  # a section of its own (directions.params)
        for field in dataclasses.fields(settings)
    }
    for key, default in defaults.items():
        if key in COMMON_KEYS or key in kind.keys or getattr(settings, key) == default:
            continue
        users = [name for name, other in KINDS.items() if key in other.keys]
        raise ConfigError(
            f"directions.{key} is only used with directions.kind: {' or '.join(users)}"
        )
    if not plane and settings.trajectories:
        raise ConfigError(
            "directions.trajectories draws training paths on a plane: give grid.y, or remove it"
        )
    if not plane:
        for key in kind.plane_keys:
            if getattr(settings, key) not in (None, False, defaults[key]):
                raise ConfigError(
                    f"directions.{key} shapes the y direction of a plane: give grid.y, or remove it"
                )
    if settings.same_dir and settings.trajectory is not None:
        raise ConfigError(
            "directions.trajectory cannot be projected onto a plane whose y is x "
            "(directions.same_dir): remove one of them"
        )
    if settings.trajectories:
        settings = _resolve_runs(settings)
    resolved = kind.resolve(settings, plane)
    if auto_axes and not kind.fits_auto_axes:
        fitting = " or ".join(name for name, other in KINDS.items() if other.fits_auto_axes)
        raise ConfigError(
            f"{auto_axes[0]}: 'auto:num' fits the range to a training path, so it needs "
            f"directions.kind: {fitting}; give 'min:max:num' instead"
        )
    if kind.plane_only and not plane:
        raise ConfigError(f"directions.kind: {kind.name} spans a plane: give grid.y as well")
    return resolved


__all__ = ["COMMON_KEYS", "Context", "Inputs", "Kind", "described", "get", "resolve"]
