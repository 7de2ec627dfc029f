"""The capture file of a training run: one small surface per capture, in groups (lsurf.Capture).

Layout: the root's attribute `lsurf_captures` marks the file; `captures` (JSON) lists the
groups in the order they were taken; `parameters` (JSON) names θ's parameters with their
shapes at the first capture, so a later capture of a model whose parameters changed is
refused; `settings` (JSON) holds the capture's grid, examples and directions, the same for
every capture of the file. Each group `epoch_000005` is a whole surface file's content (as
`lsurf.api.sweep` wrote it) with the attributes `epoch` and `step` added.

A capture is swept into a file of its own beside this one (resumable like any sweep); only a
complete surface is added here, by copying the file and renaming the copy over it
(lsurf.atomic), so this file always holds whole captures and a crash leaves it readable.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from lsurf.atomic import atomic_path
from lsurf.errors import OutputError
from lsurf.files.hdf5 import file_has_attribute, open_file
from lsurf.files.surface import Surface, read_surface_in

MARKER = "lsurf_captures"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Captured:
    """One capture: when it was taken, and its surface."""

    epoch: int
    step: int | None
    surface: Surface


def group_name(epoch: int) -> str:
    return f"epoch_{epoch:06d}"


def is_captures_path(path: Path) -> bool:
    return file_has_attribute(path, MARKER)


def read_capture_header(path: Path) -> dict[str, Any] | None:
    """The file's parameters and settings, None when there is no file yet."""
    if not Path(path).exists():
        return None
    with open_file(path, "r", "capture file", locking=False) as h5file:
        if MARKER not in h5file.attrs:
            raise OutputError(
                f"{path} exists and is not an lsurf capture file; choose another path for "
                "the captures"
            )
        return {
            "parameters": json.loads(str(h5file.attrs["parameters"])),
            "settings": json.loads(str(h5file.attrs["settings"])),
            "captures": json.loads(str(h5file.attrs["captures"])),
        }


def read_captures(path: Path) -> list[Captured]:
    """Every capture of the file, in the order taken (read without locking)."""
    with open_file(path, "r", "capture file", locking=False) as h5file:
        if MARKER not in h5file.attrs:
            raise OutputError(f"{path} is an HDF5 file but not an lsurf capture file")
        found = []
        for name in json.loads(str(h5file.attrs["captures"])):
            group = h5file[name]
            step = int(group.attrs["step"]) if "step" in group.attrs else None
            found.append(Captured(int(group.attrs["epoch"]), step, read_surface_in(group, path)))
        return found


def add_capture(
    path: Path,
    surface_path: Path,
    epoch: int,
    step: int | None,
    parameters: list[list[Any]],
    settings: dict[str, Any],
) -> None:
    """Add the complete surface file `surface_path` to the capture file `path` (created on the
    first capture) as the group of `epoch`, atomically: `path` holds the old or the new file."""
    path = Path(path)
    with atomic_path(path) as temporary:
        if path.exists():
            with open_file(path, "r", "capture file"):  # a read lock: no other writer
                shutil.copyfile(path, temporary)
        with h5py.File(temporary, "a") as target:
            if MARKER not in target.attrs:
                target.attrs[MARKER] = FORMAT_VERSION
                target.attrs["parameters"] = json.dumps(parameters)
                target.attrs["settings"] = json.dumps(settings)
                target.attrs["captures"] = json.dumps([])
            name = group_name(epoch)
            listing = [
                entry for entry in json.loads(str(target.attrs["captures"])) if entry != name
            ]
            if name in target:
                del target[name]
            group = target.create_group(name)
            with h5py.File(surface_path, "r") as source:
                for key in source:
                    source.copy(source[key], group)
                for key, value in source.attrs.items():
                    group.attrs[key] = value
            group.attrs["epoch"] = epoch
            if step is not None:
                group.attrs["step"] = step
            target.attrs["captures"] = json.dumps([*listing, name])
