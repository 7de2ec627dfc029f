"""The chunk protocol between rank 0 and the workers, whatever carries it.

A sweep's run is a conversation: rank 0 (the master) sends each worker the sweeps' setups,
gathers each worker's `Ready` (or its `WorkerFailure`), hands out (sweep, chunk) pairs and
records the values that come back; a worker evaluates chunks until it is told to stop.
`MasterSide` and `WorkerSide` are the two ends. `lsurf.run.mpi` speaks them between ranks,
`lsurf.run.local` in one process; neither knows the other, and the run loop
(`lsurf.run.sweep`, `lsurf.run.worker`) is written once against these types.

Also here: how a failure is reported, the SIGTERM flag the loops check between points,
where a worker runs (its device and threads), which both sessions decide alike, and what a
worker gets back when its node holds one copy of its data (`NodeCopy`).
"""

from __future__ import annotations

import os
import signal
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Literal, NoReturn, Protocol

import numpy as np

GRACE_SECONDS = 10.0  # after SIGTERM, how long results still in flight are waited for


@dataclass(frozen=True)
class WorkerFailure:
    """What a worker reports when it cannot go on."""

    rank: int
    point: int | None  # flat index being evaluated, None during set-up
    message: str  # the traceback, or the one-line user error
    kind: Literal["error", "input", "preempted"]  # a bug/crash, bad input (exit 2), SIGTERM
    sweep: int = 0  # which of the job's sweeps `point` belongs to


def failure(rank: int, point: int | None, error: BaseException, sweep: int = 0) -> WorkerFailure:
    """A WorkerFailure carrying `error`'s full traceback."""
    text = "".join(traceback.format_exception(error)).rstrip()
    return WorkerFailure(rank, point, text, "error", sweep)


@dataclass(frozen=True)
class Ready:
    """A worker's set-up is done: each sweep's columns, and what the log should say of each
    sweep's evaluation (whether BN was folded, ...)."""

    columns: list[list[Any]]  # per sweep: its lsurf.metrics.Column list
    notes: list[list[str]]  # per sweep
    # per sweep: what evaluation.compile: auto chose (None: forced), for its surface file
    compile_choices: list[bool | None] | None = None


@dataclass(frozen=True)
class NodeCopy:
    """What `WorkerSide.share_on_node` hands each worker of a node: the `header` and `arrays`
    that the node's loader built, either views of one copy in the node's shared memory
    (`shared`) or this worker's own arrays, with the `reason` there is no shared copy (None
    where the worker is alone on its node: nothing to share)."""

    header: Any  # picklable: what the arrays are (lsurf.data.splits.PackedSplit for a split)
    arrays: list[np.ndarray]  # C-contiguous
    shared: bool
    reason: str | None = None


Load = Callable[[], "tuple[Any, list[np.ndarray]] | None"]  # (header, arrays), or nothing to share


class Preempted(Exception):
    """SIGTERM (a scheduler's pre-emption or scancel) arrived; stop cleanly."""


# ---------------------------------------------------------------------------- placement


@dataclass(frozen=True)
class Placement:
    device: str  # "cuda:N" or "cpu"
    threads: int  # torch intra-op threads


def place_worker(local_worker: int, local_workers: int, cuda_devices: int, cores: int) -> Placement:
    """Where the `local_worker`-th worker of a node runs (pure: testable without MPI or GPUs).

    With GPUs, workers take them round-robin by node-local index (one each when there are
    as many GPUs as workers). On CPU the node's cores are shared out evenly, at least one
    thread each, since more threads than cores only slows everyone.
    """
    if cuda_devices > 0:
        return Placement(f"cuda:{local_worker % cuda_devices}", max(1, cores // local_workers))
    return Placement("cpu", max(1, cores // max(local_workers, 1)))


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------- the two ends

Record = Callable[[int, np.ndarray, dict[str, Any]], None]  # (sweep, chunk, values)


class MasterSide(Protocol):
    """What rank 0's run loop needs of a session: `lsurf.run.mpi.Session` under MPI, and
    `lsurf.run.local.LocalSession`, which answers the same protocol in one process."""

    @property
    def workers(self) -> list[int]:
        """The worker ranks (none when this process evaluates the points itself)."""
        ...

    def send_setup(self, payload: Any) -> None: ...

    def gather_ready(
        self, stop_when: Callable[[], bool]
    ) -> tuple[list[WorkerFailure], list[Any]]: ...

    def serve(
        self,
        todo: Sequence[np.ndarray],
        record: Record,
        stop_when: Callable[[], bool],
        on_stop: Callable[[], None] = ...,
    ) -> None: ...

    def stop_workers(self, exit_code: int) -> None: ...

    def abort(self, exit_code: int) -> NoReturn: ...

    def name_rank(self, rank: int) -> str:
        """How messages name a rank: 'rank 3', or 'rank 3 on node2' in a job across nodes."""
        ...


class WorkerSide(Protocol):
    """What a worker's loop (`lsurf.run.worker.serve_chunks`) needs of its session."""

    rank: int
    exit_code: int  # set by the master's Stop

    def placement(self, cuda_devices: int) -> Placement: ...

    def receive_setup(self) -> Any: ...

    def report_ready(self, report: Any) -> None: ...

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]: ...

    def send_result(
        self, sweep: int, chunk: np.ndarray, values: dict[str, Any], seconds: float
    ) -> None: ...

    def report_failure(self, failure: WorkerFailure) -> None: ...

    def share_on_node(self, load: Load) -> NodeCopy | None:
        """`load()` run once on this worker's node and its arrays held there once, for every
        worker of the node (all of them call this, in the same order); None where `load()`
        had nothing to share. An error in `load()` is raised on every worker of the node."""
        ...


class WorkerFailed(Exception):
    def __init__(self, failure: WorkerFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


# ---------------------------------------------------------------------------- signals


class TerminationFlag:
    """Turns SIGTERM into a flag that the loops check between points."""

    def __init__(self) -> None:
        self.raised = False

    def __call__(self) -> bool:
        return self.raised

    def install(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.raised = True

        signal.signal(signal.SIGTERM, handler)
