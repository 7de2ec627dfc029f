"""The master's queue of points: chunks sized to the time a point takes.

Input: the pending flat point indices (ascending), the number of workers, and as the sweep
runs, how long workers took for the chunks they returned. Output: the next chunk to hand out.

A chunk is about TARGET_SECONDS of the worker's own work: large enough that the master
handles a few messages per worker per second whatever a point costs (a 1M-point grid of
millisecond points would otherwise be a million messages), small enough that a kill loses
little and the queue still balances. Each worker's time per point is measured on its own
(an exponential average over the chunks it returned), so a slow GPU, a straggler, gets fewer
points per chunk rather than chunks that run long after the others are done; a worker not
heard from yet is sized by the average of all. Two limits keep the start quick and the end
balanced: until a chunk has come back, chunks are one point each (nothing is known of the
cost yet), and a chunk never holds more than TAIL_SHARE of the work left per worker, so the
last chunks shrink and every worker finishes at nearly the same moment.

Several sweeps in one job (`lsurf sweep A.yaml B.yaml`) share one queue (`SweepQueue`): each
sweep has its own planner, since each model has its own cost per point, and the queue hands
out the first sweep's points until none is left, then the next one's. A worker thus changes
sweep (loads another model) at most once per sweep, and the end of a sweep is no end of the
work: the tail limit counts the work of the sweeps still to come, so chunks shrink only at the
end of the job. A worker's pace (its time per point against the average) carries over to a
sweep it has not worked on yet, so a straggler's first chunk there is sized for it, not for
the average worker (measured: 3 sweeps, 16 workers, 2 of them 3× slower: 19% idle without
it, as one sweep's 2% with it).

Chunk sizes never change results: each point is evaluated on its own, whoever takes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TARGET_SECONDS = 1.0  # of one worker's work per chunk
MAX_POINTS = 4096  # per chunk at most: bounds a message and the work a kill can lose
TAIL_SHARE = 0.5  # a chunk is at most this share of the points left per worker
SMOOTHING = 0.3  # weight of the newest chunk in the average time per point


class ChunkPlanner:
    """Carves `todo` (flat indices, ascending) into consecutive chunks, sized as it learns."""

    def __init__(
        self, todo: np.ndarray, workers: int, pace: dict[int, float] | None = None
    ) -> None:
        self._todo = np.asarray(todo, dtype=np.int64)
        self._next = 0
        self._workers = max(1, workers)
        self.seconds_per_point: float | None = None  # all workers together
        self._per_worker: dict[int, float] = {}
        self._base: float | None = None  # time per point of a worker of pace 1
        # Each worker's time per point relative to a worker of pace 1 (the first sweep's
        # average sets the scale): what a planner of another sweep (another model) sharing
        # this dict knows of a worker it has not measured yet.
        self._pace = {} if pace is None else pace

    @property
    def remaining(self) -> int:
        """Points not handed out yet."""
        return len(self._todo) - self._next

    def observe(self, points: int, seconds: float, worker: int | None = None) -> None:
        """`worker` spent `seconds` evaluating a chunk of `points` points."""
        if points <= 0:
            return
        measured = max(seconds, 0.0) / points
        self.seconds_per_point = _averaged(self.seconds_per_point, measured)
        if worker is None:
            return
        pace = self._pace.get(worker)
        base = self._base
        # This sweep's time per point of a worker of pace 1, from any worker's chunk.
        self._base = _averaged(base, measured / pace if pace else measured)
        known = self._per_worker.get(worker)
        if known is None and pace is not None and base is not None:
            # New to this sweep: start from its pace on the others (one short chunk's time
            # is too noisy to size the next ones on its own).
            known = base * pace
        own = self._per_worker[worker] = _averaged(known, measured)
        if self._base > 0:
            self._pace[worker] = own / self._base

    def size(self, worker: int | None = None, after_seconds: float = 0.0) -> int:
        """How many points `worker`'s next chunk takes (0 when none are left); `after_seconds`
        is the work still to come once these points are done (other sweeps')."""
        if self.remaining == 0:
            return 0
        average = self.seconds_per_point
        if average is None:
            return 1
        own = average
        if worker is not None and worker in self._per_worker:
            own = self._per_worker[worker]
        elif worker in self._pace and self._base is not None:  # measured on other sweeps only
            own = self._base * self._pace[worker]
        if own <= 0 or average <= 0:  # free points: only the tail and the cap limit a chunk
            wanted = int(TAIL_SHARE * self.remaining / self._workers)
        else:
            left = self.remaining * average + after_seconds
            left_per_worker = left / self._workers  # seconds of work
            seconds = min(TARGET_SECONDS, TAIL_SHARE * left_per_worker)
            wanted = int(seconds / own)
        return max(1, min(wanted, MAX_POINTS, self.remaining))

    def next_chunk(
        self, worker: int | None = None, after_seconds: float = 0.0
    ) -> np.ndarray | None:
        """The next chunk for `worker`, or None when every point has been handed out."""
        size = self.size(worker, after_seconds)
        if size == 0:
            return None
        chunk = self._todo[self._next : self._next + size]
        self._next += size
        return chunk


def _averaged(average: float | None, measured: float) -> float:
    return measured if average is None else average + SMOOTHING * (measured - average)


class SweepQueue:
    """The points of several sweeps, handed out sweep after sweep (one planner each)."""

    def __init__(self, todo: Sequence[np.ndarray], workers: int) -> None:
        pace: dict[int, float] = {}  # a slow GPU is slow on every sweep's model
        self._planners = [ChunkPlanner(points, workers, pace) for points in todo]
        self._current = 0  # the first sweep with points not handed out yet

    def observe(self, sweep: int, points: int, seconds: float, worker: int | None = None) -> None:
        """`worker` spent `seconds` evaluating a chunk of `points` points of `sweep`."""
        self._planners[sweep].observe(points, seconds, worker)

    def next_chunk(self, worker: int | None = None) -> tuple[int, np.ndarray] | None:
        """(sweep, chunk) for `worker`, or None when every point of every sweep is handed out."""
        planners = self._planners
        while self._current < len(planners) and planners[self._current].remaining == 0:
            self._current += 1
        if self._current == len(planners):
            return None
        planner = planners[self._current]
        chunk = planner.next_chunk(worker, self._seconds_after(self._current))
        assert chunk is not None  # it has points left
        return self._current, chunk

    def _seconds_after(self, sweep: int) -> float:
        """The estimated work of the sweeps after `sweep` (a sweep not measured yet is taken
        to cost what this one does)."""
        fallback = self._planners[sweep].seconds_per_point or 0.0
        return sum(
            later.remaining * (later.seconds_per_point or fallback)
            for later in self._planners[sweep + 1 :]
        )
