"""Open a file in the system's viewer (xdg-open on Linux and the BSDs, open on macOS, the file
association on Windows), without waiting for it and without its output on our terminal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

OPENERS = ("xdg-open", "open")


def viewer() -> str | None:
    """The opener this system has, or None."""
    if sys.platform == "win32":
        return "start"
    return next((found for name in OPENERS if (found := shutil.which(name))), None)


def open_in_viewer(path: Path) -> bool:
    """True when a viewer was started for `path`; False when this system has none."""
    if sys.platform == "win32":
        os.startfile(path)  # type: ignore[attr-defined]  # noqa: S606
        return True
    opener = viewer()
    if opener is None:
        return False
    subprocess.Popen([opener, str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
    return True
