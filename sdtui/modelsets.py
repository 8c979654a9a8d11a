"""A transformer model held as split component files, as ComfyUI users keep them, resolved to one
set. Two families come this way (KINDS):

- FLUX.1: a transformer (a .safetensors in BFL's layout, flux1-dev.safetensors, or a .gguf,
  flux1-dev-Q4_K_S.gguf, ComfyUI-GGUF's 'flux' layout); `clip_l.safetensors` (CLIP-L), a
  `t5xxl_*.safetensors` (t5xxl_fp16, t5xxl_fp8_e4m3fn, ...) or a T5 `.gguf`
  (t5-v1_1-xxl-encoder-Q8_0.gguf), and `ae.safetensors` (the VAE).
- SD 3.5: a transformer (Stability's own file, sd3.5_large.safetensors, which holds the MMDiT and
  the VAE but no text encoders, or a .gguf, sd3.5_large-Q4_0.gguf, ComfyUI-GGUF's 'sd3'
  layout); `clip_l.safetensors` and `clip_g.safetensors`; optionally a `t5xxl_*.safetensors` or a
  T5 `.gguf` (SD 3.5 runs on the two CLIPs without it); and the VAE, inside Stability's file or
  beside it as `sd3.5_vae.safetensors` / `sd3_vae.safetensors`.

All in the same folder. `--model FOLDER` and `--model TRANSFORMER_FILE` inside such a folder both
name the set. Stdlib only: the client resolves a set, and refuses one with a part missing, before
anything is created; the worker resolves it the same way from the copy.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
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
# Stability's MMDiT layout, alone or under the single file's prefix; ComfyUI-GGUF's name for it.
SD3_MARKER = "joint_blocks.0.x_block.attn.qkv.weight"
SD3_PREFIX = "model.diffusion_model."
SD3_GGUF = "sd3"
# Where Stability's single files keep the VAE and the CLIPs (sdtui.worker.sd3_files).
SD3_VAE_PREFIX = "first_stage_model."
SD3_CLIP_PREFIX = "text_encoders.clip_"
T5_GGUF = "t5encoder"  # llama.cpp's name for a T5 encoder alone
TRANSFORMER_SUFFIXES = (".safetensors", ".gguf")


@dataclass(frozen=True)
class Part:
    component: str  # the diffusers pipeline component it becomes
    label: str
    patterns: tuple[str, ...]  # file names it goes by (lower case, fnmatch)
    usual: str  # what users usually download, and from where
    optional: bool = False  # the model runs without it (SD 3.5's T5)
    # The prefix under which the transformer file itself may hold it (Stability's VAE).
    inside: str | None = None


@dataclass(frozen=True)
class SetKind:
    family: str  # the worker family's id
    label: str
    gguf_architecture: str
    parts: tuple[Part, ...]
    # Whether a .safetensors header is this family's transformer, ready for a set.
    is_transformer: Callable[[dict], bool] = field(repr=False)


T5_PATTERNS = ("t5xxl*.safetensors", "t5*.gguf")
T5_USUAL = "t5xxl_fp16.safetensors or t5xxl_fp8_e4m3fn.safetensors"


def _is_flux_header(header: dict) -> bool:
    return FLUX_MARKER in header and not is_flux2_header(header)


def _is_sd3_header(header: dict) -> bool:
    """Stability's MMDiT, alone or with its VAE (sd3.5_large.safetensors as Stability ships it).
    A file with the CLIPs inside is a single-file model, not a set's transformer."""
    return ((SD3_MARKER in header or SD3_PREFIX + SD3_MARKER in header)
            and not any(key.startswith(SD3_CLIP_PREFIX) for key in header))


FLUX1 = SetKind("flux1", "FLUX.1", FLUX_GGUF, (
    Part("text_encoder", "CLIP-L text encoder", ("clip_l*.safetensors",),
         "clip_l.safetensors (Hugging Face: comfyanonymous/flux_text_encoders)"),
    Part("text_encoder_2", "T5-XXL text encoder", T5_PATTERNS,
         f"{T5_USUAL} (Hugging Face: comfyanonymous/flux_text_encoders)"),
    Part("vae", "VAE", ("ae.safetensors",),
         "ae.safetensors (Hugging Face: black-forest-labs/FLUX.1-schnell)"),
), _is_flux_header)
SD3_REPO = "Hugging Face: stabilityai/stable-diffusion-3.5-large"
SD3 = SetKind("sd3", "SD 3.5", SD3_GGUF, (
    Part("text_encoder", "CLIP-L text encoder", ("clip_l*.safetensors",),
         f"clip_l.safetensors ({SD3_REPO}, text_encoders/)"),
    Part("text_encoder_2", "CLIP-G text encoder", ("clip_g*.safetensors",),
         f"clip_g.safetensors ({SD3_REPO}, text_encoders/)"),
    Part("text_encoder_3", "T5-XXL text encoder", T5_PATTERNS,
         f"{T5_USUAL} ({SD3_REPO}, text_encoders/)", optional=True),
    Part("vae", "VAE", ("sd3*vae*.safetensors",),
         f"sd3.5_vae.safetensors ({SD3_REPO}: vae/diffusion_pytorch_model.safetensors, renamed)",
         inside=SD3_VAE_PREFIX),
), _is_sd3_header)
KINDS = (FLUX1, SD3)


