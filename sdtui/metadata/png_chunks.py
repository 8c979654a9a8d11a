"""PNG chunks, read with bounded cost and written byte for byte.

Everything a PNG can say about itself is hostile until checked: lengths past the end of the
file, bad CRCs, compressed text that inflates a thousandfold, a million tiny chunks. Each one
is a `PngError` (bad input, exit 2) in one line; the costs are bounded by construction:
- at most MAX_FILE_BYTES of the file is read, once (of a larger PNG, the chunks before its
  pixels);
- at most MAX_CHUNKS chunks, each CRC-checked in one pass;
- only the text chunks whose keyword is asked for are decoded, each inflated with a hard
  output limit (zlib's max_length), so a compression bomb stops at MAX_TEXT_BYTES.
Stdlib only: the worker imports this through the saver.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from sdtui.errors import BadInput
from sdtui.userfiles import open_file, read_bytes

SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
MAX_FILE_BYTES = 32 * 1024 * 1024  # the protocol's input-image limit
MAX_CHUNKS = 100_000  # a 32 MiB image with 8 KiB IDATs has about 4,000
# PIL caps a text chunk at 1 MiB too; real parameters are kilobytes, ComfyUI workflows less
# than a megabyte.
MAX_TEXT_BYTES = 1024 * 1024
TEXT_KINDS = (b"tEXt", b"zTXt", b"iTXt")
_MAX_KEYWORD = 79  # PNG spec


class PngError(BadInput):
    """A file that is not a well-formed PNG, or a text chunk that cannot be read."""


@dataclass(frozen=True)
class Chunk:
    kind: bytes
    data: memoryview
    start: int  # offset of the length field
    end: int  # offset after the CRC


def read_file(path: Path, what: str = "image") -> bytes:
    """A file's bytes, refusing anything over MAX_FILE_BYTES before reading it."""
    return read_bytes(path, what, MAX_FILE_BYTES, too_large="pass the PNG the image was saved as")


def read_head(path: Path, what: str = "PNG") -> bytes:
    """What a PNG says about itself: the whole file up to MAX_FILE_BYTES; of a larger one (an
    8192² upscale), the chunks before its first IDAT, where sdtui, A1111 and the dream tool put
    their text, ended with an IEND chunk. Never more than MAX_FILE_BYTES is read."""
    with open_file(path, what, "check the path") as stream:
        data = stream.read(MAX_FILE_BYTES + 1)
        if len(data) <= MAX_FILE_BYTES or not data.startswith(SIGNATURE):
            return data
        head, pos = bytearray(SIGNATURE), len(SIGNATURE)
        while pos + 8 <= len(data):
            length, kind = struct.unpack_from(">I4s", data, pos)
            if kind in (b"IDAT", b"IEND"):
                return bytes(head + make_chunk(b"IEND", b""))
            end = pos + 12 + length
            if end > MAX_FILE_BYTES:
                break
            head += data[pos:end]
            pos = end
    raise PngError(f"{path}: the chunks before its image data are larger than "
                   f"{MAX_FILE_BYTES // 2**20} MiB", fix="pass the PNG the image was saved as")


def chunks(png: bytes) -> Iterator[Chunk]:
    """Every chunk up to IEND, each checked: length within the file, CRC right."""
    if not png:
        raise PngError("the file is empty", fix="pass a PNG image")
    if not png.startswith(SIGNATURE):
        kind = "a JPEG" if png.startswith(JPEG_MAGIC) else "not a PNG"
        raise PngError(f"the file is {kind} (no PNG signature)", fix="pass a PNG image")
    view = memoryview(png)
    pos, count, size = len(SIGNATURE), 0, len(png)
    while pos < size:
        count += 1
        if count > MAX_CHUNKS:
            raise PngError(f"more than {MAX_CHUNKS} chunks", fix="pass a PNG image")
        if pos + 12 > size:
            raise PngError(f"truncated PNG: a chunk header at byte {pos} is cut off",
                           fix="pass the complete file")
        length, kind = struct.unpack_from(">I4s", png, pos)
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > size:
            raise PngError(f"truncated PNG: chunk {_name(kind)} at byte {pos} claims {length} "
                           f"bytes, past the end of the file", fix="pass the complete file")
        (crc,) = struct.unpack_from(">I", png, end - 4)
        if zlib.crc32(view[pos + 4 : end - 4]) != crc:
            raise PngError(f"corrupt PNG: chunk {_name(kind)} at byte {pos} has a bad CRC",
                           fix="pass an undamaged copy of the file")
        yield Chunk(kind, view[pos + 8 : end - 4], pos, end)
        pos = end
        if kind == b"IEND":
            return
    raise PngError("truncated PNG: no IEND chunk", fix="pass the complete file")


def _name(kind: bytes) -> str:
    return kind.decode("latin-1") if kind.isalpha() else repr(kind)


def keyword_of(chunk: Chunk) -> str:
    """The keyword of a text chunk (1-79 Latin-1 bytes before a NUL)."""
    head = bytes(chunk.data[: _MAX_KEYWORD + 1])
    key, nul, _ = head.partition(b"\0")
    if not nul or not key:
        raise PngError(f"malformed {_name(chunk.kind)} chunk: no keyword",
                       fix="pass an undamaged copy of the file")
    return key.decode("latin-1")


