"""A whole sweep, top to bottom: check → load → commit → run, one loop for every rank count.

Input: a validated `SweepConfig` (and, from the Python API, the `Sources` holding its objects).
Output: the surface file at `config.output` (created, resumed or left alone when already
complete) and the direction file beside it.

The phases (lsurf.preparation): *check* every input and obtain directions and grid (rank 0),
*load* the data and the evaluator and probe it (every worker, or this process), *commit* the
output (rank 0, only once everyone has loaded), *run* the chunk loop. Rank 0 runs `_run_master`
against a session: `parallel.Session` under mpiexec, `serial.SerialSession` otherwise, which
answers the same protocol in-process; workers run `_run_worker`. So the sequence is written
once, and bad input found anywhere (a dataset missing on one node, a module one rank cannot
import) stops the job before the first byte is written.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsurf import parallel, store
from lsurf.config import SweepConfig
from lsurf.errors import LsurfError, OutputError
from lsurf.evaluate import pick_device
from lsurf.grid import Grid, pending
from lsurf.preparation import (
    FROM_CONFIG,
    Sources,
    WorkerSetup,
    check_output,
    load,
    open_output,
    prepare,
)
from lsurf.progress import Progress
from lsurf.serial import PointFailed, SerialSession, evaluate_chunk

EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 143  # 128 + SIGTERM, what schedulers expect from a job they pre-empted

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SweepOutcome:
    path: Path
    total: int  # points on the grid
    computed: int  # points evaluated by this run
    already_complete: bool  # the file was complete before this run started


def run_sweep(
    config: SweepConfig,
    force: bool = False,
    log: Log = _stderr,
    log_every: int | None = None,
    sources: Sources = FROM_CONFIG,
) -> SweepOutcome | None:
    """Run (or resume) the sweep: serially, or as rank 0 / a worker under mpiexec.

    Returns the outcome (None on workers: rank 0 reports for the job).
    """
    if not parallel.launched_by_mpi():
        return _run_serial(config, force, log, log_every, sources)
    session = parallel.Session()
    if session.size == 1:
        # Launchers may leave torch one thread (seen with MPICH's mpiexec): a lone rank owns
        # the cores of its allocation.
        torch.set_num_threads(parallel.available_cores())
        return _run_serial(config, force, log, log_every, sources)
    try:
        if session.is_master:
            try:
                return _run_master(config, force, session, log, log_every, FROM_CONFIG)
            except LsurfError as error:
                # Every rank's error names its rank (a worker's arrives as "rank N: ...").
                if str(error).startswith("rank "):
                    raise
                raise LsurfError(f"rank 0: {error}") from None
        return _run_worker(session)
    except (LsurfError, SystemExit, KeyboardInterrupt):
        raise  # the other ranks were told to stop; the CLI reports
    except Exception:
        # A bug: never leave the other ranks hanging, even without `python -m mpi4py`.
        log(f"rank {session.rank} failed:\n{traceback.format_exc().rstrip()}")
        session.abort(1)


def _run_serial(
    config: SweepConfig, force: bool, log: Log, log_every: int | None, sources: Sources
) -> SweepOutcome:
    # Before the output: an unusable device is bad input like any other (nothing written).
    device = pick_device(config.evaluation.device)
    session = SerialSession(lambda setup: load(setup, device, sources))
    return _run_master(config, force, session, log, log_every, sources)


def _run_master(
    config: SweepConfig,
    force: bool,
    session: parallel.MasterSide,
    log: Log,
    log_every: int | None,
    sources: Sources,
) -> SweepOutcome:
    terminated = parallel.TerminationFlag()
    terminated.install()
    try:  # check
        prepared = prepare(config, force, sources)
        state = check_output(prepared, force)
    except BaseException:
        session.send_setup(None)  # the workers exit quietly; this rank reports the error
        raise
    config = prepared.config  # 'auto' axes fitted
    total = prepared.grid.size
    if state is True:
        session.send_setup(None)
        log(f"{config.output} is already complete ({total} points); nothing to do")
        return SweepOutcome(config.output, total, 0, already_complete=True)
    # load: every worker loads and probes its data before anything is written, so a missing
    # dataset on any node is a one-line error with the output untouched.
    session.send_setup(prepared.worker_setup())
    failures, reports = session.gather_ready(terminated)
    if failures:
        user_errors = all(failure.kind == "input" for failure in failures)
        session.stop_workers(EXIT_BAD_INPUT if user_errors else 1)
        first = failures[0]
        if first.kind == "input":
            raise LsurfError(f"rank {first.rank}: {first.message}")
        raise RuntimeError(f"rank {first.rank} failed during set-up:\n{first.message}")
    columns = reports[0]
    if any(report != columns for report in reports):
        session.stop_workers(EXIT_BAD_INPUT)
        raise OutputError(
            "the workers measure different metrics (their data differs between nodes?)"
        )

    try:  # commit
        writer = open_output(prepared, resume=state is False, columns=columns)
    except BaseException:
        session.stop_workers(EXIT_BAD_INPUT)
        raise
    workers = len(session.workers)
    with writer:  # run
        todo = pending(writer.done)
        shown = 0 if isinstance(session, SerialSession) else workers
        _log_start(log, config, state is False, total, len(todo), shown)
        progress = Progress(total, total - len(todo), log, log_every)

        def record(chunk: np.ndarray, values: dict[str, Any]) -> None:
            writer.record(chunk, values)
            progress.advance(len(chunk))

        def on_stop() -> None:
            # Said before waiting for the points in flight: under some launchers (MPICH's
            # hydra) a SIGKILL follows the SIGTERM closely, and the log must still say it.
            done = int(writer.done.sum())
            log(
                f"SIGTERM received: {done}/{total} points are on disk in {config.output}; "
                f"saving the points in flight (at most {parallel.GRACE_SECONDS:g} s)"
            )

        try:
            session.serve(todo, record, terminated, on_stop)
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
        evaluator = load(setup, torch.device(placement.device))
    except LsurfError as error:
        session.report_ready(parallel.WorkerFailure(session.rank, None, str(error), "input"))
        return _wait_for_stop(session)
    except Exception as error:  # noqa: BLE001 - reported to rank 0 with its traceback
        session.report_ready(parallel.failure(session.rank, None, error))
        return _wait_for_stop(session)
    session.report_ready(evaluator.columns)
    for chunk in session.chunks():
        started = time.perf_counter()
        try:
            done, values = evaluate_chunk(evaluator, setup.grid, chunk, terminated)
        except PointFailed as error:
            assert error.__cause__ is not None
            session.report_failure(parallel.failure(session.rank, error.index, error.__cause__))
            return _wait_for_stop(session)
        session.send_result(done, values, time.perf_counter() - started)
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
