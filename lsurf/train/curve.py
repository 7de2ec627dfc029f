"""Training the bend of a curve between two checkpoints (Garipov et al. 2018, mode connectivity).

Two trained networks θA and θB of one architecture are joined by a curve through a bend C,
with A at t = 0 and B at t = 1:
- `bezier`     θ(t) = (1 − t)²·A + 2t(1 − t)·C + t²·B, a quadratic Bezier curve;
- `polychain`  θ(t) = A + 2t·(C − A) for t < 1/2, C + (2t − 1)·(B − C) after: two segments.
On the plane of the three checkpoints, (1 − a − b)·A + a·B + b·C, the point at t is
`curve_point` (lsurf.grid.path_point), which is how `lsurf connect` evaluates a trained curve.

`train_curve` trains C so that the expected loss along the curve, t ~ U(0, 1), is low: each
batch draws its own t, the network's parameters are the curve's point there (computed from
C, so the gradient reaches C alone; A and B never change), and one step of the recipe's
optimizer moves C. C starts at the midpoint (A + B)/2. The forward passes run in train mode,
so BatchNorm normalizes with each batch's statistics, as Garipov et al. train; running
statistics mean nothing along a curve (an evaluation recomputes them at each point), so the
bend's checkpoint holds the midpoint of A's and B's floating buffers and A's integer ones
(BatchNorm's num_batches_tracked), and training never changes them.

Weight decay is Garipov et al.'s by default (`decay="point"`): ½·wd·‖θ(t)‖² of the batch's
point is added to its loss, so the decay pulls on the curve where the batch evaluates it,
C's share 2t(1 − t) (bezier) of it, and the optimizer decays nothing; `decay="bend"` decays C
in the optimizer instead, as lsurf train decays a model.

The run is an `lsurf train` run in its own folder (lsurf.train.folder): the same recipe
(optimizer, learning-rate schedule, weight decay, augmentation, shuffling; lsurf.train.recipe),
the same epoch loop over the train split held on the device (lsurf.train.trainer), the same
commit point. Epoch E's shuffling, augmentation and the t of each of its batches come from one
generator seeded by (seed, E), so on CPU a run resumed after kill -9 at any moment ends with
the bend, bit for bit, of one never interrupted.

Input: θA and θB as state dicts, a builder of the architecture, the curve kind, the recipe and
the data. Output, in the folder: config.yaml (what is trained: the curve, the digests of A and
B, the recipe and data; a rerun must match it), log.csv, resume.pt, and bend.pt, the bend as
an lsurf checkpoint that `lsurf sweep` and `checkpoint.load_weights` read.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import nn
from torch.func import functional_call

from lsurf import params
from lsurf.config import (
    BendDecay,
    DataConfig,
    TrainingConfig,
    check_trainable_data,
    check_training,
)
from lsurf.data.cifar import Split
from lsurf.errors import CheckpointError, ConfigError
from lsurf.evaluate import configure_backends, pick_device
from lsurf.grid import path_point
from lsurf.run.progress import Log, to_stderr
from lsurf.schema import to_plain
from lsurf.train import folder
from lsurf.train.recipe import (
    EpochDraw,
    build_optimizer,
    draw_epoch_with,
    epoch_generator,
    epoch_seed,
    learning_rate,
    padding_fill,
)
from lsurf.train.trainer import describe_epoch, load_training_split, train_batches

Curve = Literal["bezier", "polychain"]
CURVES: tuple[str, ...] = get_args(Curve)

# Settings that change nothing the bend's training computes, left out of what the folder
# records: the recipe's checkpoint interval (a curve writes only its bend), and which splits an
# evaluation reads, and how data is fetched, cached and streamed.
_UNRECORDED_TRAINING = ("save_every",)
_UNRECORDED_DATA = ("splits", "download", "cache_mb", "workers")


# ---------------------------------------------------------------------------- the math


def curve_point(curve: Curve, t: float) -> tuple[float, float]:
    """The plane coordinates (a, b) of the curve's point at t: (1 − a − b)·A + a·B + b·C.

    bezier: (t², 2t(1 − t)); polychain: (0, 2t) up to t = 1/2, then (2t − 1, 2 − 2t).
    """
    _check_curve(curve)
    return path_point(curve, t)


def curve_weights(curve: Curve, t: float) -> tuple[float, float, float]:
    """The weights (of A, of C, of B) that make the curve's point at t: they sum to 1, and
    are (1, 0, 0) at t = 0 and (0, 0, 1) at t = 1 exactly."""
    _check_curve(curve)
    if curve == "bezier":
        return (1.0 - t) ** 2, 2.0 * t * (1.0 - t), t * t
    if t < 0.5:
        return 1.0 - 2.0 * t, 2.0 * t, 0.0
    return 0.0, 2.0 - 2.0 * t, 2.0 * t - 1.0


def curve_parameters(
    curve: Curve,
    t: float,
    start: Mapping[str, torch.Tensor],
    bend: Mapping[str, torch.Tensor],
    end: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """The curve's point at t for every tensor of `bend`: wA·A + wC·C + wB·B (`curve_weights`).

    Differentiable in the bend's tensors (in A's and B's too, should they require gradients).
    Terms of weight 0 are left out, so the point at t = 0 is A's tensors and at t = 1 B's,
    bit for bit.
    """
    weights = curve_weights(curve, t)
    point = {}
    for name in bend:
        terms = [
            (weight, source[name])
            for weight, source in zip(weights, (start, bend, end), strict=True)
            if weight != 0.0
        ]
        first_weight, first = terms[0]
        total = first * first_weight
        for weight, other in terms[1:]:
            total = total + other * weight
        point[name] = total
    return point


def midpoint(
    start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """(A + B)/2 for every floating tensor, A's value for every other (BatchNorm's
    num_batches_tracked): the bend's initial state, and its buffers for good."""
    return {
        name: (tensor + end[name]) / 2 if tensor.is_floating_point() else tensor.clone()
        for name, tensor in start.items()
    }


