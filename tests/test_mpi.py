"""The distributed sweep under a real mpiexec: same bits as serial, kill -9, failures, SIGTERM."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import MpiRun
from surface_helpers import done_count

from lsurf.files.surface import read_surface
from lsurf.run.protocol import Placement, place_worker

INJECT = Path(__file__).resolve().parent / "inject"
GRID = ["--set", "grid.x=-1:1:6", "--set", "grid.y=-0.5:0.5:4"]  # non-square, 24 points


# ---------------------------------------------------------------------------- pure logic


def test_workers_take_gpus_by_node_local_index():
    assert place_worker(0, 4, cuda_devices=4, cores=16) == Placement("cuda:0", 4)
    assert place_worker(3, 4, cuda_devices=4, cores=16) == Placement("cuda:3", 4)
    # More workers than GPUs: round-robin, never an index past the last device.
    assert [place_worker(i, 3, 2, 8).device for i in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]


def test_cpu_workers_share_the_cores():
    assert place_worker(0, 2, cuda_devices=0, cores=2) == Placement("cpu", 1)
    assert place_worker(1, 1, cuda_devices=0, cores=2) == Placement("cpu", 2)
    assert place_worker(5, 8, cuda_devices=0, cores=2) == Placement("cpu", 1)  # at least one


def test_info_reads_a_surface_that_a_running_sweep_holds_open(sweep_yaml):
    from lsurf.config import load_sweep_config
    from lsurf.files.info import describe_surface
    from lsurf.run.sweep import run_sweep

    path = run_sweep(load_sweep_config(sweep_yaml()), log=lambda _: None).path
    with h5py.File(path, "r+") as h5file:
        h5file["done"][2:, :] = False
    # Another process holds the file open for writing (and its HDF5 lock), as rank 0 does.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pathlib, time; from lsurf.files.surface import SurfaceWriter; "
            f"w = SurfaceWriter(pathlib.Path({str(path)!r})); "
            "print('open', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        assert "done     6/12 points (50.0%)" in describe_surface(path)
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------------------- real mpiexec


def environment(**extra):
    """One thread per process and no injected behaviour, unless `extra` asks for it. A
    PYTHONPATH in `extra` (tests/inject's hooks) goes in front of this process's own, which
    may name the checkout under test."""
    if "PYTHONPATH" in extra and os.environ.get("PYTHONPATH"):
        extra["PYTHONPATH"] += os.pathsep + os.environ["PYTHONPATH"]
    return MpiRun().environment(**extra)


def launch(ranks, config, *extra, env=None, mpi=None):
    """The sweep serially (ranks 0), or on `ranks` ranks through the mpi_run fixture `mpi`."""
    args = ["-m", "lsurf", "sweep", str(config), *GRID, *extra]
    if ranks:
        return mpi.start(ranks, *args, env=env)
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env or environment(),
        text=True,
    )


def finish(process, timeout=180):
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process.pid)
        raise
    return process.returncode, out + err


def descendants(pid):
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def kill_tree(pid):
    """kill -9 mpiexec and every rank (with the pip mpich each rank has its own session)."""
    victims = [pid, *descendants(pid)]
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    # A killed rank holds the HDF5 file lock until its last thread is gone.
    while any(Path(f"/proc/{victim}").exists() for victim in victims):
        assert time.monotonic() < deadline
        for victim in victims:
            try:
                os.waitpid(victim, os.WNOHANG)
            except ChildProcessError:
                pass
        time.sleep(0.05)


@pytest.fixture
def serial_surface(sweep_yaml, tmp_path):
    config = sweep_yaml({"output": str(tmp_path / "serial.h5")}, name="serial.yaml")
    code, text = finish(launch(0, config))
    assert code == 0, text
    return read_surface(tmp_path / "serial.h5")


def assert_same(surface, reference):
    assert surface.done.all()
    for name, values in reference.metrics.items():
        np.testing.assert_array_equal(surface.metrics[name], values, err_msg=name)


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_any_number_of_ranks_gives_the_serial_surface_bit_for_bit(
    mpi_run, ranks, sweep_yaml, tmp_path, serial_surface
):
    output = tmp_path / f"ranks{ranks}.h5"
    config = sweep_yaml({"output": str(output)}, name=f"ranks{ranks}.yaml")
    code, text = finish(launch(ranks, config, mpi=mpi_run))
    assert code == 0, text
    if ranks > 1:
        assert f"on {ranks - 1} workers" in text
    assert_same(read_surface(output), serial_surface)


def test_job_killed_at_several_moments_resumes_to_the_same_surface(
    mpi_run, sweep_yaml, tmp_path, serial_surface
):
    config = sweep_yaml()
    output = tmp_path / "out" / "surface.h5"
    counts = [0]
    # Slowed, or the sweep may finish before the kill: at 0.5 s a point a chunk is ~2 points
    # (about a second of work) and a flush (every 0.5 s) brings a few points at a time.
    slowed = environment(LSURF_TEST_SLOW_SECONDS="0.5", PYTHONPATH=str(INJECT))
    for target in (1, 8, 16):
        process = launch(3, config, env=slowed, mpi=mpi_run)
        deadline = time.monotonic() + 120
        # Each run must add to what the last one left (a flush can overshoot a target).
        while done_count(output) < max(target, counts[-1] + 1):
            assert process.poll() is None, finish(process)[1]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        kill_tree(process.pid)
        surface = read_surface(output)  # the file opens after every kill
        counts.append(int(surface.done.sum()))
        for name, values in serial_surface.metrics.items():
            done = surface.done
            np.testing.assert_array_equal(surface.metrics[name][done], values[done])
    assert counts[1] < counts[2] < counts[3] < 24
    code, text = finish(launch(3, config, mpi=mpi_run))
    assert code == 0, text
    assert "resuming" in text
    assert_same(read_surface(output), serial_surface)


def test_a_failing_worker_ends_the_job_quickly_naming_rank_and_point(mpi_run, sweep_yaml, tmp_path):
    env = environment(LSURF_TEST_FAIL_RANK="2", PYTHONPATH=str(INJECT))
    # Without the abort the job would wait forever on rank 2; `finish` raises past its timeout,
    # which is generous because three ranks importing torch on a loaded 2-core machine are slow.
    code, text = finish(launch(3, sweep_yaml(), env=env, mpi=mpi_run), timeout=150)
    assert code != 0
    assert "rank 2 failed at point" in text
    assert "RuntimeError: injected failure" in text and "Traceback" in text
    surface = read_surface(tmp_path / "out" / "surface.h5")  # readable, partly done
    assert not surface.done.all()


def test_bad_data_on_the_workers_is_one_line_and_touches_nothing(mpi_run, sweep_yaml, tmp_path):
    config = sweep_yaml({"data.root": str(tmp_path / "nowhere")})
    code, text = finish(launch(3, config, mpi=mpi_run))
    assert code == 2, text
    errors = [line for line in text.splitlines() if line.startswith("lsurf: error:")]
    assert len(errors) == 1 and "lsurf data synth" in errors[0]
    assert "Traceback" not in text
    assert not (tmp_path / "out").exists()


def test_resume_refuses_a_changed_config_and_sigterm_leaves_a_resumable_file(
    mpi_run, sweep_yaml, tmp_path, serial_surface
):
    config = sweep_yaml()
    output = tmp_path / "out" / "surface.h5"
    # Slowed points: on a fast machine the 21 points left could all finish before the signal.
    slowed = environment(LSURF_TEST_SLOW_SECONDS="0.3", PYTHONPATH=str(INJECT))
    process = launch(3, config, env=slowed, mpi=mpi_run)
    deadline = time.monotonic() + 120
    while done_count(output) < 3:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)  # what a scheduler does: mpiexec forwards it
    code, text = finish(process, timeout=60)
    assert code != 0 and "stopped by SIGTERM" in text and "run the same command again" in text
    # Said at once, before the grace period, in case a launcher kills rank 0 right after.
    assert 0 <= text.index("SIGTERM received: ") < text.index("stopped by SIGTERM")
    stopped = read_surface(output)
    assert 3 <= stopped.done.sum() < 24
    before = output.read_bytes()
    code, text = finish(
        launch(
            3,
            config,
            "--set",
            "directions.seed=1",
            "--set",
            f"directions.file={tmp_path / 'other.h5'}",
            mpi=mpi_run,
        )
    )
    assert code == 2 and "holds a different sweep (differs in: directions.seed" in text
    assert output.read_bytes() == before
    code, text = finish(launch(3, config, mpi=mpi_run))
    assert code == 0, text
    assert_same(read_surface(output), serial_surface)


def test_without_mpi_shared_memory_each_worker_holds_its_own_copy_and_says_so(
    mpi_run, sweep_yaml, tmp_path, serial_surface
):
    output = tmp_path / "own.h5"
    config = sweep_yaml({"output": str(output)}, name="own.yaml")
    reports = tmp_path / "splits"
    reports.mkdir()
    # tests/inject: MPI refuses the node's window, as on a machine without shared memory.
    env = environment(
        LSURF_TEST_NO_SHARED_MEMORY="1", LSURF_TEST_SPLITS_DIR=str(reports), PYTHONPATH=str(INJECT)
    )
    code, text = finish(launch(3, config, env=env, mpi=mpi_run))
    assert code == 0, text
    notes = [line for line in text.splitlines() if line.startswith("  data: ")]
    assert len(notes) == 1, text
    assert notes[0].startswith("  data: a copy of train, test per worker (MPI shared memory ")
    assert_same(read_surface(output), serial_surface)  # never silently different
    held = [json.loads(path.read_text()) for path in reports.glob("*.json")]
    assert len(held) == 2
    for report in held:
        for split in report["splits"].values():
            assert not split["inputs"]["path"].startswith("/dev/shm/"), split  # its own heap
