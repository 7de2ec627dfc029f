"""Landscapes captured during training: a small plane around the current weights every N epochs.

    capture = lsurf.Capture("runs/mine/landscape.h5", (inputs, targets), every=5)
    for epoch in range(1, epochs + 1):
        train_one_epoch(model)
        capture(model, epoch, step=global_step)   # sweeps at epochs 5, 10, ...

Input: the file for the run's captures, the data to evaluate on (what `lsurf.api.sweep` takes)
and the plane (default 11×11 over [-1, 1]², on a fixed seeded subset of 1,000 examples).
Output: one surface per capture, appended to that file (lsurf.files.captures) with its epoch
and step; `capture(...)` returns it (None when the epoch is not one to capture).

Each capture is `lsurf.api.sweep` on a copy of the model, so the training's model keeps its
weights, mode and device; the process's random generators and torch's global settings are
put back as they were (lsurf.api), so a training run gives the same losses with and without
captures. The directions are drawn afresh at each capture from the same seed: the same
Gaussian draws, filter-normalized against that capture's weights. Fixed draws make captures
comparable (what changes between two is the weights, not the luck of a new draw), and the
normalization must follow the weights, whose scale changes as they train (Li et al., §4).

Trackers: `run=` (a W&B run) and/or `writer=` (a TensorBoard SummaryWriter) log every capture's
figures, scalars and surface file there (lsurf.trackers), at its step, under `lsurf/capture`.

Resuming: a capture that is already in the file is not taken again (a restarted training
passes over it), and a capture interrupted part-way resumes from its own surface file
beside the capture file, named by the epoch and the digest of the weights it was taken at.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from lsurf import api, params
from lsurf.errors import ConfigError
from lsurf.files.captures import add_capture, group_name, read_capture_header
from lsurf.files.surface import Surface
from lsurf.run.progress import Log


class Capture:
    """Captures a plane around the model's weights at every `every`-th epoch (see the module
    docstring). Keywords past `directions` are `lsurf.api.sweep`'s settings (batch_size,
    device, fold_bn, precision, ...)."""

    def __init__(
        self,
        path: str | Path,
        data: Any,
        *,
        every: int = 5,
        x: str = "-1:1:11",
        y: str | None = "-1:1:11",
        examples: int | None = 1000,
        seed: int = 0,
        loss: str | Callable[..., Any] = "cross_entropy",
        directions: Mapping[str, Any] | None = None,
        log: Log | None = None,
        run: Any = None,
        writer: Any = None,
        **settings: Any,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(
                f"Capture's every must be a whole number of epochs ≥ 1, got {every!r}"
            )
        if examples is not None and (isinstance(examples, bool) or examples < 1):
            raise ConfigError(f"Capture's examples must be ≥ 1 or None (all), got {examples!r}")
        for key in ("subset", "subset_seed", "output", "force"):
            if key in settings:
                raise ConfigError(
                    f"Capture sets {key} itself; use examples= and seed= for the subset"
                )
        self.path = Path(path)
        self.data = data
        self.every = every
        self.x, self.y = x, y
        self.examples = examples
        self.seed = seed
        self.loss = loss
        self.directions = {"kind": "random", "seed": seed, **dict(directions or {})}
        self.log = log
        # Experiment trackers (lsurf.trackers): a W&B run and/or a TensorBoard SummaryWriter
        # that each capture is logged into, at its step (its epoch without one).
        self.run, self.writer = run, writer
        self.settings = dict(settings)
        loss_name = loss if isinstance(loss, str) else getattr(loss, "__qualname__", repr(loss))
        # What every capture of one file shares: a later Capture on the file must agree.
        self.recorded = {
            "every": every,
            "x": x,
            "y": y,
            "examples": examples,
            "seed": seed,
            "loss": loss_name,
            "directions": {key: str(value) for key, value in self.directions.items()},
            "settings": {key: repr(value) for key, value in sorted(self.settings.items())},
        }
        self._check_header()

    def due(self, epoch: int) -> bool:
        """Whether `epoch` is one this capture takes (a multiple of `every`)."""
        return epoch % self.every == 0

    def check_model(self, model: nn.Module) -> None:
        """Refuse (one line) a model whose parameters differ from the file's first capture."""
        self._check_parameters(model, self._check_header())

    def __call__(
        self,
        model: nn.Module,
        epoch: int,
        step: int | None = None,
        *,
        leave_out: tuple[object, ...] = (),
    ) -> Surface | None:
        """Capture the plane around `model`'s current weights if `epoch` is due and not yet in
        the file; the surface, or None. `leave_out`: objects the model refers to that must not
        be copied with it (a Lightning module's trainer), each copied as None."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ConfigError(f"Capture needs the epoch as a whole number ≥ 0, got {epoch!r}")
        if not self.due(epoch):
            return None
        header = self._check_header()
        self._check_parameters(model, header)
        if header is not None and group_name(epoch) in header["captures"]:
            return None  # taken before this training was restarted
        memo: dict[int, Any] = {id(thing): None for thing in leave_out}
        twin = copy.deepcopy(model, memo)
        state = twin.state_dict()
        digest = params.digest(state)[:16]
        partial = self.path.with_name(f"{self.path.name}.{group_name(epoch)}-{digest}.h5")
        self._remove_other_partials(epoch, partial)
        surface = api.sweep(
            twin,
            self.data,
            x=self.x,
            y=self.y,
            loss=self.loss,
            directions=self.directions,
            output=partial,
            log=self.log,
            subset=self._subset(),
            subset_seed=self.seed,
            **self.settings,
        )
        self._log(partial, epoch if step is None else step)
        add_capture(self.path, partial, epoch, step, _shapes(model), self.recorded)
        partial.unlink()
        partial.with_name(partial.name.removesuffix(".h5") + ".directions.h5").unlink(
            missing_ok=True
        )
        return surface

    def _log(self, surface_path: Path, step: int) -> None:
        """The capture's figures, scalars and file into the trackers given, under the prefix
        lsurf/capture: the same names at every capture, so each is a series over the steps."""
        handles = (("wandb", self.run), ("tensorboard", self.writer))
        trackers = [name for name, handle in handles if handle is not None]
        if not trackers:
            return
        from lsurf.trackers import log_surfaces

        log_surfaces(
            [surface_path],
            trackers,  # type: ignore[arg-type]
            run=self.run,
            writer=self.writer,
            step=step,
            prefix="lsurf/capture",
        )

    def _subset(self) -> int | None:
        if self.examples is None:
            return None
        sizes = [_length(split) for split in _splits(self.data)]
        known = [size for size in sizes if size is not None]
        # A subset as large as a split is that whole split.
        return None if known and self.examples >= min(known) else self.examples

    def _check_header(self) -> dict[str, Any] | None:
        header = read_capture_header(self.path)
        if header is not None and header["settings"] != self.recorded:
            changed = sorted(
                key
                for key in {*header["settings"], *self.recorded}
                if header["settings"].get(key) != self.recorded.get(key)
            )
            raise ConfigError(
                f"{self.path} holds captures taken with other settings ({', '.join(changed)} "
                "differ); capture into another file, or with the settings it was started with"
            )
        return header

    def _check_parameters(self, model: nn.Module, header: dict[str, Any] | None) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"Capture needs a torch.nn.Module, got {type(model).__name__}")
        if header is None:
            return
        before = {name: shape for name, shape in header["parameters"]}
        now = {name: shape for name, shape in _shapes(model)}
        if before == now:
            return
        for name in [*before, *now]:
            if before.get(name) != now.get(name):
                was = before.get(name, "absent")
                raise ConfigError(
                    f"the model's parameters changed since the first capture in {self.path}: "
                    f"{name} was {was}, is {now.get(name, 'absent')}; capture a changed "
                    "model into another file"
                )

    def _remove_other_partials(self, epoch: int, keep: Path) -> None:
        """A partial capture of this epoch at other weights (a training restarted from another
        point) can never be finished: it goes."""
        prefix = f"{self.path.name}.{group_name(epoch)}-"
        for entry in self.path.parent.glob(f"{prefix}*"):
            if entry.name.startswith(keep.name.removesuffix(".h5")):
                continue
            if entry.is_file():
                entry.unlink()


def _shapes(model: nn.Module) -> list[list[Any]]:
    return [[name, list(parameter.shape)] for name, parameter in model.named_parameters()]


def _splits(data: Any) -> list[Any]:
    return list(data.values()) if isinstance(data, Mapping) else [data]


def _length(split: Any) -> int | None:
    if isinstance(split, tuple | list) and len(split) == 2 and hasattr(split[0], "shape"):
        return int(split[0].shape[0])
    try:
        return len(split)
    except TypeError:
        return None
