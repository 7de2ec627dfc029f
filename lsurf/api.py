"""The Python door into lsurf, for notebooks: the same sweep from objects held in memory.

    from lsurf.api import sweep
    surface = sweep(model, (inputs, targets), x="-1:1:21", y="-1:1:21",
                          loss=my_loss, output="runs/mine.h5")
    surface.metrics["train_loss"]   # (21, 21), element [i, j] at (x[i], y[j])

Input: a model instance holding θ* (its current weights), the data — a map-style Dataset of
(input, target) pairs, a pair of tensors, or a mapping {"train": ..., "test": ...} of those —
and optionally a loss (`cross_entropy`, `mse`, an import path, or a callable(outputs, targets)
returning per-example losses or a (sum, count) pair). Every other setting is a keyword named
as the YAML config's key, with its default: any key of the `evaluation` section (fold_bn,
compile, standard_errors, rel_error, min_examples, control_variate, precision, ...) and the
`data` keys that apply to objects in memory (`OBJECT_DATA_KEYS`). Output: the
`lsurf.files.surface.Surface` read back from the surface file.

This is the YAML pipeline itself (lsurf.run.sweep), not a copy: the objects enter through
`lsurf.run.phases.Sources`, the config that the file stores names them by their type, and θ*'s
identity is the digest of the model's state dict. So the file it writes is the same file,
resumable by calling again with the same objects; without `output` the sweep runs in a
temporary folder that is removed once the surface is read back. The API runs serially, in
this process (MPI sweeps start from a YAML config). What the sweep changes in the process — torch's
thread count, its cuDNN/TF32 flags, the random generators of torch, NumPy and Python — is put
back when it returns (`kept_process_state`), so the caller's training or notebook goes on as
it would have without it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import random
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lsurf.checkpoint import require_finite
from lsurf.config import OBJECT_LABEL, EvaluationConfig, objects_sweep_config
from lsurf.data.splits import from_object
from lsurf.errors import ConfigError
from lsurf.files.surface import Surface, read_surface
from lsurf.losses import build_loss
from lsurf.params import digest as state_digest
from lsurf.run.phases import Sources
from lsurf.run.progress import Log, chosen_progress, to_stderr
from lsurf.run.sweep import run_in_process

# The keyword settings, by section: the config's own keys (one table: the config dataclasses).
# `loss` has a keyword of its own; data keys about files on disk do not apply to objects.
EVALUATION_KEYS = tuple(f.name for f in dataclasses.fields(EvaluationConfig) if f.name != "loss")
OBJECT_DATA_KEYS = ("batch_size", "subset", "subset_seed", "cache_mb", "workers")


def sweep(
    model: nn.Module,
    data: Any,
    *,
    x: str = "-1:1:11",
    y: str | None = None,
    loss: str | Callable[..., Any] = "cross_entropy",
    directions: Mapping[str, Any] | None = None,
    hessian: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    output: str | Path | None = None,
    force: bool = False,
    log: Log | None = to_stderr,
    progress: str = "auto",
    **settings: Any,
) -> Surface:
    """Sweep `model` over the grid x (and y) and return the surface (see the module docstring).

    `directions` takes the keys of the config's `directions` section, e.g.
    {"kind": "random", "norm": "filter", "seed": 3} or {"kind": "target", "target": "b.pt"};
    `hessian` those of the `hessian` section, e.g. {"eigenvalues": True, "tol": 1e-4} for the
    maps of λmax and λmin. `params` chooses the tensors the directions move by name, as the
    config's `directions.params`: {"include": ["*lora_*"], "exclude": ["*norm*"]} (globs over
    `model.named_parameters()` names); the others stay at θ*. `progress`: "auto" (a bar in a
    notebook or on a terminal, else lines in `log`), "bar", "lines" or "none"
    (lsurf.run.progress). `settings`: `batch_size=500`, `device="cpu"`, `fold_bn=False`,
    `rel_error=0.01`, ... (see the module docstring); an unknown one is a ConfigError.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    splits = dict(data) if isinstance(data, Mapping) else {"train": data}
    loss_name = loss if isinstance(loss, str) else f"{OBJECT_LABEL} {_name_of(loss)}"
    evaluation, data_settings = _sections(settings)
    direction_settings = dict(directions or {})
    if params is not None:
        if "params" in direction_settings:
            raise ConfigError(
                "lsurf.sweep got params twice (params= and directions['params']); give one"
            )
        direction_settings["params"] = dict(params)
    with tempfile.TemporaryDirectory(prefix="lsurf-") as scratch:
        path = Path(output) if output is not None else Path(scratch) / "surface.h5"
        raw = {
            "model": {"name": f"{OBJECT_LABEL} {_name_of(type(model))}"},
            "data": {"dataset": OBJECT_LABEL, "splits": list(splits), **data_settings},
            "directions": direction_settings,
            "grid": {"x": x, "y": y},
            "evaluation": {**evaluation, "loss": loss_name},
            "hessian": dict(hessian or {}),
            "output": str(path),
        }
        config = objects_sweep_config(raw)
        # θ* is the model as handed over, copied once so the caller's model is never moved.
        state = {key: value.detach().clone() for key, value in model.state_dict().items()}

        def build_model(_: object) -> nn.Module:
            fresh = copy.deepcopy(model)
            fresh.load_state_dict(state)
            return fresh

        def load_origin(target: nn.Module, _: object) -> str:
            target.load_state_dict(state)
            require_finite(target, "the model passed to lsurf.api.sweep")
            return state_digest(state)

        def open_split(data_config: Any, name: str, on: torch.device, channels_last: bool) -> Any:
            return from_object(
                splits[name], f"data[{name!r}]", data_config, name, on, channels_last
            )

        sources = Sources(
            build_model,
            load_origin,
            open_split,
            lambda name: build_loss(name, None if isinstance(loss, str) else loss),
        )
        with kept_process_state(), chosen_progress(progress):
            run_in_process([config], force, log or (lambda message: None), None, sources)
        return read_surface(path)  # read whole into memory, before the scratch folder goes


@contextlib.contextmanager
def kept_process_state() -> Iterator[None]:
    """Put back what a sweep changes in the process: torch's thread count and backend flags
    (lsurf.evaluate.configure_backends) and every random generator's state, so a training
    loop or a notebook goes on after a sweep exactly as it would have without one."""
    threads = torch.get_num_threads()
    flags = [
        (torch.backends.cudnn, "allow_tf32"),
        (torch.backends.cudnn, "deterministic"),
        (torch.backends.cudnn, "benchmark"),
        (torch.backends.cuda.matmul, "allow_tf32"),
    ]
    values = [getattr(owner, name) for owner, name in flags]
    matmul_precision = torch.get_float32_matmul_precision()
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        for (owner, name), value in zip(flags, values, strict=True):
            setattr(owner, name, value)
        torch.set_float32_matmul_precision(matmul_precision)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def _sections(settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The keyword settings split into the config's evaluation and data sections."""
    evaluation, data = {}, {}
    for key, value in settings.items():
        if key in EVALUATION_KEYS:
            evaluation[key] = value
        elif key in OBJECT_DATA_KEYS:
            data[key] = value
        else:
            valid = ", ".join(sorted((*EVALUATION_KEYS, *OBJECT_DATA_KEYS)))
            raise ConfigError(f"lsurf.sweep got an unknown setting {key!r}; valid: {valid}")
    return evaluation, data


def _name_of(thing: Any) -> str:
    module = getattr(thing, "__module__", None) or ""
    name = getattr(thing, "__qualname__", None) or type(thing).__name__
    return f"{module}.{name}" if module else name
