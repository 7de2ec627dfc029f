"""The GPU check for the first device lent to the project (issue 24, part 3): one run of at most
eight minutes that says whether lsurf works on the GPU and how fast the headline plane is.

benchmarks/gpu_check.sh picks the Python (the install step) and runs this file. Steps, in order,
each under its own time budget (a step past its budget gets SIGTERM, then SIGKILL, and is
reported as cut; the run goes on with the next step):

- device: nvidia-smi, torch's version and CUDA build, the device's name (a failure in the CUDA
  mode where torch sees no CUDA device);
- cuda-tests: tests/test_cuda.py (fp32 CUDA against the CPU, a streamed split read from pinned
  memory through non-blocking copies against the cached one, bf16/TF32 error table, compile);
- data: synthetic CIFAR-10 in the real file layout (`lsurf data synth`, the 50,000-image train
  split) and a seeded random-init checkpoint of the timed model. The per-point cost depends on
  neither the pixel values nor the weights;
- mpi: a small sweep under `mpiexec -n 2` (rank 0 the master, rank 1 the worker on the GPU)
  compared with the same sweep run serially, bit for bit (`lsurf compare --rtol 0`). The
  launcher is `--mpiexec PATH`, else .venv/bin/mpiexec, the one beside this Python, `mpiexec`
  on PATH, or the mpich wheel carried in .whl/ (installed under the work folder); with none the
  step is skipped and the report says so;
- timing-fp32, timing-tf32, timing-bf16: `lsurf sweep` of a 51x51 plane of ResNet-56 over the
  whole train split, stopped by SIGTERM once it has run a window of points. Its progress lines
  (`--log-every 1`) are timestamped as they arrive: the per-point rate is taken between the
  first finished point and the last, so start-up (imports, model build, data load, probe,
  folding, the first point's warm-up) is not in it; start-up is the time to the first point
  less one point at that rate. Extrapolated: minutes = (start-up + rate x 2601) / 60, held
  against the goals (fp32 10 minutes, tf32 and bf16 3).

Output: OUT/gpu-check-report.md (every step's result, time and the end of its log, the figures
the CUDA tests printed, the timing table) and OUT/gpu-check-logs.txt (the steps' logs);
scratch (data, checkpoints, surfaces, per-step logs) in --work (default OUT/gpu-check-work),
which a device run points outside OUT. Exit code 0 when no step failed (a skipped step is no
failure), 1 otherwise.

--cpu runs the same steps on the CPU at tiny sizes (tests/test_gpu_check.py runs it);
--plan prints the steps and their budgets; --steps A,B runs only those. Test hooks:
LSURF_GPU_CHECK_FAIL=STEP fails that step without running it; LSURF_GPU_CHECK_HANG=STEP
replaces it with a command that ignores SIGTERM, under a 2 s budget (the timeout path).

This file imports no torch: the orchestration must not cost what it measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
REPORT_NAME = "gpu-check-report.md"
LOGS_NAME = "gpu-check-logs.txt"
WORK_MARK = ".lsurf-gpu-check"  # in a work folder this check made, which a rerun may empty
PLANE_POINTS = 51 * 51  # the headline plane
GOAL_MINUTES = {"fp32": 10.0, "tf32": 3.0, "bf16": 3.0}  # the goals on one H100
TOTAL_BUDGET = 480.0  # one device call: 8 minutes, leaving room for the machine's start
KILL_GRACE = 5.0  # seconds between a step's SIGTERM and its SIGKILL, inside its budget
HANG_BUDGET = 2.0  # the budget of a step that LSURF_GPU_CHECK_HANG replaces
MIN_TIMED_POINTS = 3  # points after the first that a rate needs
TAIL_LINES = 25  # of each step's log, in the report
FIGURE_PREFIX = "gpu-check: "  # what the CUDA tests print their figures behind
PROGRESS = re.compile(r"^(?P<done>\d+)/(?P<total>\d+) points \(")  # lsurf.run.progress's line
EXIT_PREEMPTED = 143  # lsurf sweep's exit code after SIGTERM (lsurf.run.sweep.EXIT_PREEMPTED)


@dataclass(frozen=True)
class Sizes:
    """What one mode runs: the device, the timed model and data, the budgets."""

    device: str  # evaluation.device
    model: str  # the timed model (and the MPI comparison's)
    train_size: int  # train examples written by the data step (the timing's split, whole)
    batch_size: int
    mpi_subset: int  # train examples of the MPI comparison
    mpi_grid: str  # grid.x and grid.y of the MPI comparison
    precisions: tuple[str, ...]  # timed
    budgets: dict[str, float]  # step -> seconds
    windows: dict[str, float] = field(default_factory=dict)  # timing step -> seconds of points


CUDA = Sizes(
    device="cuda",
    model="resnet56",
    train_size=50_000,
    batch_size=1000,
    mpi_subset=2000,
    mpi_grid="-1:1:5",
    precisions=("fp32", "tf32", "bf16"),
    # 470 s, leaving 10 s of the 480 to the install step and this script. Compile in the CUDA
    # tests is the longest part; each timing step leaves 35 s of its budget to start-up (the
    # imports, the 50,000 images read and normalized: 3 s of CPU time on the dev machine).
    budgets={
        "device": 20,
        "cuda-tests": 145,
        "data": 45,
        "mpi": 75,
        "timing-fp32": 75,
        "timing-tf32": 55,
        "timing-bf16": 55,
    },
    windows={"timing-fp32": 40, "timing-tf32": 20, "timing-bf16": 20},
)
# On the CPU the check tests itself: the same steps, a network that takes milliseconds per point,
# fp32 only (tf32 and bf16 rows come from the same code).
CPU = Sizes(
    device="cpu",
    model="convnet_small",
    train_size=256,
    batch_size=128,
    mpi_subset=64,
    mpi_grid="-1:1:3",
    precisions=("fp32",),
    budgets={"device": 30, "cuda-tests": 60, "data": 30, "mpi": 90, "timing-fp32": 45},
    windows={"timing-fp32": 1.0},
)


# --- the timing arithmetic ------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """One timed sweep: how long a point takes once running, and what came before."""

    precision: str
    timed_points: int  # finished after the first point, at the steady rate
    seconds_per_point: float
    startup_seconds: float  # launch to the first point, less one point at the rate

    @property
    def plane_minutes(self) -> float:
        """The 51x51 plane's points alone: rate x 2601 / 60."""
        return self.seconds_per_point * PLANE_POINTS / 60

    @property
    def total_minutes(self) -> float:
        """What a user waits for the plane: start-up and its 2601 points."""
        return (self.startup_seconds + self.seconds_per_point * PLANE_POINTS) / 60

    @property
    def goal_minutes(self) -> float:
        return GOAL_MINUTES[self.precision]

    @property
    def met(self) -> bool:
        return self.total_minutes <= self.goal_minutes


