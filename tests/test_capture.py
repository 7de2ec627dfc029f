"""lsurf.Capture in a plain training loop: captures at the right epochs, into one file, the
training untouched, resumable, and bad input refused before anything is written."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lsurf
from lsurf.capture import Capture
from lsurf.cli import main
from lsurf.errors import ConfigError
from lsurf.files.captures import read_captures
from lsurf.files.info import describe

GRID = {"x": "-1:1:5", "y": "-1:1:5"}


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, 3))


def tiny_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(120, 6, generator=generator), torch.randint(
        0, 3, (120,), generator=generator
    )


def train(epochs: int, capture: Capture | None, start: int = 0, model: nn.Module | None = None):
    """A plain loop with shuffling and dropout (both draw from torch's global generator), the
    capture called after every epoch; the loss of every step."""
    model = tiny_model() if model is None else model
    inputs, targets = tiny_data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    torch.manual_seed(start)
    losses = []
    for epoch in range(start + 1, epochs + 1):
        model.train()
        for batch in torch.randperm(len(inputs)).split(30):
            loss = F.cross_entropy(model(inputs[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        if capture is not None:
            capture(model, epoch, step=epoch * 4)
    return losses, model


def test_captures_land_at_every_nth_epoch_and_leave_the_training_as_it_was(tmp_path):
    plain, plain_model = train(6, None)
    capture = Capture(tmp_path / "run.h5", tiny_data(), every=2, examples=80, **GRID)
    captured, model = train(6, capture)
    assert captured == plain  # bit for bit: the RNG streams were not touched
    for ours, theirs in zip(model.parameters(), plain_model.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    assert model.training  # its mode as the loop left it
    found = read_captures(tmp_path / "run.h5")
    assert [(one.epoch, one.step) for one in found] == [(2, 8), (4, 16), (6, 24)]
    for one in found:
        assert one.surface.done.all() and one.surface.metrics["train_loss"].shape == (5, 5)
    # Each capture is the plane around the weights of its epoch: its centre is the loss there.
    inputs, targets = tiny_data()
    chosen = torch.sort(torch.randperm(120, generator=torch.Generator().manual_seed(0))[:80])
    model.eval()
    with torch.no_grad():
        expected = F.cross_entropy(model(inputs[chosen.values]), targets[chosen.values]).item()
    assert found[-1].surface.metrics["train_loss"][2, 2] == pytest.approx(expected, rel=1e-5)
    # Training moved the weights, so the landscapes differ from one capture to the next.
    assert not np.array_equal(
        found[0].surface.metrics["train_loss"], found[-1].surface.metrics["train_loss"]
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run.h5"]  # no partial left


def test_the_directions_are_the_same_draws_at_every_capture(tmp_path):
    """Captures at unchanged weights give the same surface bit for bit: the directions are
    the seed's draws, not new ones."""
    model, data = tiny_model(), tiny_data()
    capture = Capture(tmp_path / "run.h5", data, every=1, examples=None, **GRID)
    capture(model, 1)
    capture(model, 2)
    first, second = read_captures(tmp_path / "run.h5")
    assert np.array_equal(first.surface.metrics["train_loss"], second.surface.metrics["train_loss"])
    other = Capture(tmp_path / "seed.h5", data, every=1, examples=None, seed=5, **GRID)(model, 1)
    assert other is not None
    assert not np.array_equal(other.metrics["train_loss"], first.surface.metrics["train_loss"])


def test_a_sweep_puts_back_the_threads_flags_and_generators_it_found():
    model, data = tiny_model(), tiny_data()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(123)
    np.random.seed(4)
    random.seed(5)
    expected = (torch.rand(3), np.random.rand(), random.random())
    torch.manual_seed(123)
    np.random.seed(4)
    random.seed(5)
    try:
        lsurf.sweep(model, data, x="-1:1:3", log=None)
        assert torch.get_num_threads() == 1
        assert torch.backends.cudnn.benchmark is True
        after = (torch.rand(3), np.random.rand(), random.random())
    finally:
        torch.backends.cudnn.benchmark = False
        torch.set_num_threads(threads)
    assert torch.equal(after[0], expected[0]) and after[1:] == expected[1:]


class Flaky:
    """cross-entropy that fails after `fail_after` calls while armed: a crash part-way."""

    def __init__(self, fail_after: int | None) -> None:
        self.fail_after = fail_after
        self.calls = 0

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        return F.cross_entropy(outputs, targets, reduction="none")


def test_a_restarted_training_skips_done_captures_and_resumes_an_interrupted_one(tmp_path):
    model, data = tiny_model(), tiny_data()
    path = tmp_path / "run.h5"
    loss = Flaky(None)
    Capture(path, data, every=1, examples=None, loss=loss, **GRID)(model, 1)
    loss.fail_after, loss.calls = 10, 0
    with pytest.raises(KeyboardInterrupt):
        Capture(path, data, every=1, examples=None, loss=loss, **GRID)(model, 2)
    partial = sorted(entry.name for entry in tmp_path.iterdir() if entry.name != "run.h5")
    # The capture's own surface file (resumable) and its direction file, named by the epoch
    # and the weights' digest.
    assert len(partial) == 2 and all(name.startswith("run.h5.epoch_000002-") for name in partial)
    assert [one.epoch for one in read_captures(path)] == [1]  # the file holds whole captures
    loss.fail_after, loss.calls = None, 0
    again = Capture(path, data, every=1, examples=None, loss=loss, **GRID)
    assert again(model, 1) is None  # already in the file: not taken again
    assert loss.calls == 0
    surface = again(model, 2)
    assert surface is not None and 0 < loss.calls < 25  # the points left, not all 25
    first, second = read_captures(path)
    assert np.array_equal(first.surface.metrics["train_loss"], second.surface.metrics["train_loss"])
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["run.h5"]


def test_a_model_whose_parameters_changed_is_refused_with_nothing_written(tmp_path):
    path = tmp_path / "run.h5"
    capture = Capture(path, tiny_data(), every=1, examples=None, **GRID)
    capture(tiny_model(), 1)
    before = path.read_bytes()
    grown = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    with pytest.raises(ConfigError) as caught:
        capture(grown, 2)
    assert str(caught.value) == (
        f"the model's parameters changed since the first capture in {path}: 0.weight was "
        "[12, 6], is [16, 6]; capture a changed model into another file"
    )
    assert path.read_bytes() == before
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["run.h5"]


def test_other_settings_on_an_existing_file_and_bad_arguments_are_one_line(tmp_path):
    path = tmp_path / "run.h5"
    Capture(path, tiny_data(), every=1, examples=None, **GRID)(tiny_model(), 1)
    with pytest.raises(ConfigError, match=r"holds captures taken with other settings \(x differ\)"):
        Capture(path, tiny_data(), every=1, examples=None, x="-2:2:5", y="-1:1:5")
    with pytest.raises(ConfigError, match="every must be a whole number of epochs ≥ 1, got 0"):
        Capture(tmp_path / "other.h5", tiny_data(), every=0)
    with pytest.raises(ConfigError, match="Capture sets subset itself"):
        Capture(tmp_path / "other.h5", tiny_data(), subset=10)


def test_info_and_plot_read_a_capture_file(tmp_path, capsys):
    path = tmp_path / "run.h5"
    capture = Capture(path, tiny_data(), every=1, examples=None, **GRID)
    model = tiny_model()
    for epoch in (1, 2):
        capture(model, epoch, step=epoch * 10)
        with torch.no_grad():
            model[0].weight.mul_(1.5)
    found = read_captures(path)
    report = describe(path).splitlines()
    assert report[0] == f"captures  {path}"
    assert report[3] == "grid     x=-1:1:5  y=-1:1:5  (5x5 points per capture)"
    assert report[4:6] == [
        "2 captures of train_loss:",
        "  epoch      step      centre     lowest  at",
    ]
    centre = found[1].surface.metrics["train_loss"][2, 2]
    assert report[7].split()[:3] == ["2", "20", f"{centre:.4g}"]
    assert main(["plot", str(path), "--out", str(tmp_path / "figures")]) == 0
    written = capsys.readouterr().out.split()
    assert [name.rsplit("/", 1)[-1] for name in written] == [
        "run_epochs_1-2_train_loss_contour.png"
    ]
    assert (tmp_path / "figures" / "run_epochs_1-2_train_loss_contour.png").stat().st_size > 10_000


def test_the_page_runs_as_written(tmp_path, monkeypatch):
    """docs/capture.md: its Python blocks run in order, then its commands on what they wrote."""
    import subprocess

    from doc_commands import ROOT, blocks, documented, link_repository, missing_lines

    page = ROOT / "docs" / "capture.md"
    code = [block for block in blocks(page) if block.tag == "python"]
    assert len(code) == 3
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "capture_page"}
    for block in code:
        exec(compile("\n".join(block.lines), f"{page}:{block.line}", "exec"), namespace)
    for name, epochs in (
        ("landscape", [5, 10, 15, 20]),
        ("lightning", [2, 4]),
        ("trainer", [2, 4]),
    ):
        assert [
            one.epoch for one in read_captures(tmp_path / "runs" / "capture" / f"{name}.h5")
        ] == epochs
    link_repository(tmp_path)
    for command in (
        documented(".venv/bin/lsurf info runs/capture/landscape.h5"),
        documented(".venv/bin/lsurf plot runs/capture/landscape.h5"),
    ):
        done = subprocess.run(
            ["bash", "-c", command.text], cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert missing_lines(command, done.stdout) == []
        assert len(done.stdout.splitlines()) == len(command.shown)
    assert (tmp_path / "runs/capture/landscape_epochs_5-20_train_loss_contour.png").is_file()


def test_plot_draws_a_capture_file_alone_and_only_as_figures(tmp_path, capsys):
    path = tmp_path / "run.h5"
    Capture(path, tiny_data(), every=1, examples=None, **GRID)(tiny_model(), 1)
    surface = tmp_path / "surface.h5"
    lsurf.sweep(tiny_model(), tiny_data(), x="-1:1:3", output=surface, log=None)
    capsys.readouterr()
    assert main(["plot", str(path), "--format", "vtk"]) == 2
    assert capsys.readouterr().err == (
        "lsurf: error: --format vtk exports surfaces; a capture file is drawn as png, pdf, svg\n"
    )
    assert main(["plot", str(path), str(surface)]) == 2
    assert capsys.readouterr().err == (
        f"lsurf: error: {surface} is not a capture file; lsurf plot draws one kind of file at a "
        "time\n"
    )
    assert sorted(entry.name for entry in tmp_path.iterdir()) == [
        "run.h5",
        "surface.directions.h5",
        "surface.h5",
    ]
