import numpy as np
import pytest

from lsurf.errors import ConfigError
from lsurf.grid import AutoAxis, Axis, Grid, fit_axis, parse_auto_axis, parse_axis, pending


def test_parse_axis_gives_linspace_coordinates():
    axis = parse_axis("-1:1:5")
    assert axis == Axis(-1.0, 1.0, 5)
    np.testing.assert_array_equal(axis.coordinates(), [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert axis.spec == "-1:1:5"
    assert parse_axis("0:0:1").coordinates().tolist() == [0.0]


@pytest.mark.parametrize(
    "spec", ["1:2", "a:1:3", "1:0:3", "0:1:1", "0:1:0", "0:1:2.5", "0:inf:3", "0:1:3:4", ""]
)
def test_malformed_specs_are_rejected_with_the_expected_form(spec):
    with pytest.raises(ConfigError, match="min:max:num"):
        parse_axis(spec, "grid.x")


def test_auto_specs_parse_and_malformed_ones_show_both_forms():
    assert parse_auto_axis("auto:51") == AutoAxis(51)
    assert AutoAxis(51).spec == "auto:51"
    for spec in ("auto", "auto:1", "auto:x", "auto:5:6", "automatic:5", "-1:1:5"):
        with pytest.raises(ConfigError, match="'auto:num' on a PCA plane"):
            parse_auto_axis(spec, "grid.x")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([-2.3, 35.0, 12.0], Axis(-7.0, 39.0, 9)),  # 10% of 37.3 each side, whole numbers
        ([0.0, 0.42, 0.07], Axis(-0.05, 0.47, 9)),  # origin included, hundredths
        ([-3.0, -1.0], Axis(-3.3, 0.3, 9)),  # a path on one side still shows the origin
        ([0.0, 0.0], Axis(-0.1, 0.1, 9)),  # a path that never moves: a small window
    ],
)
def test_fitted_axis_covers_the_path_and_the_origin_with_round_bounds(values, expected):
    axis = fit_axis(np.array(values), 9)
    assert axis == expected
    assert axis.start <= min(min(values), 0) and axis.stop >= max(max(values), 0)
    assert parse_axis(axis.spec) == axis  # the stored spec reads back exactly


def test_flat_index_maps_row_major_onto_non_square_grid():
    grid = Grid.from_axes(Axis(0, 3, 4), Axis(10, 11, 2))
    assert grid.shape == (4, 2) and grid.size == 8
    for index in range(grid.size):
        i, j = np.unravel_index(index, grid.shape)
        assert grid.coordinates(index) == (grid.x[i], grid.y[j])
    assert grid.coordinates(5) == (2.0, 11.0)


def test_one_dimensional_grid_has_zero_beta():
    grid = Grid.from_axes(Axis(-1, 1, 3), None)
    assert grid.shape == (3,)
    assert [grid.coordinates(k) for k in range(3)] == [(-1.0, 0.0), (0.0, 0.0), (1.0, 0.0)]


def test_pending_lists_undone_points_in_order():
    done = np.array([[True, False, False], [False, True, False]])
    todo = pending(done)
    assert todo.tolist() == [1, 2, 3, 5]
