"""Benchmark: distributed sweep throughput with 1, 2 and 3 ranks, and the protocol's overhead.

Part 1 runs the same ResNet-20 sweep serially (one process, all cores) and under
`mpiexec -n R python -m mpi4py -m lsurf sweep` for R = 1, 2, 3, with a progress line per
point (`--log-every 1`) timestamped as it arrives: points/s is measured from the first
finished point to the last, so start-up (imports, data, directions, MPI start) is not
counted. Each layout runs `--rounds` times, in turn, and keeps its best round (load from
elsewhere on a shared machine only slows runs down). With R ranks, rank 0 is the polling
master and R − 1 are workers with cores / workers threads each.

Part 2 measures the protocol alone: rank 0 serves the chunks its planner sizes (one point
each until the first come back, then as large as free points allow) to workers that answer
at once with made-up values (no model at all), so the seconds per point it reports are the
messaging and polling cost per point, an upper bound of what the protocol adds to a real point,
printed as a fraction of the real point's compute time from part 1. benchmarks/scale.py
measures the whole master (the surface writer included) with many simulated workers.

Run: .venv/bin/python benchmarks/mpi_scaling.py [--subset 1000] [--points 16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MPIEXEC = Path(sys.executable).with_name("mpiexec")


PROGRESS = re.compile(r"^(\d+)/\d+ points")


def points_per_second(ranks: int, config: Path, points: int, output: Path) -> float:
    """Run one sweep; its rate from the first to the last point, as seen by rank 0."""
    lsurf = [sys.executable, "-m", "lsurf"]
    if ranks:
        lsurf = [str(MPIEXEC), "-n", str(ranks), sys.executable, "-m", "mpi4py", "-m", "lsurf"]
    command = [*lsurf, "sweep", str(config), "--log-every", "1"]
    command += ["--set", f"grid.x=-1:1:{points}", "--set", f"output={output}"]
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert process.stderr is not None
    stamps = []
    for line in process.stderr:
        if match := PROGRESS.match(line):
            stamps.append((time.perf_counter(), int(match.group(1))))
    if process.wait() != 0 or len(stamps) < 2:
        sys.exit(f"benchmark run failed: {' '.join(command)}")
    (first_time, first_done), (last_time, last_done) = stamps[0], stamps[-1]
    return (last_done - first_done) / (last_time - first_time)


def bare_main(root: Path, threads: int, seconds: float) -> None:
    """Runs as its own process: images/s of a bare ResNet-20 forward loop, no lsurf machinery."""
    import torch

    from lsurf import models
    from lsurf.data.cifar import load_split
    from lsurf.data.layouts import REFERENCE_MEAN, REFERENCE_STD

    torch.set_num_threads(threads)
    split = load_split(root, "train", REFERENCE_MEAN, REFERENCE_STD)
    model = models.build("resnet20").to(memory_format=torch.channels_last).eval()
    images = split.images.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(images[:250])
        started, count = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            for start in range(0, len(images), 250):
                model(images[start : start + 250])
            count += len(images)
    print(f"{count / (time.perf_counter() - started):.1f}")


def bare_images_per_second(root: Path, processes: int, threads: int, seconds: float) -> float:
    """Total images/s of `processes` concurrent bare loops with `threads` threads each."""
    command = [sys.executable, __file__, "--bare", str(root), str(threads), str(seconds)]
    running = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)
    ]
    return sum(float(process.communicate()[0].strip()) for process in running)


def protocol_main(points: int) -> None:
    """Runs inside mpiexec: the chunk protocol with workers that do no work at all."""
    import numpy as np

    from lsurf.run.mpi import Session

    session = Session()
    if session.is_master:
        session.send_setup(["go"])
        session.gather_ready(lambda: False)
        started = time.perf_counter()
        todo = np.arange(points, dtype=np.int64)
        session.serve([todo], lambda sweep, chunk, values: None, lambda: False)
        elapsed = time.perf_counter() - started
        session.stop_workers(0)
        print(f"{elapsed / points:.6f}")
    else:
        session.receive_setup()
        session.report_ready(None)
        for sweep, chunk in session.chunks():
            session.send_result(sweep, chunk, {"train_loss": [0.0] * len(chunk)}, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", type=int, default=1000, help="images evaluated per point")
    parser.add_argument("--points", type=int, default=16, help="points per sweep")
    parser.add_argument("--rounds", type=int, default=2, help="best of this many runs each")
    parser.add_argument("--protocol-points", type=int, default=2000)
    parser.add_argument("--protocol", type=int, help=argparse.SUPPRESS)  # inside mpiexec
    parser.add_argument("--bare", nargs=3, help=argparse.SUPPRESS)  # one bare-loop process
    args = parser.parse_args()
    if args.protocol:
        protocol_main(args.protocol)
        return
    if args.bare:
        bare_main(Path(args.bare[0]), int(args.bare[1]), float(args.bare[2]))
        return

    import torch
    import yaml

    from lsurf import models
    from lsurf.checkpoint import save_checkpoint
    from lsurf.data.synthetic import write_synthetic

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        write_synthetic(folder, train_size=args.subset, test_size=10)
        torch.manual_seed(0)
        save_checkpoint(folder / "model.pt", models.build("resnet20").state_dict())
        config = folder / "sweep.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "model": {"name": "resnet20", "checkpoint": str(folder / "model.pt")},
                    "data": {
                        "root": str(folder),
                        "splits": ["train"],
                        "batch_size": 250,
                        "subset": args.subset,
                    },
                    "grid": {"x": "-1:1:2"},
                    "output": str(folder / "unused.h5"),
                }
            )
        )
        cores = len(os.sched_getaffinity(0))
        print(
            f"resnet20, {args.subset} images per point, {cores} cores; "
            f"{args.points}-point sweeps, best of {args.rounds}"
        )
        rates: dict[int, float] = {}
        for round_number in range(args.rounds):
            for ranks in (0, 1, 2, 3):
                output = folder / f"round{round_number}_ranks{ranks}.h5"
                rate = points_per_second(ranks, config, args.points, output)
                rates[ranks] = max(rates.get(ranks, 0.0), rate)
        for ranks, rate in rates.items():
            label = "serial (1 process)" if ranks == 0 else f"mpiexec -n {ranks}"
            print(f"{label:20s} {rate:6.2f} points/s  {rate * args.subset:7.0f} images/s")
        print(
            f"speed-up of 2 workers + master (-n 3) over one process: "
            f"{rates[3] / rates[0]:.2f}x  (target >= 1.2)"
        )
        # The machine's own ceiling for that speed-up: bare loops, no lsurf, no MPI.
        one = bare_images_per_second(folder, 1, cores, 15.0)
        split = bare_images_per_second(folder, cores, 1, 15.0)
        print(
            f"bare loops: 1 process x {cores} threads {one:.0f} images/s, {cores} processes x "
            f"1 thread {split:.0f} images/s: ceiling {split / one:.2f}x"
        )

        overhead = float(
            subprocess.run(
                [
                    str(MPIEXEC),
                    "-n",
                    "3",
                    sys.executable,
                    "-m",
                    "mpi4py",
                    __file__,
                    "--protocol",
                    str(args.protocol_points),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        compute = 2 / rates[3]  # seconds of one point on one of the two workers
        print(
            f"protocol alone: {overhead * 1e3:.3f} ms per point with 2 idle workers; "
            f"{100 * overhead / compute:.3f}% of a point's compute ({compute:.3f} s) "
            "(target < 1%)"
        )


if __name__ == "__main__":
    main()
