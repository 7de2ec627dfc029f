"""`lsurf info`: what a surface file or a direction file holds, in a few plain lines.

Input: a path to an HDF5 file written by lsurf (or a surface file of the reference code).
Output: the report as text — for a surface its model, directions, grid, metric columns (as
the file lists them, and those derived from them), completeness, its curvature (the
solver's settings, the ranges of λmax, λmin and |λmin/λmax|, the products spent and the
points that did not converge) and the best point so far of every ranked metric where lower
is better (readable while a sweep still writes it); for a direction file how it was made,
its size and the angle between its two directions (for one the reference code wrote: its
layout, all that such a file says).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lsurf import kinds
from lsurf.config import ParamsSelection
from lsurf.files.captures import is_captures_path, read_captures
from lsurf.files.connect import is_connect_path, read_connect
from lsurf.files.curvature import (
    BOTH_RESIDUALS,
    column_of,
    derived_names,
    eig_ratio,
    solver_settings,
    unconverged,
)
from lsurf.files.directions import is_direction_file
from lsurf.files.sharpness import is_sharpness_path, read_sharpness
from lsurf.files.surface import Surface, default_metric, read_surface
from lsurf.files.topology import describe_stored, read_topology_file
from lsurf.files.trajectory import Runs, Trajectory
from lsurf.grid import Axis
from lsurf.metrics import EIG_PRODUCTS, MAX_EIG, MIN_EIG


def describe(path: Path) -> str:
    """The report for a surface file or a direction file, whichever `path` is."""
    from lsurf.files.hessian import is_hessian_file

    if is_hessian_file(path):
        return describe_hessian_file(path)
    if is_connect_path(path):
        return describe_connect(path)
    if is_sharpness_path(path):
        return describe_sharpness(path)
    if is_captures_path(path):
        return describe_captures(path)
    return describe_directions(path) if is_direction_file(path) else describe_surface(path)


def describe_captures(path: Path) -> str:
    """The `lsurf info` report of a training run's capture file: what every capture shares
    (model, data, directions, grid) and a row per capture: its epoch, step, the loss at the
    centre (the weights as trained) and the lowest loss of its grid."""
    captured = read_captures(path)
    lines = [f"captures  {path}"]
    if not captured:
        return "\n".join([*lines, "no capture yet"])
    first = captured[0].surface
    config = first.config
    lines += _describe_data(config)
    directions = config.get("directions", {})
    kind = directions.get("kind")
    lines.append(
        f"directions  {kind}  {kinds.described(kind).describe(directions)}  (the same draws at "
        "every capture, normalized against its weights)"
    )
    shape = "x".join(str(n) for n in first.done.shape)
    grid = config.get("grid") or {}
    axes = f"x={grid.get('x')}" + (f"  y={grid['y']}" if grid.get("y") is not None else "")
    lines.append(f"grid     {axes}  ({shape} points per capture)")
    metric = default_metric(first)  # what `lsurf plot` draws of it
    lines.append(f"{len(captured)} captures of {metric}:")
    lines.append("  epoch      step      centre     lowest  at")
    for found in captured:
        surface = found.surface
        values = np.where(surface.done, surface.metrics[metric], np.nan)
        centre = centre_value(surface, values)
        step = "-" if found.step is None else str(found.step)
        if np.all(np.isnan(values)):
            lines.append(f"  {found.epoch:>5}  {step:>8}  {centre:>10.4g}  (no point done)")
            continue
        best = np.unravel_index(int(np.nanargmin(values)), values.shape)
        where = f"x={surface.x[best[0]]:g}"
        if surface.y is not None:
            where += f" y={surface.y[best[1]]:g}"
        lines.append(
            f"  {found.epoch:>5}  {step:>8}  {centre:>10.4g}  {values[best]:>9.4g}  {where}"
        )
    return "\n".join(lines)


def centre_value(surface: Surface, values: np.ndarray) -> float:
    """The value at the grid point nearest (0, 0): the weights the capture was taken at."""
    index = [int(np.argmin(np.abs(surface.x)))]
    if surface.y is not None:
        index.append(int(np.argmin(np.abs(surface.y))))
    return float(values[tuple(index)])


MEASURE_NAMES = {
    "average": "average-case",
    "worst": "worst-case",
    "m": "m-sharpness",
}


def describe_sharpness(path: Path) -> str:
    """The `lsurf info` report of a sharpness file: its settings, completeness, L(θ*) and a
    table of each measure at each radius with its standard error."""
    found = read_sharpness(path)
    config = found.config
    section = config.get("sharpness") or {}
    model = config.get("model") or {}
    lines = [
        f"sharpness  {path}",
        f"model    {model.get('name')}  checkpoint {model.get('checkpoint')}",
    ]
    lines += _describe_data(config)
    moving = len(json.loads(str(found.attributes.get("parameters", "[]"))))
    ball = ("adaptive " if section.get("adaptive") else "") + str(section.get("norm"))
    lines.append(
        f"units    {section.get('examples')} {section.get('split')} examples (seed "
        f"{section.get('seed')}), {moving} tensors move (ignore {section.get('ignore')}); "
        f"{ball} ball, {section.get('steps')} ascent steps, {section.get('samples')} draws, "
        f"m = {section.get('m')}"
    )
    done = sum(int(part.done.sum()) for part in found.parts.values())
    total = sum(part.done.size for part in found.parts.values())
    state = "complete" if done == total else "incomplete: rerun the same command to resume"
    lines.append(f"done     {done}/{total} units, {state}")
    origin = found.parts.get("origin")
    if origin is not None and origin.complete:
        lines.append(f"L(θ*)    {origin.values[0]:.6g}")
    if found.results:
        lines.append(f"  {'measure':<14} {'rho':>8} {'sharpness':>12} {'± SE':>10} {'units':>6}")
    for result in found.results:
        error = result.estimate.standard_error
        shown = "—" if math.isnan(error) else f"{error:.3g}"
        lines.append(
            f"  {MEASURE_NAMES[result.measure]:<14} {result.rho:>8g} "
            f"{result.estimate.value:>12.6g} {shown:>10} {result.units:>6}"
        )
    version, created = found.attributes.get("lsurf_version"), found.attributes.get("created")
    lines.append(f"written by lsurf {version} (sharpness format 1), created {created}")
    return "\n".join(lines)


def describe_connect(path: Path) -> str:
    """The `lsurf info` report of a connect file: its checkpoints and BN mode, then each
    path's completeness and its barriers (± their standard errors)."""
    connection = read_connect(path)
    config = connection.config
    section = config.get("connect") or {}
    model = (config.get("model") or {}).get("name")
    lines = [f"connect  {path}", f"model    {model}"]
    lines += _describe_data(config)
    for place, checkpoint in enumerate(connection.checkpoints):
        lines.append(f"checkpoint {place}  {checkpoint}")
    bn = section.get("bn")
    if bn == "recompute":
        bn += f" over {section.get('bn_examples')} train examples (seed {section.get('bn_seed')})"
    lines.append(f"bn       {bn}   points {section.get('points')} along t in [0, 1]")
    for name, part in connection.paths.items():
        done, total = int(part.surface.done.sum()), part.surface.done.size
        state = "complete" if done == total else "incomplete: rerun the same command to resume"
        lines.append(f"path {name}  {done}/{total} points, {state}")
        aligned = part.surface.attributes.get("aligned_checkpoint")
        if aligned:
            passes = part.surface.attributes.get("align_iterations")
            converged = part.surface.attributes.get("align_converged")
            how = f"{passes} passes" + ("" if converged else ", not converged")
            lines.append(f"  B aligned to A by weight matching ({how}): {aligned}")
        bend = part.surface.attributes.get("bend_checkpoint")
        if part.surface.y is not None:
            lines += _describe_plane(part.surface)
        elif bend:
            curve = part.surface.attributes.get("curve")
            lines.append(f"  a {curve} curve through the trained bend {bend}")
        for row, found in part.barriers.items():
            if math.isnan(found.height):
                continue
            unit = " %" if row.endswith("_error") else ""
            error = "" if math.isnan(found.error) else f" ± {found.error:.3g}"
            lines.append(
                f"  {row:<12} barrier {found.height:.4g}{error}{unit} at t={found.t:.3g}  "
                f"(ends {found.start:.4g}, {found.end:.4g})"
            )
    version = connection.attributes.get("lsurf_version")
    created = connection.attributes.get("created")
    lines.append(f"written by lsurf {version} (connect format 1), created {created}")
    return "\n".join(lines)


