"""`lsurf connect`: are two minima one basin? The paths between checkpoints, in one file.

For every pair (A, B) of `connect.checkpoints`, in order (0-1, 0-2, ..., 1-2, ...), the job
evaluates the linear path (1 − t)·A + t·B (`linear`) and, when asked, the path to B with its
units permuted to match A's (`aligned`, lsurf.align) and a trained curve through a bend
(`curve`), each at `connect.points` values of t from 0 to 1, and stores each path's values and
barriers (lsurf.barrier) in one connect file (lsurf.files.connect).

Each path is a 1D sweep of the interpolation kind: θ* = A, end = B (or the aligned B), for a
curve y_end = the bend on the three-checkpoint plane, `grid.path` the curve's shape. So the
points go through the sweeps' own machinery (lsurf.run.sweep): one queue for every path of
every pair, the same chunk workers under mpiexec or Slurm, bit-identical for any rank count,
and resumable after a kill at any moment. What is connect's own: checking the checkpoints
(one architecture), deciding the output (create, resume, complete, or refuse one made for
another job), building each path's sweep, and the file. `connect.bn` maps onto the sweep's
settings: keep → the weights move (space: weights), interpolate → the BN statistics move
with them (space: states), recompute → the weights move and every point re-estimates the
statistics (evaluation.bn_recompute).

Input: a checked `ConnectConfig`. Output: the connect file at `config.output` (and, for
`align: weights`, the aligned checkpoints beside it).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lsurf import checkpoint, params
from lsurf.align import Alignment, match_weights
from lsurf.checkpoint import save_aligned_checkpoint
from lsurf.config import (
    ConnectConfig,
    DirectionsConfig,
    GridConfig,
    GridPath,
    SweepConfig,
    check_sweep,
)
from lsurf.directions import target_direction
from lsurf.errors import OutputError
from lsurf.evaluate import pick_device
from lsurf.files import connect as connect_file
from lsurf.files.hdf5 import stored_config
from lsurf.grid import AutoAxis, Axis, Grid
from lsurf.run import capacity, protocol
from lsurf.run.identity import OPERATIONAL_KEYS, recorded_differences
from lsurf.run.local import LocalSession
from lsurf.run.phases import FROM_CONFIG, Prepared
from lsurf.run.progress import Log, to_stderr
from lsurf.run.sweep import (
    EXIT_BAD_INPUT,
    OpenOutputs,
    load_workers,
    run_job,
    serve_queue,
)
from lsurf.schema import differences, to_plain, to_yaml
from lsurf.train.curve import train_curve


@dataclass(frozen=True)
class ConnectOutcome:
    path: Path
    computed: int  # points evaluated by this run
    already_complete: bool


@dataclass(frozen=True)
class _Path:
    """One path of the job: its group name, its sweep, and the states it runs between."""

    name: str
    sweep: SweepConfig
    start: dict[str, torch.Tensor]  # A
    end: dict[str, torch.Tensor]  # B, or the aligned B
    bend: dict[str, torch.Tensor] | None = None  # a curve's θ_bend
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # attributes to record
    alignment: Alignment | None = None  # an aligned path's permutation, written at commit


def run_connect(
    config: ConnectConfig, force: bool = False, log: Log = to_stderr, log_every: int | None = None
) -> ConnectOutcome | None:
    """Run (or resume) the connect job, serially or as rank 0 / a worker under mpiexec.
    Returns the outcome (None on workers)."""

    def serial() -> ConnectOutcome:
        pick_device(config.evaluation.device)  # an unusable device is bad input: nothing written
        session = LocalSession(lambda setup: pick_device(setup.config.evaluation.device))
        return _run_master(config, force, session, log, log_every)

    return run_job(lambda session: _run_master(config, force, session, log, log_every), serial, log)


def _run_master(
    config: ConnectConfig,
    force: bool,
    session: protocol.MasterSide,
    log: Log,
    log_every: int | None,
) -> ConnectOutcome:
    terminated = protocol.TerminationFlag()
    terminated.install()
    try:
        states = [_read_checkpoint(config, path) for path in config.connect.checkpoints]
        attributes = _attributes(config)
        state = _check_output(config, attributes, force)
        paths = _paths(config, states, force, log) if state is not True else []
        prepared = [_prepare(path) for path in paths]
    except BaseException:
        session.send_setup(None)  # the workers exit quietly; this rank reports the error
        raise
    if state is True:
        session.send_setup(None)
        log(f"{config.output} is already complete; nothing to do")
        return ConnectOutcome(config.output, 0, True)
    ready = load_workers(session, prepared, terminated)
    try:
        opened = _commit(config, attributes, paths, prepared, ready.columns, resume=state is False)
    except BaseException:
        session.stop_workers(EXIT_BAD_INPUT)
        raise
    try:
        writers = [opened.writer(path.name) for path in paths]
        run = OpenOutputs(prepared, writers, log)
        computed = run.left_in_all
        labels = [f"{config.output} {path.name}" for path in paths]
        resumes = [state is False] * len(paths)
        serve_queue(
            session, run, prepared, resumes, ready.notes, terminated, log, log_every, labels
        )
    finally:
        opened.close()
    return ConnectOutcome(config.output, computed, False)


# ---------------------------------------------------------------------------- check


def _read_checkpoint(config: ConnectConfig, path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's full state, loaded into the config's model (which checks that it is
    of that architecture: one line naming the keys or shapes that differ)."""
    model = FROM_CONFIG.build_model(config.model)
    checkpoint.load_weights(model, path)
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _attributes(config: ConnectConfig) -> dict[str, Any]:
    """What tells this job from any other: its config and its checkpoints' contents."""
    checkpoints = [str(path) for path in config.connect.checkpoints]
    digests = [checkpoint.file_digest(path) for path in config.connect.checkpoints]
    return {
        "config": to_yaml(config),
        "checkpoints": json.dumps(checkpoints),
        "checkpoint_sha256s": json.dumps(digests),
    }


