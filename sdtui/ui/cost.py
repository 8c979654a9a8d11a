"""What a running Option A deployment costs, as the status bar shows it.

The deployment reports a CostUpdate now and then (during provisioning, and when the app polls
`cost_update()`); between reports the cost so far and the idle auto-stop countdown are carried
forward from the clock, so the figures move every second without asking AWS every second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sdtui.deploy.base import CostUpdate


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def cost_label(update: CostUpdate) -> str:
    label = f"${update.hourly_usd:.3f}/h · ${update.so_far_usd:.2f} so far"
    if update.idle_stop_in_s is not None:
        label += f" · idle auto-stop in {format_duration(update.idle_stop_in_s)}"
    return label


@dataclass
class CostMeter:
    last: CostUpdate | None = None
    at: float = 0.0

    def update(self, update: CostUpdate, now: float | None = None) -> None:
        self.last, self.at = update, time.monotonic() if now is None else now

    def clear(self) -> None:
        self.last = None

    def now(self, now: float | None = None) -> CostUpdate | None:
        """The last report carried forward to now."""
        if self.last is None:
            return None
        elapsed = max((time.monotonic() if now is None else now) - self.at, 0.0)
        idle = self.last.idle_stop_in_s
        return CostUpdate(
            self.last.hourly_usd, self.last.so_far_usd + self.last.hourly_usd * elapsed / 3600,
            None if idle is None else max(int(idle - elapsed), 0))

    def label(self, now: float | None = None) -> str:
        current = self.now(now)
        return cost_label(current) if current else ""
