"""launch/slurm.sbatch on a real one-node Slurm cluster (Debian's slurm-wlm + munge).

The cluster runs in a temporary folder for this test session (tests/cluster/slurm_up.sh) and
is stopped at the end whatever happens. Without Slurm installed the tests skip, unless
LSURF_REQUIRE_SLURM=1 (as `make test` sets after installing it), where they fail instead.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from surface_helpers import done_count

from lsurf import models
from lsurf.checkpoint import save_checkpoint
from lsurf.store import read_surface

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = Path(__file__).resolve().parent / "cluster"
GRID = ["--set", "grid.x=-1:1:8", "--set", "grid.y=-1:1:6"]  # 48 points, non-square


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = [
        tool for tool in ("slurmctld", "slurmd", "sbatch", "munged") if not shutil.which(tool)
    ]
    if missing:
        if os.environ.get("LSURF_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm is required here but missing: {', '.join(missing)}")
        pytest.skip(f"Slurm not installed ({', '.join(missing)}); `make test` installs it as root")
    folder = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(
        [str(CLUSTER / "slurm_up.sh"), str(folder), "4"], capture_output=True, text=True
    )
    try:
        assert started.returncode == 0, started.stderr + _logs(folder)
        env = dict(os.environ, SLURM_CONF=started.stdout.strip(), LSURF_PYTHON=sys.executable)
        yield env
    finally:
        subprocess.run([str(CLUSTER / "slurm_down.sh"), str(folder)], check=False)


def _logs(folder):
    return "".join(path.read_text()[-2000:] for path in (folder / "log").glob("*.log"))


def submit(env, config, tmp_path, *extra):
    result = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--ntasks=3",
            f"--output={tmp_path}/job-%j.log",
            str(ROOT / "launch" / "slurm.sbatch"),
            str(config),
            *GRID,
            "--log-every",
            "4",
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


def state(env, job):
    shown = subprocess.run(
        ["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True
    ).stdout
    match = re.search(r"JobState=(\S+)", shown)
    return match.group(1) if match else "UNKNOWN"


def wait_for(env, job, states, timeout=240):
    deadline = time.monotonic() + timeout
    while (current := state(env, job)) not in states:
        assert time.monotonic() < deadline, f"job {job} still {current} after {timeout}s"
        time.sleep(0.5)
    return current


@pytest.fixture
def resnet_config(sweep_yaml, tmp_path):
    """A sweep slow enough (ResNet-20) to be cancelled part-way, and its serial surface."""
    torch.manual_seed(0)
    checkpoint = tmp_path / "resnet20.pt"
    save_checkpoint(checkpoint, models.build("resnet20").state_dict())
    config = sweep_yaml({"model.name": "resnet20", "model.checkpoint": str(checkpoint)})
    serial = sweep_yaml(
        {
            "model.name": "resnet20",
            "model.checkpoint": str(checkpoint),
            "output": str(tmp_path / "serial.h5"),
        },
        name="serial.yaml",
    )
    result = subprocess.run(
        [sys.executable, "-m", "lsurf", "sweep", str(serial), *GRID], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return config, read_surface(tmp_path / "serial.h5")


def job_log(tmp_path, job):
    """The job's log, for assertion messages: what a failure in CI needs to be understood."""
    path = tmp_path / f"job-{job}.log"
    return path.read_text() if path.exists() else f"(no log {path})"


def assert_same(path, reference):
    surface = read_surface(path)
    assert surface.done.all()
    for name, values in reference.metrics.items():
        np.testing.assert_array_equal(surface.metrics[name], values, err_msg=name)


def test_slurm_job_completes_with_the_serial_surface(slurm, resnet_config, tmp_path):
    config, reference = resnet_config
    job = submit(slurm, config, tmp_path)
    ended = wait_for(slurm, job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"})
    log = job_log(tmp_path, job)
    assert ended == "COMPLETED" and "on 2 workers" in log and "48/48 points (100%)" in log, log
    assert_same(tmp_path / "out" / "surface.h5", reference)
    # Resubmitting a finished sweep (a requeue, a chain) completes at once, file untouched.
    output = tmp_path / "out" / "surface.h5"
    before = output.read_bytes()
    again = submit(slurm, config, tmp_path)
    ended = wait_for(slurm, again, {"COMPLETED", "FAILED", "CANCELLED"})
    assert ended == "COMPLETED" and "already complete" in job_log(tmp_path, again), job_log(
        tmp_path, again
    )
    assert output.read_bytes() == before


def test_cancelled_job_resubmitted_resumes_to_the_same_surface(slurm, resnet_config, tmp_path):
    config, reference = resnet_config
    output = tmp_path / "out" / "surface.h5"
    job = submit(slurm, config, tmp_path)
    deadline = time.monotonic() + 240
    while done_count(output) < 6:
        current = state(slurm, job)
        assert current in {"PENDING", "RUNNING", "CONFIGURING"}, (current, job_log(tmp_path, job))
        assert time.monotonic() < deadline, job_log(tmp_path, job)
        time.sleep(0.2)
    subprocess.run(["scancel", job], env=slurm, check=True)
    ended = wait_for(slurm, job, {"CANCELLED", "FAILED", "COMPLETED"})
    log = job_log(tmp_path, job)
    assert ended == "CANCELLED", log
    assert "SIGTERM received: " in log, log  # the line rank 0 writes before anything can kill it
    partial = read_surface(output)
    assert 6 <= partial.done.sum() < 48, log
    resumed = submit(slurm, config, tmp_path)
    ended = wait_for(slurm, resumed, {"COMPLETED", "FAILED", "CANCELLED"})
    log = job_log(tmp_path, resumed)
    assert ended == "COMPLETED" and "resuming" in log, log
    assert_same(output, reference)


def test_a_chain_of_jobs_finishes_a_sweep_its_first_job_did_not(slurm, resnet_config, tmp_path):
    config, reference = resnet_config
    output = tmp_path / "out" / "surface.h5"
    chained = subprocess.run(
        [
            str(ROOT / "launch" / "slurm-chain.sh"),
            "2",
            str(config),
            "--ntasks=3",
            f"--output={tmp_path}/job-%j.log",
            "--",
            *GRID,
            "--log-every",
            "4",
        ],
        env=slurm,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert chained.returncode == 0, chained.stderr
    first, second = chained.stdout.split()
    deadline = time.monotonic() + 240
    while done_count(output) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    subprocess.run(["scancel", first], env=slurm, check=True)  # as if it hit its time limit
    ended = wait_for(slurm, first, {"CANCELLED", "COMPLETED", "FAILED"})
    assert ended == "CANCELLED", job_log(tmp_path, first)
    ended = wait_for(slurm, second, {"COMPLETED", "FAILED", "CANCELLED"})
    log = job_log(tmp_path, second)
    assert ended == "COMPLETED" and "resuming" in log, log
    assert_same(output, reference)
