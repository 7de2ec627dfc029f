"""A whole sweep, top to bottom: check → load → commit → run, one loop for every rank count.

Input: validated `SweepConfig`s (and, from the Python API, the `Sources` holding its objects).
Output: each surface file at `config.output` (created, resumed or left alone when already
complete) and the direction file beside it.

Rank 0 (or the one process) runs `_run_master` against a `protocol.MasterSide`:
`mpi.Session` under mpiexec, `local.LocalSession` otherwise, which answers the same protocol
in-process; the other ranks run `worker.run_worker`. The phases (lsurf.run.phases), in order:
*check* every input of every sweep and obtain directions and grid (rank 0), *load* the data
and the evaluator and probe it (every worker), *commit* the outputs (rank 0, only once every
worker has loaded), *run* the chunk queue. So the sequence is written once, and bad input
found anywhere (a dataset missing on one node, a module one rank cannot import) stops the job
before the first byte is written.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from lsurf.config import SweepConfig
from lsurf.errors import LsurfError, OutputError
from lsurf.evaluate import pick_device
from lsurf.files import surface as surface_file
from lsurf.grid import Grid, pending
from lsurf.run import capacity, mpi, protocol
from lsurf.run.local import LocalSession
from lsurf.run.phases import (
    FROM_CONFIG,
    Prepared,
    Sources,
    check_columns,
    check_distinct_outputs,
    check_output,
    open_output,
    prepare,
    share_direction_files,
    with_compile_choice,
    with_compile_plan,
    with_recorded_compile,
)
from lsurf.run.progress import Log, Progress, to_stderr
from lsurf.run.worker import run_worker


class Job(Protocol):
    """What the queue needs of one of a job's sweeps (a `Prepared`), or of a part of another
    kind of job (lsurf sharpness's): its grid, what its workers build their evaluator from,
    and a config naming its output."""

    @property
    def grid(self) -> Grid: ...

    @property
    def config(self) -> Any: ...

    def worker_setup(self) -> Any: ...


T = TypeVar("T")

EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 143  # 128 + SIGTERM, what schedulers expect from a job they pre-empted


@dataclass(frozen=True)
class SweepOutcome:
    path: Path
    total: int  # points on the grid
    computed: int  # points evaluated by this run
    already_complete: bool  # the file was complete before this run started


def run_sweep(
    config: SweepConfig,
    force: bool = False,
    log: Log = to_stderr,
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
    log: Log = to_stderr,
    log_every: int | None = None,
    sources: Sources = FROM_CONFIG,
) -> list[SweepOutcome] | None:
    """Run (or resume) several sweeps through one queue (`lsurf sweep A.yaml B.yaml ...`):
    each its own model, data, directions and file, each resumable on its own; the workers
    take the first sweep's points, then the next one's, so none idles while any sweep still
    has points. Returns each sweep's outcome, in order (None on workers).
    """
    return run_job(
        lambda session: _run_master(configs, force, session, log, log_every, FROM_CONFIG),
        lambda: run_in_process(configs, force, log, log_every, sources),
        log,
    )


def run_job(
    master: Callable[[protocol.MasterSide], T], serial: Callable[[], T], log: Log
) -> T | None:
    """A job of sweeps on every rank: `serial()` without mpiexec (or on one rank); under
    mpiexec, `master(session)` on rank 0 and the chunk worker on the others (None there)."""
    session = mpi.join(mpi.Session)
    if session is None:
        return serial()
    try:
        if session.is_master:
            try:
                return master(session)
            except LsurfError as error:
                # Every rank's error names its rank (a worker's arrives as "rank N: ...").
                if str(error).startswith("rank "):
                    raise
                raise LsurfError(f"{session.name_rank(0)}: {error}") from None
        run_worker(session)
        return None
    except (LsurfError, SystemExit, KeyboardInterrupt):
        raise  # the other ranks were told to stop; the CLI reports
    except Exception:
        # A bug: never leave the other ranks hanging, even without `python -m mpi4py`.
        log(f"{session.name_rank(session.rank)} failed:\n{traceback.format_exc().rstrip()}")
        session.abort(1)


def run_in_process(
    configs: Sequence[SweepConfig],
    force: bool = False,
    log: Log = to_stderr,
    log_every: int | None = None,
    sources: Sources = FROM_CONFIG,
) -> list[SweepOutcome]:
    """The sweeps run serially in this process, whatever launched it (the Python API's way:
    its objects cannot travel to other ranks)."""
    # Before the output: an unusable device is bad input like any other (nothing written).
    for config in configs:
        pick_device(config.evaluation.device)
    session = LocalSession(lambda setup: pick_device(setup.config.evaluation.device), sources)
    return _run_master(configs, force, session, log, log_every, sources)


def _run_master(
    configs: Sequence[SweepConfig],
    force: bool,
    session: protocol.MasterSide,
    log: Log,
    log_every: int | None,
    sources: Sources,
) -> list[SweepOutcome]:
    terminated = protocol.TerminationFlag()
    terminated.install()
    every, states = _check(configs, force, sources, session)
    outcomes = _already_complete(every, states, log)
    active = [position for position, state in enumerate(states) if state is not True]
    if not active:
        session.send_setup(None)
        return [outcomes[position] for position in range(len(every))]
    workers = max(len(session.workers), 1)  # a serial run is its own one worker
    sweeps = [with_compile_plan(every[position], workers) for position in active]
    resumes = [states[position] is False for position in active]
    ready = load_workers(session, sweeps, terminated)
    # evaluation.compile: auto, as the workers chose, goes into each new file's config.
    choices = ready.compile_choices or [None] * len(sweeps)
    sweeps = [
        sweep if choice is None else with_compile_choice(sweep, choice)
        for sweep, choice in zip(sweeps, choices, strict=True)
    ]
    run = OpenOutputs(sweeps, _commit(session, sweeps, resumes, ready.columns), log)
    serve_queue(session, run, sweeps, resumes, ready.notes, terminated, log, log_every)
    for position, prepared, todo in zip(active, sweeps, run.todo, strict=True):
        total = prepared.grid.size
        outcomes[position] = SweepOutcome(prepared.config.output, total, len(todo), False)
    return [outcomes[position] for position in range(len(every))]


def _check(
    configs: Sequence[SweepConfig], force: bool, sources: Sources, session: protocol.MasterSide
) -> tuple[list[Prepared], list[bool | None]]:
    """Check phase, every sweep before anything is written: each prepared sweep and the
    decision about its output (None: create, False: resume, True: complete)."""
    try:
        check_distinct_outputs(configs)
        every = share_direction_files([prepare(config, force, sources) for config in configs])
        every = [with_recorded_compile(prepared, force) for prepared in every]
        states = [check_output(prepared, force) for prepared in every]
        pending_sweeps = zip(every, states, strict=True)
        capacity.check_sweeps_fit([p.config for p, state in pending_sweeps if state is not True])
    except BaseException:
        session.send_setup(None)  # the workers exit quietly; this rank reports the error
        raise
    return every, states


def _already_complete(
    every: list[Prepared], states: list[bool | None], log: Log
) -> dict[int, SweepOutcome]:
    outcomes = {}
    for position, (prepared, state) in enumerate(zip(every, states, strict=True)):
        if state is True:
            total = prepared.grid.size
            log(f"{prepared.config.output} is already complete ({total} points); nothing to do")
            outcomes[position] = SweepOutcome(prepared.config.output, total, 0, True)
    return outcomes


def load_workers(
    session: protocol.MasterSide, sweeps: Sequence[Job], terminated: protocol.TerminationFlag
) -> protocol.Ready:
    """Load phase: every worker loads and probes every sweep's data before anything is
    written, so a missing dataset on any node is a one-line error with the outputs untouched.
    Returns what the workers measure (the same on every worker, or the job stops)."""
    session.send_setup([prepared.worker_setup() for prepared in sweeps])
    failures, reports = session.gather_ready(terminated)
    if failures:
        user_errors = all(failure.kind == "input" for failure in failures)
        session.stop_workers(EXIT_BAD_INPUT if user_errors else 1)
        first = failures[0]
        where = session.name_rank(first.rank)
        if first.kind == "input":
            raise LsurfError(f"{where}: {first.message}")
        raise RuntimeError(f"{where} failed during set-up:\n{first.message}")
    if any(report.columns != reports[0].columns for report in reports):
        session.stop_workers(EXIT_BAD_INPUT)
        raise OutputError(
            "the workers measure different metrics (their data differs between nodes?)"
        )
    # Each note once, from every worker: nodes may differ in what they say (how they hold
    # their data), though not in what they measure.
    notes = [
        list(dict.fromkeys(note for report in reports for note in report.notes[sweep]))
        for sweep in range(len(sweeps))
    ]
    # What compile: auto chose is the same on every worker (one rule, the same inputs).
    return protocol.Ready(reports[0].columns, notes, reports[0].compile_choices)


def _commit(
    session: protocol.MasterSide,
    sweeps: list[Prepared],
    resumes: list[bool],
    columns: list[list[Any]],
) -> list[surface_file.SurfaceWriter]:
    """Commit phase: every resumed file checked before the first byte of any is written."""
    writers: list[surface_file.SurfaceWriter] = []
    try:
        for prepared, resume, measured in zip(sweeps, resumes, columns, strict=True):
            check_columns(prepared, resume, measured)
        for prepared, resume, measured in zip(sweeps, resumes, columns, strict=True):
            writers.append(open_output(prepared, resume, measured))
    except BaseException:
        for writer in writers:
            writer.close()
        session.stop_workers(EXIT_BAD_INPUT)
        raise
    return writers


def serve_queue(
    session: protocol.MasterSide,
    run: OpenOutputs,
    sweeps: Sequence[Job],
    resumes: list[bool],
    notes: list[list[str]],
    terminated: protocol.TerminationFlag,
    log: Log,
    log_every: int | None,
    labels: Sequence[str] | None = None,
) -> None:
    """Run phase: the queue of every sweep's pending points, until all are recorded (or a
    worker fails, or SIGTERM stops the job with everything finished on disk). `labels` name
    the sweeps in the log (default: their output files)."""
    shown = len(session.workers)
    if labels is None:
        labels = [str(prepared.config.output) for prepared in sweeps]
    for prepared, resume, todo, said, label in zip(
        sweeps, resumes, run.todo, notes, labels, strict=True
    ):
        _log_start(log, label, resume, prepared.grid.size, len(todo), shown)
        selected = getattr(prepared, "selected", None)  # a sweep's directions.params
        for note in (*(selected.report() if selected is not None else ()), *said):
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
                f"{protocol.GRACE_SECONDS:g} s)"
            )

    try:
        session.serve(run.todo, record, terminated, on_stop)
    except protocol.WorkerFailed as error:
        failure = error.failure
        prepared = sweeps[failure.sweep]
        log(
            f"{session.name_rank(failure.rank)} failed at point {failure.point} "
            f"({_coordinates(prepared.grid, failure.point)}) of {labels[failure.sweep]}; "
            f"stopping the job:\n{failure.message}"
        )
        run.close()
        session.abort(1)
    except protocol.Preempted:
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


class OpenOutputs:
    """The open surface files of the job's sweeps and the points each has left: a sweep's
    file is closed, and said written, as soon as its last point is recorded (while the
    others run: the workers have chunks in hand meanwhile)."""

    def __init__(
        self, sweeps: Sequence[Job], writers: Sequence[surface_file.SurfaceWriter], log: Log
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
        self._log(writer.written())


def _log_start(log: Log, label: str, resume: bool, total: int, todo: int, workers: int) -> None:
    verb = "resuming" if resume else "starting"
    where = f" on {workers} workers" if workers else ""
    log(f"{verb} {label}: {total - todo}/{total} points done, {todo} to go{where}")


def _log_preempted(log: Log, writer: surface_file.SurfaceWriter) -> None:
    done = int(writer.done.sum())
    log(
        f"stopped by SIGTERM: {done}/{writer.done.size} points are on disk in {writer.path}; "
        "run the same command again to resume"
    )


def _coordinates(grid: Grid, point: int | None) -> str:
    if point is None:
        return "during set-up"
    if grid.y is None:
        return f"x={grid.x[point]:g}"  # a path's t
    a, b = grid.coordinates(point)
    return f"x={a:g}, y={b:g}"
