"""The local session: the master's side of the chunk protocol, answered in this process.

A sweep without mpiexec (or on one rank) runs the very loop that rank 0 runs under MPI —
send the setup, gather the workers' readiness, serve chunks, record results — against this
session, whose single "worker" is lsurf.run.worker's `Evaluators`, as every MPI worker's (one
sweep's evaluator at a time, for jobs of several sweeps). So the run loop exists once, and
the serial surface is the MPI surface bit for bit (the same evaluator code on the same points).

Differences that matter: results are recorded point by point (the file follows within
`SurfaceWriter.FLUSH_SECONDS`, as under MPI), errors in the evaluator
propagate as they are (with their traceback: there is no other rank to tell), and ending the
job is a SystemExit with the code MPI would abort with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import numpy as np
import torch

from lsurf.run.phases import FROM_CONFIG, Sources, WorkerSetup
from lsurf.run.protocol import Preempted, Record, WorkerFailure
from lsurf.run.worker import Evaluators, evaluate_chunk


class LocalSession:
    """Speaks the protocol's master side (`lsurf.run.protocol.MasterSide`); the one worker
    is `Evaluators` built from the setups sent, each on `device_of(setup)`, from `sources`."""

    def __init__(
        self, device_of: Callable[[WorkerSetup], torch.device], sources: Sources = FROM_CONFIG
    ) -> None:
        self._device_of = device_of
        self._sources = sources
        self._evaluators: Evaluators | None = None

    @property
    def workers(self) -> list[int]:
        """No worker ranks: the one worker is this process."""
        return []

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

    def name_rank(self, rank: int) -> str:
        return f"rank {rank}"