def _describe_plane(surface: Surface) -> list[str]:
    """A connect file's plane through A, B and the bend: its axes, and its lowest train (or
    first) loss among the done points."""
    assert surface.y is not None
    a, b = _axis(surface.x).spec, _axis(surface.y).spec
    lines = [f"  the plane through A (0, 0), B (1, 0) and the bend (0, 1): a {a}, b {b}"]
    losses = [name for name in surface.metrics if name.endswith("_loss")]
    if losses and surface.done.any():
        name = "train_loss" if "train_loss" in losses else losses[0]
        values = np.where(surface.done, surface.metrics[name], np.inf)
        i, j = np.unravel_index(int(np.argmin(values)), values.shape)
        where = f"({surface.x[i]:.3g}, {surface.y[j]:.3g})"
        lines.append(f"  lowest {name} {values[i, j]:.4g} at (a, b) = {where}")
    return lines


def describe_surface(path: Path) -> str:
    """The `lsurf info` report: grid, settings, completeness, and the best point so far."""
    surface = read_surface(path)
    lines = surface_summary(surface)
    written_by = surface.attributes.get("written_by")
    if written_by:
        return "\n".join(lines)
    for analysed, stored in read_topology_file(path).items():
        lines += describe_stored(
            analysed,
            stored.attributes,
            stored.pairs,
            stored.basins,
            surface.x,
            surface.y,
            surface.done.size,
        )
        values = np.where(surface.done, surface.metrics.get(analysed, np.nan), np.nan)
        now = int(np.isfinite(values).sum())
        if now != stored.attributes["points"]:  # the sweep went on after the analysis
            lines.append(
                f"  (analysed at {stored.attributes['points']} points, {now} are done now: "
                f"run lsurf topology {path} --metric {analysed} again)"
            )
    lines.append(
        f"written by lsurf {surface.attributes.get('lsurf_version')} "
        f"(format {surface.attributes.get('format_version')}), "
        f"created {surface.attributes.get('created')}"
    )
    return "\n".join(lines)


