"""lsurf.Capture as a callback of the two common training loops: PyTorch Lightning and the
Hugging Face Trainer.

    from lsurf.callbacks import LightningCapture
    trainer = lightning.pytorch.Trainer(callbacks=[LightningCapture("landscape.h5", data)])

    from lsurf.callbacks import HuggingFaceCapture
    trainer = transformers.Trainer(..., callbacks=[HuggingFaceCapture("landscape.h5", data)])

Each takes lsurf.Capture's arguments and captures at the end of every `every`-th epoch, the
epoch counted as the number of epochs trained (the first capture with every=5 comes after the
fifth), with the trainer's global step; on several processes only the first one captures
(the others wait for it at their next collective). A model whose parameters no longer match
the capture file is refused when training starts, before a step is taken.

The two classes subclass their framework's callback, so each is built when first asked for:
`import lsurf.callbacks` needs neither framework, and a missing one is one line naming the
extra to install (`lsurf[lightning]`, `lsurf[transformers]`).
"""

from __future__ import annotations

import importlib
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

        def __init__(self, path: Any, data: Any, **keywords: Any) -> None:
            super().__init__()
            self.capture = Capture(path, data, **keywords)

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            self.capture.check_model(pl_module)

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

        def __init__(self, path: Any, data: Any, **keywords: Any) -> None:
            self.capture = Capture(path, data, **keywords)

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if kwargs.get("model") is not None:
                self.capture.check_model(kwargs["model"])

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
