"""Benchmark: start-up at scale — from launch to the first finished point, and where it goes.

Every worker rank reads and normalizes the dataset itself, as on GPUs (on the CPU a node's
workers hold one copy between them; this refuses it, and --node-copy measures it). This
measures what that costs, in seconds and in memory, for a CIFAR-sized sweep: synthetic
CIFAR-10 in the real file layout (`lsurf data synth`, 50,000 train images), a randomly
initialised ResNet-20 checkpoint, the train split evaluated whole, one point per worker. Each
layout (1, 3, 6 ranks by default; on this machine every layout above 3 ranks oversubscribes
its cores) is launched as

    mpiexec -n R python benchmarks/startup.py --rank-side CONFIG JOURNALS LAUNCH

which is `lsurf sweep CONFIG --log-every 1` with lsurf's own start-up steps wrapped in timers
(the launch's wall-clock time is passed in, so each rank writes seconds since launch): MPI
init (the import of mpi4py.MPI, as `python -m mpi4py` does first), the torch and lsurf imports,
rank 0's check phase (model build, checkpoint, directions), the workers' wait for the setup,
their data load (reading the pickled batches, normalizing into float32, the channels_last
copy), the model build and probe, and rank 0's creation of the output files. Every rank
appends its timings and its memory (VmRSS, VmHWM, anonymous) to a journal as it goes; the driver
timestamps rank 0's progress lines as they arrive (the first "1/N points" line is the first
finished point) and samples the memory of the whole process tree (RSS, and PSS, which counts
the pages of torch's libraries shared between ranks only once) every 0.2 s.

The data files are dropped from the page cache before each layout (posix_fadvise), so every
layout starts as on a fresh node for the data; Python's and torch's files stay cached.
A last part reads the train files, cold, with 1 and with many processes at once (the disk
read contention of many ranks on one node). From the measured figures the benchmark prints
the arithmetic for 64 ranks per node.

With --node-copy it measures instead what one copy of the data per node saves: a node's CPU
workers hold each cached split once, in MPI shared memory (lsurf.run.worker.NodeCopies). A
small model (convnet_small) on 20,000 train images, 1 and 3 workers, each with the shared copy
and with a copy per worker (the path lsurf takes where MPI refuses the window, forced here by
refusing it on the rank side); the node's summed RSS and PSS at their peak and at the end, and
the workers' own peaks. PSS is the figure that counts: a page of the shared copy is in the RSS
of every worker that reads it, and in the node's PSS once.

Run: .venv/bin/python benchmarks/startup.py [--quick] [--ranks 1 3 6 8]
     .venv/bin/python benchmarks/startup.py --node-copy [--train-size N]  (about a minute)
(--quick: 10,000 train images and ranks 1 and 3, about a minute. The default takes about five
minutes on 2 cores, most of it the first point itself, ResNet-20 on 50,000 images with a thread
per worker; --ranks 1 3 6 8 about nine, with 11 GB at the peak of -n 8.)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MPIEXEC = Path(sys.executable).with_name("mpiexec")
FIRST_POINT = re.compile(r"^\d+/\d+ points")  # the first such line: a point is done
CIFAR_TRAIN = 50_000
IMAGE_BYTES = 3 * 32 * 32  # one CIFAR image: uint8 on disk, 4 bytes a value once float32
MB = 1e6
GB = 1e9
RANKS_PER_NODE = 64
READERS = (1, 8, 64)  # processes reading the train files at once, cold
LAYOUT_TIMEOUT = 1800  # seconds; a rank that died without taking the job down ends here
PER_WORKER_VARIABLE = "LSURF_BENCHMARK_COPY_PER_WORKER"  # --node-copy: refuse the shared copy
NODE_COPY_TRAIN = 20_000  # --node-copy's train images: 246 MB as float32


def proc_kib(pid: str, source: str, fields: tuple[str, ...]) -> dict[str, int]:
    """Fields of /proc/PID/SOURCE (status or smaps_rollup), in KiB; absent ones are 0."""
    found = dict.fromkeys(fields, 0)
    try:
        text = Path(f"/proc/{pid}/{source}").read_text()
    except OSError:  # the process has just ended
        return found
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in found:
            found[name] = int(rest.split()[0])
    return found


# ---------------------------------------------------------------------------- inside mpiexec


class Journal:
    """One rank's timings, appended and flushed as they happen (a killed job keeps them)."""

    def __init__(self, path: Path, launch: float) -> None:
        self.stream = path.open("a")
        self.launch = launch

    def span(self, label: str, started: float, ended: float, rss_before_kib: int = 0) -> None:
        status = proc_kib("self", "status", ("VmRSS", "VmHWM"))
        entry = {
            "label": label,
            "start": started - self.launch,
            "end": ended - self.launch,
            "rss_before_kib": rss_before_kib,
            "rss_kib": status["VmRSS"],
            "peak_kib": status["VmHWM"],
            # Heap and tensors: what no other rank can share (torch's libraries can).
            "anonymous_kib": proc_kib("self", "smaps_rollup", ("Anonymous",))["Anonymous"],
        }
        self.stream.write(json.dumps(entry) + "\n")
        self.stream.flush()

    def timed(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """`function`, journaling every call's start and end under `label`."""

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            rss_before = proc_kib("self", "status", ("VmRSS",))["VmRSS"]
            started = time.time()
            try:
                return function(*args, **kwargs)
            finally:
                self.span(label, started, time.time(), rss_before)

        return wrapper


def install_timers(journal: Journal) -> None:
    """Wrap the start-up steps of lsurf where they are looked up at call time."""
    from lsurf import checkpoint, evaluate, models
    from lsurf.data import cifar, splits
    from lsurf.run import mpi, sweep, worker

    steps: list[tuple[object, str, str]] = [
        (sweep, "prepare", "prepare"),  # rank 0: the whole check phase
        (models, "build_named", "model build"),  # rank 0 in prepare, every worker in load
        (checkpoint, "load_weights", "checkpoint"),  # rank 0 only
        (mpi.Session, "receive_setup", "wait for setup"),  # workers, idle meanwhile
        (worker, "load", "load"),  # every worker: the whole load phase (of each sweep)
        (splits, "_cifar_split", "split"),  # read + normalize + device and layout copy
        (splits, "load_configured", "read and normalize"),
        (cifar, "_read_batch", "read file"),  # one pickled batch file, unpickled
        (cifar, "_normalize", "normalize"),  # uint8 -> float32, in place
        (evaluate.Evaluator, "_probe", "probe"),
        (sweep, "open_output", "create files"),  # rank 0: direction file and surface
        (mpi.Session, "send_result", "result sent"),  # the first one is the first point
    ]
    for owner, name, label in steps:
        setattr(owner, name, journal.timed(label, getattr(owner, name)))


def refuse_shared_memory() -> None:
    """On this rank, MPI refuses the node's shared window: each worker loads its own copy, as
    where a machine has no MPI shared memory."""
    from mpi4py import MPI

    from lsurf.run import mpi

    def refused(self: Any, nbytes: int, comm: Any) -> Any:
        raise MPI.Exception(MPI.ERR_NO_MEM)

    mpi.Session._allocate_shared = refused  # type: ignore[method-assign]


def rank_main(config: Path, journals: Path, launch: float) -> int:
    """One rank of a measured sweep: the real `lsurf sweep`, with its start-up timed."""
    top = time.time()
    from mpi4py import MPI  # MPI_Init runs here, as it does first under `python -m mpi4py`

    initialized = time.time()
    journal = Journal(journals / f"rank{MPI.COMM_WORLD.Get_rank()}.jsonl", launch)
    journal.span("spawn", launch, top)  # mpiexec, its proxies and the Python interpreter
    journal.span("MPI init", top, initialized)
    started = time.time()
    import torch  # noqa: F401 - timed on its own: the largest import by far

    journal.span("torch import", started, time.time())
    started = time.time()
    from lsurf import cli

    journal.span("lsurf import", started, time.time())
    install_timers(journal)
    if os.environ.get(PER_WORKER_VARIABLE):
        refuse_shared_memory()
    started = time.time()
    code = cli.main(["sweep", str(config), "--log-every", "1"])
    journal.span("sweep", started, time.time())
    return code


# ---------------------------------------------------------------------------- the driver


class TreeMemory:
    """Samples the summed RSS and PSS of a process and its descendants until stopped."""

    def __init__(self, root: int, every: float = 0.2) -> None:
        self.root = root
        self.every = every
        self.peak_rss_kib = 0
        self.peak_pss_kib = 0
        self.pss_kib = 0  # the latest sample
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    def _sample(self) -> None:
        while not self.done.wait(self.every):
            rss = pss = 0
            for pid in self._tree():
                memory = proc_kib(str(pid), "smaps_rollup", ("Rss", "Pss"))
                rss += memory["Rss"]
                pss += memory["Pss"]
            self.peak_rss_kib = max(self.peak_rss_kib, rss)
            self.peak_pss_kib = max(self.peak_pss_kib, pss)
            if pss:
                self.pss_kib = pss

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces
            children.setdefault(parent, []).append(int(entry))
        tree, frontier = [self.root], [self.root]
        while frontier:
            frontier = [child for pid in frontier for child in children.get(pid, [])]
            tree += frontier
        return tree


def evict(paths: list[Path]) -> None:
    """Drop these files' pages from the page cache: the next read comes from the disk."""
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


@dataclass(frozen=True)
class Span:
    label: str
    start: float  # seconds since launch
    end: float
    rss_before_kib: int  # VmRSS when the call began (0 for the spans before any call)
    rss_kib: int  # at the end of the span
    peak_kib: int  # VmHWM: the process's high mark so far
    anonymous_kib: int  # heap and tensors, which no other rank can share

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Layout:
    """One measured launch: when its first point finished, every rank's journal, the node."""

    ranks: int
    first_point: float  # seconds from launch to rank 0's first progress line
    journals: dict[int, list[Span]]
    node_rss_kib: int  # peak of the summed RSS of every process of the job
    node_pss_kib: int  # the same in PSS (pages shared between ranks counted once)
    log: str = ""  # rank 0's log lines
    held_pss_kib: int = 0  # the summed PSS when the first point was done (all set up)

    @property
    def workers(self) -> list[int]:
        """Ranks that loaded the data (rank 0 itself when it runs alone)."""
        return [0] if self.ranks == 1 else list(range(1, self.ranks))

    def spans(self, rank: int, label: str, within: str | None = None) -> list[Span]:
        """`label`'s spans on `rank`, only those inside a `within` span when given."""
        found = [span for span in self.journals[rank] if span.label == label]
        if within is None:
            return found
        outer = self.spans(rank, within)
        return [s for s in found if any(o.start <= s.start and s.end <= o.end for o in outer)]

    def seconds(self, rank: int, label: str, within: str | None = None) -> float:
        """Total seconds of `label` on `rank` (0 when it never ran there)."""
        return sum(span.seconds for span in self.spans(rank, label, within))

    def over_workers(
        self, *labels: str, within: str | None = None, minus: tuple[str, ...] = ()
    ) -> tuple[float, float]:
        """Mean and max over the workers of each one's seconds in `labels` together, less
        its seconds in `minus`."""
        values = [
            sum(self.seconds(rank, label, within) for label in labels)
            - sum(self.seconds(rank, label, within) for label in minus)
            for rank in self.workers
        ]
        return statistics.fmean(values), max(values)

    def over_ranks(self, *labels: str) -> tuple[float, float]:
        values = [sum(self.seconds(r, label) for label in labels) for r in self.journals]
        return statistics.fmean(values), max(values)

    @property
    def ready(self) -> float:
        """Seconds from launch until rank 0 hands out the first points (files created)."""
        return self.spans(0, "create files")[-1].end

    @property
    def point_seconds(self) -> float:
        """The first point's own compute, as rank 0 sees it (from ready to its result)."""
        return self.first_point - self.ready

    def worker_kib(self, field: str, label: str | None = None) -> int:
        """The largest `field` of a worker at the end of its first `label` span (at exit when
        `label` is None)."""
        return max(
            getattr(self.spans(r, label)[0] if label else self.journals[r][-1], field)
            for r in self.workers
        )


def read_journal(path: Path) -> list[Span]:
    return [Span(**json.loads(line)) for line in path.read_text().splitlines()]


def run_layout(
    ranks: int, config: Path, folder: Path, data_files: list[Path], per_worker: bool = False
) -> Layout:
    """Launch one sweep on `ranks` ranks, cold data, and collect what it measured (with
    `per_worker`, each worker holding its own copy of the data)."""
    evict(data_files)
    journals = folder / f"journals{ranks}{'-own' if per_worker else ''}"
    journals.mkdir()
    launch = time.time()
    command = [str(MPIEXEC), "-n", str(ranks), sys.executable, __file__, "--rank-side"]
    command += [str(config), str(journals), repr(launch)]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a hung job is ended as a whole
        env=dict(os.environ, **{PER_WORKER_VARIABLE: "1"} if per_worker else {}),
    )
    memory = TreeMemory(process.pid)
    watchdog = threading.Timer(LAYOUT_TIMEOUT, os.killpg, (process.pid, 9))
    watchdog.start()
    assert process.stderr is not None
    first_point, log, held_pss_kib = None, [], 0
    for line in process.stderr:
        log.append(line)
        if first_point is None and FIRST_POINT.match(line):
            first_point = time.time() - launch
            held_pss_kib = memory.pss_kib  # every worker set up, its data loaded
    code = process.wait()
    watchdog.cancel()
    memory.stop()
    if code != 0 or first_point is None:
        sys.exit(f"-n {ranks} failed (exit {code}):\n{''.join(log[-20:])}")
    return Layout(
        ranks,
        first_point,
        {rank: read_journal(journals / f"rank{rank}.jsonl") for rank in range(ranks)},
        memory.peak_rss_kib,
        memory.peak_pss_kib,
        "".join(log),
        held_pss_kib,
    )


