"""`sdtui serve` for the app: the same command, run as a child process, so the API has its own
client and queue beside the app's and stops with a signal (its waiting requests are kept on
disk, the running one is adopted, as when the command is stopped by hand).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

DEFAULT_PORT = 7860  # A1111's
STOP_TIMEOUT_S = 30


class ServeChild:
    def __init__(self, name: str, out_dir: Path, port: int = DEFAULT_PORT,
                 on_change: Callable[[], None] | None = None) -> None:
        """`on_change`: called from a reader thread when it starts serving or exits."""
        self.name = name
        self.argv = [sys.executable, "-m", "sdtui", "serve", "--name", name, "--port", str(port),
                     "--out", str(out_dir)]
        self.url: str | None = None
        self.auth = "no auth, this machine only"  # the loopback, as `sdtui serve` defaults to
        self.error: str | None = None  # the line it exited with, if it failed
        self._on_change = on_change or (lambda: None)
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True)
        threading.Thread(target=self._read, name="sdtui-serve-log", daemon=True).start()

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("serving ") and " at http://" in line:
                self.url = line.split(" at ", 1)[1].split(" ", 1)[0]
                self._on_change()
            elif line.startswith("sdtui: error: "):
                self.error = line.removeprefix("sdtui: error: ").strip()
        proc.wait()
        self.url = None
        self._on_change()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def queued(self) -> int | None:
        """Requests waiting or running, as /sdapi/v1/progress says; None when it cannot say."""
        if self.url is None:
            return None
        try:
            with urllib.request.urlopen(f"{self.url}/sdapi/v1/progress?skip_current_image=true",
                                        timeout=5) as answer:
                state = json.load(answer)["state"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return int(state["queued"]) + (int(state["job_count"]) > 0)

    def stop(self, wait: bool = True) -> None:
        """SIGTERM, as Ctrl-C on the command: waiting requests stay on disk for the next one.
        `wait`: until it has exited (the app never waits: it exits on its own)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            if not wait:
                return
            try:
                self._proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
