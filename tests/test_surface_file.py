"""lsurf.files.surface: the surface file, its layout, atomic creation, resume and one-line errors
(and the HDF5 opening rules of lsurf.files.hdf5 that every format shares)."""

import datetime
import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

import lsurf
from lsurf import atomic, metrics
from lsurf.errors import LsurfError, OutputError
from lsurf.files import directions as direction_file
from lsurf.files import surface as surface_file
from lsurf.files import weights as weight_file
from lsurf.files.trajectory import Trajectory
from lsurf.files.weights import WeightStatistics
from lsurf.grid import Grid

COLUMNS = metrics.columns(["train", "test"])
METRICS = [column.name for column in COLUMNS]
# A metric this version's table does not know, as a later lsurf may write it.
MAX_EIGENVALUE = metrics.Metric("top_eig", "largest Hessian eigenvalue", "", "solver")
GRID = Grid(np.linspace(-1.0, 1.0, 3), np.linspace(-0.5, 0.5, 4))  # non-square: 3 x 4
ATTRIBUTES = {
    "config": "model:\n  name: convnet_small\ngrid:\n  x: -1:1:3\n",
    "checkpoint_sha256": "c" * 64,
    "directions_sha256": "d" * 64,
    "direction_file": "/runs/a/directions.h5",
}
TRAJECTORY = Trajectory(np.array([[0.5, -1.25], [0.1, 0.2], [0.0, 0.0]]), (1, 5, 10), (0.7, 0.2))
WEIGHTS = WeightStatistics(
    names=("conv.weight", "fc.weight"),
    norms=np.array([3.5, 0.25]),
    sizes=np.array([432, 40], dtype=np.int64),
    bin_edges=np.linspace(-1.0, 1.0, 5),
    counts=np.array([1, 200, 270, 1], dtype=np.int64),
)
# Runs in another process, as `lsurf info` does beside a running sweep.
READER = """import sys
from pathlib import Path
from lsurf.files.surface import read_surface, read_surface_attributes
try:
    surface = read_surface(Path(sys.argv[1]))
    print(surface.metrics["train_loss"].tolist(), surface.done.tolist())
    read_surface_attributes(Path(sys.argv[1]))
except Exception as error:
    print(type(error).__name__, error)
"""


def read_in_another_process(path):
    result = subprocess.run(
        [sys.executable, "-c", READER, str(path)], capture_output=True, text=True, check=True
    )
    return result.stdout.splitlines()


def assert_same_trajectory(found, expected):
    np.testing.assert_array_equal(found.coordinates, expected.coordinates)
    assert found.epochs == expected.epochs
    assert found.explained_variance_ratio == expected.explained_variance_ratio


def assert_same_weights(found, expected):
    assert found.names == expected.names
    for field in ("norms", "sizes", "bin_edges", "counts"):
        np.testing.assert_array_equal(getattr(found, field), getattr(expected, field))
        assert getattr(found, field).dtype == getattr(expected, field).dtype


def test_a_new_surface_has_the_reference_layout_all_nan_and_nothing_done(tmp_path):
    assert METRICS == ["train_loss", "train_acc", "test_loss", "test_acc"]
    with surface_file.create_surface(tmp_path / "s.h5", GRID, COLUMNS, ATTRIBUTES) as writer:
        assert not writer.complete
        assert writer.columns == COLUMNS and writer.metrics == METRICS
    with h5py.File(tmp_path / "s.h5", "r") as h5file:
        assert metrics.decode(h5file.attrs["metrics"]) == COLUMNS
        assert set(h5file) == {"xcoordinates", "ycoordinates", "done", "dir_file", *METRICS}
        assert h5file["xcoordinates"].dtype == h5file["ycoordinates"].dtype == np.float64
        np.testing.assert_array_equal(h5file["xcoordinates"][()], GRID.x)
        np.testing.assert_array_equal(h5file["ycoordinates"][()], GRID.y)
        for name in METRICS:
            assert h5file[name].dtype == np.float64 and h5file[name].shape == (3, 4)
            assert np.isnan(h5file[name][()]).all()
        assert h5file["done"].dtype == bool and h5file["done"].shape == (3, 4)
        assert not h5file["done"][()].any()
        assert h5file["dir_file"][()].decode() == "/runs/a/directions.h5"


