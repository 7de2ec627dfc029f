"""The master's queue: chunks of about a second of work, one point until the cost is known,
shrinking at the end, every pending point handed out once and in order."""

import numpy as np
import pytest

from lsurf.run.schedule import MAX_POINTS, TARGET_SECONDS, ChunkPlanner, SweepQueue


def drain(planner: ChunkPlanner, seconds_per_point: float | None) -> list[np.ndarray]:
    handed = []
    while (chunk := planner.next_chunk()) is not None:
        handed.append(chunk)
        if seconds_per_point is not None:
            planner.observe(len(chunk), seconds_per_point * len(chunk))
    return handed


def test_every_point_is_handed_out_once_in_order():
    todo = np.array([0, 3, 4, 9, 10, 11, 57], dtype=np.int64)
    handed = drain(ChunkPlanner(todo, workers=2), 0.01)
    np.testing.assert_array_equal(np.concatenate(handed), todo)


def test_chunks_hold_about_target_seconds_of_work_once_the_cost_is_known():
    planner = ChunkPlanner(np.arange(1_000_000), workers=64)
    assert planner.size() == 1  # nothing known yet: one point, back quickly
    planner.observe(1, 0.025)
    assert planner.size() == int(TARGET_SECONDS / 0.025)  # 40 points of 25 ms
    planner.observe(40, 40 * 0.001)  # cheaper points: larger chunks, smoothed
    assert int(TARGET_SECONDS / 0.025) < planner.size() < int(TARGET_SECONDS / 0.001)
    for _ in range(50):
        planner.observe(100, 0.0)  # free points: as large as a chunk may be
    assert planner.size() == MAX_POINTS


@pytest.mark.parametrize("workers", [1, 3, 64])
def test_the_last_chunks_shrink_so_no_worker_holds_a_long_tail(workers):
    planner = ChunkPlanner(np.arange(20_000), workers=workers)
    handed = drain(planner, 1e-6)  # points cheap enough for the largest chunks
    sizes = [len(chunk) for chunk in handed]
    assert max(sizes) <= MAX_POINTS
    # Past the middle, a chunk never exceeds half of the points left per worker.
    left = 20_000
    for size in sizes:
        assert size <= max(1, left // (2 * workers)) or left == 20_000
        left -= size
    assert sizes[-1] == 1


def test_several_sweeps_are_handed_out_one_after_the_other_each_point_once():
    todo = [np.arange(0, 50, 3), np.array([], dtype=np.int64), np.arange(7), np.array([2, 5])]
    queue = SweepQueue(todo, workers=3)
    handed: dict[int, list[np.ndarray]] = {0: [], 1: [], 2: [], 3: []}
    order = []
    worker = 0
    while (work := queue.next_chunk(worker)) is not None:
        sweep, chunk = work
        handed[sweep].append(chunk)
        order.append(sweep)
        queue.observe(sweep, len(chunk), 0.01 * len(chunk), worker)
        worker = (worker + 1) % 3
    assert order == sorted(order)  # sweep after sweep: a worker moves on at most once each
    for sweep, points in enumerate(todo):
        got = np.concatenate(handed[sweep]) if handed[sweep] else np.array([], dtype=np.int64)
        np.testing.assert_array_equal(got, points)


def test_the_end_of_a_sweep_is_not_the_end_of_the_work():
    # Two sweeps of cheap points: the first sweep's last chunks stay large, since the second
    # sweep's work is still to come; only the job's end shrinks them.
    queue = SweepQueue([np.arange(10_000), np.arange(10_000)], workers=4)
    sizes: dict[int, list[int]] = {0: [], 1: []}
    while (work := queue.next_chunk(0)) is not None:
        sweep, chunk = work
        sizes[sweep].append(len(chunk))
        queue.observe(sweep, len(chunk), 1e-4 * len(chunk), 0)
    assert min(sizes[0][1:-1]) >= 1000  # ~1 s of 0.1 ms points, not a shrinking tail
    assert sizes[1][-1] == 1  # the job's own tail does shrink
    # The second sweep is unmeasured when reached: one point, then sized.
    assert sizes[1][0] == 1 and sizes[1][1] > 1


def test_a_slow_worker_stays_slow_on_the_next_sweep():
    # Worker 1 takes 3× worker 0's time on every model. On the second sweep (a model twice as
    # costly), once worker 0 has measured it, worker 1's first chunk is sized for worker 1.
    pace: dict[int, float] = {}
    first = ChunkPlanner(np.arange(100_000), workers=2, pace=pace)
    for _ in range(5):
        first.observe(100, 100 * 0.001, worker=0)
        first.observe(100, 100 * 0.003, worker=1)
    second = ChunkPlanner(np.arange(100_000), workers=2, pace=pace)
    alone = ChunkPlanner(np.arange(100_000), workers=2)  # what it would be without the pace
    for planner in (second, alone):
        planner.observe(1, 0.002, worker=0)
    assert second.size(0) == pytest.approx(TARGET_SECONDS / 0.002, rel=0.1)
    assert second.size(1) == pytest.approx(TARGET_SECONDS / 0.006, rel=0.1)
    assert alone.size(1) == pytest.approx(TARGET_SECONDS / 0.002, rel=0.1)  # 3 s of its work
    # Its own measurement then refines the estimate from the pace, not replaces it.
    second.observe(1, 0.012, worker=1)  # one unlucky point, twice its usual time
    assert TARGET_SECONDS / 0.012 < second.size(1) < TARGET_SECONDS / 0.006
