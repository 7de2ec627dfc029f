"""`lsurf sharpness`: how sharp is θ*, by the measures papers report, in one file.

The job's work units (lsurf.sharpness): L(θ*) on the subset (`origin`), one noise draw each
for average-case sharpness, one ascent on the whole subset for worst-case sharpness, one
ascent per batch of m examples for m-sharpness, at every radius of `sharpness.rho`. Each
measure at each radius is a *part*, laid out as a 1D surface over its unit indices, so the
units go through the sweeps' own machinery (lsurf.run.sweep): one queue, the same chunk
workers under mpiexec or Slurm, bit-identical for any rank count (a unit's random numbers are
seeded by (seed, unit) alone), and resumable after a kill at any moment. What is sharpness's
own: the parts, the evaluator of a unit (`UnitEvaluator`, built on each worker from a
`SharpnessSetup`), deciding the output (create, resume, complete, or refuse one made for
another job) and the file (lsurf.files.sharpness).

Input: a checked `SharpnessConfig`. Output: the sharpness file at `config.output`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lsurf import checkpoint, params, sharpness
from lsurf.config import ParamsSelection, SharpnessConfig, stored_sharpness_config
from lsurf.errors import ConfigError, LsurfError, OutputError
from lsurf.evaluate import pick_device
from lsurf.files import sharpness as sharpness_file
from lsurf.files.hdf5 import stored_config
from lsurf.grid import Axis, Grid
from lsurf.metrics import Column, Metric
from lsurf.run import capacity, protocol
from lsurf.run.identity import OPERATIONAL_KEYS
from lsurf.run.local import LocalSession
from lsurf.run.phases import FROM_CONFIG, Sources
from lsurf.run.progress import Log, to_stderr
from lsurf.run.sweep import EXIT_BAD_INPUT, OpenOutputs, load_workers, run_job, serve_queue
from lsurf.schema import differences, to_plain, to_yaml

# A unit's result: a loss (origin, average-case draws) or a sharpness (worst-case, m).
UNIT_VALUE = Metric("value", "unit value", "", "solver", ranked=False, per_split=False)


@dataclass(frozen=True)
class SharpnessOutcome:
    path: Path
    computed: int  # units computed by this run
    already_complete: bool


@dataclass(frozen=True)
class UnitSpec:
    """One part: which measure, at which radius, over how many units."""

    measure: str  # origin, average, worst or m
    rho: float | None
    units: int

    @property
    def name(self) -> str:
        if self.rho is None:
            return sharpness_file.ORIGIN
        return sharpness_file.part_name(self.measure, self.rho)


def parts_of(config: SharpnessConfig) -> list[UnitSpec]:
    """The job's parts in order: the origin, then each radius's measures."""
    section = config.sharpness
    units = {"average": section.samples, "worst": 1, "m": section.examples // section.m}
    found = [UnitSpec("origin", None, 1)]
    for rho in section.rho:
        found += [UnitSpec(measure, rho, units[measure]) for measure in section.measures]
    return found


def unit_grid(spec: UnitSpec) -> Grid:
    return Grid.from_axes(Axis(0.0, float(spec.units - 1), spec.units), None)


@dataclass(frozen=True)
class SharpnessSetup:
    """What a worker builds a part's evaluator from (sent by rank 0: no shared disk)."""

    config: SharpnessConfig
    state: dict[str, torch.Tensor]  # θ*: the checkpoint's full state dict
    spec: UnitSpec
    grid: Grid

    def load(self, device: torch.device, sources: Sources = FROM_CONFIG) -> UnitEvaluator:
        return UnitEvaluator(self, device, sources)


@dataclass(frozen=True)
class _Part:
    """A part as the sweeps' machinery sees a sweep: its grid, its setup, its label."""

    config: SharpnessConfig
    spec: UnitSpec
    grid: Grid
    state: dict[str, torch.Tensor]

    def worker_setup(self) -> SharpnessSetup:
        return SharpnessSetup(self.config, self.state, self.spec, self.grid)


