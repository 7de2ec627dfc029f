"""The CUDA path, checked against the CPU one: skipped (with a reason) on a machine
without a GPU, run by benchmarks/gpu_check.sh on the first device lent to the project."""

import pytest
import torch

from lsurf import models, params
from lsurf.data.cifar import Split
from lsurf.directions import random_directions
from lsurf.evaluate import Evaluator

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

POINTS = [(0.0, 0.0), (0.3, -0.2), (-0.5, 0.5)]
# bf16 keeps 8 mantissa bits and TF32 10: a relative error of a few 1e-3 on a loss
# averaged over many images; 5e-2 leaves room for the accumulation over a ResNet.
LOW_PRECISION_BOUND = 5e-2


def surface(device: str, precision: str = "fp32", compile: bool = False) -> list[dict]:
    """Loss and accuracy at POINTS of a seeded resnet20 on seeded random images."""
    torch.manual_seed(0)
    model = models.build("resnet20")
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(256, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (256,), generator=generator)
    directions = random_directions(params.movable(model, False), "filter", "biasbn", 0, True)
    evaluator = Evaluator(
        model,
        directions,
        {"train": Split(images, labels)},
        64,
        torch.device(device),
        precision=precision,
        compile=compile,
    )
    return [evaluator.evaluate(a, b) for a, b in POINTS]


def max_relative_error(got: list[dict], want: list[dict]) -> float:
    return max(
        abs(g[key] - w[key]) / max(abs(w[key]), 1e-12)
        for g, w in zip(got, want, strict=True)
        for key in w
        if key.endswith("loss")
    )


def test_fp32_on_cuda_equals_cpu_fp32():
    error = max_relative_error(surface("cuda"), surface("cpu"))
    print(f"fp32 cuda vs cpu: max relative error {error:.3e}")
    assert error < 1e-5


@pytest.mark.parametrize("precision", ["bf16", "tf32"])
def test_low_precision_error_is_within_the_documented_bound(precision):
    error = max_relative_error(surface("cuda", precision), surface("cuda"))
    print(f"{precision} vs fp32 on cuda: max relative error {error:.3e}")
    assert error < LOW_PRECISION_BOUND


def test_compile_on_cuda_equals_eager():
    error = max_relative_error(surface("cuda", compile=True), surface("cuda"))
    print(f"compile vs eager on cuda: max relative error {error:.3e}")
    assert error < 1e-5
