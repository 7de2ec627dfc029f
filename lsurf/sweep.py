"""A whole sweep, top to bottom: config → model → directions → output → points → results.

Input: a validated `SweepConfig`. Output: the surface file at `config.output` (created,
resumed or left alone when already complete) and the direction file beside it.

Order matters for the promise that bad input never touches existing output: everything
that can fail on user input (model, checkpoints, direction file, the output's identity,
the data) is checked before the first byte is written.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from lsurf import checkpoint, models, params, store
from lsurf.config import SweepConfig, differences, to_plain, to_yaml
from lsurf.data import Split, load_split
from lsurf.directions import Directions, random_directions, target_direction
from lsurf.errors import OutputError
from lsurf.evaluate import Evaluator, pick_device
from lsurf.grid import Grid, pending

# Keys that do not change a single result value, so resuming with them changed is fine.
OPERATIONAL_KEYS = {"data.download"}

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SweepOutcome:
    path: Path
    total: int  # points on the grid
    computed: int  # points evaluated by this run
    already_complete: bool  # the file was complete before this run started


@dataclass(frozen=True)
class Prepared:
    """Everything a sweep needs before any output is written (all user input checked)."""

    config: SweepConfig
    model: torch.nn.Module  # holding θ*
    directions: Directions
    directions_are_new: bool  # computed now, to be saved once the output is accepted
    end: dict[str, torch.Tensor] | None  # θ2 of an interpolation
    grid: Grid
    identity: dict[str, Any]  # attributes that tell this sweep from any other


def prepare(config: SweepConfig, force: bool = False) -> Prepared:
    """Load and check everything; `force` lets new directions replace the output's own file."""
    model = models.build(config.model.name, config.model.num_classes)
    assert config.model.checkpoint is not None  # the config requires it for sweeps
    checkpoint.load_weights(model, config.model.checkpoint)
    identity: dict[str, Any] = {
        "config": to_yaml(config),
        "checkpoint_sha256": checkpoint.file_digest(config.model.checkpoint),
        "direction_file": str(config.direction_file),
    }
    end = None
    if config.directions.kind == "target":
        assert config.directions.target is not None  # the config requires it for targets
        second = models.build(config.model.name, config.model.num_classes)
        checkpoint.load_weights(second, config.directions.target)
        identity["target_sha256"] = checkpoint.file_digest(config.directions.target)
        end = params.snapshot(params.movable(second, include_buffers=True))
    directions, is_new = _obtain_directions(config, model, end, identity, force)
    identity["directions_sha256"] = directions.digest()
    grid = Grid.from_axes(config.grid.x, config.grid.y)
    return Prepared(config, model, directions, is_new, end, grid, identity)


def _obtain_directions(
    config: SweepConfig,
    model: torch.nn.Module,
    end: dict[str, torch.Tensor] | None,
    identity: dict[str, Any],
    force: bool,
) -> tuple[Directions, bool]:
    """Reuse the direction file when it exists and fits this sweep; else compute anew.

    With --force the default direction file (the one beside the output, owned by it) is
    recomputed; a file named in directions.file may serve other sweeps and is never replaced.
    """
    settings = config.directions
    weights = params.movable(model, include_buffers=settings.kind == "target")
    path = config.direction_file
    if not path.exists() or (force and settings.file is None):
        if end is not None:
            return target_direction(weights, end), True
        assert settings.norm is not None and settings.ignore is not None  # resolved by config
        plane = config.grid.y is not None
        return random_directions(
            weights, settings.norm, settings.ignore, settings.seed, plane
        ), True

    directions, attributes = store.read_directions(path)
    expected = {
        "kind": settings.kind,
        "norm": settings.norm,
        "ignore": settings.ignore,
        "seed": settings.seed if settings.kind == "random" else 0,
        "checkpoint_sha256": identity["checkpoint_sha256"],
        "target_sha256": identity.get("target_sha256", ""),
    }
    found = {key: attributes.get(key, "") for key in expected}
    mismatched = [key for key in expected if found[key] != expected[key]]
    shapes = {key: tuple(tensor.shape) for key, tensor in weights.items()}
    if {key: tuple(t.shape) for key, t in directions.x.items()} != shapes:
        mismatched.append("parameter names/shapes")
    if (directions.y is None) != (config.grid.y is None):
        mismatched.append("dimensions (1D vs 2D)")
    if mismatched:
        detail = ", ".join(
            f"{key} {found[key]!r} vs {expected[key]!r}" if key in found else key
            for key in mismatched
        )
        raise OutputError(
            f"direction file {path} was made for another sweep (differs in: {detail}); "
            "delete it, point directions.file elsewhere, or match its settings"
        )
    return directions, False


