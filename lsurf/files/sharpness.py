"""The sharpness file: every work unit of an `lsurf sharpness` job, and the measures from them.

Layout (HDF5):
- root attributes: `sharpness_format` (1), lsurf_version, created, `config` (the resolved
  config, YAML), `checkpoint_sha256`, `parameters` (JSON: the names of the tensors that move)
  and `parts` (JSON: the group names below, in the order the job runs them);
- one group per part, each a 1D surface in the surface file's layout (lsurf.files.surface:
  `xcoordinates` are the unit indices 0..n−1, the dataset `value`, `done`), with attributes
  `measure`, `rho` (absent for `origin`):
  - `origin`: one unit, L(θ*) on the subset;
  - `average/rho=R`: one unit per noise draw, L(θ* + δ_k);
  - `worst/rho=R`: one unit, the worst-case sharpness on the whole subset;
  - `m/rho=R`: one unit per batch of m examples, its worst-case sharpness;
- `results`: float64 (rows, 4), one row per (measure, ρ) in the parts' order: ρ, value,
  standard error, units; attribute `rows` (JSON: the measures). NaN until the job's last
  unit is in; a reader computes them from the values when the job stopped just before.

Crash safety is the surface file's: built whole under a temporary name and renamed, every
dataset allocated then; a run writes values before the `done` flags that vouch for them.
numpy and h5py only: `lsurf info` reads it without torch.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

import lsurf
from lsurf.errors import OutputError
from lsurf.estimates import Estimate, average_case_estimate, m_sharpness_estimate
from lsurf.files.hdf5 import (
    GroupedJobFile,
    attributes_of,
    create_atomically,
    file_has_attribute,
    open_file,
    stored_config,
)
from lsurf.files.surface import SurfaceWriter, lay_out_surface, read_surface_in
from lsurf.metrics import Column

if TYPE_CHECKING:
    from lsurf.grid import Grid

FORMAT_VERSION = 1
ORIGIN = "origin"
RESULT_FIELDS = ("rho", "value", "standard_error", "units")


def part_name(measure: str, rho: float) -> str:
    return f"{measure}/rho={rho:g}"


@dataclass(frozen=True)
class PartLayout:
    """One part's group, as the job creates it."""

    name: str
    grid: Grid
    columns: list[Column]
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Part:
    """One part read back: its unit values (NaN where not done)."""

    name: str
    measure: str
    rho: float | None
    values: np.ndarray  # (units,)
    done: np.ndarray  # (units,) bool

    @property
    def complete(self) -> bool:
        return bool(self.done.all())


@dataclass(frozen=True)
class Result:
    """One measure at one radius, from its units."""

    measure: str
    rho: float
    estimate: Estimate
    units: int


@dataclass(frozen=True)
class Sharpness:
    """A sharpness file read into memory."""

    path: Path
    attributes: dict[str, Any]
    parts: dict[str, Part]
    results: list[Result]  # the complete measures (all of them once the job is done)

    @property
    def config(self) -> dict[str, Any]:
        return stored_config(self.attributes)

    @property
    def complete(self) -> bool:
        return all(part.complete for part in self.parts.values())


def results_of(parts: dict[str, Part]) -> list[Result]:
    """Each complete measure's value and standard error (lsurf.estimates): average-case from
    its draws and the origin's loss, worst-case its one unit, m-sharpness its batches'."""
    origin = parts.get(ORIGIN)
    found = []
    for part in parts.values():
        if part.measure == ORIGIN or not part.complete or part.rho is None:
            continue
        values = part.values.tolist()
        if part.measure == "average":
            if origin is None or not origin.complete:
                continue
            estimate = average_case_estimate(values, float(origin.values[0]))
        elif part.measure == "worst":
            estimate = Estimate(values[0], float("nan"))
        else:
            estimate = m_sharpness_estimate(values)
        found.append(Result(part.measure, part.rho, estimate, len(values)))
    return found


def is_sharpness_file(h5file: h5py.File) -> bool:
    return "sharpness_format" in h5file.attrs


def is_sharpness_path(path: Path) -> bool:
    """Whether `path` is an existing sharpness file (False for anything else)."""
    return file_has_attribute(path, "sharpness_format")


def create_sharpness_file(
    path: Path, attributes: dict[str, Any], layouts: list[PartLayout]
) -> SharpnessFile:
    """Create (or atomically replace) the file with every part's group, nothing done."""

    def build(h5file: h5py.File) -> None:
        h5file.attrs["sharpness_format"] = FORMAT_VERSION
        h5file.attrs["lsurf_version"] = lsurf.__version__
        h5file.attrs["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        for key, value in attributes.items():
            h5file.attrs[key] = value
        h5file.attrs["parts"] = json.dumps([layout.name for layout in layouts])
        for layout in layouts:
            lay_out_surface(h5file.create_group(layout.name), layout.grid, layout.columns, {})
            for key, value in layout.attributes.items():
                h5file[layout.name].attrs[key] = value
        measured = [layout for layout in layouts if layout.name != ORIGIN]
        table = h5file.create_dataset(
            "results", data=np.full((len(measured), len(RESULT_FIELDS)), np.nan)
        )
        table.attrs["rows"] = json.dumps([layout.attributes["measure"] for layout in measured])
        table.attrs["fields"] = json.dumps(list(RESULT_FIELDS))

    create_atomically(path, build)
    return SharpnessFile(path)


class SharpnessFile(GroupedJobFile):
    """The open file of a running job (rank 0 its only writer): a PartWriter per part."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "sharpness_format", "parts", "sharpness file")

    def writer(self, name: str) -> PartWriter:
        return PartWriter(self.path, self._file[name], name)

    def write_results(self) -> list[Result]:
        """The measures, once every unit is in (after their flags are on disk)."""
        parts = _parts(self._file)
        results = results_of(parts)
        if all(part.complete for part in parts.values()):
            table = self._file["results"]
            table[...] = np.array(
                [[r.rho, r.estimate.value, r.estimate.standard_error, r.units] for r in results]
            ).reshape(table.shape)
            self._file.flush()
        return results


class PartWriter(SurfaceWriter):
    """A part's units in the sharpness file, named in the job's log by its part."""

    def __init__(self, path: Path, group: h5py.Group, name: str) -> None:
        super().__init__(path, group)
        self.name = name

    def written(self) -> str:
        return f"{self.name} written to {self.path}"


def _parts(h5file: h5py.File) -> dict[str, Part]:
    parts = {}
    for name in json.loads(str(h5file.attrs["parts"])):
        group = h5file[name]
        surface = read_surface_in(group, Path(h5file.filename))
        measure = str(group.attrs.get("measure", ORIGIN))
        rho = float(group.attrs["rho"]) if "rho" in group.attrs else None
        values = np.where(surface.done, surface.metrics["value"], np.nan)
        parts[name] = Part(name, measure, rho, values, surface.done)
    return parts


def read_sharpness_attributes(path: Path) -> dict[str, Any]:
    with open_file(path, "r", "output file") as h5file:
        if not is_sharpness_file(h5file):
            raise OutputError(
                f"output {path} exists and is not an lsurf sharpness file; choose another "
                "output path or pass --force to overwrite it"
            )
        return attributes_of(h5file)


def read_sharpness(path: Path) -> Sharpness:
    """Read a sharpness file whole, without locking it (a running job's file may be read)."""
    with open_file(path, "r", "sharpness file", locking=False) as h5file:
        if not is_sharpness_file(h5file):
            raise OutputError(f"{path} is an HDF5 file but not a sharpness file")
        parts = _parts(h5file)
        return Sharpness(path, attributes_of(h5file), parts, results_of(parts))
