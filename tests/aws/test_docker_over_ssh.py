"""The Docker SDK over ssh:// as Option A drives the instance's engine, against an sshd with
OpenSSH's default limit of 10 sessions per connection (MaxSessions, as on the instance): one
client serves a whole run's requests, each to its own URL, as a model switch's steps make them
(the image check, the old worker found and removed, a new one created, started and attached),
and goes on after the engine closed an idle session (dockerd does after 5 minutes, as during a
long build or push)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import docker.errors

from sdtui.deploy.aws.docker_ssh import SSH_PREFIX

from .test_worker_image_ecr import instance_engine  # noqa: F401 (a fixture)


def absent(engine, name: str) -> bool:
    try:
        engine.containers.get(name)
    except docker.errors.NotFound:
        return True
    return False


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def end_idle_sessions(sshd) -> int:
    """What dockerd's idle timeout does: the `docker system dial-stdio` behind each open session
    of this sshd exits."""
    ended = 0
    for pid in descendants(sshd.proc.pid):
        try:
            if b"dial-stdio" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
                ended += 1
        except (OSError, ProcessLookupError):
            continue
    return ended


def test_one_client_makes_more_requests_than_sshd_allows_sessions(instance_engine):  # noqa: F811
    _, connect, sshd = instance_engine
    with connect() as engine:
        for n in range(12):  # each URL its own: docker-py kept a session open for each
            assert absent(engine, f"sdtui-no-such-worker-{n}")

        assert end_idle_sessions(sshd) >= 1
        pooled = engine.api._custom_adapter.pools[SSH_PREFIX].pool.queue
        deadline = time.monotonic() + 30
        while not all(c.sock.eof_received or c.sock.closed for c in pooled if c and c.sock):
            assert time.monotonic() < deadline, "the client never saw the session end"
            time.sleep(0.05)
        assert absent(engine, "sdtui-no-such-worker-0")  # on a new session
