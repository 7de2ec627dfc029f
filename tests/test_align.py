"""Tests for lsurf.align: weight matching reorders B's hidden units and B computes what it did.

Every model here has its batch norms moved off their initial values (γ = 1, β = 0, running
mean 0 and variance 1), which would hide a running statistic left in the wrong order: the
outputs are compared in eval mode (running statistics) and in train mode (batch statistics).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lsurf import models
from lsurf.align import (
    Alignment,
    PermutedAxis,
    Piece,
    find_unit_spaces,
    match_weights,
    permute_units,
)
from lsurf.checkpoint import file_digest, load_weights, save_aligned_checkpoint, save_checkpoint
from lsurf.errors import AlignmentError, CheckpointError, ConfigError, LsurfError

# Matched to convergence here, and VGG-9 for two passes (to convergence it takes 18, about 2 s
# on 2 idle cores and many times that on busy ones). The other families' unit spaces are
# checked with random permutations, on 16x16 images (their pooling takes any side that halves
# three times): a quarter of the work of 32x32 ones. At 8x8, train mode's batch statistics of
# the last stage would come from 4 values a channel, too few to agree to 1e-5 in float32.
MATCHED = ["mlp_small", "convnet_small", "resnet20"]
PASSES = {"vgg9": 2}
PLACED = ["resnet20_b", "resnet20_noshort", "densenet121", "wrn56_2"]
SMALL_SIDE = 16
TOLERANCE = 1e-5  # the largest output difference, relative to the largest output


def realistic(name: str, seed: int, side: int = 32) -> nn.Module:
    """A registry model from `seed`, its BN affine parameters and running statistics moved."""
    torch.manual_seed(seed)
    model = models.build(name)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=generator))
        model.train()
        for _ in range(2):  # running statistics from two batches
            model(torch.randn(4, 3, side, side, generator=generator))
    return model.eval()


def outputs(
    name: str, state: dict[str, torch.Tensor], training: bool, side: int = 32
) -> torch.Tensor:
    model = models.build(name)
    model.load_state_dict(state)
    model.train(training)
    with torch.no_grad():
        return model(torch.randn(4, 3, side, side, generator=torch.Generator().manual_seed(9)))


def relative_error(found: torch.Tensor, expected: torch.Tensor) -> float:
    return float((found - expected).abs().max() / expected.abs().max())


@functools.cache
def aligned(name: str) -> tuple[nn.Module, nn.Module, Alignment]:
    """Two models from seeds 1 and 2, and B matched to A (once per name for the module)."""
    first, second = realistic(name, 1), realistic(name, 2)
    passes = PASSES.get(name, 100)
    alignment = match_weights(first, first.state_dict(), second.state_dict(), max_iterations=passes)
    return first, second, alignment


# ---------------------------------------------------------------- the function is B's


@pytest.mark.parametrize("name", [*MATCHED, *PASSES])
def test_aligned_b_computes_what_b_computes_with_its_units_moved(name):
    _, second, alignment = aligned(name)
    state_b = second.state_dict()
    for training in (False, True):
        expected = outputs(name, state_b, training)
        error = relative_error(outputs(name, alignment.state_dict, training), expected)
        print(f"{name}, {'train' if training else 'eval'} mode: output error {error:.1e}")
        assert error <= TOLERANCE
    moved = [
        space
        for space, order in alignment.permutations.items()
        if not np.array_equal(order, np.arange(len(order)))
    ]
    assert moved == list(alignment.permutations), "every space of two random nets moves"
    if name in PASSES:
        assert alignment.iterations == PASSES[name] and not alignment.converged
    else:
        assert alignment.converged and 2 <= alignment.iterations < 100
    # Every entry comes back, the batch counters as they were.
    assert alignment.state_dict.keys() == state_b.keys()
    for key, tensor in state_b.items():
        if key.endswith("num_batches_tracked"):
            assert torch.equal(alignment.state_dict[key], tensor)
    print(f"{name}: {alignment.iterations} passes")


@pytest.mark.parametrize("name", PLACED)
def test_every_family_has_exact_unit_spaces(name):
    # Random permutations of every space (projection shortcuts, no shortcuts, DenseNet's
    # concatenations, a wider ResNet): the outputs stay as they were.
    model = realistic(name, 3, SMALL_SIDE)
    spaces = find_unit_spaces(model, input_shape=(3, SMALL_SIDE, SMALL_SIDE))
    generator = np.random.default_rng(0)
    orders = {space: generator.permutation(size) for space, size in spaces.sizes.items()}
    permuted = permute_units(spaces, model.state_dict(), orders)
    assert not all(torch.equal(permuted[key], value) for key, value in model.state_dict().items())
    for training in (False, True):
        expected = outputs(name, model.state_dict(), training, SMALL_SIDE)
        found = outputs(name, permuted, training, SMALL_SIDE)
        assert relative_error(found, expected) <= TOLERANCE


# ---------------------------------------------------------------- the unit spaces


def test_mlp_spaces_are_its_two_hidden_layers():
    spaces = find_unit_spaces(models.build("mlp_small"))
    assert spaces.sizes == {"fc1": 64, "fc2": 64}
    whole = {name: (Piece(name, 0, 64),) for name in spaces.sizes}
    assert spaces.axes == (
        PermutedAxis("fc1.weight", 0, whole["fc1"], 1),
        PermutedAxis("fc1.bias", 0, whole["fc1"], 1),
        PermutedAxis("fc2.weight", 1, whole["fc1"], 1),
        PermutedAxis("fc2.weight", 0, whole["fc2"], 1),
        PermutedAxis("fc2.bias", 0, whole["fc2"], 1),
        PermutedAxis("linear.weight", 1, whole["fc2"], 1),
    )  # the input's 3072 columns and the logits never move


def test_resnet20_zero_padding_shortcuts_tie_the_carried_channels_across_stages():
    # Option A pads 16 channels to 32 with 8 zero channels on each side, then 32 to 64 with
    # 16: the carried channels share the stage before's space, each block of zeros is a
    # space of its own, and one space runs through every stage-1 residual add.
    spaces = find_unit_spaces(models.build("resnet20"))
    blocks = {
        f"layer{stage}.{block}.conv1": 16 << (stage - 1)
        for stage in (1, 2, 3)
        for block in range(3)
    }
    assert spaces.sizes == {
        "conv1": 16,
        **{name: size for name, size in blocks.items() if name < "layer2"},
        "layer2.0.conv1": 32,
        "layer2.0.conv2[0:8]": 8,
        "layer2.0.conv2[24:32]": 8,
        "layer2.1.conv1": 32,
        "layer2.2.conv1": 32,
        "layer3.0.conv1": 64,
        "layer3.0.conv2[0:16]": 16,
        "layer3.0.conv2[48:64]": 16,
        "layer3.1.conv1": 64,
        "layer3.2.conv1": 64,
    }
    (head,) = [axis for axis in spaces.axes if axis.tensor == "linear.weight"]
    assert head.pieces == (
        Piece("layer3.0.conv2[0:16]", 0, 16),
        Piece("layer2.0.conv2[0:8]", 16, 8),
        Piece("conv1", 24, 16),
        Piece("layer2.0.conv2[24:32]", 40, 8),
        Piece("layer3.0.conv2[48:64]", 48, 16),
    )


def test_vgg_first_fc_layer_reads_each_channel_as_a_block_of_its_4x4_map():
    spaces = find_unit_spaces(models.build("vgg9"))
    (fc,) = [axis for axis in spaces.axes if axis.tensor == "fc.0.weight" and axis.axis == 1]
    assert fc.pieces == (Piece("features.20", 0, 256),) and fc.inner == 16


def test_reading_the_spaces_leaves_the_model_as_it_was():
    model = realistic("convnet_small", 1).train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    find_unit_spaces(model)
    assert model.training and all(module.training for module in model.modules())
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


# ---------------------------------------------------------------- the matching


@pytest.mark.parametrize("name", MATCHED)
def test_a_model_aligned_with_itself_stays_as_it_is(name):
    first, _, _ = aligned(name)
    state = first.state_dict()
    alignment = match_weights(first, state, state)
    assert all(
        np.array_equal(order, np.arange(len(order))) for order in alignment.permutations.values()
    )
    assert alignment.iterations == 1 and alignment.converged
    assert all(torch.equal(alignment.state_dict[key], value) for key, value in state.items())


def test_alignment_is_deterministic():
    first, second, alignment = aligned("resnet20")
    again = match_weights(first, first.state_dict(), second.state_dict())
    assert again.iterations == alignment.iterations
    assert all(
        np.array_equal(again.permutations[space], order)
        for space, order in alignment.permutations.items()
    )
    assert all(
        torch.equal(again.state_dict[key], value) for key, value in alignment.state_dict.items()
    )


def test_alignment_lowers_the_loss_halfway_between_two_trained_networks():
    # Two mlp_small trained from different seeds on a separable task (10 noisy prototypes):
    # the midpoint of A and B is far worse than either; of A and aligned B, it is not.
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.randn(10, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (1024,), generator=generator)
    images = prototypes[labels] + 8.0 * torch.randn(1024, 3, 32, 32, generator=generator)

    def trained(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = models.build("mlp_small")
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        batches = torch.Generator().manual_seed(seed)
        for _ in range(60):
            batch = torch.randint(0, len(labels), (128,), generator=batches)
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return model

    def loss_at(state: dict[str, torch.Tensor]) -> float:
        model = models.build("mlp_small")
        model.load_state_dict(state)
        with torch.no_grad():
            return float(F.cross_entropy(model(images), labels))

    def midpoint(one, other):
        return {key: (one[key] + other[key]) / 2 for key in one}

    first, second = trained(3), trained(4)
    state_a, state_b = first.state_dict(), second.state_dict()
    alignment = match_weights(first, state_a, state_b)
    naive = loss_at(midpoint(state_a, state_b))
    matched = loss_at(midpoint(state_a, alignment.state_dict))
    print(
        f"loss A {loss_at(state_a):.4f}, B {loss_at(state_b):.4f}; midpoint: naive "
        f"{naive:.4f}, aligned {matched:.4f} ({alignment.iterations} passes)"
    )
    assert loss_at(alignment.state_dict) == pytest.approx(loss_at(state_b), rel=1e-5)
    assert matched < naive / 4


class ResidualMLP(nn.Module):
    """h + relu(block(h)): the block's output and input are one space."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3072, 32)
        self.block = nn.Linear(32, 32)
        self.linear = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(x.flatten(1))
        return self.linear(hidden + F.relu(self.block(hidden)))