def surface_summary(surface: Surface) -> list[str]:
    """The head of `lsurf info`'s report, also a `Surface`'s repr: the file, how it was
    made, the grid, the metrics, how many points are done and each loss's best point."""
    config = surface.config
    done, total = int(surface.done.sum()), surface.done.size
    lines = [f"surface  {surface.path}"]
    written_by = surface.attributes.get("written_by")
    if written_by:  # the reference code's file: no config stored, only the direction file
        lines.append(f"written by {written_by}; no sweep settings stored in it")
        lines.append(f"directions  file {surface.attributes.get('direction_file')}")
    else:
        model = config.get("model", {})
        lines.append(f"model    {model.get('name')}  checkpoint {model.get('checkpoint')}")
        lines += _describe_data(config)
        lines += _describe_directions(config.get("directions", {}), surface)
    grid = config.get("grid") or {
        "x": _axis(surface.x).spec,
        "y": None if surface.y is None else _axis(surface.y).spec,
    }
    shape = "x".join(str(n) for n in surface.done.shape)
    axes = f"x={grid.get('x')}" + (f"  y={grid['y']}" if grid.get("y") is not None else "")
    lines.append(f"grid     {axes}  ({shape} points)")
    listed = ", ".join(sorted(surface.metrics))
    derived = derived_names(surface)  # what `lsurf plot --metric` also draws
    lines.append(f"metrics  {listed}" + (f"; derived: {', '.join(derived)}" if derived else ""))
    percent = 100.0 * done / total if total else 0.0
    status = "complete" if done == total else "incomplete: rerun the same sweep to resume"
    if written_by and done < total:
        status = "incomplete (the reference code resumes its own files, lsurf does not)"
    lines.append(f"done     {done}/{total} points ({percent:.1f}%), {status}")
    lines += _describe_curvature(surface)
    for name, column in sorted(surface.columns.items()):
        # A residual or a product count has no best point; a higher-is-better metric's
        # best is its maximum, which accuracy needs no line for.
        if not column.metric.lower_is_better or not column.metric.ranked or done == 0:
            continue
        values = np.where(surface.done, surface.metrics[name], np.nan)
        if np.all(np.isnan(values)):
            continue
        best = np.unravel_index(int(np.nanargmin(values)), values.shape)
        where = f"x={surface.x[best[0]]:g}"
        if surface.y is not None:
            where += f", y={surface.y[best[1]]:g}"
        lines.append(f"min {name}  {values[best]:.6g} at {where}")
    return lines


