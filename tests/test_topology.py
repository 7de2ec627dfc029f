"""lsurf.topology: persistence pairs, merge trees and basins, exact on the grid graph, against
a point-by-point brute force on random grids (ties and NaNs included) and analytic surfaces."""

from __future__ import annotations

import numpy as np
import pytest

from lsurf.topology import NO_POINT, analyse, total_variation


def neighbours_of(shape, index, eight):
    """The grid neighbours of flat `index` (4 or 8 of them, fewer at the edges)."""
    if len(shape) == 1:
        return [n for n in (index - 1, index + 1) if 0 <= n < shape[0]]
    i, j = divmod(index, shape[1])
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)] if eight else []
    return [
        (i + di) * shape[1] + (j + dj)
        for di, dj in steps
        if 0 <= i + di < shape[0] and 0 <= j + dj < shape[1]
    ]


def brute_force(values, threshold=0.0, eight=False):
    """Point by point in order of (value, index): components with the elder rule, and the
    ToMATo clusters (each point joins its steepest entered neighbour's cluster, then every
    other cluster among its entered neighbours' merges into the oldest of them when the point's
    value minus that cluster's minimum is below the threshold). Plain loops, no lsurf code."""
    flat = values.ravel()
    order = sorted((v, i) for i, v in enumerate(flat) if np.isfinite(v))
    rank = {i: r for r, (_, i) in enumerate(order)}
    component, cluster = {}, {}

    def find(parent, x):
        while parent[x] != x:
            x = parent[x]
        return x

    pairs, basin_minimum, merged = {}, {}, {}
    members = {}  # a component's root -> the minima in it
    for _, point in order:
        entered = [n for n in neighbours_of(values.shape, point, eight) if n in rank]
        entered = [n for n in entered if rank[n] < rank[point]]
        component[point] = point
        if not entered:  # a minimum
            pairs[point] = None
            cluster[point] = point
            members[point] = {point}
            continue
        roots = {find(component, n) for n in entered}
        eldest = min(roots, key=rank.get)
        for root in roots - {eldest}:
            pairs[root] = point  # dies here
            component[root] = eldest
            members[eldest] |= members.pop(root)
        if len(roots) > 1:
            merged[point] = set(members[eldest])
        component[point] = eldest
        steepest = min(entered, key=rank.get)
        cluster[point] = find(cluster, steepest)
        meeting = {find(cluster, n) for n in entered}
        oldest = min(meeting, key=rank.get)
        for root in meeting - {oldest}:
            if flat[point] - flat[root] < threshold:
                cluster[root] = oldest
    for point in rank:
        basin_minimum[point] = find(cluster, point)
    return pairs, basin_minimum, merged


def as_pairs(topology):
    return {
        int(b): (None if d == NO_POINT else int(d))
        for b, d in zip(topology.birth, topology.death, strict=True)
    }


def random_grid(generator):
    shape = tuple(int(n) for n in generator.integers(1, 9, size=generator.integers(1, 3)))
    values = generator.integers(0, 6, size=shape).astype(float)  # many ties
    if generator.random() < 0.5:
        values[generator.random(shape) < 0.15] = np.nan
    return values


def test_pairs_and_basins_equal_a_brute_force_on_200_random_grids():
    generator = np.random.default_rng(0)
    for case in range(200):
        values = random_grid(generator)
        eight = bool(case % 2) and values.ndim == 2
        threshold = float(generator.choice([0.0, 0.5, 1.5, 3.0, 10.0]))
        found = analyse(values, threshold, 8 if eight else 4)
        pairs, basin_minimum, merged = brute_force(values, threshold, eight)
        assert as_pairs(found) == pairs, (case, values)
        assert tree_merges(found) == merged, (case, values)
        basins = found.basin.ravel()
        for point, minimum in basin_minimum.items():
            assert found.birth[basins[point]] == minimum, (case, point, values)
        assert (basins[~np.isfinite(values.ravel())] == -1).all()  # NaN joins no basin


def tree_merges(topology):
    """Each merge point of the tree and the minima below its topmost node there (several
    components meeting at one point make several nodes there, in some order)."""
    k = len(topology.birth)
    below: dict[int, list[int]] = {}
    for node, parent in enumerate(topology.node_parent.tolist()):
        if parent >= 0:
            below.setdefault(parent, []).append(node)

    def minima_under(node):
        if node < k:
            return {int(topology.birth[node])}
        return set().union(*(minima_under(child) for child in below.get(node, [])))

    found = {}
    for node in range(k, len(topology.node_point)):
        point, parent = int(topology.node_point[node]), int(topology.node_parent[node])
        is_merge = len(below.get(node, [])) == 2
        topmost = parent < 0 or int(topology.node_point[parent]) != point
        if is_merge and topmost:
            found[point] = minima_under(node)
    return found


