"""The worker's durable spool: the finished images no client has acknowledged yet.

Every finished image is written here (the `image` event as it goes on the wire, one JSON file
each, atomically) before its event is sent, and its file is deleted when a client acknowledges
it. A worker that starts again (its container killed, the engine restarted) loads the spool, so
`fetch` offers those images again: an image the worker finished is never only in memory.

Bound: at most MAX_IMAGES images or MAX_BYTES bytes wait here. When the spool is full the worker
refuses new requests (code "spool_full") until a client has saved what waits; it never drops an
image. Its disk is checked too: a request whose images cannot fit is refused, and an image that
cannot be written is never sent (SpoolFull stops its request), so no image the worker sent lives
only in memory. Without a directory (a worker run by hand, without --outputs) the spool is in
memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdtui import protocol

log = logging.getLogger("sdtui.worker")

MAX_IMAGES = 1000
MAX_BYTES = 2 * 2**30
DIR_NAME = "spool"  # under the worker's --outputs directory
SUFFIX = ".image.json"
TMP_PREFIX = ".spool-"

Key = tuple[str, int]


class SpoolFull(Exception):
    """An image could not be written to the spool: it is not sent, and its request stops."""


@dataclass
class _Entry:
    size: int
    path: Path | None = None  # on disk ...
    message: dict[str, Any] | None = None  # ... or in memory, for a spool without a directory


def image_bytes_bound(width: int, height: int, request_bytes: int) -> int:
    """The most one spooled image can take: its PNG stored without compression (3 bytes a
    pixel, a filter byte a row, zlib's 5 bytes a block, the chunks) in base64, and its params,
    which repeat the request (input images included)."""
    raw = height * (width * 3 + 1)
    png = raw + 5 * (raw // 16_383 + 1) + 4096
    return png * 4 // 3 + request_bytes + 1024


def count(outputs_dir: Path) -> int:
    """How many images wait unacknowledged in a worker's outputs directory (read by clients
    that see that directory: Option B's status and teardown)."""
    return len(list((outputs_dir / DIR_NAME).glob("*" + SUFFIX)))


def file_name(rid: str, index: int) -> str:
    """Request ids are free text (up to 64 characters): the name is a digest of the id."""
    return f"{hashlib.sha256(rid.encode()).hexdigest()[:32]}-{index:02d}{SUFFIX}"


class Spool:
    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._entries: dict[Key, _Entry] = {}
        self._lock = threading.Lock()  # the request reader and the sampler both use it

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        with self._lock:
            return sum(e.size for e in self._entries.values())

    def full(self) -> str | None:
        """Why no new request may start, or None."""
        if len(self) >= MAX_IMAGES or self.size >= MAX_BYTES:
            return (f"the worker holds {len(self)} unsaved image(s), {self.size / 2**20:.0f} MiB, "
                    f"the most it keeps (at most {MAX_IMAGES} images, "
                    f"{MAX_BYTES // 2**30} GiB)")
        return None

    def room(self, need: int) -> str | None:
        """Why `need` more bytes cannot be spooled (its disk has less free), or None."""
        if self.directory is None:
            return None
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError as exc:
            return f"cannot read the free space of the worker's spool ({exc.strerror})"
        if free >= need:
            return None
        return (f"the disk of its spool ({self.directory}) has {free / 2**20:.1f} MiB free, "
                f"{need / 2**20:.1f} MiB needed")

    # --- the lifecycle -------------------------------------------------------------------------

    def load(self) -> int:
        """The images a previous run of the worker left unacknowledged. Unfinished writes
        (their event was never sent) are removed; unreadable files are set aside as *.bad."""
        if self.directory is None:
            return 0
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(TMP_PREFIX + "*"):
            with contextlib.suppress(OSError):
                leftover.unlink()
        found = []
        for path in self.directory.glob("*" + SUFFIX):
            try:
                message = protocol.parse_event(path.read_bytes())
                if message["type"] != "image" or path.name != file_name(message["id"],
                                                                         message["index"]):
                    raise protocol.ProtocolError("not a spooled image")
                found.append((path.stat().st_mtime_ns, path.name, message, path))
            except (OSError, protocol.ProtocolError) as exc:
                log.warning("setting aside unreadable spool file %s: %s", path, exc)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
        with self._lock:
            for _mtime, _name, message, path in sorted(found, key=lambda f: f[:2]):
                self._entries[(message["id"], message["index"])] = _Entry(path.stat().st_size,
                                                                          path)
        return len(found)

    def put(self, message: dict[str, Any]) -> None:
        """Keep an image event until it is acknowledged (written to disk before it is sent).
        Raises SpoolFull when it cannot be written: it must not be sent."""
        key = (message["id"], message["index"])
        data = protocol.encode(message)
        if self.directory is None:
            with self._lock:
                self._entries[key] = _Entry(len(data), message=message)
            return
        try:
            path = self._write(file_name(*key), data)
        except OSError as exc:
            log.warning("could not spool image %s/%d in %s: %s", *key, self.directory, exc)
            raise SpoolFull(f"image {key[1] + 1} could not be written to its spool "
                            f"({self.directory}): {exc.strerror or exc}") from exc
        with self._lock:
            self._entries[key] = _Entry(len(data), path)

    def _write(self, name: str, data: bytes) -> Path:
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=TMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            final = self.directory / name
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.directory)
        return final

    def ack(self, rid: str, index: int | None) -> int:
        """Forget (and delete) one image of a request, or all of them when index is None."""
        with self._lock:
            doomed = [(k, self._entries.pop(k)) for k in list(self._entries)
                      if k[0] == rid and index in (None, k[1])]
        for _key, entry in doomed:
            if entry.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    entry.path.unlink()
        return len(doomed)

    def pending(self) -> list[dict[str, Any]]:
        """The unacknowledged image events, oldest first."""
        with self._lock:
            entries = list(self._entries.items())
        messages = []
        for key, entry in entries:
            if entry.message is not None:
                messages.append(entry.message)
                continue
            assert entry.path is not None
            try:
                messages.append(json.loads(entry.path.read_bytes()))
            except FileNotFoundError:
                continue  # acknowledged meanwhile
            except (OSError, ValueError) as exc:
                log.warning("spooled image %s/%d is unreadable: %s", *key, exc)
        return messages


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
