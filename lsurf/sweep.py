"""A whole sweep, top to bottom: config → model → directions → output → points → results.

Input: a validated `SweepConfig`. Output: the surface file at `config.output` (created,
resumed or left alone when already complete) and the direction file beside it.

One process runs it serially; under mpiexec rank 0 prepares and writes while the other ranks
evaluate (the protocol itself lives in `parallel`). Serial runs and workers build their
evaluator with the same code from the same `WorkerSetup`, so a surface is the same bit for bit
whatever the number of ranks.

Order matters for the promise that bad input never touches existing output: everything
that can fail on user input (model, checkpoints, direction file, the output's identity,
the data — on every worker) is checked before the first byte is written.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lsurf import checkpoint, models, parallel, params, store
from lsurf.config import GridConfig, SweepConfig, differences, to_plain, to_yaml
from lsurf.data import Split, load_split
from lsurf.directions import Directions, random_directions, target_direction
from lsurf.errors import LsurfError, OutputError
from lsurf.evaluate import Evaluator, pick_device
from lsurf.grid import AutoAxis, Axis, Grid, chunks, fit_axis, pending
from lsurf.pca import principal_plane, trajectory_files
from lsurf.progress import Progress
from lsurf.weights import weight_statistics

EXIT_BAD_INPUT = 2

# Keys that do not change a single result value, so resuming with them changed is fine.
OPERATIONAL_KEYS = {"data.download"}
EXIT_PREEMPTED = 143  # 128 + SIGTERM, what schedulers expect from a job they pre-empted
MAX_CHUNK = 16  # points per chunk at most: little lost work, fine-grained load balance

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

    def worker_setup(self) -> WorkerSetup:
        state = {key: value.detach().clone() for key, value in self.model.state_dict().items()}
        return WorkerSetup(self.config, state, self.directions, self.end, self.grid)


@dataclass(frozen=True)
class WorkerSetup:
    """What an evaluator is built from; sent from rank 0 to every worker (no shared disk)."""

    config: SweepConfig
    state: dict[str, torch.Tensor]  # θ*: the checkpoint's full state dict
    directions: Directions
    end: dict[str, torch.Tensor] | None
    grid: Grid


def prepare(config: SweepConfig, force: bool = False) -> Prepared:
    """Load and check everything; `force` lets new directions replace the output's own file."""
    model = models.build(config.model.name, config.model.num_classes)
    assert config.model.checkpoint is not None  # the config requires it for sweeps
    checkpoint.load_weights(model, config.model.checkpoint)
    identity: dict[str, Any] = {
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
    config = replace(config, grid=resolve_grid(config.grid, directions))
    identity["config"] = to_yaml(config)
    assert isinstance(config.grid.x, Axis) and not isinstance(config.grid.y, AutoAxis)
    grid = Grid.from_axes(config.grid.x, config.grid.y)
    return Prepared(config, model, directions, is_new, end, grid, identity)


def resolve_grid(grid: GridConfig, directions: Directions) -> GridConfig:
    """Replace 'auto:num' axes by ranges fitted to the PCA path (config checks the kind)."""
    path = None if directions.trajectory is None else directions.trajectory.coordinates
    axes = []
    for column, axis in enumerate((grid.x, grid.y)):
        if isinstance(axis, AutoAxis):
            assert path is not None  # config allows auto axes only for kind: pca
            axis = fit_axis(path[:, column], axis.num)
        axes.append(axis)
    return GridConfig(*axes)


def direction_settings(config: SweepConfig, identity: dict[str, Any]) -> dict[str, Any]:
    """What a direction file records of how it was made; reuse requires all of it to match."""
    settings = config.directions
    recorded = {
        "kind": settings.kind,
        "norm": settings.norm,
        "ignore": settings.ignore,
        "seed": settings.seed if settings.kind == "random" else 0,
        "checkpoint_sha256": identity["checkpoint_sha256"],
        "target_sha256": identity.get("target_sha256", ""),
    }
    if settings.kind == "pca":
        recorded |= {
            "trajectory": str(settings.trajectory),
            "pattern": settings.pattern,
            "center": settings.center,
        }
    return recorded


def _compute_directions(
    config: SweepConfig, weights: dict[str, torch.Tensor], end: dict[str, torch.Tensor] | None
) -> Directions:
    settings = config.directions
    assert settings.norm is not None and settings.ignore is not None  # resolved by config
    if settings.kind == "target":
        assert end is not None  # prepare loads θ2 for targets
        return target_direction(weights, end)
    if settings.kind == "pca":
        assert settings.trajectory is not None  # the config requires it for pca
        files = trajectory_files(settings.trajectory, settings.pattern)
        plane = principal_plane(weights, files, settings.ignore, settings.center)
        directions = plane.directions(settings.ignore)
        # A 1D sweep along the first principal component only.
        return directions if config.grid.y is not None else replace(directions, y=None)
    plane_wanted = config.grid.y is not None
    return random_directions(weights, settings.norm, settings.ignore, settings.seed, plane_wanted)


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
    weights = params.movable(model, include_buffers=config.directions.kind == "target")
    path = config.direction_file
    if not path.exists() or (force and config.directions.file is None):
        return _compute_directions(config, weights, end), True

    directions, attributes = store.read_directions(path)
    expected = direction_settings(config, identity)
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
            direction_settings(config, prepared.identity),
        )
    if resume:
        return store.SurfaceWriter(config.output)
    metrics = store.metric_names(config.data.splits)
    return store.create_surface(
        config.output,
        prepared.grid,
        metrics,
        prepared.identity,
        prepared.directions.trajectory,
        weight_statistics(prepared.model.state_dict()),
    )


