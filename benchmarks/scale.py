"""Benchmark: does the master keep up with hundreds of GPUs? A scale simulator.

The real master runs — lsurf.run.sweep's run loop on rank 0 with the real chunk protocol
(lsurf.run.mpi), the real chunk planner (lsurf.run.schedule) and the real surface file
(lsurf.files.surface) — against many worker ranks whose evaluator is replaced by a stub: each point
"takes" a chosen time (drawn around a mean with a spread, a few straggler ranks slower) spent
in time.sleep, so 64 or more workers fit on a 2-core machine (sleeping costs no CPU), and
values made up from the point's index, so the file can be checked point by point afterwards.
The stub workers import no torch; rank 0 prepares a real sweep of a tiny model (directions,
weight statistics) and sends the workers only the grid.

Printed per scenario:
- points/s the master sustained over the run loop, and its CPU seconds in it;
- the workers' idle fraction: 1 − time spent "evaluating" / time from their first chunk to
  the master's stop (waiting between chunks and for the others at the end);
- the makespan against the ideal (the stub's total evaluation time / workers);
- rank 0's peak memory (VmHWM) and what it held before the run loop (VmRSS), and the
  surface file's size;
- that every point holds its own made-up values and is done.

256 GPUs × 0.1 s points send the master 2,560 points/s; the simulator loads it the same way
with 64 ranks × 0.025 s points (the master sees only the rate), and prints the arithmetic
from its measured cost per point for other sizes.

Run: .venv/bin/python benchmarks/scale.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MPIEXEC = Path(sys.executable).with_name("mpiexec")
TAG_STATS = 99  # after the sweep: each stub worker's busy and ready-to-stop seconds


@dataclass(frozen=True)
class StubSetup:
    """What rank 0 sends the stub workers instead of a model: the grid and the stub's law."""

    grid: object  # lsurf.grid.Grid
    seconds: float  # mean evaluation time per point
    spread: float  # lognormal sigma of a point's time around the mean
    stragglers: int  # this many ranks (the last ones) take STRAGGLER_FACTOR × longer
    columns: list


STRAGGLER_FACTOR = 3.0


def made_up(index: np.ndarray) -> dict[str, np.ndarray]:
    """The stub's values at flat indices: distinct per point and column, checkable later."""
    base = index.astype(np.float64)
    return {
        "train_loss": base * 1e-6,
        "train_acc": base % 100,
        "test_loss": base * 2e-6,
        "test_acc": (base + 1) % 100,
    }


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------- inside mpiexec


def stub_worker(session) -> None:
    """A worker rank: the real protocol, evaluation replaced by sleeping."""
    setups: list[StubSetup] | None = session.receive_setup()
    if setups is None:
        return
    from lsurf.run.protocol import Ready

    session.report_ready(Ready([setup.columns for setup in setups], [[] for _ in setups]))
    rng = np.random.default_rng(session.rank)
    slow = STRAGGLER_FACTOR if session.rank > session.size - 1 - setups[0].stragglers else 1.0
    busy, first = 0.0, None
    for sweep, chunk in session.chunks():
        setup = setups[sweep]  # several sweeps: each with its own time per point
        first = first or time.perf_counter()
        seconds = 0.0
        if setup.seconds > 0:
            draws = rng.lognormal(-0.5 * setup.spread**2, setup.spread, len(chunk))
            seconds = float(slow * setup.seconds * draws.sum())
            time.sleep(seconds)
        busy += seconds
        session.send_result(sweep, chunk, made_up(chunk), seconds)
    # From its first chunk to the master's stop: waiting between chunks and at the end, while
    # others finish, counts as idle; the start-up before the first chunk (set-up, the other
    # ranks' set-up, creating the file) does not, the launch-to-end line shows it.
    span = 0.0 if first is None else time.perf_counter() - first
    session.comm.send((busy, span), dest=0, tag=TAG_STATS)


def master(
    session, config_paths: list[Path], seconds: list[float], law: dict, report: Path, chunk: int
) -> None:
    from lsurf.run import phases, schedule, sweep

    if chunk:  # the message-cost scenario: every chunk this many points
        schedule.MAX_POINTS = chunk
    from lsurf.config import load_sweep_config
    from lsurf.metrics import columns

    configs = [load_sweep_config(path) for path in config_paths]
    cost = {config.output: cost for config, cost in zip(configs, seconds, strict=True)}

    # The workers get the grid and the stub's law instead of θ*, the data and directions.
    def light_setup(prepared):
        return StubSetup(
            grid=prepared.grid,
            columns=columns(["train", "test"]),
            seconds=cost[prepared.config.output],
            **law,
        )

    phases.Prepared.worker_setup = light_setup
    sweep._run_master(configs, True, session, lambda line: None, None, phases.FROM_CONFIG)
    stats = [session.comm.recv(source=worker, tag=TAG_STATS) for worker in session.workers]
    results = {
        "points": session.points,
        "wall": session.wall,
        "cpu": session.cpu,
        "rss_before_mib": session.rss_before / 1024,
        "peak_mib": vm_kib("VmHWM") / 1024,
        "busy": [busy for busy, _ in stats],
        "span": [span for _, span in stats],
    }
    report.write_bytes(pickle.dumps(results))


