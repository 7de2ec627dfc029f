"""All of lsurf's MPI: joining the job, and the chunk protocol (lsurf.run.protocol) between ranks.

The only module that imports mpi4py. Rank 0 is the master: it owns the plan and the surface
file and hands out chunks of point indices on request (a dynamic queue, so a slow GPU or a
costly region of the grid does not hold the others back). Every other rank is a worker that
evaluates chunks and sends the values back. Nobody blocks in a receive: MPI's blocking
receive busy-waits and would take a whole core from the workers, so every wait here is an
Iprobe followed by a short sleep.

Messages (all point to point, pickled; tags below):
    master → worker  SETUP    the sweeps' payloads (a list), or None: stop before starting
    worker → master  READY    setup done (data loaded, probed): a Ready (each sweep's columns and
                              notes), or the error
    master → worker  WORK     (sweep, chunk): a sweep's position in the list and an int64 array
                              of its flat point indices; or a Stop
    worker → master  RESULT   (sweep, chunk, {metric: values}, seconds) for a finished chunk
    worker → master  FAILED   (rank, point, traceback) — the master aborts the job
One job may run several sweeps (`lsurf sweep A.yaml B.yaml`) through one queue: the master
hands out the first sweep's points until none is left, then the next sweep's, so a worker
changes sweep (model, data, directions) only when the queue moves on, and no worker idles
while any sweep still has points. The master keeps up to `PIPELINE` chunks in flight per
worker, so a worker never waits for the master's reply between two chunks, and sizes chunks
to about a second of work (lsurf.run.schedule, one planner per sweep: each model's cost is its
own), so it handles a few messages per worker per second whatever a point costs.

The workers of a node hold one copy of their data between them (`Session.share_on_node`): the
node's first worker loads it into an MPI shared-memory window, the others map that window.
"""

from __future__ import annotations

import math
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import numpy as np

from lsurf.errors import LsurfError
from lsurf.run.protocol import (
    GRACE_SECONDS,
    Load,
    NodeCopy,
    Placement,
    Preempted,
    Record,
    WorkerFailed,
    WorkerFailure,
    available_cores,
    place_worker,
)
from lsurf.run.schedule import SweepQueue

TAG_SETUP, TAG_READY, TAG_WORK, TAG_RESULT, TAG_FAILED = 11, 12, 13, 14, 15
PIPELINE = 2  # chunks in flight per worker: one being evaluated, one waiting
DRAIN = 512  # messages handled in a row at most before the master checks for a stop
POLL_SECONDS = 0.002  # sleep between probes: ~0.2% of a 1 s point, no core spinning
# The first waits of a collective sleep this long, doubling up to POLL_SECONDS: a Hessian-vector
# product of a small model takes milliseconds, so a flat 2 ms sleep would double its cost,
# while a short one that grows never spins a core for long.
FIRST_POLL_SECONDS = 0.00005
# Before MPI_Abort: a moment for the launcher to forward the line that says why the job ends
# (each rank's output reaches mpiexec through pipes that the abort may cut before they are
# drained; seen once on a loaded 2-core machine: the failure line was lost).
ABORT_GRACE_SECONDS = 1.0

# Where each array of a node's shared copy starts, in bytes: as torch's own CPU allocator aligns
# a tensor (a kernel may choose its code path by the alignment of its input).
NODE_ALIGNMENT = 64

# Environment variables that launchers set in every rank: MPICH/Hydra and Intel MPI (PMI_*),
# Open MPI, PMIx (srun --mpi=pmix), and MPICH's node-local counts.
_LAUNCHER_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


@dataclass(frozen=True)
class Stop:
    """Sent instead of a chunk: no more work; the worker exits with `exit_code`."""

    exit_code: int = 0


_W = TypeVar("_W", bound="_World")


def _specs(loaded: tuple[Any, list[np.ndarray]]) -> list[tuple[str, tuple[int, ...]]]:
    """(dtype, shape) of each array of a node's copy, as the other workers rebuild them."""
    arrays = loaded[1]
    assert all(array.flags.c_contiguous for array in arrays), "a node copy is C-contiguous"
    return [(array.dtype.str, array.shape) for array in arrays]


