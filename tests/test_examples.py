"""examples/custom, run as its README runs it: a researcher's package (mylab) trained by its
own trainer and swept through import paths serially, under mpiexec and through the Python API.

Each door must give the same surface bit for bit, and the loss at θ* must be what the
researcher's own code computes. The example's sweep.yaml is used as it is, from a scratch
folder standing in for examples/custom/, with a smaller grid and dataset (`--set`).
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from lsurf.files.surface import read_surface

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custom"
CONFIG = EXAMPLE / "sweep.yaml"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

from mylab.data import signals  # noqa: E402 - needs examples/custom on the path
from mylab.losses import SMOOTHING, smoothed_cross_entropy  # noqa: E402
from mylab.models import SignalNet  # noqa: E402

SIZE = 200  # examples per split, instead of the config's 1000
SMALL = ["--set", "grid.x=-1:1:5", "--set", "grid.y=-1:1:3", "--set", f"data.kwargs.size={SIZE}"]
RAW = yaml.safe_load(CONFIG.read_text())  # the example's settings, as the user wrote them


def example_environment() -> dict[str, str]:
    """mylab importable, as the README's PYTHONPATH=. makes it; one thread per process."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EXAMPLE), env.get("PYTHONPATH")]))
    return env


def run_in(folder: Path, *command: str) -> subprocess.CompletedProcess:
    """`command` from `folder`, with mylab importable."""
    env = example_environment()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding what the README's first two commands leave: the trained checkpoint
    and the serial sweep's surface, at the config's own relative paths."""
    folder = tmp_path_factory.mktemp("custom")
    checkpoint = RAW["model"]["checkpoint"]
    trained = run_in(
        folder, sys.executable, "-m", "mylab.train", checkpoint, "--steps", "20", "--size", "200"
    )
    assert trained.stdout.splitlines()[-1] == f"saved {checkpoint}"
    run_in(folder, sys.executable, "-m", "lsurf", "sweep", str(CONFIG), *SMALL)
    return folder


def trained_model(folder: Path) -> SignalNet:
    model = SignalNet(**RAW["model"]["kwargs"])
    saved = torch.load(folder / RAW["model"]["checkpoint"], weights_only=True)
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def assert_same_surface(first: Path, second: Path) -> None:
    a, b = read_surface(first), read_surface(second)
    assert sorted(a.metrics) == sorted(b.metrics)
    for name in a.metrics:
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name], err_msg=name)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.done.all() and b.done.all()


def test_the_origin_holds_the_researchers_own_loss_and_accuracy(workspace):
    surface = read_surface(workspace / RAW["output"])
    assert surface.metrics["train_loss"].shape == (5, 3) and surface.done.all()
    # Class scores against class labels: lsurf measures accuracy beside the user's loss.
    assert sorted(surface.columns) == ["test_acc", "test_loss", "train_acc", "train_loss"]
    (i,) = np.flatnonzero(surface.x == 0)
    (j,) = np.flatnonzero(surface.y == 0)

    model = trained_model(workspace)
    for split in ("train", "test"):
        data = signals(split, size=SIZE)
        with torch.no_grad():
            outputs = model(data.signals)  # the whole split in one batch
        losses = smoothed_cross_entropy(outputs, data.labels)
        # The example's loss is the label-smoothed cross-entropy its docstring says it is.
        expected_losses = F.cross_entropy(
            outputs, data.labels, label_smoothing=SMOOTHING, reduction="none"
        )
        torch.testing.assert_close(losses, expected_losses)
        loss = surface.metrics[f"{split}_loss"][i, j]
        assert math.isclose(loss, float(losses.double().mean()), rel_tol=1e-6), split
        correct = (outputs.argmax(dim=1) == data.labels).double().mean()
        assert math.isclose(surface.metrics[f"{split}_acc"][i, j], 100 * float(correct)), split
    # Away from θ* the weights really moved: the loss differs at every other point.
    train_loss = surface.metrics["train_loss"]
    assert np.count_nonzero(train_loss != train_loss[i, j]) == train_loss.size - 1


def test_three_ranks_give_the_serial_surface(mpi_run, workspace):
    args = ["-m", "lsurf", "sweep", CONFIG, *SMALL, "--set", "output=mpi/surface.h5"]
    done = mpi_run(3, *args, env=example_environment(), cwd=workspace)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_same_surface(workspace / RAW["output"], workspace / "mpi" / "surface.h5")


def test_the_python_api_gives_the_serial_surface(workspace):
    from lsurf.api import sweep

    data = {split: signals(split, size=SIZE) for split in RAW["data"]["splits"]}
    surface = sweep(
        trained_model(workspace),
        data,
        x="-1:1:5",
        y="-1:1:3",
        loss=smoothed_cross_entropy,
        directions=RAW["directions"],
        batch_size=RAW["data"]["batch_size"],
        output=workspace / "api" / "surface.h5",
        log=None,
    )
    assert_same_surface(workspace / RAW["output"], surface.path)
