"""A real terminal for the app: a detached tmux session on a tmux server of our own (-L), so
tests never touch anyone's tmux."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
import uuid
from pathlib import Path


class Tmux:
    def __init__(self, session: str, size: tuple[int, int] = (120, 40)) -> None:
        self.session = session
        self.socket = f"sdtui-test-{uuid.uuid4().hex[:8]}"
        self.size = size
        self.frames: list[str] = []

    def _tmux(self, *args: str, **kw: object) -> subprocess.CompletedProcess:
        # COLUMNS/LINES (set in pytest's environment) would override the pane's real size.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.run(["tmux", "-L", self.socket, *args], env=env,  # type: ignore[call-overload]
                              **kw)

    def start(self, command: str) -> None:
        width, height = self.size
        self._tmux("new-session", "-d", "-s", self.session, "-x", str(width), "-y",
                   str(height), command, check=True)

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", self.session, *keys, check=True)

    def screen(self) -> str:
        text = self._tmux("capture-pane", "-p", "-t", self.session, capture_output=True,
                          text=True).stdout
        self.frames.append(text)
        return text

    def resize(self, width: int, height: int) -> None:
        """What a user dragging the terminal's corner does: the app gets SIGWINCH."""
        self._tmux("resize-window", "-t", self.session, "-x", str(width), "-y", str(height),
                   check=True)

    def settled(self, timeout: float, quiet: float = 1.0, poll: float = 0.1) -> str:
        """The screen once it has not changed for `quiet` seconds (the app has drawn what a
        change made it draw, late writes included)."""
        deadline = time.monotonic() + timeout
        last, since = self.screen(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(poll)
            now = self.screen()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return now
        raise AssertionError(f"the screen never settled; last screen:\n{last}")

    def alive(self) -> bool:
        return self._tmux("has-session", "-t", self.session, capture_output=True).returncode == 0

    def wait_for(self, text: str, timeout: float, poll: float = 0.2) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            if not self.alive():
                break
            time.sleep(poll)
        size = self._tmux("display", "-p", "-t", self.session, "#{window_width}x#{window_height}",
                          capture_output=True, text=True).stdout.strip()
        last = self.frames[-1] if self.frames else ""
        raise AssertionError(f"{text!r} never appeared; last screen ({size}):\n{last}")

    def kill(self) -> None:
        self._tmux("kill-server", capture_output=True)
        socket = Path(f"/tmp/tmux-{os.getuid()}") / self.socket
        socket.unlink(missing_ok=True)  # tmux does not always remove it


REPO = Path(__file__).resolve().parents[2]


def in_terminal(name: str, argv: list[str], size: tuple[int, int] = (160, 45)) -> Tmux:
    """`argv` (the app) in a terminal of its own, with the test's dirs and an engine that does
    not answer; its exit code is printed as SDTUI-EXITED-N when it ends."""
    env = {k: os.environ[k] for k in ("SDTUI_STATE_DIR", "SDTUI_CONFIG_DIR",
                                      "SDTUI_OUTPUTS_DIR")}
    env |= {"SDTUI_IMAGE_PROTOCOL": "halfcell", "TERM": "xterm-256color",
            "PYTHONPATH": str(REPO), "DOCKER_HOST": "unix:///nonexistent-sdtui-test.sock"}
    command = ("env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
               + f" {shlex.join(argv)}; echo SDTUI-EXITED-$?; exec sleep 600")
    term = Tmux(name, size=size)
    term.start(f"cd {shlex.quote(str(REPO))} && {command}")
    return term