def test_a_layer_tied_to_its_own_input_still_converges_to_the_same_function():
    # block.weight holds the space on both axes, so a pass's assignment is only a proposal
    # (the objective is quadratic in it): kept only when the exact objective rises.
    torch.manual_seed(1)
    first = ResidualMLP()
    torch.manual_seed(2)
    second = ResidualMLP()
    assert find_unit_spaces(first).sizes == {"embed": 32}
    alignment = match_weights(first, first.state_dict(), second.state_dict())
    assert alignment.converged and alignment.iterations < 100
    model = ResidualMLP()
    model.load_state_dict(alignment.state_dict)
    inputs = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert relative_error(model(inputs), second(inputs)) <= TOLERANCE


# ---------------------------------------------------------------- the checkpoint


def test_the_aligned_checkpoint_loads_like_any_other_and_computes_b(tmp_path):
    first, second, alignment = aligned("convnet_small")
    path_a, path_b = tmp_path / "a.pt", tmp_path / "b.pt"
    save_checkpoint(path_a, first.state_dict())
    save_checkpoint(path_b, second.state_dict())
    path = tmp_path / "aligned" / "b_on_a.pt"
    save_aligned_checkpoint(path, alignment, reference=path_a, source=path_b)

    model = models.build("convnet_small").eval()
    load_weights(model, path)
    with torch.no_grad():
        inputs = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(9))
        assert relative_error(model(inputs), second(inputs)) <= TOLERANCE

    record = torch.load(path, weights_only=True)["alignment"]
    assert record["reference"] == str(path_a) and record["source"] == str(path_b)
    assert record["reference_sha256"] == file_digest(path_a)
    assert record["source_sha256"] == file_digest(path_b)
    assert (record["seed"], record["iterations"], record["converged"]) == (
        0,
        alignment.iterations,
        True,
    )
    # The recorded permutations rebuild the aligned state from B, bit for bit.
    rebuilt = permute_units(find_unit_spaces(model), second.state_dict(), record["permutations"])
    assert all(torch.equal(rebuilt[key], value) for key, value in alignment.state_dict.items())
    assert [entry.name for entry in tmp_path.joinpath("aligned").iterdir()] == ["b_on_a.pt"]


