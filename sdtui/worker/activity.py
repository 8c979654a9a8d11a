"""The worker's mark of activity for the host's idle auto-stop: a file whose mtime the
instance's idle check reads (see sdtui/deploy/aws/bootstrap.py). Stdlib only."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

ACTIVITY_FILE = ".last-activity"
HEARTBEAT_S = 30.0

log = logging.getLogger("sdtui.worker")


def touch(outputs_dir: Path | None) -> None:
    """Mark the worker busy now; without an outputs dir (no idle stop) nothing to do."""
    if outputs_dir is None:
        return
    try:
        (outputs_dir / ACTIVITY_FILE).touch()
    except OSError as exc:
        log.debug("cannot mark activity: %s", exc)


@contextlib.contextmanager
def heartbeat(outputs_dir: Path | None, every_s: float = HEARTBEAT_S) -> Iterator[None]:
    """Keep marking the worker busy while the block runs (a model load can take minutes on a
    cold s3fs cache)."""
    done = threading.Event()

    def beat() -> None:
        while True:
            touch(outputs_dir)
            if done.wait(every_s):
                return

    thread = threading.Thread(target=beat, name="sdtui-activity", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        touch(outputs_dir)
