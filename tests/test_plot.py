"""lsurf.plot: figures read back as images or as the matplotlib objects drawn, and exports
read back with the library that wrote them. Surface files are made with the real store."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import h5py
import matplotlib.image
import numpy as np
import pytest
import yaml
from matplotlib import colormaps
from matplotlib.colors import to_rgb
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from surface_helpers import (
    HESSIAN_SECTION,
    MAX_EIGENVALUE_ROW,
    curvature_values,
    write_curvature_surface,
    write_surface_by_hand,
)

from lsurf.cli import main
from lsurf.errors import LsurfError
from lsurf.files.surface import create_surface
from lsurf.files.trajectory import Trajectory
from lsurf.grid import Axis, Grid
from lsurf.metrics import ACCURACY, EIG_PRODUCTS, LOSS, MAX_EIG, MAX_EIG_RESIDUAL, columns
from lsurf.plot import PlotOptions, parse_levels, parse_options, plot_files
from lsurf.plot.curves import draw_curves
from lsurf.plot.planes import NOT_COMPUTED_COLOR, NOT_FINITE_COLOR, draw_plane
from lsurf.plot.view import NOT_COMPUTED, NOT_FINITE, SHOWN, load_panels, shared_scale

VIRIDIS = colormaps["viridis"]


# ---------------------------------------------------------------------------- surface files


def sweep_config(x: Axis, y: Axis | None, kind: str = "random", model: str = "resnet56") -> str:
    """The resolved config YAML a sweep stores (the keys `lsurf.schema.to_yaml` writes)."""
    config = {
        "model": {"name": model, "checkpoint": "/runs/a/final.pt", "num_classes": 10},
        "data": {"root": "/data", "splits": ["train", "test"], "batch_size": 256, "subset": None},
        "grid": {"x": x.spec, "y": None if y is None else y.spec},
        "output": "/runs/a/surface.h5",
        "directions": {
            "kind": kind,
            "norm": "filter" if kind == "random" else "none",
            "ignore": "biasbn",
            "seed": 0,
            "file": None,
            "target": "/runs/b/final.pt" if kind == "target" else None,
        },
        "evaluation": {"device": "auto", "precision": "fp32", "channels_last": True},
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_surface(
    path: Path,
    x: Axis,
    y: Axis | None,
    loss: Callable[[np.ndarray, np.ndarray], np.ndarray],
    done: np.ndarray | None = None,
    trajectory: Trajectory | None = None,
    kind: str = "random",
) -> Path:
    """A surface file whose train loss is loss(a, b), test loss 1.2× that, accuracies beside;
    only the points where `done` is true are recorded, through the sweep's own writer."""
    grid = Grid.from_axes(x, y)
    a, b = np.meshgrid(grid.x, grid.y, indexing="ij") if y else (grid.x, np.zeros(grid.shape))
    train = loss(a, b)
    values = {
        "train_loss": train,
        "test_loss": 1.2 * train,
        "train_acc": 100 * np.exp(-train),
        "test_acc": 90 * np.exp(-train),
    }
    attributes = {"config": sweep_config(x, y, kind), "direction_file": "/runs/a/d.h5"}
    done = np.ones(grid.shape, bool) if done is None else done
    indices = np.flatnonzero(done.reshape(-1))
    with create_surface(path, grid, columns(["train", "test"]), attributes, trajectory) as out:
        out.record(indices, {name: v.reshape(-1)[indices] for name, v in values.items()})
    return path


def bowl(x0: float = 0.0, y0: float = 0.0) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda a, b: 0.5 + 4 * (a - x0) ** 2 + 9 * (b - y0) ** 2


SQUARE = (Axis(-1, 1, 21), Axis(-1, 1, 21))
NON_SQUARE = (Axis(-1, 1, 41), Axis(-0.5, 0.5, 21))  # x and y steps 0.05


# ---------------------------------------------------------------------------- image helpers


def render(figure: Figure, path: Path) -> np.ndarray:
    """Save as PNG (at the figure's dpi, so data → pixel transforms hold) and read back RGB."""
    figure.savefig(path)
    return matplotlib.image.imread(path)[..., :3]


def axes_pixels(image: np.ndarray, ax) -> np.ndarray:
    """The pixels inside an axes box (image rows run top-down, display y bottom-up)."""
    box = ax.get_window_extent()
    height = image.shape[0]
    rows = slice(int(height - box.y1) + 2, int(height - box.y0) - 2)
    return image[rows, int(box.x0) + 2 : int(box.x1) - 2]


def pixel_of(ax, image: np.ndarray, a: float, b: float) -> tuple[int, int]:
    """(row, column) of the data point (a, b) in the saved image."""
    column, y = ax.transData.transform((a, b))
    return int(round(image.shape[0] - y)), int(round(column))