def write_inputs(folder: Path, train_size: int, model: str = "resnet20") -> None:
    """Synthetic CIFAR-10 (real file layout) and a random `model` checkpoint in `folder`."""
    import torch

    from lsurf import models
    from lsurf.checkpoint import save_checkpoint
    from lsurf.data.synthetic import write_synthetic

    write_synthetic(folder / "data", train_size=train_size, test_size=1000)
    torch.manual_seed(0)
    save_checkpoint(folder / "model.pt", models.build(model).state_dict())


def write_config(folder: Path, ranks: int, model: str = "resnet20") -> Path:
    """The sweep for `ranks` ranks: one point per worker, so it ends after its first round
    (two for a serial run: a grid has at least two points)."""
    import yaml

    points = max(2, ranks - 1)
    config = {
        "model": {"name": model, "checkpoint": str(folder / "model.pt")},
        "data": {"root": str(folder / "data"), "splits": ["train"], "batch_size": 250},
        "grid": {"x": f"-1:1:{points}"},
        "output": str(folder / f"surface{ranks}.h5"),  # its direction file beside it
    }
    path = folder / f"sweep{ranks}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ---------------------------------------------------------------------------- cold reads


def reader_main(start: float, paths: list[str]) -> None:
    """Runs as its own process: wait for the common start, read the files, print the times."""
    time.sleep(max(0.0, start - time.time()))
    started = time.time()
    buffer = bytearray(8 * 2**20)
    for path in paths:
        with open(path, "rb", buffering=0) as stream:
            while stream.readinto(buffer):
                pass
    print(f"{started} {time.time()}")


