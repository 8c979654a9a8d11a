"""The deployment interface both options implement, and the typed events it reports.

A deployment is an ordered list of named, idempotent steps. `provision` runs them and reports
each one's start, progress, log lines and outcome; a step that finds its work already done is
reported as skipped. Front ends only ever see this module's types.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from sdtui.errors import DeploymentError, Interrupted, SdtuiError

if TYPE_CHECKING:
    from sdtui.client import WorkerClient


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepStarted:
    step: str
    title: str


@dataclass(frozen=True)
class StepProgress:
    step: str
    done: int
    total: int | None
    unit: Literal["bytes", "items", "steps"] = "bytes"


@dataclass(frozen=True)
class DownloadProgress(StepProgress):
    """A model file being fetched: a StepProgress in bytes, with its rate and ETA."""

    file: str = ""
    rate: float = 0.0  # bytes per second
    eta_s: float | None = None


@dataclass(frozen=True)
class StepLog:
    step: str
    line: str


@dataclass(frozen=True)
class StepFinished:
    step: str
    outcome: Literal["done", "skipped", "failed"]
    detail: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class CostUpdate:
    """Option A only: what the running deployment costs."""

    hourly_usd: float
    so_far_usd: float
    idle_stop_in_s: int | None = None


DeployEvent = StepStarted | StepProgress | DownloadProgress | StepLog | StepFinished | CostUpdate
OnEvent = Callable[[DeployEvent], None]


# --- steps ----------------------------------------------------------------------------------


class StepContext:
    """What a running step uses to report, and to notice a cancel request."""

    def __init__(self, step: str, on_event: OnEvent, cancel: threading.Event) -> None:
        self.step = step
        self._on_event = on_event
        self._cancel = cancel

    def progress(self, done: int, total: int | None, unit: str = "bytes") -> None:
        self._on_event(StepProgress(self.step, done, total, unit))  # type: ignore[arg-type]

    def download(self, file: str, done: int, total: int | None, rate: float,
                 eta_s: float | None) -> None:
        self._on_event(DownloadProgress(self.step, done, total, "bytes", file, rate, eta_s))

    def log(self, line: str) -> None:
        self._on_event(StepLog(self.step, line.rstrip("\n")))

    @property
    def cancel(self) -> threading.Event:
        return self._cancel

    def check_cancel(self) -> None:
        if self._cancel.is_set():
            raise Interrupted(f"cancelled during {self.step}", fix="provision again to resume")


@dataclass
class Step:
    name: str
    title: str
    run: Callable[[StepContext], str | None]
    # Returns a reason when the work is already done; the step is then skipped.
    already_done: Callable[[], str | None] = lambda: None


Explain = Callable[[Exception], SdtuiError | None]


def _raised_while_interrupted(exc: BaseException) -> bool:
    """Ctrl-C inside a library call can surface as the error of the cleanup it cut short (a
    socket closed under a half-sent body gives EBADF); the user still pressed Ctrl-C."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def run_steps(steps: list[Step], on_event: OnEvent, cancel: threading.Event | None = None,
              explain: Explain = lambda exc: None) -> None:
    """`explain` turns a deployment's own kind of unexpected failure (its engine gone, say)
    into the one line a user needs."""
    cancel = cancel or threading.Event()
    for step in steps:
        on_event(StepStarted(step.name, step.title))
        started = time.monotonic()
        ctx = StepContext(step.name, on_event, cancel)
        try:
            ctx.check_cancel()
            reason = step.already_done()
            if reason is not None:
                on_event(StepFinished(step.name, "skipped", reason, time.monotonic() - started))
                continue
            detail = step.run(ctx) or ""
        except SdtuiError as exc:
            on_event(StepFinished(step.name, "failed", str(exc), time.monotonic() - started))
            raise
        except Exception as exc:  # an unexpected failure still names its step
            if _raised_while_interrupted(exc):
                raise KeyboardInterrupt from exc
            known = explain(exc)
            on_event(StepFinished(step.name, "failed", str(known or exc),
                                  time.monotonic() - started))
            if known is not None:
                raise known from exc
            raise DeploymentError(f"step {step.name!r} failed: {exc}") from exc
        on_event(StepFinished(step.name, "done", detail, time.monotonic() - started))


# --- the interface ---------------------------------------------------------------------------


@dataclass
class Resource:
    kind: str  # "container", "volume", "image", "bucket", "instance", ...
    id: str
    state: str = ""
    kept_on_teardown: bool = False
    note: str = ""


@dataclass
class DeploymentStatus:
    name: str
    option: Literal["local", "aws", "batch"]
    state: str  # "absent", "provisioning", "ready", "stopped", "failed", ...
    resources: list[Resource] = field(default_factory=list)
    hourly_usd: float | None = None
    cost_so_far_usd: float | None = None
    idle_stop_in_s: int | None = None


@dataclass
class TeardownReport:
    removed: list[Resource] = field(default_factory=list)
    kept: list[Resource] = field(default_factory=list)
    # What could not be deleted, with what it still costs; empty means nothing leaked.
    left: list[Resource] = field(default_factory=list)

    def summary(self) -> str:
        def names(rs: list[Resource]) -> str:
            return ", ".join(f"{r.kind} {r.id}" + (f" ({r.note})" if r.note else "") for r in rs)

        text = f"removed {names(self.removed) or 'nothing'}"
        if self.kept:
            text += f"; kept {names(self.kept)}"
        if self.left:
            text += f"; LEFT {names(self.left)}"
        return text


class Deployment(ABC):
    name: str
    option: Literal["local", "aws", "batch"]

    @abstractmethod
    def plan(self) -> list[Step]:
        """The ordered steps `provision` will run (nothing is created by planning)."""

    def provision(self, on_event: OnEvent, cancel: threading.Event | None = None) -> None:
        run_steps(self.plan(), on_event, cancel, self.explain)

    def explain(self, exc: Exception) -> SdtuiError | None:
        """The one line for a failure of this deployment's own kind, or None."""
        return None

    @abstractmethod
    def connect(self) -> WorkerClient: ...

    @abstractmethod
    def status(self) -> DeploymentStatus: ...

    def refuse_foreign_purge(self) -> None:
        """Raise BadInput when a purge would delete something sdtui did not create (teardown
        calls it first too; front ends call it before anything else)."""
        return None

    @abstractmethod
    def teardown(self, on_event: OnEvent, *, purge: bool = False) -> TeardownReport: ...


def provision_or_interrupt(deployment: Deployment, on_event: OnEvent) -> None:
    """Provision from a terminal: Ctrl-C stops the running step at its next check, and the
    same command resumes (every step done is skipped)."""
    cancel = threading.Event()
    try:
        deployment.provision(on_event, cancel)
    except KeyboardInterrupt:
        cancel.set()
        raise Interrupted("interrupted while provisioning",
                          fix="run the same command again to resume") from None
