"""Which model files sdtui can read, and which files travel with each. Stdlib only: the client
imports this to check a path and to list what to copy to the worker before anything is created.

Formats (each for SD 1.x, SD 2.x and SDXL base; the worker tells the family from the weights):
- "diffusers": a folder holding model_index.json (the layout `save_pretrained` writes).
- "ckpt": the original single-file checkpoint, a torch pickle (the guide's sd-v1-4.ckpt).
- "safetensors": the same weights as a .safetensors file.
- "gguf": a FLUX.1, SD 3.5 or FLUX.2 Klein transformer quantized in city96's ComfyUI-GGUF
  layout (architecture "flux" or "sd3"); a GGUF of any other architecture is refused here, from
  its header.
- "set": a folder of FLUX.1's, SD 3.5's or FLUX.2 Klein's split component files
  (sdtui.modelsets). A transformer file alone (.safetensors or .gguf) is a set's transformer: its
  siblings complete the set, and a set with a part missing is refused here.

A checkpoint FILE with stem S may have sidecars beside it, found the way other SD tools find a
same-named .yaml (the worker resolves them in this order; see sdtui.worker.models):
1. `S.config/` — a diffusers-layout folder of configs and tokenizer, no weights;
2. `S.yaml` — the original LDM config.
Without either the worker uses the family's configs shipped in sdtui/assets/<family>/.

LoRA files sit in a `loras/` folder beside the model and travel with it (see sdtui.loras).
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import BinaryIO, Literal

from sdtui.errors import BadInput
from sdtui.fetch.refs import is_remote
from sdtui.headers import NotGguf, gguf_architecture, safetensors_header
from sdtui.loras import LORA_DIR, LORA_SUFFIX
from sdtui.modelsets import KINDS, find_set
from sdtui.userfiles import check_file, expand, open_file

ModelFormat = Literal["diffusers", "ckpt", "safetensors", "gguf", "set"]

DIFFUSERS_INDEX = "model_index.json"
CONFIG_DIR_SUFFIX = ".config"
YAML_SUFFIX = ".yaml"
# Legacy (pre-zip) torch.save files start with a pickle protocol 2+ opcode.
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")

# GGUF architectures sdtui runs (what ComfyUI-GGUF's tools/convert.py names FLUX.1 and FLUX.2,
# and SD 3.5).
GGUF_ARCHITECTURES = {arch: " and ".join(k.label for k in KINDS if k.gguf_architecture == arch)
                      for arch in dict.fromkeys(kind.gguf_architecture for kind in KINDS)}
_GGUF_FIX = ("pass a FLUX.1, SD 3.5 or FLUX.2 Klein transformer .gguf (e.g. "
             "flux1-dev-Q4_K_S.gguf, sd3.5_large-Q4_0.gguf: ComfyUI-GGUF's layout) with its text "
             "encoders and VAE beside it")
_FIX = "pass the path of sd-v1-4.ckpt, of a .safetensors checkpoint or of a diffusers model folder"


def _not_a_model(path: Path, why: str) -> BadInput:
    return BadInput(
        f"model file {path} is not a Stable Diffusion checkpoint (.ckpt, .safetensors) "
        f"or a diffusers folder: {why}",
        fix=_FIX,
    )


def _looks_like_torch_checkpoint(stream: BinaryIO) -> bool:
    if zipfile.is_zipfile(stream):
        try:
            with zipfile.ZipFile(stream) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, ValueError, EOFError):
            return False  # an end-of-archive record but no readable archive
        return any(name == "data.pkl" or name.endswith("/data.pkl") for name in names)
    stream.seek(0)
    return stream.read(2) in PICKLE_MAGIC


def _has_safetensors_header(stream: BinaryIO) -> bool:
    return safetensors_header(stream) is not None


def detect_format(path: str | Path) -> ModelFormat:
    """Name the format of a model path, or raise BadInput saying what is wrong with it."""
    path = expand(path, "model file")
    if not path.exists():
        raise BadInput(f"model file {path} does not exist", fix="check the path")
    if path.is_dir():
        if (path / DIFFUSERS_INDEX).is_file():
            return "diffusers"
        if find_set(path) is not None:
            return "set"
        raise _not_a_model(path, f"the folder has no {DIFFUSERS_INDEX}")
    fmt = _file_format(path)
    if fmt in ("safetensors", "gguf"):
        find_set(path)  # a transformer alone needs the rest of its set beside it
    return fmt


def _file_format(path: Path) -> ModelFormat:
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        return _check_gguf(path)
    if suffix not in (".ckpt", ".safetensors"):
        raise _not_a_model(path, f"unsupported file type {suffix or '(no extension)'}")
    with open_file(path, "model file", _FIX) as stream:
        if suffix == ".ckpt":
            if _looks_like_torch_checkpoint(stream):
                return "ckpt"
            raise _not_a_model(path, "it is not a torch checkpoint (truncated or corrupt?)")
        if _has_safetensors_header(stream):
            return "safetensors"
        raise _not_a_model(path, "it has no valid safetensors header (truncated or corrupt?)")


def _check_gguf(path: Path) -> ModelFormat:
    try:
        with open_file(path, "model file", _GGUF_FIX) as stream:
            found = gguf_architecture(stream)
    except NotGguf as error:
        raise BadInput(f"model file {path} is not a GGUF model: {error}", fix=_GGUF_FIX) from None
    if found not in GGUF_ARCHITECTURES:
        raise BadInput(f"model file {path} is a GGUF of architecture {found or '(none named)'!r}"
                       f", which sdtui does not run; sdtui runs "
                       f"{' and '.join(GGUF_ARCHITECTURES.values())} transformers as GGUF",
                       fix=_GGUF_FIX)
    return "gguf"


def sidecars(path: str | Path) -> list[Path]:
    """The sidecars that exist beside checkpoint file `path`, in resolution order."""
    path = expand(path, "model file").absolute()
    found = [path.with_name(path.stem + CONFIG_DIR_SUFFIX), path.with_name(path.stem + YAML_SUFFIX)]
    return [p for p in found if p.exists()]


def _files_under(folder: Path, prefix: str) -> list[tuple[Path, str]]:
    return [
        (file, f"{prefix}/{file.relative_to(folder).as_posix()}")
        for file in sorted(folder.rglob("*"))
        if file.is_file()
    ]


def model_files(path: str | Path) -> list[tuple[Path, str]]:
    """Every file the worker needs for this model, as (absolute source, name relative to the
    destination directory). Copying them all into one directory keeps sidecars beside their
    checkpoint, so the worker finds them from the checkpoint path alone."""
    path = expand(path, "model file").absolute()
    fmt = detect_format(path)
    if fmt == "diffusers":
        return _files_under(path, path.name)
    model_set = find_set(path) if fmt in ("set", "safetensors", "gguf") else None
    if model_set is None:
        return _with_sidecars(path, "")
    # A set travels whole: as its folder, or as files beside the transformer.
    prefix = path.name + "/" if fmt == "set" else ""
    return _with_sidecars(model_set.transformer, prefix) + [
        (part, prefix + part.name) for part in model_set.parts.values()]


def hashed_name(path: str | Path) -> str | None:
    """The file whose sha256 names the model in its images, as `model_files` names it: the
    checkpoint, or a set's transformer; None for a diffusers folder, which has no single model
    file."""
    if detect_format(path) == "diffusers":
        return None
    return model_files(path)[0][1]


def _with_sidecars(path: Path, prefix: str) -> list[tuple[Path, str]]:
    files = [(path, prefix + path.name)]
    for sidecar in sidecars(path):
        if sidecar.is_dir():
            files += _files_under(sidecar, prefix + sidecar.name)
        else:
            files.append((sidecar, prefix + sidecar.name))
    return files


def check_models(models: list[Path]) -> None:
    """The first model must be a Stable Diffusion model; the others (e.g. GFPGANv1.3.pth) are
    files that travel beside it."""
    if not models:
        raise BadInput("no model given", fix="pass --model sd15 (fetched by name; "
                       "`sdtui --list-models` lists the names), hf:ORG/REPO, civitai:ID or "
                       "the path of a checkpoint (e.g. ~/Downloads/sd-v1-4.ckpt)")
    if is_remote(models[0]):
        raise BadInput(f"--model {models[0]} names a model to fetch; fetching by name works "
                       "with Option B (--option local) and Option A (--option aws) so far",
                       fix="fetch it with --option local once (the file lands in "
                       "SDTUI_MODELS_DIR), then pass that file's path")
    detect_format(models[0])
    check_extras(models[1:])


def check_extras(models: list) -> None:
    """Files that travel beside the model (e.g. GFPGANv1.3.pth) must exist."""
    for extra in models:
        check_file(expand(extra, "model file"), "model file")


def lora_files(model: str | Path) -> list[tuple[Path, str]]:
    """The LoRA files in the `loras/` folder beside the model (where `<lora:NAME:W>` in a
    prompt finds NAME.safetensors), named as they travel: `loras/...`."""
    folder = expand(model, "model file").absolute().parent / LORA_DIR
    if not folder.is_dir():
        return []
    return [(file, f"{LORA_DIR}/{file.relative_to(folder).as_posix()}")
            for file in sorted(folder.rglob("*" + LORA_SUFFIX)) if file.is_file()]


def deployment_files(models: list[Path]) -> list[tuple[Path, str]]:
    """What a deployment copies: the model with its sidecars, the LoRAs beside it, then the
    extra files by name."""
    return model_files(models[0]) + companion_files(models)


def companion_files(models: list[Path]) -> list[tuple[Path, str]]:
    """What travels with the model but is not part of it: the LoRAs beside it, then the extra
    files by name."""
    return lora_files(models[0]) + [(expand(p, "model file").absolute(), Path(p).name)
                                    for p in models[1:]]


def sha256_file(path: Path, chunk: int = 4 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