def describe_directions(path: Path) -> str:
    """The `lsurf info` report on a direction file: how it was made, its size, its angle."""
    import torch

    from lsurf.files.directions import read_directions
    from lsurf.kinds.reference import describe_file

    lines = [f"directions  {path}"]
    reference = describe_file(path)  # no settings, no names: what its shapes say only
    if reference is not None:
        return "\n".join([*lines, reference, "sweep it with directions.kind: reference"])
    directions, attributes = read_directions(path)
    how = kinds.described(directions.kind).describe(attributes)
    lines.append(f"kind     {directions.kind}  {how}")
    values = sum(tensor.numel() for tensor in directions.x.values())
    count = "2 directions (a plane)" if directions.y is not None else "1 direction (a line)"
    lines.append(f"size     {count}, each {values} values in {len(directions.x)} tensors")
    lines += _selection_lines(attributes, list(directions.x))
    if directions.y is not None:
        # Random directions in many dimensions are almost orthogonal; PCA's are exactly so.
        x = torch.cat([tensor.reshape(-1).double() for tensor in directions.x.values()])
        y = torch.cat([directions.y[key].reshape(-1).double() for key in directions.x])
        cosine = float(x @ y / (x.norm() * y.norm()).clamp_min(1e-300))
        lines.append(f"angle    cos(d1, d2) = {cosine:.4g}")
    if "eigenvalues" in attributes:  # kind hessian: each direction's eigenvalue
        found = ", ".join(
            f"{float(value):.6g}" for value in np.atleast_1d(attributes["eigenvalues"])
        )
        lines.append(f"curvature  Hessian eigenvalue along each direction: {found}")
    if directions.trajectory is not None:
        lines.append(_path_line(directions.trajectory, str(attributes.get("kind", "random"))))
    lines += _run_lines(directions.runs)
    checkpoint = str(attributes.get("checkpoint_sha256", ""))[:16]
    lines.append(
        f"made for checkpoint sha256 {checkpoint}…  by lsurf {attributes.get('lsurf_version')}"
    )
    return "\n".join(lines)


def _axis(coordinates: np.ndarray) -> Axis:
    """The evenly spaced axis a file's coordinates come from (files without a stored config)."""
    return Axis(float(coordinates[0]), float(coordinates[-1]), len(coordinates))


def _describe_curvature(surface: Surface) -> list[str]:
    """The solver's settings, then over the done points: the ranges of λmax, λmin and
    |λmin/λmax|, the products spent and the points that did not reach tol ([] without
    eigenvalues)."""
    largest, smallest = column_of(surface, MAX_EIG), column_of(surface, MIN_EIG)
    eigenvalues = {
        name: surface.metrics[column.name]
        for name, column in (("λmax", largest), ("λmin", smallest))
        if column is not None
    }
    if not eigenvalues:
        return []
    settings = solver_settings(surface)
    if settings is not None:
        lines = [f"curvature  {settings.describe()}"]
    else:  # the reference code's files, and any without a hessian section
        split = next(column.split for column in (largest, smallest) if column is not None)
        lines = [f"curvature  Hessian eigenvalues of the {split} loss; no solver settings stored"]
    done = surface.done.astype(bool)
    if not done.any():
        return lines
    if len(eigenvalues) == 2:
        eigenvalues["|λmin/λmax|"] = eig_ratio(eigenvalues["λmax"], eigenvalues["λmin"])
    for name, values in eigenvalues.items():
        lines.append(_field(name, _value_range(values[done])))
    products = column_of(surface, EIG_PRODUCTS)
    if products is not None:
        spent = surface.metrics[products.name][done]
        # A point whose loss was not finite spends none (no solve): not one to average over.
        spent = spent[np.isfinite(spent) & (spent > 0)]
        if spent.size:
            average = f"{spent.mean():.1f} per solved point on average (highest {spent.max():g})"
            lines.append(_field("products", average))
    return lines + _describe_residuals(surface)