@pytest.mark.parametrize("grid", [GRID, Grid(np.linspace(0.0, 2.0, 5), None)], ids=["2d", "1d"])
def test_element_i_j_holds_the_point_x_i_y_j(tmp_path, grid):
    def loss(a, b):
        return 10.0 * a + b  # a different value at every point, also after swapping x and y

    order = np.random.default_rng(0).permutation(grid.size)
    with surface_file.create_surface(tmp_path / "s.h5", grid, COLUMNS, ATTRIBUTES) as writer:
        for chunk in np.array_split(order, 3):  # chunks arrive in any order
            values = {name: [loss(*grid.coordinates(int(k))) for k in chunk] for name in METRICS}
            writer.record(chunk.tolist(), values)
        assert writer.complete
    surface = surface_file.read_surface(tmp_path / "s.h5")
    y = np.zeros(1) if grid.y is None else grid.y
    expected = np.add.outer(10.0 * grid.x, y).reshape(grid.shape)
    for name in METRICS:
        np.testing.assert_array_equal(surface.metrics[name], expected)
    assert surface.done.shape == grid.shape and surface.done.all()
    assert surface.y is None if grid.y is None else surface.y.tolist() == grid.y.tolist()


def test_nan_inf_and_zero_are_results_and_a_reopened_writer_resumes(tmp_path):
    path = tmp_path / "s.h5"
    values = {name: [np.inf, np.nan, 0.0] for name in METRICS}
    with surface_file.create_surface(path, GRID, COLUMNS, ATTRIBUTES) as writer:
        writer.record([0, 6, 11], values)
    surface = surface_file.read_surface(path)
    assert np.flatnonzero(surface.done).tolist() == [0, 6, 11]
    loss = surface.metrics["test_loss"].reshape(-1)
    assert loss[0] == np.inf and np.isnan(loss[6]) and loss[11] == 0.0
    assert np.isnan(np.delete(loss, [0, 6, 11])).all()  # the rest: not computed yet
    with surface_file.SurfaceWriter(path) as writer:  # resume: the mask is read back from the file
        assert np.flatnonzero(writer.done).tolist() == [0, 6, 11] and not writer.complete
        rest = [k for k in range(12) if k not in (0, 6, 11)]
        writer.record(rest, {name: [1.0] * len(rest) for name in METRICS})
        assert writer.complete
    assert surface_file.read_surface(path).metrics["train_acc"].reshape(-1)[0] == np.inf


def test_values_reach_another_process_before_their_done_flags(tmp_path, monkeypatch):
    path = tmp_path / "s.h5"
    writer = surface_file.create_surface(path, GRID, COLUMNS, ATTRIBUTES)
    seen_before_flags = []
    original_setitem = h5py.Dataset.__setitem__

    def watching(dataset, key, value):  # what a reader sees when the first flag is written
        if dataset.name == "/done" and not seen_before_flags:
            seen_before_flags.extend(read_in_another_process(path))
        original_setitem(dataset, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", watching)
    writer.record([1, 10], {name: [5.0, 6.0] for name in METRICS})
    assert not seen_before_flags  # recorded in memory; the file follows at the next flush
    writer.flush()
    monkeypatch.undo()
    nan = float("nan")
    values_then = [[nan, 5.0, nan, nan], [nan, nan, nan, nan], [nan, nan, 6.0, nan]]
    assert seen_before_flags[0] == f"{values_then} {np.zeros((3, 4), bool).tolist()}"
    # After the flush, a reader sees the flags; the file stays claimed by the writer.
    lines = read_in_another_process(path)
    flags_now = np.isin(np.arange(12), [1, 10]).reshape(3, 4).tolist()
    assert lines[0] == f"{values_then} {flags_now}"
    assert lines[1].startswith(f"OutputError output file {path} is open for writing")
    writer.close()
    assert read_in_another_process(path) == [lines[0]]


def test_attributes_trajectory_and_weight_statistics_round_trip(tmp_path):
    path = tmp_path / "s.h5"
    surface_file.create_surface(path, GRID, COLUMNS, ATTRIBUTES, TRAJECTORY, WEIGHTS).close()
    surface = surface_file.read_surface(path)
    attributes = surface.attributes
    assert {key: attributes[key] for key in ATTRIBUTES} == ATTRIBUTES
    assert attributes["format_version"] == surface_file.FORMAT_VERSION == 2
    assert type(attributes["format_version"]) is int
    assert attributes["lsurf_version"] == lsurf.__version__
    created = datetime.datetime.fromisoformat(attributes["created"])
    assert abs(datetime.datetime.now(datetime.UTC) - created) < datetime.timedelta(minutes=1)
    assert surface_file.read_surface_attributes(path).keys() == attributes.keys()
    assert_same_trajectory(surface.trajectory, TRAJECTORY)
    assert_same_weights(surface.weights, WEIGHTS)
    surface_file.create_surface(path, GRID, COLUMNS, ATTRIBUTES).close()  # replaced: neither left
    assert (
        surface_file.read_surface(path).trajectory is None
        and surface_file.read_surface(path).weights is None
    )


def test_the_final_name_appears_only_complete(tmp_path, monkeypatch):
    path = tmp_path / "out" / "s.h5"
    path.parent.mkdir()
    (path.parent / ".s.h5.999.tmp").write_bytes(b"left by a run killed mid-creation")
    during_build = []
    original = weight_file.write_weight_statistics

    def watching(group, statistics):
        during_build.append((path.exists(), sorted(p.name for p in path.parent.iterdir())))
        original(group, statistics)

    monkeypatch.setattr(surface_file, "write_weight_statistics", watching)
    surface_file.create_surface(path, GRID, COLUMNS, ATTRIBUTES, weights=WEIGHTS).close()
    [(existed, names)] = during_build
    assert not existed and len(names) == 1  # the stale temporary removed, ours alone
    assert re.fullmatch(rf"\.s\.h5\.{os.getpid()}\.[0-9a-f]{{8}}\.tmp", names[0])
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.h5"]


def test_a_failed_creation_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "s.h5"
    surface_file.create_surface(path, GRID, COLUMNS, {"config": "old"}).close()

    def no_rename(source, target):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic.os, "replace", no_rename)
    with pytest.raises(OutputError) as caught:
        surface_file.create_surface(path, GRID, COLUMNS, {"config": "new"})
    assert str(caught.value) == (
        f"cannot write {path} (Permission denied); choose an output folder you can write to"
    )
    monkeypatch.undo()

    def broken(group, statistics):
        raise RuntimeError("disk vanished")

    monkeypatch.setattr(weight_file, "write_weight_statistics", broken)
    with pytest.raises(RuntimeError):
        weight_file.write_weight_file(tmp_path / "w.h5", {"a": WEIGHTS})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]
    assert surface_file.read_surface_attributes(path)["config"] == "old"