# ---------------------------------------------------------------------------- the run


def train_curve(
    build_model: Callable[[], nn.Module],
    start: Mapping[str, torch.Tensor],
    end: Mapping[str, torch.Tensor],
    curve: Curve,
    training: TrainingConfig,
    data: DataConfig,
    output: Path,
    force: bool = False,
    log: Log = to_stderr,
    device: str = "auto",
    decay: BendDecay = "point",
) -> Path:
    """Train (or resume, or report as trained) the bend of `curve` from θA = `start` to
    θB = `end` in the folder `output`; return the bend's checkpoint, output/bend.pt.

    `build_model` makes a model of the architecture (its initial weights are not used);
    `start` and `end` are full state dicts, parameters and buffers; `training` is the
    recipe and `data` the train split, as `lsurf train` reads them; `device` is
    evaluation.device's values (auto: CUDA when present). Raises ConfigError, before the
    folder is touched, for an unknown curve, a bad recipe, non-CIFAR data, or a folder that
    holds another run (unless `force`, which starts over); CheckpointError when A, B and the
    model are not one architecture. Its lines (start, one per epoch, end) go to `log`.

    `decay` says where `training.weight_decay` (wd) applies: `point`, as Garipov et al.'s
    dnn-mode-connectivity trains its curves, adds ½·wd·‖θ(t)‖² of every parameter at the
    batch's point θ(t) to the batch's loss, the optimizer decaying nothing; `bend` decays C
    in the optimizer, as `lsurf train` decays a model.
    """
    # Everything that can fail on bad input happens before the folder is touched.
    _check_curve(curve)
    check_training(training)
    check_trainable_data(data)
    place = pick_device(device)
    model = build_model()
    _check_architecture(model, start, end)
    if decay not in get_args(BendDecay):
        raise ConfigError(f"unknown bend decay {decay!r}; valid: {', '.join(get_args(BendDecay))}")
    settings = _settings(curve, start, end, training, data, decay)
    committed = folder.committed_run(output, settings, force)
    bend_file = output / folder.BEND_FILE
    if committed is not None and committed["epoch"] == training.epochs:
        log(
            f"lsurf: the bend of the {curve} curve in {output} is already trained "
            f"({training.epochs} epochs): {bend_file} (--force trains again)"
        )
        return bend_file

    configure_backends("fp32")  # fp32 means fp32: no TF32, deterministic cuDNN
    split = load_training_split(data, place)
    model.to(place)
    recipe = training if decay == "bend" else dataclasses.replace(training, weight_decay=0.0)
    optimizer = build_optimizer(model, recipe)
    first, rows = _start_or_resume(output, settings, committed, model, optimizer, start, end)
    # The ends on the device, their parameters only: the buffers are the bend's own.
    names = [name for name, _ in model.named_parameters()]
    start_parameters = {name: start[name].detach().to(place) for name in names}
    end_parameters = {name: end[name].detach().to(place) for name in names}
    count = params.count(dict(model.named_parameters()))
    origin = "from the midpoint of A and B" if first == 1 else "resumed"
    log(
        f"lsurf: training the bend of a {curve} curve ({count:,} parameters, {origin}) on "
        f"{place.type}, epochs {first}-{training.epochs} of {training.epochs}, into {output}"
    )

    fill = padding_fill(data.mean, data.std).to(place)
    for epoch in range(first, training.epochs + 1):
        started = time.perf_counter()
        rate = learning_rate(training, epoch)
        for group in optimizer.param_groups:
            group["lr"] = rate
        # As lsurf train: a model drawing random numbers (dropout) stays reproducible.
        torch.manual_seed(epoch_seed(training.seed, epoch))
        generator = epoch_generator(training.seed, epoch)
        draw = draw_epoch_with(generator, len(split))
        # Each batch's t, drawn after the epoch's shuffling and augmentation: (batches,).
        batches = math.ceil(len(split) / data.batch_size)
        positions = torch.rand(batches, dtype=torch.float64, generator=generator).tolist()
        train_loss, train_acc = _train_epoch(
            model,
            optimizer,
            curve,
            (start_parameters, end_parameters),
            positions,
            split,
            draw.to(place),
            data.batch_size,
            fill if training.augment else None,
            training.weight_decay if decay == "point" else 0.0,
        )
        row: dict[str, float] = {
            "epoch": epoch,
            "lr": rate,
            "train_loss": train_loss,  # the mean over the epoch's batches, each at its own t
            "train_acc": train_acc,
            "seconds": round(time.perf_counter() - started, 3),
        }
        rows.append(row)
        log(describe_epoch(row, training.epochs))

        # Commit order, as lsurf train's: the epoch's files first, resume.pt last.
        if epoch == training.epochs:
            folder.save_weights(bend_file, model, epoch, bend=settings)
        folder.write_log(output / folder.LOG_FILE, rows)
        folder.commit(output, model, optimizer, epoch, rows)

    log(f"lsurf: the bend of the {curve} curve: {bend_file}; log.csv and config.yaml in {output}")
    return bend_file


