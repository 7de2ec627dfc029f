"""Writing a file atomically: readers, and a crash at any moment, see the old file or the new
one, never half of one. Every file lsurf writes goes through here.

The scheme: write a temporary file in the target's own folder (a rename is atomic only within
one file system), flush and fsync it, `os.replace` it over the target, then fsync the folder
so that the rename itself survives a power loss (file systems that cannot fsync a folder are
tolerated: the rename still holds). The temporary is hidden and unique per process and call,
`.NAME.PID.TOKEN.tmp`, so writers never collide; on any failure it is removed and the target
is left as it was.

- `write_atomically(path, write)`: `write(handle)` fills the open binary temporary file.
- `atomic_path(path)`: a context manager yielding the temporary's path, for writers that open
  files by name (h5py, matplotlib, meshio, plotly); the rename happens when the block ends.
- `temporary_target(name)`, `remove_stale_temporaries(path)`: find and delete what a writer
  killed between creation and rename left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

# .NAME.PID.TOKEN.tmp, and .NAME.PID.tmp as lsurf 0.1's surface files and figures had it.
_TEMPORARY = re.compile(r"\.(.+)\.\d+\.[0-9a-f]{8}\.tmp")
_OLD_TEMPORARY = re.compile(r"\.(.+)\.\d+\.tmp")


def write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Replace `path` by the file that `write` fills: `path` holds the old or the new bytes."""
    with atomic_path(path) as temporary, open(temporary, "xb") as handle:
        write(handle)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; the block writes a file there, and when it ends
    without an exception that file replaces `path`. The folder must exist."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield temporary
        _sync_file(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # nothing there after a successful rename
    _sync_folder(path.parent)


def temporary_target(name: str) -> str | None:
    """The name of the file that the temporary file `name` was to become; None if it is none."""
    match = _TEMPORARY.fullmatch(name) or _OLD_TEMPORARY.fullmatch(name)
    return match.group(1) if match else None


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporaries of `path` left by writers killed before their rename.

    Only for a caller that is the one writer of `path`: another's write in progress would lose
    its temporary.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return
    for entry in path.parent.iterdir():
        if temporary_target(entry.name) == path.name and entry.is_file():
            entry.unlink(missing_ok=True)


def _sync_file(path: Path) -> None:
    # The data on disk before the rename, so a crash cannot leave a renamed empty file.
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _sync_folder(folder: Path) -> None:
    # Persists the rename. Some platforms and file systems cannot open or fsync a folder.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(descriptor)
    finally:
        os.close(descriptor)
