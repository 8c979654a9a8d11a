"""Batch has no boto3 waiters: a bounded poll on a describe call, for the states we wait on."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sdtui.errors import DeploymentError

DELAY_S = 5
TIMEOUT_S = 15 * 60  # a compute environment with instances can take minutes to go


class Invalid(DeploymentError):
    """Batch reports the thing INVALID; `reason` is its statusReason."""

    def __init__(self, what: str, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{what} is INVALID: {reason or 'Batch gives no reason'}",
                         fix="fix what the reason names, then run the same command again")


def wait_for(state: Status, wanted: set[str | None], what: str, *,
             failed: set[str] = frozenset({"INVALID"}), timeout_s: float = TIMEOUT_S,
             sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> str | None:
    """Poll `state()` (None: the thing is gone) until it is in `wanted`."""
    deadline = clock() + timeout_s
    while True:
        current = state()
        if current in wanted:
            return current
        if current in failed:
            raise Invalid(what, state.reason)
        if clock() > deadline:
            raise DeploymentError(f"{what} is still {current} after {timeout_s / 60:.0f} min",
                                  fix="run the same command again to keep waiting")
        sleep(DELAY_S)


class Status:
    """Calling it gives the `status` field of what `describe` finds (None once it is gone);
    `reason` is the `statusReason` of that same answer."""

    def __init__(self, describe: Callable[[Any, str], dict | None], client: Any,
                 name: str) -> None:
        self._describe, self._client, self._name = describe, client, name
        self.reason = ""

    def __call__(self) -> str | None:
        found = self._describe(self._client, self._name)
        self.reason = "" if found is None else found.get("statusReason", "")
        return None if found is None else found.get("status")



def disable_then_delete(state: Status, found: dict, what: str, *,
                        disable: Callable[[], object], delete: Callable[[], object],
                        sleep: Callable[[float], None] = time.sleep) -> None:
    """Batch deletes a compute environment or queue only once it is DISABLED and settled."""
    if found.get("state") != "DISABLED":
        wait_for(state, {"VALID", "INVALID"}, what, failed=set(), sleep=sleep)
        disable()
    wait_for(state, {"VALID", "INVALID", None}, what, failed=set(), sleep=sleep)
    if state() is not None:
        delete()
    wait_for(state, {None}, f"{what}'s deletion", failed=set(), sleep=sleep)
