"""`lsurf plot --compare seeds`: one checkpoint swept along several random seeds (the paper's
repeatability check: do different random directions give the same picture?).

Input: the `Panel`s of the files. Output: the same panels labelled 'seed N' (from each file's
stored `directions.seed`), after checking that they are comparable: one checkpoint, one grid,
directions that a seed draws, and no seed twice. Any other mix is refused with one line.
The figures then draw them as every comparison: 2D panels side by side on one color scale
with the same contour levels; 1D curves overlaid on one axes, a color per seed
(lsurf.plot.curves.draw_overlaid_curves).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lsurf import kinds
from lsurf.errors import LsurfError
from lsurf.files.surface import Surface
from lsurf.plot.view import Panel


def label_by_seed(panels: Sequence[Panel]) -> list[Panel]:
    """The panels labelled 'seed N', checked to be one checkpoint's seeds on one grid."""
    if len(panels) < 2:
        raise LsurfError("--compare seeds needs two or more surface files of one checkpoint")
    first = panels[0].surface
    first_checkpoint = _checkpoint(first)
    seen: dict[int, Path] = {}
    labelled = []
    for panel in panels:
        surface = panel.surface
        checkpoint = _checkpoint(surface)
        if checkpoint != first_checkpoint:
            raise LsurfError(
                f"--compare seeds: {surface.path} sweeps {checkpoint} but {first.path} sweeps "
                f"{first_checkpoint}; give the seeds of one checkpoint"
            )
        if not _same_grid(surface, first):
            raise LsurfError(
                f"--compare seeds: {surface.path} has the grid {_grid(surface)} but {first.path} "
                f"has {_grid(first)}; sweep every seed on the same grid"
            )
        seed = _seed(surface)
        if seed in seen:
            raise LsurfError(
                f"--compare seeds: {seen[seed]} and {surface.path} both have directions.seed "
                f"{seed}, the same directions; sweep with another seed (--set directions.seed=N)"
            )
        seen[seed] = surface.path
        labelled.append(dataclasses.replace(panel, label=f"seed {seed}"))
    return labelled


def _checkpoint(surface: Surface) -> str:
    checkpoint = (surface.config.get("model") or {}).get("checkpoint")
    if not checkpoint:
        raise LsurfError(
            f"--compare seeds: {surface.path} stores no model.checkpoint, so it cannot be "
            "checked to sweep the same checkpoint as the others; compare it without --compare"
        )
    return str(checkpoint)


def _seed(surface: Surface) -> int:
    """The file's directions.seed, when its kind of direction is drawn with that seed."""
    directions = surface.config.get("directions") or {}
    name = directions.get("kind")
    kind = kinds.described(name)
    # A plane's y direction may be random where its x is not (kind: target, whose seed is
    # among the settings that shape only a plane's y); a line's is not.
    seeded = "seed" in kind.keys and (surface.y is not None or "seed" not in kind.plane_keys)
    if not seeded:
        raise LsurfError(
            f"--compare seeds: {surface.path} has directions.kind {name}, which no seed "
            "changes; compare random directions"
        )
    seed = directions.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise LsurfError(f"--compare seeds: {surface.path} stores no directions.seed")
    return seed


def _same_grid(surface: Surface, other: Surface) -> bool:
    if (surface.y is None) != (other.y is None):
        return False
    if not np.array_equal(surface.x, other.x):
        return False
    return surface.y is None or other.y is None or np.array_equal(surface.y, other.y)


def _grid(surface: Surface) -> str:
    """'x=-1:1:51 y=-1:1:51', as grid specs are written."""
    axes = [("x", surface.x)] + ([("y", surface.y)] if surface.y is not None else [])
    return " ".join(f"{name}={values[0]:g}:{values[-1]:g}:{len(values)}" for name, values in axes)
