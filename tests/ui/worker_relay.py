"""A real worker process (`python -m sdtui.worker`) that WorkerClient talks to as if over a
Docker attach socket: its stdout is framed like Docker's multiplexed stream. Attaching again
after a client closed reaches the same worker, which keeps its model and unacked images. As
with Docker, every attached client reads the worker's whole output."""

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
            # One CPU thread, as in a one-CPU container. With the tiny model's microsecond
            # kernels, torch's threads spend each step waiting for one another, and beside a
            # busy core a step takes seconds instead of milliseconds (30 steps: 9 s on one
            # thread, over 300 s on two, beside `while True: pass` on this 2-core machine).
            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        )
        self._peers: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stdin_lock = threading.Lock()  # the pumps' writes, and stop's close
        self._stdin_closed = False
        self._stop_on: bytes | None = None
        self.stopped = threading.Event()
        self.stdin_pumps: list[threading.Thread] = []
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
                peers = list(self._peers)  # nobody attached: like Docker, nothing is kept
            for peer in peers:
                with contextlib.suppress(OSError):
                    peer.sendall(struct.pack(">BxxxL", STDOUT_FRAME, len(chunk)) + chunk)
        with self._lock:  # the worker is gone: like Docker, the attach streams end
            peers = list(self._peers)
        for peer in peers:
            with contextlib.suppress(OSError):
                peer.shutdown(socket.SHUT_WR)

    def _pump_stdin(self, peer: socket.socket) -> None:
        assert self.proc.stdin is not None
        while True:
            try:
                data = peer.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            with self._stdin_lock:
                if self._stdin_closed:  # stopped: like Docker, a late write reaches nothing
                    break
                try:
                    self.proc.stdin.write(data)
                    self.proc.stdin.flush()
                except BrokenPipeError:  # the worker exited on its own
                    break
        with self._lock:
            self._peers.discard(peer)

    def attach(self) -> WorkerClient:
        return WorkerClient.over_attach_socket(self.attach_socket())

    def attach_socket(self) -> socket.socket:
        """The client's end of a new attach stream."""
        ours, theirs = socket.socketpair()
        with self._lock:
            self._peers.add(theirs)
        pump = threading.Thread(target=self._pump_stdin, args=(theirs,), daemon=True)
        self.stdin_pumps.append(pump)
        pump.start()
        return ours

    def stop(self) -> None:
        self.resume()  # first: a write blocked on the stopped worker's full pipe goes on
        with self._stdin_lock:
            self._stdin_closed = True
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()
