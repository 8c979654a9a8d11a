"""Hands events from worker threads to the UI, coalescing the ones that only matter when new.

Threads `put` as fast as they like; the UI `drain`s on a timer (about 15 times a second).
Progress and preview events keep only their latest value per key, so a slow terminal never
falls behind a fast worker; every other event is delivered, in order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

# Returns the coalescing key of an event, or None when every copy must be delivered.
KeyOf = Callable[[Any], Hashable | None]


class EventPump:
    def __init__(self, key_of: KeyOf) -> None:
        self._key_of = key_of
        self._lock = threading.Lock()
        self._items: list[Any] = []

    def put(self, event: Any) -> None:
        with self._lock:
            self._items.append(event)

    def drain(self) -> list[Any]:
        """Everything since the last drain, with superseded coalescible events dropped."""
        with self._lock:
            items, self._items = self._items, []
        last: dict[Hashable, int] = {}
        for i, ev in enumerate(items):
            key = self._key_of(ev)
            if key is not None:
                last[key] = i
        return [ev for i, ev in enumerate(items)
                if (key := self._key_of(ev)) is None or last[key] == i]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
