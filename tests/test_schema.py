from dataclasses import dataclass

import pytest

from lsurf.errors import ConfigError
from lsurf.schema import differences, parse, safe_load, to_plain


@dataclass(frozen=True)
class Window:
    """A leaf type the schema does not know, written back as its spec (like a grid axis)."""

    low: int
    high: int

    @property
    def spec(self) -> str:
        return f"{self.low}:{self.high}"


@dataclass(frozen=True)
class Job:
    name: str
    window: Window
    retries: int = 0


def parse_window(value: object, key: str) -> Window:
    if not isinstance(value, str) or value.count(":") != 1:
        raise ConfigError(f"{key} must be 'low:high', got {value!r}")
    low, high = value.split(":")
    return Window(int(low), int(high))


def test_sexagesimal_numbers_stay_text():
    assert safe_load("a: 1:30") == {"a": "1:30"}
    assert safe_load("a: 12\nb: 1.5") == {"a": 12, "b": 1.5}


def test_extra_leaf_types_use_the_callers_converter_and_are_written_as_their_spec():
    job = parse(Job, safe_load("name: a\nwindow: 2:5"), {Window: parse_window})
    assert job == Job("a", Window(2, 5))
    assert to_plain(job) == {"name": "a", "window": "2:5", "retries": 0}
    with pytest.raises(ConfigError, match="^job.window must be 'low:high', got 7$"):
        parse(Job, {"name": "a", "window": 7}, {Window: parse_window}, "job.")
    with pytest.raises(ConfigError) as error:
        parse(Job, {"name": "a", "colour": "red"}, {Window: parse_window}, "job.")
    assert str(error.value) == "unknown key job.colour in job; valid keys: name, window, retries"


def test_differences_lists_dotted_keys():
    old = {"a": 1, "grid": {"x": "0:1:3", "y": None}}
    new = {"a": 1, "grid": {"x": "0:1:5", "y": None}, "b": 2}
    assert differences(old, new) == ["grid.x", "b"]


@dataclass(frozen=True)
class Tolerance:
    tol: float
    name: str = "x"


def test_exponents_without_a_dot_are_numbers_where_a_number_is_wanted():
    # YAML 1.1 reads 1e-4 as text; people write it for tolerances all the time.
    assert safe_load("tol: 1e-4") == {"tol": "1e-4"}
    assert parse(Tolerance, safe_load("tol: 1e-4")) == Tolerance(1e-4)
    assert parse(Tolerance, {"tol": "-2E3"}) == Tolerance(-2000.0)
    assert parse(Tolerance, {"tol": 1, "name": "1e-4"}) == Tolerance(1.0, "1e-4")  # text stays
    with pytest.raises(ConfigError, match="^tol must be a number, got 'small'"):
        parse(Tolerance, {"tol": "small"})
