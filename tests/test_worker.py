"""lsurf.run.worker and lsurf.run.local: a chunk is evaluated in order and stops between
points when asked; the local session serves the queue point by point to the one evaluator."""

from types import SimpleNamespace

import numpy as np
import pytest

from lsurf.grid import Grid
from lsurf.run import local
from lsurf.run.protocol import Preempted
from lsurf.run.worker import PointFailed, evaluate_chunk

GRID = Grid(np.array([-1.0, 0.0, 1.0]), np.array([10.0, 20.0]))  # flat index i * 2 + j


class Plane:
    """An evaluator whose value at (a, b) is a + b, recording where it was asked."""

    columns = [SimpleNamespace(name="value")]

    def __init__(self, fail_at=None):
        self.asked = []
        self.fail_at = fail_at

    def evaluate(self, a, b):
        self.asked.append((a, b))
        if (a, b) == self.fail_at:
            raise ValueError("diverged")
        return {"value": a + b}


def test_a_chunk_is_evaluated_in_its_order_at_the_grids_coordinates():
    plane = Plane()
    done, values = evaluate_chunk(plane, GRID, np.array([5, 0, 3]))
    assert done.tolist() == [5, 0, 3]
    assert plane.asked == [(1.0, 20.0), (-1.0, 10.0), (0.0, 20.0)]
    assert values == {"value": [21.0, 9.0, 20.0]}


def test_a_stop_request_ends_the_chunk_between_points_with_what_is_finished():
    plane = Plane()
    done, values = evaluate_chunk(plane, GRID, np.arange(6), lambda: len(plane.asked) >= 2)
    assert done.tolist() == [0, 1] and values == {"value": [9.0, 19.0]}


def test_a_failing_point_is_named_with_the_error_as_its_cause():
    with pytest.raises(PointFailed) as caught:
        evaluate_chunk(Plane(fail_at=(0.0, 10.0)), GRID, np.array([0, 2, 4]))
    assert caught.value.index == 2
    assert isinstance(caught.value.__cause__, ValueError)


class OneSweep:
    """Stands in for `Evaluators`: one sweep's evaluator over GRID."""

    def __init__(self, setups, device_of, sources):
        self.plane = Plane()
        self.setups = setups

    def check(self):
        return "ready"

    def get(self, sweep):
        assert sweep == 0
        return self.plane

    def grid(self, sweep):
        return GRID


def test_the_local_session_records_each_point_as_it_is_done_and_stops_when_asked(monkeypatch):
    monkeypatch.setattr(local, "Evaluators", OneSweep)
    session = local.LocalSession(lambda setup: "cpu")
    assert session.workers == []
    session.send_setup(["setup"])
    assert session.gather_ready(lambda: False) == ([], ["ready"])
    records = []
    session.serve([np.array([4, 1])], lambda *record: records.append(record), lambda: False)
    assert [(sweep, done.tolist(), values) for sweep, done, values in records] == [
        (0, [4], {"value": [11.0]}),
        (0, [1], {"value": [19.0]}),
    ]
    stopped = []
    with pytest.raises(Preempted):
        session.serve(
            [np.array([0, 2, 3])],
            lambda *record: records.append(record),
            lambda: len(records) >= 3,
            lambda: stopped.append(True),
        )
    assert len(records) == 3 and records[2][1].tolist() == [0] and stopped == [True]
    with pytest.raises(SystemExit) as caught:
        session.abort(3)
    assert caught.value.code == 3
