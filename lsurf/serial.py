"""The serial session: the master's side of the chunk protocol, answered in this process.

A sweep without mpiexec (or on one rank) runs the very loop that rank 0 runs under MPI —
send the setup, gather the workers' readiness, serve chunks, record results — against this
session, whose single "worker" is built here (`Evaluators`, as every MPI worker's: one
sweep's evaluator at a time, for jobs of several sweeps). So the run loop exists once, and
the serial surface is the MPI surface bit for bit (the same evaluator code on the same points).

Differences that matter: results are recorded point by point (the file follows within
`SurfaceWriter.FLUSH_SECONDS`, as under MPI), errors in the evaluator
propagate as they are (with their traceback: there is no other rank to tell), and ending the
job is a SystemExit with the code MPI would abort with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, NoReturn

import numpy as np
import torch

from lsurf.config import DataConfig
from lsurf.data.splits import SplitData
from lsurf.evaluate import Evaluator
from lsurf.grid import Grid
from lsurf.metrics import Column
from lsurf.parallel import Preempted, Ready, Record, WorkerFailure
from lsurf.preparation import FROM_CONFIG, Sources, WorkerSetup, load


class PointFailed(Exception):
    """Evaluating point `index` raised; the original exception is the __cause__."""

    def __init__(self, index: int) -> None:
        super().__init__(f"point {index} failed")
        self.index = index


def evaluate_chunk(
    evaluator: Evaluator,
    grid: Grid,
    chunk: np.ndarray,
    stop_when: Callable[[], bool] = lambda: False,
) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Evaluate the points of `chunk` in order, until done or until `stop_when()`.

    Returns the indices evaluated and dataset name → values (the evaluator's columns).
    """
    values: dict[str, list[float]] = {column.name: [] for column in evaluator.columns}
    finished = 0
    for index in chunk:
        if stop_when():
            break
        a, b = grid.coordinates(int(index))
        try:
            results = evaluator.evaluate(a, b)
        except Exception as error:
            raise PointFailed(int(index)) from error
        for name, value in results.items():
            values[name].append(value)
        finished += 1
    return chunk[:finished], values


class Evaluators:
    """One process's evaluators for the sweeps of a job, one sweep's at a time.

    `check()` builds every sweep's evaluator once (model, data, directions, probe), so that
    bad input in any sweep stops the job before anything is written, and returns each
    sweep's columns; it ends holding the first sweep's evaluator, the one the queue hands out
    first. `get(sweep)` builds another sweep's evaluator only when asked for it (a worker
    changes model only when the queue moves it to another sweep), dropping the one before, so
    a process holds one model and its directions at a time. Splits with the same data settings
    are kept across the change: sweeps of one dataset read it once.
    """

    def __init__(
        self,
        setups: Sequence[WorkerSetup],
        device_of: Callable[[WorkerSetup], torch.device],
        sources: Sources = FROM_CONFIG,
    ) -> None:
        self._setups = list(setups)
        self._device_of = device_of
        self._open = sources.open_split
        self._sources = replace(sources, open_split=self._open_split)
        self._splits: dict[tuple[str, str, str, bool], SplitData] = {}
        self._wanted: set[tuple[str, str, str, bool]] = set()
        self._current: tuple[int, Evaluator] | None = None

    def check(self) -> Ready:
        """Build every sweep's evaluator in turn (the last one built is the first sweep's);
        each sweep's columns and notes, in order."""
        columns: list[list[Column]] = [[] for _ in self._setups]
        notes: list[list[str]] = [[] for _ in self._setups]
        for sweep in reversed(range(len(self._setups))):
            evaluator = self.get(sweep)
            columns[sweep], notes[sweep] = evaluator.columns, evaluator.notes
        return Ready(columns, notes)

    def get(self, sweep: int) -> Evaluator:
        """The evaluator of `sweep` (its position in the job's list)."""
        if self._current is not None and self._current[0] == sweep:
            return self._current[1]
        self._current = None  # the old model and directions go before the new ones come
        self._wanted = set()
        setup = self._setups[sweep]
        evaluator = load(setup, self._device_of(setup), self._sources)
        self._splits = {key: split for key, split in self._splits.items() if key in self._wanted}
        self._current = (sweep, evaluator)
        return evaluator

    def grid(self, sweep: int) -> Grid:
        return self._setups[sweep].grid

    def _open_split(
        self, data: DataConfig, name: str, device: torch.device, channels_last: bool
    ) -> SplitData:
        # What decides a split's tensors (which splits a sweep evaluates and in what batch
        # size do not): sweeps of one dataset share them.
        key = (repr(replace(data, splits=(), batch_size=0)), name, str(device), channels_last)
        self._wanted.add(key)
        if key not in self._splits:
            self._splits[key] = self._open(data, name, device, channels_last)
        return self._splits[key]


class SerialSession:
    """Speaks `parallel.Session`'s master side; the one worker is `Evaluators` built from
    the setups sent, each on `device_of(setup)`, from `sources`."""

    def __init__(
        self, device_of: Callable[[WorkerSetup], torch.device], sources: Sources = FROM_CONFIG
    ) -> None:
        self._device_of = device_of
        self._sources = sources
        self._evaluators: Evaluators | None = None

    @property
    def workers(self) -> list[int]:
        return [0]

    def send_setup(self, payload: Any) -> None:
        if payload is not None:
            self._evaluators = Evaluators(payload, self._device_of, self._sources)

    def gather_ready(self, stop_when: Callable[[], bool]) -> tuple[list[WorkerFailure], list[Any]]:
        # A user error here propagates as it is: this process is the one that reports it.
        assert self._evaluators is not None, "send_setup gives the setups first"
        return [], [self._evaluators.check()]

    def serve(
        self,
        todo: Sequence[np.ndarray],
        record: Record,
        stop_when: Callable[[], bool],
        on_stop: Callable[[], None] = lambda: None,
    ) -> None:
        assert self._evaluators is not None, "send_setup gives the setups first"
        for sweep, points in enumerate(todo):
            if not len(points):
                continue
            evaluator, grid = self._evaluators.get(sweep), self._evaluators.grid(sweep)
            for position in range(len(points)):
                point = points[position : position + 1]
                done, values = evaluate_chunk(evaluator, grid, point, stop_when)
                if len(done):
                    record(sweep, done, values)
                if stop_when():
                    on_stop()
                    raise Preempted

    def stop_workers(self, exit_code: int) -> None:
        """Nothing to stop: the one worker is this process."""

    def abort(self, exit_code: int) -> NoReturn:
        raise SystemExit(exit_code)
