"""The CUDA path, checked against the CPU one: skipped (with a reason) on a machine without a
GPU, run by benchmarks/gpu_check.sh on the first device lent to the project.

What is checked: fp32 on CUDA gives the CPU's losses; a streamed split (one over
`data.cache_mb`) hands its batches from pinned host memory through non-blocking copies and
gives the cached split's values; bf16 and TF32 stay within their bound of fp32, in a table of
the errors; torch.compile on CUDA compiles, and gives the eager values. The figures are
printed behind "gpu-check: " (run with -s), where the GPU check's report collects them.
"""

import functools

import pytest
import torch

from lsurf import models, params
from lsurf.config import DataConfig
from lsurf.data.splits import StreamedSplit, from_object
from lsurf.directions import random_directions
from lsurf.evaluate import Evaluator

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

POINTS = [(0.0, 0.0), (0.3, -0.2), (-0.5, 0.5)]
EXAMPLES, BATCH = 300, 64  # 5 batches, the last one short (44 examples)
# bf16 keeps 8 mantissa bits and TF32 10: a relative error of a few 1e-3 on a loss
# averaged over many images; 5e-2 leaves room for the accumulation over a ResNet.
LOW_PRECISION_BOUND = 5e-2
# Two paths through the same kernels on the same batches: the same bits expected, and at
# most fp32 rounding allowed.
SAME_PATH_BOUND = 1e-6


def examples() -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random CIFAR-shaped images and labels, on the CPU."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(EXAMPLES, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (EXAMPLES,), generator=generator)
    return images, labels


def open_train(device: str, streamed: bool):
    """The examples as a split on `device`: cached (one tensor pair there), or streamed
    through a DataLoader (cache_mb 0, two workers, as a split over the budget is)."""
    data = DataConfig(cache_mb=0, workers=2) if streamed else DataConfig()
    return from_object(examples(), "gpu check", data, "train", torch.device(device), True)


@functools.cache
def surface(
    device: str, precision: str = "fp32", compile: bool = False, streamed: bool = False
) -> tuple[tuple[dict[str, float], ...], tuple[str, ...]]:
    """Loss and accuracy at POINTS of a seeded resnet20, and the evaluator's notes."""
    torch.manual_seed(0)
    model = models.build("resnet20")
    directions = random_directions(params.movable(model, False), "filter", "biasbn", 0, True)
    evaluator = Evaluator(
        model,
        directions,
        {"train": open_train(device, streamed)},
        BATCH,
        torch.device(device),
        precision=precision,
        compile=compile,
    )
    return tuple(evaluator.evaluate(a, b) for a, b in POINTS), tuple(evaluator.notes)


def errors(got: tuple[dict[str, float], ...], want: tuple[dict[str, float], ...]) -> dict:
    """The largest relative error of the loss and absolute one of the accuracy (points)."""
    pairs = list(zip(got, want, strict=True))
    return {
        "loss": max(
            abs(g[k] - w[k]) / max(abs(w[k]), 1e-12)
            for g, w in pairs
            for k in w
            if k.endswith("loss")
        ),
        "acc": max(abs(g[k] - w[k]) for g, w in pairs for k in w if k.endswith("acc")),
    }


def test_fp32_on_cuda_equals_cpu_fp32():
    error = errors(surface("cuda")[0], surface("cpu")[0])
    print(f"gpu-check: fp32 cuda vs cpu: loss rel. error {error['loss']:.3e}")
    assert error["loss"] < 1e-5


def test_a_streamed_split_copies_pinned_batches_without_blocking(monkeypatch):
    streamed, cached = open_train("cuda", streamed=True), open_train("cuda", streamed=False)
    assert isinstance(streamed, StreamedSplit) and cached.cached
    copies = []  # (source pinned, non_blocking) of every host-to-device copy
    to = torch.Tensor.to

    def recording_to(tensor, *args, **kwargs):
        moved = to(tensor, *args, **kwargs)
        if tensor.device.type == "cpu" and moved.device.type == "cuda":
            copies.append((tensor.is_pinned(), bool(kwargs.get("non_blocking", False))))
        return moved

    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    batches = list(streamed.batches(BATCH))
    monkeypatch.undo()
    torch.cuda.synchronize()  # the non-blocking copies have landed
    print(f"gpu-check: streamed split: {len(copies)} copies, pinned and non-blocking: {copies}")
    assert copies == [(True, True)] * (2 * len(batches))  # inputs and targets of each batch
    wanted = list(cached.batches(BATCH))
    assert [len(targets) for _, targets in batches] == [64, 64, 64, 64, 44]
    for (inputs, targets), (cached_inputs, cached_targets) in zip(batches, wanted, strict=True):
        assert inputs.device.type == "cuda"
        assert inputs.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(inputs, cached_inputs) and torch.equal(targets, cached_targets)


def test_a_streamed_sweep_gives_the_cached_values_on_cuda():
    streamed, cached = surface("cuda", streamed=True)[0], surface("cuda")[0]
    error = errors(streamed, cached)
    same = streamed == cached
    print(
        f"gpu-check: streamed vs cached on cuda: loss rel. error {error['loss']:.3e}"
        f" ({'bit for bit' if same else 'not bit for bit'})"
    )
    assert error["loss"] <= SAME_PATH_BOUND and error["acc"] == 0
    assert errors(streamed, surface("cpu")[0])["loss"] < 1e-5  # and the CPU's, as cached is


def test_low_precision_error_table():
    reference = surface("cuda")[0]
    rows = {
        precision: errors(surface("cuda", precision)[0], reference)
        for precision in ("tf32", "bf16")
    }
    rows["fp32 (cpu)"] = errors(surface("cpu")[0], reference)
    print("gpu-check: | precision | vs | max rel. error, loss | max error, accuracy (points) |")
    print("gpu-check: | --- | --- | --- | --- |")
    for precision, error in rows.items():
        print(f"gpu-check: | {precision} | fp32 cuda | {error['loss']:.3e} | {error['acc']:.3f} |")
    for precision in ("tf32", "bf16"):
        assert rows[precision]["loss"] < LOW_PRECISION_BOUND, precision


def test_compile_on_cuda_compiles_and_equals_eager():
    compiled, notes = surface("cuda", compile=True)
    error = errors(compiled, surface("cuda")[0])
    print(f"gpu-check: compile vs eager on cuda: loss rel. error {error['loss']:.3e}; {notes}")
    assert any(note.startswith("compiled with torch.compile") for note in notes), notes
    assert error["loss"] < 1e-5