def read_cold(readers: int, paths: list[Path]) -> float:
    """Aggregate MB/s of `readers` processes reading all of `paths` at once, cold."""
    evict(paths)
    start = time.time() + 2.0 + 0.1 * readers  # after every reader's interpreter is up
    command = [sys.executable, __file__, "--reader", repr(start), *map(str, paths)]
    running = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(readers)]
    times = [tuple(map(float, p.communicate()[0].split())) for p in running]
    elapsed = max(end for _, end in times) - min(begin for begin, _ in times)
    return readers * sum(path.stat().st_size for path in paths) / MB / elapsed


# ---------------------------------------------------------------------------- the report


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def mean_max(values: tuple[float, float], digits: int = 1) -> str:
    mean, largest = values
    return f"{mean:.{digits}f} ({largest:.{digits}f})"


def gigabytes(kib: int) -> float:
    return kib * 1024 / GB


def print_tables(layouts: list[Layout]) -> None:
    print(
        "\nranks: mpiexec -n (rank 0 + workers; -n 1 runs serially, 2 threads); seconds from "
        "launch;\nper-rank figures are mean (max) over the workers (import: over all ranks); "
        "GB = 1e9 B\n"
    )
    print(
        f"{'ranks':>5} {'launch→1st point':>16} {'of which import':>15} "
        f"{'data load/worker':>16} {'peak RSS/worker':>15} {'node RSS':>8} {'node PSS':>8}"
    )
    for layout in layouts:
        print(
            f"{layout.ranks:>5} {layout.first_point:>16.1f} "
            f"{mean_max(layout.over_ranks('torch import', 'lsurf import')):>15} "
            f"{mean_max(layout.over_workers('split')):>16} "
            f"{gigabytes(layout.worker_kib('peak_kib')):>15.2f} "
            f"{gigabytes(layout.node_rss_kib):>8.2f} {gigabytes(layout.node_pss_kib):>8.2f}"
        )

    print("\nwhere the time goes, in launch order (seconds; per rank: mean (max))")
    columns = {
        "spawn": "mpiexec, its proxies, the interpreter",
        "MPI init": "import of mpi4py.MPI",
        "import": "torch, then lsurf",
        "r0 prepare": "rank 0's check phase (the workers wait for it)",
        "r0 dirs": "of which directions and checks (not model, checkpoint)",
        "wait setup": "a worker, from its imports to rank 0's setup",
        "read files": "a worker reading and unpickling the 5 batch files",
        "normalize": "uint8 -> float32, per channel",
        "layout copy": "the rest of the data load: concatenation, the channels_last copy",
        "build+probe": "the worker's model, the evaluator, its probe pass",
        "create files": "rank 0: direction file and surface",
        "ready": "launch to the first points handed out",
        "1st point": "that point's compute (ResNet-20 on the whole split)",
    }
    print(f"{'ranks':>5} " + " ".join(f"{name:>12}" for name in columns))
    for layout in layouts:
        prepare = layout.seconds(0, "prepare")
        directions = prepare - layout.seconds(0, "model build", "prepare")
        directions -= layout.seconds(0, "checkpoint", "prepare")
        cells = [
            mean_max(layout.over_ranks("spawn")),
            mean_max(layout.over_ranks("MPI init"), 2),
            mean_max(layout.over_ranks("torch import", "lsurf import")),
            f"{prepare:.2f}",
            f"{directions:.2f}",
            mean_max(layout.over_workers("wait for setup")) if layout.ranks > 1 else "-",
            mean_max(layout.over_workers("read file")),
            mean_max(layout.over_workers("normalize")),
            mean_max(layout.over_workers("split", minus=("read file", "normalize"))),
            mean_max(layout.over_workers("model build", "probe", within="load"), 2),
            f"{layout.seconds(0, 'create files'):.2f}",
            f"{layout.ready:.1f}",
            f"{layout.point_seconds:.1f}",
        ]
        print(f"{layout.ranks:>5} " + " ".join(f"{cell:>12}" for cell in cells))
    for name, meaning in columns.items():
        print(f"  {name:<12} {meaning}")


