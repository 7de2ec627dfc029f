"""launch/slurm.sbatch on a real one-node Slurm cluster (Debian's slurm-wlm + munge).

The cluster runs in a temporary folder for this test session (tests/cluster/slurm_up.sh) and
is stopped at the end whatever happens. Without Slurm installed the tests skip, unless
LSURF_REQUIRE_SLURM=1 (as `make test` sets after installing it), where they fail instead.
A second cluster is a site whose MpiDefault plugin cannot load (pmix, without the PMIx
library), where plain `srun` fails with "Invalid MPI type 'pmix'".
"""

import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from surface_helpers import done_count

from lsurf import models
from lsurf.checkpoint import save_checkpoint
from lsurf.files.connect import read_connect
from lsurf.files.sharpness import read_sharpness
from lsurf.files.surface import read_surface

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = Path(__file__).resolve().parent / "cluster"
INJECT = Path(__file__).resolve().parent / "inject"
GRID = ["--set", "grid.x=-1:1:8", "--set", "grid.y=-1:1:6"]  # 48 points, non-square


@contextmanager
def cluster(folder, mpi_default="none", nodes=1):
    """A one-node cluster with 4 CPUs (or `nodes` fake nodes of 2 CPUs each, node1..nodeN) and
    slurm.conf's MpiDefault=`mpi_default`: its environment for the Slurm commands (SLURM_CONF,
    and LSURF_PYTHON for the job script)."""
    missing = [
        tool for tool in ("slurmctld", "slurmd", "sbatch", "munged") if not shutil.which(tool)
    ]
    if missing:
        if os.environ.get("LSURF_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm is required here but missing: {', '.join(missing)}")
        pytest.skip(f"Slurm not installed ({', '.join(missing)}); `make test` installs it as root")
    started = subprocess.run(
        [str(CLUSTER / "slurm_up.sh"), str(folder), "4" if nodes == 1 else "2", mpi_default]
        + ([str(nodes)] if nodes > 1 else []),
        capture_output=True,
        text=True,
    )
    try:
        assert started.returncode == 0, started.stderr + _logs(folder)
        yield dict(os.environ, SLURM_CONF=started.stdout.strip(), LSURF_PYTHON=sys.executable)
    finally:
        subprocess.run([str(CLUSTER / "slurm_down.sh"), str(folder)], check=False)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    with cluster(tmp_path_factory.mktemp("slurm")) as env:
        yield env


@pytest.fixture(scope="module")
def slurm_broken_mpi_default(tmp_path_factory):
    """A site whose MpiDefault cannot load: every srun without --mpi fails at once."""
    with cluster(tmp_path_factory.mktemp("slurm-pmix"), mpi_default="pmix") as env:
        listed = subprocess.run(["srun", "--mpi=list"], env=env, capture_output=True, text=True)
        assert "pmix" in listed.stdout + listed.stderr, listed.stdout + listed.stderr
        plain = subprocess.run(
            ["srun", "--ntasks=1", "true"], env=env, capture_output=True, text=True, timeout=60
        )
        if plain.returncode == 0:
            pytest.skip("the PMIx library is installed here: MpiDefault=pmix loads, no fault")
        assert "Invalid MPI type 'pmix'" in plain.stderr, plain.stderr
        yield env


def _logs(folder):
    return "".join(path.read_text()[-2000:] for path in (folder / "log").glob("*.log"))