def progress_stamps(lines: Sequence[tuple[float, str]]) -> list[tuple[float, int]]:
    """(arrival time, points done) of each progress line among timestamped log lines."""
    stamps = []
    for arrived, line in lines:
        match = PROGRESS.match(line.strip())
        if match:
            stamps.append((arrived, int(match["done"])))
    return stamps


def timing_from(precision: str, launched: float, stamps: Sequence[tuple[float, int]]) -> Timing:
    """The steady per-point rate between the first progress line and the last, and the
    start-up before it. Raises ValueError when fewer than MIN_TIMED_POINTS came after the first."""
    if not stamps or stamps[-1][1] - stamps[0][1] < MIN_TIMED_POINTS:
        done = stamps[-1][1] if stamps else 0
        raise ValueError(
            f"{done} points finished; a rate needs {MIN_TIMED_POINTS} after the first "
            "(give the step a longer window)"
        )
    (first_time, first_done), (last_time, last_done) = stamps[0], stamps[-1]
    rate = (last_time - first_time) / (last_done - first_done)
    startup = first_time - launched - rate * first_done
    return Timing(precision, last_done - first_done, rate, startup)


TIMING_HEADER = [
    "| precision | points timed | s/point | start-up (s) | minutes for 2601 points "
    "| minutes with start-up | goal (min) | verdict |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
]


def timing_row(timing: Timing) -> str:
    return (
        f"| {timing.precision} | {timing.timed_points} | {timing.seconds_per_point:.4f} "
        f"| {timing.startup_seconds:.1f} | {timing.plane_minutes:.2f} "
        f"| {timing.total_minutes:.2f} | {timing.goal_minutes:g} "
        f"| {'met' if timing.met else 'missed'} |"
    )


