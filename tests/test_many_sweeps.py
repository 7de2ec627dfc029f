"""Several sweeps in one job (`lsurf sweep A.yaml B.yaml C.yaml`): one queue, one file each.

Each sweep has its own model, data, loss, directions and output; each file must equal the
sweep run alone, bit for bit, under any rank count, and each must resume on its own after a
kill. Bad input in any sweep stops the job before anything of any sweep is written.
"""

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from surface_helpers import done_count
from test_mpi import INJECT, environment, finish, kill_tree

from lsurf.cli import main
from lsurf.files.surface import read_surface

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def three_sweeps(tmp_path, cifar_root, small_checkpoint, blob_checkpoint):
    """Write three unlike sweep configs into `folder`; return their paths and outputs."""

    def write(folder: Path, **overrides) -> tuple[list[Path], list[Path]]:
        folder.mkdir(parents=True, exist_ok=True)
        cifar = {"root": str(cifar_root), "splits": ["train", "test"], "batch_size": 64}
        configs = {
            # convnet_small on (synthetic) CIFAR-10, a random plane, non-square.
            "a": {
                "model": {"name": "convnet_small", "checkpoint": str(small_checkpoint)},
                "data": cifar,
                "directions": {"kind": "random", "seed": 0},
                "grid": {"x": "-1:1:6", "y": "-0.5:0.5:4"},
            },
            # The researcher's own model, data and loss (tests/fixtures/toylab).
            "b": {
                "model": {
                    "name": "toylab:BlobNet",
                    "kwargs": {"hidden": 16},
                    "checkpoint": str(blob_checkpoint),
                },
                "data": {
                    "dataset": "toylab:blobs",
                    "kwargs": {"size": 96},
                    "splits": ["train", "test"],
                    "batch_size": 40,
                },
                "evaluation": {"loss": "toylab:smooth_hinge"},
                "directions": {"seed": 1},
                "grid": {"x": "-1:1:5", "y": "-1:1:3"},
            },
            # The first model again on its test split only, a 1D line of another seed: its
            # data is the first sweep's, shared by a worker that moves on to it.
            "c": {
                "model": {"name": "convnet_small", "checkpoint": str(small_checkpoint)},
                "data": {**cifar, "splits": ["test"], "batch_size": 100},
                "hessian": {"split": "test"},
                "directions": {"kind": "random", "seed": 7},
                "grid": {"x": "-1:1:9"},
            },
        }
        paths, outputs = [], []
        for name, config in configs.items():
            config["output"] = str(folder / f"{name}.h5")
            for key, value in overrides.get(name, {}).items():
                section, _, field = key.partition(".")
                config[section][field] = value
            path = folder / f"{name}.yaml"
            path.write_text(yaml.safe_dump(config))
            paths.append(path)
            outputs.append(folder / f"{name}.h5")
        return paths, outputs

    return write


def user_environment(**extra) -> dict[str, str]:
    env = environment(**extra)
    paths = [str(FIXTURES), *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def launch(ranks: int, configs: list[Path], *extra: str, env=None, mpi=None):
    """The job serially (ranks 0), or on `ranks` ranks through the mpi_run fixture `mpi`."""
    import subprocess

    args = ["-m", "lsurf", "sweep", *map(str, configs), *extra]
    if ranks:
        return mpi.start(ranks, *args, env=env or user_environment())
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env or user_environment(),
        text=True,
    )


@pytest.fixture
def alone(three_sweeps, tmp_path):
    """Each of the three sweeps run on its own, serially: the surfaces to match."""
    configs, outputs = three_sweeps(tmp_path / "alone")
    for config in configs:
        code, text = finish(launch(0, [config]))
        assert code == 0, text
    return [read_surface(output) for output in outputs]


def assert_same(output: Path, reference) -> None:
    surface = read_surface(output)
    assert surface.done.all(), output
    assert sorted(surface.metrics) == sorted(reference.metrics)
    for name, values in reference.metrics.items():
        np.testing.assert_array_equal(surface.metrics[name], values, err_msg=f"{output} {name}")


