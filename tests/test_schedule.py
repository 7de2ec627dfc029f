"""The master's queue: chunks of about a second of work, one point until the cost is known,
shrinking at the end, every pending point handed out once and in order."""

import numpy as np
import pytest

from lsurf.schedule import MAX_POINTS, TARGET_SECONDS, ChunkPlanner


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