def measured_session():
    """The real session (one per process: its constructor is collective), timing its run
    loop (serve) in wall and CPU seconds on rank 0."""
    import resource

    from lsurf.run import mpi

    class MeasuredSession(mpi.Session):
        def serve(self, todo, record, stop_when, on_stop=lambda: None) -> None:
            self.rss_before = vm_kib("VmRSS")
            cpu = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            super().serve(todo, record, stop_when, on_stop)
            self.wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_SELF)
            self.cpu = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
            self.points = sum(len(points) for points in todo)

    return MeasuredSession()


def inner(arguments: list[str]) -> None:

    configs, report, seconds, spread, stragglers, chunk = arguments
    session = measured_session()
    if session.is_master:
        paths = [Path(path) for path in configs.split(",")]
        costs = [float(cost) for cost in seconds.split(",")]
        law = {"spread": float(spread), "stragglers": int(stragglers)}
        master(session, paths, costs, law, Path(report), int(chunk))
    else:
        stub_worker(session)


# ---------------------------------------------------------------------------- the driver


def prepare_inputs(folder: Path) -> Path:
    """A tiny real sweep for rank 0 to prepare: synthetic CIFAR data and a convnet_small."""
    import torch

    from lsurf import models
    from lsurf.checkpoint import save_checkpoint
    from lsurf.data.synthetic import write_synthetic

    write_synthetic(folder / "data", train_size=64, test_size=64)
    torch.manual_seed(0)
    save_checkpoint(folder / "model.pt", models.build("convnet_small").state_dict())
    return folder / "model.pt"


