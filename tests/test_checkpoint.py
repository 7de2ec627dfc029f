"""Tests for lsurf.checkpoint: layouts read, untrusted files refused, mismatches reported,
atomic writes and file hashes.

Checkpoints are written here the way each upstream trainer writes them (akamaster's
trainer.py, tomgoldstein/loss-landscape's cifar10/main.py), from small registry models.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from lsurf import models
from lsurf.checkpoint import file_digest, load_weights, read_state_dict, save_checkpoint
from lsurf.errors import CheckpointError


def seeded(name: str, seed: int, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return models.build(name, num_classes)


def assert_same_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


class WritesFileWhenUnpickled:
    """A pickle payload: unpickling it calls open(marker, 'w'), creating the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (open, (str(self.marker), "w"))


# ------------------------------------------------------------------ layouts


def raw(state: dict[str, torch.Tensor]) -> object:
    return state


def under_state_dict(state: dict[str, torch.Tensor]) -> object:
    return {"state_dict": state}


def under_model(state: dict[str, torch.Tensor]) -> object:
    return {"model": state, "epoch": 12, "optimizer_name": "sgd"}


def data_parallel_prefix(state: dict[str, torch.Tensor]) -> object:
    return {"state_dict": {f"module.{key}": value for key, value in state.items()}}


def reference_trainer(state: dict[str, torch.Tensor]) -> object:
    # loss-landscape cifar10/main.py: {'acc': 100 - test_err, 'epoch': epoch, 'state_dict': ...}
    return {"acc": 93.42, "epoch": 300, "state_dict": state}


@pytest.mark.parametrize(
    "layout", [raw, under_state_dict, under_model, data_parallel_prefix, reference_trainer]
)
def test_layouts_load_the_saved_weights(
    tmp_path: Path, layout: Callable[[dict[str, torch.Tensor]], object]
) -> None:
    saved = seeded("convnet_small", 1).state_dict()
    path = tmp_path / "checkpoint.pt"
    torch.save(layout(saved), path)
    assert set(read_state_dict(path)) == set(saved)
    target = seeded("convnet_small", 2)
    assert not torch.equal(target.state_dict()["conv1.weight"], saved["conv1.weight"])
    load_weights(target, path)
    assert_same_state(target, saved)


def test_data_parallel_state_dict_loads(tmp_path: Path) -> None:
    source = seeded("convnet_small", 1)
    wrapped = nn.DataParallel(source)
    assert next(iter(wrapped.state_dict())).startswith("module.")
    path = tmp_path / "dp.pt"
    torch.save({"state_dict": wrapped.state_dict()}, path)
    target = seeded("convnet_small", 2)
    load_weights(target, path)
    assert_same_state(target, source.state_dict())


def test_akamaster_checkpoint_loads_and_keeps_batch_counters(tmp_path: Path) -> None:
    # akamaster's pretrained models: DataParallel keys, {'state_dict', 'best_prec1'}, written
    # by torch 0.x, so in the legacy (non-zip) format and without num_batches_tracked.
    saved = seeded("resnet20", 1).state_dict()
    old_style = {
        f"module.{key}": value
        for key, value in saved.items()
        if not key.endswith("num_batches_tracked")
    }
    assert len(old_style) == 116 - 19
    path = tmp_path / "resnet20-12fca82f.th"
    torch.save(
        {"state_dict": old_style, "best_prec1": 91.73},
        path,
        _use_new_zipfile_serialization=False,
    )
    target = seeded("resnet20", 2)
    target.bn1.num_batches_tracked.fill_(5)
    load_weights(target, path)
    assert_same_state(target, {key[len("module.") :]: v for key, v in old_style.items()})
    assert target.bn1.num_batches_tracked.item() == 5


def test_reference_resnet56_checkpoint_loads_as_resnet56_b(tmp_path: Path) -> None:
    saved = seeded("resnet56_b", 1).state_dict()
    path = tmp_path / "model_300.t7"
    torch.save(reference_trainer(saved), path)
    target = seeded("resnet56_b", 2)
    load_weights(target, path)
    assert_same_state(target, saved)


# ------------------------------------------------------------ refused files


def test_missing_file_names_the_path_and_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "model.pt"
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(path)
    assert str(path) in str(caught.value)
    assert "model.checkpoint" in str(caught.value)


