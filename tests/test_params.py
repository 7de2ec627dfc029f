"""params: which of a model's tensors a direction moves, copies of them, and their digest."""

import hashlib

import numpy as np
import pytest
import torch
from torch import nn

from lsurf import models, params

PARAMETERS = [
    "conv1.weight",
    "bn1.weight",
    "bn1.bias",
    "conv2.weight",
    "bn2.weight",
    "bn2.bias",
    "linear.weight",
    "linear.bias",
]
BN_STATISTICS = ["bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"]


@pytest.fixture
def model():
    torch.manual_seed(0)
    return models.build("convnet_small")


def test_movable_is_the_parameters_or_with_buffers_also_the_bn_statistics(model):
    assert list(params.movable(model, include_buffers=False)) == PARAMETERS
    with_buffers = list(params.movable(model, include_buffers=True))
    # In state_dict order (each BN's statistics right after its γ/β); the integer batch
    # counters never move.
    state_order = [key for key in model.state_dict() if "num_batches_tracked" not in key]
    assert with_buffers == state_order
    assert sorted(with_buffers) == sorted(PARAMETERS + BN_STATISTICS)


def test_movable_tensors_are_the_models_own_so_a_move_reaches_the_model(model):
    live = params.movable(model, include_buffers=True)
    assert live["conv1.weight"] is model.conv1.weight
    assert live["bn2.running_var"] is model.bn2.running_var
    with torch.no_grad():
        live["linear.bias"].add_(1.0)
        live["bn1.running_mean"].fill_(0.25)
    assert torch.equal(model.state_dict()["linear.bias"], live["linear.bias"].detach())
    assert torch.equal(model.bn1.running_mean, torch.full((8,), 0.25))


def test_only_floating_buffers_of_the_state_dict_move():
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(2, 2)
            self.register_buffer("shift", torch.zeros(2))  # floating, saved: moves
            self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # integer: never
            self.register_buffer("cache", torch.ones(2), persistent=False)  # not in a checkpoint

    module = Scaled()
    assert list(params.movable(module, include_buffers=False)) == ["linear.weight", "linear.bias"]
    # state_dict order: a module's own tensors come before its children's.
    assert list(params.movable(module, include_buffers=True)) == [
        "shift",
        "linear.weight",
        "linear.bias",
    ]


def test_snapshot_is_a_detached_copy_unaffected_by_later_moves(model):
    live = params.movable(model, include_buffers=True)
    saved = params.snapshot(live)
    assert list(saved) == list(live)
    for key, tensor in saved.items():
        assert torch.equal(tensor, live[key]) and tensor.dtype == live[key].dtype, key
        assert not tensor.requires_grad and tensor.data_ptr() != live[key].data_ptr(), key
    original = {key: tensor.clone() for key, tensor in saved.items()}
    with torch.no_grad():
        for tensor in live.values():
            tensor.mul_(-3.0).add_(1.0)
    for key in saved:
        assert torch.equal(saved[key], original[key]), f"{key} followed the model"
    # And the other way: changing the copy leaves the model alone.
    before = model.conv2.weight.detach().clone()
    saved["conv2.weight"].zero_()
    assert torch.equal(model.conv2.weight.detach(), before)


def test_digest_is_the_sha256_of_sorted_keys_shapes_dtypes_and_bytes():
    a = torch.tensor([1.0, -2.0])
    b = torch.tensor([[3]], dtype=torch.int64)
    expected = hashlib.sha256()
    expected.update(b"a|(2,)|torch.float32|" + np.array([1.0, -2.0], np.float32).tobytes())
    expected.update(b"b|(1, 1)|torch.int64|" + np.array([3], np.int64).tobytes())
    # A stored hash is compared across machines and runs: its recipe must not drift.
    assert params.digest({"b": b, "a": a}) == expected.hexdigest()
    assert params.digest({"a": a, "b": b}) == expected.hexdigest()  # key order does not matter


def test_digest_tells_apart_any_change_and_ignores_layout(model):
    weight = torch.arange(6.0).reshape(2, 3)
    reference = params.digest({"w": weight})
    different = {
        "value": {"w": weight + torch.tensor([[0.0, 0.0, 1e-6], [0.0, 0.0, 0.0]])},
        "name": {"v": weight},
        "shape": {"w": weight.reshape(3, 2)},
        "dtype": {"w": weight.view(torch.int32)},  # the same bytes, read otherwise
        "extra tensor": {"w": weight, "x": torch.zeros(0)},
    }
    for what, tensors in different.items():
        assert params.digest(tensors) != reference, what
    # A transposed view, or a live parameter, digests as its plain contiguous values.
    transposed = weight.t().contiguous().t()
    assert not transposed.is_contiguous()
    assert params.digest({"w": transposed}) == reference
    live = params.movable(model, include_buffers=False)
    assert live["conv1.weight"].requires_grad
    assert params.digest(live) == params.digest(params.snapshot(live))


def test_count_is_the_number_of_entries(model):
    # conv1 3·8·9 + bn1 2·8 + conv2 8·16·9 + bn2 2·16 + linear 16·10 + 10
    assert params.count(params.movable(model, include_buffers=False)) == 1586
    # + the running mean and variance of 8 and 16 channels
    assert params.count(params.movable(model, include_buffers=True)) == 1586 + 48
    assert params.count({}) == 0
