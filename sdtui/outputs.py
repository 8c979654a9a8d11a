"""Saving the worker's images: atomically, with their parameters inside, never overwriting.

The worker's PNG bytes are kept as they are; three text chunks are spliced in before the first
IDAT chunk (where every reader looks without decoding pixels), so the pixels stay bit-identical:
- `parameters`: A1111's infotext (sdtui.metadata.a1111);
- `Dream` and `sd-metadata`: the guide's dream tool's layout (sdtui.metadata.dream), with
  sdtui's exact request under "sdtui" so a re-run can rebuild it.
An input image (the init image, a mask) is stored once beside the outputs, as
`inputs/<sha256>.<ext>`; the PNG and the index record its sha256 and that path, not its bytes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import tempfile
import unicodedata
from datetime import datetime
from pathlib import Path
from typing import Any

from sdtui import protocol
from sdtui.errors import GenerationError
from sdtui.metadata import a1111, dream
from sdtui.metadata.png_chunks import PngError, embed_text
from sdtui.metadata.reader import read_metadata

__all__ = ["read_metadata", "save_image", "read_index", "store_inputs", "OutputWriteError"]

INDEX_NAME = "index.jsonl"
INPUTS_DIR = "inputs"
SLUG_MAX = 40
_MAX_NAME_TRIES = 10_000
_IMAGE_EXTENSIONS = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"))


class OutputWriteError(GenerationError):
    """An image could not be written; nothing saved before was touched."""


def metadata_chunks(params: dict[str, Any]) -> dict[str, str]:
    """The text chunks an image sdtui made carries, from its recorded params."""
    return {
        "parameters": a1111.format_infotext(params),
        "Dream": dream.dream_command(params),
        "sd-metadata": json.dumps(dream.sd_metadata(params), ensure_ascii=False),
    }


# --- saving ------------------------------------------------------------------------------------


def slugify(text: str, max_len: int = SLUG_MAX) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "image"


def base_name(params: dict[str, Any], when: datetime | None = None) -> str:
    stamp = (when or datetime.now()).strftime("%Y%m%d-%H%M%S")
    seed = params.get("seed")
    seed_part = "noseed" if seed is None else str(seed)
    return f"{stamp}-{seed_part}-{slugify(str(params.get('prompt', '')))}"


def _write_error(out_dir: Path, exc: OSError) -> OutputWriteError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some disk space there, or pass --out DIR on another disk"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make that directory writable, or pass --out DIR"
    else:
        fix = "check that directory, or pass --out DIR"
    return OutputWriteError(f"could not save the image in {out_dir}: {reason}", fix=fix)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the file itself is synced
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _publish(tmp: Path, out_dir: Path, base: str) -> Path:
    """Give the finished temp file its final name: the first of base.png, base-1.png, ... that
    does not exist yet. os.link fails if the name exists, so two processes never collide."""
    for n in range(_MAX_NAME_TRIES):
        final = out_dir / (f"{base}-{n}.png" if n else f"{base}.png")
        try:
            os.link(tmp, final)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            # No hard links here (FAT, some network filesystems): reserve the name
            # exclusively, then rename the complete file over the reservation.
            try:
                os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            except FileExistsError:
                continue
            os.replace(tmp, final)
            return final
        tmp.unlink()
        return final
    raise FileExistsError(errno.EEXIST, f"no free file name for {base}")


def open_index_locked(out_dir: Path, flags: int = os.O_WRONLY | os.O_APPEND) -> int:
    """The index file, open and exclusively locked. The index is replaced whole when an image
    is deleted (catalog.delete_image): a lock taken on a file that was replaced meanwhile is
    let go and taken again on the new one, so no line is written to a file nobody reads."""
    path = out_dir / INDEX_NAME
    while True:
        fd = os.open(path, flags | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except OSError:
            os.close(fd)
            raise
        os.close(fd)


def _append_index(out_dir: Path, line: bytes) -> None:
    """Append one line under a lock; on failure cut the file back so no half line remains.
    A half line some other writer left (it died mid-write) is ended first, so it cannot
    swallow this one."""
    fd = open_index_locked(out_dir, os.O_RDWR | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        try:
            _write_all(fd, line)
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def _write_temp(directory: Path, data: bytes, suffix: str) -> Path:
    """`data` in a new, synced temp file in `directory` (readable by others, like any output)."""
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".sdtui-", suffix=suffix + ".tmp")
    tmp = Path(tmp_name)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def _store_input(out_dir: Path, data: bytes) -> dict[str, Any]:
    """One copy of an input image under inputs/, named by its sha256; a second image made from
    the same input finds it there and writes nothing."""
    digest = hashlib.sha256(data).hexdigest()
    ext = next((ext for magic, ext in _IMAGE_EXTENSIONS if data.startswith(magic)), ".bin")
    relative = f"{INPUTS_DIR}/{digest}{ext}"
    final = out_dir / relative
    if not final.exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = _write_temp(final.parent, data, ext)
        try:
            os.replace(tmp, final)  # same bytes whoever wins a race
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(final.parent)
    return {"sha256": digest, "path": relative, "bytes": len(data)}


def store_inputs(out_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    """`params` with each input image (base64 in the request) replaced by a reference to its
    stored copy: {"sha256", "path" (relative to out_dir), "bytes"}. References pass through."""
    out_dir = Path(out_dir)
    stored = dict(params)
    for name in protocol.INPUT_IMAGE_FIELDS:
        value = params.get(name)
        if not isinstance(value, str) or not value:
            continue
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise GenerationError(f"the worker sent back an unreadable {name}") from None
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            stored[name] = _store_input(out_dir, data)
        except OSError as exc:
            raise _write_error(out_dir, exc) from exc
    return stored


def save_image(out_dir: Path, png: bytes, params: dict[str, Any],
               record: dict[str, Any] | None = None) -> Path:
    """Save the worker's PNG with its parameters embedded and return the saved path.
    `record`: more fields for its index line (e.g. the deployment that made it).

    Either the image and its index line are both written, or neither is (and OutputWriteError
    says why): the caller then keeps the image unacknowledged so the worker can send it again.
    Input images are stored once (see store_inputs) before the image that records them.
    The session's `record` names the worker's request id and image index, so an image sent
    again is recognised (find_saved).
    """
    out_dir = Path(out_dir)
    params = store_inputs(out_dir, {key: value for key, value in params.items() if key != "png"})
    try:
        data = embed_text(png, metadata_chunks(params))
    except PngError as exc:
        raise GenerationError(f"the worker sent a broken PNG: {exc.message}") from None

    tmp: Path | None = None
    final: Path | None = None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = _write_temp(out_dir, data, ".png")
        final = _publish(tmp, out_dir, base_name(params))
        tmp = None
        line = {
            **(record or {}),
            "file": final.name,
            "time": datetime.now().astimezone().isoformat(timespec="seconds"),
            "params": params,
        }
        _append_index(out_dir, json.dumps(line, ensure_ascii=False).encode() + b"\n")
        _fsync_dir(out_dir)
        return final
    except OSError as exc:
        for leftover in (tmp, final):
            if leftover is not None:
                with contextlib.suppress(OSError):
                    leftover.unlink()
        raise _write_error(out_dir, exc) from exc


def find_saved(out_dir: Path, request_id: str, index: int) -> Path | None:
    """The file an image of a worker request was already saved as, if it still exists."""
    for record in read_index(out_dir):
        if record.get("request") == request_id and record.get("index") == index:
            path = Path(out_dir) / str(record["file"])
            if path.is_file():
                return path
    return None


def read_index(out_dir: Path) -> list[dict[str, Any]]:
    """The index lines of an outputs dir, oldest first; unreadable lines are skipped."""
    path = Path(out_dir) / INDEX_NAME
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and "file" in record:
                records.append(record)
    return records
