"""Progress of a sweep as rank 0 sees it: points done, points/s, ETA.

On a terminal: a tqdm bar. Otherwise (a cluster job's log): one plain line at most every
`interval` seconds, and a last one at the end, so logs stay readable and greppable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

Log = Callable[[str], None]


class Progress:
    def __init__(self, total: int, done: int, log: Log, interval: float = 10.0) -> None:
        self.total, self.done, self.log, self.interval = total, done, log, interval
        self.start_done = done
        self.started = self.last = time.monotonic()
        self.last_logged = -1
        self.bar = None
        if sys.stderr.isatty() and interval > 0:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=done, unit="point", dynamic_ncols=True, smoothing=0.05
            )

    def advance(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            return
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last, self.last_logged = now, self.done
            self.log(self.line(now))

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.last_logged != self.done:
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
