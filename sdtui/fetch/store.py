"""Where fetched files live on this machine: by set (`ROOT/<set>/...`, the names the model is
read by) and by checksum (`ROOT/blobs/KEY`, so a file another set already holds is linked, never
fetched twice). Only verified files ever get these names; partial ones wait in `.staging/`."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Protocol

from sdtui.errors import DeploymentError
from sdtui.fetch.plan import RemoteFile, Resolved

SPACE_FIX = "free space (or set SDTUI_MODELS_DIR to a disk with room)"


def key(f: RemoteFile) -> str:
    if f.sha256:
        return f.sha256
    if f.git_sha1:
        return f"git-{f.git_sha1}"
    raise DeploymentError(f"{f.dest} comes with no checksum", fix="sdtui loads no file it "
                          "cannot check; download it yourself and pass its path")


class Keeper(Protocol):
    """Keeps partial files past a disk that goes with the run (bucket_partial.BucketKeeper)."""

    def restore(self, f: RemoteFile, part: Path) -> int: ...
    def keeping(self, f: RemoteFile, part: Path) -> contextlib.AbstractContextManager[None]: ...
    def wrote(self, have: int) -> None: ...
    def restart(self, f: RemoteFile) -> None: ...
    def forget(self, f: RemoteFile) -> None: ...


class Store:
    """The verified files, by set (`root/<set>/...`) and by checksum (`root/blobs/KEY`)."""

    def __init__(self, root: Path, *, keeper: Keeper | None = None,
                 space_fix: str = SPACE_FIX) -> None:
        """`keeper`: where partial files outlive a disk that goes with the run (None: this
        disk keeps them); `space_fix`: what gives this disk room."""
        self.root, self.keeper, self.space_fix = root, keeper, space_fix
        self.staging = root / ".staging"
        self.blobs = root / "blobs"

    def model_path(self, resolved: Resolved) -> Path:
        return self.root / resolved.root / resolved.model

    def dest(self, resolved: Resolved, f: RemoteFile) -> Path:
        """Where `f` lands: never outside its set's folder, whatever a server names it."""
        parts = PurePosixPath(resolved.root, f.dest).parts
        if ".." in parts or f.dest.startswith("/") or "\\" in f.dest:
            raise DeploymentError(f"{resolved.source} names a file outside its folder: {f.dest!r}",
                                  fix="sdtui writes no such file; report it to the repo's owner")
        return self.root / resolved.root / f.dest

    def part(self, f: RemoteFile) -> Path:
        return self.staging / f"{key(f)}.part"

    def has(self, resolved: Resolved, f: RemoteFile) -> bool:
        """In place already, or linked in from another set with the same checksum."""
        dest = self.dest(resolved, f)
        if dest.is_file():
            return True
        blob = self.blobs / key(f)
        if not blob.is_file():
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(blob, dest)
        return True

    def admit(self, resolved: Resolved, f: RemoteFile, part: Path) -> None:
        """A verified staged file takes its name; its checksum keeps a link for other sets."""
        dest = self.dest(resolved, f)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, dest)
        self.blobs.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            _link_or_copy(dest, self.blobs / key(f))


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
