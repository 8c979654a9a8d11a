"""FLUX.2 [klein] 4B and its base model: a rectified-flow transformer on 2x2-patchified
32-channel latents (128 channels a token), one Qwen3 text encoder whose hidden states 9, 18
and 27 are stacked, 1024². [klein] is step-distilled (`is_distilled` in its model_index.json):
4 steps and no guidance. The base model runs real classifier-free guidance (4.0, 50 steps),
with "" as its negative prompt unless the request gives one.

There is no img2img: Flux2KleinPipeline's `image` is a reference to edit from, not a start to
noise, so `--init-image` alone is refused; `--init-image` with `--mask` runs
Flux2KleinInpaintPipeline, which does noise the init image by --strength."""

from __future__ import annotations

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
)

PIPELINE = "Flux2KleinPipeline"


def guidance_of(model_index: Any) -> str:
    """[klein] is step-distilled: its pipeline turns guidance off (`is_distilled`)."""
    return NO_GUIDANCE if model_index.get("is_distilled") else CFG


FAMILY = Family(
    id="flux2-klein",
    label="FLUX.2 Klein",
    assets=ASSETS / "flux2-klein",  # never read (see text_encoders)
    pipelines=Pipelines(PIPELINE, "", "Flux2KleinInpaintPipeline"),
    # Loaded from diffusers folders only: no single-file layout, so no text encoder prefixes
    # and no shipped configs.
    text_encoders=(),
    pipeline_options={},
    # ComfyUI's latent_formats.Flux2 (Comfy-Org/ComfyUI@9a9a69fd745de98e89b0f1a629cd3bc43d513a42,
    # comfy/latent_formats.py, GPL-3.0; numbers only): the sampler's batch-normalised latents,
    # unpatchified to 32 channels at twice the token grid.
    latent_rgb=(
        (0.0058, 0.0113, 0.0073), (0.0495, 0.0443, 0.0836), (-0.0099, 0.0096, 0.0644),
        (0.2144, 0.3009, 0.3652), (0.0166, -0.0039, -0.0054), (0.0157, 0.0103, -0.0160),
        (-0.0398, 0.0902, -0.0235), (-0.0052, 0.0095, 0.0109), (-0.3527, -0.2712, -0.1666),
        (-0.0301, -0.0356, -0.0180), (-0.0107, 0.0078, 0.0013), (0.0746, 0.0090, -0.0941),
        (0.0156, 0.0169, 0.0070), (-0.0034, -0.0040, -0.0114), (0.0032, 0.0181, 0.0080),
        (-0.0939, -0.0008, 0.0186), (0.0018, 0.0043, 0.0104), (0.0284, 0.0056, -0.0127),
        (-0.0024, -0.0022, -0.0030), (0.1207, -0.0026, 0.0065), (0.0128, 0.0101, 0.0142),
        (0.0137, -0.0072, -0.0007), (0.0095, 0.0092, -0.0059), (0.0000, -0.0077, -0.0049),
        (-0.0465, -0.0204, -0.0312), (0.0095, 0.0012, -0.0066), (0.0290, -0.0034, 0.0025),
        (0.0220, 0.0169, -0.0048), (-0.0332, -0.0457, -0.0468), (-0.0085, 0.0389, 0.0609),
        (-0.0076, 0.0003, -0.0043), (-0.0111, -0.0460, -0.0614),
    ),
    latent_rgb_bias=(-0.0329, -0.0718, -0.0851),
    sizes={EPSILON: 1024, V_PREDICTION: 1024},
    denoiser="transformer",
    latent_channels=32,
    size_multiple=16,
    patchified_latents=True,
    sampler_table=FLOW,
    guidance_of=guidance_of,
    guidance_config="model_index.json",
    # BFL's and diffusers' defaults: [klein] 4 steps, base 50 at CFG 4.
    steps={NO_GUIDANCE: 4, CFG: 50},
    default_cfg=4.0,
    # What [klein]'s pipeline is given in place of guidance (it ignores it; diffusers' own
    # examples pass 1.0).
    default_guidance=1.0,
    compel=False,
    bf16=True,
    # ComfyUI's Flux2: Flux's 3.1 × 4 × hidden size / 2604 per 1/16 latent pixel; 4B's 3072
    # wide, per 1/8 pixel.
    memory_factor=3.1 * 3072 / 2604,
)
