"""Open a file in the system's viewer (xdg-open on Linux and the BSDs, open on macOS, the file
association on Windows), without waiting for it and without its output on our terminal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

OPENERS = ("xdg-open", "open")
# An opener still running after this long has started a viewer (xdg-open may wait for it).
SETTLE_S = 10.0


def viewer() -> str | None:
    """The opener this system has, or None."""
    if sys.platform == "win32":
        return "start"
    return next((found for name in OPENERS if (found := shutil.which(name))), None)


def _no_display() -> bool:
    """Linux and the BSDs show images only on X11 or Wayland; xdg-open without either would
    fall back to a text-mode browser on our own terminal."""
    return (sys.platform not in ("darwin", "win32")
            and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"))


def open_in_viewer(path: Path, on_failed: Callable[[str], None]) -> str | None:
    """Start a viewer for `path`; the reason none can, or None once one is starting.
    `on_failed(reason)` is called from a thread when the opener gives up; the opener is
    always waited for, so it never stays behind as a defunct child."""
    if sys.platform == "win32":
        os.startfile(path)  # type: ignore[attr-defined]  # noqa: S606
        return None
    opener = viewer()
    if opener is None:
        return "this system has no xdg-open or open"
    if _no_display():
        return "there is no display (DISPLAY and WAYLAND_DISPLAY are unset)"
    proc = subprocess.Popen([opener, str(path)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)

    def reap() -> None:
        try:
            code = proc.wait(timeout=SETTLE_S)
        except subprocess.TimeoutExpired:
            proc.wait()  # the viewer is open: reaped when it closes
            return
        if code != 0:
            on_failed(f"{Path(opener).name} exited with status {code}")

    threading.Thread(target=reap, name="viewer", daemon=True).start()
    return None


def open_and_tell(screen: Any, path: Path) -> None:
    """A screen's `o`: open `path`, or say in a notification why no viewer could, and where
    the file is."""

    def failed(reason: str) -> None:
        screen.notify(f"No viewer could open it ({reason}); the file is {path}",
                      severity="warning", timeout=15)

    reason = open_in_viewer(path, lambda why: screen.app.call_from_thread(failed, why))
    if reason is not None:
        failed(reason)
