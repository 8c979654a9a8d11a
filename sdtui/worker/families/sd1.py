"""Stable Diffusion 1.x: one CLIP ViT-L/14 text encoder, 512² (sd-v1-4.ckpt, v1-5, their
fine-tunes and inpainting variants)."""

from __future__ import annotations

from sdtui.worker.families.base import ASSETS, Family, Pipelines, TextEncoder

# Latent -> RGB for the SD 1.x/2.x VAE, as ComfyUI's latent_formats.SD15 has it.
SD_LATENT_RGB = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
SD_PIPELINES = Pipelines("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline",
                         "StableDiffusionInpaintPipeline")
# No safety checker is loaded (README: Model formats).
SD_OPTIONS = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}

FAMILY = Family(
    id="sd1",
    label="SD 1.x",
    assets=ASSETS / "sd1",
    pipelines=SD_PIPELINES,
    text_encoders=(
        TextEncoder("text_encoder", "tokenizer", "cond_stage_model.transformer.", "clip",
                    "CLIP text encoder"),
    ),
    pipeline_options=SD_OPTIONS,
    latent_rgb=SD_LATENT_RGB,
)
