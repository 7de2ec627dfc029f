"""Figures like the paper's: `--preset paper`, the 3D view that shows the minimum, the VTK
export's interpolation and log, `--compare seeds` and the axis labels of planes carrying a
training path. Surface files are made with the real surface writer; figures are read back as the
matplotlib objects drawn or as the PNG pixels, exports with the library that wrote them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.image
import meshio
import numpy as np
import pytest
import yaml
from matplotlib import colormaps
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure
from mpl_toolkits.mplot3d import proj3d

from lsurf.cli import main
from lsurf.files.surface import create_surface
from lsurf.files.trajectory import Trajectory
from lsurf.grid import Axis, Grid
from lsurf.metrics import columns
from lsurf.plot import PlotOptions, parse_options, plot_files
from lsurf.plot.curves import draw_curves, draw_overlaid_curves, primary_metric
from lsurf.plot.export import upsample
from lsurf.plot.planes import draw_plane, surface_heights
from lsurf.plot.preset import PAPER_LEVELS, apply_preset
from lsurf.plot.seeds import label_by_seed
from lsurf.plot.view import load_panels, shared_scale

Loss = Callable[[np.ndarray, np.ndarray], np.ndarray]
CHECKPOINT = "/runs/a/final.pt"
PLANE = (Axis(-1, 1, 21), Axis(-1, 1, 21))
LINE = Axis(-1, 1, 21)


def write_surface(
    path: Path,
    x: Axis,
    y: Axis | None,
    loss: Loss,
    seed: int = 0,
    kind: str = "random",
    checkpoint: str = CHECKPOINT,
    trajectory: Trajectory | None = None,
) -> Path:
    """A complete surface file, as a sweep of `checkpoint` along `kind` directions drawn with
    `seed` writes it: train loss loss(a, b), test loss 1.2× that, accuracies beside."""
    grid = Grid.from_axes(x, y)
    a, b = np.meshgrid(grid.x, grid.y, indexing="ij") if y else (grid.x, np.zeros(grid.shape))
    train = loss(a, b)
    values = {
        "train_loss": train,
        "test_loss": 1.2 * train,
        "train_acc": 100 * np.exp(-train),
        "test_acc": 90 * np.exp(-train),
    }
    config = {
        "model": {"name": "resnet56", "checkpoint": checkpoint},
        "grid": {"x": x.spec, "y": None if y is None else y.spec},
        "directions": {"kind": kind, "norm": "filter", "ignore": "biasbn", "seed": seed},
    }
    attributes = {"config": yaml.safe_dump(config), "direction_file": "/runs/a/d.h5"}
    with create_surface(path, grid, columns(["train", "test"]), attributes, trajectory) as out:
        out.record(range(grid.size), {name: v.reshape(-1) for name, v in values.items()})
    return path


def bowl(x0: float = 0.0, y0: float = 0.0, low: float = 0.1, steep: float = 4.0) -> Loss:
    """low at (x0, y0), rising like exp: a quadratic bowl in log10, as real losses look."""
    return lambda a, b: low * np.exp(steep * ((a - x0) ** 2 + (b - y0) ** 2))


def panels_of(figure: Figure) -> list:
    """The data axes of a figure: not colorbars."""
    return [ax for ax in figure.axes if ax.get_label() != "<colorbar>" and ax.get_xlabel()]


def contour_sets(ax) -> list[ContourSet]:
    return [child for child in ax.get_children() if isinstance(child, ContourSet)]


def drawn_colormap(ax, kind: str) -> str:
    """The colormap of what a panel of `kind` draws its values with."""
    if kind == "heatmap":
        return ax.images[-1].cmap.name  # the values' image is drawn above the status layer
    if kind == "surface3d":
        return ax.collections[0].cmap.name
    return contour_sets(ax)[0].cmap.name


# ---------------------------------------------------------------------------- --preset paper


def test_the_paper_preset_draws_the_reference_levels_colormaps_and_loss_axis(tmp_path, capsys):
    plane = write_surface(tmp_path / "plane.h5", *PLANE, bowl(steep=3.0))  # 0.1 .. 40
    options = parse_options(preset="paper")
    panels = load_panels([plane], options)
    options = apply_preset(options, panels[0].column.metric, is_2d=True)
    scale = shared_scale(panels, options)
    assert np.allclose(scale.levels, np.arange(0.1, 10, 0.5))  # plot_2D: vmin, vmax, vlevel
    expected = {"contour": "summer", "filled": "summer", "heatmap": "viridis"}
    expected["surface3d"] = "coolwarm"
    for kind, colormap in expected.items():
        ax = panels_of(draw_plane(kind, panels, scale, options))[0]
        assert drawn_colormap(ax, kind) == colormap, kind
        if kind in ("contour", "filled"):
            assert np.allclose(contour_sets(ax)[0].levels, PAPER_LEVELS)
    # An explicit flag wins over the preset.
    explicit = apply_preset(
        parse_options(preset="paper", levels="1:5:1"), panels[0].column.metric, True
    )
    assert explicit.levels == (1.0, 2.0, 3.0, 4.0, 5.0) and explicit.colormaps is not None

    line = write_surface(tmp_path / "line.h5", LINE, None, bowl(steep=3.0))
    options = parse_options(preset="paper")
    panels = load_panels([line], options)
    options = apply_preset(options, primary_metric(panels[0]), is_2d=False)
    figure = draw_curves(panels, options)
    loss_ax = panels_of(figure)[0]
    [accuracy_ax] = [ax for ax in figure.axes if ax is not loss_ax and ax.get_ylabel()]
    assert loss_ax.get_ylim() == (0.0, 5.0)  # plot_1D's loss_max
    assert accuracy_ax.get_ylim() == (0.0, 100.0)
    assert (
        apply_preset(parse_options(preset="paper", ymax=2.0), primary_metric(panels[0]), False).ymax
        == 2.0
    )

    assert main(["plot", str(plane), "--preset", "paper", "--kinds", "contour"]) == 0
    assert main(["plot", str(line), "--preset", "paper"]) == 0
    assert capsys.readouterr().out.split() == [
        str(tmp_path / "plane_train_loss_contour.png"),
        str(tmp_path / "line_curve.png"),
    ]


def test_a_plane_carrying_a_path_gets_the_references_log_spaced_levels(tmp_path):
    path = np.array([[0.9, 0.9], [0.5, 0.4], [0.1, 0.1], [0.0, 0.0]])
    trajectory = Trajectory(path, (0, 10, 20, 30), (0.9, 0.05))
    steep = bowl(steep=5.0)  # 0.1 at the centre, 0.1·e^10 ≈ 2203 in the corners
    with_path = write_surface(tmp_path / "p.h5", *PLANE, steep, kind="pca", trajectory=trajectory)
    without = write_surface(tmp_path / "r.h5", *PLANE, steep)
    for surface, extra in ((with_path, [10.0, 100.0, 1000.0]), (without, [])):
        options = parse_options(preset="paper")
        panels = load_panels([surface], options)
        options = apply_preset(options, panels[0].column.metric, is_2d=True)
        for kind in ("contour", "filled"):
            ax = panels_of(draw_plane(kind, panels, shared_scale(panels, options), options))[0]
            grey = [c for c in contour_sets(ax) if c.get_gid() == "path_levels"]
            # 10, 100, 1000 lie within the values; 1e4 ... 1e8 do not and are not drawn.
            assert [list(c.levels) for c in grey] == ([extra] if extra else []), (surface, kind)


# ---------------------------------------------------------------------------- the 3D view


def minimum_pixel_color(figure: Figure, panels, scale, path: Path) -> np.ndarray:
    """The rendered color where the surface's lowest point projects in the saved PNG."""
    figure.savefig(path)  # at the figure's dpi, so display coordinates are pixels
    image = matplotlib.image.imread(path)[..., :3]
    ax = panels_of(figure)[0]
    heights = surface_heights(panels[0], scale)
    i, j = np.unravel_index(np.nanargmin(heights), heights.shape)
    point = panels[0].surface.x[i], panels[0].surface.y[j], heights[i, j]
    projected_x, projected_y, _ = proj3d.proj_transform(*point, ax.get_proj())
    column, row = ax.transData.transform((projected_x, projected_y))
    return image[int(round(image.shape[0] - row)), int(round(column))]


