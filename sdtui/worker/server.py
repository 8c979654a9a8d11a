"""The worker's request loop: requests on stdin, events on stdout, logs on stderr.

A reader thread parses every line as it arrives, so `cancel`, `info`, `fetch` and `ack` are
answered while a generation runs; `generate` requests queue up and run strictly in order on
the main thread. Finished images wait in the spool (on disk, see spool.py) until acknowledged,
so a client that lost its stream, or a worker that was restarted, can `fetch` them again.
"""

from __future__ import annotations

import base64
import logging
import queue
import secrets
import threading
import time
from pathlib import Path
from typing import IO, Any

from sdtui import protocol
from sdtui.protocol import ProtocolError
from sdtui.worker import activity, spool

log = logging.getLogger("sdtui.worker")

_STOP = object()
ACTIVITY_FILE = activity.ACTIVITY_FILE
# Every event of a running request keeps the host's idle auto-stop away, not only finished ones.
BUSY_EVENTS = ("progress", "preview", "image", "done")


class Worker:
    def __init__(self, sampler: Any, model_info: dict[str, Any], out: IO[bytes],
                 outputs_dir: Path | None = None) -> None:
        self.sampler = sampler
        self.model_info = model_info
        self.outputs_dir = outputs_dir
        self._out = out
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._queued_ids: list[str] = []
        self._busy: str | None = None
        self._running: dict[str, Any] | None = None
        self._cancel = threading.Event()
        self._stopping = threading.Event()
        self._images_sent = 0  # by the running request
        self._cancelled_in_queue: set[str] = set()
        self.spool = spool.Spool(outputs_dir / spool.DIR_NAME if outputs_dir is not None
                                 else None)
        if loaded := self.spool.load():
            log.info("%d unacknowledged image(s) from an earlier run are in the spool", loaded)
        self._started = time.monotonic()

    # --- output ------------------------------------------------------------------------------

    def emit(self, kind: str, fields: dict[str, Any]) -> None:
        if isinstance(fields.get("png"), bytes):
            fields = {**fields, "png": base64.b64encode(fields["png"]).decode("ascii")}
        message = {"type": kind, **fields}
        line = protocol.encode(message)
        if kind in BUSY_EVENTS:
            self.touch_activity()
        if kind == "image":
            self.spool.put(message)  # on disk before the client can see it, or never sent
        with self._write_lock:
            self._out.write(line)
            self._out.flush()
        if kind == "image":
            self._images_sent += 1
            self._room_for_next(fields)

    def _room_for_next(self, image: dict[str, Any]) -> None:
        """Stop the request (SpoolFull) before an image its spool's disk cannot keep."""
        params = image["params"]
        if image["index"] + 1 < params["count"] and (reason := self.spool.room(
                _image_bound(params, params["width"], params["height"]))):
            raise spool.SpoolFull(reason)

    def error(self, rid: str | None, code: str, message: str) -> None:
        self.emit("error", {"id": rid, "code": code, "message": message})

    def touch_activity(self) -> None:
        """Mark the worker busy for the host's idle auto-stop (it reads this file's mtime)."""
        activity.touch(self.outputs_dir)

    # --- input -------------------------------------------------------------------------------

    def handle_line(self, line: bytes) -> None:
        if not line.strip():
            return
        self.touch_activity()
        try:
            req = protocol.parse_request(line)
        except ProtocolError as exc:
            rid = _id_of(line)
            self.error(rid, exc.code, str(exc))
            return
        handler = getattr(self, "_on_" + req["type"])
        handler(req)

    def _on_generate(self, req: dict[str, Any]) -> None:
        if req["seed"] is None:
            req["seed"] = secrets.randbelow(protocol.MAX_SEED - req["count"])
        if reason := self.spool.full():
            self.error(req["id"], "spool_full",
                       f"{reason}; run sdtui to save them (it fetches them first), then retry")
            return
        size = self.model_info.get("default_size") or 512
        need = req["count"] * _image_bound(req, req["width"] or size, req["height"] or size)
        if reason := self.spool.room(need):
            self.error(req["id"], "spool_full", f"the worker's spool cannot keep this request's "
                       f"{req['count']} image(s): {reason}")
            return
        with self._state_lock:
            if req["id"] == self._busy or req["id"] in self._queued_ids:
                self.error(req["id"], "duplicate_id", f"request id {req['id']!r} is in use")
                return
            self._queued_ids.append(req["id"])
        self._queue.put(req)

    def _on_cancel(self, req: dict[str, Any]) -> None:
        rid = req["id"]
        with self._state_lock:
            if rid == self._busy:
                self._cancel.set()
                return
            if rid in self._queued_ids:
                self._queued_ids.remove(rid)
                self._cancelled_in_queue.add(rid)
                queued = True
            else:
                queued = False
        if queued:
            self.emit("done", {"id": rid, "seconds": 0.0, "images": 0, "cancelled": True})
        else:
            self.error(rid, "not_found", f"no running or queued request with id {rid!r}")

    def _on_info(self, req: dict[str, Any]) -> None:
        with self._state_lock:
            running = self._running
            fields = {
                "busy": self._busy,
                "queued": len(self._queued_ids),
                "unacked": len(self.spool),
                # What the busy request asks for, so a client that adopts it can show it
                # (input images stay out: they can be megabytes).
                "request": None if running is None else {
                    k: v for k, v in running.items()
                    if k != "type" and k not in protocol.INPUT_IMAGE_FIELDS},
            }
        fields.update(uptime=round(time.monotonic() - self._started, 3), ready=self.model_info)
        self.emit("info", fields)

    def _on_fetch(self, req: dict[str, Any]) -> None:
        pending = self.spool.pending()
        with self._write_lock:
            for message in pending:
                self._out.write(protocol.encode({**message, "recovered": True}))
            self._out.write(protocol.encode({"type": "fetched", "count": len(pending)}))
            self._out.flush()

    def _on_ack(self, req: dict[str, Any]) -> None:
        self.spool.ack(req["id"], req["index"])

    # --- loop --------------------------------------------------------------------------------

    def _read(self, stdin: IO[bytes]) -> None:
        try:
            for line in stdin:
                self.handle_line(line)
        finally:
            self._queue.put(_STOP)

    def serve(self, stdin: IO[bytes]) -> bool:
        """Serve until stdin ends (False) or `stop` is called (True)."""
        self.emit("ready", self.model_info)
        reader = threading.Thread(target=self._read, args=(stdin,), daemon=True, name="stdin")
        reader.start()
        while (req := self._queue.get()) is not _STOP and not self._stopping.is_set():
            self.run_generate(req)
        return self._stopping.is_set()

    def stop(self) -> None:
        """Stop serving (SIGTERM: `docker stop`): the running request stops after its current
        step, queued ones never start; finished images stay in the spool. Safe to call from a
        signal handler: the queue is woken from another thread, since the handler may run
        while the main thread holds the queue's lock."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._cancel.set()
        threading.Thread(target=self._queue.put, args=(_STOP,), daemon=True).start()

    def run_generate(self, req: dict[str, Any]) -> None:
        from sdtui.worker.sampling import Cancelled

        rid = req["id"]
        with self._state_lock:
            if rid in self._cancelled_in_queue:
                self._cancelled_in_queue.discard(rid)
                return
            if rid in self._queued_ids:
                self._queued_ids.remove(rid)
            if self._stopping.is_set():
                return
            self._busy, self._running = rid, req
            self._cancel.clear()
        started = time.monotonic()
        images, cancelled = 0, False
        self._images_sent = 0
        try:
            images = self.sampler.run(req, self.emit, self._cancel)
        except spool.SpoolFull as exc:
            sent = self._images_sent
            self.error(rid, "spool_full", f"the worker's spool cannot keep more images: {exc}; "
                       f"it stopped the request after {sent} of {req['count']} image(s), "
                       "which are kept")
            return
        except Cancelled as exc:
            images, cancelled = exc.args[0], True
            if self._stopping.is_set():  # no `done`: its client must not read a user's cancel
                log.info("stopped request %s after %d image(s); they wait in the spool", rid,
                         images)
                return
        except Exception as exc:
            log.exception("generation %s failed", rid)
            # One line: some library messages span several.
            self.error(rid, _error_code(exc), "generation failed: " + " ".join(str(exc).split()))
            return
        finally:
            with self._state_lock:
                self._busy, self._running = None, None
        seconds = round(time.monotonic() - started, 3)
        self.emit("done", {"id": rid, "seconds": seconds, "images": images, "cancelled": cancelled})


def _image_bound(req: dict[str, Any], width: int, height: int) -> int:
    """The most spool bytes one image of `req` can take (an upscaled one is larger)."""
    scale = req.get("upscale") or 1
    return spool.image_bytes_bound(width * scale, height * scale, len(protocol.encode(req)))


def _id_of(line: bytes) -> str | None:
    """The request id of a rejected line, when one can be read, so the client can match it."""
    try:
        import json

        rid = json.loads(line).get("id")
    except Exception:
        return None
    return rid if isinstance(rid, str) else None


def _error_code(exc: Exception) -> str:
    from sdtui.errors import BadInput

    if isinstance(exc, BadInput):  # the request asked for something this model cannot do
        return "bad_request"
    if "out of memory" in str(exc).lower() or isinstance(exc, MemoryError):
        return "out_of_memory"
    return "generation_failed"
