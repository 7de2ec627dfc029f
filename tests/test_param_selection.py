"""Choosing the tensors a direction moves by name (`directions.params`, `hessian.names`,
`sharpness.params`): LoRA adapters swept while the frozen base stays θ*'s, bit for bit.

The models are tests/fixtures/userpkg/lora.py: a frozen base (Linear stem, BatchNorm that the
evaluator folds into it, Linear head) with a trained rank-2 adapter, and a net whose output
layer is tied to its embedding. What the evaluator really uses at each point is read by
forward pre-hooks on the network it runs (the folded one), not from the model's state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from torch import nn

from lsurf import params
from lsurf.api import sweep
from lsurf.checkpoint import save_checkpoint
from lsurf.cli import main
from lsurf.config import ParamsSelection, load_sweep_config
from lsurf.errors import ConfigError
from lsurf.files.surface import read_surface
from lsurf.run.phases import load, prepare

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CPU = torch.device("cpu")
LORA = ["*lora_*"]
GRID = {"x": "-1:1:3", "y": "-1:1:3"}  # nine points, both signs of each direction


@pytest.fixture(autouse=True)
def user_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's package (tests/fixtures/userpkg) importable, as if on PYTHONPATH."""
    monkeypatch.syspath_prepend(str(FIXTURES))


def lora_model() -> nn.Module:
    from userpkg.lora import adapted

    return adapted()


