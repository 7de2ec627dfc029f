"""lsurf.Capture as a callback of the two common training loops: PyTorch Lightning and the
Hugging Face Trainer.

    from lsurf.callbacks import LightningCapture
    trainer = lightning.pytorch.Trainer(callbacks=[LightningCapture("landscape.h5", data)])

    from lsurf.callbacks import HuggingFaceCapture
    trainer = transformers.Trainer(..., callbacks=[HuggingFaceCapture("landscape.h5", data)])

Each takes lsurf.Capture's arguments and captures at the end of every `every`-th epoch, the
epoch counted as the number of epochs trained (the first capture with every=5 comes after the
fifth), with the trainer's global step. On several processes only the first one captures
(the others wait for it at their next collective). A model whose parameters no longer match
the capture file is refused when training starts, before a step is taken. With `log=True`
(the default) every capture also goes to the trackers the training already logs to
(Lightning's WandbLogger/TensorBoardLogger, the Trainer's `report_to` wandb/tensorboard),
through lsurf.trackers.

The two classes subclass their framework's callback, so each is built when first asked for:
`import lsurf.callbacks` needs neither framework, and a missing one is one line naming the
extra to install (`lsurf[lightning]`, `lsurf[transformers]`).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from lsurf.capture import Capture
from lsurf.errors import ConfigError

EXTRAS = {"lightning": "lightning", "transformers": "transformers"}


def _framework(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS[module.split(".")[0]]
        raise ConfigError(
            f"this callback needs {extra}, which is not installed: pip install lsurf[{extra}]"
        ) from None


def _lightning_capture() -> type:
    pl = _framework("lightning.pytorch")

    class LightningCapture(pl.Callback):  # type: ignore[name-defined]
        """Captures a plane around the LightningModule's weights every `every` epochs."""

        def __init__(self, path: Any, data: Any, *, log: bool = True, **keywords: Any) -> None:
            super().__init__()
            self.capture = Capture(path, data, **keywords)
            self.log = log

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            self.capture.check_model(pl_module)
            if self.log and trainer.global_rank == 0:
                # The trainer's own W&B and TensorBoard loggers get every capture too.
                for logger in trainer.loggers:
                    kind = type(logger).__name__
                    if kind == "WandbLogger" and self.capture.run is None:
                        self.capture.run = logger.experiment
                    elif kind == "TensorBoardLogger" and self.capture.writer is None:
                        self.capture.writer = logger.experiment

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.global_rank != 0 or trainer.sanity_checking:
                return
            self.capture(
                pl_module,
                trainer.current_epoch + 1,
                trainer.global_step,
                leave_out=(trainer,),
            )

    return LightningCapture


def _hugging_face_capture() -> type:
    transformers = _framework("transformers")

    class HuggingFaceCapture(transformers.TrainerCallback):  # type: ignore[name-defined]
        """Captures a plane around the Trainer's model every `every` epochs."""

        def __init__(self, path: Any, data: Any, *, log: bool = True, **keywords: Any) -> None:
            self.capture = Capture(path, data, **keywords)
            self.log = log

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if kwargs.get("model") is not None:
                self.capture.check_model(kwargs["model"])
            if not self.log or not state.is_world_process_zero:
                return
            # The trackers the Trainer reports to get every capture too: W&B's run (the
            # Trainer's WandbCallback started it); for TensorBoard a writer of our own where
            # the Trainer's writes (TENSORBOARD_LOGGING_DIR, older versions' logging_dir), else
            # a run of its own under output_dir/runs, beside the Trainer's.
            report_to = args.report_to or []
            if "wandb" in report_to and self.capture.run is None:
                import wandb

                self.capture.run = wandb.run
            if "tensorboard" in report_to and self.capture.writer is None:
                from torch.utils.tensorboard import SummaryWriter

                folder = os.getenv("TENSORBOARD_LOGGING_DIR") or getattr(args, "logging_dir", None)
                if not folder:
                    folder = os.path.join(args.output_dir, "runs", "lsurf-capture")
                self.capture.writer = SummaryWriter(log_dir=folder)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.capture.writer is not None:
                self.capture.writer.flush()

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            model = kwargs.get("model")
            if not state.is_world_process_zero or model is None:
                return
            # state.epoch is a float (the fraction of epochs done); at an epoch's end, whole.
            self.capture(model, round(state.epoch), state.global_step)

    return HuggingFaceCapture


_BUILDERS = {"LightningCapture": _lightning_capture, "HuggingFaceCapture": _hugging_face_capture}


def __getattr__(name: str) -> Any:
    if name in _BUILDERS:
        built = _BUILDERS[name]()
        globals()[name] = built  # built once
        return built
    raise AttributeError(f"module 'lsurf.callbacks' has no attribute {name!r}")


__all__ = ["HuggingFaceCapture", "LightningCapture"]  # noqa: F822 (built on first use)
