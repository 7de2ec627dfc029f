"""lsurf.trackers and `lsurf plot --log-to`: a surface's figures, scalars and file in W&B
(offline) and TensorBoard, read back from what each tracker wrote to disk.

The expected scalars are computed here from the file's arrays with h5py, not by lsurf. W&B
runs offline: its run folder holds the images under files/media and the history and the
artifact in the run's `.wandb` transaction log, a LevelDB-style log of protobuf records, read
here with the record format alone. Two W&B runs in the file: they take seconds each.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import struct
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import lsurf
from lsurf.cli import main
from lsurf.trackers import log_surface

PLANE_FIGURES = ("contour", "filled", "heatmap", "surface3d")


@pytest.fixture(scope="module")
def surface(tmp_path_factory) -> Path:
    """A 5×5 plane of a tiny classifier on train and test, with its train loss's basins."""
    folder = tmp_path_factory.mktemp("surface")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    data = {
        "train": (torch.randn(24, 4), torch.randint(0, 3, (24,))),
        "test": (torch.randn(16, 4), torch.randint(0, 3, (16,))),
    }
    path = folder / "plane.h5"
    lsurf.sweep(model, data, x="-1:1:5", y="-1:1:5", output=path, log=None)
    assert main(["topology", str(path), "--out", str(folder / "topology")]) == 0
    return path


def expected_scalars(path: Path) -> dict[str, float]:
    """From the file's arrays: each column at (0, 0), each loss's minimum and its (x, y), and
    the basins `lsurf topology` stored for train_loss, when it ran."""
    with h5py.File(path, "r") as h5file:
        x, y = h5file["xcoordinates"][()], h5file["ycoordinates"][()]
        centre = (int(np.flatnonzero(x == 0)[0]), int(np.flatnonzero(y == 0)[0]))
        found = {}
        for name in ("train_loss", "train_acc", "test_loss", "test_acc"):
            values = h5file[name][()]
            found[f"lsurf/{name}_centre"] = float(values[centre])
            if name.endswith("_loss"):
                i, j = np.unravel_index(np.argmin(values), values.shape)
                found[f"lsurf/{name}_min"] = float(values[i, j])
                found[f"lsurf/{name}_min_x"] = float(x[i])
                found[f"lsurf/{name}_min_y"] = float(y[j])
        if "topology" in h5file:
            found["lsurf/train_loss_basins"] = float(h5file["topology/train_loss/basins"].shape[0])
    return found


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    header = path.read_bytes()[:24]
    assert header.startswith(b"\x89PNG\r\n\x1a\n")
    return struct.unpack(">II", header[16:24])


# ------------------------------------------------------------------------------- TensorBoard


def read_events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_tensorboard_gets_the_scalars_figures_report_and_file_at_the_callers_step(
    surface, tmp_path
):
    from torch.utils.tensorboard import SummaryWriter

    from lsurf.files.info import describe

    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    logged = log_surface(surface, "tensorboard", writer=writer, step=7)
    writer.add_scalar("after", 1.0, global_step=8)  # the caller's writer is left open
    writer.close()
    expected = expected_scalars(surface)
    events = read_events(tmp_path / "tb")
    tags = events.Tags()
    assert sorted(name for name in tags["scalars"] if name.startswith("lsurf/")) == sorted(expected)
    for name, value in expected.items():
        [event] = events.Scalars(name)
        assert event.step == 7
        assert event.value == pytest.approx(value, rel=1e-6), name  # stored as float32
    assert logged.scalars == pytest.approx(expected)
    keys = [f"lsurf/figures/train_loss_{kind}" for kind in PLANE_FIGURES]
    assert sorted(tags["images"]) == sorted(keys) == sorted(logged.figures)
    for key in keys:
        [image] = events.Images(key)
        assert image.step == 7
        assert image.encoded_image_string.startswith(b"\x89PNG")
        assert image.width > 300 and image.height > 200
    # The text summary is `lsurf info`'s report, each line indented (a Markdown code block).
    [text] = events.Tensors("lsurf/info/text_summary")
    shown = text.tensor_proto.string_val[0].decode()
    assert shown.splitlines() == [f"    {line}" for line in describe(surface).splitlines()]
    copy = tmp_path / "tb" / surface.name
    assert logged.copies == (copy,)
    assert copy.read_bytes() == surface.read_bytes()
    assert [path.name for path in (tmp_path / "tb").iterdir() if path.name.startswith(".")] == []