# ---------------------------------------------------------------- refusals


class GroupNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.norm = nn.GroupNorm(2, 8)
        self.linear = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.adaptive_avg_pool2d(self.norm(self.conv(x)), 1)
        return self.linear(out.flatten(1))


class ChannelSliceNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.linear = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.conv(x)[:, :4].mean((2, 3)))


PLACES = (
    "convolutions, linear layers, batch norms, elementwise activations, pooling, dropout, "
    "flatten, residual adds, zero padding and concatenation of channels"
)


@pytest.mark.parametrize(
    ("network", "message"),
    [
        (
            GroupNormNet,
            "cannot align GroupNormNet: cannot place layer 'norm' (GroupNorm) in a "
            "permutation of units (a layer it does not know); weight matching places " + PLACES,
        ),
        (
            ChannelSliceNet,
            "cannot align ChannelSliceNet: cannot place node 'getitem' (getitem) in a "
            "permutation of units (indexing that selects units); weight matching places " + PLACES,
        ),
    ],
)
def test_a_model_it_cannot_align_is_refused_in_one_line_naming_the_node(network, message):
    model = network()
    with pytest.raises(AlignmentError) as caught:
        match_weights(model, model.state_dict(), model.state_dict())
    assert str(caught.value) == message
    assert isinstance(caught.value, LsurfError)  # the CLI prints it as "lsurf: error: ..."


def test_states_that_do_not_fit_are_refused():
    first, second, alignment = aligned("mlp_small")
    state = dict(second.state_dict())
    del state["fc2.bias"]
    with pytest.raises(CheckpointError, match="only in A \\['fc2.bias'\\]"):
        match_weights(first, first.state_dict(), state)
    with pytest.raises(ConfigError, match="max_iterations must be at least 1"):
        match_weights(first, first.state_dict(), second.state_dict(), max_iterations=0)
    spaces = find_unit_spaces(first)
    orders = {**alignment.permutations, "fc1": np.zeros(64, dtype=np.int64)}
    with pytest.raises(AlignmentError, match="space fc1 is not a permutation of its 64 units"):
        permute_units(spaces, second.state_dict(), orders)
