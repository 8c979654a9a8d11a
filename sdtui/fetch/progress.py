"""Bytes, rate and ETA of a download, at most a few updates a second (and always the last)."""

from __future__ import annotations

import time
from collections.abc import Callable

# (file, bytes done, bytes in all or None, bytes per second, seconds left or None)
OnDownload = Callable[[str, int, "int | None", float, "float | None"], None]


class Meter:
    def __init__(self, on_update: OnDownload, interval: float = 0.25) -> None:
        self.on_update, self.interval = on_update, interval
        self._samples: list[tuple[float, int]] = []
        self._last = 0.0

    def update(self, file: str, done: int, total: int | None, *, final: bool = False) -> None:
        now = time.monotonic()
        self._samples = [s for s in self._samples if now - s[0] < 5.0] + [(now, done)]
        if not final and now - self._last < self.interval:
            return
        self._last = now
        t0, d0 = self._samples[0]
        rate = max(0.0, (done - d0) / (now - t0)) if now > t0 else 0.0
        eta = (total - done) / rate if total and rate > 0 else None
        self.on_update(file, done, total, rate, eta)
