"""A FLUX.1 or FLUX.2 Klein model held as split component files, as ComfyUI users keep them,
resolved to one set.

FLUX.1:
- a transformer: a .safetensors in BFL's layout (flux1-dev.safetensors) or a .gguf
  (flux1-dev-Q4_K_S.gguf, ComfyUI-GGUF's layout);
- `clip_l.safetensors` (CLIP-L text encoder), a `t5xxl_*.safetensors` (T5-XXL text encoder:
  t5xxl_fp16, t5xxl_fp8_e4m3fn, ...) or a T5 `.gguf` (t5-v1_1-xxl-encoder-Q8_0.gguf),
  `ae.safetensors` (the VAE), all in the same folder.

FLUX.2 Klein:
- a transformer: BFL's `flux-2-klein-4b.safetensors` (or `-base-`, ComfyUI's copy under
  `model.diffusion_model.`) or a .gguf of it (ComfyUI-GGUF writes FLUX.2 as architecture
  'flux' with BFL's tensor names; FLUX.2's own tensors tell it from FLUX.1);
- `qwen_3_4b.safetensors` (the Qwen3 text encoder, transformers' layout) and
  `flux2-vae.safetensors` (the VAE, BFL's layout) in the same folder;
- Qwen3's tokenizer files in the transformer's sidecar, `S.config/tokenizer/`.

`--model FOLDER` and `--model TRANSFORMER_FILE` inside such a folder both name the set. Stdlib
only: the client resolves a set, and refuses one with a part missing, before anything is
created; the worker resolves it the same way from the copy.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
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
T5_GGUF = "t5encoder"  # llama.cpp's name for a T5 encoder alone
TRANSFORMER_SUFFIXES = (".safetensors", ".gguf")
FLUX1, KLEIN = "flux1", "flux2-klein"
CONFIG_SUFFIX = ".config"
# Files of which one makes a tokenizer folder transformers can load.
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


@dataclass(frozen=True)
class Part:
    component: str  # the diffusers pipeline component it becomes
    label: str
    patterns: tuple[str, ...]  # file names it goes by (lower case, fnmatch)
    usual: str  # what users usually download, and from where


@dataclass(frozen=True)
class SetFamily:
    id: str  # the worker's family id
    label: str
    parts: tuple[Part, ...]
    # A tokenizer no shipped asset holds: the sidecar folder it must be in, and where from.
    tokenizer: tuple[str, str] | None = None


FLUX1_PARTS = (
    Part("text_encoder", "CLIP-L text encoder", ("clip_l*.safetensors",),
         "clip_l.safetensors (Hugging Face: comfyanonymous/flux_text_encoders)"),
    Part("text_encoder_2", "T5-XXL text encoder", ("t5xxl*.safetensors", "t5*.gguf"),
         "t5xxl_fp16.safetensors or t5xxl_fp8_e4m3fn.safetensors (Hugging Face: "
         "comfyanonymous/flux_text_encoders)"),
    Part("vae", "VAE", ("ae.safetensors",),
         "ae.safetensors (Hugging Face: black-forest-labs/FLUX.1-schnell)"),
)
PARTS = FLUX1_PARTS
KLEIN_PARTS = (
    Part("text_encoder", "Qwen3 text encoder", ("qwen_3*.safetensors", "qwen3*.safetensors"),
         "qwen_3_4b.safetensors (ComfyUI's text_encoders/ file for FLUX.2 Klein 4B; Hugging "
         "Face: Comfy-Org/flux2-klein-4B)"),
    Part("vae", "VAE", ("flux2-vae*.safetensors", "flux2_vae*.safetensors"),
         "flux2-vae.safetensors (ComfyUI's vae/ file for FLUX.2; Hugging Face: "
         "Comfy-Org/flux2-klein-4B)"),
)
FAMILIES = {
    FLUX1: SetFamily(FLUX1, "FLUX.1", FLUX1_PARTS),
    KLEIN: SetFamily(KLEIN, "FLUX.2 Klein", KLEIN_PARTS, (
        "tokenizer", "Qwen3's tokenizer files (tokenizer.json, tokenizer_config.json: the "
                     "tokenizer/ folder of Hugging Face black-forest-labs/FLUX.2-klein-4B)")),
}


@dataclass(frozen=True)
class ModelSet:
    transformer: Path
    parts: dict[str, Path]  # pipeline component -> file
    family: str = FLUX1  # FLUX1 or KLEIN

    @property
    def files(self) -> list[Path]:
        return [self.transformer, *self.parts.values()]

    @property
    def sidecar(self) -> Path:
        return self.transformer.with_name(self.transformer.stem + CONFIG_SUFFIX)


def _is_part(path: Path) -> bool:
    name = path.name.lower()
    return any(fnmatch.fnmatch(name, pattern) for family in FAMILIES.values()
               for part in family.parts for pattern in part.patterns)


def transformer_family(path: Path) -> str | None:
    """FLUX1 or KLEIN for a transformer file alone, from its tensor names: BFL's layout
    (.safetensors; FLUX.2's also under ComfyUI's model.diffusion_model.) or a 'flux' GGUF.
    None for anything else."""
    suffix = path.suffix.lower()
    if suffix not in TRANSFORMER_SUFFIXES or not path.is_file() or _is_part(path):
        return None
    try:
        with open(path, "rb") as stream:
            if suffix == ".gguf":
                if gguf_architecture(stream) != FLUX_GGUF:
                    return None
                stream.seek(0)
                keys: Iterable[str] = gguf_tensor_names(stream)
            else:
                keys = safetensors_header(stream) or {}
    except (OSError, NotGguf):
        return None  # detect_format says what is wrong with it
    keys = set(keys)
    if any(key.endswith(FLUX2_MARKER) for key in keys):
        return KLEIN
    return FLUX1 if FLUX_MARKER in keys else None


def is_flux_transformer(path: Path) -> bool:
    """A FLUX.1 transformer file alone: BFL's layout (.safetensors) or a 'flux' GGUF."""
    return transformer_family(path) == FLUX1


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


