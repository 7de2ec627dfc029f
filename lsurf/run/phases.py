"""The phases of a sweep before its run: check, load and commit.

- **check** (`prepare`, `check_output`; rank 0 or the one process): every check on user input,
  made before the first byte is written — the grid's size against the machine's memory and
  disk (lsurf.run.capacity), the model holding θ*, the direction kind's own inputs (θ2 of an
  interpolation, a trajectory), the directions (reusing the direction file when it fits this
  sweep, recomputing it when there is none or --force owns it, refusing one made for another
  sweep), the grid with its 'auto' axes fitted, the attributes that tell this sweep from any
  other, and the decision about the output (create, resume, or leave it alone because it is
  complete; a file holding a different sweep is refused).
- **load** (`load`; every worker, the serial run, --plan): a fresh model holding θ*, the data
  on the device, the loss, the evaluator, and its probe, which decides the columns.
- **commit** (`open_output`): new directions, then the surface file. The only writer here;
  `sweep` calls it only after every rank has loaded.

Where the model, θ*, data and loss come from is a `Sources`: `FROM_CONFIG` resolves the
config's names (on every rank), the Python API hands over objects.

Input: a validated `SweepConfig`. Output: `Prepared` (whose `worker_setup()` is what rank 0
sends to each worker), the output decision, an `Evaluator`, the open surface file. Bad input
raises `LsurfError` and never touches existing output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsurf import checkpoint, compilation, kinds, models, params
from lsurf.config import DataConfig, GridConfig, ModelConfig, SweepConfig, on_plane
from lsurf.data.splits import SplitData, open_split
from lsurf.directions import Directions
from lsurf.errors import ConfigError, OutputError
from lsurf.evaluate import (
    Curvature,
    Evaluator,
    NormStatistics,
    StandardErrors,
    curvature_operator,
    pick_device,
)
from lsurf.files import directions as direction_file
from lsurf.files import surface as surface_file
from lsurf.files.hdf5 import stored_config
from lsurf.grid import AutoAxis, Axis, Grid, fit_axis
from lsurf.hessian import HessianOperator
from lsurf.losses import Loss, build_loss
from lsurf.metrics import Column
from lsurf.projection import path_on_plane, runs_on_plane
from lsurf.run import capacity
from lsurf.run.identity import (
    direction_settings,
    obtain_directions,
    recorded_differences,
    selection_identity,
)
from lsurf.schema import to_yaml
from lsurf.weights import weight_statistics


def _build_model(model: ModelConfig) -> torch.nn.Module:
    return models.build_named(model.name, model.num_classes, model.kwargs)


def _load_checkpoint(model: torch.nn.Module, config: ModelConfig) -> str:
    assert config.checkpoint is not None  # the config requires it for sweeps
    checkpoint.load_weights(model, config.checkpoint)
    return checkpoint.file_digest(config.checkpoint)


@dataclass(frozen=True)
class Sources:
    """Where a sweep's model, θ*, data and loss come from.

    The YAML door resolves the config's names on every rank (`FROM_CONFIG`); the Python API
    passes objects it holds in memory. Everything after this point is the same pipeline.
    """

    build_model: Callable[[ModelConfig], torch.nn.Module]  # a fresh model of the architecture
    load_origin: Callable[[torch.nn.Module, ModelConfig], str]  # θ* into it; returns its digest
    open_split: Callable[[DataConfig, str, torch.device, bool], SplitData]
    loss: Callable[[str], Loss]


FROM_CONFIG = Sources(_build_model, _load_checkpoint, open_split, build_loss)


@dataclass(frozen=True)
class Prepared:
    """Everything a sweep needs before any output is written (all user input checked)."""

    config: SweepConfig
    model: torch.nn.Module  # holding θ*
    directions: Directions  # with what the evaluator needs (end point, moving buffers)
    directions_are_new: bool  # computed now, to be saved once the output is accepted
    grid: Grid
    identity: dict[str, Any]  # attributes that tell this sweep from any other
    selected: params.Selected | None = None  # what directions.params picked, if it selects
    # evaluation.compile: auto's inputs from rank 0 (with_compile_plan), the same for every
    # worker: how many workers share the grid, and whether the compile cache holds the network.
    workers: int = 1
    warm_cache: bool = False
    compile_note: str = ""  # a resumed auto sweep: the choice its file records, for the log

    def worker_setup(self) -> WorkerSetup:
        state = {key: value.detach().clone() for key, value in self.model.state_dict().items()}
        return WorkerSetup(
            self.config,
            state,
            self.directions,
            self.grid,
            self.workers,
            self.warm_cache,
            self.compile_note,
        )


@dataclass(frozen=True)
class WorkerSetup:
    """What an evaluator is built from; sent from rank 0 to every worker (no shared disk)."""

    config: SweepConfig
    state: dict[str, torch.Tensor]  # θ*: the checkpoint's full state dict
    directions: Directions
    grid: Grid
    workers: int = 1  # sharing the grid (evaluation.compile: auto)
    warm_cache: bool = False  # rank 0's compile cache holds this network (auto)
    compile_note: str = ""  # what a resumed auto sweep's log says of its recorded choice


def prepare(config: SweepConfig, force: bool = False, sources: Sources = FROM_CONFIG) -> Prepared:
    """Check phase: load θ* and the kind's inputs, obtain directions and the grid; write nothing.

    `force` lets new directions replace the output's own direction file.
    """
    capacity.check_output_writable(config, force)  # before any work, as the rest
    fitted_later = isinstance(config.grid.x, AutoAxis) or isinstance(config.grid.y, AutoAxis)
    if not fitted_later:  # a grid too large for the machine is refused before any work
        capacity.check_sweep_fits(config, force)
    model = sources.build_model(config.model)
    identity: dict[str, Any] = {
        "checkpoint_sha256": sources.load_origin(model, config.model),
        "direction_file": str(config.direction_file),
    }
    kind = kinds.get(config.directions.kind)
    # directions.params (kinds random, target, pca): every glob checked against the model's
    # names before any work, and what it picks recorded; the default records nothing.
    selected = None
    if not config.directions.params.everything:
        moves = kind.moves_buffers(config.directions)
        selected = params.select(model, config.directions.params, moves)
        identity |= selection_identity(selected)
    context = kinds.Context(
        model,
        lambda: sources.build_model(config.model),
        on_plane(config.grid),
        curvature=lambda: hessian_at(config, model, sources),
    )
    inputs = kind.load(config.directions, context)
    identity |= inputs.identity
    directions, is_new = obtain_directions(config, kind, context, inputs, identity, force)
    directions = replace(
        directions,
        moves_buffers=kind.moves_buffers(config.directions),
        end=inputs.end,
        y_end=inputs.y_end,
    )
    if config.directions.trajectory is not None and not kind.computes_trajectory:
        trajectory = config.directions.trajectory
        path = path_on_plane(model, directions, trajectory, config.directions.pattern)
        directions = replace(directions, trajectory=path)
    if config.directions.trajectories:  # every kind: each run projected onto the plane
        runs = runs_on_plane(
            model, directions, config.directions.trajectories, config.directions.pattern
        )
        directions = replace(directions, runs=runs)
    identity["directions_sha256"] = directions.digest()
    config = replace(config, grid=resolve_grid(config.grid, directions))
    if fitted_later:
        capacity.check_sweep_fits(config, force)
    identity["config"] = to_yaml(config)
    assert isinstance(config.grid.x, Axis) and not isinstance(config.grid.y, AutoAxis)
    grid = Grid.from_axes(config.grid.x, config.grid.y, config.grid.path)
    return Prepared(config, model, directions, is_new, grid, identity, selected)


def hessian_at(
    config: SweepConfig, model: torch.nn.Module, sources: Sources = FROM_CONFIG
) -> tuple[HessianOperator, Curvature]:
    """The Hessian the `hessian:` section defines, at the weights `model` holds, on the
    configured device (a copy of the model: `model` stays where it is), checked for a second
    derivative on a probe batch. For kinds computed from the Hessian, on rank 0 only."""
    settings = curvature_settings(config)
    device = pick_device(config.evaluation.device)
    channels_last = config.evaluation.channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    copy = sources.build_model(config.model)
    copy.load_state_dict(model.state_dict())
    # torch's overloads of Module.to lack (device=, memory_format=), which it takes
    copy = copy.to(device=device, memory_format=memory_format).eval()  # type: ignore[call-overload]
    split = sources.open_split(config.data, settings.split, device, channels_last)
    loss = sources.loss(config.evaluation.loss)
    return curvature_operator(copy, split, settings, loss), settings


def resolve_grid(grid: GridConfig, directions: Directions) -> GridConfig:
    """Replace 'auto:num' axes by ranges fitted to the PCA path (config checks the kind)."""
    path = None if directions.trajectory is None else directions.trajectory.coordinates
    if directions.runs is not None and directions.runs.paths:  # fitted to every run's path
        path = np.concatenate([run.trajectory.coordinates for run in directions.runs.paths])
    axes = []
    for column, axis in enumerate((grid.x, grid.y)):
        if isinstance(axis, AutoAxis):
            assert path is not None  # config allows auto axes only for kind: pca
            axis = fit_axis(path[:, column], axis.num)
        axes.append(axis)
    x, y = axes
    assert x is not None  # GridConfig.x always is
    return GridConfig(x, y, grid.path)


def check_output(prepared: Prepared, force: bool) -> bool | None:
    """None: create the output; False: resume it; True: it is already complete."""
    path = prepared.config.output
    if force or not path.exists():
        return None
    found = surface_file.read_surface_attributes(path)
    changed = recorded_differences(found, prepared.config, prepared.identity)
    if changed:
        raise OutputError(
            f"output {path} holds a different sweep (differs in: {', '.join(changed)}); "
            "choose another output path, or pass --force to start over"
        )
    return bool(surface_file.read_surface(path).done.all())


def load(setup: WorkerSetup, device: torch.device, sources: Sources = FROM_CONFIG) -> Evaluator:
    """Load phase (serial run, every worker, --plan): a fresh model holding θ*, the data and
    the directions on `device`, probed once. Bad data or a loss that does not fit the model
    raise here, one line each, before anything is written. A setup of another job's kind
    (lsurf sharpness's) builds its own evaluator."""
    own_loader = getattr(setup, "load", None)
    if own_loader is not None:
        return own_loader(device, sources)
    config = setup.config
    model = sources.build_model(config.model)
    model.load_state_dict(setup.state)
    channels_last = config.evaluation.channels_last
    splits: dict[str, SplitData] = {
        name: sources.open_split(config.data, name, device, channels_last)
        for name in config.data.splits
    }
    evaluation = config.evaluation
    cache = compilation.cache_folder(evaluation.compile_cache)
    evaluator = Evaluator(
        model,
        setup.directions,
        splits,
        config.data.batch_size,
        device,
        channels_last,
        evaluation.precision,
        sources.loss(evaluation.loss),
        curvature_settings(config) if config.hessian.eigenvalues else None,
        fold_bn=evaluation.fold_bn,
        compile=evaluation.compile is True,
        norm_statistics=norm_statistics(config, sources, device, channels_last),
        compile_cache=cache,
    )
    if setup.compile_note:
        evaluator.notes.append(setup.compile_note)
    if evaluation.compile == "auto":
        decision = compile_decision(setup, evaluator)
        evaluator.compile_choice = decision.compile
        evaluator.notes.append(decision.reason)
        if decision.compile:
            evaluator.compile_network(cache)
    errors = error_settings(config)
    if errors is not None:
        evaluator.estimate_errors(errors)
    return evaluator


def compile_decision(setup: WorkerSetup, evaluator: Evaluator) -> compilation.Decision:
    """What evaluation.compile: auto chooses (lsurf.compilation.decide), from what every
    worker knows alike: the grid's points over the workers, the examples each point evaluates
    and the network's operations per example, the device and rank 0's view of the cache; so
    all of them choose the same."""
    points = -(-setup.grid.size // max(setup.workers, 1))  # the most any worker may get
    examples = sum(len(split) for split in evaluator.splits.values())
    flops = evaluator.flops_per_example()
    return compilation.decide(points, examples, flops, evaluator.device.type, setup.warm_cache)


def with_compile_plan(prepared: Prepared, workers: int) -> Prepared:
    """`prepared` with what evaluation.compile: auto decides from (rank 0 tells every worker
    the same): the workers sharing its grid, and whether the cache holds its network."""
    evaluation = prepared.config.evaluation
    if evaluation.compile != "auto":
        return prepared
    cuda = evaluation.device == "cuda" or (
        evaluation.device == "auto" and torch.cuda.is_available()
    )
    key = compilation.graph_key(
        prepared.model,
        prepared.config.data.batch_size,
        evaluation.precision,
        evaluation.fold_bn,
        "cuda" if cuda else "cpu",
    )
    warm = compilation.is_warm(compilation.cache_folder(evaluation.compile_cache), key)
    return replace(prepared, workers=max(workers, 1), warm_cache=warm)


def with_compile_choice(prepared: Prepared, compiled: bool) -> Prepared:
    """`prepared` with evaluation.compile: auto resolved to the workers' choice, before its
    surface file records the config: a resume reads the choice back from there."""
    if prepared.config.evaluation.compile != "auto":
        return prepared
    evaluation = replace(prepared.config.evaluation, compile=compiled)
    config = replace(prepared.config, evaluation=evaluation)
    identity = prepared.identity | {"config": to_yaml(config)}
    return replace(prepared, config=config, identity=identity)


def with_recorded_compile(prepared: Prepared, force: bool) -> Prepared:
    """evaluation.compile: auto on an output to resume takes the choice its stored config
    records (a file written before auto existed records false or true as well): compiled and
    eager values differ in their last bits, so a resume never switches."""
    config = prepared.config
    if config.evaluation.compile != "auto" or force or not config.output.exists():
        return prepared
    stored = stored_config(surface_file.read_surface_attributes(config.output))
    evaluation = stored.get("evaluation") if isinstance(stored, dict) else None
    compiled = evaluation.get("compile", False) if isinstance(evaluation, dict) else False
    if not isinstance(compiled, bool):
        return prepared  # not a surface this version wrote: check_output says what differs
    note = compilation.recorded(compiled).reason
    return replace(with_compile_choice(prepared, compiled), compile_note=note)


def norm_statistics(
    config: SweepConfig, sources: Sources, device: torch.device, channels_last: bool
) -> NormStatistics | None:
    """The evaluator's view of evaluation.bn_recompute: the train split it re-estimates BN
    statistics on (opened whether or not the sweep evaluates it)."""
    examples = config.evaluation.bn_recompute
    if examples is None:
        return None
    split = sources.open_split(config.data, "train", device, channels_last)
    return NormStatistics(split, "train", examples, config.evaluation.bn_seed)


def error_settings(config: SweepConfig) -> StandardErrors | None:
    """The evaluator's view of the evaluation's standard_errors/rel_error/min_examples (None:
    neither asked for)."""
    evaluation = config.evaluation
    if not evaluation.standard_errors and evaluation.rel_error is None:
        return None
    return StandardErrors(
        evaluation.rel_error,
        evaluation.min_examples,
        config.data.subset_seed,
        evaluation.control_variate,
    )


def curvature_settings(config: SweepConfig) -> Curvature:
    """The evaluator's view of the `hessian:` section."""
    settings = config.hessian
    return Curvature(
        split=settings.split,
        params=settings.params,
        tol=settings.tol,
        max_products=settings.max_products,
        seed=settings.seed,
        batch_size=settings.batch_size or config.data.batch_size,
        names=settings.names,
    )


def check_columns(prepared: Prepared, resume: bool, columns: list[Column]) -> None:
    """Refuse to resume an output that holds other metrics than the workers measure (the
    loss or the data changed); a job of several sweeps checks them all before any commit."""
    path = prepared.config.output
    if not resume:
        return
    stored = [column.name for column in surface_file.read_surface_columns(path)]
    if sorted(stored) != sorted(column.name for column in columns):
        raise OutputError(
            f"output {path} holds the metrics {', '.join(stored)} but this sweep "
            f"measures {', '.join(column.name for column in columns)} (did the loss or the "
            "data change?); choose another output path, or pass --force to start over"
        )


def open_output(
    prepared: Prepared, resume: bool, columns: list[Column]
) -> surface_file.SurfaceWriter:
    """Commit phase: save new directions, then create or reopen the surface file."""
    config = prepared.config
    check_columns(prepared, resume, columns)
    if prepared.directions_are_new:
        direction_file.write_directions(
            config.direction_file,
            prepared.directions,
            direction_settings(config, prepared.identity),
        )
    if resume:
        return surface_file.SurfaceWriter(config.output)
    return surface_file.create_surface(
        config.output,
        prepared.grid,
        columns,
        prepared.identity,
        prepared.directions.trajectory,
        weight_statistics(prepared.model.state_dict()),
        prepared.directions.runs,
    )


def check_distinct_outputs(configs: Sequence[SweepConfig]) -> None:
    """Sweeps of one job write one surface file each: two configs naming one output are
    refused before anything is computed."""
    seen: dict[Path, int] = {}
    for position, config in enumerate(configs, start=1):
        path = config.output.absolute()
        if path in seen:
            raise ConfigError(
                f"sweeps {seen[path]} and {position} of this job both write {config.output}; "
                "give each config its own output"
            )
        seen[path] = position


def share_direction_files(prepared: Sequence[Prepared]) -> list[Prepared]:
    """Sweeps of one job that name one direction file: refused where they would write
    different directions to it; where they would write the same, only the first writes it."""
    owner: dict[Path, Prepared] = {}
    shared = []
    for sweep in prepared:
        path = sweep.config.direction_file.absolute()
        first = owner.setdefault(path, sweep)
        if first is not sweep and sweep.directions_are_new:
            if first.identity["directions_sha256"] != sweep.identity["directions_sha256"]:
                raise ConfigError(
                    f"the sweeps writing {first.config.output} and {sweep.config.output} "
                    "would write different directions to one direction file, "
                    f"{sweep.config.direction_file}; give each its own directions.file"
                )
            sweep = replace(sweep, directions_are_new=False)
        shared.append(sweep)
    return shared
