import pytest
import torch

from lsurf import models, params
from lsurf.directions import normalize, random_directions, target_direction


@pytest.fixture
def weights():
    torch.manual_seed(1)
    model = models.build("resnet20")
    return params.snapshot(params.movable(model, include_buffers=False))


def filter_norms(tensor):
    return tensor.reshape(tensor.shape[0], -1).norm(dim=1)


def test_filter_normalization_gives_each_filter_its_weights_filter_norm(weights):
    directions = random_directions(weights, "filter", "biasbn", seed=0, plane=True)
    checked = 0
    for d in (directions.x, directions.y):
        for key, weight in weights.items():
            if weight.dim() <= 1:
                assert torch.count_nonzero(d[key]) == 0, f"{key} must stay at θ*"
                continue
            torch.testing.assert_close(
                filter_norms(d[key]), filter_norms(weight), rtol=1e-5, atol=1e-7
            )
            checked += 1
    assert checked == 2 * 20  # 19 convolutions + the linear layer, in both directions


def test_same_seed_same_directions_and_other_seed_differs(weights):
    first = random_directions(weights, "filter", "biasbn", seed=7, plane=True)
    again = random_directions(weights, "filter", "biasbn", seed=7, plane=True)
    other = random_directions(weights, "filter", "biasbn", seed=8, plane=True)
    assert first.digest() == again.digest() != other.digest()
    for key in weights:
        assert torch.equal(first.x[key], again.x[key])
    assert not torch.equal(first.x["conv1.weight"], first.y["conv1.weight"])


def test_raw_draws_do_not_depend_on_normalization(weights):
    """The Gaussian stream is the same whatever the norm: 'none' shows the raw draw."""
    raw = random_directions(weights, "none", "biasbn", seed=3, plane=False)
    filtered = random_directions(weights, "filter", "biasbn", seed=3, plane=False)
    key = "layer1.0.conv1.weight"
    expected = normalize(raw.x[key], weights[key], "filter", "biasbn")
    torch.testing.assert_close(filtered.x[key], expected)


def test_each_normalization_follows_its_rule():
    torch.manual_seed(0)
    weight = torch.randn(4, 3, 3, 3)
    direction = torch.randn(4, 3, 3, 3)
    layer = normalize(direction, weight, "layer", "biasbn")
    torch.testing.assert_close(layer.norm(), weight.norm())
    torch.testing.assert_close(layer / layer.norm(), direction / direction.norm())
    torch.testing.assert_close(normalize(direction, weight, "weight", "biasbn"), direction * weight)
    dlayer = normalize(direction, weight, "dlayer", "biasbn")
    torch.testing.assert_close(dlayer.norm(), torch.tensor(1.0))
    dfilter = normalize(direction, weight, "dfilter", "biasbn")
    torch.testing.assert_close(filter_norms(dfilter), torch.ones(4))
    assert torch.equal(normalize(direction, weight, "none", "biasbn"), direction)
    # Each filter keeps its direction; only its length changes.
    filtered = normalize(direction, weight, "filter", "biasbn")
    cosine = torch.nn.functional.cosine_similarity(
        filtered.reshape(4, -1), direction.reshape(4, -1), dim=1
    )
    torch.testing.assert_close(cosine, torch.ones(4))


def test_one_dimensional_tensors_follow_the_reference_rule():
    bias, direction = torch.randn(5), torch.randn(5)
    assert torch.count_nonzero(normalize(direction, bias, "filter", "biasbn")) == 0
    for norm in ("filter", "layer", "none"):
        assert torch.equal(normalize(direction, bias, norm, "none"), bias)


def test_target_direction_is_the_difference_including_buffers():
    torch.manual_seed(0)
    first, second = models.build("convnet_small"), models.build("convnet_small")
    start = params.snapshot(params.movable(first, include_buffers=True))
    end = params.snapshot(params.movable(second, include_buffers=True))
    assert any("running_mean" in key for key in start)
    assert not any("num_batches_tracked" in key for key in start)
    direction = target_direction(start, end)
    assert direction.y is None and direction.norm == "none"
    for key in start:
        torch.testing.assert_close(direction.x[key], end[key] - start[key])
