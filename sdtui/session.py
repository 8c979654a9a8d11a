"""A generation session: requests to a worker, every finished image saved and acknowledged.

Both front ends use this. An image is acknowledged only after it is safely on disk, so an image
the worker finished is never lost: if this process dies first, the worker keeps it in its spool
and the next session's `take_over` saves it, and adopts the request the dead client left running.
An image is saved once: images sent again are matched by (request id, index) against the
outputs' index before they are saved.

Only one client at a time takes over a deployment's leftovers, and never what a live client
owns: each request it sends or adopts is locked for as long as it owns it (client_locks.py). A
second client attached at the same time saves only its own requests.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdtui import protocol
from sdtui.client import RunningRequest, WorkerClient, decode_png
from sdtui.client_locks import Attachment, ClientLock, RequestLocks
from sdtui.errors import GenerationError, RequestRejected, SpoolFull, WorkerDied
from sdtui.outputs import OutputWriteError, find_saved, save_image, store_inputs


@dataclass(frozen=True)
class SavedImage:
    path: Path
    request_id: str
    index: int
    seed: int
    params: dict[str, Any]
    # Sent again by the worker but found already saved (by a client that died before its ack).
    already_saved: bool = False


@dataclass
class Recovery:
    """What `take_over` found: images saved now, and the request a departed client left
    running (follow it with `Session.follow`)."""

    saved: list[SavedImage] = field(default_factory=list)
    adopted: RunningRequest | None = None
    # Another client holds this deployment: its images are its own to save.
    other_client: bool = False


OnWorkerEvent = Callable[[dict[str, Any]], None]


def _with_what_is_kept(exc: SpoolFull | OutputWriteError, saved: int, out_dir: Path
                       ) -> SpoolFull | OutputWriteError:
    """A full disk stops a request: say what is kept, where, and how to get the rest."""
    if isinstance(exc, SpoolFull):
        fix = ("free space on the worker's disk (`sdtui --no-ui --status` shows its spool), "
               "then run the same command")
    else:
        fix = f"{exc.fix}; then run the same command: it saves what the worker holds"
    return type(exc)(f"{exc.message}; {saved} image(s) of this request saved in {out_dir}",
                     fix=fix)


class Session:
    def __init__(self, client: WorkerClient, out_dir: Path, deployment: str | None = None,
                 who: str = "sdtui") -> None:
        """`who`: how another client's teardown names this one (the app, or sdtui --no-ui)."""
        self.client = client
        self.out_dir = out_dir
        # Recorded in each image's index line: the app's gallery shows a deployment's images.
        self.deployment = deployment
        self._lock = ClientLock(deployment) if deployment else None
        self._owned = RequestLocks(deployment) if deployment else None
        self._attached = Attachment(deployment) if deployment else None
        if self._attached is not None:
            self._attached.acquire(note=f"{who} (pid {os.getpid()})")
        self._current: str | None = None
        self._state = threading.Lock()
        self._saved: dict[tuple[str, int], Path] = {}

    # --- saving --------------------------------------------------------------------------------

    def _save(self, ev: dict[str, Any], *, sent_before: bool = False) -> SavedImage:
        """Save an image event (once), then acknowledge it. `sent_before`: the worker may have
        sent it to a client that saved it and died before acknowledging."""
        key = (ev["id"], ev["index"])
        # The recorded request: input images as references to their one stored copy.
        params = store_inputs(self.out_dir, ev["params"])
        path = self._saved.get(key)
        if path is None and sent_before:
            path = find_saved(self.out_dir, *key)
        already = path is not None
        if path is None:
            record = {"request": key[0], "index": key[1]}
            if self.deployment:
                record["deployment"] = self.deployment
            path = save_image(self.out_dir, decode_png(ev), params, record)
        self._saved[key] = path
        self.client.ack(*key)
        return SavedImage(path, ev["id"], ev["index"], ev["seed"], params, already)

    def _claim(self, rid: str) -> bool:
        """Own request `rid` unless a live client does."""
        return self._owned is None or self._owned.claim(rid)

    def _release(self, rid: str) -> None:
        """Let go of a request once every image of it we had is saved and acknowledged: the
        `info` round trip makes sure the worker applied those acks before another client can
        take the request's lock and fetch."""
        if self._owned is None:
            return
        with contextlib.suppress(GenerationError):
            self.client.info()
        self._owned.release(rid)

    def _recover(self, keep: str | None) -> tuple[list[SavedImage], bool]:
        """Save the images that finished while no client was attached, except those of a
        request a live client owns (it saves them). Returns the images saved, and whether a
        live client's were left to it. `keep`: a request we go on owning (adopted)."""
        images = self.client.fetch()
        ids = {ev["id"] for ev in images}
        claimed = {rid for rid in ids if self._claim(rid)}
        if self._owned is not None and claimed:
            # Claimed after that answer: ask again, so an image its owner saved and acknowledged
            # just before it let go is not saved a second time.
            images = self.client.fetch()
        try:
            saved = [self._save(ev, sent_before=True) for ev in images if ev["id"] in claimed]
        finally:
            for rid in claimed - {keep}:
                self._release(rid)
        return saved, claimed != ids

    def take_over(self) -> Recovery:
        """Unless another client is attached to this deployment: save what the worker holds
        unsaved, and adopt the request it is still running for a client that is gone."""
        if self._lock is not None and not self._lock.acquire():
            return Recovery(other_client=True)
        adopted = self.client.watch_running()
        live = False
        if adopted is not None and not self._adoptable(adopted.id):
            adopted.close()
            adopted, live = None, True
        try:
            saved, left = self._recover(adopted.id if adopted is not None else None)
        except BaseException:
            if adopted is not None:
                adopted.close()
                self._release(adopted.id)
            raise
        return Recovery(saved, adopted, other_client=live or left)

    def _adoptable(self, rid: str) -> bool:
        """Whether the running request `rid` is left by a client that is gone: we can take its
        lock, and it still runs (a live owner holds the lock until it is over)."""
        if not self._claim(rid):
            return False
        if self.client.info()["busy"] != rid:
            self._release(rid)
            return False
        return True

    # --- requests ------------------------------------------------------------------------------

    def generate(self, params: dict[str, Any], on_event: OnWorkerEvent | None = None,
                 rid: str | None = None) -> tuple[list[SavedImage], bool]:
        """Run one request (under request id `rid`, or a new one). Returns the saved images and
        whether it was cancelled."""
        request = protocol.request("generate", id=rid or self.client.new_id(), **params)
        del request["type"]
        refusal = protocol.model_refusal(self.client.ready or {}, request)
        if refusal:  # refused here, as the worker would, before anything is sent
            raise RequestRejected(refusal)
        if not self._claim(request["id"]):  # ids are random: only a stale file could hold it
            raise GenerationError(f"request id {request['id']} is locked by another client")
        return self._follow(request["id"], self.client.generate(**request), on_event)

    def follow(self, adopted: RunningRequest, on_event: OnWorkerEvent | None = None,
               ) -> tuple[list[SavedImage], bool]:
        """Follow an adopted request to its end, saving its images like our own."""
        return self._follow(adopted.id, adopted.events(), on_event, sent_before=True)

    def _follow(self, rid: str, events: Iterator[dict[str, Any]],
                on_event: OnWorkerEvent | None, *, sent_before: bool = False,
                ) -> tuple[list[SavedImage], bool]:
        saved: list[SavedImage] = []
        cancelled = False
        with self._state:
            self._current = rid
        try:
            for ev in events:
                if ev["type"] == "image":
                    image = self._save(ev, sent_before=sent_before)
                    saved.append(image)
                    ev = {**ev, "path": str(image.path), "params": image.params}
                elif ev["type"] == "done":
                    cancelled = ev["cancelled"]
                if on_event:
                    on_event(ev)
        except (SpoolFull, OutputWriteError) as exc:
            raise _with_what_is_kept(exc, len(saved), self.out_dir) from None
        finally:
            with self._state:
                self._current = None
            self._release(rid)
        return saved, cancelled

    def cancel(self) -> bool:
        """Cancel the running request; its finished images are still saved."""
        with self._state:
            rid = self._current
        if rid is None:
            return False
        with contextlib.suppress(WorkerDied):  # gone already: nothing left to cancel
            self.client.cancel(rid)
        return True

    def close(self) -> None:
        """Detach at once (never waits for a running request, which goes on in the worker and
        is adopted by the next session) and let another client take over."""
        self.client.close()
        if self._owned is not None:
            self._owned.release_all()
        if self._lock is not None:
            self._lock.release()
        if self._attached is not None:
            self._attached.release(remove=True)
