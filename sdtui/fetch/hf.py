"""Hugging Face: a repo's files and checksums through huggingface_hub's own client (its
endpoint, HF_ENDPOINT included; its token, HF_TOKEN or the one `hf auth login` saved; its
errors), turned into the files one model needs."""

from __future__ import annotations

import posixpath
import re
from dataclasses import replace

import requests

from sdtui.errors import BadInput, DeploymentError
from sdtui.fetch.http import TooLarge, get_json
from sdtui.fetch.plan import RemoteFile, Resolved
from sdtui.fetch.refs import CHECKPOINT_SUFFIXES, HfRef

DIFFUSERS_INDEX = "model_index.json"
# Components the worker never loads (sdtui runs without the safety checker).
SKIPPED_COMPONENTS = {"safety_checker", "feature_extractor"}
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# diffusers' variant names: NAME.VARIANT.safetensors, and sharded NAME.VARIANT-00001-of-00002.
_VARIANT = re.compile(r"\.(fp16|non_ema|ema|bf16|fp32)[.-]")
_SMALL_FILE_LIMIT = 1024 * 1024


# huggingface_hub is imported where it is used: it reads HF_ENDPOINT and HF_HOME when it is
# imported, and every run that fetches nothing by name would pay its import (a third of a second).
def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def gated_line(repo: str) -> BadInput:
    return BadInput(f"{repo} is a gated repo: its files need an accepted licence and a token",
                    fix=f"accept the licence at {endpoint()}/{repo} while logged in, then set "
                    "HF_TOKEN to a read token of that account (or run `hf auth login`)")


def _info(ref: HfRef):  # -> huggingface_hub.ModelInfo
    import httpx2  # huggingface_hub's HTTP client: its connection errors are its own
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return HfApi(endpoint=endpoint()).model_info(
            ref.repo, revision=ref.revision, files_metadata=True, token=token())
    except GatedRepoError:
        raise gated_line(ref.repo) from None
    except RevisionNotFoundError:
        raise BadInput(f"{ref.repo} has no revision {ref.revision!r}",
                       fix="give a branch, tag or commit of the repo, or leave @REV out") from None
    except RepositoryNotFoundError:
        raise BadInput(f"no Hugging Face repo {ref.repo} (or it is private)",
                       fix="check the name; for a private repo set HF_TOKEN") from None
    except (HfHubHTTPError, httpx2.HTTPError, OSError) as exc:
        raise DeploymentError(f"could not reach Hugging Face for {ref.repo}: "
                              f"{str(exc).splitlines()[0]}",
                              fix="check the connection (or HF_ENDPOINT) and retry") from None


def _remote(ref: HfRef, commit: str, sibling, dest: str) -> RemoteFile:
    from huggingface_hub import hf_hub_url

    lfs = sibling.lfs
    return RemoteFile(
        url=hf_hub_url(ref.repo, sibling.rfilename, revision=commit, endpoint=endpoint()),
        dest=dest, size=lfs.size if lfs else sibling.size,
        sha256=lfs.sha256 if lfs else None, git_sha1=None if lfs else sibling.blob_id)


def _holds(names: list[str]) -> str:
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return shown or "no files"


def _refuse_adapters(ref: HfRef, info, names: list[str]) -> None:
    """A LoRA or a VAE given as --model: say where it goes instead."""
    if DIFFUSERS_INDEX in names:
        return
    tags = {str(t).lower() for t in (info.tags or [])}
    files = [posixpath.basename(n).lower() for n in names if n.endswith(CHECKPOINT_SUFFIXES)]
    stems = [posixpath.splitext(f)[0] for f in files]
    if ("lora" in tags or info.library_name == "peft" or "adapter_config.json" in names
            or any("lora" in f for f in files)):
        raise BadInput(f"{ref} is a LoRA, not a model",
                       fix="fetch it with --lora-file (it goes in the loras/ folder beside the "
                       "model) and name it in the prompt as <lora:NAME:WEIGHT>")
    vae_repo = "config.json" in names and any("vae" in p.lower() for p in ref.repo.split("/"))
    if vae_repo or (stems and all(s.startswith("vae") or s.endswith(("-vae", "_vae", ".vae"))
                                  for s in stems)):
        raise BadInput(f"{ref} is a VAE, not a model",
                       fix="give the whole model (its checkpoint or diffusers repo); sdtui uses "
                       "the VAE inside it")


def _single(ref: HfRef, info, commit: str, path: str) -> Resolved:
    by_name = {s.rfilename: s for s in info.siblings or []}
    if path not in by_name:
        raise BadInput(f"{ref.repo} has no file {path}",
                       fix=f"it holds {_holds(sorted(by_name))}")
    stem = posixpath.splitext(path)[0]
    files = [_remote(ref, commit, by_name[path], posixpath.basename(path))]
    for name, sibling in sorted(by_name.items()):  # the sidecars sdtui reads beside a file
        if name == stem + ".yaml" or name.startswith(stem + ".config/"):
            files.append(_remote(ref, commit, sibling, name[len(posixpath.dirname(path)):]
                                 .lstrip("/")))
    root = f"hf/{ref.repo}/{commit}/{posixpath.dirname(path)}".rstrip("/")
    pinned = f"hf:{ref.repo}/{path}@{commit}"
    return Resolved(str(ref), pinned, pinned, root,
                    posixpath.basename(path), tuple(files))