def print_arithmetic(
    layouts: list[Layout], train_size: int, cores: int, reads: dict[int, float]
) -> None:
    """What the measured figures mean for 64 ranks per node, CIFAR-10 train."""
    alone = layouts[0]  # the fewest ranks: the least contended per-rank figures
    scale = CIFAR_TRAIN / train_size  # a --quick dataset scaled to CIFAR's 50,000 images
    split = alone.spans(alone.workers[0], "split")[0]
    held_here = gigabytes(split.rss_kib - split.rss_before_kib)  # the split, once loaded
    held = held_here * scale
    peak_here = gigabytes(split.peak_kib - split.rss_before_kib)  # its load's high mark
    peak = peak_here * scale
    imported = alone.spans(alone.workers[0], "lsurf import")[0]
    private = gigabytes(imported.anonymous_kib)  # heap: Python, torch; every rank its own
    shared = gigabytes(imported.rss_kib) - private  # torch's libraries: once per node
    float_data = CIFAR_TRAIN * IMAGE_BYTES * 4 / GB
    files = CIFAR_TRAIN * IMAGE_BYTES / GB  # the real files: the pixels and a little pickle
    n = RANKS_PER_NODE
    scaled = f" (data figures scaled ×{scale:g} to 50,000 images)" if scale != 1 else ""
    print(f"\n{n} ranks per node, CIFAR-10 train, from -n {alone.ranks}{scaled}:")
    print(
        f"  a rank after its imports: {private:.2f} GB private (heap) + {shared:.2f} GB of "
        "libraries, shared\n"
        f"  a worker's train split: {held:.2f} GB held once loaded (float32 {CIFAR_TRAIN:,}"
        f"×3×32×32×4 B = {float_data:.2f} GB),\n"
        f"  {peak:.2f} GB at the high mark of its load (batches, their concatenation, the "
        "float32 tensor,\n  its channels_last copy)"
    )
    largest = layouts[-1]
    if largest.ranks > 1:
        ranks, workers = largest.ranks, largest.ranks - 1
        print(
            f"  check, -n {ranks} as measured: {ranks} × {private:.2f} + {workers} × "
            f"({held_here:.2f} held .. {peak_here:.2f} at the high mark) + {shared:.2f}\n  = "
            f"{ranks * private + workers * held_here + shared:.1f} .. "
            f"{ranks * private + workers * peak_here + shared:.1f} GB; its node PSS peaked at "
            f"{gigabytes(largest.node_pss_kib):.1f} GB"
        )
    print(
        f"  {n} workers: {n} × ({private:.2f} + {held:.2f}) + {shared:.2f} = "
        f"{n * (private + held) + shared:.0f} GB held; they all get the setup at once and\n"
        f"  load together: {n} × ({private:.2f} + {peak:.2f}) + {shared:.2f} = "
        f"{n * (private + peak) + shared:.0f} GB at the high mark"
    )
    print(
        f"  one copy per node in MPI shared memory: {n} × {private:.2f} + {float_data:.2f} + "
        f"{shared:.2f} = {n * private + float_data + shared:.0f} GB"
    )
    print(
        f"  disk: every worker reads the 5 train files ({files:.2f} GB as real CIFAR): "
        f"{n * files:.1f} GB per node,\n  the first read from the disk, the rest from the "
        "page cache. Cold reads of the files here,\n  by processes at once:"
    )
    for readers, rate in reads.items():
        print(
            f"    {readers:>3} readers: {rate:>6,.0f} MB/s together, {rate / readers:>5,.0f} each"
        )
    one_core = [x for x in layouts if 1 < x.ranks and x.ranks - 1 <= cores]
    if one_core:
        load = alone.over_workers("split")[0] * scale
        print(
            f"  time: a worker loads its data in {load:.1f} s; a point on one core "
            f"(-n {one_core[-1].ranks}, a thread per worker) takes "
            f"{one_core[-1].point_seconds * scale:.0f} s"
        )


