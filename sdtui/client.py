"""WorkerClient: speaks the protocol to a worker over a byte stream.

The stream is the Docker SDK's attach socket (stdin, stdout, stream; frames demultiplexed),
the same over the local socket (Option B) and over ssh:// (Option A). A reader thread parses
events and hands each to the callers waiting for it, so a generation, an `info` and a
`fetch` can be in flight at once.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from docker.utils.socket import STDOUT, frames_iter

from sdtui import protocol
from sdtui.errors import Detached, GenerationError, RequestRejected, SpoolFull, WorkerDied

log = logging.getLogger(__name__)

_CLOSED = {"type": "_closed"}


@dataclass
class _Waiter:
    wants: Callable[[dict[str, Any]], bool]
    box: queue.Queue[dict[str, Any]]


class WorkerClient:
    def __init__(
        self,
        chunks: Iterator[bytes],
        write: Callable[[bytes], None],
        close: Callable[[], None],
        *,
        diagnose: Callable[[], WorkerDied] | None = None,
        on_log: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """`chunks` yields the worker's stdout in pieces of any size; `write` feeds its stdin."""
        self._chunks = chunks
        self._write = write
        self._close = close
        self._diagnose = diagnose or (lambda: WorkerDied("the worker's stream closed"))
        self._on_log = on_log or (lambda e: log.info("worker: %s", e.get("message")))
        self._waiters: list[_Waiter] = []
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed = threading.Event()
        self._detached = False
        self._ids = itertools.count(1)
        self.ready: dict[str, Any] | None = None
        self._ready_box: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read_loop, daemon=True, name="worker-events")
        self._reader.start()

    @classmethod
    def over_attach_socket(cls, sock: Any, **kw: Any) -> WorkerClient:
        """The Docker SDK's attach socket (no tty): stdout arrives in multiplexed frames."""
        raw = getattr(sock, "_sock", sock)

        def chunks() -> Iterator[bytes]:
            for stream, chunk in frames_iter(sock, tty=False):
                if stream == STDOUT and chunk:
                    yield chunk

        def close() -> None:
            # Ends this attachment only: the worker's stdin stays open (stdin_once=False).
            with contextlib.suppress(OSError, AttributeError):
                raw.shutdown(2)
            with contextlib.suppress(OSError):
                sock.close()

        return cls(chunks(), raw.sendall, close, **kw)

    @classmethod
    def over_pipes(cls, stdout: IO[bytes], stdin: IO[bytes], **kw: Any) -> WorkerClient:
        """A worker run as a plain process (tests, benchmarks)."""

        def write(data: bytes) -> None:
            stdin.write(data)
            stdin.flush()

        return cls(iter(lambda: stdout.read1(65536), b""), write, stdin.close, **kw)

    # --- plumbing ----------------------------------------------------------------------------

    def _read_loop(self) -> None:
        buf = b""
        try:
            for chunk in self._chunks:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._dispatch(line)
        except Exception as exc:  # a dropped connection ends the stream like EOF
            log.debug("worker stream ended: %s", exc)
        finally:
            self._end()

    def _end(self) -> None:
        """The stream is over: wake everyone waiting for an event."""
        self._closed.set()
        with self._lock:
            waiters = list(self._waiters)
        for waiter in waiters:
            waiter.box.put(_CLOSED)
        self._ready_box.put(_CLOSED)

    def _dispatch(self, line: bytes) -> None:
        try:
            ev = protocol.parse_event(line)
        except protocol.ProtocolError as exc:
            log.warning("ignoring a line the worker sent: %s", exc)
            return
        if ev["type"] == "ready":
            self.ready = {k: v for k, v in ev.items() if k != "type"}
            self._ready_box.put(ev)
        if ev["type"] == "log":
            self._on_log(ev)
            return
        if ev["type"] == "error" and ev["id"] is None and ev["code"] == "model_invalid":
            self._ready_box.put(ev)
        with self._lock:
            waiters = [w for w in self._waiters if w.wants(ev)]
        for waiter in waiters:
            waiter.box.put(ev)

    def send(self, message: dict[str, Any]) -> None:
        if self._closed.is_set():
            raise self._gone()
        data = protocol.encode(message)
        with self._send_lock:
            try:
                self._write(data)
            except (OSError, ValueError) as exc:
                raise self._gone() from exc

    def _subscribe(self, wants: Callable[[dict[str, Any]], bool]) -> _Waiter:
        waiter = _Waiter(wants, queue.Queue())
        with self._lock:
            self._waiters.append(waiter)
        if self._closed.is_set():
            waiter.box.put(_CLOSED)
        return waiter

    def _unsubscribe(self, waiter: _Waiter) -> None:
        with self._lock:
            self._waiters.remove(waiter)

    def _next(self, waiter: _Waiter, timeout: float | None) -> dict[str, Any]:
        try:
            ev = waiter.box.get(timeout=timeout)
        except queue.Empty:
            raise GenerationError(
                f"the worker did not answer within {timeout:g} s",
                fix="check the worker with `sdtui --no-ui --status`",
            ) from None
        if ev is _CLOSED:
            raise self._gone()
        return ev

    def _gone(self) -> WorkerDied:
        if self._detached:  # we closed it ourselves: nothing to diagnose
            return Detached("detached from the worker; it keeps running",
                            fix="run sdtui again to reattach; finished images are kept")
        return self._diagnose()

    # --- the protocol ------------------------------------------------------------------------

    def wait_ready(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for `ready` (a fresh worker) or ask `info` (one that was already running)."""
        if self.ready is not None:
            return self.ready
        try:
            ev = self._ready_box.get(timeout=timeout)
        except queue.Empty:
            raise WorkerDied(f"the worker was not ready within {timeout:g} s") from None
        if ev is _CLOSED:
            raise self._gone()
        if ev["type"] == "error":
            raise WorkerDied(ev["message"], fix="check the model file")
        _check_version(self.ready or {})
        return self.ready or {}

    def info(self, timeout: float = 30) -> dict[str, Any]:
        waiter = self._subscribe(lambda e: e["type"] == "info")
        try:
            self.send({"type": "info"})
            ev = self._next(waiter, timeout)
        finally:
            self._unsubscribe(waiter)
        if self.ready is None:
            _check_version(ev["ready"])
            self.ready = ev["ready"]
        return ev

    def watch_running(self, timeout: float = 30) -> RunningRequest | None:
        """The request the worker is running now (for a client that is gone, when the caller
        knows no other is attached), with its events from now on; None when it is idle.
        Subscribes before asking, so no event between the answer and the first read is lost."""
        waiter = self._subscribe(lambda e: e["type"] in _REQUEST_EVENTS and not e.get("recovered"))
        try:
            info = self.info(timeout)
        except BaseException:
            self._unsubscribe(waiter)
            raise
        if info["busy"] is None:
            self._unsubscribe(waiter)
            return None
        return RunningRequest(self, waiter, info["busy"], info["request"] or {})

    def new_id(self) -> str:
        return f"{uuid.uuid4().hex[:8]}-{next(self._ids)}"

    def generate(self, **params: Any) -> Iterator[dict[str, Any]]:
        """Send a generate request; yield its events up to and including `done`.
        A request the worker rejects raises GenerationError with the worker's message."""
        req = protocol.request("generate", **{"id": self.new_id(), **params})
        rid = req["id"]
        waiter = self._subscribe(lambda e: e.get("id") == rid and not e.get("recovered"))
        try:
            self.send(req)
            while True:
                ev = self._next(waiter, None)
                if ev["type"] == "error":
                    raise _ERRORS.get(ev["code"], GenerationError)(ev["message"])
                yield ev
                if ev["type"] == "done":
                    return
        finally:
            self._unsubscribe(waiter)

    def cancel(self, rid: str) -> None:
        self.send({"type": "cancel", "id": rid})

    def fetch(self, timeout: float = 120) -> list[dict[str, Any]]:
        """Every finished image the worker still holds (not yet acknowledged)."""
        waiter = self._subscribe(
            lambda e: e["type"] == "fetched" or (e["type"] == "image" and e["recovered"])
        )
        images = []
        try:
            self.send({"type": "fetch"})
            while (ev := self._next(waiter, timeout))["type"] != "fetched":
                images.append(ev)
        finally:
            self._unsubscribe(waiter)
        return images

    def ack(self, rid: str, index: int | None = None) -> None:
        self.send({"type": "ack", "id": rid, "index": index})

    def close(self) -> None:
        """Detach, without waiting for anything: whoever waits for an event gets Detached at
        once. The worker keeps running and keeps unacknowledged images."""
        self._detached = True
        self._end()
        self._close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()


_REQUEST_EVENTS = ("progress", "preview", "image", "done", "error")
# The worker's error codes that mean more than "generation failed".
_ERRORS = {"bad_request": RequestRejected, "spool_full": SpoolFull}


class RunningRequest:
    """A request someone else sent, followed from the moment it was adopted."""

    def __init__(self, client: WorkerClient, waiter: _Waiter, rid: str,
                 params: dict[str, Any]) -> None:
        self._client, self._waiter = client, waiter
        self.id, self.params = rid, params

    def events(self) -> Iterator[dict[str, Any]]:
        """Its remaining events up to and including `done`; an `error` raises."""
        try:
            while True:
                ev = self._client._next(self._waiter, None)
                if ev.get("id") != self.id:
                    continue
                if ev["type"] == "error":
                    raise _ERRORS.get(ev["code"], GenerationError)(ev["message"])
                yield ev
                if ev["type"] == "done":
                    return
        finally:
            self.close()

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self._client._unsubscribe(self._waiter)


def _check_version(ready: dict[str, Any]) -> None:
    spoken = ready.get("protocol")
    if spoken != protocol.PROTOCOL_VERSION:
        raise WorkerDied(
            f"the worker speaks protocol {spoken}, this sdtui speaks {protocol.PROTOCOL_VERSION}",
            fix="run the same sdtui version that started it, or provision again to replace it",
        )


def decode_png(ev: dict[str, Any]) -> bytes:
    return base64.b64decode(ev["png"])
