"""Benchmark: lsurf's evaluation of a point against a bare eager forward loop and against an
emulation of the reference code, side by side in one run on the same data and grid (issues
14 and 24): exact fp32 (unfolded, the default with BN folded, folded and compiled, one batch
of every example, two points per pass), bf16, and early stopping.

Per model (`--models`, default ResNet-20 and ResNet-56) it evaluates one grid (`--grid` x
`--grid` points over [-1, 1]², a filter-normalized random plane, biases and BN fixed) on the
same `--examples` examples of a synthetic CIFAR-10 train split, `--batch-size` at a time, in
`--threads` threads, with:

- the bare eager forward: the model in eval mode, channels_last images, inference mode, the
  same batches, cross-entropy summed in float64 and the argmax (the two columns lsurf
  measures), nothing else. It runs on the unfolded evaluator's model right after that
  evaluator has moved it to the point, so its losses must equal lsurf's: the line prints
  the largest relative difference;
- lsurf's `Evaluator`: unfolded eager fp32 (the reference every error is against), the
  default (BN folded; `evaluation.compile: auto` keeps a grid this small eager, and the
  table's header prints the rule's reason), folded + `torch.compile` (what auto chooses on a
  sweep long enough), folded over all the examples as one batch (the larger-batch lever),
  and folded in bf16 (autocast). Its time per point includes moving the weights (and
  refolding), as a sweep's does;
- levers outside lsurf, measured to say why they are not in it: two points per forward pass
  (`GroupedPoints`: the folded network vmapped over two weight sets, each point's share of
  the time being half the pass);
- the reference emulation (`ReferenceEmulation`): per point what tomgoldstein/loss-landscape's
  plot_surface.py does (its `crunch` loop: net_plotter.set_weights, evaluation.eval_loss), as
  we read it and wrote it here (our emulation, not the reference's code): a torchvision
  CIFAR10 dataset with per-image transforms behind a DataLoader with 2 worker processes,
  `.item()` per batch, weights assigned by `p.data = w + change`.

Every variant is built and warmed up at (0, 0) first; the compiled one's build and warm-up
time (`torch.compile` and the check of its outputs, with inductor's cache in a fresh folder:
a first run's cold compile) is printed apart, with the evaluator's notes, and then again in
a second fresh process that finds the kernels in that folder (warm: a second worker, a
rerun; its note says how many graphs came from the cache). Then
the grid's points are visited once, every variant evaluating each point in turn (bare,
unfolded, folded, compiled, ..., the emulation, then the next point), so a burst of load from
elsewhere on a shared machine hits all of them alike. Printed per variant: the best and the
median seconds per point over the grid, the ratio bare/variant of the best ones (> 1: faster
than the bare forward; target for exact fp32: ≥ 1.5), the ratio reference emulation/variant
(target for the default: ≥ 3), the largest relative loss error against the reference over
the grid (target for exact fp32: ≤ 1e-5; the script exits with status 1 if an exact variant
misses it) and the peak resident memory (VmHWM) of a fresh process that loads the examples
and the model, builds that variant and evaluates one point: a worker's footprint (host
memory; `--no-memory` skips these processes). Then the default against the targets, in one
line: "default vs target: 1.5x bare -> X.XXx (met/missed); 3x reference -> Y.YYx (...)", and
the same for the compiled default of a long sweep.

Early stopping (`--stopping-model`, default ResNet-20): a network trained here by `lsurf
train` for `--train-epochs` epochs on `--train-examples` of the synthetic train split (its
train accuracy at the centre is printed and must reach `--min-train-accuracy`, 30 %: an
untrained net's per-example losses are all ≈ ln 10, which would make stopping look free), or
`--checkpoint`. On all `--stopping-examples` examples of that split (the rest unseen in
training) and a `--stopping-grid` x `--stopping-grid` grid over [-1, 1]², it times lsurf
folded over every example against lsurf folded with `evaluation.rel_error` at each of
`--rel-errors` (min_examples `--min-examples`, 1000 as lsurf's default; order seed 0), with
θ*'s loss as control variate, stratified by class (opt-in), and without ("plain"; the
pass over the split at θ* the control variate needs at set-up is timed apart), points
interleaved as above, and prints the examples used per point (mean, range) and the
reduction against the split's size (target at 1 %: ≥ 4x), the mean seconds per point over
the grid (not the best: the cost differs from point to point) and the speed-up, and the
share of points whose full-data loss lies within 3 standard errors of the early-stopped
estimate (target: ≥ 99 % of points). The speed table of the same model
uses the same trained weights; the other models are untrained.

The default run takes about 12–15 minutes on 2 idle CPU cores (9.5 with --checkpoint, which
skips training ResNet-20), far longer on cores shared with other work;
`--quick` (ResNet-20 only, smaller sizes) takes about 3.

Run: .venv/bin/python benchmarks/evaluation_speed.py [--quick] [--models resnet20 resnet56]
     [--examples 1000] [--grid 3] [--stopping-examples 5000] [--stopping-grid 5]
     [--rel-errors 0.01 0.02]
     [--checkpoint TRAINED_RESNET20.pt] [--no-compile] [--no-memory]
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from sweep_overhead import bare_forward  # this folder is on sys.path when run as a script
from torch import nn

from lsurf import compilation, models, params
from lsurf.checkpoint import load_weights, save_checkpoint
from lsurf.config import load_train_config
from lsurf.data.cifar import load_split, selected_indices
from lsurf.data.layouts import CIFAR10, REFERENCE_MEAN, REFERENCE_STD, SYNTHETIC_MARKER
from lsurf.data.synthetic import write_synthetic
from lsurf.directions import Directions, random_directions
from lsurf.evaluate import Evaluator, StandardErrors, pick_device
from lsurf.train.trainer import train

EXACT_TOLERANCE = 1e-5  # the largest relative loss error an fp32 variant may have
SPEED_TARGET = 1.5  # bare/variant an exact fp32 variant should reach
STANDARD_ERRORS = 3  # the full-data loss should lie within this many of the estimate
ROUNDING = 1e-6  # relative: the same fp32 losses summed in another order
DIRECTION_SEED = 0
LABEL_WIDTH = 28  # the column where figures start

# Sizes for options left out: the default run, and --quick.
FULL = {
    "models": ["resnet20", "resnet56"],
    "examples": 1000,
    "grid": 3,
    "stopping_grid": 5,
    "stopping_examples": 5000,
    "train_epochs": 3,
    "train_examples": 2000,
}
QUICK = {
    "models": ["resnet20"],
    "examples": 500,
    "grid": 3,
    "stopping_grid": 3,
    "stopping_examples": 2000,
    "train_epochs": 2,
    "train_examples": 1000,
}


@dataclass(frozen=True)
class Variant:
    """One way lsurf evaluates a point (the Evaluator's arguments)."""

    label: str
    fold_bn: bool
    precision: str = "fp32"
    compile: bool = False
    batch_size: int | None = None  # None: the bench's

    @property
    def exact(self) -> bool:
        """fp32: its losses must match the reference's to EXACT_TOLERANCE."""
        return self.precision == "fp32"


BARE = "bare eager forward"
REFERENCE = Variant("lsurf unfolded eager", fold_bn=False)
# The default (evaluation.compile: auto, fold_bn: true): eager on a grid this small, which is
# what lsurf.compilation.decide chooses here (the table's header says so), compiled on a
# sweep long enough to pay for it (the next row).
FOLDED = Variant("lsurf default (folded)", fold_bn=True)
COMPILED = Variant("lsurf folded+compiled", fold_bn=True, compile=True)
WHOLE_BATCH = Variant("lsurf folded, one batch", fold_bn=True, batch_size=0)  # 0: all examples
BF16 = Variant("lsurf bf16 (folded)", fold_bn=True, precision="bf16")
PER_PASS = 2  # points per forward pass of the grouped (vmap) lever
GROUPED = f"{PER_PASS} points per pass (vmap)"
EMULATION = "reference emulation"
SPEED_TARGET_REFERENCE = 3.0  # reference emulation / lsurf default, the target
REFERENCE_WORKERS = 2  # the reference's train loader's num_workers


@dataclass(frozen=True)
class Bench:
    """What every variant of one model is measured on; plain values, so that a fresh process
    can rebuild the same model, directions and examples from it."""

    model: str
    checkpoint: Path  # θ*
    root: Path  # the synthetic data
    examples: int  # the first examples of the train split's seeded subset
    batch_size: int
    device: str
    threads: int


@dataclass
class Measured:
    """One variant over the grid: seconds and the loss at each point, in grid order."""

    seconds: list[float]
    losses: list[float]

    def best(self) -> float:
        return min(self.seconds)

    def median(self) -> float:
        return statistics.median(self.seconds)

    def mean(self) -> float:
        return statistics.mean(self.seconds)


# ---------------------------------------------------------------------------- inputs


def load_inputs(bench: Bench) -> tuple[nn.Module, Directions, torch.Tensor, torch.Tensor]:
    """θ* in its model, the plane's directions and the examples (images channels_last, labels)
    on the device: the same in every process."""
    device = pick_device(bench.device)
    model = models.build(bench.model)
    load_weights(model, bench.checkpoint)
    directions = random_directions(
        params.movable(model, False), "filter", "biasbn", DIRECTION_SEED, True
    )
    split = load_split(bench.root, "train", REFERENCE_MEAN, REFERENCE_STD, bench.examples)
    images = split.images.to(device).contiguous(memory_format=torch.channels_last)
    return model.to(device), directions, images, split.labels.to(device)


def build(
    variant: Variant,
    bench: Bench,
    model: nn.Module,
    directions: Directions,
    images: torch.Tensor,
    labels: torch.Tensor,
    cache: Path | None = None,
) -> Evaluator:
    """The evaluator of `variant`, holding `model` (which it moves: give each its own); a
    compiled one keeps inductor's kernels in `cache`."""
    batch_size = bench.batch_size if variant.batch_size is None else variant.batch_size
    return Evaluator(
        model,
        directions,
        {"train": (images, labels)},  # already channels_last: every evaluator shares them
        batch_size or len(labels),
        pick_device(bench.device),
        precision=variant.precision,
        fold_bn=variant.fold_bn,
        compile=variant.compile,
        compile_cache=cache,
    )


def untrained_checkpoint(name: str, root: Path, examples: int, path: Path) -> Path:
    """A seeded random `name` whose BN running statistics are measured on the examples (the
    untouched ones, mean 0 and variance 1, would let a deep net's activations grow layer by
    layer: not a network anyone sweeps)."""
    torch.manual_seed(0)
    model = models.build(name)
    split = load_split(root, "train", REFERENCE_MEAN, REFERENCE_STD, examples)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over every batch
    model.train()
    with torch.no_grad():
        for start in range(0, len(split), 250):
            model(split.images[start : start + 250])
    save_checkpoint(path, model.state_dict())
    return path


def trained_checkpoint(name: str, root: Path, examples: int, epochs: int, folder: Path) -> Path:
    """`name` trained by `lsurf train` on `examples` of the synthetic train split (the demo's
    recipe, SGD at lr 0.05 without augmentation, in batches of 64: more steps per example,
    which is what a short run on a CPU lacks); its final.pt."""
    config = {
        "model": {"name": name},
        "data": {"root": str(root), "splits": ["train"], "batch_size": 64, "subset": examples},
        "training": {
            "epochs": epochs,
            "lr": 0.05,
            "momentum": 0.9,
            "weight_decay": 0.0005,
            "augment": False,
            "save_every": epochs,
        },
        "output": str(folder),
    }
    path = folder.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    return train(load_train_config(path))


def grid_points(size: int) -> list[tuple[float, float]]:
    """size x size points over [-1, 1]², rows of constant b."""
    axis = [float(value) for value in np.linspace(-1.0, 1.0, size)]
    return [(a, b) for b in axis for a in axis]


# ---------------------------------------------------------------------------- levers outside lsurf


class GroupedPoints:
    """PER_PASS grid points in one forward pass: lsurf's folded network called with a stack of
    PER_PASS weight sets, vmapped over them (torch.func.functional_call); every batch of images
    is shared by the points, each conv of K weight sets a grouped convolution. Not in lsurf:
    it loses on this CPU (the table shows by how much), and is unmeasured on GPU."""

    def __init__(self, evaluator: Evaluator, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.evaluator = evaluator  # folded: its network is what each point's weights fill
        self.images, self.labels = images, labels
        self.batch_size = evaluator.batch_size

    @torch.inference_mode()
    def evaluate(self, points: list[tuple[float, float]]) -> list[float]:
        """The mean loss at each of `points`, all of them in one pass over the batches."""
        network = self.evaluator.folded.network  # unfused: vmap has no rule for oneDNN's calls
        weights = []
        for a, b in points:  # each point's folded weights, as lsurf's evaluator makes them
            self.evaluator.move_to(a, b)
            self.evaluator.folded.refold()
            weights.append({k: v.clone() for k, v in network.state_dict().items()})
        stacked = {key: torch.stack([w[key] for w in weights]) for key in weights[0]}

        def forward(state: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(network, state, (inputs,))

        batched = torch.func.vmap(forward, in_dims=(0, None))
        # vmap has no batching rule for one op of adaptive pooling and says so at every call.
        warnings.filterwarnings("ignore", "There is a performance drop", UserWarning)
        totals = torch.zeros(len(points), dtype=torch.float64)
        for start in range(0, len(self.labels), self.batch_size):
            targets = self.labels[start : start + self.batch_size]
            logits = batched(stacked, self.images[start : start + self.batch_size])  # (K, B, C)
            for k in range(len(points)):
                totals[k] += F.cross_entropy(logits[k].float(), targets, reduction="sum")
        return (totals / len(self.labels)).tolist()


class ReferenceEmulation:
    """Per point what the reference does, tomgoldstein/loss-landscape's plot_surface.py
    (`crunch`: net_plotter.set_weights, then evaluation.eval_loss), written here from reading
    it (none of its code is copied; this emulation is ours, not the reference's code): the
    model unfolded in eval mode, images in the default (NCHW) layout; the weights set by
    computing every parameter's change d1·a + d2·b and assigning `p.data = w + change`; a
    DataLoader over torchvision's CIFAR10 (reading the same python-pickle files, the same
    examples as lsurf's subset) with ToTensor + Normalize run on every image at every point,
    its loader's 2 worker processes (dataloader.load_dataset's train loader) started anew at
    every pass; `torch.no_grad()`; per batch the mean cross-entropy `.item()` times the batch
    size, and the argmax's correct count `.item()`."""

    def __init__(
        self, model: nn.Module, directions: Directions, root: Path, examples: int,
        batch_size: int, workers: int,
    ) -> None:  # fmt: skip
        import torchvision  # only here: the reference's dependency, not lsurf's
        from torchvision import transforms

        self.model = model.eval()  # its own copy of θ*
        names = dict(model.named_parameters())
        self.weights = [tensor.detach().clone() for tensor in names.values()]
        zero = {name: torch.zeros_like(tensor) for name, tensor in names.items()}
        assert directions.y is not None, "the speed grid is a plane"
        # Directions for every parameter, zero where biasbn leaves a tensor out, as its file has.
        self.dx = [directions.x.get(name, zero[name]).to(torch.float32) for name in names]
        self.dy = [directions.y.get(name, zero[name]).to(torch.float32) for name in names]
        folder = root / CIFAR10.folder
        sums = dict(
            reversed(line.split("  "))
            for line in (folder / SYNTHETIC_MARKER).read_text().splitlines()
        )

        class Cifar10(torchvision.datasets.CIFAR10):  # the synthetic files' own checksums
            train_list = [[name, sums[name]] for name in CIFAR10.train_files]
            test_list = [[name, sums[name]] for name in CIFAR10.test_files]
            meta = {
                "filename": CIFAR10.meta_file,
                "key": "label_names",
                "md5": sums[CIFAR10.meta_file],
            }

        normalize = transforms.Normalize(mean=list(REFERENCE_MEAN), std=list(REFERENCE_STD))
        dataset = Cifar10(
            str(root), train=True, transform=transforms.Compose([transforms.ToTensor(), normalize])
        )
        # lsurf's seeded subset of the split: the same examples as every other variant's.
        chosen = selected_indices(len(dataset), "train", examples)
        indices = list(range(len(dataset))) if chosen is None else chosen.tolist()
        self.device = next(model.parameters()).device
        self.loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, indices), batch_size=batch_size, shuffle=False,
            num_workers=workers, pin_memory=torch.cuda.is_available(),
        )  # fmt: skip
        self.criterion = nn.CrossEntropyLoss()

    def evaluate(self, a: float, b: float) -> float:
        """The mean loss at (a, b), the reference's way."""
        changes = [d1 * a + d2 * b for d1, d2 in zip(self.dx, self.dy, strict=True)]
        parameters = list(self.model.parameters())
        for parameter, weight, change in zip(parameters, self.weights, changes, strict=True):
            parameter.data = weight + change
        total_loss, correct, total = 0.0, 0, 0
        self.model.eval()
        with torch.no_grad():
            for inputs, targets in self.loader:
                inputs, targets = inputs.to(self.device), targets.to(self.device)
                size = inputs.size(0)
                total += size
                outputs = self.model(inputs)
                total_loss += self.criterion(outputs, targets).item() * size
                correct += outputs.max(1)[1].eq(targets).sum().item()
        return total_loss / total


# ---------------------------------------------------------------------------- measuring


def timed_evaluation(evaluator: Evaluator, a: float, b: float) -> tuple[float, dict[str, float]]:
    """Seconds for one point (move, refold, every batch) and its values."""
    started = time.perf_counter()
    values = evaluator.evaluate(a, b)  # ends on .item(): the device has finished
    return time.perf_counter() - started, values


def largest_error(losses: list[float], reference: list[float]) -> float:
    """max over the grid of |loss − reference| / |reference|; inf if either overflowed."""
    found, expected = np.array(losses), np.array(reference)
    if not (np.isfinite(found).all() and np.isfinite(expected).all()):
        return math.inf
    return float(np.max(np.abs(found - expected) / np.abs(expected)))


def peak_memory_mib(bench: Bench, variant: Variant | None) -> float:
    """In a fresh process: load the examples and θ*, build `variant` (None: the bare loop),
    evaluate (0, 0) and return the peak resident memory, VmHWM, in MiB."""
    torch.set_num_threads(bench.threads)
    model, directions, images, labels = load_inputs(bench)
    if variant is None:
        model = model.to(memory_format=torch.channels_last).eval()
        bare_forward(model, images, labels, bench.batch_size)
    else:
        build(variant, bench, model, directions, images, labels).evaluate(0.0, 0.0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan  # no /proc (not Linux)


def fresh_process_peaks(bench: Bench, variants: list[Variant]) -> dict[str, float]:
    """Each variant's (and the bare loop's) peak_memory_mib, one new process each, in turn."""
    peaks = {}
    for variant in [None, *variants]:
        # spawn, one task per process: nothing inherited, nothing shared between variants.
        with ProcessPoolExecutor(1, get_context("spawn"), max_tasks_per_child=1) as pool:
            label = BARE if variant is None else variant.label
            peaks[label] = pool.submit(peak_memory_mib, bench, variant).result()
    return peaks


# ---------------------------------------------------------------------------- sections


def warm_compile(bench: Bench, cache: Path) -> tuple[float, str]:
    """In a fresh process: build the compiled variant with inductor's cache in `cache` (which
    the run's own compile has filled: a second worker, or a rerun) and return the seconds
    that took and the evaluator's note (how many graphs came from the cache)."""
    torch.set_num_threads(bench.threads)
    model, directions, images, labels = load_inputs(bench)
    started = time.perf_counter()
    evaluator = build(COMPILED, bench, model, directions, images, labels, cache)
    evaluator.evaluate(0.0, 0.0)
    return time.perf_counter() - started, evaluator.notes[-1]


def speed_section(
    bench: Bench,
    variants: list[Variant],
    grid: list[tuple[float, float]],
    memory: bool,
    provenance: str,
    cache: Path,
) -> bool:
    """Print the speed table of one model; return whether every exact variant met
    EXACT_TOLERANCE."""
    model, directions, images, labels = load_inputs(bench)
    evaluators: dict[Variant, Evaluator] = {}
    setup_seconds: dict[Variant, float] = {}
    for variant in variants:
        started = time.perf_counter()
        # The compiled variant compiles into a fresh cache folder: a first run's cold compile.
        evaluator = build(variant, bench, copy.deepcopy(model), directions, images, labels, cache)
        evaluator.evaluate(0.0, 0.0)  # warm-up
        setup_seconds[variant] = time.perf_counter() - started
        evaluators[variant] = evaluator
    reference = evaluators[REFERENCE]
    bare_forward(reference.model, images, labels, bench.batch_size)  # warm-up
    grouped = GroupedPoints(
        build(FOLDED, bench, copy.deepcopy(model), directions, images, labels), images, labels
    )
    grouped.evaluate([(0.0, 0.0)] * PER_PASS)  # warm-up
    emulation = ReferenceEmulation(
        copy.deepcopy(model).to(pick_device(bench.device)),
        directions,
        bench.root,
        bench.examples,
        bench.batch_size,
        REFERENCE_WORKERS,
    )
    emulation.evaluate(0.0, 0.0)  # warm-up

    labels_in_order = [BARE, *(v.label for v in variants), GROUPED, EMULATION]
    measured = {label: Measured([], []) for label in labels_in_order}
    centre_accuracy = math.nan
    for index, (a, b) in enumerate(grid):
        for variant, evaluator in evaluators.items():
            seconds, values = timed_evaluation(evaluator, a, b)
            measured[variant.label].seconds.append(seconds)
            measured[variant.label].losses.append(values["train_loss"])
            if variant is REFERENCE and (a, b) == (0.0, 0.0):
                centre_accuracy = values["train_acc"]
            if variant is REFERENCE:
                # The reference has just moved its model to (a, b): the bare loop runs there.
                started = time.perf_counter()
                loss = bare_forward(reference.model, images, labels, bench.batch_size)
                measured[BARE].seconds.append(time.perf_counter() - started)
                measured[BARE].losses.append(loss)
        # This point and the next ones in one pass; its share of the time is 1/PER_PASS.
        points = [grid[(index + k) % len(grid)] for k in range(PER_PASS)]
        started = time.perf_counter()
        losses = grouped.evaluate(points)
        measured[GROUPED].seconds.append((time.perf_counter() - started) / PER_PASS)
        measured[GROUPED].losses.append(losses[0])
        started = time.perf_counter()
        measured[EMULATION].losses.append(emulation.evaluate(a, b))
        measured[EMULATION].seconds.append(time.perf_counter() - started)
    peaks = fresh_process_peaks(bench, variants) if memory else {}

    side = int(math.isqrt(len(grid)))
    device = pick_device(bench.device)
    flops = evaluators[FOLDED].flops_per_example()
    here = compilation.decide(len(grid), bench.examples, flops, device.type, warm=False)
    print(
        f"\n{bench.model} ({provenance}): {bench.examples} train examples per point, batch "
        f"{bench.batch_size}, {bench.threads} threads, device {device.type}; {side}x{side} grid "
        f"over [-1, 1]^2 (filter-normalized random plane, seed {DIRECTION_SEED}); train "
        f"accuracy at the centre {centre_accuracy:.1f}%; lsurf's default here: {here.reason}"
    )
    print(
        f"{'':{LABEL_WIDTH}s}{'s/point':>9s}{'median':>9s}{'bare/variant':>14s}"
        f"{'ref/variant':>13s}{'max rel. loss error':>21s}{'peak RSS':>11s}"
    )
    bare_best = measured[BARE].best()
    emulation_best = measured[EMULATION].best()
    reference_losses = measured[REFERENCE.label].losses
    exact = True
    for label, found in measured.items():
        error = largest_error(found.losses, reference_losses)
        error_text = "reference" if label == REFERENCE.label else f"{error:.1e}"
        peak = f"{peaks[label]:.0f} MiB" if label in peaks else "-"
        print(
            f"{label:{LABEL_WIDTH}s}{found.best():9.4f}{found.median():9.4f}"
            f"{bare_best / found.best():13.2f}x{emulation_best / found.best():12.2f}x"
            f"{error_text:>21s}{peak:>11s}"
        )
        variant = next((v for v in variants if v.label == label), None)
        if (variant is None or variant.exact) and not error <= EXACT_TOLERANCE:
            exact = False
    print(
        f"{'':{LABEL_WIDTH}s}(s/point: best of the {len(grid)} points, variants interleaved "
        f"point by point; ref/variant: against the reference emulation; targets for exact "
        f"fp32: bare/variant >= {SPEED_TARGET}, ref/variant >= {SPEED_TARGET_REFERENCE}, "
        f"error <= {EXACT_TOLERANCE:.0e}: {'met' if exact else 'MISSED'} for the error)"
    )
    rows = [(FOLDED, "default vs target")]
    if COMPILED in evaluators:
        rows.append((COMPILED, "long-sweep default (compiled) vs target"))
    for variant, title in rows:
        best = measured[variant.label].best()
        to_bare, to_reference = bare_best / best, emulation_best / best
        print(
            f"{title}: {SPEED_TARGET:g}x bare -> {to_bare:.2f}x "
            f"({'met' if to_bare >= SPEED_TARGET else 'missed'}); "
            f"{SPEED_TARGET_REFERENCE:g}x reference -> {to_reference:.2f}x "
            f"({'met' if to_reference >= SPEED_TARGET_REFERENCE else 'missed'})"
        )
    if COMPILED in evaluators:
        notes = "; ".join(evaluators[COMPILED].notes)
        extra = setup_seconds[COMPILED] - setup_seconds[FOLDED]
        saved = measured[FOLDED.label].median() - measured[COMPILED.label].median()
        # Where compiling pays: the points one worker must evaluate before the seconds the
        # compile costs come back (medians, as a sweep's points are a mix).
        pays = f"after {extra / saved:.0f} points per worker" if saved > 0 else "never here"
        print(
            f"{'compile (apart)':{LABEL_WIDTH}s}{setup_seconds[COMPILED]:.1f} s to build and "
            f"warm up (lsurf default: {setup_seconds[FOLDED]:.1f} s), so it pays {pays}; "
            f"per GFLOP of forward it saves {saved / (bench.examples * flops / 1e9):.2e} s "
            f"(lsurf.compilation assumes {compilation.SAVED_PER_GFLOP.get(device.type, 0):.2e}); "
            f"lsurf says: {notes}"
        )
        with ProcessPoolExecutor(1, get_context("spawn"), max_tasks_per_child=1) as pool:
            warm, note = pool.submit(warm_compile, bench, cache).result()
        print(
            f"{'compile cache':{LABEL_WIDTH}s}cold (this run, fresh folder) "
            f"{setup_seconds[COMPILED]:.1f} s, warm (a second process, same shapes) {warm:.1f} s "
            f"(lsurf.compilation assumes {compilation.COMPILE_SECONDS.get(device.type, {})}); "
            f"it says: {note}"
        )
    return exact


def stopping_section(
    bench: Bench,
    grid: list[tuple[float, float]],
    rel_errors: list[float],
    min_examples: int,
    provenance: str,
) -> float:
    """Print the early-stopping table of one trained model; return the train accuracy (%) at
    the centre."""
    model, directions, images, labels = load_inputs(bench)
    full = build(FOLDED, bench, copy.deepcopy(model), directions, images, labels)
    # Per target, with the control variates (evaluation.control_variate) and plain.
    ways = [(rel_error, control) for rel_error in rel_errors for control in (True, False)]
    stopped = {}
    baseline_seconds = []
    for rel_error, control in ways:
        evaluator = build(FOLDED, bench, copy.deepcopy(model), directions, images, labels)
        started = time.perf_counter()
        evaluator.estimate_errors(StandardErrors(rel_error, min_examples, 0, control))
        if control:
            baseline_seconds.append(time.perf_counter() - started)
        stopped[rel_error, control] = evaluator
    for evaluator in [full, *stopped.values()]:
        evaluator.evaluate(0.0, 0.0)  # warm-up

    full_points = Measured([], [])
    points = {way: Measured([], []) for way in ways}
    errors: dict[tuple[float, bool], list[float]] = {way: [] for way in ways}
    used: dict[tuple[float, bool], list[float]] = {way: [] for way in ways}
    accuracy = math.nan
    for a, b in grid:
        seconds, values = timed_evaluation(full, a, b)
        full_points.seconds.append(seconds)
        full_points.losses.append(values["train_loss"])
        if (a, b) == (0.0, 0.0):
            accuracy = values["train_acc"]
        for way, evaluator in stopped.items():
            seconds, values = timed_evaluation(evaluator, a, b)
            points[way].seconds.append(seconds)
            points[way].losses.append(values["train_loss"])
            errors[way].append(values["train_loss_se"])
            used[way].append(values["train_examples"])

    losses = np.array(full_points.losses)
    side = int(math.isqrt(len(grid)))
    print(
        f"\nearly stopping: {bench.model} {provenance}, train accuracy at the centre "
        f"{accuracy:.1f}%; all {bench.examples} train examples, batch {bench.batch_size}; "
        f"{side}x{side} grid over [-1, 1]^2 (full-data loss {losses.min():.3g} to "
        f"{losses.max():.3g}); min_examples {min_examples}, order seed 0"
    )
    print(
        f"{'':{LABEL_WIDTH}s}{'mean s/pt':>10s}{'median':>9s}{'all/variant':>13s}"
        f"{'examples/point (range)':>26s}{'fewer':>8s}{f'within {STANDARD_ERRORS} SE':>15s}"
    )
    print(
        f"{'lsurf folded, all examples':{LABEL_WIDTH}s}{full_points.mean():10.4f}"
        f"{full_points.median():9.4f}{1.0:12.2f}x{bench.examples:26d}{1.0:7.2f}x{'-':>15s}"
    )
    for way in ways:
        found = points[way]
        # A point that used every example, and θ* itself with the control variate, has the
        # full-data loss (to rounding: other sums) and SE 0.
        within = sum(
            abs(estimate - loss) <= STANDARD_ERRORS * error + ROUNDING * abs(loss)
            for estimate, loss, error in zip(found.losses, losses, errors[way], strict=True)
        )
        mean_used = statistics.mean(used[way])
        spread = f"{mean_used:.0f} ({min(used[way]):.0f}-{max(used[way]):.0f})"
        share = f"{within}/{len(grid)} ({100 * within / len(grid):.0f}%)"
        rel_error, control = way
        label = f"rel_error {100 * rel_error:g}%" + ("" if control else " plain")
        label += " (target)" if way == (0.01, True) else ""
        print(
            f"{label:{LABEL_WIDTH}s}{found.mean():10.4f}{found.median():9.4f}"
            f"{full_points.mean() / found.mean():12.2f}x{spread:>26s}"
            f"{bench.examples / mean_used:7.2f}x{share:>15s}"
        )
    print(
        f"{'':{LABEL_WIDTH}s}(s/point: the mean over the grid, as points stop at different "
        f"examples; targets at 1%: >= 4x fewer examples per point, the full-data loss within "
        f"{STANDARD_ERRORS} SE at >= 99% of points; 'plain': without θ*'s loss as control "
        f"variate, whose pass over all {bench.examples} examples at θ* took "
        f"{statistics.mean(baseline_seconds):.2f} s at set-up, once per worker)"
    )
    return accuracy


# ---------------------------------------------------------------------------- the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of about 2 minutes")
    parser.add_argument("--models", nargs="+", help="speed tables for these (resnet20 resnet56)")
    parser.add_argument("--examples", type=int, help="train examples per point (1000)")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--grid", type=int, help="points per side of the grid (3)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--no-compile", action="store_true", help="leave out folded+compiled")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS processes")
    parser.add_argument("--stopping-model", default="resnet20")
    parser.add_argument(
        "--stopping-examples", type=int, help="the split early stopping samples (5000)"
    )
    parser.add_argument("--stopping-grid", type=int, help="its grid's points per side (5)")
    parser.add_argument("--rel-errors", type=float, nargs="*", default=[0.01, 0.02])
    parser.add_argument("--min-examples", type=int, default=1000, help="as lsurf's default")
    parser.add_argument("--train-epochs", type=int, help="epochs the stopping model trains (3)")
    parser.add_argument("--train-examples", type=int, help="of the split, for training (2000)")
    parser.add_argument("--checkpoint", type=Path, help="trained weights of --stopping-model")
    parser.add_argument(
        "--min-train-accuracy",
        type=float,
        default=30.0,
        help="percent the stopping model must reach at the centre, or the run stops there",
    )
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    torch.set_num_threads(args.threads)
    variants = [REFERENCE, FOLDED, *([] if args.no_compile else [COMPILED]), WHOLE_BATCH, BF16]
    grid = grid_points(args.grid)
    started = time.perf_counter()

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        # A cold compile each run, timed as a first sweep would pay it; the memory processes
        # (which inherit the environment) reuse it.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder / "inductor")
        root = write_synthetic(
            folder / "data", max(args.examples, args.stopping_examples), test_size=10
        )
        args.train_examples = min(args.train_examples, args.stopping_examples)
        if args.checkpoint is not None:
            trained, provenance = args.checkpoint, f"from {args.checkpoint}"
        else:
            trained = trained_checkpoint(
                args.stopping_model, root, args.train_examples, args.train_epochs, folder / "train"
            )
            provenance = (
                f"trained here for {args.train_epochs} epochs on {args.train_examples} examples"
            )
        stopping = Bench(
            args.stopping_model,
            trained,
            root,
            args.stopping_examples,
            args.batch_size,
            args.device,
            args.threads,
        )
        accuracy = stopping_section(
            stopping,
            grid_points(args.stopping_grid),
            args.rel_errors,
            args.min_examples,
            provenance,
        )
        if not accuracy >= args.min_train_accuracy:
            raise SystemExit(
                f"{args.stopping_model} reaches only {accuracy:.1f}% train accuracy (< "
                f"{args.min_train_accuracy:g}%): its early-stopping figures would say little; "
                "train it longer (--train-epochs) or pass --checkpoint"
            )

        exact = True
        for name in args.models:
            if name == args.stopping_model:
                checkpoint, weights = trained, provenance
            else:
                checkpoint = untrained_checkpoint(name, root, args.examples, folder / f"{name}.pt")
                weights = "random initialization, BN statistics measured on the examples"
            bench = Bench(
                name, checkpoint, root, args.examples, args.batch_size, args.device, args.threads
            )
            cache = folder / f"inductor-{name}"  # fresh: the compile it times is cold
            speed = speed_section(bench, variants, grid, not args.no_memory, weights, cache)
            exact = speed and exact
        print(f"total {time.perf_counter() - started:.0f} s")

    if not exact:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
