"""BN folded into the convolutions (lsurf.folding): the same losses to fp32 rounding on every
model of the zoo, at any point of any plane (BN parameters and statistics moving too), the
model itself wherever folding does not apply, and old files never resumed folded."""

import copy
import re

import h5py
import pytest
import torch
import yaml
from torch import nn

from lsurf import evaluate, folding, models, params
from lsurf.cli import main
from lsurf.data.cifar import Split
from lsurf.directions import Directions, random_directions
from lsurf.evaluate import FOLDING_TOLERANCE, Evaluator
from lsurf.files.surface import read_surface
from lsurf.folding import fold_batch_norm

POINTS = [(0.0, 0.0), (0.4, -0.3), (-0.6, 0.5)]


def realistic(model: nn.Module, seed: int = 0) -> nn.Module:
    """BN statistics and affine parameters away from their initial 0/1, as after training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                size = module.num_features
                module.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
                module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
                module.weight.copy_(0.5 + torch.rand(size, generator=generator))
                module.bias.copy_(0.2 * (torch.rand(size, generator=generator) - 0.5))
    return model.eval()


def data(count: int = 6, seed: int = 1) -> Split:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 3, 32, 32, generator=generator)
    return Split(images, torch.randint(0, 10, (count,), generator=generator))


def both(model: nn.Module, directions: Directions, split: Split) -> tuple[Evaluator, Evaluator]:
    """Evaluators of the same model, unfolded and folded (each on its own copy)."""
    device = torch.device("cpu")
    plain = Evaluator(copy.deepcopy(model), directions, {"train": split}, 4, device)
    folded = Evaluator(model, directions, {"train": split}, 4, device, fold_bn=True)
    return plain, folded


FUSED = re.compile(r"\d+ convolutions fused with the ReLU after them \(oneDNN\)")


def assert_close(plain: Evaluator, folded: Evaluator, points=POINTS) -> None:
    for a, b in points:
        expected, found = plain.evaluate(a, b), folded.evaluate(a, b)
        assert found["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-5), (a, b)


# One of each family and shortcut kind at random points; every name at θ* below (the deeper
# and wider ones are the same blocks, more of them).
FAMILIES = [
    "convnet_small",
    "resnet20",
    "resnet20_b",
    "resnet20_noshort",
    "vgg9",
    "densenet121",
    "wrn56_2",
    "wrn56_2_noshort",
]


@pytest.mark.parametrize("name", models.available())
def test_every_zoo_model_folds_every_batch_norm_it_can(name):
    torch.manual_seed(0)
    model = realistic(models.build(name))
    inputs = data(2).images
    folded = fold_batch_norm(model, [inputs])
    norms = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    # DenseNet's layers are BN → ReLU → conv: only the BN after each bottleneck's 1×1 conv
    # follows a conv (58 of 120); every other model's BNs all follow a conv or a linear layer.
    assert folded.count == (58 if name == "densenet121" else norms) and not folded.skipped
    with torch.inference_mode():
        expected, found = model(inputs), folded.network(inputs)
    assert torch.allclose(found, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("name", FAMILIES)
def test_folded_losses_equal_the_models_at_random_points(name):
    torch.manual_seed(0)
    model = realistic(models.build(name))
    directions = random_directions(params.movable(model, False), "filter", "biasbn", 0, True)
    plain, folded = both(model, directions, data())
    assert folded.folded.count > 0, folded.folded.reason
    assert folded.notes[0] == f"BN folded into {folded.folded.count} convolutions"
    # and, on this CPU, the folded convolutions with a ReLU after them fused with it
    assert [FUSED.fullmatch(note) is not None for note in folded.notes[1:]] == [True], folded.notes
    assert_close(plain, folded)


def test_folding_follows_bn_that_moves_parameters_statistics_and_interpolations():
    torch.manual_seed(0)
    model = realistic(models.build("resnet20"))
    split = data()
    # ignore: none moves γ and β; a direction over the state moves the running statistics.
    moving = params.movable(model, include_buffers=True)
    generator = torch.Generator().manual_seed(3)
    x = {key: 0.1 * torch.randn(t.shape, generator=generator) for key, t in moving.items()}
    y = {key: 0.1 * torch.randn(t.shape, generator=generator) for key, t in moving.items()}
    for key in x:
        if key.endswith("running_var"):  # keep the variance positive on the plane
            x[key], y[key] = x[key].abs(), y[key].abs()
    states = Directions("random", "filter", "none", 0, x, y, moves_buffers=True)
    assert_close(*both(model, states, split))
    # An interpolation toward another network, BN statistics included (space: states).
    other = realistic(models.build("resnet20"), seed=5)
    end = {key: tensor.clone() for key, tensor in params.movable(other, True).items()}
    zero = {key: torch.zeros_like(t) for key, t in x.items()}
    line = Directions("target", "none", "none", 0, zero, None, moves_buffers=True, end=end)
    assert_close(*both(model, line, split), points=[(0.0, 0.0), (0.5, 0.0), (1.0, 0.0)])


class NoNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 10)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(inputs).mean(dim=(2, 3)))


class Branching(nn.Module):
    """BN after a conv, but a branch on the data's values: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 10)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(self.conv(inputs))
        if hidden.sum() > 0:
            hidden = hidden * 2
        return self.head(hidden.mean(dim=(2, 3)))


