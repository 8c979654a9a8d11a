"""The worker keeps the host's idle auto-stop away while it works: through its model load and
on every event of a running request, not only on finished images."""

from __future__ import annotations

import io
import os
import time

from test_worker import WorkerProcess

from sdtui.worker.activity import ACTIVITY_FILE
from sdtui.worker.server import Worker

LONG_AGO = time.time() - 3600


def stale(activity) -> None:
    activity.touch()
    os.utime(activity, (LONG_AGO, LONG_AGO))


def marked(activity) -> bool:
    return activity.stat().st_mtime > LONG_AGO + 3000


def test_the_model_load_marks_activity(tiny_diffusers, tmp_path):
    """The real worker process: nothing has been asked yet, the load alone marks it."""
    activity = tmp_path / ACTIVITY_FILE
    stale(activity)
    worker = WorkerProcess(tiny_diffusers, "--outputs", str(tmp_path))
    try:
        worker.client.wait_ready(timeout=300)
        assert marked(activity)
    finally:
        worker.stop()


def test_every_progress_event_marks_activity(tmp_path):
    """A long generation emits progress for minutes before its first image."""
    activity = tmp_path / ACTIVITY_FILE
    worker = Worker(sampler=None, model_info={}, out=io.BytesIO(), outputs_dir=tmp_path)
    for step in range(1, 4):
        stale(activity)
        worker.emit("progress", {"id": "r1", "index": 0, "step": step, "total": 30})
        assert marked(activity)
