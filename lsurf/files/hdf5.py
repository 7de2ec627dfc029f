"""Opening and creating lsurf's HDF5 files: the errors users meet, and creation by rename.

Every file format of lsurf.files goes through here: `open_file` turns h5py's failures (no
such file, a lock another process holds, bytes that are not HDF5, a file cut short) into one
line saying what to do; `create_atomically` builds a new file completely under a temporary
name and renames it into place, so a file exists only in a whole state.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from lsurf.atomic import atomic_path, remove_stale_temporaries
from lsurf.errors import OutputError


def open_file(path: Path, mode: str, what: str, locking: bool = True) -> h5py.File:
    """h5py.File with the failures users meet turned into one-line errors: no such file, a
    file another process holds open (HDF5's lock), a file that is corrupt or not HDF5.

    HDF5 says which in its message: "unable to lock file, errno = 11" (EAGAIN: h5py raises
    BlockingIOError) for a lock another process holds; another errno there for a file system
    without locks; "file signature not found" for bytes that are not HDF5; "truncated file:
    eof = N, ..., stored_eof = M" for a file cut short. A corrupt output is never replaced
    without --force (lsurf.run.phases.check_output reads it first).
    """
    try:
        return h5py.File(path, mode, locking=locking)
    except FileNotFoundError:
        raise OutputError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise OutputError(f"{what} {path} is a folder, not a file") from None
    except OSError as error:
        text = str(error)
        if isinstance(error, BlockingIOError):
            # Also the ranks of a job killed as a whole: MPICH's launcher starts each rank
            # in its own session, so a kill of the launcher's process group leaves them
            # running (and holding the lock) until they notice.
            raise OutputError(
                f"{what} {path} is open for writing in another process: a sweep still "
                "running, or the ranks of a killed job that have not exited yet (look with "
                "`pgrep -af 'lsurf sweep'`; wait a few seconds, or kill them), then run the "
                "same command again"
            ) from None
        if "unable to lock file" in text:
            reason = re.search(r"error message = '([^']*)'", text)
            raise OutputError(
                f"{what} {path} cannot be locked ({reason.group(1) if reason else 'no lock'}); "
                "on a file system without file locks (some NFS or Lustre mounts) set "
                "HDF5_USE_FILE_LOCKING=FALSE, and let one sweep at a time write an output"
            ) from None
        truncated = re.search(r"truncated file: eof = (\d+),.*stored_eof = (\d+)", text)
        if truncated:
            found, expected = (int(size) for size in truncated.groups())
            damage = (
                f"corrupt: it ends at byte {found:,} of {expected:,}, as after a copy cut "
                "short or a full disk"
            )
        elif "file signature not found" in text:
            damage = "no HDF5 signature: empty, corrupt, or another format"
        else:
            damage = f"corrupt: {text.splitlines()[0] if text else type(error).__name__}"
        if what == "direction file":
            hint = "move it aside or delete it, and the sweep computes new directions"
        elif what == "output file" or mode != "r":
            hint = (
                "choose another output path, or pass --force to replace it (move it aside "
                "first to keep it)"
            )
        else:
            hint = (
                "if a sweep wrote it, run that sweep again with --force to replace it (move "
                "it aside first to keep it)"
            )
        raise OutputError(f"{what} {path} is not a readable HDF5 file ({damage}); {hint}") from None


def create_atomically(path: Path, build: Any) -> None:
    """Write a new HDF5 file with `build(h5file)` under a temporary name, then rename it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)  # from a run killed mid-creation
        with atomic_path(path) as temporary, h5py.File(temporary, "w") as h5file:
            build(h5file)
    except OSError as error:
        reason = error.strerror or str(error).split("\n")[0]
        raise OutputError(
            f"cannot write {path} ({reason}); choose an output folder you can write to"
        ) from None


def attributes_of(h5file: h5py.File) -> dict[str, Any]:
    return {
        key: value.item() if isinstance(value, np.generic) else value
        for key, value in h5file.attrs.items()
    }


def stored_config(attributes: dict[str, Any]) -> dict[str, Any]:
    """The resolved config a file stores in its attribute `config` (YAML), as a dict; {} when
    absent or unreadable (older files, the reference code's)."""
    try:
        config = yaml.safe_load(str(attributes.get("config", "")))
    except yaml.YAMLError:
        return {}
    return config if isinstance(config, dict) else {}


def file_has_attribute(path: Path, marker: str) -> bool:
    """Whether `path` is an existing HDF5 file whose root has the attribute `marker` (False
    otherwise, so that callers fall through to their own messages for missing or other
    files). Read without locking: a running job's file may be asked about."""
    if not Path(path).is_file():
        return False
    try:
        with h5py.File(path, "r", locking=False) as h5file:
            return marker in h5file.attrs
    except OSError:
        return False


class GroupedJobFile:
    """The open file of a running job made of groups (lsurf connect's paths, lsurf
    sharpness's parts; rank 0 its only writer): the root's `marker` attribute says which kind
    it is, its `listing` attribute (JSON) names the groups in the job's order."""

    def __init__(self, path: Path, marker: str, listing: str, what: str) -> None:
        self.path = path
        self._listing = listing
        self._file = open_file(path, "r+", what)
        if marker not in self._file.attrs:
            self._file.close()
            raise OutputError(f"{path} is an HDF5 file but not a {what}")

    @property
    def names(self) -> list[str]:
        return list(json.loads(str(self._file.attrs[self._listing])))

    def attributes(self, name: str) -> dict[str, Any]:
        return attributes_of(self._file[name])

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()
