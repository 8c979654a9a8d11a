"""Saving the worker's images: atomically, with their parameters inside, never overwriting.

The worker's PNG bytes are kept as they are; two text chunks are spliced in before the first
IDAT chunk (where every reader looks without decoding pixels), so the pixels stay bit-identical:
- `parameters`: the A1111 text other Stable Diffusion tools read;
- `sd-metadata`: JSON as the guide's dream tool wrote it, plus sdtui's full request params under
  "sdtui" so a re-run can rebuild the exact request.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import struct
import tempfile
import unicodedata
import zlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sdtui import __version__, samplers
from sdtui.errors import BadInput, GenerationError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INDEX_NAME = "index.jsonl"
SLUG_MAX = 40
METADATA_KEYS = ("parameters", "sd-metadata")
_MAX_NAME_TRIES = 10_000



class OutputWriteError(GenerationError):
    """An image could not be written; nothing saved before was touched."""


# --- PNG chunks --------------------------------------------------------------------------------


def _chunks(png: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    """Yield (type, data, raw chunk bytes) for each chunk."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG (bad signature)")
    pos = len(PNG_SIGNATURE)
    while pos < len(png):
        if pos + 8 > len(png):
            raise ValueError("truncated PNG chunk header")
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(png):
            raise ValueError(f"truncated PNG chunk {kind!r}")
        yield kind, png[pos + 8 : pos + 8 + length], png[pos:end]
        pos = end
        if kind == b"IEND":
            return
    raise ValueError("PNG has no IEND chunk")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _text_chunk(keyword: str, text: str) -> bytes:
    """tEXt when the text is Latin-1 (what A1111 writes), uncompressed iTXt otherwise."""
    key = keyword.encode("latin-1")
    try:
        return _chunk(b"tEXt", key + b"\0" + text.encode("latin-1"))
    except UnicodeEncodeError:
        # keyword, null, compression flag, method, empty language tag, empty translated keyword
        return _chunk(b"iTXt", key + b"\0\0\0\0\0" + text.encode("utf-8"))


def _text_of(kind: bytes, data: bytes) -> tuple[str, str] | None:
    if kind == b"tEXt":
        key, _, value = data.partition(b"\0")
        return key.decode("latin-1"), value.decode("latin-1")
    if kind == b"zTXt":
        key, _, rest = data.partition(b"\0")
        return key.decode("latin-1"), zlib.decompress(rest[1:]).decode("latin-1")
    if kind == b"iTXt":
        key, _, rest = data.partition(b"\0")
        compressed, rest = rest[0], rest[2:]
        _lang, _, rest = rest.partition(b"\0")
        _translated, _, value = rest.partition(b"\0")
        if compressed:
            value = zlib.decompress(value)
        return key.decode("latin-1"), value.decode("utf-8")
    return None


def embed_text(png: bytes, texts: dict[str, str]) -> bytes:
    """Return `png` with one text chunk per item before the first IDAT, replacing any earlier
    chunk with the same keyword. Image data chunks are copied byte for byte."""
    out = [PNG_SIGNATURE]
    inserted = False
    for kind, data, raw in _chunks(png):
        if kind == b"IDAT" and not inserted:
            out.extend(_text_chunk(key, value) for key, value in texts.items())
            inserted = True
        text = _text_of(kind, data)
        if text and text[0] in texts:
            continue
        out.append(raw)
    if not inserted:
        raise ValueError("PNG has no IDAT chunk")
    return b"".join(out)


def png_texts(png: bytes) -> dict[str, str]:
    texts: dict[str, str] = {}
    for kind, data, _raw in _chunks(png):
        text = _text_of(kind, data)
        if text:
            texts[text[0]] = text[1]
    return texts


# --- the metadata ------------------------------------------------------------------------------


def _fmt_number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _model_name(model: Any) -> str:
    name = Path(str(model)).name if model else ""
    for suffix in (".safetensors", ".ckpt", ".pt", ".bin"):
        name = name.removesuffix(suffix)
    return name


def a1111_parameters(params: dict[str, Any]) -> str:
    """The `parameters` text in the layout A1111 writes and other tools parse."""
    lines = [str(params.get("prompt", ""))]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    scheduler = str(params.get("scheduler", ""))
    schedule = params.get("schedule") or samplers.DEFAULT_SCHEDULE
    known = scheduler in samplers.SAMPLERS
    fields = [
        ("Steps", params.get("steps")),
        ("Sampler", samplers.a1111_label(scheduler) if known else scheduler or None),
        ("Schedule type", samplers.SCHEDULE_A1111[schedule] if known else None),
        ("CFG scale", params.get("cfg")),
        ("Seed", params.get("seed")),
        ("Size", f"{params['width']}x{params['height']}" if "width" in params else None),
        ("Model hash", params.get("model_hash")),
        ("Model", _model_name(params.get("model")) or None),
        ("Denoising strength", params.get("strength")),
    ]
    parts = []
    for key, value in fields:
        if value is None:
            continue
        text = _fmt_number(value)
        if "," in text or ":" in text:
            text = json.dumps(text)
        parts.append(f"{key}: {text}")
    lines.append(", ".join(parts))
    return "\n".join(lines)