def saturated_fraction(pixels: np.ndarray) -> float:
    """Share of colored pixels: white, grey and black (axes, text, panes) have none."""
    return float(np.mean(pixels.max(axis=-1) - pixels.min(axis=-1) > 0.15))


def distinct_colors(pixels: np.ndarray) -> int:
    return len(np.unique((pixels.reshape(-1, 3) * 255).round().astype(np.uint8), axis=0))


def panels_of(figure: Figure) -> list:
    """The data axes of a figure: not colorbars, not twins."""
    return [ax for ax in figure.axes if ax.get_label() != "<colorbar>" and ax.get_xlabel()]


# ---------------------------------------------------------------------------- tests


def test_import_and_plot_need_neither_torch_nor_mpi(tmp_path):
    surface = write_surface(tmp_path / "s.h5", *SQUARE, bowl())
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import lsurf.plot
        from lsurf.plot import parse_options, plot_files
        plot_files([Path({str(surface)!r})], parse_options(formats="png,vtk,html"))
        print(sorted(name for name in ("torch", "mpi4py") if name in sys.modules))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("axes", [SQUARE, NON_SQUARE], ids=["square", "non-square"])
@pytest.mark.parametrize("kind", ["contour", "filled", "heatmap", "surface3d"])
def test_every_2d_kind_draws_the_data(tmp_path, axes, kind):
    surface = write_surface(tmp_path / "s.h5", *axes, bowl(0.2, 0.1))
    panels = load_panels([surface], PlotOptions())
    figure = draw_plane(kind, panels, shared_scale(panels, PlotOptions()))
    image = render(figure, tmp_path / f"{kind}.png")
    inside = axes_pixels(image, panels_of(figure)[0])
    # Lines cover a few percent of the box; filled kinds nearly all of it; the 3D surface
    # (the reference's is blank on current matplotlib) a good part of its box.
    least = {"contour": 0.03, "filled": 0.9, "heatmap": 0.9, "surface3d": 0.15}[kind]
    assert saturated_fraction(inside) > least
    assert distinct_colors(inside) > 20


def test_the_minimum_is_drawn_where_it_is_on_a_non_square_grid(tmp_path):
    x0, y0 = 0.3, -0.2  # a grid point, off centre, on a grid wider than tall
    surface = write_surface(tmp_path / "s.h5", *NON_SQUARE, bowl(x0, y0))
    panels = load_panels([surface], PlotOptions())
    scale = shared_scale(panels, PlotOptions())
    for kind in ("heatmap", "filled"):
        figure = draw_plane(kind, panels, scale)
        image = render(figure, tmp_path / f"{kind}.png")
        ax = panels_of(figure)[0]
        inside = axes_pixels(image, ax)
        # The pixels in the colormap's darkest color (the lowest values) surround (x0, y0).
        darkest = np.linalg.norm(inside - VIRIDIS(0.0)[:3], axis=-1)
        rows, columns = np.nonzero(darkest < darkest.min() + 0.05)
        box = ax.get_window_extent()
        top, left = int(image.shape[0] - box.y1) + 2, int(box.x0) + 2
        found = (rows.mean() + top, columns.mean() + left)
        expected = pixel_of(ax, image, x0, y0)
        cell = abs(pixel_of(ax, image, x0 + 0.05, y0)[1] - expected[1])  # one grid step
        assert np.hypot(found[0] - expected[0], found[1] - expected[1]) < 1.5 * cell, kind


def test_a_partial_surface_shows_unfinished_points_as_not_computed(tmp_path):
    x, y = NON_SQUARE
    done = np.zeros((41, 21), bool)
    done[:20] = True  # x < 0 finished, the rest still to do
    surface = write_surface(tmp_path / "s.h5", x, y, bowl(), done=done)
    with h5py.File(surface, "r+") as h5file:  # a finished point whose loss overflowed
        h5file["train_loss"][5, 10] = np.inf
    panels = load_panels([surface], PlotOptions())
    scale = shared_scale(panels, PlotOptions())
    grey, pink = np.array(to_rgb(NOT_COMPUTED_COLOR)), np.array(to_rgb(NOT_FINITE_COLOR))
    colormap_colors = VIRIDIS(np.linspace(0, 1, 256))[:, :3]
    for kind in ("heatmap", "filled", "contour"):
        figure = draw_plane(kind, panels, scale)
        image = render(figure, tmp_path / f"{kind}.png")
        ax = panels_of(figure)[0]
        assert ax.get_title() == "420/861 points done; 1 point inf or NaN"
        for a in (0.3, 0.5, 0.8):
            for b in (-0.3, 0.0, 0.3):
                pixel = image[pixel_of(ax, image, a, b)]
                assert np.allclose(pixel, grey, atol=0.02), (kind, a, b, pixel)
                assert np.min(np.linalg.norm(colormap_colors - pixel, axis=1)) > 0.1
        if kind == "heatmap":  # the inf point is shown as such, not as a color of the map
            assert np.allclose(image[pixel_of(ax, image, x.coordinates()[5], 0.0)], pink, 0.02)
        labels = [text.get_text() for text in figure.legends[0].get_texts()]
        assert labels == ["not computed", "inf or NaN"]