def check_output(prepared: Prepared, force: bool) -> bool | None:
    """None: create the output; False: resume it; True: it is already complete."""
    path = prepared.config.output
    if force or not path.exists():
        return None
    found = store.read_surface_attributes(path)
    old_config = yaml.safe_load(str(found.get("config", ""))) or {}
    new_config = to_plain(prepared.config)
    changed = [key for key in differences(old_config, new_config) if key not in OPERATIONAL_KEYS]
    for key in ("checkpoint_sha256", "target_sha256", "directions_sha256"):
        if found.get(key, "") != prepared.identity.get(key, ""):
            changed.append(key.removesuffix("_sha256") + " contents")
    if changed:
        raise OutputError(
            f"output {path} holds a different sweep (differs in: {', '.join(changed)}); "
            "choose another output path, or pass --force to start over"
        )
    return bool(store.read_surface(path).done.all())


def load_splits(config: SweepConfig) -> dict[str, Split]:
    data = config.data
    return {
        name: load_split(
            data.root, name, data.mean, data.std, data.subset, data.subset_seed, data.download
        )
        for name in data.splits
    }


def open_output(prepared: Prepared, resume: bool) -> store.SurfaceWriter:
    """Save new directions, then create or reopen the surface file."""
    config = prepared.config
    if prepared.directions_are_new:
        store.write_directions(
            config.direction_file,
            prepared.directions,
            {key: prepared.identity.get(key, "") for key in ("checkpoint_sha256", "target_sha256")},
        )
    if resume:
        return store.SurfaceWriter(config.output)
    metrics = store.metric_names(config.data.splits)
    return store.create_surface(config.output, prepared.grid, metrics, prepared.identity)


def build_evaluator(prepared: Prepared, splits: dict[str, Split]) -> Evaluator:
    config = prepared.config
    return Evaluator(
        prepared.model,
        prepared.directions,
        splits,
        config.data.batch_size,
        pick_device(config.evaluation.device),
        config.evaluation.channels_last,
        config.evaluation.precision,
        prepared.end,
    )


def evaluate_point(evaluator: Evaluator, grid: Grid, index: int) -> dict[str, float]:
    """Metric name → value at flat point `index`, named as in the surface file."""
    a, b = grid.coordinates(index)
    values: dict[str, float] = {}
    for split, result in evaluator.evaluate(a, b).items():
        values[f"{split}_loss"] = result.loss
        values[f"{split}_acc"] = result.accuracy
    return values


def run_sweep(
    config: SweepConfig, force: bool = False, log: Log = _stderr, progress_every: float = 10.0
) -> SweepOutcome:
    """Run (or resume) the sweep serially in this process; a progress line every N seconds."""
    prepared = prepare(config, force)
    state = check_output(prepared, force)
    total = prepared.grid.size
    if state is True:
        log(f"{config.output} is already complete ({total} points); nothing to do")
        return SweepOutcome(config.output, total, 0, already_complete=True)
    splits = load_splits(config)
    with open_output(prepared, resume=state is False) as writer:
        todo = pending(writer.done)
        verb = "resuming" if state is False else "starting"
        log(f"{verb} {config.output}: {total - len(todo)}/{total} points done")
        evaluator = build_evaluator(prepared, splits)
        progress = Progress(total, total - len(todo), log, progress_every)
        for index in todo:
            values = evaluate_point(evaluator, prepared.grid, int(index))
            writer.record([int(index)], {name: [value] for name, value in values.items()})
            progress.advance(1)
        progress.finish()
    log(f"surface written to {config.output}")
    return SweepOutcome(config.output, total, len(todo), already_complete=False)


class Progress:
    """Plain progress lines (points done, rate, ETA), at most one every `interval` seconds."""

    def __init__(self, total: int, done: int, log: Log, interval: float = 10.0) -> None:
        self.total, self.done, self.log, self.interval = total, done, log, interval
        self.start_done = done
        self.started = self.last = time.monotonic()
        self.last_logged = -1

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last, self.last_logged = now, self.done
            self.log(self.line(now))

    def finish(self) -> None:
        if self.last_logged != self.done:
            self.log(self.line(time.monotonic()))

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = (self.done - self.start_done) / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        percent = 100.0 * self.done / max(self.total, 1)
        return (
            f"{self.done}/{self.total} points ({percent:.0f}%), {rate:.2f} points/s, "
            f"elapsed {elapsed:.0f}s, ETA {eta:.0f}s"
        )
