"""When the evaluator compiles its network, and where the compiled kernels are kept.

`evaluation.compile: auto` (the default) compiles when it pays: when the seconds a worker
saves over its points exceed what compiling costs it. `decide` is that rule, a pure function
of the plan (the points each worker evaluates, the examples of each point, the device and
whether the cache already holds this network's graphs); its constants are the figures
benchmarks/evaluation_speed.py measures (docs/benchmarks.md). The choice is made once per
sweep and recorded in the surface file, so a resumed sweep, whatever its rank count, makes
the choice the first run made (compiled and eager outputs differ in their last bits).

The compiled kernels live in a folder on disk that outlives the process (inductor's FX graph
and kernel caches, `TORCHINDUCTOR_CACHE_DIR`): a second worker, a rerun or the next sweep of
the same network loads them instead of compiling again. Inductor writes its entries to a
temporary file and renames it, and takes a file lock around each C++ build, so workers on one
node may compile into one folder at once. Beside inductor's entries lsurf leaves one marker
per network it compiled (`graph_key`), which is how the rule knows the cache is warm.

Input: the plan's counts, a network's identity. Output: a `Decision` (compile or not, and the
one line the log and `--plan` print), the cache folder, its markers.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"  # where inductor keeps its caches
MARKERS = "lsurf-compiled"  # the folder of lsurf's markers inside the cache

# What compiling costs a worker and what it saves, by device type, from ResNet-20 on the 2-core
# CPU of docs/benchmarks.md (benchmarks/evaluation_speed.py prints its measurements beside
# these). The saving is per billion floating-point operations of the forward (its convolutions
# and linear layers, Evaluator.flops_per_example), so a network 3x as deep saves 3x as much per
# example; it is what compiling adds to the default's folded network with its fused ReLUs,
# which already has most of what inductor fuses. The cost is the seconds a compile adds to a
# worker's set-up, the larger network's (a smaller one compiles sooner: auto errs toward
# eager). Cold: nothing in the cache; warm: this network's graphs are there (dynamo still
# traces, inductor loads them).
COMPILE_SECONDS = {"cpu": {False: 30.0, True: 10.0}}
SAVED_PER_GFLOP = {"cpu": 7.0e-4}  # seconds: the default's eager network minus compiled


@dataclass(frozen=True)
class Decision:
    compile: bool
    reason: str  # one line for the log and --plan


def decide(
    points_per_worker: int,
    examples_per_point: int,
    flops_per_example: float,
    device_type: str,
    warm: bool,
) -> Decision:
    """Compile when the points of one worker, each over `examples_per_point` examples of
    `flops_per_example`, save more than the compile costs (warm: the cache holds the
    network's graphs)."""
    if device_type not in COMPILE_SECONDS:
        return Decision(
            False,
            f"compile auto: eager (compiling is unmeasured on {device_type}; "
            "set evaluation.compile: true to compile)",
        )
    cost = COMPILE_SECONDS[device_type][warm]
    work = points_per_worker * examples_per_point * flops_per_example / 1e9  # GFLOP
    saved = work * SAVED_PER_GFLOP[device_type]
    cache = "warm" if warm else "cold"
    why = (
        f"{points_per_worker} points per worker x {examples_per_point} examples x "
        f"{flops_per_example / 1e6:.3g} MFLOP save ~{saved:.3g} s"
    )
    if saved > cost:
        return Decision(True, f"compile auto: compiled ({why} > {cache} compile ~{cost:.0f} s)")
    return Decision(False, f"compile auto: eager ({why} < {cache} compile ~{cost:.0f} s)")


def recorded(compiled: bool) -> Decision:
    """The choice a resumed sweep makes: the one its surface file records."""
    way = "compiled" if compiled else "eager"
    return Decision(compiled, f"compile auto: {way}, as the sweep's first run chose")


def cache_folder(configured: Path | None) -> Path:
    """`evaluation.compile_cache`, else inductor's own variable where it is set, else the
    user's cache folder ($XDG_CACHE_HOME or ~/.cache, then lsurf/inductor): never the output."""
    if configured is not None:
        return configured
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lsurf" / "inductor"


def use_cache(folder: Path) -> None:
    """Point inductor's caches at `folder` for this process (read at each compile)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[CACHE_VARIABLE] = str(folder)


def graph_key(
    model: nn.Module, batch_size: int, precision: str, fold_bn: bool, device_type: str
) -> str:
    """What tells one compiled network from another, as far as the cache goes: torch's
    version, the device, the model's class and its tensors' names, shapes and dtypes, the
    batch size, the precision and whether BN is folded."""
    digest = hashlib.sha256()
    parts = [torch.__version__, device_type, type(model).__qualname__, str(batch_size)]
    parts += [precision, str(fold_bn)]
    parts += [f"{k}:{tuple(v.shape)}:{v.dtype}" for k, v in model.state_dict().items()]
    digest.update("\n".join(parts).encode())
    return digest.hexdigest()[:32]


def is_warm(folder: Path, key: str) -> bool:
    """Whether a network of this key was compiled into `folder` before."""
    return (folder / MARKERS / key).exists()


def mark_compiled(folder: Path, key: str) -> None:
    """Record that the network of `key` is compiled in `folder` (an empty file: creating it
    twice, from two workers at once, is harmless)."""
    (folder / MARKERS).mkdir(parents=True, exist_ok=True)
    (folder / MARKERS / key).touch()