def _offsets(specs: list[tuple[str, tuple[int, ...]]]) -> tuple[list[int], int]:
    """Where each array starts in the window (NODE_ALIGNMENT apart), and the window's size."""
    offsets, end = [], 0
    for dtype, shape in specs:
        start = -(-end // NODE_ALIGNMENT) * NODE_ALIGNMENT
        offsets.append(start)
        end = start + np.dtype(dtype).itemsize * math.prod(shape)
    return offsets, max(end, 1)


def _portable(error: Exception, where: str) -> Exception:
    """`error` as the other workers of the node raise it: a user error as it is (its one line,
    whichever worker's report rank 0 shows), anything else named as the loader's failure."""
    if isinstance(error, LsurfError):
        try:
            return pickle.loads(pickle.dumps(error))
        except Exception:  # noqa: BLE001 - an error class that does not pickle: its text
            return LsurfError(str(error))
    return RuntimeError(f"{where} failed to load this node's copy of the data: {error!r}")


def launched_by_mpi() -> bool:
    """True under mpiexec/srun (or `python -m mpi4py`), without importing mpi4py otherwise."""
    if "mpi4py.MPI" in sys.modules:
        return True
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


class _World:
    """This process's place in the MPI job: its rank, the job's size, the ranks of its node."""

    def __init__(self) -> None:
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        # Ranks sharing this node's memory: the node-local view, whatever the launcher.
        self.node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.node_ranks: list[int] = self.node.allgather(self.rank)  # world ranks, node order
        # Every rank's node, so that a message about a rank can say where it ran.
        self.hosts: list[str] = self.comm.allgather(MPI.Get_processor_name())

    def name_rank(self, rank: int) -> str:
        """'rank 3 on node2' in a job across nodes; 'rank 3' where every rank shares one."""
        if len(set(self.hosts)) > 1:
            return f"rank {rank} on {self.hosts[rank]}"
        return f"rank {rank}"

    def abort(self, exit_code: int) -> NoReturn:
        """End every rank of the job now (a bug on this rank: the others must not wait)."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(exit_code)
        os._exit(exit_code)  # MPI_Abort may return before the launcher reaps this process

    def _complete(self, request: Any) -> None:
        """Wait for a non-blocking collective: Test + a short sleep that grows, since MPI's
        blocking collectives busy-wait like its blocking receive."""
        pause = FIRST_POLL_SECONDS
        while not request.Test():
            time.sleep(pause)
            pause = min(2 * pause, POLL_SECONDS)

    def _broadcast(self, comm: Any, payload: Any) -> Any:
        """The `payload` (any picklable object) of `comm`'s rank 0 on each of its ranks; the
        others pass None."""
        root = comm.Get_rank() == 0
        data = pickle.dumps(payload) if root else b""
        length = np.array([len(data)], dtype=np.int64)
        self._complete(comm.Ibcast(length, root=0))
        buffer = bytearray(data) if root else bytearray(int(length[0]))
        self._complete(comm.Ibcast(buffer, root=0))
        return payload if root else pickle.loads(buffer)


def join(world: type[_W]) -> _W | None:
    """This process's `world` (a Session or a Group) in an mpiexec/srun job of two ranks or
    more; None for a serial run: not launched by MPI, or a lone rank, which then owns the
    cores of its allocation (launchers may leave torch one thread; seen with MPICH)."""
    if not launched_by_mpi():
        return None
    joined = world()
    if joined.size == 1:
        import torch

        torch.set_num_threads(available_cores())
        return None
    return joined


# ---------------------------------------------------------------------------- session


class Session(_World):
    """The protocol's send/receive steps between rank 0 and the workers."""

    def __init__(self) -> None:
        super().__init__()
        self.local_workers = [rank for rank in self.node_ranks if rank != 0]
        self.exit_code = 0  # set by the master's Stop
        # This node's workers, who share one copy of their data (the master loads none).
        colour = self._mpi.UNDEFINED if self.is_master else 0
        self._node_workers = self.node.Split(colour, key=self.rank)
        # Never freed: a window's memory is its workers' data for the whole job, and freeing
        # is collective (a worker freeing alone would wait for the others forever).
        self._windows: list[Any] = []

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @property
    def workers(self) -> list[int]:
        return list(range(1, self.size))

    def placement(self, cuda_devices: int) -> Placement:
        local_index = self.local_workers.index(self.rank)
        return place_worker(local_index, len(self.local_workers), cuda_devices, available_cores())

    # -- polling receive: Iprobe + sleep, never a busy-waiting blocking recv

    def _wait(self, source: int, tag: int, stop_when: Callable[[], bool] | None = None) -> Any:
        status = self._mpi.Status()
        while not self.comm.Iprobe(source=source, tag=tag, status=status):
            if stop_when is not None and stop_when():
                raise Preempted
            time.sleep(POLL_SECONDS)
        return self.comm.recv(source=status.Get_source(), tag=status.Get_tag()), status

    def _poll_any(self, tags: tuple[int, ...]) -> tuple[int, int, Any] | None:
        """(source, tag, message) of a waiting message with one of `tags`, or None."""
        status = self._mpi.Status()
        for tag in tags:
            if self.comm.Iprobe(source=self._mpi.ANY_SOURCE, tag=tag, status=status):
                source = status.Get_source()
                return source, tag, self.comm.recv(source=source, tag=tag)
        return None

    def _wait_any(
        self, tags: tuple[int, ...], stop_when: Callable[[], bool]
    ) -> tuple[int, int, Any]:
        while (message := self._poll_any(tags)) is None:
            if stop_when():
                raise Preempted
            time.sleep(POLL_SECONDS)
        return message

    # -- master side

    def send_setup(self, payload: Any) -> None:
        """Send the setup payload (or None: stop now) to every worker."""
        requests = [self.comm.isend(payload, dest=worker, tag=TAG_SETUP) for worker in self.workers]
        self._mpi.Request.waitall(requests)

    def gather_ready(self, stop_when: Callable[[], bool]) -> tuple[list[WorkerFailure], list[Any]]:
        """Wait until every worker has finished its setup: the failures, and what the others
        reported (the columns their evaluators measure)."""
        failures, reports = [], []
        for _ in self.workers:
            _, _, message = self._wait_any((TAG_READY,), stop_when)
            if isinstance(message, WorkerFailure):
                failures.append(message)
            else:
                reports.append(message)
        return failures, reports

    def stop_workers(self, exit_code: int) -> None:
        requests = [self.comm.isend(Stop(exit_code), dest=w, tag=TAG_WORK) for w in self.workers]
        self._mpi.Request.waitall(requests)

    def serve(
        self,
        todo: Sequence[np.ndarray],
        record: Record,
        stop_when: Callable[[], bool],
        on_stop: Callable[[], None] = lambda: None,
    ) -> None:
        """Hand out the points `todo[s]` of every sweep s in chunks on request until all are
        done, sweep after sweep; `record(s, chunk, values)` each result as it comes. Chunk
        sizes follow the measured time per point of that sweep (lsurf.run.schedule).

        A worker's failure raises WorkerFailed. Pre-emption (`stop_when()` here, or a worker
        reporting SIGTERM) stops the handing out and calls `on_stop()` at once (a launcher may
        kill this rank any moment now); results still arriving within GRACE_SECONDS are
        recorded, then Preempted is raised.
        """
        queue = SweepQueue(todo, len(self.workers))
        outstanding = {worker: 0 for worker in self.workers}
        sends: list[Any] = []
        deadline: float | None = None

        def hand_out(worker: int) -> None:
            if deadline is None and (work := queue.next_chunk(worker)) is not None:
                sends.append(self.comm.isend(work, dest=worker, tag=TAG_WORK))
                outstanding[worker] += 1

        for _ in range(PIPELINE):
            for worker in self.workers:
                hand_out(worker)

        def stop() -> float:
            on_stop()
            return time.monotonic() + GRACE_SECONDS

        while any(outstanding.values()):
            if deadline is None and stop_when():
                deadline = stop()
            if deadline is not None and time.monotonic() > deadline:
                break
            # Every waiting message before sleeping again (a burst of results from many
            # workers is drained at once), checking for a stop now and then.
            handled = 0
            while handled < DRAIN and (message := self._poll_any((TAG_FAILED, TAG_RESULT))):
                handled += 1
                source, tag, payload = message
                if tag == TAG_FAILED and payload.kind == "preempted":
                    outstanding[source] = 0  # it drops the chunks it had not started
                    deadline = deadline or stop()
                elif tag == TAG_FAILED:
                    raise WorkerFailed(payload)
                else:
                    sweep, chunk, values, seconds = payload
                    outstanding[source] -= 1
                    queue.observe(sweep, len(chunk), seconds, source)
                    record(sweep, chunk, values)
                    hand_out(source)
            if not handled:
                time.sleep(POLL_SECONDS)
            if len(sends) > 2 * len(self.workers):  # completed sends, pruned in batches
                sends = [request for request in sends if not request.Test()]
        if deadline is not None:
            raise Preempted
        self._mpi.Request.waitall(sends)

    def abort(self, exit_code: int) -> NoReturn:
        """End every rank of the job now (a worker failed or the master cannot go on)."""
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_SECONDS)
        super().abort(exit_code)

    # -- worker side

    def receive_setup(self) -> Any:
        return self._wait(0, TAG_SETUP)[0]

    def report_ready(self, report: Any) -> None:
        """Setup done: what the master needs to know (the columns), or the WorkerFailure."""
        self.comm.send(report, dest=0, tag=TAG_READY)

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """The (sweep, chunk) pairs this worker is handed, in order, until the master says
        stop."""
        while True:
            message, _ = self._wait(0, TAG_WORK)
            if isinstance(message, Stop):
                self.exit_code = message.exit_code
                return
            yield message

    def send_result(
        self, sweep: int, chunk: np.ndarray, values: dict[str, Any], seconds: float
    ) -> None:
        """The values of a finished chunk of `sweep` (arrays pickle far faster than lists of
        floats), with the seconds it took, from which the master sizes the chunks that follow."""
        arrays = {name: np.asarray(column, dtype=np.float64) for name, column in values.items()}
        self.comm.send((sweep, chunk, arrays, seconds), dest=0, tag=TAG_RESULT)

    def report_failure(self, failure: WorkerFailure) -> None:
        self.comm.send(failure, dest=0, tag=TAG_FAILED)

    def share_on_node(self, load: Load) -> NodeCopy | None:
        """One copy of `load()`'s arrays per node, in MPI shared memory (protocol.WorkerSide).

        The node's first worker runs `load()` and tells the others what it built (or its
        error, which then ends every worker of the node alike, before any collective they
        could wait in); all allocate one shared window together, the first copies its arrays
        in and drops its own, and every worker maps the window's bytes as the same arrays.
        A worker alone on its node keeps what it loaded. Where MPI cannot allocate the window,
        each worker loads its own copy (the copy says why, for the log).
        """
        workers = self._node_workers
        if workers.Get_size() == 1:
            alone = load()
            return None if alone is None else NodeCopy(*alone, shared=False)
        loads = workers.Get_rank() == 0
        loaded: tuple[Any, list[np.ndarray]] | None = None
        announced: tuple[Any, ...] | None = None
        if loads:
            try:
                loaded = load()
            except Exception as error:
                self._broadcast(workers, ("failed", _portable(error, self.name_rank(self.rank))))
                raise
            announced = ("nothing",) if loaded is None else ("arrays", loaded[0], _specs(loaded))
        message = self._broadcast(workers, announced)
        if message[0] == "failed":
            raise message[1]
        if message[0] == "nothing":
            return None
        header, specs = message[1], message[2]
        offsets, total = _offsets(specs)
        try:
            window = self._allocate_shared(total if loads else 0, workers)
        except self._mpi.Exception as error:
            own = loaded if loads else load()
            assert own is not None, "every worker of a node loads the same"
            reason = f"MPI shared memory unavailable: {error}"
            return NodeCopy(*own, shared=False, reason=reason)
        self._windows.append(window)
        memory, _ = window.Shared_query(0)  # the first worker's segment: the whole copy
        views = [
            np.frombuffer(memory, np.dtype(dtype), math.prod(shape), offset).reshape(shape)
            for (dtype, shape), offset in zip(specs, offsets, strict=True)
        ]
        if loaded is not None:
            for view, array in zip(views, loaded[1], strict=True):
                view[...] = array
        del loaded  # the first worker's own copy goes: the window is the node's one copy
        self._complete(workers.Ibarrier())  # the copy is whole before any worker reads it
        return NodeCopy(header, views, shared=True)

    def _allocate_shared(self, nbytes: int, comm: Any) -> Any:
        """The node's window: `nbytes` on the first worker, none on the others."""
        return self._mpi.Win.Allocate_shared(nbytes, 1, comm=comm)