def test_a_capture_file_logs_its_figure_and_the_file_and_no_scalars(tmp_path):
    """Files other than surfaces and sharpness files: the figure `lsurf plot` draws for them
    and the file itself, through a writer log_surface opens and closes."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 3))
    data = (torch.randn(24, 4), torch.randint(0, 3, (24,)))
    path = tmp_path / "run.h5"
    capture = lsurf.Capture(path, data, every=1, x="-1:1:3", y="-1:1:3", examples=None)
    capture(model, 1)
    logged = log_surface(path, "tensorboard", log_dir=tmp_path / "tb")
    assert logged.scalars == {}
    events = read_events(tmp_path / "tb")
    assert events.Tags()["images"] == ["lsurf/figures/epochs_1-1_train_loss_contour"]
    assert events.Tags()["scalars"] == []
    assert (tmp_path / "tb" / "run.h5").read_bytes() == path.read_bytes()


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("tracker", ["wandb", "tensorboard"])
def test_a_missing_tracker_is_one_line_naming_the_extra_and_nothing_is_written(
    tracker, surface, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, tracker, None)  # `import wandb` now raises ImportError
    out, logs = tmp_path / "figures", tmp_path / "logs"
    arguments = ["plot", str(surface), "--out", str(out), "--log-to", f"png,{tracker}"]
    assert main([*arguments[:-1], tracker, "--log-dir", str(logs)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == (
        f"lsurf: error: logging to {tracker} needs the {tracker} package, which is not "
        f"installed: pip install lsurf[{tracker}]"
    )
    assert not out.exists() and not logs.exists()
    assert main(arguments) == 2  # an unknown name in a comma list
    assert "--log-to 'png' is not a tracker; use wandb, tensorboard" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------------------ W&B offline

LOG_BLOCK = 32768  # the transaction log's block size; records never straddle a header


def wandb_records(path: Path):
    """The protobuf Records of a W&B run's `.wandb` file: a 7-byte file header (':W&B', the
    magic 0xBEE1, the version), then blocks of records, each a 7-byte header (CRC, length,
    type: 1 full, 2 first, 3 middle, 4 last) and its bytes."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        left = LOG_BLOCK - position % LOG_BLOCK
        if left < 7:  # too short for a header: padding up to the next block
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_wandb_run(folder: Path) -> tuple[dict[int, dict], dict[str, list[str]], list]:
    """(step → its history's key → value, image key → its paths, artifacts) of the one
    offline run in `folder`."""
    import json

    [log] = folder.glob("wandb/offline-run-*/run-*.wandb")
    # wandb-core writes the log behind the process: `finish` can return before it is on disk.
    # The run's last record is its exit; wait for it.
    deadline = time.monotonic() + 60
    while not any(record.WhichOneof("record_type") == "exit" for record in wandb_records(log)):
        assert time.monotonic() < deadline, f"{log} never got its exit record"
        time.sleep(0.05)
    history: dict[int, dict] = {}
    images: dict[str, list[str]] = {}
    artifacts = []
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "artifact":
            artifacts.append(record.artifact)
        if kind != "history":
            continue
        row = history.setdefault(record.history.step.num, {})
        for item in record.history.item:
            key = list(item.nested_key) or [item.key]
            if len(key) == 1:
                row[key[0]] = json.loads(item.value_json)
            elif key[1] == "path":
                images.setdefault(key[0], []).append(json.loads(item.value_json))
    return history, images, artifacts


@pytest.fixture()
def offline_wandb(tmp_path, monkeypatch):
    """W&B offline, everything it writes (runs, artifact staging, cache) under tmp_path."""
    pytest.importorskip("wandb")
    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(tmp_path / "wandb-dir"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_ARTIFACT_DIR": str(tmp_path / "wandb-artifacts"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
    }.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "wandb-dir").mkdir()
    return tmp_path


def check_artifact(artifacts, surface: Path) -> None:
    [artifact] = artifacts
    assert (artifact.name, artifact.type) == ("plane", "loss-surface")
    [entry] = artifact.manifest.contents
    digest = base64.b64encode(hashlib.md5(surface.read_bytes()).digest()).decode()
    assert (entry.path, entry.digest) == (surface.name, digest)


def test_wandb_opens_an_offline_run_logs_figures_scalars_and_the_artifact_and_closes_it(
    surface, offline_wandb
):
    import wandb

    logged = log_surface(surface, "wandb", log_dir=offline_wandb / "runs", project="tests")
    assert wandb.run is None  # the run it opened is finished
    history, images, artifacts = read_wandb_run(offline_wandb / "runs")
    expected = expected_scalars(surface)
    [row] = history.values()
    assert {key: row[key] for key in expected} == pytest.approx(expected)
    assert logged.scalars == pytest.approx(expected)
    run_folder = next((offline_wandb / "runs" / "wandb").glob("offline-run-*"))
    for kind in PLANE_FIGURES:
        key = f"lsurf/figures/train_loss_{kind}"
        [path] = images[key]
        assert path.startswith(f"media/images/lsurf/figures/train_loss_{kind}_")
        assert (run_folder / "files" / path).read_bytes().startswith(b"\x89PNG")
    check_artifact(artifacts, surface)


