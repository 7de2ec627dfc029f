"""Your own model, data and loss: import paths on every rank, the Python API, bad input.

The user package is tests/fixtures/toylab, which knows nothing of lsurf; every rank imports
it through PYTHONPATH, the way a researcher's code reaches a cluster job.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lsurf import kinds, params
from lsurf.checkpoint import save_checkpoint
from lsurf.cli import main
from lsurf.config import DirectionsConfig
from lsurf.files.directions import read_directions
from lsurf.files.surface import read_surface
from lsurf.losses import build_loss

FIXTURES = Path(__file__).resolve().parent / "fixtures"
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))

import toylab  # noqa: E402 - needs the fixtures folder on the path


def user_environment() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FIXTURES), env.get("PYTHONPATH")]))
    return env


def run_cli(config: Path, ranks: int = 0, *extra: str, mpi=None) -> subprocess.CompletedProcess:
    """`lsurf sweep` serially (ranks 0), or on `ranks` ranks through the mpi_run fixture."""
    args = ["-m", "lsurf", "sweep", str(config), *extra]
    if ranks:
        return mpi(ranks, *args, env=user_environment())
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=user_environment(), timeout=300
    )


def blob_config(folder: Path, checkpoint: Path, **changes) -> Path:
    config = {
        "model": {
            "name": "toylab:BlobNet",
            "kwargs": {"hidden": 16},
            "checkpoint": str(checkpoint),
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
        "output": str(folder / "surface.h5"),
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        config[section][name] = value
    path = folder / "sweep.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def assert_same_surface(first: Path, second: Path) -> None:
    a, b = read_surface(first), read_surface(second)
    assert sorted(a.metrics) == sorted(b.metrics)
    for name in a.metrics:
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name], err_msg=name)
    assert a.done.all() and b.done.all()


# ---------------------------------------------------------------- one pipeline, three doors


def test_user_package_under_mpiexec_equals_serial_and_the_api(mpi_run, tmp_path, blob_checkpoint):
    serial = blob_config(tmp_path / "serial", blob_checkpoint)
    parallel = blob_config(tmp_path / "mpi", blob_checkpoint)
    done = run_cli(serial, mpi=mpi_run)
    assert done.returncode == 0, done.stderr
    done = run_cli(parallel, 3, mpi=mpi_run)
    assert done.returncode == 0, done.stderr
    assert_same_surface(tmp_path / "serial" / "surface.h5", tmp_path / "mpi" / "surface.h5")
    surface = read_surface(tmp_path / "serial" / "surface.h5")
    # Accuracy is measured: the blobs have class labels and the model scores classes.
    assert sorted(surface.columns) == ["test_acc", "test_loss", "train_acc", "train_loss"]
    assert surface.columns["train_loss"].metric.name == "loss"

    from lsurf.api import sweep

    model = toylab.BlobNet(hidden=16)
    model.load_state_dict(torch.load(blob_checkpoint, weights_only=True)["state_dict"])
    before = {key: value.clone() for key, value in model.state_dict().items()}
    data = {"train": toylab.blobs("train", size=96), "test": toylab.blobs("test", size=96)}
    settings = dict(
        x="-1:1:5", y="-1:1:3", loss=toylab.smooth_hinge, directions={"seed": 1}, batch_size=40
    )
    result = sweep(model, data, output=tmp_path / "api" / "surface.h5", log=None, **settings)
    assert_same_surface(tmp_path / "serial" / "surface.h5", result.path)
    # The caller's model is never moved.
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    # Without an output the API returns the same values from a scratch folder.
    in_memory = sweep(model, data, log=None, **settings)
    np.testing.assert_array_equal(in_memory.metrics["test_loss"], result.metrics["test_loss"])
    assert not in_memory.path.exists()


# ---------------------------------------------------------------- a language model


def test_tiny_language_model_with_a_token_weighted_loss(tmp_path):
    from lsurf.api import sweep

    torch.manual_seed(0)
    model = toylab.TinyLM()
    inputs, targets = toylab.tokens("train")
    surface = sweep(
        model,
        (inputs, targets),
        x="-0.5:0.5:3",
        y="-0.5:0.5:3",
        loss=toylab.token_loss,
        batch_size=7,  # batches that split the padding unevenly
        output=tmp_path / "lm.h5",
        log=None,
    )
    # Token outputs are no class scores per example: no accuracy column.
    assert sorted(surface.columns) == ["train_loss"]

    # An independent recomputation: a fresh model at θ* + a·d1 + b·d2 built by hand from the
    # direction file (tied weights written once, under the embedding's name), the loss as
    # one mean over every real token of the split.
    directions, _ = read_directions(tmp_path / "lm.directions.h5")
    assert "embed.weight" in directions.x and "head.weight" not in directions.x
    theta = {key: value.clone() for key, value in model.state_dict().items()}
    for i, a in enumerate(surface.x):
        for j, b in enumerate(surface.y):
            moved = toylab.TinyLM()
            state = {
                key: theta[key] + a * directions.x[key] + b * directions.y[key]
                if key in directions.x
                else theta[key]
                for key in theta
            }
            state["head.weight"] = state["embed.weight"]
            moved.load_state_dict(state)
            moved.eval()
            with torch.no_grad():
                logits = moved(inputs)
                losses = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]).double(),
                    targets.reshape(-1),
                    ignore_index=toylab.PAD,
                    reduction="sum",
                )
            expected = float(losses) / int((targets != toylab.PAD).sum())
            assert math.isclose(surface.metrics["train_loss"][i, j], expected, rel_tol=2e-4)


def test_tied_weights_move_exactly_once():
    """θ* + a·d at one point equals a hand-built, untied model moved by the same amounts."""
    from lsurf.directions import random_directions
    from lsurf.evaluate import Evaluator

    torch.manual_seed(1)
    model = toylab.TinyLM()
    assert model.head.weight is model.embed.weight
    movable = params.movable(model, include_buffers=False)
    assert "head.weight" not in movable  # one tensor, one name, one direction
    directions = random_directions(movable, "filter", "biasbn", 5, plane=False)
    theta = {key: value.clone() for key, value in model.state_dict().items()}
    inputs, targets = toylab.tokens("test")
    evaluator = Evaluator(
        model,
        directions,
        {"train": (inputs, targets)},
        8,
        torch.device("cpu"),
        loss=build_loss("token", toylab.token_loss),
    )
    evaluator.move_to(0.7, 0.0)
    assert model.head.weight is model.embed.weight
    expected = theta["embed.weight"] + 0.7 * directions.x["embed.weight"]
    # Moved once (not by 2·0.7·d, not left at θ*), to float32 rounding of a·d.
    torch.testing.assert_close(model.embed.weight.detach(), expected, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(theta["embed.weight"], expected)
    # An untied copy moved by hand computes the same outputs.
    untied = toylab.TinyLM()
    untied.head.weight = torch.nn.Parameter(torch.empty_like(untied.embed.weight))
    state = {
        key: theta[key] + 0.7 * directions.x[key] if key in directions.x else theta[key]
        for key in theta
    }
    state["head.weight"] = expected.clone()
    untied.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(inputs), untied.eval()(inputs))
    assert kinds.get("random").moves_buffers(kinds.resolve(DirectionsConfig(), True, [])) is False


# ---------------------------------------------------------------- bad input, one line each


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"model__name": "nosuchpackage.models:Net"},
            "cannot import module 'nosuchpackage.models'",
        ),
        ({"model__name": "toylab:NoSuchNet"}, "has no attribute 'NoSuchNet'"),
        ({"model__name": "toylab:not_a_model"}, "returned a dict, not a torch.nn.Module"),
        (
            {"data__dataset": "toylab:wrong_shape", "data__kwargs": {}},
            "cannot take the train split's inputs",
        ),
        ({"evaluation__loss": "toylab:mean_loss"}, "returned a scalar"),
        ({"model__num_classes": 3}, "the train split has class index 3 but the model outputs 3"),
    ],
)
def test_bad_user_code_is_one_line_exit_2_and_nothing_written(
    tmp_path, blob_checkpoint, capsys, changes, message
):
    config = blob_config(tmp_path / "bad", blob_checkpoint, **changes)
    if "model__num_classes" in changes:  # BlobNet calls it `classes`
        raw = yaml.safe_load(config.read_text())
        raw["model"]["kwargs"]["classes"] = 3
        raw["model"].pop("num_classes")
        raw["model"]["checkpoint"] = str(_three_class_checkpoint(tmp_path))
        config.write_text(yaml.safe_dump(raw))
    assert main(["sweep", str(config)]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error and "Traceback" not in error
    assert sorted(path.name for path in (tmp_path / "bad").iterdir()) == ["sweep.yaml"]


def _three_class_checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / "three.pt"
    save_checkpoint(path, toylab.BlobNet(hidden=16, classes=3).state_dict())
    return path


def test_a_rank_that_cannot_import_the_model_is_named(mpi_run, tmp_path, blob_checkpoint):
    config = blob_config(
        tmp_path / "ranks", blob_checkpoint, model__name="toylab.rankbound:RankNet"
    )
    done = run_cli(config, 3, mpi=mpi_run)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if "error" in line]
    assert lines == [
        "lsurf: error: rank 2: model.name: cannot import module 'toylab.rankbound' "
        "(ModuleNotFoundError: No module named 'toylab.rankbound' on this node); install it or "
        "add its folder to PYTHONPATH on every node"
    ]
    assert sorted(path.name for path in (tmp_path / "ranks").iterdir()) == ["sweep.yaml"]
    # Where no rank can import it (PYTHONPATH forgotten), rank 0 says so first.
    config = blob_config(tmp_path / "none", blob_checkpoint, model__name="mylab_absent:Net")
    done = run_cli(config, 3, mpi=mpi_run)
    assert done.returncode == 2, done.stderr
    assert "lsurf: error: rank 0: model.name: cannot import module 'mylab_absent'" in done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- datasets and models


def sweep_values(config_path: Path, *overrides: str) -> dict:
    args = ["sweep", str(config_path)]
    for override in overrides:
        args += ["--set", override]
    assert main(args) == 0
    raw = yaml.safe_load(config_path.read_text())
    output = Path(raw["output"])
    for override in overrides:
        if override.startswith("output="):
            output = Path(override.removeprefix("output="))
    return read_surface(output)


def test_torchvision_resnet18_sweeps_on_cifar10(tmp_path, cifar_root):
    from lsurf import models

    torch.manual_seed(0)
    model = models.build_named("torchvision.models:resnet18", 10, {})
    save_checkpoint(tmp_path / "r18.pt", model.state_dict())
    config = tmp_path / "r18.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "name": "torchvision.models:resnet18",
                    "num_classes": 10,
                    "checkpoint": str(tmp_path / "r18.pt"),
                },
                "data": {"root": str(cifar_root), "subset": 24, "batch_size": 12},
                "grid": {"x": "-0.5:0.5:2"},
                "output": str(tmp_path / "r18.h5"),
            }
        )
    )
    surface = sweep_values(config)
    assert sorted(surface.columns) == ["train_acc", "train_loss"]
    assert np.isfinite(surface.metrics["train_loss"]).all()
    # BN running statistics stay at θ*: the fc layer and convs move, buffers do not.
    directions, _ = read_directions(tmp_path / "r18.directions.h5")
    assert "fc.weight" in directions.x and "bn1.running_mean" not in directions.x


def test_cifar100_synthetic_data_sweeps_with_the_class_count_from_the_data(
    tmp_path, small_checkpoint
):
    from lsurf import models
    from lsurf.data.synthetic import write_synthetic

    root = write_synthetic(tmp_path / "c100", train_size=60, test_size=20, dataset="cifar100")
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "c.pt", models.build("convnet_small", 100).state_dict())
    raw = {
        "model": {"name": "convnet_small", "checkpoint": str(tmp_path / "c.pt")},
        "data": {"root": str(root), "dataset": "cifar100", "splits": ["train", "test"]},
        "grid": {"x": "-1:1:3"},
        "output": str(tmp_path / "c100.h5"),
    }
    config = tmp_path / "c100.yaml"
    config.write_text(yaml.safe_dump(raw))
    surface = sweep_values(config)
    assert surface.done.all() and sorted(surface.columns)[0] == "test_acc"
    # A registry model's num_classes comes from the data; a wrong one is refused up front.
    raw["model"]["num_classes"] = 10
    config.write_text(yaml.safe_dump(raw))
    assert main(["sweep", str(config), "--set", "output=" + str(tmp_path / "other.h5")]) == 2
    assert not (tmp_path / "other.h5").exists()


def test_an_imagefolder_tree_sweeps_and_streaming_gives_the_cached_values(tmp_path):
    from PIL import Image

    from lsurf import models

    generator = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("cat", "dog", "fox"):
            folder = tmp_path / "tree" / split / label
            folder.mkdir(parents=True)
            for index in range(5):
                size = (40 + 3 * index, 36)
                pixels = generator.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", models.build("convnet_small", 3).state_dict())
    config = tmp_path / "tree.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "name": "convnet_small",
                    "num_classes": 3,
                    "checkpoint": str(tmp_path / "m.pt"),
                },
                "data": {
                    "root": str(tmp_path / "tree"),
                    "dataset": "imagefolder",
                    "splits": ["train", "test"],
                    "batch_size": 4,
                    "workers": 0,
                },
                "grid": {"x": "-1:1:3", "y": "-1:1:2"},
                "output": str(tmp_path / "cached.h5"),
            }
        )
    )
    cached = sweep_values(config)
    streamed = sweep_values(config, "data.cache_mb=0", f"output={tmp_path / 'streamed.h5'}")
    assert cached.done.all() and sorted(cached.columns) == sorted(streamed.columns)
    for name in cached.metrics:
        np.testing.assert_array_equal(cached.metrics[name], streamed.metrics[name], err_msg=name)
    # The plan says which path each split takes.
    from lsurf.config import load_sweep_config
    from lsurf.run.plan import plan_sweep

    lines = plan_sweep(
        load_sweep_config(config, ["data.cache_mb=0", "output=" + str(tmp_path / "p.h5")])
    )
    assert "data     train 15 examples (streamed), test 15 examples (streamed)" in lines


def test_mse_is_the_references_softmax_against_one_hot(tmp_path, blob_checkpoint):
    from lsurf.api import sweep

    model = toylab.BlobNet(hidden=16)
    model.load_state_dict(torch.load(blob_checkpoint, weights_only=True)["state_dict"])
    data = toylab.blobs("test", size=50)
    surface = sweep(model, data, x="0:0:1", loss="mse", batch_size=16, log=None)
    inputs = torch.stack([data[i][0] for i in range(len(data))])
    labels = torch.tensor([data[i][1] for i in range(len(data))])
    with torch.no_grad():
        probabilities = torch.softmax(model.eval()(inputs), dim=1)
    one_hot = torch.nn.functional.one_hot(labels, 4).float()
    expected = float(((probabilities - one_hot) ** 2).mean())
    assert math.isclose(surface.metrics["train_loss"][0], expected, rel_tol=1e-6)
    assert "train_acc" in surface.columns