# ---------------------------------------------------------------------------- every rank as one


class Group(_World):
    """Every rank of the job working on one computation (`lsurf hessian`): no master, no queue.

    Rank 0 reads the inputs and writes the output; all ranks share the data and sum their
    partial results. Each collective here is non-blocking and polled (Test + a short sleep),
    since MPI's blocking collectives busy-wait like its blocking receive.
    """

    def __init__(self) -> None:
        super().__init__()
        self.local_rank = self.node_ranks.index(self.rank)  # its index among its node's ranks
        self.local_size = len(self.node_ranks)

    def placement(self, cuda_devices: int) -> Placement:
        """This rank's GPU (round-robin by node-local rank) or its share of the node's cores."""
        return place_worker(self.local_rank, self.local_size, cuda_devices, available_cores())

    def broadcast(self, payload: Any) -> Any:
        """Rank 0's `payload` (any picklable object) on every rank; the others pass None."""
        return self._broadcast(self.comm, payload)

    def gather_failures(self, message: str | None) -> list[tuple[int, str]]:
        """Every rank says whether it failed (`message`, None when it did not); all ranks get
        the same list of (rank, message), in rank order, so they all stop or all go on."""
        text = (message or "").encode()
        lengths = np.zeros(self.size, dtype=np.int64)
        own = np.array([len(text)], dtype=np.int64)
        self._complete(self.comm.Iallgather(own, lengths))
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        received = bytearray(int(lengths.sum()))
        self._complete(
            self.comm.Iallgatherv(
                bytearray(text), [received, (lengths.tolist(), offsets.tolist()), self._mpi.BYTE]
            )
        )
        return [
            (rank, bytes(received[start : start + length]).decode())
            for rank, (start, length) in enumerate(zip(offsets, lengths, strict=True))
            if length
        ]

    def sum(self, values: np.ndarray, count: float, step: int = 0) -> tuple[np.ndarray, float]:
        """Σ over ranks of a float64 vector and a count, the same bits on every rank.

        Reduced to rank 0, then broadcast from it: an allreduce may add in a different order
        on different ranks, and ranks that go on from different bits (a Lanczos run deciding
        when it has converged) would part ways and wait on each other forever. `step` says
        what the caller is computing (a small integer, the same on every rank while they keep
        in step); rank 0 checks that it is, and raises OutOfStep if not, so a job whose ranks
        parted ways anyway (unequal hardware rounding differently) ends instead of hanging.
        """
        packed = np.empty(len(values) + 3, dtype=np.float64)
        packed[:-3] = values
        # Σ step = size·s and Σ step² = size·s² hold together only when every step is s.
        packed[-3:] = count, step, float(step) ** 2
        total = np.empty_like(packed) if self.rank == 0 else packed
        self._complete(self.comm.Ireduce(packed, total, op=self._mpi.SUM, root=0))
        if self.rank == 0 and (
            total[-2] != self.size * step or total[-1] != self.size * float(step) ** 2
        ):
            raise OutOfStep(
                f"the ranks are out of step (rank 0 is at step {step}, the mean step of all "
                f"ranks is {total[-2] / self.size:g}): their computations parted ways; run "
                "on identical devices, or serially"
            )
        self._complete(self.comm.Ibcast(total, root=0))
        return total[:-3], float(total[-3])


class OutOfStep(Exception):
    """Rank 0 found the ranks of a `Group` computing different things in one collective sum."""