def write_config(tmp_path: Path, directions: dict, model: str = "userpkg.lora:adapted") -> Path:
    """A sweep of `model` (θ* saved beside it) on the fixture's Gaussian features."""
    from userpkg.lora import adapted, tied

    builder = adapted if model.endswith("adapted") else tied
    checkpoint = tmp_path / "theta.pt"
    save_checkpoint(checkpoint, builder().state_dict())
    config = {
        "model": {"name": model, "checkpoint": str(checkpoint)},
        "data": {"dataset": "userpkg.lora:features", "splits": ["train"], "batch_size": 16},
        "directions": directions,
        "grid": GRID,
        "evaluation": {"device": "cpu"},
        "output": str(tmp_path / "out" / "surface.h5"),
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def weights_used(network: nn.Module) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Forward pre-hooks that copy each module's own tensors as the network runs: what the
    evaluator really computes with (folded weights included), by 'module.tensor' name."""
    seen: dict[str, torch.Tensor] = {}
    calls = [0]

    def record(module_name: str):
        def hook(module: nn.Module, _inputs: object) -> None:
            calls[0] += 1
            for name, tensor in module.named_parameters(recurse=False):
                seen[f"{module_name}.{name}"] = tensor.detach().clone()
            for name, tensor in module.named_buffers(recurse=False):
                seen[f"{module_name}.{name}"] = tensor.detach().clone()

        return hook

    for module_name, module in network.named_modules():
        if module_name:
            module.register_forward_pre_hook(record(module_name))
    return seen, calls


def check_frozen_at_every_point(config_path: Path) -> np.ndarray:
    """Every tensor outside the adapters is, at each of the grid's points, the bits it is at
    θ*, in the network the evaluator runs; the adapters do move. Returns the losses."""
    prepared = prepare(load_sweep_config(config_path))
    evaluator = load(prepared.worker_setup(), CPU)
    assert evaluator.folded.count == 1  # stem + norm folded: the fast path is the one checked
    seen, calls = weights_used(evaluator.network)
    evaluator.evaluate(0.0, 0.0)
    origin = dict(seen)
    # The folded stem and the head's base Linear; the traced graph reads the adapters as
    # attributes of the model (shared with it), which is where their moves are seen.
    assert sorted(origin) == [
        "head.base.bias", "head.base.weight", "lsurf_folded_0.bias", "lsurf_folded_0.weight"
    ]  # fmt: skip
    adapter = evaluator.model.head.lora_A
    adapter_origin = adapter.detach().clone()
    losses = []
    for a in (-1.0, 0.5, 1.0):
        for b in (-1.0, 0.25, 1.0):
            before = calls[0]
            losses.append(evaluator.evaluate(a, b)["train_loss"])
            assert calls[0] > before
            for name in origin:
                assert torch.equal(seen[name], origin[name]), (name, a, b)
            assert not torch.equal(adapter, adapter_origin)
    return np.array(losses)


def test_a_lora_sweep_from_yaml_moves_only_the_adapters_and_the_surface_is_not_flat(
    tmp_path, capsys
):
    config = write_config(tmp_path, {"params": {"include": LORA}})
    losses = check_frozen_at_every_point(config)
    assert np.ptp(losses) > 1e-2
    assert main(["sweep", str(config)]) == 0
    surface = read_surface(tmp_path / "out" / "surface.h5")
    assert surface.done.all()
    assert np.ptp(surface.metrics["train_loss"]) > 1e-2
    log = capsys.readouterr().err
    assert "parameters: 2 tensors (24 values) of 8 match include ['*lora_*'] exclude []" in log


def test_the_direction_file_records_the_globs_and_holds_only_the_selected_tensors(tmp_path):
    config = write_config(tmp_path, {"params": {"include": LORA, "exclude": ["*_B"]}})
    assert main(["sweep", str(config)]) == 0
    with h5py.File(tmp_path / "out" / "surface.directions.h5", "r") as h5file:
        assert sorted(h5file["xdirection"]) == ["head.lora_A"]
        assert sorted(h5file["ydirection"]) == ["head.lora_A"]
        attributes = dict(h5file.attrs)
    assert json.loads(attributes["params_include"]) == LORA
    assert json.loads(attributes["params_exclude"]) == ["*_B"]
    assert (attributes["params_tensors"], attributes["params_values"]) == (1, 16)
    assert attributes["params_total"] == 8
    with h5py.File(tmp_path / "out" / "surface.h5", "r") as h5file:
        assert json.loads(h5file.attrs["params_names"]) == ["head.lora_A"]


def test_plan_and_info_show_what_the_selection_picked(tmp_path, capsys):
    config = write_config(tmp_path, {"params": {"include": LORA}})
    assert main(["sweep", str(config), "--plan"]) == 0
    lines = capsys.readouterr().out.splitlines()
    summary = "parameters: 2 tensors (24 values) of 8 match include ['*lora_*'] exclude []"
    at = lines.index(summary)
    assert lines[at + 1] == "  head.lora_A, head.lora_B"
    assert not (tmp_path / "out").exists()  # the plan writes nothing
    assert main(["sweep", str(config)]) == 0
    capsys.readouterr()
    for path in ("surface.h5", "surface.directions.h5"):
        assert main(["info", str(tmp_path / "out" / path)]) == 0
        shown = capsys.readouterr().out.splitlines()
        at = shown.index(summary)
        assert shown[at + 1] == "  head.lora_A, head.lora_B"


def test_the_default_selection_reports_nothing_and_moves_every_tensor(tmp_path, capsys):
    config = write_config(tmp_path, {})
    assert main(["sweep", str(config), "--plan"]) == 0
    assert "parameters:" not in capsys.readouterr().out
    assert main(["sweep", str(config)]) == 0
    with h5py.File(tmp_path / "out" / "surface.directions.h5", "r") as h5file:
        assert len(h5file["xdirection"]) == 8
        assert not any(key.startswith("params_") for key in h5file.attrs)


def test_a_resume_with_other_globs_is_refused(tmp_path, capsys):
    config = write_config(tmp_path, {"params": {"include": LORA}})
    assert main(["sweep", str(config)]) == 0
    changed = config.read_text().replace("'*lora_*'", "'*lora_A'")
    config.write_text(changed)
    output = tmp_path / "out" / "surface.h5"
    before = output.read_bytes()
    assert main(["sweep", str(config)]) == 2
    error = capsys.readouterr().err
    # The direction file beside the output is checked first, and refused as made otherwise.
    assert "params_include '[\"*lora_*\"]' vs '[\"*lora_A\"]'" in error
    assert "Traceback" not in error
    assert output.read_bytes() == before
    # Directions made with a selection are not reused by a sweep without it (another output
    # sharing the file), as a file made under another `ignore` would not be.
    raw = yaml.safe_load(changed)
    raw["directions"] = {"file": str(tmp_path / "out" / "surface.directions.h5")}
    raw["output"] = str(tmp_path / "other.h5")
    config.write_text(yaml.safe_dump(raw))
    assert main(["sweep", str(config)]) == 2
    assert "params_include" in capsys.readouterr().err
    assert not (tmp_path / "other.h5").exists()


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        (
            {"include": ["*lora_C*"]},
            "directions.params.include glob '*lora_C*' matches no parameter name; closest: ",
        ),
        (
            {"include": LORA, "exclude": ["*lora*"]},
            "directions.params: every tensor that include ['*lora_*'] matches is excluded by "
            "['*lora*']; nothing would move: narrow exclude",
        ),
    ],
)
def test_a_selection_that_picks_nothing_is_one_line_exit_2_and_writes_nothing(
    selection, message, tmp_path, capsys
):
    config = write_config(tmp_path, {"params": selection})
    assert main(["sweep", str(config)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error
    if "closest" in error:
        assert "head.lora_A" in error.split("closest: ")[1]
    assert not (tmp_path / "out").exists()


def test_globs_are_case_sensitive_and_a_frozen_only_selection_is_noted():
    model = lora_model()
    with pytest.raises(ConfigError, match="'\\*LORA_\\*' matches no parameter name"):
        params.select(model, ParamsSelection(include=("*LORA_*",)))
    frozen = params.select(model, ParamsSelection(include=("stem.*",)))
    assert frozen.keys == ("stem.weight", "stem.bias")
    assert frozen.note is not None and "frozen" in frozen.note
    assert params.select(model, ParamsSelection(include=LORA)).note is None


def test_a_tied_tensor_is_one_tensor_selected_by_any_name_and_moves_once(tmp_path):
    from userpkg.lora import tied

    model = tied()
    # Either name selects it; excluding either name leaves it.
    by_head = params.select(model, ParamsSelection(include=("lm_head.*",)))
    assert by_head.keys == ("wte.weight",)
    excluded = params.select(model, ParamsSelection(exclude=("lm_head.weight",)))
    assert excluded.keys == ("mix.weight", "mix.bias")
    config = write_config(
        tmp_path,
        {"params": {"include": ["lm_head.weight"]}, "norm": "none", "ignore": "none"},
        model="userpkg.lora:tied",
    )
    raw = yaml.safe_load(config.read_text())
    raw["data"]["dataset"] = "userpkg.lora:token_ids"
    raw["grid"] = {"x": "0:2:3"}
    config.write_text(yaml.safe_dump(raw))
    prepared = prepare(load_sweep_config(config))
    assert list(prepared.directions.x) == ["wte.weight"]
    evaluator = load(prepared.worker_setup(), CPU)
    origin = evaluator.model.wte.weight.detach().clone()
    direction = prepared.directions.x["wte.weight"]
    evaluator.move_to(2.0, 0.0)
    assert torch.equal(evaluator.model.wte.weight, origin + 2.0 * direction)  # once, not twice
    assert evaluator.model.lm_head.weight is evaluator.model.wte.weight


def test_the_api_takes_params_and_leaves_the_base_untouched(tmp_path):
    from userpkg.lora import features

    model = lora_model()
    inputs, targets = features("train")
    surface = sweep(
        model, (inputs, targets), **GRID, params={"include": LORA}, device="cpu", log=None,
        output=tmp_path / "api.h5",
    )  # fmt: skip
    assert np.ptp(surface.metrics["train_loss"]) > 1e-2
    with h5py.File(tmp_path / "api.directions.h5", "r") as h5file:
        assert sorted(h5file["xdirection"]) == ["head.lora_A", "head.lora_B"]
    with pytest.raises(ConfigError, match="params twice"):
        sweep(model, (inputs, targets), params={"include": LORA}, directions={"params": {}})


def test_a_peft_model_swept_along_its_adapters_keeps_its_base_weights():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 4))
    model = peft.get_peft_model(base, peft.LoraConfig(target_modules=["0", "2"], r=2))
    with torch.no_grad():  # a trained adapter: B away from its initial zeros
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    frozen = {
        name: tensor.detach().clone()
        for name, tensor in model.state_dict().items()
        if "lora_" not in name
    }
    from userpkg.lora import features

    inputs, targets = features("train")
    seen: list[dict[str, torch.Tensor]] = []

    def capture(module: nn.Module, _inputs: object) -> None:
        seen.append({k: v.detach().clone() for k, v in module.state_dict().items()})

    model.register_forward_pre_hook(capture)
    surface = sweep(
        model, (inputs, targets), **GRID, params={"include": LORA}, device="cpu", log=None,
        fold_bn=False,
    )  # fmt: skip
    assert np.ptp(surface.metrics["train_loss"]) > 1e-2
    # The hook travelled with the evaluator's copy of the model: every forward pass it ran.
    assert len(seen) >= 9
    for state in seen:
        for name, tensor in frozen.items():
            assert torch.equal(state[name], tensor), name
    moved = {name for name in seen[0] if "lora_" in name}
    assert moved and any(not torch.equal(s[n], seen[0][n]) for s in seen for n in moved)


def test_the_sharpness_perturbation_moves_only_the_selected_parameters(tmp_path):
    from userpkg.lora import features

    from lsurf import sharpness
    from lsurf.losses import build_loss
    from lsurf.run.sharpness import moving_parameters

    model = lora_model().eval()
    moving = moving_parameters(model, "biasbn", ParamsSelection(include=LORA))
    assert list(moving) == ["head.lora_A", "head.lora_B"]
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    seen: list[dict[str, torch.Tensor]] = []
    model.register_forward_pre_hook(
        lambda module, _: seen.append({k: v.clone() for k, v in module.state_dict().items()})
    )
    batches = [features("train")]
    loss = build_loss("cross_entropy")
    sharpness.average_case_draw(
        model, moving, batches, loss, sharpness.AverageCase(0.5, 2, 0, False), 0
    )
    worst = sharpness.WorstCase(0.5, 2, 0.5, "l2", False, True, 0)
    sharpness.worst_case_on(model, moving, batches, loss, worst, 0)
    assert len(seen) >= 4
    for state in seen:
        assert all(torch.equal(state[key], value) for key, value in frozen.items())
    assert any(not torch.equal(s["head.lora_A"], seen[0]["head.lora_A"]) for s in seen[1:])
    # Through `lsurf sharpness`: the file names the parameters that moved.
    checkpoint = tmp_path / "theta.pt"
    save_checkpoint(checkpoint, model.state_dict())
    config = tmp_path / "sharpness.yaml"
    section = {"rho": [0.05], "samples": 2, "steps": 2, "m": 16, "examples": 32}
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"name": "userpkg.lora:adapted", "checkpoint": str(checkpoint)},
                "data": {"dataset": "userpkg.lora:features", "batch_size": 16},
                "sharpness": {**section, "params": {"include": LORA}},
                "evaluation": {"device": "cpu"},
                "output": str(tmp_path / "sharpness.h5"),
            }
        )
    )
    assert main(["sharpness", str(config)]) == 0
    with h5py.File(tmp_path / "sharpness.h5", "r") as h5file:
        assert json.loads(h5file.attrs["parameters"]) == ["head.lora_A", "head.lora_B"]


def test_the_hessian_is_the_block_of_the_selected_parameters(tmp_path, capsys):
    from lsurf import hessian

    model = lora_model()
    chosen = hessian.curvature_parameters(model, "all", ParamsSelection(include=LORA))
    assert list(chosen) == ["head.lora_A", "head.lora_B"]
    with pytest.raises(ConfigError, match="hessian.names.include glob 'nope'"):
        hessian.curvature_parameters(model, "all", ParamsSelection(include=("nope",)))
    # A sweep's λ columns, and `lsurf hessian`: the Hessian has the selected 24 rows.
    config = write_config(tmp_path, {"params": {"include": LORA}})
    raw = yaml.safe_load(config.read_text())
    raw["hessian"] = {
        "eigenvalues": True, "params": "all", "names": {"include": LORA}, "top_k": 2,
        "trace_samples": 2, "density_runs": 1, "density_steps": 4, "per_layer": False,
    }  # fmt: skip
    config.write_text(yaml.safe_dump(raw))
    prepared = prepare(load_sweep_config(config))
    evaluator = load(prepared.worker_setup(), CPU)
    assert evaluator.hessian is not None and evaluator.hessian.size == 24
    assert main(["hessian", str(config)]) == 0
    with h5py.File(tmp_path / "out" / "surface.hessian.h5", "r") as h5file:
        assert h5file.attrs["parameters"] == 24
        assert h5file.attrs["names"] == "include ['*lora_*'] exclude []"


def test_the_pages_lora_config_plans_as_the_page_shows(tmp_path):
    """docs/parameters.md: its YAML, with its `mylab` being the fixture's LoRA model, planned
    by the command the page shows, prints the lines the page shows (figures included)."""
    import re
    import shutil
    import subprocess
    import sys

    from doc_commands import ROOT, blocks, documented
    from userpkg.lora import adapted

    command = documented(".venv/bin/lsurf sweep lora.yaml --plan")
    page = ROOT / "docs" / "parameters.md"
    config = next(block for block in blocks(page) if block.tag == "yaml")
    (tmp_path / "lora.yaml").write_text("\n".join(config.lines))
    (tmp_path / ".venv").symlink_to(sys.prefix)
    package = tmp_path / "mylab"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(FIXTURES / "userpkg" / "lora.py", package / "lora.py")
    save_checkpoint(tmp_path / "runs" / "lora" / "theta.pt", adapted().state_dict())
    done = subprocess.run(
        ["bash", "-c", command.text],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    printed = [line.strip() for line in done.stdout.splitlines()]
    for shown in command.shown:
        pattern = ".*".join(re.escape(piece) for piece in shown.strip().split("…"))
        assert any(re.fullmatch(pattern, line) for line in printed), (shown, printed)
    assert not (tmp_path / "runs" / "lora" / "surface.h5").exists()


def test_kinds_that_take_their_tensors_elsewhere_refuse_directions_params(tmp_path):
    config = write_config(tmp_path, {"kind": "hessian", "params": {"include": LORA}})
    with pytest.raises(ConfigError) as error:
        load_sweep_config(config)
    assert str(error.value) == (
        "directions.params is only used with directions.kind: random or target or pca"
    )
    empty = write_config(tmp_path, {"params": {"include": []}})
    with pytest.raises(ConfigError, match=r"directions.params.include is empty"):
        load_sweep_config(empty)
