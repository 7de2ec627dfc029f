"""Progress of a sweep as rank 0 sees it: points done, points/s, ETA.

On a terminal: a tqdm bar. Otherwise (a cluster job's log): a plain line every `every`
points — by default about every 1% of the grid — and at least one every five minutes, plus a
last one at the end, so logs stay short, readable and greppable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

Log = Callable[[str], None]
QUIET_LIMIT_SECONDS = 300.0  # the longest a job log goes without a progress line


class Progress:
    def __init__(self, total: int, done: int, log: Log, every: int | None = None) -> None:
        self.total, self.done, self.log = total, done, log
        self.every = every if every is not None else max(1, total // 100)
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
        if (
            self.done - self.logged_done >= self.every
            or now - self.logged_at >= QUIET_LIMIT_SECONDS
        ):
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