def write_config(folder: Path, name: str, side: int) -> Path:
    import yaml

    config = {
        "model": {"name": "convnet_small", "checkpoint": str(folder / "model.pt")},
        "data": {"root": str(folder / "data"), "splits": ["train", "test"]},
        "grid": {"x": f"-1:1:{side}", "y": f"-1:1:{side}"},
        "output": str(folder / f"{name}.h5"),
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_scenario(
    folder: Path,
    name: str,
    workers: int,
    side: int | list[int],
    seconds: float | list[float],
    spread: float = 0.0,
    stragglers: int = 0,
    chunk: int = 0,
) -> dict:
    """One job; with lists of sides and seconds, one job of that many sweeps (one queue)."""
    sides = side if isinstance(side, list) else [side]
    costs = seconds if isinstance(seconds, list) else [seconds]
    names = [name] if len(sides) == 1 else [f"{name}{index}" for index in range(len(sides))]
    configs = [write_config(folder, own, n) for own, n in zip(names, sides, strict=True)]
    report = folder / f"{name}.pickle"
    command = [str(MPIEXEC), "-n", str(workers + 1), sys.executable, __file__, "--inner"]
    command += [",".join(map(str, configs)), str(report), ",".join(map(str, costs))]
    command += [str(spread), str(stragglers), str(chunk)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    results = pickle.loads(report.read_bytes())
    results["launch_to_end"] = time.perf_counter() - started
    results["size_mib"] = sum((folder / f"{own}.h5").stat().st_size for own in names) / 2**20
    checks = {check_file(folder / f"{own}.h5") for own in names}
    results["check"] = checks.pop() if len(checks) == 1 else "; ".join(sorted(checks))
    return results


def check_file(path: Path) -> str:
    from lsurf.files.surface import read_surface

    surface = read_surface(path)
    index = np.arange(surface.done.size).reshape(surface.done.shape)
    expected = made_up(index)
    wrong = sum(int((surface.metrics[name] != values).sum()) for name, values in expected.items())
    return (
        "all points done, every value right"
        if surface.done.all() and not wrong
        else (f"{int((~surface.done).sum())} points not done, {wrong} values wrong")
    )


def show(name: str, workers: int, seconds: float, results: dict) -> float:
    points, wall = results["points"], results["wall"]
    busy, span = np.array(results["busy"]), np.array(results["span"])
    idle = 1 - busy.sum() / span.sum()
    ideal = busy.sum() / workers
    print(f"\n{name}: {workers} workers, {points:,} points, {seconds * 1e3:g} ms a point")
    print(f"  master sustained   {points / wall:,.0f} points/s over {wall:.1f} s")
    per_point = results["cpu"] / points * 1e6
    print(f"  master CPU         {results['cpu']:.1f} s ({per_point:.1f} µs/point)")
    if seconds > 0:
        print(f"  workers idle       {100 * idle:.1f}% of their time from first chunk to stop")
        print(f"  makespan           {wall:.1f} s vs ideal {ideal:.1f} s ({wall / ideal:.3f}×)")
    print(
        f"  rank 0 memory      peak {results['peak_mib']:.0f} MiB "
        f"({results['rss_before_mib']:.0f} MiB before the run loop: Python, torch, θ*)"
    )
    print(f"  surface file       {results['size_mib']:.1f} MiB; {results['check']}")
    print(f"  launch to end      {results['launch_to_end']:.1f} s")
    return results["cpu"] / points


def several(folder: Path, workers: int, side: int) -> None:
    """Three sweeps of unlike cost (a figure's panels): one job through one queue, against
    the same three as three jobs one after another."""
    costs = [0.01, 0.04, 0.02]
    law = {"spread": 0.3, "stragglers": 2}
    together = run_scenario(folder, "many", workers, [side] * 3, costs, **law)
    apart = [
        run_scenario(folder, f"apart{index}", workers, side, cost, **law)
        for index, cost in enumerate(costs)
    ]
    title = ", ".join(f"{cost * 1e3:g}" for cost in costs)
    print(f"\nthree sweeps of {side}×{side} points, {title} ms a point (spread 0.3, 2 stragglers)")
    print(f"  {'':24} {'run loop':>9} {'ideal':>7} {'ratio':>6} {'idle':>6} {'launch to end':>14}")
    rows = [("one job, one queue", [together]), ("three jobs, one by one", apart)]
    for label, runs in rows:
        wall = sum(run["wall"] for run in runs)
        busy = sum(sum(run["busy"]) for run in runs)
        span = sum(sum(run["span"]) for run in runs)
        ideal = busy / workers
        launch = sum(run["launch_to_end"] for run in runs)
        print(
            f"  {label:24} {wall:>8.1f}s {ideal:>6.1f}s {wall / ideal:>5.3f}× "
            f"{100 * (1 - busy / span):>5.1f}% {launch:>13.1f}s"
        )
    checks = {run["check"] for run in [together, *apart]}
    print(f"  files: {'; '.join(sorted(checks))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="smaller grids (CI-sized)")
    parser.add_argument("--inner", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.inner)
        return
    side_free, side_load = (201, 71) if args.quick else (1001, 201)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        prepare_inputs(folder)
        free = run_scenario(folder, "free", args.workers, side_free, 0.0)
        point_cost = show("near-zero-cost points", args.workers, 0.0, free)
        single = run_scenario(folder, "single", args.workers, side_load, 0.0, chunk=1)
        message_cost = show("one-point chunks (a message per point)", args.workers, 0.0, single)
        loaded = run_scenario(folder, "loaded", args.workers, side_load, 0.025, 0.3, 2)
        show(
            "256 GPUs × 0.1 s, as 64 ranks × 25 ms (2 stragglers 3× slower, spread 0.3)",
            args.workers,
            0.025,
            loaded,
        )
        several(folder, args.workers, 31 if args.quick else 101)
    # Each GPU returns one chunk of about schedule.TARGET_SECONDS of its work at a time, so the
    # master handles GPUs / TARGET_SECONDS messages per second, besides its cost per point.
    from lsurf.run.schedule import TARGET_SECONDS

    print("\nBy arithmetic: master busy = messages/s × m + points/s × p, with messages/s =")
    print(f"GPUs / {TARGET_SECONDS:g} s (a chunk is about that much of a GPU's work), the cost of")
    print(f"a message m = {message_cost * 1e6:.0f} µs (one-point chunks) and of a point")
    print(f"p = {point_cost * 1e6:.1f} µs (near-zero-cost points in the largest chunks):")
    for gpus, seconds in [(256, 0.1), (1024, 0.1), (256, 0.01), (1024, 0.01)]:
        rate = gpus / seconds
        busy = 100 * (gpus / TARGET_SECONDS * message_cost + rate * point_cost)
        print(f"  {gpus:>5} GPUs × {seconds:g} s: {rate:>9,.0f} points/s, master busy {busy:.1f}%")


if __name__ == "__main__":
    main()
