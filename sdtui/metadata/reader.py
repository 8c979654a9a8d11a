"""What a PNG says about how it was made, for `--from-png` and the gallery's re-run.

It reads sdtui's own files exactly (the request under sd-metadata's "sdtui" key), A1111's
infotext of every version, and the dream tool's (InvokeAI 2.x) `sd-metadata` and `Dream`
chunks. Files from tools whose parameters sdtui cannot re-run are refused naming the tool;
anything malformed is bad input in one line, at bounded cost (see png_chunks).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

from sdtui import protocol
from sdtui.errors import BadInput
from sdtui.fetch.refs import CatalogueRef, CivitaiRef, HfRef, parse_ref
from sdtui.metadata import a1111, dream
from sdtui.metadata.parsed import Parsed
from sdtui.metadata.png_chunks import MAX_FILE_BYTES, PngError, read_file, read_head, read_texts

# Real sd-metadata is a few kilobytes; parsing is capped well below the text-chunk limit so
# that JSON's objects stay within the memory bound.
MAX_JSON_BYTES = 256 * 1024
_WANTED = ("parameters", "sd-metadata", "Dream", "Software")
# Text keywords of tools whose files hold no parameters sdtui can re-run.
_OTHER_TOOLS = {
    "workflow": "ComfyUI (a node workflow)",
    "prompt": "ComfyUI (a node workflow)",
    "invokeai_metadata": "InvokeAI 3 or later (a node graph)",
    "invokeai_graph": "InvokeAI 3 or later (a node graph)",
    "fooocus_scheme": "Fooocus",
    "sd-metadata-v2": "InvokeAI 3 or later",
}
_REFUSE_FIX = ("pass a PNG written by sdtui, A1111 or the dream tool (InvokeAI 2.x), or give "
               "the values as flags")


def _json(text: str, what: str, path: Path) -> Any:
    if len(text) > MAX_JSON_BYTES:
        raise BadInput(f"{path}: {what} is {len(text) // 1024} KiB; real ones are a few KiB",
                       fix="pass a PNG with ordinary metadata")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadInput(f"{path}: {what} is not valid JSON ({str(exc)[:80]})",
                       fix="the file's metadata is damaged; pass the values as flags") from None


def _own(meta: dict[str, Any], path: Path) -> Parsed:
    own = meta[dream.SDTUI_KEY]
    params = own.get("params") if isinstance(own, dict) else None
    if not isinstance(params, dict):
        got = type(params).__name__ if own is not None else "null"
        raise BadInput(f"{path}: sd-metadata's sdtui.params should be an object, got {got}",
                       fix="the file's metadata is damaged; pass the values as flags")
    return Parsed("sdtui", dict(params))


def _refusal(path: Path, tool: str) -> BadInput:
    return BadInput(f"{path} was written by {tool}, whose parameters sdtui cannot re-run",
                    fix=_REFUSE_FIX)


def _parse(path: Path, texts: dict[str, str], keywords: list[str]) -> tuple[Parsed, Any]:
    meta = None
    if "sd-metadata" in texts:
        meta = _json(texts["sd-metadata"], "its sd-metadata chunk", path)
        if not isinstance(meta, dict):
            raise BadInput(f"{path}: sd-metadata should be a JSON object, got "
                           f"{type(meta).__name__}", fix="the file's metadata is damaged")
        if dream.SDTUI_KEY in meta:
            return _own(meta, path), meta
    parameters = texts.get("parameters")
    if parameters is not None:
        if parameters.lstrip().startswith("{"):
            raise _refusal(path, "Fooocus (JSON parameters)")
        found = a1111.read(parameters)
        if found is not None:
            return found, meta
    if meta is not None:
        found = dream.read_sd_metadata(meta)
        if "Dream" in texts:
            dream.add_command_only(found, texts["Dream"])
        return found, meta
    if "Dream" in texts:
        return dream.read_command(texts["Dream"]), meta
    if texts.get("Software", "").startswith("NovelAI"):
        raise _refusal(path, "NovelAI")
    for key in keywords:
        if key in _OTHER_TOOLS:
            raise _refusal(path, _OTHER_TOOLS[key])
    if parameters is not None:
        raise BadInput(f"{path}: its parameters text is not an A1111 infotext (no settings "
                       "line like 'Steps: 20, Sampler: Euler a, Seed: 1')", fix=_REFUSE_FIX)
    have = f" (its text chunks: {', '.join(sorted(set(keywords)))[:120]})" if keywords else ""
    raise BadInput(f"{path} carries no generation parameters{have}", fix=_REFUSE_FIX)


def read_metadata(path: Path) -> dict[str, Any]:
    """The parameters a PNG carries: {"params": dict, "tool": str, "ignored": [str],
    "unknown_sampler": str | None, "parameters": str | None, "sd-metadata": dict | None}.
    `params` is sdtui's exact request when sdtui wrote the file."""
    path = Path(path)
    data = read_head(path, "PNG")
    try:
        texts, keywords = read_texts(data, _WANTED)
    except PngError as exc:
        raise PngError(f"{path}: {exc.message}", fix=exc.fix) from None
    found, meta = _parse(path, texts, keywords)
    return {"params": found.params, "tool": found.tool, "ignored": found.ignored,
            "unknown_sampler": found.unknown_sampler, "parameters": texts.get("parameters"),
            "sd-metadata": meta}


