"""Whether a sweep's surface fits: its bytes in rank 0's memory and on disk, against this machine.

A surface is held whole by rank 0 (every column and the `done` mask, see lsurf.files.surface) and
allocated whole on disk when the file is created, so a grid too fine for the machine fails
only once the sweep tries to build it: a NumPy MemoryError after the direction file was
written, or a Slurm job killed for memory. The check runs with the other checks on user
input, before anything is written (lsurf.run.phases), and `--plan` reports the sizes.

The columns are known only once a worker has probed the data (accuracy only where the
targets are classes), so the check counts the most a config can have: loss and accuracy on
every split of data.splits, plus the five curvature columns with hessian.eigenvalues.

Before any of that, a new surface file needs a folder it can be created in
(`check_output_writable`): an output under /proc, or under a file where a folder should be,
is refused as such, not as a disk with 0 B free.

Input: the grid's shape, the column count, the output path, and what the machine has
(`available_memory`, `free_disk`). Output: nothing, or a `ConfigError` saying what to do.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lsurf.config import SweepConfig
from lsurf.errors import ConfigError
from lsurf.grid import AutoAxis, Axis
from lsurf.metrics import ACCURACY, CURVATURE, LOSS

# Rank 0's bytes per point besides its columns (8 bytes each, every column held in memory):
# the bool `done` flag, and the point's int64 index in the queue of pending points, built
# through one temporary copy (np.flatnonzero, then astype).
MEMORY_PER_POINT = 1 + 8 + 8
# The file's bytes per point besides its columns: the `done` flag. Datasets are contiguous
# and allocated whole at creation, so a new file takes its full size at once.
DISK_PER_POINT = 1

TILES_HINT = (
    "sweep it in tiles (several outputs whose grid ranges cover it) or lower the resolution"
)


def column_bound(splits: tuple[str, ...], curvature: bool) -> int:
    """The most columns a sweep of these splits can have (the probe decides the rest)."""
    per_split = len((LOSS, ACCURACY))
    return per_split * len(splits) + (len(CURVATURE) if curvature else 0)


def surface_bytes(points: int, columns: int) -> tuple[int, int]:
    """(rank 0's memory, the file on disk) in bytes for `points` points of `columns` columns."""
    return points * (8 * columns + MEMORY_PER_POINT), points * (8 * columns + DISK_PER_POINT)


def check_surface_fits(
    shape: tuple[int, ...],
    columns: int,
    output: Path,
    memory: int | None,
    disk: int | None,
) -> None:
    """Raise a ConfigError when the surface exceeds `memory` or `disk` (bytes; None: unknown
    or not needed, as for a file that already exists)."""
    points = math.prod(shape)
    needed_memory, needed_disk = surface_bytes(points, columns)
    too_much = []
    if memory is not None and needed_memory > memory:
        too_much.append(
            f"{format_bytes(needed_memory)} in rank 0's memory (this machine has "
            f"{format_bytes(memory)} available)"
        )
    if disk is not None and needed_disk > disk:
        too_much.append(
            f"{format_bytes(needed_disk)} on disk ({format_bytes(disk)} free in {output.parent})"
        )
    if not too_much:
        return
    if len(shape) == 1:
        size = f"grid.x is {points:,} points"
    else:
        size = f"grid.x × grid.y is {shape[0]:,} × {shape[1]:,} = {points:,} points"
    raise ConfigError(
        f"{size}: its surface ({columns} columns at most) needs {' and '.join(too_much)}; "
        + TILES_HINT
    )


def check_sweep_fits(config: SweepConfig, force: bool) -> None:
    """`check_surface_fits` for a config whose axes are resolved ('auto' ones fitted).

    The disk counts only when a new file is to be written (a new output, or --force, which
    keeps the old file until the new one is whole); a resumed file has its space already.
    """
    x, y = config.grid.x, config.grid.y
    assert isinstance(x, Axis) and not isinstance(y, AutoAxis)  # resolved by the caller
    shape = (x.num,) if y is None else (x.num, y.num)
    columns = column_bound(config.data.splits, config.hessian.eigenvalues)
    new_file = force or not config.output.exists()
    disk = free_disk(config.output) if new_file else None
    check_surface_fits(shape, columns, config.output, available_memory(), disk)


def check_output_writable(config: SweepConfig, force: bool) -> None:
    """`check_folder_writable` for the output, when a new file is to be written there (a new
    output, or --force); a resumed file is written in place."""
    if force or not config.output.exists():
        check_folder_writable(config.output)


def check_folder_writable(output: Path) -> None:
    """Raise a ConfigError unless a file can be created in `output`'s folder, which is made
    later (parents too) where it does not exist yet: its nearest existing folder must be a
    folder and must take a new file.

    Only trying tells: os.access answers yes to root for any folder whatever its mode bits
    (and on /proc and /sys, where creating fails), and ACLs, read-only mounts and NFS's
    root squashing each decide beyond the mode bits. So an empty file with a new name is
    created there and removed at once; nothing that exists is opened.
    """
    folder = output.absolute().parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    hint = "choose an output folder you can write to"
    if not existing.is_dir():
        what = "it" if existing == folder else str(existing)
        raise ConfigError(f"cannot write in {folder} ({what} is a file, not a folder); {hint}")
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".lsurf-write-check-", dir=existing)
    except OSError as error:
        where = "there" if existing == folder else f"in {existing}"
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            f"cannot write in {folder} (creating a file {where} fails: {reason}); {hint}"
        ) from None
    os.close(descriptor)
    os.unlink(probe)


