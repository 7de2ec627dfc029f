"""A surface file logged to an experiment tracker: Weights & Biases or TensorBoard.

    from lsurf.trackers import log_surface
    log_surface("runs/demo/surface.h5", "wandb", project="landscapes")
    log_surface("runs/demo/surface.h5", "tensorboard", writer=writer, step=global_step)

Input: a file lsurf wrote (a surface, or a connect, sharpness, capture or Hessian file) and
the tracker's run (`wandb.init`'s) or `SummaryWriter`, or none: then one is opened and closed
after. Output, in that run: the figures `lsurf plot` draws for the file (drawn by lsurf.plot,
as PNG images), its scalars (each column at the centre, each ranked loss's minimum and where it
lies, the basin count of an analysed column, the sharpness measures), and the file itself: a
W&B artifact of type "loss-surface"; with TensorBoard, which has no artifacts, a copy beside
the event files and the `lsurf info` report as text.

`log_surfaces` logs several files, to one tracker or both, drawing the figures once
(`lsurf plot --log-to`). wandb and tensorboard are optional (`lsurf[wandb]`,
`lsurf[tensorboard]`), imported when a file is logged; a missing one is one line naming the
extra, raised before anything is drawn.
The TensorBoard writer is torch's, so unlike `lsurf plot` alone this loads torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from lsurf.atomic import atomic_path
from lsurf.errors import ConfigError
from lsurf.plot import file_slug

Tracker = Literal["wandb", "tensorboard"]
TRACKERS: tuple[Tracker, ...] = get_args(Tracker)
ARTIFACT_TYPE = "loss-surface"


@dataclass(frozen=True)
class Logged:
    """What one call put in the tracker, by the names it used."""

    scalars: dict[str, float]  # 'lsurf/train_loss_centre' → value
    figures: tuple[str, ...]  # image keys, 'lsurf/figures/train_loss_contour'
    copies: tuple[Path, ...] = ()  # TensorBoard: the surface files copied beside the events


def parse_trackers(text: Sequence[str]) -> tuple[Tracker, ...]:
    """`--log-to` values (repeated, or comma lists) as trackers, each installed: unknown or
    missing ones are refused here, before anything is drawn or logged."""
    found: list[Tracker] = []
    for part in (piece.strip() for item in text for piece in item.split(",")):
        if part not in TRACKERS:
            raise ConfigError(f"--log-to {part!r} is not a tracker; use {', '.join(TRACKERS)}")
        if part not in found:
            found.append(part)
    for tracker in found:
        _tracker_module(tracker)
    return tuple(found)


def _tracker_module(tracker: Tracker) -> Any:
    try:
        return importlib.import_module(tracker)
    except ImportError:
        raise ConfigError(
            f"logging to {tracker} needs the {tracker} package, which is not installed: "
            f"pip install lsurf[{tracker}]"
        ) from None


def log_surface(
    path: Path | str,
    to: Tracker,
    *,
    run: Any = None,
    writer: Any = None,
    step: int | None = None,
    prefix: str = "lsurf",
    log_dir: Path | str | None = None,
    project: str | None = None,
    options: Any = None,
) -> Logged:
    """Log one file's figures, scalars and the file itself to `to` (see the module docstring).

    `run` (W&B) or `writer` (TensorBoard): the caller's, logged into at `step` and left open
    (a training loop's callback passes its own run and global step); None opens one in
    `log_dir` (W&B: also `project`; WANDB_MODE=offline is honoured) and closes it after.
    `options`: the `PlotOptions` the figures are drawn with (default: `lsurf plot`'s).
    """
    return log_surfaces(
        [Path(path)],
        to,
        run=run,
        writer=writer,
        step=step,
        prefix=prefix,
        log_dir=log_dir,
        project=project,
        options=options,
    )


def log_surfaces(
    paths: Sequence[Path],
    to: Tracker | Sequence[Tracker],
    *,
    run: Any = None,
    writer: Any = None,
    step: int | None = None,
    prefix: str = "lsurf",
    log_dir: Path | str | None = None,
    project: str | None = None,
    options: Any = None,
) -> Logged:
    """`log_surface` for several files, to one tracker or several (the figures drawn once
    for all of them), each into one run; with several files each file's names sit under
    `prefix/<file stem>` so they do not overwrite each other."""
    from lsurf.plot import PlotOptions

    trackers = (to,) if isinstance(to, str) else tuple(to)
    unknown = [name for name in trackers if name not in TRACKERS]
    if unknown:
        raise ConfigError(f"cannot log to {unknown[0]!r}; the trackers are {', '.join(TRACKERS)}")
    modules = {name: _tracker_module(name) for name in trackers}
    if (run is not None and "wandb" not in trackers) or (
        writer is not None and "tensorboard" not in trackers
    ):
        raise ConfigError("run= is a W&B run (to='wandb'), writer= a TensorBoard SummaryWriter")
    base = options if options is not None else PlotOptions()
    with tempfile.TemporaryDirectory(prefix="lsurf-figures-") as scratch:
        # Each file drawn on its own, as PNG (the tracker shows images), into a scratch folder.
        drawn = {
            path: _draw(path, dataclasses.replace(base, out=Path(scratch) / str(index)))
            for index, path in enumerate(paths)
        }
        own = prefix if len(paths) == 1 else None
        scalars: dict[str, float] = {}
        figures: dict[str, Path] = {}
        for path in paths:
            name = own if own is not None else f"{prefix}/{file_slug(path.stem)}"
            scalars.update({f"{name}/{key}": value for key, value in file_scalars(path).items()})
            figures.update({f"{name}/figures/{key}": png for key, png in drawn[path].items()})
        copies: tuple[Path, ...] = ()
        for tracker in trackers:
            if tracker == "wandb":
                _log_wandb(modules[tracker], paths, scalars, figures, run, step, log_dir, project)
            else:
                copies = _log_tensorboard(paths, scalars, figures, writer, step, prefix, log_dir)
        return Logged(scalars, tuple(figures), copies)


def _draw(path: Path, options: Any) -> dict[str, Path]:
    """`lsurf plot`'s figures of one file as PNG: key (the figure's name without the file's
    own, 'train_loss_contour') → the image."""
    from lsurf.plot import plot_any_files

    options = dataclasses.replace(options, formats=("png",), compare="files")
    written = plot_any_files([path], options)
    stem = file_slug(path.stem)
    figures = {}
    for png in written:
        if png.suffix != ".png":
            continue
        key = png.stem[len(stem) + 1 :] if png.stem.startswith(f"{stem}_") else png.stem
        figures[key or png.stem] = png
    return figures


def file_scalars(path: Path) -> dict[str, float]:
    """The numbers worth a chart, named without a prefix: for a surface each column at the
    centre ('train_loss_centre'), each ranked lower-is-better column's minimum and its
    coordinates ('train_loss_min', '_min_x', '_min_y'), and each analysed column's basin count
    ('train_loss_basins'); for a sharpness file L(θ*) and each measure with its standard
    error. Connect, capture and Hessian files log their figures and the file only."""
    from lsurf.files.captures import is_captures_path
    from lsurf.files.connect import is_connect_path
    from lsurf.files.hessian import is_hessian_file
    from lsurf.files.sharpness import is_sharpness_path

    if is_sharpness_path(path):
        return _sharpness_scalars(path)
    if is_connect_path(path) or is_captures_path(path) or is_hessian_file(path):
        return {}
    return _surface_scalars(path)


def _surface_scalars(path: Path) -> dict[str, float]:
    from lsurf.files.info import centre_value
    from lsurf.files.surface import read_surface
    from lsurf.files.topology import read_topology_file

    surface = read_surface(path)
    scalars: dict[str, float] = {}
    for name, column in surface.columns.items():
        # Points not computed yet hold NaN in the file; the done mask says so, as for plots.
        values = np.where(surface.done, surface.metrics[name], np.nan).astype(np.float64)
        scalars[f"{name}_centre"] = centre_value(surface, values)
        finite = np.where(np.isfinite(values), values, np.nan)
        if not (column.metric.lower_is_better and column.metric.ranked) or np.all(np.isnan(finite)):
            continue
        best = np.unravel_index(int(np.nanargmin(finite)), finite.shape)
        scalars[f"{name}_min"] = float(finite[best])
        scalars[f"{name}_min_x"] = float(surface.x[best[0]])
        if surface.y is not None:
            scalars[f"{name}_min_y"] = float(surface.y[best[1]])
    for name, stored in read_topology_file(path).items():
        scalars[f"{name}_basins"] = float(len(stored.basins.minimum))
    return scalars


def _sharpness_scalars(path: Path) -> dict[str, float]:
    from lsurf.files.sharpness import ORIGIN, read_sharpness

    found = read_sharpness(path)
    scalars: dict[str, float] = {}
    origin = found.parts.get(ORIGIN)
    if origin is not None and origin.complete:
        scalars["sharpness_origin_loss"] = float(origin.values[0])
    for result in found.results:
        name = f"sharpness_{result.measure}_rho{result.rho:g}"
        scalars[name] = float(result.estimate.value)
        if np.isfinite(result.estimate.standard_error):  # NaN from a single unit
            scalars[f"{name}_error"] = float(result.estimate.standard_error)
    return scalars


def _log_wandb(
    wandb: Any,
    paths: Sequence[Path],
    scalars: dict[str, float],
    figures: dict[str, Path],
    run: Any,
    step: int | None,
    log_dir: Path | str | None,
    project: str | None,
) -> None:
    own = run is None
    if own:
        if log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=project or "lsurf",
            dir=None if log_dir is None else str(log_dir),
            job_type=ARTIFACT_TYPE,
        )
    try:
        payload: dict[str, Any] = dict(scalars)
        payload.update({key: wandb.Image(str(png)) for key, png in figures.items()})
        run.log(payload, step=step)
        for path in paths:
            artifact = wandb.Artifact(
                _artifact_name(path), type=ARTIFACT_TYPE, metadata={"file": path.name}
            )
            artifact.add_file(str(path), name=path.name)
            run.log_artifact(artifact)
    finally:
        if own:
            run.finish()


def _log_tensorboard(
    paths: Sequence[Path],
    scalars: dict[str, float],
    figures: dict[str, Path],
    writer: Any,
    step: int | None,
    prefix: str,
    log_dir: Path | str | None,
) -> tuple[Path, ...]:
    from matplotlib.image import imread

    from lsurf.files.info import describe

    own = writer is None
    if own:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=None if log_dir is None else str(log_dir))
    try:
        for key, value in scalars.items():
            writer.add_scalar(key, value, global_step=step)
        for key, png in figures.items():
            image = imread(png)[..., :3]  # (H, W, 3) floats in [0, 1]; the alpha is opaque
            writer.add_image(key, image, global_step=step, dataformats="HWC")
        copies = []
        folder = Path(writer.get_logdir())
        folder.mkdir(parents=True, exist_ok=True)
        for path in paths:
            name = prefix if len(paths) == 1 else f"{prefix}/{file_slug(path.stem)}"
            # Markdown: the report indented four spaces is a code block, its columns kept.
            report = "\n".join(f"    {line}" for line in describe(path).splitlines())
            writer.add_text(f"{name}/info", report, global_step=step)
            copy = folder / path.name
            with atomic_path(copy) as temporary:
                shutil.copyfile(path, temporary)
            copies.append(copy)
        return tuple(copies)
    finally:
        if own:
            writer.close()
        else:
            writer.flush()


def _artifact_name(path: Path) -> str:
    """W&B artifact names allow letters, digits, '-', '_' and '.'."""
    return re.sub(r"[^\w.-]", "-", path.stem) or "surface"
