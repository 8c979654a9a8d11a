"""A FLUX.1 model held as split component files, as ComfyUI users keep them, resolved to one set:

- a transformer: a .safetensors in BFL's layout (flux1-dev.safetensors) or a .gguf
  (flux1-dev-Q4_K_S.gguf, ComfyUI-GGUF's layout);
- `clip_l.safetensors` (CLIP-L text encoder), a `t5xxl_*.safetensors` (T5-XXL text encoder:
  t5xxl_fp16, t5xxl_fp8_e4m3fn, ...) or a T5 `.gguf` (t5-v1_1-xxl-encoder-Q8_0.gguf),
  `ae.safetensors` (the VAE), all in the same folder.

`--model FOLDER` and `--model TRANSFORMER_FILE` inside such a folder both name the set. Stdlib
only: the client resolves a set, and refuses one with a part missing, before anything is
created; the worker resolves it the same way from the copy.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from sdtui.errors import BadInput
from sdtui.headers import NotGguf, gguf_architecture, safetensors_header
from sdtui.userfiles import expand

# BFL's key layout: a transformer alone has this tensor without the all-in-one prefix.
FLUX_MARKER = "double_blocks.0.img_attn.qkv.weight"
# FLUX.2's transformers share BFL's block names; this key is theirs alone (diffusers'
# CHECKPOINT_KEY_NAMES["flux2"]).
FLUX2_MARKER = "single_stream_modulation.lin.weight"
FLUX_GGUF = "flux"
T5_GGUF = "t5encoder"  # llama.cpp's name for a T5 encoder alone
TRANSFORMER_SUFFIXES = (".safetensors", ".gguf")


@dataclass(frozen=True)
class Part:
    component: str  # the diffusers pipeline component it becomes
    label: str
    patterns: tuple[str, ...]  # file names it goes by (lower case, fnmatch)
    usual: str  # what users usually download, and from where


PARTS = (
    Part("text_encoder", "CLIP-L text encoder", ("clip_l*.safetensors",),
         "clip_l.safetensors (Hugging Face: comfyanonymous/flux_text_encoders)"),
    Part("text_encoder_2", "T5-XXL text encoder", ("t5xxl*.safetensors", "t5*.gguf"),
         "t5xxl_fp16.safetensors or t5xxl_fp8_e4m3fn.safetensors (Hugging Face: "
         "comfyanonymous/flux_text_encoders)"),
    Part("vae", "VAE", ("ae.safetensors",),
         "ae.safetensors (Hugging Face: black-forest-labs/FLUX.1-schnell)"),
)


@dataclass(frozen=True)
class ModelSet:
    transformer: Path
    parts: dict[str, Path]  # pipeline component -> file

    @property
    def files(self) -> list[Path]:
        return [self.transformer, *self.parts.values()]


def _is_part(path: Path) -> bool:
    name = path.name.lower()
    return any(fnmatch.fnmatch(name, pattern) for part in PARTS for pattern in part.patterns)


def is_flux_transformer(path: Path) -> bool:
    """A FLUX.1 transformer file alone: BFL's layout (.safetensors) or a 'flux' GGUF."""
    suffix = path.suffix.lower()
    if suffix not in TRANSFORMER_SUFFIXES or not path.is_file():
        return False
    try:
        with open(path, "rb") as stream:
            if suffix == ".gguf":
                return gguf_architecture(stream) == FLUX_GGUF
            header = safetensors_header(stream)
    except (OSError, NotGguf):
        return False  # detect_format says what is wrong with it
    return header is not None and FLUX_MARKER in header and not is_flux2_header(header)


def is_flux2_header(header: dict) -> bool:
    return any(key.endswith(FLUX2_MARKER) for key in header)


def _refuse_flux2(path: Path) -> None:
    """A FLUX.2 transformer file alone (BFL's or ComfyUI's) is not a model sdtui loads yet."""
    try:
        with open(path, "rb") as stream:
            header = safetensors_header(stream)
    except OSError:
        return  # detect_format says what is wrong with it
    if header is not None and is_flux2_header(header):
        raise BadInput(f"model file {path} is a FLUX.2 transformer alone; sdtui loads FLUX.2 "
                       f"Klein from a diffusers folder only",
                       fix="pass the folder (the Hub's black-forest-labs/FLUX.2-klein-4B "
                           "layout) with --model")


def _readable(path: Path) -> str | None:
    """Why a part's file cannot be what it is named (None when its header is sound)."""
    try:
        with open(path, "rb") as stream:
            if path.suffix.lower() == ".gguf":
                found = gguf_architecture(stream)
                return None if found == T5_GGUF else (
                    f"a GGUF of architecture {found or '(none named)'!r}, not a T5 encoder")
            return None if safetensors_header(stream) is not None else (
                "no safetensors file (truncated or corrupt?)")
    except NotGguf as error:
        return f"not a GGUF file: {error}"
    except OSError as error:
        return f"unreadable ({error.strerror})"


def _transformer_in(folder: Path) -> Path | None:
    found = [f for f in sorted(folder.iterdir())
             if not _is_part(f) and is_flux_transformer(f)]
    if len(found) > 1:
        raise BadInput(f"model folder {folder} holds {len(found)} FLUX.1 transformers "
                       f"({', '.join(f.name for f in found)})",
                       fix="pass --model with the path of the one to use")
    return found[0] if found else None


def find_set(path: str | Path) -> ModelSet | None:
    """The split FLUX.1 set `path` names (a folder of parts, or the transformer file among
    them); None when it is no such thing; BadInput naming a missing part."""
    path = expand(path, "model file").absolute()
    if path.is_dir():
        transformer = _transformer_in(path)
    else:
        if path.suffix.lower() == ".safetensors" and path.is_file():
            _refuse_flux2(path)
        transformer = path if not _is_part(path) and is_flux_transformer(path) else None
    if transformer is None:
        return None
    folder = transformer.parent
    names = sorted(f.name for f in folder.iterdir() if f.is_file())
    parts: dict[str, Path] = {}
    for part in PARTS:
        match = next((n for n in names for p in part.patterns
                      if fnmatch.fnmatch(n.lower(), p)), None)
        if match is None:
            raise BadInput(f"FLUX.1 model set {folder} has no {part.label} "
                           f"({' or '.join(part.patterns)}) beside {transformer.name}",
                           fix=f"put {part.usual} in {folder}")
        why = _readable(folder / match)
        if why is not None:
            raise BadInput(f"FLUX.1 model set {folder}: {match} is {why}",
                           fix=f"download it again: {part.usual}")
        parts[part.component] = folder / match
    return ModelSet(transformer, parts)
