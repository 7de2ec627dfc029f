"""What a job says as it runs: the `Log` its lines go to, and a sweep's progress (points done,
points/s, ETA) as rank 0 sees it.

On a terminal: a tqdm bar. Otherwise (a cluster job's log): a plain line every `every`
points when asked (`--log-every N`); by default about every 1% of the grid but no more than
one per 10 s. At least one every five minutes, and a last one at the end, so logs stay
short, readable and greppable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

Log = Callable[[str], None]  # where a job's lines go: stderr by default, or the caller's


def to_stderr(message: str) -> None:
    """The default `Log`: one line on stderr, flushed (job logs interleave ranks' lines)."""
    print(message, file=sys.stderr, flush=True)


QUIET_LIMIT_SECONDS = 300.0  # the longest a job log goes without a progress line
DEFAULT_GAP_SECONDS = 10.0  # the shortest, unless --log-every asks for every N points


class Progress:
    def __init__(self, total: int, done: int, log: Log, every: int | None = None) -> None:
        self.total, self.done, self.log = total, done, log
        self.every = every if every is not None else max(1, total // 100)
        self.gap = 0.0 if every is not None else DEFAULT_GAP_SECONDS
        self.start_done = self.logged_done = done
        self.started = self.logged_at = time.monotonic()
        self.bar = None
        if every is None and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="point", dynamic_ncols=True)

    def advance(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
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
        elif self.logged_done != self.done:
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
