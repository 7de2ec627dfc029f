"""`lsurf sweep --plan`: what a sweep would do and how long it would take, writing nothing.

Before asking a scheduler for hours of GPU time, a researcher wants to know how many points
are left (a resumed sweep has fewer), whether the direction file will be reused, what the
surface takes in memory and on disk, and what a point costs on this hardware. The plan runs
every check the sweep runs (a config that plans cleanly starts cleanly), times the
evaluation of the origin on the configured device, and writes no byte: no surface file, no
direction file.

Input: validated `SweepConfig`s (several: one job's sweeps) and the `--force` flag. Output:
the report's lines: each sweep's, then, for several, what they take together.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from lsurf import params
from lsurf.config import SweepConfig
from lsurf.evaluate import pick_device
from lsurf.files import surface as surface_file
from lsurf.grid import pending
from lsurf.run import capacity
from lsurf.run.phases import (
    Prepared,
    check_distinct_outputs,
    check_output,
    load,
    prepare,
    share_direction_files,
    with_compile_plan,
    with_recorded_compile,
)

WORKER_COUNTS = (1, 4, 16)


def plan_sweep(config: SweepConfig, force: bool = False) -> list[str]:
    """The report's lines; raises the same `LsurfError`s as the sweep would on bad input."""
    return plan_sweeps([config], force)


def plan_sweeps(configs: Sequence[SweepConfig], force: bool = False) -> list[str]:
    """Every sweep's plan, then (for several) the job's: points and time on 1, 4, 16 workers."""
    check_distinct_outputs(configs)
    every = share_direction_files([prepare(config, force) for config in configs])
    # compile: auto as a resume would take it, and as a first run on one worker would choose.
    every = [with_compile_plan(with_recorded_compile(p, force), 1) for p in every]
    states = [check_output(prepared, force) for prepared in every]
    left = [p.config for p, state in zip(every, states, strict=True) if state is not True]
    capacity.check_sweeps_fit(left)
    lines: list[str] = []
    points, seconds = 0, 0.0
    for prepared, state in zip(every, states, strict=True):
        own, to_go, work = _plan(prepared, state)
        lines += own
        points, seconds = points + to_go, seconds + work
    if len(configs) > 1:
        lines.append(
            f"together {len(configs)} sweeps ({len(left)} to run) in one queue, {points} points "
            "to evaluate"
        )
        lines += _durations(points, seconds)
    return lines


def _plan(prepared: Prepared, state: bool | None) -> tuple[list[str], int, float]:
    """One sweep's lines, its points to go and their estimated seconds of work on one worker."""
    config = prepared.config
    grid = prepared.grid
    lines = [f"plan for {config.output} (nothing written)"]
    if state is True:
        lines.append(f"output   complete ({grid.size} points): the sweep would exit at once")
        return lines, 0, 0.0
    if state is None:
        to_go = grid.size
        lines.append(
            "output   new" if not config.output.exists() else "output   replaced (--force)"
        )
    else:
        to_go = len(pending(surface_file.read_surface(config.output).done))
        lines.append(f"output   resumed: {grid.size - to_go} of {grid.size} points done")
    reuse = "computed now" if prepared.directions_are_new else "reused"
    lines.append(f"directions  {reuse}: {config.direction_file}")
    if prepared.selected is not None:  # directions.params: what it picked
        lines += prepared.selected.report()
    x, y = prepared.config.grid.x, prepared.config.grid.y  # 'auto' axes fitted by now
    shape = "x".join(str(n) for n in grid.shape)
    axes = f"x={x.spec}" + ("" if y is None else f"  y={y.spec}")
    lines.append(f"grid     {axes}  ({shape} points), {to_go} to evaluate")

    device = pick_device(config.evaluation.device)
    evaluator = load(prepared.worker_setup(), device)  # the load phase, as a worker runs it
    sizes = ", ".join(
        f"{name} {len(split)} examples{'' if split.cached else ' (streamed)'}"
        for name, split in evaluator.splits.items()
    )
    lines.append(f"data     {sizes}")
    lines.append(f"metrics  {', '.join(column.name for column in evaluator.columns)}")
    lines.append(_size_line(config, grid.size, len(evaluator.columns), resumed=state is False))
    weights = params.count(params.movable(prepared.model, include_buffers=False))
    threads = "" if device.type == "cuda" else f", {torch.get_num_threads()} threads"
    lines.append(
        f"model    {config.model.name}, {_count(weights)} parameters, on {device}{threads}"
    )
    lines += [f"network  {note}" for note in evaluator.notes]
    if evaluator.hessian is None:
        evaluator.evaluate(0.0, 0.0)  # warm-up: allocations, kernel selection, caches
        start = time.perf_counter()
        evaluator.evaluate(0.0, 0.0)
        per_point = time.perf_counter() - start
        lines.append(f"timing   {per_point:.3g} s per point here (after one warm-up point)")
    else:
        # A point's cost is its Hessian-vector products: the solve at θ* is timed once (after
        # one product as a warm-up) and stands for the others, which may need more or fewer.
        evaluator.hessian.matvec(_unit(evaluator.hessian.size, evaluator.device))
        start = time.perf_counter()
        values = evaluator.evaluate(0.0, 0.0)
        per_point = time.perf_counter() - start
        products = int(values["eig_products"])
        lines.append(
            f"timing   {per_point:.3g} s per point here: {products} Hessian-vector products "
            f"(at most {config.hessian.max_products}) reached λmax {values['max_eig']:.4g}, "
            f"λmin {values['min_eig']:.4g} at the origin"
        )
    lines += _durations(to_go, to_go * per_point)
    return lines, to_go, to_go * per_point


def _durations(points: int, seconds: float) -> list[str]:
    """`points` taking `seconds` of one worker's time, on 1, 4 and 16 workers."""
    lines = [
        f"         {points} points on {workers:>2} worker{'s' if workers > 1 else ' '}"
        f" ≈ {_duration(seconds / workers)}"
        for workers in WORKER_COUNTS
    ]
    lines.append("         (one worker per GPU; workers add up as long as each has its own)")
    return lines


def _size_line(config: SweepConfig, points: int, columns: int, resumed: bool) -> str:
    """What the surface takes in rank 0's memory and on disk, beside what there is."""
    memory, disk = capacity.surface_bytes(points, columns)
    available = capacity.available_memory()
    line = f"size     {capacity.format_bytes(memory)} in rank 0's memory"
    if available is not None:
        line += f" ({capacity.format_bytes(available)} available)"
    line += f", {capacity.format_bytes(disk)} on disk"
    if resumed:
        return line + " (the file exists)"
    free = capacity.free_disk(config.output)
    return line if free is None else line + f" ({capacity.format_bytes(free)} free)"


def _unit(size: int, device: torch.device) -> torch.Tensor:
    vector = torch.ones(size, dtype=torch.float64, device=device)
    return vector / vector.norm()


def _count(parameters: int) -> str:
    return f"{parameters / 1e6:.2f}M" if parameters >= 10_000 else str(parameters)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