# --- input images -----------------------------------------------------------------------------


def _input_file(ref: dict[str, Any], base: Path, name: str, source: Path) -> Path:
    relative = ref.get("path")
    parts = PurePosixPath(relative).parts if isinstance(relative, str) and relative else ()
    if not parts or parts[0] == "/" or ".." in parts or "\\" in relative:
        raise BadInput(f"{source}: the {name} path {str(relative)[:80]!r} it records is not "
                       "inside the image's folder", fix=f"pass --{name.replace('_', '-')} FILE")
    return base.joinpath(*parts)


def resolve_inputs(params: dict[str, Any], base: Path, source: Path | None = None
                   ) -> dict[str, Any]:
    """`params` with each stored input image (a {"sha256", "path"} reference, the path relative
    to `base`) read back as the base64 a request carries. A missing or changed copy is named."""
    source = source or base
    resolved = dict(params)
    for name in protocol.INPUT_IMAGE_FIELDS:
        ref = params.get(name)
        if not isinstance(ref, dict):
            continue
        file = _input_file(ref, Path(base), name, source)
        flag = f"--{name.replace('_', '-')} FILE"
        if not file.is_file():
            raise BadInput(f"the {name.replace('_', ' ')} {file} recorded in {source} is missing",
                           fix=f"put that file back, or pass {flag}")
        data = read_file(file, name.replace("_", " "))
        digest = ref.get("sha256")
        if isinstance(digest, str) and hashlib.sha256(data).hexdigest() != digest:
            raise BadInput(f"the {name.replace('_', ' ')} {file} recorded in {source} has "
                           "changed since (its sha256 differs)",
                           fix=f"put the original back, or pass {flag}")
        resolved[name] = base64.b64encode(data).decode("ascii")
    return resolved


# --- a request from a PNG -----------------------------------------------------------------------


def request_from_png(path: Path, given: set[str]) -> tuple[dict[str, Any], list[str]]:
    """The request a PNG records, for one image exactly like it, and warning lines for what
    cannot be reproduced. `given`: the request fields the user sets with flags (they override
    the file's values, and excuse what the file lacks)."""
    path = Path(path)
    found = read_metadata(path)
    params: dict[str, Any] = dict(found["params"])
    ignored: list[str] = list(found["ignored"])
    label = found["unknown_sampler"]
    if label and "scheduler" not in given:
        valid = ", ".join(protocol.SCHEDULERS)
        raise BadInput(f"{path} was made with the sampler {label!r}, which sdtui does not have",
                       fix=f"pass --scheduler NAME to re-run it with another ({valid})")
    for name in protocol.INPUT_IMAGE_FIELDS:
        if name in given:
            params.pop(name, None)
    if not any(params.get(name) for name in protocol.INPUT_IMAGE_FIELDS) and \
            "init_image" not in given and "strength" in params and found["tool"] != "sdtui":
        ignored.append(f"Denoising strength: {params.pop('strength')} (img2img; pass "
                       "--init-image FILE to re-run it)")
    params = resolve_inputs(params, path.parent, path)
    if not str(params.get("prompt") or "").strip() and "prompt" not in given:
        raise BadInput(f"{path} records an empty prompt", fix="pass --prompt TEXT")
    request = {k: v for k, v in params.items() if k in protocol.GENERATE_FIELDS and k != "id"}
    request["count"] = 1
    warnings = []
    if ignored:
        shown = ", ".join(item[:60] for item in ignored[:12])
        more = f" and {len(ignored) - 12} more" if len(ignored) > 12 else ""
        warnings.append(f"{path.name} ({found['tool']}): sdtui cannot reproduce {shown}{more}; "
                        "re-running without them")
    return request, warnings


def recorded_source(path: Path) -> str | None:
    """The pinned source of the fetched model an sdtui PNG was made with (`model_source`:
    hf:ORG/REPO/FILE@COMMIT, civitai:ID, NAME@COMMIT+...), or None when it was made from a file."""
    found = read_metadata(Path(path))
    source = found["params"].get("model_source") if found["tool"] == "sdtui" else None
    if source is None:
        return None
    try:
        ref = parse_ref(source) if isinstance(source, str) else None
    except BadInput:
        ref = None
    pinned = (isinstance(ref, CivitaiRef) or isinstance(ref, HfRef) and ref.revision
              or isinstance(ref, CatalogueRef) and ref.revisions)
    if not pinned:
        raise BadInput(f"{path}: its model_source {str(source)[:80]!r} is not a pinned "
                       "hf:ORG/REPO[/FILE]@COMMIT or civitai:ID (or a catalogue NAME@COMMIT)",
                       fix="the file's metadata is damaged; pass --model")
    return source


__all__ = ["MAX_FILE_BYTES", "read_metadata", "recorded_source", "request_from_png",
           "resolve_inputs"]
