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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsurf import capacity, parallel
from lsurf.config import SweepConfig
from lsurf.errors import LsurfError, OutputError
from lsurf.evaluate import pick_device
from lsurf.files import surface as surface_file
from lsurf.grid import Grid, pending
from lsurf.preparation import (
    FROM_CONFIG,
    Prepared,
    Sources,
    WorkerSetup,
    check_columns,
    check_distinct_outputs,
    check_output,
    open_output,
    prepare,
    share_direction_files,
)
from lsurf.progress import Progress
from lsurf.serial import Evaluators, PointFailed, SerialSession, evaluate_chunk

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
    outcomes = run_sweeps([config], force, log, log_every, sources)
    return None if outcomes is None else outcomes[0]


def run_sweeps(
    configs: Sequence[SweepConfig],
    force: bool = False,
    log: Log = _stderr,
    log_every: int | None = None,
    sources: Sources = FROM_CONFIG,
) -> list[SweepOutcome] | None:
    """Run (or resume) several sweeps through one queue (`lsurf sweep A.yaml B.yaml ...`):
    each its own model, data, directions and file, each resumable on its own; the workers
    take the first sweep's points, then the next one's, so none idles while any sweep still
    has points. Returns each sweep's outcome, in order (None on workers).
    """
    if not parallel.launched_by_mpi():
        return _run_serial(configs, force, log, log_every, sources)
    session = parallel.Session()
    if session.size == 1:
        # Launchers may leave torch one thread (seen with MPICH's mpiexec): a lone rank owns
        # the cores of its allocation.
        torch.set_num_threads(parallel.available_cores())
        return _run_serial(configs, force, log, log_every, sources)
    try:
        if session.is_master:
            try:
                return _run_master(configs, force, session, log, log_every, FROM_CONFIG)
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
    configs: Sequence[SweepConfig],
    force: bool,
    log: Log,
    log_every: int | None,
    sources: Sources,
) -> list[SweepOutcome]:
    # Before the output: an unusable device is bad input like any other (nothing written).
    for config in configs:
        pick_device(config.evaluation.device)
    session = SerialSession(lambda setup: pick_device(setup.config.evaluation.device), sources)
    return _run_master(configs, force, session, log, log_every, sources)