def _components(ref: HfRef, commit: str) -> list[str]:
    from huggingface_hub import hf_hub_url

    url = hf_hub_url(ref.repo, DIFFUSERS_INDEX, revision=commit, endpoint=endpoint())
    headers = {"authorization": f"Bearer {token()}"} if token() else {}
    try:
        status, index = get_json(url, headers, _SMALL_FILE_LIMIT)
    except (requests.RequestException, TooLarge) as exc:
        status, index = str(exc), None
    if status != 200 or not isinstance(index, dict):
        raise DeploymentError(f"could not read {ref.repo}'s {DIFFUSERS_INDEX} ({status})",
                              fix="retry; check the repo in a browser")
    return [k for k, v in index.items() if isinstance(v, list) and v and v[0] is not None
            and not k.startswith("_") and k not in SKIPPED_COMPONENTS]


def _weights(names: list[str]) -> list[str]:
    """A component folder's weights: plain (not fp16 or EMA variants) safetensors, else .bin."""
    plain = [n for n in names if n.endswith(WEIGHT_SUFFIXES)
             and not _VARIANT.search(posixpath.basename(n))]
    safetensors = [n for n in plain if n.endswith(".safetensors")]
    return safetensors or plain


def _diffusers(ref: HfRef, info, commit: str) -> Resolved:
    by_name = {s.rfilename: s for s in info.siblings or []}
    name = ref.repo.split("/")[1]
    chosen = [DIFFUSERS_INDEX]
    for component in _components(ref, commit):
        inside = sorted(n for n in by_name if n.startswith(component + "/"))
        chosen += [n for n in inside if not n.endswith((*WEIGHT_SUFFIXES, ".msgpack", ".onnx",
                                                        ".onnx_data", ".h5", ".ckpt", ".pb"))]
        chosen += _weights(inside)
    files = tuple(_remote(ref, commit, by_name[n], f"{name}/{n}") for n in chosen)
    pinned = f"hf:{ref.repo}@{commit}"
    return Resolved(str(ref), pinned, pinned, f"hf/{ref.repo}/{commit}", name, files)


def repo_files(repo: str, revision: str | None,
               wanted: dict[str, str]) -> tuple[str, list[RemoteFile]]:
    """The files `wanted` (path in the repo -> where it lands) of one repo, pinned to the commit
    `revision` resolved to; the commit too."""
    ref = HfRef(repo, None, revision)
    info = _info(ref)
    if info.gated and not token():
        raise gated_line(repo)
    commit = info.sha or revision or "main"
    by_name = {s.rfilename: s for s in info.siblings or []}
    missing = [path for path in wanted if path not in by_name]
    if missing:
        raise DeploymentError(f"{repo} at {commit[:12]} has no {', '.join(missing)}",
                              fix="the repo has changed: pick another name (sdtui --list-models) "
                              "or give its files as hf:ORG/REPO/FILE")
    return commit, [_remote(ref, commit, by_name[path], dest) for path, dest in wanted.items()]


def resolve_hf_lora(ref: HfRef) -> Resolved:
    """A LoRA: the file named, or the repo's one .safetensors file."""
    info = _info(ref)
    commit = info.sha or ref.revision or "main"
    if info.gated and not token():
        raise gated_line(ref.repo)
    names = sorted(s.rfilename for s in info.siblings or [])
    path = ref.path
    if path is None:
        found = [n for n in names if n.endswith(".safetensors")]
        if len(found) != 1:
            raise BadInput(f"{ref.repo} holds {len(found)} .safetensors files, not one LoRA: "
                           f"{_holds(found or names)}",
                           fix=f"name the file: hf:{ref.repo}/FILE.safetensors")
        path = found[0]
    if not path.endswith(".safetensors") or DIFFUSERS_INDEX in names and ref.path is None:
        raise BadInput(f"{ref} is not a LoRA file", fix="give the LoRA's .safetensors file")
    resolved = _single(HfRef(ref.repo, path, ref.revision), info, commit, path)
    return replace(resolved, ref=str(ref), files=resolved.files[:1])


def resolve_hf(ref: HfRef) -> Resolved:
    info = _info(ref)
    commit = info.sha or ref.revision or "main"
    names = sorted(s.rfilename for s in info.siblings or [])
    if info.gated and not token():
        raise gated_line(ref.repo)
    if ref.path:
        _refuse_adapters(ref, info, [ref.path])
        return _single(ref, info, commit, ref.path)
    _refuse_adapters(ref, info, names)
    if DIFFUSERS_INDEX in names:
        return _diffusers(ref, info, commit)
    checkpoints = [n for n in names if n.lower().endswith(CHECKPOINT_SUFFIXES)]
    if len(checkpoints) == 1:
        return _single(ref, info, commit, checkpoints[0])
    if checkpoints:
        raise BadInput(f"{ref.repo} holds several checkpoints: {_holds(checkpoints)}",
                       fix=f"name one: hf:{ref.repo}/{checkpoints[0]}")
    gguf = " (GGUF files run once FLUX.1 does, issue 17)" if any(
        n.endswith(".gguf") for n in names) else ""
    raise BadInput(f"{ref.repo} holds no model sdtui can run{gguf}: {_holds(names)}",
                   fix="give a repo with a .safetensors/.ckpt checkpoint or a diffusers "
                   "model_index.json")
