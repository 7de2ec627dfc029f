"""The topology of a stored surface: its sublevel-set merge tree, persistence pairs and basins.

Input: one column of a surface as an array over the grid, (nx,) or (nx, ny), NaN where a
point is missing or not done. Output: a `Topology` (plain numpy arrays), exact on the grid
graph. numpy only: no torch, no file access.

Definitions (the grid graph: a point's neighbours are the points one step away along x or y,
and with `neighbours=8` also the diagonal ones; a 1D curve's are the points beside it):
- Points enter the sublevel set in the order of their value, ties broken by flat index (the
  point's *rank*). NaN points never enter and cut the graph.
- A point with no neighbour of lower rank is a local minimum: a component is born there.
  Each point's steepest-descent step goes to its neighbour of lowest rank below its own; the
  points whose steps end at a minimum are its *region* (a region is connected and holds its
  minimum).
- Two components merge at the first edge between them to enter, at its higher point (the
  saddle). The younger (the higher minimum) dies there: the persistence pair (birth at its
  minimum, death at the saddle), persistence = death value − birth value. The oldest minimum
  of each connected part of the grid never dies (death NaN). This is the elder rule; since a
  sublevel component is a union of whole regions (a point's descent stays below it), the
  merges are those of regions joined by their lowest edge: Kruskal on the region graph.
- The merge tree: a leaf per minimum, a node per merge (its two children the components that
  met), and per connected part a root at its highest point.
- Basins at a threshold τ: every region starts as its own basin; at each point s, in the
  order they enter, of the basins that meet at s (s's own and its lower neighbours') every
  one but the oldest merges into the oldest when f(s) minus its minimum is below τ (ToMATo's
  rule, Chazal et al. 2013, on the grid graph). τ = 0 keeps every local minimum's basin; τ
  above the value range leaves one basin per connected part.
- SMAD (saddle-minimum average distance, as Landscaper defines it): the mean persistence of
  the finite pairs, optionally divided by the value range, or weighted by the share of the
  grid each pair's minimum's region covers (mean of persistence × share). Total variation:
  the mean |f(u) − f(v)| over the grid's axis-aligned edges with both ends present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Neighbours = Literal[4, 8]
NO_POINT = -1  # a missing point index (a root's parent, a death that never came, a NaN's basin)


@dataclass(frozen=True)
class Topology:
    """What `analyse` finds; point indices are flat indices into the grid (C order)."""

    shape: tuple[int, ...]
    neighbours: int
    # Persistence pairs, one per local minimum, ordered by birth rank (the oldest first):
    birth: np.ndarray  # (k,) int64: the minimum's point
    death: np.ndarray  # (k,) int64: the saddle where it dies, NO_POINT for the oldest
    birth_value: np.ndarray  # (k,) float64
    death_value: np.ndarray  # (k,) float64, NaN where it never dies
    # The merge tree: nodes 0..k-1 are the minima (in the order above), then one per merge,
    # then one root per connected part of the grid.
    node_point: np.ndarray  # (m,) int64
    node_value: np.ndarray  # (m,) float64
    node_parent: np.ndarray  # (m,) int64, NO_POINT for a root
    region: np.ndarray  # grid-shaped int64: the minimum (0..k-1) each point descends to; -1: NaN
    threshold: float
    basin: np.ndarray  # grid-shaped int64: each point's basin (a minimum, 0..k-1); -1: NaN
    smad: float
    smad_normalized: float
    smad_weighted: float
    total_variation: float

    @property
    def persistence(self) -> np.ndarray:
        return self.death_value - self.birth_value

    @property
    def basins(self) -> np.ndarray:
        """The minima that head a basin at the threshold, by birth rank (the oldest first)."""
        return np.unique(self.basin[self.basin >= 0])


def analyse(values: np.ndarray, threshold: float = 0.0, neighbours: Neighbours = 4) -> Topology:
    """The merge tree, persistence pairs and basins (see the module docstring) of `values`,
    a (nx,) or (nx, ny) array with NaN where a point is missing; `threshold` is τ, in the
    values' units."""
    assert values.ndim in (1, 2) and neighbours in (4, 8), (values.shape, neighbours)
    flat = np.asarray(values, dtype=np.float64).ravel()
    present = np.isfinite(flat)
    rank = _ranks(flat, present)
    u, v = _edges(values.shape, neighbours, present)
    region = _regions(flat.size, rank, u, v)
    minima = np.flatnonzero(present & (region == np.arange(flat.size)))
    minima = minima[np.argsort(rank[minima])]  # (k,) by birth rank
    place = np.full(flat.size, NO_POINT, dtype=np.int64)
    place[minima] = np.arange(len(minima))
    # Edges between regions, as (region of u, region of v), in the order they enter.
    cross = region[u] != region[v]
    u, v = u[cross], v[cross]
    high = np.where(rank[u] > rank[v], u, v)  # the edge's saddle candidate
    order = np.argsort(rank[high], kind="stable")
    first, second, saddle = place[region[u][order]], place[region[v][order]], high[order]

    region_grid = np.where(present, place[region], NO_POINT)  # (size,): a minimum's place
    death, node_point, node_parent = _merge(rank, minima, first, second, saddle, region_grid)
    basin_of = _cluster(flat, minima, first, second, saddle, threshold)
    basin_grid = np.full(flat.size, NO_POINT, dtype=np.int64)
    basin_grid[present] = basin_of[region_grid[present]]
    birth_value = flat[minima]
    death_value = np.where(death >= 0, flat[np.maximum(death, 0)], np.nan)
    smad, normalized, weighted = _smad(flat, present, birth_value, death_value, region_grid)
    return Topology(
        shape=tuple(values.shape),
        neighbours=neighbours,
        birth=minima,
        death=death,
        birth_value=birth_value,
        death_value=death_value,
        node_point=node_point,
        node_value=flat[node_point],
        node_parent=node_parent,
        region=region_grid.reshape(values.shape),
        threshold=float(threshold),
        basin=basin_grid.reshape(values.shape),
        smad=smad,
        smad_normalized=normalized,
        smad_weighted=weighted,
        total_variation=total_variation(np.asarray(values, dtype=np.float64)),
    )


