"""What tells one sweep from another: resuming an output, reusing a direction file.

A surface file records the resolved config and the digests of its inputs (θ*, the kind's
own files, the directions); a direction file records how its directions were made. Before
a sweep resumes a file or reuses directions, the records must match this sweep's, except
for the keys that change no result value (`OPERATIONAL_KEYS`).

Input: a `SweepConfig`, the identity `prepare` gathered, what a file records. Output: the
keys that differ, or the directions to use (read back, or computed by the kind).
"""

from __future__ import annotations

import json
from typing import Any

from lsurf import kinds, params
from lsurf.config import SweepConfig, stored_sweep_config
from lsurf.directions import Directions
from lsurf.errors import LsurfError, OutputError
from lsurf.files import directions as direction_file
from lsurf.files.hdf5 import stored_config
from lsurf.schema import differences, to_plain

# Keys that do not change a single result value, so resuming with them changed is fine (the
# hessian.* keys named here are read by `lsurf hessian` only, never by a sweep).
OPERATIONAL_KEYS = {
    "data.download",
    "data.cache_mb",
    "data.workers",
    "evaluation.compile_cache",
    "hessian.top_k",
    "hessian.trace_samples",
    "hessian.density_runs",
    "hessian.density_steps",
    "hessian.per_layer",
    "hessian.output",
}


def recorded_differences(
    found: dict[str, Any], config: SweepConfig, identity: dict[str, Any]
) -> list[str]:
    """Where the sweep a surface file records (`found`: its attributes) differs from this
    one: config keys that change results, and input files whose contents changed."""
    old_config = stored_config(found)
    try:  # keys added to lsurf since the file was written take their defaults
        old_config = to_plain(stored_sweep_config(old_config))
    except LsurfError:
        pass  # a config this version cannot read: compared as written, key by key
    new_config = to_plain(config)
    changed = [key for key in differences(old_config, new_config) if key not in OPERATIONAL_KEYS]
    for key in (*INPUT_DIGESTS, "directions_sha256"):
        if found.get(key, "") != identity.get(key, ""):
            changed.append(key.removesuffix("_sha256") + " contents")
    return changed


def direction_settings(config: SweepConfig, identity: dict[str, Any]) -> dict[str, Any]:
    """What a direction file records of how it was made; reuse requires all of it to match."""
    settings = config.directions
    kind = kinds.get(settings.kind)
    recorded = {
        "kind": settings.kind,
        **kind.record(settings),
        "checkpoint_sha256": identity["checkpoint_sha256"],
        "target_sha256": identity.get("target_sha256", ""),
    }
    for key in ("y_target_sha256", "reference_sha256"):  # digests of the kind's inputs, if any
        if key in identity:
            recorded[key] = identity[key]
    if kind.uses_hessian:
        recorded["eigenvectors"] = settings.eigenvectors
        recorded["hessian"] = hessian_definition(config)
    # directions.params, only where it selects: a default file stays as it was, and one made
    # for a selection is refused by a sweep without it (OPTIONAL_RECORDS), as a changed ignore.
    recorded |= {key: identity[key] for key in SELECTION_RECORDS if key in identity}
    return recorded


def selection_identity(selected: params.Selected) -> dict[str, Any]:
    """What a sweep with a directions.params selection records of it (surface and direction
    file): its globs, and what they picked on this model (the names in the direction file's
    groups; in the surface file when they fit an attribute)."""
    names = json.dumps(list(selected.keys))
    return {
        "params_include": json.dumps(list(selected.selection.include)),
        "params_exclude": json.dumps(list(selected.selection.exclude)),
        "params_tensors": len(selected.keys),
        "params_values": selected.values,
        "params_total": selected.tensors,
    } | ({"params_names": names} if len(names) <= NAMES_ATTRIBUTE_LIMIT else {})


SELECTION_RECORDS = (
    "params_include", "params_exclude", "params_tensors", "params_values", "params_total"
)  # fmt: skip
# An HDF5 attribute holds at most 64 KiB in an object header: longer lists of names are
# left to the direction file, whose groups hold one dataset per selected tensor.
NAMES_ATTRIBUTE_LIMIT = 32_000


# The digests of a sweep's input files (θ*, and a kind's own: lsurf.kinds.Inputs.identity),
# compared on resume: a file whose contents changed under the same name is another sweep.
INPUT_DIGESTS = ("checkpoint_sha256", "target_sha256", "y_target_sha256", "reference_sha256")

# Recorded only where they say more than files written before they existed; a file that
# records one the sweep does not expect was made differently (e.g. with space: states).
OPTIONAL_RECORDS = (
    "space", "same_dir", "y_norm", "y_ignore", "y_target_sha256", "trajectories",
    "params_include", "params_exclude",
)  # fmt: skip


def hessian_definition(config: SweepConfig) -> str:
    """The settings that decide a Hessian's eigenvectors, as a direction file records them."""
    settings, data = config.hessian, config.data
    return (
        f"split={settings.split} params={settings.params} tol={settings.tol:g} "
        f"max_products={settings.max_products} seed={settings.seed} "
        f"subset={data.subset} subset_seed={data.subset_seed} loss={config.evaluation.loss}"
        + (f" reference_split={data.reference_split}" if data.reference_split else "")
        + ("" if settings.names.everything else f" names={settings.names.describe()}")
    )


def obtain_directions(
    config: SweepConfig,
    kind: kinds.Kind,
    context: kinds.Context,
    inputs: kinds.Inputs,
    identity: dict[str, Any],
    force: bool,
) -> tuple[Directions, bool]:
    """Reuse the direction file when it exists and fits this sweep; else compute anew.

    With --force the default direction file (the one beside the output, owned by it) is
    recomputed; a file named in directions.file may serve other sweeps and is never replaced.
    """
    path = config.direction_file
    if not path.exists() or (force and config.directions.file is None):
        return kind.compute(config.directions, context, inputs), True

    directions, attributes = direction_file.read_directions(path)
    expected = direction_settings(config, identity)
    found = {key: attributes.get(key, "") for key in expected}
    mismatched = [key for key in expected if found[key] != expected[key]]
    for key in OPTIONAL_RECORDS:
        if key in attributes and key not in expected:
            found[key], expected[key] = attributes[key], "(not set)"
            mismatched.append(key)
    weights = params.movable(
        context.model,
        include_buffers=kind.moves_buffers(config.directions),
        selection=config.directions.params if "params" in kind.keys else None,
    )
    shapes = {key: tuple(tensor.shape) for key, tensor in weights.items()}
    if {key: tuple(t.shape) for key, t in directions.x.items()} != shapes:
        mismatched.append("parameter names/shapes")
    if (directions.y is None) != (config.grid.y is None):
        mismatched.append("dimensions (1D vs 2D)")
    if mismatched:
        detail = ", ".join(
            f"{key} {found[key]!r} vs {expected[key]!r}" if key in found else key
            for key in mismatched
        )
        raise OutputError(
            f"direction file {path} was made for another sweep (differs in: {detail}); "
            "delete it, point directions.file elsewhere, or match its settings"
        )
    return directions, False
