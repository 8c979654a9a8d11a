"""Civitai: a model version through its REST API (`GET /api/v1/model-versions/{id}`: the
model's type, and each file's type, format, SHA256 and download URL). CIVITAI_API_TOKEN is
sent as a bearer token; CIVITAI_ENDPOINT points at a mirror (the tests' stand-in)."""

from __future__ import annotations

import os
import re

import requests

from sdtui.errors import BadInput, DeploymentError
from sdtui.fetch.http import TooLarge, get_json
from sdtui.fetch.plan import RemoteFile, Resolved
from sdtui.fetch.refs import CHECKPOINT_SUFFIXES, CivitaiRef

DEFAULT_ENDPOINT = "https://civitai.com"
TOKEN_VAR = "CIVITAI_API_TOKEN"
MODEL_TYPES = {"checkpoint"}
# Where each other type goes instead, said in the refusal.
_ELSEWHERE = {
    "lora": "a LoRA: it goes in the loras/ folder beside the model (<lora:NAME:W> in the prompt)",
    "locon": "a LoCon: it goes in the loras/ folder beside the model (<lora:NAME:W>)",
    "dora": "a DoRA: it goes in the loras/ folder beside the model (<lora:NAME:W>)",
    "vae": "a VAE: sdtui uses the VAE inside the checkpoint",
    "textualinversion": "an embedding (textual inversion), which sdtui does not load",
    "hypernetwork": "a hypernetwork, which sdtui does not load",
}


def endpoint() -> str:
    return (os.environ.get("CIVITAI_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def token() -> str | None:
    return os.environ.get(TOKEN_VAR) or None


def auth_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {token()}"} if token() else {}


def _version(ref: CivitaiRef) -> dict:
    url = f"{endpoint()}/api/v1/model-versions/{ref.version_id}"
    try:
        status, body = get_json(url, auth_headers())
    except (requests.RequestException, TooLarge) as exc:
        raise DeploymentError(f"could not read Civitai's answer for {ref}: {exc}",
                              fix="check the connection (or CIVITAI_ENDPOINT) and retry") from None
    if status == 404:
        raise BadInput(f"Civitai has no model version {ref.version_id}",
                       fix="copy the version id from the model's page (?modelVersionId=N)")
    if status in (401, 403):
        raise BadInput(f"Civitai refused {ref} without a valid token",
                       fix=f"set {TOKEN_VAR} to an API key from your Civitai account settings")
    if status != 200:
        raise DeploymentError(f"Civitai answered {status} for {ref}", fix="retry later")
    if not isinstance(body, dict) or not isinstance(body.get("files"), list):
        raise DeploymentError(f"Civitai's answer for {ref} is not a model version",
                              fix="retry later; check CIVITAI_ENDPOINT")
    return body


def _safe_name(name: str) -> str:
    name = os.path.basename(str(name))
    if not name or name.startswith(".") or not re.fullmatch(r"[\w .()+,-]+", name):
        raise DeploymentError(f"Civitai names a file {name!r} sdtui will not write",
                              fix="download it yourself and pass its path")
    return name


LORA_TYPES = {"lora", "locon", "dora"}


def resolve_civitai(ref: CivitaiRef, *, lora: bool = False) -> Resolved:
    body = _version(ref)
    kind = str((body.get("model") or {}).get("type", "")).lower()
    if lora:
        if kind not in LORA_TYPES:
            raise BadInput(f"{ref} is a {kind or 'resource of unknown type'}, not a LoRA",
                           fix="--lora-file takes LoRA versions; a checkpoint goes in --model")
        return _file_of(ref, body, (".safetensors",))
    if kind in _ELSEWHERE:
        raise BadInput(f"{ref} is {_ELSEWHERE[kind]}, not a model",
                       fix="give a Checkpoint version as --model")
    if kind not in MODEL_TYPES:
        raise BadInput(f"{ref} is a {kind or 'resource of unknown type'}, not a checkpoint",
                       fix="give a Checkpoint version as --model")
    return _file_of(ref, body, CHECKPOINT_SUFFIXES)


def _file_of(ref: CivitaiRef, body: dict, suffixes: tuple[str, ...]) -> Resolved:
    """The version's primary model file with one of `suffixes`, with its SHA256."""
    files = [f for f in body["files"] if isinstance(f, dict)]
    models = [f for f in files if str(f.get("type", "")).lower() in ("model", "pruned model")
              and str(f.get("name", "")).lower().endswith(suffixes)]
    primary = [f for f in models if f.get("primary")] or models
    if not primary:
        held = ", ".join(f"{f.get('name')} ({f.get('type')})" for f in files) or "no files"
        raise BadInput(f"{ref} holds no {' or '.join(suffixes)} file sdtui can load (an "
                       f"archive or other files: {held})",
                       fix="give a version whose file is a .safetensors file")
    chosen = primary[0]
    sha256 = str((chosen.get("hashes") or {}).get("SHA256", "")).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha256) or not chosen.get("downloadUrl"):
        raise DeploymentError(f"Civitai gives no SHA256 or download URL for {ref}",
                              fix="retry later; sdtui loads no file it cannot check")
    name = _safe_name(chosen["name"])
    size_kb = chosen.get("sizeKB")
    size = int(size_kb * 1024) if isinstance(size_kb, int | float) else None
    remote = RemoteFile(url=str(chosen["downloadUrl"]), dest=name, size=size, sha256=sha256,
                        auth="civitai")
    # A version's files do not change; the sha256 each image records pins the bytes too.
    return Resolved(str(ref), f"civitai:{ref.version_id} ({name})", str(ref),
                    f"civitai/{ref.version_id}", name, (remote,))