# ---------------------------------------------------------------------------- the grid graph


def _ranks(flat: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Each point's place in the order of entry (value, then index); NaN points last."""
    keyed = np.where(present, flat, np.inf)
    order = np.lexsort((np.arange(flat.size), ~present, keyed))
    rank = np.empty(flat.size, dtype=np.int64)
    rank[order] = np.arange(flat.size)
    return rank


def _edges(
    shape: tuple[int, ...], neighbours: int, present: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The grid graph's edges (u, v) with both ends present, as flat indices."""
    index = np.arange(int(np.prod(shape))).reshape(shape)
    if len(shape) == 1:
        pairs = [(index[:-1], index[1:])]
    else:
        pairs = [(index[:-1, :], index[1:, :]), (index[:, :-1], index[:, 1:])]
        if neighbours == 8:
            pairs += [(index[:-1, :-1], index[1:, 1:]), (index[:-1, 1:], index[1:, :-1])]
    u = np.concatenate([a.ravel() for a, _ in pairs])
    v = np.concatenate([b.ravel() for _, b in pairs])
    keep = present[u] & present[v]
    return u[keep], v[keep]


def _regions(size: int, rank: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Each point's local minimum by steepest descent (a minimum is its own; so is a NaN
    point, having no edges)."""
    lowest = rank.copy()  # the lowest rank among each point and its neighbours
    np.minimum.at(lowest, u, rank[v])
    np.minimum.at(lowest, v, rank[u])
    point_of_rank = np.empty(size, dtype=np.int64)
    point_of_rank[rank] = np.arange(size)
    step = point_of_rank[lowest]  # (size,): the descent step, a point itself at a minimum
    while True:  # pointer jumping: every point's step becomes its minimum
        jumped = step[step]
        if np.array_equal(jumped, step):
            return step
        step = jumped


# ---------------------------------------------------------------------------- merges


def _find(parent: list[int], x: int) -> int:
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        parent[x], x = root, parent[x]
    return root


def _merge(
    rank: np.ndarray,
    minima: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    saddle: np.ndarray,
    point_region: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kruskal over the region graph under the elder rule: each minimum's death saddle, and
    the merge tree (node points and parents)."""
    k = len(minima)
    parent = list(range(k))  # union-find over minima; a component's root is its oldest
    top = list(range(k))  # each component's current top node in the tree
    death = np.full(k, NO_POINT, dtype=np.int64)
    node_point, node_parent = list(minima), [NO_POINT] * k
    for a, b, point in zip(first.tolist(), second.tolist(), saddle.tolist(), strict=True):
        ra, rb = _find(parent, a), _find(parent, b)
        if ra == rb:
            continue
        elder, younger = (ra, rb) if ra < rb else (rb, ra)  # minima are in birth order
        death[younger] = point
        node = len(node_point)
        node_point.append(point)
        node_parent.append(NO_POINT)
        node_parent[top[elder]] = node_parent[top[younger]] = node
        parent[younger] = elder
        top[elder] = node
    # A root per connected part of the grid, at its highest point, above its last merge.
    part = np.asarray([_find(parent, m) for m in range(k)], dtype=np.int64)
    for root, point in _highest_points(rank, part, point_region).items():
        if point != node_point[top[root]]:  # (a part of one point is its own root)
            node_parent[top[root]] = len(node_point)
            node_point.append(point)
            node_parent.append(NO_POINT)
    return death, np.asarray(node_point, dtype=np.int64), np.asarray(node_parent, dtype=np.int64)


def _highest_points(rank: np.ndarray, part: np.ndarray, point_region: np.ndarray) -> dict[int, int]:
    """The highest-ranked point of each connected part, keyed by the part's oldest minimum
    (`part[m]`: the part of minimum m; `point_region`: each point's minimum, -1 for NaN)."""
    present = np.flatnonzero(point_region >= 0)
    top_rank = np.full(len(part), -1, dtype=np.int64)
    np.maximum.at(top_rank, part[point_region[present]], rank[present])
    point_of_rank = np.empty_like(rank)
    point_of_rank[rank] = np.arange(rank.size)
    return {int(root): int(point_of_rank[top_rank[root]]) for root in np.unique(part)}


def _cluster(
    flat: np.ndarray,
    minima: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    saddle: np.ndarray,
    threshold: float,
) -> np.ndarray:
    """Each minimum's basin at `threshold`: the minimum (a place 0..k-1) heading the basin
    its region ends in. ToMATo's rule at each saddle point s, in the order they enter: of the
    basins meeting there, every one but the oldest merges into the oldest when f(s) minus its
    minimum is below the threshold."""
    k = len(minima)
    parent = list(range(k))  # union-find over minima; a basin's root is its oldest minimum
    if threshold <= 0 or not len(saddle):
        return np.arange(k, dtype=np.int64)
    height = flat[minima].tolist()
    starts = np.r_[0, np.flatnonzero(np.diff(saddle)) + 1, len(saddle)].tolist()
    pairs = list(zip(first.tolist(), second.tolist(), strict=True))
    for start, stop in zip(starts[:-1], starts[1:], strict=True):
        level = float(flat[saddle[start]])
        meeting = {_find(parent, m) for pair in pairs[start:stop] for m in pair}
        oldest = min(meeting)  # places are in birth order
        for basin in meeting - {oldest}:
            if level - height[basin] < threshold:
                parent[basin] = oldest
    return np.asarray([_find(parent, m) for m in range(k)], dtype=np.int64)


# ---------------------------------------------------------------------------- smoothness


def _smad(
    flat: np.ndarray,
    present: np.ndarray,
    birth_value: np.ndarray,
    death_value: np.ndarray,
    region: np.ndarray,
) -> tuple[float, float, float]:
    """SMAD, SMAD over the value range, and SMAD weighted by each minimum's region share."""
    finite = np.isfinite(death_value)
    if not finite.any():
        return 0.0, 0.0, 0.0
    gaps = (death_value - birth_value)[finite]
    values = flat[present]
    spread = float(values.max() - values.min())
    shares = np.bincount(region[region >= 0], minlength=len(birth_value)) / flat.size
    weighted = float(np.mean(gaps * shares[finite]))
    return float(gaps.mean()), float(gaps.mean() / spread) if spread > 0 else 0.0, weighted


def total_variation(values: np.ndarray) -> float:
    """The mean |f(u) − f(v)| over the grid's axis-aligned edges whose ends are both present."""
    differences = [np.diff(values, axis=axis).ravel() for axis in range(values.ndim)]
    every = np.concatenate(differences)
    every = every[np.isfinite(every)]
    return float(np.abs(every).mean()) if every.size else 0.0
