"""A grid too large for the machine is refused before anything is written, in one line."""

import os
from pathlib import Path

import pytest
import torch

from lsurf import models
from lsurf.checkpoint import save_checkpoint
from lsurf.cli import main
from lsurf.errors import ConfigError
from lsurf.run import capacity

GIB = 1024**3
HUGE = ["--set", "grid.x=-1:1:100000", "--set", "grid.y=-1:1:100000"]


def test_the_column_bound_counts_loss_and_accuracy_per_split_and_the_curvature_columns():
    assert capacity.column_bound(("train",), curvature=False) == 2
    assert capacity.column_bound(("train", "test"), curvature=False) == 4
    assert capacity.column_bound(("train", "test"), curvature=True) == 9


def test_the_sizes_count_eight_bytes_a_column_and_the_done_flag_and_queue():
    # 1001 × 1001 points, 4 columns: 32 bytes of values, 1 of `done`, 16 of queue per point
    assert capacity.surface_bytes(1001 * 1001, 4) == (1001 * 1001 * 49, 1001 * 1001 * 33)
    sizes = (0, 1023, 1536, 1000 * 1024**2, 330 * 10**9, 10**13, 10**16)
    assert [capacity.format_bytes(n) for n in sizes] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "1,000 MiB",
        "307 GiB",
        "9.09 TiB",
        "9,095 TiB",
    ]


@pytest.mark.parametrize(
    ("shape", "memory", "disk", "message"),
    [
        (
            (100_000, 100_000),
            23 * GIB,
            None,
            "grid.x × grid.y is 100,000 × 100,000 = 10,000,000,000 points: its surface "
            "(4 columns at most) needs 456 GiB in rank 0's memory (this machine has 23 GiB "
            "available); ",
        ),
        (
            (10**10,),
            10**15,
            50 * GIB,
            "grid.x is 10,000,000,000 points: its surface (4 columns at most) needs 307 GiB on "
            "disk (50 GiB free in out); ",
        ),
        (
            (100_000, 100_000),
            23 * GIB,
            50 * GIB,
            "grid.x × grid.y is 100,000 × 100,000 = 10,000,000,000 points: its surface "
            "(4 columns at most) needs 456 GiB in rank 0's memory (this machine has 23 GiB "
            "available) and 307 GiB on disk (50 GiB free in out); ",
        ),
    ],
)
def test_a_surface_too_large_names_its_size_and_what_the_machine_has(shape, memory, disk, message):
    with pytest.raises(ConfigError) as caught:
        capacity.check_surface_fits(shape, 4, Path("out/surface.h5"), memory, disk)
    assert str(caught.value) == message + capacity.TILES_HINT


def test_a_surface_that_fits_or_an_unknown_machine_passes():
    capacity.check_surface_fits((1001, 1001), 4, Path("s.h5"), 49 * 1001 * 1001, 33 * 1001**2)
    capacity.check_surface_fits((100_000, 100_000), 4, Path("s.h5"), None, None)


def test_the_machine_reports_some_memory_and_disk(tmp_path):
    assert capacity.available_memory() > 0
    assert capacity.free_disk(tmp_path / "not" / "yet" / "there.h5") > 0


def creating_fails(folder: str) -> str:
    """What the kernel says to creating a file in `folder` (where it must refuse)."""
    with pytest.raises(OSError) as refused:
        os.close(os.open(os.path.join(folder, ".lsurf-test"), os.O_CREAT | os.O_EXCL, 0o600))
    return refused.value.strerror


HINT = "; choose an output folder you can write to\n"


@pytest.mark.parametrize("where", ["under /proc", "a file as its folder", "under a file"])
def test_an_output_folder_that_cannot_be_written_is_refused_as_such_in_one_line(
    sweep_yaml, tmp_path, capsys, where
):
    # As root os.access says yes to /proc, where no file can be created, and shutil says it
    # has 0 B free: before this check the sweep was told to go in tiles.
    (tmp_path / "taken").write_text("a file where a folder should be")
    output, message = {
        "under /proc": (
            Path("/proc/lsurf-nowhere/surface.h5"),
            "cannot write in /proc/lsurf-nowhere (creating a file in /proc fails: "
            f"{creating_fails('/proc')})",
        ),
        "a file as its folder": (
            tmp_path / "taken" / "surface.h5",
            f"cannot write in {tmp_path / 'taken'} (it is a file, not a folder)",
        ),
        "under a file": (
            tmp_path / "taken" / "out" / "surface.h5",
            f"cannot write in {tmp_path / 'taken' / 'out'} ({tmp_path / 'taken'} is a file, "
            "not a folder)",
        ),
    }[where]
    config = sweep_yaml({"output": str(output)})
    before = files_under(tmp_path)
    capsys.readouterr()
    assert main(["sweep", str(config)]) == 2
    assert capsys.readouterr().err == f"lsurf: error: {message}{HINT}"
    assert files_under(tmp_path) == before  # the file in the way too, and no directions


