"""Ctrl-C in a step whose cleanup then fails (a socket closed under a half-sent body, seen as
`[Errno 9] Bad file descriptor` in the fault matrix's sigint@models cell) is still an
interruption: exit 130 and the resume hint, not a failed step."""

import errno

import pytest

from sdtui.deploy.base import Deployment, Step, provision_or_interrupt
from sdtui.errors import EXIT_INTERRUPTED, Interrupted


class _OneStep(Deployment):
    name, option = "t", "local"

    def __init__(self, run) -> None:
        self._run = run

    def plan(self):
        return [Step("models", "Copy the model files into the volume", self._run)]

    connect = status = teardown = None  # type: ignore[assignment]


def _interrupted_then_cleanup_fails(ctx) -> None:
    try:
        raise KeyboardInterrupt
    finally:
        raise OSError(errno.EBADF, "Bad file descriptor")


def _fails_on_its_own(ctx) -> None:
    raise OSError(errno.EBADF, "Bad file descriptor")


def test_ctrl_c_whose_cleanup_fails_is_an_interruption_not_a_failed_step():
    events = []
    with pytest.raises(Interrupted) as caught:
        provision_or_interrupt(_OneStep(_interrupted_then_cleanup_fails), events.append)
    assert caught.value.exit_code == EXIT_INTERRUPTED
    assert "again to resume" in caught.value.fix
    assert not [e for e in events if getattr(e, "outcome", None) == "failed"]


def test_a_step_that_fails_without_ctrl_c_is_still_a_failed_step():
    from sdtui.errors import DeploymentError

    with pytest.raises(DeploymentError, match="Bad file descriptor"):
        provision_or_interrupt(_OneStep(_fails_on_its_own), lambda e: None)
