"""From YAML and `--set` overrides to a frozen dataclass tree, and from the tree back to YAML.

Input: a YAML file (read with `safe_load`, which keeps 'a:b:c' specs as text), `key.path=value`
overrides, the dataclass to build, and converters for leaf types beyond the built-in ones
(bool, int, float, str, Path, Literal, tuple, dict[str, Any], unions and nested
dataclasses).
Output: an instance whose every field is typed and has a value, with relative paths resolved
against the current directory. `to_yaml` writes a tree back (every default spelled out),
`to_plain` gives the same as plain values, and `differences` lists the keys where two written
trees disagree.

The dataclasses are the single source of truth for the options: `parse` walks their fields,
so an unknown key is rejected with the list of valid ones and a wrong type names the key, the
value and the expected type. This module knows no lsurf option: lsurf.config holds the tree
and supplies the converters for the grid's axis specs.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    Protocol,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
    runtime_checkable,
)

import yaml

from lsurf.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# A number in exponent notation without a dot (`1e-4`, `-2E3`), which YAML 1.1 leaves a string.
_EXPONENT = re.compile(r"[-+]?[0-9]+[eE][-+]?[0-9]+")

T = TypeVar("T", bound="DataclassInstance")

# Converts a leaf value of one extra type: (value as YAML gave it, dotted key) -> the value.
# It raises ConfigError naming the key when the value does not fit.
LeafConverter = Callable[[Any, str], Any]

NO_CONVERTERS: Mapping[type, LeafConverter] = types.MappingProxyType({})


@runtime_checkable
class Spec(Protocol):
    """A leaf value that `to_plain` writes as the text it was parsed from (a grid axis)."""

    @property
    def spec(self) -> str: ...


# ---------------------------------------------------------------------------- reading


class _SafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader (no Python objects, ever) that reads '1:2:3' as text.

    YAML 1.1 reads an unquoted `-1:1:51` as a base-60 integer (-3711); a grid spec written
    without quotes must reach the spec parser as the string the user typed.
    """


def _number_or_text(loader: _SafeLoader, node: yaml.ScalarNode) -> Any:
    text = loader.construct_scalar(node)
    if ":" in text:
        return text
    if node.tag.endswith(":int"):
        return yaml.SafeLoader.construct_yaml_int(loader, node)
    return yaml.SafeLoader.construct_yaml_float(loader, node)


_SafeLoader.add_constructor("tag:yaml.org,2002:int", _number_or_text)
_SafeLoader.add_constructor("tag:yaml.org,2002:float", _number_or_text)


def safe_load(text: str) -> Any:
    """yaml.safe_load, except that sexagesimal numbers stay text (see _SafeLoader)."""
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: Path, overrides: Sequence[str]) -> dict[str, Any]:
    """The raw tree of the YAML file at `path`, with the `--set` overrides applied."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = safe_load(path.read_text())
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(error, "problem", error)
        raise ConfigError(f"{path} is not valid YAML{line}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (model, data, ...)")
    for override in overrides:
        _apply_override(raw, override)
    return raw


def _apply_override(raw: dict[str, Any], override: str) -> None:
    """Set `a.b.c=value` in the raw tree; the value is parsed as YAML, then type-checked."""
    key, sep, text = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects key.path=value, got {override!r}")
    try:
        value = safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
    parts = key.split(".")
    node = raw
    for index, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[: index + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def parse(
    cls: type[T],
    raw: Any,
    converters: Mapping[type, LeafConverter] = NO_CONVERTERS,
    prefix: str = "",
) -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types.

    `converters` maps each leaf type the built-in rules do not know to its converter.
    """
    where = prefix.rstrip(".") or "the config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {describe(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]} in {where}; valid keys: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, spec in fields.items():
        if name in raw:
            values[name] = _convert(hints[name], raw[name], prefix + name, converters)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {prefix}{name}")
    return cls(**values)


def _convert(hint: Any, value: Any, key: str, converters: Mapping[type, LeafConverter]) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, key, converters)
            except ConfigError as error:
                errors.append(error)
        raise errors[0]
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            valid = ", ".join(str(choice) for choice in choices)
            raise ConfigError(f"{key} must be one of {valid}; got {describe(value)}")
        return value
    if origin is dict:
        # A free-form mapping (keyword arguments for user code): str keys, plain YAML values.
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key} must be a mapping of names to values, got {describe(value)}")
        return dict(value)
    if origin is tuple:
        items = get_args(hint)
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            value = [value] if items[-1] is Ellipsis else value
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {describe(value)}")
        if items[-1] is Ellipsis:
            return tuple(_convert(items[0], item, key, converters) for item in value)
        if len(value) != len(items):
            raise ConfigError(f"{key} must be a list of {len(items)} values, got {len(value)}")
        pairs = zip(items, value, strict=True)
        return tuple(_convert(item_hint, item, key, converters) for item_hint, item in pairs)
    # Before the dataclass rule: an extra leaf type may itself be a dataclass (a grid axis).
    if hint in converters:
        return converters[hint](value, key)
    if dataclasses.is_dataclass(hint):  # a dataclass type: a hint is never an instance
        return parse(cast("type[Any]", hint), value, converters, key + ".")
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key} must be a path, got {describe(value)}")
        return Path(value).expanduser().absolute()
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {describe(value)}")
        return value
    if hint is float:
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            # YAML 1.1 (PyYAML) reads `1e-4` as a string: it wants `1.0e-4`. People write 1e-4.
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {describe(value)}")
        return value
    raise TypeError(f"no converter for {hint!r} ({key})")  # a bug in the config tree


def describe(value: Any) -> str:
    """A value as error messages show it: its repr and its YAML-given type."""
    return f"{value!r} ({type(value).__name__})"


# ---------------------------------------------------------------------------- writing


def to_plain(config: Any) -> Any:
    """The config tree as plain YAML-able values (paths as strings, axes as specs)."""
    if isinstance(config, Spec):
        return config.spec
    if dataclasses.is_dataclass(config):
        return {f.name: to_plain(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Path):
        return str(config)
    if isinstance(config, tuple):
        return [to_plain(item) for item in config]
    return config


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_plain(config), sort_keys=False, allow_unicode=True)


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config trees."""
    keys = list(old) + [key for key in new if key not in old]
    found: list[str] = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}")
    return found
