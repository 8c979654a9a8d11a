"""Model file headers read with the stdlib, so the client can tell what a file is before
anything is created: a .safetensors file's tensor table, a .gguf file's architecture.

A safetensors file starts with a uint64 length and that many bytes of JSON (the tensor table).

GGUF (llama.cpp's format): "GGUF", a uint32 version, uint64 tensor and key-value counts, then
key-value pairs (a uint64-length UTF-8 key, a uint32 type, the value), all little-endian.
Writers put general.architecture first; the reader stops there and reads at most MAX_PAIRS
pairs with bounded strings, so a hostile header costs little.

Loading a model asks for the same headers several times (the format check, the set's
resolution, the memory check, the loader); within `read_once()` each file's header is parsed
once, keyed by the file's identity, size and modification time, and forgotten when the block
ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

# A safetensors header is a JSON object; real ones are kilobytes, this only rejects nonsense.
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
MAGIC = b"GGUF"
ARCHITECTURE = "general.architecture"
MAX_PAIRS = 64
MAX_STRING = 1 << 16
MAX_ARRAY = 1 << 24
MAX_TENSORS = 1 << 16
MAX_DIMS = 8
_STRING, _ARRAY = 8, 9
# Fixed sizes of the scalar value types, by type number.
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
# Headers kept within one read_once() block; a folder of more files than this is parsed as
# often as it is asked for.
MAX_KEPT = 64

T = TypeVar("T")
_kept: ContextVar[dict[tuple, Any] | None] = ContextVar("sdtui_headers_kept", default=None)


@contextlib.contextmanager
def read_once() -> Iterator[None]:
    """Within the block each file's header is parsed once, however many readers ask for it
    (a nested block shares the outer one's)."""
    if _kept.get() is not None:
        yield
        return
    token = _kept.set({})
    try:
        yield
    finally:
        _kept.reset(token)


def once(kind: str, file: BinaryIO | str | Path, parse: Callable[[], T]) -> T:
    """parse()'s result for this file (an open stream or a path), parsed once within
    read_once(); its result must not be changed. What fails to parse is not kept."""
    kept = _kept.get()
    if kept is None:
        return parse()
    found = os.fstat(file.fileno()) if hasattr(file, "fileno") else os.stat(file)
    key = (kind, found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)
    if key in kept:
        return kept[key]
    value = parse()
    if len(kept) < MAX_KEPT:
        kept[key] = value
    return value


def safetensors_table(stream: BinaryIO) -> tuple[dict[str, Any], int] | None:
    """The tensor table of the .safetensors file open in `stream` (not to be changed) and where
    its data starts; None if it has none."""
    return once("safetensors", stream, lambda: _safetensors_table(stream))


def safetensors_header(stream: BinaryIO) -> dict[str, Any] | None:
    """The tensor table of the .safetensors file open in `stream` (not to be changed), None if
    it has none."""
    found = safetensors_table(stream)
    return found[0] if found is not None else None


def _safetensors_table(stream: BinaryIO) -> tuple[dict[str, Any], int] | None:
    size = os.fstat(stream.fileno()).st_size
    prefix = stream.read(8)
    if len(prefix) < 8:
        return None
    (length,) = struct.unpack("<Q", prefix)
    if length < 2 or length > min(MAX_SAFETENSORS_HEADER, size - 8):
        return None
    try:
        parsed = json.loads(stream.read(length))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return (parsed, 8 + length) if isinstance(parsed, dict) else None


class NotGguf(ValueError):
    """The file is not a GGUF, or its header is corrupt (the message says which)."""


def _read(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise NotGguf("its header is truncated")
    return data


def _u32(stream: BinaryIO) -> int:
    return struct.unpack("<I", _read(stream, 4))[0]


def _u64(stream: BinaryIO) -> int:
    return struct.unpack("<Q", _read(stream, 8))[0]


def _string(stream: BinaryIO) -> str:
    length = _u64(stream)
    if length > MAX_STRING:
        raise NotGguf("its header has an implausibly long string (corrupt?)")
    try:
        return _read(stream, length).decode("utf-8")
    except UnicodeDecodeError:
        raise NotGguf("its header has a string that is not UTF-8 (corrupt?)") from None


def _skip(stream: BinaryIO, kind: int) -> None:
    if kind == _STRING:
        _string(stream)
    elif kind == _ARRAY:
        item, count = _u32(stream), _u64(stream)
        if count > MAX_ARRAY or item == _ARRAY:
            raise NotGguf("its header has an implausible array (corrupt?)")
        if item in _SIZES:
            _read(stream, _SIZES[item] * count)
        else:
            for _ in range(count):
                _skip(stream, item)
    elif kind in _SIZES:
        _read(stream, _SIZES[kind])
    else:
        raise NotGguf(f"its header has an unknown value type {kind} (corrupt?)")


def gguf_architecture(stream: BinaryIO) -> str:
    """general.architecture of the GGUF open in `stream`, "" when the header names none."""
    return once("gguf architecture", stream, lambda: _gguf_architecture(stream))


def _gguf_architecture(stream: BinaryIO) -> str:
    if stream.read(4) != MAGIC:
        raise NotGguf("it does not start with GGUF's magic bytes")
    _u32(stream)  # version
    _u64(stream)  # tensor count
    pairs = _u64(stream)
    for _ in range(min(pairs, MAX_PAIRS)):
        key, kind = _string(stream), _u32(stream)
        if key == ARCHITECTURE and kind == _STRING:
            return _string(stream)
        _skip(stream, kind)
    return ""


def gguf_tensor_names(stream: BinaryIO) -> list[str]:
    """The tensor names of the GGUF open in `stream` (its tensor table follows the key-value
    pairs; not to be changed), read as boundedly as its architecture."""
    return once("gguf tensor names", stream, lambda: _gguf_tensor_names(stream))


def _gguf_tensor_names(stream: BinaryIO) -> list[str]:
    if stream.read(4) != MAGIC:
        raise NotGguf("it does not start with GGUF's magic bytes")
    _u32(stream)  # version
    tensors, pairs = _u64(stream), _u64(stream)
    if tensors > MAX_TENSORS or pairs > MAX_PAIRS:
        raise NotGguf("its header has implausibly many tensors or keys (corrupt?)")
    for _ in range(pairs):
        _string(stream)
        _skip(stream, _u32(stream))
    names = []
    for _ in range(tensors):
        names.append(_string(stream))
        dims = _u32(stream)
        if dims > MAX_DIMS:
            raise NotGguf("its header has a tensor of implausibly many dimensions (corrupt?)")
        _read(stream, 8 * dims + 4 + 8)  # the dimensions, the type, the offset
    return names