def test_the_3d_surface_shows_the_bottom_of_the_basin(tmp_path):
    # Off centre, and six decades deep on a log scale: seen from matplotlib's default view
    # (30° up, azimuth -60°) the near rim stands in front of the minimum.
    surface = write_surface(
        tmp_path / "s.h5", Axis(-1, 1, 41), Axis(-1, 1, 41), bowl(0.2, -0.1, 0.02, 6.0)
    )
    lowest = np.array(colormaps["viridis"](0.0)[:3])
    options = PlotOptions(log=True)
    panels = load_panels([surface], options)
    scale = shared_scale(panels, options)
    figure = draw_plane("surface3d", panels, scale, options)
    seen = minimum_pixel_color(figure, panels, scale, tmp_path / "chosen.png")
    assert np.linalg.norm(seen - lowest) < 0.05, seen

    forced = PlotOptions(log=True, view=(30.0, -60.0))
    figure = draw_plane("surface3d", panels, scale, forced)
    ax = panels_of(figure)[0]
    assert (ax.elev, ax.azim) == (30.0, -60.0)  # --view is taken as given
    hidden = minimum_pixel_color(figure, panels, scale, tmp_path / "default.png")
    assert np.linalg.norm(hidden - lowest) > 0.3, hidden  # the rim, not the basin


