"""The app tests' stand-in for Docker's attach socket stops as Docker does: a client that
still writes after the worker is gone reaches nothing, and no relay thread dies of it."""

from __future__ import annotations

import threading
from pathlib import Path

from .worker_relay import SubprocessWorker


def test_a_client_writing_after_the_stop_kills_no_relay_thread(tiny_model: Path,
                                                                 tmp_path: Path) -> None:
    relay = SubprocessWorker(tiny_model, tmp_path / "worker.log")
    raw = relay.attach_socket()
    raised: list[threading.ExceptHookArgs] = []
    previous, threading.excepthook = threading.excepthook, raised.append
    try:
        relay.stop()
        raw.sendall(b'{"type": "info", "id": "late"}\n')  # e.g. an app's ack on its way out
        raw.close()
        for pump in relay.stdin_pumps:
            pump.join(timeout=60)
            assert not pump.is_alive()
    finally:
        threading.excepthook = previous
    assert [f"{r.exc_type.__name__}: {r.exc_value}" for r in raised] == []
