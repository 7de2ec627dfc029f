"""lsurf.atomic: the target holds the old file or the whole new one; no temporary is left."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from lsurf import atomic

OLD = b"old contents\n"
NEW = os.urandom(3 * 1024 * 1024 + 5)  # big enough to be written in several pieces


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_the_new_contents_replace_the_old_whole(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(OLD)
    atomic.write_atomically(target, lambda handle: handle.write(NEW))
    assert target.read_bytes() == NEW
    assert names(tmp_path) == ["file.bin"]
    with atomic.atomic_path(target) as temporary:
        temporary.write_bytes(b"by path")
    assert target.read_bytes() == b"by path" and names(tmp_path) == ["file.bin"]


def test_the_temporary_is_hidden_unique_and_beside_the_target(tmp_path):
    target = tmp_path / "figure.png"
    with atomic.atomic_path(target) as first, atomic.atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        assert re.fullmatch(rf"\.figure\.png\.{os.getpid()}\.[0-9a-f]{{8}}\.tmp", first.name)
        assert atomic.temporary_target(first.name) == "figure.png"
        first.write_bytes(b"1")
        second.write_bytes(b"2")
        assert not target.exists()  # nothing under the final name until the block ends
    assert target.read_bytes() == b"1" and names(tmp_path) == ["figure.png"]


def test_a_failing_writer_leaves_the_target_untouched_and_no_temporary(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(OLD)

    def half_then_fail(handle):
        handle.write(NEW[:1000])
        raise KeyboardInterrupt  # not only Exception: a Ctrl-C mid-write too

    with pytest.raises(KeyboardInterrupt):
        atomic.write_atomically(target, half_then_fail)
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as temporary:
        temporary.write_bytes(NEW)
        raise RuntimeError("the plotting library failed")
    assert target.read_bytes() == OLD and names(tmp_path) == ["file.bin"]
    atomic.write_atomically(tmp_path / "new.bin", lambda handle: handle.write(b"x"))
    with pytest.raises(ValueError):
        atomic.write_atomically(tmp_path / "never.bin", lambda handle: int("not a number"))
    assert names(tmp_path) == ["file.bin", "new.bin"]  # a failed first write leaves nothing


def test_a_failed_rename_leaves_the_target_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    target.write_bytes(OLD)

    def no_rename(source, destination):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic.os, "replace", no_rename)
    with pytest.raises(PermissionError):
        atomic.write_atomically(target, lambda handle: handle.write(NEW))
    assert target.read_bytes() == OLD and names(tmp_path) == ["file.bin"]


def test_data_and_rename_are_synced_and_a_folder_that_cannot_sync_is_tolerated(
    tmp_path, monkeypatch
):
    synced = []
    real_fsync = os.fsync

    def watching(descriptor):
        path = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
        synced.append((path.name, (tmp_path / "file.bin").exists()))
        if path == tmp_path:
            raise OSError(22, "Invalid argument")  # as file systems that cannot sync folders
        real_fsync(descriptor)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name the synced descriptors")
    monkeypatch.setattr(atomic.os, "fsync", watching)
    atomic.write_atomically(tmp_path / "file.bin", lambda handle: handle.write(b"x"))
    [(temporary, renamed_yet), folder] = synced
    assert atomic.temporary_target(temporary) == "file.bin" and not renamed_yet
    assert folder == (tmp_path.name, True)  # the folder after the rename
    assert (tmp_path / "file.bin").read_bytes() == b"x"


def test_stale_temporaries_of_the_target_alone_are_removed(tmp_path):
    target = tmp_path / "s.h5"
    kept = ["s.h5", ".s.h5.999.tmp.txt", ".other.h5.999.0123abcd.tmp", ".s.h5x.999.0123abcd.tmp"]
    stale = [".s.h5.999.0123abcd.tmp", ".s.h5.999.tmp"]  # the second: lsurf 0.1's naming
    for name in kept + stale:
        (tmp_path / name).write_bytes(b"x")
    atomic.remove_stale_temporaries(target)
    assert names(tmp_path) == sorted(kept)
    atomic.remove_stale_temporaries(tmp_path / "absent" / "s.h5")  # no folder: nothing to do
    assert atomic.temporary_target(".model.2.pt.31.deadbeef.tmp") == "model.2.pt"
    assert atomic.temporary_target("model.pt") is None