def _run_master(
    configs: Sequence[SweepConfig],
    force: bool,
    session: parallel.MasterSide,
    log: Log,
    log_every: int | None,
    sources: Sources,
) -> list[SweepOutcome]:
    terminated = parallel.TerminationFlag()
    terminated.install()
    try:  # check, every sweep before anything is written
        check_distinct_outputs(configs)
        every = share_direction_files([prepare(config, force, sources) for config in configs])
        states = [check_output(prepared, force) for prepared in every]
        pending_sweeps = zip(every, states, strict=True)
        capacity.check_sweeps_fit([p.config for p, state in pending_sweeps if state is not True])
    except BaseException:
        session.send_setup(None)  # the workers exit quietly; this rank reports the error
        raise
    outcomes = {}
    for position, (prepared, state) in enumerate(zip(every, states, strict=True)):
        if state is True:
            total = prepared.grid.size
            log(f"{prepared.config.output} is already complete ({total} points); nothing to do")
            outcomes[position] = SweepOutcome(prepared.config.output, total, 0, True)
    active = [position for position, state in enumerate(states) if state is not True]
    if not active:
        session.send_setup(None)
        return [outcomes[position] for position in range(len(every))]
    sweeps = [every[position] for position in active]
    resumes = [states[position] is False for position in active]
    # load: every worker loads and probes every sweep's data before anything is written, so
    # a missing dataset on any node is a one-line error with the outputs untouched.
    session.send_setup([prepared.worker_setup() for prepared in sweeps])
    failures, reports = session.gather_ready(terminated)
    if failures:
        user_errors = all(failure.kind == "input" for failure in failures)
        session.stop_workers(EXIT_BAD_INPUT if user_errors else 1)
        first = failures[0]
        if first.kind == "input":
            raise LsurfError(f"rank {first.rank}: {first.message}")
        raise RuntimeError(f"rank {first.rank} failed during set-up:\n{first.message}")
    columns = reports[0].columns  # per sweep
    if any(report.columns != columns for report in reports):
        session.stop_workers(EXIT_BAD_INPUT)
        raise OutputError(
            "the workers measure different metrics (their data differs between nodes?)"
        )

    writers: list[surface_file.SurfaceWriter] = []
    try:  # commit: every resumed file checked before the first byte of any is written
        for prepared, resume, measured in zip(sweeps, resumes, columns, strict=True):
            check_columns(prepared, resume, measured)
        for prepared, resume, measured in zip(sweeps, resumes, columns, strict=True):
            writers.append(open_output(prepared, resume, measured))
    except BaseException:
        for writer in writers:
            writer.close()
        session.stop_workers(EXIT_BAD_INPUT)
        raise
    run = _Run(sweeps, writers, log)
    shown = 0 if isinstance(session, SerialSession) else len(session.workers)
    notes = reports[0].notes
    for prepared, resume, todo, said in zip(sweeps, resumes, run.todo, notes, strict=True):
        _log_start(log, prepared.config, resume, prepared.grid.size, len(todo), shown)
        for note in said:
            log(f"  {note}")
    if len(sweeps) > 1:
        where = f" on {shown} workers" if shown else ""
        log(f"{len(sweeps)} sweeps in one queue, {run.left_in_all} points to go{where}")
    progress = Progress(run.total, run.total - run.left_in_all, log, log_every)

    def record(sweep: int, chunk: np.ndarray, values: dict[str, Any]) -> None:
        run.record(sweep, chunk, values)
        progress.advance(len(chunk))
        if run.left_in_all:  # the job's last file is closed once the workers are stopped
            run.close_if_complete(sweep)

    def on_stop() -> None:
        # Said before waiting for the points in flight: under some launchers (MPICH's
        # hydra) a SIGKILL follows the SIGTERM closely, and the log must still say it.
        for writer in run.open_writers():
            done = int(writer.done.sum())
            log(
                f"SIGTERM received: {done}/{writer.done.size} points are on disk in "
                f"{writer.path}; saving the points in flight (at most "
                f"{parallel.GRACE_SECONDS:g} s)"
            )

    try:
        session.serve(run.todo, record, terminated, on_stop)
    except parallel.WorkerFailed as error:
        failure = error.failure
        prepared = sweeps[failure.sweep]
        log(
            f"rank {failure.rank} failed at point {failure.point} "
            f"({_coordinates(prepared.grid, failure.point)}) of {prepared.config.output}; "
            f"stopping the job:\n{failure.message}"
        )
        run.close()
        session.abort(1)
    except parallel.Preempted:
        for writer in run.open_writers():
            _log_preempted(log, writer)
        run.close()
        session.abort(EXIT_PREEMPTED)
    except BaseException:
        run.close()
        raise
    session.stop_workers(0)
    progress.finish()
    run.close()  # the last sweep's file (the others closed as they completed)
    for position, prepared, todo in zip(active, sweeps, run.todo, strict=True):
        total = prepared.grid.size
        outcomes[position] = SweepOutcome(prepared.config.output, total, len(todo), False)
    return [outcomes[position] for position in range(len(every))]


class _Run:
    """The open surface files of the job's sweeps and the points each has left: a sweep's
    file is closed, and said written, as soon as its last point is recorded (while the
    others run: the workers have chunks in hand meanwhile)."""

    def __init__(
        self, sweeps: list[Prepared], writers: list[surface_file.SurfaceWriter], log: Log
    ) -> None:
        self.writers = writers
        self.todo = [pending(writer.done) for writer in writers]
        self.left = [len(todo) for todo in self.todo]
        self.total = sum(prepared.grid.size for prepared in sweeps)
        self._log = log
        self._said = [False] * len(writers)

    @property
    def left_in_all(self) -> int:
        return sum(self.left)

    def record(self, sweep: int, chunk: np.ndarray, values: dict[str, Any]) -> None:
        self.writers[sweep].record(chunk, values)
        self.left[sweep] -= len(chunk)

    def close_if_complete(self, sweep: int) -> None:
        if self.left[sweep] == 0 and not self._said[sweep]:
            self._finish(sweep)

    def open_writers(self) -> list[surface_file.SurfaceWriter]:
        return [writer for sweep, writer in enumerate(self.writers) if not self._said[sweep]]

    def close(self) -> None:
        """Every file flushed and closed; those whose points are all in, said written."""
        for sweep, writer in enumerate(self.writers):
            self.close_if_complete(sweep)
            writer.close()

    def _finish(self, sweep: int) -> None:
        writer = self.writers[sweep]
        writer.close()
        self._said[sweep] = True
        self._log(f"surface written to {writer.path}")


