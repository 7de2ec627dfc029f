"""kill -9 at any moment leaves a readable surface file, and the rerun completes it exactly.

The runs that are killed are slowed through the injection hook (tests/inject, as the MPI kill
tests are): every point first sleeps SLOW_SECONDS, so on any machine the kills land while the
sweep is still running, and a sleep changes no value.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from surface_helpers import done_count

from lsurf.files.surface import read_surface

# 48 points of at least SLOW_SECONDS each: the writer flushes at most every 0.5 s, so one
# flush brings about ten points, and the grid leaves room for several flushes between kills.
GRID = ["--set", "grid.x=-1:1:8", "--set", "grid.y=-1:1:6"]
POINTS = 48
SLOW_SECONDS = "0.05"
INJECT = Path(__file__).resolve().parent / "inject"


def start_sweep(config, *extra, slowed=True):
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the same threads in every run: same bits
    if slowed:
        env.update(LSURF_TEST_SLOW_SECONDS=SLOW_SECONDS, PYTHONPATH=str(INJECT))
    return subprocess.Popen(
        [sys.executable, "-m", "lsurf", "sweep", str(config), *GRID, *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


def kill_when(process, path, points, timeout=120.0):
    deadline = time.monotonic() + timeout
    while done_count(path) < points:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "sweep made no progress"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()  # the file lock goes with the last thread of the process


def test_sweep_killed_repeatedly_then_rerun_equals_uninterrupted(sweep_yaml, tmp_path):
    reference_config = sweep_yaml({"output": str(tmp_path / "reference.h5")}, name="ref.yaml")
    assert start_sweep(reference_config, slowed=False).wait(timeout=300) == 0
    reference = read_surface(tmp_path / "reference.h5")

    config = sweep_yaml()
    output = tmp_path / "out" / "surface.h5"
    seen = [0]
    for target in (1, 15, 30):
        process = start_sweep(config)
        # Each run must add at least one point to what the last one left (a flush can overshoot).
        kill_when(process, output, max(target, seen[-1] + 1))
        surface = read_surface(output)  # opens after every kill
        done = surface.done
        seen.append(int(done.sum()))
        for name, values in surface.metrics.items():
            # Every point marked done holds its final value. The rest are NaN, or, for a point
            # killed between its values and its flag, already the value (it is redone anyway).
            np.testing.assert_array_equal(values[done], reference.metrics[name][done])
            pending = values[~done]
            assert (np.isnan(pending) | (pending == reference.metrics[name][~done])).all()
    assert seen[0] < seen[1] < seen[2] < seen[3] < POINTS
    process = start_sweep(config, slowed=False)
    assert process.wait(timeout=300) == 0, process.stderr.read().decode()
    final = read_surface(output)
    assert final.done.all()
    for name, values in reference.metrics.items():
        np.testing.assert_array_equal(final.metrics[name], values)


def test_kill_during_start_up_leaves_no_partial_file(sweep_yaml, tmp_path):
    config = sweep_yaml()
    output = tmp_path / "out" / "surface.h5"
    for delay in (0.5, 1.5, 2.5):
        process = start_sweep(config)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if output.exists():
            read_surface(output)  # whatever exists is a whole file
    process = start_sweep(config)
    assert process.wait(timeout=300) == 0, process.stderr.read().decode()
    assert read_surface(output).done.all()
    assert not list(output.parent.glob(".*.tmp")), "temporary files left behind"


def test_sigterm_stops_a_serial_sweep_cleanly_and_it_resumes(sweep_yaml, tmp_path):
    config = sweep_yaml()
    output = tmp_path / "out" / "surface.h5"
    process = start_sweep(config)
    deadline = time.monotonic() + 120
    while done_count(output) < 5:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    message = process.stderr.read().decode()
    assert "stopped by SIGTERM" in message and "run the same command again" in message
    assert "Traceback" not in message
    stopped = read_surface(output)
    assert 5 <= stopped.done.sum() < POINTS
    process = start_sweep(config)
    assert process.wait(timeout=300) == 0
    assert read_surface(output).done.all()