def test_pickled_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    saved = seeded("convnet_small", 1).state_dict()
    torch.save({"state_dict": saved, "payload": WritesFileWhenUnpickled(marker)}, path)
    with pytest.raises(CheckpointError) as caught:
        load_weights(seeded("convnet_small", 2), path)
    message = str(caught.value)
    assert not marker.exists()
    assert "non-tensor objects" in message
    assert "torch.save({'state_dict': model.state_dict()}, path)" in message
    assert "\n" not in message
    # Positive control: the payload is live, so the test above could fail.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_custom_class_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "object.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "args": WritesFileWhenUnpickled}, path)
    with pytest.raises(CheckpointError, match="WritesFileWhenUnpickled"):
        read_state_dict(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not a checkpoint", b"PK\x03\x04 truncated zip"],
    ids=["empty", "text", "truncated-zip"],
)
def test_non_torch_files_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(path)
    assert "not a" in str(caught.value) and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_truncated_real_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.pt"
    torch.save({"state_dict": seeded("convnet_small", 1).state_dict()}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_state_dict(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (torch.ones(3), "holds a Tensor, not a state dict"),
        ({"state_dict": {"w": torch.ones(2), "step": 3}}, "step (int)"),
        ({"epoch": 3, "acc": 90.0}, "epoch (int), acc (float)"),
        ({}, "empty state dict"),
    ],
    ids=["tensor", "non-tensor-entry", "no-state-dict", "empty"],
)
def test_content_that_is_not_a_state_dict_is_refused(
    tmp_path: Path, content: object, expected: str
) -> None:
    path = tmp_path / "odd.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        read_state_dict(path)


# --------------------------------------------------------------- mismatches


def test_mismatch_lists_missing_unexpected_and_mis_shaped_keys(tmp_path: Path) -> None:
    state = seeded("convnet_small", 1, num_classes=3).state_dict()
    del state["conv1.weight"]
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "other.pt"
    torch.save(state, path)
    target = seeded("convnet_small", 2)
    before = {key: value.clone() for key, value in target.state_dict().items()}
    with pytest.raises(CheckpointError) as caught:
        load_weights(target, path)
    message = str(caught.value)
    assert message.startswith(f"checkpoint {path} does not fit the model; ")
    assert "missing keys (1): conv1.weight" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "shape mismatches (2): linear.weight: checkpoint (3, 16) vs model (10, 16)" in message
    assert "linear.bias: checkpoint (3,) vs model (10,)" in message
    assert "\n" not in message
    # Nothing was loaded: a failed load leaves the model as it was.
    assert_same_state(target, before)


def test_long_lists_are_truncated(tmp_path: Path) -> None:
    path = tmp_path / "stub.pt"
    torch.save({"conv1.weight": torch.zeros(16, 3, 3, 3)}, path)
    with pytest.raises(CheckpointError) as caught:
        load_weights(seeded("resnet20", 1), path)
    # 116 keys, minus the one present and the 19 tolerated BN batch counters.
    message = str(caught.value)
    assert "missing keys (96): bn1.weight, bn1.bias, bn1.running_mean" in message
    assert "and 88 more" in message


def test_option_b_weights_into_option_a_list_the_shortcuts(tmp_path: Path) -> None:
    path = tmp_path / "resnet56_b.pt"
    save_checkpoint(path, seeded("resnet56_b", 1).state_dict())
    with pytest.raises(CheckpointError) as caught:
        load_weights(seeded("resnet56", 2), path)
    message = str(caught.value)
    assert "unexpected keys (12): layer2.0.shortcut.0.weight, layer2.0.shortcut.1.weight" in message
    assert "missing keys" not in message
    assert message.endswith("is this a 'resnet56_b' checkpoint?")


def test_hint_names_the_class_count(tmp_path: Path) -> None:
    path = tmp_path / "cifar100.pt"
    save_checkpoint(path, seeded("resnet20", 1, num_classes=100).state_dict())
    with pytest.raises(CheckpointError) as caught:
        load_weights(seeded("resnet20", 2), path)
    assert str(caught.value).endswith(
        "is this a 'resnet20' or 'resnet20_noshort' checkpoint with 100 classes?"
    )


# ------------------------------------------------------------------- saving


def test_save_checkpoint_round_trips_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "a" / "model_10.pt"
    saved = seeded("convnet_small", 1).state_dict()
    save_checkpoint(path, saved, epoch=10, acc=88.5, history=[1.5, 0.9], note="lr=0.1")
    assert os.listdir(path.parent) == ["model_10.pt"]
    stored = torch.load(path, weights_only=True)
    assert {key: stored[key] for key in ("epoch", "acc", "history", "note")} == {
        "epoch": 10,
        "acc": 88.5,
        "history": [1.5, 0.9],
        "note": "lr=0.1",
    }
    loaded = read_state_dict(path)
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)


