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


def reset_peak_rss() -> None:
    """Start this process's peak RSS (VmHWM) afresh from its current RSS (Linux)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def status_kib(field: str) -> int:
    """A /proc/self/status figure in KiB ("VmRSS:", "VmHWM:")."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    return 0
