"""A transformer model held as split component files, as ComfyUI users keep them, resolved to one
set. Three families come this way (KINDS):

- FLUX.1: a transformer (a .safetensors in BFL's layout, flux1-dev.safetensors, or a .gguf,
  flux1-dev-Q4_K_S.gguf, ComfyUI-GGUF's 'flux' layout); `clip_l.safetensors` (CLIP-L), a
  `t5xxl_*.safetensors` (t5xxl_fp16, t5xxl_fp8_e4m3fn, ...) or a T5 `.gguf`
  (t5-v1_1-xxl-encoder-Q8_0.gguf), and `ae.safetensors` (the VAE).
- SD 3.5: a transformer (Stability's own file, sd3.5_large.safetensors, which holds the MMDiT and
  the VAE but no text encoders, or a .gguf, sd3.5_large-Q4_0.gguf, ComfyUI-GGUF's 'sd3'
  layout); `clip_l.safetensors` and `clip_g.safetensors`; optionally a `t5xxl_*.safetensors` or a
  T5 `.gguf` (SD 3.5 runs on the two CLIPs without it); and the VAE, inside Stability's file or
  beside it as `sd3.5_vae.safetensors` / `sd3_vae.safetensors`.
- FLUX.2 Klein: a transformer (BFL's `flux-2-klein-4b.safetensors` or `-base-`, ComfyUI's copy
  under `model.diffusion_model.`, or a .gguf of it: ComfyUI-GGUF writes FLUX.2 as architecture
  'flux' with BFL's tensor names, and FLUX.2's own tensors tell it from FLUX.1);
  `qwen_3_4b.safetensors` (the Qwen3 text encoder, transformers' layout) and
  `flux2-vae.safetensors` (the VAE, BFL's layout); Qwen3's tokenizer files in the transformer's
  sidecar, `S.config/tokenizer/`.

All in the same folder. `--model FOLDER` and `--model TRANSFORMER_FILE` inside such a folder both
name the set. Stdlib only: the client resolves a set, and refuses one with a part missing, before
anything is created; the worker resolves it the same way from the copy.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sdtui.errors import BadInput
from sdtui.headers import NotGguf, gguf_architecture, gguf_tensor_names, safetensors_header
from sdtui.userfiles import expand

# BFL's key layout: a transformer alone has this tensor without the all-in-one prefix.
FLUX_MARKER = "double_blocks.0.img_attn.qkv.weight"
# FLUX.2's transformers share BFL's block names; this key is theirs alone (diffusers'
# CHECKPOINT_KEY_NAMES["flux2"]).
FLUX2_MARKER = "single_stream_modulation.lin.weight"
FLUX_GGUF = "flux"  # ComfyUI-GGUF's architecture for FLUX.1 and FLUX.2 alike
# Stability's MMDiT layout, alone or under the single file's prefix; ComfyUI-GGUF's name for it.
SD3_MARKER = "joint_blocks.0.x_block.attn.qkv.weight"
SD3_PREFIX = "model.diffusion_model."
SD3_GGUF = "sd3"
# Where Stability's single files keep the VAE and the CLIPs (sdtui.worker.sd3_files).
SD3_VAE_PREFIX = "first_stage_model."
SD3_CLIP_PREFIX = "text_encoders.clip_"
T5_GGUF = "t5encoder"  # llama.cpp's name for a T5 encoder alone
TRANSFORMER_SUFFIXES = (".safetensors", ".gguf")
CONFIG_SUFFIX = ".config"
# Files of which one makes a tokenizer folder transformers can load.
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


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
    # Whether a transformer file's tensor names (header or GGUF) are this family's, ready for a
    # set.
    is_transformer: Callable[[set[str]], bool] = field(repr=False)
    # A tokenizer no shipped asset holds: the sidecar folder it must be in, and where from.
    tokenizer: tuple[str, str] | None = None


T5_PATTERNS = ("t5xxl*.safetensors", "t5*.gguf")
T5_USUAL = "t5xxl_fp16.safetensors or t5xxl_fp8_e4m3fn.safetensors"


def _is_flux_header(header: Iterable[str]) -> bool:
    return FLUX_MARKER in header and not is_flux2_header(header)


def _is_sd3_header(header: Iterable[str]) -> bool:
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
KLEIN = SetKind("flux2-klein", "FLUX.2 Klein", FLUX_GGUF, (
    Part("text_encoder", "Qwen3 text encoder", ("qwen_3*.safetensors", "qwen3*.safetensors"),
         "qwen_3_4b.safetensors (ComfyUI's text_encoders/ file for FLUX.2 Klein 4B; Hugging "
         "Face: Comfy-Org/flux2-klein-4B)"),
    Part("vae", "VAE", ("flux2-vae*.safetensors", "flux2_vae*.safetensors"),
         "flux2-vae.safetensors (ComfyUI's vae/ file for FLUX.2; Hugging Face: "
         "Comfy-Org/flux2-klein-4B)"),
), lambda keys: is_flux2_header(keys), (
    "tokenizer", "Qwen3's tokenizer files (tokenizer.json, tokenizer_config.json: the "
                 "tokenizer/ folder of Hugging Face black-forest-labs/FLUX.2-klein-4B)"))
KINDS = (FLUX1, SD3, KLEIN)


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

    @property
    def sidecar(self) -> Path:
        return self.transformer.with_name(self.transformer.stem + CONFIG_SUFFIX)


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
    """The family whose split-set transformer `path` is, from its tensor names: a transformer
    file alone in its authors' layout, or a GGUF of the family's ComfyUI-GGUF architecture."""
    suffix = path.suffix.lower()
    if suffix not in TRANSFORMER_SUFFIXES or not path.is_file() or _is_part(path):
        return None
    try:
        with open(path, "rb") as stream:
            if suffix == ".gguf":
                found = gguf_architecture(stream)
                kinds = [kind for kind in KINDS if kind.gguf_architecture == found]
                if len(kinds) < 2:
                    return kinds[0] if kinds else None
                stream.seek(0)
                keys = set(gguf_tensor_names(stream))
            else:
                keys = set(safetensors_header(stream) or {})
    except (OSError, NotGguf):
        return None  # detect_format says what is wrong with it
    return next((kind for kind in KINDS if kind.is_transformer(keys)), None)


def is_flux_transformer(path: Path) -> bool:
    """A FLUX.1 transformer file alone: BFL's layout (.safetensors) or a 'flux' GGUF."""
    return transformer_kind(path) is FLUX1


def is_flux2_header(header: Iterable[str]) -> bool:
    return any(key.endswith(FLUX2_MARKER) for key in header)


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
             if (kind := transformer_kind(f)) is not None]
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
        kind = transformer_kind(path)
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
    model_set = ModelSet(transformer, parts, kind.family, tuple(inside))
    if kind.tokenizer:
        name, usual = kind.tokenizer
        tokenizer = model_set.sidecar / name
        if not any((tokenizer / file).is_file() for file in TOKENIZER_FILES):
            raise BadInput(f"{kind.label} model set {folder} has no tokenizer for its "
                           f"text encoder in {tokenizer}", fix=f"put {usual} in {tokenizer}")
    return model_set
