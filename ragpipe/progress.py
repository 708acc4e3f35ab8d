"""Progress lines for long steps: items done, rate and time left, written to stderr."""

from __future__ import annotations

import sys
import time


class Progress:
    """Reports ``done/total`` with items per second and an ETA at most every ``interval`` seconds.

    Disabled instances cost nothing, so library code can always call :meth:`update`.
    """

    def __init__(self, label: str, total: int, unit: str = "docs", enabled: bool = True, interval: float = 2.0):
        self.label, self.total, self.unit = label, total, unit
        self.enabled = enabled and total > 0
        self.interval = interval
        self.done = 0
        self.start = time.perf_counter()
        self._last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self._last >= self.interval or self.done >= self.total):
            self._last = now
            elapsed = now - self.start
            rate = self.done / elapsed if elapsed > 0 else 0.0
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            end = "\n" if self.done >= self.total else "\r"
            sys.stderr.write(
                f"{self.label}: {self.done}/{self.total} {self.unit} "
                f"({rate:,.{0 if rate >= 10 else 1}f} {self.unit}/s, {elapsed:.0f}s elapsed, ETA {eta:.0f}s)   {end}"
            )
            sys.stderr.flush()