def test_a_file_still_being_written_can_be_plotted(tmp_path):
    surface = write_surface(tmp_path / "s.h5", *SQUARE, bowl(), done=np.zeros((21, 21), bool))
    # A sweep's writer holds the file open in another process while we plot it.
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from lsurf.files.surface import SurfaceWriter
            with SurfaceWriter(Path({str(surface)!r})) as out:
                out.record(range(100), {{name: [1.0] * 100 for name in out.metrics}})
                print("recorded", flush=True)
                sys.stdin.readline()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "recorded"
        written = plot_files([surface], parse_options(out=tmp_path / "figures"))
        assert [path.name for path in written] == [
            f"s_train_loss_{kind}.png" for kind in ("contour", "filled", "heatmap", "surface3d")
        ]
    finally:
        writer.communicate("\n", timeout=30)
    assert writer.returncode == 0


def test_vtk_export_reads_back_with_holes_log_and_clipping(tmp_path):
    import meshio

    x, y = Axis(-1, 1, 5), Axis(0, 1, 3)
    done = np.ones((5, 3), bool)
    done[4, 2] = False
    surface = write_surface(tmp_path / "s.h5", x, y, bowl(), done=done)
    grid_x, grid_y = np.meshgrid(x.coordinates(), y.coordinates(), indexing="ij")
    loss = bowl()(grid_x, grid_y)

    [plain] = plot_files([surface], parse_options(formats="vtk"))
    mesh = meshio.read(plain)
    assert plain.name == "s_train_loss.vtu" and len(mesh.points) == 14  # 15 points, 1 undone
    assert np.allclose(mesh.points[:, :2], np.stack([grid_x[done], grid_y[done]], axis=1))
    assert np.allclose(mesh.points[:, 2], loss[done])
    assert np.allclose(mesh.point_data["train_loss"], loss[done])
    assert len(mesh.cells_dict["quad"]) == 8 - 1  # the quad touching the hole is left out

    [shaped] = plot_files([surface], parse_options(formats="vtk", log=True, zmax=4.0))
    mesh = meshio.read(shaped)
    shown = np.log10(np.minimum(loss[done], 4.0))
    assert shaped.name == "s_train_loss_log.vtu" and loss.max() > 4.0
    assert np.allclose(mesh.points[:, 2], shown)
    assert np.allclose(mesh.point_data["log10_train_loss"], shown)
    assert np.allclose(mesh.point_data["train_loss_stored"], loss[done])


def test_html_export_is_self_contained_and_holds_the_surface(tmp_path):
    x, y = Axis(-1, 1, 5), Axis(0, 1, 3)
    done = np.ones((5, 3), bool)
    done[0, 0] = False
    surface = write_surface(tmp_path / "s.h5", x, y, bowl(), done=done)
    [page] = plot_files([surface], parse_options(formats="html"))
    html = page.read_text()
    assert page.name == "s_train_loss.html" and "plotly.js v" in html  # the library, inline
    assert '<script src="http' not in html and "cdn.plot.ly" not in html.split("/*")[0]
    call = html[html.index("Plotly.newPlot(") + len("Plotly.newPlot(") :]
    decoder = json.JSONDecoder()
    _, end = decoder.raw_decode(call.lstrip())  # the div id
    rest = call.lstrip()[end:].lstrip(", \n")
    [trace], _ = decoder.raw_decode(rest)
    z = np.frombuffer(base64.b64decode(trace["z"]["bdata"]), trace["z"]["dtype"]).reshape(3, 5)
    grid_x, grid_y = np.meshgrid(x.coordinates(), y.coordinates(), indexing="ij")
    expected = np.where(done, bowl()(grid_x, grid_y), np.nan).T  # rows along y for plotly
    assert np.allclose(z, expected, equal_nan=True) and np.isnan(z[0, 0])