def _start_or_resume(
    output: Path,
    settings: dict[str, Any],
    committed: dict[str, Any] | None,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    start: Mapping[str, torch.Tensor],
    end: Mapping[str, torch.Tensor],
) -> tuple[int, list[dict[str, float]]]:
    """The model holding the bend for the first epoch to run: the midpoint on a fresh start
    (written as the first commit), the committed bend and optimizer on a resume. Returns that
    epoch and the log rows so far."""
    if committed is None:
        folder.remove_training_files(output)
        output.mkdir(parents=True, exist_ok=True)
        folder.write_settings(output, settings)
        model.load_state_dict(midpoint(start, end))
        rows: list[dict[str, float]] = []
        folder.commit(output, model, optimizer, 0, rows)
        return 1, rows
    return folder.resume_committed(output, committed, model, optimizer, "the model")


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    curve: Curve,
    ends: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
    positions: list[float],
    split: Split,
    draw: EpochDraw,
    batch_size: int,
    fill: torch.Tensor | None,
    point_decay: float,
) -> tuple[float, float]:
    """One pass over the split, batch k at the curve's point t = positions[k]; the mean loss
    (the cross-entropy, without the decay term) and the accuracy in percent. `point_decay`
    (wd, or 0) adds ½·wd·‖θ(t)‖² of the batch's point to what is differentiated."""
    start, end = ends
    bend = dict(model.named_parameters())  # C: the tensors the optimizer moves
    # BatchNorm in train mode updates its running statistics in place; these copies take the
    # updates, so the bend's buffers stay the midpoint whatever t the batches were at.
    scratch = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    model.train()

    points: dict[int, dict[str, torch.Tensor]] = {}  # the batch's point, for its decay

    def forward(images: torch.Tensor, batch: int) -> torch.Tensor:
        point = curve_parameters(curve, positions[batch], start, bend, end)
        points.clear()
        points[batch] = point
        return functional_call(model, {**point, **scratch}, (images,))

    def decay_term(batch: int) -> torch.Tensor:
        squares = [tensor.square().sum() for tensor in points[batch].values()]
        return 0.5 * point_decay * torch.stack(squares).sum()

    return train_batches(
        forward,
        optimizer,
        split,
        draw,
        batch_size,
        fill,
        torch.contiguous_format,
        "fp32",
        decay_term if point_decay > 0 else None,
    )


