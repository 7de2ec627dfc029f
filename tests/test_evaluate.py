import math

import pytest
import torch
from torch import nn

from lsurf import checkpoint, models, params
from lsurf.data.cifar import Split, load_split
from lsurf.data.layouts import REFERENCE_MEAN, REFERENCE_STD
from lsurf.directions import Directions, random_directions
from lsurf.errors import ConfigError
from lsurf.evaluate import Evaluator, pick_device


class ConstantLogits(nn.Module):
    """Logits that ignore the image: the loss at (a, b) has a closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(1, 10))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.table.expand(images.shape[0], -1)


def closed_form_loss(a: float, b: float, labels: list[int]) -> float:
    logits = [0.0] * 10
    logits[0], logits[1] = a, b
    log_partition = math.log(sum(math.exp(value) for value in logits))
    return sum(log_partition - logits[label] for label in labels) / len(labels)


def constant_logits_evaluator(labels: list[int]) -> Evaluator:
    unit = torch.zeros(1, 10)
    x, y = unit.clone(), unit.clone()
    x[0, 0], y[0, 1] = 1.0, 1.0
    directions = Directions("random", "none", "none", 0, {"table": x}, {"table": y})
    split = Split(torch.zeros(len(labels), 3, 32, 32), torch.tensor(labels))
    return Evaluator(
        ConstantLogits(), directions, {"train": split}, batch_size=3, device=torch.device("cpu")
    )


def test_loss_and_accuracy_match_the_closed_form():
    labels = [0, 1, 1, 2, 0, 1, 5]
    evaluator = constant_logits_evaluator(labels)
    for a, b in [(0.0, 0.0), (2.0, -1.0), (-0.5, 3.0), (1.0, 1.5)]:
        result = evaluator.evaluate(a, b)
        assert math.isclose(result["train_loss"], closed_form_loss(a, b, labels), rel_tol=1e-6)
    # At (2, -1) class 0 wins: 2 of the 7 labels are 0.
    assert evaluator.evaluate(2.0, -1.0)["train_acc"] == 100.0 * 2 / 7
    assert evaluator.evaluate(-0.5, 3.0)["train_acc"] == 100.0 * 3 / 7


def test_overflowing_loss_is_recorded_not_raised():
    evaluator = constant_logits_evaluator([1, 2])
    result = evaluator.evaluate(float("inf"), 0.0)
    assert math.isnan(result["train_loss"]) or math.isinf(result["train_loss"])


def test_origin_is_theta_star_exactly_and_moves_do_not_accumulate(cifar_root, small_checkpoint):
    model = models.build("convnet_small")
    checkpoint.load_weights(model, small_checkpoint)
    theta = params.snapshot(params.movable(model, include_buffers=True))
    split = load_split(cifar_root, "train", REFERENCE_MEAN, REFERENCE_STD)
    directions = random_directions(params.movable(model, False), "filter", "biasbn", 0, True)
    evaluator = Evaluator(model, directions, {"train": split}, 64, torch.device("cpu"))
    before = evaluator.evaluate(0.0, 0.0)
    evaluator.evaluate(0.7, -0.3)
    evaluator.evaluate(-1.0, 1.0)
    after = evaluator.evaluate(0.0, 0.0)
    assert before == after
    for key, tensor in params.movable(model, include_buffers=True).items():
        assert torch.equal(tensor, theta[key]), key
    # A moved point is really moved, by exactly a·d1 + b·d2.
    evaluator.move_to(0.5, 0.25)
    key = next(k for k in directions.x if directions.x[k].dim() > 1)
    live = params.movable(model, include_buffers=False)[key]
    torch.testing.assert_close(
        live, theta[key] + 0.5 * directions.x[key] + 0.25 * directions.y[key]
    )


def test_asking_for_cuda_without_one_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no usable CUDA device"):
        pick_device("cuda")
    assert pick_device("auto") == torch.device("cpu")


def test_fp32_turns_off_tf32_and_tf32_is_an_opt_in():
    directions = Directions("random", "none", "none", 0, {"table": torch.zeros(1, 10)}, None)
    split = Split(torch.zeros(2, 3, 32, 32), torch.tensor([0, 1]))
    for precision, allowed in (("tf32", True), ("fp32", False)):
        Evaluator(
            ConstantLogits(),
            directions,
            {"train": split},
            2,
            torch.device("cpu"),
            precision=precision,
        )
        assert torch.backends.cudnn.allow_tf32 is allowed
        assert torch.backends.cuda.matmul.allow_tf32 is allowed
        # Same bits on every rank: deterministic cuDNN algorithms, no per-process autotuning.
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