def _log_start(
    log: Log, config: SweepConfig, resume: bool, total: int, todo: int, workers: int
) -> None:
    verb = "resuming" if resume else "starting"
    where = f" on {workers} workers" if workers else ""
    log(f"{verb} {config.output}: {total - todo}/{total} points done, {todo} to go{where}")


def _log_preempted(log: Log, writer: surface_file.SurfaceWriter) -> None:
    done = int(writer.done.sum())
    log(
        f"stopped by SIGTERM: {done}/{writer.done.size} points are on disk in {writer.path}; "
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
    setups: list[WorkerSetup] | None = session.receive_setup()
    if setups is None:
        return
    try:
        evaluators = _worker_evaluators(session, setups)
        ready = evaluators.check()  # every sweep's set-up, before anything is written
    except LsurfError as error:
        session.report_ready(parallel.WorkerFailure(session.rank, None, str(error), "input"))
        return _wait_for_stop(session)
    except Exception as error:  # noqa: BLE001 - reported to rank 0 with its traceback
        session.report_ready(parallel.failure(session.rank, None, error))
        return _wait_for_stop(session)
    session.report_ready(ready)
    for sweep, chunk in session.chunks():
        try:
            evaluator = evaluators.get(sweep)  # another model only when the queue moved on
            started = time.perf_counter()
            done, values = evaluate_chunk(evaluator, setups[sweep].grid, chunk, terminated)
        except PointFailed as error:
            assert error.__cause__ is not None
            session.report_failure(
                parallel.failure(session.rank, error.index, error.__cause__, sweep)
            )
            return _wait_for_stop(session)
        except Exception as error:  # noqa: BLE001 - building the evaluator failed
            session.report_failure(parallel.failure(session.rank, None, error, sweep))
            return _wait_for_stop(session)
        session.send_result(sweep, done, values, time.perf_counter() - started)
        if terminated():
            # Whatever this worker finished is on its way to rank 0; tell it the job must stop.
            session.report_failure(parallel.WorkerFailure(session.rank, None, "", "preempted"))
            return _wait_for_stop(session)
    if session.exit_code:
        raise SystemExit(session.exit_code)


def _worker_evaluators(session: parallel.Session, setups: list[WorkerSetup]) -> Evaluators:
    """This worker's evaluators: on its GPU (round-robin on its node) for the sweeps that
    may use one, on the CPU for those whose evaluation.device is cpu."""
    wanted = {setup.config.evaluation.device for setup in setups}
    cuda = wanted != {"cpu"} and torch.cuda.is_available()
    if "cuda" in wanted and not cuda:
        pick_device("cuda")  # raises the one-line error
    placement = session.placement(torch.cuda.device_count() if cuda else 0)
    torch.set_num_threads(placement.threads)

    def device_of(setup: WorkerSetup) -> torch.device:
        on_cpu = setup.config.evaluation.device == "cpu"
        return torch.device("cpu" if on_cpu else placement.device)

    return Evaluators(setups, device_of)


def _wait_for_stop(session: parallel.Session) -> None:
    """After reporting a problem: wait for rank 0's Stop (or its abort of the job)."""
    for _ in session.chunks():
        pass  # chunks still in flight are dropped; rank 0 has stopped handing out work
    if session.exit_code:
        raise SystemExit(session.exit_code)
