"""Model families sdtui loads, and which one a model is, from its key layout (single files) or
its pipeline and configs (diffusers folders). Each family's specifics live in its own module."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from sdtui.worker.checkpoint import ModelInvalid
from sdtui.worker.families import flux1, flux2_klein, sd1, sd2, sd3, sdxl
from sdtui.worker.families.base import (
    CFG,
    EMBEDDED,
    EPSILON,
    NO_GUIDANCE,
    UNET_CONV_IN,
    UNET_PREFIX,
    V_PREDICTION,
    Family,
    Pipelines,
    TextEncoder,
)
from sdtui.worker.lora import is_diffusers_lora_key

__all__ = ["CFG", "EMBEDDED", "EPSILON", "FAMILIES", "NO_GUIDANCE", "V_PREDICTION", "Family",
           "Pipelines", "TextEncoder", "detect", "detect_folder", "folder_absent_encoders",
           "folder_guidance",
           "is_inpainting", "is_leftover"]

FAMILIES: dict[str, Family] = {f.id: f for f in (sd1.FAMILY, sd2.FAMILY, sdxl.FAMILY,
                                                  flux1.FAMILY, flux2_klein.FAMILY, sd3.FAMILY)}
# FLUX.1's files never reach detect(): the loader sends them to sdtui.worker.flux_parts.
SUPPORTED = "SD 1.x, SD 2.x, SDXL base and FLUX.1"
SUPPORTED_FOLDERS = ("SD 1.x, SD 2.x and SDXL base (and FLUX.1 [schnell] and [dev], FLUX.2 "
                     "[klein], SD 3.5 Medium, Large and Large Turbo)")

# Training leftovers every family's checkpoints may carry, never used for inference.
_DDPM_BUFFERS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "logvar", "lvlb_weights",
    "denoiser.sigmas",  # SGM's discretization, recomputed by the scheduler
})
_LEFTOVER_PREFIXES = ("model_ema.", "first_stage_model.loss.", "embedding_manager.")


def is_leftover(key: str) -> bool:
    """EMA weights, DDPM schedule buffers, VAE training losses, textual-inversion training
    state, CLIP's position ids."""
    return (key in _DDPM_BUFFERS or key.startswith(_LEFTOVER_PREFIXES)
            or key.endswith("embeddings.position_ids"))


# Layouts that are not a Stable Diffusion checkpoint sdtui loads, to say what a file is.
_OTHER_LAYOUTS = (
    ("conditioner.embedders.0.model.", "an SDXL refiner checkpoint (only the base model loads)"),
    (UNET_PREFIX + "joint_blocks.", "a Stable Diffusion 3 checkpoint"),
    ("joint_blocks.", "a Stable Diffusion 3 checkpoint"),
    ("lora_unet_", "a LoRA (use it with <lora:NAME:WEIGHT> in a prompt)"),
    ("lora_te", "a LoRA (use it with <lora:NAME:WEIGHT> in a prompt)"),
    ("control_model.", "a ControlNet"),
    ("encoder.down.0.block.0.", "a standalone VAE"),
    ("decoder.up.0.block.0.", "a standalone VAE"),
    ("encoder.down_blocks.0.", "a standalone VAE in diffusers' layout"),
    ("decoder.up_blocks.0.", "a standalone VAE in diffusers' layout"),
    ("down_blocks.0.", "a diffusers-layout UNet alone (load the whole diffusers folder)"),
)
_CROSS_ATTENTION_KEY = UNET_PREFIX + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
_FAMILY_BY_CONTEXT = {768: sd1.FAMILY, 1024: sd2.FAMILY}


def _has(keys: Mapping[str, object], prefix: str) -> bool:
    return any(key.startswith(prefix) for key in keys)


def _by_text_encoders(shapes: Mapping[str, tuple[int, ...]]) -> Family | None:
    if _has(shapes, sdxl.TEXT_PREFIX_2):
        return sdxl.FAMILY
    if _has(shapes, sd2.TEXT_PREFIX):
        return sd2.FAMILY
    if _has(shapes, sd1.FAMILY.text_encoders[0].prefix):
        return sd1.FAMILY
    return None


def _by_unet(shapes: Mapping[str, tuple[int, ...]]) -> Family | None:
    """A checkpoint without its text encoders still names its family in its UNet."""
    if _has(shapes, UNET_PREFIX + "label_emb."):
        return sdxl.FAMILY
    shape = shapes.get(_CROSS_ATTENTION_KEY)
    return _FAMILY_BY_CONTEXT.get(shape[-1]) if shape else None


