"""Batch has no boto3 waiters: a bounded poll on a describe call, for the states we wait on."""

from __future__ import annotations

import time
from collections.abc import Callable

from sdtui.errors import DeploymentError

DELAY_S = 5
TIMEOUT_S = 15 * 60  # a compute environment with instances can take minutes to go


def wait_for(state: Callable[[], str | None], wanted: set[str | None], what: str, *,
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
            raise DeploymentError(f"{what} is {current}",
                                  fix="see its status reason in the AWS Batch console")
        if clock() > deadline:
            raise DeploymentError(f"{what} is still {current} after {timeout_s / 60:.0f} min",
                                  fix="run the same command again to keep waiting")
        sleep(DELAY_S)
