"""A scratch folder for a benchmark's large files: a temporary one deleted afterwards, or the
one given with --keep (created if needed, kept, its files reused by the next run)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def scratch_dir(keep: Path | None, prefix: str) -> Iterator[Path]:
    folder = keep or Path(tempfile.mkdtemp(prefix=prefix))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