class SharedOutput(nn.Module):
    """The conv's output feeds its BN and, beside it, the head: folding would change the head's
    input, so this pair must stay as it is."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(8, 10)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        raw = self.conv(inputs)
        both = torch.cat([self.norm(raw), raw], dim=1)
        return self.head(both.mean(dim=(2, 3)))


@pytest.mark.parametrize(
    "model, reason",
    [
        (NoNorm(), "the model has no batch norm"),
        (Branching(), "torch.fx cannot trace the model"),
        (SharedOutput(), "no convolution is followed by its own batch norm"),
    ],
)
def test_a_model_that_does_not_fold_is_evaluated_as_it_is_bit_for_bit(model, reason):
    torch.manual_seed(0)
    model = realistic(model)
    directions = random_directions(params.movable(model, False), "filter", "biasbn", 0, True)
    plain, folded = both(model, directions, data())
    assert folded.folded.count == 0 and folded.folded.reason.startswith(reason)
    assert folded.network is folded.model
    assert folded.notes[0].startswith(f"BN not folded: {reason}")
    for a, b in POINTS:
        assert folded.evaluate(a, b) == plain.evaluate(a, b)


def test_refolding_after_a_move_is_what_folding_the_moved_model_gives():
    torch.manual_seed(0)
    model = realistic(models.build("resnet20"))
    inputs = data().images
    folded = fold_batch_norm(model, [inputs])
    with torch.no_grad():
        for tensor in params.movable(model, True).values():
            tensor.add_(0.05 * torch.randn_like(tensor)).abs_()  # every tensor, BN's too
        folded.refold()
        assert torch.allclose(folded.network(inputs), model(inputs), rtol=1e-4, atol=1e-4)
        stale = fold_batch_norm(copy.deepcopy(model), [inputs])  # made from the moved model
        assert torch.equal(folded.network(inputs), stale.network(inputs))


# ------------------------------------------------------------ folding only where it is exact
# BatchNorm1d normalizes dimension 1 of its input; a fold scales the Linear's output features,
# the last dimension. On (N, L, F) inputs the two differ, and a BN still at its initial values
# (the identity) hides the difference at θ*, which an interpolation toward a second checkpoint
# (BN statistics moving too) then shows.


class SequenceNorm(nn.Module):
    """A Linear on (N, L, F) sequences, then BatchNorm1d over the L positions (dimension 1)."""

    def __init__(self, length: int = 6, features: int = 6, width: int = 6) -> None:
        super().__init__()
        self.fc = nn.Linear(features, width)
        self.norm = nn.BatchNorm1d(length)
        self.head = nn.Linear(length * width, 10)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.fc(inputs)).flatten(1))  # (N, L, width) → (N, 10)


class FeatureNorm(nn.Module):
    """A Linear on (N, L, F) sequences, then BatchNorm1d over its F output features, reached
    through a transpose to (N, F, L) and back."""

    def __init__(self, length: int = 6, features: int = 6) -> None:
        super().__init__()
        self.fc = nn.Linear(features, features)
        self.norm = nn.BatchNorm1d(features)
        self.head = nn.Linear(length * features, 10)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(self.fc(inputs).transpose(1, 2)).transpose(1, 2)
        return self.head(hidden.flatten(1))


class Mixed(nn.Module):
    """A Linear → BatchNorm1d on (N, L, F) (not exact), then a Linear → BatchNorm1d on the
    flattened (N, features) (exact)."""

    def __init__(self, length: int = 6, features: int = 6) -> None:
        super().__init__()
        self.fc = nn.Linear(features, features)
        self.norm = nn.BatchNorm1d(length)
        self.hidden = nn.Linear(length * features, 12)
        self.hidden_norm = nn.BatchNorm1d(12)
        self.head = nn.Linear(12, 10)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        flat = self.norm(self.fc(inputs)).flatten(1)
        return self.head(torch.relu(self.hidden_norm(self.hidden(flat))))


class ConvAndLinear(nn.Module):
    """Conv2d → BatchNorm2d on images and Linear → BatchNorm1d on (N, features): both exact."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.conv_norm = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 8)
        self.fc_norm = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 10)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.conv_norm(self.conv(inputs))).mean(dim=(2, 3))
        return self.head(torch.relu(self.fc_norm(self.fc(hidden))))