def _check_output(config: ConnectConfig, attributes: dict[str, Any], force: bool) -> bool | None:
    """None: create the file; False: resume it; True: it is complete. A file made for
    another job (other checkpoints, other settings) is refused."""
    path = config.output
    if force or not path.exists():
        capacity.check_folder_writable(path)
        return None
    found = connect_file.read_connect_attributes(path)
    changed = []
    old = stored_config(found)
    new = to_plain(config)
    evaluation = old.get("evaluation") if isinstance(old, dict) else None
    if isinstance(evaluation, dict) and new["evaluation"]["compile"] == "auto":
        # A file written before auto existed was eager with compile: false, as auto is here.
        if evaluation.get("compile", False) is False:
            old = old | {"evaluation": evaluation | {"compile": "auto"}}
    changed += [key for key in differences(old, new) if key not in OPERATIONAL_KEYS]
    if found.get("checkpoint_sha256s") != attributes["checkpoint_sha256s"]:
        changed.append("checkpoint contents")
    if changed:
        raise OutputError(
            f"output {path} holds another connect job (differs in: {', '.join(changed)}); "
            "choose another output path, or pass --force to start over"
        )
    connection = connect_file.read_connect(path)
    return all(part.complete for part in connection.paths.values())


# ---------------------------------------------------------------------------- the paths


def _paths(
    config: ConnectConfig, states: list[dict[str, torch.Tensor]], force: bool, log: Log
) -> list[_Path]:
    """Every path of every pair, in the job's order; aligned states computed here (rank 0,
    before anything is written: a model alignment cannot handle is one line)."""
    section = config.connect
    found = []
    for i, j in itertools.combinations(range(len(states)), 2):
        start, end = states[i], states[j]
        pair = f"{i}-{j}"
        found.append(_Path(f"{pair}/linear", _sweep(config, i, j), start, end))
        if section.align == "weights":
            alignment = _align(config, start, end)
            aligned = aligned_checkpoint(config, i, j)
            found.append(
                _Path(
                    f"{pair}/aligned",
                    _sweep(config, i, j, target=aligned),
                    start,
                    alignment.state_dict,
                    extra={
                        "aligned_checkpoint": str(aligned),
                        "align_iterations": alignment.iterations,
                        "align_converged": alignment.converged,
                    },
                    alignment=alignment,
                )
            )
        if section.curve != "none":
            found.append(_curve_path(config, i, j, start, found[-1].end, force, log))
            if section.plane is not None:
                found.append(_plane_path(config, i, j, found[-1]))
    return found


