"""A worker: the evaluators of a job's sweeps, and the loop that evaluates its chunks.

Every process that evaluates points runs this code: each MPI worker (`run_worker`, fed by
rank 0 through `lsurf.run.mpi`) and the serial run (`lsurf.run.local`, which calls
`Evaluators` and `evaluate_chunk` in-process). `Evaluators` builds one sweep's evaluator at
a time (lsurf.run.phases.load), `evaluate_chunk` evaluates the points of a chunk in order.
So the serial surface is the MPI surface bit for bit: the same evaluator code on the same
points.

The workers of an MPI node evaluating on the CPU hold one copy of each cached split between
them (`NodeCopies`, through the session's `share_on_node`), not one each: the same bytes, so
the same bits. A worker on a GPU loads its own, since its data lives in GPU memory anyway.

Input: the setups rank 0 sent (`WorkerSetup`, one per sweep) and a `WorkerSide` session.
Output: results (or failures) sent back through the session; no file is touched here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import torch

from lsurf.config import DataConfig
from lsurf.data.splits import SplitData, pack, unpack
from lsurf.errors import LsurfError
from lsurf.evaluate import Evaluator, pick_device
from lsurf.grid import Grid
from lsurf.metrics import Column
from lsurf.run.phases import FROM_CONFIG, Sources, WorkerSetup, load
from lsurf.run.protocol import Ready, TerminationFlag, WorkerFailure, WorkerSide, failure

CPU = torch.device("cpu")


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
        self._splits: dict[tuple[str, str, bool, str], SplitData] = {}
        self._wanted: set[tuple[str, str, bool, str]] = set()
        self._current: tuple[int, Evaluator] | None = None

    def check(self) -> Ready:
        """Build every sweep's evaluator in turn (the last one built is the first sweep's);
        each sweep's columns and notes, in order."""
        columns: list[list[Column]] = [[] for _ in self._setups]
        notes: list[list[str]] = [[] for _ in self._setups]
        choices: list[bool | None] = [None for _ in self._setups]
        for sweep in reversed(range(len(self._setups))):
            evaluator = self.get(sweep)
            columns[sweep], notes[sweep] = evaluator.columns, evaluator.notes
            choices[sweep] = getattr(evaluator, "compile_choice", None)  # sharpness: none
        return Ready(columns, notes, choices)

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
        key = (*split_key(data, name, channels_last), str(device))
        self._wanted.add(key)
        if key not in self._splits:
            self._splits[key] = self._open(data, name, device, channels_last)
        return self._splits[key]


def split_key(data: DataConfig, name: str, channels_last: bool) -> tuple[str, str, bool]:
    """What decides a split's tensors on a device (which splits a sweep evaluates and in what
    batch size do not): sweeps of one dataset share them."""
    return repr(replace(data, splits=(), batch_size=0)), name, channels_last


class NodeCopies:
    """The cached CPU splits of a job's sweeps, held once by the workers of each node.

    Built by every worker of the job at set-up, in the same order (the setups are the same
    on every worker): for each split that a sweep evaluates on the CPU, the node's first
    worker loads it and the session shares it (`WorkerSide.share_on_node`). `open_split`
    hands out the shared split, and opens any other as `FROM_CONFIG` does; `notes` say, per
    sweep, what the log should tell of it. Splits of sweeps on a GPU are not shared: each
    worker's copy lives in its GPU's memory, and a host copy kept for the job would only add
    to the node's memory (loading is a transient host copy per worker, freed once on the GPU).
    The shared copies stay for the whole job (a window is freed only by all its workers).
    """

    def __init__(
        self,
        session: WorkerSide,
        setups: Sequence[WorkerSetup],
        device_of: Callable[[WorkerSetup], torch.device],
    ) -> None:
        self._splits: dict[tuple[str, str, bool], SplitData] = {}
        self.notes: list[list[str]] = []
        for setup in setups:
            # A setup of another job's kind (lsurf sharpness's) loads its own data.
            if getattr(setup, "load", None) is not None or device_of(setup).type != "cpu":
                self.notes.append([])
                continue
            data, channels_last = setup.config.data, setup.config.evaluation.channels_last
            shared: list[str] = []
            private: list[str] = []
            reasons: set[str] = set()
            for name in data.splits:
                key = split_key(data, name, channels_last)
                if key in self._splits:
                    continue  # an earlier sweep's split: shared already
                copy = session.share_on_node(partial(_load_packed, data, name, channels_last))
                if copy is None:
                    continue  # not cached (streamed): each worker opens its own
                self._splits[key] = unpack(copy.header, copy.arrays)
                (shared if copy.shared else private).append(name)
                reasons.update([copy.reason] if copy.reason is not None else [])
            self.notes.append(_notes(shared, private, reasons))

    def open_split(
        self, data: DataConfig, name: str, device: torch.device, channels_last: bool
    ) -> SplitData:
        split = self._splits.get(split_key(data, name, channels_last))
        if split is None or device.type != "cpu":
            return FROM_CONFIG.open_split(data, name, device, channels_last)
        return split