def test_save_checkpoint_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"w": torch.zeros(2)})
    save_checkpoint(path, {"w": torch.ones(2)})
    assert torch.equal(read_state_dict(path)["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["model.pt"]


def test_a_crash_while_saving_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"w": torch.zeros(2)})
    old_digest = file_digest(path)

    def crash_halfway(obj: object, handle: object, *args: object, **kwargs: object) -> None:
        handle.write(b"PK\x03\x04 half a checkpoint")  # type: ignore[attr-defined]
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"w": torch.ones(2)})
    assert file_digest(path) == old_digest
    assert os.listdir(tmp_path) == ["model.pt"]


def test_save_checkpoint_rejects_non_plain_extras(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    with pytest.raises(TypeError, match="'args'"):
        save_checkpoint(path, {"w": torch.zeros(2)}, args=WritesFileWhenUnpickled(path))
    assert not path.exists()


# ------------------------------------------------------------------ hashing


def test_file_digest_is_the_sha256_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    content = os.urandom(3 * 1024 * 1024 + 17)  # spans several read chunks
    path.write_bytes(content)
    assert file_digest(path) == hashlib.sha256(content).hexdigest()


def test_file_digest_of_a_missing_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        file_digest(tmp_path / "absent.pt")


# ------------------------------------------------------------------ weights that are not finite


def diverged(small_checkpoint: Path, folder: Path, value: float, count: int = 3) -> Path:
    """The small checkpoint with `count` values of conv2.weight set to `value` (NaN, inf)."""
    state = read_state_dict(small_checkpoint)
    state["conv2.weight"].view(-1)[:count] = value
    path = folder / "diverged.pt"
    save_checkpoint(path, state)
    return path


def files_under(folder: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_sweep_of_a_diverged_checkpoint_is_refused_in_one_line_before_any_write(
    small_checkpoint, sweep_yaml, tmp_path, capsys, value
) -> None:
    from lsurf.cli import main

    path = diverged(small_checkpoint, tmp_path, value)
    config = sweep_yaml({"model.checkpoint": str(path)})
    before = files_under(tmp_path)
    assert main(["sweep", str(config)]) == 2
    assert files_under(tmp_path) == before  # no direction file, no surface file
    assert capsys.readouterr().err == (
        f"lsurf: error: checkpoint {path} holds NaN or inf in conv2.weight (3 of its 1,152 "
        "values): every loss computed with these weights would be NaN, at every point of a "
        "surface (had the training diverged when it was saved?); use an earlier checkpoint "
        "of the run\n"
    )


def test_an_interpolation_target_holding_nan_is_refused_and_the_output_kept(
    small_checkpoint, sweep_yaml, existing_output, tmp_path, capsys
) -> None:
    from lsurf.cli import main

    output, contents, modified = existing_output
    target = diverged(small_checkpoint, tmp_path, float("nan"), count=1)
    config = sweep_yaml({"directions": {"kind": "target", "target": str(target)}})
    assert main(["sweep", str(config), "--force"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"lsurf: error: checkpoint {target} holds NaN or inf in conv2")
    assert error.count("\n") == 1
    assert output.read_bytes() == contents and output.stat().st_mtime_ns == modified


def test_other_tensors_holding_nan_are_counted_and_an_inf_buffer_is_a_mask() -> None:
    from lsurf.checkpoint import require_finite

    model = seeded("convnet_small", 0)
    model.register_buffer("mask", torch.tensor([0.0, -float("inf")]))  # e.g. attention
    require_finite(model, "model")
    with torch.no_grad():
        model.conv1.weight.view(-1)[0] = float("nan")
        model.linear.weight.view(-1)[:2] = float("inf")
    model.bn1.running_var[0] = float("nan")
    with pytest.raises(CheckpointError) as caught:
        require_finite(model, "model")
    assert str(caught.value).startswith(
        "model holds NaN or inf in conv1.weight (1 of its 216 values; 2 more tensors too): "
    )


def test_the_python_api_refuses_a_model_holding_nan(cifar_root: Path) -> None:
    from lsurf.api import sweep

    model = seeded("convnet_small", 0)
    with torch.no_grad():
        model.conv1.weight.view(-1)[0] = float("nan")
    inputs, targets = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    with pytest.raises(CheckpointError, match=r"^the model passed to lsurf.api.sweep holds NaN"):
        sweep(model, (inputs, targets), x="-1:1:3", log=None)