def curve_folder(config: ConnectConfig, i: int, j: int) -> Path:
    """Where the bend between checkpoints i and j is trained: beside the output."""
    output = config.output
    return output.with_name(f"{output.stem}.curve-{i}-{j}")


def _curve_path(
    config: ConnectConfig,
    i: int,
    j: int,
    start: dict[str, torch.Tensor],
    end: dict[str, torch.Tensor],
    force: bool,
    log: Log,
) -> _Path:
    """The trained curve from A to B (the aligned B when the job aligns: the curve then joins
    A to B's function in A's unit order): its bend trained first (lsurf.train.curve; on rank
    0, resumable in its own folder), then the path on the plane through A, B and the bend."""
    curve = config.connect.curve
    assert curve != "none"
    bend_file = train_curve(
        lambda: FROM_CONFIG.build_model(config.model),
        start,
        end,
        curve,
        config.training,
        config.data,
        curve_folder(config, i, j),
        force=force,
        log=log,
        device=config.evaluation.device,
        decay=config.connect.bend_decay,
    )
    model = FROM_CONFIG.build_model(config.model)
    checkpoint.load_weights(model, bend_file)
    bend = {key: value.detach().clone() for key, value in model.state_dict().items()}
    target = aligned_checkpoint(config, i, j) if config.connect.align == "weights" else None
    sweep = _sweep(config, i, j, path=curve, target=target, y_target=bend_file)
    extra = {"bend_checkpoint": str(bend_file), "curve": curve}
    return _Path(f"{i}-{j}/curve", sweep, start, end, bend=bend, extra=extra)


def _plane_path(config: ConnectConfig, i: int, j: int, curve: _Path) -> _Path:
    """The plane the curve lies in, swept on a grid: A + a·(B − A) + b·(bend − A), the same
    end points, bend and evaluation as the curve's, so a grid point on the curve holds the
    curve's value there exactly."""
    section = config.connect
    assert section.plane is not None and curve.bend is not None
    grid = GridConfig(section.plane, section.plane_y or section.plane)
    sweep = dataclasses.replace(curve.sweep, grid=grid)
    name = f"{i}-{j}/plane"
    return _Path(name, check_sweep(sweep), curve.start, curve.end, curve.bend, dict(curve.extra))


def aligned_checkpoint(config: ConnectConfig, i: int, j: int) -> Path:
    """Where checkpoint j aligned to checkpoint i is written: beside the output."""
    output = config.output
    return output.with_name(f"{output.stem}.aligned-{j}-to-{i}.pt")


def _align(
    config: ConnectConfig, start: dict[str, torch.Tensor], end: dict[str, torch.Tensor]
) -> Alignment:
    model = FROM_CONFIG.build_model(config.model)
    return match_weights(
        model, start, end, seed=config.connect.align_seed, input_shape=_input_shape(config)
    )


def _input_shape(config: ConnectConfig) -> tuple[int, ...]:
    """One example's input shape, which tracing the model for alignment needs: known for the
    built-in datasets, read from the first example of a user's."""
    data = config.data
    if data.dataset in ("cifar10", "cifar100"):
        return (3, 32, 32)
    if data.dataset == "imagefolder":
        return (3, data.image_size, data.image_size)
    split = FROM_CONFIG.open_split(data, data.splits[0], torch.device("cpu"), False)
    inputs, _ = split.first(1)
    return tuple(inputs.shape[1:])


def _sweep(
    config: ConnectConfig,
    i: int,
    j: int,
    path: GridPath = "line",
    target: Path | None = None,
    y_target: Path | None = None,
) -> SweepConfig:
    """The sweep a path is: from checkpoint i toward checkpoint j (or `target`, its aligned
    copy) over t in [0, 1]."""
    section = config.connect
    checkpoints = section.checkpoints
    recompute = section.bn == "recompute"
    evaluation = dataclasses.replace(
        config.evaluation,
        standard_errors=True,  # a barrier's error needs its points'
        bn_recompute=section.bn_examples if recompute else None,
        bn_seed=section.bn_seed,
        fold_bn=config.evaluation.fold_bn and not recompute,
        # compile: auto leaves a path eager: its choice would have no record in the connect
        # file for a resume to keep (compiled and eager values differ in their last bits)
        compile=config.evaluation.compile is True,
    )
    return check_sweep(
        SweepConfig(
            model=dataclasses.replace(config.model, checkpoint=checkpoints[i]),
            data=config.data,
            grid=GridConfig(Axis(0.0, 1.0, section.points), None, path),
            output=config.output,
            directions=DirectionsConfig(
                kind="target",
                target=target or checkpoints[j],
                y_target=y_target,
                space="states" if section.bn == "interpolate" else "weights",
            ),
            evaluation=evaluation,
        )
    )


