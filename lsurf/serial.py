"""The serial session: the master's side of the chunk protocol, answered in this process.

A sweep without mpiexec (or on one rank) runs the very loop that rank 0 runs under MPI —
send the setup, gather the workers' readiness, serve chunks, record results — against this
session, whose single "worker" is an evaluator built here. So the run loop exists once, and
the serial surface is the MPI surface bit for bit (the same evaluator code on the same points).

Differences that matter: results are recorded point by point (the file follows within
`SurfaceWriter.FLUSH_SECONDS`, as under MPI), errors in the evaluator
propagate as they are (with their traceback: there is no other rank to tell), and ending the
job is a SystemExit with the code MPI would abort with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

from lsurf.evaluate import Evaluator
from lsurf.grid import Grid
from lsurf.parallel import Preempted, Record, WorkerFailure


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


class SerialSession:
    """Speaks `parallel.Session`'s master side; `load(setup)` builds the one evaluator."""

    def __init__(self, load: Callable[[Any], Evaluator]) -> None:
        self._load = load
        self._setup: Any = None
        self._evaluator: Evaluator | None = None

    @property
    def workers(self) -> list[int]:
        return [0]

    def send_setup(self, payload: Any) -> None:
        self._setup = payload

    def gather_ready(self, stop_when: Callable[[], bool]) -> tuple[list[WorkerFailure], list[Any]]:
        # A user error here propagates as it is: this process is the one that reports it.
        self._evaluator = self._load(self._setup)
        return [], [self._evaluator.columns]

    def serve(
        self,
        todo: np.ndarray,
        record: Record,
        stop_when: Callable[[], bool],
        on_stop: Callable[[], None] = lambda: None,
    ) -> None:
        assert self._evaluator is not None, "gather_ready builds the evaluator first"
        grid = self._setup.grid
        for position in range(len(todo)):
            point = todo[position : position + 1]
            done, values = evaluate_chunk(self._evaluator, grid, point, stop_when)
            if len(done):
                record(done, values)
            if stop_when():
                on_stop()
                raise Preempted

    def stop_workers(self, exit_code: int) -> None:
        """Nothing to stop: the one worker is this process."""

    def abort(self, exit_code: int) -> NoReturn:
        raise SystemExit(exit_code)
