"""FLUX.1 [schnell] and [dev] (and fine-tunes in their layout, Krea dev for one): a rectified-
flow transformer on 2x2-packed 16-channel latents, CLIP-L (pooled) and T5-XXL text encoders,
1024². [dev] is guidance-distilled: it takes the guidance strength as an input (no CFG, no
negative prompt); [schnell] is timestep-distilled to 4 steps and takes no guidance."""

from __future__ import annotations

from typing import Any

from sdtui.samplers import FLOW
from sdtui.worker.families.base import (
    ASSETS,
    CFG,
    EMBEDDED,
    EPSILON,
    NO_GUIDANCE,
    V_PREDICTION,
    Family,
    Pipelines,
    TextEncoder,
)

PIPELINE = "FluxPipeline"


# FLUX.1's shipped scheduler config is [dev]'s (black-forest-labs/FLUX.1-dev); [schnell] does
# not shift by resolution (black-forest-labs/FLUX.1-schnell/scheduler/scheduler_config.json).
SCHEDULER_BY_GUIDANCE = {NO_GUIDANCE: {"shift": 1.0, "use_dynamic_shifting": False}}


def guidance_of(transformer_config: Any) -> str:
    """[dev] embeds guidance (its transformer has a guidance embedder); [schnell] does not."""
    return EMBEDDED if transformer_config.get("guidance_embeds") else NO_GUIDANCE


FAMILY = Family(
    id="flux1",
    label="FLUX.1",
    assets=ASSETS / "flux1",
    pipelines=Pipelines(PIPELINE, "FluxImg2ImgPipeline", "FluxInpaintPipeline"),
    text_encoders=(
        TextEncoder("text_encoder", "tokenizer", "text_encoders.clip_l.transformer.", "clip",
                    "CLIP-L text encoder"),
        TextEncoder("text_encoder_2", "tokenizer_2", "text_encoders.t5xxl.transformer.", "t5",
                    "T5-XXL text encoder"),
    ),
    pipeline_options={},
    # ComfyUI's latent_formats.Flux (comfyanonymous/ComfyUI, comfy/latent_formats.py, GPL-3.0;
    # numbers only), applied to the unpacked, scaled latents the sampler works on.
    latent_rgb=(
        (-0.0346, 0.0244, 0.0681),
        (0.0034, 0.0210, 0.0687),
        (0.0275, -0.0668, -0.0433),
        (-0.0174, 0.0160, 0.0617),
        (0.0859, 0.0721, 0.0329),
        (0.0004, 0.0383, 0.0115),
        (0.0405, 0.0861, 0.0915),
        (-0.0236, -0.0185, -0.0259),
        (-0.0245, 0.0250, 0.1180),
        (0.1008, 0.0755, -0.0421),
        (-0.0515, 0.0201, 0.0011),
        (0.0428, -0.0012, -0.0036),
        (0.0817, 0.0765, 0.0749),
        (-0.1264, -0.0522, -0.1103),
        (-0.0280, -0.0881, -0.0499),
        (-0.1262, -0.0982, -0.0778),
    ),
    latent_rgb_bias=(-0.0329, -0.0718, -0.0851),
    sizes={EPSILON: 1024, V_PREDICTION: 1024},
    denoiser="transformer",
    latent_channels=16,
    size_multiple=16,
    packed_latents=True,
    sampler_table=FLOW,
    guidance_of=guidance_of,
    # BFL's and diffusers' defaults: [schnell] 4 steps, [dev] 28 at guidance 3.5.
    steps={NO_GUIDANCE: 4, EMBEDDED: 28, CFG: 28},
    default_guidance=3.5,
    compel=False,
    bf16=True,
    memory_factor=3.1,  # ComfyUI's Flux
    # float16 (a T4) decodes the VAE in float32, as the VAE's own config asks (force_upcast).
    upcast_vae=True,
)