def detect(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> Family:
    """The family of a single-file checkpoint from its keys (and a shape or two), or
    ModelInvalid saying what the file is and what it lacks."""
    family = _by_text_encoders(shapes)
    if family is None and any(is_diffusers_lora_key(key) for key in shapes):
        raise ModelInvalid(f"model file {path} is a LoRA in diffusers' layout (use it with "
                           f"<lora:NAME:WEIGHT> in a prompt), not a Stable Diffusion checkpoint; "
                           f"sdtui loads {SUPPORTED} checkpoints")
    if family is None:
        for prefix, what in _OTHER_LAYOUTS:
            if _has(shapes, prefix):
                raise ModelInvalid(f"model file {path} is {what}, not a Stable Diffusion "
                                   f"checkpoint; sdtui loads {SUPPORTED} checkpoints")
        family = _by_unet(shapes)
    if family is None:
        raise ModelInvalid(
            f"model file {path} is not a Stable Diffusion checkpoint: none of its "
            f"{len(shapes)} tensors sits under the UNet, VAE or text encoder keys of "
            f"{SUPPORTED}")
    missing = [what for what, prefix in family.prefixes.items() if not _has(shapes, prefix)]
    if missing:
        raise ModelInvalid(f"model file {path} is an incomplete {family.label} checkpoint: it "
                           f"has no {', '.join(missing)} weights", family=family.id)
    return family


def is_inpainting(shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """An inpainting UNet takes the masked image and the mask beside the latents: 9 channels."""
    shape = shapes.get(UNET_CONV_IN)
    return bool(shape) and len(shape) > 1 and shape[1] == 9


def _config(folder: Path, name: str) -> dict:
    path = folder / name
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        raise ModelInvalid(f"model folder {folder.parent}: {path} is not valid JSON") from None


def detect_folder(path: Path) -> Family:
    """The family of a diffusers folder, from its pipeline class and text encoder configs."""
    index = _config(path, "model_index.json")
    pipeline = str(index.get("_class_name", ""))
    if pipeline == flux1.PIPELINE:
        return flux1.FAMILY
    if pipeline == flux2_klein.PIPELINE:
        return flux2_klein.FAMILY
    if pipeline == sd3.PIPELINE:
        return sd3.FAMILY
    if "XL" in pipeline:
        if not index.get("text_encoder") or index["text_encoder"] == [None, None]:
            raise ModelInvalid(f"model folder {path} is an SDXL refiner (only the base model "
                               f"loads); sdtui loads {SUPPORTED_FOLDERS} models",
                               family="sdxl")
        return sdxl.FAMILY
    if not pipeline.startswith("StableDiffusion"):
        raise ModelInvalid(f"model folder {path} holds a {pipeline or 'unknown'} pipeline; "
                           f"sdtui loads {SUPPORTED_FOLDERS} models")
    text = _config(path / "text_encoder", "config.json")
    unet = _config(path / "unet", "config.json")
    # OpenCLIP's encoder uses GELU where OpenAI's CLIP uses quick GELU; full-size SD 2.x also
    # has 1024-wide cross-attention.
    if text.get("hidden_act") == "gelu" or unet.get("cross_attention_dim") == 1024:
        return sd2.FAMILY
    return sd1.FAMILY


def folder_prediction(path: Path) -> str:
    return _config(path / "scheduler", "scheduler_config.json").get("prediction_type", EPSILON)


def folder_inpainting(path: Path) -> bool:
    return _config(path / "unet", "config.json").get("in_channels") == 9


def folder_guidance(path: Path, family: Family) -> str:
    """CFG, EMBEDDED or NO_GUIDANCE, from the folder's denoiser config (or the file the family
    names) and, where the config cannot say (SD 3.5 Large Turbo), its name, where diffusers
    keeps it (_name_or_path)."""
    if family.guidance_config:
        return family.guidance_of(_config(path, family.guidance_config))
    config = _config(path / family.denoiser, "config.json")
    return family.guidance_of({**config, "_name_or_path": str(path)})


def folder_absent_encoders(path: Path, family: Family) -> tuple[TextEncoder, ...]:
    """The optional text encoders (SD 3.5's T5) the folder's model_index.json leaves null."""
    index = _config(path, "model_index.json")
    return tuple(spec for spec in family.text_encoders
                 if spec.optional and not any(index.get(spec.name) or ()))