def test_compared_3d_panels_share_one_view(tmp_path):
    deep = write_surface(tmp_path / "a.h5", *PLANE, bowl(0.2, -0.1, 0.02, 6.0))
    shallow = write_surface(tmp_path / "b.h5", *PLANE, bowl(steep=0.5))
    options = PlotOptions(log=True)
    panels = load_panels([deep, shallow], options)
    figure = draw_plane("surface3d", panels, shared_scale(panels, options), options)
    views = {(ax.elev, ax.azim) for ax in panels_of(figure)}
    assert len(views) == 1 and views != {(30.0, -60.0)}


# ---------------------------------------------------------------------------- VTK export


def test_interp_resamples_exactly_through_the_grid_and_linearly_between(tmp_path):
    x, y = Axis(-1, 1, 5), Axis(0, 1, 3)
    plane = lambda a, b: 2.0 + 0.5 * a - 1.5 * b  # noqa: E731
    surface = write_surface(tmp_path / "s.h5", x, y, plane)
    [path] = plot_files([surface], parse_options(formats="vtk", interp=9))
    mesh = meshio.read(path)
    fine_x, fine_y = np.linspace(-1, 1, 9), np.linspace(0, 1, 9)
    grid_x, grid_y = np.meshgrid(fine_x, fine_y, indexing="ij")
    assert len(mesh.points) == 81 and len(mesh.cells_dict["quad"]) == 64
    assert np.allclose(mesh.points[:, :2], np.stack([grid_x.ravel(), grid_y.ravel()], axis=1))
    assert np.allclose(mesh.points[:, 2], plane(grid_x, grid_y).ravel(), atol=1e-12)
    heights = mesh.points[:, 2].reshape(9, 9)
    # The original nodes (every other fine point along x, every fourth along y) are exact...
    coarse_x, coarse_y = np.meshgrid(x.coordinates(), y.coordinates(), indexing="ij")
    assert np.allclose(heights[::2, ::4], plane(coarse_x, coarse_y), atol=1e-12)
    # ...and between them the surface is linear: second differences vanish.
    assert np.allclose(np.diff(heights, 2, axis=0), 0, atol=1e-12)
    assert np.allclose(np.diff(heights, 2, axis=1), 0, atol=1e-12)
    mean = mesh.cell_data["train_loss_mean"][0]
    assert np.allclose(
        mean,
        heights[:-1, :-1].ravel() / 4
        + heights[1:, :-1].ravel() / 4
        + heights[1:, 1:].ravel() / 4
        + heights[:-1, 1:].ravel() / 4,
    )