def test_three_sweeps_in_one_mpi_job_each_equal_to_its_serial_run(
    mpi_run, three_sweeps, alone, tmp_path
):
    configs, outputs = three_sweeps(tmp_path / "together")
    code, text = finish(launch(3, configs, mpi=mpi_run))
    assert code == 0, text
    assert "3 sweeps in one queue, 48 points to go on 2 workers" in text  # 24 + 15 + 9
    for output, reference in zip(outputs, alone, strict=True):
        assert f"surface written to {output}" in text
        assert_same(output, reference)


def test_a_job_of_three_sweeps_killed_and_rerun_finishes_all_three_equal(
    mpi_run, three_sweeps, alone, tmp_path
):
    configs, outputs = three_sweeps(tmp_path / "killed")
    slowed = user_environment(LSURF_TEST_SLOW_SECONDS="0.1", PYTHONPATH=str(INJECT))
    process = launch(3, configs, env=slowed, mpi=mpi_run)
    # Killed once the second sweep is under way: the first is complete or nearly, the last
    # not started.
    deadline = time.monotonic() + 150
    while done_count(outputs[1]) < 3:
        assert process.poll() is None, finish(process)[1]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    kill_tree(process.pid)
    for output, reference in zip(outputs, alone, strict=True):
        surface = read_surface(output)  # every file opens after the kill
        for name, values in reference.metrics.items():
            done = surface.done
            np.testing.assert_array_equal(surface.metrics[name][done], values[done])
    assert not read_surface(outputs[1]).done.all()
    code, text = finish(launch(3, configs, mpi=mpi_run))
    assert code == 0, text
    assert f"resuming {outputs[1]}" in text
    for output, reference in zip(outputs, alone, strict=True):
        assert_same(output, reference)
    # Rerun once more: all three complete, nothing to do, no file touched.
    before = [output.read_bytes() for output in outputs]
    code, text = finish(launch(3, configs, mpi=mpi_run))
    assert code == 0 and text.count("is already complete") == 3, text
    assert [output.read_bytes() for output in outputs] == before


def test_bad_data_in_one_sweep_stops_the_job_before_any_file_is_written(
    mpi_run, three_sweeps, tmp_path
):
    missing = {"c": {"data.root": str(tmp_path / "nowhere")}}
    configs, outputs = three_sweeps(tmp_path / "bad", **missing)
    code, text = finish(launch(3, configs, mpi=mpi_run))
    assert code == 2, text
    errors = [line for line in text.splitlines() if line.startswith("lsurf: error:")]
    assert len(errors) == 1 and "lsurf data synth" in errors[0], text
    assert "Traceback" not in text
    assert not any(output.exists() for output in outputs)
    assert not any(path.name.endswith("directions.h5") for path in (tmp_path / "bad").iterdir())


def test_several_sweeps_serially_equal_each_alone_and_resume_on_their_own(
    three_sweeps, tmp_path, monkeypatch, capsys
):
    monkeypatch.syspath_prepend(str(FIXTURES))
    configs, outputs = three_sweeps(tmp_path / "alone")
    for config in configs:
        assert main(["sweep", str(config)]) == 0
    alone = [read_surface(output) for output in outputs]
    together, outputs = three_sweeps(tmp_path / "together")
    assert main(["sweep", str(together[1])]) == 0  # one of them done before
    capsys.readouterr()
    assert main(["sweep", *map(str, together), "--log-every", "100"]) == 0
    text = capsys.readouterr().err
    assert f"{outputs[1]} is already complete" in text
    assert "2 sweeps in one queue, 33 points to go" in text  # a and c: 24 + 9
    assert f"starting {outputs[0]}: 0/24 points done" in text
    for output, reference in zip(outputs, alone, strict=True):
        assert_same(output, reference)


