"""lsurf.train.curve: the curve's points, a trained bend that lowers the loss along it, the
ends untouched, resume after kill -9 to the same bits, refusals and bad input."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lsurf import checkpoint, models
from lsurf.config import DataConfig, ModelConfig, TrainConfig, TrainingConfig
from lsurf.errors import CheckpointError, ConfigError
from lsurf.evaluate import measure
from lsurf.grid import path_point
from lsurf.train import curve as curve_module
from lsurf.train.curve import (
    curve_parameters,
    curve_point,
    curve_weights,
    midpoint,
    train_curve,
)
from lsurf.train.recipe import draw_epoch_with, epoch_generator
from lsurf.train.trainer import load_training_split, train

TESTS = Path(__file__).resolve().parent
CPU = torch.device("cpu")


def random_state(seed: int, name: str = "convnet_small", num_classes: int = 10) -> dict:
    """A registry model's full state, seeded, with BN statistics that differ between seeds."""
    torch.manual_seed(seed)
    model = models.build(name, num_classes)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.num_batches_tracked.fill_(10 + seed)
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def parameter_names(name: str) -> list[str]:
    return [key for key, _ in models.build(name).named_parameters()]


def bend_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def assert_same(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key  # bit for bit


def read_log(folder: Path) -> list[dict[str, str]]:
    with open(folder / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in folder.iterdir()}


def quiet(message: str) -> None:
    pass


# ---------------------------------------------------------------------------- the curve's points


@pytest.mark.parametrize("curve", ["bezier", "polychain"])
def test_the_curve_is_exactly_a_at_0_and_b_at_1(curve):
    start, bend, end = (random_state(seed) for seed in (0, 1, 2))
    names = parameter_names("convnet_small")
    start, bend, end = ({key: state[key] for key in names} for state in (start, bend, end))
    start["linear.bias"][0] = -0.0  # a signed zero stays itself at t = 0
    assert curve_point(curve, 0.0) == (0.0, 0.0) and curve_point(curve, 1.0) == (1.0, 0.0)
    assert curve_weights(curve, 0.0) == (1.0, 0.0, 0.0)
    assert curve_weights(curve, 1.0) == (0.0, 0.0, 1.0)
    at_start = curve_parameters(curve, 0.0, start, bend, end)
    at_end = curve_parameters(curve, 1.0, start, bend, end)
    assert_same(at_start, start)
    assert_same(at_end, end)
    assert torch.signbit(at_start["linear.bias"][0])


def test_the_midpoints_by_hand():
    a, c, b = torch.tensor([1.0, -2.0]), torch.tensor([4.0, 8.0]), torch.tensor([3.0, 2.0])
    ends, bend = ({"w": a}, {"w": b}), {"w": c}

    def at(curve, t):
        return curve_parameters(curve, t, ends[0], bend, ends[1])["w"]

    # bezier: (1 − t)²·A + 2t(1 − t)·C + t²·B, at t = 1/2 A/4 + C/2 + B/4 = (3.0, 4.0).
    assert torch.equal(at("bezier", 0.5), torch.tensor([3.0, 4.0]))
    assert curve_point("bezier", 0.5) == (0.25, 0.5)
    assert curve_weights("bezier", 0.25) == (0.5625, 0.375, 0.0625)
    # polychain: the bend at t = 1/2; halfway along each segment, the segment's midpoint.
    assert torch.equal(at("polychain", 0.5), c)
    assert torch.equal(at("polychain", 0.25), (a + c) / 2)
    assert torch.equal(at("polychain", 0.75), (c + b) / 2)
    assert curve_point("polychain", 0.5) == (0.0, 1.0)
    assert curve_point("polychain", 0.25) == (0.0, 0.5)
    assert curve_point("polychain", 0.75) == (0.5, 0.5)
    # The bend's initial value: the midpoint of A and B.
    assert torch.equal(midpoint(ends[0], ends[1])["w"], torch.tensor([2.0, 0.0]))


@pytest.mark.parametrize("curve", ["bezier", "polychain"])
def test_the_trained_point_is_the_plane_point_connect_evaluates(curve):
    """What training moves along is what the evaluation sweeps: (1 − a − b)·A + a·B + b·C,
    with (a, b) = curve_point(t) = lsurf.grid.path_point, the plane a connect path runs on."""
    torch.manual_seed(0)
    start, bend, end = ({"w": torch.randn(1000, dtype=torch.float64)} for _ in range(3))
    for t in torch.linspace(0, 1, 41).tolist():
        a, b = curve_point(curve, t)
        assert (a, b) == path_point(curve, t)
        on_plane = (1 - a - b) * start["w"] + a * end["w"] + b * bend["w"]
        found = curve_parameters(curve, t, start, bend, end)["w"]
        torch.testing.assert_close(found, on_plane, rtol=0, atol=1e-14)
        assert sum(curve_weights(curve, t)) == pytest.approx(1.0, abs=1e-15)


def test_the_gradient_reaches_the_bend_weighted_by_its_share():
    start, end = {"w": torch.randn(5)}, {"w": torch.randn(5)}
    bend = {"w": torch.randn(5, requires_grad=True)}
    curve_parameters("bezier", 0.3, start, bend, end)["w"].sum().backward()
    assert torch.equal(bend["w"].grad, torch.full((5,), 2 * 0.3 * 0.7))


# ---------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained_ends(cifar_root, tmp_path_factory) -> tuple[dict, dict, DataConfig]:
    """Two mlp_small networks trained with lsurf train on the synthetic set, seeds 0 and 1."""
    data = DataConfig(root=cifar_root, batch_size=32)
    runs = tmp_path_factory.mktemp("ends")
    states = []
    for seed in (0, 1):
        recipe = TrainingConfig(epochs=10, lr=0.05, seed=seed, augment=False, save_every=10)
        config = TrainConfig(
            ModelConfig("mlp_small", num_classes=10), data, runs / f"{seed}", recipe
        )
        states.append(checkpoint.read_state_dict(train(config, log=quiet)))
    return states[0], states[1], data


@pytest.mark.parametrize("curve", ["bezier", "polychain"])
def test_a_trained_bend_lowers_the_loss_at_the_middle_and_moves_nothing_else(
    curve, trained_ends, tmp_path
):
    start, end, data = trained_ends
    before = [{key: value.clone() for key, value in state.items()} for state in (start, end)]
    lines: list[str] = []
    recipe = TrainingConfig(epochs=10, lr=0.05, augment=False)
    bend_file = train_curve(
        lambda: models.build("mlp_small"),
        start,
        end,
        curve,
        recipe,
        data,
        tmp_path,
        log=lines.append,
    )

    # A and B are as they were, to the bit.
    assert_same(start, before[0])
    assert_same(end, before[1])
    assert bend_file == tmp_path / "bend.pt"
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "bend.pt",
        "config.yaml",
        "log.csv",
        "resume.pt",
    ]
    # bend.pt is an lsurf checkpoint: load_weights reads it, and it says what it was made for.
    model = models.build("mlp_small")
    checkpoint.load_weights(model, bend_file)
    stored = torch.load(bend_file, weights_only=True)
    assert stored["epoch"] == 10 and stored["bend"]["curve"] == curve
    assert stored["bend"]["training"]["lr"] == 0.05
    bend = stored["state_dict"]
    assert not torch.equal(bend["fc1.weight"], midpoint(start, end)["fc1.weight"])  # trained

    split = load_training_split(data, CPU)
    names = parameter_names("mlp_small")

    def loss(state: dict[str, torch.Tensor]) -> float:
        model.load_state_dict(state)
        model.eval()
        return measure(model, split, 100, "cpu").loss

    on_curve = curve_parameters(curve, 0.5, start, {key: bend[key] for key in names}, end)
    losses = {
        "A": loss(start),
        "B": loss(end),
        "linear midpoint": loss(midpoint(start, end)),
        f"{curve} midpoint": loss(on_curve),
    }
    print(f"\n{curve}: train loss " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
    assert losses[f"{curve} midpoint"] < losses["linear midpoint"] / 4

    # One log line per epoch, between the start and end lines.
    assert len(lines) == 12 and "from the midpoint of A and B" in lines[0]
    assert lines[1].startswith("epoch 1/10  lr 0.05  train_loss ")
    rows = read_log(tmp_path)
    assert list(rows[0]) == ["epoch", "lr", "train_loss", "train_acc", "seconds"]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


@pytest.mark.parametrize("decay", ["point", "bend"])
def test_one_step_of_the_bend_equals_sgd_by_hand_with_either_decay(decay, trained_ends, tmp_path):
    # One epoch of one batch (the whole split), plain SGD: C' = C − lr·∇C. With `point`
    # (Garipov et al.) the loss is CE(θ(t)) + ½·wd·‖θ(t)‖², the optimizer decaying nothing;
    # with `bend` the loss is CE(θ(t)) and the optimizer adds wd·C.
    start, end, data = trained_ends
    data = DataConfig(root=data.root, batch_size=1000)
    lr, wd = 0.1, 0.05
    recipe = TrainingConfig(epochs=1, lr=lr, momentum=0.0, weight_decay=wd, augment=False)
    build = lambda: models.build("mlp_small")  # noqa: E731
    bend_file = train_curve(
        build, start, end, "bezier", recipe, data, tmp_path, log=quiet, decay=decay
    )
    assert torch.load(bend_file, weights_only=True)["bend"]["weight_decay_on"] == decay

    split = load_training_split(data, CPU)
    generator = epoch_generator(recipe.seed, 1)
    order = draw_epoch_with(generator, len(split)).order
    t = torch.rand(1, dtype=torch.float64, generator=generator).item()
    names = parameter_names("mlp_small")
    bend = {name: midpoint(start, end)[name].clone().requires_grad_(True) for name in names}
    point = curve_parameters("bezier", t, start, bend, end)
    model = build()
    logits = torch.func.functional_call(model, point, (split.images[order],))
    loss = torch.nn.functional.cross_entropy(logits, split.labels[order])
    squares = 0.5 * sum(tensor.square().sum() for tensor in point.values())
    leaves = [bend[name] for name in names]
    from_loss = torch.autograd.grad(loss, leaves, retain_graph=True)
    from_squares = torch.autograd.grad(squares, leaves)
    trained = bend_state(bend_file)
    for k, name in enumerate(names):
        c = bend[name].detach()
        decayed = wd * (from_squares[k] if decay == "point" else c)
        torch.testing.assert_close(trained[name], c - lr * (from_loss[k] + decayed))
        # The decay is no rounding error here: without it the step lands elsewhere.
        assert (trained[name] - (c - lr * from_loss[k])).abs().max() > 1e-4 * c.abs().max()


def test_the_bends_buffers_are_the_midpoint_of_the_ends(cifar_root, tmp_path):
    """BatchNorm trains with batch statistics; its running statistics stay (A + B)/2, and the
    batch counter is A's."""
    start, end = random_state(0), random_state(1)
    data = DataConfig(root=cifar_root, batch_size=50)
    recipe = TrainingConfig(epochs=1, lr=0.05)
    path = train_curve(
        lambda: models.build("convnet_small"),
        start,
        end,
        "polychain",
        recipe,
        data,
        tmp_path,
        log=quiet,
    )
    bend = bend_state(path)
    assert torch.equal(
        bend["bn1.running_mean"], (start["bn1.running_mean"] + end["bn1.running_mean"]) / 2
    )
    assert torch.equal(
        bend["bn2.running_var"], (start["bn2.running_var"] + end["bn2.running_var"]) / 2
    )
    assert int(bend["bn1.num_batches_tracked"]) == 10  # A's
    assert not torch.equal(bend["conv1.weight"], midpoint(start, end)["conv1.weight"])


# ---------------------------------------------------------------------------- resume


KILLED_EPOCHS = 12


def train_killable(output: str, root: str) -> Path:
    """The run the kill test interrupts; also what a subprocess runs (`python -c`)."""
    data = DataConfig(root=Path(root), batch_size=16)
    recipe = TrainingConfig(
        epochs=KILLED_EPOCHS, lr=0.05, nesterov=True, schedule="step", milestones=(4, 8)
    )
    return train_curve(
        lambda: models.build("convnet_small"),
        random_state(0),
        random_state(1),
        "bezier",
        recipe,
        data,
        Path(output),
        log=quiet,
    )


def test_kill_9_mid_run_then_rerun_ends_with_the_uninterrupted_bend(cifar_root, tmp_path):
    reference = train_killable(str(tmp_path / "reference"), str(cifar_root))

    run = tmp_path / "interrupted"
    # The child trains in this process's threads: 2 threads give other bits than 1.
    code = (
        f"import sys, torch; torch.set_num_threads({torch.get_num_threads()}); "
        f"sys.path.insert(0, {str(TESTS)!r}); import test_curve; "
        f"test_curve.train_killable({str(run)!r}, {str(cifar_root)!r})"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    # Two epochs in the log: epoch 2 is written, its commit maybe not yet.
    while process.poll() is None and not (
        (run / "log.csv").is_file() and len((run / "log.csv").read_text().splitlines()) > 2
    ):
        assert time.monotonic() < deadline, "the curve's training made no progress"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, process.stderr.read().decode()  # still training
    committed = torch.load(run / "resume.pt", weights_only=True)["epoch"]
    assert 1 <= committed < KILLED_EPOCHS
    assert not (run / "bend.pt").exists()

    assert train_killable(str(run), str(cifar_root)) == run / "bend.pt"
    assert_same(bend_state(run / "bend.pt"), bend_state(reference))
    rows, expected = read_log(run), read_log(reference.parent)
    assert [int(row["epoch"]) for row in rows] == list(range(1, KILLED_EPOCHS + 1))
    for row, reference_row in zip(rows, expected, strict=True):
        row.pop("seconds"), reference_row.pop("seconds")
        assert row == reference_row  # the same lr, loss and accuracy, to the last digit


def test_a_crash_after_the_bend_is_written_redoes_the_last_epoch(cifar_root, tmp_path, monkeypatch):
    """Killed between bend.pt and its commit: the rerun discards that bend.pt and ends with
    the bend of an uninterrupted run."""
    start, end = random_state(0), random_state(1)
    data = DataConfig(root=cifar_root, batch_size=50)
    recipe = TrainingConfig(epochs=3, optimizer="adam", lr=0.01, schedule="cosine")

    def run(output: Path) -> Path:
        build = lambda: models.build("convnet_small")  # noqa: E731
        return train_curve(build, start, end, "bezier", recipe, data, output, log=quiet)

    reference = run(tmp_path / "reference")
    real_commit = curve_module.folder.commit

    def crash_at_the_last_commit(out, model, optimizer, epoch, rows):
        if epoch == 3:
            raise KeyboardInterrupt
        real_commit(out, model, optimizer, epoch, rows)

    monkeypatch.setattr(curve_module.folder, "commit", crash_at_the_last_commit)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "crashed")
    monkeypatch.undo()
    crashed = tmp_path / "crashed"
    assert (crashed / "bend.pt").exists() and len(read_log(crashed)) == 3
    assert torch.load(crashed / "resume.pt", weights_only=True)["epoch"] == 2
    (crashed / "bend.pt").write_bytes(b"a bend that never committed")

    lines: list[str] = []
    train_curve(
        lambda: models.build("convnet_small"), start, end, "bezier", recipe, data, crashed,
        log=lines.append,
    )  # fmt: skip
    assert "epochs 3-3 of 3" in lines[0]
    assert_same(bend_state(crashed / "bend.pt"), bend_state(reference))
    assert [row["train_loss"] for row in read_log(crashed)] == [
        row["train_loss"] for row in read_log(reference.parent)
    ]


# ---------------------------------------------------------------------------- the folder


def test_a_trained_folder_returns_at_once_and_other_settings_are_refused(cifar_root, tmp_path):
    start, end = random_state(0), random_state(1)
    data = DataConfig(root=cifar_root, batch_size=100)
    recipe = TrainingConfig(epochs=1, lr=0.05)
    build = lambda: models.build("convnet_small")  # noqa: E731
    path = train_curve(build, start, end, "bezier", recipe, data, tmp_path, log=quiet)
    before = snapshot(tmp_path)

    lines: list[str] = []
    assert (
        train_curve(build, start, end, "bezier", recipe, data, tmp_path, log=lines.append) == path
    )
    assert len(lines) == 1 and "already trained (1 epochs)" in lines[0]
    assert snapshot(tmp_path) == before

    other_end = random_state(2)
    other_recipe = TrainingConfig(epochs=1, lr=0.1)
    for change, key in [
        (dict(curve="polychain"), "curve"),
        (dict(end=other_end), "end_sha256"),
        (dict(training=other_recipe), "training.lr"),
        (dict(data=DataConfig(root=cifar_root, batch_size=50)), "data.batch_size"),
    ]:
        arguments = dict(curve="bezier", end=end, training=recipe, data=data)
        arguments.update(change)
        with pytest.raises(ConfigError) as error:
            train_curve(build, start, output=tmp_path, log=quiet, **arguments)
        message = str(error.value)
        assert "\n" not in message and f"differs in {key})" in message and "--force" in message
    assert snapshot(tmp_path) == before
    # What changes no number of the bend is not compared: an evaluation's splits, workers.
    calm = DataConfig(root=cifar_root, batch_size=100, splits=("train", "test"), workers=0)
    assert train_curve(build, start, end, "bezier", recipe, calm, tmp_path, log=quiet) == path

    (tmp_path / "surface.h5").write_bytes(b"beside the run")
    train_curve(build, start, end, "polychain", recipe, data, tmp_path, force=True, log=quiet)
    assert torch.load(path, weights_only=True)["bend"]["curve"] == "polychain"
    assert (tmp_path / "surface.h5").exists()


# ---------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line_and_touches_nothing(cifar_root, tmp_path):
    data = DataConfig(root=cifar_root)
    recipe = TrainingConfig(epochs=1)
    convnet, mlp = random_state(0), random_state(1, "mlp_small")
    wide = random_state(1, "mlp_small", num_classes=100)
    build = lambda: models.build("mlp_small")  # noqa: E731
    output = tmp_path / "curve"
    cases = [
        (dict(start=mlp, end=convnet), CheckpointError, "B has no 'fc1.weight', which A has"),
        (dict(start=convnet, end=convnet), CheckpointError, "A has no 'fc1.weight'"),
        (
            dict(start=mlp, end=wide),
            CheckpointError,
            "'linear.weight' is (10, 64) in A but (100, 64) in B",
        ),
        (
            dict(curve="spline"),
            ConfigError,
            "unknown curve 'spline'; valid curves: bezier, polychain",
        ),
        (
            dict(training=TrainingConfig(epochs=0)),
            ConfigError,
            "training.epochs must be at least 1",
        ),
    ]
    for change, error_type, expected in cases:
        arguments = dict(
            start=mlp, end=random_state(2, "mlp_small"), curve="bezier", training=recipe
        )
        arguments.update(change)
        with pytest.raises(error_type) as error:
            train_curve(build, data=data, output=output, log=quiet, **arguments)
        assert expected in str(error.value) and "\n" not in str(error.value), str(error.value)
    assert not output.exists()
