"""Tests for lsurf.models: the registry, the CIFAR ResNets and the small test networks.

The expected names and counts are derived by hand from the two upstream sources the
checkpoints come from (akamaster/pytorch_resnet_cifar10 resnet.py for option A,
tomgoldstein/loss-landscape cifar10/models/resnet.py for option B and no-shortcut), not from
lsurf's own code, so a renamed layer or a wrong channel count fails here.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lsurf import models
from lsurf.errors import ConfigError

DEPTHS = (20, 32, 44, 56, 110)
RESNET_NAMES = [f"resnet{d}{suffix}" for suffix in ("", "_b", "_noshort") for d in DEPTHS]
BN_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def expected_parameter_count(depth: int, projection_shortcuts: bool) -> int:
    """Count by hand: 3x3 convs without bias, BN (weight + bias), linear 64 -> 10."""
    n = (depth - 2) // 6
    count = 3 * 16 * 9 + 2 * 16  # stem conv + bn
    in_channels = 16
    for channels in (16, 32, 64):
        for _ in range(n):
            count += 9 * in_channels * channels + 2 * channels  # conv1 + bn1
            count += 9 * channels * channels + 2 * channels  # conv2 + bn2
            if projection_shortcuts and in_channels != channels:
                count += in_channels * channels + 2 * channels  # 1x1 conv + bn
            in_channels = channels
    return count + 64 * 10 + 10


def akamaster_resnet20_keys() -> list[str]:
    """The state_dict keys of akamaster's resnet20 (resnet.py: ResNet + BasicBlock, option A).

    Stem `conv1`/`bn1`, `layer1..3` as Sequentials of 3 BasicBlocks with conv1/bn1/conv2/bn2
    each (its LambdaLayer shortcut and empty Sequential hold no state), then `linear`.
    """
    keys = ["conv1.weight"] + [f"bn1.{entry}" for entry in BN_ENTRIES]
    for stage in (1, 2, 3):
        for block in range(3):
            prefix = f"layer{stage}.{block}"
            for layer in (1, 2):
                keys.append(f"{prefix}.conv{layer}.weight")
                keys += [f"{prefix}.bn{layer}.{entry}" for entry in BN_ENTRIES]
    return [*keys, "linear.weight", "linear.bias"]


# ---------------------------------------------------------------- registry


def test_available_lists_every_family_sorted() -> None:
    names = models.available()
    assert names == sorted(names)
    expected = {"convnet_small", "mlp_small", "vgg9", "densenet121", "wrn56_2"}
    assert set(RESNET_NAMES) | expected <= set(names)


def test_unknown_name_is_a_config_error_listing_valid_names() -> None:
    with pytest.raises(ConfigError) as caught:
        models.build("resnet57")
    message = str(caught.value)
    assert "unknown model 'resnet57'" in message
    assert "valid names: convnet_small, densenet121, mlp_small, resnet110, resnet110_b" in message
    assert "\n" not in message


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, True])
def test_bad_num_classes_is_a_config_error(num_classes: object) -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        models.build("convnet_small", num_classes)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [*RESNET_NAMES, "convnet_small", "mlp_small"])
def test_every_model_maps_a_batch_to_logits(name: str) -> None:
    torch.manual_seed(0)
    model = models.build(name).eval()
    with torch.inference_mode():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


def test_num_classes_sets_the_classifier_width() -> None:
    model = models.build("resnet20", num_classes=100).eval()
    assert model.state_dict()["linear.weight"].shape == (100, 64)
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_build_is_deterministic_given_the_global_seed() -> None:
    torch.manual_seed(7)
    first = models.build("resnet20_b").state_dict()
    torch.manual_seed(7)
    second = models.build("resnet20_b").state_dict()
    torch.manual_seed(8)
    third = models.build("resnet20_b").state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not torch.equal(first["layer1.0.conv1.weight"], third["layer1.0.conv1.weight"])


def test_build_returns_a_fresh_model_each_time() -> None:
    first = models.build("convnet_small")
    second = models.build("convnet_small")
    with torch.no_grad():
        first.linear.weight.zero_()
    assert second.linear.weight.abs().sum() > 0


# ------------------------------------------------------- parameter counts


@pytest.mark.parametrize(("depth", "exact"), [(20, 269_722), (56, 853_018), (110, 1_727_962)])
def test_option_a_counts_match_published_exact_values(depth: int, exact: int) -> None:
    # Exact counts of the option-A networks in akamaster's table (0.27M, 0.85M, 1.7M).
    # ResNet-110 with option A has 1,727,962; 1,730,714 is the option-B network (below).
    assert parameter_count(models.build(f"resnet{depth}")) == exact


@pytest.mark.parametrize(
    ("depth", "millions"),
    [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)],
)
def test_option_a_counts_match_published_table(depth: int, millions: float) -> None:
    count = parameter_count(models.build(f"resnet{depth}"))
    digits = 1 if depth == 110 else 2  # the table prints 1.7M for ResNet-110
    assert round(count / 1e6, digits) == millions
    assert count == expected_parameter_count(depth, projection_shortcuts=False)


@pytest.mark.parametrize("depth", DEPTHS)
def test_option_b_and_noshort_counts_follow_the_architecture(depth: int) -> None:
    option_b = parameter_count(models.build(f"resnet{depth}_b"))
    noshort = parameter_count(models.build(f"resnet{depth}_noshort"))
    assert option_b == expected_parameter_count(depth, projection_shortcuts=True)
    # Two projections (16->32, 32->64): 512 + 64 and 2048 + 128 extra parameters.
    assert option_b - parameter_count(models.build(f"resnet{depth}")) == 2_752
    assert noshort == expected_parameter_count(depth, projection_shortcuts=False)


def test_resnet110_b_count() -> None:
    assert parameter_count(models.build("resnet110_b")) == 1_730_714


# --------------------------------------------------------- state_dict names


def test_resnet20_keys_are_akamasters() -> None:
    keys = list(models.build("resnet20").state_dict())
    expected = akamaster_resnet20_keys()
    assert len(expected) == 116
    assert keys == expected
    # Spot checks, spelled out.
    for key in (
        "conv1.weight",
        "layer1.0.conv1.weight",
        "layer2.0.bn2.running_var",
        "layer3.2.conv2.weight",
        "linear.weight",
        "linear.bias",
    ):
        assert key in keys


@pytest.mark.parametrize("depth", DEPTHS)
def test_noshort_and_option_a_share_key_names(depth: int) -> None:
    option_a = models.build(f"resnet{depth}").state_dict()
    noshort = models.build(f"resnet{depth}_noshort").state_dict()
    assert list(option_a) == list(noshort)
    assert not any("shortcut" in key for key in option_a)


def test_resnet56_b_has_the_reference_shortcut_names() -> None:
    state = models.build("resnet56_b").state_dict()
    shortcut_keys = sorted(key for key in state if "shortcut" in key)
    expected = sorted(
        [f"layer{stage}.0.shortcut.0.weight" for stage in (2, 3)]
        + [f"layer{stage}.0.shortcut.1.{entry}" for stage in (2, 3) for entry in BN_ENTRIES]
    )
    assert shortcut_keys == expected
    assert state["layer2.0.shortcut.0.weight"].shape == (32, 16, 1, 1)
    assert state["layer3.0.shortcut.0.weight"].shape == (64, 32, 1, 1)
    assert state["layer3.0.shortcut.1.running_mean"].shape == (64,)
    # Everything else is named as in option A: 9 blocks per stage, 332 + 12 keys.
    assert len(state) == 332 + 12
    assert "layer3.8.bn2.weight" in state and "layer3.9.bn2.weight" not in state


# -------------------------------------------------------------- shortcuts


def block_with_silent_residual(name: str, stage: int) -> nn.Module:
    """The first block of `stage`, eval mode, with bn2 zeroed so the residual branch is 0."""
    model = models.build(name).eval()
    block = getattr(model, f"layer{stage}")[0]
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
    return block


def test_option_a_shortcut_is_parameter_free_and_zero_pads_both_sides() -> None:
    block = block_with_silent_residual("resnet20", stage=2)
    assert list(block.shortcut.parameters()) == []
    assert list(block.shortcut.buffers()) == []
    x = torch.randn(2, 16, 32, 32)
    with torch.inference_mode():
        out = block(x)
    assert out.shape == (2, 32, 16, 16)
    # akamaster pads planes // 4 = 8 zero channels before and after the 16 input channels.
    assert torch.equal(out[:, :8], torch.zeros(2, 8, 16, 16))
    assert torch.equal(out[:, 24:], torch.zeros(2, 8, 16, 16))
    assert torch.equal(out[:, 8:24], torch.relu(x[:, :, ::2, ::2]))


def test_identity_shortcut_carries_the_input() -> None:
    block = block_with_silent_residual("resnet20", stage=1)
    x = torch.randn(2, 16, 32, 32)
    with torch.inference_mode():
        assert torch.equal(block(x), torch.relu(x))


def test_option_b_shortcut_is_a_strided_projection() -> None:
    block = block_with_silent_residual("resnet20_b", stage=3)
    x = torch.randn(2, 32, 16, 16)
    with torch.inference_mode():
        expected = torch.relu(block.shortcut[1](block.shortcut[0](x)))
        out = block(x)
    assert out.shape == (2, 64, 8, 8)
    assert torch.allclose(out, expected)


def test_noshort_block_has_no_skip_connection() -> None:
    block = block_with_silent_residual("resnet20_noshort", stage=1)
    with torch.inference_mode():
        out = block(torch.randn(2, 16, 32, 32))
    assert torch.equal(out, torch.zeros_like(out))


# ------------------------------------------------------------ convnet_small


def test_convnet_small_holds_every_kind_of_tensor() -> None:
    model = models.build("convnet_small")
    dims = {name: parameter.dim() for name, parameter in model.named_parameters()}
    assert dims == {
        "conv1.weight": 4,
        "bn1.weight": 1,
        "bn1.bias": 1,
        "conv2.weight": 4,
        "bn2.weight": 1,
        "bn2.bias": 1,
        "linear.weight": 2,
        "linear.bias": 1,
    }
    buffers = {name for name, _ in model.named_buffers()}
    assert {"bn1.running_mean", "bn1.running_var", "bn2.num_batches_tracked"} <= buffers
    assert parameter_count(model) < 2_000


# ------------------------------------------------------------ mlp_small


def test_mlp_small_is_two_hidden_layers_of_64_on_the_flattened_image() -> None:
    model = models.build("mlp_small", num_classes=7)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    assert shapes == {
        "fc1.weight": (64, 3072),
        "fc1.bias": (64,),
        "fc2.weight": (64, 64),
        "fc2.bias": (64,),
        "linear.weight": (7, 64),
        "linear.bias": (7,),
    }
    # 3072·64 + 64 + 64·64 + 64 + 64·7 + 7, counted by hand.
    assert parameter_count(model) == 201_287


def test_the_tiny_transformer_is_causal_and_gives_logits_per_position() -> None:
    torch.manual_seed(0)
    model = models.build_named("tiny_transformer", None, {"vocab_size": 20, "context": 8}).eval()
    ids = torch.randint(0, 20, (2, 8))
    changed = ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 20  # only later tokens differ
    with torch.no_grad():
        logits, other = model(ids), model(changed)
    assert logits.shape == (2, 8, 20)
    assert torch.equal(logits[:, :5], other[:, :5]) and not torch.equal(logits[:, 5:], other[:, 5:])
