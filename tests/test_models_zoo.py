"""Tests for the model zoo beyond the CIFAR ResNets: VGG, DenseNet and the Wide-ResNets.

Expected parameter counts and state_dict names are worked out by hand from the reference
implementation (tomgoldstein/loss-landscape, cifar10/models/vgg.py, densenet.py and
resnet.py's WResNet_cifar, listed in its model_loader.py), not from lsurf's code, so a wrong
width, a missing BN or a renamed layer fails here. Li et al. 2018 print no parameter counts
for these networks; the DenseNet-121 count is the well-known 6.96M of the CIFAR DenseNet-121
(kuangliu/pytorch-cifar, which the reference's densenet.py follows).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lsurf import models
from lsurf.models.densenet import Bottleneck
from lsurf.models.wide_resnet import wide_resnet

VGG_NAMES = ["vgg9", "vgg16", "vgg19"]
WRN_NAMES = [
    *(f"wrn56_{k}{suffix}" for k in (2, 4, 8) for suffix in ("", "_noshort")),
    "wrn110_2_noshort",
    "wrn110_4_noshort",
]
ZOO_NAMES = [*VGG_NAMES, "densenet121", *WRN_NAMES]
BN_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def bn_count(channels: int) -> int:
    return 2 * channels  # weight + bias; running statistics are buffers


def vgg_count(convs: list[int], pools: int, num_classes: int = 10) -> int:
    """Convs 3x3 with bias + BN; fc (C * s * s -> C) + BN1d; classifier (C -> classes)."""
    count, in_channels = 0, 3
    for channels in convs:
        count += 9 * in_channels * channels + channels + bn_count(channels)
        in_channels = channels
    side = 32 // 2**pools
    features = in_channels * side * side
    count += features * in_channels + in_channels + bn_count(in_channels)
    return count + in_channels * num_classes + num_classes


def densenet_count(blocks: tuple[int, ...], growth: int, num_classes: int = 10) -> int:
    """Stem 3x3 conv to 2k; bottlenecks BN + 1x1 (-> 4k) + BN + 3x3 (-> k); transitions
    BN + 1x1 to floor(C / 2); final BN + linear. No conv biases anywhere."""
    channels = 2 * growth
    count = 9 * 3 * channels
    for index, layers in enumerate(blocks):
        for _ in range(layers):
            count += bn_count(channels) + channels * 4 * growth
            count += bn_count(4 * growth) + 9 * 4 * growth * growth
            channels += growth
        if index < len(blocks) - 1:
            compressed = math.floor(channels / 2)
            count += bn_count(channels) + channels * compressed
            channels = compressed
    return count + bn_count(channels) + channels * num_classes + num_classes


def wrn_count(depth: int, k: int, shortcut: bool, num_classes: int = 10) -> int:
    """He et al.'s CIFAR ResNet with 16k/32k/64k channels (stem included); 1x1 conv + BN
    projections where the channel count changes (only into stages 2 and 3 when k > 1)."""
    n = (depth - 2) // 6
    count = 9 * 3 * 16 * k + bn_count(16 * k)
    in_channels = 16 * k
    for channels in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            count += 9 * in_channels * channels + bn_count(channels)
            count += 9 * channels * channels + bn_count(channels)
            if shortcut and in_channels != channels:
                count += in_channels * channels + bn_count(channels)
            in_channels = channels
    return count + 64 * k * num_classes + num_classes


# ---------------------------------------------------------------- registry


def test_every_zoo_name_is_registered() -> None:
    names = set(models.available())
    assert set(ZOO_NAMES) <= names
    # Every wrn* name in the registry is one this file checks.
    assert {name for name in names if name.startswith("wrn")} == set(WRN_NAMES)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_every_zoo_model_maps_a_batch_to_logits(name: str) -> None:
    torch.manual_seed(0)
    model = models.build(name).eval()
    with torch.inference_mode():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("name", "classifier_key", "features"),
    [
        ("vgg9", "classifier.weight", 256),
        ("densenet121", "linear.weight", 1024),
        ("wrn56_2_noshort", "linear.weight", 128),
    ],
)
def test_num_classes_sets_the_classifier_width(
    name: str, classifier_key: str, features: int
) -> None:
    model = models.build(name, num_classes=100).eval()
    assert model.state_dict()[classifier_key].shape == (100, features)
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


# ------------------------------------------------------- parameter counts


@pytest.mark.parametrize(
    ("name", "exact", "formula"),
    [
        # VGG-9: 7 convs (64, 64, 128, 128, 256, 256, 256), fc 4096 -> 256: ~2.79M.
        ("vgg9", 2_789_706, vgg_count([64, 64, 128, 128, 256, 256, 256], pools=3)),
        # VGG-16/19 with BN and one 512 -> 512 hidden fc (5 pools leave 1x1 maps).
        ("vgg16", 14_991_946, vgg_count([64] * 2 + [128] * 2 + [256] * 3 + [512] * 6, 5)),
        ("vgg19", 20_304_202, vgg_count([64] * 2 + [128] * 2 + [256] * 4 + [512] * 8, 5)),
        # CIFAR DenseNet-121 (growth 32, blocks 6-12-24-16, compression 0.5): 6.96M.
        ("densenet121", 6_956_298, densenet_count((6, 12, 24, 16), 32)),
    ],
)
def test_vgg_and_densenet_counts(name: str, exact: int, formula: int) -> None:
    assert formula == exact
    assert parameter_count(models.build(name)) == exact


@pytest.mark.parametrize(
    ("name", "exact", "formula"),
    [
        # k = 1 is ResNet-56 with projections (resnet56_b): 853,018 + 2,752.
        ("resnet56_b", 855_770, wrn_count(56, 1, shortcut=True)),
        ("resnet56_noshort", 853_018, wrn_count(56, 1, shortcut=False)),
        ("wrn56_2", 3_412_394, wrn_count(56, 2, shortcut=True)),
        ("wrn56_2_noshort", 3_401_770, wrn_count(56, 2, shortcut=False)),
        ("wrn56_4", 13_628_234, wrn_count(56, 4, shortcut=True)),
        ("wrn56_4_noshort", 13_586_506, wrn_count(56, 4, shortcut=False)),
        ("wrn56_8", 54_470_282, wrn_count(56, 8, shortcut=True)),
        ("wrn56_8_noshort", 54_304_906, wrn_count(56, 8, shortcut=False)),
        ("wrn110_2_noshort", 6_893_482, wrn_count(110, 2, shortcut=False)),
        ("wrn110_4_noshort", 27_537_226, wrn_count(110, 4, shortcut=False)),
    ],
)
def test_wide_resnet_counts(name: str, exact: int, formula: int) -> None:
    assert formula == exact
    assert parameter_count(models.build(name)) == exact


def test_width_scales_the_conv_parameters_quadratically() -> None:
    # Without shortcuts every conv weight grows by k^2 and BN/linear terms by k, so the count
    # is close to k^2 times ResNet-56's: a check on the "16k/32k/64k" reading of width.
    base = parameter_count(models.build("resnet56_noshort"))
    for k in (2, 4, 8):
        ratio = parameter_count(models.build(f"wrn56_{k}_noshort")) / base
        assert 0.99 * k * k < ratio < k * k


# --------------------------------------------------------- state_dict names


def reference_vgg9_keys() -> list[str]:
    """Keys of the reference's VGG('VGG9'): each conv width adds conv, BN, ReLU to the
    `features` Sequential and each 'M' a max pool, so the convs sit at indices 0, 3, 7, 10,
    14, 17, 20 with their BNs one after; fc is Linear, BatchNorm1d, ReLU; then classifier."""
    keys: list[str] = []
    for conv_index in (0, 3, 7, 10, 14, 17, 20):
        keys += [f"features.{conv_index}.weight", f"features.{conv_index}.bias"]
        keys += [f"features.{conv_index + 1}.{entry}" for entry in BN_ENTRIES]
    keys += ["fc.0.weight", "fc.0.bias"] + [f"fc.1.{entry}" for entry in BN_ENTRIES]
    return [*keys, "classifier.weight", "classifier.bias"]


def test_vgg9_keys_and_shapes_are_the_references() -> None:
    state = models.build("vgg9").state_dict()
    assert list(state) == reference_vgg9_keys()
    assert state["features.0.weight"].shape == (64, 3, 3, 3)
    assert state["features.20.weight"].shape == (256, 256, 3, 3)
    assert state["features.21.running_var"].shape == (256,)
    assert state["fc.0.weight"].shape == (256, 256 * 4 * 4)
    assert state["fc.1.running_mean"].shape == (256,)
    assert state["classifier.weight"].shape == (10, 256)


def test_vgg9_puts_a_pool_after_each_conv_group() -> None:
    features = models.build("vgg9").features
    pools = [index for index, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]
    assert pools == [6, 13, 23]
    assert len(features) == 24


def reference_densenet121_keys() -> list[str]:
    """Keys of the reference's DenseNet121(): conv1; dense{1..4} Sequentials of Bottlenecks
    (bn1, conv1, bn2, conv2); trans{1..3} (bn, conv); final bn; linear."""
    keys = ["conv1.weight"]
    for block, layers in enumerate((6, 12, 24, 16), start=1):
        for index in range(layers):
            prefix = f"dense{block}.{index}"
            keys += [f"{prefix}.bn1.{entry}" for entry in BN_ENTRIES]
            keys.append(f"{prefix}.conv1.weight")
            keys += [f"{prefix}.bn2.{entry}" for entry in BN_ENTRIES]
            keys.append(f"{prefix}.conv2.weight")
        if block < 4:
            keys += [f"trans{block}.bn.{entry}" for entry in BN_ENTRIES]
            keys.append(f"trans{block}.conv.weight")
    keys += [f"bn.{entry}" for entry in BN_ENTRIES]
    return [*keys, "linear.weight", "linear.bias"]


def test_densenet121_keys_and_shapes_are_the_references() -> None:
    state = models.build("densenet121").state_dict()
    assert list(state) == reference_densenet121_keys()
    # Channel bookkeeping: 64 + 6 * 32 = 256 -> 128; 128 + 12 * 32 = 512 -> 256;
    # 256 + 24 * 32 = 1024 -> 512; 512 + 16 * 32 = 1024.
    assert state["conv1.weight"].shape == (64, 3, 3, 3)
    assert state["dense1.5.conv1.weight"].shape == (128, 64 + 5 * 32, 1, 1)
    assert state["dense1.5.conv2.weight"].shape == (32, 128, 3, 3)
    assert state["trans1.conv.weight"].shape == (128, 256, 1, 1)
    assert state["trans2.conv.weight"].shape == (256, 512, 1, 1)
    assert state["trans3.conv.weight"].shape == (512, 1024, 1, 1)
    assert state["dense4.15.bn1.running_mean"].shape == (512 + 15 * 32,)
    assert state["bn.weight"].shape == (1024,)
    assert state["linear.weight"].shape == (10, 1024)


def test_wide_resnet_keys_are_the_cifar_resnets_with_wider_shapes() -> None:
    # The reference's WResNet_cifar names every tensor as its ResNet_cifar does.
    narrow = models.build("resnet56_b").state_dict()
    wide = models.build("wrn56_4").state_dict()
    assert list(wide) == list(narrow)
    for key, tensor in narrow.items():
        if tensor.dim() == 0:  # num_batches_tracked
            assert wide[key].dim() == 0
        elif key == "conv1.weight":
            assert wide[key].shape == (16 * 4, 3, 3, 3)  # the stem widens too
        elif key == "linear.weight":
            assert wide[key].shape == (10, 64 * 4)
        elif key == "linear.bias":
            assert wide[key].shape == (10,)
        else:
            # Every conv and BN has 4x the channels on each side.
            assert wide[key].shape == tuple(
                4 * size if axis < 2 else size for axis, size in enumerate(tensor.shape)
            )


def test_wide_noshort_keys_have_no_shortcut() -> None:
    short = models.build("wrn56_2").state_dict()
    noshort = models.build("wrn56_2_noshort").state_dict()
    assert not any("shortcut" in key for key in noshort)
    projection = sorted(set(short) - set(noshort))
    assert projection == sorted(
        [f"layer{stage}.0.shortcut.0.weight" for stage in (2, 3)]
        + [f"layer{stage}.0.shortcut.1.{entry}" for stage in (2, 3) for entry in BN_ENTRIES]
    )
    assert short["layer2.0.shortcut.0.weight"].shape == (64, 32, 1, 1)


def test_width_one_is_the_registered_resnet() -> None:
    # Figure 6's k = 1 column: the generic builder at width 1 is resnet56_b, weight for weight.
    torch.manual_seed(3)
    wrn = wide_resnet(56, 1, "B")(10).state_dict()
    torch.manual_seed(3)
    resnet = models.build("resnet56_b").state_dict()
    assert list(wrn) == list(resnet)
    assert all(torch.equal(wrn[key], resnet[key]) for key in wrn)


# -------------------------------------------------------------- shortcuts


def test_noshort_block_has_no_skip_path() -> None:
    # Silence the residual branch (bn2 outputs 0): with a shortcut the block passes its input
    # on (ReLU of it), without one it outputs zeros.
    short = models.build("wrn56_2").eval()
    noshort = models.build("wrn56_2_noshort").eval()
    x = torch.randn(2, 32, 32, 32)
    for model in (short, noshort):
        with torch.no_grad():
            model.layer1[1].bn2.weight.zero_()
            model.layer1[1].bn2.bias.zero_()
    with torch.inference_mode():
        assert torch.equal(short.layer1[1](x), torch.relu(x))
        assert torch.equal(noshort.layer1[1](x), torch.zeros_like(x))


def test_shortcut_changes_the_output_given_the_same_weights() -> None:
    torch.manual_seed(0)
    noshort = models.build("wrn56_2_noshort").eval()
    short = models.build("wrn56_2").eval()
    # Every tensor of the no-shortcut net exists in the other; only the projections differ.
    missing, unexpected = short.load_state_dict(noshort.state_dict(), strict=False)
    assert unexpected == []
    assert all(".shortcut." in key for key in missing)
    x = torch.randn(2, 32, 32, 32)
    with torch.inference_mode():
        # Same weights in a stride-1 block: the only difference is the added input.
        assert not torch.allclose(short.layer1[1](x), noshort.layer1[1](x))
        images = torch.randn(2, 3, 32, 32)
        assert not torch.allclose(short(images), noshort(images))


# ------------------------------------------------------------ architecture


def test_dense_layer_puts_its_new_features_in_front_of_its_input() -> None:
    layer = Bottleneck(in_channels=40, growth_rate=12).eval()
    x = torch.randn(2, 40, 8, 8)
    with torch.inference_mode():
        out = layer(x)
    assert out.shape == (2, 52, 8, 8)
    assert torch.equal(out[:, 12:], x)


def test_vgg9_hidden_layer_sees_4x4_maps() -> None:
    model = models.build("vgg9").eval()
    with torch.inference_mode():
        maps = model.features(torch.randn(2, 3, 32, 32))
    assert maps.shape == (2, 256, 4, 4)


def test_generic_builder_makes_other_depth_width_pairs() -> None:
    model = wide_resnet(20, 3, "none")(7)
    assert parameter_count(model) == wrn_count(20, 3, shortcut=False, num_classes=7)
    with torch.inference_mode():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize(("depth", "width"), [(57, 2), (2, 2), (56, 0)])
def test_generic_builder_rejects_bad_shapes_at_once(depth: int, width: int) -> None:
    with pytest.raises(ValueError, match="Wide-ResNet"):
        wide_resnet(depth, width)