def _inflate(data: bytes | memoryview, what: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_TEXT_BYTES)
    except zlib.error as exc:
        raise PngError(f"corrupt compressed text in {what}: {exc}",
                       fix="pass an undamaged copy of the file") from None
    if inflater.unconsumed_tail:
        raise PngError(f"{what} inflates to more than {MAX_TEXT_BYTES // 2**20} MiB",
                       fix="pass a PNG with ordinary metadata")
    if not inflater.eof:
        raise PngError(f"corrupt compressed text in {what}: the stream is cut off",
                       fix="pass an undamaged copy of the file")
    return out


def text_of(chunk: Chunk) -> tuple[str, str]:
    """(keyword, text) of a tEXt, zTXt or iTXt chunk."""
    key = keyword_of(chunk)
    what = f"the {_name(chunk.kind)} chunk {key!r}"
    rest = chunk.data[len(key.encode("latin-1")) + 1 :]
    if chunk.kind == b"tEXt":
        raw = rest
        if len(raw) > MAX_TEXT_BYTES:
            raise PngError(f"{what} is larger than {MAX_TEXT_BYTES // 2**20} MiB",
                           fix="pass a PNG with ordinary metadata")
        return key, bytes(raw).decode("latin-1")
    if chunk.kind == b"zTXt":
        if len(rest) < 1 or rest[0] != 0:
            raise PngError(f"malformed {what}: unknown compression method",
                           fix="pass an undamaged copy of the file")
        return key, _inflate(rest[1:], what).decode("latin-1")
    # iTXt: compression flag, method, language tag NUL, translated keyword NUL, text
    if len(rest) < 2:
        raise PngError(f"malformed {what}: it ends after the keyword",
                       fix="pass an undamaged copy of the file")
    compressed, method = rest[0], rest[1]
    # Deflated text is never much longer than the text (a few bytes per 64 KiB block), so a
    # body over the limit is too long compressed or not: refused before it is copied.
    if len(rest) > MAX_TEXT_BYTES + 2 * (_MAX_KEYWORD + 1) + 2:
        raise PngError(f"{what} is larger than {MAX_TEXT_BYTES // 2**20} MiB",
                       fix="pass a PNG with ordinary metadata")
    _lang, nul1, body = bytes(rest[2:]).partition(b"\0")
    _translated, nul2, value = body.partition(b"\0")
    if not (nul1 and nul2) or compressed not in (0, 1) or (compressed and method != 0):
        raise PngError(f"malformed {what}", fix="pass an undamaged copy of the file")
    if compressed:
        value = _inflate(value, what)
    elif len(value) > MAX_TEXT_BYTES:
        raise PngError(f"{what} is larger than {MAX_TEXT_BYTES // 2**20} MiB",
                       fix="pass a PNG with ordinary metadata")
    try:
        return key, value.decode("utf-8")
    except UnicodeDecodeError:
        raise PngError(f"malformed {what}: the text is not UTF-8",
                       fix="pass an undamaged copy of the file") from None


def read_texts(png: bytes, wanted: Collection[str]) -> tuple[dict[str, str], list[str]]:
    """The text of the `wanted` keywords (the first chunk of each wins, as in PIL), and every
    text keyword the file has, in order. Other keywords are never decoded."""
    texts: dict[str, str] = {}
    keywords: list[str] = []
    for chunk in chunks(png):
        if chunk.kind not in TEXT_KINDS:
            continue
        key = keyword_of(chunk)
        keywords.append(key)
        if key in wanted and key not in texts:
            texts[key] = text_of(chunk)[1]
    return texts, keywords


# --- writing ----------------------------------------------------------------------------------


def make_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def text_chunk(keyword: str, text: str) -> bytes:
    """tEXt when the text is Latin-1 (what A1111 writes), uncompressed iTXt otherwise."""
    key = keyword.encode("latin-1")
    try:
        return make_chunk(b"tEXt", key + b"\0" + text.encode("latin-1"))
    except UnicodeEncodeError:
        # keyword, NUL, compression flag, method, empty language tag, empty translated keyword
        return make_chunk(b"iTXt", key + b"\0\0\0\0\0" + text.encode("utf-8"))


def embed_text(png: bytes, texts: dict[str, str]) -> bytes:
    """`png` with one text chunk per item before the first IDAT (where readers look without
    decoding pixels), any earlier chunk with one of those keywords dropped, and every other
    chunk copied byte for byte."""
    out = [SIGNATURE]
    inserted = False
    for chunk in chunks(png):
        if chunk.kind == b"IDAT" and not inserted:
            out.extend(text_chunk(key, value) for key, value in texts.items())
            inserted = True
        if chunk.kind in TEXT_KINDS and keyword_of(chunk) in texts:
            continue
        out.append(bytes(memoryview(png)[chunk.start : chunk.end]))
    if not inserted:
        raise PngError("the PNG has no IDAT chunk")
    return b"".join(out)