SEQUENCE_NOTE = (
    "BN not folded: fc → norm: BN normalizes dimension 1 of its (4, 6, 6) input, the fold "
    "would scale dimension 2 (the Linear's 6 outputs)"
)
# Each model: its inputs' shape past the batch, and the evaluator's notes.
EXACTNESS = {
    "BN over L, as wide as the Linear": (SequenceNorm, (6, 6), [SEQUENCE_NOTE]),
    "BN over L, narrower than the Linear": (
        lambda: SequenceNorm(length=5),
        (5, 6),
        ["BN not folded: fc → norm: the BN has 5 features, the Linear 6 outputs"],
    ),
    "BN over F through a transpose": (
        FeatureNorm,
        (6, 6),
        ["BN not folded: no convolution is followed by its own batch norm"],
    ),
    "one exact pair, one not": (Mixed, (6, 6), ["BN folded into 1 convolutions", SEQUENCE_NOTE]),
    "conv and 2-D linear": (
        ConvAndLinear,
        (3, 8, 8),
        # the Conv2d's ReLU fuses (oneDNN); a Linear's is left to eager
        ["BN folded into 2 convolutions", "1 convolutions fused with the ReLU after them (oneDNN)"],
    ),
}


def interpolation(model: nn.Module, seed: int = 5) -> Directions:
    """The line from `model` toward a second checkpoint whose BNs are trained (statistics and
    affine parameters away from 0/1), moving BN's buffers too, as `kind: target` does."""
    other = realistic(copy.deepcopy(model), seed=seed)
    with torch.no_grad():
        for tensor in other.parameters():
            tensor.add_(0.1 * torch.randn_like(tensor))
    end = {key: tensor.clone() for key, tensor in params.movable(other, True).items()}
    zero = {key: torch.zeros_like(tensor) for key, tensor in end.items()}
    return Directions("target", "none", "none", 0, zero, None, moves_buffers=True, end=end)