def sd_metadata(params: dict[str, Any]) -> dict[str, Any]:
    """The dream tool's `sd-metadata` layout, with sdtui's full params under "sdtui"."""
    scheduler = str(params.get("scheduler", ""))
    image = {
        "prompt": [{"prompt": params.get("prompt", ""), "weight": 1.0}],
        "negative_prompt": params.get("negative_prompt", ""),
        "steps": params.get("steps"),
        "cfg_scale": params.get("cfg"),
        "seed": params.get("seed"),
        "width": params.get("width"),
        "height": params.get("height"),
        "sampler": samplers.dream_name(scheduler) if scheduler in samplers.SAMPLERS
        else scheduler,
        "type": "img2img" if params.get("init_image") else "txt2img",
        "postprocessing": None,
        "variations": [],
    }
    return {
        "model": "stable diffusion",
        "model_weights": _model_name(params.get("model")),
        "model_hash": params.get("model_hash"),
        "app_id": "sdtui",
        "app_version": __version__,
        "image": image,
        "sdtui": {"version": 1, "params": params},
    }


_A1111_LINE = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^"\\])*"|[^,]*)(?:,|$)')
_A1111_KEYS = {
    "Steps": ("steps", int),
    "CFG scale": ("cfg", float),
    "Seed": ("seed", int),
    "Model": ("model", str),
    "Model hash": ("model_hash", str),
    "Denoising strength": ("strength", float),
}


def parse_a1111_parameters(text: str) -> dict[str, Any]:
    """Best-effort params from another tool's `parameters` text (for PNGs sdtui did not write)."""
    lines = text.strip().split("\n")
    settings = lines.pop() if len(lines) > 1 and "Steps: " in lines[-1] else ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line.removeprefix("Negative prompt:").strip()
        (negative if in_negative else prompt).append(line)
    params: dict[str, Any] = {"prompt": "\n".join(prompt), "negative_prompt": "\n".join(negative)}
    for key, raw in _A1111_LINE.findall(settings):
        value = json.loads(raw) if raw.startswith('"') else raw.strip()
        key = key.strip()
        try:
            if key in _A1111_KEYS:
                name, kind = _A1111_KEYS[key]
                params[name] = kind(value)
            elif key == "Sampler":
                params["scheduler"], implied = samplers.parse(value)
                if implied:
                    params["schedule"] = implied
            elif key == "Schedule type":
                params["schedule"] = samplers.parse_schedule(value)
            elif key == "Size":
                width, height = value.split("x")
                params["width"], params["height"] = int(width), int(height)
        except ValueError:
            continue
    return params


def read_metadata(path: Path) -> dict[str, Any]:
    """The parameters a PNG carries: {"params": dict, "parameters": str | None,
    "sd-metadata": dict | None}. `params` is sdtui's exact request when sdtui wrote the file,
    otherwise what could be parsed from the `parameters` text."""
    path = Path(path)
    try:
        texts = png_texts(path.read_bytes())
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}", fix="check the path") from None
    except ValueError as exc:
        raise BadInput(f"{path} is not a valid PNG: {exc}", fix="pass a PNG image") from None
    meta = None
    if "sd-metadata" in texts:
        with contextlib.suppress(ValueError):
            meta = json.loads(texts["sd-metadata"])
    parameters = texts.get("parameters")
    if isinstance(meta, dict) and isinstance(meta.get("sdtui"), dict):
        params = dict(meta["sdtui"].get("params") or {})
    elif parameters:
        params = parse_a1111_parameters(parameters)
    else:
        raise BadInput(
            f"{path} carries no generation parameters",
            fix="pass a PNG written by sdtui, A1111 or the dream tool",
        )
    return {"params": params, "parameters": parameters, "sd-metadata": meta}


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
    """Append one line under a lock; on failure cut the file back so no half line remains."""
    fd = open_index_locked(out_dir)
    try:
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, line)
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def save_image(out_dir: Path, png: bytes, params: dict[str, Any],
               record: dict[str, Any] | None = None) -> Path:
    """Save the worker's PNG with its parameters embedded and return the saved path.
    `record`: more fields for its index line (e.g. the deployment that made it).

    Either the image and its index line are both written, or neither is (and OutputWriteError
    says why): the caller then keeps the image unacknowledged so the worker can send it again.
    """
    out_dir = Path(out_dir)
    params = {key: value for key, value in params.items() if key != "png"}
    try:
        data = embed_text(
            png,
            {
                "parameters": a1111_parameters(params),
                "sd-metadata": json.dumps(sd_metadata(params), ensure_ascii=False),
            },
        )
    except ValueError as exc:
        raise GenerationError(f"the worker sent a broken PNG: {exc}") from None

    tmp: Path | None = None
    final: Path | None = None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=".sdtui-", suffix=".png.tmp")
        tmp = Path(tmp_name)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)
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