def test_compared_surfaces_share_one_color_scale_and_the_same_levels(tmp_path, capsys):
    sharp = write_surface(tmp_path / "sharp.h5", *SQUARE, lambda a, b: 0.2 + 8 * (a**2 + b**2))
    flat = write_surface(tmp_path / "flat.h5", *NON_SQUARE, lambda a, b: 0.5 + a**2 + b**2)
    panels = load_panels([sharp, flat], PlotOptions())
    scale = shared_scale(panels, PlotOptions())
    assert scale.vmin <= 0.2 and scale.vmax >= 16.2  # spans both surfaces
    for kind in ("contour", "filled", "heatmap"):
        figure = draw_plane(kind, panels, scale)
        colorbars = [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]
        assert len(colorbars) == 1
        left, right = panels_of(figure)
        artist = ContourSet if kind != "heatmap" else AxesImage
        # The first such artist: the filled bands (filled draws thin lines over them too).
        mine, theirs = (
            next(item for item in ax.get_children() if isinstance(item, artist))
            for ax in (left, right)
        )
        assert (mine.norm.vmin, mine.norm.vmax) == (theirs.norm.vmin, theirs.norm.vmax)
        assert (mine.norm.vmin, mine.norm.vmax) == (scale.vmin, scale.vmax)
        if kind != "heatmap":
            assert np.array_equal(mine.levels, theirs.levels)
            assert np.array_equal(mine.levels, scale.levels)
        assert left.get_xlim() == right.get_xlim() and left.get_ylim() == right.get_ylim()
    # The same loss has the same color in both panels of the rendered heatmap.
    figure = draw_plane("heatmap", panels, scale)
    image = render(figure, tmp_path / "pair.png")
    left, right = panels_of(figure)
    a = np.sqrt((1.0 - 0.2) / 8)  # sharp: loss 1.0 at (a, 0); flat: loss 1.0 at (0.5, 0)
    assert np.allclose(
        image[pixel_of(left, image, a, 0.0)], image[pixel_of(right, image, 0.5, 0)], atol=0.03
    )

    assert main(["plot", str(sharp), str(flat), "--kinds", "filled", "--format", "png,pdf"]) == 0
    written = capsys.readouterr().out.split()
    assert written == [
        str(tmp_path / "sharp_vs_flat_train_loss_filled.png"),
        str(tmp_path / "sharp_vs_flat_train_loss_filled.pdf"),
    ]
    assert Path(written[1]).read_bytes()[:5] == b"%PDF-"


def test_the_pca_path_is_drawn_with_explained_variance_on_the_axes(tmp_path):
    path = np.array([[0.8, 0.5], [0.6, 0.1], [0.3, -0.1], [0.1, 0.02], [0.0, 0.0]])
    trajectory = Trajectory(path, (0, 10, 20, 30, 40), (0.843, 0.101))
    surface = write_surface(tmp_path / "s.h5", *SQUARE, bowl(), trajectory=trajectory, kind="pca")
    panels = load_panels([surface], PlotOptions())
    scale = shared_scale(panels, PlotOptions())
    for kind in ("contour", "filled", "heatmap", "surface3d"):
        figure = draw_plane(kind, panels, scale)
        ax = panels_of(figure)[0]
        [line] = [line for line in ax.get_lines() if line.get_gid() == "path"]
        # In 3D the path lies on the floor of the box: (x, y, floor).
        drawn = (
            np.column_stack(line.get_data_3d()[:2]) if kind == "surface3d" else line.get_xydata()
        )
        assert np.allclose(drawn, path)
        assert ax.get_xlabel() == "1st PC: 84.3 %" and ax.get_ylabel() == "2nd PC: 10.1 %"
        labels = [text.get_text() for text in figure.legends[0].get_texts()]
        assert labels == ["optimizer path", "start", "end"]
    texts = [text.get_text() for text in panels_of(draw_plane("contour", panels, scale))[0].texts]
    assert {"0", "40"} <= set(texts)  # epochs named, the first and the last among them


def test_epoch_labels_spread_along_a_path_that_crawls_at_the_end(tmp_path):
    from lsurf.plot.path import LABEL_GAP, MOST_LABELS

    # 41 epochs: big steps first, then 30 epochs creeping into the minimum at (0, 0).
    fast = np.linspace([0.9, 0.8], [0.05, 0.05], 11)
    slow = np.linspace([0.05, 0.05], [0.0, 0.0], 31)[1:]
    path = np.vstack([fast, slow])
    trajectory = Trajectory(path, tuple(range(41)), (0.9, 0.05))
    surface = write_surface(tmp_path / "s.h5", *SQUARE, bowl(), trajectory=trajectory, kind="pca")
    panels = load_panels([surface], PlotOptions())
    ax = panels_of(draw_plane("contour", panels, shared_scale(panels, PlotOptions())))[0]
    named = {int(text.get_text()): text.xy for text in ax.texts if hasattr(text, "xy")}
    assert {0, 40} <= set(named) and 3 <= len(named) <= MOST_LABELS
    extent = np.ptp(np.r_[path[:, 0], SQUARE[0].coordinates()])  # the square grid: x and y alike
    for first, second in itertools.combinations(sorted(set(named) - {40}), 2):
        gap = np.linalg.norm(np.subtract(named[first], named[second])) / extent
        assert gap >= LABEL_GAP, (first, second)  # no two labels on top of each other
    assert max(set(named) - {40}) <= 11  # the crawl to the minimum is named once, at its end


