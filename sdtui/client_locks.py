"""Which sdtui client owns what on a deployment: lock files in the state dir, held while a
process lives and let go by the kernel when it dies, so a dead client's locks are free at once.

- The deployment's lock (`clients/NAME.lock`): one client at a time takes over what departed
  clients left (their unsaved images, the request still running for them).
- A request's lock (`clients/NAME/<digest of its id>.lock`): held by the client that sent the
  request (or adopted it) for the whole time it owns it, from before it is sent until its last
  image is saved and acknowledged. Another client never adopts a request, nor saves an image
  of one, whose lock it cannot take: its owner is alive and saves them itself.
- An attachment (`clients/NAME/attached/<pid>-<random>.lock`): held by every client while it is
  attached to the worker, so a teardown from elsewhere can name the clients it would cut off.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
from pathlib import Path

from sdtui.paths import state_dir


class FileLock:
    """An exclusive lock on a file, never waited for."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, note: str = "") -> bool:
        """True when this process now holds it; `note` is written in the file for people."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        if note:
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode() + b"\n", 0)
        self._fd = fd
        return True

    def release(self, *, remove: bool = False) -> None:
        """Let go; `remove` deletes the file first (while still holding it)."""
        if self._fd is None:
            return
        if remove:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self._fd)
        self._fd = None


class ClientLock(FileLock):
    """One sdtui client per deployment takes over what a dead one left behind."""

    def __init__(self, name: str) -> None:
        super().__init__(state_dir() / "clients" / f"{name}.lock")


class RequestLocks:
    """The requests this client owns on one deployment."""

    def __init__(self, deployment: str) -> None:
        self.directory = state_dir() / "clients" / deployment
        self._held: dict[str, FileLock] = {}

    def claim(self, rid: str) -> bool:
        """Own request `rid` (True), unless a live client owns it (False)."""
        if rid in self._held:
            return True
        lock = FileLock(self.directory / f"{hashlib.sha256(rid.encode()).hexdigest()[:32]}.lock")
        if not lock.acquire(note=rid):
            return False
        self._held[rid] = lock
        return True

    def release(self, rid: str) -> None:
        """Done with `rid`: every image of it this client had is saved and acknowledged. A
        client that took the lock file's name just before it went away finds the request over
        (the worker answers for it), so the file goes too."""
        if (lock := self._held.pop(rid, None)) is not None:
            lock.release(remove=True)

    def release_all(self) -> None:
        for rid in list(self._held):
            self._held.pop(rid).release()


def _attached_dir(deployment: str) -> Path:
    return state_dir() / "clients" / deployment / "attached"


class Attachment(FileLock):
    """This client is attached to the deployment's worker (held from attach to close)."""

    def __init__(self, deployment: str) -> None:
        super().__init__(_attached_dir(deployment) / f"{os.getpid()}-{secrets.token_hex(4)}.lock")


def attached_elsewhere(deployment: str) -> list[str]:
    """What each other live process attached to `deployment` says of itself (its note). The
    file of a client that died without closing is free to lock: it is removed."""
    try:
        paths = sorted(_attached_dir(deployment).iterdir())
    except OSError:
        return []
    found = []
    for path in paths:
        if path.name.split("-", 1)[0] == str(os.getpid()):
            continue
        probe = FileLock(path)
        if probe.acquire():
            probe.release(remove=True)
            continue
        try:
            found.append(path.read_text(encoding="utf-8", errors="replace").strip()[:200])
        except OSError:  # it let go meanwhile
            continue
    return found