def test_upsample_is_bicubic_exact_for_quadratics_and_keeps_holes():
    x, y = np.linspace(-1, 1, 6), np.linspace(0, 2, 4)
    quadratic = lambda a, b: 1 + a - 2 * b + 3 * a**2 - a * b + 0.5 * b**2  # noqa: E731
    fine_x, fine_y = np.linspace(-1, 1, 31), np.linspace(0, 2, 17)
    values = quadratic(*np.meshgrid(x, y, indexing="ij"))
    expected = quadratic(*np.meshgrid(fine_x, fine_y, indexing="ij"))
    assert np.allclose(upsample(x, y, values, fine_x, fine_y), expected, atol=1e-12)
    values[2, 1] = np.nan  # a hidden point hides what its neighbourhood resamples
    resampled = upsample(x, y, values, fine_x, fine_y)
    assert np.isnan(resampled[fine_x == x[2]][:, fine_y == y[1]]).all()
    # Two grid steps away along x, its stencil no longer reaches: the rest is as before.
    far = fine_x >= x[4]
    assert np.allclose(resampled[far], expected[far], atol=1e-12)


def test_vtk_log_is_log10_of_value_plus_the_offset_the_paper_preset_sets(tmp_path):
    x, y = Axis(-1, 1, 5), Axis(0, 1, 3)
    loss = lambda a, b: a**2 + b**2  # noqa: E731  0 at (0, 0): log10 alone cannot show it
    surface = write_surface(tmp_path / "s.h5", x, y, loss)
    grid_x, grid_y = np.meshgrid(x.coordinates(), y.coordinates(), indexing="ij")
    values = loss(grid_x, grid_y).ravel()

    [plain] = plot_files([surface], parse_options(formats="vtk", log=True))
    assert len(meshio.read(plain).points) == 14  # the 0 is left out of a log10 surface

    for options in (
        parse_options(formats="vtk", log=True, log_offset=0.1),
        parse_options(formats="vtk", log=True, preset="paper"),
    ):
        [path] = plot_files([surface], options)
        mesh = meshio.read(path)
        assert len(mesh.points) == 15
        assert np.allclose(mesh.points[:, 2], np.log10(values + 0.1))
        assert np.allclose(mesh.point_data["log10_train_loss_plus_0.1"], np.log10(values + 0.1))
        assert np.allclose(mesh.point_data["train_loss_stored"], values)

    [clipped] = plot_files(
        [surface], parse_options(formats="vtk", log=True, log_offset=0.1, zmax=1.0)
    )
    assert np.allclose(meshio.read(clipped).points[:, 2], np.log10(np.minimum(values, 1.0) + 0.1))


# ---------------------------------------------------------------------------- --compare seeds


def test_seeds_of_one_checkpoint_overlay_their_curves_named_by_seed(tmp_path, capsys):
    files = [
        write_surface(tmp_path / f"s{seed}.h5", LINE, None, bowl(steep=1 + seed), seed=seed)
        for seed in (3, 7, 11)
    ]
    options = PlotOptions(compare="seeds")
    panels = label_by_seed(load_panels(files, options))
    figure = draw_overlaid_curves(panels, options)
    loss_ax, accuracy_ax = figure.axes  # loss on top, accuracy below, sharing x
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert labels == ["seed 3", "seed 7", "seed 11", "train", "test"]
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    assert sorted(lines) == sorted(
        f"seed {seed} {split} loss" for seed in (3, 7, 11) for split in ("train", "test")
    )
    colors = {seed: lines[f"seed {seed} train loss"].get_color() for seed in (3, 7, 11)}
    assert len(set(colors.values())) == 3  # one color per seed...
    assert all(lines[f"seed {seed} test loss"].get_color() == colors[seed] for seed in colors)
    assert lines["seed 3 test loss"].get_linestyle() == "--"  # ...and the split by dashes
    assert accuracy_ax.get_ylim() == (0.0, 100.0) and len(accuracy_ax.get_lines()) == 6

    assert main(["plot", *map(str, files), "--compare", "seeds"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "s3_vs_s7_vs_s11_seeds_curve.png")]


