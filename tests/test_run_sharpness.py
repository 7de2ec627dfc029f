"""`lsurf sharpness`: the job's measures equal lsurf.sharpness computed by hand on the same
subset; the same bits under mpiexec and after a kill; bad input in one line, nothing written."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from lsurf import models, sharpness
from lsurf.checkpoint import save_checkpoint
from lsurf.cli import main
from lsurf.config import DataConfig
from lsurf.data.splits import open_split
from lsurf.files.sharpness import read_sharpness
from lsurf.losses import build_loss

INJECT = Path(__file__).resolve().parent / "inject"
EXAMPLES, M, BATCH = 96, 32, 48


@pytest.fixture
def sharpness_yaml(tmp_path, cifar_root):
    torch.manual_seed(0)
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, models.build("convnet_small").state_dict())

    def write(section=None, name="sharpness.yaml", **top):
        config = {
            "model": {"name": "convnet_small", "checkpoint": str(checkpoint)},
            "data": {"root": str(cifar_root), "batch_size": BATCH},
            "sharpness": {
                "rho": [0.02, 0.05],
                "samples": 4,
                "steps": 3,
                "examples": EXAMPLES,
                "m": M,
                **(section or {}),
            },
            "output": str(tmp_path / "out" / "sharpness.h5"),
            **top,
        }
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config))
        return path

    return write


def run(config, *extra, env=None):
    return subprocess.run(
        [sys.executable, "-m", "lsurf", "sharpness", str(config), *extra],
        capture_output=True,
        text=True,
        env=env or dict(os.environ, OMP_NUM_THREADS="1"),
    )


def by_hand(config_path):
    """Every measure with lsurf.sharpness directly, on the subset taken by hand: the first
    EXAMPLES examples of the train split in the seeded order, in batches as the job makes."""
    config = yaml.safe_load(Path(config_path).read_text())
    section = config["sharpness"]
    model = models.build("convnet_small")
    model.load_state_dict(
        torch.load(config["model"]["checkpoint"], weights_only=True)["state_dict"]
    )
    data = DataConfig(root=Path(config["data"]["root"]), splits=("train",), batch_size=BATCH)
    split = open_split(data, "train", torch.device("cpu"), channels_last=False)
    order = torch.randperm(len(split.targets), generator=torch.Generator().manual_seed(0))
    inputs, targets = split.inputs[order[:EXAMPLES]], split.targets[order[:EXAMPLES]]

    def batches(size):
        return [(inputs[i : i + size], targets[i : i + size]) for i in range(0, EXAMPLES, size)]

    moving = {n: p for n, p in model.named_parameters() if p.dim() > 1}  # ignore: biasbn
    loss = build_loss("cross_entropy")
    found = {}
    for rho in section["rho"]:
        average = sharpness.AverageCase(rho, section["samples"], 0, False)
        found[("average", rho)] = sharpness.average_case(
            model, moving, batches(BATCH), loss, average
        )
        worst = sharpness.WorstCase(rho, 3, 2 * rho / 3, "l2", False, False, 0)
        found[("worst", rho)] = sharpness.worst_case(model, moving, batches(BATCH), loss, worst)
        found[("m", rho)] = sharpness.m_sharpness(model, moving, batches(M), loss, worst)
    return found


def test_the_job_equals_the_measures_by_hand_and_info_prints_them(sharpness_yaml, capsys):
    config = sharpness_yaml()
    assert main(["sharpness", str(config)]) == 0
    out = capsys.readouterr().out
    found = read_sharpness(Path(yaml.safe_load(config.read_text())["output"]))
    assert found.complete and len(found.results) == 6
    expected = by_hand(config)
    for result in found.results:
        mine = expected[(result.measure, result.rho)]
        value = mine if isinstance(mine, float) else mine.value
        assert result.estimate.value == pytest.approx(value, rel=1e-6, abs=1e-9), result
        if not isinstance(mine, float):
            assert result.estimate.standard_error == pytest.approx(mine.standard_error, rel=1e-5)
    assert "  m-sharpness        0.05" in out and "done     17/17 units, complete" in out
    with h5py.File(found.path, "r") as h5file:  # the stored table is the computed one
        table = h5file["results"][()]
    stored = [row[1] for row in table]
    assert stored == [result.estimate.value for result in found.results]
    assert main(["sharpness", str(config)]) == 0
    assert "is already complete" in capsys.readouterr().err
    assert main(["plot", str(found.path)]) == 0
    assert Path(capsys.readouterr().out.strip()).read_bytes()[:4] == b"\x89PNG"


def values_of(path):
    return {name: part.values for name, part in read_sharpness(path).parts.items()}


def test_three_ranks_and_a_killed_run_give_the_serial_file_bit_for_bit(
    mpi_run, sharpness_yaml, tmp_path
):
    serial = sharpness_yaml(output=str(tmp_path / "serial.h5"), name="serial.yaml")
    assert run(serial).returncode == 0
    expected = values_of(tmp_path / "serial.h5")

    ranks = sharpness_yaml(output=str(tmp_path / "ranks.h5"), name="ranks.yaml")
    job = mpi_run(3, "-m", "lsurf", "sharpness", str(ranks))
    assert job.returncode == 0, job.stderr
    assert "on 2 workers" in job.stderr
    for name, values in values_of(tmp_path / "ranks.h5").items():
        np.testing.assert_array_equal(values, expected[name], err_msg=name)

    killed = sharpness_yaml(output=str(tmp_path / "killed.h5"), name="killed.yaml")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(INJECT))
    env["LSURF_TEST_SLOW_SECONDS"] = "0.3"
    process = subprocess.Popen(
        [sys.executable, "-m", "lsurf", "sharpness", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while done_units(tmp_path / "killed.h5") < 5:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = read_sharpness(tmp_path / "killed.h5")  # readable
    assert not partial.complete
    again = run(killed)
    assert again.returncode == 0 and "resuming" in again.stderr, again.stderr
    for name, values in values_of(tmp_path / "killed.h5").items():
        np.testing.assert_array_equal(values, expected[name], err_msg=name)


def done_units(path):
    if not path.exists():
        return 0
    try:
        with h5py.File(path, "r", locking=False) as h5file:
            parts = json.loads(h5file.attrs["parts"])
            return sum(int(h5file[name]["done"][()].sum()) for name in parts)
    except (OSError, KeyError):
        return 0


def test_bad_input_is_one_line_exit_2_and_nothing_written(sharpness_yaml, tmp_path, capsys):
    output = tmp_path / "out" / "sharpness.h5"
    cases = [
        ({"rho": [0.0]}, "sharpness.rho must be radii above 0, got 0.0"),
        ({"rho": [-0.1]}, "sharpness.rho must be radii above 0, got -0.1"),
        ({"steps": 0}, "sharpness.steps must be"),
        ({"examples": 5000}, "sharpness.examples is 5000 but the train split has 200 examples"),
        ({"measures": ["sharpest"]}, "sharpness.measures"),
        ({"norm": "l1"}, "sharpness.norm"),
        ({"m": 200}, "sharpness.m (200) is more than sharpness.examples (96)"),
    ]
    for section, message in cases:
        capsys.readouterr()
        assert main(["sharpness", str(sharpness_yaml(section))]) == 2
        error = capsys.readouterr().err
        assert error.startswith("lsurf: error: ") and message in error, error
        assert error.count("\n") == 1 and not output.exists()
    # A file made for other settings is refused, and left as it was.
    assert main(["sharpness", str(sharpness_yaml({"rho": [0.02]}))]) == 0
    before = output.read_bytes()
    capsys.readouterr()
    assert main(["sharpness", str(sharpness_yaml({"rho": [0.03]}))]) == 2
    error = capsys.readouterr().err
    assert "holds another sharpness job (differs in: sharpness.rho" in error, error
    assert output.read_bytes() == before
    assert math.isfinite(read_sharpness(output).results[0].estimate.value)


def test_rho_on_the_command_line_lists_the_radii_of_the_curve(sharpness_yaml, capsys):
    config = sharpness_yaml({"measures": ["worst"], "steps": 1})
    assert main(["sharpness", str(config), "--rho", "0.01,0.04,0.02"]) == 0
    found = read_sharpness(Path(yaml.safe_load(config.read_text())["output"]))
    assert [(r.measure, r.rho) for r in found.results] == [
        ("worst", 0.01),
        ("worst", 0.04),
        ("worst", 0.02),
    ]
    assert list(found.parts) == ["origin", "worst/rho=0.01", "worst/rho=0.04", "worst/rho=0.02"]
    assert "  worst-case         0.04" in capsys.readouterr().out