def node_copy(train_size: int) -> None:
    """--node-copy: a node's memory with one shared copy of the data against a copy per
    worker, 1 and 3 workers (mpiexec -n 2 and -n 4: rank 0 loads no data)."""
    print(
        f"convnet_small (random checkpoint), synthetic CIFAR-10 train split of {train_size:,} "
        f"images ({train_size * IMAGE_BYTES * 4 / MB:.0f} MB as float32), one point per worker"
    )
    print(
        "\nnode RSS/PSS: summed over mpiexec and every rank, at the peak and (PSS held) when "
        "the first point\nwas done, every worker set up; worker peak: the largest and the "
        "smallest VmHWM of a worker\n(the first worker loads the data; the others map it), "
        "which counts the shared pages it read;\nGB = 1e9 B\n"
    )
    print(
        f"{'workers':>7} {'data held':>15} {'node RSS peak':>13} {'node PSS peak':>13} "
        f"{'node PSS held':>13} {'worker peak max, min':>20}"
    )
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        write_inputs(folder, train_size, "convnet_small")
        data_files = sorted((folder / "data").rglob("data_batch_*"))
        for workers in (1, 3):
            config = write_config(folder, workers + 1, "convnet_small")
            for per_worker in (False, True):
                layout = run_layout(workers + 1, config, folder, data_files, per_worker)
                for output in folder.glob(f"surface{workers + 1}*"):  # the next run starts anew
                    output.unlink()
                shared = "held once per node, in MPI shared memory" in layout.log
                assert shared == (workers > 1 and not per_worker), layout.log
                held = "once per node" if shared else "per worker"
                lowest = min(layout.journals[rank][-1].peak_kib for rank in layout.workers)
                print(
                    f"{workers:>7} {held:>15} {gigabytes(layout.node_rss_kib):>13.2f} "
                    f"{gigabytes(layout.node_pss_kib):>13.2f} "
                    f"{gigabytes(layout.held_pss_kib):>13.2f} "
                    f"{gigabytes(layout.worker_kib('peak_kib')):>14.2f}, "
                    f"{gigabytes(lowest):.2f}",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 train images, ranks 1 3")
    parser.add_argument("--ranks", type=int, nargs="+", help="layouts (default 1 3 6)")
    parser.add_argument("--train-size", type=int, help="train images (default 50,000)")
    parser.add_argument(
        "--node-copy", action="store_true", help="one copy of the data per node vs per worker"
    )
    parser.add_argument("--rank-side", nargs=3, help=argparse.SUPPRESS)  # inside mpiexec
    parser.add_argument("--reader", nargs="+", help=argparse.SUPPRESS)  # one cold reader
    args = parser.parse_args()
    if args.rank_side:
        config, journals, launch = args.rank_side
        sys.exit(rank_main(Path(config), Path(journals), float(launch)))
    if args.reader:
        reader_main(float(args.reader[0]), args.reader[1:])
        return

    if args.node_copy:
        print(f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores")
        node_copy(args.train_size or NODE_COPY_TRAIN)
        return
    ranks = args.ranks or ([1, 3] if args.quick else [1, 3, 6])
    train_size = args.train_size or (10_000 if args.quick else CIFAR_TRAIN)
    cores = len(os.sched_getaffinity(0))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(f"{cpu_model()}, {cores} cores, {memory / GB:.0f} GB")
    print(
        f"resnet20 (random checkpoint), synthetic CIFAR-10 train split of {train_size:,} images "
        "evaluated whole,\none point per worker, data evicted from the page cache before each"
    )
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        write_inputs(folder, train_size)
        data_files = sorted((folder / "data").rglob("data_batch_*"))
        layouts = []
        for count in ranks:
            config = write_config(folder, count)
            layouts.append(run_layout(count, config, folder, data_files, per_worker=True))
            print(f"  -n {count}: first point after {layouts[-1].first_point:.1f} s", flush=True)
        readers = READERS[:2] if args.quick else READERS
        reads = {count: read_cold(count, data_files) for count in readers}
    print_tables(layouts)
    print_arithmetic(layouts, train_size, cores, reads)


if __name__ == "__main__":
    main()