def write_text(path):
    path.write_text("not hdf5\n")


def write_foreign_hdf5(path):
    with h5py.File(path, "w") as h5file:
        h5file["data"] = np.zeros(3)


@pytest.mark.parametrize(
    ("reader", "make", "message"),
    [
        (surface_file.read_surface, None, "surface file not found: {path}"),
        (
            surface_file.read_surface,
            write_text,
            "surface file {path} is not a readable HDF5 file (",
        ),
        (
            surface_file.read_surface,
            write_foreign_hdf5,
            "{path} is an HDF5 file but not a surface file",
        ),
        (surface_file.read_surface_attributes, None, "output file not found: {path}"),
        (
            surface_file.read_surface_attributes,
            write_foreign_hdf5,
            "output {path} exists and is not",
        ),
        (
            direction_file.read_directions,
            write_text,
            "direction file {path} is not a readable HDF5",
        ),
        (
            direction_file.read_directions,
            write_foreign_hdf5,
            "direction file {path} lacks xdirection",
        ),
    ],
)
def test_unusable_files_raise_one_line_lsurf_errors(tmp_path, reader, make, message):
    path = tmp_path / "file.h5"
    if make is not None:
        make(path)
    with pytest.raises(LsurfError) as caught:
        reader(path)
    assert str(caught.value).startswith(message.format(path=path))
    assert "\n" not in str(caught.value)


def test_a_surface_is_no_direction_file_and_a_file_is_no_output_folder(tmp_path):
    surface_file.create_surface(tmp_path / "s.h5", GRID, COLUMNS, ATTRIBUTES).close()
    with pytest.raises(OutputError, match="lacks xdirection"):
        direction_file.read_directions(tmp_path / "s.h5")
    with pytest.raises(OutputError, match=r"^cannot write .*; choose an output folder") as caught:
        surface_file.create_surface(tmp_path / "s.h5" / "nested.h5", GRID, COLUMNS, ATTRIBUTES)
    assert "\n" not in str(caught.value)


def test_a_metric_unknown_to_the_table_is_stored_read_and_resumed(tmp_path):
    path = tmp_path / "s.h5"
    stored = [*COLUMNS[:2], metrics.Column("train", MAX_EIGENVALUE)]
    with surface_file.create_surface(path, GRID, stored, ATTRIBUTES) as writer:
        writer.record(
            [0, 5], {"train_loss": [1.0, 2.0], "train_acc": [50, 60], "train_top_eig": [7, 8]}
        )
    with surface_file.SurfaceWriter(path) as writer:
        assert writer.columns == stored
        writer.record([11], {"train_loss": [3.0], "train_acc": [70], "train_top_eig": [9.5]})
    surface = surface_file.read_surface(path)
    assert (
        list(surface.metrics)
        == list(surface.columns)
        == [
            "train_loss",
            "train_acc",
            "train_top_eig",
        ]
    )
    assert surface.columns["train_top_eig"] == stored[2]
    assert surface.columns["train_top_eig"].label == "train largest Hessian eigenvalue"
    eigenvalues = surface.metrics["train_top_eig"].reshape(-1)
    assert eigenvalues[[0, 5, 11]].tolist() == [7.0, 8.0, 9.5]


