"""Files and folders the user names (flags, form fields, config values, the state dir's files):
each is checked to be what it should be before it is read, and read with its size limit applied
while reading, never after.

A FIFO would block open() forever and a device (/dev/zero) would read without end, so a path
must name a regular file. The file is opened without blocking and its kind is checked on the
open descriptor (fstat), so nothing can swap a FIFO in between the check and the read. Stdlib
only: the worker imports this through the PNG reader.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from sdtui.errors import BadInput

_FIX = "check the path"
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def size_text(limit: int) -> str:
    return f"{limit // 2**20} MiB" if limit >= 2**20 else f"{limit // 1024} KiB"


def expand(path: str | Path, what: str) -> Path:
    """`path` with a leading ~ or ~user expanded; a user that does not exist is bad input."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        user = str(path).split("/", 1)[0]
        raise BadInput(f"{what} {path}: {user} names no user on this machine",
                       fix="write the full path (or ~/... for your own home)") from None


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _refusal(path: Path, what: str, mode: int, fix: str) -> BadInput:
    return BadInput(f"{what} {path} is {_kind(mode)}, not a file", fix=fix)


def _cannot(path: Path, what: str, exc: OSError, fix: str) -> BadInput:
    if isinstance(exc, FileNotFoundError):
        return BadInput(f"cannot read {what} {path}: it does not exist", fix=fix)
    return BadInput(f"cannot read {what} {path}: {exc.strerror or exc}", fix=fix)


def check_file(path: Path, what: str, fix: str = _FIX) -> Path:
    """`path` if it names a regular file (a symlink to one counts); bad input otherwise."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise _cannot(path, what, exc, fix) from None
    if not stat.S_ISREG(mode):
        raise _refusal(path, what, mode, fix)
    return path


@contextlib.contextmanager
def open_file(path: Path, what: str, fix: str = _FIX) -> Iterator[BinaryIO]:
    """A regular file opened for reading; anything else is refused without blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _cannot(path, what, exc, fix) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _refusal(path, what, mode, fix)
        os.set_blocking(fd, True)
        stream = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with stream:
        yield stream


def read_bytes(path: Path, what: str, limit: int, fix: str = _FIX,
               too_large: str | None = None) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; a larger one is refused from its
    size, and never more than `limit` + 1 bytes are read (a file that grows meanwhile)."""
    too_large = too_large or f"pass a file of at most {size_text(limit)}"
    with open_file(path, what, fix) as stream:
        if os.fstat(stream.fileno()).st_size > limit:
            raise BadInput(f"{what} {path} is larger than {size_text(limit)}", fix=too_large)
        try:
            data = stream.read(limit + 1)
        except OSError as exc:
            raise _cannot(path, what, exc, fix) from None
    if len(data) > limit:
        raise BadInput(f"{what} {path} is larger than {size_text(limit)}", fix=too_large)
    return data


def read_text(path: Path, what: str, limit: int, fix: str = _FIX) -> str:
    """A regular file's UTF-8 text, read as read_bytes does."""
    data = read_bytes(path, what, limit, fix)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"cannot read {what} {path}: it is not UTF-8 text (byte {exc.start})",
                       fix=fix) from None