# ---------------------------------------------------------------------------- checking


def _check_curve(curve: str) -> None:
    if curve not in CURVES:
        raise ConfigError(f"unknown curve {curve!r}; valid curves: {', '.join(CURVES)}")


def _check_architecture(
    model: nn.Module, start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor]
) -> None:
    """A and B must hold the same tensors (names, shapes, dtypes), and the model's."""
    problem = _first_difference(start, end, "A", "B")
    if problem is not None:
        raise CheckpointError(
            f"A and B are not one architecture: {problem}; a curve joins two checkpoints of "
            "the same model"
        )
    expected = model.state_dict()
    problem = _first_difference(expected, start, "the model", "A")
    if problem is not None:
        raise CheckpointError(f"A and B do not fit the model: {problem}")


def _first_difference(
    first: Mapping[str, torch.Tensor],
    second: Mapping[str, torch.Tensor],
    first_name: str,
    second_name: str,
) -> str | None:
    """The first key where two state dicts differ, in words; None when they agree."""
    for key, tensor in first.items():
        if key not in second:
            return f"{second_name} has no {key!r}, which {first_name} has"
        other = second[key]
        if other.shape != tensor.shape:
            return (
                f"{key!r} is {tuple(tensor.shape)} in {first_name} but {tuple(other.shape)} "
                f"in {second_name}"
            )
        if other.dtype != tensor.dtype:
            return f"{key!r} is {tensor.dtype} in {first_name} but {other.dtype} in {second_name}"
    for key in second:
        if key not in first:
            return f"{second_name} has {key!r}, which {first_name} has not"
    return None


def _settings(
    curve: Curve,
    start: Mapping[str, torch.Tensor],
    end: Mapping[str, torch.Tensor],
    training: TrainingConfig,
    data: DataConfig,
    decay: BendDecay,
) -> dict[str, Any]:
    """What the folder trains, as plain data: config.yaml holds it, bend.pt too."""
    recipe = to_plain(training)
    data_settings = to_plain(data)
    for key in _UNRECORDED_TRAINING:
        del recipe[key]
    for key in _UNRECORDED_DATA:
        del data_settings[key]
    return {
        "curve": curve,
        "initialization": "midpoint",  # (A + B)/2
        "weight_decay_on": decay,  # point: ½·wd·‖θ(t)‖² in the loss; bend: the optimizer's
        "start_sha256": params.digest(dict(start)),
        "end_sha256": params.digest(dict(end)),
        "training": recipe,
        "data": data_settings,
    }