def as_format_1(path):
    """The file as lsurf 0.1 wrote it: no `metrics` attribute; a dataset that is no metric."""
    with h5py.File(path, "r+") as h5file:
        del h5file.attrs["metrics"]
        h5file.attrs["format_version"] = 1
        h5file["notes"] = np.zeros(3)


def test_a_format_1_file_is_read_and_resumed_by_its_dataset_names(tmp_path):
    path = tmp_path / "s.h5"
    with surface_file.create_surface(path, GRID, COLUMNS, ATTRIBUTES) as writer:
        writer.record([0], {name: [1.0] for name in METRICS})
    as_format_1(path)
    surface = surface_file.read_surface(path)
    assert sorted(surface.columns) == sorted(METRICS) and sorted(surface.metrics) == sorted(METRICS)
    assert surface.columns["test_acc"] == metrics.Column("test", metrics.ACCURACY)
    with surface_file.SurfaceWriter(path) as writer:
        assert sorted(writer.metrics) == sorted(METRICS)
        writer.record([1], {name: [2.0] for name in METRICS})
    assert surface_file.read_surface(path).done.reshape(-1)[:3].tolist() == [True, True, False]


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ("not json", "is damaged: the metrics attribute is not JSON"),
        ('[{"split": "train"}]', "is damaged: the metrics attribute holds a malformed column"),
        (
            metrics.encode([metrics.Column("val", metrics.LOSS)]),
            "is damaged: it lists val_loss but holds no such dataset",
        ),
    ],
)
def test_a_damaged_metrics_attribute_is_one_line(tmp_path, stored, message):
    path = tmp_path / "s.h5"
    surface_file.create_surface(path, GRID, COLUMNS, ATTRIBUTES).close()
    with h5py.File(path, "r+") as h5file:
        h5file.attrs["metrics"] = stored
    for reader in (surface_file.read_surface, surface_file.SurfaceWriter):
        with pytest.raises(OutputError) as caught:
            reader(path)
        assert str(caught.value).startswith(f"surface file {path} {message}")
        assert str(caught.value).endswith("; rerun the sweep") and "\n" not in str(caught.value)
    h5py.File(path, "r+").close()  # the writer that refused the file let go of it


def test_batched_writes_land_every_value_in_place_on_long_1d_and_2d_grids(tmp_path):
    """Rows recorded in any order, far apart and in runs, across many flushes."""
    rng = np.random.default_rng(1)
    for grid in (Grid(np.arange(10_000.0), None), Grid(np.arange(300.0), np.arange(7.0))):
        path = tmp_path / f"s{grid.size}.h5"
        order = rng.permutation(grid.size)
        with surface_file.create_surface(path, grid, COLUMNS, ATTRIBUTES) as writer:
            writer.FLUSH_SECONDS = 0.0  # a write at every record
            for chunk in np.array_split(order, 37):
                writer.record(chunk, {name: chunk * 2.0 for name in METRICS})
        surface = surface_file.read_surface(path)
        assert surface.done.all()
        for name in METRICS:
            np.testing.assert_array_equal(
                surface.metrics[name].reshape(-1), 2.0 * np.arange(grid.size)
            )


def test_records_wait_in_memory_until_the_flush_is_due(tmp_path):
    path = tmp_path / "s.h5"
    with surface_file.create_surface(path, GRID, COLUMNS, ATTRIBUTES) as writer:
        writer.FLUSH_SECONDS = 3600.0
        writer.record([3], {name: [1.0] for name in METRICS})
        assert writer.done.reshape(-1)[3]  # the run's own view: done
        nothing = str(np.zeros((3, 4), bool).tolist())
        assert read_in_another_process(path)[0].endswith(nothing)  # the file's: not yet
        writer.flush()
        assert not read_in_another_process(path)[0].endswith(nothing)
        writer.record([4], {name: [2.0] for name in METRICS})
    # Closing flushes what is left.
    assert np.flatnonzero(surface_file.read_surface(path).done).tolist() == [3, 4]