def test_plan_covers_every_sweep_and_the_job(three_sweeps, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(FIXTURES))
    configs, outputs = three_sweeps(tmp_path / "plan")
    assert main(["sweep", *map(str, configs), "--plan"]) == 0
    text = capsys.readouterr().out
    for output in outputs:
        assert f"plan for {output} (nothing written)" in text
    assert "together 3 sweeps (3 to run) in one queue, 48 points to evaluate" in text
    assert "48 points on 16 workers" in text
    assert sorted(path.name for path in (tmp_path / "plan").iterdir()) == [
        "a.yaml",
        "b.yaml",
        "c.yaml",
    ]


def test_two_sweeps_writing_one_output_are_refused_before_any_work(three_sweeps, tmp_path, capsys):
    configs, _ = three_sweeps(tmp_path / "same")
    config = yaml.safe_load(configs[1].read_text())
    config["output"] = str(tmp_path / "same" / "a.h5")
    configs[1].write_text(yaml.safe_dump(config))
    assert main(["sweep", *map(str, configs)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "sweeps 1 and 2 of this job both write" in error and "its own output" in error
    assert not (tmp_path / "same" / "a.h5").exists()


def test_one_direction_file_serves_sweeps_of_the_same_directions_and_refuses_others(
    three_sweeps, tmp_path, capsys
):
    shared = str(tmp_path / "dirs" / "shared.h5")
    # a and a second plane of the same model and seed at another resolution: one file, written
    # once; a third sweep asking other directions of that file is refused, nothing written.
    same = {"a": {"directions.file": shared}, "c": {"directions.file": shared}}
    configs, outputs = three_sweeps(tmp_path / "dirs", **same)
    finer = yaml.safe_load(configs[0].read_text())
    finer["grid"] = {"x": "-1:1:3", "y": "-0.5:0.5:3"}
    finer["output"] = str(tmp_path / "dirs" / "finer.h5")
    path = tmp_path / "dirs" / "finer.yaml"
    path.write_text(yaml.safe_dump(finer))
    assert main(["sweep", str(configs[0]), str(path), str(configs[2])]) == 2
    error = capsys.readouterr().err
    assert "would write different directions to one direction file" in error, error
    assert not (tmp_path / "dirs" / "shared.h5").exists() and not outputs[0].exists()
    assert main(["sweep", str(configs[0]), str(path)]) == 0
    first, second = read_surface(outputs[0]), read_surface(tmp_path / "dirs" / "finer.h5")
    assert first.attributes["directions_sha256"] == second.attributes["directions_sha256"]


def test_a_worker_builds_one_evaluator_at_a_time_and_reads_shared_data_once(
    three_sweeps, tmp_path, monkeypatch
):
    import torch

    from lsurf.config import load_sweep_config
    from lsurf.run import phases
    from lsurf.run.worker import Evaluators

    monkeypatch.syspath_prepend(str(FIXTURES))
    configs, _ = three_sweeps(tmp_path / "bench")
    setups = [phases.prepare(load_sweep_config(config)).worker_setup() for config in configs]
    opened = []

    def counting_open(data, name, device, channels_last):
        opened.append((data.dataset, name))
        return phases.open_split(data, name, device, channels_last)

    sources = phases.Sources(
        phases.FROM_CONFIG.build_model,
        phases.FROM_CONFIG.load_origin,
        counting_open,
        phases.FROM_CONFIG.loss,
    )
    evaluators = Evaluators(setups, lambda setup: torch.device("cpu"), sources)
    columns = evaluators.check().columns  # c, b, a: every sweep built once, ending on the first
    assert [len(found) for found in columns] == [4, 4, 2]
    # Each build keeps only the splits its sweep uses: b's blobs replace c's test split, and
    # a reads its own.
    assert opened == [
        ("cifar10", "test"),
        ("toylab:blobs", "train"),
        ("toylab:blobs", "test"),
        ("cifar10", "train"),
        ("cifar10", "test"),
    ]
    first = evaluators.get(0)
    assert evaluators.get(0) is first and len(opened) == 5  # no rebuild while on one sweep
    evaluators.get(2)  # a's test split serves c (same data settings, other splits and batch)
    assert opened[5:] == []
