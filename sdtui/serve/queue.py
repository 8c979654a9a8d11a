"""The API's queue: requests go to the worker one at a time, first come first served.

Each request's images are saved by the session like any other client's before its HTTP answer
is written, so a client that hangs up loses nothing: its images are in the outputs all the
same. /interrupt stops the running request (the images it finished are kept and answered).
Every request is kept on disk (pending.py) from the moment it is queued until it is over, so a
restarted `sdtui serve` runs what the last one left.

A worker that went away while nothing ran (an Option A instance stopped by its idle auto-stop,
the container stopped) is brought back for the next request, as a restarted `sdtui serve`
would: the deployment's steps run again (the stopped instance is started), the images it holds
are saved, and the request waits in the queue meanwhile (`progress` says what is starting).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sdtui.client import RunningRequest
from sdtui.deploy.base import DeployEvent, StepStarted
from sdtui.errors import Detached, GenerationError, SdtuiError, WorkerDied
from sdtui.serve import pending
from sdtui.session import Recovery, SavedImage, Session


class Stopping(GenerationError):
    """`sdtui serve` stopped before the request ran."""


@dataclass
class Job:
    params: dict[str, Any]
    route: str = "txt2img"
    adopted: RunningRequest | None = None  # a request a departed client left running
    rid: str = ""  # the worker request id, given when it is queued
    images: list[SavedImage] = field(default_factory=list)
    cancelled: bool = False
    error: SdtuiError | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))

    @property
    def count(self) -> int:
        return int(self.params.get("count", 1))


# Brings the deployment up again and attaches: (its events, a cancel) -> a new session.
Reconnect = Callable[[Callable[[DeployEvent], None], threading.Event], Session]


@dataclass
class _Progress:
    job: Job | None = None
    started: float = 0.0
    starting: str | None = None  # what is being started for the job, while it is
    index: int = 0
    step: int = 0
    total: int = 0
    preview: str | None = None  # the latest preview, base64 PNG
    interrupted: bool = False
    skipped: bool = False


class JobQueue:
    def __init__(self, session: Session, on_saved: Callable[[str], None] | None = None,
                 deployment: str | None = None, reconnect: Reconnect | None = None,
                 starting: str = "starting the worker") -> None:
        """`deployment`: keep the queue on disk under that name (none: in memory only).
        `reconnect`: how to bring a worker that is gone back (none: its requests fail);
        `starting` says so in `progress` ("starting instance")."""
        self.session = session
        self._on_saved = on_saved
        self._deployment = deployment
        self._reconnect = reconnect
        self._starting = starting
        self._cancel = threading.Event()  # stops a bring-up when sdtui serve stops
        self._kept: dict[str, pending.Pending] = {}  # on disk, in order: waiting or running
        self._pending: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._now = _Progress()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="api-queue", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> Job:
        with self._cond:
            if self._stopping:
                job.error = Stopping("sdtui serve is stopping", fix="send it again once it is "
                                     "back")
                job.finished.set()
                return job
            if job.adopted is None:
                job.rid = job.rid or self.session.client.new_id()
                try:
                    self._keep({**self._kept, job.rid: pending.Pending(job.rid, job.route,
                                                                       job.params)})
                except SdtuiError as exc:  # not on disk, so not queued: nothing is lost
                    job.error = exc
                    job.finished.set()
                    return job
            self._pending.append(job)
            self._cond.notify()
        return job

    def resume(self, left: list[pending.Pending]) -> None:
        """Queue what a previous `sdtui serve` left on disk (its clients are gone: the images
        are saved to the outputs, nobody is answered), and write the queue as it now is."""
        with self._cond:
            self._keep({**self._kept, **{p.rid: p for p in left}})
            self._pending.extend(Job(p.params, p.route, rid=p.rid) for p in left)
            self._cond.notify()

    def _keep(self, kept: dict[str, pending.Pending]) -> None:
        """Write the queue to disk, then hold it in memory (under self._cond)."""
        if self._deployment is not None:
            pending.save(self._deployment, list(kept.values()))
        self._kept = kept

    def stop(self) -> None:
        """Take no more requests and answer the waiting ones: they stay on disk and the next
        `sdtui serve` runs them. The running one goes on in the worker and the next client
        adopts it (its images are saved, never lost)."""
        with self._cond:
            self._stopping = True
            waiting, self._pending = list(self._pending), collections.deque()
            self._cond.notify_all()
        self._cancel.set()
        kept = self._deployment is not None
        for job in waiting:
            job.error = Stopping(
                "sdtui serve stopped before this request ran" + (
                    "; it is kept, and runs when sdtui serve is started again (its images go "
                    "to the deployment's outputs)" if kept else ""),
                fix="find its images in the outputs once sdtui serve is back" if kept
                else "send it again once it is back")
            job.finished.set()

    def queued(self) -> int:
        """Requests waiting or running."""
        with self._cond:
            return len(self._pending) + (self._now.job is not None)

    def _next(self) -> Job | None:
        with self._cond:
            while not self._pending and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            job = self._pending.popleft()
            self._now = _Progress(job, time.monotonic())
            return job

    def _run(self) -> None:
        while (job := self._next()) is not None:
            try:
                if job.adopted is not None:
                    job.images, job.cancelled = self.session.follow(job.adopted, self._event)
                else:
                    self._run_job(job)
            except SdtuiError as exc:
                job.error = exc
            finally:
                with self._cond:
                    self._now = _Progress()
                    if job.rid in self._kept:
                        with contextlib.suppress(SdtuiError):  # kept: runs again, saved once
                            self._keep({k: v for k, v in self._kept.items() if k != job.rid})
                job.finished.set()

    def _run_job(self, job: Job) -> None:
        if self.session.client.closed and self._reconnect is not None:
            self._bring_up(job)
        seen: list[dict[str, Any]] = []
        try:
            job.images, job.cancelled = self.session.generate(
                job.params, lambda ev: (seen.append(ev), self._event(ev)), rid=job.rid)
        except WorkerDied as exc:
            # Gone before the request was heard of (the stream ended as it was sent): bring it
            # back, then the worker's own record says whether to run it, follow it or not.
            if seen or isinstance(exc, Detached) or self._reconnect is None \
                    or not self.session.client.closed:
                raise
            recovery = self._bring_up(job)
            if recovery.adopted is not None and recovery.adopted.id == job.rid:
                job.images, job.cancelled = self.session.follow(recovery.adopted, self._event)
            elif any(image.request_id == job.rid for image in recovery.saved):
                job.images = [i for i in recovery.saved if i.request_id == job.rid]
            else:
                job.images, job.cancelled = self.session.generate(job.params, self._event,
                                                                  rid=job.rid)

    def _bring_up(self, job: Job) -> Recovery:
        """The deployment up again and a new session attached to its worker; what the worker
        holds unsaved is saved, and a request another client left running is followed to its
        end, unless it is `job`'s own (returned in the recovery for the caller to follow)."""
        assert self._reconnect is not None

        def on_event(ev: DeployEvent) -> None:
            if isinstance(ev, StepStarted):
                with self._cond:
                    self._now.starting = f"{self._starting} ({ev.title})"

        with self._cond:
            self._now.starting = self._starting
        try:
            self.session.close()
            self.session = self._reconnect(on_event, self._cancel)
        finally:
            with self._cond:
                self._now.starting = None
        recovery = self.session.take_over()
        for image in recovery.saved:
            if self._on_saved is not None:
                self._on_saved(str(image.path))
        if recovery.adopted is not None and recovery.adopted.id != job.rid:
            self.session.follow(recovery.adopted, self._notify_saved)
            recovery.adopted = None
        return recovery

    def _notify_saved(self, ev: dict[str, Any]) -> None:
        if ev["type"] == "image" and self._on_saved is not None:
            self._on_saved(ev["path"])

    def _event(self, ev: dict[str, Any]) -> None:
        with self._cond:
            now = self._now
            if ev["type"] == "progress":
                now.index, now.step, now.total = ev["index"], ev["step"], ev["total"]
            elif ev["type"] == "preview":
                now.preview = ev["png"]
            elif ev["type"] == "image":
                now.index, now.step = ev["index"] + 1, 0
        self._notify_saved(ev)

    def interrupt(self, *, skip: bool = False) -> bool:
        """Stop the running request after its current step; its finished images are kept."""
        with self._cond:
            if self._now.job is None:
                return False
            self._now.skipped = skip
            self._now.interrupted = not skip
        with contextlib.suppress(SdtuiError):
            self.session.cancel()
        return True

    def progress(self, with_image: bool = True) -> dict[str, Any]:
        """A1111's /sdapi/v1/progress answer (ProgressResponse)."""
        with self._cond:
            now, waiting = self._now, len(self._pending)
        state = {"skipped": now.skipped, "interrupted": now.interrupted,
                 "stopping_generation": False, "job": "", "job_count": 0,
                 "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0,
                 "queued": waiting}
        if now.job is None:
            return {"progress": 0, "eta_relative": 0, "state": state, "current_image": None,
                    "textinfo": f"{waiting} request(s) queued" if waiting else None}
        count = now.job.count
        state |= {"job": now.job.route, "job_count": count, "job_no": min(now.index, count),
                  "job_timestamp": now.job.stamp, "sampling_step": now.step,
                  "sampling_steps": now.total}
        if now.starting is not None:  # A1111 clients show textinfo as the job's state
            return {"progress": 0.01, "eta_relative": 0, "state": state, "current_image": None,
                    "textinfo": f"{now.starting}; {waiting} more request(s) queued"}
        # A1111's formula: a small start, then the images done and the current image's steps.
        done = 0.01 + now.index / count + (now.step / now.total / count if now.total else 0)
        elapsed = time.monotonic() - now.started
        return {"progress": min(done, 1.0), "eta_relative": elapsed / done - elapsed,
                "state": state,
                "current_image": now.preview if with_image else None,
                "textinfo": f"image {min(now.index + 1, count)} of {count}, step {now.step}"
                            f"/{now.total}; {waiting} more request(s) queued"}


def png_base64(image: SavedImage) -> str:
    """A saved image as the API answers it: the file's bytes, its metadata chunks included."""
    return base64.b64encode(image.path.read_bytes()).decode("ascii")