def _describe_residuals(surface: Surface) -> list[str]:
    """'3 of 25 points did not reach tol 0.001 (residual up to 0.02)' ([] without residuals)."""
    done = surface.done.astype(bool)
    stored = [column for metric in BOTH_RESIDUALS if (column := column_of(surface, metric))]
    reached = np.concatenate([surface.metrics[column.name][done] for column in stored] or [[]])
    reached = reached[np.isfinite(reached)]
    if not reached.size:
        return []
    largest = f"residual up to {reached.max():.3g}"
    flags = unconverged(surface, BOTH_RESIDUALS)
    if flags is None:  # no tol stored to judge them by
        return [_field("residual", largest)]
    total = int(done.sum())
    if not flags.count:
        return [_field("residual", f"all {total} points reached tol {flags.tol:g} ({largest})")]
    text = f"{flags.count} of {total} points did not reach tol {flags.tol:g} ({largest})"
    return [_field("residual", text)]


def _value_range(values: np.ndarray) -> str:
    """'-0.25 to 12.5', with how many of the values are NaN or inf."""
    finite = values[np.isfinite(values)]
    missing = values.size - finite.size
    if not finite.size:
        return f"not finite at all {values.size} points"
    text = f"{finite.min():.6g} to {finite.max():.6g}"
    if missing:
        text += f" (not finite at {missing} point{'s' if missing > 1 else ''})"
    return text


def _field(name: str, text: str) -> str:
    """A report line: the name in the first column (8 wide, as 'done    '), then the text."""
    return f"{name:<8} {text}" if len(name) <= 8 else f"{name}  {text}"


def _describe_data(config: dict[str, Any]) -> list[str]:
    """Which data and loss the values measure (files from before lsurf stored them: CIFAR-10
    and cross-entropy, the only ones there were)."""
    data = config.get("data")
    if not isinstance(data, dict):
        return []
    splits = ", ".join(str(split) for split in data.get("splits") or [])
    subset = f", {data['subset']} examples each" if data.get("subset") else ""
    if (data.get("reference_split") or 1) > 1:
        subset += f", train as the reference's --data_split {data['reference_split']}"
    loss = (config.get("evaluation") or {}).get("loss", "cross_entropy")
    return [f"data     {data.get('dataset', 'cifar10')} ({splits}){subset}  loss {loss}"]


def _describe_directions(directions: dict[str, Any], surface: Surface) -> list[str]:
    """What the directions were, in the terms of their kind (a seed means nothing to PCA)."""
    kind = directions.get("kind")
    file = f"file {surface.attributes.get('direction_file')}"
    lines = [f"directions  {kind}  {kinds.described(kind).describe(directions)}  {file}"]
    names = surface.attributes.get("params_names")
    lines += _selection_lines(surface.attributes, None if names is None else json.loads(names))
    path = surface.trajectory
    if path is not None:
        lines.append(
            _path_line(path, str(kind))
            + f"; path of {len(path.epochs)} checkpoints, epochs {path.epochs[0]}-{path.epochs[-1]}"
        )
    return lines + _run_lines(surface.runs)


def _run_lines(runs: Runs | None) -> list[str]:
    """The runs of `directions.trajectories`: the plane's explained variance over all of
    them (PCA), then a line per run with its checkpoints and the share of its own variance
    each axis captures."""
    if runs is None:
        return []
    lines = []
    if runs.explained_variance_ratio is not None:
        first, second = (100.0 * ratio for ratio in runs.explained_variance_ratio)
        lines.append(
            f"plane    explained variance of all {len(runs.paths)} runs x {first:.1f}%, "
            f"y {second:.1f}%"
        )
    for run in runs.paths:
        epochs = run.trajectory.epochs
        first, second = (100.0 * ratio for ratio in run.trajectory.explained_variance_ratio)
        lines.append(
            f"run      {run.label}: {len(epochs)} checkpoints, epochs {epochs[0]}-{epochs[-1]}; "
            f"the plane captures x {first:.2g}%, y {second:.2g}% of its variance  ({run.folder})"
        )
    return lines


