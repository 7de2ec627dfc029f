"""lsurf.api (and `import lsurf`): the sweep from objects in memory, checked by hand."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import lsurf
from lsurf import api
from lsurf.errors import ConfigError


def tiny_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    inputs = torch.randn(24, 4)
    targets = torch.randint(0, 3, (24,))
    return model, inputs, targets


def test_import_lsurf_exports_the_api_lazily_without_torch():
    code = (
        "import sys, lsurf; assert 'torch' not in sys.modules, 'torch loaded';"
        "assert lsurf.Surface.__name__ == 'Surface' and 'torch' not in sys.modules;"
        "assert lsurf.sweep is __import__('lsurf.api').api.sweep; print(sorted(lsurf.__all__))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in ("sweep", "read_surface", "Surface", "read_directions", "Directions"):
        assert name in result.stdout


def test_every_evaluation_key_is_a_keyword_and_an_unknown_one_is_refused_naming_the_valid():
    assert {"fold_bn", "rel_error", "standard_errors", "precision"} <= set(api.EVALUATION_KEYS)
    assert "loss" not in api.EVALUATION_KEYS  # it has a keyword of its own
    model, inputs, targets = tiny_problem()
    with pytest.raises(ConfigError) as caught:
        api.sweep(model, (inputs, targets), x="0:0:1", batch_sise=8, log=None)
    message = str(caught.value)
    assert message.startswith("lsurf.sweep got an unknown setting 'batch_sise'; valid: ")
    assert "batch_size" in message and "\n" not in message
    with pytest.raises(ConfigError, match="model must be a torch.nn.Module, got tuple"):
        api.sweep((inputs, targets), model, log=None)


def test_the_surface_equals_the_loss_computed_by_hand_and_the_model_is_untouched(tmp_path):
    model, inputs, targets = tiny_problem()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    surface = lsurf.sweep(
        model,
        {"train": (inputs, targets)},
        x="-1:1:3",
        directions={"kind": "random", "norm": "layer", "ignore": "none", "seed": 5},
        batch_size=7,
        output=tmp_path / "s.h5",
        log=None,
    )
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])  # the caller's model is never moved
    directions, _ = lsurf.read_directions(surface.attributes["direction_file"])
    for i, alpha in enumerate(surface.x):
        moved = nn.Sequential(nn.Linear(4, 3))
        moved.load_state_dict(
            {key: before[key] + float(alpha) * directions.x[key] for key in before}
        )
        with torch.no_grad():
            logits = moved(inputs)
        expected = nn.functional.cross_entropy(logits, targets).item()
        accuracy = (logits.argmax(1) == targets).double().mean().item() * 100
        np.testing.assert_allclose(surface.metrics["train_loss"][i], expected, rtol=1e-6)
        np.testing.assert_allclose(surface.metrics["train_acc"][i], accuracy, rtol=1e-9)
    assert surface.done.all()
