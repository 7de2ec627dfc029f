"""`directions.kind: reference` — d1 (and d2) read from a direction file the reference code
(tomgoldstein/loss-landscape) wrote, so one of its planes is re-evaluated point for point on
the same checkpoint.

The reference's layout (net_plotter.setup_direction, h5_util.write_list): a group
`xdirection` (and `ydirection` for a plane) of datasets named "0", "1", ..., one per tensor,
with no names and no settings. The position is all that ties an entry to a tensor:
- `space: weights` (its --dir_type weights, the default): entry i is the model's i-th
  parameter, in `named_parameters()` order (its `net.parameters()`);
- `space: states` (--dir_type states): entry i is the i-th `state_dict()` entry, BN running
  statistics and the integer `num_batches_tracked` included. Integer entries are checked for
  shape and not moved: evaluation in eval mode never reads them.
Entries may be float32 or float64; both become float32, as the reference's `torch.Tensor(d)`
makes them. A plane's file also serves a line (along d1), as in the reference. Other
datasets beside the groups (a PCA file's explained_variance_ratio_, ...) are not read.

Input: the file and the model holding θ*. Output: `Directions` keyed by state_dict key, over
exactly the tensors the evaluator moves. A file that does not fit the model is refused
before anything is written, naming the first entry that does not fit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsurf.errors import ConfigError
from lsurf.kinds import Context, Inputs, Kind

if TYPE_CHECKING:
    import h5py
    from torch import nn

    from lsurf.config import DirectionsConfig
    from lsurf.directions import Directions

GROUPS = ("xdirection", "ydirection")
LAYOUT = 'groups xdirection (and ydirection) of datasets named "0", "1", ...'

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Layout:
    """The shapes of a reference direction file's entries, in entry order."""

    x: tuple[Shape, ...]
    y: tuple[Shape, ...] | None  # None: a 1D file

    def describe(self) -> str:
        groups = "x and y" if self.y is not None else "x"
        return f"direction file in the reference's layout: {groups}, {len(self.x)} entries"


class ReferenceDirections(Kind):
    name = "reference"
    keys = ("reference", "space", "trajectory", "pattern", "trajectories")

    def resolve(self, settings: DirectionsConfig, plane: bool) -> DirectionsConfig:
        if settings.reference is None:
            raise ConfigError(
                "directions.kind: reference needs directions.reference (the direction file "
                "the reference code wrote, its --dir_file)"
            )
        return dataclasses.replace(settings, space=settings.space or "weights")

    def load(self, settings: DirectionsConfig, context: Context) -> Inputs:
        from lsurf import checkpoint

        assert settings.reference is not None  # resolve requires it
        layout = read_layout(settings.reference)
        if context.plane and layout.y is None:
            raise ConfigError(
                f"directions.reference {settings.reference} holds xdirection only (a 1D "
                "direction file): remove grid.y, or give a file with ydirection"
            )
        states = settings.space == "states"
        names, shapes = entries_of(context.model, states)
        for group, found in zip(GROUPS, (layout.x, layout.y), strict=True):
            if found is None or (group == "ydirection" and not context.plane):
                continue
            problem = misfit(group, found, names, shapes, states)
            if problem:
                raise ConfigError(
                    f"directions.reference {settings.reference} does not fit the model: {problem}"
                )
        return Inputs({"reference_sha256": checkpoint.file_digest(settings.reference)})

    def compute(self, settings: DirectionsConfig, context: Context, inputs: Inputs) -> Directions:
        import h5py
        import numpy as np
        import torch

        from lsurf import params
        from lsurf.directions import Directions

        assert settings.reference is not None  # resolve requires it
        states = settings.space == "states"
        names, _ = entries_of(context.model, states)
        moved = params.movable(context.model, include_buffers=states)
        position = {name: index for index, name in enumerate(names)}
        assert set(moved) <= set(position)  # every moved tensor is a parameter or an entry

        def read(group: h5py.Group) -> dict[str, torch.Tensor]:
            # np.asarray casts float64 (and a foreign byte order) to native float32.
            return {
                key: torch.from_numpy(np.asarray(group[str(position[key])][...], np.float32))
                for key in moved
            }

        with h5py.File(settings.reference, "r", locking=False) as h5file:
            x = read(h5file["xdirection"])
            y = read(h5file["ydirection"]) if context.plane else None
        # Whether the buffers move is the kind's `moves_buffers`, which the pipeline applies.
        return Directions(kind=self.name, norm="none", ignore="none", seed=0, x=x, y=y)

    def record(self, settings: DirectionsConfig) -> dict[str, Any]:
        # The file's digest (`load`'s identity, which the direction file records beside these:
        # lsurf.run.identity.direction_settings), not its path: a direction file computed from
        # one reference file is never reused for another, even under the same name.
        return {"norm": "none", "ignore": "none", "seed": 0, "space": settings.space}

    def describe(self, settings: Mapping[str, Any]) -> str:
        reference = settings.get("reference")  # a direction file keeps the digest only
        digest = str(settings.get("reference_sha256", ""))
        text = f"file {reference}" if reference else f"file sha256 {digest[:16]}…"
        return f"{text}  space={settings.get('space') or 'weights'}"

    def subject(self, settings: Mapping[str, Any]) -> str:
        reference = settings.get("reference")
        text = "reference direction file"
        if reference:
            text += f" {Path(str(reference)).name}"
        if settings.get("space") == "states":
            text += ", BN statistics moved"
        return text