def check_sweeps_fit(configs: Sequence[SweepConfig]) -> None:
    """Several sweeps in one job (axes resolved): rank 0 holds all their surfaces at once, so
    sweeps that fit one by one may not fit together."""
    if len(configs) < 2:
        return
    needed = 0
    for config in configs:
        x, y = config.grid.x, config.grid.y
        assert isinstance(x, Axis) and not isinstance(y, AutoAxis)  # resolved by the caller
        points = x.num * (1 if y is None else y.num)
        columns = column_bound(config.data.splits, config.hessian.eigenvalues)
        needed += surface_bytes(points, columns)[0]
    memory = available_memory()
    if memory is not None and needed > memory:
        raise ConfigError(
            f"the {len(configs)} sweeps of this job together need {format_bytes(needed)} in "
            f"rank 0's memory (this machine has {format_bytes(memory)} available); run them "
            "in separate jobs, or fewer per job"
        )


def format_bytes(count: int) -> str:
    """'512 B', '1.5 KiB', '307 GiB', '1,010 MiB': three significant digits (more from 1000 on,
    as '1e+03' reads badly), binary units."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:,.0f} {unit}"
    raise AssertionError("unreachable")


def free_disk(output: Path) -> int | None:
    """Free bytes on the file system the output goes to (its folder may not exist yet)."""
    folder = output.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def available_memory() -> int | None:
    """Bytes this process may still take: the memory the kernel can hand out now (Linux's
    MemAvailable; elsewhere all physical memory), capped by the memory limit of the process's
    cgroup (a Slurm job's --mem, a container's limit). None when nothing can be read."""
    found = [value for value in (_free_memory(), _cgroup_limit()) if value is not None]
    return min(found) if found else None


def _free_memory() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                name, _, value = line.partition(":")
                if name == "MemAvailable":
                    return int(value.split()[0]) * 1024  # the file counts kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _cgroup_limit() -> int | None:
    """The memory limit of this process's cgroup (v2: memory.max, v1: memory.limit_in_bytes):
    the smallest on the way up its hierarchy, as the kernel enforces every level's (Slurm
    sets it on the job, above the step's own cgroup). Inside a container the cgroup's path
    may not be mounted; then only the mount's root, the container's own cgroup, is read."""
    try:
        with open("/proc/self/cgroup") as cgroups:
            lines = cgroups.read().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2: one unified hierarchy
            root, name = Path("/sys/fs/cgroup"), "memory.max"
        elif "memory" in controllers.split(","):
            root, name = Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"
        else:
            continue
        own = root / path.lstrip("/")
        limits += [
            _read_limit(level / name) for level in (own, *own.parents) if level.is_relative_to(root)
        ]
    found = [limit for limit in limits if limit is not None]
    return min(found) if found else None


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    # 'max' (v2) and a page-rounded 2**63 (v1) mean no limit.
    return int(text) if text.isdigit() and int(text) < 2**60 else None