def test_wandb_logs_into_the_callers_run_at_its_step_and_leaves_it_open(surface, offline_wandb):
    import wandb

    folder = offline_wandb / "caller"
    folder.mkdir()
    run = wandb.init(project="tests", dir=str(folder))
    try:
        log_surface(surface, "wandb", run=run, step=5, prefix="landscape")
        run.log({"after": 1.0}, step=6)  # still open: the training loop goes on logging
    finally:
        run.finish()
    history, images, artifacts = read_wandb_run(folder)
    assert sorted(history) == [5, 6] and history[6]["after"] == 1.0
    expected = {
        key.replace("lsurf/", "landscape/", 1): value
        for key, value in expected_scalars(surface).items()
    }
    assert {key: history[5][key] for key in expected} == pytest.approx(expected)
    assert sorted(images) == sorted(f"landscape/figures/train_loss_{k}" for k in PLANE_FIGURES)
    check_artifact(artifacts, surface)
    shutil.rmtree(folder)


# ------------------------------------------------------------------------ docs/trackers.md


def test_the_page_runs_as_written(offline_wandb, monkeypatch):
    """docs/trackers.md: its Python block (the caller's writer at its step), then its command:
    it writes `lsurf plot`'s figures, prints what the page shows, and logs the same figures,
    the file's scalars and the file to both trackers."""
    import subprocess

    from doc_commands import ROOT, blocks, documented, link_repository, missing_lines

    page = ROOT / "docs" / "trackers.md"
    [code] = [block for block in blocks(page) if block.tag == "python"]
    scratch = offline_wandb / "page"
    scratch.mkdir()
    monkeypatch.chdir(scratch)
    exec(compile("\n".join(code.lines), f"{page}:{code.line}", "exec"), {"__name__": "page"})
    surface = scratch / "runs" / "trackers" / "plane.h5"
    expected = expected_scalars(surface)
    events = read_events(scratch / "runs" / "trackers" / "training")
    for name, value in expected.items():
        [event] = events.Scalars(name)
        assert (event.step, event.value) == (100, pytest.approx(value, rel=1e-6)), name
    link_repository(scratch)
    # A W&B run in this process leaves WANDB_SERVICE naming its service; a command that
    # inherited it would hand its run to that service instead of starting its own.
    environment = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}
    command = documented(
        "WANDB_MODE=offline WANDB_SILENT=true .venv/bin/lsurf plot runs/trackers/plane.h5"
        " --log-to tensorboard,wandb --log-dir runs/trackers/logs --project landscapes"
    )
    done = subprocess.run(
        ["bash", "-c", command.text], capture_output=True, text=True, env=environment
    )
    assert done.returncode == 0, done.stderr
    assert missing_lines(command, done.stdout) == []
    assert len(done.stdout.splitlines()) == len(command.shown)
    figures = {
        kind: scratch / "runs" / "trackers" / f"plane_train_loss_{kind}.png"
        for kind in PLANE_FIGURES
    }
    logs = scratch / "runs" / "trackers" / "logs"
    events = read_events(logs)
    for kind, figure in figures.items():
        [image] = events.Images(f"lsurf/figures/train_loss_{kind}")
        # the drawing `lsurf plot` wrote beside the file, at the same size in pixels
        assert (image.width, image.height) == png_size(figure)
    for name, value in expected.items():
        [event] = events.Scalars(name)
        assert (event.step, event.value) == (0, pytest.approx(value, rel=1e-6)), name
    assert (logs / "plane.h5").read_bytes() == surface.read_bytes()
    history, images, artifacts = read_wandb_run(logs)
    [row] = history.values()
    assert {key: row[key] for key in expected} == pytest.approx(expected)
    assert sorted(images) == sorted(f"lsurf/figures/train_loss_{kind}" for kind in PLANE_FIGURES)
    check_artifact(artifacts, surface)


def test_a_curvature_surface_logs_lambda_max_and_min_at_the_centre(tmp_path):
    """The Hessian's columns are scalars like any other: λmax = 2 + i + 2j and λmin =
    ±0.1(i + j)·λmax at grid index (i, j) (curvature_values), so at the centre (2, 1) of a
    5×3 grid λmax is 6 and λmin +1.8; the loss is lowest at index (0, 0)."""
    from surface_helpers import curvature_values, write_curvature_surface

    from lsurf.grid import Axis, Grid
    from lsurf.trackers import file_scalars

    grid = Grid.from_axes(Axis(-1, 1, 5), Axis(-1, 1, 3))
    path = write_curvature_surface(tmp_path / "s.h5", grid, "", curvature_values(grid.shape))
    scalars = file_scalars(path)
    assert scalars["max_eig_centre"] == 6.0
    assert scalars["min_eig_centre"] == pytest.approx(1.8)
    assert scalars["train_loss_centre"] == pytest.approx(1.3)
    assert (scalars["train_loss_min"], scalars["train_loss_min_x"]) == (1.0, -1.0)
    assert scalars["train_loss_min_y"] == -1.0