def test_a_folder_that_can_be_written_passes_and_is_left_as_it_was(tmp_path):
    (tmp_path / "kept.h5").write_text("an earlier surface")
    before = files_under(tmp_path), sorted(tmp_path.iterdir())
    capacity.check_folder_writable(tmp_path / "kept.h5")
    capacity.check_folder_writable(tmp_path / "not" / "yet" / "there.h5")
    # No folder made, no trial file left behind, the earlier file unopened.
    assert (files_under(tmp_path), sorted(tmp_path.iterdir())) == before


@pytest.fixture
def machine(monkeypatch):
    """A machine of 23 GiB of memory and 50 GiB of free disk, whatever runs the tests."""
    monkeypatch.setattr(capacity, "available_memory", lambda: 23 * GIB)
    monkeypatch.setattr(capacity, "free_disk", lambda output: 50 * GIB)


def files_under(folder):
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("plan", [False, True])
def test_the_cli_refuses_a_huge_grid_in_one_line_and_writes_nothing(
    machine, sweep_yaml, tmp_path, capsys, plan
):
    config = sweep_yaml()
    before = files_under(tmp_path)
    assert main(["sweep", str(config), *HUGE, *(["--plan"] if plan else [])]) == 2
    assert files_under(tmp_path) == before  # no direction file, no surface file
    assert capsys.readouterr().err == (
        "lsurf: error: grid.x × grid.y is 100,000 × 100,000 = 10,000,000,000 points: its "
        "surface (4 columns at most) needs 456 GiB in rank 0's memory (this machine has 23 GiB "
        f"available) and 307 GiB on disk (50 GiB free in {tmp_path / 'out'}); sweep it in "
        "tiles (several outputs whose grid ranges cover it) or lower the resolution\n"
    )


def test_the_real_machine_refuses_a_trillion_points(sweep_yaml, tmp_path, capsys):
    config = sweep_yaml()
    million = ["--set", "grid.x=-1:1:1000000", "--set", "grid.y=-1:1:1000000"]  # 45 TiB
    assert main(["sweep", str(config), *million]) == 2
    error = capsys.readouterr().err
    assert error.startswith("lsurf: error: grid.x × grid.y is 1,000,000 × 1,000,000 = ")
    assert error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_force_on_an_existing_output_refuses_a_huge_grid_and_leaves_the_file(
    machine, existing_output, sweep_yaml, capsys
):
    output, contents, modified = existing_output
    assert main(["sweep", str(sweep_yaml()), *HUGE, "--force"]) == 2
    assert "needs 456 GiB in rank 0's memory" in capsys.readouterr().err
    assert output.read_bytes() == contents and output.stat().st_mtime_ns == modified


def test_auto_axes_are_checked_once_fitted_to_the_path(machine, sweep_yaml, tmp_path, capsys):
    torch.manual_seed(0)
    model = models.build("convnet_small")
    folder = tmp_path / "trajectory"
    for epoch in range(3):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.01 * torch.randn_like(parameter))
        save_checkpoint(folder / f"model_{epoch}.pt", model.state_dict(), epoch=epoch)
    config = sweep_yaml(
        {
            "model.checkpoint": str(folder / "model_2.pt"),
            "directions": {"kind": "pca", "trajectory": str(folder)},
            "grid": {"x": "auto:100000", "y": "auto:100000"},
        }
    )
    assert main(["sweep", str(config)]) == 2
    assert "= 10,000,000,000 points: its surface" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sweeps_that_fit_one_by_one_but_not_together_are_refused(
    machine, sweep_yaml, tmp_path, capsys
):
    # 18000² points of 4 columns: 14.8 GiB each in rank 0's memory, 29.6 GiB for the two.
    first = sweep_yaml({"output": str(tmp_path / "out" / "a.h5")}, name="a.yaml")
    second = sweep_yaml({"output": str(tmp_path / "out" / "b.h5")}, name="b.yaml")
    big = ["--set", "grid.x=-1:1:18000", "--set", "grid.y=-1:1:18000"]
    before = files_under(tmp_path)
    assert main(["sweep", str(first), str(second), *big]) == 2
    assert files_under(tmp_path) == before
    assert capsys.readouterr().err == (
        "lsurf: error: the 2 sweeps of this job together need 29.6 GiB in rank 0's memory (this "
        "machine has 23 GiB available); run them in separate jobs, or fewer per job\n"
    )
