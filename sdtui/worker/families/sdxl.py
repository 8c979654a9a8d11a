"""SDXL base: CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 text encoders (the second also gives the
pooled embedding), size and crop conditioning, 1024², and a VAE that overflows in float16."""

from __future__ import annotations

from sdtui.worker.families.base import ASSETS, EPSILON, V_PREDICTION, Family, Pipelines, TextEncoder

TEXT_PREFIX_2 = "conditioner.embedders.1.model."

FAMILY = Family(
    memory_factor=0.8,  # ComfyUI's SDXL
    id="sdxl",
    label="SDXL",
    assets=ASSETS / "sdxl",
    pipelines=Pipelines("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline",
                        "StableDiffusionXLInpaintPipeline"),
    text_encoders=(
        TextEncoder("text_encoder", "tokenizer", "conditioner.embedders.0.transformer.", "clip",
                    "CLIP text encoder"),
        TextEncoder("text_encoder_2", "tokenizer_2", TEXT_PREFIX_2, "open_clip",
                    "OpenCLIP ViT-bigG text encoder", with_projection=True),
    ),
    # The invisible watermark is a separate package sdtui does not install.
    pipeline_options={"add_watermarker": False},
    # ComfyUI's latent_formats.SDXL.
    latent_rgb=(
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    latent_rgb_bias=(0.1084, -0.0175, -0.0011),
    upcast_vae=True,
    sizes={EPSILON: 1024, V_PREDICTION: 1024},
    unused=lambda key: key == TEXT_PREFIX_2 + "logit_scale",
)
