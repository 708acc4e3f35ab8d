"""Peak resident memory of this process over a block of code, sampled from /proc."""

from __future__ import annotations

import os
import resource
import sys
import threading


def rss_bytes() -> int:
    """Current resident set size; falls back to the lifetime peak where /proc is unavailable."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the lifetime peak is the best we have (bytes on macOS, KiB elsewhere)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


class PeakRSS:
    """``with PeakRSS() as peak: ...`` then ``peak.bytes``: the highest RSS seen while the block
    ran, sampled every ``interval`` seconds (short spikes between samples can be missed), and
    ``peak.growth``: how far that is above the RSS at the start of the block."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.start = self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.bytes = max(self.bytes, rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.start = self.bytes = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.bytes = max(self.bytes, rss_bytes())

    @property
    def growth(self) -> int:
        return self.bytes - self.start