def test_seed_planes_share_one_color_scale_and_the_same_levels(tmp_path):
    files = [
        write_surface(tmp_path / f"s{seed}.h5", *PLANE, bowl(steep=1 + seed), seed=seed)
        for seed in (0, 1)
    ]
    options = PlotOptions(compare="seeds")
    panels = label_by_seed(load_panels(files, options))
    scale = shared_scale(panels, options)
    figure = draw_plane("filled", panels, scale, options)
    left, right = panels_of(figure)
    [mine, *_], [theirs, *_] = contour_sets(left), contour_sets(right)
    assert (mine.norm.vmin, mine.norm.vmax) == (theirs.norm.vmin, theirs.norm.vmax)
    assert np.array_equal(mine.levels, theirs.levels)
    assert left.get_title().startswith("seed 0") and right.get_title().startswith("seed 1")


def test_files_that_are_not_one_checkpoints_seeds_are_refused_in_one_line(tmp_path, capsys):
    first = write_surface(tmp_path / "a.h5", LINE, None, bowl(), seed=0)
    cases = {
        "sweeps /runs/b/final.pt but": write_surface(
            tmp_path / "b.h5", LINE, None, bowl(), seed=1, checkpoint="/runs/b/final.pt"
        ),
        "has the grid x=-1:1:11 but": write_surface(
            tmp_path / "c.h5", Axis(-1, 1, 11), None, bowl(), seed=1
        ),
        "both have directions.seed 0": write_surface(tmp_path / "d.h5", LINE, None, bowl()),
        "which no seed changes": write_surface(
            tmp_path / "e.h5", LINE, None, bowl(), seed=1, kind="target"
        ),
    }
    for message, other in cases.items():
        assert main(["plot", str(first), str(other), "--compare", "seeds"]) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, message
    assert main(["plot", str(first), "--compare", "seeds"]) == 2
    assert "needs two or more" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


# ---------------------------------------------------------------------------- labels, flags


@pytest.mark.parametrize(
    ("kind", "x_label", "y_label"),
    [
        ("pca", "1st PC: 84.3 %", "2nd PC: 10.1 %"),
        (
            "random",
            "α (direction 1) · 0.21 % of the path's variance",
            "β (direction 2) · 0.0042 % of the path's variance",
        ),
    ],
)
def test_a_planes_axes_say_how_much_of_the_path_they_capture(tmp_path, kind, x_label, y_label):
    ratios = (0.843, 0.101) if kind == "pca" else (0.0021, 0.000042)
    trajectory = Trajectory(np.array([[0.5, 0.5], [0.0, 0.0]]), (0, 1), ratios)
    surface = write_surface(tmp_path / "s.h5", *PLANE, bowl(), kind=kind, trajectory=trajectory)
    [panel] = load_panels([surface], PlotOptions())
    assert (panel.description.x_label, panel.description.y_label) == (x_label, y_label)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--interp", "50"], "--interp upsamples the VTK export: add --format vtk"),
        (["--format", "vtk", "--interp", "1"], "--interp must be from 2 to 4001 points"),
        (["--ymax", "5"], "--ymax sets the loss axis of 1D curves"),
        (["--view", "30"], "--view must be ELEVATION,AZIMUTH in degrees"),
        (["--view", "120,0"], "the elevation must be from -90 to 90"),
        (["--colormap", "nope"], "matplotlib has no colormap 'nope'"),
        (["--log-offset", "-1"], "--log-offset must be 0 or more"),
        (["--path-levels", "x"], "--path-levels must be MIN:MAX:STEP"),
        (["--preset", "nature"], "--preset: unknown value 'nature'; valid: paper"),
        (["--compare", "seed"], "--compare: unknown value 'seed'; valid: files, seeds"),
    ],
)
def test_bad_plot_flags_are_one_line_errors(tmp_path, capsys, arguments, message):
    surface = write_surface(tmp_path / "s.h5", *PLANE, bowl())
    assert main(["plot", str(surface), *arguments]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["s.h5"]


def test_2d_only_flags_are_refused_for_curves(tmp_path, capsys):
    line = write_surface(tmp_path / "l.h5", LINE, None, bowl())
    for arguments, message in (
        (["--path-levels", "10,100"], "--path-levels sets contour levels of 2D surfaces"),
        (["--view", "40,-60"], "--view sets the 3D surface's view"),
    ):
        assert main(["plot", str(line), *arguments]) == 2
        assert message in capsys.readouterr().err