@dataclass(frozen=True)
class ModelSet:
    transformer: Path
    parts: dict[str, Path]  # pipeline component -> file beside the transformer
    family: str = FLUX1.family
    # Components the transformer file holds itself (SD 3.5's VAE in Stability's file).
    inside: tuple[str, ...] = ()

    @property
    def files(self) -> list[Path]:
        return [self.transformer, *self.parts.values()]


def _is_part(path: Path) -> bool:
    name = path.name.lower()
    return any(fnmatch.fnmatch(name, pattern)
               for kind in KINDS for part in kind.parts for pattern in part.patterns)


def _header(path: Path) -> dict | None:
    """The tensor table of a .safetensors file; None for anything else or an unreadable one."""
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return None
    try:
        with open(path, "rb") as stream:
            return safetensors_header(stream)
    except OSError:
        return None  # detect_format says what is wrong with it


def transformer_kind(path: Path) -> SetKind | None:
    """The family whose split-set transformer `path` is: a transformer file alone in its
    authors' layout, or a GGUF of the family's ComfyUI-GGUF architecture."""
    suffix = path.suffix.lower()
    if suffix not in TRANSFORMER_SUFFIXES or not path.is_file():
        return None
    if suffix == ".gguf":
        try:
            with open(path, "rb") as stream:
                found = gguf_architecture(stream)
        except (OSError, NotGguf):
            return None  # detect_format says what is wrong with it
        return next((kind for kind in KINDS if kind.gguf_architecture == found), None)
    header = _header(path)
    return next((kind for kind in KINDS if header is not None and kind.is_transformer(header)),
                None)


def is_flux_transformer(path: Path) -> bool:
    """A FLUX.1 transformer file alone: BFL's layout (.safetensors) or a 'flux' GGUF."""
    return transformer_kind(path) is FLUX1


def is_flux2_header(header: dict) -> bool:
    return any(key.endswith(FLUX2_MARKER) for key in header)


def _refuse_flux2(path: Path) -> None:
    """A FLUX.2 transformer file alone (BFL's or ComfyUI's) is not a model sdtui loads yet."""
    header = _header(path)
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


def _transformer_in(folder: Path) -> tuple[Path, SetKind] | None:
    found = [(f, kind) for f in sorted(folder.iterdir())
             if not _is_part(f) and (kind := transformer_kind(f)) is not None]
    if len(found) > 1:
        raise BadInput(f"model folder {folder} holds {len(found)} transformers "
                       f"({', '.join(f.name for f, _ in found)})",
                       fix="pass --model with the path of the one to use")
    return found[0] if found else None


def find_set(path: str | Path) -> ModelSet | None:
    """The split set `path` names (a folder of parts, or the transformer file among them); None
    when it is no such thing; BadInput naming a missing part."""
    path = expand(path, "model file").absolute()
    if path.is_dir():
        found = _transformer_in(path)
    else:
        _refuse_flux2(path)
        kind = None if _is_part(path) else transformer_kind(path)
        found = (path, kind) if kind is not None else None
    if found is None:
        return None
    transformer, kind = found
    folder = transformer.parent
    names = sorted(f.name for f in folder.iterdir() if f.is_file())
    header = _header(transformer) or {}
    parts: dict[str, Path] = {}
    inside: list[str] = []
    for part in kind.parts:
        match = next((n for n in names for p in part.patterns
                      if fnmatch.fnmatch(n.lower(), p)), None)
        if match is None:
            if part.inside and any(key.startswith(part.inside) for key in header):
                inside.append(part.component)
            elif not part.optional:
                raise BadInput(f"{kind.label} model set {folder} has no {part.label} "
                               f"({' or '.join(part.patterns)}) beside {transformer.name}",
                               fix=f"put {part.usual} in {folder}")
            continue
        why = _readable(folder / match)
        if why is not None:
            raise BadInput(f"{kind.label} model set {folder}: {match} is {why}",
                           fix=f"download it again: {part.usual}")
        parts[part.component] = folder / match
    return ModelSet(transformer, parts, kind.family, tuple(inside))