@pytest.mark.parametrize("case", EXACTNESS)
@pytest.mark.parametrize("start", ["BN at its initial values", "BN trained"])
def test_folded_losses_equal_the_models_along_an_interpolation_or_the_pair_stays(case, start):
    build, shape, notes = EXACTNESS[case]
    torch.manual_seed(0)
    model = build().eval()  # a fresh BN: mean 0, variance 1, γ 1, β 0 (the identity)
    if start == "BN trained":
        model = realistic(model, seed=2)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(16, *shape, generator=generator)
    split = (inputs, torch.randint(0, 10, (16,), generator=generator))
    line = interpolation(model)
    device = torch.device("cpu")
    plain = Evaluator(copy.deepcopy(model), line, {"train": split}, 8, device)
    folded = Evaluator(model, line, {"train": split}, 8, device, fold_bn=True)  # no error
    for a in (0.0, 0.25, 0.5, 0.75, 1.0):
        expected, found = plain.evaluate(a, 0.0), folded.evaluate(a, 0.0)
        assert found["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-6), a
        if not folded.folded.count:  # nothing folded: the model itself, bit for bit
            assert found == expected, a
    assert folded.notes == notes  # what folded, and each pair that did not, with why


def test_a_wrong_fold_that_theta_star_hides_is_caught_with_bn_moved(monkeypatch):
    # As lsurf accepted it before it read the shapes: Linear → BatchNorm1d on any rank.
    monkeypatch.setattr(folding, "_inexact", lambda conv, norm, shapes: "")
    torch.manual_seed(0)
    model = SequenceNorm().eval()  # BN at its initial values: the identity at θ*
    generator = torch.Generator().manual_seed(1)
    split = (torch.randn(16, 6, 6, generator=generator), torch.randint(0, 10, (16,)))
    probe = split[0][:4]
    wrong = fold_batch_norm(model, [probe])
    assert wrong.count == 1
    with torch.inference_mode():  # at θ* the wrong fold gives the model's outputs...
        expected = model(probe)
        apart = (wrong.network(probe) - expected).abs().max() / expected.abs().max()
    assert apart <= FOLDING_TOLERANCE
    state = {key: value.clone() for key, value in model.state_dict().items()}
    line = interpolation(model)
    device = torch.device("cpu")
    plain = Evaluator(copy.deepcopy(model), line, {"train": split}, 8, device)
    folded = Evaluator(model, line, {"train": split}, 8, device, fold_bn=True)
    # ...and the check with BN moved, on a copy, sees that it is not the model.
    assert folded.folded.count == 0 and folded.network is folded.model
    [note] = folded.notes
    assert note.startswith(
        "BN not folded: the folded network's outputs on the train probe batch with its BNs "
        "moved differ from the model's by "
    )
    for key, value in folded.model.state_dict().items():  # the check left θ* as it was
        assert torch.equal(value, state[key]), key
    for a in (0.0, 0.5, 1.0):
        assert folded.evaluate(a, 0.0) == plain.evaluate(a, 0.0)


def test_the_moved_copy_shares_every_tensor_but_bns_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = ConvAndLinear().eval()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    moved = folding.with_moved_norms(model)
    for key, tensor in moved.state_dict().items():
        if key.startswith(("conv_norm.", "fc_norm.")):  # a BN's own: copied, then moved
            assert tensor.data_ptr() != model.state_dict()[key].data_ptr(), key
            if tensor.is_floating_point():  # (not num_batches_tracked)
                assert not torch.equal(tensor, state[key]), key
        else:
            assert tensor.data_ptr() == model.state_dict()[key].data_ptr(), key  # shared
    assert bool((moved.conv_norm.running_var > 0).all() and (moved.fc_norm.running_var > 0).all())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    # Seeded: the same copy every time, so every rank checks the same network.
    again = folding.with_moved_norms(model)
    for key, tensor in again.state_dict().items():
        assert torch.equal(tensor, moved.state_dict()[key]), key


def test_a_file_from_before_folding_resumes_only_unfolded(sweep_yaml, capsys):
    config = sweep_yaml()
    assert main(["sweep", str(config)]) == 0
    output = config.parent / "out" / "surface.h5"
    # As an older lsurf wrote it: no evaluation.fold_bn in the stored config, half done.
    with h5py.File(output, "r+") as h5file:
        stored = yaml.safe_load(h5file.attrs["config"])
        del stored["evaluation"]["fold_bn"]
        h5file.attrs["config"] = yaml.safe_dump(stored)
        h5file["done"][2:, :] = False
    before = output.read_bytes()
    capsys.readouterr()
    assert main(["sweep", str(config)]) == 2
    assert "differs in: evaluation.fold_bn" in capsys.readouterr().err
    assert output.read_bytes() == before
    assert main(["sweep", str(config), "--set", "evaluation.fold_bn=false"]) == 0
    assert read_surface(output).done.all()


# ---------------------------------------------------------------------------- torch.compile


def compiled_pair(monkeypatch=None, replacement=None):
    torch.manual_seed(0)
    model = realistic(models.build("convnet_small"))
    directions = random_directions(params.movable(model, False), "filter", "biasbn", 0, True)
    split, device = data(10), torch.device("cpu")
    eager = Evaluator(copy.deepcopy(model), directions, {"train": split}, 4, device, fold_bn=True)
    if replacement is not None:
        monkeypatch.setattr(torch, "compile", replacement)
    compiled = Evaluator(model, directions, {"train": split}, 4, device, fold_bn=True, compile=True)
    return eager, compiled


def test_a_compiled_network_gives_the_eager_losses_and_says_what_compiling_cost():
    eager, compiled = compiled_pair()
    assert compiled.notes[-1].startswith("compiled with torch.compile in ")
    assert compiled.network is not compiled.folded.network
    assert_close(eager, compiled)


def test_a_compile_failure_leaves_the_eager_network_with_one_note(monkeypatch):
    def failing(module, **options):
        def run(*args):
            raise RuntimeError("unsupported operator aten::something")

        return run

    eager, compiled = compiled_pair(monkeypatch, failing)
    assert compiled.notes[-1] == (
        "not compiled: torch.compile failed (RuntimeError: unsupported operator aten::something)"
    )
    assert compiled._compiled is None  # the eager network evaluates
    for a, b in POINTS:
        assert compiled.evaluate(a, b) == eager.evaluate(a, b)


def test_a_compiled_network_that_disagrees_is_never_used(monkeypatch):
    def wrong(module, **options):
        return lambda inputs: module(inputs) + 1.0  # a miscompiled graph

    eager, compiled = compiled_pair(monkeypatch, wrong)
    assert compiled.notes[-1].startswith("not compiled: the compiled network's outputs on a ")
    for a, b in POINTS:
        assert compiled.evaluate(a, b) == eager.evaluate(a, b)


@pytest.mark.slow
def test_compiled_sweeps_are_the_same_bits_serially_and_on_three_ranks(
    mpi_run, sweep_yaml, tmp_path
):
    from test_mpi import finish, launch

    compiled = {"evaluation": {"compile": True}}
    serial = sweep_yaml({**compiled, "output": str(tmp_path / "serial.h5")}, name="serial.yaml")
    ranks = sweep_yaml({**compiled, "output": str(tmp_path / "ranks.h5")}, name="ranks.yaml")
    code, text = finish(launch(0, serial), timeout=600)
    assert code == 0 and "compiled with torch.compile in " in text, text
    code, text = finish(
        launch(3, ranks, mpi=mpi_run), timeout=600
    )  # the workers find inductor's cache warm
    assert code == 0 and "compiled with torch.compile in " in text, text
    first, second = read_surface(tmp_path / "serial.h5"), read_surface(tmp_path / "ranks.h5")
    assert second.done.all()
    for name, values in first.metrics.items():
        assert (second.metrics[name] == values).all(), name


# ---------------------------------------------------------------------------- fused ReLUs


def unfused(monkeypatch) -> None:
    """Evaluators built from now on leave the folded network unfused."""
    monkeypatch.setattr(evaluate, "fuse_activations", lambda folded: (folded.network, 0))


def fused_pair(monkeypatch, name: str = "resnet20", precision: str = "fp32"):
    torch.manual_seed(0)
    model = realistic(models.build(name))
    directions = random_directions(params.movable(model, False), "filter", "biasbn", 0, True)
    split, device = data(), torch.device("cpu")
    fused = Evaluator(
        copy.deepcopy(model), directions, {"train": split}, 4, device, fold_bn=True,
        precision=precision,
    )  # fmt: skip
    with monkeypatch.context() as patch:
        unfused(patch)
        plain = Evaluator(model, directions, {"train": split}, 4, device, fold_bn=True)
    return plain, fused


def test_relus_fuse_into_the_folded_convolutions_with_the_unfused_losses_bit_for_bit(
    monkeypatch,
):
    plain, fused = fused_pair(monkeypatch)
    # ResNet-20: the stem's conv → ReLU, each block's conv1 → ReLU and conv2 + shortcut → ReLU.
    assert fused.notes == [
        "BN folded into 19 convolutions",
        "19 convolutions fused with the ReLU after them (oneDNN)",
    ]
    assert plain.notes == ["BN folded into 19 convolutions"]
    for a, b in POINTS:  # refolded at every point: the fused calls read the live weights
        assert fused.evaluate(a, b) == plain.evaluate(a, b), (a, b)


def test_bf16_leaves_the_relus_unfused():
    torch.manual_seed(0)
    model = realistic(models.build("resnet20"))
    directions = random_directions(params.movable(model, False), "filter", "biasbn", 0, True)
    folded = Evaluator(
        model, directions, {"train": data()}, 4, torch.device("cpu"), fold_bn=True,
        precision="bf16",
    )  # fmt: skip
    assert folded.notes == ["BN folded into 19 convolutions"]  # autocast: eager kernels


def test_a_fusion_that_fails_or_disagrees_leaves_the_folded_network_with_a_note(monkeypatch):
    def failing(*args):
        raise RuntimeError("oneDNN refuses")

    monkeypatch.setattr(folding, "_convolution_relu", failing)
    plain, fused = fused_pair(monkeypatch, "convnet_small")
    assert fused.notes == [
        "BN folded into 2 convolutions",
        "ReLU not fused: RuntimeError: oneDNN refuses",
    ]
    assert fused.network is fused.folded.network
    for a, b in POINTS:
        assert fused.evaluate(a, b) == plain.evaluate(a, b)
    monkeypatch.undo()
    wrong = folding._convolution_relu  # the real one again

    def shifted(*args):
        return wrong(*args) + 1.0  # a wrong fusion

    monkeypatch.setattr(folding, "_convolution_relu", shifted)
    _, fused = fused_pair(monkeypatch, "convnet_small")
    assert fused.notes[0] == "BN folded into 2 convolutions"
    assert fused.notes[1].startswith(
        "ReLU not fused: the fused network's outputs on the train probe batch differ from the "
        "model's by "
    ), fused.notes
    assert fused.network is fused.folded.network