def build_evaluator(
    setup: WorkerSetup, splits: dict[str, Split], device: torch.device
) -> Evaluator:
    """A fresh model holding θ*, with the directions and data on `device`."""
    config = setup.config
    model = models.build(config.model.name, config.model.num_classes)
    model.load_state_dict(setup.state)
    return Evaluator(
        model,
        setup.directions,
        splits,
        config.data.batch_size,
        device,
        config.evaluation.channels_last,
        config.evaluation.precision,
        setup.end,
    )


class PointFailed(Exception):
    """Evaluating point `index` raised; the original exception is the __cause__."""

    def __init__(self, index: int) -> None:
        super().__init__(f"point {index} failed")
        self.index = index


def evaluate_chunk(
    evaluator: Evaluator,
    grid: Grid,
    chunk: np.ndarray,
    metrics: list[str],
    stop_when: Callable[[], bool] = lambda: False,
) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Evaluate the points of `chunk` in order, until done or until `stop_when()`.

    Returns the indices evaluated and metric name → values (named as in the surface file).
    """
    values: dict[str, list[float]] = {name: [] for name in metrics}
    finished = 0
    for index in chunk:
        if stop_when():
            break
        a, b = grid.coordinates(int(index))
        try:
            results = evaluator.evaluate(a, b)
        except Exception as error:
            raise PointFailed(int(index)) from error
        for split, result in results.items():
            values[f"{split}_loss"].append(result.loss)
            values[f"{split}_acc"].append(result.accuracy)
        finished += 1
    return chunk[:finished], values


def chunk_size(points: int, workers: int) -> int:
    """About eight chunks per worker for balance at the end, at most MAX_CHUNK points each."""
    return max(1, min(MAX_CHUNK, points // max(8 * workers, 1)))


def run_sweep(
    config: SweepConfig, force: bool = False, log: Log = _stderr, log_every: int | None = None
) -> SweepOutcome | None:
    """Run (or resume) the sweep: serially, or as rank 0 / a worker under mpiexec.

    Returns the outcome (None on workers: rank 0 reports for the job).
    """
    if not parallel.launched_by_mpi():
        return _run_serial(config, force, log, log_every)
    session = parallel.Session()
    if session.size == 1:
        # Launchers may leave torch one thread (seen with MPICH's mpiexec): a lone rank owns
        # the cores of its allocation.
        torch.set_num_threads(parallel.available_cores())
        return _run_serial(config, force, log, log_every)
    try:
        if session.is_master:
            return _run_master(config, force, session, log, log_every)
        return _run_worker(session)
    except (LsurfError, SystemExit, KeyboardInterrupt):
        raise  # the other ranks were told to stop; the CLI reports
    except Exception:
        # A bug: never leave the other ranks hanging, even without `python -m mpi4py`.
        log(f"rank {session.rank} failed:\n{traceback.format_exc().rstrip()}")
        session.abort(1)


def _run_serial(config: SweepConfig, force: bool, log: Log, log_every: int | None) -> SweepOutcome:
    terminated = parallel.TerminationFlag()
    terminated.install()
    prepared = prepare(config, force)
    state = check_output(prepared, force)
    total = prepared.grid.size
    if state is True:
        log(f"{config.output} is already complete ({total} points); nothing to do")
        return SweepOutcome(config.output, total, 0, already_complete=True)
    splits = load_splits(config)
    metrics = store.metric_names(config.data.splits)
    with open_output(prepared, resume=state is False) as writer:
        todo = pending(writer.done)
        _log_start(log, config, state is False, total, len(todo), workers=0)
        evaluator = build_evaluator(
            prepared.worker_setup(), splits, pick_device(config.evaluation.device)
        )
        progress = Progress(total, total - len(todo), log, log_every)
        for chunk in chunks(todo, 1):
            done, values = evaluate_chunk(evaluator, prepared.grid, chunk, metrics, terminated)
            if len(done):
                writer.record(done.tolist(), values)
                progress.advance(len(done))
            if terminated():
                _log_preempted(log, config, writer)
                raise SystemExit(EXIT_PREEMPTED)
        progress.finish()
    log(f"surface written to {config.output}")
    return SweepOutcome(config.output, total, len(todo), already_complete=False)


def _log_start(
    log: Log, config: SweepConfig, resume: bool, total: int, todo: int, workers: int
) -> None:
    verb = "resuming" if resume else "starting"
    where = f" on {workers} workers" if workers else ""
    log(f"{verb} {config.output}: {total - todo}/{total} points done, {todo} to go{where}")


def _log_preempted(log: Log, config: SweepConfig, writer: store.SurfaceWriter) -> None:
    done = int(writer.done.sum())
    log(
        f"stopped by SIGTERM: {done}/{writer.done.size} points are on disk in {config.output}; "
        "run the same command again to resume"
    )


def _run_master(
    config: SweepConfig, force: bool, session: parallel.Session, log: Log, log_every: int | None
) -> SweepOutcome:
    terminated = parallel.TerminationFlag()
    terminated.install()
    try:
        prepared = prepare(config, force)
        state = check_output(prepared, force)
    except BaseException:
        session.send_setup(None)  # the workers exit quietly; this rank reports the error
        raise
    total = prepared.grid.size
    if state is True:
        session.send_setup(None)
        log(f"{config.output} is already complete ({total} points); nothing to do")
        return SweepOutcome(config.output, total, 0, already_complete=True)
    session.send_setup(prepared.worker_setup())
    # Every worker loads its data before anything is written: a missing dataset on any
    # node is a one-line error with the output untouched.
    failures = session.gather_ready(terminated)
    if failures:
        user_errors = all(failure.kind == "input" for failure in failures)
        session.stop_workers(EXIT_BAD_INPUT if user_errors else 1)
        first = failures[0]
        if first.kind == "input":
            raise LsurfError(f"rank {first.rank}: {first.message}")
        raise RuntimeError(f"rank {first.rank} failed during set-up:\n{first.message}")

    workers = len(session.workers)
    with open_output(prepared, resume=state is False) as writer:
        todo = pending(writer.done)
        _log_start(log, config, state is False, total, len(todo), workers)
        progress = Progress(total, total - len(todo), log, log_every)

        def record(chunk: np.ndarray, values: dict[str, list[float]]) -> None:
            writer.record(chunk.tolist(), values)
            progress.advance(len(chunk))

        try:
            session.serve(chunks(todo, chunk_size(len(todo), workers)), record, terminated)
        except parallel.WorkerFailed as error:
            failure = error.failure
            log(
                f"rank {failure.rank} failed at point {failure.point} "
                f"({_coordinates(prepared.grid, failure.point)}); stopping the job:\n"
                f"{failure.message}"
            )
            writer.close()
            session.abort(1)
        except parallel.Preempted:
            _log_preempted(log, config, writer)
            writer.close()
            session.abort(EXIT_PREEMPTED)
        session.stop_workers(0)
        progress.finish()
    log(f"surface written to {config.output}")
    return SweepOutcome(config.output, total, len(todo), already_complete=False)


def _coordinates(grid: Grid, point: int | None) -> str:
    if point is None:
        return "during set-up"
    a, b = grid.coordinates(point)
    return f"x={a:g}" if grid.y is None else f"x={a:g}, y={b:g}"


def _run_worker(session: parallel.Session) -> None:
    """Evaluate chunks for rank 0 until told to stop (rank 0 reports everything)."""
    terminated = parallel.TerminationFlag()
    terminated.install()
    setup: WorkerSetup | None = session.receive_setup()
    if setup is None:
        return
    config = setup.config
    try:
        cuda = config.evaluation.device != "cpu" and torch.cuda.is_available()
        if config.evaluation.device == "cuda" and not cuda:
            pick_device("cuda")  # raises the one-line error
        placement = session.placement(torch.cuda.device_count() if cuda else 0)
        torch.set_num_threads(placement.threads)
        evaluator = build_evaluator(setup, load_splits(config), torch.device(placement.device))
    except LsurfError as error:
        session.report_ready(parallel.WorkerFailure(session.rank, None, str(error), "input"))
        return _wait_for_stop(session)
    except Exception as error:  # noqa: BLE001 - reported to rank 0 with its traceback
        session.report_ready(parallel.failure(session.rank, None, error))
        return _wait_for_stop(session)
    session.report_ready(None)
    metrics = store.metric_names(config.data.splits)
    for chunk in session.chunks():
        try:
            done, values = evaluate_chunk(evaluator, setup.grid, chunk, metrics, terminated)
        except PointFailed as error:
            assert error.__cause__ is not None
            session.report_failure(parallel.failure(session.rank, error.index, error.__cause__))
            return _wait_for_stop(session)
        session.send_result(done, values)
        if terminated():
            # Whatever this worker finished is on its way to rank 0; tell it the job must stop.
            session.report_failure(parallel.WorkerFailure(session.rank, None, "", "preempted"))
            return _wait_for_stop(session)
    if session.exit_code:
        raise SystemExit(session.exit_code)


def _wait_for_stop(session: parallel.Session) -> None:
    """After reporting a problem: wait for rank 0's Stop (or its abort of the job)."""
    for _ in session.chunks():
        pass  # chunks still in flight are dropped; rank 0 has stopped handing out work
    if session.exit_code:
        raise SystemExit(session.exit_code)