# --- the timed sweep (a step's command: this file with --time-sweep) --------------------------


def time_sweep(config: Path, precision: str, window: float, stop_by: float, result: Path) -> int:
    """Run `lsurf sweep CONFIG --log-every 1`, echo its lines with their arrival times, stop it
    with SIGTERM `window` seconds after its first point (or `stop_by` seconds after launch,
    whichever is first), and write the Timing as JSON to `result`. Exit code 0 with a timing."""
    launched = time.monotonic()
    sweep = subprocess.Popen(
        [sys.executable, "-m", "lsurf", "sweep", str(config), "--log-every", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    assert sweep.stdout is not None
    arrivals: queue.Queue[tuple[float, str] | None] = queue.Queue()

    def read(stream: IO[str]) -> None:  # a thread: lines with their arrival time, then None
        for line in stream:
            arrivals.put((time.monotonic(), line.rstrip("\n")))
        arrivals.put(None)

    threading.Thread(target=read, args=(sweep.stdout,), daemon=True).start()
    lines: list[tuple[float, str]] = []
    stop_at = launched + stop_by
    stopped = first_point = False
    while True:
        if not stopped and time.monotonic() >= stop_at:
            sweep.send_signal(signal.SIGTERM)  # lsurf saves the point in flight and exits
            stopped = True
        try:
            # After the SIGTERM: whatever the sweep still says, up to the end of its output.
            wait = None if stopped else max(0.0, stop_at - time.monotonic())
            item = arrivals.get(timeout=wait)
        except queue.Empty:
            continue  # the deadline: the sweep is stopped at the top of the loop
        if item is None:
            break  # the sweep closed its output: it has finished or stopped
        arrived, line = item
        lines.append(item)
        print(f"{arrived - launched:9.3f} {line}", flush=True)
        if not first_point and PROGRESS.match(line.strip()):
            first_point = True
            stop_at = min(stop_at, arrived + window)
    code = sweep.wait()
    if code not in (0, EXIT_PREEMPTED):
        print(f"lsurf sweep exited with {code}", flush=True)
        return 1
    try:
        timing = timing_from(precision, launched, progress_stamps(lines))
    except ValueError as error:
        print(f"no timing: {error}", flush=True)
        return 1
    result.write_text(json.dumps(dataclasses.asdict(timing)))
    print(timing_row(timing), flush=True)
    return 0


# --- steps --------------------------------------------------------------------------------


@dataclass
class Step:
    name: str
    budget: float
    commands: list[list[str]]  # run in order, all inside the budget
    env: dict[str, str] = field(default_factory=dict)
    skip_reason: str = ""  # non-empty: not run, and no failure
    result: str = "not run"
    seconds: float = 0.0
    failed: bool = False


def run_step(step: Step, log: Path) -> None:
    """Run the step's commands in order under one deadline; set its result."""
    started = time.monotonic()
    deadline = started + step.budget
    grace = min(KILL_GRACE, step.budget / 4)
    if os.environ.get("LSURF_GPU_CHECK_FAIL") == step.name:
        log.write_text(f"injected failure (LSURF_GPU_CHECK_FAIL={step.name})\n")
        step.result, step.failed = "FAIL (injected)", True
        return
    with log.open("w") as output:
        for command in step.commands:
            output.write(f"$ {' '.join(command)}\n")
            output.flush()
            # A session of its own: the timeout reaches its children too (mpiexec's ranks, a
            # timed sweep), and nothing of it outlives the step.
            process = subprocess.Popen(
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, **step.env},
                start_new_session=True,
            )
            try:
                code = process.wait(timeout=max(0.0, deadline - grace - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGTERM)
                try:
                    process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    _signal_group(process, signal.SIGKILL)
                    process.wait()
                _signal_group(process, signal.SIGKILL)  # whatever of its group is left
                step.seconds = time.monotonic() - started
                output.write(f"\ncut: past the step's budget of {step.budget:g} s\n")
                step.result, step.failed = f"TIMEOUT (cut at {step.budget:g} s)", True
                return
            if code != 0:
                step.seconds = time.monotonic() - started
                step.result, step.failed = f"FAIL (exit {code})", True
                return
    step.seconds = time.monotonic() - started
    step.result = "pass"


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass  # the group is gone already


@dataclass(frozen=True)
class Launcher:
    mpiexec: str
    found: str  # where, for the report
    env: dict[str, str] = field(default_factory=dict)
    install: list[str] = field(default_factory=list)  # a command that puts mpiexec in place


def find_launcher(choice: str | None, work: Path) -> Launcher | str:
    """The MPI launcher for the mpi step, or the reason there is none."""
    if choice == "none":
        return "--mpiexec none"
    if choice:
        return Launcher(choice, "--mpiexec")
    for candidate, where in (
        (REPO / ".venv" / "bin" / "mpiexec", ".venv/bin/mpiexec"),
        (Path(sys.executable).with_name("mpiexec"), "beside this Python"),
    ):
        if candidate.exists():
            return Launcher(str(candidate), where)
    on_path = shutil.which("mpiexec")
    if on_path:
        return Launcher(on_path, "on PATH")
    wheels = sorted((REPO / ".whl").glob("mpich-*.whl"))
    if wheels:
        # The mpich wheel is no Python package: its mpiexec and libmpi install under a prefix
        # (bin/, lib/), and mpi4py finds the library through MPI4PY_LIBMPI.
        prefix = work / "mpich"
        install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
        install += ["--no-compile", "--prefix", str(prefix), str(wheels[-1])]
        env = {"MPI4PY_LIBMPI": str(prefix / "lib")}
        return Launcher(
            str(prefix / "bin" / "mpiexec"), f"the wheel {wheels[-1].name}", env, install
        )
    return (
        "no MPI launcher: no .venv/bin/mpiexec, none beside this Python or on PATH, and no "
        "mpich wheel in .whl/ (see the header of benchmarks/gpu_check.sh)"
    )


def sweep_config(
    sizes: Sizes, work: Path, grid: str, precision: str, output: Path, subset: int | None
) -> dict:
    data: dict = {"root": str(work / "data"), "splits": ["train"], "batch_size": sizes.batch_size}
    if subset is not None:
        data["subset"] = subset
    return {
        "model": {"name": sizes.model, "checkpoint": str(work / "model.pt")},
        "data": data,
        "directions": {"kind": "random", "norm": "filter", "ignore": "biasbn", "seed": 0},
        "grid": {"x": grid, "y": grid},
        "evaluation": {"device": sizes.device, "precision": precision},
        "output": str(output),
    }


def plan_steps(
    sizes: Sizes, work: Path, launcher: Launcher | str
) -> tuple[list[Step], dict[Path, dict]]:
    """Every step of a run, with its commands, and the sweep configs they read (path -> config,
    written into `work` before the run)."""
    python = sys.executable
    lsurf = [python, "-m", "lsurf"]
    budgets = sizes.budgets
    steps = [
        Step(
            "device",
            budgets["device"],
            [
                ["bash", "-c", "nvidia-smi || echo 'nvidia-smi: not found'"],
                [python, "-c", DEVICE_REPORT, sizes.device],  # fails in the CUDA mode without one
            ],
        ),
        Step(
            "cuda-tests",
            budgets["cuda-tests"],
            [
                [
                    python,
                    "-m",
                    "pytest",
                    "-q",
                    "-s",
                    "-rs",
                    "-p",
                    "no:cacheprovider",
                    # test_cuda needs none of conftest's fixtures, nor the test extras it imports.
                    "--noconftest",
                    "tests/test_cuda.py",
                ]
            ],
        ),
        Step(
            "data",
            budgets["data"],
            [
                [*lsurf, "data", "synth", "--out", str(work / "data"), "--train-size"]
                + [str(sizes.train_size), "--test-size", "100"],
                [
                    python,
                    "-c",
                    CHECKPOINT.format(model=repr(sizes.model), path=repr(str(work / "model.pt"))),
                ],
            ],
        ),
    ]
    mpi_config = work / "mpi.yaml"
    serial, parallel = work / "mpi-serial.h5", work / "mpi-2ranks.h5"
    configs = {
        mpi_config: sweep_config(sizes, work, sizes.mpi_grid, "fp32", serial, sizes.mpi_subset)
    }
    if isinstance(launcher, str):
        steps.append(Step("mpi", budgets["mpi"], [], skip_reason=launcher))
    else:
        steps.append(
            Step(
                "mpi",
                budgets["mpi"],
                [
                    *([launcher.install] if launcher.install else []),
                    [*lsurf, "sweep", str(mpi_config)],
                    [launcher.mpiexec, "-n", "2", python, "-m", "mpi4py", "-m", "lsurf", "sweep"]
                    + [str(mpi_config), "--set", f"output={parallel}"],
                    [*lsurf, "compare", str(parallel), str(serial), "--rtol", "0"],
                ],
                # Open MPI refuses root (the device machine's user) unless told; MPICH ignores it.
                env={
                    **launcher.env,
                    "OMPI_ALLOW_RUN_AS_ROOT": "1",
                    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                },
            )
        )
    for precision in sizes.precisions:
        name = f"timing-{precision}"
        config = work / f"{name}.yaml"
        output = work / f"{name}.h5"
        configs[config] = sweep_config(sizes, work, "-1:1:51", precision, output, None)
        window = sizes.windows[name]
        # The sweep is stopped early enough for its last point and exit to fit the budget.
        stop_by = budgets[name] - KILL_GRACE - 5
        command = [python, str(Path(__file__).resolve()), "--time-sweep", str(config)]
        command += [
            "--precision",
            precision,
            "--window",
            f"{window:g}",
            "--stop-by",
            f"{stop_by:g}",
        ]
        command += ["--result", str(work / f"{name}.json")]
        steps.append(Step(name, budgets[name], [command]))
    return steps, configs


DEVICE_REPORT = """
import sys
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    properties = torch.cuda.get_device_properties(0)
    print("device", torch.cuda.get_device_name(0), properties.multi_processor_count, "SMs",
          round(properties.total_memory / 2**30, 1), "GiB")
else:
    print("device cpu (no CUDA device)")
if sys.argv[1:] == ["cuda"] and not torch.cuda.is_available():
    sys.exit("no CUDA device: the check needs one (--cpu runs its CPU mode)")
"""
CHECKPOINT = """
import torch
from lsurf import models
torch.manual_seed(0)
torch.save(models.build({model}).state_dict(), {path})
"""


# --- the report ---------------------------------------------------------------------------


def tail(path: Path, count: int = TAIL_LINES) -> list[str]:
    if not path.exists():
        return []
    return path.read_text(errors="replace").splitlines()[-count:]


def figures(log: Path) -> list[str]:
    """What the CUDA tests printed behind FIGURE_PREFIX (pytest -q may put a dot before it)."""
    if not log.exists():
        return []
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if FIGURE_PREFIX in line:
            found.append(line.split(FIGURE_PREFIX, 1)[1])
    return found


def report_text(
    sizes: Sizes,
    steps: Sequence[Step],
    timings: Sequence[Timing],
    logs: Path,
    header: Sequence[str],
) -> str:
    lines = [f"# lsurf GPU check ({sizes.device})", "", *header, ""]
    lines += [
        "## steps",
        "",
        "| step | result | seconds | budget (s) |",
        "| --- | --- | --- | --- |",
    ]
    for step in steps:
        lines.append(f"| {step.name} | {step.result} | {step.seconds:.1f} | {step.budget:g} |")
    lines += ["", f"budgets together: {sum(s.budget for s in steps):g} s of {TOTAL_BUDGET:g} s"]
    lines += ["", "## CUDA test figures", ""]
    found = figures(logs / "cuda-tests.log")
    lines += [*found] if found else ["(none printed: the CUDA tests did not run; see their log)"]
    lines += [
        "",
        f"## timing: {sizes.model}, a 51x51 plane ({PLANE_POINTS} points) over "
        f"{sizes.train_size:,} train images, batch {sizes.batch_size}, on {sizes.device}",
        "",
        "lsurf's evaluation defaults (BN folded, channels_last, no compile, every example at "
        "every point) and evaluation.precision as the row says. Rate between the first finished "
        "point and the last (start-up excluded); minutes = rate x 2601 / 60, and with start-up "
        "(start-up + rate x 2601) / 60, which the goal is held against.",
        "",
        *TIMING_HEADER,
        *(timing_row(timing) for timing in timings),
    ]
    missing = [p for p in sizes.precisions if p not in {t.precision for t in timings}]
    if missing:
        lines += ["", f"no timing for {', '.join(missing)}: see the step's log"]
    for step in steps:
        lines += ["", f"## step {step.name}: {step.result}", ""]
        if step.skip_reason:
            lines.append(step.skip_reason)
            continue
        lines += ["```text", *tail(logs / f"{step.name}.log"), "```"]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(text)
    scratch.replace(path)


# --- the run ------------------------------------------------------------------------------


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The GPU check (benchmarks/gpu_check.sh).")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "gpu-check")
    parser.add_argument(
        "--work", type=Path, default=None, help="scratch (default OUT/gpu-check-work)"
    )
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (tests)")
    parser.add_argument("--steps", default=None, help="only these steps, comma-separated")
    parser.add_argument("--mpiexec", default=None, help="the MPI launcher, or none to skip")
    parser.add_argument("--plan", action="store_true", help="print the steps and budgets")
    # The timed sweep, run by a timing step.
    parser.add_argument("--time-sweep", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--window", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--stop-by", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.time_sweep is not None:
        return time_sweep(args.time_sweep, args.precision, args.window, args.stop_by, args.result)
    sizes = CPU if args.cpu else CUDA
    out = args.out.resolve()
    work = (args.work or out / "gpu-check-work").resolve()
    logs = work / "logs"
    launcher = find_launcher(args.mpiexec, work)
    steps, configs = plan_steps(sizes, work, launcher)
    known = [step.name for step in steps]
    if args.steps:
        chosen = args.steps.split(",")
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            print(f"gpu_check: unknown step {', '.join(unknown)}; steps: {', '.join(known)}")
            return 2
        steps = [step for step in steps if step.name in chosen]
    hung = os.environ.get("LSURF_GPU_CHECK_HANG")
    for step in steps:
        if step.name == hung:
            step.commands = [["bash", "-c", "trap '' TERM; sleep 600"]]
            step.budget, step.skip_reason = HANG_BUDGET, ""
    if args.plan:
        for step in steps:
            print(f"{step.name:12} {step.budget:6g} s")
        print(f"{'total':12} {sum(step.budget for step in steps):6g} s (of {TOTAL_BUDGET:g})")
        return 0
    if work.exists() and any(work.iterdir()) and not (work / WORK_MARK).exists():
        print(f"gpu_check: --work {work} holds files this check did not write; name a new folder")
        return 2
    if work.exists():
        shutil.rmtree(work)  # its own scratch: a rerun must not resume the last run's sweeps
    logs.mkdir(parents=True)
    (work / WORK_MARK).touch()
    out.mkdir(parents=True, exist_ok=True)
    for path, config in configs.items():
        path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML

    started = datetime.datetime.now(datetime.UTC)
    header = [
        f"started {started.isoformat(timespec='seconds')} on {platform.node()}",
        f"python {sys.executable} ({platform.python_version()}); install: "
        + os.environ.get("LSURF_GPU_CHECK_INSTALL", "this Python, lsurf from the repository"),
        "mpi launcher: "
        + (launcher if isinstance(launcher, str) else f"{launcher.mpiexec} ({launcher.found})"),
    ]
    for step in steps:
        if step.skip_reason:
            step.result = "skipped"
        else:
            run_step(step, logs / f"{step.name}.log")
        print(
            f"step {step.name}: {step.result} ({step.seconds:.1f} s of {step.budget:g})", flush=True
        )
    timings = []
    for precision in sizes.precisions:
        result = work / f"timing-{precision}.json"
        if result.exists():
            timings.append(Timing(**json.loads(result.read_text())))
    elapsed = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
    header.append(f"took {elapsed:.0f} s")
    report = report_text(sizes, steps, timings, logs, header)
    write_atomically(out / REPORT_NAME, report)
    combined = []
    for step in steps:
        combined += [f"===== {step.name}: {step.result}", *tail(logs / f"{step.name}.log", 2000)]
    write_atomically(out / LOGS_NAME, "\n".join(combined) + "\n")
    print("\n".join([*TIMING_HEADER, *(timing_row(timing) for timing in timings)]))
    print(f"report: {out / REPORT_NAME}")
    return 1 if any(step.failed for step in steps) else 0


if __name__ == "__main__":
    sys.exit(main())