def _selection_lines(attributes: Mapping[str, Any], names: list[str] | None) -> list[str]:
    """What a directions.params selection picked, as the sweep's --plan showed it (nothing
    for a file made without one); `names`: the selected names, where the file holds them."""
    if "params_include" not in attributes:
        return []
    selection = ParamsSelection(
        tuple(json.loads(str(attributes["params_include"]))),
        tuple(json.loads(str(attributes["params_exclude"]))),
    )
    return selection.report(
        int(attributes["params_tensors"]),
        int(attributes["params_values"]),
        int(attributes["params_total"]),
        names,
    )


def _path_line(path: Trajectory, kind: str) -> str:
    """The share of the training path's variance along each axis: PCA's explained variance,
    or what another plane captures of the path projected onto it (tiny for random ones)."""
    first, second = (100.0 * ratio for ratio in path.explained_variance_ratio)
    if kind == "pca":
        return f"plane    explained variance x {first:.1f}%, y {second:.1f}%"
    return f"plane    captures of the path's variance x {first:.2g}%, y {second:.2g}%"


# ---------------------------------------------------------------------------- hessian file


def describe_hessian_file(path: Path) -> str:
    """The `lsurf info` report on a Hessian analysis file: what was analysed, the top-k
    eigenvalues, the trace ± its standard error, the density, λmax per tensor, the cost."""
    from lsurf.files.hessian import read_hessian_file

    hessian = read_hessian_file(path)
    analysis, attributes = hessian.analysis, hessian.attributes
    config = hessian.config
    model = config.get("model", {})
    lines = [f"hessian  {path}"]
    lines.append(f"model    {model.get('name')}  checkpoint {model.get('checkpoint')}")
    lines += _describe_data(config)
    lines.append(
        f"matrix   H of the mean loss on {attributes.get('split')} "
        f"({attributes.get('examples')} examples, batch size {attributes.get('batch_size')}, "
        f"eval mode) w.r.t. {attributes.get('params')}: {attributes.get('parameters')} parameters"
    )
    values = ", ".join(f"{value:.6g}" for value in analysis.top_eigenvalues)
    converged = "converged" if analysis.top_converged else "NOT converged"
    lines.append(
        f"{f'top-{len(analysis.top_eigenvalues)}':<9}{values}  (max residual "
        f"{analysis.top_residuals.max():.1e}, {analysis.products['top']} products, {converged})"
    )
    lines.append(
        f"trace    {analysis.trace:.6g} ± {analysis.trace_standard_error:.2g}  (Hutchinson, "
        f"{analysis.trace_samples} probes, {analysis.products['trace']} products)"
    )
    runs, steps = analysis.density_nodes.shape
    low, high = analysis.density_range()
    lines.append(
        f"density  {runs} runs x {steps} Lanczos steps, Ritz values in [{low:.4g}, {high:.4g}], "
        f"σ = {analysis.density_sigma:.3g}  ({analysis.products['density']} products)"
    )
    if analysis.layer_names:
        lines.append(
            f"layers   λmax of each tensor's block  ({analysis.products['layers']} products)"
        )
        width = max(len(name) for name in analysis.layer_names)
        for name, value, residual in zip(
            analysis.layer_names,
            analysis.layer_max_eigenvalues,
            analysis.layer_residuals,
            strict=True,
        ):
            lines.append(f"  {name:<{width}}  {value:.6g}  (residual {residual:.1e})")
    ranks = int(attributes.get("ranks", 1))
    lines.append(
        f"products {sum(analysis.products.values())} Hessian-vector products"
        + (f" on {ranks} ranks" if ranks > 1 else "")
    )
    lines.append(
        f"written by lsurf {attributes.get('lsurf_version')} (hessian format "
        f"{attributes.get('format_version')}), created {attributes.get('created')}"
    )
    return "\n".join(lines)