def test_1d_curves_have_twin_axes_train_solid_test_dashed(tmp_path, capsys):
    x = Axis(-0.5, 1.5, 21)
    done = np.ones(21, bool)
    done[15:] = False
    near = write_surface(
        tmp_path / "a.h5", x, None, lambda a, b: 0.1 + (a - 0.0) ** 2, done, kind="target"
    )
    far = write_surface(
        tmp_path / "b.h5", x, None, lambda a, b: 0.1 + 4 * (a - 1) ** 2, kind="target"
    )
    panels = load_panels([near, far], PlotOptions())
    figure = draw_curves(panels, PlotOptions())
    image = render(figure, tmp_path / "curves.png")
    loss_axes = panels_of(figure)
    assert len(loss_axes) == 2 and len(figure.axes) == 4  # each panel has its twin
    for ax in loss_axes:
        [twin] = [
            other
            for other in figure.axes
            if other is not ax and other.bbox.bounds == ax.bbox.bounds
        ]
        styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
        assert styles == {"train loss": "-", "test loss": "--"}
        styles = {line.get_label(): line.get_linestyle() for line in twin.get_lines()}
        assert styles == {"train accuracy": "-", "test accuracy": "--"}
        assert twin.get_ylabel() == "accuracy (%)" and twin.get_ylim() == (0, 100)
        assert ax.get_xlabel() == "α  (0: a/final.pt, 1: b/final.pt)"
    assert loss_axes[0].get_ylim() == loss_axes[1].get_ylim()  # shared, so widths compare
    assert "15/21 points done" in loss_axes[0].get_title()
    assert np.allclose(
        image[pixel_of(loss_axes[0], image, 1.3, np.mean(loss_axes[0].get_ylim()))],
        to_rgb(NOT_COMPUTED_COLOR),
        atol=0.15,
    )
    train = next(line for line in loss_axes[0].get_lines() if line.get_label() == "train loss")
    assert np.ma.getmaskarray(train.get_ydata())[15:].all()  # gaps, not zeros

    assert main(["plot", str(near), "--format", "png,html"]) == 0
    assert capsys.readouterr().out.split() == [
        str(tmp_path / "a_curve.png"),
        str(tmp_path / "a_curve.html"),
    ]


def test_levels_zmax_and_log_shape_the_contours(tmp_path):
    surface = write_surface(tmp_path / "s.h5", *SQUARE, bowl())  # 0.5 .. 13.5
    options = parse_options(levels="1:5:1", zmax=6.0)
    panels = load_panels([surface], options)
    scale = shared_scale(panels, options)
    figure = draw_plane("filled", panels, scale)
    [filled, _lines] = [c for c in panels_of(figure)[0].get_children() if isinstance(c, ContourSet)]
    assert list(filled.levels) == [1, 2, 3, 4, 5] and scale.extend == "both"
    assert panels[0].values.max() == 6.0 and panels[0].clipped > 0
    assert "clipped at 6" in figure.get_suptitle()
    assert f"{panels[0].clipped} points above 6 drawn at 6" in panels_of(figure)[0].get_title()

    options = parse_options(log=True)
    panels = load_panels([surface], options)
    scale = shared_scale(panels, options)
    assert scale.log and np.allclose(np.diff(np.log(scale.levels)), np.log(13.5 / 0.5) / 20)
    [contours] = [
        c
        for c in panels_of(draw_plane("contour", panels, scale))[0].get_children()
        if isinstance(c, ContourSet)
    ]
    assert type(contours.norm).__name__ == "LogNorm"


