"""What a reference resolved to: the exact remote files, where each lands in the store, and
how each is checked. No tokens here: they are added to the request when it is sent."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from sdtui.loras import LORA_DIR

Auth = Literal["hf", "civitai"]


@dataclass(frozen=True)
class RemoteFile:
    url: str
    dest: str  # path relative to the resolved set's root in the store
    size: int | None
    sha256: str | None = None  # hex; LFS files, Civitai files, catalogue pins
    git_sha1: str | None = None  # the hub's blob id, for small files kept in git
    auth: Auth = "hf"


@dataclass(frozen=True)
class Resolved:
    ref: str  # what the user typed
    source: str  # exactly what was resolved, e.g. hf:ORG/REPO/FILE@COMMIT
    pinned: str  # a --model value that fetches exactly these files again (what images record)
    root: str  # the set's folder in the store, relative
    model: str  # the model (a file or a diffusers folder) relative to root
    files: tuple[RemoteFile, ...]

    @property
    def total(self) -> int:
        return sum(f.size or 0 for f in self.files)

    def record(self) -> dict:
        """What the ledger keeps, so the run can be repeated exactly."""
        return {"ref": self.ref, "source": self.source, "pinned": self.pinned,
                "files": {f.dest: f.sha256 or f.git_sha1 for f in self.files}}

    def to_json(self) -> dict:
        """Everything needed to fetch these files elsewhere (the instance), tokens excepted."""
        return {"ref": self.ref, "source": self.source, "pinned": self.pinned,
                "root": self.root, "model": self.model,
                "files": [{"url": f.url, "dest": f.dest, "size": f.size, "sha256": f.sha256,
                           "git_sha1": f.git_sha1, "auth": f.auth} for f in self.files]}

    @classmethod
    def from_json(cls, data: dict) -> Resolved:
        """The inverse of to_json; raises KeyError, TypeError or ValueError on another shape."""
        files = tuple(RemoteFile(url=str(f["url"]), dest=str(f["dest"]),
                                 size=None if f["size"] is None else int(f["size"]),
                                 sha256=f["sha256"], git_sha1=f["git_sha1"],
                                 auth=_auth(f["auth"])) for f in data["files"])
        return cls(str(data["ref"]), str(data["source"]), str(data["pinned"]),
                   str(data["root"]), str(data["model"]), files)


def beside(lora: Resolved, model: Resolved) -> Resolved:
    """A LoRA set re-rooted into the `loras/` folder beside a fetched model, where the worker
    finds `<lora:NAME:W>` (a model's folder is its set's root, a file's or a diffusers
    folder's alike)."""
    return replace(lora, root=f"{model.root}/{LORA_DIR}")


def fetched_source(params: dict) -> str | None:
    """The pinned source of the model a deployment's ledger params record fetching (its first
    model, the `fetched` record whose ref it is), or None when that model is a file."""
    models = params.get("models") or [None]
    return next((r.get("pinned") for r in params.get("fetched") or []
                 if isinstance(r, dict) and r.get("ref") == models[0]), None)


def _auth(value: object) -> Auth:
    if value not in ("hf", "civitai"):
        raise ValueError(f"unknown auth {value!r}")
    return value  # type: ignore[return-value]