def entries_of(model: nn.Module, states: bool) -> tuple[list[str], list[Shape]]:
    """The names and shapes the reference's entries stand for, in its order."""
    if states:
        found = list(model.state_dict().items())
    else:
        found = list(model.named_parameters())
    return [name for name, _ in found], [tuple(tensor.shape) for _, tensor in found]


def misfit(
    group: str, found: tuple[Shape, ...], names: list[str], shapes: list[Shape], states: bool
) -> str:
    """Where the entries of `group` first differ from the model's tensors ('' if nowhere)."""
    what, whats = ("parameter", "parameters")
    if states:
        what, whats = "state_dict entry", "state_dict entries"
    other = "weights" if states else "states"
    hint = (
        f"; was it made for another model, or with the reference's --dir_type {other} "
        f"(directions.space: {other})?"
    )
    for index, (entry, shape) in enumerate(zip(found, shapes, strict=False)):
        if entry != shape:
            return (
                f"{group}/{index} has shape {entry} but the model's {ordinal(index + 1)} {what} "
                f"{names[index]} is {shape}{hint}"
            )
    if len(found) < len(shapes):
        missing = len(found)
        return (
            f"{group} has {len(found)} entries but the model has {len(shapes)} {whats}: its "
            f"{ordinal(missing + 1)}, {names[missing]} {shapes[missing]}, has none{hint}"
        )
    if len(found) > len(shapes):
        extra = len(shapes)
        return (
            f"{group} has {len(found)} entries but the model has {len(shapes)} {whats}: "
            f"{group}/{extra} {found[extra]} is the first extra entry{hint}"
        )
    return ""


def ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st."""
    suffixes = {1: "st", 2: "nd", 3: "rd"}
    if number % 100 in (11, 12, 13):
        return f"{number}th"
    return f"{number}{suffixes.get(number % 10, 'th')}"


def read_layout(path: Path) -> Layout:
    """The entry shapes of the reference direction file at `path`; one ConfigError line when
    it is missing, not HDF5, or laid out otherwise."""
    import h5py

    where = f"directions.reference {path}"
    if not Path(path).exists():
        raise ConfigError(f"{where} not found; give the direction file the reference code wrote")
    if not Path(path).is_file():
        raise ConfigError(f"{where} is not a file; give the direction file the reference wrote")
    try:
        h5file = h5py.File(path, "r", locking=False)
    except OSError as error:
        raise ConfigError(f"{where} is not a readable HDF5 file ({error})") from error
    with h5file:
        if "kind" in h5file.attrs:  # lsurf's own: its datasets are named by parameter
            kind = str(h5file.attrs["kind"])
            raise ConfigError(
                f"{where} is a direction file of lsurf, not of the reference code: reuse it "
                f"with directions.file and directions.kind: {kind}"
            )
        layout, problem = layout_of(h5file)
    if layout is None:
        raise ConfigError(f"{where} is not in the reference's layout ({LAYOUT}): {problem}")
    return layout


def describe_file(path: Path) -> str | None:
    """`lsurf info`'s words on a file in the reference's layout (None for any other file)."""
    import h5py

    with h5py.File(path, "r", locking=False) as h5file:
        if "kind" in h5file.attrs:
            return None
        layout, _ = layout_of(h5file)
    return None if layout is None else layout.describe()


def layout_of(h5file: h5py.File) -> tuple[Layout | None, str]:
    """The file's layout, or None and what breaks it."""
    import h5py

    groups: list[tuple[Shape, ...] | None] = []
    for name in GROUPS:
        group = h5file.get(name)
        if group is None:
            if name == "xdirection":
                return None, "it has no xdirection group"
            groups.append(None)
            continue
        if not isinstance(group, h5py.Group):
            return None, f"{name} is not a group"
        entries = [group.get(str(index)) for index in range(len(group))]
        if not entries:
            return None, f"{name} is empty"
        if not all(isinstance(entry, h5py.Dataset) for entry in entries):
            unexpected = sorted(set(group) - {str(index) for index in range(len(group))})
            return None, f"{name} holds {', '.join(unexpected[:3]) or 'groups'}"
        groups.append(tuple(tuple(entry.shape) for entry in entries))
    x, y = groups
    assert x is not None  # returned above otherwise
    if y is not None and len(y) != len(x):
        return None, f"xdirection has {len(x)} entries but ydirection {len(y)}"
    return Layout(x, y), ""