def submit(
    env, config, tmp_path, *extra, sbatch_options=(), command=(), grid=GRID, tasks=("--ntasks=3",)
):
    """sbatch launch/slurm.sbatch with `config` (or a list of configs: one job, one queue);
    `command` is the script's optional first argument (["connect"]), `tasks` the job's shape."""
    configs = config if isinstance(config, list) else [config]
    result = subprocess.run(
        [
            "sbatch",
            "--parsable",
            *tasks,
            f"--output={tmp_path}/job-%j.log",
            *sbatch_options,
            str(ROOT / "launch" / "slurm.sbatch"),
            *command,
            *map(str, configs),
            *grid,
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


def wait_for_points(env, job, output, points, tmp_path, timeout=240):
    """Until the running `job` has `points` points done in `output` (then cancel it part-way)."""
    deadline = time.monotonic() + timeout
    while done_count(output) < points:
        current = state(env, job)
        assert current in {"PENDING", "RUNNING", "CONFIGURING"}, (current, job_log(tmp_path, job))
        assert time.monotonic() < deadline, job_log(tmp_path, job)
        time.sleep(0.2)


# The serial surface of resnet_config's sweep, computed once for the module: every test's
# checkpoint (seed 0), data (the session's cifar_root, 40 examples of each split) and grid
# are the same.
_SERIAL_SURFACE = []
RESNET_SUBSET = 40  # examples of each split a ResNet-20 point evaluates


def slow(env):
    """The cluster's environment with every point of a job's sweep taking 0.2 s more
    (tests/inject), so a job is cancelled part-way, not raced by a fast machine."""
    return dict(env, PYTHONPATH=str(INJECT), LSURF_TEST_SLOW_SECONDS="0.2")


@pytest.fixture
def resnet_config(sweep_yaml, tmp_path):
    """A ResNet-20 sweep and its serial surface (`slow` makes its jobs slow enough to be
    cancelled part-way)."""
    torch.manual_seed(0)
    checkpoint = tmp_path / "resnet20.pt"
    save_checkpoint(checkpoint, models.build("resnet20").state_dict())
    resnet = {"model.name": "resnet20", "model.checkpoint": str(checkpoint)}
    resnet["data.subset"] = RESNET_SUBSET
    config = sweep_yaml(resnet)
    if _SERIAL_SURFACE:
        return config, _SERIAL_SURFACE[0]
    serial = sweep_yaml({**resnet, "output": str(tmp_path / "serial.h5")}, name="serial.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "lsurf", "sweep", str(serial), *GRID], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    _SERIAL_SURFACE.append(read_surface(tmp_path / "serial.h5"))
    return config, _SERIAL_SURFACE[0]


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


def test_one_job_sweeps_a_resnet_with_and_without_skip_connections(
    slurm, resnet_config, sweep_yaml, tmp_path
):
    # The paper's Fig. 1 pair (ResNet-56 ± skip) as one allocation, at test size: ResNet-20
    # with its shortcuts (resnet_config's sweep) and without, each into its own file.
    config, reference = resnet_config
    torch.manual_seed(1)
    checkpoint = tmp_path / "resnet20-noshort.pt"
    save_checkpoint(checkpoint, models.build("resnet20_noshort").state_dict())
    noshort = {"model.name": "resnet20_noshort", "model.checkpoint": str(checkpoint)}
    noshort["data.subset"] = RESNET_SUBSET
    pair = sweep_yaml({**noshort, "output": str(tmp_path / "noshort.h5")}, name="noshort.yaml")
    alone = sweep_yaml({**noshort, "output": str(tmp_path / "alone.h5")}, name="alone.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "lsurf", "sweep", str(alone), *GRID], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    job = submit(slurm, [config, pair], tmp_path)
    ended = wait_for(slurm, job, ENDED)
    log = job_log(tmp_path, job)
    assert ended == "COMPLETED" and "2 sweeps in one queue, 96 points to go" in log, log
    assert "96/96 points (100%)" in log, log
    assert_same(tmp_path / "out" / "surface.h5", reference)
    assert_same(tmp_path / "noshort.h5", read_surface(tmp_path / "alone.h5"))


def test_a_connect_job_gives_the_serial_paths_and_barriers(slurm, cifar_root, tmp_path):
    # `launch/slurm.sbatch connect CONFIG`: lsurf connect through the job's queue, BN
    # statistics recomputed at every point, equal to the serial file bit for bit.
    checkpoints = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        checkpoints.append(tmp_path / f"{seed}.pt")
        save_checkpoint(checkpoints[-1], models.build("convnet_small").state_dict())

    def config(name):
        path = tmp_path / f"{name}.yaml"
        connect = {"checkpoints": [str(c) for c in checkpoints], "points": 9, "bn_examples": 150}
        path.write_text(
            yaml.safe_dump(
                {
                    "model": {"name": "convnet_small"},
                    "data": {"root": str(cifar_root), "splits": ["train", "test"]},
                    "connect": connect,
                    "output": str(tmp_path / f"{name}.h5"),
                }
            )
        )
        return path

    serial = subprocess.run(  # one thread, as each of the job's two workers on two cores
        [sys.executable, "-m", "lsurf", "connect", str(config("serial"))],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert serial.returncode == 0, serial.stderr
    job = submit(slurm, config("job"), tmp_path, command=["connect"], grid=[])
    ended = wait_for(slurm, job, ENDED)
    log = job_log(tmp_path, job)
    assert ended == "COMPLETED" and "on 2 workers" in log, log
    expected, found = read_connect(tmp_path / "serial.h5"), read_connect(tmp_path / "job.h5")
    assert list(found.paths) == list(expected.paths) == ["0-1/linear"]
    for name, part in expected.paths.items():
        assert found.paths[name].surface.done.all()
        for column, values in part.surface.metrics.items():
            np.testing.assert_array_equal(found.paths[name].surface.metrics[column], values)
        for row, value in part.barriers.items():
            assert (found.paths[name].barriers[row].height, found.paths[name].barriers[row].t) == (
                value.height,
                value.t,
            ), row


def test_a_sharpness_job_gives_the_serial_units(slurm, cifar_root, small_checkpoint, tmp_path):
    # `launch/slurm.sbatch sharpness CONFIG`: the units through the job's queue, equal to the
    # serial file bit for bit.
    def config(name):
        path = tmp_path / f"{name}.yaml"
        section = {"rho": [0.02], "samples": 4, "steps": 2, "examples": 64, "m": 32}
        path.write_text(
            yaml.safe_dump(
                {
                    "model": {"name": "convnet_small", "checkpoint": str(small_checkpoint)},
                    "data": {"root": str(cifar_root), "batch_size": 32},
                    "sharpness": section,
                    "output": str(tmp_path / f"{name}.h5"),
                }
            )
        )
        return path

    serial = subprocess.run(
        [sys.executable, "-m", "lsurf", "sharpness", str(config("serial"))],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert serial.returncode == 0, serial.stderr
    job = submit(slurm, config("job"), tmp_path, command=["sharpness"], grid=[])
    ended = wait_for(slurm, job, ENDED)
    log = job_log(tmp_path, job)
    assert ended == "COMPLETED" and "on 2 workers" in log, log
    expected, found = read_sharpness(tmp_path / "serial.h5"), read_sharpness(tmp_path / "job.h5")
    assert found.complete and list(found.parts) == list(expected.parts)
    for name, part in expected.parts.items():
        np.testing.assert_array_equal(found.parts[name].values, part.values, err_msg=name)


def test_the_script_without_a_config_prints_its_usage_and_exits_2():
    for arguments in ([], ["connect"], ["sweep"], ["sharpness"]):
        result = subprocess.run(
            ["bash", str(ROOT / "launch" / "slurm.sbatch"), *arguments],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2
        assert "launch/slurm.sbatch connect|sharpness CONFIG.yaml" in result.stderr


def test_cancelled_job_resubmitted_resumes_to_the_same_surface(slurm, resnet_config, tmp_path):
    config, reference = resnet_config
    output = tmp_path / "out" / "surface.h5"
    job = submit(slow(slurm), config, tmp_path)
    wait_for_points(slurm, job, output, 6, tmp_path)
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
        env=slow(slurm),
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


ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}


def test_a_site_whose_mpi_default_cannot_load_runs_the_sweep(
    slurm_broken_mpi_default, sweep_yaml, tmp_path
):
    # mpiexec's proxies are started by srun; under the site's broken default they used to die
    # with "Invalid MPI type 'pmix'" and the job hung until its time limit.
    config = sweep_yaml()
    serial = sweep_yaml({"output": str(tmp_path / "serial.h5")}, name="serial.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "lsurf", "sweep", str(serial), *GRID], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    job = submit(slurm_broken_mpi_default, config, tmp_path, sbatch_options=["--time=5"])
    ended = wait_for(slurm_broken_mpi_default, job, ENDED, timeout=120)
    log = job_log(tmp_path, job)
    assert ended == "COMPLETED" and "48/48 points (100%)" in log, log
    assert "Invalid MPI type" not in log, log
    assert_same(tmp_path / "out" / "surface.h5", read_surface(tmp_path / "serial.h5"))


def test_a_failed_launch_ends_the_job_at_once_with_the_reason(
    slurm_broken_mpi_default, sweep_yaml, tmp_path
):
    # The proxies' srun pinned to the site's broken plugin again: the original fault's launch.
    env = dict(slurm_broken_mpi_default, HYDRA_LAUNCHER_EXTRA_ARGS="--mpi=pmix")
    begun = time.monotonic()
    job = submit(env, sweep_yaml(), tmp_path, sbatch_options=["--time=5"])
    ended = wait_for(env, job, ENDED, timeout=90)
    took = time.monotonic() - begun
    log = job_log(tmp_path, job)
    assert ended == "FAILED" and took < 60, (ended, took, log)
    assert "Invalid MPI type 'pmix'" in log, log
    last = log.strip().splitlines()[-1]
    assert last.startswith(
        "lsurf: the MPI launch failed (mpiexec has had no child process (its srun) for 5s and "
        "no rank has started; see above): check the MPI plugins this site has (srun --mpi=list)"
    ), log
    assert not (tmp_path / "out" / "surface.h5").exists()


def test_a_launcher_that_never_starts_a_rank_is_stopped_at_the_launch_timeout(
    slurm_broken_mpi_default, sweep_yaml, tmp_path
):
    # A launcher stuck with its helpers running and no rank ever started (an srun step that
    # never gets its resources, say): only the timeout can tell.
    stuck = tmp_path / "stuck-mpiexec"
    stuck.write_text("#!/bin/sh\nsleep 600 &\nwait\n")
    stuck.chmod(0o755)
    env = dict(slurm_broken_mpi_default, LSURF_MPIEXEC=str(stuck), LSURF_LAUNCH_TIMEOUT="3")
    begun = time.monotonic()
    job = submit(env, sweep_yaml(), tmp_path, sbatch_options=["--time=5"])
    ended = wait_for(env, job, ENDED, timeout=90)
    took = time.monotonic() - begun
    log = job_log(tmp_path, job)
    assert ended == "FAILED" and took < 60, (ended, took, log)
    assert "lsurf: the MPI launch failed (no rank started within 3s; see above)" in log, log
    assert not (tmp_path / "out" / "surface.h5").exists()
