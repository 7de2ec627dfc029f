"""Shared fixtures: tiny synthetic CIFAR-10 folders, a small trained-ish checkpoint, configs,
and `mpi_run`, the one way a test starts an MPI job.

Markers (pyproject.toml): a test that takes `mpi_run` is marked `mpi`, one of test_slurm.py
or test_slurm_nodes.py `slurm`, each in an xdist group of its own, so under `pytest -n 2` the
jobs that start several processes run one at a time on one worker while the rest of the suite
runs beside.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from cifar_helpers import SMALL_TEST, SMALL_TRAIN

from lsurf import models
from lsurf.checkpoint import save_checkpoint
from lsurf.cli import main
from lsurf.data.synthetic import write_synthetic

MPIEXEC = Path(sys.executable).with_name("mpiexec")

# Under `pytest -n N` each worker gets cores/N threads, and so do the processes its tests start
# (they inherit OMP_NUM_THREADS): N workers with thread pools of all the cores would
# oversubscribe the machine, and OpenMP threads spinning for cores they share burn CPU time.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _WORKERS))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Compiled kernels go to a folder of this run, not the user's cache (~/.cache/lsurf/inductor,
# where `evaluation.compile: auto` looks to see whether a network is compiled already): the
# controller sets it and every xdist worker and the processes its tests start inherit it.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="lsurf-tests-inductor-")


class MpiRun:
    """`python -m mpi4py ARGS` on `ranks` ranks of the venv's mpiexec, one thread per rank
    (the ranks share the machine's cores; the same threads give the same bits)."""

    def command(self, ranks: int, *args: object) -> list[str]:
        return [str(MPIEXEC), "-n", str(ranks), sys.executable, "-m", "mpi4py", *map(str, args)]

    def environment(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop("LSURF_TEST_FAIL_RANK", None)
        env.pop("LSURF_TEST_SLOW_SECONDS", None)
        env.update(extra)
        return env

    def __call__(
        self,
        ranks: int,
        *args: object,
        env: dict[str, str] | None = None,
        timeout: float = 300,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(ranks, *args),
            capture_output=True,
            text=True,
            env=env or self.environment(),
            timeout=timeout,
            cwd=cwd,
        )

    def start(
        self, ranks: int, *args: object, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(ranks, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env or self.environment(),
            text=True,
        )


@pytest.fixture
def mpi_run() -> MpiRun:
    """Runs MPI jobs (see MpiRun); skips the test where this Python has no mpiexec."""
    if not MPIEXEC.exists():
        pytest.skip("no mpiexec beside this Python (make install brings the mpich wheel)")
    return MpiRun()


def _process_state() -> dict[str, Any]:
    """What an in-process run of the CLI sets for its process (threads: the cores it owns;
    cuDNN's determinism) and what else would change a later test's numbers."""
    return {
        "threads": torch.get_num_threads(),
        "default dtype": torch.get_default_dtype(),
        "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
        "mkldnn": torch.backends.mkldnn.enabled,
        "float32 matmul precision": torch.get_float32_matmul_precision(),
        "cudnn": (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark),
        "grad mode": torch.is_grad_enabled(),
    }


@pytest.fixture(autouse=True)
def _process_state_put_back():
    """Each test starts from the worker's own process state. `lsurf.cli.main` run in-process
    sets torch's threads to the cores a CLI process owns (2 where an xdist worker has 1): a
    test after it trained in-process with 2 threads against a subprocess with 1 and got
    other bits, depending on which tests xdist had sent that worker before."""
    before = _process_state()
    yield
    if _process_state() != before:
        torch.set_num_threads(before["threads"])
        torch.set_default_dtype(before["default dtype"])
        torch.use_deterministic_algorithms(before["deterministic algorithms"])
        torch.backends.mkldnn.enabled = before["mkldnn"]
        torch.set_float32_matmul_precision(before["float32 matmul precision"])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before["cudnn"]
        torch.set_grad_enabled(before["grad mode"])


# tryfirst: xdist's own hook reads the xdist_group marks to build the groups, so they must be
# on the items before it runs (without it every group was silently ignored).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "mpi_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.mpi)
            # MPI jobs run one at a time on one worker, except the scale simulator's: its 17
            # ranks mostly sleep (25 s of CPU in 70-80 s), so it runs beside them.
            sleeper = item.module is not None and item.module.__name__ == "test_scale"
            item.add_marker(pytest.mark.xdist_group("scale" if sleeper else "mpi"))
        if item.module is not None and item.module.__name__ in ("test_slurm", "test_slurm_nodes"):
            item.add_marker(pytest.mark.slurm)
            item.add_marker(pytest.mark.xdist_group("slurm"))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """Under `--dist loadgroup`, in the controller: stop a run whose groups were lost (pytest
    9.2 broke xdist's way of recording them, pytest-xdist#1386, so setup.cfg keeps pytest
    below it) rather than let MPI and Slurm jobs run side by side unnoticed. A group shows
    as an `@name` suffix on the ids the workers collected."""
    if node.config.getvalue("dist") != "loadgroup" or any("@" in nodeid for nodeid in ids):
        return
    grouped = ("tests/test_mpi.py::", "tests/test_slurm.py::", "tests/test_slurm_nodes.py::")
    if any(nodeid.startswith(grouped) for nodeid in ids):
        pytest.exit(
            f"pytest-xdist collected no test groups (pytest {pytest.__version__}, "
            "pytest-xdist#1386): `make install` installs a pytest it supports",
            returncode=3,
        )


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated data in the real CIFAR-10 python layout, read by the real loading code."""
    return write_synthetic(tmp_path_factory.mktemp("cifar"), train_size=200, test_size=100, seed=0)


@pytest.fixture
def small_root(tmp_path: Path) -> Path:
    """A fresh synthetic folder of uneven sizes, one per test: the data tests damage it."""
    return write_synthetic(tmp_path / "data", train_size=SMALL_TRAIN, test_size=SMALL_TEST)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = models.build("convnet_small")
    # Non-trivial BN statistics, so tests notice if buffers are moved or lost.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    save_checkpoint(path, model.state_dict(), epoch=1)
    return path


@pytest.fixture
def sweep_yaml(tmp_path: Path, cifar_root: Path, small_checkpoint: Path):
    """Write a sweep config (a dict, updated by `changes`) and return its path."""

    def write(changes: dict | None = None, name: str = "sweep.yaml") -> Path:
        config = {
            "model": {"name": "convnet_small", "checkpoint": str(small_checkpoint)},
            "data": {"root": str(cifar_root), "splits": ["train", "test"], "batch_size": 64},
            "directions": {"kind": "random", "norm": "filter", "ignore": "biasbn", "seed": 0},
            "grid": {"x": "-1:1:4", "y": "-0.5:0.5:3"},
            "output": str(tmp_path / "out" / "surface.h5"),
        }
        for key, value in (changes or {}).items():
            section, _, field = key.partition(".")
            if value is None:
                if field:
                    config[section].pop(field, None)
                else:
                    config.pop(section, None)
            elif field:
                config.setdefault(section, {})[field] = value
            else:
                config[section] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config))
        return path

    return write


@pytest.fixture
def existing_output(sweep_yaml):
    """A finished sweep (surface, its bytes, its mtime) that bad runs must leave untouched."""
    config = sweep_yaml()
    assert main(["sweep", str(config)]) == 0
    output = config.parent / "out" / "surface.h5"
    return output, output.read_bytes(), output.stat().st_mtime_ns


@pytest.fixture(scope="session")
def blob_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """θ* of tests/fixtures/toylab's BlobNet(hidden=16), seeded: the researcher's own model of
    the open-engine and curvature tests."""
    import sys

    fixtures = str(Path(__file__).resolve().parent / "fixtures")
    if fixtures not in sys.path:
        sys.path.insert(0, fixtures)
    import toylab

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("blob") / "blobnet.pt"
    save_checkpoint(path, toylab.BlobNet(hidden=16).state_dict())
    return path
