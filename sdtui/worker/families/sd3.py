"""SD 3.5 Medium, Large and Large Turbo: a rectified-flow MMDiT transformer (MMDiT-X for Medium)
on 2x2 patches of 16-channel latents, CLIP-L and CLIP-G (both pooled) and an optional T5-XXL
text encoder, 1024², real classifier-free guidance with a negative prompt. Large Turbo is
distilled to 4 steps without CFG (CFG 1, so no negative prompt)."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from sdtui.samplers import FLOW
from sdtui.worker.families.base import (
    ASSETS,
    CFG,
    EPSILON,
    NO_GUIDANCE,
    V_PREDICTION,
    Family,
    Pipelines,
    TextEncoder,
)

PIPELINE = "StableDiffusion3Pipeline"
TURBO_MARK = "turbo"


def guidance_of(transformer_config: Any) -> str:
    """Large Turbo ships Large's transformer and scheduler configs, so nothing in them tells it
    apart; its name does (stable-diffusion-3.5-large-turbo, sd3.5_large_turbo.safetensors, as
    Stability names the release and the fine-tunes built on it): no CFG. Every other SD 3.5
    runs CFG. The name is the folder's or file's, as diffusers records it (_name_or_path)."""
    name = PurePath(str(transformer_config.get("_name_or_path") or "")).name
    return NO_GUIDANCE if TURBO_MARK in name.lower() else CFG


FAMILY = Family(
    id="sd3",
    label="SD 3.5",
    assets=ASSETS / "sd3",
    pipelines=Pipelines(PIPELINE, "StableDiffusion3Img2ImgPipeline",
                        "StableDiffusion3InpaintPipeline"),
    text_encoders=(
        TextEncoder("text_encoder", "tokenizer", "text_encoders.clip_l.transformer.", "clip",
                    "CLIP-L text encoder", with_projection=True),
        TextEncoder("text_encoder_2", "tokenizer_2", "text_encoders.clip_g.transformer.", "clip",
                    "CLIP-G text encoder", with_projection=True),
        TextEncoder("text_encoder_3", "tokenizer_3", "text_encoders.t5xxl.transformer.", "t5",
                    "T5-XXL text encoder", optional=True),
    ),
    pipeline_options={},
    # ComfyUI's latent_formats.SD3 (comfyanonymous/ComfyUI@040a3243468ecefd1f2802592d90458f1ce4
    # d65f, comfy/latent_formats.py, GPL-3.0; numbers only), applied to the scaled latents the
    # sampler works on.
    latent_rgb=(
        (-0.0922, -0.0175, 0.0749),
        (0.0311, 0.0633, 0.0954),
        (0.1994, 0.0927, 0.0458),
        (0.0856, 0.0339, 0.0902),
        (0.0587, 0.0272, -0.0496),
        (-0.0006, 0.1104, 0.0309),
        (0.0978, 0.0306, 0.0427),
        (-0.0042, 0.1038, 0.1358),
        (-0.0194, 0.0020, 0.0669),
        (-0.0488, 0.0130, -0.0268),
        (0.0922, 0.0988, 0.0951),
        (-0.0278, 0.0524, -0.0542),
        (0.0332, 0.0456, 0.0895),
        (-0.0069, -0.0030, -0.0810),
        (-0.0596, -0.0465, -0.0293),
        (-0.1448, -0.1463, -0.1189),
    ),
    latent_rgb_bias=(0.2394, 0.2135, 0.1925),
    sizes={EPSILON: 1024, V_PREDICTION: 1024},
    denoiser="transformer",
    latent_channels=16,
    # The VAE's ×8 times the transformer's 2x2 patches.
    size_multiple=16,
    sampler_table=FLOW,
    guidance_of=guidance_of,
    # Stability's defaults: Large 28 steps, Large Turbo 4 (Medium's card says 40; 28 serves).
    steps={CFG: 28, NO_GUIDANCE: 4},
    compel=False,
    bf16=True,
    memory_factor=1.6,  # ComfyUI's SD3
    upcast_vae=True,
)