def _load_packed(data: DataConfig, name: str, channels_last: bool) -> Any:
    """What the node's first worker loads: the split as arrays (None: it does not travel)."""
    return pack(FROM_CONFIG.open_split(data, name, CPU, channels_last))


def _notes(shared: list[str], private: list[str], reasons: set[str]) -> list[str]:
    notes = []
    if shared:
        notes.append(f"data: {', '.join(shared)} held once per node, in MPI shared memory")
    if private and reasons:
        notes.append(f"data: a copy of {', '.join(private)} per worker ({'; '.join(reasons)})")
    return notes


def run_worker(session: WorkerSide) -> None:
    """Evaluate chunks for rank 0 until told to stop (rank 0 reports everything)."""
    terminated = TerminationFlag()
    terminated.install()
    setups: list[WorkerSetup] | None = session.receive_setup()
    if setups is None:
        return
    try:
        evaluators, data_notes = _worker_evaluators(session, setups)
        ready = evaluators.check()  # every sweep's set-up, before anything is written
        notes = [said + data_notes[s] for s, said in enumerate(ready.notes)]
        ready = Ready(ready.columns, notes, ready.compile_choices)
    except LsurfError as error:
        session.report_ready(WorkerFailure(session.rank, None, str(error), "input"))
        return _wait_for_stop(session)
    except Exception as error:  # noqa: BLE001 - reported to rank 0 with its traceback
        session.report_ready(failure(session.rank, None, error))
        return _wait_for_stop(session)
    session.report_ready(ready)
    for sweep, chunk in session.chunks():
        try:
            evaluator = evaluators.get(sweep)  # another model only when the queue moved on
            started = time.perf_counter()
            done, values = evaluate_chunk(evaluator, setups[sweep].grid, chunk, terminated)
        except PointFailed as error:
            assert error.__cause__ is not None
            session.report_failure(failure(session.rank, error.index, error.__cause__, sweep))
            return _wait_for_stop(session)
        except Exception as error:  # noqa: BLE001 - building the evaluator failed
            session.report_failure(failure(session.rank, None, error, sweep))
            return _wait_for_stop(session)
        session.send_result(sweep, done, values, time.perf_counter() - started)
        if terminated():
            # Whatever this worker finished is on its way to rank 0; tell it the job must stop.
            session.report_failure(WorkerFailure(session.rank, None, "", "preempted"))
            return _wait_for_stop(session)
    if session.exit_code:
        raise SystemExit(session.exit_code)


def _worker_evaluators(
    session: WorkerSide, setups: list[WorkerSetup]
) -> tuple[Evaluators, list[list[str]]]:
    """This worker's evaluators: on its GPU (round-robin on its node) for the sweeps that
    may use one, on the CPU for those whose evaluation.device is cpu, with the CPU data
    held once per node; and what the log should say of each sweep's data."""
    wanted = {setup.config.evaluation.device for setup in setups}
    cuda = wanted != {"cpu"} and torch.cuda.is_available()
    if "cuda" in wanted and not cuda:
        pick_device("cuda")  # raises the one-line error
    placement = session.placement(torch.cuda.device_count() if cuda else 0)
    torch.set_num_threads(placement.threads)

    def device_of(setup: WorkerSetup) -> torch.device:
        on_cpu = setup.config.evaluation.device == "cpu"
        return torch.device("cpu" if on_cpu else placement.device)

    # Before any model is built: every worker of a node reaches the sharing together, since
    # nothing it does first can fail on one worker and not the others.
    copies = NodeCopies(session, setups, device_of)
    sources = replace(FROM_CONFIG, open_split=copies.open_split)
    return Evaluators(setups, device_of, sources), copies.notes


def _wait_for_stop(session: WorkerSide) -> None:
    """After reporting a problem: wait for rank 0's Stop (or its abort of the job)."""
    for _ in session.chunks():
        pass  # chunks still in flight are dropped; rank 0 has stopped handing out work
    if session.exit_code:
        raise SystemExit(session.exit_code)
