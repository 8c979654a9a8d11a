"""Keeps the instance's idle auto-stop away while sdtui itself keeps it busy: the image build,
the worker's start and its model load run with no request the worker could count, so the
client marks the activity file over SSH every minute until the step ends. If the client dies,
the marks stop and the idle stop proceeds as it should."""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable

import paramiko

from sdtui.deploy.aws.ssh import run_command
from sdtui.errors import SdtuiError

HEARTBEAT_S = 60.0


def touch_command(activity_file: str, *, sudo: bool) -> str:
    """`touch -c`: never creates the file (the bootstrap does, owned by the worker's user)."""
    return ("sudo -n " if sudo else "") + f"touch -c {shlex.quote(activity_file)}"


class HostHeartbeat:
    """A context manager: marks activity at entry and every `every_s` seconds until exit."""

    def __init__(self, connect: Callable[[], paramiko.SSHClient], command: str,
                 every_s: float = HEARTBEAT_S) -> None:
        self._connect = connect
        self._command = command
        self._every_s = every_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="sdtui-heartbeat", daemon=True)
        self.beats = 0

    def __enter__(self) -> HostHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        connection: paramiko.SSHClient | None = None
        while True:
            try:
                connection = connection or self._connect()
                run_command(connection, self._command)
                self.beats += 1
            except (SdtuiError, OSError, EOFError, paramiko.SSHException):
                if connection is not None:  # reconnect next time
                    connection.close()
                connection = None
            if self._done.wait(self._every_s):
                break
        if connection is not None:
            connection.close()
