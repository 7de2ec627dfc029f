"""lsurf: loss-surface sweeps of neural networks, after Li et al. (NeurIPS 2018).

The public face (everything else may change between versions):

    import lsurf
    surface = lsurf.sweep(model, (inputs, targets), x="-1:1:21", y="-1:1:21")
    surface = lsurf.read_surface("runs/demo/surface.h5")
    figure = lsurf.plot(surface, kind="contour")   # a matplotlib Figure; save="f.png" writes it
    page = lsurf.plot_html(surface)                # a plotly Figure (the 3D surface)
    directions, attributes = lsurf.read_directions("runs/demo/surface.directions.h5")

`sweep` is lsurf.api.sweep; `Surface`/`read_surface` and `read_directions` are the surface
and direction files (lsurf.files); the errors are the `LsurfError` family every bad input
raises. The names are imported when first used, so `import lsurf.plot` (or `lsurf info`)
does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lsurf.errors import CheckpointError, ConfigError, DataError, LsurfError, OutputError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from lsurf.api import sweep
    from lsurf.capture import Capture
    from lsurf.directions import Directions
    from lsurf.files.directions import read_directions
    from lsurf.files.surface import Surface, read_surface

_LAZY = {
    "sweep": "lsurf.api",
    "Capture": "lsurf.capture",
    "Surface": "lsurf.files.surface",
    "read_surface": "lsurf.files.surface",
    "read_directions": "lsurf.files.directions",
    "Directions": "lsurf.directions",
    # lsurf.plot is the callable package itself (see lsurf/plot/__init__.py): importing it
    # gives the function, and any import of a submodule sets the same attribute.
    "plot": "lsurf.plot",
    "plot_html": "lsurf.plot",
}

__all__ = [
    "Capture",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Directions",
    "LsurfError",
    "OutputError",
    "Surface",
    "__version__",
    "plot",
    "plot_html",
    "read_directions",
    "read_surface",
    "sweep",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = module if name == "plot" else getattr(module, name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'lsurf' has no attribute {name!r}")
