"""The outputs dir as a catalogue: a deployment's images from the index, and deleting one (its
file and its index line).

The gallery of the app is loaded from here, so it survives restarts and Resume. A deletion
rewrites the index to a temporary file and renames it over the old one under the index's lock
(outputs.open_index_locked), so a crash leaves either the old index or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdtui.errors import BadInput
from sdtui.outputs import INDEX_NAME, OutputWriteError, open_index_locked, read_index


@dataclass(frozen=True)
class CatalogImage:
    path: Path
    params: dict[str, Any]
    time: str = ""  # ISO 8601, local time, when it was saved

    @property
    def seed(self) -> int | None:
        seed = self.params.get("seed")
        return seed if isinstance(seed, int) else None


def images_of(out_dir: Path, deployment: str) -> list[CatalogImage]:
    """The images this deployment saved in `out_dir` that are still there, oldest first."""
    found = []
    for record in read_index(out_dir):
        path = Path(out_dir) / str(record["file"])
        params = record.get("params")
        if record.get("deployment") == deployment and isinstance(params, dict) and path.is_file():
            found.append(CatalogImage(path, params, str(record.get("time", ""))))
    return found


def delete_image(path: Path) -> None:
    """Delete a saved image: its index line first (a crash then leaves a stray file, never a
    line naming nothing), then the file."""
    path = Path(path)
    out_dir = path.parent
    if not (out_dir / INDEX_NAME).is_file():
        raise BadInput(f"{path} is not in an sdtui outputs dir", fix="delete it by hand")
    fd = open_index_locked(out_dir, os.O_RDONLY)
    tmp: str | None = None
    try:
        with os.fdopen(os.dup(fd), "rb") as index:
            lines = index.read().splitlines(keepends=True)
        kept = [line for line in lines if _file_of(line) != path.name]
        if len(kept) != len(lines):
            handle, tmp = tempfile.mkstemp(dir=out_dir, prefix=".index-", suffix=".tmp")
            with os.fdopen(handle, "wb") as out:
                out.writelines(kept)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, out_dir / INDEX_NAME)
            tmp = None
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"could not delete {path}: {exc.strerror or exc}",
                               fix="check the permissions of the outputs dir") from None
    finally:
        os.close(fd)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _file_of(line: bytes) -> str | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record.get("file") if isinstance(record, dict) else None
