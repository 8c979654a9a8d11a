"""A real worker process (`python -m sdtui.worker`) that WorkerClient talks to as if over a
Docker attach socket: its stdout is framed like Docker's multiplexed stream. Attaching again
after a client closed reaches the same worker, which keeps its model and unacked images."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

from sdtui.client import WorkerClient

STDOUT_FRAME = 1


class SubprocessWorker:
    def __init__(self, model: Path, log: Path) -> None:
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sdtui.worker", "--model", str(model), "--device", "cpu"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        self._peer: socket.socket | None = None
        self._lock = threading.Lock()
        self._stop_on: bytes | None = None
        self.stopped = threading.Event()
        threading.Thread(target=self._pump_stdout, daemon=True).start()

    def stop_on_event(self, kind: str) -> threading.Event:
        """Stop the worker process (SIGSTOP) as soon as its output carries an event of this
        kind, before the event is passed on: it is then mid-request however fast the machine
        (a worker that writes ahead blocks on the full pipe). The event returned is set once it
        is stopped; `resume` lets it go on."""
        self.stopped.clear()
        self._stop_on = b'"type":"%s"' % kind.encode()
        return self.stopped

    def resume(self) -> None:
        self._stop_on = None
        if self.stopped.is_set():
            self.proc.send_signal(signal.SIGCONT)
            self.stopped.clear()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            if self._stop_on is not None and self._stop_on in chunk:
                self._stop_on = None
                self.proc.send_signal(signal.SIGSTOP)
                self.stopped.set()
            with self._lock:
                peer = self._peer
            if peer is None:
                continue  # nobody attached: like Docker, the output is not kept
            with contextlib.suppress(OSError):
                peer.sendall(struct.pack(">BxxxL", STDOUT_FRAME, len(chunk)) + chunk)
        with self._lock:  # the worker is gone: like Docker, the attached stream ends
            peer = self._peer
        if peer is not None:
            with contextlib.suppress(OSError):
                peer.shutdown(socket.SHUT_RDWR)

    def _pump_stdin(self, peer: socket.socket) -> None:
        assert self.proc.stdin is not None
        while True:
            try:
                data = peer.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        with self._lock:
            if self._peer is peer:
                self._peer = None

    def attach(self) -> WorkerClient:
        ours, theirs = socket.socketpair()
        with self._lock:
            self._peer = theirs
        threading.Thread(target=self._pump_stdin, args=(theirs,), daemon=True).start()
        return WorkerClient.over_attach_socket(ours)

    def stop(self) -> None:
        self.resume()
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()
