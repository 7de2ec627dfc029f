"""`lsurf topology` on surface files (lsurf.files.topology, lsurf.plot.topology): the group it
writes beside untouched values, what it and `lsurf info` print, the figure, 1D files, and bad
input in one line with the file left as it was."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict

import h5py
import numpy as np
import pytest
from surface_helpers import write_surface_by_hand

from lsurf.cli import main
from lsurf.files.topology import read_topology_file
from lsurf.metrics import ACCURACY, LOSS
from lsurf.topology import analyse

X = np.linspace(-2.5, 2.5, 51)
Y = np.linspace(-2.0, 2.0, 41)
PNG = b"\x89PNG\r\n\x1a\n"
# Holds a file open for writing, as a running sweep does, until killed.
HOLD = (
    "import h5py, sys, time; f = h5py.File(sys.argv[1], 'r+'); print('open', flush=True); "
    "time.sleep(60)"
)


def two_wells():
    """Wells at (-1, 0), depth 1, and (1, 0), depth 0.6, on a gentle bowl."""
    a, b = np.meshgrid(X, Y, indexing="ij")
    bowl = 0.02 * (a**2 + b**2)
    deep = np.exp(-((a + 1) ** 2 + b**2) / 0.5)
    shallow = 0.6 * np.exp(-((a - 1) ** 2 + b**2) / 0.5)
    return 2.0 + bowl - deep - shallow


@pytest.fixture
def surface_file(tmp_path):
    loss = two_wells()
    accuracy = 100.0 - 20.0 * loss
    done = np.ones(loss.shape, bool)
    done[0, 0] = False  # a point not done: left out, never in a basin
    columns = {
        "train_loss": ("train", asdict(LOSS), loss),
        "train_acc": ("train", asdict(ACCURACY), accuracy),
    }
    return write_surface_by_hand(tmp_path / "surface.h5", X, Y, columns, done)


def datasets(path):
    """Every dataset outside the topology group, as bytes: what must never change."""
    found = {}
    with h5py.File(path, "r") as h5file:
        for name, item in h5file.items():
            if isinstance(item, h5py.Dataset):
                value = item[()]
                found[name] = value if isinstance(value, bytes) else value.tobytes()
    return found


def test_the_two_wells_give_two_basins_written_beside_untouched_values(
    surface_file, tmp_path, capsys
):
    before = datasets(surface_file)
    assert main(["topology", str(surface_file), "--relative", "0.05"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("topology train_loss: 2 basins at threshold ")
    assert (
        "(5% of the range), 2 local minima, 1 saddles (4-neighbour grid, 2090/2091 points)"
        in (out[0])
    )
    assert out[2].startswith("  basin 1: minimum ") and "at (-1, 0)" in out[2]
    assert "no saddle (the lowest of its part)" in out[2]
    assert out[3].startswith("    train_acc      mean ")  # the other column, per basin
    assert "at (1, 0)" in out[4] and "to the saddle at (" in out[4]
    assert datasets(surface_file) == before  # the values, bit for bit
    stored = read_topology_file(surface_file)["train_loss"]
    loss = two_wells()
    loss[0, 0] = np.nan  # not done
    expected = analyse(loss, float(stored.attributes["threshold"]))
    np.testing.assert_array_equal(stored.basin, expected.basin)
    np.testing.assert_array_equal(stored.pairs[:, 0], expected.birth)
    assert stored.basin[0, 0] == -1 and set(np.unique(stored.basin)) == {-1, 0, 1}
    share = stored.basins.share
    assert share.sum() == pytest.approx(2090 / 2091) and share[0] > share[1]
    np.testing.assert_allclose(stored.basins.depth[1], expected.persistence[1])
    figure = tmp_path / "surface.topology.train_loss.png"
    assert figure.read_bytes().startswith(PNG)
    # lsurf info shows the same lines; a second analysis of the column replaces the first.
    assert main(["info", str(surface_file)]) == 0
    info = capsys.readouterr().out.splitlines()
    assert out[0] in info and out[4] in info
    assert main(["topology", str(surface_file), "--relative", "0.9", "--stats", ""]) == 0
    assert " 1 basins at threshold " in capsys.readouterr().out
    assert list(read_topology_file(surface_file)) == ["train_loss"]
    assert datasets(surface_file) == before


def test_a_1d_curve_is_analysed_into_intervals(tmp_path, capsys):
    x = np.linspace(-1, 1, 9)
    curve = np.array([3.0, 1.0, 2.0, 4.0, 0.0, 5.0, 2.5, 3.0, 3.5])
    path = write_surface_by_hand(
        tmp_path / "line.h5", x, None, {"test_loss": ("test", asdict(LOSS), curve)}
    )
    assert main(["topology", str(path), "--threshold", "1"]) == 0
    out = capsys.readouterr().out
    assert "topology test_loss: 3 basins at threshold 1, 3 local minima, 2 saddles" in out
    assert "basin 2: minimum 1 at x=-0.75, 33.3% of the grid, depth 3 to the saddle at x=-0.25" in (
        out
    )
    assert read_topology_file(path)["test_loss"].basin.tolist() == [1, 1, 1, 0, 0, 0, 2, 2, 2]


def test_bad_input_is_one_line_exit_2_and_the_file_untouched(surface_file, capsys):
    before = surface_file.read_bytes()
    cases = [
        (
            ["--metric", "test_loss"],
            "has no column 'test_loss'; its columns: train_loss, train_acc",
        ),
        (["--stats", "eig_ratio"], "has no column 'eig_ratio'"),
        (["--threshold", "-1"], "--threshold must be a number of 0 or more, got -1.0"),
        (["--threshold", "1", "--relative", "0.1"], "give --threshold or --relative, not both"),
    ]
    for extra, message in cases:
        assert main(["topology", str(surface_file), *extra]) == 2
        error = capsys.readouterr().err
        assert error.startswith("lsurf: error: ") and message in error, error
        assert error.count("\n") == 1
    assert surface_file.read_bytes() == before
    # A file another process holds open for writing (a running sweep) is refused. (Opening it
    # for writing sets a flag in its header, so from here the datasets are compared.)
    values = datasets(surface_file)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(surface_file)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        assert main(["topology", str(surface_file)]) == 2
    finally:
        holder.kill()
        holder.wait()
    assert "is open for writing in another process" in capsys.readouterr().err
    assert datasets(surface_file) == values and read_topology_file(surface_file) == {}
