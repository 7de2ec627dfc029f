"""User code by import path: `package.module:callable`, the way models, datasets and losses
outside lsurf reach a sweep.

Input: the text of a config value and the key it came from. Output: the object it names, or a
`ConfigError` of one line that says which module or attribute could not be found and why.
Standard library only: the config layer checks the spelling without importing anything.

Every MPI rank resolves the same text itself (a function cannot travel between processes
reliably), so a module that is importable on rank 0 but not on a worker's node is that
worker's one-line error, not a hang.
"""

from __future__ import annotations

import importlib
import re
import sys
from typing import Any

from lsurf.errors import ConfigError

# 'package.module:callable' or 'package.module:Class.factory'
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_import_path(text: str) -> bool:
    """Whether `text` has the shape of an import path (a registry name has no colon)."""
    return ":" in text


def check_import_path(text: str, key: str) -> str:
    """`text` when it is spelled `package.module:callable`; a ConfigError otherwise."""
    if not _IMPORT_PATH.match(text):
        raise ConfigError(
            f"{key} {text!r} is not an import path; write package.module:callable "
            "(e.g. torchvision.models:resnet18)"
        )
    return text


def resolve(text: str, key: str) -> Any:
    """Import the module of `package.module:attribute` and return the attribute."""
    module_name, _, attribute = check_import_path(text, key).partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - user code can fail to import in any way
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        hint = (
            "install it or add its folder to PYTHONPATH on every node"
            if isinstance(error, ModuleNotFoundError)
            else "fix the module"
        )
        message = f"{key}: cannot import module {module_name!r} ({reason}); {hint}"
        raise ConfigError(message) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(
                f"{key}: module {module_name!r} ({_where(module_name)}) has no attribute "
                f"{attribute!r}; check the name after the colon"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{key}: {text} is a {type(target).__name__}, not a callable")
    return target


def _where(module_name: str) -> str:
    module = sys.modules.get(module_name)
    return str(getattr(module, "__file__", None) or "built in")
