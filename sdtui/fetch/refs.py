"""What the user typed for --model: a local path, or a reference to fetch. Pure parsing, no
network: a malformed name or URL is refused here, before anything is created.

    hf:ORG/REPO[@REV]                           a diffusers repo (or a repo of one checkpoint)
    hf:ORG/REPO/PATH/FILE.safetensors[@REV]     one checkpoint file (.safetensors or .ckpt)
    https://huggingface.co/ORG/REPO[/tree/REV]  and /blob/REV/PATH, /resolve/REV/PATH
    civitai:VERSION_ID                          a Civitai model version
    https://civitai.com/models/ID[/slug]?modelVersionId=VERSION_ID, .../api/download/models/ID
    NAME                                        a catalogue name (sdtui --list-models)
    NAME@COMMIT[+COMMIT...]                     the name at the commits a fetch resolved, one per
                                                repo of the entry (what images record)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from sdtui.errors import BadInput

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
HF_HOSTS = ("huggingface.co", "www.huggingface.co", "hf.co")
CIVITAI_HOSTS = ("civitai.com", "www.civitai.com")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
_CATALOGUE_NAME = re.compile(r"[a-z0-9][a-z0-9.:_-]{0,63}")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
_HF_FIX = "write hf:ORG/REPO, hf:ORG/REPO/FILE.safetensors or add @REVISION"


@dataclass(frozen=True)
class HfRef:
    repo: str
    path: str | None = None  # one file in the repo; None: the repo's model
    revision: str | None = None

    def __str__(self) -> str:
        path = f"/{self.path}" if self.path else ""
        return f"hf:{self.repo}{path}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class CivitaiRef:
    version_id: int

    def __str__(self) -> str:
        return f"civitai:{self.version_id}"


@dataclass(frozen=True)
class CatalogueRef:
    name: str
    revisions: tuple[str, ...] | None = None  # one per repo of the entry, in its order

    def __str__(self) -> str:
        return self.name + (f"@{'+'.join(self.revisions)}" if self.revisions else "")


Ref = HfRef | CivitaiRef | CatalogueRef


def _malformed(text: str, why: str, fix: str) -> BadInput:
    return BadInput(f"model {text!r} is not a name sdtui can fetch: {why}", fix=fix)


def _hf(text: str, body: str, revision: str | None) -> HfRef:
    parts = [p for p in body.strip("/").split("/")]
    if len(parts) < 2 or not _REPO.fullmatch("/".join(parts[:2])) or "" in parts:
        raise _malformed(text, "no ORG/REPO", _HF_FIX)
    if revision is not None and not _REVISION.fullmatch(revision):
        raise _malformed(text, f"revision {revision!r} is not a branch, tag or commit", _HF_FIX)
    path = "/".join(parts[2:]) or None
    if path is not None:
        if ".." in parts[2:] or any(p.startswith(".") for p in parts[2:]):
            raise _malformed(text, "the file path leaves the repo", _HF_FIX)
        if not path.lower().endswith(CHECKPOINT_SUFFIXES):
            raise _malformed(text, f"{path} is not a .safetensors or .ckpt checkpoint",
                             "name the checkpoint file, or just hf:ORG/REPO for a diffusers repo")
    return HfRef("/".join(parts[:2]), path, revision)


def _hf_url(text: str, path: str) -> HfRef:
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if len(parts) > 3 and parts[2] in ("tree", "blob", "resolve"):
        body = "/".join(parts[:2] + parts[4:])
        return _hf(text, body, parts[3])
    if len(parts) == 2:
        return _hf(text, "/".join(parts), None)
    raise _malformed(text, "not a repo, tree, blob or resolve URL",
                     "copy the URL of the repo's page or of the checkpoint file's page")


def _civitai_url(text: str, path: str, query: str) -> CivitaiRef:
    parts = path.strip("/").split("/")
    version = parse_qs(query).get("modelVersionId", [None])[0]
    if len(parts) == 4 and parts[:3] in (["api", "download", "models"],
                                         ["api", "v1", "model-versions"]):
        version = parts[3]
    elif parts[0] != "models":
        raise _malformed(text, "not a Civitai model URL", "copy the URL of the model's page")
    if version is None:
        raise _malformed(text, "the URL names a model but not one of its versions",
                         "pick the version on the model's page and copy the URL with "
                         "?modelVersionId=N, or write civitai:N")
    return _civitai(text, version)


def _civitai(text: str, version: str) -> CivitaiRef:
    if not version.isdigit() or len(version) > 12:
        raise _malformed(text, f"{version!r} is not a Civitai model-version id",
                         "write civitai:N with N the version id (a number)")
    return CivitaiRef(int(version))


def parse_ref(text: str) -> Ref | None:
    """The reference `text` names, or None when it is a local path."""
    text = str(text).strip()
    if text.startswith("hf:"):
        body, _, revision = text[3:].partition("@")
        return _hf(text, body, revision if "@" in text else None)
    if text.startswith("civitai:"):
        return _civitai(text, text[len("civitai:"):])
    if "://" in text:
        url = urlsplit(text)
        if url.scheme in ("http", "https") and url.hostname in HF_HOSTS:
            return _hf_url(text, url.path)
        if url.scheme in ("http", "https") and url.hostname in CIVITAI_HOSTS:
            return _civitai_url(text, url.path, url.query)
        raise _malformed(text, "only huggingface.co and civitai.com URLs are fetched",
                         "download it yourself and pass the file's path")
    if "/" in text or text.startswith((".", "~")) or Path(text).exists():
        return None
    if Path(text).suffix.lower() in (*CHECKPOINT_SUFFIXES, ".pth", ".bin", ".pt"):
        return None  # a file name: "does not exist" is the clearer message
    name, pinned, revisions = text.partition("@")
    if _CATALOGUE_NAME.fullmatch(name):
        if not pinned:
            return CatalogueRef(name)
        commits = tuple(revisions.split("+"))
        if not all(_REVISION.fullmatch(c) for c in commits):
            raise _malformed(text, f"{revisions!r} is not COMMIT[+COMMIT...]",
                             f"write {name}, or {name}@COMMIT with the commits it was fetched at")
        return CatalogueRef(name, commits)
    return None


def is_remote(text: object) -> bool:
    try:
        return parse_ref(str(text)) is not None
    except BadInput:
        return True  # malformed, but clearly meant as a reference: validation says why