class UnitEvaluator:
    """Computes the units of one part (the evaluator protocol of lsurf.run.worker: `columns`,
    `notes`, `evaluate(a, b)` with a = the unit's index)."""

    def __init__(self, setup: SharpnessSetup, device: torch.device, sources: Sources) -> None:
        config, section = setup.config, setup.config.sharpness
        self.spec = setup.spec
        self.model = sources.build_model(config.model)
        self.model.load_state_dict(setup.state)
        self.model.to(device)
        self.loss = sources.loss(config.evaluation.loss)
        self.parameters = moving_parameters(self.model, section.ignore, section.params)
        split = sources.open_split(config.data, section.split, device, False)
        if len(split) < section.examples:
            raise ConfigError(
                f"sharpness.examples is {section.examples} but the {section.split} split has "
                f"{len(split)} examples; lower it"
            )
        inputs, targets = _subset(split, section.examples, section.seed, config.data.batch_size)
        size = section.m if setup.spec.measure == "m" else config.data.batch_size
        self.batches = [
            (inputs[first : first + size], targets[first : first + size])
            for first in range(0, len(targets), size)
        ]
        if setup.spec.measure == "m":
            self.batches = self.batches[: setup.spec.units]  # whole batches of m only
        self.columns = [Column(section.split, UNIT_VALUE)]
        self.notes: list[str] = []
        rho = setup.spec.rho or 0.0
        self._average = None
        self._worst = None
        if setup.spec.measure == "average":
            self._average = sharpness.AverageCase(
                rho, section.samples, section.seed, section.adaptive
            )
        elif setup.spec.measure in ("worst", "m"):
            step = section.step_size if section.step_size is not None else 2 * rho / section.steps
            self._worst = sharpness.WorstCase(
                rho, section.steps, step, section.norm, section.adaptive, section.random_start,
                section.seed,
            )  # fmt: skip

    def evaluate(self, a: float, b: float) -> dict[str, float]:
        del b  # a part's units lie on a line
        unit = int(round(a))
        measure = self.spec.measure
        if measure == "origin":
            value = sharpness.origin_loss(self.model, self.batches, self.loss)
        elif self._average is not None:
            value = sharpness.average_case_draw(
                self.model, self.parameters, self.batches, self.loss, self._average, unit
            )
        else:
            assert self._worst is not None
            batches = self.batches if measure == "worst" else [self.batches[unit]]
            value = sharpness.worst_case_on(
                self.model, self.parameters, batches, self.loss, self._worst, unit
            )
        return {"value": value}


def moving_parameters(
    model: torch.nn.Module, ignore: str, selection: ParamsSelection | None = None
) -> dict[str, torch.Tensor]:
    """The model's parameters that move, by their state_dict names: all of them, or those of
    more than one dimension under `ignore: biasbn` (biases and BatchNorm's γ, β stay); of
    them only those `selection` (sharpness.params) picks by name. The others stay at θ*."""
    picked = None
    if selection is not None and not selection.everything:
        picked = set(params.select(model, selection, key="sharpness.params").keys)
    moving: dict[str, torch.Tensor] = {
        name: tensor
        for name, tensor in model.named_parameters()
        if not (ignore == "biasbn" and tensor.dim() <= 1) and (picked is None or name in picked)
    }
    if not moving and picked is not None:
        raise ConfigError(
            "sharpness.params selects only tensors of ≤ 1 dimension, which sharpness.ignore: "
            "biasbn keeps at θ*; set sharpness.ignore: none or select others"
        )
    if not moving:
        raise ConfigError("no parameter of the model moves under sharpness.ignore; set it none")
    return moving


def _subset(split: Any, examples: int, seed: int, batch_size: int) -> tuple[torch.Tensor, ...]:
    """The first `examples` examples of the split in the seeded order (the same on every
    rank), as one inputs and one targets tensor on the split's device."""
    inputs, targets, count = [], [], 0
    for batch_inputs, batch_targets in split.batches(batch_size, order_seed=seed):
        inputs.append(batch_inputs)
        targets.append(batch_targets)
        count += len(batch_targets)
        if count >= examples:
            break
    return torch.cat(inputs)[:examples], torch.cat(targets)[:examples]


# ---------------------------------------------------------------------------- the job


def run_sharpness(
    config: SharpnessConfig,
    force: bool = False,
    log: Log = to_stderr,
    log_every: int | None = None,
) -> SharpnessOutcome | None:
    """Run (or resume) the sharpness job, serially or as rank 0 / a worker under mpiexec.
    Returns the outcome (None on workers)."""

    def serial() -> SharpnessOutcome:
        pick_device(config.evaluation.device)  # an unusable device is bad input
        session = LocalSession(lambda setup: pick_device(setup.config.evaluation.device))
        return _run_master(config, force, session, log, log_every)

    return run_job(lambda session: _run_master(config, force, session, log, log_every), serial, log)


