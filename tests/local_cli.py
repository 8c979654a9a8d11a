"""`sdtui --no-ui` as a user runs it for Option B, with its own state, config and outputs dirs,
and what the tests read back: its --json events, what carries the deployment's label, and
every image the worker finished (from the worker container's own log of its stdout)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import cli_zygote
import docker

BASE = os.environ.get("SDTUI_TEST_BASE_IMAGE", "sdtui-base:offline")
FAST = ["--steps", "4", "--width", "64", "--height", "64"]


class Cli:
    def __init__(self, root: Path, name: str, volume: str, *, out: Path | None = None,
                 docker_host: str | None = None) -> None:
        self.root, self.name, self.volume = root, name, volume
        self.out = out or root / "out"
        self.state = root / "state"
        self.env = {**os.environ, "SDTUI_STATE_DIR": str(self.state),
                    "SDTUI_CONFIG_DIR": str(root / "config"), "PYTHONUNBUFFERED": "1"}
        if docker_host:
            self.env["DOCKER_HOST"] = docker_host

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "sdtui", "--no-ui", "--name", self.name,
                "--volume", self.volume, "--base-image", BASE, "--out", str(self.out), *args]

    def run(self, *args: str, **kw) -> subprocess.CompletedProcess:
        """The command run to its end, forked from a process with sdtui imported."""
        argv = self.argv(*args)
        assert argv[:3] == [sys.executable, "-m", "sdtui"], argv
        return cli_zygote.run(argv[3:], env=self.env, text=True, **{"timeout": 900, **kw})

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def read_events(proc: subprocess.Popen) -> Iterator[dict]:
    """The --json events of a running sdtui, as they arrive."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            yield json.loads(line)


def step_outcomes(evs: list[dict]) -> dict[str, str]:
    return {e["step"]: e["outcome"] for e in evs if e["event"] == "step_finished"}


def labelled(client: docker.DockerClient, name: str) -> tuple[list, list]:
    f = {"label": f"sdtui.deployment={name}"}
    return client.containers.list(all=True, filters=f), client.volumes.list(filters=f)


@contextlib.contextmanager
def throwaway_cli(root: Path, client: docker.DockerClient) -> Iterator[Cli]:
    """A Cli for a deployment and volume of unique names; what it made is removed after."""
    tag = uuid.uuid4().hex[:6]
    cli = Cli(root, f"t-{tag}", f"sdtui-test-{tag}")
    try:
        yield cli
    finally:
        for container in labelled(client, cli.name)[0]:
            container.remove(force=True)
        for volume in client.volumes.list(filters={"name": cli.volume}):
            volume.remove(force=True)


def finished_by_worker(container) -> dict[tuple[str, int], dict]:
    """Every image the worker sent (first, or again from its spool), by (request id, index),
    read from the container's log of its own stdout, across its restarts: what the worker
    finished, whatever any client saw."""
    found = {}
    for line in container.logs(stdout=True, stderr=False).splitlines():
        if b'"type":"image"' in line:
            ev = json.loads(line)
            found[(ev["id"], ev["index"])] = ev
    return found


def one_line(stderr: str) -> str:
    """The single error line a failure prints: never a traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("sdtui: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def wait_for(condition: Callable[[], bool], *, unless: Callable[[], bool],
             timeout: float = 300) -> None:
    """Poll a condition; fail if `unless` turns true first (it can no longer happen)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if unless() or time.monotonic() > deadline:
            raise AssertionError("the condition was never reached")
        time.sleep(0.05)


@contextlib.contextmanager
def frozen(container) -> Iterator[Callable[[], bool]]:
    """The worker container's process stopped (SIGSTOP) for the block, whatever it was doing;
    yields a condition that turns true once bytes wait on its stdin (a client's request
    reached it)."""
    with frozen_process(worker_pid(container)) as waiting:
        yield waiting


def worker_pid(container) -> int:
    """The worker's process on this machine: the only child of the container's init (Docker's
    init forwards signals, so SIGSTOP must go to the worker itself)."""
    container.reload()
    pid = container.attrs["State"]["Pid"]
    if not container.attrs["HostConfig"].get("Init"):
        return pid
    (child,) = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(child)


@contextlib.contextmanager
def frozen_process(pid: int) -> Iterator[Callable[[], bool]]:
    """`frozen` for any process of this machine."""
    os.kill(pid, signal.SIGSTOP)
    stdin = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)

    def waiting() -> bool:
        count = bytearray(4)
        fcntl.ioctl(stdin, termios.FIONREAD, count)
        return int.from_bytes(count, sys.byteorder) > 0

    try:
        yield waiting
    finally:
        os.close(stdin)
        os.kill(pid, signal.SIGCONT)