def test_parse_levels_reads_the_papers_spec_and_lists():
    assert np.allclose(parse_levels("0.1:10:0.5"), 0.1 + 0.5 * np.arange(20))
    assert parse_levels("1:3:1") == (1.0, 2.0, 3.0)  # MAX included
    assert parse_levels("2,0.5,1") == (0.5, 1.0, 2.0)
    for bad in ("1:2", "2:1:0.5", "1:2:0", "a,b", "1", "0:1:0.0001"):
        with pytest.raises(LsurfError, match="levels"):
            parse_levels(bad)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--metric", "val_loss"], "available: test_acc, test_loss, train_acc, train_loss"),
        (["--format", "png,jpg"], "--format: unknown value 'jpg'; valid: png, pdf, svg, vtk, html"),
        (["--kinds", "curve"], "--kinds curve is for 1D surfaces"),
        (["--levels", "1:x:2"], "--levels must be MIN:MAX:STEP"),
        (["--zmax", "-1", "--log"], "--zmax must be positive with --log"),
        (["--zmax", "nan"], "--zmax must be a finite number"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, arguments, message):
    surface = write_surface(tmp_path / "s.h5", *SQUARE, bowl())
    assert main(["plot", str(surface), *arguments]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["s.h5"]  # nothing written


def test_unusable_inputs_are_one_line_errors(tmp_path, capsys):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    curve = write_surface(tmp_path / "c.h5", Axis(0, 1, 5), None, bowl())
    plane = write_surface(tmp_path / "p.h5", *SQUARE, bowl())
    cases = [
        ([str(tmp_path / "missing.h5")], "surface file not found"),
        ([str(text)], "is not a readable HDF5 file"),
        ([str(curve), "--format", "vtk"], "--format vtk exports 2D surfaces"),
        ([str(curve), "--levels", "1:2:1"], "--levels sets contour levels of 2D surfaces"),
        ([str(curve), str(plane)], "cannot compare 1D curves with 2D surfaces"),
        ([str(plane), "--out", str(text)], "--out names a folder"),
    ]
    for arguments, message in cases:
        assert main(["plot", *arguments]) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, arguments


def test_a_metric_lsurf_does_not_know_is_plotted_with_its_stored_label(tmp_path, capsys):
    x, y = Axis(-1, 1, 5), Axis(0, 1, 3)
    a, b = np.meshgrid(x.coordinates(), y.coordinates(), indexing="ij")
    loss = bowl()(a, b)
    columns = {
        "test_acc": ("test", asdict(ACCURACY), 100 - loss),
        "test_top_eig": ("test", MAX_EIGENVALUE_ROW, 2 * loss),
    }
    path = write_surface_by_hand(
        tmp_path / "s.h5", x.coordinates(), y.coordinates(), columns, config=sweep_config(x, y)
    )
    [panel] = load_panels([path], PlotOptions())  # no train_loss: the first lower-is-better
    assert panel.metric == "test_top_eig" and np.allclose(panel.values, 2 * loss)
    figure = draw_plane("heatmap", [panel], shared_scale([panel], PlotOptions()))
    [colorbar] = [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]
    assert colorbar.get_ylabel() == "test largest Hessian eigenvalue"
    [panel] = load_panels([path], PlotOptions(metric="test_acc"))
    figure = draw_plane("heatmap", [panel], shared_scale([panel], PlotOptions()))
    assert figure.get_suptitle().splitlines()[0] == "test accuracy (%)"

    arguments = ["plot", str(path), "--metric", "test_top_eig", "--kinds", "heatmap"]
    assert main([*arguments, "--format", "png,vtk"]) == 0
    assert capsys.readouterr().out.split() == [
        str(tmp_path / "s_test_top_eig_heatmap.png"),
        str(tmp_path / "s_test_top_eig.vtu"),
    ]
    assert main(["plot", str(path), "--metric", "train_loss"]) == 2
    assert "available: test_acc, test_top_eig" in capsys.readouterr().err


def test_a_1d_file_draws_the_metric_asked_for_beside_accuracy(tmp_path, capsys):
    x = np.linspace(0, 1, 11)
    loss = 1 + x**2
    columns = {
        "train_loss": ("train", asdict(LOSS), loss),
        "train_acc": ("train", asdict(ACCURACY), 100 - loss),
        "train_top_eig": ("train", MAX_EIGENVALUE_ROW, 3 * loss),
    }
    path = write_surface_by_hand(tmp_path / "c.h5", x, None, columns)
    panels = load_panels([path], PlotOptions(metric="train_top_eig"))
    figure = draw_curves(panels, PlotOptions())
    ax, twin = figure.axes[:2]
    assert [line.get_label() for line in ax.get_lines()] == ["train largest Hessian eigenvalue"]
    assert np.allclose(ax.get_lines()[0].get_ydata(), 3 * loss)
    assert ax.get_ylabel() == "largest Hessian eigenvalue"
    assert [line.get_label() for line in twin.get_lines()] == ["train accuracy"]
    assert figure.get_suptitle().startswith("largest Hessian eigenvalue and accuracy")
    # The standard figure (loss on the left) keeps its name; the other names its metric.
    assert main(["plot", str(path), "--metric", "train_top_eig", "--format", "png,html"]) == 0
    assert main(["plot", str(path), "--metric", "train_acc"]) == 0
    assert capsys.readouterr().out.split() == [
        str(tmp_path / "c_train_top_eig_curve.png"),
        str(tmp_path / "c_train_top_eig_curve.html"),
        str(tmp_path / "c_curve.png"),
    ]
    html = (tmp_path / "c_train_top_eig_curve.html").read_text()
    assert '"name":"train largest Hessian eigenvalue"' in html and '"name":"train loss"' not in html


# ---------------------------------------------------------------------------- curvature

KINDS = ("contour", "filled", "heatmap", "surface3d")


def curvature_surface(path: Path, x: Axis, y: Axis | None, slow: dict, nan_at, done=None):
    """A curvature sweep's file (values from `curvature_values`, where |λmin/λmax| at grid
    index (i, j) is 0.1(i + j)), with the stored config's hessian section (tol 0.001)."""
    config = yaml.safe_load(sweep_config(x, y))
    config["hessian"] = HESSIAN_SECTION
    grid = Grid.from_axes(x, y)
    values = curvature_values(grid.shape, slow, nan_at)
    write_curvature_surface(path, grid, yaml.safe_dump(config), values, done)
    return path, values


def flagged_points(ax) -> np.ndarray:
    """The (x, y) of the 'x' marks on an axes (x, y, height on a 3D one: the first two)."""
    [marks] = [line for line in ax.get_lines() if line.get_gid() == "unconverged"]
    if hasattr(marks, "get_data_3d"):
        return np.column_stack(marks.get_data_3d()[:2])
    return marks.get_xydata()


def test_the_eig_ratio_map_shows_where_convexity_is_real_and_flags_unconverged_points(
    tmp_path, capsys
):
    x, y = Axis(-1, 1, 5), Axis(0, 1, 3)
    # The solver stopped at (3, 0) (λmax) and (0, 2) (λmin); the loss diverged at (1, 1).
    slow = {(3, 0): ("max_eig_residual", 0.02), (0, 2): ("min_eig_residual", 0.005)}
    done = np.ones((5, 3), bool)
    done[4, 2] = False
    path, values = curvature_surface(tmp_path / "s.h5", x, y, slow, [(1, 1)], done)
    [panel] = load_panels([path], PlotOptions(metric="eig_ratio"))
    ratio = np.abs(values["min_eig"] / values["max_eig"])
    hidden = ~done | np.isnan(ratio)
    assert np.array_equal(panel.values.mask, hidden)
    assert np.array_equal(panel.values.data[~hidden], ratio[~hidden])
    assert panel.status[1, 1] == NOT_FINITE and panel.status[4, 2] == NOT_COMPUTED
    assert np.count_nonzero(panel.status == SHOWN) == 13
    scale = shared_scale([panel], PlotOptions())
    assert (scale.vmin, scale.vmax) == (0.0, 0.5) and np.allclose(np.diff(scale.levels), 0.025)
    own = shared_scale([panel], PlotOptions(levels=(0.0, 0.2, 0.4, 0.8)))  # --levels wins
    assert (own.vmin, own.vmax) == (0.0, 0.8)

    expected_flags = [(x.coordinates()[0], 1.0), (x.coordinates()[3], 0.0)]  # (0, 2), (3, 0)
    for kind in KINDS:
        figure = draw_plane(kind, [panel], scale)
        ax = panels_of(figure)[0]
        assert np.allclose(flagged_points(ax), expected_flags), kind
        assert ax.get_title() == (
            "14/15 points done; 1 point inf or NaN; 2 points did not reach tol 0.001"
        )
        labels = [text.get_text() for text in figure.legends[0].get_texts()]
        assert labels == ["not computed", "inf or NaN", "did not converge (residual > 0.001)"]
        [colorbar] = [other for other in figure.axes if other.get_label() == "<colorbar>"]
        assert colorbar.get_ylabel() == "|λmin/λmax| (train)"
    figure = draw_plane("heatmap", [panel], scale)
    ax = panels_of(figure)[0]
    [image] = [item for item in ax.get_children() if isinstance(item, AxesImage)][-1:]
    assert image.get_cmap().name == "viridis" and (image.norm.vmin, image.norm.vmax) == (0, 0.5)
    assert np.ma.allequal(image.get_array(), panel.values.T)
    # Rendered: a flagged point is crossed in black; an unflagged one keeps its color.
    pixels = render(figure, tmp_path / "ratio.png")
    assert np.allclose(pixels[pixel_of(ax, pixels, -1.0, 1.0)], 0.0, atol=0.25)
    assert np.allclose(pixels[pixel_of(ax, pixels, -1.0, 0.0)], VIRIDIS(0.0)[:3], atol=0.02)
    assert np.allclose(pixels[pixel_of(ax, pixels, 0.0, 0.5)], VIRIDIS(0.6)[:3], atol=0.02)

    assert main(["plot", str(path), "--metric", "eig_ratio", "--format", "png,vtk"]) == 0
    assert capsys.readouterr().out.split() == [
        *(str(tmp_path / f"s_eig_ratio_{kind}.png") for kind in KINDS),
        str(tmp_path / "s_eig_ratio.vtu"),
    ]
    import meshio

    mesh = meshio.read(tmp_path / "s_eig_ratio.vtu")
    assert int(mesh.point_data["unconverged"].sum()) == 2 and len(mesh.points) == 13
    assert main(["plot", str(path), "--metric", "ratio"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.strip().endswith(
        "available: eig_products, eig_ratio, max_eig, max_eig_residual, min_eig, "
        "min_eig_residual, train_acc, train_loss"
    )


@pytest.mark.parametrize("metric", ["max_eig", "min_eig"])
def test_eigenvalue_maps_draw_like_any_column_flagging_their_own_residual(tmp_path, metric):
    x, y = Axis(-1, 1, 9), Axis(-1, 1, 7)
    slow = {(3, 0): ("max_eig_residual", 0.02), (0, 2): ("min_eig_residual", 0.005)}
    path, values = curvature_surface(tmp_path / "s.h5", x, y, slow, [(1, 1)])
    [panel] = load_panels([path], PlotOptions(metric=metric))
    scale = shared_scale([panel], PlotOptions())
    shown = values[metric][np.isfinite(values[metric])]
    assert scale.vmin <= shown.min() and scale.vmax >= shown.max()  # λmin's negatives too
    own = {"max_eig": [(3, 0)], "min_eig": [(0, 2)]}[metric]  # each eigenvalue its residual
    expected = [(x.coordinates()[i], y.coordinates()[j]) for i, j in own]
    for kind in KINDS:
        figure = draw_plane(kind, [panel], scale)
        ax = panels_of(figure)[0]
        inside = axes_pixels(render(figure, tmp_path / f"{kind}.png"), ax)
        least = {"contour": 0.03, "filled": 0.9, "heatmap": 0.9, "surface3d": 0.15}[kind]
        assert saturated_fraction(inside) > least and distinct_colors(inside) > 20, kind
        assert np.allclose(flagged_points(ax), expected), kind


def test_1d_curvature_curves_mark_unconverged_points(tmp_path, capsys):
    x = Axis(-1, 1, 5)
    slow = {(3,): ("max_eig_residual", 0.05)}
    path, values = curvature_surface(tmp_path / "c.h5", x, None, slow, [(1,)])
    ratio = np.abs(values["min_eig"] / values["max_eig"])  # 0.1·i: 0 .. 0.4, NaN at 1
    [panel] = load_panels([path], PlotOptions(metric="eig_ratio"))
    figure = draw_curves([panel], PlotOptions())
    ax, twin = figure.axes[:2]
    [curve] = [line for line in ax.get_lines() if line.get_gid() != "unconverged"]
    assert curve.get_label() == "train |λmin/λmax|"
    drawn = curve.get_ydata()
    assert np.array_equal(np.ma.getmaskarray(drawn), np.isnan(ratio))
    assert np.array_equal(drawn.compressed(), ratio[~np.isnan(ratio)])
    assert ax.get_ylim() == (0.0, 0.5)  # the maps' scale, as nothing reaches above it
    assert np.allclose(flagged_points(ax), [(x.coordinates()[3], ratio[3])])
    assert ax.get_title() == "1 point did not reach tol 0.001"
    assert [line.get_label() for line in twin.get_lines()] == ["train accuracy"]
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert labels == [
        "train |λmin/λmax|",
        "train accuracy",
        "inf or NaN",
        "did not converge (residual > 0.001)",
    ]
    # λmax's curve carries the mark at λmax; λmin's does not (its residual is fine there).
    [panel] = load_panels([path], PlotOptions(metric="max_eig"))
    ax = draw_curves([panel], PlotOptions()).axes[0]
    assert np.allclose(flagged_points(ax), [(x.coordinates()[3], values["max_eig"][3])])
    [panel] = load_panels([path], PlotOptions(metric="min_eig"))
    ax = draw_curves([panel], PlotOptions()).axes[0]
    assert not [line for line in ax.get_lines() if line.get_gid() == "unconverged"]

    assert main(["plot", str(path), "--metric", "eig_ratio"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "c_eig_ratio_curve.png")]


def test_without_a_loss_the_default_map_is_the_first_ranked_column_not_a_residual(tmp_path):
    x, y = np.linspace(-1, 1, 3), np.linspace(0, 1, 2)
    columns = {  # listed first: what no best point or landscape is made of
        "eig_products": ("train", asdict(EIG_PRODUCTS), np.full((3, 2), 40.0)),
        "max_eig_residual": ("train", asdict(MAX_EIG_RESIDUAL), np.full((3, 2), 1e-4)),
        "max_eig": ("train", asdict(MAX_EIG), np.arange(6.0).reshape(3, 2)),
    }
    path = write_surface_by_hand(tmp_path / "s.h5", x, y, columns)
    [panel] = load_panels([path], PlotOptions())
    assert panel.metric == "max_eig" and panel.convergence is None  # no tol stored: no flags