def _run_master(
    config: SharpnessConfig,
    force: bool,
    session: protocol.MasterSide,
    log: Log,
    log_every: int | None,
) -> SharpnessOutcome:
    terminated = protocol.TerminationFlag()
    terminated.install()
    try:
        model = FROM_CONFIG.build_model(config.model)
        assert config.model.checkpoint is not None  # check_sharpness requires one
        checkpoint.load_weights(model, config.model.checkpoint)
        state = {key: value.detach().clone() for key, value in model.state_dict().items()}
        section = config.sharpness
        names = list(moving_parameters(model, section.ignore, section.params))
        attributes = _attributes(config, state, names)
        status = _check_output(config, attributes, force)
        parts = [_Part(config, spec, unit_grid(spec), state) for spec in parts_of(config)]
    except BaseException:
        session.send_setup(None)  # the workers exit quietly; this rank reports the error
        raise
    if status is True:
        session.send_setup(None)
        log(f"{config.output} is already complete; nothing to do")
        return SharpnessOutcome(config.output, 0, True)
    ready = load_workers(session, parts, terminated)  # a _Part is a sweep.Job
    log(
        f"lsurf sharpness: {len(names)} tensors of {config.model.name} move "
        f"({params.count({n: state[n] for n in names}):,} values), "
        f"{config.sharpness.examples} {config.sharpness.split} examples"
    )
    try:
        opened = _commit(config, attributes, parts, ready.columns, resume=status is False)
    except BaseException:
        session.stop_workers(EXIT_BAD_INPUT)
        raise
    try:
        writers = [opened.writer(part.spec.name) for part in parts]
        run = OpenOutputs(parts, writers, log)
        computed = run.left_in_all
        labels = [f"{config.output} {part.spec.name}" for part in parts]
        serve_queue(
            session,
            run,
            parts,
            [status is False] * len(parts),
            ready.notes,
            terminated,
            log,
            log_every,
            labels,
        )
        opened.write_results()
    finally:
        opened.close()
    return SharpnessOutcome(config.output, computed, False)


def _attributes(
    config: SharpnessConfig, state: dict[str, torch.Tensor], names: list[str]
) -> dict[str, Any]:
    return {
        "config": to_yaml(config),
        "checkpoint_sha256": params.digest(state),
        "parameters": json.dumps(names),
    }


def _check_output(config: SharpnessConfig, attributes: dict[str, Any], force: bool) -> bool | None:
    """None: create the file; False: resume it; True: it is complete. A file made for
    another job (another checkpoint, other settings) is refused."""
    path = config.output
    if force or not path.exists():
        capacity.check_folder_writable(path)
        return None
    found = sharpness_file.read_sharpness_attributes(path)
    old_config = stored_config(found)
    try:  # keys added to lsurf since the file was written take their defaults
        old_config = to_plain(stored_sharpness_config(old_config))
    except LsurfError:
        pass  # a config this version cannot read: compared as written, key by key
    changed = [
        key for key in differences(old_config, to_plain(config)) if key not in OPERATIONAL_KEYS
    ]
    if found.get("checkpoint_sha256") != attributes["checkpoint_sha256"]:
        changed.append("checkpoint contents")
    if changed:
        raise OutputError(
            f"output {path} holds another sharpness job (differs in: {', '.join(changed)}); "
            "choose another output path, or pass --force to start over"
        )
    return sharpness_file.read_sharpness(path).complete


def _commit(
    config: SharpnessConfig,
    attributes: dict[str, Any],
    parts: list[_Part],
    columns: list[list[Column]],
    resume: bool,
) -> sharpness_file.SharpnessFile:
    """The file, created with every part's group (or reopened to resume, once it is checked
    to hold this job's parts)."""
    names = [part.spec.name for part in parts]
    if not resume:
        layouts = [
            sharpness_file.PartLayout(
                part.spec.name,
                part.grid,
                measured,
                {"measure": part.spec.measure}
                | ({} if part.spec.rho is None else {"rho": part.spec.rho}),
            )
            for part, measured in zip(parts, columns, strict=True)
        ]
        return sharpness_file.create_sharpness_file(config.output, attributes, layouts)
    opened = sharpness_file.SharpnessFile(config.output)
    if opened.names != names:
        opened.close()
        raise OutputError(
            f"output {config.output} holds the parts {', '.join(opened.names)}, not "
            f"{', '.join(names)}; pass --force to start over"
        )
    return opened
