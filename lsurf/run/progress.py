"""What a job says as it runs: the `Log` its lines go to, and a sweep's progress (points done,
points/s, ETA) as rank 0 sees it.

On a terminal: a tqdm bar. In a Jupyter kernel: a `tqdm.auto` bar (a widget where ipywidgets
is installed) instead of lines. Otherwise (a cluster job's log): a plain line every `every`
points when asked (`--log-every N`); by default about every 1% of the grid but no more than
one per 10 s. At least one every five minutes, and a last one at the end, so logs stay
short, readable and greppable. `lsurf.sweep(progress=...)` picks: "auto" (the above),
"bar", "lines" or "none".
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import IO, Any, Literal, get_args

from lsurf.errors import ConfigError

Log = Callable[[str], None]  # where a job's lines go: stderr by default, or the caller's


def to_stderr(message: str) -> None:
    """The default `Log`: one line on stderr, flushed (job logs interleave ranks' lines)."""
    print(message, file=sys.stderr, flush=True)


QUIET_LIMIT_SECONDS = 300.0  # the longest a job log goes without a progress line
DEFAULT_GAP_SECONDS = 10.0  # the shortest, unless --log-every asks for every N points


ProgressChoice = Literal["auto", "bar", "lines", "none"]
Display = Literal["terminal", "notebook", "lines", "none"]  # what "auto" resolves to, or asked

# The caller's choice for the sweeps started inside `chosen_progress` (lsurf.api.sweep sets
# it): a context variable rather than a parameter through every job runner, since only the
# Python door offers the choice and the CLI's runs never change it.
_CHOICE: ContextVar[ProgressChoice] = ContextVar("progress", default="auto")


@contextlib.contextmanager
def chosen_progress(choice: str) -> Iterator[None]:
    """Show the progress of the sweeps run inside the block as `choice` says."""
    if choice not in get_args(ProgressChoice):
        valid = ", ".join(repr(name) for name in get_args(ProgressChoice))
        raise ConfigError(f"progress={choice!r} is not a way to show progress; valid: {valid}")
    token = _CHOICE.set(choice)  # type: ignore[arg-type]  # one of ProgressChoice: checked
    try:
        yield
    finally:
        _CHOICE.reset(token)


def in_notebook() -> bool:
    """True in a Jupyter kernel: ipykernel is loaded and IPython's shell is its ZMQ shell (a
    terminal IPython, or a script that merely imported ipykernel, is not a notebook)."""
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False
    shell = sys.modules["IPython"].get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def choose_display(
    choice: ProgressChoice, every: int | None, notebook: bool, terminal: bool
) -> Display:
    """How to show progress. "auto": lines when --log-every asked for them, a tqdm.auto bar in
    a notebook, a tqdm bar on a terminal, else lines; "bar": a tqdm.auto bar anywhere."""
    if choice == "none":
        return "none"
    if choice == "lines" or (choice == "auto" and every is not None):
        return "lines"
    if choice == "bar" or notebook:
        return "notebook"
    return "terminal" if terminal else "lines"


class Progress:
    def __init__(
        self,
        total: int,
        done: int,
        log: Log,
        every: int | None = None,
        choice: ProgressChoice | None = None,
        bar_file: IO[str] | None = None,
    ) -> None:
        """`choice` None: the one `chosen_progress` set; `bar_file`: where a bar draws
        (tqdm's default, stderr, when None)."""
        self.total, self.done, self.log = total, done, log
        self.every = every if every is not None else max(1, total // 100)
        self.gap = 0.0 if every is not None else DEFAULT_GAP_SECONDS
        self.start_done = self.logged_done = done
        self.started = self.logged_at = time.monotonic()
        self.display = choose_display(
            _CHOICE.get() if choice is None else choice, every, in_notebook(), sys.stderr.isatty()
        )
        self.bar: Any = None
        if self.display == "terminal":
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=done, unit="point", dynamic_ncols=True, file=bar_file
            )
        elif self.display == "notebook":
            from tqdm.auto import tqdm as auto_tqdm

            self.bar = auto_tqdm(total=total, initial=done, unit="point", file=bar_file)

    def advance(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            return
        if self.display == "none":
            return
        now = time.monotonic()
        quiet_for = now - self.logged_at
        due = self.done - self.logged_done >= self.every and quiet_for >= self.gap
        if due or quiet_for >= QUIET_LIMIT_SECONDS:
            self.logged_done, self.logged_at = self.done, now
            self.log(self.line(now))

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.display != "none" and self.logged_done != self.done:
            self.log(self.line(time.monotonic()))

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = (self.done - self.start_done) / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        percent = 100.0 * self.done / max(self.total, 1)
        return (
            f"{self.done}/{self.total} points ({percent:.0f}%), {rate:.2f} points/s, "
            f"elapsed {elapsed:.0f}s, ETA {eta:.0f}s"
        )
