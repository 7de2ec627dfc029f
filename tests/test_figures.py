"""lsurf.plot(...) and lsurf.plot_html(...): the figures `lsurf plot` writes, returned to a
Python caller (a notebook), drawn by the same functions, with no file unless asked."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict

import numpy as np
import plotly.graph_objects as go
import pytest
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure
from surface_helpers import write_surface_by_hand

import lsurf
from lsurf.cli import main
from lsurf.errors import LsurfError
from lsurf.files.surface import read_surface
from lsurf.metrics import ACCURACY, LOSS


@pytest.fixture
def plane(tmp_path):
    x, y = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
    loss = 1.0 + x[:, None] ** 2 + 2 * y[None, :] ** 2  # (5, 4), its minimum at the centre
    columns = {
        "train_loss": ("train", asdict(LOSS), loss),
        "train_acc": ("train", asdict(ACCURACY), 100 - 10 * loss),
    }
    return write_surface_by_hand(tmp_path / "plane.h5", x, y, columns)


@pytest.fixture
def line(tmp_path):
    x = np.linspace(-1, 1, 6)
    columns = {"train_loss": ("train", asdict(LOSS), 1.0 + x**2)}
    return write_surface_by_hand(tmp_path / "line.h5", x, None, columns)


def test_the_package_is_callable_whichever_import_came_first():
    # A fresh interpreter: `import lsurf` alone, then a submodule import, must both leave
    # lsurf.plot callable, and the plot package must not pull in torch.
    code = (
        "import sys, lsurf; assert callable(lsurf.plot); import lsurf.plot.planes; "
        "assert callable(lsurf.plot) and lsurf.plot is sys.modules['lsurf.plot']; "
        "assert 'torch' not in sys.modules; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout == "ok\n", result.stderr
    assert {"plot", "plot_html"} <= set(lsurf.__all__)


def test_a_contour_figure_comes_back_and_nothing_is_written(plane, tmp_path):
    before = set(tmp_path.iterdir())
    figure = lsurf.plot(read_surface(plane), kind="contour")
    assert isinstance(figure, Figure)
    assert set(tmp_path.iterdir()) == before  # no file unless asked
    contours = [c for c in figure.axes[0].get_children() if isinstance(c, ContourSet)]
    assert contours, "the contour kind draws contour lines"
    assert figure.axes[0].get_xlabel() == "α (direction 1)"


def test_the_returned_figure_is_the_one_the_cli_writes(plane, tmp_path):
    saved = tmp_path / "mine.png"
    lsurf.plot(plane, kind="heatmap", save=saved)
    out = tmp_path / "cli"
    assert main(["plot", str(plane), "--kinds", "heatmap", "--out", str(out)]) == 0
    assert saved.read_bytes() == (out / "plane_train_loss_heatmap.png").read_bytes()


def test_the_default_kind_follows_the_dimension_and_metric_picks_the_column(plane, line):
    assert lsurf.plot(line).axes[0].get_lines(), "1D: the curve"
    figure = lsurf.plot(plane, metric="train_acc", kind="filled")
    assert "accuracy" in figure.axes[-1].get_ylabel().lower()  # the colorbar names it


@pytest.mark.parametrize(
    ("surface", "keywords", "message"),
    [
        ("plane", {"kind": "pie"}, "kind='pie' is not a figure lsurf draws; valid: contour, "),
        ("line", {"kind": "contour"}, "kind='contour' needs a 2D surface; this one is 1D"),
        ("plane", {"kind": "curve"}, "kind='curve' draws 1D surfaces; this one is 2D"),
        ("plane", {"metric": "test_loss"}, "has no metric 'test_loss'; available: train_acc"),
        ("plane", {"save": "figure.html"}, "name a png, pdf, svg file"),
    ],
)
def test_bad_input_is_one_line_naming_the_valid_choices(
    surface, keywords, message, request, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LsurfError) as raised:
        lsurf.plot(request.getfixturevalue(surface), **keywords)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "figure.html").exists()


def test_plot_html_returns_the_3d_surface_and_the_curve(plane, line, tmp_path):
    surface = lsurf.plot_html(plane)
    assert isinstance(surface, go.Figure) and surface.data[0].type == "surface"
    np.testing.assert_allclose(
        np.asarray(surface.data[0].z).T, read_surface(plane).metrics["train_loss"]
    )
    curve = lsurf.plot_html(line, save=tmp_path / "line.html")
    assert [trace.type for trace in curve.data] == ["scatter"]
    assert (tmp_path / "line.html").read_text().startswith("<!doctype html>")
    with pytest.raises(LsurfError, match="valid: surface3d, curve"):
        lsurf.plot_html(plane, kind="contour")


def test_a_bad_keyword_says_so(plane):
    with pytest.raises(TypeError):
        lsurf.plot(plane, colour="red")


def test_the_notebooks_page_runs_as_written(tmp_path, monkeypatch, capsys):
    """docs/notebooks.md: its Python block runs, writes only what `save=` named, and prints
    the repr the page shows (`…` stands for what differs from run to run)."""
    import re

    from doc_commands import ROOT, blocks

    page = ROOT / "docs" / "notebooks.md"
    code = [block for block in blocks(page) if block.tag == "python"]
    shown = [block for block in blocks(page) if block.tag == "text"]
    assert len(code) == 1 and len(shown) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "notebooks_page"}
    exec(compile("\n".join(code[0].lines), f"{page}:{code[0].line}", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    patterns = [re.escape(line).replace("…", ".+") for line in shown[0].lines]
    assert len(printed) == len(patterns)
    for line, pattern in zip(printed, patterns, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["heatmap.png"]
    assert isinstance(namespace["contour"], Figure)
    assert isinstance(namespace["page"], go.Figure)