def _transformer_in(folder: Path) -> tuple[Path, str] | None:
    found = [(f, family) for f in sorted(folder.iterdir())
             if (family := transformer_family(f)) is not None]
    if len(found) > 1:
        raise BadInput(f"model folder {folder} holds {len(found)} FLUX transformers "
                       f"({', '.join(f.name for f, _ in found)})",
                       fix="pass --model with the path of the one to use")
    return found[0] if found else None


def find_set(path: str | Path) -> ModelSet | None:
    """The split FLUX.1 or FLUX.2 Klein set `path` names (a folder of parts, or the transformer
    file among them); None when it is no such thing; BadInput naming a missing part."""
    path = expand(path, "model file").absolute()
    if path.is_dir():
        found = _transformer_in(path)
    else:
        family_id = transformer_family(path)
        found = (path, family_id) if family_id else None
    if found is None:
        return None
    transformer, family_id = found
    family = FAMILIES[family_id]
    folder = transformer.parent
    names = sorted(f.name for f in folder.iterdir() if f.is_file())
    parts: dict[str, Path] = {}
    for part in family.parts:
        match = next((n for n in names for p in part.patterns
                      if fnmatch.fnmatch(n.lower(), p)), None)
        if match is None:
            raise BadInput(f"{family.label} model set {folder} has no {part.label} "
                           f"({' or '.join(part.patterns)}) beside {transformer.name}",
                           fix=f"put {part.usual} in {folder}")
        why = _readable(folder / match)
        if why is not None:
            raise BadInput(f"{family.label} model set {folder}: {match} is {why}",
                           fix=f"download it again: {part.usual}")
        parts[part.component] = folder / match
    model_set = ModelSet(transformer, parts, family_id)
    if family.tokenizer:
        name, usual = family.tokenizer
        tokenizer = model_set.sidecar / name
        if not any((tokenizer / file).is_file() for file in TOKENIZER_FILES):
            raise BadInput(f"{family.label} model set {folder} has no tokenizer for its "
                           f"text encoder in {tokenizer}", fix=f"put {usual} in {tokenizer}")
    return model_set