def _prepare(path: _Path) -> Prepared:
    """The path's sweep, ready for the workers: θ* = A, the end points travel in the
    directions (as the interpolation kind builds them), the grid over t."""
    config = path.sweep
    model = FROM_CONFIG.build_model(config.model)
    model.load_state_dict(path.start)
    moves_buffers = config.directions.space == "states"
    start = params.movable(model, include_buffers=moves_buffers)
    directions = target_direction(start, path.end)
    y_end = None
    if path.bend is not None:
        y = target_direction(start, path.bend)
        directions = dataclasses.replace(directions, y=y.x)
        y_end = y.end
    directions = dataclasses.replace(directions, moves_buffers=moves_buffers, y_end=y_end)
    assert isinstance(config.grid.x, Axis) and not isinstance(config.grid.y, AutoAxis)
    grid = Grid.from_axes(config.grid.x, config.grid.y, config.grid.path)
    identity = {
        "config": to_yaml(config),
        "checkpoint_sha256": params.digest(path.start),
        "target_sha256": params.digest(path.end),
        "directions_sha256": directions.digest(),
        "path": path.name,
        **path.extra,
    }
    if path.bend is not None:
        identity["y_target_sha256"] = params.digest(path.bend)
    return Prepared(config, model, directions, False, grid, identity)


# ---------------------------------------------------------------------------- commit


def _commit(
    config: ConnectConfig,
    attributes: dict[str, Any],
    paths: list[_Path],
    prepared: list[Prepared],
    columns: list[list[Any]],
    resume: bool,
) -> connect_file.ConnectFile:
    """The connect file, created with every path's group (or reopened to resume, once every
    group is checked to hold this job's path and the columns the workers measure). The
    aligned checkpoints first, each written whole or not at all."""
    checkpoints = config.connect.checkpoints
    for path in paths:
        if path.alignment is not None:
            i, j = (int(place) for place in path.name.split("/")[0].split("-"))
            save_aligned_checkpoint(
                aligned_checkpoint(config, i, j),
                path.alignment,
                reference=checkpoints[i],
                source=checkpoints[j],
            )
    if not resume:
        layouts = [
            connect_file.PathLayout(path.name, sweep.grid, measured, sweep.identity)
            for path, sweep, measured in zip(paths, prepared, columns, strict=True)
        ]
        return connect_file.create_connect_file(config.output, attributes, layouts)
    opened = connect_file.ConnectFile(config.output)
    try:
        if opened.names != [path.name for path in paths]:
            raise OutputError(
                f"output {config.output} holds the paths {', '.join(opened.names)}, not "
                f"{', '.join(path.name for path in paths)}; pass --force to start over"
            )
        for sweep, measured in zip(prepared, columns, strict=True):
            name = sweep.identity["path"]
            found = opened.attributes(name)
            changed = recorded_differences(found, sweep.config, sweep.identity)
            stored = [column.name for column in opened.writer(name).columns]
            if changed or sorted(stored) != sorted(column.name for column in measured):
                what = ", ".join(changed) or "its metrics"
                raise OutputError(
                    f"output {config.output}: path {name} differs from this job's (in: "
                    f"{what}); pass --force to start over"
                )
    except BaseException:
        opened.close()
        raise
    return opened


def describe_bn(config: ConnectConfig) -> str:
    section = config.connect
    if section.bn == "recompute":
        return f"recomputed over {section.bn_examples} train examples (seed {section.bn_seed})"
    return {"keep": "A's, kept", "interpolate": "interpolated with the weights"}[section.bn]