def test_the_merge_tree_joins_the_components_that_meet_at_each_saddle():
    generator = np.random.default_rng(1)
    for _ in range(100):
        values = generator.normal(size=(6, 7))  # no ties: one merge per saddle
        found = analyse(values)
        # The merges sit at the death points (a point where three meet is two deaths).
        deaths = sorted({int(d) for d in found.death if d != NO_POINT})
        assert sorted(tree_merges(found)) == deaths
        roots = np.flatnonzero(found.node_parent == NO_POINT)
        assert len(roots) == 1 and found.node_point[roots[0]] == np.nanargmax(values)
        for node in range(len(found.node_point)):  # a parent is never below its child
            parent = found.node_parent[node]
            assert parent == NO_POINT or found.node_value[parent] >= found.node_value[node]


def gaussians(x, y, wells):
    """A sum of Gaussian wells (depth, centre, width) on the grid (x, y)."""
    a, b = np.meshgrid(x, y, indexing="ij")
    surface = np.zeros_like(a)
    for depth, (ca, cb), width in wells:
        surface -= depth * np.exp(-((a - ca) ** 2 + (b - cb) ** 2) / (2 * width**2))
    return surface


def test_two_gaussian_wells_give_their_minima_saddle_and_basins():
    # Wells at (-1, 0) (depth 1) and (1, 0) (depth 0.6), symmetric about y = 0: the saddle
    # lies on y = 0 between them, at the highest point of the surface along that segment.
    x = np.linspace(-2.5, 2.5, 101)
    y = np.linspace(-2, 2, 81)
    wells = [(1.0, (-1.0, 0.0), 0.5), (0.6, (1.0, 0.0), 0.5)]
    surface = gaussians(x, y, wells)
    found = analyse(surface, threshold=0.05)
    assert len(found.birth) == 2
    minima = [np.unravel_index(point, surface.shape) for point in found.birth]
    assert [(x[i], y[j]) for i, j in minima] == [(-1.0, 0.0), (1.0, 0.0)]
    along = surface[(x >= -1) & (x <= 1), 40]  # y[40] = 0
    saddle = np.unravel_index(found.death[1], surface.shape)
    assert saddle[1] == 40 and found.death_value[1] == along.max()
    assert found.persistence[1] == pytest.approx(along.max() - surface[minima[1]])
    assert found.death[0] == NO_POINT and np.isnan(found.death_value[0])
    # Two basins at a threshold below the shallow well's persistence, one above it.
    assert list(found.basins) == [0, 1]
    assert (found.basin[x < -0.5, :] == 0).all() and (found.basin[x > 0.5, 30:51] == 1).all()
    merged = analyse(surface, threshold=found.persistence[1] + 1e-9)
    assert list(merged.basins) == [0] and (merged.basin == 0).all()


def test_a_monotone_surface_has_one_basin_and_nans_never_join_one():
    a, b = np.meshgrid(np.arange(30.0), np.arange(20.0), indexing="ij")
    surface = a + 0.5 * b  # one minimum, the corner
    found = analyse(surface)
    assert list(found.birth) == [0] and (found.basin == 0).all()
    surface[10, :] = np.nan  # a wall of NaN: two parts, two minima that never meet
    cut = analyse(surface)
    assert len(cut.birth) == 2 and (cut.death == NO_POINT).all()
    assert (cut.basin[10] == -1).all() and len(np.unique(cut.basin[cut.basin >= 0])) == 2


def test_a_1d_curve_has_interval_basins():
    curve = np.array([3.0, 1.0, 2.0, 4.0, 0.0, 5.0, 2.5, 3.0])
    found = analyse(curve, threshold=0.5)
    assert as_pairs(found) == {4: None, 1: 3, 6: 5}  # minima at 4, 1 and 6; saddles at 3, 5
    assert found.basin.tolist() == [1, 1, 1, 0, 0, 0, 2, 2]  # places in birth order: 4, 1, 6
    assert analyse(curve, threshold=3.0).basins.tolist() == [0, 1]  # 3 is not below 3
    assert analyse(curve, threshold=3.5).basin.tolist() == [0] * 8


def test_smad_and_total_variation_by_hand():
    curve = np.array([3.0, 1.0, 2.0, 4.0, 0.0, 5.0, 2.5, 3.0])
    found = analyse(curve)
    gaps = [4.0 - 1.0, 5.0 - 2.5]  # the finite pairs: (1, 3) and (6, 5)
    assert found.smad == pytest.approx(np.mean(gaps))
    assert found.smad_normalized == pytest.approx(np.mean(gaps) / 5.0)
    # Regions by steepest descent: 0-2 to point 1, 3-5 to point 4, 6-7 to point 6.
    assert found.region.tolist() == [1, 1, 1, 0, 0, 0, 2, 2]
    assert found.smad_weighted == pytest.approx(np.mean([3.0 * 3 / 8, 2.5 * 2 / 8]))
    assert total_variation(curve) == pytest.approx(np.mean(np.abs(np.diff(curve))))
    plane = np.array([[0.0, 1.0], [np.nan, 3.0]])
    assert total_variation(plane) == pytest.approx(np.mean([1.0, 2.0]))
